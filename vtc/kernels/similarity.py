"""``similarity_topk``: each row's best cosine matches in another token set, without an Na x Nb matrix.

Used by ToMe's bipartite matching, DART's duplication scores and the merging steps of VisionZip and
PruMerge. The torch path works on row blocks of at least ``CHUNK`` rows, as many as keep a block under
``BLOCK_BYTES``; the Triton kernel (``similarity_triton.py``) streams ``Nb`` in tiles and keeps only a running
best per row. Ties break towards the lower index on both.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtc.kernels.common import check_tokens, unit
from vtc.kernels.dispatch import use_triton

CHUNK = 1024  # rows of a similarity block at least; more while the block stays under BLOCK_BYTES
BLOCK_BYTES = 64 << 20


def similarity_topk(
    a: Tensor,
    b: Tensor,
    k: int = 1,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine similarities of each row of ``a [B, Na, D]`` among the rows of ``b [B, Nb, D]``.

    Returns ``(values, indices)``, each ``[B, Na, k]``, best first, ties to the lower index. Masked-out
    rows of ``b`` are never chosen; masked-out rows of ``a``, and slots beyond the number of valid
    candidates, hold ``-inf`` and ``-1``. ``exclude_self`` (needs ``Na == Nb``) skips ``j == i``.
    Values are float32 (float64 inputs stay float64).
    """
    mask_a = check_tokens("a", a, mask_a)
    mask_b = check_tokens("b", b, mask_b)
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"b: expected shape [B={a.shape[0]}, Nb, D={a.shape[2]}], got {tuple(b.shape)}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    if exclude_self and a.shape[1] != b.shape[1]:
        raise ValueError(f"exclude_self: needs Na == Nb, got {a.shape[1]} and {b.shape[1]}")
    if use_triton(a, b):
        from vtc.kernels.similarity_triton import similarity_topk_triton

        return similarity_topk_triton(a, b, k, mask_a, mask_b, exclude_self)
    return similarity_topk_torch(a, b, k, mask_a, mask_b, exclude_self)


def similarity_topk_torch(
    a: Tensor, b: Tensor, k: int, mask_a: Tensor, mask_b: Tensor, exclude_self: bool
) -> tuple[Tensor, Tensor]:
    """The torch reference: row blocks of ``a`` against all of ``b``."""
    ua = unit(a)
    return topk_of_unit_rows(ua, ua if b is a else unit(b), k, mask_a, mask_b, exclude_self)


def topk_of_unit_rows(
    ua: Tensor, ub: Tensor, k: int, mask_a: Tensor, mask_b: Tensor, exclude_self: bool
) -> tuple[Tensor, Tensor]:
    """`similarity_topk_torch` on rows already scaled to unit norm (no copies of the inputs)."""
    batch, na, _ = ua.shape
    nb = ub.shape[1]
    values = torch.full((batch, na, k), -torch.inf, dtype=ua.dtype, device=ua.device)
    indices = torch.full((batch, na, k), -1, dtype=torch.long, device=ua.device)
    take = min(k, nb)
    all_b = bool(mask_b.all())
    chunk = max(CHUNK, BLOCK_BYTES // max(1, batch * nb * ua.element_size()))
    for start in range(0, na, chunk):
        stop = min(start + chunk, na)
        sim = ua[:, start:stop] @ ub.transpose(1, 2)  # [B, chunk, Nb]
        if not all_b:
            sim.masked_fill_(~mask_b[:, None, :], -torch.inf)
        if exclude_self:
            sim.diagonal(offset=start, dim1=1, dim2=2).fill_(-torch.inf)  # j == i
        if take == 1:
            idx = sim.argmax(dim=-1, keepdim=True)  # first maximum: lower index on ties
        else:
            idx = torch.sort(sim, dim=-1, descending=True, stable=True).indices[..., :take]
        val = sim.gather(-1, idx)
        idx = idx.masked_fill(val == -torch.inf, -1)
        values[:, start:stop, :take] = val
        indices[:, start:stop, :take] = idx
    values = values.masked_fill(~mask_a[..., None], -torch.inf)
    indices = indices.masked_fill(~mask_a[..., None], -1)
    return values, indices


def nearest_other_row(u: Tensor, mask: Tensor, block: int | None = None) -> tuple[Tensor, Tensor]:
    """Each valid row's best cosine match among the other valid rows of ``u [B, N, D]`` (unit rows):
    ``(values, indices)``, each ``[B, N]`` (``-inf`` / ``-1`` where there is none).

    The same answer as ``topk_of_unit_rows(u, u, 1, mask, mask, exclude_self=True)`` at half the
    arithmetic: each block pair ``(I, J >= I)`` of the symmetric similarity matrix is computed once and
    serves the rows of ``I`` (its row maxima) and of ``J`` (its column maxima), so each pair's
    similarity is one number for both of its tokens. A row's candidates arrive in ascending index
    order, so keeping only strictly better ones keeps the lowest index on ties.
    """
    batch, n, _ = u.shape
    block = block or max(CHUNK, int((BLOCK_BYTES // (batch * u.element_size())) ** 0.5))
    best = torch.full((batch, n), -torch.inf, dtype=u.dtype, device=u.device)
    where = torch.full((batch, n), -1, dtype=torch.long, device=u.device)
    invalid = ~mask

    def offer(rows: slice, values: Tensor, indices: Tensor) -> None:
        better = values > best[:, rows]
        best[:, rows] = torch.where(better, values, best[:, rows])
        where[:, rows] = torch.where(better, indices, where[:, rows])

    for i in range(0, n, block):
        rows = slice(i, min(i + block, n))
        for j in range(i, n, block):
            cols = slice(j, min(j + block, n))
            sim = u[:, rows] @ u[:, cols].transpose(1, 2)
            if j == i:
                sim.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
            sim.masked_fill_(invalid[:, rows, None] | invalid[:, None, cols], -torch.inf)
            if j > i:  # column maxima first: their indices (in rows) precede the row maxima's (in cols)
                values, indices = sim.max(dim=1)
                offer(cols, values, indices + i)
            values, indices = sim.max(dim=2)
            offer(rows, values, indices + j)
    where = where.masked_fill(best == -torch.inf, -1)
    return best, where
