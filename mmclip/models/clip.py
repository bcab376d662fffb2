"""The dual encoder: EVA02 vision tower, Jina-XLM-RoBERTa text tower, Matryoshka embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import CLIPConfig
from .eva import EvaVisionTower
from .xlm_roberta import XLMRobertaTextTower


@dataclass
class CLIPOutput:
    image_embeds: torch.Tensor | None
    text_embeds: torch.Tensor | None
    logit_scale_image_text: torch.Tensor
    logit_scale_text_text: torch.Tensor


class MMCLIP(nn.Module):
    """``encode_image`` / ``encode_text`` return pooled ``[B, embed_dim]`` embeddings.

    One learnable log-temperature per task (image-text, text-text): the jina-clip-v2 paper
    (section 5.2) found a shared one stalls. ``truncate_dim`` accepts only the configured
    Matryoshka dimensions, so a typo cannot silently produce an untrained prefix.
    """

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.vision = EvaVisionTower(config.vision, config.attention_backend)
        self.text = XLMRobertaTextTower(config.text, config.attention_backend)
        self.vision_proj: nn.Module = nn.Identity()
        self.text_proj: nn.Module = nn.Identity()
        if config.projections:
            self.vision_proj = nn.Linear(config.vision.width, config.embed_dim, bias=config.vision_proj_bias)
            self.text_proj = nn.Linear(config.text.hidden_size, config.embed_dim, bias=config.text_proj_bias)
            for proj in (self.vision_proj, self.text_proj):
                nn.init.normal_(proj.weight, std=proj.in_features**-0.5)
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)
        self.logit_scale_image_text = nn.Parameter(torch.tensor(config.init_logit_scale_image_text))
        self.logit_scale_text_text = nn.Parameter(torch.tensor(config.init_logit_scale_text_text))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vision.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    @torch.no_grad()
    def clamp_logit_scales(self, max_logit_scale: float = 4.6052) -> None:
        """Keep each temperature in [1/100, 1] after an optimizer step, as open_clip does (ln 100)."""
        self.logit_scale_image_text.clamp_(0, max_logit_scale)
        self.logit_scale_text_text.clamp_(0, max_logit_scale)

    def truncate(self, embeds: torch.Tensor, dim: int | None = None, normalize: bool = False) -> torch.Tensor:
        """The first ``dim`` Matryoshka dimensions (all when None), L2-normalised after truncation if asked."""
        if dim is not None:
            if dim not in self.config.matryoshka_dims:
                raise ValueError(f"truncate_dim must be one of matryoshka_dims {self.config.matryoshka_dims}, got {dim}")
            embeds = embeds[..., :dim]
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def encode_image(
        self, pixel_values: torch.Tensor, truncate_dim: int | None = None, normalize: bool = False
    ) -> torch.Tensor:
        return self.truncate(self.vision_proj(self.vision(pixel_values)), truncate_dim, normalize)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        truncate_dim: int | None = None,
        normalize: bool = False,
    ) -> torch.Tensor:
        return self.truncate(self.text_proj(self.text(input_ids, attention_mask)), truncate_dim, normalize)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> CLIPOutput:
        """Full-width embeddings of whichever inputs are given (either may be None)."""
        return CLIPOutput(
            image_embeds=None if pixel_values is None else self.encode_image(pixel_values),
            text_embeds=None if input_ids is None else self.encode_text(input_ids, attention_mask),
            logit_scale_image_text=self.logit_scale_image_text,
            logit_scale_text_text=self.logit_scale_text_text,
        )
