"""MSP / MaxLogit and the compact ResNet behind them: known answers, direction, determinism, exact resume, save/load."""
import numpy as np
import pytest
import torch

from srood_lib.baselines import classifier as clf
from srood_lib.baselines.common import module_blob, module_from_blob

CFG = {"width": 4, "blocks": [1, 1], "epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9,
       "weight_decay": 5e-4, "label_smoothing": 0.1, "warmup_fraction": 0.2, "crop_padding": 2, "bf16_cpu": False}
DET_CFG = {"classifier": CFG, "seed": 0, "device": "cpu"}


def coloured(n, seed, res=16):
    """Three classes told apart by their colour: a classifier learns them in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])
    images = colours[labels][:, None, None, :] + rng.integers(-25, 25, (n, res, res, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


class Uniform(torch.nn.Module):
    """A classifier with equal logits for every class."""

    def __init__(self, n_classes):
        super().__init__()
        self.head = torch.nn.Linear(1, n_classes)
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.zeros(len(x), self.head.out_features) + 0 * self.w


def test_uniform_classifier_known_answers():
    images, _ = coloured(5, 0)
    msp = clf.MSP(DET_CFG, Uniform(4)).score(images)
    np.testing.assert_allclose(msp, -0.25)  # MSP of a uniform classifier is 1/C (negated: higher = more OOD)
    np.testing.assert_allclose(clf.MaxLogit(DET_CFG, Uniform(4)).score(images), 0.0)


def test_confident_logits_score_lower_than_flat_ones():
    logits = torch.tensor([[10.0, 0.0, 0.0], [1.0, 0.9, 0.8]])
    assert clf.MSP.score_logits(logits)[0] < clf.MSP.score_logits(logits)[1]
    assert clf.MaxLogit.score_logits(logits)[0] < clf.MaxLogit.score_logits(logits)[1]


def test_training_learns_is_deterministic_and_the_blob_round_trips():
    images, labels = coloured(96, 0)
    a = clf.train_classifier(images, labels, CFG, 1, torch.device("cpu"), progress=False)
    b = clf.train_classifier(images, labels, CFG, 1, torch.device("cpu"), progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    test, test_labels = coloured(48, 1)
    assert clf.accuracy(a, test, test_labels) > 0.9
    again = module_from_blob(clf.ResNetClassifier, module_blob(a), torch.device("cpu"))
    torch.testing.assert_close(clf.logits_of(again, test), clf.logits_of(a, test))
    # ID images are more confidently classified than noise
    noise = np.random.default_rng(2).integers(0, 256, (48, 16, 16, 3), dtype=np.uint8)
    det = clf.MSP(DET_CFG, a)
    assert np.median(det.score(noise)) > np.median(det.score(test))


def test_resume_from_the_saved_epoch_gives_the_same_network(tmp_path):
    images, labels = coloured(64, 0)
    state = tmp_path / "state.pt"
    whole = clf.train_classifier(images, labels, CFG, 0, torch.device("cpu"), progress=False, state_path=state)
    # the run saved its state at the end of epoch 1 of 2; training again resumes from there
    assert torch.load(state, weights_only=True)["step"] == 4
    resumed = clf.train_classifier(images, labels, CFG, 0, torch.device("cpu"), progress=False, state_path=state)
    for (k, va), vb in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(va, vb), k


def test_unlabelled_images_and_an_unfitted_detector_are_refused():
    images, labels = coloured(8, 0)
    with pytest.raises(ValueError, match="needs a label"):
        clf.train_classifier(images, np.full(8, -1), CFG, 0, torch.device("cpu"), progress=False)
    with pytest.raises(RuntimeError, match="no trained classifier"):
        clf.MSP(DET_CFG).score(images)
    with pytest.raises(ValueError, match="labels="):
        clf.MaxLogit(DET_CFG).fit(images, progress=False)
    fitted = clf.MaxLogit(DET_CFG).fit(images, progress=False, labels=labels)
    assert fitted.score(images).shape == (8,)


def test_lr_schedule_warms_up_and_decays_to_zero():
    lrs = [clf.lr_at(s, 10, 1.0, 0.2) for s in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == pytest.approx(1 / 8) and lrs == sorted(lrs[:2]) + lrs[2:]
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


@pytest.mark.parametrize("width", [4, clf.NHWC_MIN_CPU_WIDTH])
def test_a_32px_cpu_run_finishes_on_either_side_of_the_nhwc_width(width):
    """Regression: at the smoke profile's shape (width 4, 32 px, batch 32) channels_last made oneDNN's stride-2 1x1
    conv backward spin forever on AVX2 CPUs; from NHWC_MIN_CPU_WIDTH the CPU trains channels_last again. A
    subprocess, so a hang or a crash fails this test instead of the suite."""
    import os
    import subprocess
    import sys

    from srood_lib.config import PROJECT_ROOT
    code = ("import numpy as np, torch\n"
            "from srood_lib.baselines.classifier import train_classifier\n"
            f"cfg = {dict(CFG, width=width, epochs=0.5, batch_size=32)!r}\n"
            "rng = np.random.default_rng(0)\n"
            "images, labels = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 256)\n"
            "model = train_classifier(images, labels, cfg, 0, torch.device('cpu'), progress=False)\n"
            "print('finished', sum(p.numel() for p in model.parameters()))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("finished")
