"""Restricted unpickling: numpy arrays and plain data come back; any other class is refused before it runs."""
import io
import pickle

import numpy as np
import pytest

from srood_lib.safe_pickle import load_numpy_pickle


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_plain_data_round_trip(protocol):
    record = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2], "f": np.ones(2, np.float32),
              "nested": {"t": (1.5, "x", None, True)}}
    back = load_numpy_pickle(io.BytesIO(pickle.dumps(record, protocol=protocol)))
    assert back.keys() == record.keys() and back["nested"] == record["nested"] and back[b"labels"] == [1, 2]
    np.testing.assert_array_equal(back[b"data"], record[b"data"])
    assert back["f"].dtype == np.float32


def test_python2_style_bytes_pickles_load_with_encoding_bytes():
    blob = pickle.dumps({b"data": np.zeros((2, 3), np.uint8), b"batch_label": b"x"}, protocol=2)
    assert load_numpy_pickle(io.BytesIO(blob), encoding="bytes")[b"batch_label"] == b"x"


def test_any_other_class_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with pytest.raises(pickle.UnpicklingError, match="io.open"):
        load_numpy_pickle(io.BytesIO(pickle.dumps({"x": Evil()})))
    assert not marker.exists()
