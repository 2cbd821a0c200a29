"""The three stages on the shipped tiny models: prefill time and answers, against the unpatched model.

    python benchmarks/stages.py --n 200 --threads 2

Per setting: visual tokens entering the LLM and after the LLM stage (first sample), the median
prefill time of a batch of 16 held-out image questions (a forward pass, no generation) and its ratio
to the unpatched model in the same run, held-out accuracy (the tiny models' rule, see
``docs/tiny-models.md``) and the share of answers equal to the unpatched model's. Absolute times on
these machines are noisy: compare the ratios. CPU only; the tiny LLMs have 4 layers, so FastV's
``layer=1`` drops before the last two.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import vtc
from vtc.models.loading import load
from vtc.tiny import model as tiny
from vtc.tiny.train import choice_of, held_out

SETTINGS = {
    "vtc-tiny-llava": [
        ("none", None),
        ("projector: divprune 25%", [("divprune", {"ratio": 0.25})]),
        ("encoder: tome r=48", [("tome", {"r": 48})]),
        ("llm: fastv 25% after layer 1", [("fastv", {"ratio": 0.25, "layer": 1})]),
        ("llm: pyramiddrop 50% at 0,1,2", [("pyramiddrop", {"ratio": 0.5, "layers": (0, 1, 2)})]),
        (
            "chain: tome r=24, divprune 50%, fastv 50%",
            [("tome", {"r": 24}), ("divprune", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 1})],
        ),
    ],
    "vtc-tiny-qwen2vl": [
        ("none", None),
        ("projector: divprune 25%", [("divprune", {"ratio": 0.25})]),
        ("llm: fastv 25% after layer 1", [("fastv", {"ratio": 0.25, "layer": 1})]),
        ("llm: pyramiddrop 50% at 0,1,2", [("pyramiddrop", {"ratio": 0.5, "layers": (0, 1, 2)})]),
    ],
}
BATCH = 16


def batches(processor, samples) -> list[tuple[dict, list]]:
    out = []
    for start in range(0, len(samples), BATCH):
        chunk = samples[start : start + BATCH]
        texts = [tiny.prompt(s.question, s.options, "<image>").strip() for s in chunk]
        out.append((processor(text=texts, images=[s.frames[0] for s in chunk]), chunk))
    return out


def run(model, processor, prepared, repeats: int) -> tuple[float, list[str], list]:
    """Median prefill ms per batch, the greedy answers, and the stats of the first forward."""
    times, answers, first = [], [], None
    with torch.no_grad():
        for inputs, _ in prepared:
            for _ in range(repeats):
                start = time.perf_counter()
                model(**inputs)
                times.append((time.perf_counter() - start) * 1000)
            patch = getattr(model, "_vtc_patch", None)
            if first is None and patch is not None:
                first = patch.stats[-1]
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            answers += processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])
    return statistics.median(times), answers, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="default: both shipped models")
    parser.add_argument("--n", type=int, default=200, help="held-out image questions")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per batch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = held_out(args.n, video=False)
    for name in args.model or list(SETTINGS):
        model, processor = load(name)
        prepared = batches(processor, samples)
        print(f"== {name}, {args.n} held-out image questions, batch {BATCH}, {args.threads} threads")
        print(f"{'setting':44s} {'tokens in LLM (after LLM stage)':>32s} {'prefill ms':>11s} {'ratio':>6s} "
              f"{'accuracy':>9s} {'same answer':>12s}")
        reference = None
        for label, chain in SETTINGS[name]:
            handle = vtc.apply(model, chain) if chain else None
            try:
                ms, answers, stats = run(model, processor, prepared, args.repeats)
            finally:
                if handle is not None:
                    handle.remove()
            if reference is None:
                reference = (ms, answers)
            right = sum(choice_of(a, s.options) == s.answer for a, s in zip(answers, samples, strict=True))
            same = sum(a == b for a, b in zip(answers, reference[1], strict=True))
            tokens = "196"
            if stats is not None:
                tokens = str(stats["after"][0])
                llm = [e for e in stats["stages"] if e["stage"] == "llm"]
                if llm:
                    tokens += " (" + " -> ".join(str(e["after"][0]) for e in llm) + ")"
            print(f"{label:44s} {tokens:>32s} {ms:11.1f} {ms / reference[0]:6.2f} {right / len(samples):9.3f} "
                  f"{same / len(samples):12.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
