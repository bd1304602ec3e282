"""In-process API fixtures (defined in tests/utils/api.py, shared with tests/worker)."""

from tests.utils.api import RecordingDispatcher, api, dispatcher, keys, make_settings, sessions, settings

__all__ = ["RecordingDispatcher", "api", "dispatcher", "keys", "make_settings", "sessions", "settings"]
