"""Frame loading: uniform and fps sampling, both backends, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest

from vtc.data.shapes import make_video, write_video
from vtc.data.video import load_video, rate_indices, uniform_indices

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = make_video(4, 2, frames=16).frames
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_video(path, frames, fps=8)
    return path, frames


def test_sampling_indices_by_hand():
    assert uniform_indices(16, 4) == [2, 6, 10, 14]  # centres of 4 segments of 4 frames
    assert uniform_indices(3, 8) == [0, 1, 2]
    assert rate_indices(16, native_fps=8, fps=2, max_frames=64) == [0, 4, 8, 12]
    assert rate_indices(16, native_fps=8, fps=8, max_frames=4) == [2, 6, 10, 14]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_backends_return_the_sampled_frames(clip, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    path, original = clip
    frames = load_video(path, num_frames=4, backend=backend)
    assert len(frames) == 4 and frames[0].shape == (224, 224, 3) and frames[0].dtype == np.uint8
    for got, index in zip(frames, [2, 6, 10, 14], strict=True):
        assert np.abs(got.astype(int) - original[index]).mean() < 6
    assert len(load_video(path, fps=4, backend=backend)) == 8


def test_bad_videos_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_video(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 64)
    for backend in ("pyav", "auto"):
        with pytest.raises(ValueError, match="cannot decode|no frames"):
            load_video(corrupt, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        load_video(corrupt, backend="opencv")
    with pytest.raises(ValueError, match="num_frames"):
        load_video(corrupt, num_frames=0)
