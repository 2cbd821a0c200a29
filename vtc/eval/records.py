"""Reading annotation files into plain records: JSON, JSONL and parquet, and answer files.

* JSON: a list of objects, or an object whose ``"data"`` holds the list.
* JSONL: one object per line.
* Parquet (``.parquet``/``.pq``, or any file starting with the parquet magic ``PAR1``): one record per
  row, read with pyarrow (``pip install pyarrow``, part of ``vtc[eval]``) - the layout of the Hugging Face
  releases that lmms-eval loads (``lmms-lab/Video-MME``, ``lmms-lab/egoschema``, ``lmms-lab/NExTQA``, ...).

Values are made plain Python (:func:`plain`): numpy scalars and arrays (as pandas hands them out) become
ints, floats, strings and lists, and a float NaN (pandas' missing value) becomes ``None``.

An answers file (:func:`read_answers`) is a JSON object mapping a question id to its answer, as
EgoSchema's ``subset_answers.json`` (``q_uid`` -> option index) next to its ``questions.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"
PYARROW_HINT = "pip install pyarrow (or pip install 'vtc[eval]')"


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and NaN turned into plain Python (lists, None)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy array or scalar
        return plain(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def is_parquet(path: Path) -> bool:
    """A parquet file by its suffix or its first four bytes."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    with path.open("rb") as f:
        return f.read(4) == PARQUET_MAGIC


def read_parquet(path: Path) -> list[dict]:
    """The rows of a parquet file as dicts (pyarrow, imported here)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"data: reading the parquet file {path} needs pyarrow: {PYARROW_HINT}") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise ValueError(f"data: {path} is not a readable parquet file ({type(err).__name__}: {err})") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data: {path} is neither UTF-8 text (JSON, JSONL) nor parquet ({err.reason} at byte "
                         f"{err.start})") from None


def read_json(path: Path, text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"data: {path} is not JSON ({err})") from None
    data = data.get("data", data) if isinstance(data, dict) else data
    if not isinstance(data, list):
        raise ValueError(f"data: {path} holds no list of records")
    return data


def read_jsonl(path: Path, text: str) -> list:
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"data: {path} line {n} is not JSON ({err})") from None
    return records


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSON, JSONL or parquet annotation file, values made plain (:func:`plain`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data: no such annotation file {path}")
    if is_parquet(path):
        records = read_parquet(path)
    else:
        text = read_text(path)
        records = read_json(path, text) if path.suffix.lower() == ".json" else read_jsonl(path, text)
    bad = next((n for n, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise ValueError(f"data: {path} record {bad} is not an object with fields")
    return [plain(r) for r in records]


def read_answers(path: str | Path) -> dict[str, Any]:
    """An answers file: a JSON object ``{question id: answer}`` (EgoSchema's ``subset_answers.json``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--answers: no such answers file {path}")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"--answers: {path} is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--answers: {path} should hold a JSON object mapping question ids to answers "
                         f"(as EgoSchema's subset_answers.json), not a {type(data).__name__}")
    return {str(k): plain(v) for k, v in data.items()}
