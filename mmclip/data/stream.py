"""A worker's resumable sample stream: a few shards read at once, shuffled in fixed-size blocks.

The stream of a worker is a pure function of its :class:`~.sharding.ShardPlan`, the seed and the
worker id, and where it stands is a small JSON-able position::

    {"block": b, "start": {"next": n, "slots": [[n_i, index_i], ...], "turn": t}, "offset": j}

``start`` is the reader's state when block ``b`` began: the next entry of the worker's shard
sequence to open, the open shards (sequence entry, tar-order index of their next sample) and whose
turn is next in the round robin over them. A finished shard's slot closes and the next shard opens
last; the next epoch's shards open only once this epoch's are all read. Block ``b`` holds the next
``block_size`` raw samples from there, shuffled by an RNG seeded with ``(seed, rank, worker, b)``;
``j`` of them were consumed. Resuming re-reads at most one block, memory is one block of raw (still
encoded) samples, and the shuffle needs no state beyond these integers (webdataset's shuffle
buffer, by contrast, cannot be saved).
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator
from typing import Any

from .sharding import ShardPlan, ShardSlice
from .sources import tar_members

Position = dict[str, Any]
START: Position = {"block": 0, "start": {"next": 0, "slots": [], "turn": 0}, "offset": 0}


def read_tar(shard: ShardSlice, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, raw sample)`` for the samples of ``shard`` with tar-order index >= ``start``.

    Raw samples are webdataset's ``{"__key__": key, field: bytes}``; only the slice's samples are
    read (a local tar skips the others by seeking, a remote one streams past them). A tar that
    cannot be opened, or that ends before its count, ends with the marker ``{"__key__": ...,
    "__error__": reason}`` (reason ``unreadable_shard`` or ``truncated_tar``) at the index of the
    first incomplete sample, which a reader resumed past it does not repeat.
    """
    index, key, sample, opened = 0, None, None, False
    try:
        for name_key, field, read in tar_members(shard.path):
            opened = True
            if name_key != key:
                if sample is not None:
                    yield index, sample
                if key is not None:
                    index += 1
                key = name_key
                sample = {"__key__": key} if index >= start and index % shard.stride == shard.phase else None
            if sample is not None:
                sample[field] = read()
        if sample is not None:
            yield index, sample
        if key is not None:
            index += 1
        if index < shard.count:
            raise tarfile.ReadError(f"{index} samples, the count says {shard.count}")
    except (tarfile.TarError, OSError, EOFError) as error:
        if index >= start:
            yield index, _marker(shard, index, "truncated_tar" if opened else "unreadable_shard", error)


def _marker(shard: ShardSlice, index: int, reason: str, error: Exception) -> dict[str, Any]:
    return {"__key__": f"{shard.path}#{index}", "__error__": reason, "__detail__": str(error)}


class SampleStream:
    """Worker ``worker``'s ``(raw sample, augmentation seed, position after it)``, endless or ``epochs`` long.

    The augmentation seed comes from the block's RNG, so a resumed run also repeats the crops.
    """

    def __init__(
        self,
        plan: ShardPlan,
        worker: int,
        *,
        seed: int,
        interleave: int,
        block_size: int,
        epochs: int | None = None,
        position: Position | None = None,
    ):
        self.plan, self.worker, self.seed = plan, worker, seed
        self.interleave, self.block_size = interleave, block_size
        self.limit = None if epochs is None else epochs * plan.per_epoch(worker)
        position = position or START
        self.block, self.offset = position["block"], position["offset"]
        start = position["start"]
        self.next, self.turn = start["next"], start["turn"]
        self.slots = [self._open(n, index) for n, index in start["slots"]]

    def __iter__(self) -> Iterator[tuple[dict[str, Any], int, Position]]:
        while True:
            start = self.state()
            samples = self._read(self.block_size)
            if not samples:
                return
            rng = random.Random(f"{self.seed}/block/{self.plan.rank}/{self.worker}/{self.block}")
            order = rng.sample(range(len(samples)), len(samples))
            seeds = [rng.getrandbits(64) for _ in samples]
            for j in range(self.offset, len(samples)):
                sample, samples[order[j]] = samples[order[j]], None  # free the bytes as we go
                yield sample, seeds[j], {"block": self.block, "start": start, "offset": j + 1}
            self.block, self.offset = self.block + 1, 0

    def state(self) -> dict[str, Any]:
        return {"next": self.next, "slots": [[n, index] for n, index, _ in self.slots], "turn": self.turn}

    def _open(self, n: int, index: int = 0) -> list:
        return [n, index, read_tar(self.plan.shard(self.worker, n), index)]

    def _can_open(self) -> bool:
        if self.limit is not None and self.next >= self.limit:
            return False
        if self.plan.resampled or not self.slots:
            return True
        # Epochs do not overlap: the next epoch's shards open once this epoch's are all read, so a
        # worker never reads a shard alongside its next-epoch copy.
        per_epoch = self.plan.per_epoch(self.worker)
        return self.next // per_epoch == self.slots[0][0] // per_epoch

    def _read(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` raw samples, round robin over up to ``interleave`` open shards."""
        samples, exhausted = [], 0
        while len(samples) < count:
            while len(self.slots) < self.interleave and self._can_open():
                self.slots.append(self._open(self.next))
                self.next += 1
            if not self.slots:
                break
            self.turn %= len(self.slots)
            slot = self.slots[self.turn]
            index, sample = next(slot[2], (None, None))
            if sample is not None:
                slot[1] = index + 1
                samples.append(sample)
                self.turn += 1
                exhausted = 0
                continue
            # The shard is done; the turn passes to the next slot, the next shard opens at the end.
            del self.slots[self.turn]
            exhausted += 1
            if exhausted > self.plan.size + self.interleave:  # a whole epoch without data: fail, do not spin
                raise RuntimeError(
                    f"rank {self.plan.rank} worker {self.worker}: {exhausted} shards in a row without a sample; "
                    "are there fewer samples than workers?"
                )
        return samples
