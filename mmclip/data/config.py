"""Data config of a training stage: one stream per kind of sample, mixed into every step.

Plain dataclasses, loaded from YAML by :func:`mmclip.config.load_config` (``load_config(DataConfig,
"stage1.yaml")``); the checks raise ``ValueError`` naming the field, which ``load_config`` prefixes
with the file and the parent keys (``streams.image_text.batch_size: must be positive``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import require
from .formats import KINDS, NUM_HARD_NEGATIVES

@dataclass
class StreamConfig:
    """One stream: shard sets of one kind, batched at its own batch size."""

    kind: str
    shards: list[str]  # shard-set directories (each holds a manifest.json)
    batch_size: int
    # Per shard set: how often its shards appear per epoch (2.0 doubles, 0.5 halves); in resampled
    # mode, the relative probability of drawing its samples.
    weights: list[float] | None = None
    num_workers: int | None = None  # None: DataConfig.num_workers
    context_length: int | None = None  # None: DataConfig.context_length
    num_negatives: int = NUM_HARD_NEGATIVES  # text_triplet: negatives kept per query

    def __post_init__(self) -> None:
        require(self.kind in KINDS, "kind", f"must be one of {KINDS}, got {self.kind!r}")
        require(len(self.shards) > 0, "shards", "needs at least one shard-set directory")
        require(self.batch_size > 0, "batch_size", "must be positive")
        if self.weights is not None:
            require(len(self.weights) == len(self.shards), "weights", "needs one weight per shard set")
            require(all(w >= 0 for w in self.weights) and sum(self.weights) > 0, "weights", "must be >= 0, not all 0")
        require(self.num_workers is None or self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.context_length is None or self.context_length > 2, "context_length", "must be > 2")
        require(self.num_negatives > 0, "num_negatives", "must be positive")


@dataclass
class DataConfig:
    """Everything the training loader of one stage needs, except the tokenizer and the rank."""

    streams: dict[str, StreamConfig] = field(default_factory=dict)  # name -> stream; a step has one batch each
    image_size: int = 224
    context_length: int = 77
    seed: int = 0
    resampled: bool = False  # draw shards with replacement forever instead of epoch permutations
    num_workers: int = 4  # DataLoader workers per stream and rank
    prefetch_factor: int = 2  # batches each worker keeps ready
    interleave: int = 4  # shards each worker reads at once
    shuffle_block: int = 1000  # samples shuffled together (raw bytes held in memory per worker)
    max_image_pixels: int = 64 * 2**20  # larger images are skipped from their header, before decoding
    reduced_decode: bool = True  # JPEG: decode at 1/2, 1/4 or 1/8 scale when the crop allows

    # Keys of earlier versions, refused with the reason (mmclip.config.from_dict).
    REMOVED_KEYS = {
        "pixel_dtype": "removed: the loader always yields uint8 pixels, normalised once on the device "
        "in the training step (mmclip.train.step)",
    }

    def __post_init__(self) -> None:
        self.streams = {
            name: StreamConfig(**stream) if isinstance(stream, dict) else stream
            for name, stream in self.streams.items()
        }
        require(len(self.streams) > 0, "streams", "needs at least one stream")
        require(self.image_size > 0, "image_size", "must be positive")
        require(self.context_length > 2, "context_length", "must be > 2 (room for <s> and </s>)")
        require(self.num_workers >= 0, "num_workers", "must be >= 0")
        require(self.prefetch_factor > 0, "prefetch_factor", "must be positive")
        require(self.interleave > 0, "interleave", "must be positive")
        require(self.shuffle_block > 0, "shuffle_block", "must be positive")
        require(self.max_image_pixels > 0, "max_image_pixels", "must be positive")

    def workers(self, name: str) -> int:
        stream = self.streams[name]
        return self.num_workers if stream.num_workers is None else stream.num_workers

    def context(self, name: str) -> int:
        stream = self.streams[name]
        return self.context_length if stream.context_length is None else stream.context_length
