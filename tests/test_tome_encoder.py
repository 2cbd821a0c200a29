"""ToMe's encoder stage (``tome_encoder``) against a naive, loop-by-loop bipartite soft matching."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor

import vtc
from vtc.methods.tome_encoder import MergeState, ToMeEncoder, bipartite_plan, merge_by_plan, r_schedule

Groups = list[list[int]]  # for each current token, the original tokens it holds


def naive_cosine(u: list[float], v: list[float]) -> float:
    """Cosine similarity of two vectors, one product at a time."""
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def naive_plan(metric: list[list[float]], r: int, protected: int) -> tuple[list[int], list[bool]]:
    """One bipartite soft-matching round of one sample: ``(dst, keep)`` as in ``bipartite_plan``."""
    n = len(metric)
    r = max(0, min(r, (n - protected) // 2))
    edges = []  # (score, a, b) of each unprotected A token and its best B
    for a in range(0, n, 2):
        if a < protected:
            continue
        best_score, best_b = -math.inf, -1
        for b in range(1, n, 2):
            if b < protected:
                continue
            score = naive_cosine(metric[a], metric[b])
            if score > best_score:  # strict: the first of equal scores (lower B index) wins
                best_score, best_b = score, b
        if best_b >= 0:
            edges.append((best_score, a, best_b))
    edges.sort(key=lambda e: (-e[0], e[1]))  # best first; equal scores: lower A index first
    into = {a: b for _, a, b in edges[:r]}
    survivors = [i for i in range(n) if i not in into]
    dst = [survivors.index(into.get(i, i)) for i in range(n)]
    return dst, [i not in into for i in range(n)]


def naive_merge(x: list[list[float]], sizes: list[float], dst: list[int]) -> tuple[list[list[float]], list[float]]:
    """Size-weighted mean of the tokens of each output slot, and the slots' sizes."""
    n_out = max(dst) + 1
    merged, new_sizes = [], []
    for slot in range(n_out):
        members = [i for i in range(len(x)) if dst[i] == slot]
        total = sum(sizes[i] for i in members)
        merged.append([sum(sizes[i] * x[i][c] for i in members) / total for c in range(len(x[0]))])
        new_sizes.append(total)
    return merged, new_sizes


def regroup(groups: Groups, dst: list[int]) -> Groups:
    """The original tokens of each slot after a round, from the groups before it."""
    out: Groups = [[] for _ in range(max(dst) + 1)]
    for i, slot in enumerate(dst):
        out[slot].extend(groups[i])
    return [sorted(g) for g in out]


def random_metric(batch: int, n: int, dim: int, seed: int) -> Tensor:
    return torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


CASES = [  # (batch, n, protected, r): odd and even n, protection 0-2, r up to beyond the cap
    (1, 8, 0, 2),
    (2, 9, 0, 3),
    (2, 10, 1, 4),
    (1, 11, 1, 5),
    (2, 12, 2, 3),
    (2, 13, 2, 9),
    (1, 7, 0, 100),
    (2, 6, 1, 0),
    (1, 3, 2, 1),
]


@pytest.mark.parametrize(("batch", "n", "protected", "r"), CASES)
def test_plan_matches_naive(batch: int, n: int, protected: int, r: int) -> None:
    metric = random_metric(batch, n, 5, seed=n * 10 + protected)
    dst, keep = bipartite_plan(metric, r, protected)
    for b in range(batch):
        want_dst, want_keep = naive_plan(metric[b].tolist(), r, protected)
        assert dst[b].tolist() == want_dst
        assert keep[b].tolist() == want_keep
    assert int(keep.sum(1).unique().item()) == n - max(0, min(r, (n - protected) // 2))


@pytest.mark.parametrize(("batch", "n", "protected", "r"), CASES)
def test_merge_by_plan_matches_naive(batch: int, n: int, protected: int, r: int) -> None:
    x = random_metric(batch, n, 4, seed=1000 + n)
    sizes = torch.randint(1, 5, (batch, n), generator=torch.Generator().manual_seed(n)).to(torch.float64)
    dst, keep = bipartite_plan(x, r, protected)
    merged, new_sizes = merge_by_plan(x, sizes, dst, int(keep[0].sum()))
    for b in range(batch):
        want_x, want_sizes = naive_merge(x[b].tolist(), sizes[b].tolist(), dst[b].tolist())
        torch.testing.assert_close(merged[b], torch.tensor(want_x, dtype=torch.float64))
        assert new_sizes[b].tolist() == want_sizes


@pytest.mark.parametrize(
    ("batch", "n", "protected", "rs"), [(1, 16, 0, (4, 3, 2)), (2, 17, 1, (5, 5, 9)), (2, 14, 2, (3, 0, 2))]
)
def test_merge_state_rounds_match_naive(batch: int, n: int, protected: int, rs: tuple[int, ...]) -> None:
    """Consecutive rounds: merged features, sizes, sources and owners against naive groups."""
    original = random_metric(batch, n, 6, seed=7 * n)
    state = MergeState(batch, n, protected, original.device)
    x = original
    groups: list[Groups] = [[[i] for i in range(n)] for _ in range(batch)]
    for step, r in enumerate(rs):
        metric = random_metric(batch, x.shape[1], 3, seed=100 * n + step)  # keys need not be the features
        plans = [naive_plan(metric[b].tolist(), r, protected) for b in range(batch)]
        before = x
        x = state.merge(x, metric, r)
        for b in range(batch):
            want_x, want_sizes = naive_merge(before[b].tolist(), [float(len(g)) for g in groups[b]], plans[b][0])
            torch.testing.assert_close(x[b], torch.tensor(want_x, dtype=torch.float64))
            groups[b] = regroup(groups[b], plans[b][0])
            assert state.sizes[b].tolist() == want_sizes == [len(g) for g in groups[b]]
        check_against_groups(state, x, original, groups)


def check_against_groups(state: MergeState, x: Tensor, original: Tensor, groups: list[Groups]) -> None:
    """``sources``, ``own``, sizes and features of ``state``/``x`` describe the naive ``groups``."""
    for b, sample in enumerate(groups):
        assert x.shape[1] == len(sample) == state.length
        for slot, members in enumerate(sample):
            assert [state.sources[b, i].item() for i in members] == [slot] * len(members)
            assert state.own[b, slot].item() in members
            assert state.sizes[b, slot].item() == len(members)
            torch.testing.assert_close(x[b, slot], original[b, members].mean(0))
        assert sorted(i for g in sample for i in g) == list(range(original.shape[1]))
        own = state.own[b].tolist()
        assert own == sorted(own) and len(set(own)) == len(own)
        assert own[: state.protected] == list(range(state.protected))  # protected tokens never merge


def test_sources_gather_merged_tokens() -> None:
    """``merged.gather(sources)`` gives each original token its group's mean (the docs' use of sources)."""
    original = random_metric(2, 12, 4, seed=3)
    state = MergeState(2, 12, 1, original.device)
    x = state.merge(state.merge(original, original, 3), random_metric(2, 9, 4, seed=4), 3)
    back = x.gather(1, state.sources[..., None].expand(-1, -1, 4))
    for b in range(2):
        for i in range(12):
            members = (state.sources[b] == state.sources[b, i]).nonzero()[:, 0]
            torch.testing.assert_close(back[b, i], original[b, members].mean(0))


def test_ties_break_to_lower_index() -> None:
    """Duplicate rows: A0 picks B1 over B3; of A tokens with equal scores, the lower merges first."""
    e1, e2, e3 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    #          A0  B1  A2  B3  A4  B5
    metric = torch.tensor([[e1, e1, e2, e1, e2, e2]])
    assert bipartite_plan(metric, 1)[0].tolist() == [[0, 0, 1, 2, 3, 4]]  # A0 -> B1 (not B3)
    dst, keep = bipartite_plan(metric, 2)
    assert keep.tolist() == [[False, True, False, True, True, True]]  # A0 and A2, not A4
    assert dst.tolist() == [[0, 0, 3, 1, 2, 3]]
    dst, keep = bipartite_plan(metric, 3)
    assert dst.tolist() == [[0, 0, 2, 1, 2, 2]]
    # all rows equal: every A picks B1, and the r lowest A tokens merge
    dst, keep = bipartite_plan(torch.ones(1, 200, 2), 40)
    assert (~keep[0]).nonzero()[:, 0].tolist() == list(range(0, 80, 2))
    assert dst[0, :80:2].tolist() == [0] * 40
    # A2 ties between B3 and B5 (both e2): the lower B wins (B5 would give [0, 1, 4, 2, 3, 4])
    metric = torch.tensor([[e3, e1, e2, e2, e3, e2]])
    assert bipartite_plan(metric, 1)[0].tolist() == [[0, 1, 2, 2, 3, 4]]


def test_hand_computed_merge_with_sizes() -> None:
    """Protected [CLS], sizes carried in, r capped; A4 ties between B1 and B3 and takes B1."""
    state = MergeState(1, 5, protected=1, device=torch.device("cpu"))
    state.sizes = torch.tensor([[1.0, 2.0, 1.0, 3.0, 1.0]])
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 1.0]]])
    x = torch.tensor([[[0.0], [1.0], [4.0], [8.0], [5.0]]])
    out = state.merge(x, metric, 5)  # capped at (5 - 1) // 2 = 2: A2 -> B3 (cos 1), A4 -> B1 (cos 0.707)
    torch.testing.assert_close(out, torch.tensor([[[0.0], [(2 * 1.0 + 5.0) / 3], [(4.0 + 3 * 8.0) / 4]]]))
    assert state.sizes.tolist() == [[1.0, 3.0, 4.0]]
    assert state.sources.tolist() == [[0, 1, 2, 2, 1]]
    assert state.own.tolist() == [[0, 1, 3]]
    torch.testing.assert_close(
        state.attention_bias(torch.float32), torch.tensor([1.0, 3.0, 4.0]).log().view(1, 1, 1, 3)
    )


def test_protected_never_merge_even_as_destination() -> None:
    """A token identical to the protected [CLS] still cannot merge into it, nor can [CLS] merge."""
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    dst, keep = bipartite_plan(metric, 1, protected=2)  # A2's only unprotected B is B3
    assert dst.tolist() == [[0, 1, 2, 2]] and keep.tolist() == [[True, True, False, True]]
    assert bipartite_plan(metric, 1, protected=3)[1].all()  # nothing left to pair


def test_r_zero_and_capped_is_identity() -> None:
    x = random_metric(2, 5, 3, seed=0)
    state = MergeState(2, 5, 4, x.device)
    assert state.merge(x, x, 3) is x and state.length == 5  # (5 - 4) // 2 == 0
    dst, keep = bipartite_plan(x, 0)
    assert dst.tolist() == [list(range(5))] * 2 and keep.all()


def test_merge_rejects_untracked_length() -> None:
    state = MergeState(1, 6, 0, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="do not match the tracked sizes"):
        state.merge(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), 1)


def test_r_schedule() -> None:
    assert r_schedule(3, 4) == [3, 3, 3, 3]
    assert r_schedule([1, 0, 2], 3) == [1, 0, 2]
    assert r_schedule((0,), 1) == [0]


TYPE_ERROR = "r: expected an integer >= 0 or one integer per block, got "


@pytest.mark.parametrize(
    ("r", "depth", "message"),
    [
        (True, 2, TYPE_ERROR + "True"),
        (2.0, 2, TYPE_ERROR + "2.0"),
        ("2", 2, TYPE_ERROR + "'2'"),
        (None, 2, TYPE_ERROR + "None"),
        ([1, 2], 3, "r: expected 3 values (one per block), got 2"),
        ([1, -1], 2, "r: expected integers >= 0, got [1, -1]"),
        ([1, True], 2, "r: expected integers >= 0, got [1, True]"),
        ([1, 1.5], 2, "r: expected integers >= 0, got [1, 1.5]"),
        (-1, 2, "r: expected integers >= 0, got -1"),
    ],
)
def test_r_schedule_errors(r: object, depth: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        r_schedule(r, depth)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (-1, TYPE_ERROR + "-1"),
        (True, TYPE_ERROR + "True"),
        (1.5, TYPE_ERROR + "1.5"),
        (None, TYPE_ERROR + "None"),
        ("4", TYPE_ERROR + "'4'"),
        ([2, -3], "r: expected integers >= 0, got [2, -3]"),
        ((1, False), "r: expected integers >= 0, got [1, False]"),
    ],
)
def test_build_rejects_bad_r(r: object, message: str) -> None:
    for name in ("tome", "tome_encoder"):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            vtc.build(name, r=r)


def test_build_tome_alias_and_schedule() -> None:
    compressor = vtc.build("tome", r=8)
    assert compressor.info.name == "tome_encoder" and compressor.info.stage == "encoder"
    assert compressor.config == ToMeEncoder(r=8, proportional=True)
    assert compressor.config.schedule(3) == [8, 8, 8]
    listed = vtc.build("tome", r=[1, 2, 3], proportional=False).config
    assert listed.r == (1, 2, 3) and listed.proportional is False
    assert listed.schedule(3) == [1, 2, 3]
    with pytest.raises(ValueError, match="^r: expected 4 values \\(one per block\\), got 3"):
        listed.schedule(4)
    with pytest.raises(ValueError, match="^proportional: expected True or False"):
        vtc.build("tome", r=2, proportional=1)


def test_encoder_stage_takes_no_budget() -> None:
    with pytest.raises(ValueError, match="tome_encoder: runs inside the vision tower.*no ratio="):
        vtc.build("tome_encoder", ratio=0.5)
    with pytest.raises(ValueError, match="no ratio="):
        vtc.build("tome", r=4, count=10)


def test_tome_with_a_budget_is_the_projector_method() -> None:
    compressor = vtc.build("tome", ratio=0.5)
    assert compressor.info.name == "tome" and compressor.info.stage == "projector"


def test_negative_r_fails_even_without_blocks() -> None:
    with pytest.raises(ValueError, match="got -1"):
        r_schedule(-1, 0)
