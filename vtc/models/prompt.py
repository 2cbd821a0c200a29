"""Prompts in a processor's own format: what a model expects around one image or video and a question."""

from __future__ import annotations

from typing import Any


def media_prompt(processor: Any, question: str, media: str | None = "image") -> str:
    """The processor's own prompt format, its chat template with one image or video, or ``<image>``, a line
    break and the question. ``media=None``: the same prompt without the media (the text-only control)."""
    if hasattr(processor, "build_prompt"):
        return without_media(processor, processor.build_prompt(question, media or "image"), media)
    if getattr(processor, "chat_template", None):
        content = [{"type": "text", "text": question}]
        if media is not None:
            content.insert(0, {"type": media})
        messages = [{"role": "user", "content": content}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return question if media is None else f"{getattr(processor, media + '_token')}\n{question}"


def prepare_batching(processor: Any) -> int | None:
    """Set up ``processor`` for batched generation with a decoder-only LLM (padding on the left) and return the
    pad id ``generate`` should use (the tokenizer's pad, else its end-of-sequence token). vtc's own tiny
    processor pads on the left already."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None and not hasattr(processor, "build_prompt"):
        tokenizer.padding_side = "left"
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if pad is not None else getattr(tokenizer, "eos_token_id", None)


def without_media(processor: Any, prompt: str, media: str | None) -> str:
    """``prompt`` as it is, or (``media=None``) with the processor's media markers taken out."""
    if media is not None:
        return prompt
    for kind in ("image", "video"):
        marker = getattr(processor, f"{kind}_token", None)
        if marker:
            prompt = prompt.replace(marker, " ")
    return " ".join(prompt.split())
