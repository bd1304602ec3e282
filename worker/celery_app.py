"""The Celery app, configured from `toporank.settings` for long GPU tasks.

acks late + reject on worker lost (a killed pool process puts its task back), prefetch 1 and
concurrency 1 (one process per GPU, one task at a time), a Redis visibility timeout above the
longest task. The embedded default uses the filesystem broker under the data dir and a SQLite
result backend. Run with `toporank worker` (or `celery -A worker.celery_app worker`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from toporank.settings import Settings, get_settings
from worker.fs_broker import TRANSPORT as FS_TRANSPORT


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for `settings` (pure: tests inspect it)."""
    broker = settings.celery_broker_url
    conf: dict[str, Any] = {
        "broker_url": broker,
        "result_backend": settings.celery_result_backend,
        "task_default_queue": settings.task_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "worker_send_task_events": False,
        "broker_connection_retry_on_startup": True,
        "include": ["worker.tasks"],
    }
    if broker.startswith("filesystem"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # Look for new messages every 0.1 s by default (kombu's 1 s idled the worker 0.5 s on
            # average between two items of a ranking); a listing of one small folder each time.
            "polling_interval": settings.broker_poll_s,
        }
        conf["broker_transport"] = FS_TRANSPORT  # message files appear whole (worker/fs_broker.py)
        conf["worker_enable_remote_control"] = False
        settings.data_root.mkdir(parents=True, exist_ok=True)
    elif broker.startswith(("redis", "rediss")):
        # Unacked messages of a dead worker come back once older than the visibility timeout;
        # scan for them every 10 s (kombu's default throttle only scans every 10th tick).
        conf["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
        }
        conf["result_backend_transport_options"] = {"visibility_timeout": settings.visibility_timeout_s}
    return conf


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("toporank")
    conf = celery_config(settings)
    include = conf.pop("include")
    celery.conf.update(conf)
    celery.conf.include = include
    return celery


@worker_init.connect
def _no_cuda_before_fork(**_kwargs: Any) -> None:
    """The parent process must not have initialised CUDA: forked pool children would inherit it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialised in the worker's parent process before forking")


app = make_celery()
