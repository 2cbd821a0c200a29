"""The two tensors-in, tensors-out types every compressor speaks: `VisualTokens` and `Compressed`.

Layout conventions (see DESIGN.md):

- A batch is padded: `features [B, N, D]` with `mask [B, N]` marking valid tokens. The valid tokens of
  a sample are a prefix of its row (padding sits at the end), so sample ``b`` holds ``n_b`` tokens.
- `grid [B, 3]` is ``(t, h, w)`` in tokens, with ``t * h * w == n_b``. Tokens are ordered frame by
  frame, then row-major inside a frame.
- Signals are optional: `query_attn [B, N]` (inside the LLM: the attention the last text token pays
  each visual token, head-averaged; what LLM-stage methods rank by),
  `cls_attn [B, L, N]` (the encoder [CLS] attention row of L chosen layers,
  averaged over heads), `keys [B, N, Dk]`, `text [B, T, Dt]` with `text_mask [B, T]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fail(argument: str, expected: str, got: Any) -> None:
    raise ValueError(f"{argument}: expected {expected}, got {got}")


def _check_float(name: str, x: Any, ndim: int) -> None:
    if not isinstance(x, Tensor):
        _fail(name, "a torch.Tensor", type(x).__name__)
    if x.ndim != ndim:
        _fail(name, f"a {ndim}-D tensor", f"shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        _fail(name, "a floating dtype (float16, bfloat16, float32 or float64)", x.dtype)


def _as_bool_mask(name: str, m: Any, shape: tuple[int, int]) -> Tensor:
    if not isinstance(m, Tensor):
        _fail(name, "a torch.Tensor", type(m).__name__)
    if tuple(m.shape) != shape:
        _fail(name, f"shape {shape}", f"shape {tuple(m.shape)}")
    if m.dtype == torch.bool:
        return m
    if m.dtype.is_floating_point or m.dtype.is_complex or not bool(((m == 0) | (m == 1)).all()):
        _fail(name, "a bool tensor (or integers that are all 0 or 1)", m.dtype)
    return m.bool()


def _check_finite(name: str, x: Tensor, valid: Tensor) -> None:
    """Raise if any valid entry of ``x`` (valid: broadcastable bool) is NaN or infinite."""
    bad = ~torch.isfinite(x) & valid
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        _fail(name, "finite values (no NaN or inf) at valid tokens", f"a non-finite value at {where}")


def _prefix_lengths(mask: Tensor) -> Tensor:
    """Per-row count of valid tokens; raise unless each row is True-prefix then False."""
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    expected = positions[None, :] < lengths[:, None]
    if not bool((expected == mask).all()):
        row = int((expected != mask).any(1).nonzero()[0])
        _fail("mask", "valid tokens as a prefix of each row (padding at the end)", f"holes in row {row}")
    if bool((lengths == 0).any()):
        row = int((lengths == 0).nonzero()[0])
        _fail("mask", "at least one valid token per sample", f"an empty row {row}")
    return lengths


def default_grid(n: int) -> tuple[int, int, int]:
    """Grid guessed for a sample of ``n`` tokens: a square frame when ``n`` is square, else one row."""
    side = math.isqrt(n)
    return (1, side, side) if side * side == n else (1, 1, n)


@dataclass
class VisualTokens:
    """A padded batch of visual tokens plus the optional signals methods may ask for.

    ``mask`` defaults to all-valid and ``grid`` to :func:`default_grid` of each sample's length.
    Construction validates everything and raises ``ValueError`` naming the bad argument.
    """

    features: Tensor
    mask: Tensor | None = None
    grid: Tensor | None = None
    cls_attn: Tensor | None = None
    keys: Tensor | None = None
    text: Tensor | None = None
    text_mask: Tensor | None = None
    query_attn: Tensor | None = None

    def __post_init__(self) -> None:
        _check_float("features", self.features, 3)
        b, n, _ = self.features.shape
        if b == 0 or n == 0:
            _fail("features", "at least one sample and one token", f"shape {tuple(self.features.shape)}")
        device = self.features.device
        if self.mask is None:
            self.mask = torch.ones(b, n, dtype=torch.bool, device=device)
        self.mask = _as_bool_mask("mask", self.mask, (b, n))
        lengths = _prefix_lengths(self.mask)
        _check_finite("features", self.features, self.mask[..., None])
        if self.grid is None:
            self.grid = torch.tensor([default_grid(int(v)) for v in lengths], device=device)
        self._check_grid(lengths)
        if self.cls_attn is not None:
            _check_float("cls_attn", self.cls_attn, 3)
            if self.cls_attn.shape[0] != b or self.cls_attn.shape[2] != n or self.cls_attn.shape[1] == 0:
                _fail("cls_attn", f"shape [B={b}, L>=1, N={n}]", f"shape {tuple(self.cls_attn.shape)}")
            _check_finite("cls_attn", self.cls_attn, self.mask[:, None, :])
            if bool(((self.cls_attn < 0) & self.mask[:, None, :]).any()):
                _fail("cls_attn", "non-negative attention weights", "a negative value")
        if self.query_attn is not None:
            _check_float("query_attn", self.query_attn, 2)
            if tuple(self.query_attn.shape) != (b, n):
                _fail("query_attn", f"shape [B={b}, N={n}]", f"shape {tuple(self.query_attn.shape)}")
            _check_finite("query_attn", self.query_attn, self.mask)
            if bool(((self.query_attn < 0) & self.mask).any()):
                _fail("query_attn", "non-negative attention weights", "a negative value")
        if self.keys is not None:
            _check_float("keys", self.keys, 3)
            if tuple(self.keys.shape[:2]) != (b, n):
                _fail("keys", f"shape [B={b}, N={n}, Dk]", f"shape {tuple(self.keys.shape)}")
            _check_finite("keys", self.keys, self.mask[..., None])
        if self.text is not None:
            _check_float("text", self.text, 3)
            if self.text.shape[0] != b:
                _fail("text", f"shape [B={b}, T, Dt]", f"shape {tuple(self.text.shape)}")
            if self.text_mask is None:
                self.text_mask = torch.ones(self.text.shape[:2], dtype=torch.bool, device=device)
            self.text_mask = _as_bool_mask("text_mask", self.text_mask, tuple(self.text.shape[:2]))
            _check_finite("text", self.text, self.text_mask[..., None])
        elif self.text_mask is not None:
            _fail("text_mask", "None when text is None", "a tensor")

    def _check_grid(self, lengths: Tensor) -> None:
        grid = self.grid
        b = self.features.shape[0]
        if not isinstance(grid, Tensor):
            grid = torch.as_tensor(grid)
        if tuple(grid.shape) != (b, 3):
            _fail("grid", f"shape [B={b}, 3] holding (t, h, w)", f"shape {tuple(grid.shape)}")
        if grid.dtype.is_floating_point or grid.dtype == torch.bool:
            _fail("grid", "an integer tensor", grid.dtype)
        if bool((grid < 1).any()):
            _fail("grid", "positive (t, h, w)", grid.tolist())
        products = grid.prod(1).to(lengths.device)
        if not bool((products == lengths).all()):
            row = int((products != lengths).nonzero()[0])
            _fail(
                "grid",
                f"t*h*w equal to the valid token count {int(lengths[row])} of sample {row}",
                tuple(grid[row].tolist()),
            )
        self.grid = grid.long()

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @property
    def lengths(self) -> Tensor:
        """Valid tokens per sample, ``[B]``."""
        return self.mask.sum(1)

    def sample(self, b: int) -> VisualTokens:
        """Sample ``b`` alone, unpadded, as a batch of one."""
        n = int(self.mask[b].sum())
        return VisualTokens(
            features=self.features[b : b + 1, :n],
            grid=self.grid[b : b + 1],
            cls_attn=None if self.cls_attn is None else self.cls_attn[b : b + 1, :, :n],
            keys=None if self.keys is None else self.keys[b : b + 1, :n],
            query_attn=None if self.query_attn is None else self.query_attn[b : b + 1, :n],
            text=None if self.text is None else self.text[b : b + 1][:, self.text_mask[b]],
        )

    def signals(self) -> tuple[str, ...]:
        """Names of the optional signals present."""
        return tuple(f.name for f in fields(self) if f.name in SIGNALS and getattr(self, f.name) is not None)


SIGNALS = ("cls_attn", "keys", "text", "query_attn")


@dataclass
class Compressed:
    """What a compressor returns: ``K`` slots per sample, padded to the largest ``K`` in the batch.

    - ``features [B, K, D]``: the slot features (zeros at padding).
    - ``mask [B, K]``: valid slots. ``index [B, K]``: the source token each slot stands for (for a
      merged slot, its representative, e.g. ToMe's destination token), ascending; -1 at padding.
    - ``assign [B, N]``: the slot each source token went to, -1 if dropped or padding.
    - ``sizes [B, K]``: how many source tokens each slot holds, 0 at padding.
    - ``positions``: filled by model adapters that need them (e.g. M-RoPE ids), else None.
    - ``info``: one dict per sample with method-specific facts (e.g. the adaptive count chosen).
    """

    features: Tensor
    mask: Tensor
    index: Tensor
    assign: Tensor
    sizes: Tensor
    method: str = ""
    positions: Tensor | None = None
    info: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> Tensor:
        """Kept slots per sample, ``[B]``."""
        return self.mask.sum(1)
