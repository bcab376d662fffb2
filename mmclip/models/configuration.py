"""Architecture configs of the dual encoder: plain dataclasses, checked on construction.

They import nothing but the standard library, so the exported checkpoint ships them as remote
code. Reading YAML, ``--set`` overrides and error messages that name the file live in
``mmclip.config``; the checks here raise ``ValueError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ATTENTION_BACKENDS = ("auto", "sdpa", "xformers", "flash")
POSITION_EMBEDDINGS = ("rotary", "absolute")


def require(condition: bool, key: str, message: str) -> None:
    """Every config dataclass's check (these and ``mmclip``'s): ``ValueError`` naming the field, which
    ``mmclip.config.load_config`` prefixes with the file and the parent keys."""
    if not condition:
        raise ValueError(f"{key}: {message}")


@dataclass
class VisionConfig:
    """EVA02 vision tower. Defaults are EVA02-L/14 at stage-1 resolution."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_hidden_dim: int = 2730  # int(1024 * 8/3): SwiGLU keeps the FLOPs of a 4x GELU MLP
    rope_reference_grid: int = 16  # RoPE positions are rescaled onto the 224-px pretraining grid
    rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-6
    patch_dropout: float = 0.0
    pretrained: str | None = None  # timm / open_clip / EVA-CLIP / jina-clip-v2 file or directory

    def __post_init__(self) -> None:
        require(self.patch_size > 0, "patch_size", "must be positive")
        require(self.image_size >= self.patch_size, "image_size", "must be at least patch_size")
        require(self.width % self.num_heads == 0, "width", "must be divisible by num_heads")
        require(self.head_dim % 4 == 0, "num_heads", "head dim must be divisible by 4 for 2D RoPE")
        require(0.0 <= self.patch_dropout < 1.0, "patch_dropout", "must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def grid_size(self) -> int:
        # The stride-patch conv ignores the last image_size % patch_size pixels, as the released
        # jina-clip-v2 does at 512 px (36 x 36 patches, 8 pixels unused).
        return self.image_size // self.patch_size


@dataclass
class TextConfig:
    """Jina-XLM-RoBERTa text tower. Defaults are XLM-R-large with RoPE (jina-clip-v2)."""

    vocab_size: int = 250002
    hidden_size: int = 1024
    depth: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    position_embedding: str = "rotary"  # "absolute" loads plain XLM-R weights
    rotary_base: float = 10000.0
    max_position_embeddings: int = 8194
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    tokenizer: str | None = None  # a tokenizer directory (AutoTokenizer format)
    pretrained: str | None = None  # HF XLM-R directory, Jina XLM-R flash or jina-clip-v2 checkpoint
    lora_adapter: str | None = None  # which Jina LoRA adapter to merge when the checkpoint has several

    def __post_init__(self) -> None:
        require(
            self.position_embedding in POSITION_EMBEDDINGS,
            "position_embedding",
            f"must be one of {POSITION_EMBEDDINGS}, got {self.position_embedding!r}",
        )
        require(self.hidden_size % self.num_heads == 0, "hidden_size", "must be divisible by num_heads")
        require(self.head_dim % 2 == 0, "num_heads", "head dim must be even for RoPE")
        require(0 <= self.pad_token_id < self.vocab_size, "pad_token_id", "must be a token id")
        for name in ("hidden_dropout", "attention_dropout"):
            require(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class CLIPConfig:
    """The dual encoder: two towers, optional projections, one temperature per task."""

    # Keys naming files: relative ones in a YAML are relative to that YAML (mmclip.config.load_config).
    FILE_RELATIVE = ("pretrained", "vision.pretrained", "text.pretrained", "text.tokenizer")

    embed_dim: int = 1024
    matryoshka_dims: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 768, 1024])
    projections: bool = False  # jina-clip-v2 has none: both towers are 1024-wide
    attention_backend: str = "auto"
    init_logit_scale_image_text: float = 2.6592  # ln(1 / 0.07)
    init_logit_scale_text_text: float = 2.9957  # ln(1 / 0.05), the text-pair temperature of Jina's trainer
    pretrained: str | None = None  # a whole dual-encoder checkpoint (jina-clip-v2 directory)
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        require(
            self.attention_backend in ATTENTION_BACKENDS,
            "attention_backend",
            f"must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}",
        )
        if not self.projections:
            for key, width in (("vision.width", self.vision.width), ("text.hidden_size", self.text.hidden_size)):
                require(width == self.embed_dim, key, f"must equal embed_dim ({self.embed_dim}) without projections")
        dims = self.matryoshka_dims
        require(len(dims) > 0 and dims == sorted(set(dims)), "matryoshka_dims", "must be increasing and unique")
        require(dims[0] > 0, "matryoshka_dims", "must be positive")
        require(dims[-1] == self.embed_dim, "matryoshka_dims", f"must end with embed_dim ({self.embed_dim})")


LLM_ATTENTION = ("sdpa", "eager")
LLM_ARCHITECTURE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass
class LusiferConfig:
    """LUSIFER (Man et al., 2025): the text tower, a connector and a Mistral LLM; text embeddings.

    ``llm`` holds the ``MistralConfig`` fields (``config.json`` of a Mistral-architecture model);
    ``mmclip.factory`` fills it from ``llm_pretrained``'s ``config.json`` when that directory is given.
    The embedding width is the LLM's ``hidden_size``.
    """

    # Keys naming files: relative ones in a YAML are relative to that YAML (mmclip.config.load_config).
    FILE_RELATIVE = ("llm_pretrained", "llm_tokenizer", "encoder.pretrained", "encoder.tokenizer")

    encoder: TextConfig = field(default_factory=TextConfig)
    llm: dict[str, Any] = field(default_factory=dict)
    llm_pretrained: str | None = None  # a Mistral-architecture directory: config.json + safetensors
    llm_tokenizer: str | None = None  # the LLM's tokenizer directory (alignment targets)
    attn_implementation: str = "sdpa"  # the LLM's attention: "sdpa" or "eager"
    temperature: float = 0.05  # the contrastive loss's (fixed), as in the paper and the reference code

    def __post_init__(self) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = TextConfig(**self.encoder)
        require(
            self.attn_implementation in LLM_ATTENTION,
            "attn_implementation",
            f"must be one of {LLM_ATTENTION}, got {self.attn_implementation!r}",
        )
        require(0 < self.temperature <= 1, "temperature", "must be in (0, 1]")
        if self.llm_pretrained is None:
            missing = [key for key in LLM_ARCHITECTURE_KEYS if key not in self.llm]
            require(not missing, "llm", f"needs {missing} (or llm_pretrained, a Mistral directory)")

    @property
    def embed_dim(self) -> int:
        return self.llm["hidden_size"]
