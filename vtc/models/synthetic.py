"""Random-init VLMs at real widths and reduced depth, with synthetic prompts, for speed benchmarks.

``real_width_model("llava-1.5-7b", llm_layers=4, tower_layers=4)`` builds a stock transformers model
whose every layer has the shapes of the published checkpoint (hidden sizes, heads, MLP widths,
vocabulary, image resolution) but only the given number of LLM and vision layers; the full depths are
kept in :class:`RealWidth` so that a benchmark can extrapolate per layer. Nothing is downloaded.

:func:`synthetic_inputs` makes what the model's processor would return for ``batch`` prompts of
``text_tokens`` text tokens around one image: placeholder runs of the right length, random pixels, and
for Qwen the grid and ``mm_token_type_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class RealWidth:
    """A published VLM's shapes: the config builder, its full depths and the image it is benchmarked on."""

    name: str
    family: str  # "llava", "qwen2_vl" or "llava_onevision"
    llm_depth: int
    tower_depth: int
    image_size: int  # pixels per side of the synthetic image (or of each video frame)
    visual_tokens: int  # visual tokens that image (or video) gives the LLM
    frames: int = 1  # > 1: the media is a video of this many frames


REAL_WIDTHS = {
    "llava-1.5-7b": RealWidth("llava-1.5-7b", "llava", 32, 24, 336, 576),
    # 672 px: 48 x 48 patches of 14, merged 2 x 2 into 576 LLM tokens (LLaVA-1.5's count, for comparison)
    "qwen2-vl-7b": RealWidth("qwen2-vl-7b", "qwen2_vl", 28, 32, 672, 576),
    # an 8-frame video: 27 x 27 SigLIP patches per 384-px frame, pooled to 14 x 14, then one newline
    "llava-onevision-7b": RealWidth("llava-onevision-7b", "llava_onevision", 28, 26, 384, 8 * 196 + 1, frames=8),
}


def _llava_config(llm_layers: int, tower_layers: int) -> Any:
    from transformers import LlavaConfig

    vision = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                  num_hidden_layers=tower_layers, num_attention_heads=16, image_size=336, patch_size=14,
                  projection_dim=768, hidden_act="quick_gelu")
    text = dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                num_hidden_layers=llm_layers, num_attention_heads=32, num_key_value_heads=32,
                max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=None)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000, image_seq_length=576,
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu")


QWEN_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653)


def _qwen2_vl_config(llm_layers: int, tower_layers: int) -> Any:
    from transformers import Qwen2VLConfig

    vision = dict(depth=tower_layers, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4,
                  patch_size=14, temporal_patch_size=2, spatial_merge_size=2)
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=llm_layers,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
                bos_token_id=None, eos_token_id=None, pad_token_id=0)
    return Qwen2VLConfig(vision_config=vision, text_config=text, **QWEN_TOKENS)


def _llava_onevision_config(llm_layers: int, tower_layers: int) -> Any:
    from transformers import LlavaOnevisionConfig

    vision = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                  num_hidden_layers=tower_layers, num_attention_heads=16, image_size=384, patch_size=14,
                  vision_use_head=False)
    text = dict(model_type="qwen2", vocab_size=152128, hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=llm_layers, num_attention_heads=28, num_key_value_heads=4,
                max_position_embeddings=32768, rope_theta=1_000_000.0, bos_token_id=None, eos_token_id=None,
                pad_token_id=0)
    return LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_id=151646,
                                video_token_id=151647, vision_feature_layer=-1,
                                vision_feature_select_strategy="full", image_grid_pinpoints=[[384, 384]])


def real_width_config(name: str, llm_layers: int, tower_layers: int) -> Any:
    """The transformers config of ``name`` (see ``REAL_WIDTHS``) with ``llm_layers`` and ``tower_layers``."""
    if name not in REAL_WIDTHS:
        raise ValueError(f"unknown real-width config {name!r}; known: {', '.join(REAL_WIDTHS)}")
    for label, value in (("llm_layers", llm_layers), ("tower_layers", tower_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 2:
            raise ValueError(f"{label}: expected an integer >= 2, got {value!r}")
    build = {"llava": _llava_config, "qwen2_vl": _qwen2_vl_config,
             "llava_onevision": _llava_onevision_config}[REAL_WIDTHS[name].family]
    return build(llm_layers, tower_layers)


def real_width_model(name: str, llm_layers: int, tower_layers: int, dtype: torch.dtype = torch.bfloat16,
                     device: str = "cpu", seed: int = 0) -> Any:
    """A random-init model of ``name``'s widths at the given depths, in eval mode."""
    from transformers import AutoModelForImageTextToText

    config = real_width_config(name, llm_layers, tower_layers)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model.eval()


def synthetic_inputs(model: Any, spec: RealWidth, batch: int, text_tokens: int, seed: int = 0,
                     device: Any = None) -> dict[str, Tensor]:
    """Processor-shaped inputs: per row, half the text, one image's placeholders, the other half (on
    ``device``, by default the model's)."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    vocab = config.get_text_config().vocab_size
    low = 1000  # ordinary word ids, clear of the special tokens at both ends of the vocabularies
    before, after = text_tokens // 2, text_tokens - text_tokens // 2
    device, dtype = device or model.device, model.dtype

    def text(n: int) -> list[int]:
        return torch.randint(low, min(vocab, 30000), (n,), generator=gen).tolist()

    if spec.family == "llava_onevision":
        rows = [text(before) + [config.video_token_id] * spec.visual_tokens + text(after) for _ in range(batch)]
        ids = torch.tensor(rows)
        pixels = torch.randn(batch, spec.frames, 3, spec.image_size, spec.image_size, generator=gen)
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                "pixel_values_videos": pixels.to(device, dtype)}
    if spec.family == "llava":
        rows = [text(before) + [config.image_token_id] * spec.visual_tokens + text(after) for _ in range(batch)]
        ids = torch.tensor(rows)
        pixels = torch.randn(batch, 3, spec.image_size, spec.image_size, generator=gen)
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                "pixel_values": pixels.to(device, dtype)}
    vision = config.vision_config
    side = spec.image_size // vision.patch_size
    placeholders = side * side // vision.spatial_merge_size**2
    rows = [text(before) + [config.vision_start_token_id] + [config.image_token_id] * placeholders
            + [config.vision_end_token_id] + text(after) for _ in range(batch)]
    ids = torch.tensor(rows)
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(batch * side * side, patch_dim, generator=gen)
    grid = torch.tensor([[1, side, side]] * batch)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "pixel_values": pixels.to(device, dtype), "image_grid_thw": grid.to(device),
            "mm_token_type_ids": (ids == config.image_token_id).int().to(device)}
