"""``patch_vit``: ToMe hooks on tiny timm, open_clip and transformers ViTs (CPU, random weights)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from vtc.methods.tome_encoder import MergeState
from vtc.models.vit import SUPPORTED_TOWERS, patch_vit

IMAGE, PATCH, DEPTH = 64, 8, 3
GRID = IMAGE // PATCH  # 8 x 8 = 64 patches
DUPLICATES = ((2, 3), (9, 10))  # per sample: two adjacent patches made identical (one A, one B token)


@dataclass
class Case:
    """A tiny tower: the model to patch, its token output, and where its patch tokens start."""

    model: nn.Module
    tokens: Callable[[Tensor], Tensor]  # pixels -> output tokens [B, N, C]
    prefix: int  # protected tokens ([CLS], registers) in front of the patches
    dropped: int  # leading tokens the output leaves out (open_clip returns patch tokens only)
    positions: Tensor  # the learned position embedding (zeroed for the duplicate-token test)
    keys: Callable[[nn.Module, Tensor], Tensor]  # (block, block input) -> head-averaged keys [B, N, D]
    blocks: list[nn.Module]


def timm_keys(block: nn.Module, x: Tensor) -> Tensor:
    """timm ``Block``: norm1, then the key third of ``attn.qkv``, ``k_norm``, mean over heads."""
    attn = block.attn
    qkv = attn.qkv(block.norm1(x)).unflatten(-1, (3, attn.num_heads, attn.head_dim))
    return attn.k_norm(qkv[:, :, 1].transpose(1, 2)).mean(1)


def open_clip_keys(block: nn.Module, x: Tensor) -> Tensor:
    """open_clip ``ResidualAttentionBlock``: ln_1, then the key rows of ``attn.in_proj``, mean over heads."""
    attn, d = block.attn, block.attn.embed_dim
    k = nn.functional.linear(block.ln_1(x), attn.in_proj_weight[d : 2 * d], attn.in_proj_bias[d : 2 * d])
    return k.unflatten(-1, (attn.num_heads, -1)).mean(2)


def hf_keys(block: nn.Module, x: Tensor) -> Tensor:
    """transformers CLIP/SigLIP encoder layer: layer_norm1, then ``self_attn.k_proj``, mean over heads."""
    return block.self_attn.k_proj(block.layer_norm1(x)).unflatten(-1, (block.self_attn.num_heads, -1)).mean(2)


def timm_case(reg_tokens: int = 0, fused: bool = True) -> Case:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        depth=DEPTH,
        img_size=IMAGE,
        patch_size=PATCH,
        reg_tokens=reg_tokens,
    ).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    return Case(
        model=model,
        tokens=model.forward_features,
        prefix=1 + reg_tokens,
        dropped=0,
        positions=model.pos_embed,
        keys=timm_keys,
        blocks=list(model.blocks),
    )


def open_clip_case(full: bool = False) -> Case:
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    if full:
        vision = open_clip.model.CLIPVisionCfg(
            layers=DEPTH, width=64, head_width=16, image_size=IMAGE, patch_size=PATCH
        )
        text = open_clip.model.CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1)
        model = open_clip.model.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text).eval()
        visual = model.visual
    else:
        visual = open_clip.model.VisionTransformer(
            image_size=IMAGE, patch_size=PATCH, width=64, layers=DEPTH, heads=4, mlp_ratio=2.0, output_dim=32
        ).eval()
        model = visual
    visual.output_tokens = True
    return Case(
        model=model,
        tokens=lambda x: visual(x)[1],
        prefix=1,
        dropped=1,
        positions=visual.positional_embedding,
        keys=open_clip_keys,
        blocks=list(visual.transformer.resblocks),
    )


def hf_case(kind: str, attn: str) -> Case:
    transformers = pytest.importorskip("transformers")
    model_cls, config_cls = {
        "clip": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig),
        "siglip": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig),
    }[kind]
    config = config_cls(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=DEPTH,
        num_attention_heads=4,
        image_size=IMAGE,
        patch_size=PATCH,
        attn_implementation=attn,
    )
    torch.manual_seed(0)
    model = model_cls(config).eval()
    assert model.config._attn_implementation == attn
    inner = getattr(model, "vision_model", model)
    return Case(
        model=model,
        tokens=lambda x: model(pixel_values=x).last_hidden_state,
        prefix=int(kind == "clip"),
        dropped=0,
        positions=inner.embeddings.position_embedding.weight,
        keys=hf_keys,
        blocks=list(inner.encoder.layers),
    )


FACTORIES: dict[str, Callable[[], Case]] = {
    "timm": timm_case,
    "timm-eager": lambda: timm_case(fused=False),
    "timm-registers": lambda: timm_case(reg_tokens=3),
    "open_clip": open_clip_case,
    "open_clip-CLIP": lambda: open_clip_case(full=True),
    "hf-clip-eager": lambda: hf_case("clip", "eager"),
    "hf-clip-sdpa": lambda: hf_case("clip", "sdpa"),
    "hf-siglip-eager": lambda: hf_case("siglip", "eager"),
    "hf-siglip-sdpa": lambda: hf_case("siglip", "sdpa"),
}

# tokens entering each block, by hand: N = 64 patches + prefix; a round merges min(r, (N - prefix) // 2)
TOKENS_R8 = {0: [64, 56, 48], 1: [65, 57, 49], 4: [68, 60, 52]}
TOKENS_R40 = {0: [64, 32, 16], 1: [65, 33, 17], 4: [68, 36, 20]}  # capped at half each round
TOKENS_LIST = {0: [64, 60, 60], 1: [65, 61, 61], 4: [68, 64, 64]}  # r = [4, 0, 30]: the last r merges nothing


@pytest.fixture(params=list(FACTORIES))
def case(request: pytest.FixtureRequest) -> Case:
    return FACTORIES[request.param]()


def pixels(batch: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def run(case: Case, x: Tensor) -> Tensor:
    with torch.no_grad():
        return case.tokens(x)


@pytest.mark.parametrize("placement", ["block", "between"])
def test_r_zero_leaves_outputs_unchanged(case: Case, placement: str) -> None:
    """At r=0 the hooks, and the "block" placement's wrapper of every block, equal the unpatched tower bit for bit."""
    x = pixels()
    reference = run(case, x)
    with patch_vit(case.model, "tome", r=0, placement=placement) as handle:
        out = run(case, x)
    assert torch.equal(out, reference)
    assert handle.stats == [{"stage": "encoder", "method": "tome_encoder", "tokens": [64 + case.prefix] * DEPTH}]


@pytest.mark.parametrize(("r", "table"), [(8, TOKENS_R8), (40, TOKENS_R40), ([4, 0, 30], TOKENS_LIST)])
def test_token_counts_follow_the_schedule(case: Case, r: int | list[int], table: dict[int, list[int]]) -> None:
    want = table[case.prefix]
    with patch_vit(case.model, "tome", r=r, placement="between") as handle:
        out = run(case, pixels())
        run(case, pixels(batch=1, seed=1))
    assert [s["tokens"] for s in handle.stats] == [want, want]  # one entry per tower call
    assert out.shape[:2] == (2, want[-1] - case.dropped)
    snapshots = handle.merging.snapshots
    for i, tokens in enumerate(want):
        assert snapshots[i].sizes.shape == (1, tokens)
        assert snapshots[i].sizes.sum().item() == 64 + case.prefix
        assert snapshots[i].own[0, : case.prefix].tolist() == list(range(case.prefix))  # protected stay


@pytest.mark.parametrize("placement", ["block", "between"])
def test_block_placement_merges_in_every_block(case: Case, placement: str) -> None:
    """The paper's placement: every block, the last one too, merges r tokens before its MLP (a ViT-B/16 at r=8
    ends with 197 - 12*8 tokens); between blocks, the last block merges nothing."""
    n = 64 + case.prefix
    with patch_vit(case.model, "tome", r=8, placement=placement) as handle:
        out = run(case, pixels())
    rounds = DEPTH if placement == "block" else DEPTH - 1
    assert handle.stats[0]["tokens"] == [n - 8 * i for i in range(DEPTH)]  # tokens entering each block
    assert out.shape[1] == n - 8 * rounds - case.dropped
    merging = handle.merging
    for i in range(DEPTH):
        assert merging.inputs[i].sizes.shape[1] == n - 8 * i
        assert merging.snapshots[i].sizes.shape[1] == n - 8 * (i + 1 if placement == "block" else i)


def test_block_placement_runs_the_mlp_on_the_merged_tokens() -> None:
    """CLIP block by block: the MLP sees (attention residual) merged on this block's keys; the output is that
    plus the MLP of it."""
    case = hf_case("clip", "sdpa")
    seen: dict[str, list[Tensor]] = {"in": [], "attn": [], "mlp_in": [], "out": []}
    hooks = []
    for block in case.blocks:
        hooks.append(block.register_forward_pre_hook(lambda m, a, k: seen["in"].append(a[0]), with_kwargs=True))
        hooks.append(block.self_attn.register_forward_hook(lambda m, a, out: seen["attn"].append(out[0])))
        hooks.append(block.layer_norm2.register_forward_pre_hook(lambda m, a: seen["mlp_in"].append(a[0])))
        hooks.append(block.register_forward_hook(lambda m, a, out: seen["out"].append(out)))
    schedule = [5, 30, 7]
    with patch_vit(case.model, "tome", r=schedule), torch.no_grad():
        run(case, pixels())
    for hook in hooks:
        hook.remove()
    state = MergeState(2, 64 + case.prefix, case.prefix, torch.device("cpu"))
    for i, block in enumerate(case.blocks):
        with torch.no_grad():
            merged = state.merge(seen["in"][i] + seen["attn"][i], case.keys(block, seen["in"][i]), schedule[i])
            torch.testing.assert_close(seen["mlp_in"][i], merged)
            torch.testing.assert_close(seen["out"][i], merged + block.mlp(block.layer_norm2(merged)))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_hidden_states_shrink_block_by_block(kind: str) -> None:
    """``hidden_states``: the embeddings, then each block's output with the tokens that entered it."""
    case = hf_case(kind, "sdpa")
    with patch_vit(case.model, "tome", r=8, placement="between"), torch.no_grad():
        out = case.model(pixel_values=pixels(), output_hidden_states=True)
    want = TOKENS_R8[case.prefix]
    assert [h.shape[1] for h in out.hidden_states] == [want[0], *want]
    assert out.last_hidden_state.shape == (2, want[-1], 64)


def test_merges_use_previous_block_keys(case: Case) -> None:
    """Block i's input is block i-1's output merged by r[i-1] on block i-1's head-averaged keys."""
    seen: list[list[Tensor]] = []  # [input as the block got it, output] of each block

    def before(block: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append([args[0] if args else kwargs["hidden_states"]])

    def after(block: nn.Module, args: tuple, output: Tensor) -> None:
        seen[-1].append(output[0] if isinstance(output, tuple) else output)

    schedule = [5, 30, 7]
    x = pixels()
    with patch_vit(case.model, "tome", r=schedule, placement="between") as handle:
        hooks = [b.register_forward_pre_hook(before, with_kwargs=True) for b in case.blocks]  # after vtc's
        hooks += [b.register_forward_hook(after) for b in case.blocks]
        run(case, x)
        for hook in hooks:
            hook.remove()
    assert len(seen) == DEPTH and seen[0][0].shape[1] == 64 + case.prefix
    state = MergeState(2, 64 + case.prefix, case.prefix, x.device)
    for i in range(1, DEPTH):
        (before_in, before_out), merged_in = seen[i - 1], seen[i][0]
        with torch.no_grad():
            expected = state.merge(before_out, case.keys(case.blocks[i - 1], before_in), schedule[i - 1])
        torch.testing.assert_close(merged_in, expected)
        assert torch.equal(handle.merging.snapshots[i].sizes, state.sizes)
        assert torch.equal(handle.merging.snapshots[i].sources, state.sources)


def test_remove_restores_and_double_patch_is_refused(case: Case) -> None:
    x = pixels()
    reference = run(case, x)
    handle = patch_vit(case.model, "tome", r=8)
    merged = run(case, x)
    assert merged.shape[1] < reference.shape[1]
    with pytest.raises(ValueError, match="already applied to this model"):
        patch_vit(case.model, "tome", r=2)
    handle.remove()
    assert torch.equal(run(case, x), reference)
    handle.remove()  # a second remove is a no-op
    with patch_vit(case.model, "tome", r=8):  # patching again after remove works
        assert torch.equal(run(case, x), merged)
    assert torch.equal(run(case, x), reference)
    assert not hasattr(case.model, "_vtc_patch")


def test_schedule_length_must_match_depth(case: Case) -> None:
    with pytest.raises(ValueError, match=f"^r: expected {DEPTH} values \\(one per block\\), got 2$"):
        patch_vit(case.model, "tome", r=[1, 2])
    assert not hasattr(case.model, "_vtc_patch")


def duplicated_pixels() -> Tensor:
    """Two images; in each, one pair of adjacent patches (an A and a B token) is identical."""
    x = pixels()
    for b, (src, dst) in enumerate(DUPLICATES):
        (ys, xs), (yd, xd) = (divmod(src, GRID), divmod(dst, GRID))
        x[b, :, yd * PATCH : (yd + 1) * PATCH, xd * PATCH : (xd + 1) * PATCH] = x[
            b, :, ys * PATCH : (ys + 1) * PATCH, xs * PATCH : (xs + 1) * PATCH
        ]
    return x


@pytest.mark.parametrize("placement", ["block", "between"])
@pytest.mark.parametrize("proportional", [True, False])
def test_proportional_attention_end_to_end(case: Case, proportional: bool, placement: str) -> None:
    """A merged pair of identical tokens with log(2) bias behaves exactly like the pair unmerged.

    Without position embeddings, identical patches stay identical through every block, so merging
    them after block 0 and adding ``log(size)`` to the attention logits must leave every other
    token's output unchanged; without the bias the pair draws half the attention and outputs move.
    """
    with torch.no_grad():
        case.positions.zero_()
    x = duplicated_pixels()
    reference = run(case, x)
    with patch_vit(case.model, "tome", r=[1, 0, 0], proportional=proportional, placement=placement) as handle:
        out = run(case, x)
    state = handle.merging.snapshots[0 if placement == "block" else 1]  # after the one merge
    n = 64 + case.prefix
    expected = []
    for b, pair in enumerate(DUPLICATES):
        tokens = {p + case.prefix for p in pair}
        gone = sorted(set(range(n)) - set(state.own[b].tolist()))
        assert len(gone) == 1 and gone[0] in tokens  # the identical pair, and only it, merged
        assert sorted(state.sizes[b].tolist())[-2:] == [1.0, 2.0]
        expected.append(torch.cat([reference[b, : gone[0] - case.dropped], reference[b, gone[0] - case.dropped + 1 :]]))
    expected = torch.stack(expected)
    if proportional:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    else:
        assert (out - expected).abs().max() > 1e-3


def single_head_attention(x: Tensor, weights: tuple[Tensor, Tensor, Tensor], bias: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d) + bias) v for ``x [B, N, C]``; ``bias [B, 1, 1, N]`` as from MergeState."""
    q, k, v = (x @ w for w in weights)
    logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias[:, 0]
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("proportional", [True, False])
def test_attention_bias_reproduces_duplicates(proportional: bool) -> None:
    """Hand-written attention: tokens with copies vs the merged tokens plus ``log(size)``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 8, generator=g, dtype=torch.float64)
    x[:, 2] = x[:, 4] = x[:, 3]  # A2 and A4 join B3 (size 3)
    x[0, 6] = x[0, 7]  # sample 0: A6 joins B7; sample 1: A8 joins B7
    x[1, 8] = x[1, 7]
    weights = tuple(torch.randn(8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    full = single_head_attention(x, weights)
    state = MergeState(2, 9, protected=1, device=x.device)
    merged = state.merge(x, x, 3)
    assert state.sizes.tolist() == [[1, 1, 3, 1, 2, 1], [1, 1, 3, 1, 1, 2]]
    assert state.own.tolist() == [[0, 1, 3, 5, 7, 8], [0, 1, 3, 5, 6, 7]]
    bias = state.attention_bias(torch.float64)
    assert bias.shape == (2, 1, 1, 6)
    out = single_head_attention(merged, weights, bias if proportional else None)
    expected = full.gather(1, state.own[..., None].expand(-1, -1, 8))
    if proportional:
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(out.gather(1, state.sources[..., None].expand(-1, -1, 8)), full)
    else:
        assert (out - expected).abs().max() > 1e-3


def test_open_clip_text_tower_is_untouched() -> None:
    case = open_clip_case(full=True)
    text = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = case.model.encode_text(text)
        with patch_vit(case.model, "tome", r=8) as handle:
            out = case.model.encode_text(text)
    assert torch.equal(out, reference) and handle.stats == []


def test_unsupported_models_are_refused() -> None:
    supported = re.escape(", ".join(SUPPORTED_TOWERS))
    with pytest.raises(ValueError, match=f"torch.nn.modules.linear.Linear; supported: {supported}$"):
        patch_vit(nn.Linear(4, 4), "tome", r=2)
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPTextConfig(
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=50,
        bos_token_id=0,
        eos_token_id=1,
    )
    with pytest.raises(ValueError, match=f"CLIPTextModel; supported: {supported}$"):
        patch_vit(transformers.CLIPTextModel(config), "tome", r=2)  # embeddings + encoder, but text


def test_patch_vit_runs_encoder_methods_only() -> None:
    with pytest.raises(ValueError, match="patch_vit runs encoder-stage methods \\(tome\\); 'random' runs at stage"):
        patch_vit(nn.Linear(4, 4), "random", ratio=0.5)
    with pytest.raises(ValueError, match="tome_encoder: runs inside the vision tower"):
        patch_vit(nn.Linear(4, 4), "tome", ratio=0.5)
