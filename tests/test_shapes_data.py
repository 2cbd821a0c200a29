"""The shapes-world generator: deterministic per seed, answers consistent with the scene, decodable videos."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vtc.data import shapes
from vtc.data.shapes import COLORS, make_image, make_video, write_split


def test_same_seed_and_index_give_the_same_sample():
    for kind in shapes.IMAGE_KINDS:
        a, b = make_image(3, 11, kind=kind), make_image(3, 11, kind=kind)
        assert np.array_equal(a.frames[0], b.frames[0]) and a.question == b.question and a.options == b.options
    v1, v2 = make_video(3, 5), make_video(3, 5)
    assert all(np.array_equal(x, y) for x, y in zip(v1.frames, v2.frames, strict=True))
    assert not np.array_equal(make_image(3, 11).frames[0], make_image(4, 11).frames[0])
    assert not np.array_equal(make_image(3, 11).frames[0], make_image(3, 12).frames[0])


def pixel_color(sample, obj) -> tuple[int, int, int]:
    """The rendered colour at an object's centre (its own pixel: the layout says which object is there)."""
    frame, layout = sample.frames[0], sample.layout[0]
    index = sample.objects[0].index(obj)
    ys, xs = np.nonzero(layout == index)
    return tuple(int(c) for c in np.median(frame[ys, xs], axis=0))


@pytest.mark.parametrize("index", range(40))
def test_image_answers_follow_the_rendered_scene(index):
    s = make_image(7, index)
    objs = s.objects[0]
    assert s.answer_text in s.options and s.options[ord(s.answer) - ord("A")] == s.answer_text
    assert len(set(s.options)) == len(s.options)
    words = s.question.split()
    if s.kind == "color":
        shape = words[4]
        matching = [o for o in objs if o.shape == shape]
        assert len(matching) == 1 and pixel_color(s, matching[0]) == COLORS[s.answer_text]
    elif s.kind == "count":
        assert int(s.answer_text) == sum(o.shape == words[2] for o in objs)
    elif s.kind == "exists":
        color, shape = words[3], words[4]
        assert s.answer_text == ("yes" if any((o.color, o.shape) == (color, shape) for o in objs) else "no")
    else:
        color, shape = words[-3], words[-2]
        refs = [o for o in objs if (o.color, o.shape) == (color, shape)]
        assert len(refs) == 1
        left = [o for o in objs if o.x < refs[0].x]
        assert [o.shape for o in left] == [s.answer_text]
    # every object is visible: its pixels are in the layout
    assert {int(v) for v in np.unique(s.layout[0])} - {-1} == set(range(len(objs)))


@pytest.mark.parametrize("index", range(24))
def test_video_answers_follow_the_tracks(index):
    s = make_video(9, index, frames=12)
    tracks = s.extra["tracks"]
    assert len(s.frames) == 12 and s.answer_text in s.options
    if s.kind == "direction":
        color, shape = s.question.split()[4:6]
        target = [t for t in tracks if (t["color"], t["shape"]) == (color, shape)]
        assert len(target) == 1 and target[0]["motion"] == s.answer_text
        # the pixels agree: the centroid of the target's pixels moves that way
        ys0, xs0 = np.nonzero(s.layout[0] == tracks.index(target[0]))
        ys1, xs1 = np.nonzero(s.layout[-1] == tracks.index(target[0]))
        dx, dy = xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean()
        seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert seen == s.answer_text
    elif s.kind == "first":
        starts = [t["start"] for t in tracks]
        assert starts.count(min(starts)) == 1 and tracks[starts.index(min(starts))]["shape"] == s.answer_text
        first_frame_objects = {int(v) for v in np.unique(s.layout[0])} - {-1}
        assert [tracks[i]["shape"] for i in first_frame_objects] == [s.answer_text]
    elif s.kind == "entered":
        assert int(s.answer_text) == sum(t["start"] > 0 for t in tracks)
    else:
        shape = s.question.split()[4]
        target = [t for t in tracks if t["shape"] == shape]
        assert len(target) == 1 and target[0]["color"] == s.answer_text != target[0]["new_color"]


def test_question_objects_by_hand():
    objs = [shapes.Shape("circle", "red", 20, 50, 60), shapes.Shape("square", "blue", 20, 100, 60),
            shapes.Shape("circle", "green", 20, 150, 60)]

    def image(kind, question):
        return shapes.Sample([np.zeros((4, 4, 3), np.uint8)], kind, question, ["x"], "x", [], [objs])

    assert shapes.question_objects(image("count", "how many circle are there ?")) == [0, 2]
    assert shapes.question_objects(image("color", "what colour is the square ?")) == [1]
    assert shapes.question_objects(image("exists", "is there a blue circle ?")) == []
    assert shapes.question_objects(image("exists", "is there a green circle ?")) == [2]
    assert shapes.question_objects(image("left_of", "which shape is left of the blue square ?")) == [1, 0]
    assert shapes.question_objects(image("left_of", "which shape is left of the red square ?")) == []


@pytest.mark.parametrize("index", range(16))
def test_question_objects_hold_the_answer(index):
    """The objects a question is about are enough to answer it (guidance for the tiny models' training)."""
    s = make_image(11, index)
    objs = [s.objects[0][i] for i in shapes.question_objects(s)]
    answered = {
        "color": lambda: len(objs) == 1 and objs[0].color,
        "count": lambda: str(len(objs)),
        "exists": lambda: "yes" if objs else "no",
        "left_of": lambda: objs[1].shape if len(objs) == 2 else None,
    }[s.kind]()
    assert answered == s.answer_text, (s.question, s.answer_text, objs)
    v = make_video(11, index, frames=12)
    tracks = [v.extra["tracks"][i] for i in shapes.question_objects(v)]
    answered = {
        "direction": lambda: len(tracks) == 1 and tracks[0]["motion"],
        "first": lambda: len(tracks) == 1 and tracks[0]["shape"],
        "entered": lambda: str(len(tracks)),
        "start_color": lambda: len(tracks) == 1 and tracks[0]["color"],
    }[v.kind]()
    assert answered == v.answer_text, (v.question, v.answer_text, tracks)


def test_answers_are_balanced():
    """The generator draws answers first: no answer dominates a question kind."""
    for kind, n_answers in [("color", 6), ("count", 4), ("exists", 2)]:
        counts = Counter(make_image(5, i, kind=kind).answer_text for i in range(240))
        assert len(counts) == n_answers and max(counts.values()) < 2.0 * 240 / n_answers, (kind, counts)
    letters = Counter(make_image(5, i, kind="color").answer for i in range(240))
    assert len(letters) == 4 and max(letters.values()) < 2.0 * 60


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        make_image(0, 0, kind="size")
    with pytest.raises(ValueError, match="frames"):
        make_video(0, 0, frames=2)
    with pytest.raises(ValueError, match="n:"):
        write_split(tmp_path, n=0)
    with pytest.raises(ValueError, match="split"):
        write_split(tmp_path, split="dev", n=2)


def test_written_split_has_media_and_lmms_eval_fields(tmp_path):
    pytest.importorskip("av")
    path = write_split(tmp_path, split="val", n=4, video_fraction=0.5, frames=8)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 4 and [line["media_type"] for line in lines] == ["image", "image", "video", "video"]
    for line in lines:
        media = line.get("video") or line.get("image")
        assert (tmp_path / media).exists()
        assert line["candidates"] == line["options"] and line["answer"] in "ABCD"
        assert line["options"][ord(line["answer"]) - 65] == line["answer_text"]
        assert line["question"] in line["prompt_mc"]
    # regenerating gives the same annotations (deterministic per split seed)
    again = write_split(tmp_path / "again", split="val", n=4, video_fraction=0.5, frames=8)
    assert again.read_text() == path.read_text()


def test_videos_decode_with_pyav_and_decord(tmp_path):
    av = pytest.importorskip("av")
    sample = make_video(2, 1, frames=8)
    path = tmp_path / "clip.mp4"
    shapes.write_video(path, sample.frames)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (224, 224, 3)
    assert np.abs(frames[0].astype(int) - sample.frames[0]).mean() < 6  # lossy, but close
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(path))
    assert len(reader) == 8
    assert np.abs(reader[7].asnumpy().astype(int) - sample.frames[7]).mean() < 6
