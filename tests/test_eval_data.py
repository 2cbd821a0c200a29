"""`vtc eval` data: the lmms-eval field mapping of each video set, format detection, media paths, the grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vtc.core.spec import MethodSpec
from vtc.eval.data import Item, detect_format, load_items, split_inline
from vtc.eval.grid import BASELINE, baseline_of, build_grid, complete_grid, parse_methods

FIXTURES = Path(__file__).parent / "data" / "lmms_eval"

# file, format, then per record: id, media file name, question start, options, answer letter
EXPECTED = [
    ("videomme.json", "videomme", [
        ("001-1", "fFjv93ACGo8.mp4", "When demonstrating",
         ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."], "C"),
        ("001-2", "fFjv93ACGo8.mp4", "What is the genre", None, "A"),
    ]),
    ("mvbench_action_sequence.json", "mvbench", [
        ("0", "ZS9XR.mp4", "What happened after the person took the food?",
         ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle.", "Took the box."], "A"),
        ("1", "Z0ZGM.mp4", "What happened after the person held", None, "D"),
    ]),
    ("nextqa_mc_test.jsonl", "nextqa", [
        ("4010069381-6", "4010069381.mp4", "how do the two man play the instrument",
         ["roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand"], "A"),
        ("4882821564-10", "4882821564.mp4", "why did the boy clap", None, "D"),
    ]),
    ("egoschema_subset.jsonl", "egoschema", [
        ("0074f737-11cb-497d-8d07-77c3a8127391", "0074f737-11cb-497d-8d07-77c3a8127391.mp4", "Taking into account",
         ["C is cleaning dishes.", "C is cooking a meal.", "C is preparing a salad.", "C is organizing the kitchen.",
          "C is repairing a drawer."], "B"),
        ("00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e.mp4", "What was the primary",
         ["To provide hydration.", "To clean the paintbrush.", "To add water to the paint.", "To water the plant.",
          "To mix the colours."], "B"),
    ]),
    ("mlvu_dev.json", "mlvu", [
        ("0", "1_plotQA/movie101_66.mp4", "What color is the main male character in the video?",
         ["Yellow", "Red", "Green", "Blue"], "A"),
        ("1", "4_count/count_21.mp4", "How many times does the person jump?", ["2", "4", "5", "3"], "D"),
    ]),
    ("longvideobench_val_v.jsonl", "longvideobench", [
        ("86CxyhFV9MI_0", "86CxyhFV9MI.mp4", "In the video, which subtitles",
         ["A man in white", "A woman in red", "A person with a hat", "A child"], "C"),
        ("f3Mj0bbkDkY_1", "f3Mj0bbkDkY.mp4", "What does the woman hold",
         ["a phone", "a cup", "a book", "nothing", "a bag"], "E"),
    ]),
    ("tempcompass_multi_choice.jsonl", "tempcompass", [
        ("1006821739-direction-0", "1006821739.mp4", "What is the direction of the camera movement?",
         ["left", "right", "up", "down"], "B"),
        ("1008374446-speed-1", "1008374446.mp4", "How fast is the car driving?",
         ["slowly", "at a normal speed", "quickly"], "C"),
    ]),
]


@pytest.mark.parametrize(("name", "fmt", "records"), EXPECTED, ids=[e[1] for e in EXPECTED])
def test_lmms_eval_field_mapping(name, fmt, records, tmp_path):
    path = FIXTURES / name
    first = json.loads(path.read_text())[0] if path.suffix == ".json" else json.loads(path.read_text().splitlines()[0])
    assert detect_format(first) == fmt
    items = load_items(path, media_root=tmp_path)
    assert items == load_items(path, fmt, media_root=tmp_path)  # auto-detection agrees with the named format
    assert len(items) == len(records)
    for item, (sample_id, media, question, options, answer) in zip(items, records, strict=True):
        assert item.task == path.stem and item.id == sample_id and item.media_type == "video"
        assert item.media == str(tmp_path / media)  # missing files: the first candidate under the root
        assert item.question.startswith(question) and "\n" not in item.question
        if options is not None:
            assert list(item.options) == options
        assert item.answer == answer
        assert item.meta["format"] == fmt


def test_existing_media_wins_among_candidates(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fFjv93ACGo8.mkv").write_bytes(b"")
    (tmp_path / "0074f737-11cb-497d-8d07-77c3a8127391.MP4").write_bytes(b"")
    assert load_items(FIXTURES / "videomme.json", media_root=tmp_path)[0].media == str(
        tmp_path / "data" / "fFjv93ACGo8.mkv")
    assert load_items(FIXTURES / "egoschema_subset.jsonl", media_root=tmp_path)[0].media.endswith(".MP4")


def test_vtc_jsonl_images_videos_and_short_answers(tmp_path):
    records = [
        {"id": "a", "image": "img/a.png", "question": "what colour ?", "options": ["red", "blue"], "answer": "B"},
        {"id": "b", "video": "/abs/b.mp4", "media_type": "video", "question": "which way ?",
         "candidates": ["left", "right"], "answer": "left"},
        {"id": "c", "image": "c.png", "question": "how many ?", "answer": "2", "answers": ["two"], "task": "count"},
    ]
    path = tmp_path / "annotations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    a, b, c = load_items(path)
    assert (a.task, a.media, a.media_type, a.options, a.answer, a.answer_text) == (
        tmp_path.name, str(tmp_path / "img/a.png"), "image", ("red", "blue"), "B", "blue")
    assert (b.media, b.media_type, b.answer) == ("/abs/b.mp4", "video", "A")
    assert (c.task, c.options, c.answer, c.accepted) == ("count", (), "2", ("two",))
    assert [it.key for it in load_items(path, limit=1)] == [f"{tmp_path.name}/a", "count/c"]  # per task


def test_data_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"videoID": "x", "question": "q", "options": ["A. a"], "answer": "C"}) + "\n")
    with pytest.raises(ValueError, match="record 0.*option letter"):
        load_items(bad)
    bad.write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(ValueError, match="pass --format"):
        load_items(bad)
    with pytest.raises(ValueError, match="does not fit format 'nextqa'"):
        load_items(FIXTURES / "videomme.json", "nextqa")
    with pytest.raises(ValueError, match="no such annotation file"):
        load_items(tmp_path / "missing.jsonl")
    dup = tmp_path / "dup.jsonl"
    dup.write_text(2 * (json.dumps({"id": "same", "image": "a.png", "question": "q", "answer": "x"}) + "\n"))
    with pytest.raises(ValueError, match="duplicate sample ids"):
        load_items(dup)


def test_inline_options():
    assert split_inline("Which ?\n(A) x\n(B) y\nOnly give the best option.") == ("Which ?", ["x", "y"])
    assert split_inline("Which ? (A) x (B) y") == ("Which ?", ["x", "y"])
    assert split_inline("A. is not an option here") == ("", ["is not an option here"])
    assert split_inline("No options") == ("No options", [])


def test_item_key():
    assert Item("t", "7", "m.mp4", "video", "q").key == "t/7"


def test_grid_always_has_none_and_the_iso_token_pool():
    grid = build_grid("divprune:0.25,visionzip:0.11,tome:count=16,prumerge:adaptive,divprune:0.25", [0.25])
    labels = [s.label for s in grid]
    assert labels == ["none", "text-only", "pool:0.25", "divprune:0.25", "pool:0.11", "visionzip:0.11",
                      "pool:count=16", "tome:count=16", "prumerge:adaptive"]
    assert [baseline_of(s) for s in grid] == [None, None, None, "pool:0.25", None, "pool:0.11", None, "pool:count=16",
                                              None]
    assert [s.label for s in build_grid("none", [0.5])] == ["none", "text-only"]
    bare = [s.label for s in parse_methods("divprune", [0.25, 0.11])]
    assert bare == ["divprune:0.25", "divprune:0.11"]
    every = build_grid("all", [0.25, 0.11])
    import vtc

    projector = {m.name for m in vtc.list_methods() if m.stage == "projector"}
    assert {s.name for s in every} == projector | {"none", "text-only"} and len(every) == 2 + 2 * len(projector)
    default = [s.label for s in build_grid("default", [0.25, 0.11])]
    assert default == ["none", "text-only", "pool:0.25", "divprune:0.25", "visionzip:0.25", "fastv:0.25", "pool:0.11",
                       "divprune:0.11", "visionzip:0.11", "fastv:0.11"]
    assert complete_grid([MethodSpec(BASELINE, {"ratio": 0.5})])[2].label == "pool:0.5"  # no duplicate


def test_grid_from_yaml_and_json(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"ratios": [0.5], "methods": ["divprune", {"name": "dart", "ratio": 0.25, "pivots": 4},
                                                             {"name": "tome", "count": 8}]}))
    assert [s.label for s in build_grid(str(path), [0.1])] == [
        "none", "text-only", "pool:0.5", "divprune:0.5", "pool:0.25", "dart:0.25[pivots=4]", "pool:count=8",
        "tome:count=8"]
    pytest.importorskip("yaml")
    yml = tmp_path / "grid.yaml"
    yml.write_text("- none\n- visionzip:0.11\n")
    assert [s.label for s in build_grid(str(yml), [0.25])] == ["none", "text-only", "pool:0.11", "visionzip:0.11"]


def test_grid_errors():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build_grid("nope:0.1", [0.25])
    with pytest.raises(ValueError, match="cannot read the budget"):
        build_grid("divprune:lots", [0.25])
    with pytest.raises(ValueError, match="no such config file"):
        build_grid("missing.yaml", [0.25])
