"""The training loader: one DataLoader per stream, one batch of each per step, exactly resumable.

::

    loader = MultiStreamLoader(data_config, tokenizer, rank=rank, world_size=world_size)
    loader.load_state_dict(checkpoint["data"])        # optional: continue where the run stopped
    for step, batches in enumerate(loader):           # {"text_pair": {...}, "image_text": {...}}
        ...
        checkpoint["data"] = loader.state_dict()      # JSON-able; one per rank
        log(loader.skipped)                           # {"image_text": {"corrupt_image": 3}}

Each DataLoader worker reads its own shards (:mod:`.sharding`), shuffles in blocks (:mod:`.stream`),
decodes, transforms and tokenizes (:mod:`.collate`) and yields whole batches. A batch carries the
id of its worker, that worker's stream position after its last sample, and the worker's
cumulative skipped-sample counts. Workers run ahead of training (prefetching), so the loader only
records these when it hands a batch to the training loop: the state is that of the consumed
batches. The DataLoader takes batches from its workers in strict round robin; the state also
records whose turn is next, and a resumed loader renumbers its workers so that this one comes
first. The resumed run then sees exactly the samples, in the order, of an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .collate import BatchBuilder
from .config import DataConfig
from .formats import BadSample, decode
from .sharding import ShardPlan
from .shards import read_shard_set
from .stream import SampleStream
from .transforms import ImageTransform

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

STATE_FORMAT = "mmclip-loader"
STATE_VERSION = 1


class StreamDataset(IterableDataset):
    """One stream of one rank; each DataLoader worker yields batches of its own shards.

    ``resume`` (see :meth:`with_resume`) holds per worker ``{"position", "skipped"}`` as of its last
    consumed batch, and which worker's batch comes first. ``epochs`` makes the stream finite (a
    single pass for evaluation or tests; the last batch may be partial); training streams are endless.
    """

    def __init__(
        self,
        config: DataConfig,
        name: str,
        tokenizer: PreTrainedTokenizerBase,
        *,
        rank: int = 0,
        world_size: int = 1,
        epochs: int | None = None,
        target_tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        stream = config.streams[name]
        self.name, self.kind, self.batch_size, self.epochs = name, stream.kind, stream.batch_size, epochs
        self.num_workers = max(1, config.workers(name))  # 0 workers: one stream in the main process
        self.seed, self.interleave, self.block_size = config.seed, config.interleave, config.shuffle_block
        shard_sets = [read_shard_set(directory) for directory in stream.shards]
        for directory, shard_set in zip(stream.shards, shard_sets):
            if shard_set.kind != stream.kind:
                raise ValueError(f"streams.{name}.shards: {directory} holds {shard_set.kind}, not {stream.kind}")
        self.plan = ShardPlan(
            shard_sets,
            stream.weights,
            seed=config.seed,
            rank=rank,
            world_size=world_size,
            num_workers=self.num_workers,
            resampled=config.resampled,
        )
        transform = None
        if stream.kind == "image_text":
            transform = ImageTransform(config.image_size, True, config.max_image_pixels, config.reduced_decode)
        self.builder = BatchBuilder(
            tokenizer, config.context(name), transform, stream.num_negatives, target_tokenizer
        )
        self.resume: dict[str, Any] = {"workers": [None] * self.num_workers, "next_worker": 0}

    def with_resume(self, resume: dict[str, Any]) -> StreamDataset:
        dataset = copy.copy(self)
        dataset.resume = resume
        return dataset

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        # Renumber so that the DataLoader's first worker is the one whose turn it was.
        worker = ((info.id if info else 0) + self.resume["next_worker"]) % self.num_workers
        return self.batches(worker)

    def batches(self, worker: int) -> Iterator[dict[str, Any]]:
        """The batches of (logical) worker ``worker``; callable directly to simulate a worker."""
        start = self.resume["workers"][worker] or {"position": None, "skipped": {}}
        stream = SampleStream(
            self.plan,
            worker,
            seed=self.seed,
            interleave=self.interleave,
            block_size=self.block_size,
            epochs=self.epochs,
            position=start["position"],
        )
        skipped, details = Counter(start["skipped"]), {}
        samples, keys = [], []

        def batch() -> dict[str, Any]:
            # "_progress" is for the loader, which removes it before the training loop sees the batch.
            progress = {"worker": worker, "position": position, "skipped": dict(skipped), "details": details}
            return {**self.builder.batch(samples), "keys": keys, "_progress": progress}

        for raw, seed, position in stream:
            try:
                if "__error__" in raw:  # a shard-level failure, placed in the stream by the reader
                    raise BadSample(raw["__error__"], raw["__detail__"])
                samples.append(self.builder.sample(decode(self.kind, raw), seed))
                keys.append(raw["__key__"])
            except BadSample as error:
                skipped[error.reason] += 1
                details.setdefault(error.reason, f"{raw['__key__']}: {error}")
                continue
            if len(samples) == self.batch_size:
                yield batch()
                samples, keys, details = [], [], {}
        if samples:  # only a finite stream ends
            yield batch()


def _init_worker(_: int) -> None:
    # One thread per worker: the Rust tokenizer would otherwise start a thread per core in each.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # SLURM signals every process of a job step; the main process checkpoints on these
    # (mmclip.train.preemption) and needs its workers alive until then. It ends them itself.
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class MultiStreamLoader:
    """Training steps ``{stream name: batch}`` with one batch of every stream, endlessly.

    ``iter()`` starts the workers from the state of the consumed batches, so a loader whose
    iterator was dropped continues where the training loop left off, as does a fresh loader given
    :meth:`load_state_dict`. The state is per rank; save every rank's.
    """

    def __init__(
        self,
        config: DataConfig,
        tokenizer: PreTrainedTokenizerBase,
        *,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool | None = None,
        target_tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        self.config, self.rank, self.world_size = config, rank, world_size
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.datasets = {
            name: StreamDataset(config, name, tokenizer, rank=rank, world_size=world_size, target_tokenizer=target_tokenizer)
            for name in config.streams
        }
        self._progress = {name: copy.deepcopy(dataset.resume) for name, dataset in self.datasets.items()}
        self._logged: set[tuple[str, str]] = set()

    def __iter__(self) -> Iterator[dict[str, dict[str, Any]]]:
        iterators = {name: iter(self._dataloader(name)) for name in self.datasets}
        while True:
            yield {name: self._consume(name, next(iterator)) for name, iterator in iterators.items()}

    @property
    def skipped(self) -> dict[str, dict[str, int]]:
        """Samples skipped so far per stream and reason, up to the last consumed batch (this rank)."""
        totals = {}
        for name, progress in self._progress.items():
            counts = Counter()
            for worker in progress["workers"]:
                counts.update(worker["skipped"] if worker else {})
            totals[name] = dict(sorted(counts.items()))
        return totals

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "layout": self._layout(),
            "streams": copy.deepcopy(self._progress),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` of a run with the same data layout, rank and world size."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state: format {state.get('format')!r} version {state.get('version')!r}")
        saved, now = state["layout"], self._layout()
        changed = sorted(
            f"{key} was {saved.get(key)!r}, is {now.get(key)!r}"
            for key in {**saved, **now}
            if saved.get(key) != now.get(key)
        )
        if changed:
            raise ValueError(
                "loader state: exact resume needs the data layout it was saved with; " + "; ".join(changed)
            )
        self._progress = copy.deepcopy(state["streams"])

    def _layout(self) -> dict[str, Any]:
        """What fixes every worker's sample sequence; a state applies only where all of it is equal."""
        config = self.config
        layout = {
            "seed": config.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "resampled": config.resampled,
            "interleave": config.interleave,
            "shuffle_block": config.shuffle_block,
        }
        for name, stream in config.streams.items():
            layout[f"streams.{name}.kind"] = stream.kind
            layout[f"streams.{name}.shards"] = list(stream.shards)
            layout[f"streams.{name}.weights"] = stream.weights
            layout[f"streams.{name}.num_workers"] = max(1, config.workers(name))
        return layout

    def _dataloader(self, name: str) -> DataLoader:
        num_workers = self.config.workers(name)
        return DataLoader(
            self.datasets[name].with_resume(copy.deepcopy(self._progress[name])),
            batch_size=None,  # workers batch themselves
            num_workers=num_workers,
            prefetch_factor=self.config.prefetch_factor if num_workers else None,
            pin_memory=self.pin_memory,
            worker_init_fn=_init_worker if num_workers else None,
            # Starting an iterator draws a base seed from this generator (the global one by default),
            # which would shift the training RNG (dropout, masking) of a resumed run by one draw.
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def _consume(self, name: str, batch: dict[str, Any]) -> dict[str, Any]:
        progress, state = batch.pop("_progress"), self._progress[name]
        if progress["worker"] != state["next_worker"]:
            raise RuntimeError(f"{name}: batch from worker {progress['worker']}, expected {state['next_worker']}")
        state["workers"][progress["worker"]] = {"position": progress["position"], "skipped": progress["skipped"]}
        state["next_worker"] = (progress["worker"] + 1) % len(state["workers"])
        for reason, detail in progress["details"].items():
            if (name, reason) not in self._logged:
                self._logged.add((name, reason))
                logger.warning("%s: skipping %s samples (first: %s); the rest are only counted", name, reason, detail)
        return batch
