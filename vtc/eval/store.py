"""``samples.jsonl``: one JSON line per (sample, model, method), crash-safe and resumable.

Writing: each line is written whole, then flushed and ``fsync``'d before the next one is computed, so a
run killed at any moment (SIGKILL included) loses at most the line being written. Before appending,
:func:`repair_tail` drops a truncated last line (one without its newline). Reading skips lines that are
not valid JSON and keeps the first line of each ``key``, so no line is ever counted twice.

Shards: with ``world_size > 1`` rank ``r`` appends to ``samples.rank{r}.jsonl``; rank 0 merges all
shards into ``samples.jsonl`` (:func:`merge`: union by ``key``, written to a temporary file, fsync'd
and renamed over the old one, then the shards are deleted), so a kill during the merge leaves either
the old or the new file. A resumed run treats every key in ``samples.jsonl`` and in any shard as done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SAMPLES = "samples.jsonl"


def shard_path(out: Path, rank: int) -> Path:
    return out / f"samples.rank{rank}.jsonl"


def shard_paths(out: Path) -> list[Path]:
    return sorted(out.glob("samples.rank*.jsonl"))


def repair_tail(path: Path) -> int:
    """Cut a truncated last line (no trailing newline) off ``path``; returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        block = 1 << 16
        pos = size
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def read_lines(path: Path) -> list[dict]:
    """The valid JSON objects of a JSONL file (truncated or corrupt lines skipped)."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                continue  # a line still being written, or cut by a kill
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "key" in record:
                out.append(record)
    return out


def unique(records: list[dict]) -> list[dict]:
    """The first record of each key, in order."""
    seen, out = set(), []
    for r in records:
        if r["key"] not in seen:
            seen.add(r["key"])
            out.append(r)
    return out


def read_all(out: Path) -> list[dict]:
    """Every line of a run folder: ``samples.jsonl`` then the shards, one per key."""
    records = read_lines(out / SAMPLES)
    for shard in shard_paths(out):
        records += read_lines(shard)
    return unique(records)


def done_keys(out: Path) -> set[str]:
    return {r["key"] for r in read_all(out)}


class LineWriter:
    """Appends JSON lines to a file, each flushed and fsync'd (after repairing a truncated tail)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # closed by close()

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge(out: Path) -> int:
    """Fold every shard into ``samples.jsonl`` (union by key); returns the number of lines."""
    shards = shard_paths(out)
    if not shards:
        return len(unique(read_lines(out / SAMPLES)))
    records = read_all(out)
    write_atomic(out / SAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    for shard in shards:
        shard.unlink()
    return len(records)
