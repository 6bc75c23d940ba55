"""The named datasets: splits, official source, accepted local layouts and the exact transform of each.

A *layout* is one on-disk form a dataset can take under a root folder. Roots searched, in order: the local data
dir (``SROOD_DATA_DIR`` / ``--data-dir``), then ``cache_dir()/raw`` (where ``download=True`` puts the official
files, which unpack into the same layouts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats import CIFAR_FILES, IDX_FILES, idx_path

POKEGAN_COMMIT = "dcd2f0b726cb0c1b4889b6fe84735baea30b22f8"
ODIN_URLS = {
    "lsun": "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz",
    "lsun_resize": "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz",
    "isun": "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz",
}
POKEMON_URL = f"https://github.com/adgiz05/pokeGAN/archive/{POKEGAN_COMMIT}.zip"

# fmt values: "tree" (folder or .zip of image files), "cifar10", "cifar100" (python pickles), "svhn" (.mat),
# "idx" (MNIST-style idx files, optionally .gz).


@dataclass(frozen=True)
class Layout:
    """One on-disk form: ``relpath`` under a root (``{split}`` is filled in) and the format found there."""

    relpath: str
    fmt: str

    def path(self, root: Path, split: str) -> Path:
        return root / self.relpath.format(split=split)

    def present(self, root: Path, split: str) -> bool:
        """Cheap presence check (no decoding) for this split."""
        path = self.path(root, split)
        if self.fmt in CIFAR_FILES:
            return path.is_dir() and all((path / n).is_file() for n in CIFAR_FILES[self.fmt][split])
        if self.fmt == "idx":
            return path.is_dir() and all(idx_path(path, base) is not None for base in IDX_FILES[split])
        if self.fmt == "svhn":
            return path.is_file()
        return path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip")

    def describe(self, root: Path, split: str) -> str:
        path = self.path(root, split)
        if self.fmt in CIFAR_FILES:
            return f"{path}/ ({', '.join(CIFAR_FILES[self.fmt][split])})"
        if self.fmt == "idx":
            return f"{path}/ ({' + '.join(f'{b}[.gz]' for b in IDX_FILES[split])})"
        return str(path) + ("/" if self.fmt == "tree" and path.suffix != ".zip" else "")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything about one named dataset except its pixels."""

    name: str
    title: str
    splits: tuple[str, ...]
    official: str  # human description of the official source
    layouts: tuple[Layout, ...] = ()
    select: str = "all"  # how tree files map to splits/labels: class_split, class_all, all, every_fifth, celeba
    crop: str = "center_square"
    split_rule: str = ""
    transform: str = ""
    derived_from: tuple[str, str] | None = None  # (dataset, split) this one is computed from
    notes: str = ""
    # (csv file beside the source, its image-name column, its label column): class labels from a side table
    label_table: tuple[str, str, str] | None = None


def _class_tree_layouts(name: str) -> tuple[Layout, ...]:
    return (Layout(f"{name}.zip", "tree"), Layout(name, "tree"))


RESIZE = "PIL bicubic resize to RxR (identity at the native size; antialiased when shrinking)"
ARRAY_TRANSFORM = f"native 32x32 RGB; {RESIZE}"
TREE_RGB = "decoded to RGB uint8 (grey replicated, palette looked up, alpha composited on white, 16-bit scaled)"

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec(
        "cifar10", "CIFAR-10", ("train", "test"),
        "torchvision.datasets.CIFAR10(download=True): https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        _class_tree_layouts("cifar10") + (Layout("cifar-10-batches-py", "cifar10"),),
        select="class_split",
        split_rule="official train (50,000) / test (10,000). Image-folder copies: train/<class>/*, test/<class>/*, "
                   "labels = index of the class folder in sorted order (= the official label order)",
        transform=f"{TREE_RGB} (folder copies); {ARRAY_TRANSFORM}",
        notes="the offline cifar10.zip is a JPEG q75 re-encoding of the lossless official set"),
    DatasetSpec(
        "cifar100", "CIFAR-100", ("train", "test"),
        "torchvision.datasets.CIFAR100(download=True): https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        _class_tree_layouts("cifar100") + (Layout("cifar-100-python", "cifar100"),),
        select="class_split", split_rule="official train (50,000) / test (10,000); labels = the 100 fine labels",
        transform=f"{TREE_RGB} (folder copies); {ARRAY_TRANSFORM}"),
    DatasetSpec(
        "svhn", "SVHN (cropped digits)", ("train", "test"),
        "torchvision.datasets.SVHN(download=True): http://ufldl.stanford.edu/housenumbers/{train,test}_32x32.mat",
        (Layout("svhn/{split}_32x32.mat", "svhn"), Layout("{split}_32x32.mat", "svhn"),
         Layout("SVHN/{split}_32x32.mat", "svhn")) + _class_tree_layouts("svhn"),
        select="class_split", split_rule="official train (73,257) / test (26,032); label 10 in the .mat means digit 0",
        transform=ARRAY_TRANSFORM),
    DatasetSpec(
        "mnist", "MNIST", ("train", "test"),
        "torchvision.datasets.MNIST(download=True): idx files from the torchvision mirrors",
        (Layout("MNIST/raw", "idx"),) + _class_tree_layouts("mnist"),
        select="class_split", split_rule="official train (60,000) / test (10,000)",
        transform=f"28x28 grey replicated to RGB; {RESIZE}"),
    DatasetSpec(
        "fashionmnist", "Fashion-MNIST", ("train", "test"),
        "torchvision.datasets.FashionMNIST(download=True): idx files from the Zalando S3 bucket",
        (Layout("FashionMNIST/raw", "idx"),) + _class_tree_layouts("fashionmnist"),
        select="class_split", split_rule="official train (60,000) / test (10,000)",
        transform=f"28x28 grey replicated to RGB; {RESIZE}"),
    DatasetSpec(
        "texture", "Describable Textures (DTD)", ("test",),
        "torchvision.datasets.DTD(download=True): "
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz (all 47 classes read)",
        (Layout("dtd.zip", "tree"), Layout("dtd", "tree"), Layout("texture.zip", "tree"), Layout("texture", "tree")),
        select="class_all",
        split_rule="test = every image available, sorted by <class>/<file>; label = index of the class folder "
                   "among the classes present",
        transform=f"{TREE_RGB}; centre square crop; {RESIZE}",
        notes="the offline dtd.zip holds 5 of 47 classes (600 of 5,640 images), pre-cropped to 64x64 PNG"),
    DatasetSpec(
        "celeba", "CelebA (aligned)", ("train", "test"),
        "torchvision.datasets.CelebA(download=True) (Google Drive: img_align_celeba.zip, list_eval_partition.txt)",
        (Layout("celeba.zip", "tree"), Layout("celeba", "tree")),
        select="celeba", crop="celeba_box",
        split_rule="with list_eval_partition.txt present: the official partitions (0 = train, 2 = test). "
                   "Without it (the offline 10,000-image copy, ids 000001-010000, all official train): images "
                   "sorted by id, first 80% train, rest test (= ids 1-8000 train, 8001-10000 test)",
        transform=f"{TREE_RGB}; crop the face box (19, 39, 159, 179) of the 178x218 image, scaled to the copy's "
                  f"size (= (9.5, 19.5, 79.5, 89.5) on the 89x109 half-res copy); {RESIZE}"),
    DatasetSpec(
        "vflip", "CelebA test, flipped upside down", ("test",),
        "derived from celeba test (no source of its own)",
        derived_from=("celeba", "test"), crop="celeba_box",
        split_rule="celeba's test split, same order",
        transform="celeba test at RxR, rows reversed (vertical flip)"),
    DatasetSpec(
        "pokemon", "Pokemon Image Dataset (Kaggle kvpratama)", ("train", "test"),
        f"public copy of the Kaggle 'Pokemon Image Dataset': {POKEMON_URL} (adgiz05/pokeGAN, images/)",
        (Layout("pokemon.zip", "tree"), Layout("pokemon", "tree"), Layout(f"pokeGAN-{POKEGAN_COMMIT}/images", "tree")),
        select="every_fifth", label_table=("pokemon_types.csv", "Name", "Type1"),
        split_rule="files sorted by file name; every 5th (positions 4, 9, 14, ... counting from 0) is test, the "
                   "rest train (809 images -> 648 train / 161 test); label = index of the primary type (Type1 of "
                   "pokemon_types.csv beside the source, types sorted by name; -1 without that file)",
        transform=f"{TREE_RGB}; centre square crop (no-op for the 120x120 images); {RESIZE}"),
    DatasetSpec(
        "lsun", "LSUN (crop), ODIN's OOD set", ("test",),
        f"ODIN tarball {ODIN_URLS['lsun']}",
        (Layout("LSUN", "tree"), Layout("LSUN.zip", "tree"), Layout("lsun", "tree"), Layout("lsun.zip", "tree")),
        split_rule="test = every image, sorted by path",
        transform=f"{TREE_RGB}; centre square crop; {RESIZE}"),
    DatasetSpec(
        "lsun_resize", "LSUN (resize), ODIN's OOD set", ("test",),
        f"ODIN tarball {ODIN_URLS['lsun_resize']}",
        (Layout("LSUN_resize", "tree"), Layout("LSUN_resize.zip", "tree"), Layout("lsun_resize", "tree"),
         Layout("lsun_resize.zip", "tree")),
        split_rule="test = every image, sorted by path",
        transform=f"{TREE_RGB}; centre square crop; {RESIZE}"),
    DatasetSpec(
        "isun", "iSUN, ODIN's OOD set", ("test",),
        f"ODIN tarball {ODIN_URLS['isun']}",
        (Layout("iSUN", "tree"), Layout("iSUN.zip", "tree"), Layout("isun", "tree"), Layout("isun.zip", "tree")),
        split_rule="test = every image, sorted by path",
        transform=f"{TREE_RGB}; centre square crop; {RESIZE}"),
]}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} "
                         "(or pass the path of an image folder or .zip)") from None
