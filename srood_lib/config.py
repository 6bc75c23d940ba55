"""Configs: loading (method constants + a profile + an ID experiment), command-line style overrides, hashing, and
the project's standard paths.

``configs/method.yaml``, ``configs/<profile>.yaml`` and ``configs/id/<id_set>.yaml`` are plain data and the only
places where budgets, resolutions, erosion sets, model widths and seeds are set, each key in exactly one of them.
Everything else reads the resolved config; nothing re-declares its defaults.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"


def project_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the project (POSIX) when inside it, else absolute: how artefacts name each other."""
    path = Path(path).resolve()
    try:
        return path.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def cache_dir() -> Path:
    """Where the dataset cache, converted weights and other derived files live (git-ignored).

    ``SROOD_CACHE_DIR`` overrides the default ``<project>/data``.
    """
    return Path(os.environ.get("SROOD_CACHE_DIR", PROJECT_ROOT / "data"))


def checkpoint_dir() -> Path:
    """Where trained models are written (git-ignored). ``SROOD_CHECKPOINT_DIR`` overrides."""
    return Path(os.environ.get("SROOD_CHECKPOINT_DIR", PROJECT_ROOT / "checkpoints"))


def results_dir(profile: str, experiment: str | None = None) -> Path:
    """Where rendered results of a profile go (committed for the CPU profile by run_all.sh): the profile's folder
    (data overview, report) or, given an ID experiment, its subfolder ``results/<profile>/<experiment>/``."""
    root = Path(os.environ.get("SROOD_RESULTS_DIR", PROJECT_ROOT / "results")) / profile
    return root / experiment if experiment else root


def local_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The local copy of the raw datasets: ``explicit`` (``--data-dir``) first, then ``SROOD_DATA_DIR``."""
    value = explicit if explicit is not None else os.environ.get("SROOD_DATA_DIR")
    return Path(value).expanduser().resolve() if value else None


def profile_path(profile: str | os.PathLike) -> Path:
    """``quick`` -> ``configs/quick.yaml``; an existing path is returned as is."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"unknown profile {profile!r}: no {path}. Known profiles: {', '.join(known)}")
    return path


def parse_value(text: str) -> Any:
    """Parse an override value as YAML, so ``3``, ``0.5``, ``true``, ``[2, 4]`` and ``null`` get their types."""
    return yaml.safe_load(text)


def set_dotted(cfg: dict, dotted_key: str, value: Any) -> None:
    """``set_dotted(cfg, "prior.train.kimg", 10)``; the key must already exist, so typos fail loudly."""
    keys = dotted_key.split(".")
    node = cfg
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(keys[:i]) or "<top level>"
            options = ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
            raise KeyError(f"config has no key {dotted_key!r}: {key!r} is not in {where} (keys there: {options})")
        if i == len(keys) - 1:
            node[key] = value
        else:
            node = node[key]


def apply_overrides(cfg: Mapping, overrides: Iterable[str] | Mapping[str, Any] | None) -> dict:
    """Return a copy of ``cfg`` with overrides applied: ``["a.b=3", ...]`` or ``{"a.b": 3}``."""
    out = copy.deepcopy(dict(cfg))
    if not overrides:
        return out
    items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
    for key, value in items:
        set_dotted(out, key, value)
    return out


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.subkey=value")
    key, value = text.split("=", 1)
    return key.strip(), parse_value(value)


METHOD_FILE = "method.yaml"
EXPERIMENT_DIR = CONFIG_DIR / "id"


def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return data


def merge_disjoint(base: Mapping, extra: Mapping, source: str, where: str = "") -> dict:
    """``base`` with the keys of ``extra`` (read from ``source``) added; a leaf set by both is an error: each key
    has one source of truth."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        path = f"{where}{key}"
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_disjoint(out[key], value, source, path + ".")
        elif key in out:
            raise ValueError(f"{path} is set twice ({source} and a layer below it); keep it in one place")
        else:
            out[key] = copy.deepcopy(value)
    return out


def id_set_names() -> list[str]:
    """The ID sets the workbook knows: one ``configs/id/<name>.yaml`` each."""
    return sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))


def experiment_names(profile: str | os.PathLike) -> list[str]:
    """The ID experiments a profile runs, in its order (the first is the default)."""
    return list(_read_yaml(profile_path(profile)).get("experiments") or {})


def load_config(profile: str | os.PathLike, overrides: Iterable[str] | Mapping[str, Any] | None = None,
                experiment: str | None = None) -> dict:
    """The config of one ID experiment of a profile, as one plain dict, with overrides applied.

    Layers: ``configs/method.yaml`` (the method's constants), the profile (budgets and sizes) and
    ``configs/id/<experiment>.yaml`` (the ID set, its table, OOD columns and figures) each add keys no other of
    the three sets; then the profile's ``experiments.<experiment>`` overrides and ``overrides`` replace values
    of keys that exist.
    ``experiment`` defaults to the profile's first. A resolved file (``config.resolved.yaml``, written by
    ``resolve-config``) is read as it is, with ``overrides`` applied.
    """
    path = profile_path(profile)
    raw = _read_yaml(path)
    if path.parent.resolve() != CONFIG_DIR.resolve():  # already resolved
        if experiment is not None and raw.get("experiment", {}).get("name") != experiment:
            raise ValueError(f"{path} is the resolved config of {raw.get('experiment', {}).get('name')!r}, "
                             f"not of {experiment!r}")
        return apply_overrides(raw, overrides)
    experiments = raw.pop("experiments", None) or {}
    cfg = merge_disjoint(_read_yaml(CONFIG_DIR / METHOD_FILE), raw, source=f"configs/{path.name}")
    if experiments:
        name = experiment or next(iter(experiments))
        if name not in experiments:
            raise KeyError(f"profile {cfg['profile']!r} has no experiment {name!r}; it runs "
                           f"{', '.join(experiments)} (configs/{path.name}: experiments)")
        description = _read_yaml(EXPERIMENT_DIR / f"{name}.yaml")
        cfg = merge_disjoint(cfg, {k: v for k, v in description.items() if k != "experiment"},
                             source=f"configs/id/{name}.yaml")
        cfg["experiment"] = {"name": name, **description.get("experiment", {})}
        cfg = apply_overrides(cfg, experiments[name] or {})
    elif experiment is not None:
        raise KeyError(f"{path} lists no experiments, so there is no {experiment!r}")
    return apply_overrides(cfg, overrides)


def require_keys(cfg: Mapping, keys: Iterable[str], where: str, section: str | None = None) -> None:
    """Fail loudly, naming every missing key, when a config section lacks keys: the library has no defaults.

    ``where`` names the dict in the message (e.g. ``repair.train``); ``section`` the profile section to add
    them to (default: the first part of ``where``).
    """
    missing = [k for k in keys if k not in cfg]
    if missing:
        section = section or where.split(".")[0]
        raise KeyError(f"{where} is missing keys {missing}; add them to the profile's {section} section")


_ABSENT = object()


def notebook_config(profile: str, namespace: Mapping[str, Any], experiment: str | None = None) -> dict:
    """The config a notebook runs with.

    Papermill injects every top-level key of the (resolved) config YAML into the notebook's namespace; run
    interactively, nothing is injected. Either way the notebook gets the full config of the profile's
    ``experiment`` (default: its first), with any injected top-level values taking precedence, so its parameters
    cell only names the profile and the ID set.
    """
    injected = namespace.get("experiment")
    if isinstance(injected, dict) and injected.get("name"):
        if experiment is not None and experiment != injected["name"]:
            raise ValueError(f"id_set is {experiment!r} but this notebook was run with the config of "
                             f"{injected['name']!r}; restart the kernel to run another ID set")
        experiment = injected["name"]
    cfg = load_config(profile, experiment=experiment)
    for key in list(cfg):
        value = namespace.get(key, _ABSENT)
        # Only plain data is an injected value: a module or function of the same name (``from srood_lib import
        # ablations``) is the notebook's own import, not a config section.
        if key != "profile" and isinstance(value, (dict, list, str, int, float, bool, type(None))):
            cfg[key] = copy.deepcopy(value)
    return cfg


def _canonical(obj: Any) -> Any:
    """Integer-like mapping keys as ints, so ``{4: 128}`` from YAML and ``{"4": 128}`` after papermill's JSON
    round trip are the same section."""
    if isinstance(obj, Mapping):
        items = {(int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k): _canonical(v)
                 for k, v in obj.items()}
        if len({type(k) for k in items}) > 1:  # mixed int/str keys cannot be sorted together
            items = {str(k): v for k, v in items.items()}
        return items
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def config_hash(section: Any, length: int = 12) -> str:
    """A stable short hash of a config section (key order does not matter); keys checkpoints to their recipe."""
    blob = json.dumps(_canonical(section), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
