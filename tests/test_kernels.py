"""The torch references of the selection kernels against naive O(N^2) versions, and their memory bound."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vtc import kernels
from vtc.kernels import dpp_select, maxmin_select, similarity_topk
from vtc.kernels.common import per_sample_k
from vtc.kernels.dpp import dpp_select_blocked, dpp_select_torch
from vtc.kernels.maxmin import maxmin_select_blocked, maxmin_select_cached, maxmin_select_torch

MAXMIN_ROUTES = {
    "reference": maxmin_select_torch,
    "cached": maxmin_select_cached,
    "blocked": maxmin_select_blocked,
    # one-pick blocks and one candidate: almost every step folds or falls back to the plain argmin
    "blocked-1-1": lambda x, counts, mask: maxmin_select_blocked(x, counts, mask, block=1, candidates=1),
    "blocked-5-2": lambda x, counts, mask: maxmin_select_blocked(x, counts, mask, block=5, candidates=2),
}
DPP_ROUTES = {
    "reference": dpp_select_torch,
    "cached": lambda x, counts, q, mask: dpp_select_torch(x, counts, q, mask, cache=True),
    "blocked": dpp_select_blocked,
    "blocked-1-1": lambda x, counts, q, mask: dpp_select_blocked(x, counts, q, mask, block=1, candidates=1),
    "blocked-5-2": lambda x, counts, q, mask: dpp_select_blocked(x, counts, q, mask, block=5, candidates=2),
}


@pytest.fixture(autouse=True)
def torch_backend():
    kernels.set_backend("torch")
    yield
    kernels.set_backend("auto")


def unit64(x):
    x = x.double()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def naive_topk(a, b, k, mask_a, mask_b, exclude_self):
    """Full similarity matrix, then a sort of (value desc, index asc) per row."""
    ua, ub = unit64(a), unit64(b)
    values = torch.full((*a.shape[:2], k), -torch.inf, dtype=torch.float64)
    indices = torch.full((*a.shape[:2], k), -1, dtype=torch.long)
    for s in range(a.shape[0]):
        sim = ua[s] @ ub[s].T
        for i in range(a.shape[1]):
            if not mask_a[s, i]:
                continue
            cands = [(float(sim[i, j]), j) for j in range(b.shape[1]) if mask_b[s, j] and not (exclude_self and i == j)]
            cands.sort(key=lambda vj: (-vj[0], vj[1]))
            for slot, (v, j) in enumerate(cands[:k]):
                values[s, i, slot], indices[s, i, slot] = v, j
    return values, indices


def random_mask(batch, n, gen, prefix=True):
    if prefix:
        lengths = torch.randint(1, n + 1, (batch,), generator=gen)
        return torch.arange(n)[None, :] < lengths[:, None]
    mask = torch.rand(batch, n, generator=gen) > 0.3
    mask[:, 0] = True
    return mask


@pytest.mark.parametrize("batch, na, nb, dim", [(1, 1, 1, 3), (2, 9, 14, 5), (3, 30, 17, 8)])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("prefix", [True, False])
def test_similarity_topk_matches_naive(batch, na, nb, dim, k, prefix):
    gen = torch.Generator().manual_seed(na * 100 + nb + k)
    a, b = torch.randn(batch, na, dim, generator=gen), torch.randn(batch, nb, dim, generator=gen)
    mask_a, mask_b = random_mask(batch, na, gen, prefix), random_mask(batch, nb, gen, prefix)
    values, indices = similarity_topk(a, b, k, mask_a, mask_b)
    ref_values, ref_indices = naive_topk(a, b, k, mask_a, mask_b, False)
    assert torch.equal(indices, ref_indices)
    assert torch.allclose(values.double(), ref_values, atol=1e-5)


@pytest.mark.parametrize("block", [1, 3, 16, None])
def test_nearest_other_row_equals_the_full_pass(block):
    """The symmetric block-pair pass gives each row's best other row as the full pass does, ties included."""
    from vtc.kernels.common import unit
    from vtc.kernels.similarity import nearest_other_row, topk_of_unit_rows

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 40, 6, generator=gen)
    x[0, 20:30] = x[0, 5]  # exact duplicates: equal best matches, the lower index must win
    x[1] = (x[1] * 2).round() / 2  # many exact ties
    mask = torch.arange(40)[None, :] < torch.tensor([[40], [33], [1]])
    u = unit(x)
    values, indices = nearest_other_row(u, mask, block)
    ref_values, ref_indices = topk_of_unit_rows(u, u, 1, mask, mask, exclude_self=True)
    assert torch.equal(indices, ref_indices[..., 0])
    assert torch.allclose(values, ref_values[..., 0], atol=1e-6) or torch.equal(values, ref_values[..., 0])


def test_similarity_topk_self_and_ties():
    base = torch.randn(1, 6, 4, generator=torch.Generator().manual_seed(0))
    x = torch.cat([base, base[:, [2, 2, 4]]], dim=1)  # rows 6, 7 copy row 2; row 8 copies row 4
    _, idx = similarity_topk(x, x, 2, exclude_self=True)
    assert idx[0, 2].tolist() == [6, 7]  # its two copies, lower index first
    assert idx[0, 6].tolist() == [2, 7]
    assert idx[0, 4, 0] == 8 and idx[0, 8, 0] == 4
    ref = naive_topk(x, x, 2, torch.ones(1, 9, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool), True)[1]
    assert torch.equal(idx, ref)


def naive_maxmin(x, k):
    """DivPrune's greedy MMDP on an explicit cosine-distance matrix, as a plain loop."""
    u = unit64(x)
    dist = 1 - u @ u.T
    n = x.shape[0]
    nearest = [min(dist[i, j] for j in range(n) if j != i) if n > 1 else 0 for i in range(n)]
    chosen = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(dist[i, s] for s in chosen), -i)))
    return chosen


@pytest.mark.parametrize("n, dim, k", [(1, 3, 1), (12, 4, 5), (25, 8, 25), (40, 6, 9)])
def test_maxmin_matches_naive(n, dim, k):
    x = torch.randn(1, n, dim, generator=torch.Generator().manual_seed(n + k))
    assert maxmin_select(x, k)[0].tolist() == naive_maxmin(x[0], k)


@pytest.mark.parametrize("route", MAXMIN_ROUTES)
@pytest.mark.parametrize("n, dim, k", [(1, 3, 1), (12, 4, 5), (25, 8, 25), (90, 6, 40)])
def test_maxmin_routes_match_naive(route, n, dim, k):
    x = torch.randn(1, n, dim, generator=torch.Generator().manual_seed(n + k))
    mask = torch.ones(1, n, dtype=torch.bool)
    assert MAXMIN_ROUTES[route](x, torch.tensor([k]), mask)[0].tolist() == naive_maxmin(x[0], k)


@pytest.mark.parametrize("route", MAXMIN_ROUTES)
def test_maxmin_routes_on_padded_batches(route):
    """Batches with padding and per-sample counts (0 to n): every route equals the reference."""
    gen = torch.Generator().manual_seed(11)
    for _ in range(6):
        batch, n = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(2, 160, (1,), generator=gen))
        x = torch.randn(batch, n, 24, generator=gen)
        mask = torch.arange(n)[None, :] < torch.randint(1, n + 1, (batch, 1), generator=gen)
        counts = per_sample_k(torch.randint(0, n + 1, (batch,), generator=gen), mask)
        assert torch.equal(MAXMIN_ROUTES[route](x, counts, mask), maxmin_select_torch(x, counts, mask))


def test_maxmin_memory_cap_picks_the_route():
    x = torch.randn(2, 50, 8, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 50, dtype=torch.bool)
    reference = maxmin_select_torch(x, torch.tensor([20, 20]), mask)
    assert torch.equal(maxmin_select(x, 20), reference)  # cached: 2 x 50 x 50 floats fit
    assert torch.equal(maxmin_select(x, 20, max_memory=0), reference)  # blocked
    with pytest.raises(ValueError, match="max_memory"):
        maxmin_select(x, 20, max_memory=-1)


def test_maxmin_batch_masks_and_counts():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 20, 6, generator=gen)
    mask = torch.arange(20)[None, :] < torch.tensor([[20], [11], [3]])
    out = maxmin_select(x, torch.tensor([6, 4, 5]), mask)
    assert out.shape == (3, 6)
    assert out[0].tolist() == naive_maxmin(x[0], 6)
    assert out[1].tolist() == naive_maxmin(x[1, :11], 4) + [-1, -1]
    assert out[2].tolist() == naive_maxmin(x[2, :3], 3) + [-1, -1, -1]  # k capped at n


def test_maxmin_hand_made_cases():
    cluster = torch.tensor([[1.0, 0.1, 0], [1.0, 0.0, 0.1], [1.0, 0.05, 0.05], [1.0, 0.08, 0.02]])
    outlier = torch.tensor([[0.0, 0.0, 1.0]])
    x = torch.cat([cluster, outlier])[None]
    assert int(maxmin_select(x, 1)[0, 0]) == 4  # the lone token is the most isolated
    dup = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]])[None]
    picked = maxmin_select(dup, 3)[0].tolist()
    assert sorted(picked) == [0, 2, 4]  # one of the three copies, the lowest index


def naive_dpp(x, k, q):
    """Greedy MAP by explicit determinants of the quality-weighted cosine kernel (float64)."""
    u = unit64(x)
    q = q.double()
    kernel = q[:, None] * (u @ u.T) * q[None, :]
    chosen = []
    for _ in range(k):
        best, best_det = None, None
        for j in range(x.shape[0]):
            if j in chosen:
                continue
            s = chosen + [j]
            det = float(torch.linalg.det(kernel[s][:, s]))
            if best_det is None or det > best_det * (1 + 1e-9):
                best, best_det = j, det
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("n, dim, k, seed", [(8, 8, 4, 0), (15, 12, 6, 1), (20, 16, 7, 2)])
def test_dpp_matches_explicit_determinants(n, dim, k, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, dim, generator=gen)
    q = torch.rand(1, n, generator=gen) + 0.5
    assert dpp_select(x, k, q)[0].tolist() == naive_dpp(x[0], k, q[0])
    assert dpp_select(x, k)[0].tolist() == naive_dpp(x[0], k, torch.ones(n))


@pytest.mark.parametrize("route", DPP_ROUTES)
@pytest.mark.parametrize("n, dim, k, seed", [(8, 8, 4, 0), (15, 12, 6, 1), (20, 16, 7, 2)])
def test_dpp_routes_match_explicit_determinants(route, n, dim, k, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, dim, generator=gen)
    q = torch.rand(1, n, generator=gen) + 0.5
    mask = torch.ones(1, n, dtype=torch.bool)
    assert DPP_ROUTES[route](x, torch.tensor([k]), q, mask)[0].tolist() == naive_dpp(x[0], k, q[0])


@pytest.mark.parametrize("route", DPP_ROUTES)
def test_dpp_routes_on_padded_batches(route):
    """Padding, per-sample counts, qualities, and counts past the rank (the fallback): equal to the reference."""
    gen = torch.Generator().manual_seed(12)
    for trial in range(8):
        batch, n = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(2, 120, (1,), generator=gen))
        x = torch.randn(batch, n, 3 if trial % 3 == 0 else 24, generator=gen)  # rank 3: the fallback path
        q = torch.rand(batch, n, generator=gen) + 0.1 if trial % 2 else torch.ones(batch, n)
        mask = torch.arange(n)[None, :] < torch.randint(1, n + 1, (batch, 1), generator=gen)
        counts = per_sample_k(torch.randint(0, n + 1, (batch,), generator=gen), mask)
        assert torch.equal(DPP_ROUTES[route](x, counts, q, mask), dpp_select_torch(x, counts, q, mask))


def test_dpp_memory_cap_picks_the_route():
    x = torch.randn(1, 60, 8, generator=torch.Generator().manual_seed(6))
    q = torch.rand(1, 60, generator=torch.Generator().manual_seed(7)) + 0.2
    reference = dpp_select_torch(x, torch.tensor([25]), q, torch.ones(1, 60, dtype=torch.bool))
    assert torch.equal(dpp_select(x, 25, q), reference)
    assert torch.equal(dpp_select(x, 25, q, max_memory=0), reference)


def test_dpp_fallback_when_rank_runs_out():
    x = torch.randn(1, 10, 2, generator=torch.Generator().manual_seed(3))  # rank 2: only 2 real picks
    q = torch.linspace(1.0, 2.0, 10)[None]
    out = dpp_select(x, 5, q)[0].tolist()
    assert out[:2] == naive_dpp(x[0], 2, q[0])
    rest = [i for i in range(9, -1, -1) if i not in out[:2]][:3]  # then by quality, highest first
    assert out[2:] == rest
    assert len(set(out)) == 5


def test_kernel_input_errors():
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"a: expected a floating tensor \[B, N, D\]"):
        similarity_topk(torch.randn(5, 3), x)
    with pytest.raises(ValueError, match=r"b: expected shape \[B=2, Nb, D=3\]"):
        similarity_topk(x, torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"k: expected an integer >= 1"):
        similarity_topk(x, x, 0)
    with pytest.raises(ValueError, match=r"mask of x: expected a bool tensor of shape \(2, 5\)"):
        maxmin_select(x, 2, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"quality: expected a tensor of shape \(2, 5\)"):
        dpp_select(x, 2, torch.ones(5))
    with pytest.raises(ValueError, match=r"quality: expected finite, non-negative"):
        dpp_select(x, 2, -torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        kernels.set_backend("cuda")


def test_forced_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernels.set_backend("triton")
    from vtc.kernels import dispatch

    if not dispatch.triton_available():
        with pytest.raises(RuntimeError, match="triton is not installed"):
            similarity_topk(torch.randn(1, 3, 2), torch.randn(1, 3, 2))
    else:
        with pytest.raises(RuntimeError, match="needs TRITON_INTERPRET=1"):
            similarity_topk(torch.randn(1, 3, 2), torch.randn(1, 3, 2))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in bytes) any op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_maxmin_memory_without_n_by_n():
    """N = 25,088 (32 frames x 784), D = 1,024, K = 2,508: no tensor near N x N is ever allocated."""
    n, dim, k = 25_088, 1_024, 2_508
    x = torch.randn(1, n, dim)
    with LargestTensor() as probe:
        out = maxmin_select(x, k)
    assert out.shape == (1, k) and len(set(out[0].tolist())) == k
    n_by_n = n * n * 4  # 2.5 GB in float32
    assert probe.largest <= max(1024 * n * 4, x.numel() * 4)  # a similarity block or one copy of x
    assert probe.largest < n_by_n / 20


def test_memory_probe_sees_a_full_matrix():
    """The probe above can fail: a naive N x N similarity shows up as the largest tensor."""
    x = torch.randn(1, 2_000, 16)
    with LargestTensor() as probe:
        u = torch.nn.functional.normalize(x[0], dim=-1)
        (u @ u.T).min(dim=1)
    assert probe.largest == 2_000 * 2_000 * 4
