"""Tiny random-init Qwen2-VL, Qwen2.5-VL and Qwen3-VL models (about 0.2M parameters) and prompt helpers.

Token ids: ``<vision_start>`` 98, ``<vision_end>`` 99, image placeholder 100, video placeholder 101,
pad 0. Prompts are built from pieces: ints are text tokens, ``("image", grid)`` and ``("video", grid)``
expand to the placeholder runs the Qwen processors emit (Qwen3-VL: one ``<ts> <vision_start> frame
<vision_end>`` group per frame, with a timestamp text token before each).
"""

from __future__ import annotations

import torch
from tiny_models import TEXT_SIZES
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

VERSIONS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
VOCAB = 128
IMAGE, VIDEO, START, END, TIMESTAMP = 100, 101, 98, 99, 3
MERGE = 2
TOKENS = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
ROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
TEXT_DEFAULT = dict(
    TEXT_SIZES,
    bos_token_id=None,
    eos_token_id=None,  # no early stop: greedy runs always give max_new_tokens
    rope_parameters=ROPE,
)
VISION = {
    "qwen2_vl": dict(
        depth=3, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14, temporal_patch_size=2
    ),
    # windows of 2 x 2 merged tokens (56 px); block 1 attends to whole frames, blocks 0 and 2 to windows
    "qwen2_5_vl": dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=64,
        patch_size=14,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
    ),
    "qwen3_vl": dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=4,
        out_hidden_size=64,
        patch_size=16,
        temporal_patch_size=2,
        num_position_embeddings=16,
        deepstack_visual_indexes=[0, 1],
    ),
}


def tiny_qwen(version: str, seed: int = 0, text_layers: int = 2):
    """A tiny ``Qwen*VLForConditionalGeneration`` (3 ViT blocks, 2 LLM layers), sdpa attention, eval mode."""
    torch.manual_seed(seed)
    vision = dict(VISION[version], spatial_merge_size=MERGE)
    TEXT = dict(TEXT_DEFAULT, num_hidden_layers=text_layers)
    if version == "qwen2_vl":
        config = Qwen2VLConfig(vision_config=vision, text_config=TEXT, **TOKENS)
        return Qwen2VLForConditionalGeneration(config).eval()
    if version == "qwen2_5_vl":
        config = Qwen2_5_VLConfig(vision_config=vision, text_config=TEXT, **TOKENS)
        return Qwen2_5_VLForConditionalGeneration(config).eval()
    text = dict(TEXT, head_dim=16, rope_parameters=dict(ROPE, mrope_interleaved=True))
    config = Qwen3VLConfig(vision_config=vision, text_config=text, **TOKENS)
    return Qwen3VLForConditionalGeneration(config).eval()


def tokens_of(grid: tuple[int, int, int]) -> int:
    t, h, w = grid
    return t * h * w // MERGE**2


def pixels(model, grids: list[tuple[int, int, int]], seed: int) -> torch.Tensor:
    """Random flattened patches for ``grids`` (t, h, w in patches), as the Qwen processors lay them out."""
    vision = model.config.vision_config
    dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    rows = sum(t * h * w for t, h, w in grids)
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def expand(version: str, pieces: list) -> list[int]:
    """Token ids for ``pieces``: ints, ``("image", grid)`` or ``("video", grid)``."""
    ids: list[int] = []
    for piece in pieces:
        if isinstance(piece, int):
            ids.append(piece)
            continue
        kind, grid = piece
        if kind == "image":
            ids += [START] + [IMAGE] * tokens_of(grid) + [END]
        elif version == "qwen3_vl":  # timestamps separate the frames; each frame is its own group
            t, h, w = grid
            for _ in range(t):
                ids += [TIMESTAMP, START] + [VIDEO] * tokens_of((1, h, w)) + [END]
        else:
            ids += [START] + [VIDEO] * tokens_of(grid) + [END]
    return ids


def pad(rows: list[list[int]], side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids, mask = [], []
    for r in rows:
        fill = [0] * (width - len(r))
        ids.append(fill + r if side == "left" else r + fill)
        mask.append([0] * len(fill) + [1] * len(r) if side == "left" else [1] * len(r) + [0] * len(fill))
    return torch.tensor(ids), torch.tensor(mask)


def type_ids(ids: torch.Tensor) -> torch.Tensor:
    """``mm_token_type_ids`` as the processors return them: 0 text, 1 image, 2 video."""
    return ((ids == IMAGE).long() + 2 * (ids == VIDEO).long()).int()
