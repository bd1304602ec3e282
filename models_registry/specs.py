"""The model spec the registry stores: how to build an encoder and how to feed it (pydantic v2).

Torch-free on purpose: the API validates specs with `ModelSpec.model_validate(json)` and never
imports torch. The worker's adapters (`worker.adapters`) turn a spec plus a checkpoint file into a
feature model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelFormat = Literal["nnssl", "monai", "monai_bundle", "torchscript"]
StageRole = Literal["encoder", "decoder"]
Normalization = Literal["zscore", "ct", "none"]
Resampling = Literal["linear", "nnunet"]

MONAI_CLASSES = ("SwinUNETR", "SegResNet", "UNETR", "BasicUNet", "DynUNet")
"""MONAI network classes the `monai` and `monai_bundle` adapters know how to split into stages."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageSpec(_Strict):
    """One feature stage: `stride` is cumulative, in voxels of the model's (resampled) grid."""

    name: str = Field(min_length=1, max_length=64)
    channels: int = Field(gt=0)
    stride: tuple[int, int, int]
    role: StageRole

    @field_validator("stride")
    @classmethod
    def _positive_stride(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(s < 1 for s in v):
            raise ValueError(f"stride must be positive integers, got {v}")
        return v


class PreprocessingSpec(_Strict):
    """What the model expects: voxel spacing (mm), intensity normalisation, window size, channels.

    `ct`: clip to `ct_clip` = (lo, hi), then `(x - ct_mean) / ct_std`; when mean/std are omitted
    the window is mapped to [-1, 1]. `zscore`: per volume and channel. `none`: left as is.

    nnU-Net / nnssl preprocessing (what OpenMind checkpoints were trained on) is spelt out by four
    fields: `transpose_forward` (axis order of the model grid), `crop_to_nonzero` (normalise and
    resample the non-zero bounding box only; the rest is zero padding in the model grid),
    `use_mask_for_norm` (z-score statistics inside the hole-filled non-zero mask, zero outside) and
    `resampling = "nnunet"` (third-order splines, clipped to the input range; nnU-Net's separate-z
    rule, order 0 across slices, when spacing is anisotropic beyond 3:1). The defaults keep the
    simple path: whole volume, trilinear, no transpose.
    """

    spacing: tuple[float, float, float]
    normalization: Normalization = "zscore"
    ct_clip: tuple[float, float] | None = None
    ct_mean: float | None = None
    ct_std: float | None = None
    patch_size: tuple[int, int, int]
    in_channels: int = Field(default=1, gt=0)
    resampling: Resampling = "linear"
    crop_to_nonzero: bool = False
    use_mask_for_norm: bool = False
    transpose_forward: tuple[int, int, int] = (0, 1, 2)

    @field_validator("transpose_forward")
    @classmethod
    def _a_permutation(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if sorted(v) != [0, 1, 2]:
            raise ValueError(f"transpose_forward must be a permutation of (0, 1, 2), got {v}")
        return v

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not (s > 0) or s != s or s == float("inf") for s in v):
            raise ValueError(f"spacing must be positive and finite, got {v}")
        return v

    @field_validator("patch_size")
    @classmethod
    def _positive_patch(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(p < 1 for p in v):
            raise ValueError(f"patch_size must be positive, got {v}")
        return v

    @model_validator(mode="after")
    def _ct_params(self) -> "PreprocessingSpec":
        if self.normalization == "ct":
            if self.ct_clip is None:
                raise ValueError("normalization 'ct' needs ct_clip = [lo, hi]")
            if not self.ct_clip[0] < self.ct_clip[1]:
                raise ValueError(f"ct_clip must have lo < hi, got {self.ct_clip}")
            if self.ct_std is not None and not self.ct_std > 0:
                raise ValueError("ct_std must be > 0")
        elif self.ct_clip is not None or self.ct_mean is not None or self.ct_std is not None:
            raise ValueError("ct_clip/ct_mean/ct_std apply to normalization 'ct' only")
        if self.use_mask_for_norm and not (self.crop_to_nonzero and self.normalization == "zscore"):
            raise ValueError("use_mask_for_norm needs crop_to_nonzero and normalization 'zscore' (the mask is the non-zero region)")
        return self


class KeyRewrite(_Strict):
    """A declared checkpoint-key rewrite, applied in order before loading.

    `prefix`: a key starting with `old` gets it replaced by `new` (e.g. `module.` -> ``).
    `segment`: every dotted segment run equal to `old` is replaced (e.g. `fc1` -> `linear1`).
    """

    old: str = Field(min_length=1)
    new: str = ""
    kind: Literal["prefix", "segment"] = "prefix"

    def apply(self, key: str) -> str:
        if self.kind == "prefix":
            return self.new + key[len(self.old) :] if key.startswith(self.old) else key
        parts = key.split(".")
        old = self.old.split(".")
        new = self.new.split(".") if self.new else []
        out: list[str] = []
        i = 0
        while i < len(parts):
            if parts[i : i + len(old)] == old:
                out.extend(new)
                i += len(old)
            else:
                out.append(parts[i])
                i += 1
        return ".".join(out)


class ModelSpec(_Strict):
    """A registered model: format, architecture, preprocessing and (optionally) its stages.

    - `nnssl`: `architecture` may be empty (the checkpoint's `nnssl_adaptation_plan` says it all);
      an `arch_class_name` here must match the plan; `adaptation_plan` may hold the plan's JSON
      for checkpoints saved without one. A checkpoint whose `trainer_name` contradicts the
      `catalog` entry is refused (`trainer_mismatch`) unless `allow_trainer_mismatch` is set; the
      override is recorded in the load report.
    - `monai` / `monai_bundle`: `architecture = {"class": one of MONAI_CLASSES, "kwargs": {...}}`,
      `checkpoint_key` (dotted path into the loaded dict: none, `state_dict`, `net`, ...) and
      `prefix_rewrites`.
    - `torchscript`: `stages` are required (encoder stages, in the module's output order, or
      matching its output dict keys when `architecture.output_keys` is given).
    `stages` left out are filled by the worker from a dry run and stored with the model.
    """

    name: str = Field(min_length=1, max_length=200)
    format: ModelFormat
    catalog: str | None = None
    ssl_method: str | None = None
    architecture: dict[str, Any] = Field(default_factory=dict)
    preprocessing: PreprocessingSpec | None = None
    stages: list[StageSpec] | None = None
    checkpoint_key: str | None = None
    prefix_rewrites: list[KeyRewrite] = Field(default_factory=list)
    allow_trainer_mismatch: bool = False
    description: str | None = None

    @field_validator("name", "catalog", "ssl_method", "description", "checkpoint_key")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        """Names are stored and shown: no control characters (PostgreSQL refuses NUL outright)."""
        if v is not None and not all(ch.isprintable() or ch in "\t\n" for ch in v):
            raise ValueError("must not contain control characters")
        if v is not None:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
        return v

    @model_validator(mode="after")
    def _per_format(self) -> "ModelSpec":
        fmt = self.format
        if fmt in ("monai", "monai_bundle") and self.catalog is None:
            cls = self.architecture.get("class")
            if cls not in MONAI_CLASSES:
                raise ValueError(f"format {fmt!r} needs architecture.class in {list(MONAI_CLASSES)}, got {cls!r}")
            kwargs = self.architecture.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise ValueError("architecture.kwargs must be an object")
        if fmt == "torchscript" and self.catalog is None:
            if not self.stages or not any(s.role == "encoder" for s in self.stages):
                raise ValueError("format 'torchscript' needs its encoder stages (name, channels, stride)")
        if fmt != "monai" and fmt != "monai_bundle" and (self.checkpoint_key or self.prefix_rewrites):
            raise ValueError("checkpoint_key and prefix_rewrites apply to the monai formats only")
        if self.allow_trainer_mismatch and (fmt != "nnssl" or self.catalog is None):
            raise ValueError("allow_trainer_mismatch applies to nnssl checkpoints registered under a catalog entry only")
        if self.stages is not None:
            names = [s.name for s in self.stages]
            if len(set(names)) != len(names):
                raise ValueError(f"stage names must be unique, got {names}")
        return self

    def encoder_stages(self) -> list[StageSpec]:
        return [s for s in (self.stages or []) if s.role == "encoder"]

    def decoder_stages(self) -> list[StageSpec]:
        return [s for s in (self.stages or []) if s.role == "decoder"]


TOKEN_DECODER_WIDTH = 32
"""Channels per unit of stride of a token encoder's fresh decoder: 128, 64, 32 at strides 4, 2, 1 (ResEnc-L's widths there)."""


def is_token_encoder(strides: list[tuple[int, int, int]]) -> bool:
    """A single-resolution encoder (ViT-like: Primus, UNETR): every stage at the same stride, above 1."""
    return len(set(strides)) == 1 and max(strides[0]) > 1


def decoder_geometry(channels: list[int], strides: list[tuple[int, int, int]]) -> list[tuple[int, tuple[int, int, int]]]:
    """(channels, stride) of each stage of the fresh decoder, coarse to fine (metrics.md §1).

    A multi-resolution encoder gets nnU-Net's decoder: stage t upsamples to encoder stage S-2-t and
    takes its channels and stride (its skip). A token encoder has no finer skips: its decoder
    upsamples the last stage by 2 per axis and stage until stride 1, without skips, with
    min(previous channels, TOKEN_DECODER_WIDTH * stride) channels (decisions.md, Primus).
    Pure Python, shared by the registry (stage names for the API) and the worker (the decoder)."""
    if len(channels) < 2 or len(channels) != len(strides):
        raise ValueError("a decoder needs at least two encoder stages")
    for a, b in zip(strides, strides[1:]):
        if any(sb % sa for sa, sb in zip(a, b)):
            raise ValueError(f"encoder strides must divide each other going deeper: {a} -> {b}")
    if not is_token_encoder(strides):
        return [(channels[s], strides[s]) for s in range(len(channels) - 2, -1, -1)]
    out: list[tuple[int, tuple[int, int, int]]] = []
    c, stride = channels[-1], strides[-1]
    while max(stride) > 1:
        stride = tuple(max(1, s // 2) for s in stride)  # type: ignore[assignment]
        c = min(c, TOKEN_DECODER_WIDTH * max(stride))
        out.append((c, stride))
    return out


def decoder_stages_for(encoder: list[StageSpec]) -> list[StageSpec]:
    """The fresh decoder's stages, coarse to fine, `dec0`, `dec1`, ... (`decoder_geometry`)."""
    if len(encoder) < 2:
        raise ValueError("a decoder needs at least two encoder stages")
    geometry = decoder_geometry([s.channels for s in encoder], [s.stride for s in encoder])
    return [StageSpec(name=f"dec{t}", channels=c, stride=st, role="decoder") for t, (c, st) in enumerate(geometry)]


def with_decoder_stages(spec: ModelSpec) -> ModelSpec:
    """Return `spec` with its decoder stages (re)derived from its encoder stages, when it has any."""
    enc = spec.encoder_stages()
    if not enc:
        return spec
    return spec.model_copy(update={"stages": enc + decoder_stages_for(enc)})
