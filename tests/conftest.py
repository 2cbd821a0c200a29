"""Shared test inputs: a padded batch whose samples differ in length and grid (image, odd image, video)."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision_shim

torchvision_shim.install()  # before anything imports transformers, timm or open_clip

if not torch.cuda.is_available():
    # Triton reads this when it is first imported, and transformers may import it before the kernel tests do.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import vtc  # noqa: E402

GRIDS = [(1, 6, 6), (1, 5, 7), (2, 4, 4)]


def make_tokens(
    grids: list[tuple[int, int, int]] = GRIDS,
    dim: int = 8,
    layers: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> vtc.VisualTokens:
    """Random tokens, positive [CLS]-attention rows and keys for a batch with the given grids."""
    g = torch.Generator().manual_seed(seed)
    lengths = [t * h * w for t, h, w in grids]
    n = max(lengths)
    batch = len(grids)
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    features = torch.randn(batch, n, dim, generator=g) * mask[..., None]
    cls_attn = torch.softmax(torch.randn(batch, layers, n, generator=g) * 2, dim=-1) * mask[:, None, :]
    keys = torch.randn(batch, n, 6, generator=g) * mask[..., None]
    text = torch.randn(batch, 5, dim, generator=g)
    query_attn = torch.softmax(torch.randn(batch, n, generator=g) * 2, dim=-1) * mask
    return vtc.VisualTokens(
        features=features.to(dtype),
        mask=mask,
        grid=torch.tensor(grids),
        cls_attn=cls_attn.to(dtype),
        keys=keys.to(dtype),
        text=text.to(dtype),
        query_attn=query_attn.to(dtype),
    )


def build_default(name: str, **budget) -> vtc.core.Compressor:
    """A method with its default config and ``budget`` (or its adaptive default when empty)."""
    return vtc.build(name, **budget)


def attention_rows(compressor) -> int:
    """How many cls_attn rows the method's config asks for."""
    return max(1, len(compressor.encoder_layers))


@pytest.fixture(params=[m.name for m in vtc.list_methods() if m.stage != "encoder"])
def method_name(request) -> str:
    return request.param


def pytest_report_header() -> str:
    import transformers

    return f"transformers {transformers.__version__} ({transformers.__file__})"
