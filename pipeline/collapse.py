"""Vector-collapse monitoring: geometry metrics, an alarm, and a Lightning callback.

A collapsed embedding space maps many (or all) inputs to one point. The monitor
embeds a fixed, seeded sample of validation texts and measures:

- ``mean_distance`` / ``min_distance``: mean and minimum pairwise distance, in the
  loss's distance (Quaterion's cosine distance runs from 0 to 1).
- ``mean_std``: mean per-dimension standard deviation of the L2-normalised vectors.
- ``effective_rank``: RankMe (Garrido et al. 2023), ``exp(entropy(s / sum(s)))`` over
  the singular values ``s`` of the sample matrix. 1 for identical vectors, ``n``
  for ``n`` orthonormal ones.
- ``active_fraction``: share of anchors with a loss term above zero, over the
  training batches since the previous check.
- ``loss_over_margin``: mean training loss since the previous check divided by
  the margin; a plain batch-hard loss stuck at 1.0 is the collapse signature.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import Tensor

import pipeline.compat  # noqa: F401  (fixes must load before quaterion)
from quaterion.distances import Distance
from quaterion.train.cache import CacheEncoder

from pipeline.config import MonitorConfig
from pipeline.data import Item

logger = logging.getLogger(__name__)

METRIC_NAMES = ("mean_distance", "min_distance", "mean_std", "effective_rank", "active_fraction", "loss_over_margin")


def effective_rank(embeddings: Tensor) -> float:
    """RankMe effective rank of an (n, dim) matrix; 0.0 for an all-zero matrix."""
    singular_values = torch.linalg.svdvals(embeddings.double())
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    probabilities = singular_values / total
    probabilities = probabilities[probabilities > 0]
    entropy = -(probabilities * probabilities.log()).sum()
    return float(entropy.exp())


def geometry_metrics(embeddings: Tensor, distance: Distance = Distance.COSINE) -> dict[str, float]:
    """Measure how spread out a sample of embeddings is.

    Args:
        embeddings: shape (n, dim) with n >= 2.
        distance: the distance of the loss, so distances compare with its margin.

    Returns:
        ``mean_distance``, ``min_distance``, ``mean_std`` and ``effective_rank``.
    """
    embeddings = embeddings.detach().float()
    metric = Distance.get_by_name(distance)
    distances = metric.distance_matrix(embeddings)
    upper = torch.triu_indices(len(embeddings), len(embeddings), offset=1)
    pairwise = distances[upper[0], upper[1]]
    normalised = torch.nn.functional.normalize(embeddings, dim=1)
    return {
        "mean_distance": float(pairwise.mean()),
        "min_distance": float(pairwise.min()),
        "mean_std": float(normalised.std(dim=0).mean()),
        "effective_rank": effective_rank(embeddings),
    }


@dataclass
class CollapseAlarm:
    """Decides from successive checks whether the space has collapsed.

    The alarm fires when the effective rank or the mean pairwise distance is below
    its threshold, or when ``loss / margin`` has been within ``margin_tolerance`` of
    1.0 for ``patience`` consecutive checks.
    """

    config: MonitorConfig
    near_margin_streak: int = 0

    def update(self, metrics: dict[str, float]) -> list[str]:
        """Record one check; return the reasons for an alarm (empty when healthy)."""
        reasons = []
        rank = metrics.get("effective_rank", math.nan)
        if rank < self.config.min_effective_rank:
            reasons.append(f"effective rank {rank:.3f} < {self.config.min_effective_rank}")
        mean_distance = metrics.get("mean_distance", math.nan)
        if mean_distance < self.config.min_mean_distance:
            reasons.append(f"mean pairwise distance {mean_distance:.5f} < {self.config.min_mean_distance}")

        ratio = metrics.get("loss_over_margin", math.nan)
        if not math.isnan(ratio) and abs(ratio - 1.0) <= self.config.margin_tolerance:
            self.near_margin_streak += 1
        else:
            self.near_margin_streak = 0
        if self.near_margin_streak >= self.config.patience:
            reasons.append(
                f"loss / margin = {ratio:.4f} has stayed within {self.config.margin_tolerance} of 1.0 "
                f"for {self.near_margin_streak} checks"
            )
        return reasons


class CollapseMonitor(Callback):
    """Lightning callback that measures the embedding geometry during training.

    Checks run at the end of every validation epoch and, if ``every_n_steps`` is
    set, every that many training steps. Each check logs ``monitor_<metric>`` to the
    trainer's loggers and appends a row to ``history``. On an alarm it logs a
    warning with the numbers. With ``stop_on_collapse`` it also stops training, and
    ``GuardedCheckpoint`` then keeps the last checkpoint saved before the collapse.
    """

    def __init__(self, items: list[Item], config: MonitorConfig, margin: float, stop_on_collapse: bool = False,
                 seed: int = 0, batch_size: int = 64):
        super().__init__()
        sample = sorted(items, key=lambda item: item.key)
        random.Random(seed).shuffle(sample)
        self.texts = [item.text for item in sample[: config.sample_size]]
        self.config = config
        self.margin = margin
        self.stop_on_collapse = stop_on_collapse
        self.batch_size = batch_size
        self.alarm = CollapseAlarm(config)
        self.history: list[dict] = []
        self.collapsed = False
        self.alarms: list[dict] = []
        self._frozen_encoder_output: Tensor | None = None
        self._losses: list[float] = []
        self._active: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        # With step checks on, record the starting geometry (step 0) as well.
        if self.config.every_n_steps and trainer.global_step == 0:
            self.check(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._losses.append(float(loss.detach()))
        self._active.append(pl_module.loss.last_active_fraction)
        every = self.config.every_n_steps
        if every and trainer.global_step % every == 0:
            self.check(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module) -> dict[str, float]:
        """Run one check now, log its metrics and update the alarm."""
        embeddings = self.embed_sample(pl_module)
        metrics = geometry_metrics(embeddings, pl_module.loss.distance_metric_name)
        metrics["active_fraction"] = _mean(self._active)
        metrics["loss_over_margin"] = _mean(self._losses) / self.margin
        self._losses.clear()
        self._active.clear()

        for name, value in metrics.items():
            if not math.isnan(value):
                pl_module.log(f"monitor_{name}", value, on_step=False, on_epoch=True, batch_size=len(self.texts))
        self.history.append({"step": trainer.global_step, "epoch": trainer.current_epoch, **metrics})

        reasons = self.alarm.update(metrics)
        if reasons:
            self.alarms.append({"step": trainer.global_step, "reasons": reasons})
            summary = ", ".join(f"{name}={metrics[name]:.4g}" for name in METRIC_NAMES)
            logger.warning("Vector collapse at step %d: %s. Metrics: %s", trainer.global_step, "; ".join(reasons), summary)
            self.collapsed = True
            if self.stop_on_collapse:
                logger.warning("Stopping training because training.stop_on_collapse is true; "
                               "the last checkpoint saved before the collapse is kept.")
                trainer.should_stop = True
        return metrics

    @torch.no_grad()
    def embed_sample(self, pl_module) -> Tensor:
        """Embed the fixed sample with the current weights, in eval mode."""
        model = pl_module.model
        encoder = model.encoders["default"]
        if isinstance(encoder, CacheEncoder):
            encoder = encoder.wrapped_encoder

        was_training = model.training
        model.eval()
        try:
            if not encoder.trainable and self._frozen_encoder_output is not None:
                encoder_output = self._frozen_encoder_output
            else:
                encoder_output = self._run_encoder(encoder)
                if not encoder.trainable:
                    self._frozen_encoder_output = encoder_output
            return model.head(encoder_output)
        finally:
            model.train(was_training)

    def _run_encoder(self, encoder) -> Tensor:
        collate = encoder.get_collate_fn()
        parts = []
        for start in range(0, len(self.texts), self.batch_size):
            parts.append(encoder(collate(self.texts[start:start + self.batch_size])))
        return torch.cat(parts)

    def summary(self) -> dict:
        return {"history": self.history, "alarms": self.alarms, "collapsed": self.collapsed}


class GuardedCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that saves (and deletes) nothing once a collapse has stopped training.

    Skipping at this level, not in ``_save_checkpoint``, matters: the top-k logic
    deletes the previous checkpoint after "saving" the new one, which would lose the
    last checkpoint from before the collapse.
    """

    def __init__(self, monitor_callback: CollapseMonitor | None = None, **kwargs):
        super().__init__(**kwargs)
        self.collapse_monitor = monitor_callback

    def _collapse_stopped(self) -> bool:
        monitor = self.collapse_monitor
        return monitor is not None and monitor.collapsed and monitor.stop_on_collapse

    def _save_topk_checkpoint(self, trainer, monitor_candidates) -> None:
        if self._collapse_stopped():
            logger.info("Not saving a checkpoint at step %d: the embedding space has collapsed", trainer.global_step)
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if self._collapse_stopped():
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)


def find_monitor(trainer: pl.Trainer) -> CollapseMonitor | None:
    for callback in trainer.callbacks:
        if isinstance(callback, CollapseMonitor):
            return callback
    return None


def collapse_stopped(trainer: pl.Trainer) -> bool:
    monitor = find_monitor(trainer)
    return bool(monitor and monitor.collapsed and monitor.stop_on_collapse)


def _mean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return float(np.mean(finite)) if finite else math.nan
