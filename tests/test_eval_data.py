"""`vtc eval` data: the lmms-eval field mapping of each video set, format detection, media paths, the grid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vtc.core.spec import MethodSpec
from vtc.eval.data import Item, detect_format, load_items, split_inline
from vtc.eval.grid import BASELINE, baseline_of, build_grid, complete_grid, parse_methods
from vtc.eval.records import plain, read_records

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
    video = [s.label for s in build_grid("divprune", [0.25, 0.11], video_baselines=True)]
    assert video == ["none", "text-only", "pool:0.25", "frames:0.25", "temporal_pool:0.25", "divprune:0.25",
                     "pool:0.11", "frames:0.11", "temporal_pool:0.11", "divprune:0.11"]


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


# ----------------------------------------------------------------------------------------------- hub layouts
# Rows in the column layouts of the Hugging Face releases that lmms-eval's tasks load (lmms-lab/Video-MME,
# lmms-lab/egoschema "Subset", lmms-lab/NExTQA "MC", OpenGVLab/MVBench, sy1998/MLVU_dev,
# longvideobench/LongVideoBench, lmms-lab/TempCompass "multi-choice"), written here as parquet and JSONL.

EGO_1, EGO_2, EGO_3 = ("0074f737-11cb-497d-8d07-77c3a8127391", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e",
                       "00f93e1e-cf4e-4835-88b4-4ad68216e86f")
VMME_OPTIONS = ["Apples.", "Candles.", "Berries.", "The three kinds are of the same number."]
EGO_OPTIONS = ["C is cooking.", "C is doing laundry.", "C is cleaning the kitchen.", "C is cleaning dishes.",
               "C is cleaning the bathroom."]
NEXT_OPTIONS = ["roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand"]
LVB_OPTIONS = ["a phone", "a cup", "a book", "nothing", "a bag"]
COLOURS = ["Yellow", "Red", "Green", "Blue", "White", "Black"]


def lettered(options, form="{}. {}"):
    return [form.format(letter, o) for letter, o in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", options, strict=False)]


# format, folder (the task), rows, then per row: id, media file, question, options, answer letter
HUB = [
    ("videomme", "videomme", [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
         "task_type": "Counting Problem", "question": "Which decoration is the most numerous?",
         "options": lettered(VMME_OPTIONS), "answer": "C"},
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2",
         "task_type": "Information Synopsis", "question": "What is the genre of this video?",
         "options": lettered(["A news report.", "A vlog.", "A cartoon.", "A lecture."]), "answer": "A"},
    ], [("001-1", "fFjv93ACGo8.mp4", "Which decoration is the most numerous?", VMME_OPTIONS, "C"),
        ("001-2", "fFjv93ACGo8.mp4", "What is the genre of this video?",
         ["A news report.", "A vlog.", "A cartoon.", "A lecture."], "A")]),
    ("egoschema", "Subset", [
        {"question_idx": EGO_1, "question": "What is the primary objective of c?", "video_idx": EGO_1,
         "option": lettered(EGO_OPTIONS), "answer": "3"},
        {"question_idx": EGO_2, "question": "What was the cup of water for?", "video_idx": EGO_2,
         "option": lettered(EGO_OPTIONS), "answer": "4"},
    ], [(EGO_1, f"{EGO_1}.mp4", "What is the primary objective of c?", EGO_OPTIONS, "D"),
        (EGO_2, f"{EGO_2}.mp4", "What was the cup of water for?", EGO_OPTIONS, "E")]),
    ("nextqa", "MC", [
        {"video": 4010069381, "frame_count": 1612, "width": 640, "height": 480,
         "question": "how do the two man play the instrument", "answer": 4, "qid": 6, "type": "CH",
         **{f"a{i}": o for i, o in enumerate(NEXT_OPTIONS)}},
        {"video": 4882821564, "frame_count": 1152, "width": 640, "height": 480, "question": "why did the boy clap ",
         "answer": 0, "qid": 10, "type": "CW", **{f"a{i}": o for i, o in enumerate(NEXT_OPTIONS)}},
    ], [("4010069381-6", "4010069381.mp4", "how do the two man play the instrument", NEXT_OPTIONS, "E"),
        ("4882821564-10", "4882821564.mp4", "why did the boy clap", NEXT_OPTIONS, "A")]),
    ("mvbench", "action_sequence", [
        {"video": "ZS9XR.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup.", "Took the box."],
         "answer": "Took the box."},
    ], [("0", "ZS9XR.mp4", "What happened after the person took the food?",
         ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup.", "Took the box."], "D")]),
    ("mlvu", "mlvu_dev", [
        {"video_name": "1_plotQA/movie101_66.mp4", "duration": 246.0,
         "question": "What color is the main male character?\n" + "\n".join(lettered(COLOURS[:4], "({}) {}")),
         "candidates": COLOURS[:4], "answer": "A", "task_type": "plotQA", "question_id": "plotQA_0"},
        {"video_name": "4_count/count_21.mp4", "duration": 533.5,
         "question": "Which colour is the last car?\n" + "\n".join(lettered(COLOURS, "({}) {}")),
         "answer": "F", "task_type": "count", "question_id": "count_1"},
    ], [("plotQA_0", "1_plotQA/movie101_66.mp4", "What color is the main male character?", COLOURS[:4], "A"),
        ("count_1", "4_count/count_21.mp4", "Which colour is the last car?", COLOURS, "F")]),
    ("longvideobench", "LongVideoBench", [
        {"video_id": "86CxyhFV9MI", "id": "86CxyhFV9MI_0", "video_path": "86CxyhFV9MI.mp4",
         "subtitle_path": "86CxyhFV9MI_en.json", "correct_choice": 2, "question": "Who appears with the subtitle?",
         "option0": "A man", "option1": "A woman", "option2": "A child", "option3": "A dog", "option4": "N/A",
         "duration": 23.0, "duration_group": 15, "question_category": "TOS", "topic_category": "NP-News-Programs",
         "starting_timestamp_for_subtitles": 0.0},
        {"video_id": "f3Mj0bbkDkY", "id": "f3Mj0bbkDkY_1", "video_path": "f3Mj0bbkDkY.mp4",
         "subtitle_path": "f3Mj0bbkDkY_en.json", "correct_choice": 4, "question": "What does the woman hold?",
         **{f"option{i}": o for i, o in enumerate(LVB_OPTIONS)}, "duration": 41.5, "duration_group": 60,
         "question_category": "S2E", "topic_category": "LC-Life-Vlogs", "starting_timestamp_for_subtitles": 0.0},
        {"video_id": "q0v3Tk1Gx8s", "id": "q0v3Tk1Gx8s_2", "video_path": "q0v3Tk1Gx8s.mp4",
         "subtitle_path": "q0v3Tk1Gx8s_en.json", "correct_choice": 1, "question": "Is it raining?",
         "option0": "yes", "option1": "no", "option2": None, "option3": None, "option4": None, "duration": 9.0,
         "duration_group": 15, "question_category": "E3E", "topic_category": "KH-Knowledge",
         "starting_timestamp_for_subtitles": 0.0},
    ], [("86CxyhFV9MI_0", "86CxyhFV9MI.mp4", "Who appears with the subtitle?",
         ["A man", "A woman", "A child", "A dog"], "C"),
        ("f3Mj0bbkDkY_1", "f3Mj0bbkDkY.mp4", "What does the woman hold?", LVB_OPTIONS, "E"),
        ("q0v3Tk1Gx8s_2", "q0v3Tk1Gx8s.mp4", "Is it raining?", ["yes", "no"], "B")]),
    ("tempcompass", "multi-choice", [
        {"video_id": "1006821739", "question": "What is the direction of the camera movement?\n"
         + "\n".join(lettered(["left", "right", "up", "down"])), "answer": "B. right", "dim": "direction"},
    ], [("1006821739-direction-0", "1006821739.mp4", "What is the direction of the camera movement?",
         ["left", "right", "up", "down"], "B")]),
]


def write_parquet(path, rows):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("fmt", "folder", "rows", "expected"), HUB, ids=[h[0] for h in HUB])
def test_hub_parquet_layouts(fmt, folder, rows, expected, tmp_path):
    path = write_parquet(tmp_path / folder / "test-00000-of-00001.parquet", rows)
    items = load_items(path, media_root=tmp_path)
    assert items == load_items(path, fmt, media_root=tmp_path)  # detected as the named format
    assert len(items) == len(expected)
    for item, (sample_id, media, question, options, answer) in zip(items, expected, strict=True):
        assert (item.task, item.id, item.media, item.question) == (folder, sample_id, str(tmp_path / media), question)
        assert (list(item.options), item.answer, item.meta["format"]) == (options, answer, fmt)
    as_jsonl = load_items(write_jsonl(tmp_path / f"{folder}.jsonl", rows), media_root=tmp_path)
    assert [(it.id, it.media, it.question, it.options, it.answer) for it in as_jsonl] == [
        (it.id, it.media, it.question, it.options, it.answer) for it in items]  # same rows, same items


def test_parquet_found_by_its_magic_and_values_made_plain(tmp_path):
    np = pytest.importorskip("numpy")
    path = write_parquet(tmp_path / "rows.data", HUB[2][2])  # NExT-QA, an unusual suffix
    assert [it.answer for it in load_items(path)] == ["E", "A"]
    assert read_records(path)[0]["video"] == 4010069381
    assert plain({"a": np.int64(3), "o": np.array(["A. x", "B. y"]), "n": float("nan"), "t": (np.float32(0.5),)}) \
        == {"a": 3, "o": ["A. x", "B. y"], "n": None, "t": [0.5]}
    assert type(plain(np.int64(3))) is int
    # an id stored as a float (pandas with a missing value in the column) keeps its integer form
    row = {**HUB[2][2][0], "video": 4010069381.0, "qid": 6.0, "answer": 4.0}
    (item,) = load_items(write_jsonl(tmp_path / "floats.jsonl", [row]))
    assert (item.id, Path(item.media).name, item.answer) == ("4010069381-6", "4010069381.mp4", "E")


def test_parquet_errors(tmp_path):
    pytest.importorskip("pyarrow")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00not a parquet body" + b"PAR1")
    with pytest.raises(ValueError, match=r"broken\.parquet is not a readable parquet file"):
        load_items(broken)
    whole = write_parquet(tmp_path / "cut.parquet", HUB[0][2]).read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.parquet is not a readable parquet file"):
        load_items(tmp_path / "cut.parquet")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=r"binary\.jsonl is neither UTF-8 text \(JSON, JSONL\) nor parquet"):
        load_items(binary)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "videomme.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 16 + b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    with pytest.raises(ValueError, match=r"videomme\.parquet needs pyarrow: pip install pyarrow"):
        load_items(path)


# ----------------------------------------------------------------------------------------------- EgoSchema's release


def egoschema_release(folder, answers=True):
    """EgoSchema's repository layout: questions.json (no answers) and subset_answers.json (q_uid -> index)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {f"option {i}": o for i, o in enumerate(EGO_OPTIONS)}
    questions = [{"q_uid": uid, "google_drive_id": f"1Zd{n}", "question": f"Question {n}?", **options}
                 for n, uid in enumerate((EGO_1, EGO_2, EGO_3))]
    (folder / "questions.json").write_text(json.dumps(questions))
    if answers:
        (folder / "subset_answers.json").write_text(json.dumps({EGO_1: 3, EGO_3: 0}))
    return folder / "questions.json"


def test_egoschema_questions_with_the_answers_beside_them(tmp_path):
    questions = egoschema_release(tmp_path / "EgoSchema")
    lines = []
    items = load_items(questions, media_root=tmp_path / "videos", report=lines.append)
    assert [(it.id, it.media, it.question, it.options, it.answer, it.task) for it in items] == [
        (EGO_1, str(tmp_path / "videos" / f"{EGO_1}.mp4"), "Question 0?", tuple(EGO_OPTIONS), "D", "questions"),
        (EGO_3, str(tmp_path / "videos" / f"{EGO_3}.mp4"), "Question 2?", tuple(EGO_OPTIONS), "A", "questions")]
    assert len(lines) == 1 and "subset_answers.json" in lines[0] and "1 of its 3 egoschema records" in lines[0]
    with pytest.warns(UserWarning, match="1 of its 3 egoschema records have no answer"):
        assert len(load_items(questions)) == 2  # without report=: a warning


def test_egoschema_answers_flag_and_its_errors(tmp_path, capsys):
    questions = egoschema_release(tmp_path / "q", answers=False)
    with pytest.raises(ValueError, match=r"none of its 3 egoschema records has an answer.*--answers subset_answers"):
        load_items(questions)
    answers = tmp_path / "elsewhere.json"
    answers.write_text(json.dumps({EGO_2: 4}))
    (item,) = load_items(questions, answers=answers, report=lambda line: None)
    assert (item.id, item.answer, item.answer_text) == (EGO_2, "E", EGO_OPTIONS[4])
    answers.write_text(json.dumps({"someone-else": 1}))
    with pytest.raises(ValueError, match=r"None of its questions is in the answers file .*elsewhere\.json"):
        load_items(questions, answers=answers)
    answers.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"--answers: .*should hold a JSON object"):
        load_items(questions, answers=answers)
    with pytest.raises(ValueError, match=r"--answers: .*format 'videomme'"):
        load_items(FIXTURES / "videomme.json", answers=answers)
    # the lmms-lab GENERATION config: every answer null -> an error; some null -> skipped and counted
    rows = [{**r, "answer": None} for r in HUB[1][2]]
    with pytest.raises(ValueError, match="none of its 2 egoschema records"):
        load_items(write_jsonl(tmp_path / "gen.jsonl", rows))
    lines = []
    assert len(load_items(write_jsonl(tmp_path / "mixed.jsonl", [HUB[1][2][0], rows[1]]), report=lines.append)) == 1
    assert "1 of its 2 egoschema records have no answer" in lines[0]
    # the CLI flag
    from vtc.eval import cli
    from vtc.eval.dist import Dist

    answers.write_text(json.dumps({EGO_1: 1, EGO_2: 2}))
    args = cli.parser().parse_args([str(questions), "--answers", str(answers)])
    assert [it.answer for it in cli.load_data(args, tmp_path, Dist())] == ["B", "C"]
    assert "1 of its 3 egoschema records have no answer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- options, formats


def test_two_to_twenty_six_options(tmp_path):
    letters = [f"option {c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    path = write_jsonl(tmp_path / "mv.jsonl", [
        {"video": "a.mp4", "question": "q", "candidates": letters, "answer": letters[25]},
        {"video": "b.mp4", "question": "q", "candidates": ["yes", "no"], "answer": "no"}])
    assert [(len(it.options), it.answer) for it in load_items(path)] == [(26, "Z"), (2, "B")]
    six = {"video": 1, "qid": 1, "question": "q", "answer": 5, **{f"a{i}": f"o{i}" for i in range(6)}}
    assert load_items(write_jsonl(tmp_path / "nextqa.jsonl", [six]))[0].answer == "F"
    ego = {"q_uid": "u", "question": "q", **{f"option {i}": f"o{i}" for i in range(7)}, "answer": 6}
    assert load_items(write_jsonl(tmp_path / "ego.jsonl", [ego]))[0].options[-1] == "o6"
    write_jsonl(path, [{"video": "a.mp4", "question": "q", "candidates": [*letters, "one more"], "answer": "one more"}])
    with pytest.raises(ValueError, match=r"record 0: 27 option\(s\); a multiple-choice question needs 2 to 26"):
        load_items(path)
    write_jsonl(path, [{"id": "x", "image": "a.png", "question": "q", "options": ["only"], "answer": "A"}])
    with pytest.raises(ValueError, match=r"1 option\(s\)"):
        load_items(path)


def test_unrecognised_file_lists_every_format(tmp_path):
    path = write_jsonl(tmp_path / "mystery.jsonl", [{"clip": "x.mp4", "prompt": "what?", "label": 1}])
    with pytest.raises(ValueError) as err:
        load_items(path)
    message = str(err.value)
    assert str(path) in message and "pass --format" in message and "['clip', 'label', 'prompt']" in message
    lines = {line.split()[0]: line for line in message.splitlines()[1:]}
    assert list(lines) == ["videomme", "egoschema", "nextqa", "longvideobench", "tempcompass", "mlvu", "vtc",
                           "mvbench"]  # the detection order, one line each
    assert "marked by videoID; reads videoID, question, options" in lines["videomme"]
    assert "marked by video_idx or q_uid" in lines["egoschema"] and "a0..aN" in lines["nextqa"]
    assert "marked by correct_choice or option0 and video_path" in lines["longvideobench"]
    assert "marked by candidates and video" in lines["mvbench"]


def test_hub_shard_names_give_the_folder_as_task(tmp_path):
    rows = HUB[6][2]
    assert load_items(write_jsonl(tmp_path / "tc" / "test-00000-of-00001.jsonl", rows))[0].task == "tc"
    assert load_items(write_jsonl(tmp_path / "tc" / "mc-00001-of-00004.jsonl", rows))[0].task == "mc"
