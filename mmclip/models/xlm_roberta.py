"""Jina-XLM-RoBERTa text tower: XLM-R-large with rotary positions and mean pooling.

Post-LayerNorm BERT blocks (fused ``Wqkv``, GELU MLP) over token + token-type embeddings, with
RoPE on queries and keys (``position_embedding="rotary"``, jina-clip-v2) or XLM-R's learned
absolute positions (``"absolute"``, plain ``xlm-roberta-large`` as the LUSIFER encoder uses).
When the attention backend runs packed sequences (flash, xformers, torch varlen on CUDA), the
padding tokens are removed before the embedding and never enter a matmul.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention, supports_varlen, varlen_attention
from .configuration import TextConfig
from .rope import apply_rotary, text_rotary


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

    def forward(self, x: torch.Tensor, rope, key_padding_mask=None, cu_seqlens=None, max_seqlen=None) -> torch.Tensor:
        q, k, v = self.Wqkv(x).unflatten(-1, (3, self.config.num_heads, -1)).unbind(-3)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        dropout_p = self.config.attention_dropout if self.training else 0.0
        if cu_seqlens is not None:
            out = varlen_attention(
                q, k, v, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, backend=self.backend, dropout_p=dropout_p
            )
        else:
            out = attention(q, k, v, backend=self.backend, key_padding_mask=key_padding_mask, dropout_p=dropout_p)
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

    def forward(self, x: torch.Tensor, rope, key_padding_mask=None, cu_seqlens=None, max_seqlen=None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.mixer(x, rope, key_padding_mask, cu_seqlens, max_seqlen)))
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

    def _run_layers(self, x: torch.Tensor, position_ids: torch.Tensor, **attention_args) -> torch.Tensor:
        x = self.emb_drop(self.emb_ln(x))
        rope = None
        if self.config.position_embedding == "rotary":
            cos, sin = text_rotary(position_ids, self.config.head_dim, self.config.rotary_base)
            rope = (cos.unsqueeze(-2), sin.unsqueeze(-2))  # broadcast over heads
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, rope, use_reentrant=False, **attention_args)
            else:
                x = layer(x, rope, **attention_args)
        return x

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, packed: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer states ``[B, L, hidden_size]`` (zero at padding) and the boolean mask ``[B, L]``.

        ``packed`` runs without padding tokens; by default it does so when the attention backend
        handles packed sequences natively.
        """
        mask = (input_ids != self.config.pad_token_id) if attention_mask is None else attention_mask.bool()
        position_ids = self._position_ids(mask.long())
        lengths = mask.sum(dim=1)
        if packed is None:
            device = input_ids.device
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.emb_ln.weight.dtype
            packed = supports_varlen(self.attention_backend, device, dtype)
        if packed:
            # Packed path: only real tokens are embedded and transformed, then put back in place.
            token_index = mask.flatten().nonzero().squeeze(1)
            cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
            x = self.embeddings(input_ids.flatten()[token_index], position_ids.flatten()[token_index])
            x = self._run_layers(
                x,
                position_ids.flatten()[token_index],
                cu_seqlens=cu_seqlens,
                max_seqlen=int(lengths.max()),
            )
            states = x.new_zeros(mask.numel(), x.shape[-1]).index_copy(0, token_index, x)
            return states.view(*mask.shape, -1), mask
        x = self.embeddings(input_ids, position_ids)
        x = self._run_layers(x, position_ids, key_padding_mask=mask)
        return x * mask.unsqueeze(-1).to(x.dtype), mask

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, packed: bool | None = None
    ) -> torch.Tensor:
        """Mean-pooled embeddings over the real tokens (``packed`` as in :meth:`token_states`)."""
        states, mask = self.token_states(input_ids, attention_mask, packed)
        return states.sum(dim=1) / mask.sum(dim=1).clamp(min=1).unsqueeze(-1).to(states.dtype)
