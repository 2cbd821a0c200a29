"""vtc.apply on tiny stock Qwen2-VL, Qwen2.5-VL and Qwen3-VL: keep-all, hand-built references, generate, errors.

The references never go through vtc.models: features come from the model's own ``get_*_features``,
keys and received attention from the ViT block's own modules (a pre-hook on its attention module, then
``qkv``, the vision RoPE and a plain softmax), positions from the model's ``get_rope_index`` on the
unpruned prompt. The kept features, text embeddings and (Qwen3-VL) deepstack features are assembled into
``inputs_embeds`` by hand and run through the language model of a separate, identically built model.
"""

from __future__ import annotations

import sys

import pytest
import torch
from tiny_qwen import IMAGE, VERSIONS, VIDEO, expand, pad, pixels, tiny_qwen, tokens_of, type_ids

import vtc
from vtc.models.calls import cache_name, cache_of

IMAGE_GRIDS = [(1, 8, 8), (1, 8, 12), (1, 4, 4)]  # 16, 24 and 4 tokens
VIDEO_GRID = (2, 8, 8)  # 2 frames of 16 tokens
KEYS = {"image": ("pixel_values", "image_grid_thw"), "video": ("pixel_values_videos", "video_grid_thw")}
PLACEHOLDER = {"image": IMAGE, "video": VIDEO}


def case(model, version: str, name: str, side: str = "left") -> tuple[dict, dict[str, list[int]]]:
    """Model inputs for a named prompt layout, and the batch row of each image / video."""
    if name == "image":
        rows = [[1, 7, ("image", IMAGE_GRIDS[1]), 9, 10]]
    elif name == "video":
        rows = [[1, ("video", VIDEO_GRID), 9, 10, 11]]
    else:  # row 0: two images; row 1: a small image, then a video, and a longer question
        rows = [
            [1, 7, ("image", IMAGE_GRIDS[0]), 5, ("image", IMAGE_GRIDS[1]), 9, 10],
            [1, ("image", IMAGE_GRIDS[2]), 6, ("video", VIDEO_GRID), 11, 12, 13, 14],
        ]
    ids, mask = pad([expand(version, r) for r in rows], side)
    owners: dict[str, list[int]] = {"image": [], "video": []}
    grids: dict[str, list] = {"image": [], "video": []}
    for row, pieces in enumerate(rows):
        for piece in pieces:
            if isinstance(piece, tuple):
                owners[piece[0]].append(row)
                grids[piece[0]].append(piece[1])
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": type_ids(ids)}
    for modality, seed in (("image", 1), ("video", 2)):
        if grids[modality]:
            inputs[KEYS[modality][0]] = pixels(model, grids[modality], seed)
            inputs[KEYS[modality][1]] = torch.tensor(grids[modality])
    if grids["video"] and version == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = torch.tensor([2.0])
    return inputs, {m: r for m, r in owners.items() if r}


def present(owners: dict[str, list[int]]) -> list[str]:
    return [m for m in ("image", "video") if m in owners]


def rope_positions(ref, inputs) -> torch.Tensor:
    """The unpruned M-RoPE positions ``[3, B, L]`` from the model's own ``get_rope_index``."""
    extra = {k: inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in inputs}
    positions, _ = ref.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        attention_mask=inputs["attention_mask"],
        **extra,
    )
    return positions


def block_qk(ref, block: int, modality: str, inputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Post-RoPE q, k ``[S, H, hd]`` of a ViT block in the tower's order, its segment bounds and scale."""
    attn = ref.model.visual.blocks[block].attn
    seen = {}

    def hook(module, args, kwargs):
        seen["h"] = args[0] if args else kwargs["hidden_states"]
        seen["cu"], seen["pe"] = kwargs["cu_seqlens"], kwargs["position_embeddings"]

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            run_tower(ref, modality, inputs)
    finally:
        handle.remove()
    h = seen["h"]
    with torch.no_grad():
        qkv = attn.qkv(h).reshape(h.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3)
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
        q, k = rotate(qkv[0], qkv[1], *seen["pe"])
    return q, k, seen["cu"], attn.head_dim**-0.5


def run_tower(ref, modality, inputs):
    pixel_key, grid_key = KEYS[modality]
    encode = getattr(ref.model, f"get_{modality}_features")
    return encode(**{pixel_key: inputs[pixel_key], grid_key: inputs[grid_key]})


def token_order(ref, values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Per-merged-token ``values`` from the tower's order to token order (Qwen2.5-VL runs in window order)."""
    tower = ref.model.visual
    if not hasattr(tower, "window_size"):
        return values
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(grid, 2, tower.window_size, tower.patch_size)
    out = torch.empty_like(values)
    out[window_index] = values  # tower slot u holds merged token window_index[u]
    return out


def reference_tokens(ref, modality, inputs, owners, compressor) -> tuple[vtc.VisualTokens, list | None]:
    """The method's inputs computed without vtc.models, and the per-level deepstack features (Qwen3-VL)."""
    grid = inputs[KEYS[modality][1]]
    with torch.no_grad():
        out = run_tower(ref, modality, inputs)
    feats = list(out.pooler_output)
    counts = [f.shape[0] for f in feats]
    width = max(counts)
    mask = torch.arange(width)[None] < torch.tensor(counts)[:, None]

    def padded(pieces):
        return torch.stack([torch.cat([p, p.new_zeros(width - len(p), *p.shape[1:])]) for p in pieces])

    info = compressor.info
    wanted = set(info.signals) | set(info.optional_signals)
    kwargs = {}
    depth = len(ref.model.visual.blocks)
    if "cls_attn" in wanted:
        rows = []
        for layer in compressor.encoder_layers:
            q, k, cu, scale = block_qk(ref, layer % depth, modality, inputs)
            got = []
            for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
                probs = torch.softmax(q[lo:hi].transpose(0, 1) @ k[lo:hi].permute(1, 2, 0) * scale, dim=-1)
                got.append(probs.mean(dim=(0, 1)))  # [s]: mean over heads and queries
            received = token_order(ref, torch.cat(got).view(-1, 4).sum(1), grid)
            rows.append(padded(list(received.split(counts))))
        kwargs["cls_attn"] = torch.stack(rows, dim=1)
    if "keys" in wanted:
        _, k, _, _ = block_qk(ref, depth - 1, modality, inputs)
        keys = token_order(ref, k.mean(1).view(-1, 4, k.shape[-1]).mean(1), grid)
        kwargs["keys"] = padded(list(keys.split(counts)))
    if "text" in wanted:
        ids, valid = inputs["input_ids"], inputs["attention_mask"] == 1
        embeds = ref.get_input_embeddings()(ids).detach()
        texts = [embeds[r, valid[r] & (ids[r] != IMAGE) & (ids[r] != VIDEO)] for r in owners[modality]]
        t_width = max(len(t) for t in texts)
        kwargs["text"] = torch.stack([torch.cat([t, t.new_zeros(t_width - len(t), t.shape[1])]) for t in texts])
        kwargs["text_mask"] = torch.stack([torch.arange(t_width) < len(t) for t in texts])
    grids = torch.tensor([(t, h // 2, w // 2) for t, h, w in grid.tolist()])
    deepstack = getattr(out, "deepstack_features", None)
    tokens = vtc.VisualTokens(padded(feats), mask=mask, grid=grids, **kwargs)
    return tokens, None if deepstack is None else [list(level) for level in deepstack]


def compress_by_hand(ref, inputs, owners, compressor) -> dict:
    out = {}
    for modality in present(owners):
        tokens, deepstack = reference_tokens(ref, modality, inputs, owners, compressor)
        out[modality] = (compressor(tokens), deepstack)
    return out


def hand_built(ref, inputs, owners, compressed) -> list[dict]:
    """Per row: embeddings of the pruned sequence, kept positions, and (Qwen3-VL) the deepstack inputs."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions = rope_positions(ref, inputs)
    embed = ref.get_input_embeddings()
    items = {m: 0 for m in owners}
    rows = []
    for row in range(ids.shape[0]):
        kept: dict[int, tuple] = {}  # column -> (feature, deepstack levels)
        for modality in present(owners):
            comp, deepstack = compressed[modality]
            cols = (ids[row] == PLACEHOLDER[modality]).nonzero()[:, 0].tolist()
            while cols:
                item = items[modality]
                assert owners[modality][item] == row
                n = tokens_in(inputs, modality, item)
                run, cols = cols[:n], cols[n:]
                for slot in range(int(comp.counts[item])):
                    members = (comp.assign[item, :n] == slot).nonzero()[:, 0]
                    deep = None
                    if deepstack is not None:
                        deep = [level[item][members].mean(0) for level in deepstack]
                    kept[run[int(comp.index[item, slot])]] = (comp.features[item, slot], deep)
                items[modality] += 1
        cols, pieces, visual, deep_rows = [], [], [], []
        for col in range(ids.shape[1]):
            if mask[row, col] == 0:
                continue
            if int(ids[row, col]) in (IMAGE, VIDEO):
                if col not in kept:
                    continue
                feature, deep = kept[col]
                pieces.append(feature)
                visual.append(True)
                if deep is not None:
                    deep_rows.append(deep)
            else:
                pieces.append(embed(ids[row, col : col + 1])[0].detach())
                visual.append(False)
            cols.append(col)
        deepstack = [torch.stack(level) for level in zip(*deep_rows, strict=True)] if deep_rows else None
        rows.append(
            {
                "embeds": torch.stack(pieces),
                "positions": positions[:, row, cols],
                "visual": torch.tensor(visual),
                "deepstack": deepstack,
            }
        )
    return rows


def tokens_in(inputs, modality, item) -> int:
    return tokens_of(tuple(inputs[KEYS[modality][1]][item].tolist()))


def reference_logits(ref, built) -> torch.Tensor:
    """The language model on the hand-built sequence (deepstack added at the visual positions), then the head."""
    extra = {}
    if built["deepstack"] is not None:
        extra = {"visual_pos_masks": built["visual"][None], "deepstack_visual_embeds": built["deepstack"]}
    length = built["embeds"].shape[0]
    with torch.no_grad():
        hidden = ref.model.language_model(
            inputs_embeds=built["embeds"][None],
            position_ids=built["positions"][:, None],
            attention_mask=torch.ones(1, length, dtype=torch.long),
            **extra,
        ).last_hidden_state
        return ref.lm_head(hidden)[0]


def greedy_reference(ref, built, steps: int) -> list[int]:
    """No-cache greedy decoding: the whole sequence each step, every position row continuing from its last."""
    built = dict(built)
    embed, out = ref.get_input_embeddings(), []
    for _ in range(steps):
        token = int(reference_logits(ref, built)[-1].argmax())
        out.append(token)
        built["embeds"] = torch.cat([built["embeds"], embed(torch.tensor([token])).detach()])
        built["positions"] = torch.cat([built["positions"], built["positions"][:, -1:] + 1], dim=1)
        built["visual"] = torch.cat([built["visual"], torch.tensor([False])])
    return out


def valid_rows(logits, lengths, side):
    return [logits[r, -n:] if side == "left" else logits[r, :n] for r, n in enumerate(lengths)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name, side", [("image", "left"), ("video", "left"), ("batch", "left"), ("batch", "right")])
def test_keep_all_equals_unpatched(version, name, side):
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, _ = case(model, version, name, side)
    mask = inputs["attention_mask"]
    with torch.no_grad():
        expected = ref(**inputs).logits
        with vtc.apply(model, "divprune", ratio=1.0) as handle:
            got = model(**inputs).logits
            assert torch.equal(model.model.rope_deltas, ref.model.rope_deltas)  # while patched; remove() restores
    assert got.shape == expected.shape
    assert torch.allclose(got * mask[..., None], expected * mask[..., None], atol=1e-5)
    placeholders = ((inputs["input_ids"] == IMAGE) | (inputs["input_ids"] == VIDEO)).sum(1).tolist()
    assert handle.stats[0]["before"] == handle.stats[0]["after"] == placeholders


@pytest.mark.parametrize("version", VERSIONS)
def test_keep_all_generate_equals_unpatched(version):
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, _ = case(model, version, "batch")
    with torch.no_grad():
        expected = ref.generate(**inputs, max_new_tokens=4, do_sample=False)
        with vtc.apply(model, "uniform", ratio=1.0):
            got = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, expected)


FORWARD_CASES = [
    ("divprune", {"ratio": 0.25}, "left"),
    ("tome", {"count": 5}, "right"),  # merges: slot means, also for deepstack
    ("dart", {"ratio": 0.3}, "left"),  # keys and text
    ("cls_attention", {"ratio": 0.25, "layers": (0, -1)}, "right"),  # received attention, window + full blocks
    ("pool", {"ratio": 0.25}, "left"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("method, budget, side", FORWARD_CASES)
def test_forward_matches_hand_built_reference(version, method, budget, side):
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, owners = case(model, version, "batch", side)
    compressor = vtc.build(method, **budget)
    compressed = compress_by_hand(ref, inputs, owners, compressor)
    with torch.no_grad(), vtc.apply(model, compressor, cls_substitute="received") as handle:
        got = model(**inputs).logits
    built = hand_built(ref, inputs, owners, compressed)
    lengths = [len(b["embeds"]) for b in built]
    assert sum(handle.stats[0]["after"]) == sum(int(c.counts.sum()) for c, _ in compressed.values())
    for row, (logits, b) in enumerate(zip(valid_rows(got, lengths, side), built, strict=True)):
        assert torch.allclose(logits, reference_logits(ref, b), atol=1e-5), f"row {row}"
    if version == "qwen3_vl":  # deepstack matters: dropping it changes the logits
        without = dict(built[0], deepstack=None)
        assert not torch.allclose(reference_logits(ref, without), reference_logits(ref, built[0]), atol=1e-3)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_signals_match_block_attention(version, implementation):
    """The recorded keys and received attention equal a direct computation from the block's modules."""
    from vtc.models import adapter_for

    model, ref = tiny_qwen(version), tiny_qwen(version)
    model.model.visual.config._attn_implementation = implementation
    inputs, owners = case(model, version, "batch")
    compressor = vtc.build("visionzip", ratio=0.5, layers=(0, 1, 2))
    adapter = adapter_for(model, "received")
    for modality in present(owners):
        pixel_key, grid_key = KEYS[modality]
        media = {pixel_key: inputs[pixel_key], grid_key: inputs[grid_key]}
        got = adapter.encode(modality, media, compressor, inputs["input_ids"], inputs["attention_mask"]).tokens
        want, _ = reference_tokens(ref, modality, inputs, owners, compressor)
        assert torch.allclose(got.features, want.features, atol=1e-6)
        assert torch.allclose(got.cls_attn, want.cls_attn, atol=1e-6)
        assert torch.allclose(got.keys, want.keys, atol=1e-5)
        assert torch.equal(got.grid, want.grid) and torch.equal(got.mask, want.mask)
    assert model.model.visual.config._attn_implementation == implementation
    assert all(block.attn.config is model.model.visual.config for block in model.model.visual.blocks)


METHODS = [m.name for m in vtc.list_methods() if m.stage == "projector"]
EXTRA = {"hiprune": {"layers": (1, -1)}}  # the tiny tower has 3 blocks



@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("method", METHODS)
def test_generate_matches_reference_for_every_method(version, method):
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, owners = case(model, version, "batch")
    info = next(m for m in vtc.list_methods() if m.name == method)
    # adaptive video methods' own rules may keep one-frame images or small videos whole: they run at a ratio
    budget = {} if info.adaptive and not info.video else {"ratio": 0.25}
    compressor = vtc.build(method, **budget, **EXTRA.get(method, {}))
    compressed = compress_by_hand(ref, inputs, owners, compressor)
    substitute = "received" if "cls_attn" in info.signals else None
    with torch.no_grad(), vtc.apply(model, compressor, cls_substitute=substitute) as handle:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    ids = inputs["input_ids"]
    assert torch.equal(out[:, : ids.shape[1]], ids), "the caller's prompt comes back unchanged"
    for row, built in enumerate(hand_built(ref, inputs, owners, compressed)):
        assert out[row, ids.shape[1] :].tolist() == greedy_reference(ref, built, 4), f"row {row}"
    before, after = handle.stats[0]["before"], handle.stats[0]["after"]
    assert all(a < b for a, b in zip(after, before, strict=True))


def test_rows_keep_different_counts():
    model = tiny_qwen("qwen2_vl")
    inputs, _ = case(model, "qwen2_vl", "batch")
    with torch.no_grad(), vtc.apply(model, "random", ratio=0.25) as handle:
        out = model(**inputs)
    stats = handle.stats[0]
    assert (stats["image"]["before"], stats["image"]["after"]) == ([40, 4], [10, 1])
    assert (stats["video"]["before"], stats["video"]["after"]) == ([0, 32], [0, 8])
    assert stats["after"] == [10, 9]
    assert 19 <= out.logits.shape[1] <= 22  # both rows keep 19 tokens; padding columns may stay


@pytest.mark.parametrize("version", VERSIONS)
def test_cache_continuation_uses_pruned_rope_deltas(version):
    """A forward with the cache, then one more token without position ids: it lands at max(kept) + 1."""
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, owners = case(model, version, "image")
    compressor = vtc.build("divprune", ratio=0.25)
    compressed = compress_by_hand(ref, inputs, owners, compressor)
    with torch.no_grad(), vtc.apply(model, compressor):
        first = model(**inputs, use_cache=True)
        token = first.logits[:, -1:].argmax(-1)
        cache = {cache_name(model.forward): cache_of(first)}
        second = model(input_ids=token, use_cache=True, **cache).logits[0, -1]
        deltas = model.model.rope_deltas.tolist()  # the offset decoding used (remove() puts the old one back)
    built = hand_built(ref, inputs, owners, compressed)[0]
    top = int(built["positions"].max())
    assert deltas == [[top + 1 - len(built["embeds"])]]
    built["embeds"] = torch.cat([built["embeds"], ref.get_input_embeddings()(token[0]).detach()])
    built["positions"] = torch.cat([built["positions"], torch.full((3, 1), top + 1)], dim=1)
    built["visual"] = torch.cat([built["visual"], torch.tensor([False])])
    assert torch.allclose(second, reference_logits(ref, built)[-1], atol=1e-5)


@pytest.mark.parametrize("version", VERSIONS)
def test_generate_positions_unpadded(version):
    """Batch 1, no padding: the prefill sees a compact text row and the kept M-RoPE columns; tokens match."""
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, owners = case(model, version, "video")
    compressor = vtc.build("divprune", ratio=0.25)
    built = hand_built(ref, inputs, owners, compress_by_hand(ref, inputs, owners, compressor))[0]
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"]), with_kwargs=True
    )
    with torch.no_grad(), vtc.apply(model, compressor):
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    hook.remove()
    length = len(built["embeds"])
    assert seen[0].shape == (4, 1, length)
    assert torch.equal(seen[0][0, 0], torch.arange(length))
    assert torch.equal(seen[0][1:, 0], built["positions"])
    assert torch.equal(seen[1][1:, 0, -1], built["positions"][:, -1] + 1)
    assert out[0, inputs["input_ids"].shape[1] :].tolist() == greedy_reference(ref, built, 4)


@pytest.mark.parametrize("version", VERSIONS)
def test_remove_restores_the_model(version):
    model, ref = tiny_qwen(version), tiny_qwen(version)
    inputs, _ = case(model, version, "batch")
    handle = vtc.apply(model, "pool", ratio=0.25)
    with torch.no_grad():
        pruned = model(**inputs).logits
    handle.remove()
    handle.remove()  # idempotent
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    with torch.no_grad():
        after = model(**inputs).logits
        expected = ref(**inputs).logits
    assert pruned.shape[1] < inputs["input_ids"].shape[1]
    assert torch.equal(after, expected)
    assert all(block.attn.config is model.model.visual.config for block in model.model.visual.blocks)


def test_labels_follow_the_rewrite_and_gradients_reach_the_tower():
    model, ref = tiny_qwen("qwen3_vl"), tiny_qwen("qwen3_vl")
    inputs, _ = case(model, "qwen3_vl", "batch", "right")
    ids = inputs["input_ids"]
    labels = ids.masked_fill((ids == IMAGE) | (ids == VIDEO) | (inputs["attention_mask"] == 0), -100)
    expected = ref(**inputs, labels=labels).loss
    with vtc.apply(model, "uniform", ratio=1.0):
        same = model(**inputs, labels=labels).loss
    with vtc.apply(model, "tome", ratio=0.25):
        pruned = model(**inputs, labels=labels).loss
    assert torch.allclose(same, expected, atol=1e-5)
    pruned.backward()
    assert torch.isfinite(pruned) and model.model.visual.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_text_only_calls_pass_through():
    model, ref = tiny_qwen("qwen3_vl"), tiny_qwen("qwen3_vl")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad(), vtc.apply(model, "divprune", ratio=0.1) as handle:
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    assert handle.stats == []


@pytest.mark.parametrize("version", VERSIONS)
def test_errors(version):
    model = tiny_qwen(version)
    inputs, _ = case(model, version, "image")
    with pytest.raises(ValueError, match=r"cls_attention: needs \[CLS\] attention.*cls_substitute='received'") as e:
        vtc.apply(model, "cls_attention", ratio=0.5)
    working = str(e.value).split("without cls_attn: ")[1]
    assert "divprune" in working and "tome" in working and "visionzip" not in working
    assert "hiprune (attention='received')" in working
    with vtc.apply(model, "hiprune", ratio=0.5, layers=(1, 2)), torch.no_grad():
        model(**inputs)  # asks for received attention itself: no substitute needed
    with vtc.apply(model, "divprune", ratio=0.5):
        ids = inputs["input_ids"].clone()
        ids[0, (ids[0] == IMAGE).nonzero()[0, 0]] = 1  # one image placeholder fewer than the grid gives
        for types in (inputs["mm_token_type_ids"], type_ids(ids)):
            with pytest.raises(ValueError, match=r"23 image placeholder tokens \(id 100\) for images that give 24"):
                model(**{**inputs, "input_ids": ids, "mm_token_type_ids": types})
        with pytest.raises(ValueError, match=r"mm_token_type_ids: .* needs it"):
            model(**{k: v for k, v in inputs.items() if k != "mm_token_type_ids"})
    with pytest.raises(ValueError, match=rf"visionzip: reads encoder layer\(s\) \[5\], but the {version} vision tower"):
        vtc.apply(model, "visionzip", ratio=0.5, layers=(5,), cls_substitute="received")
