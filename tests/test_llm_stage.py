"""The LLM stage (fastv, pyramiddrop) and chains, on tiny stock LLaVA (4 LLM layers) and Qwen2-VL.

References never go through vtc.models.llm_stage: the selection is checked against the eager attention
map of the unpatched model, the pruned prefill against a hand-run loop over the decoder layers (layers
<= K on the whole sequence, then the kept columns with position embeddings computed for their own
positions), and cached decoding against no-cache forwards on the same kept columns.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import pytest
import torch
from tiny_models import CLIP, IMAGE_TOKEN, TEXT_SIZES, left_pad, prompt
from transformers import LlavaConfig, LlavaForConditionalGeneration

import vtc
from vtc.core.selection import Selection, assemble
from vtc.core.types import Compressed
from vtc.models.calls import CACHE_NAMES, cache_of

TOKENS = 64
DEPTH = 4


def llava(seed: int = 0, attn: str = "sdpa") -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    text = dict(model_type="llama", **{**TEXT_SIZES, "num_hidden_layers": DEPTH})
    config = LlavaConfig(vision_config=CLIP, text_config=text, image_token_id=IMAGE_TOKEN, image_seq_length=TOKENS)
    config.text_config._attn_implementation = attn
    return LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))


def batch_two(pixels: torch.Tensor):
    """Row 0: two images; row 1: one image and a longer question (left padding): rows drop different counts."""
    rows = [prompt(2, TOKENS, [1, 7, 8], [9, 10]), prompt(1, TOKENS, [1, 7], [11, 12, 13, 14, 15])]
    ids, mask = left_pad(rows)
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}


def single(pixels: torch.Tensor):
    ids = torch.tensor([prompt(1, TOKENS, [1, 7, 8], [9, 10, 11])])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels[:1]}


def llm_entries(handle) -> list[dict]:
    return [e for e in handle.stats[-1]["stages"] if e["stage"] == "llm"]


def last_query_attention(model, inputs, layer: int) -> torch.Tensor:
    """``[B, L]``: the eager attention map of the unpatched model at ``layer``, last row, mean over heads."""
    model.model.language_model.config._attn_implementation = "eager"
    for block in model.model.language_model.layers:
        block.self_attn.config._attn_implementation = "eager"
    with torch.no_grad():
        maps = model(**inputs, output_attentions=True).attentions[layer]
    return maps[:, :, -1].mean(1)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_fastv_keeps_the_most_attended_visual_tokens(pixels, ratio):
    model, ref = llava(), llava(attn="eager")
    inputs = batch_two(pixels)
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=ratio, layer=1) as handle:
        model(**inputs)
    (entry,) = llm_entries(handle)
    scores = last_query_attention(ref, inputs, layer=1)
    visual = inputs["input_ids"] == IMAGE_TOKEN
    for row in range(2):
        cols = visual[row].nonzero()[:, 0]
        k = round(ratio * cols.numel())
        want = cols[torch.sort(scores[row, cols], descending=True, stable=True).indices[:k]].sort().values
        assert entry["kept"][row] == want.tolist(), f"row {row}"
    assert entry["before"] == [2 * TOKENS, TOKENS]
    assert entry["after"] == [round(ratio * 2 * TOKENS), round(ratio * TOKENS)]


def test_layers_up_to_k_are_the_unpatched_model(pixels):
    model, ref = llava(), llava()
    inputs = batch_two(pixels)
    seen = []
    hook = model.model.language_model.layers[2].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    with torch.no_grad():
        want = ref(**inputs, output_hidden_states=True).hidden_states
        with vtc.apply(model, "fastv", ratio=0.25, layer=1) as handle:
            got = model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    for i in range(2):  # embeddings, layer 0
        assert torch.equal(got[i], want[i]), f"hidden state {i}"
    # layer K = 1 runs on the whole sequence; output_hidden_states may record its output before or after the drop
    pruned = handle.llm.prefill_cols[1]
    if got[2].shape == want[2].shape:
        assert torch.equal(got[2], want[2])
    else:
        (entry,) = llm_entries(handle)
        ids = inputs["input_ids"]
        for row in range(2):
            alive = pruned.alive[row]
            kept = torch.tensor(entry["kept"][row])
            keep = inputs["attention_mask"][row].bool() & (ids[row] != IMAGE_TOKEN) | torch.isin(
                torch.arange(ids.shape[1]), kept
            )
            assert (
                pruned.cols[row][alive & inputs["attention_mask"][row].bool()[pruned.cols[row]]].tolist()
                == keep.nonzero()[:, 0].tolist()
            )
            assert torch.equal(got[2][row][alive], want[2][row, pruned.cols[row][alive]])
    # row 0 drops 96 of 128 visual tokens, row 1 drops 48 of 64: the batch is as wide as row 1 needs
    assert seen[0][1] == inputs["input_ids"].shape[1] - 48


def hand_pruned_logits(ref, inputs, layer: int, kept: list[int]) -> torch.Tensor:
    """Batch 1, no padding: run the decoder layers by hand, keeping ``kept`` visual columns after ``layer``."""
    lm = ref.model.language_model
    ids = inputs["input_ids"]
    with torch.no_grad():
        embeds = ref.model.get_input_embeddings()(ids)
        feats = ref.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        embeds[ids == IMAGE_TOKEN] = torch.cat(list(feats))
        positions = torch.arange(ids.shape[1])[None]
        hidden = embeds
        cols = torch.arange(ids.shape[1])
        for i, block in enumerate(lm.layers):
            rope = lm.rotary_emb(hidden, positions[:, cols])
            hidden = block(hidden, attention_mask=None, position_embeddings=rope, position_ids=positions[:, cols])
            if i == layer:
                keep = (ids[0] != IMAGE_TOKEN) | torch.isin(torch.arange(ids.shape[1]), torch.tensor(kept))
                cols = keep.nonzero()[:, 0]
                hidden = hidden[:, cols]
        return ref.lm_head(lm.norm(hidden))[0]


def test_pruned_prefill_matches_hand_run_layers(pixels):
    model, ref = llava(), llava()
    inputs = single(pixels)
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=0.25, layer=1) as handle:
        got = model(**inputs).logits[0]
    (entry,) = llm_entries(handle)
    want = hand_pruned_logits(ref, inputs, 1, entry["kept"][0])
    assert got.shape == want.shape == (inputs["input_ids"].shape[1] - 48, got.shape[-1])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


class Pinned:
    """Stands in for an LLM stage's compressor: keeps, after stage layer ``s``, exactly the prompt columns
    ``kept[s][row]`` that a cached run chose, so that no-cache forwards can be compared with that run.

    The stage hands it each row's visual tokens in column order: at the first stage layer all of them
    (``visual[row]``, the prompt's visual columns), after that the ones the stage before kept.
    """

    def __init__(self, compressor, visual: list[list[int]], kept: list[list[list[int]]]) -> None:
        self.info, self.config, self.budget = compressor.info, compressor.config, compressor.budget
        self.visual, self.kept, self.calls = visual, kept, 0

    def __call__(self, tokens):
        stage = self.calls % len(self.kept)
        self.calls += 1
        seen = self.visual if stage == 0 else self.kept[stage - 1]
        rows = [b for b in range(len(seen)) if seen[b]]
        picks = [Selection.keep(torch.tensor([seen[b].index(c) for c in self.kept[stage][b]]), len(seen[b]))
                 for b in rows]
        return assemble(tokens, picks, "pinned")


@contextmanager
def pinned(handle, input_ids: torch.Tensor, kept: list[list[list[int]]]):
    """The handle's LLM stage keeps the columns ``kept`` (per stage, per row) while the block runs."""
    stage = handle.llm
    visual = torch.isin(input_ids, torch.tensor(stage.visual_ids))
    original = stage.compressor
    stage.compressor = Pinned(original, [row.nonzero()[:, 0].tolist() for row in visual], kept)
    try:
        yield
    finally:
        stage.compressor = original


def no_cache_greedy(model, handle, inputs, steps: int, kept: list[list[list[int]]], suppress=()) -> torch.Tensor:
    """Greedy tokens from full no-cache forwards of prompt + tokens so far, the kept columns pinned."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    out = []
    with pinned(handle, ids, kept):
        for _ in range(steps):
            with torch.no_grad():
                logits = model(**{**inputs, "input_ids": ids, "attention_mask": mask}, use_cache=False).logits
            logits[:, -1, list(suppress)] = -torch.inf
            token = logits[:, -1].argmax(-1, keepdim=True)
            out.append(token)
            ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
    return torch.cat(out, 1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("method", "kwargs"), [("fastv", {"layer": 1}), ("pyramiddrop", {"layers": (0, 2)})])
def test_generate_with_cache_equals_no_cache_reference(pixels, attn, method, kwargs):
    model = llava(attn=attn)
    inputs = batch_two(pixels)
    with torch.no_grad(), vtc.apply(model, method, ratio=0.5, **kwargs) as handle:
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        kept = [e["kept"] for e in llm_entries(handle)]
        assert len(kept) == len(model_layers(method, kwargs))
        want = no_cache_greedy(model, handle, inputs, 5, kept)
    width = inputs["input_ids"].shape[1]
    assert torch.equal(out[:, :width], inputs["input_ids"])
    assert torch.equal(out[:, width:], want)


def takes_cache_as(model, name: str) -> None:
    """Skip unless this transformers release takes the KV cache as ``name`` (``cache`` from 5.24; the
    deprecated ``past_key_values`` is still accepted there)."""
    if name not in inspect.signature(model.forward).parameters and name == "cache":
        pytest.skip("this transformers release has no cache= argument (added in 5.24)")


@pytest.mark.parametrize("name", CACHE_NAMES)
def test_decode_steps_take_the_cache_under_either_name(pixels, name):
    """A hand-run cached decode, the cache passed as ``name``, continues the pruned prefill as generate does."""
    model = llava()
    takes_cache_as(model, name)
    inputs = single(pixels)
    width = inputs["input_ids"].shape[1]
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=0.5, layer=1):
        want = model.generate(**inputs, max_new_tokens=3, do_sample=False)[:, width:]
        out = model(**inputs, use_cache=True)
        mask, tokens = inputs["attention_mask"], []
        for _ in range(3):
            token = out.logits[:, -1:].argmax(-1)
            tokens.append(token)
            mask = torch.cat([mask, torch.ones_like(token)], 1)
            out = model(input_ids=token, attention_mask=mask, use_cache=True, **{name: cache_of(out)})
    assert torch.equal(torch.cat(tokens, 1), want)


@pytest.mark.parametrize("name", CACHE_NAMES)
def test_pixels_with_a_filled_cache_are_refused_under_either_name(pixels, name):
    model = llava()
    takes_cache_as(model, name)
    inputs = single(pixels)
    with torch.no_grad(), vtc.apply(model, "divprune", ratio=0.5):
        cache = cache_of(model(**inputs, use_cache=True))
        with pytest.raises(ValueError, match="only accepted at prefill"):
            model(**inputs, **{name: cache})


def model_layers(method: str, kwargs: dict) -> tuple[int, ...]:
    return (kwargs["layer"],) if method == "fastv" else kwargs["layers"]


def test_pyramiddrop_keeps_a_pyramid(pixels):
    model = llava()
    inputs = batch_two(pixels)
    widths = {}
    hooks = [
        model.model.language_model.layers[i].register_forward_pre_hook(
            lambda m, args, i=i: widths.setdefault(i, args[0].shape[1]) and None
        )
        for i in range(DEPTH)
    ]
    with torch.no_grad(), vtc.apply(model, "pyramiddrop", ratio=0.5, layers=(0, 1, 2)) as handle:
        model(**inputs)
    for hook in hooks:
        hook.remove()
    entries = llm_entries(handle)
    assert [e["after"] for e in entries] == [[64, 32], [32, 16], [16, 8]]
    assert [e["before"] for e in entries[1:]] == [e["after"] for e in entries[:-1]]
    full = inputs["input_ids"].shape[1]
    assert [widths[i] for i in range(DEPTH)] == [full, full - 32, full - 48, full - 56]  # row 1 sets the width
    for earlier, later in zip(entries, entries[1:], strict=False):
        for row in range(2):
            assert set(later["kept"][row]) <= set(earlier["kept"][row])


def test_keep_all_chains_equal_unpatched(pixels):
    model, ref = llava(), llava()
    inputs = batch_two(pixels)
    with torch.no_grad():
        want = ref(**inputs).logits
        for chain in (
            "fastv",
            [("tome", {"r": 0}), ("divprune", {"ratio": 1.0}), ("fastv", {"ratio": 1.0, "layer": 1})],
            [("uniform", {"ratio": 1.0}), ("pyramiddrop", {"ratio": 1.0, "layers": (0, 2)})],
        ):
            with vtc.apply(model, chain, **({"ratio": 1.0} if chain == "fastv" else {})) as handle:
                got = model(**inputs).logits
            assert torch.equal(got, want), chain
            assert all(e["before"] == e["after"] for e in handle.stats[-1]["stages"])


def test_chain_records_tokens_per_stage(pixels):
    model = llava()
    inputs = batch_two(pixels)
    chain = [("tome", {"r": 8}), ("divprune", {"ratio": 0.5}), ("fastv", {"ratio": 0.5, "layer": 1})]
    with torch.no_grad(), vtc.apply(model, chain) as handle:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
    stats = handle.stats[-1]
    assert stats["method"] == "tome_encoder+divprune+fastv"
    stages = [(e["stage"], e["before"], e["after"]) for e in stats["stages"]]
    # CLIP has 3 blocks and LLaVA reads block 1's output: blocks 0 and 1 each merge r = 8 per image before it
    assert stages == [
        ("encoder", [128, 64], [96, 48]),
        ("projector", [96, 48], [48, 24]),
        ("llm", [48, 24], [24, 12]),
    ]
    assert stats["before"] == [128, 64] and stats["after"] == [48, 24]


def test_encoder_stage_feeds_the_llm_its_merged_tokens(pixels):
    """The LLM input: each merged token at its representative's placeholder, text around it unchanged."""
    from vtc.models.vit import patch_vit

    model, ref = llava(), llava()
    inputs = single(pixels)
    with torch.no_grad():
        with vtc.apply(model, "tome", r=8) as handle:
            got = model(**inputs).logits[0]
        with patch_vit(ref.model.vision_tower, "tome", r=8) as tower:
            feats = ref.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]
            snapshot = tower.merging.snapshots[1]  # block 1's output is LLaVA's layer -2
        reps = snapshot.own[0, 1:] - 1  # [CLS] dropped
        ids = inputs["input_ids"][0]
        placeholders = (ids == IMAGE_TOKEN).nonzero()[:, 0]
        keep = ids != IMAGE_TOKEN
        keep[placeholders[reps]] = True
        embeds = ref.model.get_input_embeddings()(ids)
        embeds[placeholders[reps]] = feats
        cols = keep.nonzero()[:, 0]
        want = ref.model.language_model(inputs_embeds=embeds[cols][None], position_ids=cols[None]).last_hidden_state
        want = ref.lm_head(want)[0]
    assert handle.stats[-1]["after"] == [48]  # blocks 0 and 1 merge 8 each (the paper's placement)
    items = handle.stats[-1]["image"]["items"][0]
    assert items["grid"] == [1, 8, 8] and items["assign"].shape == (TOKENS,)
    sizes = torch.bincount(items["assign"])
    assert sizes.sum() == TOKENS and torch.equal(sizes.float(), snapshot.sizes[0, 1:])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compose_maps_through_both_stages():
    """Hand-computed: 6 source tokens merged into 4 slots, then 2 of those kept."""
    from vtc.models.patch import compose

    first = Compressed(
        torch.zeros(1, 4, 2),
        torch.ones(1, 4, dtype=torch.bool),
        torch.tensor([[0, 1, 3, 5]]),
        torch.tensor([[0, 1, 1, 2, 3, 3]]),
        torch.tensor([[1, 2, 1, 2]]),
    )
    second = Compressed(
        torch.ones(1, 2, 2),
        torch.ones(1, 2, dtype=torch.bool),
        torch.tensor([[1, 3]]),
        torch.tensor([[-1, 0, -1, 1]]),
        torch.tensor([[1, 1]]),
    )
    out = compose(first, second)
    assert out.index.tolist() == [[1, 5]]
    assert out.assign.tolist() == [[-1, 0, 0, -1, 1, 1]]
    assert out.sizes.tolist() == [[2, 2]]


def test_llm_stage_errors(pixels):
    model = llava()
    with pytest.raises(ValueError, match="use indices <= 2"):
        vtc.apply(model, "fastv", ratio=0.5, layer=3)
    with pytest.raises(ValueError, match="two projector-stage methods"):
        vtc.apply(model, [("divprune", {"ratio": 0.5}), ("random", {"ratio": 0.5})])
    with pytest.raises(ValueError, match="out of pipeline order"):
        vtc.apply(model, [("fastv", {"ratio": 0.5}), ("divprune", {"ratio": 0.5})])
    with pytest.raises(ValueError, match="strictly increasing"):
        vtc.build("pyramiddrop", ratio=0.5, layers=(2, 1))
    inputs = single(pixels)
    with vtc.apply(model, "fastv", ratio=0.5, layer=1), pytest.raises(ValueError, match="labels"):
        model(**inputs, labels=inputs["input_ids"])
    assert getattr(model, "_vtc_patch", None) is None
    with torch.no_grad():
        model(**inputs)  # the model is whole again


def test_remove_restores_attention_and_hooks(pixels):
    model, ref = llava(), llava()
    inputs = batch_two(pixels)
    handle = vtc.apply(model, "pyramiddrop", ratio=0.5, layers=(0, 2))
    handle.remove()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref(**inputs).logits)
    for block in model.model.language_model.layers:
        assert block.self_attn.config._attn_implementation == "sdpa"
        assert not block._forward_hooks and not block._forward_pre_hooks


# -- Qwen2-VL / Qwen2.5-VL: M-RoPE positions, images and a video in one batch ------------------------


@pytest.mark.parametrize("version", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_generate_with_cache_equals_no_cache_reference(version):
    from test_apply_qwen import case
    from tiny_qwen import END, IMAGE, START, VIDEO, tiny_qwen

    model = tiny_qwen(version, text_layers=DEPTH)
    special = [IMAGE, VIDEO, START, END]  # random weights: keep generated text free of media tokens
    inputs, _ = case(model, version, "batch")
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=0.25, layer=1) as handle:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False, suppress_tokens=special)
        (entry,) = llm_entries(handle)
        ids = inputs["input_ids"]
        visual = (ids == IMAGE) | (ids == VIDEO)
        assert entry["before"] == visual.sum(1).tolist()
        assert entry["after"] == [round(0.25 * n) for n in entry["before"]]
        want, steps = [], inputs
        with pinned(handle, ids, [entry["kept"]]):
            for _ in range(4):  # no cache: the model computes the M-RoPE positions of the whole sequence itself
                logits = model(**steps, use_cache=False).logits[:, -1]
                logits[:, special] = -torch.inf
                token = logits.argmax(-1, keepdim=True)
                want.append(token)
                steps = dict(
                    steps,
                    input_ids=torch.cat([steps["input_ids"], token], 1),
                    attention_mask=torch.cat([steps["attention_mask"], torch.ones_like(token)], 1),
                    mm_token_type_ids=torch.cat([steps["mm_token_type_ids"], torch.zeros_like(token).int()], 1),
                )
    assert torch.equal(out[:, ids.shape[1] :], torch.cat(want, 1))


def test_qwen_keeps_original_mrope_positions():
    """After the drop, layer K+1's rotary embeddings are those of the kept tokens' own M-RoPE positions."""
    from test_apply_qwen import case, rope_positions
    from tiny_qwen import tiny_qwen

    model, ref = tiny_qwen("qwen2_vl", text_layers=DEPTH), tiny_qwen("qwen2_vl", text_layers=DEPTH)
    inputs, _ = case(model, "qwen2_vl", "video")
    seen = {}
    lm = model.model.language_model
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=0.25, layer=1) as handle:
        hook = lm.layers[2].register_forward_pre_hook(  # after vtc's own hook: sees what the layer gets
            lambda m, args, kwargs: seen.update(cos=kwargs["position_embeddings"][0]), with_kwargs=True
        )
        model(**inputs)
    hook.remove()
    (entry,) = llm_entries(handle)
    ids = inputs["input_ids"][0]
    keep = (inputs["mm_token_type_ids"][0] == 0) | torch.isin(
        torch.arange(ids.shape[0]), torch.tensor(entry["kept"][0])
    )
    positions = rope_positions(ref, inputs)[:, :, keep]
    hidden = torch.zeros(1, int(keep.sum()), 64)
    want, _ = ref.model.language_model.rotary_emb(hidden, positions)
    assert seen["cos"].shape == want.shape
    torch.testing.assert_close(seen["cos"], want, atol=1e-6, rtol=0)


def test_qwen3_refuses_drops_before_deepstack_ends():
    from tiny_qwen import tiny_qwen

    model = tiny_qwen("qwen3_vl", text_layers=DEPTH)
    with pytest.raises(ValueError, match="deepstack"):
        vtc.apply(model, "fastv", ratio=0.5, layer=1)
    with vtc.apply(model, "fastv", ratio=0.5, layer=2):
        pass


# -- the LLaVA-NeXT family: images (AnyRes) and videos --------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "modality"),
    [
        ("llava_next", "image"),
        ("llava_onevision", "image"),
        ("llava_onevision", "video"),
        ("llava_next_video", "video"),
    ],
)
def test_llava_next_family_generate_with_cache_equals_no_cache_reference(model_type, modality):
    from test_apply_llava_next import TOKEN_IDS, batch
    from tiny_llava_next import tiny

    model = tiny(model_type)  # 2 LLM layers: drop after layer 0
    ids, mask, media = batch(model_type, modality)
    inputs = {"input_ids": ids, "attention_mask": mask, **media}
    with torch.no_grad(), vtc.apply(model, "fastv", ratio=0.5, layer=0) as handle:
        media_ids = list(TOKEN_IDS.values())  # random weights: keep generated text free of media tokens
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, suppress_tokens=media_ids)
        (entry,) = llm_entries(handle)
        assert entry["before"] == (ids == TOKEN_IDS[modality]).sum(1).tolist()
        assert entry["after"] == [(n + 1) // 2 for n in entry["before"]]  # half, rounded half up
        want = no_cache_greedy(model, handle, inputs, 3, [entry["kept"]], media_ids)
    assert torch.equal(out[:, ids.shape[1] :], want)


def test_encoder_stage_on_a_siglip_llava():
    """LLaVA with a SigLIP tower (no [CLS], features of every patch): tome merges inside it."""
    from tiny_llava_next import SIGLIP

    torch.manual_seed(0)
    text = dict(model_type="llama", **{**TEXT_SIZES, "num_hidden_layers": DEPTH})
    vision = dict(SIGLIP, image_size=112)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        image_seq_length=TOKENS,
        vision_feature_select_strategy="full",
    )
    model = LlavaForConditionalGeneration(config).eval()
    ids = torch.tensor([prompt(1, TOKENS, [1, 7], [9, 10])])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(1, 3, 112, 112)}
    chain = [("tome", {"r": 6}), ("fastv", {"ratio": 0.5, "layer": 1})]
    with torch.no_grad(), vtc.apply(model, chain) as handle:
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 2)
    stages = [(e["stage"], e["before"], e["after"]) for e in handle.stats[-1]["stages"]]
    assert stages == [("encoder", [64], [52]), ("llm", [52], [26])]  # 2 blocks before the feature layer


def test_encoder_stage_refused_where_unsupported():
    from tiny_qwen import tiny_qwen

    with pytest.raises(ValueError, match="encoder stage is not supported on qwen2_vl; it runs on llava"):
        vtc.apply(tiny_qwen("qwen2_vl"), "tome", r=4)
