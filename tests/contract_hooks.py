"""schemathesis hooks for the contract test (SCHEMATHESIS_HOOKS=tests.contract_hooks).

The upload bodies are binary parts whose *content* the schema cannot describe: a generated
`archive` is random bytes, never an nnU-Net archive, so every positive upload case would be
refused (422) and the stateful phase would never own a pilot set. For positive cases the parts
become real content, drawn from a small pool: a valid nnU-Net zip, a catalog spec, a non-empty
checkpoint. Negative cases keep what schemathesis generated, so refusals of bad bodies stay tested.
"""

from __future__ import annotations

import io
import json
import zipfile

import schemathesis

from tests.utils.archives import nnunet_files


def _archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in nnunet_files(n_cases=1, shape=(12, 12, 12)).items():
            zf.writestr(name, data)
    return buf.getvalue()


ARCHIVE = _archive()
SPECS = [json.dumps({"name": f"fuzz-{entry}", "format": "nnssl", "catalog": entry}) for entry in ("demo-resenc-mae", "openmind-resencl-voco")]


@schemathesis.hook
def before_call(ctx, case, **kwargs):  # type: ignore[no-untyped-def]
    meta = case.meta
    if meta is None or str(meta.generation.mode) != "positive" or not isinstance(case.body, dict):
        return
    if case.operation.method.upper() != "POST":
        return
    if case.operation.path == "/v1/pilot-sets":
        case.body["archive"] = ARCHIVE
    elif case.operation.path == "/v1/models":
        if case.query and "wait" in case.query:
            case.query["wait"] = 0  # no worker in the fuzz run: waiting for validation only times the client out
        case.body["spec"] = SPECS[len(case.body.get("spec") or "") % len(SPECS)]
        case.body["checkpoint"] = b"not a real checkpoint: validation is the worker's job" if not case.body.get("checkpoint") else case.body["checkpoint"]
