"""Plain and scaled batch-hard triplet loss: hand-computed values, Quaterion parity, collapse."""

import pytest
import torch

import pipeline.compat  # noqa: F401
from quaterion.loss import TripletLoss

from pipeline.losses import BatchHardTripletLoss


def _two_pairs():
    # Groups 0, 0, 1, 1 on the unit circle at angles 0, 90, 180, 270 degrees.
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    groups = torch.tensor([0, 0, 1, 1])
    return embeddings, groups


def test_plain_value_by_hand():
    # Quaterion's cosine distance is (1 - cos) / 2: 0.5 at 90 degrees, 1.0 at 180.
    # Every anchor: hardest positive 0.5 (90 deg), hardest negative 0.5 (the other
    # group's point at 90 deg), so each term is relu(0.5 - 0.5 + 0.2) = 0.2.
    embeddings, groups = _two_pairs()
    loss = BatchHardTripletLoss(margin=0.2, variant="plain")(embeddings, groups)
    assert loss.item() == pytest.approx(0.2)


def test_scaled_value_by_hand():
    # Groups 0, 0, 1, 1 at angles 0, 60, 180, 240 degrees.
    # Anchor 0: d_ap = (1 - cos 60) / 2 = 0.25, d_an = min(1.0, (1 - cos 240) / 2 = 0.75) = 0.75.
    # By symmetry every anchor has d_ap = 0.25 and d_an = 0.75, so mean(d_an) = 0.75 and
    # each term is relu((0.25 - 0.75) / 0.75 + 0.5) = relu(-0.1667) = 0.
    # Plain: relu(0.25 - 0.75 + 0.5) = 0 as well; with margin 0.7 plain gives 0.2 and
    # scaled gives relu(-0.6667 + 0.7) = 0.0333.
    angles = torch.deg2rad(torch.tensor([0.0, 60.0, 180.0, 240.0]))
    embeddings = torch.stack([angles.cos(), angles.sin()], dim=1)
    groups = torch.tensor([0, 0, 1, 1])
    assert BatchHardTripletLoss(margin=0.5, variant="scaled")(embeddings, groups).item() == pytest.approx(0.0, abs=1e-6)
    assert BatchHardTripletLoss(margin=0.7, variant="plain")(embeddings, groups).item() == pytest.approx(0.2, abs=1e-6)
    scaled = BatchHardTripletLoss(margin=0.7, variant="scaled")(embeddings, groups).item()
    assert scaled == pytest.approx(0.7 - 0.5 / 0.75, abs=1e-6)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_scaled_matches_quaterion_on_random_batches(distance):
    generator = torch.Generator().manual_seed(0)
    ours = BatchHardTripletLoss(margin=0.5, distance=distance, variant="scaled")
    reference = TripletLoss(margin=0.5, distance_metric_name=distance, mining="hard")
    for _ in range(20):
        embeddings = torch.randn(32, 16, generator=generator)
        groups = torch.randint(0, 6, (32,), generator=generator)
        assert ours(embeddings, groups).item() == pytest.approx(reference(embeddings, groups).item(), rel=1e-5)


def test_quaterion_scaled_loss_is_nan_when_collapsed():
    embeddings = torch.ones(8, 4)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    reference = TripletLoss(margin=0.5, mining="hard")
    assert torch.isnan(reference(embeddings, groups))


@pytest.mark.parametrize("variant", ["scaled", "plain"])
def test_collapsed_batch_gives_finite_loss_and_gradients(variant):
    embeddings = torch.ones(8, 4, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = BatchHardTripletLoss(margin=0.5, variant=variant)(embeddings, groups)
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.5)
    assert torch.isfinite(embeddings.grad).all()


def test_active_fraction_recorded():
    embeddings, groups = _two_pairs()
    loss = BatchHardTripletLoss(margin=0.2, variant="plain")
    loss(embeddings, groups)
    assert loss.last_active_fraction == 1.0
    assert loss.last_mean_negative_distance == pytest.approx(0.5)


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="Unknown loss variant"):
        BatchHardTripletLoss(variant="soft")
