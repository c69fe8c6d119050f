"""The collapse experiment on a small WordNet slice: plain collapses to the margin, scaled does not."""

import json

import pytest

from pipeline.experiment import run_collapse_experiment
from tests.conftest import small_config


@pytest.fixture(scope="module")
def summary(tmp_path_factory, wordnet_dir):
    config = small_config(
        tmp_path_factory.mktemp("collapse"),
        name="collapse",
        data={"max_groups": 600},
        model={"head": "mlp"},
        training={"epochs": 2, "learning_rate": 0.01, "monitor": {"every_n_steps": 5, "sample_size": 64}},
    )
    path = run_collapse_experiment(config)
    return path, json.loads((path.parent / "collapse.json").read_text())


def test_experiment_writes_figures_and_summary(summary):
    path, _ = summary
    assert "| held-out recall@10" in path.read_text()
    for name in ("collapse_loss.png", "collapse_geometry.png", "collapse.json"):
        assert (path.parent / name).stat().st_size > 0, name


def test_plain_loss_sits_at_margin(summary):
    _, data = summary
    assert data["variants"]["plain"]["final_loss_over_margin"] == pytest.approx(1.0, abs=0.02)
    assert data["variants"]["plain"]["collapse_alarm"]


def test_scaled_loss_goes_below_margin(summary):
    _, data = summary
    assert data["variants"]["scaled"]["final_loss_over_margin"] < 0.95


def test_scaled_keeps_space_spread(summary):
    _, data = summary
    plain = data["variants"]["plain"]
    scaled = data["variants"]["scaled"]
    assert scaled["final_mean_distance"] > 5 * plain["final_mean_distance"]
    assert scaled["final_effective_rank"] > plain["final_effective_rank"]


def test_variants_start_from_same_weights(summary):
    _, data = summary
    plain = data["variants"]["plain"]["monitor_history"][0]
    scaled = data["variants"]["scaled"]["monitor_history"][0]
    assert plain["step"] == 0
    assert plain["effective_rank"] == pytest.approx(scaled["effective_rank"], rel=1e-4)
    assert plain["mean_distance"] == pytest.approx(scaled["mean_distance"], rel=1e-4)
