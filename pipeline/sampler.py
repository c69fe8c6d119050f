"""P x K sampling: every batch contains P groups with K items each.

Batch-hard mining needs a positive for every anchor, which a plain shuffled loader
does not guarantee. ``GroupBatchSampler`` is a ``torch.utils.data.Sampler`` over item
indices whose consecutive runs of ``P * K`` indices form one batch. It is passed as
``sampler=`` together with ``batch_size=P * K`` and ``drop_last=True``, not as
``batch_sampler=``, because Quaterion rebuilds the loader with its own
``batch_size`` when it fills the embedding cache.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class SamplerError(ValueError):
    """Data or settings that cannot fill P x K batches."""


class GroupBatchSampler(Sampler[int]):
    """Yield item indices so that each batch has ``groups_per_batch`` groups x ``items_per_group`` items.

    Each epoch visits every group that has at least ``items_per_group`` items once,
    in a seeded random order, and draws ``items_per_group`` distinct items from it.
    Groups with fewer items are skipped (they have no positive pair to learn from).

    Args:
        groups: the group label of each item, by dataset index.
        groups_per_batch: P, the number of groups in a batch.
        items_per_group: K, the items drawn from each group (at least 2).
        seed: base seed; epoch ``e`` uses ``seed + e``.
        reshuffle: draw a new order each epoch (training) or repeat epoch 0's
            batches every time (validation, so its loss is comparable across epochs).

    Raises:
        SamplerError: fewer than ``groups_per_batch`` groups have enough items, or
            ``items_per_group`` is below 2.
    """

    def __init__(self, groups: Sequence, groups_per_batch: int, items_per_group: int, seed: int = 0,
                 reshuffle: bool = True):
        if items_per_group < 2:
            raise SamplerError(f"items_per_group must be at least 2 for batch-hard mining, got {items_per_group}")
        members = defaultdict(list)
        for index, group in enumerate(groups):
            members[group].append(index)
        self.members = [indices for _, indices in sorted(members.items(), key=lambda pair: str(pair[0]))
                        if len(indices) >= items_per_group]
        if len(self.members) < groups_per_batch:
            raise SamplerError(
                f"Only {len(self.members)} groups have at least {items_per_group} items, fewer than "
                f"groups_per_batch={groups_per_batch}. Lower training.groups_per_batch or "
                "training.items_per_group, or add data."
            )
        self.groups_per_batch = groups_per_batch
        self.items_per_group = items_per_group
        self.seed = seed
        self.reshuffle = reshuffle
        self.epoch = 0

    @property
    def num_batches(self) -> int:
        return len(self.members) // self.groups_per_batch

    def __len__(self) -> int:
        return self.num_batches * self.groups_per_batch * self.items_per_group

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch if self.reshuffle else 0
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.reshuffle:
            self.epoch += 1

        order = torch.randperm(len(self.members), generator=generator).tolist()
        used = self.num_batches * self.groups_per_batch
        for position in order[:used]:
            indices = self.members[position]
            picks = torch.randperm(len(indices), generator=generator)[: self.items_per_group].tolist()
            for pick in picks:
                yield indices[pick]
