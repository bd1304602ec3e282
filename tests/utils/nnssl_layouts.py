"""The files nnssl writes, at toy size: what its trainers' `save_checkpoint` saves, the folder a
training run leaves, what `add_adaptation_plan.py` turns that into (the hub release), SparK's own
checkpoint, and a state dict saved through DDP / torch.compile.

Written from a reading of MIC-DKFZ/nnssl (AbstractTrainer.save_checkpoint, SparkTrainer,
utilities/add_adaptation_plan.py); nothing of nnssl is imported or copied. Values that are only
bookkeeping (loss logs, optimizer moments) are small but of the right types, because they decide
whether a file loads under `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models_registry.catalog import resencl_adaptation_plan


def adaptation_plan(arch: str, kwargs: dict[str, Any] | None, spacing: float, patch: int, **over: Any) -> dict[str, Any]:
    """An nnssl adaptation plan like the OpenMind ResEnc-L one, for another architecture and a small
    isotropic pre-training configuration (`spacing` mm, `patch`^3)."""
    plan = resencl_adaptation_plan()
    plan["architecture_plans"] = {
        "arch_class_name": arch,
        "arch_kwargs": kwargs,
        "arch_kwargs_requiring_import": ["conv_op", "norm_op", "dropout_op", "nonlin"] if kwargs else None,
    }
    config = plan["pretrain_plan"]["configurations"]["onemmiso"]
    config.update(spacing=[spacing] * 3, patch_size=[patch] * 3)
    plan["recommended_downstream_patchsize"] = [patch] * 3
    plan.update(over)
    return plan


def _optimizer_state(net: nn.Module) -> dict[str, Any]:
    """An SGD state after one step (momentum buffers per parameter), as nnssl's trainers hold it."""
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in net.parameters():
        p.grad = None
    return opt.state_dict()


def trainer_checkpoint(net: nn.Module, plan: dict[str, Any] | None, trainer_name: str, *, epochs: int = 3) -> dict[str, Any]:
    """The dict `AbstractBaseTrainer.save_checkpoint` writes (`nnssl_adaptation_plan` left out when `plan` is None)."""
    logging = {
        "train_losses": [1.0 / (e + 1) for e in range(epochs)],
        "val_losses": [1.1 / (e + 1) for e in range(epochs)],
        "lrs": [1e-2 * (1 - e / epochs) ** 0.9 for e in range(epochs)],
        "epoch_start_timestamps": [1.7e9 + 60 * e for e in range(epochs)],
        "epoch_end_timestamps": [1.7e9 + 60 * e + 55 for e in range(epochs)],
    }
    init_args = {  # the trainer's __init__ arguments; `device` stays a torch.device, as nnssl leaves it
        "plan": {"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans", "configurations": {"onemmiso": {"spacing": [1, 1, 1]}}},
        "configuration_name": "onemmiso",
        "fold": "all",
        "pretrain_json": {"name": "OpenMind", "collection_index": 745},
        "device": torch.device("cuda"),
    }
    ckpt: dict[str, Any] = {
        "network_weights": net.state_dict(),
        "optimizer_state": _optimizer_state(net),
        "grad_scaler_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 7},
        "logging": logging,
        "_best_ema": None,
        "current_epoch": epochs,
        "init_args": init_args,
        "trainer_name": trainer_name,
    }
    if plan is not None:
        ckpt["nnssl_adaptation_plan"] = plan
    return ckpt


def write_training_output(results: Path, net: nn.Module, plan: dict[str, Any], trainer_name: str) -> Path:
    """A finished run's folder, `<Trainer>__<Plans>__<config>/fold_all/checkpoint_final.pth`, with
    `adaptation_plan.json` and `plans.json` one folder up. Returns the checkpoint's path."""
    run = results / "Dataset745_OpenMind" / f"{trainer_name}__nnsslPlans__onemmiso"
    (run / "fold_all").mkdir(parents=True)
    (run / "adaptation_plan.json").write_text(json.dumps(plan, indent=4))
    (run / "plans.json").write_text(json.dumps({"dataset_name": "Dataset745_OpenMind", "plans_name": "nnsslPlans"}))
    path = run / "fold_all" / "checkpoint_final.pth"
    torch.save(trainer_checkpoint(net, plan, trainer_name), path)
    (run / "fold_all" / "training_log_2026_1_1_00_00_00.txt").write_text("epoch 0\n")
    return path


def write_hub_release(folder: Path, net: nn.Module, plan: dict[str, Any], trainer_name: str) -> Path:
    """What add_adaptation_plan.py writes (and the model hub serves): the checkpoint without the
    optimizer state, logs, epoch and EMA (init_args kept) but with the plan, and beside it
    `adaptation_plan.json` (the plan plus `trainer_name`) and `config.json`. Returns the checkpoint."""
    ckpt = trainer_checkpoint(net, None, trainer_name)
    for key in ("optimizer_state", "grad_scaler_state", "_best_ema", "current_epoch", "logging"):
        ckpt.pop(key)
    ckpt["nnssl_adaptation_plan"] = plan
    folder.mkdir(parents=True)
    path = folder / "checkpoint_final.pth"
    torch.save(ckpt, path)
    (folder / "adaptation_plan.json").write_text(json.dumps({**plan, "trainer_name": trainer_name}, indent=4))
    (folder / "config.json").write_text(json.dumps({"library_name": "nnssl"}))  # contents unknown to us; only its presence matters
    return path


def write_spark_output(path: Path, net: nn.Module, trainer_name: str = "SparkMAETrainer") -> Path:
    """SparkMAETrainer.save_checkpoint: `network_weights` (the U-Net inside the SparK wrapper),
    `spark_weights` (the whole wrapper) and the bookkeeping, but no adaptation plan."""
    ckpt = trainer_checkpoint(net, None, trainer_name)
    ckpt["spark_weights"] = {
        **{f"architecture.{k}": v for k, v in net.state_dict().items()},
        "mask_token": torch.zeros(1, 16, 1, 1, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def wrapped_weights(net: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """A state dict as saved from a DDP (`module.`) or compiled (`_orig_mod.`) model, unwrapped by nobody."""
    return {prefix + k: v for k, v in net.state_dict().items()}
