"""TorchScript adapter: multi-scale outputs by position or key, strides verified by a dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models_registry.specs import ModelSpec
from worker.adapters import ModelLoadError, load_feature_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


class TupleEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv3d(1, 4, 3, padding=1)
        self.c1 = nn.Conv3d(4, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv3d(8, 8, 3, stride=(1, 2, 2), padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = F.leaky_relu(self.c0(x))
        b = F.leaky_relu(self.c1(a))
        return a, b, self.c2(b)


class DictEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = TupleEncoder()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a, b, c = self.inner(x)
        return {"high": a, "mid": b, "low": c, "logits": c.mean(dim=1, keepdim=True)}


STAGES = [
    {"name": "enc0", "channels": 4, "stride": [1, 1, 1], "role": "encoder"},
    {"name": "enc1", "channels": 8, "stride": [2, 2, 2], "role": "encoder"},
    {"name": "enc2", "channels": 8, "stride": [2, 4, 4], "role": "encoder"},
]


def _spec(stages=STAGES, **arch) -> ModelSpec:
    return ModelSpec.model_validate(
        {"name": "ts", "format": "torchscript", "architecture": arch, "stages": stages,
         "preprocessing": {"spacing": [1, 1, 1], "patch_size": [16, 32, 32]}}
    )


def _save(module: nn.Module, path: Path) -> nn.Module:
    torch.manual_seed(0)
    scripted = torch.jit.script(module.eval())
    scripted.save(str(path))
    return module


def test_tuple_outputs_in_stage_order_with_anisotropic_strides(tmp_path: Path):
    torch.manual_seed(0)
    enc = _save(TupleEncoder(), tmp_path / "m.pt")
    fm = load_feature_model(_spec(), tmp_path / "m.pt")
    x = torch.randn(1, 1, 16, 32, 32)
    out = fm(x)
    ref = enc(x)
    for i in range(3):
        torch.testing.assert_close(out[f"enc{i}"], ref[i], rtol=0, atol=0)
    assert [s.stride for s in fm.decoder_stages] == [(2, 2, 2), (1, 1, 1)]
    assert out["dec1"].shape == (1, 4, 16, 32, 32)
    assert fm.load_report.format == "torchscript" and fm.load_report.loaded


def test_dict_outputs_by_key(tmp_path: Path):
    torch.manual_seed(0)
    enc = _save(DictEncoder(), tmp_path / "d.pt")
    fm = load_feature_model(_spec(output_keys=["high", "mid", "low"]), tmp_path / "d.pt")
    x = torch.randn(1, 1, 16, 32, 32)
    assert torch.equal(fm(x)["enc2"], enc(x)["low"])
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_spec(), tmp_path / "d.pt")  # stage names are not output keys
    assert err.value.code == "stage_mismatch"


def test_declared_strides_are_verified(tmp_path: Path):
    _save(TupleEncoder(), tmp_path / "m.pt")
    wrong = [dict(s) for s in STAGES]
    wrong[2]["stride"] = [4, 4, 4]
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_spec(wrong), tmp_path / "m.pt")
    assert err.value.code == "stage_mismatch" and "stride" in err.value.message
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_spec(STAGES[:2]), tmp_path / "m.pt")
    assert err.value.code == "stage_mismatch"


def test_a_torch_save_checkpoint_is_not_torchscript(tmp_path: Path):
    torch.save(TupleEncoder().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_spec(), tmp_path / "sd.pt")
    assert err.value.code == "wrong_format"
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_spec(), tmp_path / "junk.pt")
    assert err.value.code == "wrong_format"
