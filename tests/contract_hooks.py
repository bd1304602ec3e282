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
from schemathesis.core.parameters import ParameterLocation
from schemathesis.transport.serialization import Binary  # how schemathesis itself carries `format: binary` values

from tests.utils.archives import nnunet_files


def _archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in nnunet_files(n_cases=1, shape=(12, 12, 12)).items():
            zf.writestr(name, data)
    return buf.getvalue()


ARCHIVE = _archive()
SPECS = [json.dumps({"name": f"fuzz-{entry}", "format": "nnssl", "catalog": entry}) for entry in ("demo-resenc-mae", "openmind-resencl-voco")]


def _positive(meta, location: ParameterLocation) -> bool:  # type: ignore[no-untyped-def]
    """Whether the case is positive overall and in `location` (negative parts must reach the API as generated)."""
    component = meta.components.get(location)
    return not meta.generation.mode.is_negative and (component is None or not component.mode.is_negative)


@schemathesis.hook
def before_call(ctx, case, **kwargs):  # type: ignore[no-untyped-def]
    meta = case.meta
    if meta is None or case.operation.method.upper() != "POST" or not isinstance(case.body, dict):
        return
    if case.operation.path == "/v1/models" and case.query and "wait" in case.query and _positive(meta, ParameterLocation.QUERY):
        case.query["wait"] = 0  # no worker in the fuzz run: waiting for validation only times the client out
    if not _positive(meta, ParameterLocation.BODY):
        return
    if case.operation.path == "/v1/pilot-sets":
        case.body["archive"] = Binary(ARCHIVE)
    elif case.operation.path == "/v1/models":
        case.body["spec"] = SPECS[len(case.body.get("spec") or "") % len(SPECS)]
        if not getattr(case.body.get("checkpoint"), "data", b""):
            case.body["checkpoint"] = Binary(b"not a real checkpoint: validation is the worker's job")
