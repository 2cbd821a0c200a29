"""``vtc train-tiny``: train the embedded tiny VLMs from scratch on the shapes world, on CPU (or a GPU).

Plain end-to-end QA training from scratch is too slow on 2 CPU cores (a probe stayed at chance for
25 minutes), so training uses what the generator knows:

1. **Dense pre-training** of the vision tower and projector: every visual token predicts the colour,
   shape, centre flag and centre column of the object under it (videos add motion, start time and
   initial colour), and LLaVA's [CLS] predicts the count of each shape. Linear heads, cross-entropy.
2. **QA alignment** of projector and LM (vision frozen) on answer tokens only, with a curriculum: at
   most 3 objects first, full clutter later. Targets carry the open answer before the option letter
   (``"red A </s>"``), and half the prompts are open questions without options.
3. **Attention guidance** during QA: the first heads of one LM layer are trained, at the last prompt
   position, to put their attention on the visual tokens of the objects the question is about
   (:func:`vtc.data.shapes.question_objects`). Without it the LM sat on a loss plateau for thousands of
   steps, even when fed the generator's exact per-token facts instead of visual features: finding the
   few relevant tokens among ~200 is what it failed to learn, not reading them.

Answers are balanced by the generator (it draws the answer first). Everything is seeded; samples are a
pure function of their index, so a resumed run sees exactly the samples it would have seen. A checkpoint
(``DIR/checkpoint.pt``, model and optimiser) is written every ``--save-every`` steps and on exit, and the
run resumes from it. The final weights go to ``DIR`` as ``model.safetensors`` plus config and processor.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vtc.data import shapes
from vtc.eval.answers import extract_letter, letter_by_text
from vtc.tiny import model as tiny

TRAIN_SEED = 0  # the training stream; held-out evaluation uses seeds >= 1000
EVAL_SEED = 1001
HEADS = {"object": 2, "color": 6, "shape": 6, "centre": 2, "column": 14, "motion": 5, "same": 6, "leftmost": 2}
# Relational heads, what a question needs from one token of the right object (images, whose tokens all
# attend to each other in the tower): "same", how many objects in the image share this token's shape
# (clipped at 5); "leftmost", whether its object is the leftmost one. The Qwen tower attends within
# one temporal patch (two frames) of a video only, so video tokens get no clip-level targets (such as the
# start time or the initial colour of an object, which earlier versions asked for).
IGNORE = -100
IMAGE_ONLY = ("column", "same", "leftmost")


@dataclass
class Plan:
    """Steps and batch sizes of both stages (defaults fit about an hour on 2 CPU cores)."""

    dense_steps: int = 2500
    qa_steps: int = 4000
    batch: int = 16  # QA batch; dense batches are twice as large
    lr_dense: float = 2e-3
    lr_qa: float = 1e-3
    video_every: int = 2  # qwen2_vl: every n-th batch is a video batch
    easy_fraction: float = 0.3  # QA curriculum: this share of the QA steps uses at most 3 objects
    save_every: int = 200
    guide: float = 1.0  # weight of the attention guidance in the QA loss (0: off)
    guide_layer: int = 1  # the LM layer whose first ``guide_heads`` heads are guided
    guide_heads: int = 2
    sink: bool = True  # guide exists-no and entered-0 questions to the first token (guidance_loss)
    init: str | None = None  # start from these exported weights (a name or folder) instead of from scratch
    qa_vision: bool = False  # QA also trains the vision tower (else it stays as dense training left it)
    open_fraction: float = 0.25  # QA: share of open questions (no options); the rest have 2 to 5 options
    drill: int = 16  # QA: text-only letter-drill rows per step (drill_texts; 0: none)
    drill_steps: int = 0  # a text-only letter-drill stage between dense and QA (batches of 4 x batch rows)
    lm_layers: int = 4  # LM depth of a new model (an --init model keeps its matching layers)
    snapshot_every: int = 0  # copy the checkpoint to DIR/snaps every this many steps (learning curves; 0: never)


# ----------------------------------------------------------------------------------------------- targets
def cell_owner(layout: np.ndarray, cell: int, min_pixels: int) -> np.ndarray:
    """Per cell (row-major), the object index covering most of it, or -1 below ``min_pixels``."""
    h, w = layout.shape
    blocks = layout.reshape(h // cell, cell, w // cell, cell).transpose(0, 2, 1, 3).reshape(-1, cell * cell)
    owners = np.full(len(blocks), -1, dtype=np.int64)
    for i, block in enumerate(blocks):
        ids, counts = np.unique(block[block >= 0], return_counts=True)
        if len(ids) and counts.max() >= min_pixels:
            owners[i] = ids[counts.argmax()]
    return owners


def image_targets(sample: shapes.Sample) -> dict[str, np.ndarray]:
    """Per-token dense targets of an image sample (196 tokens of 16 px)."""
    objects = sample.objects[0]
    owner = cell_owner(sample.layout[0], tiny.CELL, 12)
    side = sample.layout[0].shape[0] // tiny.CELL
    out = {k: np.full(len(owner), IGNORE, dtype=np.int64) for k in ("color", "shape", "centre", "column", "same")}
    out["object"] = (owner >= 0).astype(np.int64)
    out["owner"] = owner
    out["centre"][:] = 0
    colors, kinds = list(shapes.COLORS), list(shapes.SHAPES)
    leftmost = min(range(len(objects)), key=lambda j: objects[j].x) if objects else -1
    out["leftmost"] = np.where(owner >= 0, (owner == leftmost).astype(np.int64), IGNORE)
    for i, o in enumerate(owner):
        if o < 0:
            continue
        obj = objects[o]
        out["color"][i], out["shape"][i] = colors.index(obj.color), kinds.index(obj.shape)
        out["column"][i] = min(side - 1, int(obj.x // tiny.CELL))
        out["same"][i] = min(5, sum(other.shape == obj.shape for other in objects))
    for obj in objects:
        cell = min(side - 1, int(obj.y // tiny.CELL)) * side + min(side - 1, int(obj.x // tiny.CELL))
        out["centre"][cell] = 1
    return out


def video_targets(sample: shapes.Sample, cell: int = 2 * tiny.CELL) -> dict[str, np.ndarray]:
    """Per-token dense targets of a video sample (frame pairs × 7 × 7 cells of 32 px): what the first frame
    of each pair shows (else the second's), and the object's motion."""
    tracks = sample.extra["tracks"]
    colors, kinds = list(shapes.COLORS), list(shapes.SHAPES)
    motions = ["still", *shapes.DIRECTIONS]
    side = sample.layout[0].shape[0] // cell
    parts = []
    for g in range(0, len(sample.frames), 2):
        pair = np.concatenate(sample.layout[g : g + 2], axis=0)  # both frames of the temporal patch
        owner = cell_owner(pair.reshape(-1, pair.shape[1]), cell, 40)
        owner = owner.reshape(-1, side * side)
        owner = np.where(owner[0] >= 0, owner[0], owner[-1])  # the first frame's object, else the second's
        part = {k: np.full(len(owner), IGNORE, dtype=np.int64) for k in HEADS if k not in IMAGE_ONLY}
        part["object"], part["centre"][:] = (owner >= 0).astype(np.int64), 0
        part["owner"] = owner
        for i, o in enumerate(owner):
            if o < 0:
                continue
            tr = tracks[o]
            now = tr["new_color"] if g >= tr["recolor_at"] else tr["color"]
            part["color"][i], part["shape"][i] = colors.index(now), kinds.index(tr["shape"])
            part["motion"][i] = motions.index(tr["motion"])
        for tr in tracks:
            if tr["start"] <= g:
                x, y = tr["x"] + tr["dx"] * g, tr["y"] + tr["dy"] * g
                part["centre"][min(side - 1, int(y // cell)) * side + min(side - 1, int(x // cell))] = 1
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def scene_counts(sample: shapes.Sample) -> np.ndarray:
    """Per shape kind, how many objects of it the image holds (clipped at 4): [CLS] targets."""
    counts = np.zeros(len(shapes.SHAPES), dtype=np.int64)
    for obj in sample.objects[0]:
        counts[shapes.SHAPES.index(obj.shape)] += 1
    return np.minimum(counts, 4)


# ----------------------------------------------------------------------------------------------- batches
def draw(index: int, video: bool, max_objects: int) -> shapes.Sample:
    if video:
        return shapes.make_video(TRAIN_SEED, index)
    return shapes.make_image(TRAIN_SEED, index, max_objects=max_objects)


def visual_tokens(model: nn.Module, family: str, batch: dict) -> tuple[Tensor, Tensor | None]:
    """Projected visual tokens ``[M, D]`` (all items concatenated) and LLaVA's [CLS] states ``[B, Dv]``."""
    inner = model.model
    if family == "llava":
        hidden = inner.vision_tower(batch["pixel_values"], output_hidden_states=True).hidden_states[-1]
        return inner.multi_modal_projector(hidden[:, 1:]).flatten(0, 1), hidden[:, 0]
    if "pixel_values_videos" in batch:
        out = inner.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"])
    else:
        out = inner.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    return torch.cat(list(out.pooler_output)), None


class DenseHeads(nn.Module):
    """Linear read-outs of the generator's per-token facts (and LLaVA's [CLS] shape counts)."""

    def __init__(self, dim: int, cls_dim: int | None) -> None:
        super().__init__()
        self.token = nn.ModuleDict({k: nn.Linear(dim, n) for k, n in HEADS.items()})
        self.cls = nn.Linear(cls_dim, len(shapes.SHAPES) * 5) if cls_dim else None

    def loss(self, tokens: Tensor, targets: dict[str, Tensor], cls: Tensor | None, counts: Tensor | None,
             items: int) -> Tensor:
        """Cross-entropy of every head (shape weighted ×3: it is the slow one to learn), plus grouping.

        Grouping: the first 32 feature dims of two object tokens are similar exactly when they belong to
        the same object (pairwise logistic loss within each item). It teaches the tower to pool the
        pieces of an object, which is what makes per-token shape learnable in minutes.
        """
        owner = targets["owner"]
        losses = []
        for key, target in targets.items():
            if key != "owner" and (target != IGNORE).any():
                ce = nn.functional.cross_entropy(self.token[key](tokens).float(), target, ignore_index=IGNORE)
                losses.append(3 * ce if key == "shape" else ce)
        if self.cls is not None and cls is not None:
            logits = self.cls(cls).float().view(-1, 5)
            losses.append(nn.functional.cross_entropy(logits, counts.flatten()))
        z = nn.functional.normalize(tokens.float().view(items, -1, tokens.shape[-1])[..., :32], dim=-1)
        owner = owner.view(items, -1)
        pairs = (owner[:, :, None] >= 0) & (owner[:, None, :] >= 0)
        same = (owner[:, :, None] == owner[:, None, :]).float()
        logits = 10 * z @ z.transpose(1, 2)
        losses.append(nn.functional.binary_cross_entropy_with_logits(logits[pairs], same[pairs]))
        return torch.stack(losses).sum()


def dense_loss(model: nn.Module, heads: DenseHeads, processor: tiny.TinyProcessor, family: str,
               samples: list[shapes.Sample], device: str) -> Tensor:
    """Dense pre-training loss of one batch (all images or all videos)."""
    video = samples[0].is_video
    kw = {"videos": [s.frames for s in samples]} if video else {"images": [s.frames[0] for s in samples]}
    texts = ["<video>" if video else "<image>"] * len(samples)
    batch = {k: v.to(device) for k, v in processor(text=texts, **kw).items()}
    tokens, cls = visual_tokens(model, family, batch)
    per = [video_targets(s) if video else image_targets(s) for s in samples]
    targets = {k: torch.from_numpy(np.concatenate([p[k] for p in per])).to(device) for k in per[0]}
    counts = None
    if cls is not None:
        counts = torch.from_numpy(np.stack([scene_counts(s) for s in samples])).to(device)
    return heads.loss(tokens, targets, cls, counts, len(samples))


# ----------------------------------------------------------------------------------------------- options
# Distractor pools per question kind, so that any kind can have up to 5 options (exists: yes/no only).
# The generator's own distractors (colours in the scene, shapes to the right...) come first.
POOLS: dict[str, list[str]] = {
    "color": list(shapes.COLORS), "start_color": list(shapes.COLORS), "count": ["1", "2", "3", "4", "0", "5"],
    "exists": ["yes", "no"], "left_of": list(shapes.SHAPES), "first": list(shapes.SHAPES),
    "direction": [*shapes.DIRECTIONS, "still"], "entered": ["0", "1", "2", "3", "4", "5"],
}
MIN_OPTIONS, MAX_OPTIONS = 2, 5


def reoption(sample: shapes.Sample, n: int, rng: random.Random) -> list[str]:
    """``n`` shuffled options for ``sample`` (fewer if its kind has fewer): its answer, then distractors.

    Distractors are the generator's own (in random order), then others from the kind's pool; for
    ``left_of`` never the reference's shape (the question names it).
    """
    words = sample.question.split()
    banned = {sample.answer_text, words[-2]} if sample.kind == "left_of" else {sample.answer_text}
    own = [o for o in sample.options if o not in banned]
    rng.shuffle(own)
    rest = [o for o in POOLS[sample.kind] if o not in banned and o not in own]
    rng.shuffle(rest)
    options = [sample.answer_text, *(own + rest)[: max(1, n - 1)]]
    rng.shuffle(options)
    return options


def eval_options(sample: shapes.Sample, index: int, mix: str = "mixed") -> list[str]:
    """The options a held-out sample is asked with: ``"native"`` (the generator's, 4 or yes/no) or
    ``"mixed"`` (2 to 5 by the index, shuffled; a pure function of the sample and its index)."""
    if mix == "native":
        return list(sample.options)
    rng = random.Random(f"vtc-tiny-options/{index}/{sample.question}")
    return reoption(sample, MIN_OPTIONS + index % (MAX_OPTIONS - MIN_OPTIONS + 1), rng)


def drill_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Text-only letter drill: ``(prompt, target)`` pairs whose answer text is given (teacher forced), so
    only the letter after it is learnt: the copy of the token that follows the named option."""
    out = []
    for _ in range(n):
        kind = rng.choice(list(POOLS))
        pool = [o for o in POOLS[kind] if kind != "left_of" or o != "star"]
        options = rng.sample(pool, min(len(pool), rng.randint(MIN_OPTIONS, MAX_OPTIONS)))
        answer = rng.choice(options)
        question = DRILL_QUESTIONS[kind].format(color=rng.choice(list(shapes.COLORS)), shape=rng.choice(shapes.SHAPES))
        out.append((tiny.prompt(question, options, ""), tiny.target(answer, options)))
    return out


DRILL_QUESTIONS = {
    "color": "what colour is the {shape} ?", "count": "how many {shape} are there ?",
    "exists": "is there a {color} {shape} ?", "left_of": "which shape is left of the {color} star ?",
    "direction": "which direction did the {color} {shape} move ?", "first": "which shape appeared first ?",
    "entered": "how many shapes entered ?", "start_color": "what colour was the {shape} at the start ?",
}


# ----------------------------------------------------------------------------------------------- QA batches
def qa_batch(processor: tiny.TinyProcessor, samples: list[shapes.Sample], rng: random.Random,
             open_fraction: float = 0.25, options: list[list[str] | None] | None = None) -> dict:
    """Prompts with targets appended; ``labels`` are -100 except on the target tokens.

    Each sample is asked as an open question (``open_fraction``) or with 2 to 5 shuffled options
    (:func:`reoption`), unless ``options`` gives them.
    """
    texts, prompts = [], []
    for i, s in enumerate(samples):
        if options is not None:
            opts = options[i]
        elif rng.random() < open_fraction:
            opts = None
        else:
            opts = reoption(s, rng.randint(MIN_OPTIONS, MAX_OPTIONS), rng)
        p = tiny.prompt(s.question, opts, "<video>" if s.is_video else "<image>")
        prompts.append(p)
        texts.append(p + " " + tiny.target(s.answer_text, opts))
    kw = {"videos": [s.frames for s in samples]} if samples[0].is_video else {"images": [s.frames[0] for s in samples]}
    batch = processor(text=texts, padding_side="right", **kw)
    # word-level tokenizer: one token per word of the prompt with its media markers expanded
    return with_answer_labels(batch, [len(processor.expand(p, [len(s.frames)]).split())
                                      for p, s in zip(prompts, samples, strict=True)])


def drill_batch(processor: tiny.TinyProcessor, rng: random.Random, n: int) -> dict:
    """A text-only batch of :func:`drill_texts`; labels on the letter and ``</s>`` only."""
    pairs = drill_texts(rng, n)
    batch = processor(text=[p + " " + t for p, t in pairs], padding_side="right")
    return with_answer_labels(batch, [len(p.split()) + 1 for p, _ in pairs])  # the prompt and the given answer text


def with_answer_labels(batch: dict, unlabelled: list[int]) -> dict:
    """``batch`` (right padded) as a dict with ``labels``: the input ids, ``IGNORE`` on the padding and on the
    first ``unlabelled[i]`` tokens of row ``i``."""
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE
    for i, n in enumerate(unlabelled):
        labels[i, :n] = IGNORE
    batch["labels"] = labels
    return dict(batch)


SINK_KINDS = ("exists", "entered")  # questions whose answer may be that nothing in the scene matches


def guide_tokens(sample: shapes.Sample) -> np.ndarray:
    """Per visual token, whether the guided heads should attend to it: the tokens that carry the answer.

    The tokens of :func:`vtc.data.shapes.question_objects`, except ``left_of`` (only the object left of the
    reference: its shape is the answer) and ``start_color`` (the named object in the first two frames only,
    before it changes colour).
    """
    owner = (video_targets(sample) if sample.is_video else image_targets(sample))["owner"]
    found = shapes.question_objects(sample)
    if sample.kind == "left_of":
        found = found[1:]
    relevant = np.isin(owner, found)  # owner -1 never matches
    if sample.kind == "start_color":
        relevant[len(owner) // ((len(sample.frames) + 1) // 2) :] = False
    return relevant


def guidance_loss(attention: Tensor, batch: dict, samples: list[shapes.Sample], visual_ids: Tensor,
                  heads: int, sink: bool = False) -> Tensor:
    """Attention guidance: ``-log`` of the attention mass the guided heads put on the answer's tokens.

    ``attention`` is one layer's ``[B, H, T, T]`` map; the query is the last prompt position (the one that
    predicts the first answer token), the keys are the visual tokens of :func:`guide_tokens`. Samples
    with no such token are skipped, except with ``sink``: an ``exists`` or ``entered`` question with
    nothing to look at (answer no, or 0) is guided to the row's first token instead, so that absence is
    visible (the heads look at the sink when nothing matches). ``0`` if no sample is left.
    """
    visual = torch.isin(batch["input_ids"], visual_ids.to(batch["input_ids"].device))
    losses = []
    for i, sample in enumerate(samples):
        relevant = torch.from_numpy(guide_tokens(sample))
        columns = visual[i].nonzero().flatten()
        if len(columns) != len(relevant):
            raise ValueError(f"sample {i}: {len(columns)} visual tokens, but {len(relevant)} dense targets")
        columns = columns[relevant.to(columns.device)]
        if sink and not len(columns) and sample.kind in SINK_KINDS:
            columns = batch["attention_mask"][i].nonzero().flatten()[:1]
        if len(columns):
            query = int((batch["labels"][i] != IGNORE).nonzero()[0]) - 1
            mass = attention[i, :heads, query, columns].float().sum(-1)
            losses.append(-torch.log(mass + 1e-4).mean())
    return torch.stack(losses).mean() if losses else attention.new_zeros(()).float()


def visual_ids_of(model: nn.Module) -> Tensor:
    """The placeholder ids of every modality the model takes (its adapter's), for :func:`guidance_loss`."""
    from vtc.models import adapter_for

    return torch.tensor(sorted(adapter_for(model).visual_token_ids()))


# ----------------------------------------------------------------------------------------------- evaluation
RULES = ("letter", "letter_only", "text")


def choice_of(text: str, options: list[str], rule: str = "letter") -> str:
    """The option a generated answer picks, as a letter (``""``: none).

    ``"letter"``: as ``vtc eval`` scores it (:func:`vtc.eval.answers.extract_letter`, rules 1 to 6);
    ``"letter_only"``: its letter rules 1 to 5 only (a letter the answer states, never its text);
    ``"text"``: rule 6 only (:func:`vtc.eval.answers.letter_by_text`, the option whose text it names).
    """
    if rule == "letter":
        return extract_letter(text, options)
    if rule == "letter_only":  # options without text: rule 6 finds nothing
        return extract_letter(text, [""] * len(options))
    if rule == "text":
        return letter_by_text(text, options)
    raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")


def blank_like(sample: shapes.Sample) -> list[np.ndarray]:
    """The sample's frames with every object removed (same kind of background): the no-information control."""
    seed = zlib.crc32(sample.question.encode())  # str hash() changes per process; crc32 does not
    bg = np.asarray(shapes.background(shapes.sample_rng(-1, seed), sample.frames[0].shape[0]))
    return [bg] * len(sample.frames)


@torch.no_grad()
def predict(model: nn.Module, processor: tiny.TinyProcessor, samples: list[shapes.Sample],
            options: list[list[str]] | None = None, batch: int = 16, blind: bool = False,
            blank: bool = False, max_new_tokens: int = 4) -> list[str]:
    """Greedy answers to the samples asked with ``options`` (default: the generator's own).

    Controls: ``blind`` drops the visual tokens from the prompt (0% of them); ``blank`` keeps the prompt
    but shows a background without objects, so only the text and generic image statistics are left.
    """
    model.eval()
    options = options or [s.options for s in samples]
    answers = []
    for start in range(0, len(samples), batch):
        chunk, opts = samples[start : start + batch], options[start : start + batch]
        media = "<video>" if chunk[0].is_video else "<image>"
        texts = [tiny.prompt(s.question, o, "" if blind else media) for s, o in zip(chunk, opts, strict=True)]
        frames = [blank_like(s) if blank else s.frames for s in chunk]
        if blind:
            inputs = processor(text=texts)
        elif chunk[0].is_video:
            inputs = processor(text=texts, videos=frames)
        else:
            inputs = processor(text=texts, images=[f[0] for f in frames])
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers += [a.strip() for a in processor.batch_decode(out[:, inputs["input_ids"].shape[1] :])]
    return answers


def gold(sample: shapes.Sample, options: list[str]) -> str:
    return tiny.LETTERS[options.index(sample.answer_text)]


def scored(answers: list[str], samples: list[shapes.Sample], options: list[list[str]] | None = None,
           rule: str = "letter") -> list[bool]:
    options = options or [s.options for s in samples]
    return [choice_of(a, o, rule) == gold(s, o) for a, s, o in zip(answers, samples, options, strict=True)]


def accuracy(model: nn.Module, processor: tiny.TinyProcessor, samples: list[shapes.Sample], batch: int = 16,
             blind: bool = False, blank: bool = False, rule: str = "letter", mix: str = "native") -> float:
    """Multiple-choice accuracy by greedy generation, scored by ``rule`` (:func:`choice_of`); the samples
    are asked with their ``mix`` of options (:func:`eval_options`)."""
    options = [eval_options(s, i, mix) for i, s in enumerate(samples)]
    answers = predict(model, processor, samples, options, batch, blind, blank)
    return float(np.mean(scored(answers, samples, options, rule)))


def held_out(n: int, video: bool, seed: int = EVAL_SEED) -> list[shapes.Sample]:
    make = shapes.make_video if video else shapes.make_image
    return [make(seed, i) for i in range(n)]


# ----------------------------------------------------------------------------------------------- training
def continue_from(model: nn.Module, tokenizer, previous: nn.Module, previous_processor) -> str:
    """Load ``previous``'s weights into ``model``: equal shapes as they are, the token embeddings row by row
    by token (the vocabularies may differ: new tokens keep their fresh rows; a new option letter starts
    from the last letter the previous vocabulary had). Returns what was not carried over, as a line."""
    mine, theirs = model.state_dict(), previous.state_dict()
    old_vocab = previous_processor.tokenizer.get_vocab()
    new_vocab = tokenizer.get_vocab()
    last_letter = max((t for t in old_vocab if len(t) == 1 and t in tiny.LETTERS), default=None)
    fresh, skipped = [], []
    with torch.no_grad():
        for key, value in mine.items():
            old, embedding = theirs.get(key), key.endswith(("embed_tokens.weight", "lm_head.weight"))
            if old is not None and old.shape == value.shape and not embedding:
                value.copy_(old)
            elif old is not None and embedding:
                for token, row in new_vocab.items():
                    if token in old_vocab:
                        value[row] = old[old_vocab[token]]
                    elif token in tiny.LETTERS and last_letter is not None:
                        value[row] = old[old_vocab[last_letter]] + 0.02 * torch.randn_like(value[row])
                        fresh.append(token)
                    else:
                        fresh.append(token)
            else:
                skipped.append(key)
    return (f"continued {type(previous).__name__}: {len(set(fresh))} new tokens, "
            f"{len(skipped)} tensors not carried over{': ' + ', '.join(skipped[:6]) if skipped else ''}")


def stage_of(step: int, plan: Plan) -> tuple[str, int, int]:
    """``(stage, step within it, its length)``: dense, then the text-only letter drill, then QA."""
    if step < plan.dense_steps:
        return "dense", step, plan.dense_steps
    step -= plan.dense_steps
    if step < plan.drill_steps:
        return "drill", step, plan.drill_steps
    return "qa", step - plan.drill_steps, plan.qa_steps


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train(family: str, out: str | Path, plan: Plan | None = None, device: str = "cpu", log=print) -> Path:
    """Train (or resume) a tiny model of ``family`` into ``out``; returns the folder with the final weights."""
    from tqdm import tqdm

    if family not in tiny.FAMILIES:
        raise ValueError(f"model: expected one of {tiny.FAMILIES}, got {family!r}")
    plan = plan or Plan()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny.build_tokenizer()
    processor = tiny.TinyProcessor(tokenizer, family)
    model = tiny.new_model(family, tokenizer, lm_layers=plan.lm_layers)
    if plan.init:
        from vtc.models.loading import load

        log(continue_from(model, tokenizer, *load(plan.init)))
    model = model.to(device)
    if plan.guide:  # the guided layer's attention map is needed: sdpa does not return it
        model.set_attn_implementation("eager")
    visual_ids = visual_ids_of(model)
    text_dim = model.config.text_config.hidden_size
    heads = DenseHeads(text_dim, model.config.vision_config.hidden_size if family == "llava" else None).to(device)
    total = plan.dense_steps + plan.drill_steps + plan.qa_steps
    state = {"step": 0, "history": []}
    ckpt = out / "checkpoint.pt"
    saved = None
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        heads.load_state_dict(saved["heads"])
        state = saved["state"]
        log(f"resuming at step {state['step']}")
    optimiser = None
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
    bar = tqdm(total=total, initial=state["step"], desc=f"train-tiny {family}")
    running, guides, drills, t0 = [], [], [], time.time()

    def save() -> None:
        torch.save({"model": model.state_dict(), "heads": heads.state_dict(), "state": state, "plan": asdict(plan),
                    "optimiser": optimiser.state_dict() if optimiser else None,
                    "optimiser_stage": getattr(optimiser, "stage", None)}, ckpt)

    def make_optimiser(dense: bool):
        vision = model.model.vision_tower if family == "llava" else model.model.visual
        if dense:
            projector = model.model.multi_modal_projector.parameters() if family == "llava" else []
            params = [*vision.parameters(), *projector, *heads.parameters()]
        else:  # QA: the vision tower stays as dense training left it unless qa_vision; Qwen's merger is its projector
            for p in vision.parameters():
                p.requires_grad_(plan.qa_vision)
            if family == "qwen2_vl":
                for p in model.model.visual.merger.parameters():
                    p.requires_grad_(True)
            params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=plan.lr_dense if dense else plan.lr_qa, weight_decay=0.01)

    try:
        while state["step"] < total:
            step = state["step"]
            stage, stage_step, stage_total = stage_of(step, plan)
            dense = stage == "dense"
            if optimiser is None or optimiser.stage != stage:
                optimiser = make_optimiser(dense)
                optimiser.stage = stage
                if saved is not None and saved.get("optimiser_stage") == stage:  # resuming mid-stage
                    optimiser.load_state_dict(saved["optimiser"])
                saved = None
            for group in optimiser.param_groups:
                group["lr"] = lr_at(stage_step, stage_total, plan.lr_dense if dense else plan.lr_qa)
            model.train()
            if stage == "drill":  # text only: the letter copy, before any visual question
                with autocast:
                    loss = logged = model(**{k: v.to(device) for k, v in
                                             drill_batch(processor, random.Random(step), 4 * plan.batch).items()}).loss
                samples = []
            else:
                video = family == "qwen2_vl" and step % plan.video_every == plan.video_every - 1
                easy = stage == "qa" and stage_step < plan.easy_fraction * plan.qa_steps
                max_objects = 3 if easy else 6
                first = step * plan.batch
                size = (plan.batch // 2 if video else plan.batch) * (2 if dense else 1)
                samples = [draw(first + j, video, max_objects) for j in range(size)]
            with autocast:
                if dense:
                    loss = logged = dense_loss(model, heads, processor, family, samples, device)
                elif stage == "qa":
                    rng = random.Random(step)
                    batch = {k: v.to(device) for k, v in qa_batch(processor, samples, rng, plan.open_fraction).items()}
                    result = model(**batch, output_attentions=bool(plan.guide))
                    loss = logged = result.loss
                    if plan.drill:
                        drill = model(**{k: v.to(device) for k, v in drill_batch(processor, rng, plan.drill).items()})
                        loss = loss + drill.loss
                        drills.append(float(drill.loss.detach()))
                    if plan.guide:
                        guide = guidance_loss(result.attentions[plan.guide_layer], batch, samples, visual_ids,
                                              plan.guide_heads, plan.sink)
                        loss = loss + plan.guide * guide
                        guides.append(float(guide.detach()))
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in optimiser.param_groups for p in g["params"]], 1.0)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            running.append(float(logged.detach()))  # the QA loss alone: comparable with unguided runs
            state["step"] += 1
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{np.mean(running[-20:]):.3f}")
            if state["step"] % 100 == 0:
                state["history"].append({"step": state["step"], "stage": stage,
                                         "loss": float(np.mean(running[-100:])), "seconds": time.time() - t0})
                if stage == "qa" and guides:
                    state["history"][-1]["guide"] = float(np.mean(guides[-100:]))
                if stage == "qa" and drills:
                    state["history"][-1]["drill"] = float(np.mean(drills[-100:]))
            if state["step"] % plan.save_every == 0 or state["step"] == plan.dense_steps:
                save()
            if plan.snapshot_every and state["step"] % plan.snapshot_every == 0:
                save()
                (out / "snaps").mkdir(exist_ok=True)
                shutil.copy(ckpt, out / "snaps" / f"{family}-{state['step']:06d}.pt")
    finally:
        bar.close()
        if state["step"]:
            save()
    return export(out, family, plan)


def export(run: str | Path, family: str, plan: Plan | None = None) -> Path:
    """Write ``RUN/final``: safetensors weights, config, processor and the training history of the checkpoint."""
    run = Path(run)
    saved = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    tokenizer = tiny.build_tokenizer()
    model = tiny.new_model(family, tokenizer, lm_layers=saved.get("plan", {}).get("lm_layers", 4))
    model.load_state_dict(saved["model"])
    model.eval()
    model.save_pretrained(run / "final", safe_serialization=True)
    tiny.TinyProcessor(tokenizer, family).save_pretrained(run / "final")
    history = {"plan": asdict(plan) if plan else None, **saved["state"]}
    if plan and plan.init:  # the run continued other weights: keep their history too
        from vtc.models.loading import EMBEDDED

        previous = EMBEDDED.get(plan.init, Path(plan.init)) / "training.json"
        history["init_training"] = json.loads(previous.read_text()) if previous.exists() else None
    (run / "final" / "training.json").write_text(json.dumps(history, indent=1) + "\n")
    return run / "final"

