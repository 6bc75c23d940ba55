"""Check our LPIPS against published reference values (needs PyPI access; not part of the test suite).

pyiqa's calibration pairs (TID2013 images in the ``ResultsCalibra`` folder of the PyPI source archive of pyiqa)
have published LPIPS-alex v0.1 values. This fetches that archive with pip, scores the five pairs with
``srood_lib.perceptual.distance`` and with an LPIPS whose backbone is random (what a silent fallback would give),
and prints both beside the reference. Exit status 1 if ours is off by more than 5e-4 on any pair.

    .venv/bin/python scripts/check_lpips_calibration.py
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srood_lib.perceptual import distance  # noqa: E402

REFERENCE_ALEX = {"I03": 0.7237, "I04": 0.2572, "I06": 0.05079, "I08": 0.05205, "I19": 0.4253}
PYIQA = "pyiqa==0.1.16"


def load(data: bytes) -> torch.Tensor:
    import io

    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def main() -> int:
    import lpips

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PYIQA, "-d", tmp,
                        "--quiet"], check=True)
        archive = next(Path(tmp).glob("pyiqa-*.tar.gz"))
        with tarfile.open(archive) as tar:
            files = {Path(m.name).relative_to(Path(m.name).parts[0]).as_posix(): m for m in tar.getmembers()}
            pairs = {k: (load(tar.extractfile(files[f"ResultsCalibra/dist_dir/{k}.bmp"]).read()),
                         load(tar.extractfile(files[f"ResultsCalibra/ref_dir/{k}.bmp"]).read()))
                     for k in REFERENCE_ALEX}
    torch.manual_seed(0)
    random_backbone = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    worst = 0.0
    print(f"{'pair':5} {'reference':>10} {'ours':>10} {'diff':>9} {'random backbone':>16}")
    with torch.no_grad():
        for k, ref in REFERENCE_ALEX.items():
            a, b = pairs[k]
            ours = distance(a, b, "lpips", net="alex").item()
            worst = max(worst, abs(ours - ref))
            print(f"{k:5} {ref:10.5f} {ours:10.5f} {ours - ref:+9.1e} {random_backbone(a, b).item():16.4f}")
    print(f"largest difference: {worst:.1e}")
    return 0 if worst <= 5e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
