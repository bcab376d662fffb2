"""Rotary position embeddings: 1D for the text tower, 2D with frequency interpolation for vision.

A rotation by angle ``t`` of a pair of dimensions ``(a, b)`` is the complex product
``(a + ib) * e^(it)``. A table holds ``(cos t, sin t)`` per pair, ``[..., head_dim / 2, 2]`` in fp32,
which is ``e^(it)`` viewed as complex64: in eager mode the rotation of queries and keys together
is one elementwise complex multiply (no ``cat`` or ``stack``, one read and one write of q and k);
under ``torch.compile``, whose inductor generates no code for complex ops, and in ONNX export, the
same product in real arithmetic, which inductor fuses into one kernel.

Tables are built once per shape and device and cached outside the modules (:func:`vision_rotary`,
:func:`text_rotary_table`). They are not buffers, so casting a model to bf16 leaves them in fp32, and
a tower resized to a new grid gets that grid's table on its next forward.
"""

from __future__ import annotations

import functools

import torch


def inverse_frequencies(dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """``base ** (-2i / dim)`` for i in [0, dim / 2)."""
    return 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)


def _cos_sin(angles: torch.Tensor) -> torch.Tensor:
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def _cached(build):
    """``build`` memoised in eager mode; traced afresh under torch.compile, which folds it into the graph."""
    @functools.lru_cache(maxsize=16)
    def memo(*args, **kwargs):
        # A table first built under inference_mode would be an inference tensor, which a later
        # training step could not save for backward: cached tables are always normal tensors.
        with torch.inference_mode(False):
            return build(*args, **kwargs)

    @functools.wraps(build)
    def table(*args, **kwargs):
        return build(*args, **kwargs) if torch.compiler.is_compiling() else memo(*args, **kwargs)

    return table


def text_rotary(position_ids: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """Rotation table ``position_ids.shape + (head_dim / 2, 2)``: pair i is dims (i, i + d/2)."""
    return _cos_sin(position_ids.float()[..., None] * inverse_frequencies(head_dim, base, position_ids.device))


@_cached
def text_rotary_table(length: int, head_dim: int, base: float, device: torch.device) -> torch.Tensor:
    """:func:`text_rotary` of positions ``0 .. length - 1``, cached: the text tower indexes it by position."""
    return text_rotary(torch.arange(length, device=device), head_dim, base)


@_cached
def vision_rotary(
    grid_size: int,
    head_dim: int,
    reference_grid: int,
    theta: float = 10000.0,
    device: torch.device | None = None,
    prefix_tokens: int = 0,
) -> torch.Tensor:
    """Rotation table ``[prefix_tokens + grid_size**2, head_dim / 2, 2]`` (EVA02 2D RoPE), cached.

    Patches are in row-major order after ``prefix_tokens`` rows of 1 (no rotation: EVA's CLS token
    carries no position). Pair i is dims (2i, 2i + 1). The first half of the pairs rotates with the
    patch row, the second with the column. Positions are rescaled onto the pretraining grid
    (``reference_grid``, 16 for EVA02-L/14 at 224 px), so a 36x36 grid at 512 px spans the same
    angles as 16x16 did.
    """
    positions = torch.arange(grid_size, device=device, dtype=torch.float32) / grid_size * reference_grid
    angles = torch.outer(positions, inverse_frequencies(head_dim // 2, theta, device))
    half = angles.shape[-1]
    rows = angles[:, None, :].expand(grid_size, grid_size, half)
    cols = angles[None, :, :].expand(grid_size, grid_size, half)
    angles = torch.cat((angles.new_zeros(prefix_tokens, 2 * half), torch.cat((rows, cols), dim=-1).flatten(0, 1)))
    return _cos_sin(angles)


def apply_rotary(x: torch.Tensor, table: torch.Tensor, interleaved: bool = False, keep_layout: bool = True) -> torch.Tensor:
    """Rotate the pairs of ``x [..., head_dim]`` by ``table [..., head_dim / 2, 2]`` (broadcast), in fp32.

    ``interleaved``: pairs (2i, 2i + 1) (GPT-J, EVA02); else (i, i + d/2) (GPT-NeoX, Jina XLM-RoBERTa).
    A non-interleaved ``x`` is rotated in the interleaved order; ``keep_layout=False`` returns it in
    that order, which attention may take as it is: a permutation of the head dims applied to both
    queries and keys leaves every score ``q . k`` unchanged, and saves a copy.
    """
    pairs = x.unflatten(-1, (-1, 2)) if interleaved else x.unflatten(-1, (2, -1)).transpose(-1, -2)
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        # Inductor generates no code for complex ops, nor has ONNX a complex type; this real form
        # fuses into one kernel.
        a, b = pairs.float().unbind(-1)
        cos, sin = table.unbind(-1)
        rotated = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1)
    else:
        if pairs.dtype != torch.float32 or pairs.stride(-1) != 1 or pairs.storage_offset() % 2 or any(
            stride % 2 for stride in pairs.stride()[:-1]
        ):
            pairs = pairs.to(torch.float32, memory_format=torch.contiguous_format).contiguous()  # one copy at most
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * torch.view_as_complex(table))
    rotated = rotated.to(x.dtype)
    if interleaved or not keep_layout:
        return rotated.flatten(-2)
    return rotated.transpose(-1, -2).flatten(-2)
