"""Triton ``similarity_topk``: streamed cosine top-``k`` with a running best list per row, no Na x Nb matrix.

Design. Rows are L2-normalised in torch first (``common.unit``, O(N D), bit-identical to the torch
reference), so a cosine is a plain dot product. The grid is ``(cdiv(Na, BLOCK_M), B)``: each program
owns a ``BLOCK_M`` tile of rows of ``a`` of one sample and streams the rows of ``b`` in ``BLOCK_N`` tiles.
Each ``[BLOCK_M, BLOCK_N]`` similarity tile is built with ``tl.dot`` over ``BLOCK_D`` chunks of the
feature dimension (``input_precision="ieee"``, so float32 stays float32, no TF32), then invalid columns
(past ``Nb``, masked out in ``mask_b``, or ``j == i`` with ``exclude_self``) are removed and the tile is
merged into a running list of the ``k`` best ``(value, index)`` pairs per row, held in registers as a
``[BLOCK_M, KP]`` block (``KP`` = ``k`` rounded up to a power of two).

The merge is exact and needs no sort: the order is "value descending, then index ascending", and slot
``s`` of the new list is the best entry of (running list U tile) that comes strictly after slot ``s-1``
in that order. Each slot is two masked max/min reductions (one over the tile, one over the running
list) and a comparison, so a tile costs ``O(k (BLOCK_N + KP))`` per row on top of its ``O(BLOCK_N D)``
dot. Ties between equal values therefore go to the lower index, as in the torch reference. Memory is
``O(B Na k)`` for the outputs; similarities live only in registers, one tile at a time.

Slots with no candidate keep ``(-inf, -1)``; rows masked out in ``mask_a`` are written as ``(-inf, -1)``.
Float64 inputs stay float64 (``tl.dot`` on float64); everything else computes in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from vtc.kernels.common import unit

BIG = 2**31 - 1  # "no index" while merging; larger than any real index


@triton.jit
def similarity_to_row(u_base, row, offs, n_in, d, stride_un, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Cosines ``[BLOCK_N]`` of the unit rows at ``offs`` (valid where ``n_in``) with unit row ``row``, both rows
    of the sample starting at ``u_base``; ``d`` features, streamed ``BLOCK_D`` at a time."""
    row_ptr = u_base + row.to(tl.int64) * stride_un
    sim = tl.zeros([BLOCK_N], u_base.dtype.element_ty)
    for start_d in range(0, d, BLOCK_D):
        dd = start_d + tl.arange(0, BLOCK_D)
        d_in = dd < d
        p = tl.load(row_ptr + dd, mask=d_in, other=0.0)
        rows = tl.load(
            u_base + offs[:, None].to(tl.int64) * stride_un + dd[None, :],
            mask=n_in[:, None] & d_in[None, :],
            other=0.0,
        )
        sim += tl.sum(rows * p[None, :], axis=1)
    return sim


@triton.jit
def _similarity_topk_kernel(
    a_ptr,
    b_ptr,
    mask_a_ptr,
    mask_b_ptr,
    val_ptr,
    idx_ptr,
    na,
    nb,
    d,
    stride_ab,
    stride_an,
    stride_bb,
    stride_bn,
    EXCLUDE_SELF: tl.constexpr,
    K: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    NO_INDEX: tl.constexpr,
):
    pid_m = tl.program_id(0)
    sample = tl.program_id(1).to(tl.int64)
    dtype = a_ptr.dtype.element_ty
    a_base = a_ptr + sample * stride_ab
    b_base = b_ptr + sample * stride_bb

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_in = rows < na
    slot = tl.arange(0, KP)
    best_v = tl.full([BLOCK_M, KP], float("-inf"), dtype)
    best_i = tl.full([BLOCK_M, KP], NO_INDEX, tl.int32)

    for start_n in range(0, nb, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        col_in = cols < nb
        sim = tl.zeros([BLOCK_M, BLOCK_N], dtype)
        for start_d in range(0, d, BLOCK_D):
            dd = start_d + tl.arange(0, BLOCK_D)
            d_in = dd < d
            a_tile = tl.load(
                a_base + rows[:, None].to(tl.int64) * stride_an + dd[None, :],
                mask=row_in[:, None] & d_in[None, :],
                other=0.0,
            )
            b_tile = tl.load(
                b_base + cols[None, :].to(tl.int64) * stride_bn + dd[:, None],
                mask=col_in[None, :] & d_in[:, None],
                other=0.0,
            )
            sim = tl.dot(a_tile, b_tile, sim, input_precision="ieee")

        col_ok = col_in & (tl.load(mask_b_ptr + sample * nb + cols, mask=col_in, other=0) != 0)
        valid = col_ok[None, :] & row_in[:, None]
        if EXCLUDE_SELF:
            valid = valid & (rows[:, None] != cols[None, :])

        # Merge: slot s = best of (running list U tile) strictly after slot s - 1 in (value desc, index asc).
        new_v = tl.full([BLOCK_M, KP], float("-inf"), dtype)
        new_i = tl.full([BLOCK_M, KP], NO_INDEX, tl.int32)
        prev_v = tl.full([BLOCK_M], float("inf"), dtype)
        prev_i = tl.full([BLOCK_M], -1, tl.int32)
        for s in tl.static_range(K):
            pv = prev_v[:, None]
            pi = prev_i[:, None]
            t_ok = valid & ((sim < pv) | ((sim == pv) & (cols[None, :] > pi)))
            t_val = tl.where(t_ok, sim, float("-inf"))
            t_max = tl.max(t_val, axis=1)
            t_idx = tl.min(tl.where(t_ok & (t_val == t_max[:, None]), cols[None, :], NO_INDEX), axis=1)
            r_ok = (best_i != NO_INDEX) & ((best_v < pv) | ((best_v == pv) & (best_i > pi)))
            r_val = tl.where(r_ok, best_v, float("-inf"))
            r_max = tl.max(r_val, axis=1)
            r_idx = tl.min(tl.where(r_ok & (r_val == r_max[:, None]), best_i, NO_INDEX), axis=1)
            take_r = (r_max > t_max) | ((r_max == t_max) & (r_idx < t_idx))
            prev_v = tl.where(take_r, r_max, t_max)
            prev_i = tl.where(take_r, r_idx, t_idx)
            here = slot[None, :] == s
            new_v = tl.where(here, prev_v[:, None], new_v)
            new_i = tl.where(here, prev_i[:, None], new_i)
        best_v = new_v
        best_i = new_i

    row_ok = row_in & (tl.load(mask_a_ptr + sample * na + rows, mask=row_in, other=0) != 0)
    empty = (best_i == NO_INDEX) | (~row_ok[:, None])
    out_v = tl.where(empty, float("-inf"), best_v)
    out_i = tl.where(empty, -1, best_i).to(tl.int64)
    offs = (sample * na + rows[:, None].to(tl.int64)) * K + slot[None, :]
    store = row_in[:, None] & (slot[None, :] < K)
    tl.store(val_ptr + offs, out_v, mask=store)
    tl.store(idx_ptr + offs, out_i, mask=store)


def _mask_bytes(mask: Tensor) -> Tensor:
    return mask.to(torch.bool).contiguous().view(torch.uint8)


def similarity_topk_triton(
    a: Tensor,
    b: Tensor,
    k: int,
    mask_a: Tensor,
    mask_b: Tensor,
    exclude_self: bool,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Same contract as ``similarity_topk_torch``; ``block_*`` override the tile sizes (powers of two)."""
    ua, ub = unit(a).contiguous(), unit(b).contiguous()
    batch, na, dim = ua.shape
    nb = ub.shape[1]
    values = torch.full((batch, na, k), -torch.inf, dtype=ua.dtype, device=a.device)
    indices = torch.full((batch, na, k), -1, dtype=torch.long, device=a.device)
    if batch == 0 or na == 0:
        return values, indices
    small = not ua.is_cuda  # the interpreter: fewer, smaller tiles are faster and still cross tile edges
    block_m = block_m or (16 if small else 64)
    block_n = block_n or (16 if small else 64)
    block_d = block_d or (16 if small else (16 if ua.dtype == torch.float64 else 32))
    grid = (triton.cdiv(na, block_m), batch)
    _similarity_topk_kernel[grid](
        ua,
        ub,
        _mask_bytes(mask_a),
        _mask_bytes(mask_b),
        values,
        indices,
        na,
        nb,
        dim,
        ua.stride(0),
        ua.stride(1),
        ub.stride(0),
        ub.stride(1),
        EXCLUDE_SELF=bool(exclude_self),
        K=k,
        KP=triton.next_power_of_2(k),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        NO_INDEX=BIG,
    )
    return values, indices
