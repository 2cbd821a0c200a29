"""The demo's inputs: bundled examples, uploaded images and videos (with their limits), and the question."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vtc.data.video import VIDEO_SUFFIXES
from vtc.demo.overlay import contact_sheet, fit

EXAMPLES_DIR = Path(__file__).parent / "examples"
MAX_VIDEO_BYTES = 200 * 1024 * 1024
DEFAULT_FRAMES = 16
MAX_FRAMES = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Media:
    """One input: an image, or the frames sampled from a video (``pictures`` in both cases)."""

    kind: str  # "image" or "video"
    pictures: list[Image.Image]
    name: str

    @property
    def pixels(self) -> Any:
        """What the processor takes: the PIL image, or the frames as RGB uint8 arrays."""
        import numpy as np

        if self.kind == "image":
            return self.pictures[0]
        return [np.asarray(p) for p in self.pictures]


def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, dict]:
    """The bundled examples: name -> {file, media, question, options, answer}."""
    path = folder / "examples.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def example_path(name: str, folder: Path = EXAMPLES_DIR) -> Path:
    examples = load_examples(folder)
    if name not in examples:
        raise ValueError(f"example: unknown example {name!r}; bundled: {', '.join(examples) or 'none'}")
    return folder / examples[name]["file"]


def media_kind(path: str | Path) -> str:
    """``"image"`` or ``"video"`` from the file name, or a clear error for other file types."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise ValueError(
        f"media: {Path(path).name} is not a supported file type; expected an image "
        f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) or a video ({', '.join(s[1:] for s in VIDEO_SUFFIXES)})"
    )


def load_media(path: str | Path | None, frames: int = DEFAULT_FRAMES, max_frames: int = MAX_FRAMES) -> Media:
    """Read an image (≤ 20 MP) or sample ``frames`` frames (≤ ``max_frames``) from a video (≤ 200 MB)."""
    if not path:
        raise ValueError("media: upload an image or a video, or pick a bundled example")
    path = Path(path)
    kind = media_kind(path)
    if not path.is_file():
        raise ValueError(f"media: no such file {path.name}")
    if kind == "image":
        from vtc.data.image import load_image

        return Media("image", [load_image(str(path), name=path.name)], path.name)
    size = path.stat().st_size
    if size > MAX_VIDEO_BYTES:
        raise ValueError(f"video: {path.name} is {size / 2**20:.0f} MB, over the 200 MB limit")
    frames = int(frames)
    if not 1 <= frames <= max_frames:
        raise ValueError(f"frames: expected 1..{max_frames} frames per video, got {frames}")
    from vtc.data.video import load_video

    try:
        arrays = load_video(path, num_frames=frames)
    except ValueError as err:  # name the user's file, never the server's copy of it
        raise ValueError(str(err).replace(str(path), path.name)) from None
    return Media("video", [Image.fromarray(a).convert("RGB") for a in arrays], path.name)


def resolve_media(upload: str | Path | None, example: str | None, frames: int = DEFAULT_FRAMES,
                  max_frames: int = MAX_FRAMES) -> Media:
    """The uploaded file if there is one, else the chosen bundled example."""
    if upload:
        return load_media(upload, frames, max_frames)
    if example:
        return load_media(example_path(example), frames, max_frames)
    return load_media(None)


def preview(media: Media) -> Image.Image:
    """A still of the input: the image, or a contact sheet of the sampled frames."""
    return fit(media.pictures[0]) if media.kind == "image" else contact_sheet(media.pictures[:16])


def resolve_question(question: str | None, example: str | None) -> str:
    """The typed question, else the example's suggested one."""
    question = (question or "").strip()
    if not question and example:
        question = load_examples().get(example, {}).get("question", "")
    if not question:
        raise ValueError("question: type a question about the image or video")
    return question
