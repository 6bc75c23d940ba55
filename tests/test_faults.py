"""Faults: a dataset-cache build and a checkpoint write SIGKILLed mid-way leave nothing half-written, and the
rerun succeeds (the cache entry is rebuilt; training resumes from the last whole checkpoint)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch
from PIL import Image

from srood_lib.config import PROJECT_ROOT
from srood_lib.data import load_image_folder
from srood_lib.runtime import safe_torch_load
from srood_lib.train_prior import train_prior

from test_train_prior import tiny_cfg

FAST = dict(kimg=0.064, checkpoint_kimg=0.032, diffaug="")   # 4 steps of 16, checkpoints after steps 2 and 4


def _run_until_stuck(code: str, ready, env: dict) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter; return once it has written ``ready`` (it then hangs mid-write)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env,
                            "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.path.dirname(__file__)])})
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None, "the child ended before reaching the write"
        assert time.time() < deadline, "the child never reached the write"
        time.sleep(0.05)
    return proc


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


# Replaces the writer with one that writes half of its bytes, says so, and hangs: the SIGKILL lands mid-write.
HALF_WRITE = '''
    import pathlib, time
    def half_then_hang(f, *args, **kwargs):
        f.write(b"PK\\\\x03\\\\x04 half of a file")
        f.flush()
        pathlib.Path({ready!r}).write_text("writing")
        time.sleep(600)
'''


def test_a_killed_cache_build_leaves_no_entry_and_no_temp_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i}.png")
    cache, ready = tmp_path / "cache", tmp_path / "ready"
    proc = _run_until_stuck(HALF_WRITE.format(ready=str(ready)) + f'''
    import numpy as np
    np.savez = half_then_hang
    from srood_lib.data import load_image_folder
    load_image_folder({str(folder)!r}, resolution=32, progress=False)
    ''', ready, {"SROOD_CACHE_DIR": str(cache)})
    entry = next((cache / "datasets").iterdir())
    assert [p.name for p in entry.iterdir() if p.name.endswith(".tmp")]     # killed with its temp file open
    _kill(proc)
    assert not list(entry.glob("*.npz")) and not list(entry.glob("*.json"))  # no entry: nothing claims to be whole

    os.environ["SROOD_CACHE_DIR"] = str(cache)
    try:
        again = load_image_folder(folder, resolution=32, progress=False)
    finally:
        del os.environ["SROOD_CACHE_DIR"]
    assert np.array_equal(again.images, images)
    assert sorted(p.name for p in entry.iterdir()) == ["all_32px.json", "all_32px.npz"]  # the orphan is gone


def test_a_killed_checkpoint_write_keeps_the_last_whole_checkpoint_and_resumes(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    cfg = tiny_cfg(**FAST)
    run, ready = tmp_path / "run", tmp_path / "ready"
    # the first checkpoint is written whole; the second write is killed half-way
    proc = _run_until_stuck(HALF_WRITE.format(ready=str(ready)) + f'''
    import numpy as np, torch
    from test_train_prior import tiny_cfg
    from srood_lib.train_prior import train_prior
    real_save, calls = torch.save, []
    def save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # atomic_torch_save hands torch.save its open temp file
            half_then_hang(f)
        return real_save(obj, f, *a, **k)
    torch.save = save
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    train_prior(images, tiny_cfg(**{FAST!r}), {str(run)!r}, seed=0, device="cpu", progress=False)
    ''', ready, {})
    _kill(proc)
    first = safe_torch_load(run / "prior.pt")                              # the whole, earlier checkpoint
    assert 0 < first["step"] < np.ceil(cfg["kimg"] * 1000 / cfg["batch_size"])

    resumed = safe_torch_load(train_prior(images, cfg, run, seed=0, device="cpu", progress=False))
    fresh = safe_torch_load(train_prior(images, cfg, tmp_path / "fresh", seed=0, device="cpu", progress=False))
    assert resumed["step"] == fresh["step"]
    assert all(torch.equal(resumed["G_ema"][k], fresh["G_ema"][k]) for k in fresh["G_ema"])
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
