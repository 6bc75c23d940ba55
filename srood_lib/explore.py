"""The interactive explorer's logic (notebook 10): repair one image under any erosion and mixing layer, score it,
and place the score among the ID test and OOD scores of the same setting. Headless and tested; ``widgets`` only
wires it to ipywidgets.

eps is the detector's threshold, calibrated at its own setting (notebook 02); under any other setting the view
says so, since the threshold no longer means "accepts 95 % of ID".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from srood_lib.data import subsample
from srood_lib.data.images import prepare_image_bytes
from srood_lib.erosion import parse_erosion
from srood_lib.experiment import Experiment
from srood_lib.models.psp import mix_label


def erosion_name(kind: str, factor: int = 4, size: int = 16, dy: int = 0, dx: int = 0) -> str:
    """The erosion a control panel describes: ``identity``, ``bicubic`` (factor) or ``blackout`` (square mask of
    side ``size`` whose centre is (dy, dx) px from the image centre); checked by the erosion parser."""
    if kind == "identity":
        name = "identity"
    elif kind == "bicubic":
        name = f"bicubic_x{int(factor)}"
    elif kind == "blackout":
        name = f"blackout_{int(size)}x{int(size)}_off{int(dy)}_{int(dx)}"
    else:
        raise ValueError(f"unknown erosion kind {kind!r}; expected identity, bicubic or blackout")
    return parse_erosion(name).name


def image_from_bytes(data: bytes, resolution: int, name: str = "upload") -> np.ndarray:
    """An uploaded file as the detector sees it: (R, R, 3) uint8 (RGB, centre square crop, bicubic resize)."""
    return prepare_image_bytes(data, name, resolution, "center_square")


@dataclass
class View:
    """One image repaired under one setting."""

    original: np.ndarray
    eroded: np.ndarray
    repaired: np.ndarray
    score: float
    eps: float
    erosion: str
    mix_from_layer: int | None
    calibrated: bool  # the detector's own setting, where eps holds

    @property
    def flagged(self) -> bool:
        return self.score > self.eps

    def verdict(self) -> str:
        side = "OOD" if self.flagged else "ID"
        note = "" if self.calibrated else " (eps was calibrated at the detector's own setting, not this one)"
        return f"S(x) = {self.score:.4f} {'>' if self.flagged else '<='} eps = {self.eps:.4f}: {side}{note}"


class Explorer:
    """One ID experiment's detectors, its test images and OOD sets, with per-setting reference scores."""

    def __init__(self, exp: Experiment, n_reference: int = 200):
        self.exp = exp
        self.n_reference = n_reference
        self._refs: dict[tuple, dict[str, np.ndarray]] = {}

    @property
    def variants(self) -> list[str]:
        return list(self.exp.cfg["repair"]["variants"])

    @property
    def test(self):
        return self.exp.test

    def test_image(self, index: int) -> np.ndarray:
        return self.exp.test.images[int(index) % len(self.exp.test)]

    def setting(self, variant: str) -> tuple[str, int | None]:
        """The detector's own (T*, k)."""
        det = self.exp.detector(variant)
        return det.erosion_name, det.mix_from_layer

    def view(self, variant: str, image: np.ndarray, erosion: str | None = None,
             mix_from_layer: int | None | str = "chosen") -> View:
        det = self.exp.detector(variant)
        erosion = erosion or det.erosion_name
        k = det.mix_from_layer if mix_from_layer == "chosen" else mix_from_layer
        out = det.repair_uint8(image[None], erosion=erosion, mix_from_layer=k)
        score = float(det.score(image[None], erosion=erosion, mix_from_layer=k)[0])
        eps = float("nan") if det.threshold is None else float(det.threshold)
        return View(out["original"][0], out["eroded"][0], out["repaired"][0], score, eps, erosion,
                    k, (erosion, k) == (det.erosion_name, det.mix_from_layer))

    def reference_scores(self, variant: str, erosion: str, mix_from_layer: int | None) -> dict[str, np.ndarray]:
        """Scores of ``n_reference`` ID test images and as many of each OOD set under one setting (cached)."""
        key = (variant, erosion, mix_from_layer)
        if key not in self._refs:
            det, seed = self.exp.detector(variant), self.exp.cfg["seed"]
            sets = {"ID test": self.exp.test, **self.exp.ood}
            self._refs[key] = {name: det.score(subsample(s, self.n_reference, seed).images, erosion=erosion,
                                               mix_from_layer=mix_from_layer) for name, s in sets.items()}
        return self._refs[key]

    def figure(self, variant: str, view: View, refs: dict[str, np.ndarray] | None = None):
        """Original / eroded / repaired, and the score on the ID and OOD score histograms with eps."""
        import matplotlib.pyplot as plt

        refs = refs if refs is not None else self.reference_scores(variant, view.erosion, view.mix_from_layer)
        fig = plt.figure(figsize=(11, 3.0))
        grid = fig.add_gridspec(1, 5)
        for i, (title, img) in enumerate((("original", view.original), (f"eroded ({view.erosion})", view.eroded),
                                          (f"repaired (k={mix_label(view.mix_from_layer)})", view.repaired))):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[0, 3:])
        scores = np.concatenate(list(refs.values()) + [[view.score, view.eps]])
        bins = np.linspace(scores.min(), scores.max(), 40)
        for name, s in refs.items():
            ax.hist(s, bins=bins, alpha=0.45 if name != "ID test" else 0.7, label=name, density=True)
        ax.axvline(view.eps, color="k", ls="--", lw=1, label="eps")
        ax.axvline(view.score, color="red", lw=2, label="this image")
        ax.set_xlabel("S(x) (LPIPS distance, higher = more OOD)", fontsize=8)
        ax.legend(fontsize=7)
        ax.set_title(view.verdict(), fontsize=8)
        fig.tight_layout()
        return fig


def widgets(explorers: dict[str, Explorer] | None = None, make=None, id_sets: list[str] | None = None):
    """The control panel of notebook 10 (ipywidgets): ID set, variant, test image or upload, erosion, mixing
    layer. ``make(id_set)`` builds an ID set's Explorer when first chosen (``explorers`` holds those built)."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    explorers = dict(explorers or {})
    id_sets = id_sets or list(explorers)

    def current() -> Explorer:
        if id_set.value not in explorers:
            explorers[id_set.value] = make(id_set.value)
        return explorers[id_set.value]

    id_set = w.Dropdown(options=id_sets, description="ID set")
    first = current()
    res = first.exp.detector(first.variants[0]).generator.resolution
    n_latent = first.exp.detector(first.variants[0]).generator.n_latent
    variant = w.Dropdown(options=first.variants, description="variant")
    index = w.IntSlider(0, 0, len(first.exp.test) - 1, description="test image")
    upload = w.FileUpload(accept="image/*", multiple=False, description="your image")
    kind = w.ToggleButtons(options=["chosen", "identity", "bicubic", "blackout"], description="erosion")
    factor = w.Dropdown(options=[2, 4, 8], value=4, description="factor")
    size = w.IntSlider(16, 2, res, description="mask side")
    dy = w.IntSlider(0, -res // 4, res // 4, description="mask dy")
    dx = w.IntSlider(0, -res // 4, res // 4, description="mask dx")
    mix = w.Dropdown(options=[("chosen", "chosen"), ("none", None)] + [(str(k), k) for k in range(1, n_latent)],
                     description="mix from k")
    out = w.Output()

    def image(ex: Explorer) -> np.ndarray:
        if upload.value:  # prepared at the chosen ID set's resolution (CelebA is 64 px in the paper profile)
            item = upload.value[0] if isinstance(upload.value, (list, tuple)) else next(iter(upload.value.values()))
            return image_from_bytes(bytes(item["content"]), ex.test.resolution, item.get("name", "upload"))
        return ex.test_image(index.value)

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            ex = current()
            try:
                ero = None if kind.value == "chosen" else erosion_name(kind.value, factor.value, size.value,
                                                                       dy.value, dx.value)
                view = ex.view(variant.value, image(ex), ero, mix.value)
            except ValueError as err:  # e.g. a mask that leaves the image: say so, keep the panel alive
                print(f"not possible: {err}")
                return
            display(ex.figure(variant.value, view))
            plt.close("all")

    def switch_id(*_):
        ex = current()
        side = ex.test.resolution
        index.max = len(ex.test) - 1
        size.max, dy.min, dy.max, dx.min, dx.max = side, -side // 4, side // 4, -side // 4, side // 4
        variant.options = ex.variants
        redraw()

    id_set.observe(switch_id, names="value")
    for control in (variant, index, upload, kind, factor, size, dy, dx, mix):
        control.observe(redraw, names="value")
    redraw()
    panel = w.VBox([w.HBox([id_set, variant, index, upload]), kind, w.HBox([factor, size, dy, dx]), mix, out])
    panel.redraw = redraw  # tests drive the panel without a browser
    return panel
