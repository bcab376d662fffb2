"""The one attention entry point for both towers.

Every attention call in mmclip goes through :func:`attention` (a padded batch, optionally with a
key-padding mask) or :func:`varlen_attention` (sequences packed without padding). Backends:

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; packed sequences use torch's
  own ``varlen_attn`` (FlashAttention inside torch) on CUDA in half precision, elsewhere an exact
  block-diagonal mask (so the packed path can be checked on a CPU).
* ``xformers``: ``xformers.ops.memory_efficient_attention``; packed sequences as a block-diagonal mask.
* ``flash``: the ``flash_attn`` package (``flash_attn_func`` / ``flash_attn_varlen_func``).
* ``auto``: the fastest of the above that runs on the tensors' device.

A requested backend that cannot run (library missing, CPU tensors) is reported once in the log and
replaced by ``sdpa``, which is a fused kernel on every device, never by a naive softmax.
Tensors are laid out ``[batch, seq, heads, head_dim]`` (packed: ``[tokens, heads, head_dim]``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
import torch.nn.functional as F

from .configuration import ATTENTION_BACKENDS as BACKENDS  # the one list, checked by the config too

logger = logging.getLogger(__name__)

_HALF = (torch.float16, torch.bfloat16)


@functools.cache
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@functools.cache
def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def resolve_backend(requested: str, device: torch.device) -> str:
    """The backend that will run for ``requested`` on ``device`` (logs once when they differ)."""
    if requested not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {requested!r}")
    on_cuda = device.type == "cuda"
    if requested == "auto":
        if on_cuda and _has_module("flash_attn"):
            return "flash"
        if on_cuda and _has_module("xformers"):
            return "xformers"
        return "sdpa"
    if requested == "sdpa":
        return "sdpa"
    library = "flash_attn" if requested == "flash" else "xformers"
    if not _has_module(library):
        _warn_once(f"attention backend {requested!r} unavailable: {library} is not installed; using 'sdpa'")
        return "sdpa"
    if not on_cuda:
        _warn_once(f"attention backend {requested!r} needs CUDA tensors, got {device.type}; using 'sdpa'")
        return "sdpa"
    return requested


def supports_varlen(requested: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether packed (unpadded) sequences run natively, so padding costs no compute."""
    backend = resolve_backend(requested, device)
    if backend in ("flash", "xformers"):
        return True
    return device.type == "cuda" and dtype in _HALF and _torch_varlen() is not None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "auto",
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Bidirectional attention over ``[B, N, H, D]``; ``key_padding_mask`` is ``[B, N]``, True = attend."""
    backend = resolve_backend(backend, q.device)
    if backend == "flash" and key_padding_mask is None:
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v, dropout_p=dropout_p)
    if backend == "xformers":
        import xformers.ops as xops

        bias = None
        if key_padding_mask is not None:
            bias = _additive_mask(key_padding_mask, q).expand(-1, q.shape[2], q.shape[1], -1)
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout_p)
    mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=dropout_p
    )
    return out.transpose(1, 2)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    backend: str = "auto",
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Bidirectional attention within each packed sequence of ``[T, H, D]`` (``cu_seqlens`` int32)."""
    backend = resolve_backend(backend, q.device)
    if backend == "flash":
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func(
            q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p=dropout_p
        )
    if backend == "xformers":
        import xformers.ops as xops
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask

        bias = BlockDiagonalMask.from_seqlens(cu_seqlens.diff().tolist())
        return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias, p=dropout_p)[0]
    varlen_attn = _torch_varlen()
    if varlen_attn is not None and q.device.type == "cuda" and q.dtype in _HALF:
        if dropout_p:
            _warn_once("torch varlen_attn has no attention dropout; it is skipped for packed sequences")
        return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)
    # Exact but quadratic in the packed length: a block-diagonal mask (CPU, fp32).
    sequence_id = torch.repeat_interleave(torch.arange(len(cu_seqlens) - 1, device=q.device), cu_seqlens.diff())
    block_diagonal = sequence_id[:, None] == sequence_id[None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=block_diagonal, dropout_p=dropout_p
    )
    return out.transpose(0, 1)


def _additive_mask(key_padding_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, N]`` additive bias (0 or -inf) in ``like``'s dtype, padded for xformers' alignment."""
    n = key_padding_mask.shape[1]
    padded = (n + 7) // 8 * 8  # xformers wants the last dim's storage 8-aligned
    bias = like.new_zeros(key_padding_mask.shape[0], 1, 1, padded)[..., :n]
    return bias.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
