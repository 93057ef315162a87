"""Raw vs denoised for a chosen micrograph: same contrast stretch, a zoomed region, power spectra.

``comparison_figure`` builds the figure with plain matplotlib (tests call it headless under Agg);
the viewer draws the same panels into Scipion's plotter window."""

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, ProtocolViewer

from ..protocols import ProtNT2CDenoise


def _standardize(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    return (image - image.mean()) / max(float(image.std()), 1e-8)


def _log_spectrum(image: np.ndarray) -> np.ndarray:
    n = min(image.shape)
    crop = image[:n, :n] - image[:n, :n].mean()
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(crop))) ** 2)


OVERVIEW_MAX = 512  # px: whole-micrograph panels are binned to at most this (a 4096² image shows in < 1 s)


def draw_comparison(axes, raw: np.ndarray, denoised: np.ndarray, zoom: int = 512) -> None:
    """Fill six axes: raw, denoised (whole, binned to <= 512 px), the zoomed centre of each at full
    resolution (each pair with the denoised image's 1-99 % stretch), and power spectra of the
    central <= 512 px. Only binned images and crops are standardized: fast on 4096² micrographs."""
    from nt2c_core.images import bin_image, centre_crop

    factor = max(1, round(raw.shape[0] / denoised.shape[0]))
    raw = bin_image(raw, factor)  # the denoised image's grid (binned output)
    overview = max(1, -(-max(denoised.shape) // OVERVIEW_MAX))
    z = min(zoom, *denoised.shape)
    pairs = [
        (("raw", "denoised"), [_standardize(bin_image(im, overview)) for im in (raw, denoised)]),
        (("raw, centre", "denoised, centre"), [_standardize(centre_crop(im, z)) for im in (raw, denoised)]),
    ]
    for (titles, images), pair_axes in zip(pairs, (axes[0:2], axes[2:4])):
        lo, hi = np.percentile(images[1], (1, 99))
        for ax, title, image in zip(pair_axes, titles, images):
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
            ax.set_title(title)
            ax.axis("off")
    spectra = (
        ("raw power spectrum", centre_crop(raw, OVERVIEW_MAX)),
        ("denoised power spectrum", centre_crop(denoised, OVERVIEW_MAX)),
    )
    for ax, (title, image) in zip(axes[4:], spectra):
        spectrum = _log_spectrum(image)
        ax.imshow(spectrum, cmap="gray", vmin=np.percentile(spectrum, 1), vmax=np.percentile(spectrum, 99.5))
        ax.set_title(title)
        ax.axis("off")


def comparison_figure(raw: np.ndarray, denoised: np.ndarray, title: str = "", zoom: int = 512):
    """A matplotlib Figure (no display needed) with the six comparison panels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8))
    axes = [fig.add_subplot(2, 3, i + 1) for i in (0, 1, 3, 4, 2, 5)]
    draw_comparison(axes, raw, denoised, zoom)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pair_for(protocol: ProtNT2CDenoise, index: int):
    """(raw array, denoised array, micName) of the index-th denoised micrograph (0-based)."""
    from nt2c_core.io import read_mrc

    out_set = protocol.outputMicrographs
    mics = list(out_set.iterItems(orderBy="id"))
    if not mics:
        raise ValueError("no denoised micrograph yet")
    mic = mics[min(max(index, 0), len(mics) - 1)]
    raw_mic = protocol.inputMicrographs.get()[mic.getObjId()]
    return read_mrc(raw_mic.getFileName())[0], read_mrc(mic.getFileName())[0], mic.getMicName()


class NT2CDenoiseViewer(ProtocolViewer):
    """Compare a raw micrograph with its NT2C-denoised version."""

    _label = "viewer NT2C denoise"
    _targets = [ProtNT2CDenoise]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam("micIndex", params.IntParam, default=1, label="Micrograph number (1 = first)")
        form.addParam("zoom", params.IntParam, default=512, label="Zoomed region (px)")
        form.addParam("doShowCompare", params.LabelParam, label="Show raw vs denoised")

    def _getVisualizeDict(self):
        return {"doShowCompare": self._showCompare}

    def _showCompare(self, param=None):
        from pwem.viewers import EmPlotter

        raw, den, name = pair_for(self.protocol, self.micIndex.get() - 1)
        plotter = EmPlotter(x=2, y=3, windowTitle=f"NT2C: {name}")
        axes = [plotter.createSubPlot("", "", "") for _ in range(6)]
        order = [axes[0], axes[1], axes[3], axes[4], axes[2], axes[5]]
        draw_comparison(order, raw, den, self.zoom.get())
        return [plotter]
