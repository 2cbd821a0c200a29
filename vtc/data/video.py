"""Reading frames from video files: decord by default, PyAV as the fallback (or by choice).

``load_video(path, num_frames=16)`` samples frames uniformly (the centre of ``num_frames`` equal
segments); ``fps=`` samples at a fixed rate instead (capped at ``max_frames``). Frames come back as RGB
``uint8`` arrays ``[H, W, 3]``; resizing is the model processor's job. Every failure (missing file,
unreadable or corrupt container, zero frames, missing decoders) is a ``ValueError`` that names the file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BACKENDS = ("auto", "decord", "pyav")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def is_video(path: str | Path) -> bool:
    return str(path).lower().endswith(VIDEO_SUFFIXES)


def uniform_indices(total: int, num_frames: int) -> list[int]:
    """The centre frame of each of ``num_frames`` equal segments (all frames if there are fewer)."""
    if total <= num_frames:
        return list(range(total))
    return [int((i + 0.5) * total / num_frames) for i in range(num_frames)]


def rate_indices(total: int, native_fps: float, fps: float, max_frames: int) -> list[int]:
    """Frames at ``fps`` per second of video, evenly thinned to ``max_frames`` if there are more."""
    step = max(native_fps / fps, 1.0)
    picks = [int(i * step) for i in range(int(total / step))] or [0]
    if len(picks) > max_frames:
        picks = [picks[i] for i in uniform_indices(len(picks), max_frames)]
    return picks


def pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    has = {"decord": importlib.util.find_spec("decord") is not None, "pyav": importlib.util.find_spec("av") is not None}
    if backend == "auto":
        for name in ("decord", "pyav"):
            if has[name]:
                return name
        raise ValueError("video: reading videos needs decord or PyAV: pip install 'vtc[video]'")
    if not has[backend]:
        raise ValueError(f"video: backend {backend!r} is not installed: pip install 'vtc[video]'")
    return backend


def load_video(path: str | Path, num_frames: int = 16, *, fps: float | None = None, max_frames: int = 64,
               backend: str = "auto") -> list[np.ndarray]:
    """RGB frames ``[H,W,3] uint8`` sampled from ``path`` (uniformly, or at ``fps`` when given)."""
    path = Path(path)
    if num_frames < 1 or (fps is not None and fps <= 0):
        raise ValueError(f"video: expected num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    if not path.is_file():
        raise ValueError(f"video: no such file {path}")
    backend = pick_backend(backend)
    try:
        frames = read_decord(path, num_frames, fps, max_frames) if backend == "decord" else read_pyav(
            path, num_frames, fps, max_frames)
    except Exception as err:  # decoders raise their own types (DECORDError, av.error.*): normalise them
        raise ValueError(f"video: cannot decode {path} with {backend} ({type(err).__name__}: {err})") from None
    if not frames:
        raise ValueError(f"video: {path} has no frames")
    return frames


def read_decord(path: Path, num_frames: int, fps: float | None, max_frames: int) -> list[np.ndarray]:
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    total = len(reader)
    if total == 0:
        return []
    if fps is None:
        picks = uniform_indices(total, num_frames)
    else:
        picks = rate_indices(total, reader.get_avg_fps() or fps, fps, max_frames)
    return list(reader.get_batch(picks).asnumpy())


def read_pyav(path: Path, num_frames: int, fps: float | None, max_frames: int) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        native = float(stream.average_rate or fps or 1)
    if fps is None:
        picks = uniform_indices(len(frames), num_frames)
    else:
        picks = rate_indices(len(frames), native, fps, max_frames)
    return [frames[i] for i in picks] if frames else []
