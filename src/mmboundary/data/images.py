"""Find a sample's image in a user's images folder, and load it.

The annotated files name images by id only (COCO ``image_id`` for A-OKVQA, the record id for
CulturalVQA and ScienceQA); the pixels live in a folder the user supplies. Layouts tried, in order:

- a relative path given as the id itself (``val2017/000000377368.jpg``);
- COCO 2017 (numeric ids): ``{split}2017/{id:012d}.jpg``, then ``val2017/``, ``train2017/``,
  ``test2017/``, then ``{id:012d}.jpg`` directly, then COCO 2014 (``val2014/COCO_val2014_...jpg``);
- ``{id}.jpg``, ``{id}.png``, ``{id}.jpeg`` directly in the folder (and in ``{split}/``);
- ScienceQA: ``{split}/{id}/image.png`` and ``{id}/image.png``.

A missing image is a ``MissingImageError`` naming the record and every path tried: an image is never
substituted. A file that is there but is not a decodable image (text renamed ``.jpg``, a 0-byte or
truncated PNG) is a ``BadImageError`` naming the record, the file and what PIL said:
``load_image`` and ``check_image`` verify the file, then decode every pixel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mmboundary.data.schema import Sample

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
COCO_SPLITS = ("val", "train", "test")


class MissingImageError(FileNotFoundError):
    """No file for a record's image: names the record, its image id and the paths tried."""

    def __init__(self, record_id: str | None, image_id: str | None, tried: list[Path],
                 reason: str = "not found", images_dir: str | os.PathLike[str] | None = None
                 ) -> None:
        self.record_id = record_id
        self.image_id = image_id
        self.tried = tried
        what = f"image of record {record_id!r}" if record_id is not None else "image"
        where = f" in {images_dir}" if images_dir is not None else ""
        shown = ", ".join(_short(p, images_dir) for p in tried) or "(no candidate path)"
        super().__init__(f"{what} (image_id {image_id!r}) {reason}{where}; "
                         f"tried: {shown}")


class BadImageError(ValueError):
    """A record's image file exists but cannot be decoded: names the record, the file, the reason."""

    def __init__(self, record_id: str | None, path: str | os.PathLike[str], reason: str) -> None:
        what = f"image of record {record_id!r}" if record_id is not None else "image"
        super().__init__(f"{what}: {path} is not a readable image: {reason}")
        self.record_id, self.path, self.reason = record_id, str(path), reason


def _short(path: Path, root: str | os.PathLike[str] | None) -> str:
    """``path`` relative to ``root`` when it lies inside it (keeps error messages readable)."""
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _dedupe(paths: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def candidate_paths(
    image_id: str | int,
    images_dir: str | os.PathLike[str],
    split: str | None = None,
    filename: str | None = None,
) -> list[Path]:
    """Every path ``resolve_image`` tries for ``image_id`` under ``images_dir``, in order.

    ``filename`` is the per-record file name some datasets give (ScienceQA's ``"image.png"``).

    >>> [str(p) for p in candidate_paths(377368, "coco", split="val")[:2]]
    ['coco/val2017/000000377368.jpg', 'coco/train2017/000000377368.jpg']
    """
    root = Path(images_dir)
    key = str(image_id).strip()
    paths: list[Path] = []
    if "/" in key or key.lower().endswith(IMAGE_SUFFIXES):
        paths.append(root / key)
    if key.isdigit():
        coco = f"{int(key):012d}.jpg"
        splits = [split] if split in COCO_SPLITS else []
        splits += [s for s in COCO_SPLITS if s != split]
        paths += [root / f"{s}2017" / coco for s in splits]
        paths.append(root / coco)
        paths += [root / f"{s}2014" / f"COCO_{s}2014_{coco}" for s in splits]
    folders = [root] + ([root / split] if split else [])
    paths += [folder / f"{key}{suffix}" for folder in folders for suffix in IMAGE_SUFFIXES]
    names = [filename] if filename else []
    names += ["image.png"] if "image.png" not in names else []
    paths += [folder / key / name for folder in reversed(folders) for name in names]
    return _dedupe(paths)


def resolve_image(
    image: Sample | str | int,
    images_dir: str | os.PathLike[str] | None,
    split: str | None = None,
) -> Path:
    """The path of an image: from a ``Sample`` (its ``image`` path if set and present, else its
    ``image_id``, ``meta["split"]`` and ``meta["image_file"]``) or from a bare image id.

    Raises ``MissingImageError`` (naming the record and the paths tried) when no file exists.
    """
    record_id: str | None = None
    filename: str | None = None
    tried: list[Path] = []
    if isinstance(image, Sample):
        record_id = image.id
        if image.image is not None:
            direct = Path(image.image)
            candidates = [direct] if direct.is_absolute() or images_dir is None else [
                Path(images_dir) / direct, direct]
            for path in candidates:
                if path.is_file():
                    return path
            tried += candidates
        split = split or image.meta.get("split")
        filename = image.meta.get("image_file")
        image_id: str | int | None = image.image_id
    else:
        image_id = image
    if image_id is None:
        raise MissingImageError(record_id, None, tried, reason="has no image_id to look up")
    if images_dir is None:
        raise MissingImageError(record_id, str(image_id), tried, reason="needs an images folder")
    if not Path(images_dir).is_dir():
        raise MissingImageError(record_id, str(image_id), tried,
                                reason=f"cannot be found: images folder {images_dir} does not exist")
    candidates = candidate_paths(image_id, images_dir, split=split, filename=filename)
    for path in candidates:
        if path.is_file():
            return path
    raise MissingImageError(record_id, str(image_id), tried + candidates, images_dir=images_dir)


def load_image(path: str | os.PathLike[str], record_id: str | None = None) -> Image.Image:
    """Open an image file as an RGB ``PIL.Image`` (pixels loaded, file closed).

    Raises ``BadImageError`` (naming ``record_id`` and the file) when the file is empty, not an
    image, or truncated; ``FileNotFoundError`` when it does not exist.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MissingImageError(record_id, None, [path], reason=f"not found: {path}")
    if path.stat().st_size == 0:
        raise BadImageError(record_id, path, "the file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums; the object is unusable afterwards
        with Image.open(path) as img:
            img.load()  # every pixel: a truncated file fails here
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(record_id, path, f"{type(err).__name__}: {err}") from None


def check_image(path: str | os.PathLike[str], record_id: str | None = None) -> None:
    """Raise ``BadImageError`` / ``MissingImageError`` unless ``path`` decodes as an image."""
    load_image(path, record_id)
