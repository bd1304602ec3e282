"""Task dispatch through Celery by task name: the API never imports the task code (or torch)."""

from __future__ import annotations

from pathlib import Path

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

    def score_item(self, item_id: str) -> None:
        self.celery.send_task(SCORE_TASK, args=[item_id])

    def validate_model(self, model_id: str) -> None:
        self.celery.send_task(VALIDATE_TASK, args=[model_id])

    def finetune_item(self, item_id: str) -> None:
        self.celery.send_task(FINETUNE_TASK, args=[item_id])

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
