"""Where things are: the ``nt2c run`` work folder and the files written beside a model.

One place for the names the pipeline, the stage functions, the Scipion protocols and viewers, the
demo and the benchmarks use (torch-free)::

    WORK/config.json              the run's settings          WORK/pipeline.json   its summary
    WORK/<stage>/DONE.json        a finished stage            WORK/<stage>/STALE   redo it (an earlier stage changed)
    WORK/simulate/                simulated pairs (noisy/, clean/, params.json)
    WORK/coarse/model.pt          WORK/gan/model.pt           WORK/fine/model.pt
    WORK/noise/noise_patches.mrcs (+ .star, summary.json, overlays/)
    WORK/denoised/*.mrc           WORK/denoised/selection.json (the model choice)
    MODEL.ckpt  MODEL.loss.csv  MODEL.loss.png  MODEL.samples.png   beside every model file
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL = "model.pt"
DONE = "DONE.json"
STALE = "STALE"
NOISE_STACK = "noise_patches.mrcs"
NOISE_STAR = "noise_patches.star"
NOISE_SUMMARY = "summary.json"
OVERLAYS = "overlays"
SELECTION = "selection.json"


def checkpoint(model: str | os.PathLike) -> Path:
    """The training checkpoint of a model file (``MODEL.ckpt``)."""
    return Path(f"{model}.ckpt")


def loss_csv(model: str | os.PathLike) -> Path:
    return Path(f"{model}.loss.csv")


def loss_png(model: str | os.PathLike) -> Path:
    return Path(f"{model}.loss.png")


def samples_png(model: str | os.PathLike) -> Path:
    """Real vs generated noise patches of a noise model."""
    return Path(f"{model}.samples.png")


@dataclass(frozen=True)
class WorkLayout:
    """The files of one ``nt2c run`` work folder (``root``)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def stage(self, name: str) -> Path:
        return self.root / name

    def model(self, stage: str) -> Path:
        """The model a training stage (coarse, gan, fine) writes."""
        return self.root / stage / MODEL

    def done(self, stage: str) -> Path:
        return self.root / stage / DONE

    def stale(self, stage: str) -> Path:
        return self.root / stage / STALE

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def summary(self) -> Path:
        return self.root / "pipeline.json"

    @property
    def pairs(self) -> Path:
        """The simulated training pairs (``nt2c simulate``'s folder layout)."""
        return self.root / "simulate"

    @property
    def noise(self) -> Path:
        return self.root / "noise"

    @property
    def noise_patches(self) -> Path:
        return self.noise / NOISE_STACK

    @property
    def overlays(self) -> Path:
        return self.noise / OVERLAYS

    @property
    def denoised(self) -> Path:
        return self.root / "denoised"

    @property
    def selection(self) -> Path:
        return self.denoised / SELECTION
