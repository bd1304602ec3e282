"""The embedded broker's message files appear whole: a worker that lists the queue while a message is
being written must not take it half-written (kombu's own transport hands it over empty)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection
from kombu.transport import filesystem

from toporank.settings import Settings
from worker import fs_broker
from worker.celery_app import celery_config


def _connection(tmp_path: Path, transport: str) -> Connection:
    folder = tmp_path / "queue"
    folder.mkdir()
    opts = {"data_folder_in": str(folder), "data_folder_out": str(folder), "processed_folder": str(tmp_path),
            "store_processed": False}
    return Connection(transport=transport, transport_options=opts)


def test_kombus_own_put_can_be_taken_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race this module fixes: kombu creates the file, locks it, then writes; a consumer in
    between reads nothing and fails to decode (the worker dies of it)."""
    with _connection(tmp_path, "filesystem") as conn:
        channel = conn.default_channel
        taken: list[BaseException] = []
        real_lock = filesystem.lock

        def lock_then_consume(fh, flags):  # type: ignore[no-untyped-def]
            real_lock(fh, flags)
            try:
                channel._get("q")
            except BaseException as exc:  # noqa: BLE001 - the failure is what the test records
                taken.append(exc)

        monkeypatch.setattr(filesystem, "lock", lock_then_consume)
        channel._put("q", {"body": "x"})
        assert len(taken) == 1 and isinstance(taken[0], json.JSONDecodeError)


def test_a_message_being_written_is_invisible_then_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _connection(tmp_path, fs_broker.TRANSPORT) as conn:
        channel = conn.default_channel
        assert isinstance(channel, fs_broker.Channel)
        seen_mid_write: list[object] = []
        real_replace = os.replace

        def consume_then_replace(src, dst):  # type: ignore[no-untyped-def]
            assert Path(src).stat().st_size > 0  # fully written before it gets its real name
            try:
                seen_mid_write.append(channel._get("q"))
            except Empty:
                seen_mid_write.append("empty")
            real_replace(src, dst)

        monkeypatch.setattr(fs_broker.os, "replace", consume_then_replace)
        channel._put("q", {"body": "x"})
        assert seen_mid_write == ["empty"]
        assert channel._get("q") == {"body": "x"}
        assert os.listdir(tmp_path / "queue") == []  # taken, and no partial file left behind


def test_messages_keep_kombus_names_and_order(tmp_path: Path) -> None:
    """<monotonic ms>_<uuid4>.<queue>.msg: messages sent in different milliseconds are taken in the
    order sent (app.dispatch spaces a ranking's sends by 1 ms for this)."""
    with _connection(tmp_path, fs_broker.TRANSPORT) as conn:
        channel = conn.default_channel
        for i in range(3):
            channel._put("q", {"i": i})
            time.sleep(0.002)
        names = sorted(os.listdir(tmp_path / "queue"))
        assert len(names) == 3 and all(n.endswith(".q.msg") for n in names)
        assert [channel._get("q")["i"] for _ in range(3)] == [0, 1, 2]
        with pytest.raises(Empty):
            channel._get("q")


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _connection(tmp_path, fs_broker.TRANSPORT) as conn:
        channel = conn.default_channel

        def fail(src, dst):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

        monkeypatch.setattr(fs_broker.os, "replace", fail)
        with pytest.raises(filesystem.ChannelError):
            channel._put("q", {"body": "x"})
        assert os.listdir(tmp_path / "queue") == []


def test_the_embedded_default_selects_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPORANK_DATA_DIR", str(tmp_path))
    assert celery_config(Settings())["broker_transport"] == fs_broker.TRANSPORT
    monkeypatch.setenv("TOPORANK_BROKER_URL", "redis://127.0.0.1:6379/15")
    assert "broker_transport" not in celery_config(Settings())
