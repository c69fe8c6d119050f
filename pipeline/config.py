"""Typed pipeline configuration, loaded from YAML and validated in one place.

Every stage receives a ``PipelineConfig`` (or one of its sections), never a dict.
An unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming
the key and the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
DEFAULT_ENCODER = "all-MiniLM-L6-v2"


class ConfigError(ValueError):
    """Invalid configuration file or value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Section):
    """Shares of groups held out for validation and test; the rest is training."""

    validation: float = Field(0.05, ge=0.0, lt=1.0)
    test: float = Field(0.1, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_sum(self) -> SplitConfig:
        if self.validation + self.test >= 1.0:
            raise ValueError(
                f"validation + test must be below 1.0 so that training keeps some groups, "
                f"got {self.validation} + {self.test}"
            )
        return self


class DataConfig(_Section):
    """Data source, slice and group split."""

    source: Literal["wordnet", "jsonl", "csv"] = "wordnet"
    name: str = "wordnet"
    wordnet_dir: str = DEFAULT_WORDNET_DIR
    parts_of_speech: list[Literal["noun", "verb", "adj", "adv"]] = ["noun", "verb", "adj", "adv"]
    path: str | None = None
    text_column: str = "text"
    group_column: str = "group"
    kind_column: str | None = None
    max_groups: int | None = Field(None, gt=0)
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _check_path(self) -> DataConfig:
        if self.source in ("jsonl", "csv") and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        return self


class ModelConfig(_Section):
    """Pretrained encoder and the head trained on top of it."""

    encoder: str = DEFAULT_ENCODER
    max_seq_length: int = Field(128, gt=0, le=512)
    head: Literal["skip_connection", "linear", "mlp", "empty"] = "skip_connection"
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    trainable_encoder: bool = False


class LossConfig(_Section):
    """Batch-hard triplet loss."""

    variant: Literal["scaled", "plain"] = "scaled"
    margin: float = Field(0.5, gt=0.0)
    distance: Literal["cosine", "euclidean", "dot_product"] = "cosine"


class MonitorConfig(_Section):
    """Collapse monitor: what it measures and when it raises the alarm."""

    enabled: bool = True
    sample_size: int = Field(256, ge=2)
    every_n_steps: int | None = Field(None, gt=0)
    min_effective_rank: float = Field(2.0, ge=1.0)
    min_mean_distance: float = Field(0.01, ge=0.0)
    margin_tolerance: float = Field(0.01, ge=0.0)
    patience: int = Field(3, ge=1)


class TrainingConfig(_Section):
    """Optimiser, sampler and trainer settings."""

    epochs: int = Field(5, gt=0)
    groups_per_batch: int = Field(64, ge=2)
    items_per_group: int = Field(2, ge=2)
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    encode_batch_size: int = Field(64, gt=0)
    log_every_n_steps: int = Field(10, gt=0)
    num_threads: int | None = Field(None, gt=0)
    stop_on_collapse: bool = False
    monitor: MonitorConfig = MonitorConfig()


class QdrantConfig(_Section):
    """Qdrant connection, collection settings and upload batching."""

    url: str | None = None
    api_key_env: str = "QDRANT_API_KEY"
    path: str | None = None
    backend: Literal["edge", "local"] = "edge"
    collection: str = "items"
    distance: Literal["cosine", "dot", "euclid"] = "cosine"
    hnsw_m: int = Field(16, ge=0)
    hnsw_ef_construct: int = Field(100, ge=4)
    hnsw_ef: int = Field(128, ge=1)
    full_scan_threshold_kb: int = Field(10000, ge=0)
    on_disk: bool = False
    quantization: Literal["int8"] | None = None
    shard_number: int = Field(1, ge=1)
    replication_factor: int = Field(1, ge=1)
    upload_batch_size: int = Field(1024, gt=0)
    upload_parallel: int = Field(1, ge=1)
    timeout_s: int = Field(60, gt=0)

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"collection name {value!r} must be a plain name without '/'")
        return value

    def api_key(self) -> str | None:
        """Read the API key from the environment variable named by ``api_key_env``."""
        return os.environ.get(self.api_key_env) or None


class EvaluationConfig(_Section):
    """Retrieval evaluation on held-out groups."""

    k: list[int] = [1, 5, 10]
    index_scope: Literal["test", "all"] = "test"
    query_kind: str | None = "definition"
    batch_size: int = Field(256, gt=0)

    @field_validator("k")
    @classmethod
    def _check_k(cls, value: list[int]) -> list[int]:
        if not value or any(k <= 0 for k in value):
            raise ValueError(f"k must be a non-empty list of positive integers, got {value}")
        return sorted(set(value))


class PipelineConfig(_Section):
    """The whole pipeline: one YAML file."""

    name: str = "wordnet"
    seed: int = 42
    output_dir: str = "runs"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    training: TrainingConfig = TrainingConfig()
    qdrant: QdrantConfig = QdrantConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"Invalid configuration in {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; remove it or check its spelling")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_config(raw: dict, source: str = "<dict>") -> PipelineConfig:
    """Validate a mapping as a ``PipelineConfig``; ``source`` names it in errors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"Invalid configuration in {source}: expected a mapping at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> PipelineConfig:
    """Load and validate a YAML config file.

    Args:
        path: the YAML file.
        overrides: nested mapping merged over the file's content (for CLI flags).

    Raises:
        ConfigError: the file is missing, is not YAML, or has an invalid key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}. Pass an existing YAML file, e.g. configs/wordnet.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}") from None
    if overrides:
        raw = merge(raw, overrides)
    return parse_config(raw, str(path))


def merge(base: dict, overrides: dict) -> dict:
    """Return ``base`` with ``overrides`` merged in recursively."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
