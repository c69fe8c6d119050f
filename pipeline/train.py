"""Training stage: fine-tune the encoder/head with Quaterion on grouped items.

In: a ``PipelineConfig`` and the training/validation items of a ``Split``.
Out: a run directory with ``servable/`` (``SimilarityModel.save``, plus the resolved
config and the training history), ``config.yaml`` (the servable's config, written
once the servable is complete), ``checkpoints/last.ckpt`` and ``logs/metrics.csv``.

A run that does not resume replaces the checkpoints and logs of the run before it,
but that run's servable and ``config.yaml`` stay until the new servable is saved,
so an interrupted run never leaves a mix that looks complete.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import Dataset

import pipeline.compat  # noqa: F401  (fixes must load before quaterion)
from quaterion import Quaterion
from quaterion.dataset import GroupSimilarityDataLoader, SimilarityGroupSample
from quaterion.utils.progress_bar import QuaterionProgressBar

from pipeline.config import PipelineConfig
from pipeline.data import Item
from pipeline.model import SimilarityTrainer
from pipeline.sampler import GroupBatchSampler

logger = logging.getLogger(__name__)

SERVABLE_DIR = "servable"
SERVABLE_CONFIG = "pipeline_config.yaml"
SERVABLE_TRAINING = "training.json"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


class TrainingInterrupted(RuntimeError):
    """Training stopped by Ctrl-C or SIGTERM before it finished."""


class GroupDataset(Dataset):
    """Items as Quaterion ``SimilarityGroupSample``s, ordered by text length.

    Quaterion fills its embedding cache by reading the dataset in index order, so
    sorting the texts by length makes each cache batch pad to a similar length.
    """

    def __init__(self, items: list[Item]):
        self.items = sorted(items, key=lambda item: (len(item.text), item.key))
        group_names = sorted({item.group for item in self.items})
        self.group_ids = {name: index for index, name in enumerate(group_names)}
        self.groups = [self.group_ids[item.group] for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SimilarityGroupSample:
        return SimilarityGroupSample(obj=self.items[index].text, group=self.groups[index])


def build_loader(items: list[Item], config: PipelineConfig, training: bool) -> GroupSimilarityDataLoader:
    """Build a P x K data loader. Validation loaders repeat the same batches every epoch."""
    dataset = GroupDataset(items)
    settings = config.training
    groups_per_batch = settings.groups_per_batch
    if not training:
        eligible = sum(1 for size in _group_sizes(dataset).values() if size >= settings.items_per_group)
        groups_per_batch = max(2, min(groups_per_batch, eligible))
    sampler = GroupBatchSampler(
        dataset.groups,
        groups_per_batch=groups_per_batch,
        items_per_group=settings.items_per_group,
        seed=config.seed,
        reshuffle=training,
    )
    return GroupSimilarityDataLoader(
        dataset,
        batch_size=groups_per_batch * settings.items_per_group,
        sampler=sampler,
        drop_last=True,
        num_workers=0,
    )


def _group_sizes(dataset: GroupDataset) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for group in dataset.groups:
        sizes[group] = sizes.get(group, 0) + 1
    return sizes


@dataclass
class TrainResult:
    """Output paths and loss history of a training run."""

    run_dir: Path
    servable_dir: Path
    history: list[dict] = field(default_factory=list)
    stopped_on_collapse: bool = False
    monitor: dict | None = None
    initial_validation_loss: float = math.nan

    def training_record(self) -> dict:
        """Return the history and monitor summary saved beside the servable."""
        monitor = self.monitor or {}
        return {
            "initial_validation_loss": self.initial_validation_loss,
            "history": self.history,
            "stopped_on_collapse": self.stopped_on_collapse,
            "collapse_alarms": monitor.get("alarms", []),
            "monitor_history": monitor.get("history", []),
            "steps": read_step_log(self.run_dir / LOG_DIR),
        }

    def validation_losses(self) -> list[float]:
        return [row["validation_loss"] for row in self.history if not math.isnan(row.get("validation_loss", math.nan))]


def train(config: PipelineConfig, train_items: list[Item], validation_items: list[Item],
          run_dir: Path | None = None, resume: bool = False, callbacks: list | None = None,
          trainable_model: SimilarityTrainer | None = None) -> TrainResult:
    """Train a model and save it as a servable in ``run_dir``.

    Args:
        config: the pipeline config.
        train_items: items of the training groups.
        validation_items: items of the validation groups (may be empty).
        run_dir: output directory, or ``config.run_dir()`` if None.
        resume: continue from ``checkpoints/last.ckpt`` when it exists.
        callbacks: extra Lightning callbacks (the collapse monitor is added here
            from config; pass others, e.g. for the collapse experiment).
        trainable_model: a prepared model; built from config if None.

    Returns:
        The run directory, the servable directory and the per-epoch losses.
    """
    from pipeline.collapse import CollapseMonitor, GuardedCheckpoint, collapse_stopped

    run_dir = Path(run_dir or config.run_dir())
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = checkpoint_path_for(run_dir, resume)
    if checkpoint_path is None:
        for stale in (run_dir / CHECKPOINT_DIR, run_dir / LOG_DIR):
            shutil.rmtree(stale, ignore_errors=True)

    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)

    model = trainable_model or SimilarityTrainer(config, cache_dir=str(run_dir / "cache"))
    train_loader = build_loader(train_items, config, training=True)
    validation_loader = build_loader(validation_items, config, training=False) if validation_items else None
    initial_loss = math.nan
    if validation_loader is not None and checkpoint_path is None:
        initial_loss = validation_loss(model, validation_loader, config.training.encode_batch_size)
        logger.info("Validation loss before training: %.4f", initial_loss)

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    last_checkpoint = checkpoint_dir / "last.ckpt"
    if checkpoint_path:
        logger.info("Resuming from %s", checkpoint_path)
        keep_earlier_log(run_dir / LOG_DIR)
    elif resume:
        logger.info("No checkpoint at %s; starting from the pretrained model", last_checkpoint)

    monitor = None
    monitor_config = config.training.monitor
    if monitor_config.enabled and validation_items:
        monitor = CollapseMonitor(
            validation_items, monitor_config, margin=config.loss.margin,
            stop_on_collapse=config.training.stop_on_collapse, seed=config.seed,
            batch_size=config.training.encode_batch_size,
        )
    all_callbacks = [
        QuaterionProgressBar(),
        # The newest epoch's checkpoint, with last.ckpt as a link to it (one file on disk).
        GuardedCheckpoint(monitor_callback=monitor, dirpath=checkpoint_dir, filename="epoch{epoch:03d}",
                          save_last="link", save_top_k=1, auto_insert_metric_name=False,
                          enable_version_counter=False),
    ]
    if monitor is not None:
        all_callbacks.append(monitor)
    all_callbacks.extend(callbacks or [])

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=config.training.epochs,
        callbacks=all_callbacks,
        logger=CSVLogger(str(run_dir), name=LOG_DIR, version=""),
        log_every_n_steps=config.training.log_every_n_steps,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn",
    )

    logger.info(
        "Training on %d items in %d groups (%d batches of %d x %d per epoch), %d epochs",
        len(train_items), len({item.group for item in train_items}), len(train_loader),
        config.training.groups_per_batch, config.training.items_per_group, config.training.epochs,
    )

    def interrupted() -> TrainingInterrupted:
        return TrainingInterrupted(
            f"Training was interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}, and no "
            f"model was saved. Continue it with the same command and --resume (last checkpoint: {last_checkpoint}).")

    try:
        Quaterion.fit(model, trainer, train_loader, validation_loader, ckpt_path=checkpoint_path)
    except SystemExit as exit_request:
        # Lightning 2.6 handles Ctrl-C with sys.exit(1) and SIGTERM with SystemExit(),
        # and it leaves SIGINT ignored, so restore Ctrl-C's default handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise interrupted() from exit_request
    if trainer.interrupted:
        raise interrupted()

    stopped = collapse_stopped(trainer)
    if stopped:
        restore_last_checkpoint(model, last_checkpoint)

    history = read_history(run_dir / LOG_DIR)
    result = TrainResult(run_dir=run_dir, servable_dir=run_dir / SERVABLE_DIR, history=history,
                         stopped_on_collapse=stopped, monitor=monitor.summary() if monitor else None,
                         initial_validation_loss=initial_loss)
    save_servable_atomically(model, run_dir / SERVABLE_DIR, config, result.training_record())
    (run_dir / "config.yaml").write_text(config.to_yaml())
    logger.info("Saved the trained model to %s", result.servable_dir)
    return result


def checkpoint_path_for(run_dir: Path, resume: bool) -> str | None:
    last_checkpoint = run_dir / CHECKPOINT_DIR / "last.ckpt"
    return str(last_checkpoint) if resume and last_checkpoint.is_file() else None


@torch.no_grad()
def validation_loss(model: SimilarityTrainer, loader: GroupSimilarityDataLoader, batch_size: int) -> float:
    """Compute the untrained model's mean loss over the validation batches, which repeat every epoch."""
    from pipeline.embed import embed_texts

    dataset = loader._original_dataset  # the GroupDataset under Quaterion's indexing layers
    indices = list(loader.sampler)
    texts = [dataset.items[index].text for index in indices]
    embeddings = torch.from_numpy(embed_texts(model.model, texts, batch_size, description="Validation loss"))
    groups = torch.tensor([dataset.groups[index] for index in indices])

    size = loader.batch_size
    losses = [float(model.loss(embeddings[start:start + size], groups[start:start + size]))
              for start in range(0, len(indices) - size + 1, size)]
    return sum(losses) / len(losses)


def restore_last_checkpoint(model: SimilarityTrainer, checkpoint: Path) -> None:
    """Load the weights of the last checkpoint saved before a collapse stop."""
    if not checkpoint.is_file():
        logger.warning("No checkpoint was saved before the collapse; the servable contains the collapsed weights.")
        return
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state, strict=False)
    logger.info("Restored the weights of %s, saved before the collapse", checkpoint)


def save_servable_atomically(model: SimilarityTrainer, target: Path, config: PipelineConfig,
                             training: dict) -> Path:
    """Save the servable, its config and its training record to a temporary directory, then move it into place.

    A crash while saving leaves the previous servable (if any) untouched, so a
    directory named ``servable`` is always complete.
    """
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_servable(str(partial))
    (partial / SERVABLE_CONFIG).write_text(config.to_yaml())
    (partial / SERVABLE_TRAINING).write_text(json.dumps(training, default=float))
    created = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (partial / "pipeline_version.json").write_text(
        json.dumps({"version": f"{target.parent.name}@{created}", "created": created}))
    previous = target.with_name(target.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    partial.rename(target)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def keep_earlier_log(log_dir: Path) -> None:
    """Move metrics.csv aside before resuming, because Lightning's CSVLogger starts it afresh."""
    current = log_dir / "metrics.csv"
    if current.is_file():
        part = len(list(log_dir.glob("metrics.before-resume-*.csv"))) + 1
        current.rename(log_dir / f"metrics.before-resume-{part}.csv")


def read_history(log_dir: Path) -> list[dict]:
    """Collapse Lightning's CSV logs into one row per epoch.

    Reads the logs of earlier (resumed) runs first, then ``metrics.csv``. A later
    file's rows replace an earlier file's rows of the same epoch. Each logged value
    is averaged over the epoch's rows, so ``train_loss`` (logged every
    ``log_every_n_steps`` steps) becomes the epoch's mean logged loss.
    """
    values: dict[int, dict[str, list[float]]] = {}
    for path in _log_files(log_dir):
        values.update(_read_log(path))

    history = []
    for epoch in sorted(values):
        entry = {"epoch": epoch, "validation_loss": math.nan}
        for key, series in values[epoch].items():
            entry[key] = sum(series) / len(series)
        history.append(entry)
    return history


def _log_files(log_dir: Path) -> list[Path]:
    """Return the CSV logs of a run, oldest first: those kept before each resume, then metrics.csv."""
    log_dir = Path(log_dir)
    parts = sorted(log_dir.glob("metrics.before-resume-*.csv"), key=lambda path: int(path.stem.rsplit("-", 1)[1]))
    return [path for path in [*parts, log_dir / "metrics.csv"] if path.is_file()]


def read_step_log(log_dir: Path) -> list[dict]:
    """Return every logged row (train loss per logged step, validation loss per epoch), by step."""
    rows = []
    for path in _log_files(log_dir):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                entry = {key: float(value) for key, value in row.items() if value not in (None, "")}
                if "step" in entry:
                    rows.append(entry)
    return sorted(rows, key=lambda row: row["step"])


def _read_log(path: Path) -> dict[int, dict[str, list[float]]]:
    values: dict[int, dict[str, list[float]]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch_values = values.setdefault(int(row["epoch"]), {})
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                epoch_values.setdefault(key, []).append(float(value))
    return values
