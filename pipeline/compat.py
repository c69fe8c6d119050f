"""Fixes that let quaterion 0.1.35 and quaterion-models 0.1.19 run on today's stack.

Both packages were last released in 2023 and target torch 1.x, pytorch-lightning 1.x
and Python < 3.11. Every module of this project that touches Quaterion imports it
through ``pipeline.compat``, so the fixes below are applied before Quaterion's own
modules load. ``APPLIED_FIXES`` records which fixes were needed on the running stack;
``tests/test_compat.py`` fails once an upstream release makes one of them unnecessary.
"""

from __future__ import annotations

import enum
import typing

import torch.utils.data.dataloader
import torch.utils.data.dataset

# Fix name -> True when the running stack needed it.
APPLIED_FIXES: dict[str, bool] = {}


def _restore_type_var_t_co() -> None:
    """Re-export ``T_co`` from torch's data modules.

    torch >= 2.5 no longer defines ``T_co`` in ``torch.utils.data.dataloader`` and
    ``torch.utils.data.dataset``, and Quaterion imports it from both, so importing
    ``quaterion`` raises ImportError without this.
    """
    modules = (torch.utils.data.dataloader, torch.utils.data.dataset)
    missing = [module for module in modules if not hasattr(module, "T_co")]
    APPLIED_FIXES["torch_t_co"] = bool(missing)

    type_var = typing.TypeVar("T_co", covariant=True)
    for module in missing:
        module.T_co = type_var


def _fix_train_stage_format() -> None:
    """Make ``f"{TrainStage.TRAIN}"`` read ``train`` again.

    Python 3.11 formats members of a ``(str, Enum)`` class with ``Enum.__str__``, so
    Quaterion's logged names became ``TrainStage.TRAIN_loss`` instead of ``train_loss``.
    """
    from quaterion.utils.enums import TrainStage

    needed = f"{TrainStage.TRAIN}" != TrainStage.TRAIN.value
    APPLIED_FIXES["train_stage_format"] = needed
    if needed:
        TrainStage.__str__ = str.__str__
        TrainStage.__format__ = str.__format__


def _cleanup_teardown(self, trainer, pl_module, stage: str | None = None) -> None:
    """Unwrap cached encoders and restore the data loaders' collate functions.

    Replaces ``CleanupCallback.teardown``, which calls
    ``Trainer.reset_train_val_dataloaders`` (removed in Lightning 2.0) and reads
    ``trainer.train_dataloader.loaders`` (gone too: Lightning 2 returns the loader).
    """
    if stage != "fit":
        return
    pl_module.unwrap_cache()

    loaders = []
    if trainer.train_dataloader is not None:
        loaders.append(trainer.train_dataloader)
    val_loaders = trainer.val_dataloaders
    if isinstance(val_loaders, (list, tuple)):
        loaders.extend(val_loaders)
    elif val_loaders is not None:
        loaders.append(val_loaders)

    for loader in loaders:
        pl_module.setup_dataloader(loader)


def _fix_cleanup_callback() -> None:
    import pytorch_lightning as pl
    from quaterion.train.callbacks import CleanupCallback

    needed = not hasattr(pl.Trainer, "reset_train_val_dataloaders")
    APPLIED_FIXES["cleanup_teardown"] = needed
    if needed:
        CleanupCallback.teardown = _cleanup_teardown


_restore_type_var_t_co()
_fix_train_stage_format()
_fix_cleanup_callback()


def is_str_enum_format_broken() -> bool:
    """Return True when this Python formats ``(str, Enum)`` members by name."""

    class Probe(str, enum.Enum):
        VALUE = "value"

    return f"{Probe.VALUE}" != "value"
