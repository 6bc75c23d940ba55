"""Tests of srood_lib.data on small fixtures written here in each dataset's official on-disk format.

Every loader is exercised, including those whose real data cannot be obtained offline (CIFAR pickles, SVHN .mat,
MNIST idx, ODIN folders). One integration test reads the real offline copies when SROOD_DATA_DIR is set.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import srood_lib.data as data
from srood_lib.data import api, cache, sources
from srood_lib.data.images import prepare_image_bytes

REAL_DATA_DIR = os.environ.get("SROOD_DATA_DIR")  # read before the autouse fixture clears it


@pytest.fixture(autouse=True)
def data_isolated_env(tmp_path, monkeypatch):
    """Every test gets its own empty cache and no local data dir unless it sets one."""
    monkeypatch.setenv("SROOD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SROOD_DATA_DIR", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty local data dir that SROOD_DATA_DIR points at."""
    root = tmp_path / "local"
    root.mkdir()
    monkeypatch.setenv("SROOD_DATA_DIR", str(root))
    return root


# ---------------------------------------------------------------- fixture writers (official formats)

def _rng(seed=0):
    return np.random.default_rng(seed)


def _png_bytes(array, mode=None, **save_args) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(buffer, "PNG", **save_args)
    return buffer.getvalue()


def _write_png(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(array))


def _write_cifar_pickles(folder: Path, variant: str, counts: dict, seed=0):
    """Official python-pickle batches; returns {split: (images (N,32,32,3), labels)}."""
    folder.mkdir(parents=True)
    rng = _rng(seed)
    label_key = b"labels" if variant == "cifar10" else b"fine_labels"
    n_classes = 10 if variant == "cifar10" else 100
    out = {}
    for split, files in counts.items():
        images, labels = [], []
        for file_name, n in files:
            rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            batch_labels = [int(v) for v in rng.integers(0, n_classes, n)]
            with open(folder / file_name, "wb") as f:
                pickle.dump({b"data": rows, label_key: batch_labels, b"batch_label": b"x"}, f)
            images.append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += batch_labels
        out[split] = (np.concatenate(images), np.array(labels))
    meta_name, names_key = ("batches.meta", b"label_names") if variant == "cifar10" else ("meta", b"fine_label_names")
    with open(folder / meta_name, "wb") as f:
        pickle.dump({names_key: [f"class{i}".encode() for i in range(n_classes)]}, f)
    return out


def _write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    image_bytes = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes()
    label_bytes = (0x0801).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes()
    for name, blob in ((f"{prefix}-images-idx3-ubyte", image_bytes), (f"{prefix}-labels-idx1-ubyte", label_bytes)):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return zip_path


def _solid(colour, size=(8, 8)):
    return np.full(size + (3,), colour, dtype=np.uint8)


# ---------------------------------------------------------------- official array formats

def test_cifar10_pickles_exact_at_native_size_and_resized(data_dir):
    truth = _write_cifar_pickles(data_dir / "cifar-10-batches-py", "cifar10",
                                 {"train": [(f"data_batch_{i}", 2) for i in range(1, 6)], "test": [("test_batch", 3)]})
    train = data.load_dataset("cifar10", "train", 32, progress=False)
    test = data.load_dataset("cifar10", "test", 32, progress=False)
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, truth["train"][0])
    np.testing.assert_array_equal(test.labels, truth["test"][1])
    assert test.labels.dtype == np.int64
    assert test.manifest["classes"][:2] == ["class0", "class1"]
    assert set(test.manifest["source_files"]) == {"test_batch"}
    small = data.load_dataset("cifar10", "test", 16, progress=False)
    assert small.images.shape == (3, 16, 16, 3)
    assert (Path(os.environ["SROOD_CACHE_DIR"]) / "datasets/cifar10/test_16px.npz").is_file()


def test_a_tampered_cifar_batch_is_refused_and_runs_nothing(data_dir, tmp_path):
    _write_cifar_pickles(data_dir / "cifar-10-batches-py", "cifar10",
                         {"train": [(f"data_batch_{i}", 2) for i in range(1, 6)], "test": [("test_batch", 3)]})
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(data_dir / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(data.CorruptDataError, match="test_batch.*only numpy arrays and plain data"):
        data.load_dataset("cifar10", "test", 32, progress=False)
    assert not marker.exists()


def test_cifar100_fine_labels(data_dir):
    truth = _write_cifar_pickles(data_dir / "cifar-100-python", "cifar100",
                                 {"train": [("train", 4)], "test": [("test", 3)]}, seed=1)
    test = data.load_dataset("cifar100", "test", progress=False)
    np.testing.assert_array_equal(test.images, truth["test"][0])
    np.testing.assert_array_equal(test.labels, truth["test"][1])
    assert len(test.manifest["classes"]) == 100


def test_svhn_mat_transposed_and_label_10_is_zero(data_dir):
    x = _rng(2).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    (data_dir / "svhn").mkdir()
    scipy.io.savemat(data_dir / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    svhn = data.load_dataset("svhn", "test", progress=False)
    np.testing.assert_array_equal(svhn.images[2], x[..., 2])
    assert svhn.labels.tolist() == [0, 1, 9, 0]
    assert svhn.manifest["source_sha256"] == cache.sha256_file(data_dir / "svhn" / "test_32x32.mat")


@pytest.mark.parametrize("name, folder, gz", [("mnist", "MNIST", True), ("fashionmnist", "FashionMNIST", False)])
def test_idx_grey_replicated_and_resized(data_dir, name, folder, gz):
    images = _rng(3).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5])
    _write_idx(data_dir / folder / "raw", "test", images, labels, gz=gz)
    native = data.load_dataset(name, "test", 28, progress=False)
    np.testing.assert_array_equal(native.images[..., 1], images)
    np.testing.assert_array_equal(native.images[..., 0], native.images[..., 2])
    assert native.labels.tolist() == labels.tolist()
    resized = data.load_dataset(name, "test", 32, progress=False)
    assert resized.images.shape == (5, 32, 32, 3)
    assert "28->32" in resized.manifest["transform"]
    with pytest.raises(data.DatasetMissingError):  # the train files were not written
        data.load_dataset(name, "train", progress=False)


# ---------------------------------------------------------------- image folders and zips

def _class_split_tree(root: Path):
    """train/<class>/*.png and test/<class>/*.png with solid colours that encode (split, class, index)."""
    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(["bird", "airplane"]):  # unsorted on purpose: labels follow sorted order
            for i in range(n):
                _write_png(root / split / cls / f"{i:04d}.png", _solid((c * 100, i * 10, 50 if split == "test" else 0)))


def test_image_zip_class_split_labels_and_order(data_dir, tmp_path):
    _class_split_tree(tmp_path / "tree")
    _zip_folder(tmp_path / "tree", data_dir / "cifar10.zip")
    test = data.load_dataset("cifar10", "test", 8, progress=False)
    assert len(test) == 4 and test.manifest["classes"] == ["airplane", "bird"]
    assert test.labels.tolist() == [0, 0, 1, 1]  # airplane/0000, airplane/0001, bird/0000, bird/0001
    assert test.images[:, 0, 0].tolist() == [[100, 0, 50], [100, 10, 50], [0, 0, 50], [0, 10, 50]]
    assert test.manifest["source_sha256"] == cache.sha256_file(data_dir / "cifar10.zip")
    assert len(data.load_dataset("cifar10", "train", 8, progress=False)) == 6


@pytest.mark.parametrize("name, folder", [("lsun", "LSUN/test"), ("lsun_resize", "LSUN_resize/LSUN_resize"),
                                          ("isun", "iSUN/iSUN_patches")])
def test_odin_folders_centre_crop(data_dir, name, folder):
    """A 40x30 image whose centre 30x30 is green and side bands red: at 30 px only green is left."""
    array = _solid((255, 0, 0), (30, 40))
    array[:, 5:35] = (0, 255, 0)
    for i in range(3):
        _write_png(data_dir / folder / f"{i}.png", array)
    images = data.load_dataset(name, "test", 30, progress=False).images
    assert images.shape == (3, 30, 30, 3)
    assert (images == np.array([0, 255, 0], np.uint8)).all()


def test_texture_dtd_layout_labels_and_partial_note(data_dir):
    for cls in ("bumpy", "banded"):
        for i in range(2):
            _write_png(data_dir / "dtd" / "images" / cls / f"{cls}_{i:04d}.png", _solid((i * 200, 0, 0), (12, 16)))
    texture = data.load_dataset("texture", "test", 8, progress=False)
    assert texture.labels.tolist() == [0, 0, 1, 1]
    assert "partial DTD: 2 of 47 classes, 4 of 5,640 images" in texture.manifest["notes"]


def _celeba_image(face_colour=(255, 255, 255)):
    """89x109 (half-res) image: the face box (9.5, 19.5, 79.5, 89.5) filled, the rest black."""
    array = np.zeros((109, 89, 3), np.uint8)
    array[20:89, 10:79] = face_colour
    return array


def test_celeba_split_by_id_crop_and_vflip(data_dir, tmp_path):
    tree = tmp_path / "celeba_tree" / "img_align_celeba_halfres"
    for i in range(1, 11):
        array = _celeba_image()
        array[20:30, 10:79] = (255, 0, 0) if i % 2 else (0, 0, 255)  # a band at the top of the face box
        _write_png(tree / f"{i:06d}.png", array)
    _zip_folder(tmp_path / "celeba_tree", data_dir / "celeba.zip")
    train = data.load_dataset("celeba", "train", 70, progress=False)
    test = data.load_dataset("celeba", "test", 70, progress=False)
    assert (len(train), len(test)) == (8, 2)
    assert train.manifest["id_range"] == [1, 8] and test.manifest["id_range"] == [9, 10]
    # The box is 70x70 at a half-pixel offset: inside it stays white, away from the black border.
    assert test.images[:, 20:60, 5:65].min() >= 250
    assert test.images[:, 20:60].mean() > 245
    assert test.images[0, 3, 35].tolist()[0] > 200 and test.images[1, 3, 35].tolist()[2] > 200  # 9 red, 10 blue
    vflip = data.load_dataset("vflip", "test", 70, progress=False)
    np.testing.assert_array_equal(vflip.images, test.images[:, ::-1])
    assert vflip.manifest["derived_from"]["sha256"] == test.manifest["sha256"]


def test_celeba_official_partition_file(data_dir):
    folder = data_dir / "celeba"
    for i in range(1, 7):
        _write_png(folder / "img_align_celeba" / f"{i:06d}.png", _celeba_image())
    codes = [0, 0, 1, 2, 0, 2]
    (folder / "list_eval_partition.txt").write_text("".join(f"{i:06d}.png {c}\n" for i, c in enumerate(codes, 1)))
    test = data.load_dataset("celeba", "test", 16, progress=False)
    assert test.manifest["id_range"] == [4, 6] and len(test) == 2
    assert "official" in test.manifest["split_rule"]
    assert len(data.load_dataset("celeba", "train", 16, progress=False)) == 3


def test_pokemon_every_fifth_split_is_deterministic(data_dir):
    names = [f"poke{i:02d}" for i in range(12)]
    for i, name in enumerate(names[::-1]):  # written in reverse: order must come from sorting
        _write_png(data_dir / "pokemon" / "images" / f"{name}.png", _solid((i, 0, 0), (12, 12)))
    test = data.load_dataset("pokemon", "test", 12, progress=False)
    train = data.load_dataset("pokemon", "train", 12, progress=False)
    assert (len(train), len(test)) == (10, 2)
    # sorted positions 4 and 9 are poke04 and poke09, written with red = 11 - index
    assert test.images[:, 0, 0, 0].tolist() == [7, 2]
    assert set(train.images[:, 0, 0, 0].tolist()).isdisjoint({7, 2})
    again = data.load_dataset("pokemon", "test", 12, progress=False, refresh=True)
    assert again.manifest["sha256"] == test.manifest["sha256"]


def test_pokemon_labels_come_from_the_types_table_beside_the_source(data_dir):
    names = [f"poke{i:02d}" for i in range(10)]
    for i, name in enumerate(names):
        _write_png(data_dir / "pokemon" / f"{name}.png", _solid((i, 0, 0), (12, 12)))
    unlabelled = data.load_dataset("pokemon", "train", 12, progress=False)
    assert (unlabelled.labels == -1).all() and "no pokemon_types.csv" in unlabelled.manifest["labels"]
    types = ["Water", "Fire", "Grass"]
    rows = "".join(f"{n},{types[i % 3]},\n" for i, n in enumerate(names))
    (data_dir / "pokemon_types.csv").write_text("Name,Type1,Type2\n" + rows + "extra,Bug,\n")
    train = data.load_dataset("pokemon", "train", 12, progress=False, refresh=True)
    test = data.load_dataset("pokemon", "test", 12, progress=False)
    # classes: every Type1 of the table, sorted (Bug, Fire, Grass, Water); poke04 -> Fire, poke09 -> Water
    assert test.labels.tolist() == [1, 3] and train.manifest["classes"] == ["Bug", "Fire", "Grass", "Water"]
    assert train.labels.tolist() == [3, 1, 2, 3, 2, 3, 1, 2]
    assert train.manifest["labels"].startswith("Type1 of pokemon_types.csv") and train.manifest["label_table_sha256"]
    (data_dir / "pokemon_types.csv").write_text("Name,Type1,Type2\n" + rows.split("\n", 1)[1])  # poke00 lacks
    with pytest.raises(data.CorruptDataError, match="no Type1 for 1 image"):
        data.load_dataset("pokemon", "train", 12, progress=False, refresh=True)


def test_any_image_folder_or_zip(tmp_path):
    folder = tmp_path / "mine"
    for i in range(3):
        _write_png(folder / "sub" / f"{i}.png", _solid((i * 50, 10, 10), (20, 10)))
    from_folder = data.load_image_folder(folder, 8, progress=False)
    from_zip = data.load_dataset(str(_zip_folder(folder, tmp_path / "mine.zip")), None, 8, progress=False)
    np.testing.assert_array_equal(from_folder.images, from_zip.images)
    assert from_folder.images.shape == (3, 8, 8, 3) and (from_folder.labels == -1).all()
    assert from_folder.manifest["name"].startswith("folder-")
    _write_png(folder / "sub" / "0.png", _solid((9, 9, 9), (20, 10)))  # new content -> new cache key
    changed = data.load_image_folder(folder, 8, progress=False)
    assert changed.manifest["name"] != from_folder.manifest["name"]
    assert changed.images[0, 0, 0].tolist() == [9, 9, 9]


# ---------------------------------------------------------------- pixel conversions

def _load_single(tmp_path, png: bytes, resolution=4):
    folder = tmp_path / "single"
    folder.mkdir(exist_ok=True)
    (folder / "x.png").write_bytes(png)
    return data.load_image_folder(folder, resolution, progress=False).images[0]


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128  # half-transparent red
    rgba[0, 0] = (0, 0, 255, 0)  # fully transparent blue pixel
    pixel = _load_single(tmp_path, _png_bytes(rgba, "RGBA"))
    assert pixel[1, 1].tolist() == [255, 127, 127]  # 255*a + 255*(1-a), 0*a + 255*(1-a) with a = 128/255
    assert pixel[0, 0].tolist() == [255, 255, 255]


def test_palette_png_with_and_without_transparency(tmp_path):
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert _load_single(tmp_path, buffer.getvalue(), 2)[0, 1].tolist() == [200, 100, 0]
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)  # palette entry 0 transparent -> white
    assert _load_single(tmp_path, buffer.getvalue(), 2)[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey = np.array([[0, 32896], [65535, 257 * 64]], np.uint16)
    out = prepare_image_bytes(_png_bytes(grey), "grey16.png", 2, "center_square")
    assert out[..., 0].tolist() == [[0, 128], [255, 64]]
    assert (out[..., 0] == out[..., 2]).all()


def test_to_tensor_and_back():
    images = _rng(4).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    tensor = data.to_tensor(images)
    assert tensor.shape == (2, 3, 5, 6) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert float(data.to_tensor(np.full((1, 1, 1, 3), 255, np.uint8)).max()) == 1.0
    np.testing.assert_array_equal(data.to_uint8(tensor), images)
    assert data.to_uint8(torch.full((1, 3, 1, 1), 5.0)).tolist() == [[[[255, 255, 255]]]]  # clipped
    with pytest.raises(ValueError, match="uint8"):
        data.to_tensor(images.astype(np.float32))


# ---------------------------------------------------------------- bad input

def test_missing_dataset_message_names_everything(data_dir):
    with pytest.raises(data.DatasetMissingError) as info:
        data.load_dataset("svhn", "test", progress=False)
    text = str(info.value)
    assert "'svhn'" in text and "'test'" in text
    assert str(cache.entry_paths("svhn", "test", 32)[0]) in text
    for layout in data.DATASETS["svhn"].layouts:
        assert str(layout.path(data_dir, "test")) in text
    assert str(Path(os.environ["SROOD_CACHE_DIR"]) / "raw" / "svhn" / "test_32x32.mat") in text
    assert "download=False" in text and "SROOD_DATA_DIR" in text and "--data-dir" in text
    assert "download=True" in text and "run_all.sh" in text


def test_missing_without_data_dir_says_it_is_unset_and_vflip_names_celeba():
    with pytest.raises(data.DatasetMissingError, match="SROOD_DATA_DIR is unset"):
        data.load_dataset("pokemon", "train", progress=False)
    with pytest.raises(data.DatasetMissingError, match="derived from celeba test") as info:
        data.load_dataset("vflip", "test", progress=False)
    assert "celeba.zip" in str(info.value)


def test_srood_download_env_enables_the_official_download(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(data.DatasetMissingError, match="not attempted"):
        data.load_dataset("isun", "test", progress=False)
    monkeypatch.setenv("SROOD_DOWNLOAD", "1")  # what ./run_all.sh --download sets
    with pytest.raises(data.DatasetMissingError, match="FAILED"):
        data.load_dataset("isun", "test", progress=False)


def test_a_server_that_never_answers_fails_the_download_instead_of_hanging(monkeypatch):
    """urllib waits forever on a silent connection; fetch gives every socket a timeout and leaves no partial file."""
    import signal

    from srood_lib.data import download
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts connections; nobody ever answers
    try:
        monkeypatch.setitem(download.ODIN_URLS, "isun", f"http://127.0.0.1:{silent.getsockname()[1]}/iSUN.tar.gz")
        monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_S", 0.5)
        monkeypatch.setenv("SROOD_DOWNLOAD", "1")
        def hung(*_):
            raise AssertionError("the download hung: no timeout on its sockets")

        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(30)  # without the timeout the test would hang, not fail
        try:
            with pytest.raises(data.DatasetMissingError, match="FAILED.*timed out"):
                data.load_dataset("isun", "test", progress=False)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    finally:
        silent.close()
    assert socket.getdefaulttimeout() is None  # restored for everything else
    assert not list(cache.raw_dir().glob("*.part"))


@pytest.mark.parametrize("name", ["cifar10", "lsun"])
def test_failed_download_is_a_clear_error(monkeypatch, name):
    def offline(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(data.DatasetMissingError) as info:
        data.load_dataset(name, "test", download=True, progress=False)
    text = str(info.value)
    assert "FAILED" in text and "network disabled by the test" in text
    assert ("torchvision.datasets.CIFAR10" if name == "cifar10" else "dropbox.com") in text
    raw = Path(os.environ["SROOD_CACHE_DIR"]) / "raw"
    assert not list(raw.rglob("*.part")) and not list(raw.rglob("*.tar.gz"))


def test_corrupt_png_names_the_file(tmp_path):
    folder = tmp_path / "bad"
    _write_png(folder / "good.png", _solid((1, 2, 3)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(data.CorruptDataError, match="broken.png"):
        data.load_image_folder(folder, 8, progress=False)
    truncated = _png_bytes(_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8))[:300]
    (folder / "broken.png").write_bytes(truncated)
    with pytest.raises(data.CorruptDataError, match="broken.png"):
        data.load_image_folder(folder, 8, progress=False)


def test_truncated_zip_names_the_zip(data_dir, tmp_path):
    _class_split_tree(tmp_path / "tree")
    whole = _zip_folder(tmp_path / "tree", tmp_path / "whole.zip").read_bytes()
    (data_dir / "cifar10.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(data.CorruptDataError, match="cifar10.zip") as info:
        data.load_dataset("cifar10", "test", 8, progress=False)
    assert info.value.path.endswith("cifar10.zip")


def test_corrupt_pickle_idx_and_mat_name_the_file(data_dir):
    _write_cifar_pickles(data_dir / "cifar-10-batches-py", "cifar10", {"test": [("test_batch", 2)]})
    blob = (data_dir / "cifar-10-batches-py" / "test_batch").read_bytes()
    (data_dir / "cifar-10-batches-py" / "test_batch").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.CorruptDataError, match="test_batch"):
        data.load_dataset("cifar10", "test", progress=False)
    _write_idx(data_dir / "MNIST" / "raw", "test", np.zeros((3, 28, 28), np.uint8), np.zeros(3))
    image_file = data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    image_file.write_bytes(image_file.read_bytes()[:-100])
    with pytest.raises(data.CorruptDataError, match="t10k-images-idx3-ubyte.*truncated"):
        data.load_dataset("mnist", "test", progress=False)
    (data_dir / "test_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, garbage" * 10)
    with pytest.raises(data.CorruptDataError, match="test_32x32.mat"):
        data.load_dataset("svhn", "test", progress=False)


def test_unknown_name_bad_split_bad_resolution():
    with pytest.raises(ValueError, match="known: cifar10"):
        data.load_dataset("imagenet", "test")
    with pytest.raises(ValueError, match="no split 'val'"):
        data.load_dataset("cifar10", "val")
    with pytest.raises(ValueError, match="positive integer"):
        data.load_dataset("cifar10", "test", resolution=0)


# ---------------------------------------------------------------- cache behaviour

def _pokemon_source(data_dir, n=6):
    for i in range(n):
        _write_png(data_dir / "pokemon" / f"p{i}.png", _solid((i * 30, 0, 0), (12, 12)))


def test_cache_write_is_atomic(data_dir, monkeypatch, data_isolated_env):
    _pokemon_source(data_dir)
    real_savez = np.savez

    def fail_midway(file, **arrays):
        file.write(b"PK\x03\x04 partial archive")  # some bytes reach the temp file, then the "disk" fails
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache.np, "savez", fail_midway)
    with pytest.raises(OSError, match="simulated"):
        data.load_dataset("pokemon", "train", 12, progress=False)
    folder = data_isolated_env / "datasets" / "pokemon"
    assert list(folder.iterdir()) == []  # no npz, no manifest, no temp file
    monkeypatch.setattr(cache.np, "savez", real_savez)
    assert len(data.load_dataset("pokemon", "train", 12, progress=False)) == 5
    assert sorted(p.name for p in folder.iterdir()) == ["train_12px.json", "train_12px.npz"]


def test_cache_hit_does_not_read_the_source(data_dir, monkeypatch, data_isolated_env):
    _pokemon_source(data_dir)
    first = data.load_dataset("pokemon", "test", 12, progress=False)
    manifest = json.loads((data_isolated_env / "datasets/pokemon/test_12px.json").read_text())
    assert manifest["sha256"] == first.manifest["sha256"] and manifest["count"] == 1
    assert manifest["origin"] == "local data dir" and manifest["srood_version"]

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read on a cache hit")

    monkeypatch.setattr(api, "build_from_layout", no_reading)
    monkeypatch.setattr(sources, "prepare_image_bytes", no_reading)
    for path in (data_dir / "pokemon").iterdir():
        path.unlink()
    second = data.load_dataset("pokemon", "test", 12, progress=False)
    np.testing.assert_array_equal(second.images, first.images)
    assert second.manifest == first.manifest


def test_unreadable_cache_entry_is_rebuilt_with_a_warning(data_dir, data_isolated_env):
    _pokemon_source(data_dir)
    first = data.load_dataset("pokemon", "train", 12, progress=False)
    (data_isolated_env / "datasets/pokemon/train_12px.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = data.load_dataset("pokemon", "train", 12, progress=False)
    assert again.manifest["sha256"] == first.manifest["sha256"]


def test_dataset_status_reports_without_decoding(data_dir, monkeypatch):
    _pokemon_source(data_dir)
    data.load_dataset("pokemon", "test", 32, progress=False)

    def no_decoding(*args, **kwargs):
        raise AssertionError("dataset_status decoded an image")

    monkeypatch.setattr(sources, "prepare_image_bytes", no_decoding)
    table = data.dataset_status(resolution=32).set_index(["dataset", "split"])
    assert len(table) == sum(len(spec.splits) for spec in data.DATASETS.values())
    assert table.loc[("pokemon", "test"), "origin"] == "cache" and table.loc[("pokemon", "test"), "count"] == 1
    assert table.loc[("pokemon", "train"), "origin"] == "local data dir"
    assert not table.loc[("svhn", "test"), "available"]
    assert "missing" in table.loc[("svhn", "test"), "detail"] and str(data_dir) in table.loc[("svhn", "test"), "detail"]
    assert not table.loc[("vflip", "test"), "available"] and "celeba" in table.loc[("vflip", "test"), "detail"]


def test_data_hash_combines_manifests_in_order(data_dir):
    _pokemon_source(data_dir)
    train = data.load_dataset("pokemon", "train", 12, progress=False)
    test = data.load_dataset("pokemon", "test", 12, progress=False)
    assert len(data.data_hash(train, test)) == 12
    assert data.data_hash(train, test) == data.data_hash(train.manifest, test.manifest)
    assert data.data_hash(train, test) != data.data_hash(test, train)
    assert data.data_hash(train) != data.data_hash(test)
    subset = {**test.manifest, "subsample": {"n": 1, "seed": 0}}
    assert data.data_hash(train, subset) != data.data_hash(train, test)
    transformed = {**test.manifest, "transform": "JPEG q75 4:2:0"}
    assert data.data_hash(train, transformed) not in (data.data_hash(train, test), data.data_hash(train, subset))


def test_cache_readme_documents_every_dataset():
    readme = (Path(__file__).resolve().parents[1] / "data" / "README.md").read_text()
    for name, spec in data.DATASETS.items():
        assert f"| `{name}`" in readme, f"data/README.md has no row for {name}"
        for layout in spec.layouts:
            assert layout.relpath.split("/")[0].replace("{split}", "<split>") in readme, (name, layout.relpath)


# ---------------------------------------------------------------- real offline copies (optional)

@pytest.mark.skipif(not REAL_DATA_DIR, reason="SROOD_DATA_DIR is not set: no real offline data to read")
def test_real_offline_copies(monkeypatch, tmp_path):
    root = Path(REAL_DATA_DIR)
    monkeypatch.setenv("SROOD_DATA_DIR", str(root))
    pokemon = data.load_dataset("pokemon", "test", 32, progress=False)
    assert pokemon.images.shape == (161, 32, 32, 3) and pokemon.images.std() > 10
    texture = data.load_dataset("texture", "test", 32, progress=False)
    assert texture.images.shape == (600, 32, 32, 3) and sorted(set(texture.labels.tolist())) == [0, 1, 2, 3, 4]
    subset = tmp_path / "celeba_subset"
    with zipfile.ZipFile(root / "celeba.zip") as archive:  # a user-style folder of 150 real images
        for member in sorted(archive.namelist())[:150]:
            (subset / member).parent.mkdir(parents=True, exist_ok=True)
            (subset / member).write_bytes(archive.read(member))
    faces = data.load_dataset(str(subset), None, 32, progress=False)
    assert faces.images.shape == (150, 32, 32, 3) and faces.split == "all"
