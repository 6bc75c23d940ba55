"""The SR-OOD detector: Algorithm 2 of the paper, plus the choice of T* and of the threshold.

``S(x) = distance(R(T*(x)), x)`` with R the repair network (styles from layer ``mix_from_layer`` on replaced by
the latent mean, the paper's test-time style mixing) and distance LPIPS by default. ``predict`` flags ``S > eps``.

How the free settings are chosen (no test OOD set): a validation split is held out of the ID training images;
outliers are made from it (``srood_lib.outliers``: patch-shuffled, inverted, turned, noisy, ...) plus, optionally,
real validation-only OOD sets that are never a test column (``detector.validation_ood``). Every combination of
candidate erosion T, style-mixing layer k (``detector.mix_from_layer``: a list is a set of candidates) and test
LPIPS backbone (``detector.lpips_net``: likewise) is scored; combinations whose repairs fail the repair-health
gate (specificity on ID validation < ``min_specificity``, :mod:`srood_lib.health`) are not eligible; the eligible
one with the highest mean AUROC of ID validation vs. the outliers is chosen. eps then accepts ``id_acceptance``
(95 %) of all ID validation scores under the chosen setting.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from srood_lib.config import PROJECT_ROOT, project_relative
from srood_lib.erosion import parse_erosion
from srood_lib.metrics import auroc, predict_ood, threshold_at_id_acceptance
from srood_lib.models.psp import PSPEncoder, RepairNetwork, mix_label, mix_with_mean
from srood_lib.models.stylegan2 import Generator
from srood_lib.outliers import synthetic_outliers
from srood_lib.perceptual import distance, lpips_features, lpips_from_features, split_net
from srood_lib.data import to_uint8
from srood_lib.data.cache import sha256_file
from srood_lib.runtime import (atomic_torch_save, compact_state, expand_state, resolve_device, safe_torch_load,
                               seeded_split, to_float_images, uint8_to_tensor)
from srood_lib.train_prior import load_prior
from srood_lib.train_repair import train_repair

DETECTOR_FORMAT = "srood-detector-v2"  # v2: chosen mixing layer, backbone and health gate
# The compact form (shipped detectors, srood_lib.shipped): the encoder's weights only, int8 or fp16, and the frozen
# prior named by its file and sha256 instead of copied, so that a detector fits in a few MB of git.
COMPACT_FORMAT = "srood-detector-compact-v1"
COMPACT_MODES = ("fp16", "int8", "mixed")
# "mixed": int8 for the per-style heads (three quarters of the encoder's weights), fp16 for the shared backbone,
# whose features every style reads.
MIXED_INT8_PREFIXES = ("heads.",)
_DEFAULT = object()  # "use the detector's own setting"
# Scoring on the CPU runs a channels_last copy of the network (SROOD.scoring_net); False = the network as trained,
# NCHW (benchmarks/bench_table_scoring.py compares the two).
SCORING_CHANNELS_LAST = True
SCORE_MEMO_ENTRIES = 4096  # scores kept per detector (each one float per image): ~16 KB for 2,000 images


def images_digest(images: np.ndarray) -> str:
    """A content key for a uint8 image batch (shape and bytes): the same images give the same key wherever they
    come from, so a notebook that scores one test set under several analyses repairs it once per setting."""
    import hashlib

    arr = np.ascontiguousarray(images)
    return f"{arr.shape}:{arr.dtype}:" + hashlib.blake2b(memoryview(arr).cast("B"), digest_size=16).hexdigest()


def prefetch_scores(jobs: Sequence[tuple["SROOD", Mapping[tuple, Iterable[tuple[str, str | None]]]]],
                    images: np.ndarray, bar=None) -> None:
    """Fill the score memo of several detectors for one image set, in one pass over its batches.

    ``jobs``: ``[(detector, {(T, k): [(metric, backbone), ...]})]``. Per batch the inputs' LPIPS features are
    computed once for all detectors, each detector's W+ codes once per erosion, its repair once per (T, k), and
    then every (metric, backbone) asked of that repair. Entries already memoised are skipped, so asking twice
    costs nothing; later ``score`` calls for these settings read the memo. Same numbers as scoring each setting
    alone (``score``), which is what every analysis of a table asks one setting at a time. ``bar``: a progress
    bar advanced by the images of each batch.
    """
    digest = images_digest(images)
    todo = []
    for det, wanted in jobs:
        det._require_net()
        per_setting = {}
        for (t, k), asks in wanted.items():
            missing = [(m, n) for m, n in dict.fromkeys((m, n if m != "l2" else None) for m, n in asks)
                       if det._memo_key(digest, t, k, m, n) not in det._scores]
            if missing:
                per_setting[(t, k)] = missing
        if per_setting:
            todo.append((det, per_setting))
    if not todo:
        if bar is not None:
            bar.update(len(images))
        return
    x_nets = list(dict.fromkeys(n for _, per in todo for asks in per.values() for m, n in asks if m == "lpips"))
    out = {id(det): {s: {a: [] for a in asks} for s, asks in per.items()} for det, per in todo}
    bs = int(todo[0][0].config["batch_size"])
    with torch.no_grad():
        for i in range(0, len(images), bs):
            feats_x = {}
            for det, per in todo:
                net_ = det.scoring_net
                x = det._inputs(images[i:i + bs])
                for n in x_nets:
                    if n not in feats_x:  # the same inputs for every detector (same layout, device)
                        feats_x[n] = lpips_features(x, n)
                for t in dict.fromkeys(t for t, _ in per):
                    codes = net_.encode(det._erode(x, t))
                    for (t2, k), asks in per.items():
                        if t2 != t:
                            continue
                        repaired = net_.decode(mix_with_mean(codes, net_.generator.w_avg, k)).float()
                        for metric, n in asks:
                            d = (lpips_from_features(lpips_features(repaired, n), feats_x[n], n)
                                 if metric == "lpips" else distance(repaired, x, metric, net=n or "alex"))
                            out[id(det)][(t, k)][(metric, n)].append(d.cpu())
            if bar is not None:
                bar.update(len(images[i:i + bs]))
    for det, per in todo:
        if len(det._scores) + sum(map(len, per.values())) > SCORE_MEMO_ENTRIES:
            det._scores.clear()
        for (t, k), by_ask in out[id(det)].items():
            for (metric, n), v in by_ask.items():
                det._scores[det._memo_key(digest, t, k, metric, n)] = (
                    torch.cat(v).numpy().astype(np.float64) if v else np.zeros(0))


def detector_config(profile_cfg: dict, variant: str) -> dict:
    """The plain-data config of one SR-OOD variant, taken from a profile (no defaults of its own)."""
    repair, det = profile_cfg["repair"], profile_cfg["detector"]
    if variant not in repair["variants"]:
        raise KeyError(f"unknown SR-OOD variant {variant!r}; the profile defines {sorted(repair['variants'])}")
    var = repair["variants"][variant]
    for key, value in (("detector.lpips_net", det["lpips_net"]),
                       ("repair.train.lpips_net", repair["train"]["lpips_net"])):
        if any(split_net(n)[1] != 1 for n in candidates(value)):
            raise ValueError(f"{key} = {value!r}: a scaled LPIPS backbone is a lever beyond the paper "
                             f"(scoring_levers.lpips_scales), not a setting of the method; use alex or vgg")
    return {"variant": variant, "seed": profile_cfg["seed"], "device": profile_cfg["device"],
            "encoder": repair["encoder"], "train": repair["train"],
            "train_erosions": var["train_erosions"], "candidate_erosions": var["candidate_erosions"],
            "mix_from_layer": det["mix_from_layer"], "distance": det["distance"], "lpips_net": det["lpips_net"],
            "id_acceptance": det["id_acceptance"], "n_val": profile_cfg["data"]["n_val"],
            "synthetic_outliers": det["synthetic_outliers"], "selection_images": det["selection_images"],
            "min_specificity": det["min_specificity"], "batch_size": profile_cfg["eval"]["batch_size"]}


def candidates(value) -> list:
    """A config value that may be one setting or a list of candidates, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def split_validation(images: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``n_val`` images out of ``images`` (a seeded permutation): returns (train, val)."""
    return seeded_split(images, n_val, seed, stream=7, what="n_val")


class SROOD:
    """One SR-OOD variant (``rec``, ``sr`` or ``inpaint``) around a frozen generative prior.

    ``SROOD(config, generator).fit(images, out_dir)`` trains the repair network (Algorithm 1), chooses T* and the
    threshold; ``score``, ``predict``, ``repair`` apply Algorithm 2; ``save``/``load`` keep everything in one file.
    """

    def __init__(self, config: dict, generator: Generator | str | os.PathLike):
        self.config = copy.deepcopy(config)
        self.device = resolve_device(config["device"])
        self.generator = generator if isinstance(generator, Generator) else load_prior(generator, self.device)
        self.net = None  # the property below also empties the score memo whenever the network is replaced
        self.erosion_name: str | None = None
        self.mix_from_layer: int | None = candidates(config["mix_from_layer"])[0]
        self.lpips_net: str = candidates(config["lpips_net"])[0]
        self.passes_health: bool | None = None
        self.threshold: float | None = None
        self.selection: pd.DataFrame | None = None
        self.source = "fitted here"  # where the weights came from (pipeline.fit_detector: cached, shipped, trained)

    @property
    def net(self) -> RepairNetwork | None:
        return self._net

    @net.setter
    def net(self, value: RepairNetwork | None) -> None:
        self._net = value
        self._scoring_copy: RepairNetwork | None = None  # built on first use by scoring_net
        self._scores: dict[tuple, np.ndarray] = {}  # (images digest, T, k, metric, backbone) -> S(x), float64

    # ------------------------------------------------------------------------------------------- training
    def fit(self, images: np.ndarray, out_dir: str | os.PathLike, prior_id: str = "", progress: bool = True,
            validation_ood: dict[str, np.ndarray] | None = None) -> "SROOD":
        """Train on ID ``images`` (uint8 (N, H, W, 3)), resuming from ``out_dir``; then choose the settings and eps.

        ``validation_ood``: real OOD image sets used only for the choice (never a test column)."""
        cfg = self.config
        train, val = split_validation(images, cfg["n_val"], cfg["seed"])
        self.net = train_repair(train, self.generator, cfg["train"], cfg["encoder"], cfg["train_erosions"], out_dir,
                                seed=cfg["seed"], device=self.device, prior_id=prior_id, progress=progress)
        self.select_settings(val, validation_ood, progress=progress)
        return self

    def select_settings(self, val_images: np.ndarray, validation_ood: dict[str, np.ndarray] | None = None,
                        progress: bool = True) -> str:
        """Choose (T*, k, backbone) on held-out ID vs. outliers, among settings that pass the health gate; set eps.

        Returns T*. ``self.selection`` keeps every candidate's specificity and AUROCs (×100)."""
        from itertools import product

        from srood_lib.health import N_SPECIFICITY, specificity_from_repairs
        from srood_lib.progress import tqdm

        cfg = self.config
        pick, outliers = self.validation_sets(val_images, validation_ood)
        nets = candidates(cfg["lpips_net"])
        rows = []
        settings = list(product(cfg["candidate_erosions"], candidates(cfg["mix_from_layer"])))
        # Every setting of one image set at once: its features and codes are computed once (score_settings).
        image_sets = [pick, *outliers.values()]
        scored = [self.score_settings(imgs, nets, settings)
                  for imgs in tqdm(image_sets, desc=f"{cfg['variant']}: choosing T*, k, backbone "
                                   f"({len(settings)} settings)", unit="image set", disable=not progress)]
        for erosion, k in settings:
            _, rep, x = self.repair(pick[:N_SPECIFICITY], erosion=erosion, mix_from_layer=k)
            spec = float(np.mean(specificity_from_repairs(rep.float().cpu(), x.cpu())))
            s_val = scored[0][(erosion, k)]
            s_out = {kind: by_setting[(erosion, k)] for kind, by_setting in zip(outliers, scored[1:])}
            for net in nets:
                row = {"erosion": erosion, "mix_from_layer": mix_label(k), "lpips_net": net,
                       "specificity": round(spec, 4), "passes_gate": spec >= cfg["min_specificity"]}
                for kind in outliers:
                    row[kind] = 100 * auroc(s_val[net], s_out[kind][net])
                row["mean"] = float(np.mean([row[kind] for kind in outliers]))
                rows.append(row)
        table = pd.DataFrame(rows)
        eligible = table[table["passes_gate"]]
        self.passes_health = not eligible.empty
        # No setting passes: take the most input-specific one and say so (rows from it are diagnostics only).
        best = (eligible["mean"].idxmax() if self.passes_health
                else table.sort_values(["specificity", "mean"], ascending=False).index[0])
        table["chosen"] = table.index == best
        self.selection = table
        chosen = table.loc[best]
        self.erosion_name = str(chosen["erosion"])
        self.mix_from_layer = None if chosen["mix_from_layer"] == "none" else int(chosen["mix_from_layer"])
        self.lpips_net = str(chosen["lpips_net"])
        self.threshold = threshold_at_id_acceptance(self.score(val_images), cfg["id_acceptance"])
        return self.erosion_name

    def validation_sets(self, val_images: np.ndarray, validation_ood: dict[str, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The selection protocol's images: the first ``selection_images`` held-out ID images and, per kind, as
        many outliers (synthetic ones made from them, then ``real:<name>`` for each validation-only OOD set)."""
        cfg = self.config
        pick = np.asarray(val_images[:cfg["selection_images"]])
        outliers = synthetic_outliers(pick, cfg["synthetic_outliers"], seed=cfg["seed"])
        for name, imgs in (validation_ood or {}).items():
            outliers[f"real:{name}"] = np.asarray(imgs[:len(pick)])
        return pick, outliers

    def settings(self) -> str:
        """The chosen test-time settings in one line (results notes, figure titles)."""
        return f"T*={self.erosion_name}, mix_from_layer={mix_label(self.mix_from_layer)}, lpips={self.lpips_net}"

    # ------------------------------------------------------------------------------------------- testing
    def _require_net(self) -> RepairNetwork:
        if self.net is None:
            raise RuntimeError("this SROOD has no repair network yet: call fit(...) or SROOD.load(path)")
        return self.net

    @property
    def scoring_net(self) -> RepairNetwork:
        """The repair network as Algorithm 2 runs it. On the CPU a channels_last copy: inference there is
        1.25-1.4x faster in that layout (``benchmarks/bench_table_scoring.py``), the numbers equal up to float
        rounding. The network itself (trained, saved, shipped) stays as it is."""
        if self._scoring_copy is None:
            net = self._require_net()
            self._scoring_copy = (copy.deepcopy(net).to(memory_format=torch.channels_last)
                                  if self._channels_last else net)
        return self._scoring_copy

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images as the scoring network's float inputs in [-1, 1], in its layout and on its device."""
        x = to_float_images(uint8_to_tensor(images)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    @property
    def _channels_last(self) -> bool:
        return SCORING_CHANNELS_LAST and self.device.type == "cpu"

    @torch.no_grad()
    def repair(self, images: np.ndarray, erosion=_DEFAULT, mix_from_layer=_DEFAULT):
        """(eroded, repaired) float tensors on the CPU for uint8 ``images``, with T* and mixing by default."""
        net = self.scoring_net
        name = self.erosion_name if erosion is _DEFAULT else erosion
        if name is None:
            raise RuntimeError("no T* chosen yet: call fit(...) or pass erosion=...")
        mix = self.mix_from_layer if mix_from_layer is _DEFAULT else mix_from_layer
        x = self._inputs(images)
        eroded = self._erode(x, name)
        return eroded, net(eroded, mix_from_layer=mix), x

    def _erode(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """T(x) for erosion ``name``, seeded per call so that random erosions repeat (repair and scoring agree)."""
        return parse_erosion(name)(x, generator=torch.Generator().manual_seed(self.config["seed"]))

    @torch.no_grad()
    def score_nets(self, images: np.ndarray, nets: Sequence[str], erosion=_DEFAULT, mix_from_layer=_DEFAULT,
                   metric: str | None = None) -> dict[str, np.ndarray]:
        """OOD scores S(x) (higher = more OOD) under several LPIPS backbones from one repair pass, in batches.

        Scores are memoised per (images, T, k, metric, backbone) while the network stays the same (repairs are
        deterministic: fixed noise, seeded erosions), so analyses that revisit a setting do not repair again;
        copies are returned, so a caller may change them."""
        name = self.erosion_name if erosion is _DEFAULT else erosion
        mix = self.mix_from_layer if mix_from_layer is _DEFAULT else mix_from_layer
        return self.score_settings(images, nets, [(name, mix)], metric)[(name, mix)]

    @torch.no_grad()
    def score_settings(self, images: np.ndarray, nets: Sequence[str], settings: Sequence[tuple],
                       metric: str | None = None) -> dict[tuple, dict[str, np.ndarray]]:
        """``score_nets`` for several (T, k) settings of the same images: ``{(T, k): {net: scores}}``.

        Per batch the inputs' LPIPS features are computed once (not once per setting) and the W+ codes once per
        erosion (not once per k); every number equals ``score_nets``' for that setting alone."""
        metric = metric or self.config["distance"]
        if any(t is None for t, _ in settings):
            raise RuntimeError("no T* chosen yet: call fit(...) or pass erosion=...")
        prefetch_scores([(self, {(t, k): [(metric, n) for n in nets] for t, k in settings})], images)
        key = self._memo_key
        digest = images_digest(images)
        return {(t, k): {n: self._scores[key(digest, t, k, metric, n)].copy() for n in nets} for t, k in settings}

    @staticmethod
    def _memo_key(digest: str, erosion: str, k, metric: str, net: str | None) -> tuple:
        return digest, erosion, k, metric, (net if metric != "l2" else None)

    def score(self, images: np.ndarray, erosion=_DEFAULT, mix_from_layer=_DEFAULT, metric: str | None = None,
              lpips_net: str | None = None) -> np.ndarray:
        """OOD scores S(x) (higher = more OOD) for uint8 ``images``; the chosen settings unless given."""
        net = lpips_net or self.lpips_net
        return self.score_nets(images, [net], erosion=erosion, mix_from_layer=mix_from_layer, metric=metric)[net]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Algorithm 2's decision: True where S(x) > eps (OOD)."""
        if self.threshold is None:
            raise RuntimeError("no threshold yet: call fit(...) or SROOD.load(path)")
        return predict_ood(self.score(images), self.threshold)

    def repair_uint8(self, images: np.ndarray, **kw) -> dict[str, np.ndarray]:
        """Original / eroded / repaired images as uint8, for the repair figures."""
        eroded, repaired, _ = self.repair(images, **kw)
        return {"original": np.asarray(images), "eroded": to_uint8(eroded),
                "repaired": to_uint8(repaired)}

    # ------------------------------------------------------------------------------------------- storage
    def _calibration(self) -> dict:
        return {"config": self.config, "erosion": self.erosion_name, "mix_from_layer": self.mix_from_layer,
                "lpips_net": self.lpips_net, "passes_health": self.passes_health, "threshold": self.threshold,
                "selection": None if self.selection is None else self.selection.to_dict("list")}

    def save(self, path: str | os.PathLike) -> Path:
        """One self-contained file: config, generator, encoder, T*, threshold and the T* selection table."""
        net = self._require_net()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"format": DETECTOR_FORMAT, **self._calibration(),
                           "G_kwargs": net.generator.init_kwargs, "encoder_kwargs": net.encoder.init_kwargs,
                           "net": {k: v.cpu() for k, v in net.state_dict().items()}}, path)
        return path

    def save_compact(self, path: str | os.PathLike, prior_file: str | os.PathLike, mode: str = "int8") -> Path:
        """The compact form: as ``save`` but with the encoder's weights only, stored as ``mode`` (``int8``: per
        output channel; ``fp16``; ``mixed``: int8 heads, fp16 backbone), and the prior referred to by ``prior_file`` (relative to the project when
        inside it) and its sha256. Not for networks that fine-tune the generator."""
        net = self._require_net()
        if self.config["train"]["train_decoder"]:
            raise ValueError("a detector that fine-tunes the generator cannot be stored compact; use save()")
        if mode not in COMPACT_MODES:
            raise ValueError(f"unknown compact mode {mode!r}; expected one of {COMPACT_MODES}")
        ref = project_relative(prior_file)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"format": COMPACT_FORMAT, **self._calibration(), "mode": mode, "prior_file": ref,
                           "prior_sha256": sha256_file(prior_file), "encoder_kwargs": net.encoder.init_kwargs,
                           "encoder": compact_state(net.encoder.state_dict(), mode, MIXED_INT8_PREFIXES)}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "SROOD":
        """A detector written by ``save`` or ``save_compact``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no detector at {path}; train one (notebook 02_train_repair) or check the path")
        blob = safe_torch_load(path)
        if not isinstance(blob, dict) or blob.get("format") not in (DETECTOR_FORMAT, COMPACT_FORMAT):
            raise ValueError(f"{path} is not an SR-OOD detector file ({DETECTOR_FORMAT} or {COMPACT_FORMAT})")
        config = blob["config"]
        if device is not None:
            config = {**config, "device": device}
        if blob["format"] == COMPACT_FORMAT:
            prior_file = Path(blob["prior_file"])
            prior_file = prior_file if prior_file.is_absolute() else PROJECT_ROOT / prior_file
            if not prior_file.exists() or sha256_file(prior_file) != blob["prior_sha256"]:
                raise ValueError(f"{path} needs the prior {prior_file} (sha256 {blob['prior_sha256'][:12]}...), which "
                                 "is missing or differs; check out the commit the detector was shipped with")
            generator = load_prior(prior_file, "cpu")
            encoder = PSPEncoder(**blob["encoder_kwargs"])
            encoder.load_state_dict(expand_state(blob["encoder"]))
            net = RepairNetwork(encoder, generator, train_decoder=False)
        else:
            generator = Generator(**blob["G_kwargs"])
            net = RepairNetwork(PSPEncoder(**blob["encoder_kwargs"]), generator,
                                train_decoder=config["train"]["train_decoder"])
            net.load_state_dict(blob["net"])
        det = cls(config, net.generator)
        net.requires_grad_(False)
        det.net = net.eval().to(det.device)
        det.generator = det.net.generator
        det.erosion_name, det.threshold = blob["erosion"], blob["threshold"]
        det.mix_from_layer, det.lpips_net = blob["mix_from_layer"], blob["lpips_net"]
        det.passes_health = blob["passes_health"]
        det.selection = None if blob["selection"] is None else pd.DataFrame(blob["selection"])
        det.source = f"loaded ({path.name})"
        return det


def score_sets(detector: SROOD, sets: dict[str, np.ndarray], **kw) -> dict[str, np.ndarray]:
    """Scores for several named image sets with the same settings."""
    return {name: detector.score(images, **kw) for name, images in sets.items()}


def mixing_sweep(detector: SROOD, id_images: np.ndarray, ood_sets: dict[str, np.ndarray],
                 layers: Sequence[int | None]) -> pd.DataFrame:
    """AUROC (×100) per OOD set for each style-mixing layer k (None = no mixing)."""
    rows = []
    for k in layers:
        s_id = detector.score(id_images, mix_from_layer=k)
        for name, imgs in ood_sets.items():
            rows.append({"mix_from_layer": mix_label(k), "ood": name,
                         "auroc": 100 * auroc(s_id, detector.score(imgs, mix_from_layer=k))})
    return pd.DataFrame(rows)
