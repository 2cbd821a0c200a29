"""Prompts in a processor's own format: what a model expects around one image or video and a question."""

from __future__ import annotations

from typing import Any


def media_prompt(processor: Any, question: str, media: str = "image") -> str:
    """The processor's own prompt format, its chat template with one image or video, or ``<image>\\nquestion``."""
    if hasattr(processor, "build_prompt"):
        return processor.build_prompt(question, media)
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": media}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"{getattr(processor, media + '_token')}\n{question}"
