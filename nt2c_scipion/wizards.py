"""NT2C wizards: the noise patch size of the one-click protocol from its atomic model's extent
and the micrographs' sampling rate; a preview of which tiles an SSIM threshold keeps."""

from pyworkflow.wizard import Wizard

from .protocols import ProtNT2C, ProtNT2CExtractNoise


def suggested_noise_patch(protocol: ProtNT2C) -> int:
    """Patch side [px] from the protocol's atomic model and input sampling (see
    ``nt2c_core.noise.extract.suggest_patch_size``)."""
    from nt2c_core.noise.extract import suggest_patch_size
    from nt2c_core.simulate.structure import load_structure

    mics = protocol.inputMicrographs.get()
    path = protocol._structurePath()
    if mics is None or not path:
        raise ValueError("Choose the micrographs and the atomic model first.")
    return suggest_patch_size(2 * load_structure(path).radius, mics.getSamplingRate())


class NT2CNoisePatchWizard(Wizard):
    """Fill 'Noise patch size' with two particle diameters (multiple of 32 px)."""

    _targets = [(ProtNT2C, ["noisePatch"])]

    def show(self, form, *args):
        form.setVar("noisePatch", suggested_noise_patch(form.protocol))


PREVIEW_MAX = 768  # px: a crop this size denoises in about half a second on a 2-core CPU


def preview_size(patch) -> int:
    """Side [px] of the central crop a preview works on: two patches (3 x 3 tiles at the default
    half-patch stride), 512-768 px, so the wizard answers in about a second whatever the
    micrograph's size (a whole 4096² micrograph takes minutes to denoise on a CPU)."""
    return int(min(PREVIEW_MAX, max(512, 2 * (patch or 128))))


def threshold_preview(protocol: ProtNT2CExtractNoise, index: int = 0):
    """(raw crop, MicrographNoise) of the central crop of the index-th input micrograph with the
    protocol's current extraction settings: which tiles its threshold keeps, every tile's score."""
    from nt2c_core.images import centre_crop
    from nt2c_core.io import read_mrc
    from nt2c_core.noise.extract import find_background

    from . import Plugin

    in_set = protocol.inputMicrographs.get()
    model = protocol.inputModel.get()
    if in_set is None or model is None:
        raise ValueError("Choose the micrographs and the enhancement model first.")
    mics = list(in_set.iterItems(orderBy="id"))
    mic = mics[min(max(index, 0), len(mics) - 1)]
    settings = protocol.extractSettings()
    pixel = in_set.getSamplingRate()
    raw = centre_crop(read_mrc(mic.getFileName())[0], preview_size(settings.patch or settings.ssim_patch(pixel)))
    enhanced = Plugin.denoiseImage(model.getFileName(), raw, pixel)
    name = f"{mic.getMicName()}, central {raw.shape[1]}x{raw.shape[0]} px"
    return raw, find_background(raw, enhanced, settings, name, pixel_size=pixel)


def draw_threshold_preview(axes, raw, found, patch: int, threshold: float) -> None:
    """Left: the micrograph with kept tiles outlined; right: histogram of tile scores."""
    from nt2c_core.plots import draw_overlay

    draw_overlay(
        axes[0], raw, found.origins, patch, f"{found.name}: {len(found.origins)} of {len(found.all_origins)} tiles kept"
    )
    axes[1].hist(found.all_scores, bins=30)
    axes[1].axvline(threshold, color="red")
    axes[1].set_xlabel("min pairwise SSIM of a tile")


class NT2CThresholdWizard(Wizard):
    """Preview on the first micrograph which tiles the current SSIM threshold keeps."""

    _targets = [(ProtNT2CExtractNoise, ["threshold"])]

    def show(self, form, *args):
        from pwem.viewers import EmPlotter

        protocol = form.protocol
        raw, found = threshold_preview(protocol)
        plotter = EmPlotter(x=1, y=2, windowTitle="NT2C: SSIM threshold preview", figsize=(11, 4.5))
        axes = [plotter.createSubPlot("", "", "") for _ in range(2)]
        draw_threshold_preview(axes, raw, found, protocol.patch.get(), protocol.threshold.get())
        plotter.show()
        return plotter
