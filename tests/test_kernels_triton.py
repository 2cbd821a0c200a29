"""The Triton kernels against their torch references: identical indices, close similarity values.

Without CUDA the kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, set below before any
kernel module is imported), float32 only. Two kinds of input:

* ``gaussian``: random rows, some copied (exact duplicates). Similarities differ from the reference
  by rounding only, and duplicates give bit-identical scores within each implementation, so ties
  between copies are exact on both sides.
* ``exact``: rows with entries in {-1, 0, 1} and 1, 4 or 16 non-zeros (and zero rows), so unit rows
  have entries 0, +-1, +-1/2, +-1/4 and every cosine is exact in float32 whatever the summation order:
  many genuine ties, broken the same way on both sides, with no rounding to hide behind.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton's first import: it decides at import time
pytest.importorskip("triton")

from vtc import kernels  # noqa: E402
from vtc.kernels.common import per_sample_k  # noqa: E402
from vtc.kernels.dpp import dpp_select_torch  # noqa: E402
from vtc.kernels.dpp_triton import dpp_select_triton  # noqa: E402
from vtc.kernels.maxmin import maxmin_select_torch  # noqa: E402
from vtc.kernels.maxmin_triton import maxmin_select_triton  # noqa: E402
from vtc.kernels.similarity import similarity_topk_torch  # noqa: E402
from vtc.kernels.similarity_triton import similarity_topk_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def restore_backend():
    yield
    kernels.set_backend("auto")


def gaussian(batch: int, n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Random rows; where there is room, rows n//2.. copy rows 0.. (so best matches tie)."""
    x = torch.randn(batch, n, dim, generator=gen)
    copies = min(3, n // 2)
    x[:, n // 2 : n // 2 + copies] = x[:, :copies]
    return x


def exact(batch: int, n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Rows with 0 / 1 / 4 / 16 entries of +-1 (exact unit rows and cosines), plus copied rows."""
    supports = [s for s in (1, 4, 16) if s <= dim]
    x = torch.zeros(batch, n, dim)
    for b in range(batch):
        for i in range(n):
            s = supports[int(torch.randint(len(supports), (1,), generator=gen))]
            cols = torch.randperm(dim, generator=gen)[:s]
            x[b, i, cols] = torch.randint(0, 2, (s,), generator=gen).float() * 2 - 1
    if n > 4:
        x[:, -1] = 0  # a zero row: cosine 0 with everything
        x[:, n // 2] = x[:, 1]
    return x


MAKERS = {"gaussian": gaussian, "exact": exact}


def prefix_mask(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample prefix masks of different lengths (the first sample full)."""
    lengths = torch.randint(1, n + 1, (batch,), generator=gen)
    lengths[0] = n
    return torch.arange(n)[None, :] < lengths[:, None]


def random_mask(batch: int, n: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(batch, n, generator=gen) > 0.3
    mask[:, 0] = True
    if batch > 1 and n > 1:
        mask[-1] = False  # a sample with no valid token at all
    return mask


def random_counts(batch: int, n: int, mask: torch.Tensor, gen: torch.Generator, cap: int | None = None) -> torch.Tensor:
    """Per-sample counts: the first sample asks for everything (up to ``cap``), the others at random."""
    top = n if cap is None else min(n, cap)
    k = torch.randint(0, top + 1, (batch,), generator=gen)
    k[0] = top
    return per_sample_k(k, mask)


def to_device(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(DEVICE) for t in tensors]


def check_similarity(a, b, k, mask_a, mask_b, exclude_self):
    a, b, mask_a, mask_b = to_device(a, b, mask_a, mask_b)
    values, indices = similarity_topk_triton(a, b, k, mask_a, mask_b, exclude_self)
    ref_values, ref_indices = similarity_topk_torch(a, b, k, mask_a, mask_b, exclude_self)
    assert values.dtype == ref_values.dtype and values.shape == ref_values.shape
    assert torch.equal(indices, ref_indices)
    assert torch.equal(values == -torch.inf, ref_values == -torch.inf)
    assert torch.allclose(values, ref_values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch, na, nb, dim", [(1, 1, 1, 4), (3, 7, 33, 16), (2, 70, 33, 40), (3, 33, 70, 4)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("data", ["gaussian", "exact"])
def test_similarity_cross(batch, na, nb, dim, k, data):
    gen = torch.Generator().manual_seed(na * 1000 + nb * 10 + k)
    a = MAKERS[data](batch, na, dim, gen)
    b = MAKERS[data](batch, nb, dim, gen)
    b[:, : min(na, nb) // 3] = a[:, : min(na, nb) // 3]  # some rows of a appear in b: sims of 1
    check_similarity(a, b, k, prefix_mask(batch, na, gen), random_mask(batch, nb, gen), False)


@pytest.mark.parametrize("batch, n, dim", [(1, 1, 4), (3, 33, 16), (2, 70, 40)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("data", ["gaussian", "exact"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_similarity_self(batch, n, dim, k, data, exclude_self):
    gen = torch.Generator().manual_seed(n * 10 + k + 7 * exclude_self)
    x = MAKERS[data](batch, n, dim, gen)
    mask = prefix_mask(batch, n, gen) if data == "gaussian" else random_mask(batch, n, gen)
    check_similarity(x, x, k, mask, mask, exclude_self)


@pytest.mark.parametrize("block", [(16, 16, 16), (32, 64, 32)])
def test_similarity_block_sizes(block):
    gen = torch.Generator().manual_seed(11)
    x = exact(2, 40, 20, gen)
    mask = random_mask(2, 40, gen)
    a, mask = to_device(x, mask)
    block_m, block_n, block_d = block
    values, indices = similarity_topk_triton(
        a, a, 5, mask, mask, True, block_m=block_m, block_n=block_n, block_d=block_d
    )
    ref_values, ref_indices = similarity_topk_torch(a, a, 5, mask, mask, True)
    assert torch.equal(indices, ref_indices)
    assert torch.allclose(values, ref_values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch, n, dim", [(1, 1, 4), (3, 7, 4), (3, 33, 16), (2, 70, 40)])
@pytest.mark.parametrize("data", ["gaussian", "exact"])
def test_maxmin(batch, n, dim, data):
    gen = torch.Generator().manual_seed(n * 10 + dim)
    x = MAKERS[data](batch, n, dim, gen)
    mask = prefix_mask(batch, n, gen)
    counts = random_counts(batch, n, mask, gen)
    if data == "gaussian":
        # Once only copies of chosen rows are left, their scores are cos(x_i, x_i) = 1 +- an ulp of each
        # side's own rounding, which no exact rule can match: stop 3 picks before the end.
        counts = torch.minimum(counts, (mask.sum(1) - 3).clamp_min(1))
    x, mask = to_device(x, mask)
    out = maxmin_select_triton(x, counts, mask)
    assert torch.equal(out, maxmin_select_torch(x, counts, mask))


def test_maxmin_first_pick_takes_lower_index_of_mutual_pair():
    """The lowest best match always belongs to a mutual pair; the pick is the pair's lower index (float64
    check), not whichever of cos(i, j) and cos(j, i) a tiled dot rounded lower."""
    gen = torch.Generator().manual_seed(1000)
    torch.randint(1, 60, (3,), generator=gen)
    x = gaussian(3, 12, 13, gen)  # sample 0: in the interpreter, cos(4, 9) and cos(9, 4) differ by an ulp
    x = torch.cat([x, torch.randn(3, 12, 13, generator=gen)])
    mask = torch.cat([torch.ones(1, 12, dtype=torch.bool), prefix_mask(5, 12, gen)])
    u = torch.nn.functional.normalize(x.double(), dim=-1)
    sim = (u @ u.transpose(1, 2)).masked_fill(~(mask[:, :, None] & mask[:, None, :]), -torch.inf)
    sim = torch.maximum(sim, sim.transpose(1, 2))
    sim = sim.diagonal_scatter(torch.full(mask.shape, -torch.inf, dtype=sim.dtype), dim1=1, dim2=2)
    expected = sim.max(dim=2).values.masked_fill(~mask, torch.inf).argmin(dim=1)
    x, mask = to_device(x, mask)
    out = maxmin_select_triton(x, per_sample_k(1, mask), mask)
    assert out[:, 0].cpu().tolist() == expected.tolist()


def test_maxmin_block_sizes_and_zero_counts():
    gen = torch.Generator().manual_seed(3)
    x = exact(3, 45, 16, gen)
    mask = prefix_mask(3, 45, gen)
    counts = per_sample_k(torch.tensor([45, 0, 9]), mask)
    x, mask = to_device(x, mask)
    ref = maxmin_select_torch(x, counts, mask)
    assert torch.equal(maxmin_select_triton(x, counts, mask, block_n=16, block_d=4), ref)
    assert torch.equal(maxmin_select_triton(x, counts, mask, block_n=64, block_d=16), ref)
    zero = per_sample_k(0, mask)
    assert maxmin_select_triton(x, zero, mask).shape == (3, 0)


@pytest.mark.parametrize("batch, n, dim", [(1, 1, 4), (3, 7, 4), (3, 33, 16), (2, 70, 40)])
@pytest.mark.parametrize("weighted", [False, True])
def test_dpp(batch, n, dim, weighted):
    gen = torch.Generator().manual_seed(n * 10 + dim + weighted)
    x = gaussian(batch, n, dim, gen)
    mask = prefix_mask(batch, n, gen)
    quality = torch.rand(batch, n, generator=gen) + 0.5 if weighted else torch.ones(batch, n)
    counts = random_counts(batch, n, mask, gen, cap=dim)  # within the rank: no rounding-noise residuals
    x, quality, mask = to_device(x, quality, mask)
    out = dpp_select_triton(x, counts, quality, mask)
    assert torch.equal(out, dpp_select_torch(x, counts, quality, mask))


def axis_rows(batch: int, n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """Rows +-2^j e_a: unit rows are exact +-e_a, so every Cholesky update is exact (residuals hit 0)."""
    axis = torch.randint(0, dim, (batch, n), generator=gen)
    scale = 2.0 ** torch.randint(-2, 3, (batch, n), generator=gen).float()
    sign = torch.randint(0, 2, (batch, n), generator=gen).float() * 2 - 1
    x = torch.nn.functional.one_hot(axis, dim).float() * (scale * sign)[..., None]
    x[:, 3] = 0  # a zero row: residual 0 from the start, only a fallback pick can take it
    return x


@pytest.mark.parametrize("dim, weighted", [(3, True), (3, False), (16, True)])
def test_dpp_exact_ties_and_fallback(dim, weighted):
    """D = 3 < k: the rank runs out after 3 picks and the rest go by quality (EPS fallback); D = 16 with
    integer qualities: duplicates and equal qualities tie exactly."""
    gen = torch.Generator().manual_seed(dim + weighted)
    batch, n = 3, 37
    x = axis_rows(batch, n, dim, gen)
    mask = prefix_mask(batch, n, gen)
    if weighted:
        quality = torch.randint(1, 5, (batch, n), generator=gen).float()
    else:
        quality = torch.ones(batch, n)
    counts = random_counts(batch, n, mask, gen)
    x, quality, mask = to_device(x, quality, mask)
    out = dpp_select_triton(x, counts, quality, mask)
    ref = dpp_select_torch(x, counts, quality, mask)
    assert torch.equal(out, ref)
    if dim == 3:
        assert int(counts[0]) > dim  # the fallback was reached


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype):
    """float64 computes in float64 on both sides; bfloat16 is normalised to float32 before the kernels.

    Exact rows: torch's own float64 CPU matmul gives copied columns cosines an ulp apart (BLAS tiling).
    """
    gen = torch.Generator().manual_seed(21)
    x = exact(2, 20, 8, gen).to(dtype)
    mask = prefix_mask(2, 20, gen)
    counts = per_sample_k(torch.tensor([6, 4]), mask)
    quality = torch.rand(2, 20, generator=gen) + 0.5
    x, mask, quality = to_device(x, mask, quality)
    check_similarity(x, x, 2, mask, mask, True)
    assert torch.equal(maxmin_select_triton(x, counts, mask), maxmin_select_torch(x, counts, mask))
    assert torch.equal(dpp_select_triton(x, counts, quality, mask), dpp_select_torch(x, counts, quality, mask))


def test_public_api_dispatch():
    """``set_backend("triton")`` routes the public functions to the kernels, with the same answers."""
    gen = torch.Generator().manual_seed(5)
    x = exact(2, 24, 16, gen)
    mask = prefix_mask(2, 24, gen)
    quality = torch.randint(1, 4, (2, 24), generator=gen).float()
    x, mask, quality = to_device(x, mask, quality)
    results = {}
    for backend in ("torch", "triton"):
        kernels.set_backend(backend)
        results[backend] = (
            kernels.similarity_topk(x, x, 3, mask, mask, exclude_self=True),
            kernels.maxmin_select(x, torch.tensor([10, 5]), mask),
            kernels.dpp_select(x, 8, quality, mask),
        )
    (sim_t, mm_t, dpp_t), (sim_k, mm_k, dpp_k) = results["torch"], results["triton"]
    assert torch.equal(sim_k[1], sim_t[1]) and torch.allclose(sim_k[0], sim_t[0], atol=1e-5, rtol=0)
    assert torch.equal(mm_k, mm_t)
    assert torch.equal(dpp_k, dpp_t)


@pytest.mark.parametrize("seed", range(6))
def test_dpp_past_the_rank_with_random_qualities(seed):
    """Counts beyond the rank on random rows with qualities up to 3.5: the fallback threshold is relative
    to max q^2, so float32 noise in the spent residuals (which scales with q^2) never decides a pick."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 40, 6, generator=gen).to(DEVICE)
    q = (torch.rand(2, 40, generator=gen) * 3 + 0.5).to(DEVICE)
    mask = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    counts = torch.tensor([15, 12])
    assert torch.equal(dpp_select_torch(x, counts, q, mask), dpp_select_triton(x, counts, q, mask))
