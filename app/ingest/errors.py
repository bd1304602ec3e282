"""Ingest failures: a stable code, a message, and per-file problems shown back to the client."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem with one file; `file` is the path inside the client's archive (never logged)."""

    file: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "problem": self.problem}


class IngestError(Exception):
    """Bad input: the API answers `status` with `{code, detail, errors}`; nothing is kept."""

    def __init__(self, code: str, detail: str, problems: list[Problem] | None = None, status: int = 422) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.problems = problems or []
        self.status = status
