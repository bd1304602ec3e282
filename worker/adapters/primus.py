"""nnssl Primus checkpoints (the OpenMind PrimusM SimMIM release): an EVA transformer on 8^3 patches.

The plan names a preset (`PrimusS/B/M/L`, no `arch_kwargs`); `down_projection` (the patch
embedding, the stem) and `eva` (blocks, norm, learned absolute positions `eva.pos_embed`) are the
encoder; `up_projection` and `mask_token` are ignored. The encoder's stages are token maps at
stride 8: the outputs of evenly spaced EVA blocks, the last one after the final norm (decisions.md).
Absolute positions were learned for the pre-training patch; another extraction patch gets them
resampled trilinearly on the token grid (nnssl's `key_to_lpe`), and the load report says so.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worker.adapters.base import LoadReport, ModelLoadError, StageInfo, repeat_in_channels

PATCH_EMBED = (8, 8, 8)
PRESETS = {"PrimusS": "S", "PrimusB": "B", "PrimusM": "M", "PrimusL": "L"}
"""nnssl's Primus presets -> dynamic_network_architectures' `_PRIMUS_CONFIGS` names."""
N_STAGES = 4


def import_primus() -> Any:
    """`dynamic_network_architectures.architectures.primus`, which needs timm (and timm torchvision).

    A CPU install whose torchvision is a CUDA build fails inside torchvision's meta-kernel
    registrations (`operator torchvision::nms does not exist`); timm uses none of torchvision's
    compiled ops, so the import is retried once with those registrations skipped."""
    try:
        from dynamic_network_architectures.architectures import primus
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]
        import types

        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
        from dynamic_network_architectures.architectures import primus
    return primus


def preset(arch_name: str) -> dict[str, int]:
    """embed_dim, eva_depth and eva_numheads of an nnssl Primus preset."""
    configs = import_primus()._PRIMUS_CONFIGS
    return dict(configs[PRESETS[arch_name]])


def stage_taps(depth: int) -> list[int]:
    """Indices of the EVA blocks whose outputs are the encoder stages: every depth/4-th, ending with the last."""
    return [round(depth * (k + 1) / N_STAGES) - 1 for k in range(N_STAGES)]


class PrimusEncoder(nn.Module):
    """Patch embedding + EVA blocks; returns the token maps after `taps` (the last after `eva.norm`),
    each (B, C, X/8, Y/8, Z/8), in the spatial order Primus itself uses ("b c w h d" <-> "b (w h d) c")."""

    def __init__(self, down_projection: nn.Module, eva: nn.Module, taps: list[int]) -> None:
        super().__init__()
        self.down_projection = down_projection
        self.eva = eva
        self.taps = list(taps)
        self.strides = [PATCH_EMBED] * len(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.down_projection(x)
        b, c, w, h, d = t.shape
        seq, rope, _ = self.eva._pos_embed(t.flatten(2).transpose(1, 2))
        out = []
        last = self.taps[-1]
        for i, blk in enumerate(self.eva.blocks):
            seq = blk(seq, rope=rope)
            if i in self.taps:
                tokens = self.eva.norm(seq) if i == last else seq
                out.append(tokens.transpose(1, 2).reshape(b, -1, w, h, d))
            if i == last:
                break
        return out


def build_primus(arch_name: str, in_channels: int, patch: tuple[int, int, int]) -> nn.Module:
    """The Primus network nnssl's trainers build for `arch_name` (init_values 0.1, scaled inner attention), for `patch` inputs."""
    if any(p % s for p, s in zip(patch, PATCH_EMBED)):
        raise ModelLoadError("bad_spec", f"Primus needs a patch size that is a multiple of 8, got {patch}")
    conf = preset(arch_name)
    primus = import_primus()
    return primus.Primus(
        in_channels, conf["embed_dim"], PATCH_EMBED, 1, eva_depth=conf["eva_depth"], eva_numheads=conf["eva_numheads"],
        input_shape=patch, init_values=0.1, scale_attn_inner=True,
    )


def _resample_positions(pos: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    """(1, N_old, C) learned positions on the old token grid -> (1, N_new, C), trilinear on the grid."""
    c = pos.shape[-1]
    grid = pos[0].T.reshape(1, c, *old_grid)
    new = F.interpolate(grid.float(), size=new_grid, mode="trilinear", align_corners=False)
    return new.reshape(c, -1).T[None].to(pos.dtype)


def load_primus_encoder(
    arch_name: str,
    weights: Mapping[str, torch.Tensor],
    plan: Mapping[str, Any],
    in_channels: int,
    patch: tuple[int, int, int],
    report: LoadReport,
) -> tuple[PrimusEncoder, list[StageInfo]]:
    """Build the encoder for `patch` inputs and load `down_projection.*` and `eva.*` strictly;
    everything else is reported as ignored."""
    net = build_primus(arch_name, in_channels, patch)
    stem = str(plan.get("key_to_stem") or "down_projection")
    body = str(plan.get("key_to_encoder") or "eva")
    lpe = str(plan.get("key_to_lpe") or "eva.pos_embed")
    in_proj = [str(k) for k in (plan.get("keys_to_in_proj") or ("down_projection.proj",))]
    expected = {k: v for k, v in net.state_dict().items() if k.startswith(("down_projection.", "eva."))}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.startswith(stem + "."):
            mapped["down_projection" + key[len(stem):]] = value
        elif key.startswith(body + "."):
            mapped["eva" + key[len(body):]] = value
        else:
            report.ignored.append(key)
    lpe_key = "eva" + lpe[len(body):] if lpe.startswith(body + ".") else lpe
    report.missing = sorted(k for k in expected if k not in mapped)
    report.unexpected = sorted(k for k in mapped if k not in expected)
    if report.missing:
        raise ModelLoadError("missing_keys", f"{len(report.missing)} Primus encoder weights are missing (first: {report.missing[:3]})")
    if report.unexpected:
        raise ModelLoadError("unexpected_keys", f"{len(report.unexpected)} weights do not exist in {arch_name} (first: {report.unexpected[:3]})")
    state: dict[str, torch.Tensor] = {}
    for key, want in expected.items():
        got = mapped[key]
        if key == lpe_key and got.shape != want.shape:
            old = _token_grid(plan, got.shape[1])
            new = tuple(p // s for p, s in zip(patch, PATCH_EMBED))
            got = _resample_positions(got, old, new)
            report.notes.append(f"learned positions resampled from a {old} token grid to {new} for {patch} patches")
        elif tuple(got.shape) != tuple(want.shape):
            if any(key == p + ".weight" for p in ("down_projection.proj", *[k.replace(stem, "down_projection", 1) for k in in_proj])) \
                    and got.shape[1] == 1 and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                got = repeat_in_channels(got, int(want.shape[1]))
                report.notes.append(f"patch embedding repeated from 1 to {want.shape[1]} input channels (divided by {want.shape[1]})")
            else:
                raise ModelLoadError("shape_mismatch", f"{key}: checkpoint {tuple(got.shape)} vs network {tuple(want.shape)}")
        state[key] = got.to(want.dtype)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) & set(expected):  # pragma: no cover - guarded by the key checks above
        raise ModelLoadError("missing_keys", f"Primus load left {len(missing)} keys unloaded")
    report.loaded = sorted(expected)
    depth = len(net.eva.blocks)
    encoder = PrimusEncoder(net.down_projection, net.eva, stage_taps(depth))
    channels = int(net.embed_dim)
    stages = [StageInfo(f"enc{i}", channels, PATCH_EMBED, "encoder") for i in range(N_STAGES)]
    report.meta.update({"arch_class_name": arch_name, "stage_blocks": encoder.taps, "embed_dim": channels})
    return encoder, stages


def _token_grid(plan: Mapping[str, Any], n_tokens: int) -> tuple[int, int, int]:
    """The token grid the positions were learned on: the plan's pre-training patch / 8, or a cube."""
    try:
        configs = plan["pretrain_plan"]["configurations"]
        cfg = next(iter(configs.values()))
        grid = tuple(int(p) // s for p, s in zip(cfg["patch_size"], PATCH_EMBED))
        if len(grid) == 3 and grid[0] * grid[1] * grid[2] == n_tokens:
            return grid  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError, StopIteration, AttributeError):
        pass
    side = round(n_tokens ** (1 / 3))
    if side**3 != n_tokens:
        raise ModelLoadError("shape_mismatch", f"cannot tell the token grid of {n_tokens} learned positions")
    return (side, side, side)
