"""Triton ``maxmin_select``: greedy max-min selection with one launch per step, O(N + N D) memory.

Design. Rows are L2-normalised in torch (``common.unit``, as in the reference). The first pick is the
valid token whose best match among the other valid tokens is lowest: the streamed Triton
``similarity_topk`` with ``k = 1`` and ``exclude_self`` gives each token's best match without an N x N
matrix, and a masked ``argmin`` over that ``[B, N]`` vector (first minimum, so the lower index on
ties) picks the token.

The lowest best match is always shared by a mutual pair of nearest neighbours, so before the
``argmin`` the two values of each mutual pair are made equal (``first_pick_triton``): otherwise an ulp
of asymmetry in the tiled dot products, not the lower index, would decide the first pick.

The greedy loop keeps, per sample, a running vector ``closest [B, N]`` in global memory: a token's
highest similarity to the chosen set, with ``+inf`` marking tokens that may not be picked (masked out
or already chosen; ``max(+inf, s) = +inf``, so the mark survives every update). Step ``t`` is one
launch of ``_maxmin_step_kernel`` on a ``(cdiv(N, BLOCK_N), B)`` grid, so all SMs share the O(N D)
work of a step even for ``B = 1``:

1. every program reduces the block-partial argmins written by step ``t - 1`` (``cdiv(N, BLOCK_N)``
   ``(value, index)`` pairs) to the step's pick: the minimum value, then the lowest index
   among the partials holding it. Each block's partial already holds the lowest index of its block
   minimum and blocks cover increasing index ranges, so this is the global first minimum, exactly
   ``argmin`` of the reference. Every program does this small reduction redundantly, which replaces
   a separate reduction launch;
2. program 0 writes the pick (``-1`` once ``t >= counts[b]``);
3. each program streams its ``BLOCK_N`` rows against the picked row in ``BLOCK_D`` chunks, updates
   ``closest`` for its block (setting the pick itself to ``+inf``) and writes its block's partial
   argmin into the other half of a double buffer, so no program of the launch overwrites partials
   another program of the same launch still reads.

Launches on one stream run in order, which is the only synchronisation needed. Samples that have
made all their ``counts[b]`` picks return at once. Step 0 reads partials set up in torch from the
first pick. Cost per step O(N D) reads, O(K N D) in all, as the reference; memory O(N D) for the unit
rows plus O(N) state, never N x N. The price of the design is one kernel launch per step
(microseconds each), in exchange for spreading each step over the whole GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from vtc.kernels.common import selection_start, tile_sizes
from vtc.kernels.maxmin import most_isolated
from vtc.kernels.similarity_triton import BIG, similarity_to_row, similarity_topk_triton


@triton.jit(do_not_specialize=["step"])
def _maxmin_step_kernel(
    u_ptr,
    closest_ptr,
    part_v_ptr,
    part_i_ptr,
    counts_ptr,
    out_ptr,
    n,
    d,
    k_max,
    num_parts,
    step,
    stride_ub,
    stride_un,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NO_INDEX: tl.constexpr,
):
    pid = tl.program_id(0)
    sample = tl.program_id(1).to(tl.int64)
    batch = tl.num_programs(1)
    count = tl.load(counts_ptr + sample)
    if step < count:
        # 1. The step's pick from the partials of the previous step (first minimum).
        src = step % 2
        parts = tl.arange(0, BLOCK_P)
        part_in = parts < num_parts
        part_off = (src * batch + sample) * num_parts + parts
        part_v = tl.load(part_v_ptr + part_off, mask=part_in, other=float("inf"))
        part_i = tl.load(part_i_ptr + part_off, mask=part_in, other=NO_INDEX)
        low = tl.min(part_v, axis=0)
        pick = tl.min(tl.where(part_in & (part_v == low), part_i, NO_INDEX), axis=0)

        # 2. Record it.
        if pid == 0:
            tl.store(out_ptr + sample * k_max + step, pick.to(tl.int64))

        # 3. Update this block's running max-similarity and write its partial argmin for the next step.
        if step + 1 < count:
            offs = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            n_in = offs < n
            sim = similarity_to_row(u_ptr + sample * stride_ub, pick, offs, n_in, d, stride_un, BLOCK_N, BLOCK_D)
            state = closest_ptr + sample * n + offs
            near = tl.load(state, mask=n_in, other=float("inf"))
            near = tl.maximum(near, sim)
            near = tl.where(offs == pick, float("inf"), near)
            tl.store(state, near, mask=n_in)
            block_low = tl.min(near, axis=0)
            block_idx = tl.min(tl.where(n_in & (near == block_low), offs, NO_INDEX), axis=0)
            dst = ((1 - src) * batch + sample) * num_parts + pid
            tl.store(part_v_ptr + dst, block_low)
            tl.store(part_i_ptr + dst, block_idx)


def first_pick_triton(x: Tensor, mask: Tensor) -> Tensor:
    """Per sample, the most isolated valid token (``maxmin.most_isolated`` on the Triton matches)."""
    values, partner = similarity_topk_triton(x, x, 1, mask, mask, True)
    return most_isolated(values[..., 0], partner[..., 0], mask)


def maxmin_select_triton(
    x: Tensor,
    counts: Tensor,
    mask: Tensor,
    *,
    block_n: int | None = None,
    block_d: int | None = None,
) -> Tensor:
    """Same contract as ``maxmin_select_torch``; ``block_*`` override the tile sizes (powers of two)."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    u, k_max, dim = u.contiguous(), out.shape[1], u.shape[2]
    block_n, block_d = tile_sizes(u, block_n, block_d)

    first = first_pick_triton(x, mask)

    num_parts = triton.cdiv(n, block_n)
    closest = torch.full((batch, n), -torch.inf, dtype=u.dtype, device=x.device).masked_fill(~mask, torch.inf)
    part_v = torch.full((2, batch, num_parts), torch.inf, dtype=u.dtype, device=x.device)
    part_i = torch.full((2, batch, num_parts), BIG, dtype=torch.int32, device=x.device)
    part_v[0, :, 0] = 0.0
    part_i[0, :, 0] = first.to(torch.int32)
    counts_dev = counts.to(device=x.device, dtype=torch.int32)
    grid = (num_parts, batch)
    for step in range(k_max):
        _maxmin_step_kernel[grid](
            u,
            closest,
            part_v,
            part_i,
            counts_dev,
            out,
            n,
            dim,
            k_max,
            num_parts,
            step,
            u.stride(0),
            u.stride(1),
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            BLOCK_P=triton.next_power_of_2(num_parts),
            NO_INDEX=BIG,
        )
    return out
