"""Shared fixtures: the real WordNet files, the real MiniLM model and small run configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline.config import DEFAULT_WORDNET_DIR, PipelineConfig, merge, parse_config  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    path = Path(os.environ.get("WORDNET_DIR", DEFAULT_WORDNET_DIR))
    if not (path / "data.noun").is_file():
        pytest.fail(f"WordNet 3.0 not found in {path}: run 'make install-system' "
                    "(apt-get install wordnet-base) or set WORDNET_DIR.")
    return path


def small_config(tmp_path: Path, **overrides) -> PipelineConfig:
    """A WordNet slice of 400 synsets that trains in seconds on 2 CPU cores."""
    base = {
        "name": "small",
        "seed": 7,
        "output_dir": str(tmp_path),
        "data": {"max_groups": 400, "split": {"validation": 0.2, "test": 0.2}},
        "model": {"head": "skip_connection", "head_dropout": 0.0},
        "training": {"epochs": 3, "groups_per_batch": 16, "learning_rate": 0.01, "log_every_n_steps": 2,
                     "monitor": {"sample_size": 64}},
        "qdrant": {"collection": "test"},
    }
    return parse_config(merge(base, overrides), "small_config()")


@pytest.fixture
def make_config(tmp_path):
    def build(**overrides) -> PipelineConfig:
        return small_config(tmp_path, **overrides)

    return build


@pytest.fixture(scope="session")
def main_job(tmp_path_factory, wordnet_dir):
    """One end-to-end main job on a small slice, shared by the tests that read its outputs."""
    from pipeline.run import run_main_job

    output = tmp_path_factory.mktemp("main_job")
    config = small_config(output)
    document = run_main_job(config)
    return config, config.run_dir(), document
