"""One in-distribution experiment of a profile, as a notebook uses it: ``Experiment.for_notebook(profile, id_set,
globals())`` replaces the preamble every notebook used to repeat.

It holds the resolved config (``configs/method.yaml`` + the profile + ``configs/id/<id_set>.yaml``), and gives,
each computed once and only when asked for: the ID train/test sets, the OOD test sets present (and why the others
are missing), the prior, the calibrated detector of each SR-OOD variant, the results folder
``results/<profile>/<id_set>/`` and the standard result rows of the experiment's table.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from srood_lib import pipeline, report
from srood_lib.config import load_config, notebook_config, results_dir
from srood_lib.data import ImageSet
from srood_lib.detector import SROOD
from srood_lib.levers import trained_lever_config, trained_lever_method
from srood_lib.rows import missing_rows, table_of


class Experiment:
    def __init__(self, cfg: dict, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self._detectors: dict[str, SROOD] = {}
        self._lever_detectors: dict[str, SROOD] = {}

    @classmethod
    def load(cls, profile: str, id_set: str | None = None, overrides=None, progress: bool = True) -> "Experiment":
        return cls(load_config(profile, overrides, experiment=id_set), progress)

    @classmethod
    def for_notebook(cls, profile: str, id_set: str | None, namespace: Mapping[str, Any]) -> "Experiment":
        """The experiment a notebook runs: the injected resolved config under papermill, else the profile's."""
        return cls(notebook_config(profile, namespace, experiment=id_set))

    # ------------------------------------------------------------------ what the experiment is
    @property
    def name(self) -> str:
        return self.cfg["experiment"]["name"]

    @property
    def table(self) -> str:
        """The paper's table this experiment reproduces ("I", "II", "III")."""
        return table_of(self.cfg)

    @property
    def title(self) -> str:
        return f"Table {self.table}: {self.cfg['experiment']['title']}"

    @cached_property
    def out(self) -> Path:
        """``results/<profile>/<id_set>/``, created on first use."""
        path = results_dir(self.cfg["profile"], self.name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def expect_notebook(self, notebook: str) -> None:
        """Refuse to run a notebook the ID set does not list (e.g. the CIFAR-10 ablations 05-08 for CelebA)."""
        listed = self.cfg["experiment"]["notebooks"] + self.cfg["experiment"]["analyses"]
        if notebook not in listed:
            raise ValueError(f"{notebook} is not a notebook of {self.name} (configs/id/{self.name}.yaml lists "
                             f"{', '.join(listed)}); set id_set to an ID set that lists it")

    def figure_path(self, variant: str) -> Path:
        """Where a variant's repair grid goes (the paper's figure number where it has one)."""
        return self.out / f"{self.cfg['experiment']['figures'][variant]}.png"

    # ------------------------------------------------------------------ data
    @cached_property
    def _id_sets(self) -> tuple[ImageSet, ImageSet]:
        return pipeline.id_sets(self.cfg)

    @property
    def train(self) -> ImageSet:
        return self._id_sets[0]

    @property
    def test(self) -> ImageSet:
        return self._id_sets[1]

    @cached_property
    def _ood_sets(self) -> tuple[dict[str, ImageSet], dict[str, str]]:
        return pipeline.ood_sets(self.cfg)

    @property
    def ood(self) -> dict[str, ImageSet]:
        """The OOD test sets of the table that are present."""
        return self._ood_sets[0]

    @property
    def missing(self) -> dict[str, str]:
        """The table's OOD sets that are not present, with the data layer's reason."""
        return self._ood_sets[1]

    def describe_ood(self) -> str:
        return (f"{self.title} | OOD sets scored: {', '.join(self.ood) or 'none'} | needs download: "
                f"{', '.join(self.missing) or 'none'}")

    # ------------------------------------------------------------------ models
    @cached_property
    def prior(self) -> pipeline.PriorInfo:
        return pipeline.ensure_prior(self.cfg, self.train, progress=self.progress)

    def detector(self, variant: str) -> SROOD:
        """The calibrated detector of one variant (trained, resumed or loaded: ``pipeline.fit_detector``)."""
        if variant not in self._detectors:
            self._detectors[variant] = pipeline.fit_detector(self.cfg, variant, self.prior, self.train,
                                                             progress=self.progress)
        return self._detectors[variant]

    @property
    def detectors(self) -> dict[str, SROOD]:
        """Every variant of the profile, in its order."""
        return {v: self.detector(v) for v in self.cfg["repair"]["variants"]}

    def lever_detector(self, name: str) -> SROOD:
        """The calibrated detector of trained lever ``name`` (BEYOND THE PAPER: ``srood_lib.levers``): the variant
        of ``trained_levers`` trained with the lever's overrides on the same prior and images, calibrated by the
        same protocol (``pipeline.fit_detector``, under the lever's own weights key)."""
        if name not in self._lever_detectors:
            cfg = trained_lever_config(self.cfg, name)
            self._lever_detectors[name] = pipeline.fit_detector(cfg, self.cfg["trained_levers"]["variant"],
                                                                self.prior, self.train, progress=self.progress)
        return self._lever_detectors[name]

    def lever_labels(self) -> dict[str, str]:
        """``{trained lever name: its row label}``, in ``trained_levers.runs`` order."""
        faithful = pipeline.VARIANT_METHODS[self.cfg["trained_levers"]["variant"]]
        return {name: trained_lever_method(self.cfg, name, faithful) for name in self.cfg["trained_levers"]["runs"]}

    def lever_methods(self) -> dict[str, SROOD]:
        """``{row label: detector}``: the faithful variant of ``trained_levers`` first, then each trained lever."""
        variant = self.cfg["trained_levers"]["variant"]
        out = {pipeline.VARIANT_METHODS[variant]: self.detector(variant)}
        for name, label in self.lever_labels().items():
            out[label] = self.lever_detector(name)
        return out

    # ------------------------------------------------------------------ rows
    def srood_rows(self) -> tuple[pd.DataFrame, dict]:
        """The SR-OOD rows of the experiment's table (with the JPEG control rows when the profile asks) and the
        "needs download" rows of the absent OOD sets; plus the raw scores ``{variant: {"id": ..., ood: ...}}``."""
        rows, scores = pipeline.score_variants(self.cfg, self.detectors, self.test, self.ood,
                                               self.cfg["eval"]["jpeg_control"])
        absent = missing_rows(self.cfg, self.table, [pipeline.VARIANT_METHODS[v] for v in self.detectors],
                              self.missing)
        return pd.concat([rows, absent], ignore_index=True), scores

    def trained_lever_rows(self, methods: Mapping[str, SROOD]) -> tuple[pd.DataFrame, dict]:
        """Rows of each detector of ``methods`` (``lever_methods``) on the experiment's test sets, and the raw scores
        ``{method: {"id": ..., ood_name: ...}}``. The faithful variant is scored too, on the same images, so its
        rows can stand beside the levers'; it is already in ``table.csv``, so write only the levers' rows."""
        return pipeline.score_variants(self.cfg, methods, self.test, self.ood, jpeg_control=False)

    def health_table(self) -> pd.DataFrame:
        """Repair health of each variant at every k of ``detector.mix_sweep`` (``health.health_table``), on the
        ``eval.n_health`` ID test and per-OOD images of ``pipeline.health_sets``."""
        from srood_lib.health import health_table

        h_id, h_ood = pipeline.health_sets(self.cfg, self.test, self.ood)
        return health_table(self.detectors, h_id.images, {k: v.images for k, v in h_ood.items()},
                            self.cfg["detector"]["mix_sweep"], self.cfg["detector"]["min_specificity"], self.name,
                            pipeline.VARIANT_METHODS)

    def train_test_table(self, n: int) -> pd.DataFrame:
        """Per variant: mean repair distance (LPIPS-alex, chosen setting) on ``n`` of the images its encoder was
        trained on vs. ``n`` ID test images (``health.train_test_gap``): does the encoder memorise?"""
        from srood_lib.detector import split_validation
        from srood_lib.health import train_test_gap

        fit_images, _ = split_validation(self.train.images, self.cfg["data"]["n_val"], self.cfg["seed"])
        rows = [{"method": pipeline.VARIANT_METHODS[v], "n_images": min(n, len(self.test)),
                 **{k: round(x, 4) for k, x in train_test_gap(det, fit_images, self.test.images, n,
                                                              self.cfg["seed"]).items()}}
                for v, det in self.detectors.items()]
        return pd.DataFrame(rows)

    def write_csv(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` atomically to the experiment's results folder."""
        path = self.out / name
        report.write_csv_atomic(frame, path)
        return path
