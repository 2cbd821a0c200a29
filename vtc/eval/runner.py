"""Running the grid on one model: prompts, batches, timings, and one ``samples.jsonl`` line per pair.

Order: the process's samples are split by media type (images, then videos, each in dataset order) into
chunks of ``--batch-size``. Each chunk's media is decoded once; then each method of the grid runs on the
whole chunk as one batch (``vtc.apply`` for the batch, removed after it). A resumed run re-runs a chunk
for a method if any of its pairs is missing and writes only the missing lines, so every batch has the
same members as in an uninterrupted run and the results are the same. Media that fails to load gives an
``error`` line for each of its pairs; a batch that fails is retried sample by sample, and a sample that
still fails gives an ``error`` line. A model that takes no images (or no videos) skips those samples;
they are counted in the report, not written.

Prompts: a processor with ``build_prompt(question, media, options=...)`` (the tiny models) gets its own
trained format; any other gets :func:`vtc.cli.media_prompt` with the options appended to the question
(``A. x`` lines, then "Answer with the option's letter from the given choices directly.", or "Answer the
question using a single word or phrase." for short-answer questions).

Line schema (``samples.jsonl``, one JSON object per line):

================  =================================================================================
``key``           ``{model}|{task}/{id}|{method}``, unique
``task``, ``id``  the sample
``model``         the model name as given
``method``        the grid label (``none``, ``pool:0.25``, ``divprune:count=64``, ...)
``method_name``   the registered name; ``budget``: its budget kwargs
``media_type``    ``image`` or ``video``
``status``        ``ok`` or ``error``; ``error``: the reason (``null`` when ok)
``question``, ``options``  what was asked; ``answer``: the reference (letter, or short answer); ``n_options``
``doc_id``, ``doc``, ``target``, ``resps``, ``filtered_resps``, ``acc``
                  lmms-eval's per-sample fields: the sample's place in its task, the sample (question,
                  options, answer, media), the reference, the raw answer, the extracted one, and 1/0
``prediction``    the decoded new tokens; ``extracted``: the letter / normalised answer
``correct``       bool (false for errors)
``tokens_before``, ``tokens_after``  visual tokens entering the compressor and reaching the LLM (0 for
                  ``text-only``, which runs the prompt without its image or video)
``prefill_ms``    one forward over the batch, divided by the batch size
``e2e_ms``        processor + ``generate`` + decoding for the batch, divided by the batch size
                  (media decoding excluded: it is shared by all methods; see ``load_ms``)
``load_ms``       decoding this sample's media
``peak_mem_mb``   CUDA ``max_memory_allocated`` over the batch, or the process's peak RSS on the CPU
``batch_size``, ``rank``  how it ran
================  =================================================================================

``prefill_ms``, ``e2e_ms``, ``load_ms``, ``peak_mem_mb``, ``batch_size`` and ``rank`` (:data:`VOLATILE`)
depend on the machine and the sharding; every other field is a function of the data, model and method.
"""

from __future__ import annotations

import inspect
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vtc.core.spec import TEXT_ONLY, MethodSpec
from vtc.eval.answers import LETTERS, score
from vtc.eval.data import Item, load_media

VOLATILE = ("prefill_ms", "e2e_ms", "load_ms", "peak_mem_mb", "batch_size", "rank")
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
OPEN_SUFFIX = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Settings:
    """What shapes every result line (frames, decoding) and how batches run."""

    frames: int = 16
    fps: float | None = None
    max_frames: int = 64
    video_backend: str = "auto"
    max_new_tokens: int = 16
    batch_size: int = 4

    def fingerprint(self) -> dict:
        """The settings that change results: a resumed run must use the same ones."""
        return {"frames": self.frames, "fps": self.fps, "max_frames": self.max_frames,
                "video_backend": self.video_backend, "max_new_tokens": self.max_new_tokens}

def line_key(model: str, item: Item, method: str) -> str:
    return f"{model}|{item.key}|{method}"


def build_prompt(processor: Any, item: Item, media: bool = True) -> str:
    """The prompt for ``item`` in the processor's format (module docstring); ``media=False``: without the media
    (the text-only control)."""
    from vtc.models.prompt import media_prompt, without_media

    kind = item.media_type if media else None
    own = getattr(processor, "build_prompt", None)
    if own is not None and "options" in inspect.signature(own).parameters:
        return without_media(processor, own(item.question, item.media_type, options=list(item.options) or None), kind)
    if item.options:
        lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options)]
        text = "\n".join([item.question, *lines, MC_SUFFIX])
    else:
        text = f"{item.question}\n{OPEN_SUFFIX}"
    return media_prompt(processor, text, kind)


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class ModelRunner:
    """One loaded model and processor: runs a method on a batch and returns per-sample outputs."""

    def __init__(self, label: str, model: Any, processor: Any, device: str, settings: Settings) -> None:
        self.label, self.model, self.processor = label, model, processor
        self.device, self.settings = device, settings
        from vtc.models.prompt import prepare_batching

        self.pad_id = prepare_batching(processor)
        params = inspect.signature(model.forward).parameters
        self.forward_extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.warm = False

    def media_types(self) -> set[str]:
        from vtc.models.registry import media_types

        return media_types(self.model.config)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def inputs(self, items: list[Item], media: list[Any] | None) -> Any:
        """The processor's inputs for a batch; ``media=None``: the prompts without their media (text-only)."""
        kind = items[0].media_type
        prompts = [build_prompt(self.processor, it, media=media is not None) for it in items]
        given = {} if media is None else {f"{kind}s": media}
        inputs = self.processor(**given, text=prompts, return_tensors="pt", padding=True)
        dtype = getattr(self.model, "dtype", None)
        return inputs.to(self.device) if dtype is None else inputs.to(self.device, dtype=dtype)

    def warmup(self, items: list[Item], media: list[Any]) -> None:
        """One uncompressed forward, unrecorded, so the first timed batch does not pay for warm-up."""
        import torch

        with torch.no_grad():
            self.model(**self.inputs(items, media), **self.forward_extra)
        self.warm = True

    def run(self, spec: MethodSpec, items: list[Item], media: list[Any]) -> list[dict]:
        """``spec`` on one batch: per sample, the prediction, visual tokens and (shared) timings."""
        from vtc.models.run import run

        self._sync()
        start = time.perf_counter()
        inputs = self.inputs(items, None if spec.name == TEXT_ONLY else media)
        prepared = time.perf_counter() - start
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        result = run(self.model, inputs, spec, max_new_tokens=self.settings.max_new_tokens,
                     forward_kwargs=self.forward_extra, generate_kwargs={"pad_token_id": self.pad_id}, sync=self._sync)
        start = time.perf_counter()
        answers = self.processor.batch_decode(result.new_tokens, skip_special_tokens=True)
        decoded = time.perf_counter() - start
        n = len(items)
        peak = peak_memory_mb(self.device)
        e2e = (prepared + result.generate_ms / 1000 + decoded) * 1000 / n
        return [
            {"prediction": answers[i].strip(), "tokens_before": int(result.before[i]),
             "tokens_after": int(result.after[i]), "prefill_ms": result.prefill_ms / n, "e2e_ms": e2e,
             "peak_mem_mb": peak, "batch_size": n}
            for i in range(n)
        ]


def doc_ids(items: list[Item]) -> dict[str, int]:
    """lmms-eval's ``doc_id``: each item's position among its task's items (in file order)."""
    counts: dict[str, int] = {}
    out = {}
    for it in items:
        out[it.key] = counts.get(it.task, 0)
        counts[it.task] = out[it.key] + 1
    return out


def doc_of(item: Item) -> dict:
    """The sample as lmms-eval's ``doc``: what was asked, the options and the reference."""
    return {"id": item.id, "question": item.question, "options": list(item.options), "answer": item.answer,
            "accepted": list(item.accepted), "media": item.media, "media_type": item.media_type}


def base_line(model: str, item: Item, spec: MethodSpec, rank: int, doc_id: int = 0) -> dict:
    return {
        "key": line_key(model, item, spec.label), "task": item.task, "id": item.id, "model": model,
        "method": spec.label, "method_name": spec.name, "budget": dict(spec.budget), "media_type": item.media_type,
        "question": item.question, "options": list(item.options), "answer": item.answer,
        "n_options": len(item.options), "rank": rank,
        # lmms-eval's per-sample fields
        "doc_id": doc_id, "doc": doc_of(item), "target": item.answer,
    }


def ok_line(model: str, item: Item, spec: MethodSpec, out: dict, load_ms: float, rank: int, doc_id: int = 0) -> dict:
    extracted, correct = score(out["prediction"], item.options, item.answer, item.accepted)
    line = base_line(model, item, spec, rank, doc_id)
    line.update(resps=[[out["prediction"]]], filtered_resps=[extracted], acc=float(correct))
    line.update(status="ok", error=None, prediction=out["prediction"], extracted=extracted, correct=correct,
                tokens_before=out["tokens_before"], tokens_after=out["tokens_after"],
                prefill_ms=round(out["prefill_ms"], 3), e2e_ms=round(out["e2e_ms"], 3), load_ms=round(load_ms, 3),
                peak_mem_mb=round(out["peak_mem_mb"], 1), batch_size=out["batch_size"])
    return line


def error_line(model: str, item: Item, spec: MethodSpec, reason: str, rank: int, doc_id: int = 0) -> dict:
    line = base_line(model, item, spec, rank, doc_id)
    line.update(resps=[], filtered_resps=[], acc=0.0)
    line.update(status="error", error=reason, prediction=None, extracted=None, correct=False, tokens_before=None,
                tokens_after=None, prefill_ms=None, e2e_ms=None, load_ms=None, peak_mem_mb=None, batch_size=None)
    return line


def describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if not isinstance(err, ValueError) else str(err)


def chunks(items: list[Item], size: int) -> list[list[Item]]:
    """Images then videos, each in order, in chunks of ``size``."""
    out = []
    for kind in ("image", "video"):
        group = [it for it in items if it.media_type == kind]
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def pending(model: str, items: list[Item], grid: list[MethodSpec], done: set[str]) -> int:
    return sum(line_key(model, it, s.label) not in done for it in items for s in grid)


def evaluate(runner: ModelRunner, items: list[Item], grid: list[MethodSpec], done: set[str],
             write: Callable[[dict], None], progress: Any = None, rank: int = 0,
             ids: dict[str, int] | None = None) -> None:
    """Run every missing (item, method) pair of ``items`` (already this rank's share and the model's media);
    ``ids``: each item's lmms-eval ``doc_id`` (:func:`doc_ids` of the whole task; default: its place here)."""
    model, settings = runner.label, runner.settings
    ids = ids or doc_ids(items)

    def emit(line: dict) -> None:
        write(line)
        done.add(line["key"])
        if progress is not None:
            progress.update(1)

    for chunk in chunks(items, settings.batch_size):
        todo = [s for s in grid if any(line_key(model, it, s.label) not in done for it in chunk)]
        if not todo:
            continue
        good, media, load_ms = [], [], {}
        for it in chunk:
            start = time.perf_counter()
            try:
                media.append(load_media(it, settings.frames, settings.fps, settings.max_frames,
                                        settings.video_backend))
            except Exception as err:  # any failure of one sample is recorded, the run goes on
                for spec in todo:
                    if line_key(model, it, spec.label) not in done:
                        emit(error_line(model, it, spec, describe(err), rank, ids[it.key]))
                continue
            good.append(it)
            load_ms[it.key] = (time.perf_counter() - start) * 1000
        if not good:
            continue
        if not runner.warm:
            try:
                runner.warmup(good, media)
            except Exception:  # the real run records the failure
                runner.warm = True
        for spec in todo:
            for it, out in zip(good, run_or_split(runner, spec, good, media), strict=True):
                if line_key(model, it, spec.label) in done:
                    continue
                if isinstance(out, str):
                    emit(error_line(model, it, spec, out, rank, ids[it.key]))
                else:
                    emit(ok_line(model, it, spec, out, load_ms[it.key], rank, ids[it.key]))


def run_or_split(runner: ModelRunner, spec: MethodSpec, items: list[Item], media: list[Any]) -> list[dict | str]:
    """The batch's outputs; if the batch fails, each sample alone (an error string where that fails too)."""
    try:
        return runner.run(spec, items, media)
    except Exception as err:
        if len(items) == 1:
            return [describe(err)]
    outs: list[dict | str] = []
    for it, m in zip(items, media, strict=True):
        try:
            outs += runner.run(spec, [it], [m])
        except Exception as err:
            outs.append(describe(err))
    return outs
