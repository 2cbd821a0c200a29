"""`vtc bench prefill`: FLOPs and KV bytes against hand counts from the configs, the per-layer
extrapolation against a hand-made case, token counts against the budgets, and the real-width configs."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_qwen import expand, pad, pixels, tiny_qwen, type_ids

from vtc.cli import main as cli_main
from vtc.core.spec import MethodSpec
from vtc.eval.prefill import (
    Bench,
    Measurement,
    Setting,
    Shapes,
    add_ratios,
    build_bench,
    extrapolated,
    layer_flops,
    model_shapes,
    parse_methods,
    run_bench,
    summarise,
    targets,
)
from vtc.models.synthetic import REAL_WIDTHS, real_width_config, real_width_model, synthetic_inputs


def test_layer_flops_and_extrapolation_by_hand():
    assert layer_flops(params=10, attention=3, tokens=4, samples=2) == 2 * (2 * 4 * 10 + 4 * 16 * 3)
    assert extrapolated([1.0, 2.0, 3.0], 5) == 1 + 2 + 3 + 2 * 3  # two missing layers at the last one's cost
    assert extrapolated([1.0, 2.0], 2) == 3.0
    assert extrapolated([], 4) == 0.0


SHAPES = Shapes(llm_params=100, llm_attention=8, kv_width=4, vision_params=50, vision_attention=6,
                head_flops_per_row=1000, llm_depth=2, tower_depth=2, full_llm_depth=4, full_tower_depth=3,
                bytes_per_value=2)


def measurement(prefill: float, llm_s: list[float], llm_tokens: list[int], selection: float | None) -> Measurement:
    return Measurement(prefill_s=prefill, llm_layer_s=llm_s, tower_layer_s=[0.1, 0.2], llm_tokens=llm_tokens,
                       tower_tokens=[10, 10], samples=1, selection_s=selection, ttft_s=prefill, decode_s=1.0,
                       peak_mib=None, before=[8], after=[llm_tokens[-1] - 2])


def test_summary_projects_to_full_depth_by_hand():
    none = Setting(MethodSpec("none"), 1, [measurement(1.0, [0.2, 0.2], [10, 10], None)])
    pruned = Setting(MethodSpec("divprune", {"ratio": 0.25}), 1, [measurement(0.6, [0.1, 0.05], [10, 4], 0.01)])
    rows = [summarise(s, SHAPES, decode_tokens=4) for s in (none, pruned)]
    add_ratios(rows)
    base, row = rows
    # none: 1.0 s measured; LLM 0.4 s in 2 layers -> 4 layers 0.8 s; tower 0.3 s in 2 -> 3 layers 0.5 s
    assert base["prefill_ms_full_depth"] == pytest.approx(1000 * (1.0 - 0.7 + 0.8 + 0.5))
    # divprune: layers 0.1 + 0.05, then two more at 0.05
    assert row["prefill_ms_full_depth"] == pytest.approx(1000 * (0.6 - 0.45 + 0.25 + 0.5))
    assert row["speedup"] == pytest.approx(1.6 / 0.9)
    llm_none = (4 * (2 * 10 * 100 + 4 * 100 * 8) + 1000) / 1e9
    llm_pruned = ((2 * 10 * 100 + 4 * 100 * 8) + 3 * (2 * 4 * 100 + 4 * 16 * 8) + 1000) / 1e9
    tower = 3 * (2 * 10 * 50 + 4 * 100 * 6) / 1e9
    assert base["llm_gflops_full_depth"] == pytest.approx(llm_none)
    assert row["ideal_llm"] == pytest.approx(llm_none / llm_pruned)
    assert row["ideal_tower_fixed"] == pytest.approx((llm_none + tower) / (llm_pruned + tower))
    assert row["efficiency"] == pytest.approx(row["speedup"] / row["ideal_tower_fixed"])
    assert row["kv_mib_full_depth"] == pytest.approx((2 * 10 * 4 * 2 + 3 * 2 * 4 * 4 * 2) / 2**20)
    assert row["overhead"] == pytest.approx(10 / 900)
    assert row["decode_tokens_per_s"] == pytest.approx(4.0)
    lines = targets(rows, target_batch=1, ratios=(0.25, 0.11))
    assert lines[0].startswith("FAIL overhead divprune:0.25 batch 1: 1.11%")
    assert any(line.startswith("PASS speedup divprune:0.25 batch 1") for line in lines)
    assert "not measured: speedup at batch 1, ratio 0.11" in lines


def test_embedded_model_counts_against_its_config(tmp_path):
    """On vtc-tiny-llava: tokens after each method, and FLOPs / KV bytes equal to a count from the config."""
    bench, title = build_bench("vtc-tiny-llava", [1, 2], 4, 4, "float32", "cpu", 40, decode_tokens=2)
    specs = parse_methods("divprune,fastv", [0.25])
    rows = run_bench(bench, [Setting(s, b) for b in (1, 2) for s in [MethodSpec("none"), *specs]], repeats=1,
                     progress=False)
    by = {(r["method"], r["batch"]): r for r in rows}
    text = bench.model.config.text_config
    width = bench.inputs[2]["input_ids"].shape[1]
    h, inter, vocab, layers = text.hidden_size, text.intermediate_size, text.vocab_size, text.num_hidden_layers
    kv = text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    params = 2 * h * h + 2 * h * kv + 3 * h * inter  # q, o; k, v; gate, up, down
    expected = 2 * (layers * (2 * width * params + 4 * width * width * h) + 2 * h * vocab) / 1e9
    assert by[("none", 2)]["llm_gflops_full_depth"] == pytest.approx(expected)
    assert by[("none", 2)]["kv_mib_full_depth"] == pytest.approx(2 * layers * 2 * width * kv * 4 / 2**20)
    none, pruned, fastv = by[("none", 2)], by[("divprune:0.25", 2)], by[("fastv:0.25", 2)]
    assert none["visual_tokens_after"] == none["visual_tokens_before"] == [196, 196]
    assert pruned["visual_tokens_after"] == [49, 49]
    assert pruned["llm_tokens_first_layer"] == pruned["llm_tokens_last_layer"] == width - 147
    assert fastv["llm_tokens_first_layer"] == width and fastv["llm_tokens_last_layer"] == width - 147
    assert pruned["tower_gflops_full_depth"] == pytest.approx(none["tower_gflops_full_depth"])  # tower untouched
    assert 1 < pruned["ideal_tower_fixed"] < pruned["ideal_llm"]
    assert fastv["ideal_llm"] < pruned["ideal_llm"]  # FastV's first layers still see every token
    assert pruned["selection_ms"] > 0 and none["selection_ms"] is None
    assert none["speedup"] == 1.0 and "full depth (4 LLM layers" in title


def test_qwen_packed_vision_blocks():
    """Qwen's vision blocks take packed [tokens, width] rows: tokens per image come out per sample."""
    model = tiny_qwen("qwen2_vl")
    grid = (1, 8, 8)

    def make(batch: int) -> dict:
        ids, mask = pad([expand("qwen2_vl", [5, 6, ("image", grid), 7]) for _ in range(batch)])
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(model, [grid] * batch, 0),
                "image_grid_thw": torch.tensor([grid] * batch), "mm_token_type_ids": type_ids(ids)}

    bench = Bench(model, make, model_shapes(model), [2], decode_tokens=0)
    rows = run_bench(bench, [Setting(MethodSpec("none"), 2), Setting(MethodSpec("divprune", {"ratio": 0.5}), 2)],
                     repeats=1, progress=False)
    assert rows[0]["visual_tokens_before"] == [16, 16] and rows[1]["visual_tokens_after"] == [8, 8]
    vision = model.config.vision_config
    per_block = 2 * (2 * 64 * sum(p.numel() for p in model.model.visual.blocks[0].parameters() if p.ndim == 2)
                     + 4 * 64 * 64 * vision.embed_dim)
    assert rows[0]["tower_gflops_full_depth"] == pytest.approx(vision.depth * per_block / 1e9)


def test_real_width_configs_and_inputs():
    llava = real_width_config("llava-1.5-7b", 4, 4)
    assert (llava.text_config.hidden_size, llava.text_config.intermediate_size, llava.text_config.vocab_size) == (
        4096, 11008, 32064)
    assert (llava.vision_config.hidden_size, llava.vision_config.image_size, llava.vision_config.patch_size) == (
        1024, 336, 14)
    qwen = real_width_config("qwen2-vl-7b", 2, 3)
    assert (qwen.text_config.hidden_size, qwen.text_config.num_key_value_heads, qwen.vision_config.depth) == (
        3584, 4, 3)
    with pytest.raises(ValueError, match="known: llava-1.5-7b, qwen2-vl-7b, llava-onevision-7b"):
        real_width_config("llava-13b", 4, 4)
    with pytest.raises(ValueError, match="llm_layers"):
        real_width_config("llava-1.5-7b", 1, 4)
    for name, spec in REAL_WIDTHS.items():
        model = real_width_model(name, 2, 2, device="meta")
        inputs = synthetic_inputs(model, spec, batch=3, text_tokens=40, device="cpu")
        token = model.config.video_token_id if spec.frames > 1 else model.config.image_token_id
        assert (inputs["input_ids"] == token).sum(1).tolist() == [spec.visual_tokens] * 3
        if spec.family == "qwen2_vl":
            assert inputs["pixel_values"].shape == (3 * 48 * 48, 3 * 2 * 14 * 14)
            assert inputs["mm_token_type_ids"].sum().item() == 3 * 576
        if spec.family == "llava_onevision":  # 27 x 27 patches pooled to 14 x 14 per frame, one newline
            assert inputs["pixel_values_videos"].shape == (3, 8, 3, 384, 384) and spec.visual_tokens == 8 * 196 + 1


def test_methods_expand_over_ratios_and_errors():
    specs = parse_methods("pool,fastv:0.5", [0.25, 0.11])
    assert [s.label for s in specs] == ["pool:0.25", "pool:0.11", "fastv:0.5"]
    with pytest.raises(ValueError, match="unknown method 'nosuch'"):
        parse_methods("nosuch", [0.25])


def test_cli_writes_json_table_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    code = cli_main(["bench", "prefill", "--model", "vtc-tiny-qwen2vl", "--methods", "pool", "--ratios", "0.25",
                     "--batch", "1", "--repeats", "1", "--decode-tokens", "1", "--dtype", "float32", "--out",
                     str(out)])
    assert code == 0
    saved = json.loads((out / "prefill.json").read_text())
    assert [r["method"] for r in saved["rows"]] == ["none", "pool:0.25"]
    assert (out / "prefill.png").stat().st_size > 0 and "| pool:0.25 | 1 |" in (out / "prefill.md").read_text()
    assert "targets:" in capsys.readouterr().out
