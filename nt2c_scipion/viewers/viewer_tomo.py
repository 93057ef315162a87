"""Raw vs NMSG-denoised tomogram: central x-y and x-z slices side by side."""

import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, ProtocolViewer

from ..protocols.protocol_denoise_tomo import OUTPUT_TOMOGRAMS, ProtNT2CDenoiseTomo


def tomo_pair_for(protocol: ProtNT2CDenoiseTomo, index: int):
    """(raw volume, denoised volume, tsId or objId) of the index-th denoised tomogram (0-based)."""
    from nt2c_core.io import read_mrc_volume

    out_set = getattr(protocol, OUTPUT_TOMOGRAMS, None)
    tomos = list(out_set.iterItems(orderBy="id")) if out_set is not None else []
    if not tomos:
        raise ValueError("no denoised tomogram yet")
    tomo = tomos[min(max(index, 0), len(tomos) - 1)]
    raw = protocol.inputTomograms.get()[tomo.getObjId()]
    return (
        read_mrc_volume(raw.getFileName())[0],
        read_mrc_volume(tomo.getFileName())[0],
        tomo.getTsId() or str(tomo.getObjId()),
    )


class NT2CTomoViewer(ProtocolViewer):
    """Compare a raw tomogram with its NMSG-denoised version (central slices)."""

    _label = "viewer NMSG denoise"
    _targets = [ProtNT2CDenoiseTomo]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam(
            "tomoIndex",
            params.IntParam,
            default=1,
            label="Tomogram number (1 = first)",
            help="Which denoised tomogram to show, in the order of the output set.",
        )
        form.addParam(
            "doShowSlices",
            params.LabelParam,
            label="Show raw vs denoised slices",
            help="Central x-y and x-z slices of the raw and denoised volumes, same contrast rule.",
        )

    def _getVisualizeDict(self):
        return {"doShowSlices": self._showSlices}

    def _showSlices(self, param=None):
        from pwem.viewers import EmPlotter

        from nt2c_core.tomo.figures import draw_slices

        raw, den, name = tomo_pair_for(self.protocol, self.tomoIndex.get() - 1)
        plotter = EmPlotter(x=2, y=2, windowTitle=f"NMSG: {name}")
        axes = [plotter.createSubPlot("", "", "") for _ in range(4)]
        draw_slices([axes[0], axes[1]], [axes[2], axes[3]], [raw, den], ["raw", "NMSG"])
        return [plotter]
