"""vtc.apply on tiny LLaVA-NeXT, LLaVA-OneVision and LLaVA-NeXT-Video: keep-all, hand-built references, generate.

The reference never goes through vtc.models: the signals come from eager attention maps and the
tower's own modules, the AnyRes layout (which crop token each packed token is, where the newlines sit)
is rebuilt from transformers' ``get_anyres_image_grid_shape`` and ``unpad_image`` on an index map and
checked against the packed output of ``get_image_features``, the method runs on those signals, the
newline rule (a newline is kept when its row keeps a token) is applied by hand, and ``inputs_embeds``
and position ids are built by hand for a separate, identically initialised model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_llava_next import (
    CROP,
    IMAGE_TOKEN,
    MODEL_TYPES,
    PINPOINTS,
    VIDEO_TOKEN,
    VIDEO_TYPES,
    anyres_pixels,
    left_pad,
    prompt,
    tiny,
    video_pixels,
)
from tiny_models import greedy_reference
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)

import vtc

SIZES = [[100, 80], [56, 56], [56, 112]]  # 72, 36, 52 tokens (the first one is unpadded to 8 x 6)
IMAGE_TOKENS = [72, 36, 52]
FRAMES = 4
VIDEO_TOKENS = {"llava_onevision": FRAMES * 4 + 1, "llava_next_video": FRAMES * 4}
SIDE = 4  # tokens per crop side
TOKEN_IDS = {"image": IMAGE_TOKEN, "video": VIDEO_TOKEN}
SUBSTITUTE = {"llava_onevision": "received"}  # SigLIP has no [CLS]


# ---------------------------------------------------------------------------------------------- inputs


def image_batch():
    """Row 0: two images ([100, 80], [56, 56]); row 1: one image [56, 112] and a longer question (left padding)."""
    pixels, sizes = anyres_pixels(SIZES)
    rows = [
        prompt([(IMAGE_TOKEN, 72), (IMAGE_TOKEN, 36)], [1, 7, 8], [9, 10]),
        prompt([(IMAGE_TOKEN, 52)], [1, 7], [11, 12, 13, 14, 15]),
    ]
    ids, mask = left_pad(rows)
    return ids, mask, {"pixel_values": pixels, "image_sizes": sizes}


def video_batch(model_type):
    """Row 0: two videos; row 1: one video and a longer question."""
    n = VIDEO_TOKENS[model_type]
    rows = [prompt([(VIDEO_TOKEN, n), (VIDEO_TOKEN, n)], [1, 7], [9]), prompt([(VIDEO_TOKEN, n)], [1], [11, 12, 13])]
    ids, mask = left_pad(rows)
    return ids, mask, {"pixel_values_videos": video_pixels(3, FRAMES)}


def batch(model_type, modality):
    return image_batch() if modality == "image" else video_batch(model_type)


CASES = [(t, "image") for t in MODEL_TYPES] + [(t, "video") for t in VIDEO_TYPES]


# ------------------------------------------------------------------------------------ the reference


def eager_tower(ref, pixels):
    tower = ref.model.vision_tower
    tower.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            return tower(pixels, output_attentions=True, output_hidden_states=True)
    finally:
        tower.config._attn_implementation = "sdpa"


def pass_values(ref, out, compressor):
    """Per tower pass and patch token: projected features and the method's signals (before any pooling)."""
    cfg = ref.config
    tower = ref.model.vision_tower
    drop = 1 if cfg.vision_feature_select_strategy == "default" else 0
    layer = cfg.vision_feature_layer
    with torch.no_grad():
        values = {"features": ref.model.multi_modal_projector(out.hidden_states[layer][:, drop:])}
    wanted = set(compressor.info.signals) | set(compressor.info.optional_signals)
    if "cls_attn" in wanted:
        has_cls = cfg.vision_config.model_type == "clip_vision_model"
        mode = compressor.attention_mode if has_cls else "received"
        rows = []
        for i in compressor.encoder_layers:
            maps = out.attentions[i].mean(1)  # [passes, S, S], heads averaged
            row = (maps[:, 0] if mode == "cls" else maps.mean(1))[:, drop:]
            rows.append(row / row.mean(-1, keepdim=True))  # mean-normalised per pass
        values["cls_attn"] = torch.stack(rows, dim=-1)  # [passes, P, L]
    if "keys" in wanted:
        block = tower.encoder.layers[layer]
        with torch.no_grad():
            k = block.self_attn.k_proj(block.layer_norm1(out.hidden_states[layer - 1]))
        values["keys"] = k.view(*k.shape[:2], block.self_attn.num_heads, -1).mean(2)[:, drop:]
    return values


def image_layout(size, patch_tokens):
    """Source (flat crop-token index, base crop first) of each packed token, -1 for a newline."""
    nph, npw = get_anyres_image_grid_shape(size, PINPOINTS, CROP)
    index = torch.arange(nph * npw * patch_tokens).view(nph, npw, SIDE, SIDE).permute(0, 2, 1, 3)
    index = unpad_image(index.reshape(1, nph * SIDE, npw * SIDE), size)[0]
    sources = list(range(patch_tokens))
    for row in index.tolist():
        sources += [patch_tokens + v for v in row] + [-1]
    return sources


def closing_newline(is_newline, start):
    """Per packed position: the position of the newline that closes its row (-1 before ``start``)."""
    line, pending = [-1] * len(is_newline), []
    for pos, nl in enumerate(is_newline):
        if nl:
            for p in pending:
                line[p] = pos
            pending = []
        elif pos >= start:
            pending.append(pos)
    return line


def reference_items(ref, model_type, modality, ids, mask, media, compressor):
    """One dict per media item in prompt order: its row, packed features, newline layout and signals."""
    newline = ref.model.image_newline.detach()
    items = []
    if modality == "image":
        sizes = media["image_sizes"].tolist()
        crops = [image_size_to_num_patches(s, PINPOINTS, CROP) for s in sizes]
        pixels = torch.cat([media["pixel_values"][i, :n] for i, n in enumerate(crops)])
        values = pass_values(ref, eager_tower(ref, pixels), compressor)
        with torch.no_grad():
            packed = ref.model.get_image_features(**media).pooler_output
        offset = 0
        for i, size in enumerate(sizes):
            sources = torch.tensor(image_layout(size, SIDE * SIDE))
            is_newline = sources < 0
            vis = sources[~is_newline] + offset * SIDE * SIDE
            offset += crops[i]
            per_token = {k: v.flatten(0, 1)[vis] for k, v in values.items()}
            items.append(dict(packed=packed[i], is_newline=is_newline, start=SIDE * SIDE, grid=(1, 1, len(vis))))
            items[-1].update(per_token)
    else:
        pixels = media["pixel_values_videos"]
        videos = pixels.shape[0]
        values = pass_values(ref, eager_tower(ref, pixels.flatten(0, 1)), compressor)
        with torch.no_grad():
            # [videos, n, D]; before transformers 5.19 NeXT-Video gave a tuple of [frames, P', D] per video
            packed = [v.reshape(-1, v.shape[-1]) for v in ref.model.get_video_features(**media).pooler_output]
        for v in range(videos):
            per_token = {}
            for name, val in values.items():
                frames = val[v * FRAMES : (v + 1) * FRAMES].transpose(1, 2).reshape(FRAMES, -1, SIDE, SIDE)
                if name == "features" and model_type == "llava_next_video":  # pooled in CLIP space, then projected
                    continue
                if model_type == "llava_onevision":
                    pooled = F.interpolate(frames, size=(2, 2), mode="bilinear")
                else:
                    pooled = F.avg_pool2d(frames, 2)
                per_token[name] = pooled.flatten(2).transpose(1, 2).flatten(0, 1)
            if model_type == "llava_next_video":
                hs = eager_tower(ref, pixels[v]).hidden_states[ref.config.vision_feature_layer][:, 1:]
                pooled = F.avg_pool2d(hs.transpose(1, 2).reshape(FRAMES, -1, SIDE, SIDE), 2).flatten(2).transpose(1, 2)
                with torch.no_grad():
                    per_token["features"] = ref.model.multi_modal_projector(pooled).flatten(0, 1)
            n = VIDEO_TOKENS[model_type]
            is_newline = torch.arange(n) >= FRAMES * 4
            items.append(dict(packed=packed[v], is_newline=is_newline, start=0, grid=(FRAMES, 2, 2), **per_token))
    left = (ids == TOKEN_IDS[modality]).sum(1).tolist()  # placeholders per row, consumed in prompt order
    row = 0
    for item in items:
        while left[row] == 0:
            row += 1
        left[row] -= len_of(item)
        item["row"] = row
        packed, is_newline = item["packed"], item["is_newline"]
        # the hand-built layout agrees with the model's packed output
        assert packed.shape[0] == is_newline.numel()
        assert torch.allclose(packed[is_newline], newline.expand(int(is_newline.sum()), -1))
        assert not torch.isclose(packed[~is_newline], newline).all(-1).any()
        assert torch.allclose(packed[~is_newline], item["features"], atol=1e-5)
        item["line"] = closing_newline(is_newline.tolist(), item["start"])
    return items


def len_of(item):
    return item["packed"].shape[0]


def reference_tokens(ref, items, ids, mask, compressor) -> vtc.VisualTokens:
    width = max(int((~it["is_newline"]).sum()) for it in items)
    lengths = torch.tensor([int((~it["is_newline"]).sum()) for it in items])

    def pad(name):
        out = torch.zeros(len(items), width, *items[0][name].shape[1:])
        for i, it in enumerate(items):
            out[i, : it[name].shape[0]] = it[name]
        return out

    kwargs = {}
    wanted = set(compressor.info.signals) | set(compressor.info.optional_signals)
    if "cls_attn" in wanted:
        kwargs["cls_attn"] = pad("cls_attn").transpose(1, 2)
    if "keys" in wanted:
        kwargs["keys"] = pad("keys")
    if "text" in wanted:
        embeds = ref.get_input_embeddings()(ids).detach()
        texts = []
        for it in items:
            row = it["row"]
            sel = (mask[row] == 1) & (ids[row] != IMAGE_TOKEN) & (ids[row] != VIDEO_TOKEN)
            texts.append(embeds[row, sel])
        tw = max(len(t) for t in texts)
        kwargs["text"] = torch.stack([torch.cat([t, t.new_zeros(tw - len(t), t.shape[1])]) for t in texts])
        kwargs["text_mask"] = torch.stack([torch.arange(tw) < len(t) for t in texts])
    visual = [it["packed"][~it["is_newline"]] for it in items]
    features = torch.stack([torch.cat([v, v.new_zeros(width - len(v), v.shape[1])]) for v in visual])
    return vtc.VisualTokens(
        features,
        mask=torch.arange(width)[None] < lengths[:, None],
        grid=torch.tensor([it["grid"] for it in items]),
        **kwargs,
    )


def kept_tokens(items, compressed):
    """Per item: {packed position: feature} of the kept visual tokens and, by the newline rule, newlines."""
    out = []
    for i, it in enumerate(items):
        visual = (~it["is_newline"]).nonzero()[:, 0]
        k = int(compressed.counts[i])
        kept = {}
        for slot, src in enumerate(compressed.index[i, :k].tolist()):
            pos = int(visual[src])
            kept[pos] = compressed.features[i, slot]
            if it["line"][pos] >= 0:
                kept[it["line"][pos]] = it["packed"][it["line"][pos]]
        out.append(kept)
    return out


def hand_built(ref, ids, mask, modality, items, kept, positions):
    """Per row: kept features at their placeholders, text embedded, positions of the kept columns."""
    embed = ref.get_input_embeddings()
    token = TOKEN_IDS[modality]
    out = []
    for row in range(ids.shape[0]):
        cols = (ids[row] == token).nonzero()[:, 0].tolist()
        by_col, start = {}, 0
        for it, kp in zip(items, kept, strict=True):
            if it["row"] != row:
                continue
            run = cols[start : start + len_of(it)]
            start += len_of(it)
            by_col.update({run[pos]: feat for pos, feat in kp.items()})
        pieces, keep_cols = [], []
        for col in range(ids.shape[1]):
            if mask[row, col] == 0 or (ids[row, col] == token and col not in by_col):
                continue
            keep_cols.append(col)
            pieces.append(by_col[col] if col in by_col else embed(ids[row, col : col + 1])[0])
        out.append((torch.stack(pieces).detach(), positions[row, keep_cols]))
    return out


def build(model_type, method, **budget):
    info = next(m for m in vtc.list_methods() if m.name == method)
    extra = {"layers": (1, -2)} if method == "hiprune" else {}  # the tiny towers have 3 layers
    if info.adaptive and info.video and not budget:  # their own rules may keep images or small videos whole
        budget = {"ratio": 0.2}
    return vtc.build(method, **({} if info.adaptive and not budget else budget or {"ratio": 0.2}), **extra)


def newline_counts(items, kept):
    total = sum(int(it["is_newline"].sum()) for it in items)
    return total, sum(sum(1 for p in kp if bool(it["is_newline"][p])) for it, kp in zip(items, kept, strict=True))


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("model_type, modality", CASES)
def test_keep_all_equals_unpatched(model_type, modality):
    model, ref = tiny(model_type), tiny(model_type)
    ids, mask, media = batch(model_type, modality)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, "divprune", ratio=1.0) as handle:
            got = model(input_ids=ids, attention_mask=mask, **media).logits
    assert got.shape == expected.shape
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    per_row = (ids == TOKEN_IDS[modality]).sum(1).tolist()  # newlines included
    assert handle.stats[0]["before"] == handle.stats[0]["after"] == per_row


@pytest.mark.parametrize("model_type", VIDEO_TYPES)
def test_keep_all_images_and_videos_together(model_type):
    model, ref = tiny(model_type), tiny(model_type)
    pixels, sizes = anyres_pixels(SIZES[1:])
    videos = video_pixels(1, FRAMES)
    rows = [
        prompt([(IMAGE_TOKEN, 36), (VIDEO_TOKEN, VIDEO_TOKENS[model_type])], [1, 7], [9]),
        prompt([(IMAGE_TOKEN, 52)], [1], [11, 12, 13]),
    ]
    ids, mask = left_pad(rows)
    media = dict(pixel_values=pixels, image_sizes=sizes, pixel_values_videos=videos)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, "tome", ratio=1.0):
            got = model(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, "tome", ratio=0.5) as handle:
            model(input_ids=ids, attention_mask=mask, **media)
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    stats = handle.stats[0]
    assert stats["before"] == [36 + VIDEO_TOKENS[model_type], 52]
    assert stats["after"][0] == stats["image"]["after"][0] + stats["video"]["after"][0] < stats["before"][0]


REFERENCE_METHODS = [
    ("cls_attention", {"ratio": 0.25}),
    ("visionzip", {"ratio": 0.3}),
    ("tome", {"count": 10}),
    ("prumerge", {}),
    ("dart", {"ratio": 0.3}),
    ("pool", {"ratio": 0.25}),
]


@pytest.mark.parametrize("model_type, modality", CASES)
@pytest.mark.parametrize("method, budget", REFERENCE_METHODS)
def test_forward_matches_hand_built_reference(model_type, modality, method, budget):
    model, ref = tiny(model_type), tiny(model_type)
    ids, mask, media = batch(model_type, modality)
    compressor = build(model_type, method, **budget)
    items = reference_items(ref, model_type, modality, ids, mask, media, compressor)
    compressed = compressor(reference_tokens(ref, items, ids, mask, compressor))
    kept = kept_tokens(items, compressed)
    positions = torch.arange(ids.shape[1]).expand_as(ids)  # what forward uses without position_ids
    substitute = SUBSTITUTE.get(model_type)
    with torch.no_grad(), vtc.apply(model, compressor, cls_substitute=substitute) as handle:
        got = model(input_ids=ids, attention_mask=mask, **media).logits
    after = [0, 0]
    for it, kp in zip(items, kept, strict=True):
        after[it["row"]] += len(kp)
    assert handle.stats[0]["after"] == after  # kept newlines included
    for row, (embeds, pos) in enumerate(hand_built(ref, ids, mask, modality, items, kept, positions)):
        with torch.no_grad():
            want = ref(
                inputs_embeds=embeds[None],
                position_ids=pos[None],
                attention_mask=torch.ones(1, len(pos), dtype=torch.long),
            ).logits[0]
        assert torch.allclose(got[row, -len(pos) :], want, atol=1e-5), f"row {row}"


def test_onevision_videos_with_different_kept_counts():
    """Adaptive methods keep different counts per video; the pooled-video tensor then goes as one row."""
    model, ref = tiny("llava_onevision"), tiny("llava_onevision")
    ids, mask, media = video_batch("llava_onevision")
    compressor = vtc.build("prumerge")
    items = reference_items(ref, "llava_onevision", "video", ids, mask, media, compressor)
    compressed = compressor(reference_tokens(ref, items, ids, mask, compressor))
    assert len(set(compressed.counts.tolist())) > 1
    kept = kept_tokens(items, compressed)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad(), vtc.apply(model, compressor, cls_substitute="received"):
        got = model(input_ids=ids, attention_mask=mask, **media).logits
    for row, (embeds, pos) in enumerate(hand_built(ref, ids, mask, "video", items, kept, positions)):
        with torch.no_grad():
            want = ref(inputs_embeds=embeds[None], position_ids=pos[None], attention_mask=torch.ones_like(pos)[None])
        assert torch.allclose(got[row, -len(pos) :], want.logits[0], atol=1e-5), f"row {row}"


def test_newline_rule_drops_rows_without_tokens():
    """At a low budget some high-res rows lose every token: their newlines go, the others stay."""
    model_type = "llava_next"
    model, ref = tiny(model_type), tiny(model_type)
    ids, mask, media = image_batch()
    compressor = vtc.build("cls_attention", ratio=0.1)
    items = reference_items(ref, model_type, "image", ids, mask, media, compressor)
    kept = kept_tokens(items, compressor(reference_tokens(ref, items, ids, mask, compressor)))
    total, kept_newlines = newline_counts(items, kept)
    assert 0 < kept_newlines < total
    with torch.no_grad(), vtc.apply(model, compressor) as handle:
        model(input_ids=ids, attention_mask=mask, **media)
    visual = [round(0.1 * n) for n in (64, 32, 48)]  # newlines are not in the budget
    assert sum(handle.stats[0]["after"]) == sum(visual) + kept_newlines


METHODS = [m.name for m in vtc.list_methods() if m.stage == "projector"]


@pytest.mark.parametrize("model_type, modality", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_generate_matches_reference_for_every_method(model_type, modality, method):
    model, ref = tiny(model_type), tiny(model_type)
    ids, mask, media = batch(model_type, modality)
    compressor = build(model_type, method)
    items = reference_items(ref, model_type, modality, ids, mask, media, compressor)
    compressed = compressor(reference_tokens(ref, items, ids, mask, compressor))
    kept = kept_tokens(items, compressed)
    with torch.no_grad(), vtc.apply(model, compressor, cls_substitute=SUBSTITUTE.get(model_type)) as handle:
        out = model.generate(input_ids=ids, attention_mask=mask, **media, max_new_tokens=4, do_sample=False)
    assert torch.equal(out[:, : ids.shape[1]], ids), "the caller's prompt comes back unchanged"
    positions = (mask.cumsum(1) - 1).clamp_min(0)  # generate's rule for the full prompt
    for row, (embeds, pos) in enumerate(hand_built(ref, ids, mask, modality, items, kept, positions)):
        assert out[row, ids.shape[1] :].tolist() == greedy_reference(ref, embeds, pos, 4), f"row {row}"
    after, before = handle.stats[0]["after"], handle.stats[0]["before"]
    assert after[0] != after[1] and after[0] < before[0] and after[1] < before[1]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_remove_restores_the_model(model_type):
    model, ref = tiny(model_type), tiny(model_type)
    ids, mask, media = image_batch()
    handle = vtc.apply(model, "pool", ratio=0.25)
    with torch.no_grad():
        pruned = model(input_ids=ids, attention_mask=mask, **media).logits
    handle.remove()
    handle.remove()  # idempotent
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert "pack_image_features" not in model.model.__dict__
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask, **media).logits
        expected = ref(input_ids=ids, attention_mask=mask, **media).logits
    assert pruned.shape[1] < ids.shape[1]
    assert torch.equal(after, expected)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_text_only_calls_pass_through(model_type):
    model, ref = tiny(model_type), tiny(model_type)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad(), vtc.apply(model, "divprune", ratio=0.1) as handle:
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    assert handle.stats == []


def test_errors():
    model = tiny("llava_next")
    ids, mask, media = image_batch()
    with vtc.apply(model, "divprune", ratio=0.5):
        short = ids.clone()
        short[1, -6] = 2  # one image placeholder fewer in row 1
        with pytest.raises(ValueError, match=r"placeholder tokens \(id 100\)"):
            model(input_ids=short, attention_mask=mask, **media)
        with pytest.raises(ValueError, match=r"image_sizes: llava_next needs it with pixel_values"):
            model(input_ids=ids, attention_mask=mask, pixel_values=media["pixel_values"])
    with pytest.raises(ValueError, match=r"hiprune: reads encoder layer\(s\) \[8\], but the llava_next vision tower"):
        vtc.apply(model, "hiprune", ratio=0.5, layers=(8, -2))  # refused before any forward


@pytest.mark.parametrize("method", ["visionzip", "cls_attention", "prumerge"])
def test_siglip_without_cls_needs_a_substitute(method):
    model = tiny("llava_onevision")
    ids, mask, media = image_batch()
    with pytest.raises(ValueError, match=rf"^{method}: needs \[CLS\] attention .* no \[CLS\] token") as err:
        vtc.apply(model, method, ratio=0.5)  # refused before any forward
    assert getattr(model, "_vtc_patch", None) is None
    message = str(err.value)
    assert "cls_substitute='received'" in message
    assert "divprune" in message and "hiprune (attention='received')" in message
    with torch.no_grad(), vtc.apply(model, method, ratio=0.5, cls_substitute="received") as handle:
        model(input_ids=ids, attention_mask=mask, **media)
    assert handle.stats[0]["after"][1] < 52
    with torch.no_grad(), vtc.apply(model, "hiprune", ratio=0.5, layers=(1, -2)) as handle:  # received by default
        model(input_ids=ids, attention_mask=mask, **media)
    assert handle.stats[0]["after"][1] < 52


def test_onevision_multi_image_prompts_pack_base_crops_only():
    """``batch_num_images > 1``: each image is its base crop plus one trailing newline, on its square grid."""
    model, ref = tiny("llava_onevision"), tiny("llava_onevision")
    pixels, sizes = anyres_pixels(SIZES)
    rows = [prompt([(IMAGE_TOKEN, 17), (IMAGE_TOKEN, 17)], [1, 7], [9]), prompt([(IMAGE_TOKEN, 52)], [1], [11, 12])]
    ids, mask = left_pad(rows)
    media = dict(pixel_values=pixels, image_sizes=sizes, batch_num_images=torch.tensor([2, 1]))
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, "divprune", ratio=1.0):
            got = model(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, "pool", ratio=0.25) as handle:
            model(input_ids=ids, attention_mask=mask, **media)
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    # base-only images: a 2 x 2 pool of the 4 x 4 grid, and their newline; the AnyRes one pools in 1-D
    assert handle.stats[0]["after"][0] == 2 * (4 + 1)


@pytest.mark.parametrize("method", ["divprune", "visionzip", "dart"])
def test_onevision_anyres_max_downsampling(method):
    """``anyres_max_1`` bilinearly downsamples the high-res grid; the signals follow through the model's packing."""
    model = tiny("llava_onevision", vision_aspect_ratio="anyres_max_1")
    ref = tiny("llava_onevision", vision_aspect_ratio="anyres_max_1")
    pixels, sizes = anyres_pixels(SIZES)
    media = dict(pixel_values=pixels, image_sizes=sizes)
    with torch.no_grad():
        counts = [len(f) for f in ref.model.get_image_features(**media).pooler_output]
    assert counts == [16 + 4 * 3 + 4, 36, 16 + 2 * 5 + 2]  # 8 x 6 -> 4 x 3, 4 x 8 -> 2 x 5
    rows = [
        prompt([(IMAGE_TOKEN, counts[0]), (IMAGE_TOKEN, counts[1])], [1, 7], [9]),
        prompt([(IMAGE_TOKEN, counts[2])], [1], [11]),
    ]
    ids, mask = left_pad(rows)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, method, ratio=1.0, cls_substitute="received"):
            got = model(input_ids=ids, attention_mask=mask, **media).logits
        with vtc.apply(model, method, ratio=0.3, cls_substitute="received") as handle:
            model(input_ids=ids, attention_mask=mask, **media)
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    assert handle.stats[0]["after"][0] < counts[0] + counts[1]


@pytest.mark.parametrize("method", ["tome", "cls_attention"])
def test_newline_slots_are_consistent(method):
    """The adapter's re-addressed selection: sorted positions, kept newlines as their own slots, sizes add up."""
    from vtc.models.llava_next import newline_layout, with_newlines

    g = torch.Generator().manual_seed(0)
    is_newline = torch.zeros(16 + 4 * 5, dtype=torch.bool)
    is_newline[16 + 4 :: 5] = True  # base crop of 16, then 4 rows of 4 tokens + newline
    packed = torch.randn(is_newline.numel(), 8, generator=g)
    layout = newline_layout(is_newline, 16, packed)
    assert layout.row.tolist() == [-1] * 16 + [r for r in range(4) for _ in range(4)]
    cls = torch.rand(1, 1, 32, generator=g)
    inner = vtc.build(method, ratio=0.25)(vtc.VisualTokens(packed[~is_newline][None], cls_attn=cls))
    out = with_newlines(inner, [layout], [is_newline.numel()])
    k = int(out.counts[0])
    index, assign, sizes = out.index[0, :k], out.assign[0], out.sizes[0, :k]
    assert torch.equal(index, index.sort().values)
    assert int(sizes.sum()) == int((assign >= 0).sum())
    assert torch.equal(assign[index], torch.arange(k))  # every slot's representative is in it
    kept_rows = set(layout.row[inner.index[0, : int(inner.counts[0])]].tolist()) - {-1}
    assert {int(layout.newlines.tolist().index(p)) for p in index.tolist() if is_newline[p]} == kept_rows
    assert torch.equal(out.features[0, :k][is_newline[index]], packed[index[is_newline[index]]])
