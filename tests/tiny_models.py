"""Tiny random-init VLMs built from configs (nothing can be downloaded), shared by the adapter tests."""

from __future__ import annotations

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN = 100
VOCAB = 128

CLIP = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=112,
    patch_size=14,
    projection_dim=32,
)
TEXT_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
)  # the tiny LLM shared by every tiny VLM of the tests
LLAMA = dict(model_type="llama", **TEXT_SIZES)


def tiny_llava(seed: int = 0) -> LlavaForConditionalGeneration:
    """LLaVA-1.5 shaped: CLIP (3 layers, 8x8 patches of 14 px on 112 px) + Llama (2 layers); 64 tokens/image."""
    torch.manual_seed(seed)
    config = LlavaConfig(vision_config=CLIP, text_config=LLAMA, image_token_id=IMAGE_TOKEN, image_seq_length=64)
    return LlavaForConditionalGeneration(config).eval()


def prompt(images: int, tokens_per_image: int, before: list[int], after: list[int]) -> list[int]:
    """Text ids, then ``images`` runs of placeholders separated by a token, then more text."""
    ids = list(before)
    for i in range(images):
        ids += [IMAGE_TOKEN] * tokens_per_image + ([5] if i < images - 1 else [])
    return ids + list(after)


def left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def tiny_llava_processor():
    """A LlavaProcessor with a word-level tokenizer whose ``<image>`` is id 100 and a 112 px CLIP preprocessor."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [f"w{i}" for i in range(IMAGE_TOKEN - 4)] + ["<image>"]
    words += [f"x{i}" for i in range(VOCAB - len(words))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", special=True, normalized=False)]})
    images = CLIPImageProcessor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112})
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def greedy_reference(ref, embeds, positions, steps):
    """No-cache greedy decoding: re-run the whole sequence each step, positions continuing from the last."""
    embed, out = ref.get_input_embeddings(), []
    for _ in range(steps):
        with torch.no_grad():
            logits = ref(
                inputs_embeds=embeds[None],
                position_ids=positions[None],
                attention_mask=torch.ones(1, len(positions), dtype=torch.long),
            ).logits[0, -1]
        token = int(logits.argmax())
        out.append(token)
        embeds = torch.cat([embeds, embed(torch.tensor([token])).detach()])
        positions = torch.cat([positions, positions[-1:] + 1])
    return out
