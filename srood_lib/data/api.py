"""The public loaders: named datasets and arbitrary image folders, through the cache; plus status and hashing."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..config import local_data_dir
from .cache import entry_paths, load_entry, raw_dir, save_entry, sha256_file
from .download import fetch, official_url
from .errors import CorruptDataError, DatasetMissingError, ImageTooSmallError
from .images import IMAGE_EXTENSIONS, crop_and_resize, decode_image, to_rgb
from .registry import DATASETS, DatasetSpec, get_spec
from .sources import Built, build_from_layout, decode_files
from .trees import ImageTree

LOCAL_LABEL = "local data dir"
RAW_LABEL = "official download"
LOOKED_LABELS = {LOCAL_LABEL: LOCAL_LABEL, RAW_LABEL: "earlier official download"}


@dataclass
class ImageSet:
    """uint8 images (N, H, W, 3), int64 labels (N,) (-1 = none) and the manifest describing where they came from."""

    images: np.ndarray
    labels: np.ndarray
    manifest: dict
    name: str
    split: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


def load_dataset(name: str | os.PathLike, split: str | None = None, resolution: int = 32,
                 data_dir: str | os.PathLike | None = None, download: bool | None = None, progress: bool = True,
                 refresh: bool = False) -> ImageSet:
    """Load one split of a named dataset (see ``DATASETS``) at ``resolution`` x ``resolution``, via the cache.

    Looks in the cache, then the local data dir (``data_dir`` or ``SROOD_DATA_DIR``), then earlier official
    downloads under ``cache_dir()/raw``; downloads only when ``download=True`` (default: when the environment
    variable ``SROOD_DOWNLOAD`` is ``1``, as ``./run_all.sh`` sets it unless ``--offline``). ``name`` may instead be the path
    of an image folder or .zip (``split`` is then ignored). ``split`` may be omitted for one-split datasets.
    ``refresh=True`` rebuilds the cache entry from the source.
    """
    if _is_path_like(name):
        return load_image_folder(name, resolution, progress=progress, refresh=refresh)
    if download is None:  # run_all.sh sets SROOD_DOWNLOAD=1 for the whole run (0 with --offline)
        download = os.environ.get("SROOD_DOWNLOAD") == "1"
    spec = get_spec(str(name))
    split = _check_split(spec, split)
    resolution = _check_resolution(resolution)
    npz_path, json_path = entry_paths(spec.name, split, resolution)
    if not refresh:
        hit = load_entry(npz_path, json_path)
        if hit is not None and spec.label_table is not None and "label_table" not in hit[2] \
                and "labels" in hit[2] and not str(hit[2]["labels"]).startswith("none (-1): no "):
            hit = None  # written before labels came from a side table: rebuild once
        if hit is not None:
            return ImageSet(hit[0], hit[1], hit[2], spec.name, split)
    if spec.derived_from is not None:
        built = _derive(spec, resolution, data_dir, download, progress, refresh)
    else:
        built = _build(spec, split, resolution, data_dir, download, progress)
    labels = built.info.pop("labels", "class index" if (built.labels >= 0).any() else "none (-1)")
    manifest = {"name": spec.name, "split": split, "resolution": resolution, **built.info, "labels": labels,
                "official_source": spec.official, "created_utc": _now()}
    manifest = save_entry(npz_path, json_path, built.images, built.labels, manifest)
    return ImageSet(built.images, built.labels, manifest, spec.name, split)


def load_image_folder(path: str | os.PathLike, resolution: int = 32, progress: bool = True,
                      refresh: bool = False) -> ImageSet:
    """Any folder of images, or a .zip of one, as a dataset (split ``all``, labels -1), cached by content hash.

    Same conversions as the named datasets: RGB uint8 (alpha composited on white), centre square crop, PIL
    bicubic resize to ``resolution``. Files are taken in sorted relative-path order.
    """
    resolution = _check_resolution(resolution)
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetMissingError(f"image folder or zip {path} does not exist; pass an existing folder of images "
                                  f"or a .zip of one (or a dataset name: {', '.join(DATASETS)})")
    if path.is_file() and path.suffix.lower() != ".zip":
        raise ValueError(f"{path} is a file but not a .zip; pass a folder of images or a .zip of one")
    with ImageTree(path) as tree:
        names = tree.names()
        if not names:
            raise DatasetMissingError(f"{path} holds no image files (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        key = f"folder-{tree.content_hash()[:16]}"
        npz_path, json_path = entry_paths(key, "all", resolution)
        hit = None if refresh else load_entry(npz_path, json_path)
        if hit is not None:
            return ImageSet(hit[0], hit[1], hit[2], path.stem, "all")
        images = decode_files(tree, names, resolution, "center_square", progress, path.name)
    manifest = {"name": key, "split": "all", "resolution": resolution, "origin": "image folder",
                "source": str(path), "source_sha256": sha256_file(path) if path.is_file() else None,
                "source_file_count": len(names), "split_rule": "all images, sorted by relative path",
                "transform": "decoded to RGB uint8 (alpha composited on white, 16-bit scaled); centre square crop; "
                             f"PIL bicubic resize to {resolution}x{resolution}",
                "labels": "none (-1)", "created_utc": _now()}
    labels = np.full(len(images), -1, dtype=np.int64)
    manifest = save_entry(npz_path, json_path, images, labels, manifest)
    return ImageSet(images, labels, manifest, path.stem, "all")


@dataclass
class ImageFiles:
    """A user's images as scored: uint8 (N, R, R, 3), each one's relative path, and the files left out (path,
    reason)."""

    images: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]]


def read_image_files(path: str | os.PathLike, resolution: int, skip_unreadable: bool = False,
                     upsample: bool = False, progress: bool = True) -> ImageFiles:
    """One image file, a folder of images or a .zip of one, prepared like every dataset (RGB, centre square crop,
    bicubic resize), uncached, keeping every file's relative path.

    A file that cannot be decoded raises ``CorruptDataError`` naming it, or is skipped (and listed) with
    ``skip_unreadable``. An image whose shorter side is below ``resolution`` raises ``ImageTooSmallError`` unless
    ``upsample``: repairing detail the file never had would score the resize, not the image.
    """
    from ..progress import tqdm

    resolution = _check_resolution(resolution)
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetMissingError(f"{path} does not exist; pass an image file, a folder of images or a .zip of one")
    single = path.is_file() and path.suffix.lower() != ".zip"
    if single and path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path} is neither an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) nor a .zip of images")
    tree = ImageTree(path.parent if single else path)
    with tree:
        names = [path.name] if single else tree.names()
        if not names:
            raise DatasetMissingError(f"{path} holds no image files (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        kept, arrays, skipped = [], [], []
        for name in tqdm(names, desc="read", unit="img", disable=not progress or len(names) < 100):
            where = tree.where(name)
            try:
                image = to_rgb(decode_image(tree.read(name), where), where)
            except CorruptDataError as err:
                if not skip_unreadable:
                    raise CorruptDataError(f"{err} (or pass --skip-unreadable to leave such files out)",
                                           where) from None
                skipped.append((name, str(err)))
                continue
            if min(image.size) < resolution and not upsample:
                raise ImageTooSmallError(f"{where} is {image.size[0]}x{image.size[1]} px, smaller than the detector's "
                                         f"{resolution} px; pass images at least {resolution} px on a side (or "
                                         "--upsample to enlarge them anyway)", where)
            kept.append(name)
            arrays.append(crop_and_resize(image, resolution, "center_square"))
    if not kept:
        raise DatasetMissingError(f"none of the {len(names)} image files under {path} could be read")
    return ImageFiles(np.stack(arrays), kept, skipped)


def _build(spec: DatasetSpec, split: str, resolution: int, data_dir, download: bool, progress: bool) -> Built:
    """Find the first present layout (local data dir, then earlier downloads), else download if allowed."""
    looked = [f"cache: {entry_paths(spec.name, split, resolution)[0]} (absent)"]
    local = local_data_dir(data_dir)
    roots = [(LOCAL_LABEL, local)] if local is not None else []
    roots.append((RAW_LABEL, raw_dir()))
    if local is None:
        looked.append(f"{LOCAL_LABEL}: not set (no data_dir / --data-dir given and SROOD_DATA_DIR is unset)")
    elif not local.is_dir():
        looked.append(f"{LOCAL_LABEL}: {local} does not exist")
    for label, root in roots:
        built = _build_first_present(spec, split, resolution, label, root, progress, looked)
        if built is not None:
            return built
    if not download:
        looked.append("official download: not attempted (download=False)")
        raise DatasetMissingError(_missing_message(spec, split, resolution, looked))
    try:
        fetch(spec.name, split, raw_dir())
    except Exception as exc:  # no network, server gone, bad archive: all end the same way for the caller
        looked.append(f"official download: {official_url(spec.name)} into {raw_dir()} FAILED: {exc!r}")
        raise DatasetMissingError(_missing_message(spec, split, resolution, looked)) from exc
    built = _build_first_present(spec, split, resolution, RAW_LABEL, raw_dir(), progress, [])
    if built is None:
        looked.append(f"official download: {official_url(spec.name)} finished but none of the expected "
                      f"layouts appeared under {raw_dir()}")
        raise DatasetMissingError(_missing_message(spec, split, resolution, looked))
    return built


def _build_first_present(spec, split, resolution, label, root, progress, looked) -> Built | None:
    for layout in spec.layouts:
        if not layout.present(root, split):
            looked.append(f"{LOOKED_LABELS[label]}: {layout.describe(root, split)} (absent)")
            continue
        built = build_from_layout(spec, layout, root, split, resolution, progress)
        if len(built.images) == 0:
            raise DatasetMissingError(f"dataset {spec.name!r}: {layout.describe(root, split)} exists but holds no "
                                      f"images for split {split!r} (split rule: {built.info.get('split_rule')})")
        built.info["origin"] = label
        return built
    return None


def _derive(spec: DatasetSpec, resolution: int, data_dir, download: bool, progress: bool, refresh: bool) -> Built:
    """vflip: the base split (through the cache) with its rows reversed."""
    base_name, base_split = spec.derived_from
    try:
        base = load_dataset(base_name, base_split, resolution, data_dir, download, progress, refresh)
    except DatasetMissingError as exc:
        raise DatasetMissingError(f"dataset {spec.name!r} is derived from {base_name} {base_split}, which is "
                                  f"missing:\n{exc}") from exc
    images = np.ascontiguousarray(base.images[:, ::-1])
    info = {"origin": "derived", "source": f"{base_name} {base_split} {resolution}px (sha256 {base.manifest['sha256']})",
            "derived_from": {"name": base_name, "split": base_split, "sha256": base.manifest["sha256"],
                             "source": base.manifest.get("source")},
            "split_rule": spec.split_rule, "transform": spec.transform}
    return Built(images, base.labels.copy(), info)


def _missing_message(spec: DatasetSpec, split: str, resolution: int, looked: list[str]) -> str:
    layouts = ", ".join(layout.relpath.format(split=split) for layout in spec.layouts)
    return (f"dataset {spec.name!r} split {split!r} at {resolution} px is not available. Looked in:\n"
            + "".join(f"  - {line}\n" for line in looked)
            + f"To provide it: set SROOD_DATA_DIR=<folder> (or pass data_dir=... / --data-dir <folder>) to a folder "
              f"holding one of: {layouts}; or allow the official download with "
              f"load_dataset({spec.name!r}, {split!r}, download=True) / ./run_all.sh (which downloads unless --offline) on a "
              f"machine with internet access (source: {spec.official}).")


def dataset_status(data_dir: str | os.PathLike | None = None, resolution: int = 32):
    """One row per (dataset, split): available?, where from, or why missing. Checks presence only, decodes nothing."""
    import pandas as pd

    rows = [_status_row(spec, split, resolution, data_dir) for spec in DATASETS.values() for split in spec.splits]
    table = pd.DataFrame(rows, columns=["dataset", "split", "resolution", "available", "origin", "where", "count",
                                        "detail"])
    table["count"] = table["count"].astype("Int64")  # missing counts stay <NA>, not NaN floats
    return table


def _status_row(spec: DatasetSpec, split: str, resolution: int, data_dir) -> dict:
    row = {"dataset": spec.name, "split": split, "resolution": resolution, "available": False, "origin": "",
           "where": "", "count": None, "detail": ""}
    npz_path, json_path = entry_paths(spec.name, split, resolution)
    if npz_path.is_file() and json_path.is_file():
        try:
            manifest = json.loads(json_path.read_text())
            return {**row, "available": True, "origin": "cache", "where": str(npz_path),
                    "count": manifest.get("count"), "detail": f"cached from {manifest.get('source')}"}
        except (OSError, ValueError):
            pass  # unreadable manifest: fall through to the sources, as load_dataset would
    if spec.derived_from is not None:
        base = _status_row(get_spec(spec.derived_from[0]), spec.derived_from[1], resolution, data_dir)
        detail = f"derived from {' '.join(spec.derived_from)}: " + (
            f"available ({base['origin']}: {base['where']})" if base["available"] else base["detail"])
        return {**row, "available": base["available"], "origin": "derived" if base["available"] else "",
                "where": base["where"], "detail": detail}
    local = local_data_dir(data_dir)
    roots = ([(LOCAL_LABEL, local)] if local is not None else []) + [(RAW_LABEL, raw_dir())]
    for label, root in roots:
        for layout in spec.layouts:
            if layout.present(root, split):
                return {**row, "available": True, "origin": label, "where": layout.describe(root, split),
                        "detail": "found; decoded and cached on first load"}
    local_text = "no local data dir set (SROOD_DATA_DIR / --data-dir)" if local is None else \
        f"none of {', '.join(layout.relpath.format(split=split) for layout in spec.layouts)} in {local}"
    return {**row, "detail": f"missing: not cached; {local_text}; not downloaded under {raw_dir()} "
                             f"(fix: set SROOD_DATA_DIR, or ./run_all.sh / load_dataset(..., download=True) online)"}


def subsample_indices(count: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the first ``n`` of a seeded permutation of ``count`` items (all when ``n`` is None or
    >= count): the one subsampling rule of the workbook."""
    if n is None or n >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, count]).permutation(count)[:n])


def subsample(image_set: ImageSet, n: int | None, seed: int) -> ImageSet:
    """The first ``n`` images of a seeded permutation (all when ``n`` is None or >= len); the manifest records
    the subset, so ``data_hash`` tells subsets apart."""
    if n is None or n >= len(image_set):
        return image_set
    idx = subsample_indices(len(image_set), n, seed)
    outer = image_set.manifest.get("subsample")  # a subset of a subset names both, so its hash tells them apart
    manifest = {**image_set.manifest, "subsample": {"n": int(n), "seed": int(seed), **({"of": outer} if outer else {})}}
    return ImageSet(image_set.images[idx], image_set.labels[idx], manifest, image_set.name, image_set.split)


def data_hash(*image_sets) -> str:
    """A short hash of the given sets' manifests (name, split, resolution, sha256), in order, for results rows.

    A ``subsample`` entry in a manifest (added by callers that take a subset) is part of the hash too, and so is a
    ``transform`` entry (added by callers that change the images, e.g. the JPEG control).
    """
    if not image_sets:
        raise ValueError("data_hash needs at least one ImageSet (or manifest dict)")
    parts = []
    for item in image_sets:
        manifest = item.manifest if isinstance(item, ImageSet) else item
        part = f"{manifest['name']}/{manifest['split']}/{manifest['resolution']}:{manifest['sha256']}"
        if manifest.get("subsample") is not None:
            part += " subsample=" + json.dumps(manifest["subsample"], sort_keys=True)
        if manifest.get("transform") is not None:
            part += " transform=" + json.dumps(manifest["transform"], sort_keys=True)
        parts.append(part)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _is_path_like(name) -> bool:
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    return text not in DATASETS and ("/" in text or os.sep in text or text.lower().endswith(".zip")
                                     or Path(text).exists())


def _check_split(spec: DatasetSpec, split: str | None) -> str:
    if split is None:
        if len(spec.splits) == 1:
            return spec.splits[0]
        raise ValueError(f"dataset {spec.name!r} has splits {spec.splits}; pass one")
    if split not in spec.splits:
        raise ValueError(f"dataset {spec.name!r} has no split {split!r}; its splits are {spec.splits}")
    return split


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer (pixels per side); got {resolution!r}")
    return int(resolution)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
