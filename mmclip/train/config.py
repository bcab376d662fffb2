"""The config of one training stage: typed dataclasses read by ``mmclip.config.load_config``.

A stage YAML names the model config, the data streams (one per kind, each with its GLOBAL batch
size), the optimizer (per-tower peak LR and layer-wise decay), the loss weights, the resolution
schedule and the engine settings. Which loss of equation 3 a stage optimises follows from its
streams: a ``text_pair`` stream gives L_nce(txt;p), a ``text_triplet`` stream L_nce+(txt;t), an
``image_text`` stream L_nce(mm); they are summed with ``loss.weights``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import require
from ..data.config import DataConfig, StreamConfig
from .families import FAMILIES

PRECISIONS = ("bf16", "fp32")
LUSIFER_STAGES = {"align": ("text", "text_pair"), "finetune": ("text_pair", "text_triplet")}  # -> stream kinds
LUSIFER_PART_TRAINING = ("lora", "full", "frozen")
TOWER_MODES = ("full", "frozen", "lock", "lora")  # how a dual-encoder tower trains (mmclip.train.trainable)


@dataclass
class OptimizerConfig:
    """AdamW with per-tower peak LR and layer-wise LR decay; linear warm-up, then cosine decay."""

    lr_vision: float = 2e-4
    lr_text: float = 1e-4
    lr_logit_scale: float | None = None  # None: lr_vision
    layer_decay_vision: float = 1.0  # LR of layer i is lr * decay ** (num_layers - i)
    layer_decay_text: float = 1.0
    weight_decay: float = 0.02  # not on norms, biases, embeddings, position embeddings, temperatures
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.0  # the cosine ends at peak * min_lr_ratio
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables

    def __post_init__(self) -> None:
        for name in ("lr_vision", "lr_text"):
            require(getattr(self, name) > 0, name, "must be positive")
        for name in ("layer_decay_vision", "layer_decay_text"):
            require(0 < getattr(self, name) <= 1, name, "must be in (0, 1]")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two values in [0, 1)")
        require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        require(self.grad_clip >= 0, "grad_clip", "must be >= 0")


@dataclass
class LossConfig:
    matryoshka_dims: list[int] | None = None  # None: the model's matryoshka_dims
    matryoshka_weights: list[float] | None = None  # None: 1 for every dim
    weights: dict[str, float] = field(default_factory=dict)  # stream name -> weight (default 1)


@dataclass
class ResolutionPhase:
    """From ``step`` on, train at ``image_size`` (stage 1 ends at 384 px as a warm-up for stage 2)."""

    step: int
    image_size: int


@dataclass
class LoraSettings:
    """peft LoRA on every linear layer of a part (Table 4: rank 16, alpha 32; the reference's dropout 0.1)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        require(self.r > 0, "r", "must be positive")
        require(self.alpha > 0, "alpha", "must be positive")
        require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass
class TowerTraining:
    """How one tower of the dual encoder trains.

    ``full``: every weight. ``frozen``: nothing, its projection included. ``lock``: the last
    ``unlocked_layers`` blocks and what follows them train, the rest is frozen (open_clip's
    ``--lock-image-unlocked-groups`` / ``--lock-text-unlocked-layers``; 0 locks the whole tower); the
    projection trains, as open_clip's head does. ``lora``: peft LoRA on every linear layer of the
    blocks (``clip.towers.lora``), merged into the weights in checkpoints; the projection trains.
    """

    mode: str = "full"
    unlocked_layers: int = 0

    @classmethod
    def parse(cls, label: str) -> TowerTraining:
        """``full``, ``frozen``, ``lora``, ``lock`` or ``lock:N`` (the command line's short form)."""
        mode, _, layers = label.partition(":")
        try:
            return cls(mode, int(layers) if layers else 0)
        except ValueError as error:
            raise ValueError(f"{label!r}: expected full, frozen, lora, lock or lock:N ({error})") from None

    @property
    def label(self) -> str:
        return f"lock:{self.unlocked_layers}" if self.mode == "lock" else self.mode

    def __post_init__(self) -> None:
        require(self.mode in TOWER_MODES, "mode", f"must be one of {TOWER_MODES}, got {self.mode!r}")
        require(self.unlocked_layers >= 0, "unlocked_layers", "must be >= 0")
        require(self.mode == "lock" or self.unlocked_layers == 0, "unlocked_layers", "is for mode lock only")


@dataclass
class TowersConfig:
    """Per-tower training of the dual encoder; frozen weights get no gradients and no optimizer state."""

    vision: TowerTraining = field(default_factory=TowerTraining)
    text: TowerTraining = field(default_factory=TowerTraining)
    lora: LoraSettings = field(default_factory=LoraSettings)  # for towers in mode lora

    def __post_init__(self) -> None:
        require(not (self.vision.mode == "frozen" and self.text.mode == "frozen"), "vision.mode",
                 "and text.mode are both frozen: nothing but the temperatures would train")


@dataclass
class CLIPTrainConfig:
    """The ``clip`` family's block: the resolution schedule, the stage's patch dropout, how each tower trains, torch.compile."""

    resolution_schedule: list[ResolutionPhase] = field(default_factory=list)
    patch_dropout: float | None = None  # None: the model config's
    towers: TowersConfig = field(default_factory=TowersConfig)  # full, frozen, lock or lora per tower
    compile: bool = False  # torch.compile of both towers (mmclip.train.compile); frames that fail run eagerly

    def __post_init__(self) -> None:
        require(self.patch_dropout is None or 0 <= self.patch_dropout < 1, "patch_dropout", "must be in [0, 1)")
        steps = [phase.step for phase in self.resolution_schedule]
        require(steps == sorted(steps) and len(set(steps)) == len(steps), "resolution_schedule", "steps must increase")


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    keep_last: int = 3

    def __post_init__(self) -> None:
        require(self.every_steps > 0, "every_steps", "must be positive")
        require(self.keep_last > 0, "keep_last", "must be positive")


@dataclass
class LoggingConfig:
    every_steps: int = 10
    tensorboard: bool = True
    sample_keys: bool = False  # OUTPUT/keys/rank_*.jsonl: every step's sample keys (checks data order)
    # Weights & Biases next to TensorBoard: the same records, files in OUTPUT/wandb (WANDB_MODE=offline
    # keeps them local; `wandb sync` uploads them later).
    wandb: bool = False
    wandb_project: str = "mmclip"

    def __post_init__(self) -> None:
        require(self.every_steps > 0, "every_steps", "must be positive")


@dataclass
class ValidationConfig:
    """Retrieval on held-out shard sets every ``every_steps`` (and at the last step), logged as
    ``val/<set>/<metric>``: image_text sets recall@k both ways, text sets recall@k and nDCG@k of
    query -> positive. A set's ``batch_size`` is its embedding batch; each set is read once, whole."""

    sets: dict[str, StreamConfig] = field(default_factory=dict)
    every_steps: int = 1000
    recall_k: list[int] = field(default_factory=lambda: [1, 5, 10])
    ndcg_k: int = 10

    def __post_init__(self) -> None:
        require(len(self.sets) > 0, "sets", "needs at least one held-out shard set")
        require(self.every_steps > 0, "every_steps", "must be positive")
        require(len(self.recall_k) > 0 and all(k > 0 for k in self.recall_k), "recall_k", "must be positive")
        require(self.ndcg_k > 0, "ndcg_k", "must be positive")


@dataclass
class LusiferTrainConfig:
    """A LUSIFER stage: ``align`` trains on language-model losses (``text`` streams: masked
    reconstruction; ``text_pair`` streams: query -> positive completion), ``finetune`` on InfoNCE
    (``text_pair`` / ``text_triplet`` streams). Each part trains with LoRA, fully, or not at all;
    the connector always trains. All trained parts use ``optimizer.lr_text``."""

    stage: str
    encoder: str = "lora"
    llm: str = "frozen"
    lora: LoraSettings = field(default_factory=LoraSettings)
    mask_ratio: float = 0.5  # align: fraction of the encoder's input tokens replaced by <mask> in text streams

    def __post_init__(self) -> None:
        require(self.stage in LUSIFER_STAGES, "stage", f"must be one of {tuple(LUSIFER_STAGES)}, got {self.stage!r}")
        for part in ("encoder", "llm"):
            value = getattr(self, part)
            require(value in LUSIFER_PART_TRAINING, part, f"must be one of {LUSIFER_PART_TRAINING}, got {value!r}")
        require(0 <= self.mask_ratio < 1, "mask_ratio", "must be in [0, 1)")


@dataclass
class TrainConfig:
    FILE_RELATIVE = ("model",)  # the model YAML is found next to the stage YAML, from any working directory

    model: str  # a model YAML (configs/model/...)
    steps: int
    data: DataConfig  # stream batch sizes are GLOBAL: divided by the world size per rank
    model_overrides: list[str] = field(default_factory=list)  # --set style, applied to the model YAML
    init_from: str | None = None  # a previous stage's checkpoint: model weights only, resized as needed
    world_size: int | None = None  # the process count the recipe assumes (Table 6: 8); None: any
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # GradCache (mmclip.train.step): stream name -> samples embedded at a time per rank; a
    # stream not listed is embedded in one piece. Bounds activation memory, not the batch.
    grad_cache_chunk: dict[str, int] = field(default_factory=dict)
    gradient_checkpointing: bool = False
    precision: str = "bf16"  # fp32 on CPU
    zero_stage: int = 1
    deepspeed: dict[str, Any] = field(default_factory=dict)  # extra DeepSpeed config keys, merged last
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0
    family: str = "clip"  # mmclip.train.families: clip (model: a CLIPConfig YAML), lusifer (a LusiferConfig YAML)
    # Each family's own block, named after it, allowed only with it (clip's defaults when absent).
    clip: CLIPTrainConfig | None = None
    lusifer: LusiferTrainConfig | None = None  # required with family lusifer
    validation: ValidationConfig | None = None  # held-out retrieval during training (CLIP family)

    REMOVED_KEYS = {
        "resolution_schedule": "moved to clip.resolution_schedule (the CLIP family's block)",
        "patch_dropout": "moved to clip.patch_dropout (the CLIP family's block)",
    }

    def __post_init__(self) -> None:
        require(self.family in FAMILIES, "family", f"must be one of {tuple(FAMILIES)}, got {self.family!r}")
        if self.family == "clip" and self.clip is None:
            self.clip = CLIPTrainConfig()
        require(self.clip is None or self.family == "clip", "clip", "is the CLIP family's block, only allowed with it")
        require((self.lusifer is not None) == (self.family == "lusifer"), "lusifer",
                "is required with family lusifer and only allowed with it")
        require(self.validation is None or self.family == "clip", "validation", "is for the CLIP family only")
        require(self.steps > 0, "steps", "must be positive")
        require(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}")
        require(self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3")
        require(self.world_size is None or self.world_size > 0, "world_size", "must be positive")
        for name in self.loss.weights:
            require(name in self.data.streams, f"loss.weights.{name}", f"no such stream; streams are {list(self.data.streams)}")
        for name, chunk in self.grad_cache_chunk.items():
            key = f"grad_cache_chunk.{name}"
            require(name in self.data.streams, key, f"no such stream; streams are {list(self.data.streams)}")
            require(chunk > 0, key, "must be positive")
        if self.world_size is not None:
            self.check_world_size(self.world_size)

    def check_world_size(self, world_size: int) -> None:
        """Every global batch must split evenly over the ranks, and each rank's into GradCache chunks."""
        for name, stream in self.data.streams.items():
            require(
                stream.batch_size % world_size == 0,
                f"data.streams.{name}.batch_size",
                f"global batch {stream.batch_size} is not divisible by the world size {world_size}",
            )
            per_rank, chunk = stream.batch_size // world_size, self.grad_cache_chunk.get(name)
            require(
                chunk is None or per_rank % chunk == 0,
                f"grad_cache_chunk.{name}",
                f"the per-rank batch {per_rank} (global {stream.batch_size} / {world_size} ranks) "
                f"is not divisible by the chunk {chunk}",
            )

