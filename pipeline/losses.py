"""Batch-hard triplet loss in two variants: ``scaled`` (Quaterion's) and ``plain``.

For each anchor ``a`` in a batch, batch-hard mining takes the farthest positive
``d_ap`` and the nearest negative ``d_an``:

- plain:  ``relu(d_ap - d_an + margin)``, averaged over anchors.
- scaled: ``relu((d_ap - d_an) / mean(d_an) + margin)``, Quaterion 0.1.35's
  ``TripletLoss(mining="hard")``.

Mapping every input to one point makes every distance 0, so the plain loss sits at
exactly ``margin`` and its gradient no longer separates anything: the space has
collapsed. The scaled variant divides by the batch's mean hardest-negative distance,
which rewards spreading the negatives apart. In a fully collapsed batch that mean is
0 and Quaterion's value is 0/0 = NaN; here the denominator is clamped at ``eps`` so
the loss stays finite (about ``margin``) and training can climb out. ``eps`` is 1e-4,
far above the float32 rounding noise of the distances (about 1e-7 for Quaterion's
cosine distance of identical vectors): with a smaller ``eps`` that noise, divided by
``eps``, would dominate the loss of a collapsed batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import LongTensor, Tensor

import pipeline.compat  # noqa: F401  (fixes must load before quaterion)
from quaterion.distances import Distance
from quaterion.loss import GroupLoss

DISTANCES = {"cosine": Distance.COSINE, "euclidean": Distance.EUCLIDEAN, "dot_product": Distance.DOT_PRODUCT}


class BatchHardTripletLoss(GroupLoss):
    """Batch-hard triplet loss with a ``plain`` or ``scaled`` variant.

    Needs batches where every group has at least two items (use
    ``pipeline.sampler.GroupBatchSampler``); an anchor without a positive in the
    batch contributes ``relu(-d_an [/ mean] + margin)``, as in Quaterion.

    Args:
        margin: the margin added to the (scaled) difference.
        distance: ``cosine`` (Quaterion's cosine distance, range 0 to 1),
            ``euclidean`` or ``dot_product``.
        variant: ``scaled`` or ``plain``.
        eps: lower bound of the scaled variant's denominator.

    After each call, ``last_active_fraction`` is the share of anchors whose loss
    term is above zero, and ``last_mean_negative_distance`` is the batch mean of
    ``d_an``. The collapse monitor reads both.
    """

    def __init__(self, margin: float = 0.5, distance: str = "cosine", variant: str = "scaled", eps: float = 1e-4):
        if variant not in ("scaled", "plain"):
            raise ValueError(f"Unknown loss variant {variant!r}; use 'scaled' or 'plain'")
        super().__init__(distance_metric_name=DISTANCES[distance])
        self.margin = margin
        self.variant = variant
        self.eps = eps
        self.last_active_fraction = float("nan")
        self.last_mean_negative_distance = float("nan")

    def get_config_dict(self) -> dict:
        config = super().get_config_dict()
        config.update({"margin": self.margin, "variant": self.variant, "eps": self.eps})
        return config

    def forward(self, embeddings: Tensor, groups: LongTensor) -> Tensor:
        """Compute the loss of one batch.

        Args:
            embeddings: shape (batch_size, dim).
            groups: shape (batch_size,), the group id of each embedding.

        Returns:
            Scalar loss.
        """
        hardest_positive, hardest_negative = self.hardest_distances(embeddings, groups)
        difference = hardest_positive - hardest_negative
        if self.variant == "scaled":
            difference = difference / hardest_negative.mean().clamp_min(self.eps)
        per_anchor = F.relu(difference + self.margin)

        self.last_active_fraction = float((per_anchor.detach() > 0).float().mean())
        self.last_mean_negative_distance = float(hardest_negative.detach().mean())
        return per_anchor.mean()

    def hardest_distances(self, embeddings: Tensor, groups: LongTensor) -> tuple[Tensor, Tensor]:
        """Return each anchor's farthest positive and nearest negative distance, shape (batch_size,)."""
        # Shape: (batch_size, batch_size)
        distances = self.distance_metric.distance_matrix(embeddings)
        same_group = groups[:, None] == groups[None, :]
        not_self = ~torch.eye(len(groups), dtype=torch.bool, device=groups.device)

        positive_mask = same_group & not_self
        hardest_positive = (distances * positive_mask).max(dim=1).values

        # Non-negative pairs get the row maximum added, so min() never picks them
        # unless the row has no negative at all.
        negative_mask = ~same_group
        row_max = distances.max(dim=1, keepdim=True).values
        hardest_negative = (distances + row_max * (~negative_mask)).min(dim=1).values
        return hardest_positive, hardest_negative


def build_loss(variant: str, margin: float, distance: str) -> BatchHardTripletLoss:
    return BatchHardTripletLoss(margin=margin, distance=distance, variant=variant)
