"""Evaluation data: annotation formats, media paths and loading, and the built-in synthetic benchmark.

Annotation files are JSONL (one object per line) or JSON (a list of objects, or an object whose
``"data"`` holds the list); a Hugging Face dataset exports to JSONL with ``ds.to_json("x.jsonl")``.
Each record becomes an :class:`Item`. ``--format`` names the format; ``auto`` (default) detects it
from the first record's fields, trying the formats in the order of this table (first match wins).
Field names are those of lmms-eval's task files and of the sets' own releases; tempcompass means its
multi-choice task; mlvu and vtc ids: ``question_id``/``id`` when present. Image QA uses the vtc form.

=============== ==================== ================================================================
format          detected by          mapping: media (under ``--media-root``); question; options; answer
=============== ==================== ================================================================
videomme        ``videoID``          ``videoID`` + ``.mp4``/``.MP4``/``.mkv`` (also under ``data/``);
                                     ``question``; ``options`` (``"A. x"``, letters removed);
                                     ``answer`` (letter)
egoschema       ``video_idx``        ``video_idx`` + ``.mp4``; ``question``; ``option`` (list) or
                                     ``option 0`` .. ``option 4``; ``answer`` (index 0-4, or letter)
nextqa          ``a0``               ``video`` (+ ``.mp4``/``.mkv``/``.webm`` if it has no extension);
                                     ``question``; ``a0`` .. ``a4``; ``answer`` (index 0-4)
longvideobench  ``correct_choice``   ``video_path``; ``question``; ``candidates``, or ``option0`` ..
                                     ``option4`` (``"N/A"`` dropped); ``correct_choice`` (index)
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

Sample ids: ``question_id`` (videomme, mlvu), ``question_idx``/``q_uid`` (egoschema), ``video``-``qid``
(nextqa), ``id`` (longvideobench, mvbench, vtc), ``video_id``-``dim``-line (tempcompass), else the
record's line number (0-based). The task name is
``--task``, else the record's ``task`` field, else the file's stem (its folder's name for
``annotations.jsonl``). ``--media-root`` defaults to the annotation file's folder; absolute media paths
are used as they are. A path that does not exist is kept as the first candidate, so loading it records
a clear ``no such file`` error for that sample.

Media loading (:func:`load_media`): images through :func:`vtc.cli.load_image` (RGB PIL), videos through
:func:`vtc.data.video.load_video` (decord, or PyAV; uniform ``frames`` or ``fps``). Resizing is the
model processor's job. Every failure is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtc.eval.answers import LETTERS, letter_of_index, letter_of_letter, letter_of_text

FORMATS = ("auto", "vtc", "videomme", "mvbench", "nextqa", "egoschema", "mlvu", "longvideobench", "tempcompass")
VIDEO_EXTS = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")
GENERIC_STEMS = {"annotations", "annotation", "test", "val", "validation", "train", "data", "dev"}


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


# ----------------------------------------------------------------------------------------------- helpers

_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*")
_INLINE_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*\S)\s*$")


def strip_letter(option: str, index: int) -> str:
    """``"B. text"`` -> ``"text"`` when the letter is the option's own (position ``index``)."""
    m = _OPTION_PREFIX.match(str(option))
    return str(option)[m.end() :].strip() if m and m.group(1) == LETTERS[index] else str(option).strip()


def split_inline(text: str) -> tuple[str, list[str]]:
    """A question with its options inside (``A. x`` or ``(A) x``, one per line) -> ``(question, options)``."""
    lines = str(text).splitlines()
    question, options = [], []
    for line in lines:
        m = _INLINE_OPTION.match(line)
        if m and m.group(1) == LETTERS[len(options)]:
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


def video_candidates(name: str, subdirs: tuple[str, ...] = ("",)) -> list[str]:
    """``name`` as it is if it has a video extension, else with each extension, in each sub-folder."""
    name = str(name)
    stems = [name] if name.endswith(VIDEO_EXTS) else [name + ext for ext in VIDEO_EXTS]
    return [str(Path(sub) / s) if sub else s for sub in subdirs for s in stems]


def first_present(record: dict, keys: tuple[str, ...], default: Any = None) -> Any:
    return next((record[k] for k in keys if record.get(k) not in (None, "")), default)


# ----------------------------------------------------------------------------------------------- formats


def parse_videomme(r: dict, index: int) -> Parsed:
    options = [strip_letter(o, i) for i, o in enumerate(r["options"])]
    meta = {k: r[k] for k in ("duration", "domain", "sub_category", "task_type") if k in r}
    return Parsed(str(first_present(r, ("question_id",), index)), video_candidates(r["videoID"], ("", "data")),
                  "video", r["question"], options, letter_of_letter(r["answer"], len(options)), meta=meta)


def parse_mvbench(r: dict, index: int) -> Parsed:
    options = [str(c) for c in r["candidates"]]
    return Parsed(str(first_present(r, ("id", "question_id"), index)), [str(r["video"])], "video", r["question"],
                  options, letter_of_text(str(r["answer"]), options))


def parse_nextqa(r: dict, index: int) -> Parsed:
    options = [str(r[f"a{i}"]).strip() for i in range(5) if f"a{i}" in r]
    sample_id = f"{r['video']}-{r['qid']}" if "qid" in r else str(index)
    meta = {"type": r["type"]} if "type" in r else {}
    return Parsed(sample_id, video_candidates(r["video"]), "video", str(r["question"]).strip(), options,
                  letter_of_index(r["answer"], len(options)), meta=meta)


def parse_egoschema(r: dict, index: int) -> Parsed:
    raw = r.get("option")
    if not isinstance(raw, list):
        raw = [r[f"option {i}"] for i in range(5) if f"option {i}" in r]
    options = [strip_letter(o, i) for i, o in enumerate(raw)]
    answer = r["answer"]
    letter = letter_of_letter(answer, len(options)) if str(answer).strip()[:1].isalpha() else letter_of_index(
        answer, len(options))
    return Parsed(str(first_present(r, ("question_idx", "q_uid"), index)), video_candidates(r["video_idx"]),
                  "video", r["question"], options, letter)


def parse_mlvu(r: dict, index: int) -> Parsed:
    if r.get("candidates"):
        question, options = str(r["question"]).strip(), [str(c) for c in r["candidates"]]
    else:
        question, options = split_inline(r["question"])
    if not options:
        raise ValueError(f"mlvu: record {index} has no options in its question and no candidates")
    answer = str(r["answer"])
    letter = letter_of_letter(answer, len(options)) if re.fullmatch(r"\(?[A-Z]\)?", answer.strip()) else \
        letter_of_text(answer, options)
    meta = {"task_type": r["task_type"]} if "task_type" in r else {}
    media = first_present(r, ("video_name", "video"))
    return Parsed(str(first_present(r, ("question_id",), index)), [str(media)], "video", question, options, letter,
                  meta=meta)


def parse_longvideobench(r: dict, index: int) -> Parsed:
    if r.get("candidates"):
        options = [str(c) for c in r["candidates"]]
    else:
        options = [str(r[f"option{i}"]) for i in range(5) if r.get(f"option{i}") not in (None, "N/A")]
    meta = {k: r[k] for k in ("duration_group", "question_category") if k in r}
    return Parsed(str(first_present(r, ("id",), index)), [str(r["video_path"])], "video", r["question"], options,
                  letter_of_index(r["correct_choice"], len(options)), meta=meta)


def parse_tempcompass(r: dict, index: int) -> Parsed:
    question, options = split_inline(r["question"])
    if not options:
        raise ValueError(f"tempcompass: record {index} has no options (lines 'A. ...') in its question")
    answer = str(r["answer"])
    letter = letter_of_letter(answer, len(options)) if re.match(r"\s*\(?[A-Z](?:[.):]|$)", answer) else \
        letter_of_text(answer, options)
    meta = {"dim": r["dim"]} if "dim" in r else {}
    sample_id = f"{r['video_id']}-{r.get('dim', 'mc')}-{index}"
    return Parsed(sample_id, video_candidates(r["video_id"]), "video", question, options, letter, meta=meta)


def parse_vtc(r: dict, index: int) -> Parsed:
    media_type = r.get("media_type") or ("video" if r.get("video") else "image")
    media = r.get(media_type)
    if not media:
        raise ValueError(f"vtc: record {index} has no {media_type!r} path")
    options = [str(o) for o in (r.get("options") or r.get("candidates") or [])]
    answer = str(r.get("answer", ""))
    if options:
        single = re.fullmatch(r"[A-Z]", answer) and LETTERS.index(answer) < len(options)
        answer = answer if single else letter_of_text(answer, options)
    meta = {"kind": r["kind"]} if "kind" in r else {}
    accepted = [str(a) for a in r.get("answers", [])]
    return Parsed(str(r.get("id", index)), [str(media)], media_type, r["question"], options, answer, accepted, meta)


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
    rules = [
        ("videomme", {"videoID"}),
        ("egoschema", {"video_idx"}),
        ("nextqa", {"a0"}),
        ("longvideobench", {"correct_choice"}),
        ("tempcompass", {"video_id"}),
        ("mlvu", {"video_name"}),
    ]
    for name, needed in rules:
        if needed <= keys:
            return name
    if "media_type" in keys or "image" in keys or "options" in keys:
        return "vtc"
    if {"candidates", "video"} <= keys:
        return "mvbench"
    raise ValueError(
        f"format: cannot tell the annotation format from the fields {sorted(keys)}; pass --format "
        f"(one of {', '.join(FORMATS[1:])})"
    )


# ----------------------------------------------------------------------------------------------- files


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSONL or JSON annotation file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data: no such annotation file {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        data = data.get("data", data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError(f"data: {path} holds no list of records")
        return data
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"data: {path} line {n} is not JSON ({err})") from None
    return records


def default_task(path: Path) -> str:
    return path.parent.name if path.stem.lower() in GENERIC_STEMS and path.parent.name else path.stem


def resolve_media(root: Path, candidates: list[str]) -> str:
    """The first candidate that exists (absolute, or under ``root``), else the first one under ``root``."""
    paths = [Path(c) if Path(c).is_absolute() else root / c for c in candidates]
    return str(next((p for p in paths if p.exists()), paths[0]))


def load_items(path: str | Path, fmt: str = "auto", media_root: str | Path | None = None,
               task: str | None = None, limit: int | None = None) -> list[Item]:
    """The items of one annotation file (the first ``limit`` per task when given)."""
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    records = read_records(path)
    if not records:
        return []
    name = detect_format(records[0]) if fmt == "auto" else fmt
    parser = PARSERS[name]
    root = Path(media_root) if media_root is not None else path.parent
    items, per_task = [], {}
    for index, record in enumerate(records):
        try:
            p = parser(record, index)
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
