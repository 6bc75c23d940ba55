"""Datasets for srood: a registry of named sets, official downloads, a local data dir, any image folder/zip, and
one cache (``cache_dir()/datasets/<name>/<split>_<R>px.npz`` + JSON manifest). See ``data/README.md``.

Images are uint8 ``(N, H, W, 3)``; ``to_tensor`` gives the models' float ``(N, 3, H, W)`` in [-1, 1].
"""
from .api import (ImageFiles, ImageSet, data_hash, dataset_status, load_dataset, load_image_folder,
                  read_image_files, subsample, subsample_indices)
from .errors import CorruptDataError, DatasetMissingError, ImageTooSmallError
from .images import to_tensor, to_uint8
from .registry import DATASETS, DatasetSpec, Layout

__all__ = [
    "DATASETS", "CorruptDataError", "DatasetMissingError", "DatasetSpec", "ImageFiles", "ImageSet", "ImageTooSmallError",
    "Layout", "data_hash", "dataset_status", "load_dataset", "load_image_folder", "read_image_files", "subsample",
    "subsample_indices", "to_tensor", "to_uint8",
]
