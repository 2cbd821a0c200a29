"""Held-out multiple-choice accuracy of the embedded tiny models, by scoring rule, with the controls.

    python benchmarks/tiny_models.py --n 400                  # both shipped models (held-out seed 1001)
    python benchmarks/tiny_models.py --model DIR --n 400      # a trained folder (train-tiny's DIR/final)
    python benchmarks/tiny_models.py --model DIR --seed 1002  # the validation seed (weights selection)
    python benchmarks/tiny_models.py --curve RUN_DIR/snaps    # checkpoints of a run (learning curve)
    python benchmarks/tiny_models.py --guidance --n 64        # attention mass of the guided heads, by kind

Samples: ``--n`` images (and, for Qwen, ``--n`` 16-frame videos) of the held-out seed, balanced over the
question kinds. Each is asked twice: with the generator's own options (``native``: 4, or yes/no) and with
a mix of 2 to 5 shuffled options (``mixed``, :func:`vtc.tiny.train.eval_options`). Scoring rules:

- ``letter``: what ``vtc eval`` reports, :func:`vtc.eval.answers.extract_letter` == the gold letter;
- ``letter-only``: its rules 1-5 only (a letter the answer states; the option text is never read);
- ``text``: rule 6 only, :func:`vtc.eval.answers.letter_by_text` (the option whose text the answer names).

The letters are grounded when ``letter-only`` is close to ``text``. Controls (letter rule, mixed options):
0% of the visual tokens (the prompt has no image), objects removed (an object-free background), and
``random`` keeping 5% of the visual tokens (``vtc.apply``); ``--methods`` adds reference compressors.
Every accuracy comes with its sample count and a 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import vtc
from vtc.core.registry import get_info
from vtc.models.loading import load
from vtc.tiny import train as tiny_train

MIXES = ("native", "mixed")
CONTROLS = [("0% tokens", "blind"), ("objects removed", "blank"), ("random 5%", ("random", 0.05))]
REFERENCES = [("pool 25%", ("pool", 0.25)), ("divprune 25%", ("divprune", 0.25)),
              ("visionzip 11%", ("visionzip", 0.11))]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``k / n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summary(right: list[bool], kinds: list[str]) -> dict:
    """Accuracy, n and 95% interval overall, and accuracy by question kind."""
    k, n = int(np.sum(right)), len(right)
    low, high = wilson(k, n)
    out = {"acc": k / n, "n": n, "ci95": [low, high], "by_kind": {}}
    groups = defaultdict(list)
    for r, kind in zip(right, kinds, strict=True):
        groups[kind].append(r)
    out["by_kind"] = {kind: float(np.mean(v)) for kind, v in groups.items()}
    return out


def line(label: str, media: str, s: dict, extra: str = "") -> str:
    kinds = " ".join(f"{k}={v:.2f}" for k, v in s["by_kind"].items())
    return (f"{label:24s} {media:5s} {100 * s['acc']:5.1f}% (n={s['n']}, 95% CI {100 * s['ci95'][0]:.1f}-"
            f"{100 * s['ci95'][1]:.1f}) {extra}[{kinds}]")


def run_setting(model, processor, samples, options, setting) -> list[str]:
    if setting is None:
        return tiny_train.predict(model, processor, samples, options)
    if setting in ("blind", "blank"):
        return tiny_train.predict(model, processor, samples, options, **{setting: True})
    method, ratio = setting
    extra = {}
    if processor.family == "qwen2_vl" and "cls_attn" in get_info(method).signals:
        extra["cls_substitute"] = "received"  # Qwen's ViT has no [CLS]
    with vtc.apply(model, method, ratio=ratio, **extra):
        return tiny_train.predict(model, processor, samples, options)


def evaluate(model, processor, n: int, seed: int = tiny_train.EVAL_SEED, controls: bool = True,
             references: bool = False, mixes=MIXES) -> dict:
    """Every row for one model: full accuracy by rule and option mix, then the controls."""
    media = {"image": tiny_train.held_out(n, video=False, seed=seed)}
    if processor.family == "qwen2_vl":
        media["video"] = tiny_train.held_out(n, video=True, seed=seed)
    results: dict = {"seed": seed}
    for kind, samples in media.items():
        kinds = [s.kind for s in samples]
        for mix in mixes:
            options = [tiny_train.eval_options(s, i, mix) for i, s in enumerate(samples)]
            start = time.perf_counter()
            answers = run_setting(model, processor, samples, options, None)
            for rule in tiny_train.RULES:
                s = summary(tiny_train.scored(answers, samples, options, rule), kinds)
                results[f"full {mix} {rule} | {kind}"] = s
                print(line(f"full {mix}, {rule}", kind, s), flush=True)
            gap = results[f"full {mix} text | {kind}"]["acc"] - results[f"full {mix} letter_only | {kind}"]["acc"]
            results[f"grounding gap {mix} | {kind}"] = gap
            print(f"{'grounding gap ' + mix:24s} {kind:5s} {100 * gap:+.1f} points (text - letter-only)"
                  f" ({time.perf_counter() - start:.0f}s)", flush=True)
        settings = (CONTROLS if controls else []) + (REFERENCES if references else [])
        options = [tiny_train.eval_options(s, i, "mixed") for i, s in enumerate(samples)]
        full = results[f"full mixed letter | {kind}"]["acc"]
        for label, setting in settings:
            answers = run_setting(model, processor, samples, options, setting)
            s = summary(tiny_train.scored(answers, samples, options, "letter"), kinds)
            s["cost"] = full - s["acc"]
            results[f"{label} | {kind}"] = s
            print(line(label, kind, s, f"cost {100 * s['cost']:+.1f} "), flush=True)
    return results


def curve(folder: Path, n: int, seed: int = tiny_train.EVAL_SEED) -> list[dict]:
    """Letter-rule accuracy (mixed options) of every ``*.pt`` checkpoint in ``folder``, by training step."""
    rows = []
    tokenizer = tiny_train.tiny.build_tokenizer()
    for path in sorted(folder.glob("*.pt")):
        saved = torch.load(path, weights_only=False)
        family = "llava" if path.name.startswith("llava") else "qwen2_vl"
        layers = saved.get("plan", {}).get("lm_layers", 4)
        model = tiny_train.tiny.new_model(family, tokenizer, lm_layers=layers)
        model.load_state_dict(saved["model"])
        processor = tiny_train.tiny.TinyProcessor(tokenizer, family)
        row = {"model": family, "step": saved["state"]["step"], "file": path.name}
        for video in [False, True] if family == "qwen2_vl" else [False]:
            samples = tiny_train.held_out(n, video=video, seed=seed)
            options = [tiny_train.eval_options(s, i) for i, s in enumerate(samples)]
            answers = tiny_train.predict(model, processor, samples, options)
            for rule in tiny_train.RULES:
                row[f"{'video' if video else 'image'} {rule}"] = float(
                    np.mean(tiny_train.scored(answers, samples, options, rule)))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


@torch.no_grad()
def guidance(model, processor, n: int, plan: tiny_train.Plan | None = None) -> dict[str, float]:
    """Mean attention mass that the guided heads put on the answer's objects, per question kind.

    The quantity the QA stage's attention guidance trains (``exp(-loss)`` per sample, before averaging):
    1.0 means the answer position looks only at the tokens that carry the answer (no sink).
    """
    import random

    plan = plan or tiny_train.Plan()
    model.set_attn_implementation("eager")
    visual_ids = tiny_train.visual_ids_of(model)
    masses = defaultdict(list)
    videos = [False, True] if processor.family == "qwen2_vl" else [False]
    for video in videos:
        samples = tiny_train.held_out(n, video=video)
        for i in range(0, n, 16):
            chunk = samples[i : i + 16]
            options = [tiny_train.eval_options(s, i + j) for j, s in enumerate(chunk)]
            batch = tiny_train.qa_batch(processor, chunk, random.Random(i), options=options)
            attention = model(**batch, output_attentions=True).attentions[plan.guide_layer]
            for j, sample in enumerate(chunk):
                loss = tiny_train.guidance_loss(attention[j : j + 1], {k: v[j : j + 1] for k, v in batch.items()},
                                                [sample], visual_ids, plan.guide_heads)
                if tiny_train.guide_tokens(sample).any():
                    masses[sample.kind].append(float(np.exp(-loss.item())))
    model.set_attn_implementation("sdpa")
    out = {kind: float(np.mean(v)) for kind, v in masses.items()}
    print(" ".join(f"{k}={v:.2f}" for k, v in out.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="embedded name or folder (default: both shipped models)")
    parser.add_argument("--n", type=int, default=400, help="held-out samples per media type")
    parser.add_argument("--seed", type=int, default=tiny_train.EVAL_SEED, help="held-out seed (1001; 1002: validation)")
    parser.add_argument("--no-controls", action="store_true", help="full accuracy only")
    parser.add_argument("--methods", action="store_true", help="also pool 25%%, divprune 25%%, visionzip 11%%")
    parser.add_argument("--curve", type=Path, help="a folder of train-tiny checkpoints to evaluate instead")
    parser.add_argument("--guidance", action="store_true", help="attention mass of the guided heads instead")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.curve:
        results = curve(args.curve, args.n, args.seed)
    else:
        results = {}
        for name in args.model or ["vtc-tiny-llava", "vtc-tiny-qwen2vl"]:
            print(f"== {name}", flush=True)
            model, processor = load(name)
            if args.guidance:
                results[name] = guidance(model, processor, args.n)
            else:
                results[name] = evaluate(model, processor, args.n, args.seed, not args.no_controls, args.methods)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
