"""The workbook end to end on tiny data the test writes: run_all.sh's error paths and a papermill run of 00_data."""
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _write_tiny_cifar_zip(path: Path, per_class: int = 2) -> None:
    """A zip laid out as the offline CIFAR-10 copy: {train,test}/<class>/NNNN.jpg."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for cls in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
                    zf.writestr(f"{split}/{cls}/{i:04d}.jpg", buf.getvalue())


@pytest.fixture
def workbook_env(tmp_path):
    """Environment for a run_all.sh / papermill run that touches only tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SROOD_")}
    env.update(SROOD_PYTHON=sys.executable, SROOD_CACHE_DIR=str(tmp_path / "cache"),
               SROOD_RESULTS_DIR=str(tmp_path / "results"), SROOD_CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    # LPIPS weights are provisioned once per machine; share them rather than fetching again.
    weights = ROOT / "data" / "weights"
    if weights.exists():
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "weights").symlink_to(weights)
    return env


def run_all(args, env, timeout=600):
    return subprocess.run(["bash", str(ROOT / "run_all.sh"), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_run_all_without_data_fails_fast_naming_the_dataset(workbook_env, tmp_path):
    proc = run_all(["--profile", "smoke"], workbook_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "cifar10" in proc.stderr and "SROOD_DATA_DIR" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results" / "smoke" / "00_data.ipynb").exists()


def test_run_all_rejects_unknown_arguments_and_notebooks(workbook_env):
    proc = run_all(["--frobnicate"], workbook_env)
    assert proc.returncode == 2 and "unknown argument" in proc.stderr


def test_failing_notebook_is_named_with_its_cell(workbook_env, tmp_path):
    data = tmp_path / "local"
    data.mkdir()
    _write_tiny_cifar_zip(data / "cifar10.zip")
    env = {**workbook_env, "SROOD_DATA_DIR": str(data)}
    proc = run_all(["--profile", "smoke", "--only", "00_data", "--set", "data.show=[no_such_dataset]"], env)
    assert proc.returncode == 1
    assert "notebook 00_data failed at cell" in proc.stderr


def test_00_data_runs_under_papermill_with_the_smoke_profile(workbook_env, tmp_path):
    data = tmp_path / "local"
    data.mkdir()
    _write_tiny_cifar_zip(data / "cifar10.zip")
    env = {**workbook_env, "SROOD_DATA_DIR": str(data)}
    proc = run_all(["--profile", "smoke", "--only", "00_data"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results" / "smoke"
    for name in ("00_data.ipynb", "00_data.html", "fig_datasets.png", "fig_erosions.png", "config.resolved.yaml"):
        assert (out / name).exists(), name
    nb = json.loads((out / "00_data.ipynb").read_text())
    text = json.dumps(nb["cells"])
    assert "svhn" in text and "missing" in text  # the table of absent datasets says why
    assert not any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))


def test_run_all_names_the_id_sets_of_the_profile_for_an_unknown_id(workbook_env):
    proc = run_all(["--profile", "smoke", "--id", "mnist"], workbook_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cifar10, celeba, pokemon" in proc.stderr


def test_run_all_checks_the_data_of_the_id_set_it_runs(workbook_env, tmp_path):
    data = tmp_path / "local"
    data.mkdir()
    _write_tiny_cifar_zip(data / "cifar10.zip")  # no CelebA here
    env = {**workbook_env, "SROOD_DATA_DIR": str(data)}
    proc = run_all(["--profile", "smoke", "--id", "celeba", "--only", "03_table"], env)
    assert proc.returncode == 2 and "celeba" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "results" / "smoke" / "celeba" / "config.resolved.yaml").exists()
    # the profile-level config (00_data, the report) stays the profile's first ID set's, whatever --id says
    profile_level = yaml.safe_load((tmp_path / "results" / "smoke" / "config.resolved.yaml").read_text())
    assert profile_level["data"]["id"] == "cifar10"


def test_retrain_drops_the_stored_prior_and_every_shipped_model(workbook_env, tmp_path):
    data = tmp_path / "local"
    data.mkdir()  # no CelebA: the run stops at the data check, after resolving the config
    env = {**workbook_env, "SROOD_DATA_DIR": str(data), "SROOD_DOWNLOAD": "0"}
    resolved = tmp_path / "results" / "quick" / "celeba" / "config.resolved.yaml"
    plain = run_all(["--offline", "--id", "celeba", "--only", "03_table"], env)
    assert plain.returncode == 2 and "--retrain" not in plain.stdout
    assert yaml.safe_load(resolved.read_text())["prior"]["checkpoint"].startswith("priors/")
    proc = run_all(["--offline", "--retrain", "--id", "celeba", "--only", "03_table"], env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--retrain: priors, SR-OOD detectors and baseline models are trained here" in proc.stdout
    assert yaml.safe_load(resolved.read_text())["prior"]["checkpoint"] is None


def test_a_second_run_on_the_same_folders_stops_at_once_naming_the_first(workbook_env, tmp_path):
    import fcntl
    results = tmp_path / "results" / "smoke"
    results.mkdir(parents=True)
    with open(results / ".run_all.lock", "w") as held:  # what a first run holds while it runs
        held.write("4242\n")
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_all(["--profile", "smoke", "--only", "00_data"], workbook_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "another ./run_all.sh (pid 4242) is running on" in proc.stderr and str(results) in proc.stderr
    assert "==> " not in proc.stdout  # no notebook started
    # Once the first run ends, its lock is gone with it: the same command gets past the guard (to the data check).
    again = run_all(["--profile", "smoke", "--only", "00_data"], workbook_env)
    assert "another ./run_all.sh" not in again.stderr and "cifar10" in again.stderr
    assert (results / ".run_all.lock").read_text().strip().isdigit()  # the pid of the run that held it
