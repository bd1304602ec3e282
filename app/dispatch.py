"""Task dispatch through Celery by task name: the API never imports the task code (or torch)."""

from __future__ import annotations

from celery import Celery

from toporank.settings import Settings

SCORE_TASK = "toporank.score_item"
VALIDATE_TASK = "toporank.validate_model"


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

    def broker_ok(self) -> bool:
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
                if conn.transport_cls == "filesystem" or conn.transport.driver_type == "filesystem":
                    opts = self.celery.conf.broker_transport_options or {}
                    from pathlib import Path

                    folder = Path(opts.get("data_folder_in", "."))
                    return folder.is_dir()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
