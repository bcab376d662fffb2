"""EVA02 vision tower (Fang et al., "EVA-02"), as used by jina-clip-v2.

Pre-norm ViT blocks with sub-LayerNorm attention (q/v biases, no k bias, a LayerNorm before the
output projection), a SwiGLU MLP with its own LayerNorm, a learned absolute position embedding
plus 2D RoPE on the patch tokens, and the CLS token after the final LayerNorm as the embedding.
The q/k/v and SwiGLU gate/up projections are fused into one matmul each; ``mmclip.weights``
maps the split layouts of timm, EVA-CLIP and jina-clip-v2 onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention
from .configuration import VisionConfig
from .rope import apply_rotary, vision_rotary


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Bicubic resampling of a ``[1, 1 + G*G, D]`` position table to ``new_grid``; CLS row kept.

    Antialiased, in float32, as timm's ``resample_abs_pos_embed`` and open_clip's ``resize_pos_embed``
    do, so a checkpoint loaded at another resolution gets the table those libraries would give it.
    """
    old_grid = math.isqrt(pos_embed.shape[1] - 1)
    if old_grid == new_grid:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    patch_pos = patch_pos.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    patch_pos = F.interpolate(patch_pos, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=True)
    patch_pos = patch_pos.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat((cls_pos, patch_pos), dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided conv; pixels past the last full patch are ignored."""

    def __init__(self, image_size: int, patch_size: int, width: int):
        super().__init__()
        self.image_size = image_size
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {tuple(pixel_values.shape[-2:])}; "
                "resize the tower with set_image_size() or the images with the stage's transform"
            )
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class EvaAttention(nn.Module):
    def __init__(self, config: VisionConfig, backend: str):
        super().__init__()
        self.num_heads = config.num_heads
        self.backend = backend
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(config.width))
        self.v_bias = nn.Parameter(torch.zeros(config.width))
        self.inner_attn_ln = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """Every token's output, or with ``cls_only`` the CLS token's alone (its query attends to all)."""
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        # The module is called (not its weight read), so a LoRA wrapper on qkv takes part.
        qkv = (self.qkv(x) + bias).unflatten(-1, (3, self.num_heads, -1))
        # q and k rotate together in one op; ``rope`` [B or 1, N, D/2, 2] has a no-op row for the CLS token.
        q, k = apply_rotary(qkv[:, :, :2], rope[:, :, None, None], interleaved=True).unbind(2)
        if cls_only:
            q = q[:, :1]
        x = attention(q, k, qkv[:, :, 2], backend=self.backend).flatten(-2)
        return self.proj(self.inner_attn_ln(x))


class SwiGLU(nn.Module):
    """``w3(LN(silu(w1 x) * w2 x))`` with w1 and w2 fused into ``w12``."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.w12 = nn.Linear(config.width, 2 * config.mlp_hidden_dim)
        self.ffn_ln = nn.LayerNorm(config.mlp_hidden_dim, eps=config.layer_norm_eps)
        self.w3 = nn.Linear(config.mlp_hidden_dim, config.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.ffn_ln(F.silu(gate) * up))


class EvaBlock(nn.Module):
    def __init__(self, config: VisionConfig, backend: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = EvaAttention(config, backend)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        attended = self.attn(self.norm1(x), rope, cls_only)
        x = (x[:, :1] if cls_only else x) + attended
        return x + self.mlp(self.norm2(x))


class EvaVisionTower(nn.Module):
    """Images ``[B, 3, S, S]`` to CLS embeddings ``[B, width]``."""

    def __init__(self, config: VisionConfig, attention_backend: str = "auto"):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.image_size, config.patch_size, config.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid_size**2, config.width))
        self.blocks = nn.ModuleList(EvaBlock(config, attention_backend) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.grad_checkpointing = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """EVA's init: truncated normal 0.02, output projections scaled by 1/sqrt(2 * layer)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for layer_id, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.mlp.w3.weight.div_(math.sqrt(2.0 * layer_id))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for layer-wise LR decay, in timm's convention (``param_groups_layer_decay``)."""
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    @torch.no_grad()
    def set_image_size(self, image_size: int) -> None:
        """Move the tower to a new resolution (224 -> 384 -> 512).

        The absolute position embedding of the patch grid is resampled bicubically (CLS kept);
        RoPE needs nothing: its tables are cached per grid (:func:`mmclip.models.rope.vision_rotary`).
        """
        self.config.image_size = image_size
        self.config.__post_init__()
        self.patch_embed.image_size = image_size
        self.pos_embed = nn.Parameter(resample_pos_embed(self.pos_embed, self.config.grid_size))

    def sample_patches(self, batch: int, num_patches: int, device: torch.device) -> torch.Tensor:
        """FLIP patch dropout: a random subset of ``max(1, N * (1 - p))`` patches per image."""
        num_keep = max(1, int(num_patches * (1.0 - self.config.patch_dropout)))
        return torch.rand(batch, num_patches, device=device).topk(num_keep, dim=1).indices

    def forward_features(self, pixel_values: torch.Tensor, keep_indices: torch.Tensor | None = None,
                         cls_only: bool = False) -> torch.Tensor:
        """All tokens after the final LayerNorm, ``[B, 1 + kept patches, width]``.

        ``keep_indices`` ``[B, K]`` selects patches explicitly; otherwise patch dropout draws
        them in training. Kept patches take their RoPE rows along, so positions stay aligned.
        ``cls_only``: the CLS token alone, ``[B, 1, width]``. The last block then computes its
        output for that token only (its query still attends to every token): the other tokens'
        last outputs never reach the embedding, and they are most of that block's work.
        """
        config = self.config
        x = self.patch_embed(pixel_values)
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        rope = vision_rotary(config.grid_size, config.head_dim, config.rope_reference_grid, config.rope_theta,
                             x.device, prefix_tokens=1)
        if keep_indices is None and self.training and config.patch_dropout > 0:
            keep_indices = self.sample_patches(x.shape[0], x.shape[1], x.device)
        if keep_indices is None:
            rope = rope[None]
        else:
            x = x.gather(1, keep_indices[..., None].expand(-1, -1, x.shape[-1]))
            rope = rope[F.pad(keep_indices + 1, (1, 0))]  # row 0: the CLS token's
        x = torch.cat((cls, x), dim=1)
        for index, block in enumerate(self.blocks):
            last_cls_only = cls_only and index == len(self.blocks) - 1
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, last_cls_only, use_reentrant=False)
            else:
                x = block(x, rope, last_cls_only)
        return self.norm(x)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values, cls_only=True)[:, 0]
