"""A deterministic, seeded synthetic visual-QA world: coloured shapes in images and short videos.

Every sample is a pure function of ``(seed, index)``: the same pair always renders the same pixels and the
same question. Images are 224×224 by default, with several shapes of three sizes on a textured background
with achromatic distractors (grey lines and dots, which are never asked about). Small objects cover about
one 16-pixel patch, so careless pruning loses them.

Answers are balanced: the generator samples the answer first (the colour, the count, yes/no, the shape)
and builds a scene that has it, so no answer prior beats chance by much.

Image questions (``kind``): ``color`` (what colour is the X), ``count`` (how many Xs), ``exists`` (is
there a C X; two options, yes/no), ``left_of`` (which shape is left of the C X; exactly one object is).
Video questions: ``direction`` (which way the C X moved), ``first`` (which shape appeared first),
``entered`` (how many shapes entered after the first frame), ``start_color`` (what colour the X was at
the start; it changes colour midway).

Besides the pixels, each sample carries the generator's knowledge as dense targets (``layout``): the
object under every pixel and each object's attributes. The tiny models of :mod:`vtc.tiny.model` are
pre-trained on those.

On disk (``write_split``): ``DIR/media/*.png|*.mp4`` and ``DIR/annotations.jsonl``, one JSON object per
line, documented in ``docs/shapes-data.md``. The lmms-eval video multiple-choice field names are
included: ``video`` (or ``image``), ``question``, ``options`` and ``candidates`` (the option texts, in
order), ``answer`` (the letter) and ``answer_text`` (the open answer).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (235, 205, 20),
    "purple": (150, 50, 200),
    "orange": (245, 130, 10),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES: dict[str, tuple[int, int]] = {"small": (14, 18), "medium": (24, 32), "large": (36, 46)}
IMAGE_KINDS: tuple[str, ...] = ("color", "count", "exists", "left_of")
VIDEO_KINDS: tuple[str, ...] = ("direction", "first", "entered", "start_color")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
LETTERS = "ABCD"
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


@dataclass
class Shape:
    """One object: its kind, colour, diameter in pixels and centre."""

    shape: str
    color: str
    size: int
    x: float
    y: float


@dataclass
class Sample:
    """One rendered question: pixels (``frames`` has one entry for an image), text and dense layout."""

    frames: list[np.ndarray]
    kind: str
    question: str
    options: list[str]
    answer_text: str
    layout: list[np.ndarray] = field(default_factory=list)  # per frame: object index under each pixel, -1 none
    objects: list[list[Shape]] = field(default_factory=list)  # per frame: the visible objects
    extra: dict = field(default_factory=dict)  # per-object facts for video targets

    @property
    def answer(self) -> str:
        """The option letter of the answer."""
        return LETTERS[self.options.index(self.answer_text)]

    @property
    def is_video(self) -> bool:
        return len(self.frames) > 1


def sample_rng(seed: int, index: int) -> random.Random:
    """The random stream of one sample: independent of every other index."""
    return random.Random(f"vtc-shapes/{seed}/{index}")


# ----------------------------------------------------------------------------------------------- drawing
def shape_polygon(shape: str, x: float, y: float, size: float) -> list[tuple[float, float]] | None:
    """Polygon vertices for a shape (``None`` for a circle, drawn as an ellipse)."""
    r = size / 2
    if shape == "circle":
        return None
    if shape == "square":
        s = r * 0.85
        return [(x - s, y - s), (x + s, y - s), (x + s, y + s), (x - s, y + s)]
    if shape == "triangle":
        return [(x, y - r), (x + r * 0.95, y + r * 0.8), (x - r * 0.95, y + r * 0.8)]
    if shape == "diamond":
        return [(x, y - r), (x + r * 0.8, y), (x, y + r), (x - r * 0.8, y)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
        return pts
    if shape == "cross":
        a, b = r, r * 0.35
        return [(x - b, y - a), (x + b, y - a), (x + b, y - b), (x + a, y - b), (x + a, y + b), (x + b, y + b),
                (x + b, y + a), (x - b, y + a), (x - b, y + b), (x - a, y + b), (x - a, y - b), (x - b, y - b)]
    raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, obj: Shape, fill: object) -> None:
    poly = shape_polygon(obj.shape, obj.x, obj.y, obj.size)
    if poly is None:
        r = obj.size / 2
        draw.ellipse([obj.x - r, obj.y - r, obj.x + r, obj.y + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def background(rng: random.Random, size: int) -> Image.Image:
    """A textured, low-saturation background with achromatic distractors (lines and dots)."""
    base = np.array([rng.randint(90, 200)] * 3, dtype=np.float32) + np.array([rng.randint(-12, 12) for _ in range(3)])
    np_rng = np.random.default_rng(rng.getrandbits(32))
    coarse = np_rng.normal(0, 18, size=(8, 8, 1)).astype(np.float32)
    texture = np.array(Image.fromarray(coarse[..., 0]).resize((size, size), Image.BICUBIC))[..., None]
    grain = np_rng.normal(0, 6, size=(size, size, 1)).astype(np.float32)
    pixels = np.clip(base + texture + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):
        grey = rng.randint(40, 235)
        pts = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(2)]
        draw.line(pts, fill=(grey, grey, grey), width=rng.randint(1, 3))
    for _ in range(rng.randint(3, 10)):
        grey, r = rng.randint(30, 240), rng.uniform(2, 5)
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(grey, grey, grey))
    return image


def render(objects: list[Shape], bg: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[H,W,3] uint8`` and the object index under each pixel ``[H,W] int16`` (-1: background)."""
    image = bg.copy()
    ids = Image.new("I", image.size, 0)
    draw, draw_ids = ImageDraw.Draw(image), ImageDraw.Draw(ids)
    for i, obj in enumerate(objects):
        draw_shape(draw, obj, COLORS[obj.color])
        draw_shape(draw_ids, obj, i + 1)
    return np.asarray(image).copy(), (np.asarray(ids).astype(np.int16) - 1)


# ----------------------------------------------------------------------------------------------- scenes
def pick_size(rng: random.Random, small_bias: float = 0.4) -> int:
    name = "small" if rng.random() < small_bias else rng.choice(["medium", "large"])
    lo, hi = SIZES[name]
    return rng.randint(lo, hi)


def place(rng: random.Random, objects: list[Shape], obj: Shape, size: int, x_range=None, tries: int = 200) -> bool:
    """Put ``obj`` somewhere free (centre within ``x_range`` if given); ``False`` if there is no room."""
    margin = obj.size / 2 + 2
    lo, hi = x_range or (margin, size - margin)
    lo, hi = max(lo, margin), min(hi, size - margin)
    if lo > hi:
        return False
    for _ in range(tries):
        x, y = rng.uniform(lo, hi), rng.uniform(margin, size - margin)
        if all(math.hypot(x - o.x, y - o.y) > (o.size + obj.size) / 2 + 4 for o in objects):
            obj.x, obj.y = x, y
            objects.append(obj)
            return True
    return False


def fill_scene(rng: random.Random, objects: list[Shape], n_total: int, size: int, avoid) -> None:
    """Add random objects (rejecting those ``avoid(shape, color)`` forbids) until there are ``n_total``."""
    for _ in range(50 * n_total):
        if len(objects) >= n_total:
            return
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        if not avoid(shape, color):
            place(rng, objects, Shape(shape, color, pick_size(rng), 0, 0), size)


def options_with(rng: random.Random, answer: str, pool: list[str], preferred: list[str] = ()) -> list[str]:
    """Four (or fewer, if the pool is smaller) shuffled options containing ``answer``."""
    distractors = [p for p in dict.fromkeys(preferred) if p != answer]
    rest = [p for p in pool if p != answer and p not in distractors]
    rng.shuffle(rest)
    options = [answer, *(distractors + rest)[: min(4, len(pool)) - 1]]
    rng.shuffle(options)
    return options


def image_sample(rng: random.Random, kind: str, size: int, max_objects: int) -> tuple[list[Shape], str, list[str], str]:
    """Objects, question, options and answer for one image question of ``kind``, answer drawn first."""
    n_total = rng.randint(2, max(2, max_objects))
    objects: list[Shape] = []
    if kind == "color":
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        place(rng, objects, Shape(shape, color, pick_size(rng), 0, 0), size)
        fill_scene(rng, objects, n_total, size, lambda s, c: s == shape)
        others = [o.color for o in objects if o.color != color]
        return objects, f"what colour is the {shape} ?", options_with(rng, color, list(COLORS), others), color
    if kind == "count":
        count, shape = rng.randint(1, 4), rng.choice(SHAPES)
        for _ in range(count):
            place(rng, objects, Shape(shape, rng.choice(list(COLORS)), pick_size(rng), 0, 0), size)
        if len(objects) < count:  # no room: fall back to what fits
            count = len(objects)
        fill_scene(rng, objects, max(n_total, count + rng.randint(0, 2)), size, lambda s, c: s == shape)
        return objects, f"how many {shape} are there ?", options_with(rng, str(count), ["1", "2", "3", "4"]), str(count)
    if kind == "exists":
        color, shape, present = rng.choice(list(COLORS)), rng.choice(SHAPES), rng.random() < 0.5
        if present:
            place(rng, objects, Shape(shape, color, pick_size(rng), 0, 0), size)
        else:  # near misses make the question about the pair, not either word
            place(rng, objects, Shape(shape, rng.choice([c for c in COLORS if c != color]), pick_size(rng), 0, 0), size)
            place(rng, objects, Shape(rng.choice([s for s in SHAPES if s != shape]), color, pick_size(rng), 0, 0), size)
        fill_scene(rng, objects, n_total, size, lambda s, c: s == shape and c == color)
        answer = "yes" if present else "no"
        return objects, f"is there a {color} {shape} ?", ["yes", "no"], answer
    if kind == "left_of":
        ref = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.randint(24, 40), 0, 0)
        place(rng, objects, ref, size, x_range=(size * 0.3, size * 0.7))
        answer = rng.choice([s for s in SHAPES if s != ref.shape])
        gap = 6
        left_max = ref.x - gap
        if not place(rng, objects, Shape(answer, rng.choice(list(COLORS)), pick_size(rng), 0, 0), size, (0, left_max)):
            return image_sample(rng, kind, size, max_objects)
        for _ in range(50 * n_total):
            if len(objects) >= max(n_total, 3):
                break
            obj = Shape(rng.choice([s for s in SHAPES if s != answer]), rng.choice(list(COLORS)), pick_size(rng), 0, 0)
            place(rng, objects, obj, size, x_range=(ref.x + gap, size))
        right = [o.shape for o in objects[2:]]
        question = f"which shape is left of the {ref.color} {ref.shape} ?"
        pool = [s for s in SHAPES if s != ref.shape]
        return objects, question, options_with(rng, answer, pool, right), answer
    raise ValueError(f"kind: expected one of {IMAGE_KINDS}, got {kind!r}")


def make_image(seed: int, index: int, *, size: int = 224, kind: str | None = None, max_objects: int = 6) -> Sample:
    """Image sample ``index`` of the world with ``seed``: pixels, question, options, answer, layout."""
    rng = sample_rng(seed, index)
    kind = kind or IMAGE_KINDS[index % len(IMAGE_KINDS)]
    bg = background(rng, size)
    objects, question, options, answer = image_sample(rng, kind, size, max_objects)
    pixels, layout = render(objects, bg)
    return Sample([pixels], kind, question, options, answer, [layout], [objects])


# ----------------------------------------------------------------------------------------------- videos
@dataclass
class Track:
    """An object over time: visible in ``[start, end)``, moving by ``(dx, dy)`` per frame."""

    obj: Shape
    dx: float = 0.0
    dy: float = 0.0
    start: int = 0
    end: int = 10**6
    recolor_at: int = 10**6
    new_color: str = ""

    def at(self, t: int) -> Shape | None:
        if not self.start <= t < self.end:
            return None
        color = self.new_color if t >= self.recolor_at else self.obj.color
        return Shape(self.obj.shape, color, self.obj.size, self.obj.x + self.dx * t, self.obj.y + self.dy * t)


def direction_step(direction: str, speed: float) -> tuple[float, float]:
    return {"left": (-speed, 0), "right": (speed, 0), "up": (0, -speed), "down": (0, speed)}[direction]


def video_tracks(rng: random.Random, kind: str, size: int, frames: int) -> tuple[list[Track], str, list[str], str]:
    """Tracks, question, options and answer for one video question of ``kind``, answer drawn first."""
    objects: list[Shape] = []
    span = lambda: (rng.randint(24, 40))  # noqa: E731 (video objects are medium or large)
    if kind == "direction":
        answer = rng.choice(DIRECTIONS)
        speed = rng.uniform(5.0, 7.0) * 16 / frames
        travel = speed * (frames - 1)
        target = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), span(), 0, 0)
        dx, dy = direction_step(answer, speed)
        lo = target.size / 2 + 2 + max(0.0, -dx * frames)
        hi = size - target.size / 2 - 2 - max(0.0, dx * frames)
        target.x = rng.uniform(lo, hi)
        ylo = target.size / 2 + 2 + max(0.0, -dy * frames)
        target.y = rng.uniform(ylo, size - target.size / 2 - 2 - max(0.0, dy * frames))
        objects.append(target)
        tracks = [Track(target, dx, dy)]
        for _ in range(rng.randint(1, 3)):  # static distractors away from the target's path
            obj = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), span(), 0, 0)
            if (obj.shape, obj.color) == (target.shape, target.color):
                continue
            ghost = [*objects, Shape(target.shape, "", target.size + int(travel) * 2, target.x + dx * frames / 2,
                                     target.y + dy * frames / 2)]
            if place(rng, ghost, obj, size):
                objects.append(obj)
                tracks.append(Track(obj))
        question = f"which direction did the {target.color} {target.shape} move ?"
        return tracks, question, options_with(rng, answer, list(DIRECTIONS)), answer
    if kind == "first":
        shapes = rng.sample(SHAPES, rng.randint(2, 4))
        answer = shapes[0]
        tracks = []
        starts = [0] + sorted(rng.sample(range(3, frames - 2), len(shapes) - 1))
        for shape, start in zip(shapes, starts, strict=True):
            obj = Shape(shape, rng.choice(list(COLORS)), span(), 0, 0)
            if place(rng, objects, obj, size):
                tracks.append(Track(obj, start=start))
        if len(tracks) < 2 or tracks[0].obj.shape != answer:
            return video_tracks(rng, kind, size, frames)
        present = [t.obj.shape for t in tracks]
        return tracks, "which shape appeared first ?", options_with(rng, answer, list(SHAPES), present), answer
    if kind == "entered":
        entered = rng.randint(0, 3)
        tracks = []
        for _ in range(rng.randint(1, 2)):
            obj = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), span(), 0, 0)
            if place(rng, objects, obj, size):
                tracks.append(Track(obj))
        for start in sorted(rng.choices(range(3, frames - 2), k=entered)):
            obj = Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), span(), 0, 0)
            if not place(rng, objects, obj, size):
                return video_tracks(rng, kind, size, frames)
            tracks.append(Track(obj, start=start))
        return tracks, "how many shapes entered ?", options_with(rng, str(entered), ["0", "1", "2", "3"]), str(entered)
    if kind == "start_color":
        answer, later = rng.sample(list(COLORS), 2)
        target = Shape(rng.choice(SHAPES), answer, span(), 0, 0)
        place(rng, objects, target, size)
        tracks = [Track(target, recolor_at=rng.randint(frames // 3, 2 * frames // 3), new_color=later)]
        for _ in range(rng.randint(1, 3)):
            obj = Shape(rng.choice([s for s in SHAPES if s != target.shape]), rng.choice(list(COLORS)), span(), 0, 0)
            if place(rng, objects, obj, size):
                tracks.append(Track(obj))
        question = f"what colour was the {target.shape} at the start ?"
        return tracks, question, options_with(rng, answer, list(COLORS), [later]), answer
    raise ValueError(f"kind: expected one of {VIDEO_KINDS}, got {kind!r}")


def make_video(seed: int, index: int, *, size: int = 224, frames: int = 16, kind: str | None = None) -> Sample:
    """Video sample ``index`` of the world with ``seed``: ``frames`` RGB frames, question and layout."""
    if not 8 <= frames <= 64:
        raise ValueError(f"frames: expected 8..64, got {frames}")
    rng = sample_rng(seed, index)
    kind = kind or VIDEO_KINDS[index % len(VIDEO_KINDS)]
    bg = background(rng, size)
    tracks, question, options, answer = video_tracks(rng, kind, size, frames)
    pixels, layouts, visible = [], [], []
    for t in range(frames):
        shown = [(i, s) for i, tr in enumerate(tracks) if (s := tr.at(t)) is not None]
        frame, ids = render([s for _, s in shown], bg)
        track_ids = np.full_like(ids, -1)
        for j, (i, _) in enumerate(shown):
            track_ids[ids == j] = i
        pixels.append(frame)
        layouts.append(track_ids)
        visible.append([s for _, s in shown])
    facts = {
        "tracks": [
            {"shape": tr.obj.shape, "color": tr.obj.color, "start": tr.start, "motion": motion_of(tr),
             "x": tr.obj.x, "y": tr.obj.y, "dx": tr.dx, "dy": tr.dy, "recolor_at": tr.recolor_at,
             "new_color": tr.new_color}
            for tr in tracks
        ]
    }
    return Sample(pixels, kind, question, options, answer, layouts, visible, facts)


def question_objects(sample: Sample) -> list[int]:
    """Indices of the objects (the tracks, for a video) that a sample's question is about.

    What a reader must look at to answer: ``color`` and ``count`` → every object of the named shape;
    ``exists`` → the objects of the named colour and shape (none when the answer is no); ``left_of`` →
    the reference object and every object left of it; ``direction`` → the named track; ``first`` → the
    earliest track; ``entered`` → every track that starts after frame 0; ``start_color`` → the track of
    the named shape. Used as attention guidance when training the tiny
    models (:mod:`vtc.tiny.train`); the list is empty when nothing in the scene is relevant.
    """
    words = sample.question.split()
    if sample.is_video:
        tracks = sample.extra["tracks"]
        if sample.kind == "direction":  # which direction did the C X move ?
            return [i for i, t in enumerate(tracks) if (t["color"], t["shape"]) == (words[4], words[5])]
        if sample.kind == "first":
            first = min(t["start"] for t in tracks)
            return [i for i, t in enumerate(tracks) if t["start"] == first]
        if sample.kind == "entered":
            return [i for i, t in enumerate(tracks) if t["start"] > 0]
        if sample.kind == "start_color":  # what colour was the X at the start ?
            return [i for i, t in enumerate(tracks) if t["shape"] == words[4]]
        raise ValueError(f"kind: expected one of {VIDEO_KINDS}, got {sample.kind!r}")
    objects = sample.objects[0]
    if sample.kind in ("color", "count"):  # what colour is the X ? / how many X are there ?
        shape = words[2] if sample.kind == "count" else words[-2]
        return [i for i, o in enumerate(objects) if o.shape == shape]
    if sample.kind == "exists":  # is there a C X ?
        return [i for i, o in enumerate(objects) if (o.color, o.shape) == (words[-3], words[-2])]
    if sample.kind == "left_of":  # which shape is left of the C X ?
        ref = [i for i, o in enumerate(objects) if (o.color, o.shape) == (words[-3], words[-2])]
        return ref + [i for i, o in enumerate(objects) if ref and o.x < objects[ref[0]].x]
    raise ValueError(f"kind: expected one of {IMAGE_KINDS}, got {sample.kind!r}")


def motion_of(track: Track) -> str:
    if track.dx == track.dy == 0:
        return "still"
    if abs(track.dx) >= abs(track.dy):
        return "right" if track.dx > 0 else "left"
    return "down" if track.dy > 0 else "up"


# ----------------------------------------------------------------------------------------------- files
def write_video(path: Path, frames: list[np.ndarray], fps: int = 8) -> None:
    """Write frames as an H.264 mp4 with PyAV (offline, no ffmpeg binary needed)."""
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("writing videos needs PyAV: pip install 'vtc[video]'") from err
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "fast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def record(sample: Sample, media: str, split: str, index: int) -> dict:
    """The annotation line of one sample (vtc's own fields plus lmms-eval's video-MC names)."""
    options_text = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(sample.options))
    return {
        "id": f"shapes-{split}-{index:06d}",
        ("video" if sample.is_video else "image"): media,
        "media_type": "video" if sample.is_video else "image",
        "kind": sample.kind,
        "question": sample.question,
        "options": sample.options,
        "candidates": sample.options,
        "answer": sample.answer,
        "answer_text": sample.answer_text,
        "prompt_mc": f"{sample.question} {options_text}",
    }


def write_split(out: str | Path, *, split: str = "val", n: int = 500, video_fraction: float = 0.5,
                seed: int | None = None, size: int = 224, frames: int = 16) -> Path:
    """Write ``n`` samples (images and videos) to ``out``; returns the annotations path."""
    if n < 1:
        raise ValueError(f"n: expected a positive number of samples, got {n}")
    if not 0 <= video_fraction <= 1:
        raise ValueError(f"video_fraction: expected a value in [0, 1], got {video_fraction}")
    if seed is None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split: expected one of {sorted(SPLIT_SEEDS)} or an explicit seed, got {split!r}")
        seed = SPLIT_SEEDS[split] + 1000
    out = Path(out)
    (out / "media").mkdir(parents=True, exist_ok=True)
    n_video = round(n * video_fraction)
    lines = []
    for i in range(n):
        if i < n - n_video:
            sample = make_image(seed, i, size=size)
            name = f"media/{split}_{i:06d}.png"
            Image.fromarray(sample.frames[0]).save(out / name)
        else:
            sample = make_video(seed, i, size=size, frames=frames)
            name = f"media/{split}_{i:06d}.mp4"
            write_video(out / name, sample.frames)
        lines.append(record(sample, name, split, i))
    path = out / "annotations.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
