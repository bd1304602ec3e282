"""Celery's filesystem broker (the embedded default) with message files that appear whole.

kombu's filesystem transport creates a message file and then writes it. A worker listing the
folder in between takes the file, reads it empty and dies of a JSONDecodeError ("Unrecoverable
error"; kombu issue #1551, still open in kombu 5.7). CI hit it with the 0.1 s polling
(`TOPORANK_BROKER_POLL_S`). Here a message is written under a name the consumer skips and then
renamed to its real name, an atomic step on one filesystem: a consumer sees a whole message or
none. Names and their order are kombu's own, so consumers need no change.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".part"
"""Appended while a message is written; kombu's consumer only takes names ending in `<queue>.msg`."""

TRANSPORT = f"{__name__}:Transport"
"""The value of Celery's `broker_transport` that selects this transport."""


class Channel(filesystem.Channel):
    """kombu's filesystem channel; only the writing of a message differs."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Write `payload` for `queue` beside its final name, then rename it into place."""
        # kombu's name: <monotonic ms>_<uuid4>.<queue>.msg, taken in name order.
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.remove(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
