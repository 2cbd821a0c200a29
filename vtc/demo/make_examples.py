"""Regenerate the demo's bundled examples (shapes-world scenes and clips) deterministically.

    python -m vtc.demo.make_examples [OUT_DIR]

writes ``examples.json`` plus the PNG images and mp4 clips it names (default: ``vtc/demo/examples/``).
Each entry is a pure function of its generator seed and index, so a rerun gives the same pixels and
questions (the mp4 bytes may differ across PyAV/x264 builds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "examples"

# name -> (media, seed, index, question kind); seeds >= 2000 stay clear of the training and eval splits
SPECS: dict[str, tuple[str, int, int, str]] = {
    "scene-colour": ("image", 2000, 0, "color"),
    "scene-left-of": ("image", 2001, 0, "left_of"),
    "clip-first": ("video", 2002, 0, "first"),
    "clip-entered": ("video", 2003, 0, "entered"),
}
VIDEO_FRAMES = 16


def write_examples(out: str | Path = EXAMPLES_DIR) -> Path:
    """Write the example media and ``examples.json`` (name -> file, media, question, options, answer)."""
    from PIL import Image

    from vtc.data.shapes import make_image, make_video, write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, (media, seed, i, kind) in SPECS.items():
        if media == "image":
            sample = make_image(seed, i, kind=kind)
            file = f"{name}.png"
            Image.fromarray(sample.frames[0]).save(out / file, optimize=True)
        else:
            sample = make_video(seed, i, frames=VIDEO_FRAMES, kind=kind)
            file = f"{name}.mp4"
            write_video(out / file, sample.frames, fps=8)
        index[name] = {
            "file": file,
            "media": media,
            "question": sample.question,
            "options": sample.options,
            "answer": sample.answer_text,
            "source": f"vtc.data.shapes seed={seed} index={i} kind={kind}",
        }
    path = out / "examples.json"
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(write_examples(sys.argv[1] if len(sys.argv) > 1 else EXAMPLES_DIR))
