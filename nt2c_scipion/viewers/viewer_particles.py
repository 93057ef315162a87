"""SR3 particle restoration: raw vs restored particles (paged), and the restorer's training
(loss of the diffusion and post-processing U-Nets, simulated noisy/clean examples).

The figures are built by functions that tests call headless (Agg)."""

import csv
from pathlib import Path

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.viewer import DESKTOP_TKINTER, WEB_DJANGO, ProtocolViewer

from nt2c_core.layout import loss_csv

from ..protocols import ProtNT2CRestoreParticles, ProtNT2CTrainRestorer
from ..protocols.protocol_restore_particles import OUTPUT_PARTICLES, image_file


def particle_pairs(protocol: ProtNT2CRestoreParticles, first: int, count: int):
    """(raw images, restored images, objIds) of ``count`` restored particles from the ``first``-th
    (0-based) of the output set, read one image at a time (a page, never the whole set)."""
    import mrcfile

    out_set = getattr(protocol, OUTPUT_PARTICLES, None)
    if out_set is None:
        raise ValueError("no restored particles yet")
    raw_set = protocol.inputParticles.get()
    raws, restored, ids = [], [], []
    for i, particle in enumerate(out_set.iterItems(orderBy="id")):
        if i < first:
            continue
        if len(ids) == count:
            break
        source = raw_set[particle.getObjId()]
        for image, target in ((source, raws), (particle, restored)):
            with mrcfile.mmap(image_file(image.getFileName()), permissive=True) as mrc:
                data = mrc.data if mrc.data.ndim == 3 else mrc.data[None]
                target.append(np.array(data[max(image.getIndex(), 1) - 1], np.float32))
        ids.append(particle.getObjId())
    return raws, restored, ids


def draw_pairs(axes, raws, restored, ids) -> None:
    """Raw images on the first len(ids) axes, restored ones on the next (same contrast rule)."""
    for ax, img, title in zip(
        axes, list(raws) + list(restored), [f"{i} raw" for i in ids] + [f"{i} restored" for i in ids]
    ):
        ax.imshow(img, cmap="gray", vmin=np.percentile(img, 1), vmax=np.percentile(img, 99))
        ax.set_title(title, fontsize=7)
        ax.axis("off")


def pairs_figure(raws, restored, ids):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * max(len(ids), 1), 3.6))
    draw_pairs([fig.add_subplot(2, len(ids), k + 1) for k in range(2 * len(ids))], raws, restored, ids)
    fig.tight_layout()
    return fig


def read_phases(model: Path) -> dict:
    """{phase: (steps, losses)} from a restorer's loss CSV (empty when it is missing)."""
    path = loss_csv(model)
    out = {}
    if path.exists():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                steps, losses = out.setdefault(row["phase"], ([], []))
                steps.append(float(row["step"]))
                losses.append(float(row["loss"]))
    return out


def draw_losses(axes, phases: dict) -> None:
    """The diffusion and post-processing loss curves on two axes."""
    for ax, phase in zip(axes, ("diffusion", "refine")):
        steps, losses = phases.get(phase, ([], []))
        ax.plot(steps, losses)
        ax.set_title(f"{phase} loss", fontsize=9)
        ax.set_xlabel("step")


def training_figure(protocol: ProtNT2CTrainRestorer):
    from matplotlib.figure import Figure

    from nt2c_core.io import read_mrc

    fig = Figure(figsize=(10, 3.5))
    phases = read_phases(Path(protocol._modelPath()))
    draw_losses([fig.add_subplot(1, 4, k + 1) for k in range(2)], phases)
    pairs = Path(protocol._getExtraPath("pairs"))
    for k, name in enumerate(("particles", "clean")):
        ax = fig.add_subplot(1, 4, 3 + k)
        path = pairs / f"{name}.mrcs"
        if path.exists():
            img = read_mrc(path, allow_stack=True)[0][0]
            ax.imshow(img, cmap="gray")
        ax.set_title("simulated noisy" if name == "particles" else "simulated clean", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig, sum(1 for v in phases.values() if v[0])


class NT2CRestoreViewer(ProtocolViewer):
    """Raw vs restored particles, a page at a time."""

    _label = "viewer SR3 restoration"
    _targets = [ProtNT2CRestoreParticles]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam(
            "first",
            params.IntParam,
            default=1,
            label="First particle (1 = first)",
            help="Page start, in the order of the output set.",
        )
        form.addParam(
            "count",
            params.IntParam,
            default=8,
            label="Particles per page",
            help="How many raw/restored pairs to show side by side.",
        )
        form.addParam(
            "doShowPairs",
            params.LabelParam,
            label="Show raw vs restored",
            help="Each particle's raw image above its restored image, same percentile contrast rule.",
        )

    def _getVisualizeDict(self):
        return {"doShowPairs": self._showPairs}

    def _showPairs(self, param=None):
        from pwem.viewers import EmPlotter

        raws, restored, ids = particle_pairs(self.protocol, self.first.get() - 1, self.count.get())
        plotter = EmPlotter(x=2, y=max(len(ids), 1), windowTitle="SR3: raw vs restored")
        draw_pairs([plotter.createSubPlot("", "", "") for _ in range(2 * len(ids))], raws, restored, ids)
        return [plotter]


class NT2CRestorerTrainingViewer(ProtocolViewer):
    """The restorer's training: losses and simulated examples."""

    _label = "viewer SR3 training"
    _targets = [ProtNT2CTrainRestorer]
    _environments = [DESKTOP_TKINTER, WEB_DJANGO]

    def _defineParams(self, form):
        form.addSection(label="Visualization")
        form.addParam(
            "doShowTraining",
            params.LabelParam,
            label="Show training losses and examples",
            help="Loss curves of the diffusion and post-processing U-Nets, one simulated noisy/clean pair.",
        )

    def _getVisualizeDict(self):
        return {"doShowTraining": self._showTraining}

    def _showTraining(self, param=None):
        from pwem.viewers import EmPlotter

        plotter = EmPlotter(x=1, y=2, windowTitle="SR3 restorer training")
        draw_losses(
            [plotter.createSubPlot("", "step", "loss") for _ in range(2)], read_phases(Path(self.protocol._modelPath()))
        )
        return [plotter]
