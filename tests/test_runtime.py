"""Runtime helpers: safe loading (every srood artefact loads with weights_only=True; a file that would run code is
refused) and the compact int8 / fp16 state of shipped artefacts."""
import pathlib

import numpy as np
import pytest
import torch

from srood_lib import runtime
from srood_lib.baselines.common import _arrays_as_tensors, _tensors_as_arrays


class RunsCode:
    """Unpickling this calls Path.touch on a marker file: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"format": "srood-detector-v1", "net": RunsCode(marker)}, path)
    with pytest.raises(runtime.UnsafeArtefactError, match="would run code"):
        runtime.safe_torch_load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: an unsafe load does run it
    assert marker.exists()


def test_the_loaders_of_detectors_priors_and_baselines_refuse_it(tmp_path):
    from srood_lib.baselines.common import load_detector_blob
    from srood_lib.detector import SROOD
    from srood_lib.train_prior import load_checkpoint

    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"format": "x", "payload": RunsCode(marker)}, path)
    for load in (SROOD.load, load_checkpoint, lambda p: load_detector_blob(p, "WAIC")):
        with pytest.raises(runtime.UnsafeArtefactError):
            load(path)
    assert not marker.exists()


def test_not_a_torch_file_and_a_foreign_torch_file_are_one_line_errors(tmp_path):
    from srood_lib.detector import SROOD

    junk = tmp_path / "photo.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not a checkpoint")
    with pytest.raises(ValueError, match="is not a file written by srood") as err:
        runtime.safe_torch_load(junk)
    assert "\n" not in str(err.value)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="is not an SR-OOD detector file"):
        SROOD.load(tensor)


def test_fitted_statistics_round_trip_as_tensors():
    state = {"mean": np.float64(1.5), "features": {"a": np.arange(6.0).reshape(2, 3)}, "pair": (np.ones(2), "x")}
    plain = _arrays_as_tensors(state)
    assert isinstance(plain["features"]["a"], torch.Tensor) and isinstance(plain["mean"], float)
    back = _tensors_as_arrays(plain)
    np.testing.assert_array_equal(back["features"]["a"], state["features"]["a"])
    assert isinstance(back["pair"], tuple) and back["pair"][1] == "x" and back["mean"] == 1.5


def test_compact_state_round_trip_error_is_bounded_per_channel():
    torch.manual_seed(0)
    state = {"w": torch.randn(64, 32, 3, 3) * torch.logspace(-3, 1, 64).reshape(-1, 1, 1, 1),
             "b": torch.randn(64), "steps": torch.tensor(7)}
    back = runtime.expand_state(runtime.compact_state(state, "int8"))
    assert torch.equal(back["b"], state["b"]) and torch.equal(back["steps"], state["steps"])
    err = (back["w"] - state["w"]).abs().flatten(1).amax(1)
    assert torch.all(err <= state["w"].abs().flatten(1).amax(1) / 254 + 1e-9)  # half a step of absmax / 127
    half = runtime.expand_state(runtime.compact_state(state, "fp16"))
    assert torch.allclose(half["w"], state["w"], rtol=1e-3, atol=1e-6)


def test_mixed_compact_state_quantises_only_the_named_tensors():
    state = {"heads.0.w": torch.randn(32, 64), "stem.w": torch.randn(32, 64)}
    packed = runtime.compact_state(state, "mixed", ("heads.",))
    assert set(packed["heads.0.w"]) == {"int8", "scale"} and set(packed["stem.w"]) == {"fp16"}
    back = runtime.expand_state(packed)
    assert back["stem.w"].dtype == torch.float32 and torch.allclose(back["stem.w"], state["stem.w"], rtol=1e-3)


def test_bf16_on_the_cpu_only_where_the_cpu_has_it_natively(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert runtime.autocast_bf16(cpu, True, True, "a test run") is False
    assert runtime.autocast_bf16(cpu, True, False, "a test run") is False
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.autocast_bf16(cpu, False, True, "a test run") is True
    assert runtime.autocast_bf16(cpu, True, False, "a test run") is False
    # CUDA follows its own switch, whatever the CPU can do
    assert runtime.autocast_bf16(cuda, True, False, "a test run") is True
    assert runtime.autocast_bf16(cuda, False, True, "a test run") is False


def test_lru_memo_computes_once_and_drops_the_least_recently_used():
    from collections import OrderedDict

    from srood_lib.runtime import lru_memo

    memo, calls = OrderedDict(), []
    get = lambda k: lru_memo(memo, k, 2, lambda: calls.append(k) or k * 10)  # noqa: E731
    assert [get(1), get(2), get(1)] == [10, 20, 10] and calls == [1, 2]
    get(3)                                   # 2 is now the least recently used
    assert list(memo) == [1, 3]
    get(2)
    assert calls == [1, 2, 3, 2]


def test_atomic_torch_save_replaces_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    runtime.atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)
    assert runtime.safe_torch_load(path)["step"] == 1 and not (tmp_path / "ckpt.pt.tmp").exists()

    real_save = torch.save

    def dies_half_way(obj, f):
        real_save({"partial": torch.zeros(2)}, f)
        raise KeyboardInterrupt  # e.g. Ctrl-C during the write

    monkeypatch.setattr(runtime.torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        runtime.atomic_torch_save({"step": 2}, path)
    monkeypatch.setattr(runtime.torch, "save", real_save)
    assert runtime.safe_torch_load(path)["step"] == 1       # the old checkpoint, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # and no temp file left
