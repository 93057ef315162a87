"""What NT2C training did, for the one-click protocol: loss curves of the coarse U-Net, the noise
GAN and the fine U-Net; real vs generated noise patches; the chosen background tiles on a
micrograph; the model-choice table (general, coarse, fine scored before denoising); raw vs coarse
vs fine for a chosen micrograph.

The figures are built by functions that tests call headless (Agg); the viewer shows them in
Scipion's plotter windows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, ProtocolViewer

from nt2c_core.layout import MODEL, OVERLAYS, WorkLayout, loss_csv, loss_png, samples_png

from ..protocols import (
    ProtNT2C,
    ProtNT2CExtractNoise,
    ProtNT2CSimulate,
    ProtNT2CTrainCoarse,
    ProtNT2CTrainFine,
    ProtNT2CTrainNoiseGAN,
)
from .viewer_denoise import _standardize

LOSS_COLUMNS = {"coarse": ("step", "loss"), "gan": ("iteration", "wasserstein"), "fine": ("step", "loss")}


def read_loss(path: Path, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Two columns of a loss CSV written by nt2c_core (empty arrays when the file is missing)."""
    if not path.exists():
        return np.empty(0), np.empty(0)
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(x) and r.get(y)]
    return np.array([float(r[x]) for r in rows]), np.array([float(r[y]) for r in rows])


def draw_losses(axes, work: Path) -> int:
    """One axis per training stage; returns how many stages had a loss log."""
    drawn = 0
    for ax, (stage, (x, y)) in zip(axes, LOSS_COLUMNS.items()):
        steps, values = read_loss(loss_csv(WorkLayout(work).model(stage)), x, y)
        ax.set_title(f"{stage}: {y.replace('_', ' ')}")
        ax.set_xlabel(x)
        if len(steps):
            ax.plot(steps, values)
            drawn += 1
    return drawn


def losses_figure(work: Path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.5))
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    draw_losses(axes, Path(work))
    fig.tight_layout()
    return fig


def stage_images(work: Path) -> dict:
    """PNG files the stages wrote: GAN samples (real vs generated) and noise-patch overlays."""
    work = Path(work)
    layout = WorkLayout(work)
    images = {"gan_samples": samples_png(layout.model("gan"))}
    for overlay in sorted(layout.overlays.glob("*.png")):
        images[f"overlay {overlay.stem}"] = overlay
    return {k: v for k, v in images.items() if v.exists()}


SELECTION_COLUMNS = (
    ("held_out_psnr_db", "held-out PSNR (dB)", 2),
    ("unknown_structure_psnr_db", "unknown structure + aggregate PSNR (dB)", 2),
    ("carbon_edge_psnr_db", "carbon edge PSNR (dB)", 2),
    ("lowpass_agreement", "low-pass agreement", 4),
    ("residual_correlation", "residual correlation", 3),
    ("residual_band_excess", "residual band excess", 2),
)


def selection_rows(work: Path) -> tuple[list[str], list[list[str]], str]:
    """(header, rows, reason) of the run's model choice (``denoised/selection.json``); no rows
    when the run did not choose (``chooseModel`` off or not denoised yet)."""
    import json

    path = WorkLayout(work).selection
    if not path.exists():
        return [], [], "no model choice recorded (model choice off, or the run has not denoised yet)"
    selection = json.loads(path.read_text())
    header = ["model", *[label for _, label, _ in SELECTION_COLUMNS], "chosen"]
    rows = []
    for score in selection["scores"]:
        cells = ["-" if score.get(key) is None else f"{score[key]:.{digits}f}" for key, _, digits in SELECTION_COLUMNS]
        rows.append([score["name"], *cells, "yes" if score["name"] == selection["chosen"] else ""])
    return header, rows, selection.get("reason", "")


def draw_selection(ax, work: Path) -> int:
    """The model-choice table and its reason on one axis; returns the number of models shown."""
    import textwrap

    header, rows, reason = selection_rows(work)
    ax.axis("off")
    if rows:
        table = ax.table(cellText=rows, colLabels=header, loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
    ax.set_title("Model choice", loc="left")
    ax.text(0, 0.05, "\n".join(textwrap.wrap(reason, 150)), fontsize=8, va="bottom", transform=ax.transAxes)
    return len(rows)


COMPARE_CROP = 512  # px: the coarse model denoises only this central crop (fast in the GUI)


def raw_coarse_fine(protocol: ProtNT2C, index: int, crop: int = COMPARE_CROP):
    """(raw, coarse-denoised, fine-denoised, micName) of the central ``crop`` px of the index-th
    micrograph (0-based): the fine image is what the run wrote; only the crop is denoised with the
    coarse model, so the viewer answers in about a second whatever the micrograph's size."""
    from nt2c_core.images import centre_crop
    from nt2c_core.io import read_mrc

    from .. import Plugin

    work = Path(protocol._getExtraPath("work"))
    mics = list(protocol.outputMicrographs.iterItems(orderBy="id"))
    mic = mics[min(max(index, 0), len(mics) - 1)]
    raw = centre_crop(read_mrc(protocol.inputMicrographs.get()[mic.getObjId()].getFileName())[0], crop)
    pixel = protocol.inputMicrographs.get().getSamplingRate()
    coarse = Plugin.denoiseImage(WorkLayout(work).model("coarse"), raw, pixel)
    return raw, coarse, centre_crop(read_mrc(mic.getFileName())[0], crop), mic.getMicName()


def draw_raw_coarse_fine(axes, raw, coarse, fine) -> None:
    """Same contrast stretch (the fine image's 1-99 %) on standardized images."""
    shown = [(t, _standardize(i)) for t, i in (("raw", raw), ("coarse", coarse), ("fine", fine))]
    lo, hi = np.percentile(shown[2][1], (1, 99))
    for ax, (title, image) in zip(axes, shown):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")


PAGE = 6  # figures per viewer window: a data set has hundreds of micrographs


def page_of(images: dict, page: int, per_page: int = PAGE) -> tuple[dict, int]:
    """(the figures of page ``page`` (1-based, clamped), number of pages)."""
    names = list(images)
    pages = max(1, -(-len(names) // per_page))
    page = min(max(int(page or 1), 1), pages)
    return {n: images[n] for n in names[(page - 1) * per_page : page * per_page]}, pages


def png_plotter(images: dict, title: str, page: int = 1):
    """A Scipion plotter window showing one page of PNG files side by side (title -> path)."""
    from matplotlib.image import imread
    from pwem.viewers import EmPlotter

    images, pages = page_of(images, page)
    if pages > 1:
        title = f"{title} (page {min(max(int(page or 1), 1), pages)} of {pages})"
    plotter = EmPlotter(x=1, y=max(len(images), 1), windowTitle=title, figsize=(4 * max(len(images), 1), 4.5))
    for name, path in images.items():
        ax = plotter.createSubPlot(name, "", "")
        ax.imshow(imread(str(path)))
        ax.axis("off")
    return plotter


class NT2CTrainingViewer(ProtocolViewer):
    """Loss curves, real vs generated noise, background tiles, raw vs coarse vs fine."""

    _label = "viewer NT2C training"
    _targets = [ProtNT2C]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("doShowLosses", params.LabelParam, label="Training loss curves")
        form.addParam(
            "page",
            params.IntParam,
            default=1,
            label="Page of figures",
            help=f"Figures are shown {PAGE} per window; a data set has one overlay per micrograph.",
        )
        form.addParam("doShowImages", params.LabelParam, label="Noise patches: GAN samples and overlays")
        form.addParam(
            "doShowChoice",
            params.LabelParam,
            label="Model choice: general, coarse and fine scored",
            help="The table the run printed before denoising (denoised/selection.json): held-out "
            "simulated PSNR, PSNR on a structure none was trained on, agreement with the raw "
            "micrographs at the particle scale, and whether the residual raw - denoised looks "
            "like noise; and why the denoising model was chosen.",
        )
        form.addParam("micIndex", params.IntParam, default=1, label="Micrograph number (1 = first)")
        form.addParam(
            "doShowCompare",
            params.LabelParam,
            label="Raw vs coarse vs fine",
            help=f"The central {COMPARE_CROP} px of the micrograph: raw, the coarse model's output "
            "(computed now on that crop) and the run's fine output.",
        )

    def _getVisualizeDict(self):
        return {
            "doShowLosses": self._showLosses,
            "doShowImages": self._showImages,
            "doShowChoice": self._showChoice,
            "doShowCompare": self._showCompare,
        }

    def _work(self) -> Path:
        return Path(self.protocol._getExtraPath("work"))

    def _showLosses(self, param=None):
        from pwem.viewers import EmPlotter

        plotter = EmPlotter(x=1, y=3, windowTitle="NT2C training losses")
        draw_losses([plotter.createSubPlot("", "", "") for _ in range(3)], self._work())
        return [plotter]

    def _showImages(self, param=None):
        return [png_plotter(stage_images(self._work()), "NT2C noise patches", self.page.get())]

    def _showChoice(self, param=None):
        from pwem.viewers import EmPlotter

        plotter = EmPlotter(x=1, y=1, windowTitle="NT2C model choice", figsize=(12, 3))
        draw_selection(plotter.createSubPlot("", "", ""), self._work())
        return [plotter]

    def _showCompare(self, param=None):
        from pwem.viewers import EmPlotter

        raw, coarse, fine, name = raw_coarse_fine(self.protocol, self.micIndex.get() - 1)
        plotter = EmPlotter(x=1, y=3, windowTitle=f"NT2C: {name}")
        draw_raw_coarse_fine([plotter.createSubPlot("", "", "") for _ in range(3)], raw, coarse, fine)
        return [plotter]


def stage_pngs(protocol) -> dict:
    """PNG files a stage protocol wrote: loss curves and GAN samples of a training protocol, the
    chosen tiles per micrograph of the extraction protocol, the calibration spectra of the
    simulation protocol."""
    extra = Path(protocol._getExtraPath())
    candidates = {
        "loss curves": loss_png(extra / MODEL),
        "real vs generated noise": samples_png(extra / MODEL),
        "calibration: real vs simulated spectra": extra / "calibration" / "calibration.png",
    }
    for overlay in sorted((extra / "noise" / OVERLAYS).glob("*.png")):
        candidates[f"noise tiles {overlay.stem}"] = overlay
    return {k: v for k, v in candidates.items() if v.exists()}


class NT2CStageViewer(ProtocolViewer):
    """Loss curves, generated noise or chosen tiles of one NT2C training stage."""

    _label = "viewer NT2C stage"
    _targets = [ProtNT2CTrainCoarse, ProtNT2CTrainFine, ProtNT2CTrainNoiseGAN, ProtNT2CExtractNoise, ProtNT2CSimulate]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam(
            "page",
            params.IntParam,
            default=1,
            label="Page of figures",
            help=f"Figures are shown {PAGE} per window; extraction writes one per micrograph.",
        )
        form.addParam("doShowImages", params.LabelParam, label="Show the stage's figures")

    def _getVisualizeDict(self):
        return {"doShowImages": self._showImages}

    def _showImages(self, param=None):
        return [png_plotter(stage_pngs(self.protocol), "NT2C stage", self.page.get())]
