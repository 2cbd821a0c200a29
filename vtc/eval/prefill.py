"""``vtc bench prefill``: prefill latency, TTFT, decode speed, memory, FLOPs and KV-cache bytes against tokens.

    vtc bench prefill --model random:llava-1.5-7b --methods pool,divprune,visionzip,fastv --ratios 0.25 0.11
    vtc bench prefill --model vtc-tiny-llava --batch 1 4 --out runs/prefill

Models: ``random:NAME`` builds a random-init model at a published checkpoint's widths with
``--llm-layers`` and ``--tower-layers`` layers (``vtc.models.synthetic.REAL_WIDTHS``: llava-1.5-7b and
qwen2-vl-7b with one image, llava-onevision-7b with a video of ``--frames`` frames, 8 by default) and
synthetic prompts; any other name is loaded (an embedded model, a local
folder or a hub id) and prompted with a noise image through its own processor.

For every method x budget x batch size (``none`` included), in interleaved repeats after one warm-up
round (CPU: wall clock, median and min-max spread; CUDA: synchronised, with peak memory):

- prefill: one forward over the prompt (``logits_to_keep=1`` where the model takes it, as ``generate``
  does), with the selection's own time measured inside it (``selection_ms``, its share of the prefill);
- TTFT and decode: one ``generate`` of ``1 + --decode-tokens`` tokens, timed when each step's logits
  reach a logits processor: TTFT to the first, decode tokens per second over the rest;
- analytical FLOPs and KV-cache bytes, from the tokens each decoder layer and vision block actually
  received (recorded by hooks): ``2 S P + 4 S^2 A`` per layer (``P`` its weight-matrix parameters, ``A``
  its attention width, no causal halving), the LM head on one position per row; the projector and the
  selection are not counted;
- per-layer extrapolation to the full depth when the model was built shallower: each missing layer
  costs what the last measured layer of its kind cost (time, FLOPs, KV bytes), which is also right for
  LLM-stage methods, whose later layers all see the reduced sequence;
- speedup (none's projected prefill over the method's, same batch), the ideal speedups from the FLOPs
  (the LLM alone, and with the vision tower fixed) and the measured share of the tower-fixed ideal.

Targets (issue P), printed at the end: selection overhead <= 1% of the prefill for every method, and a
speedup >= 0.85 x the tower-fixed ideal at batch 4 for ratios 0.25 and 0.11.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vtc.core.registry import Compressor
from vtc.core.spec import MethodSpec, check_specs
from vtc.kernels.bench import PeakMemory
from vtc.models.apply import apply
from vtc.models.registry import adapter_for
from vtc.models.run import cls_substitute_for, tokens_after, visual_counts

OVERHEAD_TARGET = 0.01
EFFICIENCY_TARGET = 0.85


class TimedCompressor(Compressor):
    """``base`` with the time of each call (the whole selection) added to ``seconds``."""

    def __init__(self, base: Compressor, sync: Callable[[], None]) -> None:
        super().__init__(base.info, base.config, base.budget)
        self.sync = sync
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, tokens: Any) -> Any:
        self.sync()
        start = time.perf_counter()
        out = super().__call__(tokens)
        self.sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


@dataclass
class LayerRecord:
    seconds: float
    tokens: int  # per sample


class LayerClock:
    """Forward hooks on a list of layers: time and tokens of every call while ``on``."""

    def __init__(self, layers: Sequence[torch.nn.Module], batch: int, sync: Callable[[], None]) -> None:
        self.records: list[list[LayerRecord]] = [[] for _ in layers]
        self.on = False
        self.batch = batch
        self.sync = sync
        self._start: dict[int, float] = {}
        self._handles = []
        for i, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._post(i), with_kwargs=True))

    def _pre(self, i: int) -> Callable:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            if self.on:
                self.sync()
                self._start[i] = time.perf_counter()

        return hook

    def _post(self, i: int) -> Callable:
        def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            if not self.on:
                return
            self.sync()
            hidden = args[0] if args else kwargs["hidden_states"]
            # [B, S, h], or packed [sum of tokens, h] (Qwen's vision blocks) with equal images per row
            tokens = hidden.shape[1] if hidden.ndim == 3 else hidden.shape[0] // self.batch
            self.records[i].append(LayerRecord(time.perf_counter() - self._start[i], int(tokens)))

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def weight_params(layer: torch.nn.Module) -> int:
    """Parameters in the layer's weight matrices (what ``2 S P`` counts)."""
    return sum(p.numel() for p in layer.parameters() if p.ndim == 2)


@dataclass(frozen=True)
class Shapes:
    """What the analytical FLOPs and KV bytes need, read from the built model."""

    llm_params: int
    llm_attention: int  # query heads x head dim
    kv_width: int  # key-value heads x head dim
    vision_params: int
    vision_attention: int
    head_flops_per_row: int  # LM head on one position
    llm_depth: int  # layers built
    tower_depth: int
    full_llm_depth: int  # layers of the published model
    full_tower_depth: int
    bytes_per_value: int


def model_shapes(model: Any, full_llm_depth: int | None = None, full_tower_depth: int | None = None) -> Shapes:
    adapter = adapter_for(model)
    text = model.config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    decoder, vision = adapter.decoder_layers(), adapter.vision_layers()
    vcfg = model.config.vision_config
    vision_width = getattr(vcfg, "embed_dim", None) or vcfg.hidden_size
    return Shapes(
        llm_params=weight_params(decoder[0]),
        llm_attention=heads * head_dim,
        kv_width=kv_heads * head_dim,
        vision_params=weight_params(vision[0]),
        vision_attention=vision_width,
        head_flops_per_row=2 * text.hidden_size * text.vocab_size,
        llm_depth=len(decoder),
        tower_depth=len(vision),
        full_llm_depth=full_llm_depth or len(decoder),
        full_tower_depth=full_tower_depth or len(vision),
        bytes_per_value=torch.finfo(model.dtype).bits // 8,
    )


def layer_flops(params: int, attention: int, tokens: int, samples: int) -> float:
    """``samples x (2 S P + 4 S^2 A)``: the weight products and the two attention products, unmasked."""
    return samples * (2.0 * tokens * params + 4.0 * tokens * tokens * attention)


def extrapolated(per_layer: list[float], full_depth: int) -> float:
    """The sum over ``full_depth`` layers, each missing layer costing what the last measured one did."""
    if not per_layer:
        return 0.0
    return sum(per_layer) + max(0, full_depth - len(per_layer)) * per_layer[-1]


@dataclass
class Measurement:
    """One setting, one repeat."""

    prefill_s: float
    llm_layer_s: list[float]
    tower_layer_s: list[float]
    llm_tokens: list[int]
    tower_tokens: list[int]
    samples: int
    selection_s: float | None
    ttft_s: float
    decode_s: float
    peak_mib: float | None
    before: list[int]
    after: list[int]


@dataclass
class Setting:
    spec: MethodSpec
    batch: int
    runs: list[Measurement] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "none" if self.spec.is_none else self.spec.label


def accepts(fn: Callable, name: str) -> bool:
    import inspect

    return name in inspect.signature(fn).parameters


class Bench:
    """A model, its prompts per batch size, and the hooks that record each prefill."""

    def __init__(self, model: Any, make_inputs: Callable[[int], dict[str, Tensor]], shapes: Shapes,
                 batches: Sequence[int], decode_tokens: int) -> None:
        self.model = model
        self.inputs = {b: make_inputs(b) for b in batches}
        self.shapes = shapes
        self.decode_tokens = decode_tokens
        self.cuda = next(model.parameters()).is_cuda
        self.sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.forward_extra = {"logits_to_keep": 1} if accepts(model.forward, "logits_to_keep") else {}
        adapter = adapter_for(model)
        self.llm_layers, self.tower_layers = adapter.decoder_layers(), adapter.vision_layers()

    def timed_generate(self, inputs: dict[str, Tensor], generate: dict[str, Any]) -> tuple[float, float]:
        """One greedy ``generate`` of ``1 + decode_tokens`` tokens: the time to its first token, and the time of
        the tokens after it, from the moments each step's logits reach the logits processors."""
        from transformers import LogitsProcessor, LogitsProcessorList

        sync, stamps = self.sync, []

        class Stamp(LogitsProcessor):
            def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
                sync()
                stamps.append(time.perf_counter())
                return scores

        total = 1 + self.decode_tokens
        self.sync()
        start = time.perf_counter()
        self.model.generate(**inputs, max_new_tokens=total, min_new_tokens=total,
                            logits_processor=LogitsProcessorList([Stamp()]), **generate)
        return stamps[0] - start, stamps[-1] - stamps[0]

    def measure(self, setting: Setting) -> Measurement:
        inputs = self.inputs[setting.batch]
        compressor = setting.spec.build()
        timed = None
        if compressor is not None and compressor.info.stage != "encoder":  # encoder ToMe runs inside the blocks
            timed = TimedCompressor(compressor, self.sync)
        used = timed or compressor
        handle = None
        if used is not None:
            handle = apply(self.model, used, cls_substitute=cls_substitute_for(self.model.config, used))
        llm = LayerClock(self.llm_layers, setting.batch, self.sync)
        tower = LayerClock(self.tower_layers, setting.batch, self.sync)
        generate = {"do_sample": False, "pad_token_id": 0}
        try:
            with torch.no_grad():
                llm.on = tower.on = True
                with PeakMemory("cuda" if self.cuda else "cpu") as memory:
                    start = time.perf_counter()
                    self.model(**inputs, **self.forward_extra)
                    self.sync()
                    prefill = time.perf_counter() - start
                llm.on = tower.on = False
                peak = memory.mib if self.cuda else None  # CPU RSS of a model run says little: CUDA only
                stats = handle.stats[0] if handle is not None and handle.stats else None
                ttft, decode = self.timed_generate(inputs, generate)
        finally:
            llm.remove()
            tower.remove()
            if handle is not None:
                handle.remove()
        before = visual_counts(self.model, inputs["input_ids"])
        return Measurement(
            prefill_s=prefill,
            llm_layer_s=[r[0].seconds for r in llm.records if r],
            tower_layer_s=[sum(x.seconds for x in r) for r in tower.records if r],
            llm_tokens=[r[0].tokens for r in llm.records if r],
            tower_tokens=[r[0].tokens for r in tower.records if r],
            samples=setting.batch,
            selection_s=timed.seconds if timed is not None and timed.calls else None,
            ttft_s=ttft,
            decode_s=decode,
            peak_mib=peak,
            before=before,
            after=before if stats is None else tokens_after(stats),
        )


def summarise(setting: Setting, shapes: Shapes, decode_tokens: int) -> dict[str, Any]:
    """Medians and spreads over the repeats, projected to full depth, with FLOPs and KV bytes."""
    runs = setting.runs
    s = shapes
    first = runs[0]

    def projected(m: Measurement) -> float:
        layers = sum(m.llm_layer_s) + sum(m.tower_layer_s)
        return (m.prefill_s - layers + extrapolated(m.llm_layer_s, s.full_llm_depth)
                + extrapolated(m.tower_layer_s, s.full_tower_depth))

    llm_flops = [layer_flops(s.llm_params, s.llm_attention, t, first.samples) for t in first.llm_tokens]
    tower_flops = [layer_flops(s.vision_params, s.vision_attention, t, first.samples) for t in first.tower_tokens]
    kv = [2 * first.samples * t * s.kv_width * s.bytes_per_value for t in first.llm_tokens]
    prefill = [m.prefill_s for m in runs]
    full = [projected(m) for m in runs]
    selection = [m.selection_s for m in runs if m.selection_s is not None]
    med = statistics.median
    row = {
        "method": setting.label,
        "batch": setting.batch,
        "repeats": len(runs),
        "visual_tokens_before": first.before,
        "visual_tokens_after": first.after,
        "llm_tokens_first_layer": first.llm_tokens[0] if first.llm_tokens else None,
        "llm_tokens_last_layer": first.llm_tokens[-1] if first.llm_tokens else None,
        "prefill_ms": 1000 * med(prefill),
        "prefill_ms_min": 1000 * min(prefill),
        "prefill_ms_max": 1000 * max(prefill),
        "prefill_ms_full_depth": 1000 * med(full),
        "selection_ms": 1000 * med(selection) if selection else None,
        "ttft_ms": 1000 * med(m.ttft_s for m in runs),
        "decode_tokens_per_s": (med(m.samples * decode_tokens / m.decode_s for m in runs)
                                if decode_tokens and all(m.decode_s > 0 for m in runs) else None),
        "peak_mib": med(m.peak_mib for m in runs) if first.peak_mib is not None else None,
        "llm_gflops_full_depth": (extrapolated(llm_flops, s.full_llm_depth)
                                  + first.samples * s.head_flops_per_row) / 1e9,
        "tower_gflops_full_depth": extrapolated(tower_flops, s.full_tower_depth) / 1e9,
        "kv_mib_full_depth": extrapolated(kv, s.full_llm_depth) / 2**20,
    }
    row["overhead"] = row["selection_ms"] / row["prefill_ms_full_depth"] if selection else None
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speedups against ``none`` at the same batch, the FLOP ideals and the share of the tower-fixed ideal."""
    base = {r["batch"]: r for r in rows if r["method"] == "none"}
    for r in rows:
        b = base.get(r["batch"])
        if b is None:
            continue
        r["speedup"] = b["prefill_ms_full_depth"] / r["prefill_ms_full_depth"]
        r["ideal_llm"] = b["llm_gflops_full_depth"] / r["llm_gflops_full_depth"]
        r["ideal_tower_fixed"] = ((b["llm_gflops_full_depth"] + b["tower_gflops_full_depth"])
                                  / (r["llm_gflops_full_depth"] + r["tower_gflops_full_depth"]))
        r["efficiency"] = r["speedup"] / r["ideal_tower_fixed"]


def targets(rows: list[dict[str, Any]], target_batch: int = 4, ratios: Sequence[float] = (0.25, 0.11)) -> list[str]:
    """One line per target check: PASS / FAIL, or what was not measured."""
    lines = []
    for r in rows:
        if r["overhead"] is not None:
            verdict = "PASS" if r["overhead"] <= OVERHEAD_TARGET else "FAIL"
            lines.append(f"{verdict} overhead {r['method']} batch {r['batch']}: {100 * r['overhead']:.2f}% "
                         f"of the prefill (target <= {100 * OVERHEAD_TARGET:.0f}%)")
    for ratio in ratios:
        chosen = [r for r in rows if r["batch"] == target_batch and r["method"].endswith(f":{ratio:g}")]
        if not chosen:
            lines.append(f"not measured: speedup at batch {target_batch}, ratio {ratio:g}")
        for r in chosen:
            verdict = "PASS" if r["efficiency"] >= EFFICIENCY_TARGET else "FAIL"
            lines.append(f"{verdict} speedup {r['method']} batch {target_batch}: {r['speedup']:.2f}x = "
                         f"{r['efficiency']:.2f} of the tower-fixed ideal {r['ideal_tower_fixed']:.2f}x "
                         f"(target >= {EFFICIENCY_TARGET})")
    return lines


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    header = ["method", "batch", "visual tokens", "LLM tokens (last layer)", "prefill ms (min-max)",
              "full-depth ms", "selection ms", "overhead %", "speedup", "ideal LLM", "ideal tower fixed",
              "of ideal", "TTFT ms", "decode tok/s", "GFLOPs", "KV MiB", "peak MiB"]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [
            r["method"], str(r["batch"]), f"{r['visual_tokens_before'][0]} -> {r['visual_tokens_after'][0]}",
            fmt(r["llm_tokens_last_layer"]),
            f"{r['prefill_ms']:.1f} ({r['prefill_ms_min']:.1f}-{r['prefill_ms_max']:.1f})",
            fmt(r["prefill_ms_full_depth"]), fmt(r["selection_ms"], 2),
            fmt(None if r["overhead"] is None else 100 * r["overhead"], 2),
            fmt(r.get("speedup"), 2), fmt(r.get("ideal_llm"), 2), fmt(r.get("ideal_tower_fixed"), 2),
            fmt(r.get("efficiency"), 2), fmt(r["ttft_ms"]), fmt(r["decode_tokens_per_s"]),
            fmt(r["llm_gflops_full_depth"] + r["tower_gflops_full_depth"]), fmt(r["kv_mib_full_depth"]),
            fmt(r["peak_mib"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Full-depth prefill against the LLM's tokens, and measured against ideal speedup, per batch size."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for batch in sorted({r["batch"] for r in rows}):
        group = sorted((r for r in rows if r["batch"] == batch), key=lambda r: r["llm_tokens_last_layer"] or 0)
        xs = [r["llm_tokens_last_layer"] for r in group]
        ys = [r["prefill_ms_full_depth"] for r in group]
        left.plot(xs, ys, "o", label=f"batch {batch}")
        for r, x, y in zip(group, xs, ys, strict=True):
            left.annotate(r["method"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        compressed = [r for r in group if r["method"] != "none" and r.get("speedup")]
        right.plot([r["ideal_tower_fixed"] for r in compressed], [r["speedup"] for r in compressed], "o",
                   label=f"batch {batch}")
    top = max([r.get("ideal_tower_fixed") or 1 for r in rows] + [2])
    right.plot([1, top], [1, top], "k--", lw=1, label="ideal")
    right.plot([1, top], [EFFICIENCY_TARGET, EFFICIENCY_TARGET * top], "k:", lw=1, label=f"{EFFICIENCY_TARGET} x ideal")
    left.set_xlabel("tokens per row in the LLM's last layer")
    left.set_ylabel("prefill ms (full depth)")
    left.set_title("prefill latency")
    right.set_xlabel("ideal speedup, vision tower fixed (FLOPs)")
    right.set_ylabel("measured speedup over none")
    right.set_title("speedup against the ideal")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def settings_for(specs: Sequence[MethodSpec], batches: Sequence[int]) -> list[Setting]:
    return [Setting(spec, b) for b in batches for spec in [MethodSpec("none"), *specs]]


def run_bench(bench: Bench, settings: list[Setting], repeats: int, progress: bool = True) -> list[dict[str, Any]]:
    """One warm-up round, then ``repeats`` rounds over every setting in turn (interleaved)."""
    from tqdm import tqdm

    bar = tqdm(total=(repeats + 1) * len(settings), desc="vtc bench prefill", disable=not progress)
    for round_ in range(repeats + 1):
        for setting in settings:
            bar.set_postfix_str(f"{setting.label} batch {setting.batch}")
            measured = bench.measure(setting)
            if round_:
                setting.runs.append(measured)
            bar.update()
    bar.close()
    rows = [summarise(s, bench.shapes, bench.decode_tokens) for s in settings]
    add_ratios(rows)
    return rows


def noise_image_inputs(processor: Any, batch: int, size: int = 336) -> dict[str, Tensor]:
    """A processor's inputs for ``batch`` copies of one noise image and a short question."""
    import numpy as np
    from PIL import Image

    from vtc.models.prompt import media_prompt, prepare_batching

    prepare_batching(processor)
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    text = media_prompt(processor, "what colour is the star ?", "image")
    return dict(processor(text=[text] * batch, images=[image] * batch, return_tensors="pt"))


def build_bench(model_name: str, batches: Sequence[int], llm_layers: int, tower_layers: int, dtype: str,
                device: str, text_tokens: int, decode_tokens: int, frames: int | None = None) -> tuple[Bench, str]:
    """The model (random real-width or loaded), its inputs per batch size, and a title line."""
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    if model_name.startswith("random:"):
        from vtc.models.synthetic import REAL_WIDTHS, real_width_model, synthetic_inputs

        name = model_name.split(":", 1)[1]
        if name not in REAL_WIDTHS:
            raise ValueError(f"unknown real-width config {name!r}; known: {', '.join(REAL_WIDTHS)}")
        spec = REAL_WIDTHS[name]
        if frames is not None and spec.frames > 1:  # a video config: its placeholders follow the frame count
            per_frame = (spec.visual_tokens - 1) // spec.frames
            spec = dataclasses.replace(spec, frames=frames, visual_tokens=frames * per_frame + 1)
        model = real_width_model(name, llm_layers, tower_layers, torch_dtype, device)
        shapes = model_shapes(model, spec.llm_depth, spec.tower_depth)
        bench = Bench(model, lambda b: synthetic_inputs(model, spec, b, text_tokens), shapes, batches, decode_tokens)
        media = f"a {spec.frames}-frame video" if spec.frames > 1 else "one image"
        title = (f"{model_name}: random init at its widths, {llm_layers} of {spec.llm_depth} LLM layers and "
                 f"{tower_layers} of {spec.tower_depth} vision layers built, the rest extrapolated per layer; "
                 f"{media} ({spec.visual_tokens} visual tokens) and {text_tokens} text tokens")
    else:
        from vtc.models.loading import load

        model, processor = load(model_name, dtype=torch_dtype, device=device)
        model = model.to(device).eval()
        shapes = model_shapes(model)

        def make(b: int) -> dict[str, Tensor]:
            inputs = noise_image_inputs(processor, b)
            return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}

        bench = Bench(model, make, shapes, batches, decode_tokens)
        title = f"{model_name}: full depth ({shapes.llm_depth} LLM layers, {shapes.tower_depth} vision layers)"
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    return bench, f"{title}; {dtype} on {where}"


def parse_methods(text: str, ratios: Sequence[float]) -> list[MethodSpec]:
    """Comma-separated methods; a bare name runs at every ratio, ``name:budget`` at that budget only."""
    from vtc.core.spec import parse_spec

    specs: list[MethodSpec] = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        if ":" in item:
            specs.append(parse_spec(item))
        else:
            specs.extend(parse_spec(f"{item}:{r:g}") for r in ratios)
    problems = check_specs(specs)
    if problems:
        raise ValueError("--methods:\n" + "\n".join(f"  {p}" for p in problems))
    return specs


def main(args: Any) -> int:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    specs = parse_methods(args.methods, args.ratios)
    bench, title = build_bench(args.model, args.batch, args.llm_layers, args.tower_layers, args.dtype,
                               args.device, args.text_tokens, args.decode_tokens, args.frames)
    from vtc.models.preflight import check_pairs

    problems = check_pairs({args.model: bench.model.config}, specs)
    if problems:
        raise ValueError("nothing was run:\n" + "\n".join(f"  {p}" for p in problems))
    rows = run_bench(bench, settings_for(specs, args.batch), args.repeats)
    title += f"; median of {args.repeats} interleaved repeats after a warm-up round"
    table = markdown(rows, title)
    checks = targets(rows)
    print(table)
    print("\n".join(["", "targets:", *checks]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "prefill.json").write_text(json.dumps({"title": title, "rows": rows, "targets": checks}, indent=2))
        (out / "prefill.md").write_text(table + "\n\ntargets:\n" + "\n".join(checks) + "\n")
        try:
            plot(rows, out / "prefill.png")
        except ImportError:
            print("plots skipped: matplotlib is not installed (pip install matplotlib)")
        print(f"wrote {out}/prefill.json, prefill.md, prefill.png")
    return 0
