"""Held-out accuracy of the embedded tiny models, with the controls the model card reports.

    python benchmarks/tiny_models.py --n 400                 # both shipped models
    python benchmarks/tiny_models.py --model DIR --n 400     # a trained folder (train-tiny's DIR/final)
    python benchmarks/tiny_models.py --curve RUN_DIR/snaps   # accuracy of saved checkpoints (learning curve)
    python benchmarks/tiny_models.py --guidance --n 64       # attention mass of the guided heads, by kind

Rows: full visual tokens; two text-only controls: 0% of the visual tokens (the prompt has no image) and
"objects removed" (the same prompt with an object-free background image);
``random`` keeping 5% of the tokens (vtc.apply); and a few methods at 25% and 11% for reference (on
Qwen, whose ViT has no [CLS], VisionZip scores by attention received: ``cls_substitute="received"``). The
answers are scored with the tiny models' rule (the option text named first, else the letter; row "full,
letter rule" scores the letter only, as ``vtc eval`` does). The held-out samples come from seed 1001
(``vtc.tiny.train.EVAL_SEED``); training draws from seed 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import vtc
from vtc.core.registry import get_info
from vtc.models.loading import load
from vtc.tiny import train as tiny_train

SETTINGS = [("full", None), ("full, letter rule", "letter"), ("0% tokens", "blind"), ("objects removed", "blank"),
            ("random 5%", ("random", 0.05)),
            ("pool 25%", ("pool", 0.25)), ("divprune 25%", ("divprune", 0.25)), ("visionzip 11%", ("visionzip", 0.11))]


def by_kind(model, processor, samples, **kw) -> dict[str, float]:
    groups = defaultdict(list)
    for s in samples:
        groups[s.kind].append(s)
    out = {kind: tiny_train.accuracy(model, processor, group, **kw) for kind, group in groups.items()}
    out["all"] = sum(out[k] * len(groups[k]) for k in groups) / len(samples)
    return out


def evaluate(model, processor, n: int, settings=SETTINGS) -> dict:
    media = {"image": tiny_train.held_out(n, video=False)}
    if processor.family == "qwen2_vl":
        media["video"] = tiny_train.held_out(n, video=True)
    results = {}
    for label, setting in settings:
        for kind, samples in media.items():
            start = time.perf_counter()
            if setting == "letter":
                acc = by_kind(model, processor, samples, rule="letter")
            elif setting in ("blind", "blank"):
                acc = by_kind(model, processor, samples, **{setting: True})
            elif setting is None:
                acc = by_kind(model, processor, samples)
            else:
                method, ratio = setting
                extra = {}
                if processor.family == "qwen2_vl" and "cls_attn" in get_info(method).signals:
                    extra["cls_substitute"] = "received"  # Qwen's ViT has no [CLS]
                with vtc.apply(model, method, ratio=ratio, **extra):
                    acc = by_kind(model, processor, samples)
            results[f"{label} | {kind}"] = acc
            print(f"{label:16s} {kind:5s} " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()),
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    return results


def curve(folder: Path, n: int) -> list[dict]:
    """Accuracy (images, and videos for Qwen) of every ``*.pt`` checkpoint in ``folder``, by training step."""
    rows = []
    tokenizer = tiny_train.tiny.build_tokenizer()
    checkpoints = [(path, torch.load(path, weights_only=False)) for path in folder.glob("*.pt")]
    for path, saved in sorted(checkpoints, key=lambda item: item[1]["state"]["step"]):
        family = "llava" if path.name.startswith("llava") else "qwen2_vl"
        model = tiny_train.tiny.new_model(family, tokenizer)
        model.load_state_dict(saved["model"])
        processor = tiny_train.tiny.TinyProcessor(tokenizer, family)
        row = {"model": family, "step": saved["state"]["step"],
               "image": tiny_train.accuracy(model, processor, tiny_train.held_out(n, video=False))}
        if family == "qwen2_vl":
            row["video"] = tiny_train.accuracy(model, processor, tiny_train.held_out(n, video=True))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


@torch.no_grad()
def guidance(model, processor, n: int, plan: tiny_train.Plan | None = None) -> dict[str, float]:
    """Mean attention mass that the guided heads put on the question's objects, per question kind.

    The quantity the QA stage's attention guidance trains (``exp(-loss)`` per sample, before averaging):
    1.0 means the answer position looks only at the objects the question is about.
    """
    import random

    import numpy as np

    plan = plan or tiny_train.Plan()
    model.set_attn_implementation("eager")
    visual_ids = tiny_train.visual_ids_of(model)
    masses = defaultdict(list)
    videos = [False, True] if processor.family == "qwen2_vl" else [False]
    for video in videos:
        samples = tiny_train.held_out(n, video=video)
        for i in range(0, n, 16):
            chunk = samples[i : i + 16]
            batch = tiny_train.qa_batch(processor, chunk, random.Random(i))
            attention = model(**batch, output_attentions=True).attentions[plan.guide_layer]
            for j, sample in enumerate(chunk):
                loss = tiny_train.guidance_loss(attention[j : j + 1], {k: v[j : j + 1] for k, v in batch.items()},
                                                [sample], visual_ids, plan.guide_heads)
                if tiny_train.shapes.question_objects(sample):
                    masses[sample.kind].append(float(np.exp(-loss.item())))
    model.set_attn_implementation("sdpa")
    out = {kind: float(np.mean(v)) for kind, v in masses.items()}
    print(" ".join(f"{k}={v:.2f}" for k, v in out.items()), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="embedded name or folder (default: both shipped models)")
    parser.add_argument("--n", type=int, default=400, help="held-out samples per media type")
    parser.add_argument("--curve", type=Path, help="a folder of train-tiny checkpoints to evaluate instead")
    parser.add_argument("--guidance", action="store_true", help="attention mass of the guided heads instead")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.curve:
        results = curve(args.curve, args.n)
    else:
        results = {}
        for name in args.model or ["vtc-tiny-llava", "vtc-tiny-qwen2vl"]:
            print(f"== {name}")
            model, processor = load(name)
            results[name] = guidance(model, processor, args.n) if args.guidance else evaluate(model, processor, args.n)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
