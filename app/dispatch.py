"""Task dispatch through Celery by task name: the API never imports the task code (or torch)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery

from toporank.settings import Settings

SCORE_TASK = "toporank.score_item"
VALIDATE_TASK = "toporank.validate_model"
FINETUNE_TASK = "toporank.finetune_item"


class CeleryDispatcher:
    """Publishes `toporank.*` tasks with ids only; `broker_ok` backs `/readyz`."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        if celery is None:
            from worker.celery_app import make_celery

            celery = make_celery(settings)
        self.celery = celery
        self._filesystem = "data_folder_in" in (self.celery.conf.broker_transport_options or {})
        self._lock = threading.Lock()
        self._last_ms = -1

    def score_item(self, item_id: str) -> None:
        self._send(SCORE_TASK, item_id)

    def validate_model(self, model_id: str) -> None:
        self._send(VALIDATE_TASK, model_id)

    def finetune_item(self, item_id: str) -> None:
        self._send(FINETUNE_TASK, item_id)

    def _send(self, task: str, *args: Any) -> None:
        """Publish; on the filesystem broker, one message per millisecond at most, in order.

        That transport names a message `<monotonic ms>_<uuid4>` and delivers in name order, so two
        messages sent within one millisecond would be taken in random order: a ranking's items out
        of position order, which also defeats the worker's loading ahead (worker.prefetch)."""
        if not self._filesystem:
            self.celery.send_task(task, args=list(args))
            return
        with self._lock:
            while round(time.monotonic() * 1000) <= self._last_ms:
                time.sleep(0.0002)
            self.celery.send_task(task, args=list(args))
            self._last_ms = round(time.monotonic() * 1000)

    def broker_ok(self) -> bool:
        """Redis: a connection succeeds within 2 s. Filesystem: the queue folder exists."""
        opts = self.celery.conf.broker_transport_options or {}
        if "data_folder_in" in opts:
            return Path(opts["data_folder_in"]).is_dir()
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
