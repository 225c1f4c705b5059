"""ShapesWorld: a seeded procedural VQA world with reference chains, for offline end-to-end runs.

Each sample is a 64x64 image of 1-5 circles / squares / triangles in four colours (sizes and
positions vary, shapes may partly occlude each other, colours are jittered and pixel noise is
added, so a small model's perception can fail) and a question of one of four kinds:

- ``count``: "How many red shapes are there?" (all shapes, one colour, or one shape type)
- ``color``: "What color is the triangle?" (asked only when exactly one triangle is present)
- ``position``: "Is the red circle to the left or to the right of the blue square?" (or above /
  below; asked only for uniquely named objects at least ``min_gap`` pixels apart on that axis)
- ``exist``: "Is there a green triangle in the image?" (half yes, half no)

Half the questions (``mc_fraction``) are multiple choice (``choices`` + ``correct_choice_idx``),
the others open (``answers``). The reference chain has image-level facts about the relevant
objects ("There is a red circle on the left."), reasoning steps ("The red circle is to the left of
the blue square.") and ends with "So, the answer is X.".

Determinism: sample ``i`` of split ``s`` draws from ``random.Random(f"shapes/{seed}/{s}/{i}")``
(string seeds hash with SHA-512: the same on every platform and Python run); the pixel noise from
``numpy.random.default_rng(meta["render"]["seed"])``. Split disjointness: a scene belongs to
exactly one split, chosen by a hash of its content (``blake2b(objects) mod 10``: 0 = test,
1 = validation, 2-9 = train); a draw whose scene hashes to another split is redrawn. So no scene appears in two splits, whatever the seeds.

The image is a pure function of ``sample.meta`` (:func:`render`); :func:`write_split` also writes
it as a PNG and stores its path in ``Sample.image``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmboundary.data.schema import ReferenceChain, Sample

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 45),
    "green": (40, 160, 70),
    "blue": (50, 85, 215),
    "yellow": (225, 195, 40),
}
SHAPES = ("circle", "square", "triangle")
KINDS = ("count", "color", "position", "exist")
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
_BACKGROUND = 235
_MAX_ATTEMPTS = 1000


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the world (all defaults are ours; they set how hard perception is).

    ``min_separation``: centres of two shapes are at least ``min_separation * (r_i + r_j)`` apart;
    below 1 shapes may overlap (partial occlusion). ``min_gap``: pixels between two objects on
    the asked axis for a position question. ``noise_std``: Gaussian pixel noise (0-255 scale).
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 5
    min_radius: int = 5
    max_radius: int = 10
    min_separation: float = 0.75
    color_jitter: int = 25
    noise_std: float = 10.0
    min_gap: int = 8
    mc_fraction: float = 0.5
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"WorldConfig.kinds: expected a non-empty subset of {KINDS}, "
                             f"got {self.kinds}")
        if not 1 <= self.min_objects <= self.max_objects <= 5:
            raise ValueError("WorldConfig: expected 1 <= min_objects <= max_objects <= 5, got "
                             f"{self.min_objects}..{self.max_objects}")


# ---------------------------------------------------------------------------------------- scenes
def _draw_scene(rng: random.Random, cfg: WorldConfig) -> list[dict[str, Any]]:
    """Place 1-5 objects left to right in drawing order, with limited overlap."""
    n = rng.randrange(cfg.min_objects, cfg.max_objects + 1)
    objects: list[dict[str, Any]] = []
    for _ in range(50 * n):
        if len(objects) == n:
            break
        r = rng.randrange(cfg.min_radius, cfg.max_radius + 1)
        x = rng.randrange(r, cfg.image_size - r)
        y = rng.randrange(r, cfg.image_size - r)
        if all((x - o["x"]) ** 2 + (y - o["y"]) ** 2 >= (cfg.min_separation * (r + o["r"])) ** 2
               for o in objects):
            objects.append({"shape": SHAPES[rng.randrange(3)],
                            "color": rng.choice(list(COLORS)),
                            "x": x, "y": y, "r": r})
    return objects


def scene_split(objects: list[dict[str, Any]]) -> str:
    """The split a scene belongs to: ``blake2b(canonical JSON) mod 10`` (0 test, 1 val, else train)."""
    digest = hashlib.blake2b(json.dumps(objects, sort_keys=True).encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def where(obj: dict[str, Any], size: int) -> str:
    """Coarse location phrase by thirds of the image: "at the top left", "in the middle"..."""
    x, y = obj["x"], obj["y"]
    h = "left" if x < size / 3 else "right" if x >= 2 * size / 3 else ""
    v = "top" if y < size / 3 else "bottom" if y >= 2 * size / 3 else ""
    if h and v:
        return f"at the {v} {h}"
    if h:
        return f"on the {h}"
    return f"at the {v}" if v else "in the middle"


def describe(obj: dict[str, Any], size: int) -> str:
    """The image-level fact about one object: "There is a red circle on the left."."""
    return f"There is a {obj['color']} {obj['shape']} {where(obj, size)}."


# ------------------------------------------------------------------------------------- questions
# A builder returns (question, answer, choice pool, image-level steps, reasoning steps, target)
# or None when the scene cannot support that kind of question.
Built = tuple[str, str, list[str], list[str], list[str], dict[str, Any]]


def _count(objs: list[dict], rng: random.Random, size: int) -> Built:
    mode = ["all", "color", "shape"][rng.randrange(3)]
    if mode == "all":
        keep, noun, plural, question = objs, "shape", "shapes", "How many shapes are there?"
    elif mode == "color":
        color = rng.choice(list(COLORS))
        keep = [o for o in objs if o["color"] == color]
        noun, plural = f"{color} shape", f"{color} shapes"
        question = f"How many {color} shapes are there?"
    else:
        shape = SHAPES[rng.randrange(3)]
        keep = [o for o in objs if o["shape"] == shape]
        noun, plural = shape, f"{shape}s"
        question = f"How many {plural} are there?"
    n = len(keep)
    image = [describe(o, size) for o in keep] or [f"There is no {noun} in the image."]
    total = f"There is 1 {noun} in total." if n == 1 else f"There are {n} {plural} in total."
    pool = [str(k) for k in range(6)]
    return question, str(n), pool, image, [total], {"mode": mode, "objects": _ids(objs, keep)}


def _color(objs: list[dict], rng: random.Random, size: int) -> Built | None:
    unique = [s for s in SHAPES if sum(o["shape"] == s for o in objs) == 1]
    if not unique:
        return None
    shape = rng.choice(unique)
    obj = next(o for o in objs if o["shape"] == shape)
    reasoning = [f"The {shape} is {obj['color']}."]
    return (f"What color is the {shape}?", obj["color"], list(COLORS), [describe(obj, size)],
            reasoning, {"objects": _ids(objs, [obj])})


def _position(objs: list[dict], rng: random.Random, cfg: WorldConfig) -> Built | None:
    names = [(o["color"], o["shape"]) for o in objs]
    named = [o for o in objs if names.count((o["color"], o["shape"])) == 1]
    pairs = [(a, b) for a in named for b in named if a is not b
             and max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"])) >= cfg.min_gap]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    na, nb = f"{a['color']} {a['shape']}", f"{b['color']} {b['shape']}"
    if abs(a["x"] - b["x"]) >= abs(a["y"] - b["y"]):
        answer = "left" if a["x"] < b["x"] else "right"
        question = f"Is the {na} to the left or to the right of the {nb}?"
        relation, pool = f"to the {answer} of", ["left", "right"]
    else:
        answer = "above" if a["y"] < b["y"] else "below"
        question = f"Is the {na} above or below the {nb}?"
        relation, pool = answer, ["above", "below"]
    image = [describe(a, cfg.image_size), describe(b, cfg.image_size)]
    return (question, answer, pool, image, [f"The {na} is {relation} the {nb}."],
            {"objects": _ids(objs, [a, b])})


def _exist(objs: list[dict], rng: random.Random, size: int) -> Built:
    present = {(o["color"], o["shape"]) for o in objs}
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    if rng.random() < 0.5 or not absent:
        obj = rng.choice(objs)
        color, shape, answer = obj["color"], obj["shape"], "yes"
        image, keep = [describe(obj, size)], [obj]
        reasoning = [f"The image contains a {color} {shape}."]
    else:
        color, shape = rng.choice(absent)
        answer = "no"
        keep = [o for o in objs if o["color"] == color or o["shape"] == shape][:3]
        image = [describe(o, size) for o in keep] or [
            f"There is no {color} shape and no {shape} in the image."]
        reasoning = [f"There is no {color} {shape} in the image."]
    return (f"Is there a {color} {shape} in the image?", answer, ["yes", "no"], image, reasoning,
            {"objects": _ids(objs, keep)})


def _ids(objs: list[dict], keep: list[dict]) -> list[int]:
    return [i for i, o in enumerate(objs) if any(o is k for k in keep)]


def _build(kind: str, objs: list[dict], rng: random.Random, cfg: WorldConfig) -> Built | None:
    if kind == "count":
        return _count(objs, rng, cfg.image_size)
    if kind == "color":
        return _color(objs, rng, cfg.image_size)
    if kind == "position":
        return _position(objs, rng, cfg)
    return _exist(objs, rng, cfg.image_size)


# --------------------------------------------------------------------------------------- samples
def _choices(answer: str, pool: list[str], rng: random.Random) -> list[str]:
    """At most 4 choices: the answer and distractors from the pool, shuffled."""
    others = [c for c in pool if c != answer]
    picked = [*rng.sample(others, min(3, len(others))), answer]
    return rng.sample(picked, len(picked))


def make_sample(index: int, split: str, seed: int, cfg: WorldConfig | None = None) -> Sample:
    """Sample ``index`` of ``split`` for ``seed``: kind = ``cfg.kinds[index % len(kinds)]``."""
    cfg = cfg or WorldConfig()
    if split not in SPLIT_CODES:
        raise ValueError(f"make_sample: split must be one of {list(SPLIT_CODES)}, got {split!r}")
    kind = cfg.kinds[index % len(cfg.kinds)]
    rng = random.Random(f"shapes/{seed}/{split}/{index}")
    for _ in range(_MAX_ATTEMPTS):
        objs = _draw_scene(rng, cfg)
        if scene_split(objs) != split:
            continue
        built = _build(kind, objs, rng, cfg)
        if built is not None:
            return _to_sample(index, split, seed, kind, objs, built, rng, cfg)
    raise RuntimeError(f"make_sample: no {kind!r} scene for {split} #{index} after "
                       f"{_MAX_ATTEMPTS} draws; loosen WorldConfig {cfg}")


def _to_sample(index: int, split: str, seed: int, kind: str, objs: list[dict], built: Built,
               rng: random.Random, cfg: WorldConfig) -> Sample:
    question, answer, pool, image_level, reasoning, target = built
    multiple_choice = bool(rng.random() < cfg.mc_fraction)
    choices = _choices(answer, pool, rng) if multiple_choice else None
    if choices is not None:
        answers = [answer]
    elif kind == "count":
        answers = [answer, NUMBER_WORDS[int(answer)]]
    else:
        answers = [answer]
    render_spec = {"size": cfg.image_size, "color_jitter": cfg.color_jitter,
                   "noise_std": cfg.noise_std, "seed": rng.randrange(2**31)}
    sample_id = f"shapes-{split}-{index:06d}"
    return Sample(
        id=sample_id, dataset="shapes", question=question, choices=choices,
        correct_choice_idx=choices.index(answer) if choices is not None else None,
        answers=answers, image_id=sample_id,
        reference=ReferenceChain(image_level=image_level,
                                 reasoning_level=[*reasoning, f"So, the answer is {answer}."]),
        answer_mode="choice" if choices is not None else "exact", step_match="exact",
        meta={"kind": kind, "format": "mc" if choices is not None else "open", "split": split,
              "world_seed": seed, "scene": objs, "target": target, "render": render_spec},
    )


def make_samples(n: int, seed: int = 0, split: str = "train", cfg: WorldConfig | None = None,
                 start: int = 0) -> list[Sample]:
    """Samples ``start .. start+n-1`` of a split (``image`` unset: use :func:`load_image`)."""
    return [make_sample(i, split, seed, cfg) for i in range(start, start + n)]


# -------------------------------------------------------------------------------------- images
def render(sample: Sample | dict[str, Any]) -> Image.Image:
    """Draw a sample's image from its ``meta`` (scene + render seed): the same pixels every time.

    Each object's colour is its base RGB plus a uniform jitter in ``[-color_jitter, color_jitter]``
    per channel; then Gaussian noise ``N(0, noise_std^2)`` is added to every pixel and clipped.
    """
    meta = sample.meta if isinstance(sample, Sample) else sample
    name = sample.id if isinstance(sample, Sample) else "<meta>"
    if "render" not in meta or "scene" not in meta:
        raise ValueError(f"render: sample {name} has no meta['render'] / meta['scene']; expected "
                         "a ShapesWorld sample")
    spec = meta["render"]
    size, jitter = int(spec["size"]), int(spec["color_jitter"])
    rng = np.random.default_rng(int(spec["seed"]))
    image = Image.new("RGB", (size, size), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in meta["scene"]:
        base = np.asarray(COLORS[obj["color"]]) + rng.integers(-jitter, jitter + 1, size=3)
        fill = tuple(int(v) for v in np.clip(base, 0, 255))
        x, y, r = obj["x"], obj["y"], obj["r"]
        if obj["shape"] == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif obj["shape"] == "square":
            s = round(0.85 * r)
            draw.rectangle([x - s, y - s, x + s, y + s], fill=fill)
        else:
            low = y + round(0.8 * r)
            draw.polygon([(x, y - r), (x - r, low), (x + r, low)], fill=fill)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, float(spec["noise_std"]), size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def load_image(sample: Sample) -> Image.Image:
    """The sample's PNG when ``sample.image`` exists on disk, else :func:`render` (same pixels).
    A PNG that is there but does not decode is a ``BadImageError`` (never re-rendered)."""
    if sample.image is not None and Path(sample.image).is_file():
        from mmboundary.data.images import load_image as load_file

        return load_file(sample.image, sample.id)
    return render(sample)


def write_split(out_dir: str | Path, n: int, split: str, seed: int = 0,
                cfg: WorldConfig | None = None) -> Path:
    """Write ``out_dir/images/<id>.png`` and ``out_dir/<split>.json`` (a JSON list of Samples).

    ``image`` in the JSON is the PNG's path relative to ``out_dir`` (``images/<id>.png``), so the
    folder can move; :func:`read_split` resolves it. Returns the JSON path.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for sample in make_samples(n, seed, split, cfg):
        rel = f"images/{sample.id}.png"
        render(sample).save(out / rel)
        records.append(sample.model_copy(update={"image": rel}).model_dump(mode="json"))
    path = out / f"{split}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=1))
    tmp.replace(path)
    return path


def read_split(path: str | Path) -> list[Sample]:
    """Read a :func:`write_split` JSON; relative image paths resolve against its folder."""
    path = Path(path)
    samples = []
    for i, record in enumerate(json.loads(path.read_text())):
        try:
            sample = Sample.model_validate(record)
        except ValueError as err:
            raise ValueError(f"{path}: record {i}: not a Sample: {err}") from err
        if sample.image is not None and not Path(sample.image).is_absolute():
            sample = sample.model_copy(update={"image": str(path.parent / sample.image)})
        samples.append(sample)
    return samples


# --------------------------------------------------------------------------- shipped checkpoints
def _shipped(name: str) -> Path:
    from importlib import resources

    path = Path(str(resources.files("mmboundary").joinpath("resources", "shapes", name)))
    if not (path / "config.json").is_file():
        command = "pretrain" if name == "vlm" else "pretrain-clip"
        raise FileNotFoundError(f"no shipped ShapesWorld {name} at {path}; rebuild it with "
                                f"`mmboundary world {command} --out {path}`")
    return path


def shipped_world_model_path() -> Path:
    """The shipped pretrained ShapesWorld VLM (see its ``checkpoint_info.json``)."""
    return _shipped("vlm")


def shipped_world_clip_path() -> Path:
    """The shipped pretrained ShapesWorld CLIP (see its ``checkpoint_info.json``)."""
    return _shipped("clip")
