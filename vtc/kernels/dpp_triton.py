"""Triton ``dpp_select``: greedy DPP MAP with incremental Cholesky rows, one launch per step.

Design. Same algorithm and state as the torch reference (Chen, Zhang and Zhou 2018): unit rows ``u``
(``common.unit``, computed in torch), qualities ``q`` (0 at masked tokens), residual variances
``d2 [B, N]`` and Cholesky rows ``c [B, K, N]`` as global scratch. A token that may not be picked
(masked out, or already chosen) has ``d2 = -inf``: that is exactly the reference's ``blocked`` mask,
since the reference reads ``d2`` only through ``residual = d2.masked_fill(blocked, -inf)`` (and at the
pick itself, whose value is the step's best residual), and ``-inf - e^2`` stays ``-inf``.

Step ``t`` is one launch of ``_dpp_step_kernel`` on a ``(cdiv(N, BLOCK_N), B)`` grid:

1. every program reduces the block partials written by step ``t - 1`` -- per block the best residual
   ``(max d2, lowest index holding it)`` and the best fallback ``(max q over unblocked, lowest index)``
   -- to the step's ``best`` and ``fallback`` (first maximum over blocks in index order, so ties go
   to the lower index as with ``argmax``), decides ``spent = residual[best] <= eps[b]``
   (``dpp.spent_threshold``) and the pick;
2. program 0 writes the pick (``-1`` once ``t >= counts[b]``);
3. each program updates its ``BLOCK_N`` tokens: ``sim = u[pick] . u[n]`` over ``BLOCK_D`` chunks,
   ``row_l = q[pick] * q[n] * sim``, ``dot = sum_s c[s, pick] c[s, n]`` over the ``t`` earlier rows in
   ``BLOCK_S`` chunks, ``e = (row_l - dot) / sqrt(max(d2[pick], eps[b]))`` (IEEE ``div_rn``/``sqrt_rn``
   in float32, as torch), ``c[t, n] = e``, ``d2[n] -= e^2``, the pick gets ``-inf``; when ``spent``
   the reference's ``e`` is zero, so only the pick is blocked (``c`` starts zeroed). ``d2[pick]`` is
   the reduced best residual itself, so no program reads a ``d2`` entry another program writes in the
   same launch; ``c`` rows ``< t`` are only read, row ``t`` only written. Then each program writes its
   block's two partials into the other half of a double buffer.

Launches on one stream run in order, the only synchronisation needed; samples that have made their
``counts[b]`` picks return at once. Step 0 reads partials set up in torch (``argmax`` of the initial
``d2`` and ``q``). Work per step O(N (D + t)), O(N K (D + K)) in all; memory O(N D + K N), no N x N.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from vtc.kernels.common import selection_start, tile_sizes
from vtc.kernels.dpp import spent_threshold
from vtc.kernels.similarity_triton import BIG, similarity_to_row


@triton.jit
def _first_max(values, index, ok, NO_INDEX: tl.constexpr):
    """The maximum of ``values`` over ``ok`` and the lowest ``index`` holding it (NO_INDEX if none)."""
    values = tl.where(ok, values, float("-inf"))
    top = tl.max(values, axis=0)
    return top, tl.min(tl.where(ok & (values == top), index, NO_INDEX), axis=0)


@triton.jit(do_not_specialize=["step"])
def _dpp_step_kernel(
    u_ptr,
    q_ptr,
    d2_ptr,
    c_ptr,
    res_v_ptr,
    res_i_ptr,
    fb_v_ptr,
    fb_i_ptr,
    counts_ptr,
    out_ptr,
    n,
    d,
    k_max,
    num_parts,
    step,
    stride_ub,
    stride_un,
    eps_ptr,
    IEEE_F32: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_P: tl.constexpr,
    NO_INDEX: tl.constexpr,
):
    pid = tl.program_id(0)
    sample = tl.program_id(1).to(tl.int64)
    batch = tl.num_programs(1)
    count = tl.load(counts_ptr + sample)
    if step < count:
        eps = tl.load(eps_ptr + sample)  # the sample's threshold, as torch compares and clamps
        # 1. The step's best residual and fallback from the partials of the previous step.
        src = step % 2
        parts = tl.arange(0, BLOCK_P)
        part_in = parts < num_parts
        part_off = (src * batch + sample) * num_parts + parts
        res_v = tl.load(res_v_ptr + part_off, mask=part_in, other=float("-inf"))
        res_i = tl.load(res_i_ptr + part_off, mask=part_in, other=NO_INDEX)
        fb_v = tl.load(fb_v_ptr + part_off, mask=part_in, other=float("-inf"))
        fb_i = tl.load(fb_i_ptr + part_off, mask=part_in, other=NO_INDEX)
        best_v, best = _first_max(res_v, res_i, part_in, NO_INDEX)
        _, fallback = _first_max(fb_v, fb_i, part_in, NO_INDEX)
        spent = best_v <= eps
        pick = tl.where(spent, fallback, best)

        # 2. Record it.
        if pid == 0:
            tl.store(out_ptr + sample * k_max + step, pick.to(tl.int64))

        # 3. Update this block's Cholesky row and residuals, then its partials for the next step.
        if step + 1 < count:
            offs = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            n_in = offs < n
            state = sample * n + offs
            d2 = tl.load(d2_ptr + state, mask=n_in, other=float("-inf"))
            q = tl.load(q_ptr + state, mask=n_in, other=0.0)
            if best_v > eps:  # not spent: the reference's e is zero otherwise
                sim = similarity_to_row(u_ptr + sample * stride_ub, pick, offs, n_in, d, stride_un, BLOCK_N, BLOCK_D)
                q_pick = tl.load(q_ptr + sample * n + pick)
                row_l = q_pick * q * sim
                dot = tl.zeros([BLOCK_N], u_ptr.dtype.element_ty)
                c_base = c_ptr + sample * k_max * n
                for start_s in range(0, step, BLOCK_S):
                    ss = start_s + tl.arange(0, BLOCK_S)
                    s_in = ss < step
                    c_pick = tl.load(c_base + ss.to(tl.int64) * n + pick, mask=s_in, other=0.0)
                    c_rows = tl.load(
                        c_base + ss[:, None].to(tl.int64) * n + offs[None, :],
                        mask=s_in[:, None] & n_in[None, :],
                        other=0.0,
                    )
                    dot += tl.sum(c_pick[:, None] * c_rows, axis=0)
                floor = tl.maximum(best_v, eps)
                if IEEE_F32:
                    e = tl.div_rn(row_l - dot, tl.sqrt_rn(floor))
                else:
                    e = (row_l - dot) / tl.sqrt(floor)
                tl.store(c_base + step.to(tl.int64) * n + offs, e, mask=n_in)
                d2 = d2 - e * e
            d2 = tl.where(offs == pick, float("-inf"), d2)
            tl.store(d2_ptr + state, d2, mask=n_in)
            blocked = d2 == float("-inf")
            r_v, r_i = _first_max(d2, offs, n_in, NO_INDEX)
            f_v, f_i = _first_max(tl.where(blocked, float("-inf"), q), offs, n_in, NO_INDEX)
            dst = ((1 - src) * batch + sample) * num_parts + pid
            tl.store(res_v_ptr + dst, r_v)
            tl.store(res_i_ptr + dst, r_i)
            tl.store(fb_v_ptr + dst, f_v)
            tl.store(fb_i_ptr + dst, f_i)


def dpp_select_triton(
    x: Tensor,
    counts: Tensor,
    quality: Tensor,
    mask: Tensor,
    *,
    block_n: int | None = None,
    block_d: int | None = None,
    block_s: int | None = None,
) -> Tensor:
    """Same contract as ``dpp_select_torch``; ``block_*`` override the tile sizes (powers of two)."""
    batch, n, _ = x.shape
    out, u = selection_start(x, counts)
    if u is None:
        return out
    u, k_max, dim = u.contiguous(), out.shape[1], u.shape[2]
    block_n, block_d = tile_sizes(u, block_n, block_d)
    block_s = block_s or (32 if u.is_cuda else 16)

    q = quality.to(u.dtype).masked_fill(~mask, 0).contiguous()
    d2 = q * q * (u.abs().sum(-1) > 0)  # as the reference: cos(x_i, x_i) is exactly 1 (0 for a zero row)
    d2 = d2.masked_fill(~mask, -torch.inf).contiguous()  # -inf: may not be picked
    c = torch.zeros(batch, k_max, n, dtype=u.dtype, device=x.device)

    num_parts = triton.cdiv(n, block_n)
    res_v = torch.full((2, batch, num_parts), -torch.inf, dtype=u.dtype, device=x.device)
    res_i = torch.full((2, batch, num_parts), BIG, dtype=torch.int32, device=x.device)
    fb_v, fb_i = res_v.clone(), res_i.clone()
    for values, index, score in ((res_v, res_i, d2), (fb_v, fb_i, q.masked_fill(~mask, -torch.inf))):
        first = score.argmax(dim=1, keepdim=True)  # first maximum: lower index on ties
        values[0, :, 0] = score.gather(1, first)[:, 0]
        index[0, :, 0] = first[:, 0].to(torch.int32)
    counts_dev = counts.to(device=x.device, dtype=torch.int32)
    eps = spent_threshold(q).contiguous()
    grid = (num_parts, batch)
    for step in range(k_max):
        _dpp_step_kernel[grid](
            u,
            q,
            d2,
            c,
            res_v,
            res_i,
            fb_v,
            fb_i,
            counts_dev,
            out,
            n,
            dim,
            k_max,
            num_parts,
            step,
            u.stride(0),
            u.stride(1),
            eps,
            IEEE_F32=u.dtype == torch.float32,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
            BLOCK_S=block_s,
            BLOCK_P=triton.next_power_of_2(num_parts),
            NO_INDEX=BIG,
        )
    return out
