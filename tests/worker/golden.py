"""Golden scores that guard `SCORING_CODE_VERSION`: a fixed tiny checkpoint and pilot set, scored by
the current code, against the values stored with the version they were computed under.

    python -m tests.worker.golden --write    # after bumping SCORING_CODE_VERSION on purpose

Stored scores are reused whenever the config hash matches, and the code version is part of what a
stored score means; a change that moves scores without bumping the version would silently mix old
and new numbers in one ranking.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models_registry.specs import ModelSpec, PreprocessingSpec
from tests.worker.ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from transferability.config import SCORING_CODE_VERSION, ScoringConfig
from worker.extract import CaseVolume

GOLDEN = Path(__file__).with_name("golden_scores.json")
CONFIGS = {
    "penalised": ScoringConfig(n_samples=240, n_anchors=40, k=3),
    "contracted-xavier-x2": ScoringConfig(n_samples=200, n_anchors=32, k=3, grtd_variant="contracted", decoder_init="xavier",
                                          n_decoders=2),
}
# Across CPU models, float32 convolutions round differently: GRTD moves by ~1e-7 relative, and a
# near-tie in one local MST can flip one edge (LBTC by ~1e-3). Real code changes move far more.
TOLERANCE = {"grtd": 1e-4, "lbtc": 2e-3, "baselines": 1e-3}


def golden_cases() -> list[CaseVolume]:
    """Two small labelled volumes (concentric classes, noisy image) at different spacings."""
    rng = np.random.default_rng(20261203)
    out = []
    for shape, spacing in [((24, 20, 22), (1.0, 1.0, 1.0)), ((14, 12, 13), (2.0, 2.0, 2.0))]:
        zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        c = np.asarray(shape) // 2
        r = np.sqrt(((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2)
        lab = np.zeros(shape, np.int64)
        lab[r < 8] = 1
        lab[r < 4] = 2
        out.append(CaseVolume((lab * 1.5 + rng.normal(0, 0.5, shape)).astype(np.float32)[None], lab, spacing))
    return out


def compute() -> dict[str, Any]:
    """Scores of the fixed checkpoint on the fixed cases under every golden config (CPU, one thread)."""
    from worker.pipeline import score_model

    torch.set_num_threads(1)
    kw = serialised_kwargs()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint_final.pth"
        net = build_dna_network("ResidualEncoderUNet", kw, seed=7)
        torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": nnssl_plan(kwargs=kw), "citations": []}, path)
        spec = ModelSpec(name="golden", format="nnssl", preprocessing=PreprocessingSpec(spacing=(1.0, 1.0, 1.0), patch_size=(16, 16, 16)))
        out = {}
        for name, cfg in CONFIGS.items():
            r = score_model(spec, path, golden_cases(), cfg, device="cpu")
            out[name] = {"config_hash": r.config_hash, "grtd": r.grtd, "grtd_variants": r.details["grtd"]["variants"], "lbtc": r.lbtc,
                         "baselines": r.baselines}
    return {"code_version": SCORING_CODE_VERSION, "scores": out}


def differences(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What moved beyond the tolerances, one line each."""
    out = []
    for name, want in stored["scores"].items():
        got = now["scores"].get(name)
        if got is None:
            out.append(f"{name}: no longer computed")
            continue
        pairs = [("grtd", want["grtd"], got["grtd"], "grtd"), ("lbtc", want["lbtc"], got["lbtc"], "lbtc")]
        pairs += [(f"grtd[{v}]", want["grtd_variants"][v], got["grtd_variants"].get(v), "grtd") for v in want["grtd_variants"]]
        pairs += [(f"baselines[{b}]", want["baselines"][b], got["baselines"].get(b), "baselines") for b in want["baselines"]]
        for label, a, b, kind in pairs:
            tol = TOLERANCE[kind]
            limit = tol if kind == "lbtc" else tol * max(abs(a), 1e-12)
            if b is None or abs(a - b) > limit:
                out.append(f"{name}: {label} {a!r} -> {b!r}")
        if set(got["baselines"]) != set(want["baselines"]):
            out.append(f"{name}: baselines {sorted(want['baselines'])} -> {sorted(got['baselines'])}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="store the current scores as the golden ones")
    args = p.parse_args(argv)
    now = compute()
    if args.write:
        GOLDEN.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} (code version {now['code_version']})")
        return 0
    stored = json.loads(GOLDEN.read_text())
    diff = differences(stored, now)
    print("\n".join(diff) or "scores match the golden file")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
