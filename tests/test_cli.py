"""The command line (python -m srood_lib): scoring one's own images, evaluating, and every expected bad input as
one line on stderr with exit code 2."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from srood_lib import pipeline
from srood_lib.__main__ import main
from srood_lib.config import load_config

from test_detector import _prior_file, smooth_images


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    from test_detector import config
    from srood_lib.detector import SROOD
    from srood_lib.models.stylegan2 import Generator
    from test_train_repair import CH

    torch.manual_seed(0)
    G = Generator(32, z_dim=16, w_dim=16, n_mlp=2, channels=CH).eval()
    d = SROOD(config(candidate_erosions=["bicubic_x2"], mix_from_layer=[None], lpips_net=["alex"]), G)
    return d.fit(smooth_images(48, 0), tmp_path_factory.mktemp("det"), progress=False)


@pytest.fixture
def folder(tmp_path):
    """Six good images, two of them in a subfolder."""
    root = tmp_path / "mine"
    (root / "sub").mkdir(parents=True)
    for i, img in enumerate(smooth_images(6, 5)):
        Image.fromarray(img).save(root / ("sub" if i >= 4 else ".") / f"img{i}.png")
    return root


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_score_writes_each_files_path_score_flag_and_eps(det, folder, tmp_path):
    ckpt = det.save(tmp_path / "d.pt")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder), "--out", str(tmp_path / "s.csv")]) == 0
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == ["path", "score", "ood", "eps"]
    assert list(table["path"]) == ["img0.png", "img1.png", "img2.png", "img3.png", "sub/img4.png", "sub/img5.png"]
    assert np.allclose(table["score"], det.score(smooth_images(6, 5)), atol=1e-6)
    assert (table["ood"] == (table["score"] > det.threshold)).all() and np.allclose(table["eps"], det.threshold)


def test_score_takes_a_single_image_file(det, folder, tmp_path, capsys):
    ckpt = det.save(tmp_path / "d.pt")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder / "img2.png")]) == 0
    table = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(table["path"]) == ["img2.png"]
    assert np.isclose(table["score"][0], det.score(smooth_images(6, 5)[2:3])[0], atol=1e-6)


def test_a_corrupt_file_is_one_line_naming_it_or_skipped_on_request(det, folder, tmp_path, capsys):
    ckpt = det.save(tmp_path / "d.pt")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder)]) == 2
    _one_line_error(capsys, "broken.png", "--skip-unreadable")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder), "--skip-unreadable",
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert "skipped broken.png" in capsys.readouterr().err
    assert len(pd.read_csv(tmp_path / "s.csv")) == 6


def test_an_image_below_the_detectors_resolution_is_refused_unless_upsampled(det, folder, tmp_path, capsys):
    ckpt = det.save(tmp_path / "d.pt")
    Image.fromarray(smooth_images(1, 9)[0][:20, :20]).save(folder / "tiny.png")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder)]) == 2
    _one_line_error(capsys, "tiny.png", "20x20", "32 px", "--upsample")
    assert main(["score", "--checkpoint", str(ckpt), "--images", str(folder), "--upsample",
                 "--out", str(tmp_path / "s.csv")]) == 0
    assert "tiny.png" in set(pd.read_csv(tmp_path / "s.csv")["path"])


def test_bad_paths_and_bad_detector_files_are_one_line_each(det, folder, tmp_path, capsys):
    ckpt = det.save(tmp_path / "d.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    cases = [(["--checkpoint", str(ckpt), "--images", str(tmp_path / "nowhere")], "does not exist"),
             (["--checkpoint", str(ckpt), "--images", str(tmp_path / "empty")], "holds no image files"),
             (["--checkpoint", str(ckpt), "--images", str(tmp_path / "notes.txt")], "neither an image"),
             (["--checkpoint", str(folder / "img0.png"), "--images", str(folder)], "not a file written by srood"),
             (["--checkpoint", str(tmp_path / "missing.pt"), "--images", str(folder)], "no detector at")]
    for args, needle in cases:
        capsys.readouterr()
        assert main(["score", *args]) == 2, args
        _one_line_error(capsys, needle)


def test_an_unsafe_pickle_as_detector_is_refused_and_runs_nothing(folder, tmp_path, capsys):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "srood-detector-v2", "x": Evil()}, bad)
    assert main(["score", "--checkpoint", str(bad), "--images", str(folder)]) == 2
    _one_line_error(capsys, "refused")
    assert not marker.exists()


def test_without_checkpoint_score_uses_the_shipped_detector_or_says_how_to_make_it(det, folder, tmp_path,
                                                                                   monkeypatch, capsys):
    monkeypatch.setenv("SROOD_SHIPPED_DIR", str(tmp_path / "shipped"))
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))  # nothing calibrated on this machine
    assert main(["score", "--images", str(folder), "--id-set", "pokemon", "--variant", "rec"]) == 2
    _one_line_error(capsys, "no quick detector for pokemon/rec", "none shipped", "02_train_repair", "--checkpoint")
    cfg = load_config("quick", experiment="cifar10")
    det.save_compact(pipeline.shipped_detector_file(cfg, "sr"), _prior_file(det.generator, tmp_path / "p.pt"))
    assert main(["score", "--images", str(folder), "--out", str(tmp_path / "s.csv")]) == 0
    assert np.allclose(pd.read_csv(tmp_path / "s.csv")["score"], det.score(smooth_images(6, 5)), atol=2e-2)


def test_evaluate_prints_the_metrics_of_each_ood_set(det, folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SROOD_CACHE_DIR", str(tmp_path / "cache"))
    noise = tmp_path / "noise"
    noise.mkdir()
    for i, img in enumerate(np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)):
        Image.fromarray(img).save(noise / f"{i}.png")
    ckpt = det.save(tmp_path / "d.pt")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--id", str(folder), "--ood", str(noise),
                 "--n-boot", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("ood,n_id,n_ood,auroc") and lines[1].split(",")[1:3] == ["6", "6"]
    assert main(["evaluate", "--checkpoint", str(ckpt), "--id", str(folder), "--ood", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "does not exist")


def test_train_commands_refuse_a_bad_set_key_in_one_line(capsys):
    assert main(["train-prior", "--profile", "smoke", "--set", "prior.no_such_key=1"]) == 2
    _one_line_error(capsys, "no_such_key")
    assert main(["train-repair", "--profile", "smoke", "--variant", "sr", "--id-set", "nowhere"]) == 2
    _one_line_error(capsys, "nowhere")


def test_evaluate_takes_the_detector_of_the_id_set_it_names(tmp_path, monkeypatch, capsys):
    """``evaluate --id celeba`` scores with CelebA's detector, not silently with the default CIFAR-10 one."""
    monkeypatch.setenv("SROOD_SHIPPED_DIR", str(tmp_path / "shipped"))
    monkeypatch.setenv("SROOD_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))  # no detector anywhere
    for argv, wanted in ((["--id", "celeba"], "celeba/sr"), (["--id", "celeba", "--id-set", "pokemon"], "pokemon/sr"),
                         (["--id", str(tmp_path)], "cifar10/sr")):
        assert main(["evaluate", *argv, "--ood", "texture"]) == 2, argv
        _one_line_error(capsys, f"no quick detector for {wanted}")
