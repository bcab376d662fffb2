"""Which shard each DataLoader worker reads next: split over nodes and workers, per epoch or resampled.

Global worker ``g = rank * num_workers + worker`` of ``W = world_size * num_workers``. Every worker
reads one endless sequence of shards; entry ``n`` of worker ``g`` is :meth:`ShardPlan.shard`:

* epochs (default): epoch ``e`` lists every shard (a shard set of weight 2 twice, of weight 0.5 a
  random half) in a permutation drawn from ``(seed, e)``, the same on every rank and worker; worker
  ``g`` takes entries ``g, g + W, g + 2W, ...``, so workers read disjoint shards that together
  cover the epoch, and its entry ``n`` lies in epoch ``n // per_epoch(worker)``. With fewer shards
  than workers (open_clip's trip-wire, issue #61), each shard is split into ``ceil(W / shards)``
  strided slices (samples ``i`` with ``i % stride == phase``), so every worker still has data and
  samples stay disjoint; each slice reads the whole tar but decodes only its samples.
* resampled: entry ``n`` is a shard drawn with replacement, from an RNG seeded by ``(seed, rank,
  worker, n)``, with probability proportional to its samples times its shard set's weight. For
  data too large to finish epochs; no shard-count constraint.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .sources import Source


@dataclass(frozen=True)
class ShardSlice:
    """The samples ``i`` of one tar file with ``i % stride == phase`` (stride 1: all of them)."""

    path: str
    count: int  # samples in the tar, per the manifest
    stride: int = 1
    phase: int = 0


class ShardPlan:
    """The shard sequences of one stream's workers on one rank (``worker`` is the rank-local id)."""

    def __init__(
        self,
        shard_sets: Sequence[Source],
        weights: Sequence[float] | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 1,
        resampled: bool = False,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        weights = [1.0] * len(shard_sets) if weights is None else list(weights)
        self.sources = [(list(zip(map(str, s.shards), s.counts)), w) for s, w in zip(shard_sets, weights)]
        self.seed, self.rank, self.num_workers, self.resampled = seed, rank, num_workers, resampled
        self.total_workers = world_size * num_workers
        if resampled:
            shards = [((path, count), count * w) for source, w in self.sources for path, count in source if count * w]
            self._draw_shards = [shard for shard, _ in shards]
            self._draw_cumulative = list(itertools.accumulate(weight for _, weight in shards))
            if not shards:
                raise ValueError("the shard sets hold no samples")
        else:
            self._epoch_cache: tuple[int, list[ShardSlice]] = (0, self._epoch(0))
            if not self._epoch_cache[1]:
                raise ValueError("the weights leave no shard in an epoch")

    @property
    def size(self) -> int:
        """Shard slices in an epoch, or shards to draw from when resampled."""
        return len(self._draw_shards) if self.resampled else len(self._epoch_cache[1])

    def per_epoch(self, worker: int) -> int:
        """Shard slices worker ``worker`` reads per epoch (not defined when resampled)."""
        if self.resampled:
            raise ValueError("a resampled plan has no epochs")
        return len(range(self._global(worker), self.size, self.total_workers))

    def shard(self, worker: int, n: int) -> ShardSlice:
        """Entry ``n`` of worker ``worker``'s sequence."""
        if self.resampled:
            rng = random.Random(f"{self.seed}/draw/{self.rank}/{worker}/{n}")
            index = bisect.bisect_right(self._draw_cumulative, rng.random() * self._draw_cumulative[-1])
            path, count = self._draw_shards[min(index, len(self._draw_shards) - 1)]
            return ShardSlice(path, count)
        epoch, i = divmod(n, self.per_epoch(worker))
        if self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._epoch(epoch))
        return self._epoch_cache[1][self._global(worker) + i * self.total_workers]

    def _global(self, worker: int) -> int:
        return self.rank * self.num_workers + worker

    def _epoch(self, epoch: int) -> list[ShardSlice]:
        rng = random.Random(f"{self.seed}/epoch/{epoch}")
        shards = []
        for source, weight in self.sources:
            whole, fraction = divmod(weight, 1)
            shards += source * int(whole) + rng.sample(source, round(fraction * len(source)))
        rng.shuffle(shards)
        stride = math.ceil(self.total_workers / len(shards)) if shards else 1
        return [ShardSlice(path, count, stride, phase) for path, count in shards for phase in range(stride)]
