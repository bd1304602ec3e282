"""In-process API fixtures: a temp SQLite registry, temp storage, a recording task dispatcher.

One home for the app and worker test folders, whose conftests import these fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from models_registry.db import make_engine, make_sessionmaker, session_scope
from models_registry.migrate import upgrade_head
from models_registry.tenants import create_tenant
from toporank.settings import Settings


class RecordingDispatcher:
    """Records what the API would send to the workers."""

    def __init__(self) -> None:
        self.scored: list[str] = []
        self.validated: list[str] = []
        self.finetuned: list[str] = []
        self.ok = True
        self.fail = False

    def score_item(self, item_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.scored.append(item_id)

    def validate_model(self, model_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.validated.append(model_id)

    def finetune_item(self, item_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.finetuned.append(item_id)

    def broker_ok(self) -> bool:
        return self.ok


def make_settings(tmp: Path, **over) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=tmp / "data", secret_key="test-secret-0123456789", **over)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path, max_upload_bytes=8 << 20, max_checkpoint_bytes=1 << 20, device="cpu")


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def api(settings, dispatcher) -> Iterator[TestClient]:
    engine = make_engine(settings.sqlalchemy_url)
    upgrade_head(engine)
    engine.dispose()
    app = create_app(settings, dispatcher=dispatcher)
    with TestClient(app) as client:
        yield client
    app.state.ctx.engine.dispose()


@pytest.fixture
def keys(api, settings) -> dict[str, str]:
    """Two tenants' API keys: 'a' and 'b'."""
    engine = make_engine(settings.sqlalchemy_url)
    out = {}
    with session_scope(make_sessionmaker(engine)) as s:
        for name in ("a", "b"):
            out[name] = create_tenant(s, f"tenant-{name}", settings.secret_key)[1]
    engine.dispose()
    return out


@pytest.fixture
def sessions(api):  # type: ignore[no-untyped-def]
    return api.app.state.ctx.sessions
