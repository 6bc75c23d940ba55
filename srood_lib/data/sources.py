"""Turning one found layout into arrays: choose the split's files, decode, convert, crop, resize.

Pure with respect to the cache: this module reads sources and returns arrays plus provenance; ``api`` caches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..progress import tqdm
from .cache import sha256_file
from .errors import CorruptDataError
from .formats import CIFAR_FILES, read_cifar, read_idx, read_svhn
from .images import prepare_image_bytes, resize_array
from .registry import DatasetSpec, Layout
from .trees import ImageTree

PROGRESS_MIN_FILES = 500  # below this a progress bar is only noise
CELEBA_PARTITION_FILE = "list_eval_partition.txt"
CELEBA_PARTITION_CODES = {"train": 0, "val": 1, "test": 2}
CELEBA_TRAIN_FRACTION = 0.8
DTD_FULL = (47, 5640)


@dataclass
class Built:
    """Arrays of one (dataset, split, resolution) plus what the manifest should say about where they came from."""

    images: np.ndarray
    labels: np.ndarray
    info: dict = field(default_factory=dict)


def build_from_layout(spec: DatasetSpec, layout: Layout, root: Path, split: str, resolution: int,
                      progress: bool = True) -> Built:
    """Read ``layout`` under ``root`` for ``split`` and return RxR RGB uint8 images with int64 labels."""
    path = layout.path(root, split)
    if layout.fmt == "tree":
        built = build_tree(spec, path, split, resolution, progress)
    elif layout.fmt in CIFAR_FILES:
        images, labels, classes, files = read_cifar(path, layout.fmt, split)
        built = _from_arrays(images, labels, files, resolution, progress, spec.name)
        built.info["classes"] = classes
    elif layout.fmt == "svhn":
        images, labels, files = read_svhn(path)
        built = _from_arrays(images, labels, files, resolution, progress, spec.name)
        built.info["classes"] = [str(d) for d in range(10)]
    elif layout.fmt == "idx":
        images, labels, files = read_idx(path, split)
        built = _from_arrays(images, labels, files, resolution, progress, spec.name)
    else:
        raise ValueError(f"unknown layout format {layout.fmt!r}")
    built.info.update(source=str(path), layout=layout.relpath.format(split=split), layout_format=layout.fmt)
    built.info.setdefault("transform", spec.transform)
    built.info.setdefault("split_rule", spec.split_rule)
    return built


def _from_arrays(images: np.ndarray, labels: np.ndarray, files: list[Path], resolution: int, progress: bool,
                 name: str) -> Built:
    """Native arrays -> (N, R, R, 3): resize each image (PIL bicubic) when R differs; grey replicated to RGB."""
    native = images.shape[1]
    is_grey = images.ndim == 3
    if native != resolution:
        bar = tqdm(images, desc=f"resize {name} {native}->{resolution}", unit="img",
                   disable=not progress or len(images) < PROGRESS_MIN_FILES)
        images = np.stack([resize_array(image, resolution) for image in bar]) if len(images) else \
            np.empty((0, resolution, resolution) + images.shape[3:], np.uint8)
    if is_grey:  # replicate the channel
        images = np.repeat(images[..., None], 3, axis=3)
    grey = f"{native}x{native} grey replicated to RGB" if is_grey else f"native {native}x{native} RGB"
    resize = "no resize" if native == resolution else f"PIL bicubic resize {native}->{resolution}"
    info = {"source_files": {p.name: sha256_file(p) for p in files},
            "transform": f"{grey}; {resize}"}
    if len(files) == 1:
        info["source_sha256"] = info["source_files"][files[0].name]
    return Built(np.ascontiguousarray(images, dtype=np.uint8), labels.astype(np.int64), info)


def build_tree(spec: DatasetSpec, path: Path, split: str, resolution: int, progress: bool = True) -> Built:
    """A folder or zip of image files -> the split's images, chosen and labelled by ``spec.select``."""
    with ImageTree(path) as tree:
        names, labels, info = select_files(spec, tree, split)
        if spec.label_table is not None:
            labels = _table_labels(spec, path, names, info)
        images = decode_files(tree, names, resolution, spec.crop, progress, f"{spec.name} {split}")
    info["source_sha256"] = sha256_file(path) if path.is_file() else None
    info["source_file_count"] = len(tree.names())
    if spec.name == "texture":
        classes = info.get("classes") or []
        full = len(classes) >= DTD_FULL[0] and len(names) >= DTD_FULL[1]
        info["notes"] = ("full DTD" if full else "partial DTD") + \
            f": {len(classes)} of {DTD_FULL[0]} classes, {len(names)} of {DTD_FULL[1]:,} images"
    elif spec.notes:
        info["notes"] = spec.notes
    transform = "decoded to RGB uint8 (grey replicated, palette looked up, alpha composited on white, 16-bit scaled); "
    transform += "CelebA face box (19,39,159,179)/(178,218) scaled to the image" if spec.crop == "celeba_box" \
        else "centre square crop"
    info["transform"] = transform + f"; PIL bicubic resize to {resolution}x{resolution}"
    return Built(images, np.asarray(labels, dtype=np.int64), info)


def decode_files(tree: ImageTree, names: list[str], resolution: int, crop: str, progress: bool = True,
                 desc: str = "decode") -> np.ndarray:
    """Decode and prepare every named file into one (N, R, R, 3) uint8 array, in the given order."""
    out = np.empty((len(names), resolution, resolution, 3), dtype=np.uint8)
    bar = tqdm(names, desc=desc, unit="img", disable=not progress or len(names) < PROGRESS_MIN_FILES)
    for i, name in enumerate(bar):
        out[i] = prepare_image_bytes(tree.read(name), tree.where(name), resolution, crop)
    return out


def select_files(spec: DatasetSpec, tree: ImageTree, split: str) -> tuple[list[str], list[int], dict]:
    """The split's file names (in order), their labels (-1 = none) and split facts for the manifest."""
    names = tree.names()
    if spec.select == "class_split":
        return _select_class_split(names, split, spec.splits)
    if spec.select == "class_all":
        classes = sorted({_parts(n)[-2] if len(_parts(n)) >= 2 else "" for n in names})
        return names, [classes.index(_parts(n)[-2] if len(_parts(n)) >= 2 else "") for n in names], \
            {"classes": classes}
    if spec.select == "all":
        return names, [-1] * len(names), {}
    if spec.select == "every_fifth":
        ordered = sorted(names, key=lambda n: (PurePosixPath(n).name, n))
        chosen = [n for i, n in enumerate(ordered) if (i % 5 == 4) == (split == "test")]
        return chosen, [-1] * len(chosen), {}
    if spec.select == "celeba":
        return _select_celeba(tree, names, split)
    raise ValueError(f"unknown selection rule {spec.select!r}")


def _table_labels(spec: DatasetSpec, source: Path, names: list[str], info: dict) -> list[int]:
    """Labels of ``names`` from ``spec.label_table``'s CSV beside ``source`` (a file stem per row); every image
    must have a row. Without the CSV the images stay unlabelled (-1), and the manifest says why."""
    import csv

    file, key, column = spec.label_table
    table = source.parent / file
    if not table.is_file():
        info["labels"] = f"none (-1): no {file} beside {source}"
        return [-1] * len(names)
    with open(table, newline="", encoding="utf-8") as f:
        rows = {row[key]: row[column] for row in csv.DictReader(f)}
    stems = [PurePosixPath(n).stem for n in names]
    lacking = [s for s in stems if s not in rows]
    if lacking:
        raise CorruptDataError(f"{table} has no {column} for {len(lacking)} image(s) of {source}, e.g. "
                               f"{lacking[:3]}; fix the table or remove it (the images are then unlabelled)",
                               str(table))
    classes = sorted({rows[s] for s in stems} | set(rows.values()))
    info.update(classes=classes, label_table=table.name, label_table_sha256=sha256_file(table),
                labels=f"{column} of {table.name}: index among its {len(classes)} values, sorted by name")
    return [classes.index(rows[s]) for s in stems]


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(name).parts


def _select_class_split(names: list[str], split: str, splits: tuple[str, ...]):
    """Files at ``<...>/<split>/<class>/<file>``; label = index of <class> among all splits' classes, sorted."""
    in_splits = [n for n in names if len(_parts(n)) >= 3 and _parts(n)[-3] in splits]
    classes = sorted({_parts(n)[-2] for n in in_splits})
    chosen = [n for n in in_splits if _parts(n)[-3] == split]
    return chosen, [classes.index(_parts(n)[-2]) for n in chosen], {"classes": classes}


def _celeba_id(tree: ImageTree, name: str) -> int:
    stem = PurePosixPath(name).stem
    if not stem.isdigit():
        raise CorruptDataError(f"{tree.where(name)}: CelebA image names must be numeric ids like 000001.jpg",
                               tree.where(name))
    return int(stem)


def _select_celeba(tree: ImageTree, names: list[str], split: str):
    """Official partitions when list_eval_partition.txt is there; otherwise the first 80% of ids train."""
    by_id = sorted(names, key=lambda n: (_celeba_id(tree, n), n))
    partition_text = tree.find_file(CELEBA_PARTITION_FILE)
    if partition_text is not None:
        partition = _parse_partition(partition_text, tree.where(CELEBA_PARTITION_FILE))
        code = CELEBA_PARTITION_CODES[split]
        chosen = [n for n in by_id if partition.get(PurePosixPath(n).name) == code]
        rule = f"official {CELEBA_PARTITION_FILE}: partition {code} ({split})"
    else:
        cut = int(len(by_id) * CELEBA_TRAIN_FRACTION)
        chosen = by_id[:cut] if split == "train" else by_id[cut:]
        rule = (f"no {CELEBA_PARTITION_FILE}: images sorted by id, first {CELEBA_TRAIN_FRACTION:.0%} "
                f"({cut} of {len(by_id)}) train, the rest test")
    ids = [_celeba_id(tree, n) for n in chosen]
    info = {"split_rule": rule, "id_range": [min(ids), max(ids)] if ids else None}
    return chosen, [-1] * len(chosen), info


def _parse_partition(text: bytes, where: str) -> dict[str, int]:
    partition = {}
    try:
        for line in text.decode().splitlines():
            if line.strip():
                file_name, code = line.split()
                partition[file_name] = int(code)
    except ValueError as exc:
        raise CorruptDataError(f"{where}: expected lines '<file> <0|1|2>' ({exc})", where) from exc
    return partition
