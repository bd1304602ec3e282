"""The zoo catalog: named model families with their specs, so registering a checkpoint needs only
the file and an entry name. Nothing here downloads anything; `source` only tells a person where
the published weights live.

Entries: the OpenMind releases as nnssl trains them (1 mm isotropic, z-score per volume, 1
channel, patch 160^3): ResEnc-L MAE, S3D/SparK, Models Genesis, VoCo, SimCLR, SwinUNETR pretext
and Volume Fusion, and PrimusM SimMIM (nnssl has no ResEnc-L SimMIM: its SimMIM trainer builds the
Primus-M transformer; the paper lists SimMIM among "ResEnc-L backbones", decisions.md says why we
follow nnssl); plus the small demo encoders written by `toporank build-demo-zoo`.

Each OpenMind entry names the nnssl trainer classes that write its checkpoints (`trainer_name` in
the file): the adapter refuses a file whose trainer contradicts the entry it is registered under,
and `toporank zoo import` infers the entry from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models_registry.specs import ModelSpec, PreprocessingSpec, StageSpec, decoder_stages_for, with_decoder_stages

RESENC_L_FEATURES = (32, 64, 128, 256, 320, 320)
RESENC_L_STRIDES = (1, 2, 4, 8, 16, 32)  # cumulative; per-stage strides 1-2-2-2-2-2
RESENC_L_BLOCKS = (1, 3, 4, 6, 6, 6)

# The demo zoo (worker/demo_zoo.py builds the checkpoints with exactly these settings).
DEMO_FEATURES = (8, 16, 32, 64)
DEMO_STRIDES = (1, 2, 4, 8)
DEMO_BLOCKS = (1, 1, 1, 1)
DEMO_SPACING = (3.0, 3.0, 3.0)
DEMO_PATCH = (64, 64, 64)


def _encoder_stages(features: tuple[int, ...], strides: tuple[int, ...]) -> list[StageSpec]:
    return [
        StageSpec(name=f"enc{i}", channels=c, stride=(s, s, s), role="encoder")
        for i, (c, s) in enumerate(zip(features, strides))
    ]


def _all_stages(features: tuple[int, ...], strides: tuple[int, ...]) -> list[StageSpec]:
    enc = _encoder_stages(features, strides)
    return enc + decoder_stages_for(enc)


def demo_arch_kwargs() -> dict[str, Any]:
    """`arch_kwargs` of the demo ResEnc as nnssl serialises them (classes as dotted names)."""
    n = len(DEMO_FEATURES)
    per_stage = [1] + [2] * (n - 1)
    return {
        "n_stages": n,
        "features_per_stage": list(DEMO_FEATURES),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[s, s, s] for s in per_stage],
        "n_blocks_per_stage": list(DEMO_BLOCKS),
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


@dataclass(frozen=True)
class CatalogEntry:
    """A known model family: the spec fields a registration inherits unless it overrides them."""

    name: str
    title: str
    ssl_method: str
    format: str
    architecture: dict[str, Any]
    preprocessing: PreprocessingSpec
    stages: list[StageSpec]
    checkpoint_layout: str
    source: str | None = None
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    trainer_names: tuple[str, ...] = ()
    """nnssl trainer classes whose checkpoints belong here; `Name_suffix` variants (batch size,
    data subsets) count as `Name`. Empty: the entry does not check the trainer."""
    adaptation_plan: dict[str, Any] | None = None
    """The plan nnssl writes for this family, used for files saved without one (SparK/S3D output)."""

    def accepts_trainer(self, trainer_name: str) -> bool:
        """Whether a checkpoint written by `trainer_name` belongs to this entry."""
        return any(trainer_name == t or trainer_name.startswith(t + "_") for t in self.trainer_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ssl_method": self.ssl_method,
            "format": self.format,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "stages": [s.model_dump(mode="json") for s in self.stages],
            "checkpoint_layout": self.checkpoint_layout,
            "source": self.source,
            "notes": self.notes,
            "tags": list(self.tags),
            "trainer_names": list(self.trainer_names),
        }

    def spec(self, name: str | None = None) -> ModelSpec:
        """A complete spec for a checkpoint of this family."""
        return ModelSpec(
            name=name or self.name,
            format=self.format,  # type: ignore[arg-type]
            catalog=self.name,
            ssl_method=self.ssl_method,
            architecture=dict(self.architecture),
            preprocessing=self.preprocessing,
            stages=list(self.stages),
        )


_OPENMIND_PREP = PreprocessingSpec(
    spacing=(1.0, 1.0, 1.0), normalization="zscore", patch_size=(160, 160, 160), in_channels=1,
    resampling="nnunet", crop_to_nonzero=True, use_mask_for_norm=False, transpose_forward=(0, 1, 2),
)
"""What nnssl's default preprocessor does with the `onemmiso` plan of the OpenMind releases."""
_OPENMIND_STAGES = _all_stages(RESENC_L_FEATURES, RESENC_L_STRIDES)
_FULL_UNET = "nnssl checkpoint_final.pth: full ResEnc-L U-Net (encoder.* used, decoder.* ignored)"
_HUB = "; hub release: checkpoint_final.pth with adaptation_plan.json and config.json beside it"


def resencl_adaptation_plan() -> dict[str, Any]:
    """The adaptation plan nnssl's ResEnc-L trainers write (preset `ResEncL`, encoder keys, 1 mm plan)."""
    return {
        "architecture_plans": {"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": None},
        "pretrain_plan": {
            "dataset_name": "Dataset745_OpenMind",
            "configurations": {
                "onemmiso": {"spacing": [1.0, 1.0, 1.0], "patch_size": [160, 160, 160], "normalization_schemes": ["ZScoreNormalization"]}
            },
        },
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
    }


# (key, method, title, layout, hub name, nnssl trainer classes)
_OPENMIND = [
    ("mae", "MAE", "Masked autoencoder (sparse masked reconstruction)", _FULL_UNET, "MAE", ("BaseMAETrainer",)),
    ("mg", "ModelsGenesis", "Models Genesis restoration of transformed volumes", _FULL_UNET, "MG", ("ModelGenesisTrainer",)),
    (
        "s3d", "S3D", "S3D: SparK-style sparse masked modelling in 3D",
        "SparK trainer output: network_weights (full ResEnc-L U-Net) + spark_weights (ignored), no embedded plan",
        "S3D", ("SparkMAETrainer", "EffSparkMAETrainer", "BaseVariableSparkMAETrainer"),
    ),
    ("voco", "VoCo", "VoCo volume contrastive learning", "nnssl checkpoint_final.pth: encoder + projector.* (ignored)", "VoCo",
     ("VoCoTrainer",)),
    ("simclr", "SimCLR", "SimCLR instance contrastive learning", "nnssl checkpoint_final.pth: encoder + projector.* (ignored)", "SimCLR",
     ("SimCLRTrainer",)),
    (
        "swinunetr", "SwinUNETR", "SwinUNETR pretext tasks (inpainting, rotation, contrastive) on ResEnc-L",
        "nnssl checkpoint_final.pth: encoder only, plus rotation_proj_head, contrast_proj_head and recon_proj_head (ignored)",
        "SwinUNETR", ("SwinUNETRTrainer",),
    ),
    ("vf", "VolumeFusion", "Volume Fusion (segmenting fused volumes into 5 classes)", _FULL_UNET, "VF", ("VolumeFusionTrainer",)),
]

_ENTRIES: dict[str, CatalogEntry] = {}
for _key, _method, _title, _layout, _hub, _trainers in _OPENMIND:
    _ENTRIES[f"openmind-resencl-{_key}"] = CatalogEntry(
        name=f"openmind-resencl-{_key}",
        title=f"OpenMind ResEnc-L {_method} ({_title})",
        ssl_method=_method,
        format="nnssl",
        architecture={"arch_class_name": "ResEncL"},
        preprocessing=_OPENMIND_PREP,
        stages=_OPENMIND_STAGES,
        checkpoint_layout=_layout + _HUB,
        source=f"Hugging Face, OpenMind release (repository named like ResEncL-OpenMind-{_hub}); download it yourself",
        notes="Pre-trained on 114k brain MRI volumes (OpenMind); 6 stages 32-64-128-256-320-320, blocks 1-3-4-6-6-6.",
        tags=("openmind", "paper-zoo") if _key != "vf" else ("openmind",),
        trainer_names=_trainers,
        adaptation_plan=resencl_adaptation_plan(),
    )

_PRIMUS_M_STAGES = _all_stages((864,) * 4, (8,) * 4)  # token maps after EVA blocks 4, 8, 12, 16 (worker/adapters/primus.py)
_ENTRIES["openmind-primusm-simmim"] = CatalogEntry(
    name="openmind-primusm-simmim",
    title="OpenMind PrimusM SimMIM (SimMIM masked image modelling on the Primus-M transformer)",
    ssl_method="SimMIM",
    format="nnssl",
    architecture={"arch_class_name": "PrimusM"},
    preprocessing=_OPENMIND_PREP,
    stages=_PRIMUS_M_STAGES,
    checkpoint_layout="nnssl checkpoint_final.pth: down_projection.* (8^3 patch embedding), eva.* (16 EVA blocks, 864 wide), "
    "up_projection.* and mask_token (ignored)" + _HUB,
    source="Hugging Face, OpenMind release (repository named like PrimusM-OpenMind-SimMIM); download it yourself",
    notes="Pre-trained on OpenMind; 16 EVA blocks, 864 wide, on 8^3 patches. Encoder stages: the token maps after "
    "blocks 4, 8, 12 and 16 (stride 8); the fresh decoder upsamples to stride 1 without skips. A 160^3 window costs "
    "about 30 s on 2 CPU cores: rank it on a GPU.",
    tags=("openmind", "paper-zoo"),
    trainer_names=("SimMIMEvaTrainer",),
    adaptation_plan={
        "architecture_plans": {"arch_class_name": "PrimusM", "arch_kwargs": None, "arch_kwargs_requiring_import": None},
        "pretrain_plan": resencl_adaptation_plan()["pretrain_plan"],
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": [160, 160, 160],
        "key_to_encoder": "eva",
        "key_to_stem": "down_projection",
        "keys_to_in_proj": ["down_projection.proj"],
        "key_to_lpe": "eva.pos_embed",
    },
)
_DEMO_PREP = PreprocessingSpec(spacing=DEMO_SPACING, normalization="zscore", patch_size=DEMO_PATCH, in_channels=1)
_DEMO_STAGES = _all_stages(DEMO_FEATURES, DEMO_STRIDES)
_DEMO = [
    ("mae", "MAE", "masked reconstruction"),
    ("genesis", "ModelsGenesis", "Models-Genesis-style restoration"),
    ("contrastive", "SimCLR", "contrastive (InfoNCE on pooled encoder features)"),
    ("random", "none", "left at random initialisation (control)"),
]
for _key, _method, _title in _DEMO:
    _ENTRIES[f"demo-resenc-{_key}"] = CatalogEntry(
        name=f"demo-resenc-{_key}",
        title=f"Demo ResEnc 8-16-32-64, {_title}",
        ssl_method=_method,
        format="nnssl",
        architecture={"arch_class_name": "ResidualEncoderUNet"},
        preprocessing=_DEMO_PREP,
        stages=_DEMO_STAGES,
        checkpoint_layout="nnssl checkpoint_final.pth written by `toporank build-demo-zoo`",
        source="built locally from the MNI152 template shipped with nilearn",
        notes="Tiny encoder pretrained for about a minute on 2 CPU cores; for demos and tests, not for science.",
        tags=("demo",),
    )


def entry_for_trainer(trainer_name: str) -> CatalogEntry | None:
    """The catalog entry whose checkpoints `trainer_name` writes, if exactly one claims it."""
    found = [e for e in _ENTRIES.values() if e.accepts_trainer(trainer_name)]
    return found[0] if len(found) == 1 else None


def list_entries() -> list[dict[str, Any]]:
    """Every catalog entry as JSON-ready dicts, sorted by name (for `GET /v1/catalog`)."""
    return [_ENTRIES[k].to_dict() for k in sorted(_ENTRIES)]


def get_entry(name: str) -> CatalogEntry:
    """The entry called `name`, or ValueError listing the known names."""
    try:
        return _ENTRIES[name]
    except KeyError:
        raise ValueError(f"unknown catalog entry {name!r}; known: {', '.join(sorted(_ENTRIES))}") from None


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """Fill a spec's missing fields from its catalog entry, then derive its decoder stages.

    Fields the request set explicitly win over the entry's; the format must match the entry's.
    Specs without a catalog entry only get their decoder stages derived.
    """
    if spec.catalog is not None:
        entry = get_entry(spec.catalog)
        if spec.format != entry.format:
            raise ValueError(f"catalog entry {entry.name!r} is format {entry.format!r}, spec says {spec.format!r}")
        update: dict[str, Any] = {}
        if not spec.architecture:
            update["architecture"] = dict(entry.architecture)
        if spec.preprocessing is None:
            update["preprocessing"] = entry.preprocessing
        if spec.stages is None:
            update["stages"] = list(entry.stages)
        if spec.ssl_method is None:
            update["ssl_method"] = entry.ssl_method
        spec = ModelSpec.model_validate({**spec.model_dump(), **{k: _dump(v) for k, v in update.items()}})
    return with_decoder_stages(spec)


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value
