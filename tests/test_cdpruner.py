"""cdpruner against a naive conditional DPP: relevance by loops, greedy MAP by explicit determinants."""

from __future__ import annotations

import pytest
import torch
from test_kernels import naive_dpp

import vtc


def naive_relevance(x, text):
    """Mean cosine to the text tokens, min-max normalised to (0, 1] (the +1e-6 keeps the minimum > 0)."""
    cos = torch.nn.functional.cosine_similarity
    r = torch.tensor([float(sum(cos(xi.double(), t.double(), dim=0) for t in text) / len(text)) for xi in x])
    return (r - r.min() + 1e-6) / (r.max() - r.min())


@pytest.mark.parametrize("seed, n, k", [(0, 12, 4), (1, 20, 6), (2, 16, 8)])
def test_cdpruner_with_text_matches_naive(seed, n, k):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, n, 10, generator=gen)
    text = torch.randn(1, 3, 10, generator=gen)
    out = vtc.build("cdpruner", count=k)(vtc.VisualTokens(x, text=text))
    expected = naive_dpp(x[0], k, naive_relevance(x[0], text[0]))
    assert out.index[0].tolist() == sorted(expected)


def test_cdpruner_without_text_is_a_plain_dpp():
    x = torch.randn(1, 15, 8, generator=torch.Generator().manual_seed(4))
    out = vtc.build("cdpruner", count=5)(vtc.VisualTokens(x))
    assert out.index[0].tolist() == sorted(naive_dpp(x[0], 5, torch.ones(15)))
    assert out.info[0]["relevance_used"] is False


def test_relevance_pulls_selection_towards_the_question():
    # Two well-separated clusters; a question aligned with cluster B makes every pick come from B.
    gen = torch.Generator().manual_seed(7)
    a = torch.tensor([1.0, 0, 0, 0]) + 0.3 * torch.randn(8, 4, generator=gen)
    b = torch.tensor([0, 0, 1.0, 0]) + 0.3 * torch.randn(8, 4, generator=gen)
    x = torch.cat([a, b])[None]
    text = torch.tensor([[[0, 0, 1.0, 0]]])
    kept = vtc.build("cdpruner", count=3)(vtc.VisualTokens(x, text=text)).index[0]
    assert (kept >= 8).all()
    flipped = vtc.build("cdpruner", count=3, negate_relevance=True)(vtc.VisualTokens(x, text=text)).index[0]
    assert (flipped < 8).all()


def test_cdpruner_text_width_must_match():
    tokens = vtc.VisualTokens(torch.randn(1, 6, 4), text=torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match=r"text: expected width 4 \(the features'\), got 5"):
        vtc.build("cdpruner", ratio=0.5)(tokens)
