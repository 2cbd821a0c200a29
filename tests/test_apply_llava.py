"""vtc.apply on a tiny stock LLaVA: keep-all equals unpatched, a hand-built reference, generate, remove.

The reference never goes through vtc.models: it computes the signals from eager attention maps and
the tower's own modules, runs the method on them, then builds ``inputs_embeds`` and position ids by
hand for a separate, identically initialised model.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import IMAGE_TOKEN, greedy_reference, left_pad, prompt, tiny_llava
from transformers import LlamaConfig, LlamaForCausalLM

import vtc

TOKENS = 64  # per image (8 x 8)


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def batch_two(pixels):
    """Row 0: two images; row 1: one image and a longer question (left padding)."""
    rows = [prompt(2, TOKENS, [1, 7, 8], [9, 10]), prompt(1, TOKENS, [1, 7], [11, 12, 13, 14, 15])]
    ids, mask = left_pad(rows)
    return ids, mask, pixels


def reference_tokens(ref, pixel_values, ids, mask, compressor) -> vtc.VisualTokens:
    """The method's inputs computed without vtc.models: eager attention maps and the tower's own modules."""
    tower = ref.model.vision_tower
    tower.config._attn_implementation = "eager"
    with torch.no_grad():
        out = tower(pixel_values, output_attentions=True, output_hidden_states=True)
        feats = ref.model.multi_modal_projector(out.hidden_states[-2][:, 1:])
    kwargs = {}
    info = compressor.info
    wanted = set(info.signals) | set(info.optional_signals)
    if "cls_attn" in wanted:
        maps = [out.attentions[layer].mean(1) for layer in compressor.encoder_layers]  # [M, S, S] per layer
        if compressor.attention_mode == "received":
            rows = [m.mean(1)[:, 1:] for m in maps]
        else:
            rows = [m[:, 0, 1:] for m in maps]
        kwargs["cls_attn"] = torch.stack(rows, dim=1)
    if "keys" in wanted:
        layer = tower.encoder.layers[-2]
        with torch.no_grad():
            k = layer.self_attn.k_proj(layer.layer_norm1(out.hidden_states[-3]))
        heads = layer.self_attn.num_heads
        kwargs["keys"] = k.view(k.shape[0], k.shape[1], heads, -1).mean(2)[:, 1:]
    if "text" in wanted:
        embeds = ref.get_input_embeddings()(ids)
        texts, owners = [], image_rows(ids)
        for row in owners:
            sel = (mask[row] == 1) & (ids[row] != IMAGE_TOKEN)
            texts.append(embeds[row, sel])
        width = max(t.shape[0] for t in texts)
        kwargs["text"] = torch.stack([torch.cat([t, t.new_zeros(width - len(t), t.shape[1])]) for t in texts])
        kwargs["text_mask"] = torch.stack([torch.arange(width) < len(t) for t in texts])
    grid = torch.tensor([[1, 8, 8]] * feats.shape[0])
    return vtc.VisualTokens(feats, grid=grid, **kwargs)


def image_rows(ids) -> list[int]:
    per_row = (ids == IMAGE_TOKEN).sum(1).tolist()
    return [row for row, n in enumerate(per_row) for _ in range(n // TOKENS)]


def hand_built(ref, ids, mask, compressed, positions):
    """Per row: kept features at their placeholders, text embedded, positions of the kept columns."""
    embed = ref.get_input_embeddings()
    rows, owners, item = [], image_rows(ids), 0
    for row in range(ids.shape[0]):
        valid = mask[row] == 1
        cols, pieces = [], []
        placeholder = (ids[row] == IMAGE_TOKEN).nonzero()[:, 0].tolist()
        runs = [placeholder[i : i + TOKENS] for i in range(0, len(placeholder), TOKENS)]
        kept_cols = {}
        for run in runs:
            assert owners[item] == row
            k = int(compressed.counts[item])
            for slot, src in enumerate(compressed.index[item, :k].tolist()):
                kept_cols[run[src]] = compressed.features[item, slot]
            item += 1
        for col in range(ids.shape[1]):
            if not valid[col]:
                continue
            if ids[row, col] == IMAGE_TOKEN:
                if col in kept_cols:
                    cols.append(col)
                    pieces.append(kept_cols[col])
            else:
                cols.append(col)
                pieces.append(embed(ids[row, col : col + 1])[0])
        rows.append((torch.stack(pieces), positions[row, cols]))
    return rows


def test_keep_all_equals_unpatched(pixels):
    model, ref = tiny_llava(), tiny_llava()
    ids, mask, pv = batch_two(pixels)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
        with vtc.apply(model, "divprune", ratio=1.0) as handle:
            got = model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
    assert got.shape == expected.shape
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    assert handle.stats[0]["before"] == handle.stats[0]["after"] == [2 * TOKENS, TOKENS]


@pytest.mark.parametrize(
    "method, budget",
    [("cls_attention", {"ratio": 0.25}), ("visionzip", {"ratio": 0.3}), ("tome", {"count": 10}), ("prumerge", {})],
)
def test_forward_matches_hand_built_reference(pixels, method, budget):
    model, ref = tiny_llava(), tiny_llava()
    ids, mask, pv = batch_two(pixels)
    compressor = vtc.build(method, **budget)
    compressed = compressor(reference_tokens(ref, pv, ids, mask, compressor))
    positions = torch.arange(ids.shape[1]).expand_as(ids)  # what forward uses without position_ids
    with torch.no_grad(), vtc.apply(model, compressor) as handle:
        got = model(input_ids=ids, attention_mask=mask, pixel_values=pv).logits
    ref.model.vision_tower.config._attn_implementation = "sdpa"
    counts = compressed.counts.tolist()
    assert handle.stats[0]["after"] == [counts[0] + counts[1], counts[2]]
    for row, (embeds, pos) in enumerate(hand_built(ref, ids, mask, compressed, positions)):
        with torch.no_grad():
            want = ref(
                inputs_embeds=embeds[None],
                position_ids=pos[None],
                attention_mask=torch.ones(1, len(pos), dtype=torch.long),
            ).logits[0]
        assert torch.allclose(got[row, -len(pos) :], want, atol=1e-5), f"row {row}"


METHODS = [m.name for m in vtc.list_methods() if m.stage == "projector"]
EXTRA = {"hiprune": {"layers": (1, -2)}}  # the tiny tower has 3 layers


@pytest.mark.parametrize("method", METHODS)
def test_generate_matches_reference_for_every_method(pixels, method):
    model, ref = tiny_llava(), tiny_llava()
    ids, mask, pv = batch_two(pixels)
    info = next(m for m in vtc.list_methods() if m.name == method)
    # adaptive video methods' own rules may keep one-frame images whole: they run at a ratio
    budget = {"ratio": 0.2} if info.video or not info.adaptive else {}
    compressor = vtc.build(method, **budget, **EXTRA.get(method, {}))
    compressed = compressor(reference_tokens(ref, pv, ids, mask, compressor))
    ref.model.vision_tower.config._attn_implementation = "sdpa"
    with torch.no_grad(), vtc.apply(model, compressor) as handle:
        out = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pv, max_new_tokens=4, do_sample=False)
    assert torch.equal(out[:, : ids.shape[1]], ids), "the caller's prompt comes back unchanged"
    positions = (mask.cumsum(1) - 1).clamp_min(0)  # generate's rule for the full prompt
    for row, (embeds, pos) in enumerate(hand_built(ref, ids, mask, compressed, positions)):
        assert out[row, ids.shape[1] :].tolist() == greedy_reference(ref, embeds, pos, 4), f"row {row}"
    kept = handle.stats[0]["after"]
    assert kept[0] < 2 * TOKENS and kept[1] < TOKENS


def test_batch_rows_keep_different_counts(pixels):
    model = tiny_llava()
    ids, mask, pv = batch_two(pixels)
    with torch.no_grad(), vtc.apply(model, "random", count=5) as handle:
        model(input_ids=ids, attention_mask=mask, pixel_values=pv)
    assert handle.stats[0]["after"] == [10, 5]
    image = handle.stats[0]["image"]
    assert (image["before"], image["after"]) == ([128, 64], [10, 5])
    # per item: the grid and which slot each source token went to (the overlay data)
    assert [item["row"] for item in image["items"]] == [0, 0, 1]
    assert [int((item["assign"] >= 0).sum()) for item in image["items"]] == [5, 5, 5]


def test_labels_follow_the_rewrite(pixels):
    model, ref = tiny_llava(), tiny_llava()
    ids = torch.tensor([prompt(1, TOKENS, [1, 7], [9, 10, 11])])
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100)
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pixels[:1], labels=labels).loss
        with vtc.apply(model, "uniform", ratio=1.0):
            same = model(input_ids=ids, pixel_values=pixels[:1], labels=labels).loss
        with vtc.apply(model, "uniform", ratio=0.25):
            pruned = model(input_ids=ids, pixel_values=pixels[:1], labels=labels)
    assert torch.allclose(same, expected, atol=1e-5)
    assert pruned.logits.shape[1] == ids.shape[1] - 48 and torch.isfinite(pruned.loss)


def test_remove_restores_the_model(pixels):
    model, ref = tiny_llava(), tiny_llava()
    ids = torch.tensor([prompt(1, TOKENS, [1], [2, 3])])
    handle = vtc.apply(model, "pool", ratio=0.25)
    with torch.no_grad():
        pruned = model(input_ids=ids, pixel_values=pixels[:1]).logits
    handle.remove()
    handle.remove()  # idempotent
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    with torch.no_grad():
        after = model(input_ids=ids, pixel_values=pixels[:1]).logits
        expected = ref(input_ids=ids, pixel_values=pixels[:1]).logits
    assert pruned.shape[1] == ids.shape[1] - 48
    assert torch.equal(after, expected)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))


def test_text_only_calls_pass_through(pixels):
    model, ref = tiny_llava(), tiny_llava()
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad(), vtc.apply(model, "divprune", ratio=0.1) as handle:
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    assert handle.stats == []


def test_errors(pixels):
    model = tiny_llava()
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match=r"does not support model_type 'llama'; supported: .*llava"):
        vtc.apply(llama, "divprune", ratio=0.5)
    with pytest.raises(ValueError, match=r"unknown method 'nope'"):
        vtc.apply(model, "nope", ratio=0.5)
    with vtc.apply(model, "divprune", ratio=0.5):
        with pytest.raises(ValueError, match=r"already applied"):
            vtc.apply(model, "divprune", ratio=0.5)
        short = torch.tensor([prompt(1, TOKENS - 3, [1], [2])])
        with pytest.raises(ValueError, match=r"placeholder tokens \(id 100\)"):
            model(input_ids=short, pixel_values=pixels[:1])
    # refused at apply, before any forward: the tower has 3 blocks
    with pytest.raises(ValueError, match=r"hiprune: reads encoder layer\(s\) \[8\], but the llava vision tower has 3"):
        vtc.apply(model, "hiprune", ratio=0.5, layers=(8, -2))
    assert getattr(model, "_vtc_patch", None) is None


def test_cls_signal_matches_eager_attention(pixels):
    """The q/k hook's [CLS] row equals the eager attention map's row (the tower itself stays on sdpa)."""
    from vtc.models.attention import AttentionProbe

    model, ref = tiny_llava(), tiny_llava()
    layers = model.model.vision_tower.encoder.layers
    with torch.no_grad(), AttentionProbe({1: layers[1].self_attn}) as probe:
        model.model.vision_tower(pixels)
    ref.model.vision_tower.config._attn_implementation = "eager"
    with torch.no_grad():
        maps = ref.model.vision_tower(pixels, output_attentions=True).attentions[1].mean(1)
    assert model.config.vision_config._attn_implementation != "eager"
    assert torch.allclose(probe.cls_row(1), maps[:, 0], atol=1e-6)
    assert torch.allclose(probe.received(1), maps.mean(1), atol=1e-6)
