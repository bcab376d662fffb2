"""LUSIFER (Man et al., 2025): the multilingual text tower feeding a Mistral LLM for text embeddings.

::

    text -> XLM-R tower (token states) -> connector: Linear -> ReLU -> Linear (encoder -> LLM width)
         -> [states of the real tokens, one trainable token, padding] -> Mistral -> mean pooling

* The trainable token sits right after each row's last real token (at index = its length), and
  every row's content starts at position 0, so neither the token's RoPE position nor any state
  depends on how much padding the batch has (the reference code appends it after the padding).
* Embedding mode is bidirectional, language-model mode causal. Both pass the LLM an explicit 4-D
  additive mask: transformers (>= 4.53) builds masks in ``masking_utils`` and ignores the
  ``_update_causal_mask`` overrides that LLM2Vec-style code relies on, and SDPA falls back to
  ``module.is_causal`` whenever the mask is None; a 4-D mask is used as given by every backend,
  and ``is_causal`` is set on every attention module as well.
* Language-model losses compute vocabulary logits only at labelled positions (the reference code
  materialises fp32 logits of the whole sequence, even for embeddings).
* Embeddings: the mean of the last LLM states over the real positions and the trainable token.

This module imports torch and transformers only: exported checkpoints ship it as remote code
(with any LoRA merged into plain weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MistralConfig, MistralModel
from transformers.utils import ModelOutput

from .configuration import LusiferConfig
from .xlm_roberta import XLMRobertaTextTower


@dataclass
class LusiferOutput(ModelOutput):
    """A ``ModelOutput`` (a dict underneath), so ZeRO-3's hooks find the tensors in it."""

    text_embeds: torch.Tensor | None = None  # [B, llm width], unnormalised (embedding mode)
    loss: torch.Tensor | None = None  # next-token cross-entropy over the labelled targets (LM mode)


def mistral_config(config: LusiferConfig) -> MistralConfig:
    llm = MistralConfig(**config.llm)
    llm._attn_implementation = config.attn_implementation
    return llm


class Connector(nn.Module):
    """Encoder states to LLM input embeddings (hidden width = the encoder's), plus the trainable token."""

    def __init__(self, encoder_width: int, llm_width: int, token_std: float):
        super().__init__()
        self.fc1 = nn.Linear(encoder_width, encoder_width)
        self.fc2 = nn.Linear(encoder_width, llm_width)
        # In the LLM's input-embedding scale (the reference draws it with std 1, far above Mistral's).
        self.token = nn.Parameter(torch.randn(llm_width) * token_std)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, De]`` right-padded states -> ``[B, L + 1, Dl]`` with the token at each row's length,
        and the mask of the real positions (the token included)."""
        x = self.fc2(F.relu(self.fc1(states)))
        x = F.pad(x, (0, 0, 0, 1))
        lengths = mask.sum(dim=1, keepdim=True)
        index = torch.arange(x.shape[1], device=x.device)[None]
        is_token = index == lengths
        x = torch.where(is_token[..., None], self.token.to(x.dtype), x)
        return x, index <= lengths


def additive_mask(mask: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, L, L]``: 0 where a query may attend a key (a real key, and not a later one if causal), else min."""
    allowed = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
    if causal:
        allowed = allowed & torch.ones(mask.shape[1], mask.shape[1], dtype=torch.bool, device=mask.device).tril()
    zeros = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(allowed, zeros, torch.finfo(dtype).min)


class LusiferModel(nn.Module):
    """``encode_text`` -> normalised ``[B, llm width]``; ``forward`` with ``target_ids`` -> the LM loss.

    ``lm_head=False`` leaves the vocabulary projection out (embedding-only use, e.g. an export).
    """

    def __init__(self, config: LusiferConfig, lm_head: bool = True):
        super().__init__()
        self.config = config
        llm_config = mistral_config(config)
        self.encoder = XLMRobertaTextTower(config.encoder, "auto")  # packed (unpadded) on GPU
        self.connector = Connector(config.encoder.hidden_size, llm_config.hidden_size, llm_config.initializer_range)
        self.llm = MistralModel(llm_config)
        self.lm_head = nn.Linear(llm_config.hidden_size, llm_config.vocab_size, bias=False) if lm_head else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)
        if enable:
            self.llm.gradient_checkpointing_enable({"use_reentrant": False})
        else:
            self.llm.gradient_checkpointing_disable()

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LLM's inputs for a batch of texts: connector states + token ``[B, L + 1, D]``, and their mask."""
        states, mask = self.encoder.token_states(input_ids, attention_mask)
        return self.connector(states, mask)

    def run_llm(self, inputs_embeds: torch.Tensor, mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """Last hidden states of rows whose real positions are a prefix (``mask`` ``[B, L]``)."""
        for layer in self.llm.layers:
            layer.self_attn.is_causal = causal
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        return self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=additive_mask(mask, causal, inputs_embeds.dtype),
            position_ids=positions.expand(inputs_embeds.shape[0], -1),
            use_cache=False,
        ).last_hidden_state

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised embeddings ``[B, D]``: bidirectional LLM, mean over real positions and the token."""
        if attention_mask is None:
            attention_mask = input_ids != self.config.encoder.pad_token_id
        x, mask = self.prefix(input_ids, attention_mask)
        hidden = self.run_llm(x, mask, causal=False)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        embeds = self.embed(input_ids, attention_mask)
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def lm_loss(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor
    ) -> torch.Tensor:
        """Causal next-token loss of the targets (LLM tokens, right-padded) after each text's prefix.

        Each row is ``[prefix][target][padding]``: the target starts right after the row's own
        prefix, so rows are contiguous from position 0 as in embedding mode. Labels cover the
        target tokens only (the prefix is -100 in the usual terms).
        """
        if self.lm_head is None:
            raise RuntimeError("this LusiferModel was built without lm_head (embedding only)")
        x, mask = self.prefix(input_ids, attention_mask)
        targets = self.llm.embed_tokens(target_ids)
        batch, width = x.shape[0], x.shape[-1]
        prefix_lengths = mask.sum(dim=1)
        offsets = torch.arange(target_ids.shape[1], device=x.device)
        sequence = torch.cat([x * mask.unsqueeze(-1).to(x.dtype), targets.new_zeros(targets.shape)], dim=1)
        index = (prefix_lengths[:, None] + offsets[None]).unsqueeze(-1).expand(-1, -1, width)
        sequence = sequence.scatter(1, index, targets.to(sequence.dtype))
        lengths = prefix_lengths + target_mask.sum(dim=1)
        full_mask = torch.arange(sequence.shape[1], device=x.device)[None] < lengths[:, None]
        hidden = self.run_llm(sequence, full_mask, causal=True)
        # Target token k is predicted from the position before it: prefix_length + k - 1.
        rows, columns = target_mask.bool().nonzero(as_tuple=True)
        logits = self.lm_head(hidden[rows, prefix_lengths[rows] + columns - 1])
        return F.cross_entropy(logits.float(), target_ids[rows, columns])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
    ) -> LusiferOutput:
        """Embeddings of the texts, or (with ``target_ids``) the LM loss of the targets given the texts.

        One entry point, so that engines which gather parameters around ``forward`` see both modes.
        """
        if target_ids is None:
            return LusiferOutput(text_embeds=self.embed(input_ids, attention_mask))
        if attention_mask is None:
            attention_mask = input_ids != self.config.encoder.pad_token_id
        if target_mask is None:
            target_mask = torch.ones_like(target_ids)
        return LusiferOutput(loss=self.lm_loss(input_ids, attention_mask, target_ids, target_mask))
