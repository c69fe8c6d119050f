"""Collapse monitor: geometry metrics on known inputs and the alarm on real training runs."""

import math

import pytest
import torch

import pipeline.compat  # noqa: F401
from quaterion_models.encoders import Encoder

from pipeline.collapse import CollapseAlarm, effective_rank, geometry_metrics
from pipeline.config import MonitorConfig, PipelineConfig
from pipeline.data import load_items, split_items
from pipeline.embed import embed_texts
from pipeline.model import SimilarityTrainer, build_pretrained_model
from pipeline.train import train
from tests.conftest import small_config


def test_identical_vectors_rank_one_distance_zero():
    metrics = geometry_metrics(torch.ones(10, 8))
    assert metrics["effective_rank"] == pytest.approx(1.0)
    assert metrics["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["min_distance"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["mean_std"] == pytest.approx(0.0, abs=1e-6)


def test_orthonormal_vectors_full_rank():
    metrics = geometry_metrics(torch.eye(6))
    assert metrics["effective_rank"] == pytest.approx(6.0)
    # Orthogonal unit vectors: cosine 0, so Quaterion's cosine distance is 0.5.
    assert metrics["mean_distance"] == pytest.approx(0.5)
    assert metrics["min_distance"] == pytest.approx(0.5)


def test_effective_rank_of_zero_matrix():
    assert effective_rank(torch.zeros(4, 3)) == 0.0


def test_alarm_on_low_rank():
    alarm = CollapseAlarm(MonitorConfig(min_effective_rank=2.0))
    reasons = alarm.update({"effective_rank": 1.0, "mean_distance": 0.3, "loss_over_margin": 0.5})
    assert len(reasons) == 1
    assert "effective rank" in reasons[0]


def test_alarm_needs_patience_for_loss_at_margin():
    alarm = CollapseAlarm(MonitorConfig(patience=3, margin_tolerance=0.01))
    healthy = {"effective_rank": 50.0, "mean_distance": 0.3}
    assert alarm.update({**healthy, "loss_over_margin": 1.0}) == []
    assert alarm.update({**healthy, "loss_over_margin": 0.995}) == []
    reasons = alarm.update({**healthy, "loss_over_margin": 1.004})
    assert len(reasons) == 1
    assert "3 checks" in reasons[0]


def test_alarm_streak_resets():
    alarm = CollapseAlarm(MonitorConfig(patience=2))
    healthy = {"effective_rank": 50.0, "mean_distance": 0.3}
    alarm.update({**healthy, "loss_over_margin": 1.0})
    alarm.update({**healthy, "loss_over_margin": 0.6})
    assert alarm.update({**healthy, "loss_over_margin": 1.0}) == []


def test_alarm_ignores_missing_loss():
    alarm = CollapseAlarm(MonitorConfig(patience=1))
    assert alarm.update({"effective_rank": 50.0, "mean_distance": 0.3, "loss_over_margin": math.nan}) == []


class ConstantEncoder(Encoder):
    """Maps every text to the same vector: a fully collapsed encoder."""

    def __init__(self):
        super().__init__()
        self.vector = torch.nn.Parameter(torch.ones(384), requires_grad=False)

    @property
    def trainable(self):
        return False

    @property
    def embedding_size(self):
        return 384

    def get_collate_fn(self):
        return lambda texts: torch.zeros(len(texts), 1)

    def forward(self, batch):
        return self.vector.expand(len(batch), -1)

    def save(self, output_path):
        pass

    @classmethod
    def load(cls, input_path):
        return cls()


@pytest.fixture(scope="module")
def slice_split(wordnet_dir, tmp_path_factory):
    config = small_config(tmp_path_factory.mktemp("split"))
    return split_items(load_items(config.data), config.data, config.seed)


def test_alarm_fires_on_constant_encoder(make_config, slice_split):
    config = make_config(training={"epochs": 3, "stop_on_collapse": True})
    model = SimilarityTrainer(config, encoder=ConstantEncoder())
    result = train(config, slice_split.train, slice_split.validation, trainable_model=model)
    assert result.monitor["collapsed"]
    assert result.stopped_on_collapse
    first = result.monitor["history"][0]
    assert first["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert first["mean_distance"] == pytest.approx(0.0, abs=1e-6)
    assert len(result.monitor["history"]) == 1, "training should stop at the first check"
    assert first["loss_over_margin"] == pytest.approx(1.0, abs=0.05)


def test_alarm_silent_on_pretrained_model(slice_split):
    model = build_pretrained_model(PipelineConfig())
    texts = [item.text for item in slice_split.validation[:128]]
    metrics = geometry_metrics(torch.from_numpy(embed_texts(model, texts, show_progress=False)))
    alarm = CollapseAlarm(MonitorConfig())
    assert alarm.update({**metrics, "loss_over_margin": 0.6}) == []
    assert metrics["effective_rank"] > 20



def test_stop_keeps_last_good_checkpoint(make_config, slice_split):
    # margin_tolerance 1.0 counts every check as "loss near the margin", so with
    # patience 2 the alarm fires at the second check (end of epoch 1), after the
    # epoch-0 checkpoint was saved.
    config = make_config(training={"epochs": 4, "stop_on_collapse": True,
                                   "monitor": {"margin_tolerance": 1.0, "patience": 2, "sample_size": 64}})
    result = train(config, slice_split.train, slice_split.validation)
    assert result.stopped_on_collapse
    assert len(result.monitor["history"]) == 2

    checkpoint = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == 0, "the checkpoint after the alarm must not be saved"

    from pipeline.model import load_servable

    servable = load_servable(result.servable_dir)
    for name, value in servable.head.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][f"_model.head.{name}"]), name
