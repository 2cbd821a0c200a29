"""Tiny random-init LLaVA-NeXT, LLaVA-OneVision and LLaVA-NeXT-Video models, built from configs.

Towers: 3 layers, 56 px crops of 14 px patches (4 x 4 = 16 tokens per crop); AnyRes pinpoints up to
112 x 112 (a 2 x 2 crop grid). Token counts per image: ``[56, 112]`` -> 16 + 4 x 8 + 4 newlines = 52,
``[100, 80]`` -> 16 + 8 x 6 (unpadded) + 8 newlines = 72, ``[56, 56]`` -> 16 + 16 + 4 = 36.
"""

from __future__ import annotations

import torch
from tiny_models import TEXT_SIZES, left_pad  # noqa: F401  (re-exported for the tests)
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextVideoConfig,
    LlavaNextVideoForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
)
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

IMAGE_TOKEN = 100
VIDEO_TOKEN = 101
VOCAB = 128
CROP = 56
PINPOINTS = [[56, 56], [56, 112], [112, 56], [112, 112]]

_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=CROP)
CLIP = dict(model_type="clip_vision_model", patch_size=14, projection_dim=32, **_TOWER)
SIGLIP = dict(model_type="siglip_vision_model", patch_size=14, vision_use_head=False, **_TOWER)
_TEXT = TEXT_SIZES
LLAMA = dict(model_type="llama", **_TEXT)
QWEN2 = dict(model_type="qwen2", **_TEXT)

MODEL_TYPES = ("llava_next", "llava_onevision", "llava_next_video")
VIDEO_TYPES = ("llava_onevision", "llava_next_video")


def tiny(model_type: str, seed: int = 0, **overrides):
    """A tiny model of ``model_type`` (one of :data:`MODEL_TYPES`), in eval mode; ``overrides`` go to its config."""
    torch.manual_seed(seed)
    common = dict(image_token_id=IMAGE_TOKEN, image_grid_pinpoints=PINPOINTS, **overrides)
    if model_type == "llava_next":
        config = LlavaNextConfig(vision_config=CLIP, text_config=LLAMA, **common)
        return LlavaNextForConditionalGeneration(config).eval()
    if model_type == "llava_onevision":
        config = LlavaOnevisionConfig(vision_config=SIGLIP, text_config=QWEN2, video_token_id=VIDEO_TOKEN, **common)
        return LlavaOnevisionForConditionalGeneration(config).eval()
    if model_type == "llava_next_video":
        config = LlavaNextVideoConfig(vision_config=CLIP, text_config=LLAMA, video_token_id=VIDEO_TOKEN, **common)
        return LlavaNextVideoForConditionalGeneration(config).eval()
    raise ValueError(f"model_type: expected one of {MODEL_TYPES}, got {model_type!r}")


def anyres_pixels(sizes: list[list[int]], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixel_values [images, max crops, 3, 56, 56]`` (unused crops zero, as padded) and ``image_sizes``."""
    g = torch.Generator().manual_seed(seed)
    crops = [image_size_to_num_patches(size, PINPOINTS, CROP) for size in sizes]
    pixels = torch.zeros(len(sizes), max(crops), 3, CROP, CROP)
    for i, n in enumerate(crops):
        pixels[i, :n] = torch.randn(n, 3, CROP, CROP, generator=g)
    return pixels, torch.tensor(sizes)


def video_pixels(videos: int, frames: int, seed: int = 2) -> torch.Tensor:
    """Random ``pixel_values_videos``; video 0 has 4x the contrast, so adaptive methods keep other counts on it."""
    pixels = torch.randn(videos, frames, 3, CROP, CROP, generator=torch.Generator().manual_seed(seed))
    pixels[0] *= 4
    return pixels


def prompt(runs: list[tuple[int, int]], before: list[int], after: list[int]) -> list[int]:
    """Text ids, then placeholder runs ``(token id, count)`` separated by a token, then more text."""
    ids = list(before)
    for i, (token, count) in enumerate(runs):
        ids += [token] * count + ([5] if i < len(runs) - 1 else [])
    return ids + list(after)
