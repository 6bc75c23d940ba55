"""The likelihood-family baselines as pipeline steps: train (or load) the models, score, evaluate.

Reads only ``cfg["baselines"]``, ``cfg["seed"]``, ``cfg["device"]`` (and ``cfg["data"]``/``cfg["eval"]``
through ``rows.evaluate``). Each trained model is stored under
``checkpoint_dir()/baselines/<name>_<hash of its recipe>/model.pt`` (recipe = its config section, seed, the
held-out split and a fingerprint of the training images), so a re-run loads instead of retraining. Where the cache
has none, a model shipped under ``detectors/baselines/`` with the same recipe hash is used (``ship_model`` writes
them; ``shipped.py``); a shipped file of another recipe is reported and the model is trained here.

Models: one ID VAE shared by Likelihood, Likelihood Regret, Typicality Test, DoSE and WAIC's first member;
``waic.n_models - 1`` more VAEs for WAIC; one background VAE for the Likelihood Ratio; one Glow for both Glow rows.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from srood_lib.baselines.classifier import MSP, MaxLogit, ResNetClassifier, accuracy, train_classifier
from srood_lib.baselines.common import baseline_config, module_blob, module_from_blob, split_holdout
from srood_lib.baselines.features import FeatureKNN, FeatureMahalanobis
from srood_lib.baselines.glow import Glow, GlowNLL, train_glow
from srood_lib.baselines.likelihood import (WAIC, DoSE_KDE, DoSE_SVM, LikelihoodRatio, TypicalityTest,
                                            VAELikelihood, background_seed, member_seed)
from srood_lib.baselines.regret import LikelihoodRegret
from srood_lib.baselines.vae import VAE, sample_images, train_vae
from srood_lib import shipped
from srood_lib.config import checkpoint_dir, config_hash
from srood_lib.data import ImageSet, subsample
from srood_lib.rows import evaluate, table_of
from srood_lib.atomic import atomic_write
from srood_lib.runtime import (atomic_torch_save, compact_state, data_fingerprint, expand_state, resolve_device,
                               safe_torch_load)

LIKELIHOOD_METHODS = ["Likelihood", "Likelihood Regret", "WAIC", "Typicality Test", "Likelihood Ratio", "DoSE_KDE",
                      "DoSE_SVM", "Glow (diff to None)", "Glow (diff to PNG)"]
CLASSIFIER_METHODS = [MSP.method, MaxLogit.method]
# Families an ID set may list in baselines.families; the features family names its rows per backbone.
FAMILIES = {"likelihood": LIKELIHOOD_METHODS, "classifier": CLASSIFIER_METHODS, "features": ["KNN", "Mahalanobis"]}
TRAINED_FAMILIES = ("likelihood", "classifier")   # the families with trained models ("features" has none)
MODEL_FORMAT = "srood-baseline-model-v1"
SHIPPED_FORMAT = "srood-baseline-shipped-v1"
# Bump when scoring code changes what a stored score array would hold.
SCORE_CACHE_VERSION = 1


def model_path(name: str, recipe: dict) -> Path:
    return checkpoint_dir() / "baselines" / f"{name}_{config_hash(recipe)}" / "model.pt"


def _cached(name: str, recipe: dict, train: Callable, cls: type, device: torch.device, id_set: str):
    """The ``cls`` model made by ``recipe``: from the cache if stored there, else the shipped one of ``id_set`` if
    its recipe hash matches, else trained and stored (atomically). The model carries where it came from:
    ``cache_key`` (name, recipe hash), ``recipe``, ``source``, ``weights`` (float32, or the shipped storage) and
    ``train_record`` (train seconds and device of the run that trained it)."""
    digest = config_hash(recipe)
    path, ship = model_path(name, recipe), shipped.shipped_baseline_file(id_set, name, digest)
    model = None
    if path.exists():
        blob = safe_torch_load(path)
        if isinstance(blob, dict) and blob.get("format") == MODEL_FORMAT and blob["recipe_hash"] == digest:
            model = module_from_blob(cls, blob["model"], device)
            source, weights = "cached by an earlier run", "float32"
            train_record = {"train_seconds": blob.get("train_seconds"), "device": blob.get("device")}
    if model is None and ship.exists():
        blob = safe_torch_load(ship)
        if isinstance(blob, dict) and blob.get("format") == SHIPPED_FORMAT and blob["recipe_hash"] == digest:
            model = module_from_blob(cls, {"kwargs": blob["kwargs"], "state": expand_state(blob["state"])}, device)
            source, weights = f"shipped {ship.name}", blob["mode"]
            train_record = {k: shipped.record_of(ship).get(k) for k in ("train_seconds", "device")}
    if model is None:
        for stale in shipped.stale_baseline_files(id_set, name, ship):
            print(f"{name}: shipped {stale.name} was made by another recipe; training it here", flush=True)
        t0 = time.time()
        model = train()
        train_record = {"train_seconds": round(time.time() - t0, 1), "device": str(device)}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"format": MODEL_FORMAT, "recipe": recipe, "recipe_hash": digest,
                           "model": module_blob(model), **train_record}, path)
        source, weights = "trained by this run", "float32"
    model.cache_key, model.recipe, model.source, model.weights = (name, digest), recipe, source, weights
    model.train_record = train_record
    return model


def ship_model(model: torch.nn.Module, id_set: str, mode: str, record: dict) -> Path:
    """Write ``model`` (from ``fit_baselines``) to ``detectors/baselines/`` with ``mode`` storage (fp16 | int8 |
    float32: ``runtime.compact_state``), keyed by its recipe hash, with a JSON record (``record`` plus the recipe,
    train time and device)."""
    name, digest = model.cache_key
    dest = shipped.shipped_baseline_file(id_set, name, digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    blob = module_blob(model)
    state = ({k: {"raw": v} for k, v in blob["state"].items()} if mode == "float32"
             else compact_state(blob["state"], mode))
    atomic_torch_save({"format": SHIPPED_FORMAT, "recipe_hash": digest, "mode": mode, "kwargs": blob["kwargs"],
                       "state": state}, dest)
    shipped.write_record(dest, {"model": name, "id": id_set, "recipe_hash": digest, "recipe": model.recipe,
                                "mode": mode, **model.train_record, **record})
    return dest


def models_of(detectors: dict) -> dict[str, torch.nn.Module]:
    """Every distinct trained model behind ``detectors``, by its cache name (vae_id, glow, classifier...)."""
    found = {}
    for det in detectors.values():
        for model in _models_in(det):
            if hasattr(model, "cache_key"):
                found.setdefault(model.cache_key[0], model)
    return found


def _models_in(det) -> list:
    vaes = getattr(det, "vaes", None) or {}
    return [m for m in [*vaes.values(), getattr(det, "flow", None), getattr(det, "model", None)] if m is not None]


def model_sources(detectors: dict) -> pd.DataFrame:
    """One row per trained baseline model: where it came from (cache, shipped file, this run) and its weights."""
    return pd.DataFrame([{"model": name, "source": m.source, "weights": m.weights,
                          "train_seconds": m.train_record.get("train_seconds"),
                          "trained_on": m.train_record.get("device")} for name, m in models_of(detectors).items()])


def _cached_scores(det, images: np.ndarray, progress: bool) -> np.ndarray:
    """``det.score(images)``, stored under ``checkpoint_dir()/baselines/scores/`` when the detector carries a
    ``score_key`` (set by ``fit_baselines``: training data, recipe, seed, device): scoring is most of notebook 04's
    time and is deterministic given the key and the images, so a re-run of the notebook only reads."""
    key = getattr(det, "score_key", None)
    if key is None:
        return det.score(images, progress=progress)
    digest = config_hash({**key, "images": data_fingerprint(images)})
    slug = "".join(c if c.isalnum() else "_" for c in key["method"]).strip("_").lower()
    path = checkpoint_dir() / "baselines" / "scores" / f"{slug}_{digest}.npz"
    if path.exists():
        with np.load(path) as stored:
            seconds = float(stored["seconds_per_image"])
            det.seconds_per_image = None if np.isnan(seconds) else seconds  # the wall time it was computed in
            return stored["scores"]
    scores = np.asarray(det.score(images, progress=progress))
    seconds = getattr(det, "seconds_per_image", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, scores=scores, seconds_per_image=np.nan if seconds is None else seconds))
    return scores


def fit_baselines(cfg: dict, train_images: ImageSet, progress: bool = True) -> dict:
    """The detectors of every family in ``baselines.families``, keyed by their method names, fitted on the ID
    training images (see ``FAMILIES``)."""
    bcfg = baseline_config(cfg)
    families = list(bcfg["families"])
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"baselines.families: unknown {unknown}; choose from {sorted(FAMILIES)}")
    seed, device = int(cfg["seed"]), resolve_device(cfg["device"])
    base = {"data": data_fingerprint(train_images.images), "n_holdout": int(bcfg["n_holdout"]), "split_seed": seed}
    detectors = {}
    id_set = cfg["data"]["id"]
    if "likelihood" in families:
        detectors.update(_likelihood_family(bcfg, train_images.images, base, seed, device, progress, id_set))
    if "classifier" in families:
        detectors.update(_classifier_family(bcfg, train_images, seed, device, progress, id_set))
    if "features" in families:
        for net in bcfg["features"]["nets"]:
            for det in (FeatureKNN(bcfg, net), FeatureMahalanobis(bcfg, net)):
                detectors[det.method] = det.fit(train_images.images, progress=progress)
    for method, det in detectors.items():
        # everything a detector's scores depend on besides the scored images (see _cached_scores); shipped fp16 /
        # int8 weights score (slightly) differently from the float32 ones, so they key their own scores
        det.score_key = {**base, "method": method, "baselines": _family_config(bcfg, _family_of(method)),
                         "version": SCORE_CACHE_VERSION}
        weights = {m.cache_key[0]: m.weights for m in _models_in(det) if hasattr(m, "cache_key")}
        if any(w != "float32" for w in weights.values()):
            det.score_key["weights"] = weights
    return detectors


def _family_of(method: str) -> str:
    return next(f for f, methods in FAMILIES.items() if method in methods or method.split(" (")[0] in methods)


def _family_config(bcfg: dict, family: str) -> dict:
    """The part of the baselines config a family's scores depend on (so a change to one family's section does not
    invalidate another's stored scores)."""
    own = {"classifier": ("classifier",), "features": ("features",)}
    if family in own:
        return {k: bcfg[k] for k in (*own[family], "seed", "device")}
    return {k: v for k, v in bcfg.items() if k not in ("families", "classifier", "features")}


def _likelihood_family(bcfg: dict, images: np.ndarray, base: dict, seed: int, device, progress: bool,
                       id_set: str) -> dict:
    """The nine likelihood-family detectors. The models train on the ID images minus ``baselines.n_holdout``
    held-out ones (seeded); Typicality Test and DoSE fit their statistics on the held-out images."""
    train, _ = split_holdout(images, int(bcfg["n_holdout"]), seed)

    def vae(name: str, model_seed: int, mutation: float):
        recipe = {**base, "vae": bcfg["vae"], "seed": model_seed, "mutation_rate": mutation}
        return _cached(name, recipe, lambda: train_vae(train, bcfg["vae"], model_seed, device, progress, mutation),
                       VAE, device, id_set)

    shared = vae("vae_id", seed, 0.0)
    members = [shared] + [vae(f"vae_waic{m}", member_seed(seed, m), 0.0)
                          for m in range(1, int(bcfg["waic"]["n_models"]))]
    mutation = float(bcfg["likelihood_ratio"]["mutation_rate"])
    background = vae("vae_background", background_seed(seed), mutation)
    flow = _cached("glow", {**base, "glow": bcfg["glow"], "seed": seed},
                   lambda: train_glow(train, bcfg["glow"], seed, device, progress), Glow, device, id_set)
    detectors = {
        "Likelihood": VAELikelihood(bcfg, shared),
        "Likelihood Regret": LikelihoodRegret(bcfg, shared),
        "WAIC": WAIC(bcfg, members),
        "Typicality Test": TypicalityTest(bcfg, shared),
        "Likelihood Ratio": LikelihoodRatio(bcfg, shared, background),
        "DoSE_KDE": DoSE_KDE(bcfg, shared),
        "DoSE_SVM": DoSE_SVM(bcfg, shared),
        "Glow (diff to None)": GlowNLL(bcfg, "none", flow),
        "Glow (diff to PNG)": GlowNLL(bcfg, "png", flow),
    }
    for det in detectors.values():
        det.fit(images, progress=progress)  # every model is given: this fits only the held-out statistics
    return detectors


def _classifier_family(bcfg: dict, train_images: ImageSet, seed: int, device, progress: bool, id_set: str) -> dict:
    """MSP and MaxLogit on one classifier trained on every ID training image and its label (resumable)."""
    labels = train_images.labels
    if (labels < 0).any():
        raise ValueError(f"baselines.families lists 'classifier', but {train_images.name} {train_images.split} "
                         f"has no labels ({train_images.manifest.get('labels')}); drop the family or supply labels")
    recipe = {"data": data_fingerprint(train_images.images), "labels": data_fingerprint(labels),
              "classifier": bcfg["classifier"], "seed": seed}
    state = model_path("classifier", recipe).parent / "train_state.pt"
    model = _cached("classifier", recipe, lambda: train_classifier(train_images.images, labels, bcfg["classifier"],
                                                                   seed, device, progress, state_path=state),
                    ResNetClassifier, device, id_set)
    state.unlink(missing_ok=True)  # the finished model is stored: the resume point is no longer needed
    label_note = f"; labels: {train_images.manifest.get('labels')}"
    detectors = {}
    for cls in (MSP, MaxLogit):
        det = cls(bcfg, model)
        det.note_extra = label_note
        detectors[cls.method] = det
    return detectors


def classifier_accuracy(detectors: dict, test: ImageSet) -> pd.DataFrame:
    """Top-1 accuracy of the classifier behind MSP/MaxLogit on the labelled ID test set (empty without one)."""
    det = detectors.get("MSP") or detectors.get("MaxLogit")
    if det is None:
        return pd.DataFrame()
    c = det.config["classifier"]
    return pd.DataFrame([{"classifier": f"ResNet w{c['width']} blocks {list(c['blocks'])}, {c['epochs']} epochs",
                          "labels": test.manifest.get("labels"), "n_classes": det.model.head.out_features,
                          "n_test": len(test), "test_accuracy_%": round(100 * accuracy(det.model, test.images,
                                                                                        test.labels), 2)}])


def method_note(cfg: dict, method: str) -> str:
    """What the row was computed with, for the results table."""
    b = cfg["baselines"]
    if method in CLASSIFIER_METHODS:
        c = b["classifier"]
        return (f"ResNet w{c['width']} blocks {list(c['blocks'])}, {c['epochs']} epochs SGD, crop+flip; "
                f"pytorch-ood {'MaxSoftmax' if method == 'MSP' else 'MaxLogit'}")
    if method.startswith(("KNN (", "Mahalanobis (")):
        f = b["features"]
        fit = "all" if f["n_fit"] is None else f"{f['n_fit']} (seeded)"
        how = (f"pytorch-ood KNN, k={f['k']}, unit-normalised" if method.startswith("KNN")
               else f"one Gaussian, {f['shrinkage']} shrinkage")
        return (f"beyond the paper: {method.split('(')[1].rstrip(')')} of the LPIPS backbone (5 layers, unit-"
                f"normalised, averaged over positions); {how}; fitted on {fit} ID training images; no training")
    v, g = b["vae"], b["glow"]
    decoder = "" if v["decoder"] == "categorical" else f" {v['mixture_components']}-logistic-mixture decoder"
    vae_model = f"VAE w{v['width']} z{v['z_dim']}{decoder} {v['epochs']} ep"
    vae = f"{vae_model}, IWAE K={b['iwae_k']}"
    glow = f"Glow L{g['levels']} K{g['steps']} h{g['hidden']} {g['epochs']} ep"
    r = b["regret"]
    return {
        "Likelihood": f"{vae}; NLL bits/dim",
        "Likelihood Regret": (f"{vae_model}; {r['n_steps']} encoder Adam "
                              f"steps lr {r['lr']}; IWAE K={r['iwae_k']}; {r['n_images']} images per set"),
        "WAIC": f"{vae}; M={b['waic']['n_models']} VAEs",
        "Typicality Test": f"{vae}; batch size 1; mean NLL of {b['n_holdout']} held-out ID images",
        "Likelihood Ratio": f"{vae}; background VAE, mutation rate {b['likelihood_ratio']['mutation_rate']}",
        "DoSE_KDE": f"{vae}; 5 statistics, KDE fitted on {b['n_holdout']} held-out ID images",
        "DoSE_SVM": f"{vae}; 5 statistics, one-class SVM on {b['n_holdout']} held-out ID images",
        "Glow (diff to None)": f"{glow}; NLL bits/dim",
        "Glow (diff to PNG)": f"{glow}; NLL - PNG bits/dim",
    }[method]


def score_baselines(cfg: dict, detectors: dict, id_set: ImageSet, ood: dict[str, ImageSet], progress: bool = True,
                    raw: dict | None = None) -> pd.DataFrame:
    """Rows of the experiment's table (``rows.evaluate``) of every detector in ``detectors`` on the ID test set and each OOD
    set. Likelihood Regret scores a seeded subset of ``baselines.regret.n_images`` images per set. ``raw``, if
    given, receives the scores ``{method: {"id": ..., ood_name: ...}}``."""
    frames = []
    for method in detectors:
        det = detectors[method]
        ids, oods = id_set, ood
        if method == "Likelihood Regret":
            n = int(cfg["baselines"]["regret"]["n_images"])
            ids = subsample(id_set, n, cfg["seed"])
            oods = {name: subsample(s, n, cfg["seed"]) for name, s in ood.items()}
        s_id = _cached_scores(det, ids.images, progress)
        s_ood = {name: _cached_scores(det, s.images, progress) for name, s in oods.items()}
        note = method_note(cfg, method) + getattr(det, "note_extra", "")
        if getattr(det, "seconds_per_image", None) and method == "Likelihood Regret":
            note += f"; {det.seconds_per_image:.2f} s/image"
        if raw is not None:
            raw[method] = {"id": s_id, **s_ood}
        frames.append(evaluate(cfg, table_of(cfg), method, s_id, s_ood, ids, oods, note=note))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _generative_models(detectors: dict) -> list[tuple[str, object, str]]:
    """(label, detector, model name inside it) for each distinct trained model."""
    out, seen = [], set()

    def add(label, det, name, model):
        if model is not None and id(model) not in seen:
            seen.add(id(model))
            out.append((label, det, name))

    for method in ("Likelihood", "WAIC", "Likelihood Ratio"):
        det = detectors.get(method)
        if det is None:
            continue
        for name, model in det.vaes.items():
            label = {"id": "VAE (ID)", "background": "VAE (background)"}.get(name, f"VAE (WAIC {name})")
            add(label, det, name, model)
    glow = detectors.get("Glow (diff to None)") or detectors.get("Glow (diff to PNG)")
    if glow is not None:
        add("Glow", glow, "flow", glow.flow)
    return out


def test_bits_per_dim(detectors: dict, id_set: ImageSet) -> pd.DataFrame:
    """Bits/dim (mean, std) of every trained generative model on the ID test set: a check that they learned."""
    rows = []
    for label, det, name in _generative_models(detectors):
        if label == "Glow":
            bpd = det.nll_bits_per_dim(id_set.images)
            how = "1 uniform dequantisation sample"
        else:
            bpd = det.nll_bits_per_dim(id_set.images, name)
            how = f"IWAE K={det.config['iwae_k']}"
        rows.append({"model": label, "bits_per_dim": round(float(np.mean(bpd)), 4),
                     "std": round(float(np.std(bpd)), 4), "n": len(bpd), "estimator": how})
    return pd.DataFrame(rows)


test_bits_per_dim.__test__ = False  # a pipeline step, not a pytest test


def sample_grid(detectors: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """uint8 (n, H, W, 3) samples of the ID VAE (draws from p(x|z) and per-sub-pixel modes) and of the Glow."""
    out = {}
    lik = detectors.get("Likelihood")
    if lik is not None:
        vae = lik._vae("id")
        out["VAE (ID), sampled"] = sample_images(vae, n, seed)
        out["VAE (ID), mode per sub-pixel"] = sample_images(vae, n, seed, mode=True)
    glow = detectors.get("Glow (diff to None)") or detectors.get("Glow (diff to PNG)")
    if glow is not None:
        out[f"Glow, T={glow.config['glow']['sample_temperature']}"] = glow.sample_images(n, seed)
    return out
