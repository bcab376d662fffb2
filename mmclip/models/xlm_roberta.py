"""Jina-XLM-RoBERTa text tower: XLM-R-large with rotary positions and mean pooling.

Post-LayerNorm BERT blocks (fused ``Wqkv``, GELU MLP) over token + token-type embeddings, with
RoPE on queries and keys (``position_embedding="rotary"``, jina-clip-v2) or XLM-R's learned
absolute positions (``"absolute"``, plain ``xlm-roberta-large`` as the LUSIFER encoder uses).
Padding tokens are removed before the embedding and never enter a matmul (:class:`Packing`): when
the attention backend runs packed sequences (flash, xformers, torch varlen on CUDA) they never come
back; otherwise (sdpa on CPU) the real tokens are padded again around attention alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention, supports_varlen, varlen_attention
from .configuration import TextConfig
from .rope import apply_rotary, text_rotary_table


@dataclass
class Packing:
    """The real tokens of a padded ``[B, L]`` batch, packed into ``[T]`` (row-major order)."""

    mask: torch.Tensor  # [B, L] bool
    token_index: torch.Tensor  # [T]: each real token's index in the flattened batch
    cu_seqlens: torch.Tensor  # [B + 1] int32 sequence offsets
    max_seqlen: int | None  # None: attention cannot run packed tokens, so they are padded again around it

    @classmethod
    def of(cls, mask: torch.Tensor, varlen: bool) -> Packing:
        lengths = mask.sum(dim=1)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return cls(mask, mask.flatten().nonzero().squeeze(1), cu_seqlens, int(lengths.max()) if varlen else None)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, ...]`` -> ``[T, ...]``."""
        return x.flatten(0, 1)[self.token_index]

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, ...]`` -> ``[B, L, ...]``, zero at padding."""
        padded = x.new_zeros(self.mask.numel(), *x.shape[1:]).index_copy(0, self.token_index, x)
        return padded.view(*self.mask.shape, *x.shape[1:])

    def attention(self, q, k, v, backend: str, dropout_p: float) -> torch.Tensor:
        """Attention within each sequence of packed ``[T, H, D]`` tensors."""
        if self.max_seqlen is not None:
            return varlen_attention(q, k, v, cu_seqlens=self.cu_seqlens, max_seqlen=self.max_seqlen, backend=backend,
                                    dropout_p=dropout_p)
        out = attention(self.unpack(q), self.unpack(k), self.unpack(v), backend=backend,
                        key_padding_mask=self.mask, dropout_p=dropout_p)
        return self.pack(out)


class XLMRobertaEmbeddings(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.position_embeddings = None
        if config.position_embedding == "absolute":
            self.position_embeddings = nn.Embedding(
                config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
            )

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids)
        return x


class XLMRobertaAttention(nn.Module):
    def __init__(self, config: TextConfig, backend: str):
        super().__init__()
        self.config = config
        self.backend = backend
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None, mask: torch.Tensor | None = None,
                packing: Packing | None = None) -> torch.Tensor:
        """``x`` ``[B, L, W]`` with its key-padding ``mask``, or packed ``[T, W]`` with its ``packing``."""
        qkv = self.Wqkv(x).unflatten(-1, (3, self.config.num_heads, -1))
        if rope is None:
            q, k = qkv[..., :2, :, :].unbind(-3)
        else:  # q and k rotate together; attention takes them with their head dims reordered alike
            q, k = apply_rotary(qkv[..., :2, :, :], rope, keep_layout=False).unbind(-3)
        v = qkv[..., 2, :, :]
        dropout_p = self.config.attention_dropout if self.training else 0.0
        if packing is not None:
            out = packing.attention(q, k, v, self.backend, dropout_p)
        else:
            out = attention(q, k, v, backend=self.backend, key_padding_mask=mask, dropout_p=dropout_p)
        return self.out_proj(out.flatten(-2))


class XLMRobertaMLP(nn.Module):
    def __init__(self, config: TextConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class XLMRobertaLayer(nn.Module):
    """Post-LN: ``norm1(x + attn(x))`` then ``norm2(x + mlp(x))``."""

    def __init__(self, config: TextConfig, backend: str):
        super().__init__()
        self.mixer = XLMRobertaAttention(config, backend)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = XLMRobertaMLP(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None, mask: torch.Tensor | None = None,
                packing: Packing | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.mixer(x, rope, mask, packing)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class XLMRobertaTextTower(nn.Module):
    """Token ids ``[B, L]`` (+ attention mask) to mean-pooled embeddings ``[B, hidden_size]``, or to
    per-token states (:meth:`token_states`, the LUSIFER encoder's output)."""

    def __init__(self, config: TextConfig, attention_backend: str = "auto"):
        super().__init__()
        self.config = config
        self.attention_backend = attention_backend
        self.embeddings = XLMRobertaEmbeddings(config)
        self.emb_ln = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.emb_drop = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(XLMRobertaLayer(config, attention_backend) for _ in range(config.depth))
        self.grad_checkpointing = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT's init: normal 0.02, zero biases, the padding embedding zero."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight",
                "embeddings.position_embeddings.weight"}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for layer-wise LR decay, in timm's convention (``param_groups_layer_decay``)."""
        return {"stem": r"^embeddings|^emb_ln", "blocks": r"^layers\.(\d+)" if coarse else [(r"^layers\.(\d+)", None)]}

    def _position_ids(self, mask: torch.Tensor) -> torch.Tensor:
        """RoPE: 0-based index among real tokens. Absolute: XLM-R's ids, offset past the pad id."""
        count = mask.cumsum(dim=1)
        if self.config.position_embedding == "absolute":
            return count * mask + self.config.pad_token_id
        return (count - 1).clamp(min=0)

    def _run_layers(
        self, x: torch.Tensor, position_ids: torch.Tensor, length: int, mask=None, packing=None
    ) -> torch.Tensor:
        x = self.emb_drop(self.emb_ln(x))
        rope = None
        if self.config.position_embedding == "rotary":
            # RoPE has no length limit: a sequence longer than the configured table gets a longer one
            # (its length is known from the shape, so no device sync).
            table = text_rotary_table(max(self.config.max_position_embeddings, length), self.config.head_dim,
                                      self.config.rotary_base, x.device)
            rope = table[position_ids][..., None, None, :, :]  # broadcast over q/k and heads
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, rope, mask, packing, use_reentrant=False)
            else:
                x = layer(x, rope, mask, packing)
        return x

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, packed: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer states ``[B, L, hidden_size]`` (zero at padding) and the boolean mask ``[B, L]``.

        ``packed`` runs the real tokens only (:class:`Packing`); by default it does so whenever the
        batch has padding, and a batch without padding runs as it is.
        """
        mask = (input_ids != self.config.pad_token_id) if attention_mask is None else attention_mask.bool()
        position_ids = self._position_ids(mask.long())
        all_real = bool(mask.all())
        if packed is None:
            packed = not all_real
        if packed:
            device = input_ids.device
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.emb_ln.weight.dtype
            packing = Packing.of(mask, varlen=supports_varlen(self.attention_backend, device, dtype))
            x = self.embeddings(packing.pack(input_ids), packing.pack(position_ids))
            x = self._run_layers(x, packing.pack(position_ids), mask.shape[1], packing=packing)
            return packing.unpack(x), mask
        x = self.embeddings(input_ids, position_ids)
        if all_real:  # no mask to apply, in attention or after it
            return self._run_layers(x, position_ids, mask.shape[1]), mask
        x = self._run_layers(x, position_ids, mask.shape[1], mask=mask)
        return x * mask.unsqueeze(-1).to(x.dtype), mask

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, packed: bool | None = None
    ) -> torch.Tensor:
        """Mean-pooled embeddings over the real tokens (``packed`` as in :meth:`token_states`)."""
        states, mask = self.token_states(input_ids, attention_mask, packed)
        return states.sum(dim=1) / mask.sum(dim=1).clamp(min=1).unsqueeze(-1).to(states.dtype)
