"""Rotary position embeddings: 1D for the text tower, 2D with frequency interpolation for vision.

Both return ``(cos, sin)`` tables computed in fp32 from positions on the fly; there are no buffers,
so the tables never lose precision when a model is cast to bf16 and never go stale after a resize.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """GPT-NeoX pairing: dimension i rotates with i + d/2 (Jina XLM-RoBERTa)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """GPT-J pairing: dimension 2i rotates with 2i + 1 (EVA02)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """Rotate ``x`` by the angles whose cos/sin are given (broadcast over ``x``), in fp32."""
    rotate = rotate_interleaved if interleaved else rotate_half
    x32 = x.float()
    return (x32 * cos + rotate(x32) * sin).to(x.dtype)


def inverse_frequencies(dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """``base ** (-2i / dim)`` for i in [0, dim / 2)."""
    return 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def text_rotary(position_ids: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape ``position_ids.shape + (head_dim,)``, non-interleaved layout."""
    angles = position_ids.float()[..., None] * inverse_frequencies(head_dim, base, position_ids.device)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def vision_rotary(
    grid_size: int,
    head_dim: int,
    reference_grid: int,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[grid_size**2, head_dim]`` for patches in row-major order (EVA02 2D RoPE).

    Half the head dims rotate with the patch row, half with the column, each frequency on an
    interleaved pair. Positions are rescaled onto the pretraining grid (``reference_grid``, 16 for
    EVA02-L/14 at 224 px), so a 36x36 grid at 512 px spans the same angles as 16x16 did.
    """
    axis_dim = head_dim // 2
    positions = torch.arange(grid_size, device=device, dtype=torch.float32) / grid_size * reference_grid
    angles = torch.outer(positions, inverse_frequencies(axis_dim, theta, device)).repeat_interleave(2, dim=-1)
    rows = angles[:, None, :].expand(grid_size, grid_size, axis_dim)
    cols = angles[None, :, :].expand(grid_size, grid_size, axis_dim)
    angles = torch.cat((rows, cols), dim=-1).flatten(0, 1)
    return angles.cos(), angles.sin()
