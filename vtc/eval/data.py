"""Evaluation data: annotation formats, media paths and loading, and the built-in synthetic benchmark.

Annotation files are JSONL (one object per line), JSON (a list of objects, or an object whose ``"data"``
holds the list) or parquet (one record per row, read with pyarrow: ``pip install pyarrow``); reading is
:mod:`vtc.eval.records`. The parquet files of the Hugging Face releases that lmms-eval's tasks load
(``lmms-lab/Video-MME``, ``lmms-lab/egoschema``, ``lmms-lab/NExTQA``, ``lmms-lab/TempCompass``,
``sy1998/MLVU_dev``, ``longvideobench/LongVideoBench``) are read as downloaded, as are the JSON files of
``OpenGVLab/MVBench`` and of the sets' own repositories; a loaded dataset also exports with
``ds.to_json("x.jsonl")`` or ``ds.to_parquet("x.parquet")``. Each record becomes an :class:`Item`.
``--format`` names the format; ``auto`` (default) detects it from the first record's fields, trying the
formats in the order of this table (first match wins). Field names are those of lmms-eval's task files
and of the sets' own releases; tempcompass means its multi-choice task; mlvu and vtc ids: ``question_id``
/``id`` when present. Image QA uses the vtc form.

=============== ==================== ================================================================
format          detected by          mapping: media (under ``--media-root``); question; options; answer
=============== ==================== ================================================================
videomme        ``videoID``          ``videoID`` + ``.mp4``/``.MP4``/``.mkv`` (also under ``data/``);
                                     ``question``; ``options`` (``"A. x"``, letters removed);
                                     ``answer`` (letter)
egoschema       ``video_idx`` or     ``video_idx`` (or ``q_uid``) + ``.mp4``; ``question``; ``option``
                ``q_uid``            (list, ``"A. x"``) or ``option 0`` .. ``option N``; ``answer``
                                     (index, or letter), or from an answers file (see below)
nextqa          ``a0``               ``video`` (+ ``.mp4``/``.mkv``/``.webm`` if it has no extension);
                                     ``question``; ``a0`` .. ``aN``; ``answer`` (index)
longvideobench  ``correct_choice``,  ``video_path``; ``question``; ``candidates``, or ``option0`` ..
                or ``video_path``    ``optionN`` (``"N/A"`` and nulls dropped); ``correct_choice``
                and ``option0``      (index)
tempcompass     ``video_id``         ``video_id`` + ``.mp4``; ``question`` up to its options, which are
                                     lines ``A. x`` inside it; ``answer`` (``"B. x"``, or option text)
mlvu            ``video_name``       ``video_name``; ``question`` up to its options, lines ``(A) x``
                                     inside it (or ``candidates``); ``answer`` (letter or option text)
vtc             ``media_type``,      ``image`` or ``video``; ``question``; ``options`` (or
                ``image`` or         ``candidates``), none for a short-answer question; ``answer``
                ``options``          (letter, or the short answer; ``answers``: more accepted ones)
mvbench         ``candidates`` and   ``video``; ``question``; ``candidates``; ``answer`` (option text)
                ``video``
=============== ==================== ================================================================

A multiple-choice question has 2 to 26 options (letters A-Z; NExT-QA and EgoSchema have 5); numbered
option fields are read from 0 up to the first one missing. Values from parquet or pandas (numpy scalars
and arrays, NaN) are made plain Python first; an id or file name stored as a float (``4010069381.0``)
is read as the integer it holds.

Unanswered records: a record of a benchmark format whose answer field is missing, null or empty (the
full EgoSchema set, the test splits of LongVideoBench and MLVU keep their answers private) is skipped;
how many were skipped is reported (``report``, by default a warning; ``vtc eval`` prints it), and a
file without one answered record is an error.

EgoSchema's own release (github.com/egoschema/EgoSchema): ``questions.json``, a list of ``q_uid``,
``question``, ``option 0`` .. ``option 4`` and no answers, of 5,031 questions, with
``subset_answers.json``, ``{q_uid: option index}`` for 500 of them. ``--answers FILE`` (``answers=``)
names the answers file; without it, a ``subset_answers.json`` next to an EgoSchema annotation file with
unanswered records is used, as the repository lays them out, and reported. The answers fill records
without an answer of their own, looked up by ``q_uid``, ``video_idx``, then ``question_idx``; the rest are
skipped as above, so ``vtc eval EgoSchema/questions.json --media-root EgoSchema/videos`` evaluates the
500 answered questions.

Sample ids: ``question_id`` (videomme, mlvu), ``question_idx``/``q_uid`` (egoschema), ``video``-``qid``
(nextqa), ``id`` (longvideobench, mvbench, vtc), ``video_id``-``dim``-line (tempcompass), else the
record's line number (0-based). The task name is ``--task``, else the record's ``task`` field, else the
file's stem without a Hugging Face shard suffix (``-00000-of-00001``), or its folder's name when that
stem is generic (``annotations``, ``test``, ...): ``videomme/test-00000-of-00001.parquet`` is task
``videomme``. ``--media-root`` defaults to the annotation file's folder; absolute media paths
are used as they are. A path that does not exist is kept as the first candidate, so loading it records
a clear ``no such file`` error for that sample.

Media loading (:func:`load_media`): images through :func:`vtc.cli.load_image` (RGB PIL), videos through
:func:`vtc.data.video.load_video` (decord, or PyAV; uniform ``frames`` or ``fps``). Resizing is the
model processor's job. Every failure is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtc.eval.answers import LETTERS, letter_of_index, letter_of_letter, letter_of_text
from vtc.eval.records import read_answers, read_records

FORMATS = ("auto", "vtc", "videomme", "mvbench", "nextqa", "egoschema", "mlvu", "longvideobench", "tempcompass")
VIDEO_EXTS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")
GENERIC_STEMS = {"annotations", "annotation", "test", "val", "validation", "train", "data", "dev"}
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)
EGOSCHEMA_ANSWERS = "subset_answers.json"  # the answers file of EgoSchema's repository, next to questions.json
EGOSCHEMA_KEYS = ("q_uid", "video_idx", "question_idx")  # fields an answers file's keys are looked up in

# format -> (alternative field sets that mark it, in detection order; the fields it reads)
FORMAT_FIELDS: dict[str, tuple[tuple[frozenset[str], ...], str]] = {
    "videomme": ((frozenset({"videoID"}),), "videoID, question, options (\"A. x\" list), answer (letter)"),
    "egoschema": ((frozenset({"video_idx"}), frozenset({"q_uid"})),
                  "video_idx or q_uid, question, option (list) or option 0..option N, answer (index) or --answers"),
    "nextqa": ((frozenset({"a0"}),), "video, qid, question, a0..aN, answer (index)"),
    "longvideobench": ((frozenset({"correct_choice"}), frozenset({"video_path", "option0"})),
                       "video_path, id, question, candidates or option0..optionN, correct_choice (index)"),
    "tempcompass": ((frozenset({"video_id"}),), "video_id, dim, question (with lines \"A. x\"), answer"),
    "mlvu": ((frozenset({"video_name"}),), "video_name, question (with lines \"(A) x\") or candidates, answer"),
    "vtc": ((frozenset({"media_type"}), frozenset({"image"}), frozenset({"options"})),
            "image or video, question, options or candidates (none: short answer), answer"),
    "mvbench": ((frozenset({"candidates", "video"}),), "video, question, candidates, answer (option text)"),
}


@dataclass(frozen=True)
class Item:
    """One evaluation sample: where its media is, the question, the options and the reference answer.

    ``answer`` is the option letter for multiple choice (``options`` non-empty), else the short answer;
    ``accepted`` lists other accepted short answers.
    """

    task: str
    id: str
    media: str
    media_type: str
    question: str
    options: tuple[str, ...] = ()
    answer: str = ""
    accepted: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.task}/{self.id}"

    @property
    def answer_text(self) -> str:
        return self.options[LETTERS.index(self.answer)] if self.options else self.answer


@dataclass
class Parsed:
    """A record in the common form, media still as relative candidates."""

    id: str
    media: list[str]
    media_type: str
    question: str
    options: list[str]
    answer: str
    accepted: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


class Unanswered(Exception):
    """A benchmark record without a reference answer: skipped and counted by :func:`load_items`."""


# ----------------------------------------------------------------------------------------------- helpers

_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*")
_INLINE_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*\S)\s*$")


def strip_letter(option: str, index: int) -> str:
    """``"B. text"`` -> ``"text"`` when the letter is the option's own (position ``index``)."""
    m = _OPTION_PREFIX.match(str(option))
    own = index < len(LETTERS) and m is not None and m.group(1) == LETTERS[index]
    return str(option)[m.end() :].strip() if own else str(option).strip()


def split_inline(text: str) -> tuple[str, list[str]]:
    """A question with its options inside (``A. x`` or ``(A) x``, one per line) -> ``(question, options)``."""
    lines = str(text).splitlines()
    question, options = [], []
    for line in lines:
        m = _INLINE_OPTION.match(line)
        if m and len(options) < len(LETTERS) and m.group(1) == LETTERS[len(options)]:
            options.append(m.group(2).strip())
        elif not options:
            question.append(line)
        else:
            break  # trailing instructions after the options
    if not options:  # one line: "what ... ? (A) x (B) y"
        parts = re.split(r"\s*\(([A-Z])\)\s*", str(text))
        if len(parts) >= 3 and parts[1::2] == list(LETTERS[: len(parts[1::2])]):
            return parts[0].strip(), [p.strip() for p in parts[2::2]]
    return "\n".join(question).strip(), options


def ident(value: Any) -> str:
    """An id or file name as text; a float holding an integer (pandas' ``4010069381.0``) loses its ``.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def video_candidates(name: Any, subdirs: tuple[str, ...] = ("",)) -> list[str]:
    """``name`` as it is if it has a video extension, else with each extension, in each sub-folder."""
    name = ident(name)
    stems = [name] if name.endswith(VIDEO_EXTS) else [name + ext for ext in VIDEO_EXTS]
    return [str(Path(sub) / s) if sub else s for sub in subdirs for s in stems]


def first_present(record: dict, keys: tuple[str, ...], default: Any = None) -> Any:
    return next((record[k] for k in keys if record.get(k) not in (None, "")), default)


_ABSENT = object()


def numbered(record: dict, pattern: str, drop: tuple = (None,)) -> list[str]:
    """Options in fields ``pattern.format(0)``, ``.format(1)``, ... up to the first missing one, ``drop`` left out."""
    values = itertools.takewhile(lambda v: v is not _ABSENT,
                                 (record.get(pattern.format(i), _ABSENT) for i in itertools.count()))
    return [str(v).strip() for v in values if v not in drop]


def check_options(options: list[str]) -> None:
    """Raise unless a multiple-choice question has 2 to 26 options (one letter each)."""
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise ValueError(f"{len(options)} option(s); a multiple-choice question needs {MIN_OPTIONS} to "
                         f"{MAX_OPTIONS} (letters A-Z)")


def answer_of(record: dict, key: str = "answer") -> Any:
    """The record's answer field; :class:`Unanswered` when it is missing, null or empty."""
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Unanswered(key)
    return value


def index_letter(value: Any, options: list[str]) -> str:
    """An option index (``2``, ``"2"``, ``2.0``) -> its letter, checked against the options."""
    check_options(options)
    return letter_of_index(int(value) if isinstance(value, float) and value.is_integer() else value, len(options))


def text_letter(answer: Any, options: list[str]) -> str:
    """The letter of the option whose text is ``answer``."""
    check_options(options)
    return letter_of_text(str(answer), options)


def is_letter(answer: Any) -> bool:
    """Whether ``answer`` names an option by its letter (``"B"``, ``"(B)"``) rather than by its text."""
    return re.fullmatch(r"\(?[A-Z]\)?", str(answer).strip()) is not None


# ----------------------------------------------------------------------------------------------- formats


def parse_videomme(r: dict, index: int) -> Parsed:
    options = [strip_letter(o, i) for i, o in enumerate(r["options"])]
    meta = {k: r[k] for k in ("duration", "domain", "sub_category", "task_type") if k in r}
    media = video_candidates(r["videoID"], ("", "data"))
    answer = letter_of_letter(answer_of(r), len(options))
    return Parsed(ident(first_present(r, ("question_id",), index)), media, "video", r["question"], options, answer,
                  meta=meta)


def parse_mvbench(r: dict, index: int) -> Parsed:
    options = [str(c) for c in r["candidates"]]
    media, question = [ident(r["video"])], r["question"]
    return Parsed(ident(first_present(r, ("id", "question_id"), index)), media, "video", question, options,
                  text_letter(answer_of(r), options))


def parse_nextqa(r: dict, index: int) -> Parsed:
    options = numbered(r, "a{}")
    sample_id = f"{ident(r['video'])}-{ident(r['qid'])}" if "qid" in r else str(index)
    meta = {"type": r["type"]} if "type" in r else {}
    media, question = video_candidates(r["video"]), str(r["question"]).strip()
    return Parsed(sample_id, media, "video", question, options, index_letter(answer_of(r), options), meta=meta)


def parse_egoschema(r: dict, index: int) -> Parsed:
    raw = r.get("option")
    if not isinstance(raw, list):
        raw = numbered(r, "option {}")
    options = [strip_letter(o, i) for i, o in enumerate(raw)]
    video = first_present(r, ("video_idx", "q_uid"))  # EgoSchema's videos are named by q_uid
    if video is None:
        raise KeyError("video_idx")
    media, question = video_candidates(video), r["question"]
    answer = answer_of(r)
    letter = letter_of_letter(answer, len(options)) if str(answer).strip()[:1].isalpha() else index_letter(
        answer, options)
    return Parsed(ident(first_present(r, ("question_idx", "q_uid"), index)), media, "video", question, options, letter)


def parse_mlvu(r: dict, index: int) -> Parsed:
    question, inline = split_inline(r["question"])
    options = [str(c) for c in r["candidates"]] if r.get("candidates") else inline
    if not r.get("candidates") and not inline:
        raise ValueError(f"mlvu: record {index} has no options in its question and no candidates")
    media = first_present(r, ("video_name", "video"))
    if media is None:
        raise KeyError("video_name")
    answer = answer_of(r)
    letter = letter_of_letter(answer, len(options)) if is_letter(answer) else text_letter(answer, options)
    meta = {"task_type": r["task_type"]} if "task_type" in r else {}
    return Parsed(ident(first_present(r, ("question_id",), index)), [ident(media)], "video", question, options, letter,
                  meta=meta)


def parse_longvideobench(r: dict, index: int) -> Parsed:
    if r.get("candidates"):
        options = [str(c) for c in r["candidates"]]
    else:
        options = numbered(r, "option{}", drop=(None, "N/A"))
    meta = {k: r[k] for k in ("duration_group", "question_category") if k in r}
    media, question = [ident(r["video_path"])], r["question"]
    return Parsed(ident(first_present(r, ("id",), index)), media, "video", question, options,
                  index_letter(answer_of(r, "correct_choice"), options), meta=meta)


def parse_tempcompass(r: dict, index: int) -> Parsed:
    question, options = split_inline(r["question"])
    if not options:
        raise ValueError(f"tempcompass: record {index} has no options (lines 'A. ...') in its question")
    media = video_candidates(r["video_id"])
    answer = str(answer_of(r))
    letter = letter_of_letter(answer, len(options)) if re.match(r"\s*\(?[A-Z](?:[.):]|$)", answer) else \
        text_letter(answer, options)
    meta = {"dim": r["dim"]} if "dim" in r else {}
    sample_id = f"{ident(r['video_id'])}-{r.get('dim', 'mc')}-{index}"
    return Parsed(sample_id, media, "video", question, options, letter, meta=meta)


def parse_vtc(r: dict, index: int) -> Parsed:
    media_type = r.get("media_type") or ("video" if r.get("video") else "image")
    media = r.get(media_type)
    if not media:
        raise ValueError(f"vtc: record {index} has no {media_type!r} path")
    options = [str(o) for o in (r.get("options") or r.get("candidates") or [])]
    answer = str(r.get("answer", ""))
    if options:
        check_options(options)
        single = re.fullmatch(r"[A-Z]", answer) and LETTERS.index(answer) < len(options)
        answer = answer if single else letter_of_text(answer, options)
    meta = {"kind": r["kind"]} if "kind" in r else {}
    accepted = [str(a) for a in r.get("answers", [])]
    return Parsed(ident(r.get("id", index)), [str(media)], media_type, r["question"], options, answer, accepted, meta)


PARSERS: dict[str, Callable[[dict, int], Parsed]] = {
    "videomme": parse_videomme,
    "egoschema": parse_egoschema,
    "nextqa": parse_nextqa,
    "longvideobench": parse_longvideobench,
    "tempcompass": parse_tempcompass,
    "mlvu": parse_mlvu,
    "vtc": parse_vtc,
    "mvbench": parse_mvbench,
}


def detect_format(record: dict) -> str:
    """The format of a record, by the fields that mark it (module docstring table, in order)."""
    keys = set(record)
    for name, (marks, _) in FORMAT_FIELDS.items():
        if any(mark <= keys for mark in marks):
            return name
    raise ValueError(
        f"format: cannot tell the annotation format from the fields {sorted(keys)}; pass --format "
        f"(one of {', '.join(FORMATS[1:])}). Tried, in order:\n" + formats_tried()
    )


def formats_tried() -> str:
    """One line per format: the fields that mark it and the fields it reads."""
    lines = []
    for name, (marks, reads) in FORMAT_FIELDS.items():
        marked = " or ".join(" and ".join(sorted(m)) for m in marks)
        lines.append(f"  {name:<15} marked by {marked}; reads {reads}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- files


_SHARD = re.compile(r"-\d{5}-of-\d{5}$")


def default_task(path: Path) -> str:
    """The file's stem without a Hugging Face shard suffix, or its folder's name for a generic stem."""
    stem = _SHARD.sub("", path.stem)
    return path.parent.name if stem.lower() in GENERIC_STEMS and path.parent.name else stem


def resolve_media(root: Path, candidates: list[str]) -> str:
    """The first candidate that exists (absolute, or under ``root``), else the first one under ``root``."""
    paths = [Path(c) if Path(c).is_absolute() else root / c for c in candidates]
    return str(next((p for p in paths if p.exists()), paths[0]))


def has_answer(record: dict) -> bool:
    """Whether the record's ``answer`` field holds an answer."""
    try:
        answer_of(record)
    except Unanswered:
        return False
    return True


def find_answers(path: Path, name: str, records: list[dict],
                 answers: str | Path | None) -> tuple[dict[str, Any], Path | None]:
    """The answers file for an annotation file: ``answers``, or EgoSchema's ``subset_answers.json`` beside it."""
    if answers is not None:
        if name != "egoschema":
            raise ValueError(f"--answers: {answers} maps EgoSchema question ids (q_uid) to answers; {path} is in "
                             f"format {name!r}, whose records carry their own answers")
        return read_answers(answers), Path(answers)
    beside = path.parent / EGOSCHEMA_ANSWERS
    if name == "egoschema" and beside.is_file() and not all(has_answer(r) for r in records):
        return read_answers(beside), beside
    return {}, None


def with_answer(record: dict, answers: dict[str, Any]) -> dict:
    """The record, its answer filled from ``answers`` (by ``q_uid``, ``video_idx``, ``question_idx``) if it has none."""
    if not answers or has_answer(record):
        return record
    key = next((ident(record[k]) for k in EGOSCHEMA_KEYS if ident(record.get(k)) in answers), None)
    return {**record, "answer": answers[key]} if key is not None else record


def unanswered_message(path: Path, name: str, total: int, skipped: int, source: Path | None) -> str:
    """What was skipped, and where the answers came from."""
    origin = f"answers from {source}; " if source is not None else ""
    return (f"data: {path}: {origin}{skipped} of its {total} {name} records have no answer and are skipped, "
            f"{total - skipped} evaluated")


def no_answers_error(path: Path, name: str, total: int, source: Path | None) -> ValueError:
    """The error for a file without one answered record, with what to do about it."""
    hint = (f" None of its questions is in the answers file {source}." if source is not None else
            f" EgoSchema publishes the answers of 500 of its questions only: pass --answers {EGOSCHEMA_ANSWERS} "
            f"(github.com/egoschema/EgoSchema) or put that file next to {path.name}." if name == "egoschema" else
            " The test splits of some sets keep their answers private; evaluate a split with answers.")
    return ValueError(f"data: {path}: none of its {total} {name} records has an answer.{hint}")


def load_items(path: str | Path, fmt: str = "auto", media_root: str | Path | None = None,
               task: str | None = None, limit: int | None = None, answers: str | Path | None = None,
               report: Callable[[str], None] | None = None) -> list[Item]:
    """The items of one annotation file (the first ``limit`` per task when given).

    ``answers``: an answers file for records without answers (EgoSchema, see the module docstring);
    ``report``: called with a line about skipped unanswered records (default: :func:`warnings.warn`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    records = read_records(path)
    if not records:
        return []
    try:
        name = detect_format(records[0]) if fmt == "auto" else fmt
    except ValueError as err:
        raise ValueError(f"data: {path}: {err}") from None
    mapping, source = find_answers(path, name, records, answers)
    parser = PARSERS[name]
    root = Path(media_root) if media_root is not None else path.parent
    items, per_task, skipped = [], {}, 0
    for index, record in enumerate(records):
        try:
            p = parser(with_answer(record, mapping), index)
            if p.options:
                check_options(p.options)
        except Unanswered:
            skipped += 1
            continue
        except (KeyError, TypeError) as err:
            raise ValueError(f"data: {path} record {index} does not fit format {name!r} (missing {err})") from None
        except ValueError as err:
            raise ValueError(f"data: {path} record {index}: {err}") from None
        task_name = task or (record.get("task") if name == "vtc" else None) or default_task(path)
        if limit is not None and per_task.get(task_name, 0) >= limit:
            continue
        per_task[task_name] = per_task.get(task_name, 0) + 1
        items.append(Item(task_name, p.id, resolve_media(root, p.media), p.media_type, str(p.question),
                          tuple(p.options), p.answer, tuple(p.accepted), {"format": name, **p.meta}))
    if skipped == len(records):
        raise no_answers_error(path, name, len(records), source)
    if skipped:
        (report or (lambda m: warnings.warn(m, stacklevel=3)))(
            unanswered_message(path, name, len(records), skipped, source))
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"data: {path} has duplicate sample ids ({dup}); give each record a unique id")
    return items


# ----------------------------------------------------------------------------------------------- media


def load_media(item: Item, frames: int = 16, fps: float | None = None, max_frames: int = 64,
               backend: str = "auto") -> Any:
    """An RGB PIL image, or a video's frames (``[H,W,3] uint8`` arrays); ValueError on any failure."""
    if item.media_type == "image":
        from vtc.data.image import load_image

        return load_image(item.media)
    from vtc.data.video import load_video

    return load_video(item.media, frames, fps=fps, max_frames=max_frames, backend=backend)


# ----------------------------------------------------------------------------------------------- built-in

BUILTIN_FILE = "builtin.json"


def builtin_dataset(folder: str | Path, n: int = 24, seed: int | None = None, frames: int = 16) -> Path:
    """Write (once) the built-in benchmark: a shapes-world split, half images and half videos.

    Returns the annotation file. Tasks are ``shapes-image`` and ``shapes-video`` (see :func:`builtin_items`).
    An existing split written with the same settings is reused, so a resumed run sees the same data.
    """
    from vtc.data.shapes import write_split

    folder = Path(folder)
    settings = {"n": n, "seed": seed, "frames": frames, "split": "test", "video_fraction": 0.5}
    marker = folder / BUILTIN_FILE
    annotations = folder / "annotations.jsonl"
    if marker.exists() and annotations.exists() and json.loads(marker.read_text()) == settings:
        return annotations
    write_split(folder, split="test", n=n, video_fraction=0.5, seed=seed, frames=frames)
    marker.write_text(json.dumps(settings) + "\n")
    return annotations


def builtin_items(annotations: str | Path, limit: int | None = None) -> list[Item]:
    """The built-in split's items, one task per media type."""
    items = load_items(annotations, "vtc", limit=None)
    out, per_task = [], {}
    for it in items:
        task = f"shapes-{it.media_type}"
        if limit is not None and per_task.get(task, 0) >= limit:
            continue
        per_task[task] = per_task.get(task, 0) + 1
        out.append(Item(task, it.id, it.media, it.media_type, it.question, it.options, it.answer, it.accepted,
                        it.meta))
    return out
