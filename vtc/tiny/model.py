"""The embedded tiny VLMs: configs, word-level tokenizer and processor (issue D).

Two models in stock transformers classes, so the adapters of :mod:`vtc.models` are what runs on them:

- ``vtc-tiny-llava``: ``LlavaForConditionalGeneration``, CLIP tower (4 blocks × 128, patch 16, 224 px →
  196 patch tokens + [CLS]) and a Llama LM (4 layers × 128). Images only.
- ``vtc-tiny-qwen2vl``: ``Qwen2VLForConditionalGeneration``, ViT (4 blocks × 128, patch 16, merge size 1
  so that each patch is one LLM token: 196 tokens per 224 px image; the stock 2×2 merge would need 784
  ViT patches per image, 4× the CPU cost) and a Qwen2 LM with M-RoPE. Video frames are resized to
  112 px, two frames per temporal patch: 16 frames → 8 × 49 = 392 tokens.

Both see the same token geometry: every visual token covers a 16-pixel cell of a 224-pixel image (a
32-pixel cell of a video frame).

The processor (:class:`TinyProcessor`) is called like a Hugging Face processor:
``processor(text=["<image> what colour is the star ?"], images=[img], return_tensors="pt")``, and it
expands ``<image>`` / ``<video>`` markers into placeholder runs. It needs neither torchvision nor a
network. Text is a lower-case word-level vocabulary learnt with ``tokenizers`` from the shapes world.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vtc.data import shapes

WEIGHTS = Path(__file__).parent / "weights"
EMBEDDED: dict[str, Path] = {name: WEIGHTS / name for name in ("vtc-tiny-llava", "vtc-tiny-qwen2vl")}
# Method kwargs that fit the embedded models, whose towers have 4 blocks and LLMs 4 layers: HiPrune's default
# layers (8, -2) name a 24-block CLIP, PyramidDrop's (8, 16, 24) a 32-layer LLM.
METHOD_KWARGS = {"hiprune": {"layers": (1, -2)}, "pyramiddrop": {"layers": (0, 1, 2)}}

FAMILIES = ("llava", "qwen2_vl")
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<video>", "<|vision_start|>", "<|vision_end|>"]
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
CELL = 16  # pixels of a 224-px image under one visual token
QWEN_PATCH, QWEN_MERGE = 16, 1  # Qwen ViT patches of 16 px, no 2x2 merge: one patch per LLM token
PROCESSOR_FILE = "vtc_processor.json"


LETTERS = string.ascii_uppercase  # option letters; prompts with up to 26 options tokenise (trained: 2 to 5)
NUMBERS = [str(i) for i in range(10)]
# extra distractor options, so that every kind of question can have up to 5 options (see vtc.tiny.train.reoption)
EXTRA_WORDS = ["still", "none"]
# what a benchmark's annotation may spell differently from the shapes world (normalise maps it)
SYNONYMS = {
    "color": "colour", "colours": "colour", "colors": "colour", "grey": "gray", "moved": "move", "appear": "appeared",
    **{f"{s}s": s for s in shapes.SHAPES if s != "cross"}, "crosses": "cross",
    **{w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())},
}


def corpus() -> list[str]:
    """Every word the shapes world uses, as sentences for the tokenizer trainer."""
    words = [
        *shapes.COLORS, *shapes.SHAPES, *shapes.DIRECTIONS, *NUMBERS, *LETTERS, *EXTRA_WORDS,
        "yes", "no", "what", "colour", "is", "the", "how", "many", "are", "there", "a", "which", "shape", "left",
        "of", "direction", "did", "move", "appeared", "first", "shapes", "entered", "was", "at", "start",
        "question", "options", "answer", "image", "video", *"?.,:;!()",
    ]
    return [" ".join(words)]


def build_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` trained offline on the shapes vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    core.train_from_iterator(corpus(), trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=SPECIALS[4:],
    )


def model_config(family: str, tokenizer: Any, lm_layers: int = 4) -> Any:
    """The transformers config of a tiny model of ``family`` (``"llava"`` or ``"qwen2_vl"``)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=lm_layers,
        num_attention_heads=4, num_key_value_heads=4, pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"], tie_word_embeddings=True,
    )
    if family == "llava":
        from transformers import LlavaConfig

        vision = dict(
            model_type="clip_vision_model", hidden_size=128, intermediate_size=512, num_hidden_layers=4,
            num_attention_heads=4, image_size=224, patch_size=16, projection_dim=128,
        )
        return LlavaConfig(
            vision_config=vision, text_config=dict(text, model_type="llama", max_position_embeddings=512),
            image_token_id=ids["<image>"], image_seq_length=196, vision_feature_layer=-1,
            vision_feature_select_strategy="default", tie_word_embeddings=True,
        )
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=4, embed_dim=128, hidden_size=128, num_heads=4, mlp_ratio=2, patch_size=QWEN_PATCH,
                      spatial_merge_size=QWEN_MERGE, temporal_patch_size=2)
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}
        return Qwen2VLConfig(
            vision_config=vision, text_config=dict(text, max_position_embeddings=2048, rope_parameters=rope),
            image_token_id=ids["<image>"], video_token_id=ids["<video>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True,
        )
    raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")


def new_model(family: str, tokenizer: Any, seed: int = 0, lm_layers: int = 4) -> Any:
    """A randomly initialised tiny model (sdpa attention)."""
    from transformers import LlavaForConditionalGeneration, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    cls = LlavaForConditionalGeneration if family == "llava" else Qwen2VLForConditionalGeneration
    return cls(model_config(family, tokenizer, lm_layers))


def as_array(image: Any) -> np.ndarray:
    """``[H,W,3] uint8`` from a PIL image or an array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image: expected an RGB image [H,W,3], got shape {tuple(array.shape)}")
    return array.astype(np.uint8)


def normalised(frames: list[Any], size: int) -> np.ndarray:
    """``[T,3,size,size] float32``: resized (bicubic), scaled to [0,1] and normalised like CLIP."""
    out = []
    for frame in frames:
        array = as_array(frame)
        if array.shape[:2] != (size, size):
            array = np.asarray(Image.fromarray(array).resize((size, size), Image.BICUBIC))
        out.append(((array.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
    return np.stack(out)


def qwen_patches(frames: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, list[int]]:
    """Flattened patches in the Qwen2-VL layout (merge blocks contiguous) and the ``(t, h, w)`` grid."""
    if len(frames) % temporal:
        frames = np.concatenate([frames, np.repeat(frames[-1:], temporal - len(frames) % temporal, 0)])
    t, c, h, w = frames.shape
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = frames.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, c * temporal * patch * patch)
    return torch.from_numpy(np.ascontiguousarray(x)), [gt, gh, gw]


class TinyProcessor:
    """Tokenizer plus pixel preprocessing for the tiny models; called like a Hugging Face processor."""

    image_token = "<image>"
    video_token = "<video>"
    chat_template = None

    def __init__(self, tokenizer: Any, family: str, image_size: int = 224, video_size: int = 112,
                 max_frames: int = 32) -> None:
        if family not in FAMILIES:
            raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
        self.tokenizer, self.family = tokenizer, family
        self.image_size, self.video_size, self.max_frames = image_size, video_size, max_frames

    # --------------------------------------------------------------------- layout of one image or video
    def image_tokens(self) -> int:
        return (self.image_size // CELL) ** 2

    def video_tokens(self, frames: int) -> int:
        return -(-frames // 2) * (self.video_size // CELL) ** 2

    def expand(self, text: str, n_frames: list[int]) -> str:
        """``<image>``/``<video>`` markers replaced by their placeholder runs (``n_frames``: one per video)."""
        pieces, videos = text.split(" "), iter(n_frames)
        out = []
        for piece in pieces:
            if piece == self.image_token:
                run = " ".join([self.image_token] * self.image_tokens())
                out.append(run if self.family == "llava" else f"<|vision_start|> {run} <|vision_end|>")
            elif piece == self.video_token:
                if self.family == "llava":
                    raise ValueError("videos: vtc-tiny-llava takes images only; use vtc-tiny-qwen2vl for video")
                run = " ".join([self.video_token] * self.video_tokens(next(videos)))
                out.append(f"<|vision_start|> {run} <|vision_end|>")
            else:
                out.append(piece)
        return " ".join(p for p in out if p)

    def __call__(self, text: str | list[str] | None = None, images: Any = None, videos: Any = None,
                 return_tensors: str = "pt", padding: bool | str = True, padding_side: str = "left",
                 **_: Any) -> dict:
        """Token ids, attention mask and pixels for prompts with ``<image>``/``<video>`` markers."""
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text or [])
        images = [] if images is None else ([images] if not isinstance(images, list | tuple) else list(images))
        videos = [] if videos is None else list(videos)
        if videos and not isinstance(videos[0], list | tuple | np.ndarray):
            raise ValueError("videos: expected a list of videos, each a list of frames")
        n_img = sum(t.split(" ").count(self.image_token) for t in texts)
        n_vid = sum(t.split(" ").count(self.video_token) for t in texts)
        if n_img != len(images) or n_vid != len(videos):
            raise ValueError(
                f"text: {n_img} {self.image_token} and {n_vid} {self.video_token} markers for "
                f"{len(images)} images and {len(videos)} videos; give one marker (space separated) per item"
            )
        for video in videos:
            if not 1 <= len(video) <= self.max_frames:
                raise ValueError(f"videos: expected 1..{self.max_frames} frames per video, got {len(video)}")
        frames = [len(v) for v in videos]
        expanded = [self.expand(t, frames) for t in texts]
        self.tokenizer.padding_side = padding_side
        enc = self.tokenizer(expanded, padding=bool(padding), return_tensors="pt", add_special_tokens=False)
        data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        data.update(self.pixels(images, videos))
        if self.family == "qwen2_vl":
            image_id, video_id = (self.tokenizer.convert_tokens_to_ids(t) for t in (self.image_token, self.video_token))
            ids = data["input_ids"]
            data["mm_token_type_ids"] = ((ids == image_id).long() + 2 * (ids == video_id).long()).int()
        return BatchFeature(data, tensor_type=return_tensors)

    def pixels(self, images: list[Any], videos: list[Any]) -> dict:
        out: dict[str, torch.Tensor] = {}
        if self.family == "llava":
            if images:
                out["pixel_values"] = torch.from_numpy(normalised(images, self.image_size))
            return out
        if images:
            parts = [qwen_patches(normalised([im, im], self.image_size), QWEN_PATCH, QWEN_MERGE, 2) for im in images]
            out["pixel_values"] = torch.cat([p for p, _ in parts])
            out["image_grid_thw"] = torch.tensor([g for _, g in parts])
        if videos:
            parts = [qwen_patches(normalised(list(v), self.video_size), QWEN_PATCH, QWEN_MERGE, 2) for v in videos]
            out["pixel_values_videos"] = torch.cat([p for p, _ in parts])
            out["video_grid_thw"] = torch.tensor([g for _, g in parts])
        return out

    # --------------------------------------------------------------------- text
    @property
    def max_options(self) -> int:
        """The most answer options a prompt can offer: the option letters its vocabulary holds (A, B, ...)."""
        vocab = self.tokenizer.get_vocab()
        return next((i for i, letter in enumerate(LETTERS) if letter not in vocab), len(LETTERS))

    def build_prompt(self, question: str, media: str = "image", options: list[str] | None = None) -> str:
        """The prompt format the tiny models were trained on, for one image or video and a question."""
        return prompt(question, options, {"image": self.image_token, "video": self.video_token}[media])

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True, **kw: Any) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kw)

    def decode(self, ids: Any, skip_special_tokens: bool = True, **kw: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kw)

    # --------------------------------------------------------------------- files
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        settings = dict(family=self.family, image_size=self.image_size, video_size=self.video_size,
                        max_frames=self.max_frames)
        (folder / PROCESSOR_FILE).write_text(json.dumps(settings, indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyProcessor:
        from transformers import PreTrainedTokenizerFast

        folder = Path(folder)
        settings = json.loads((folder / PROCESSOR_FILE).read_text())
        return cls(PreTrainedTokenizerFast.from_pretrained(folder), **settings)


_SPACED = re.compile(r"([?.,:;!()\[\]\"])")
_MARKUP = re.compile(r"<[^<>\s]*>")  # <image>, <video>, <s>...: never read from user text
_LETTER_PREFIX = re.compile(r"^\s*(?:\(\s*[A-Za-z]\s*\)|\[\s*[A-Za-z]\s*\]|[A-Za-z]\s*[.):])\s*(?=\S)")


def normalise(text: str) -> str:
    """Text as the tiny vocabulary spells it: lower case, punctuation spaced, known variants mapped.

    ``"Which shape appeared first?"`` -> ``"which shape appeared first ?"``; ``"What color is the Star?"`` ->
    ``"what colour is the star ?"``. Markup such as ``<image>`` is dropped; unknown words stay and become
    ``<unk>`` in the tokenizer.
    """
    text = _SPACED.sub(r" \1 ", _MARKUP.sub(" ", str(text)).lower())
    return " ".join(SYNONYMS.get(w, w) for w in text.split())


def normalise_option(option: str) -> str:
    """An option's text: a leading letter (``"A. red"``, ``"(B) blue"``, ``"c) 2"``) and final punctuation dropped."""
    words = normalise(_LETTER_PREFIX.sub("", str(option))).split()
    while words and words[-1] in ".,;:!?":
        words.pop()
    return " ".join(words) or "<unk>"


def prompt(question: str, options: list[str] | None, media: str = "<image>") -> str:
    """The prompt format of the tiny models: the question, the image or video, then the options.

    ``question : what colour is the star ? <image> options : red A , blue B answer :``. The question comes
    before the visual tokens so that they can attend to it; each option's letter follows its text, so
    the answer ``red A`` copies the token after the option it names, a few tokens back.
    """
    text = f"question : {normalise(question)}" + (f" {media}" if media else "")
    if options:
        if len(options) > len(LETTERS):
            raise ValueError(f"options: at most {len(LETTERS)} options, got {len(options)}")
        text += " options : " + " , ".join(f"{normalise_option(o)} {LETTERS[i]}" for i, o in enumerate(options))
    return f"{text} answer :"


def target(answer_text: str, options: list[str] | None) -> str:
    """The training target: the open answer, then the option letter for multiple choice, then ``</s>``."""
    if options:
        return f"{answer_text} {LETTERS[options.index(answer_text)]} </s>"
    return f"{answer_text} </s>"
