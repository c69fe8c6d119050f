"""The three fixes that let quaterion 0.1.35 run on torch 2.13, Python 3.11 and Lightning 2.

Each test first checks that the upstream problem still exists, so it fails (and the
fix can go) once a release of torch, Python or Lightning removes the need.
"""

import subprocess
import sys

import pytorch_lightning as pl
import torch.utils.data.dataloader

from pipeline.compat import APPLIED_FIXES, is_str_enum_format_broken


def test_t_co_was_missing_from_torch():
    assert APPLIED_FIXES["torch_t_co"], "torch defines T_co again: remove _restore_type_var_t_co"


def test_t_co_fix_lets_quaterion_import():
    assert hasattr(torch.utils.data.dataloader, "T_co")
    code = "import pipeline.compat, quaterion; print('ok')"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_quaterion_import_fails_without_fix():
    completed = subprocess.run([sys.executable, "-c", "import quaterion"], capture_output=True, text=True)
    assert completed.returncode != 0
    assert "T_co" in completed.stderr


def test_str_enum_format_still_broken_upstream():
    assert is_str_enum_format_broken(), "Python formats (str, Enum) by value again: drop the TrainStage fix"
    assert APPLIED_FIXES["train_stage_format"]


def test_train_stage_formats_as_value():
    from quaterion.utils.enums import TrainStage

    assert f"{TrainStage.TRAIN}_loss" == "train_loss"
    assert f"{TrainStage.VALIDATION}_loss" == "validation_loss"


def test_lightning_lacks_reset_train_val_dataloaders():
    assert not hasattr(pl.Trainer, "reset_train_val_dataloaders")
    assert APPLIED_FIXES["cleanup_teardown"]


def test_cleanup_teardown_replaced():
    from quaterion.train.callbacks import CleanupCallback

    from pipeline.compat import _cleanup_teardown

    assert CleanupCallback.teardown is _cleanup_teardown
