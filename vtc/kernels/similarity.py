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
