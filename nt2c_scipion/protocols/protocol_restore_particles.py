"""Restore a SetOfParticles with an SR3 restorer (diffusion + post-processing U-Net), one step per
particle stack.

Outputs keep each particle's objId, CTF, alignment (projection/2-D transforms), coordinates and
micrograph links (clone of the input item with a new image location); the sampling rate and
acquisition are copied from the input set. Restored stacks are named ``<n>_<stem>_restored.mrcs``
(n = the stack's number), so equal stack names in different folders cannot collide.
"""

import json
import os
import shutil
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params
from pwem.objects import SetOfParticles
from pyworkflow.object import Boolean, Float, String
from pyworkflow.protocol import STEPS_PARALLEL

from nt2c_core.settings import RESTORER

from .protocol_base import ProtNT2CBase

OUTPUT_PARTICLES = "outputParticles"
OUTPUT_VARIANCE = "outputVariance"


class RestoreOutputs(Enum):
    outputParticles = SetOfParticles
    outputVariance = SetOfParticles


def image_file(location_file: str) -> str:
    """A particle's stack path without Scipion's ``:mrcs`` style suffix."""
    return location_file.split(":")[0] if ":" in location_file and not Path(location_file).exists() else location_file


class ProtNT2CRestoreParticles(ProtNT2CBase):
    """Restore particle images with an SR3 conditional diffusion model and its post-processing U-Net
    (Zhang et al., ICASSP 2024), trained on simulated particles of your structure ('train particle
    restorer (SR3)') or imported. Particles keep their CTF, alignment and identity, so 2-D
    classification or 3-D refinement can run on either set. A generative model can invent detail:
    every run first restores noise matched to your particles and says (summary, log, the output
    set's nt2cInvention* attributes) whether the restorer paints its training structure into it;
    a flagged restorer's images are for picking/alignment only; reconstruct from the raw set."""

    _label = "restore particles (SR3)"
    _possibleOutputs = RestoreOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputParticles",
            params.PointerParam,
            pointerClass="SetOfParticles",
            important=True,
            label="Particles",
            help="Extracted particles (MRC stacks), with or without CTF and alignment.",
        )
        form.addParam(
            "inputModel",
            params.PointerParam,
            pointerClass="NT2CModel",
            important=True,
            label="SR3 restorer",
            help="From 'train particle restorer (SR3)' or 'import model' (kind particle-restorer), "
            "trained at the particles' pixel size.",
        )
        form.addSection("Restoration")
        form.addParam(
            "sampleSteps",
            params.IntParam,
            default=RESTORER.sample_steps,
            label="Diffusion steps",
            help="DDIM steps per particle: more steps give sharper (posterior-sample) images; with "
            "post-processing, 4 measured best (PSNR) on our benchmark. Time grows linearly.",
        )
        form.addParam(
            "samples",
            params.IntParam,
            default=RESTORER.samples,
            expertLevel=params.LEVEL_ADVANCED,
            label="Draws averaged",
            help="Restored draws averaged per particle (1 = one sample; more "
            "approach the posterior mean, N times slower).",
        )
        form.addParam(
            "postProcess",
            params.BooleanParam,
            default=True,
            label="Post-processing U-Net?",
            help="Apply the light U-Net trained after the diffusion model (recommended).",
        )
        form.addParam(
            "batch",
            params.IntParam,
            default=RESTORER.batch,
            expertLevel=params.LEVEL_ADVANCED,
            label="Batch size",
            help="Particles per forward pass (memory grows with it and with box²).",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=RESTORER.seed,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="Seeds each particle's start noise (with its objId): reruns give the same images.",
        )
        form.addParam(
            "uncertainty",
            params.BooleanParam,
            default=False,
            label="Write the uncertainty?",
            help="Also output the per-pixel variance over the draws of each particle (a second particle "
            "set, outputVariance): where the draws disagree the restorer is guessing. Needs 'Draws "
            "averaged' >= 2.",
        )
        form.addSection("Invention check")
        form.addParam(
            "inventionImages",
            params.IntParam,
            default=RESTORER.invention_images,
            label="Noise images restored",
            help="Before restoring, this many images of pure noise with your particles' power spectrum "
            "(no particle in them) are restored and compared with the restorer's training structure, "
            "against the same noise blurred to the same smoothness. A restorer that paints its training "
            "structure into noise is flagged in the summary. 0 = no check (not recommended).",
        )
        form.addParam(
            "inventionThreshold",
            params.FloatParam,
            default=RESTORER.invention_threshold,
            expertLevel=params.LEVEL_ADVANCED,
            label="Flag above (correlation)",
            help="Excess correlation of restored noise with the training structure over blurred noise "
            "(scale -1..1) above which the restorer is flagged as inventing.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form, threads=1)

    # --- steps ----------------------------------------------------------------------------
    def _stacks(self) -> list:
        return sorted({image_file(p.getFileName()) for p in self.inputParticles.get().iterItems()})

    def _insertAllSteps(self):
        convert = self._insertFunctionStep(self.convertInputStep, needsGPU=False)
        deps = [
            self._insertFunctionStep(self.restoreStep, i, stack, prerequisites=[convert])
            for i, stack in enumerate(self._stacks())
        ]
        if self.inventionImages.get() and self._canCheckInvention():
            deps.append(self._insertFunctionStep(self.inventionCheckStep, prerequisites=[convert]))
        self._insertFunctionStep(self.createOutputStep, prerequisites=deps, needsGPU=False)

    def _groupsPath(self) -> str:
        return self._getExtraPath("stacks.json")

    def convertInputStep(self):
        """Group the particles by stack once: {stack: [[objId, index from 1], ...]} (the restore
        steps read their own group instead of each iterating the whole set)."""
        groups = {}
        for p in self.inputParticles.get().iterItems(orderBy="id"):
            groups.setdefault(image_file(p.getFileName()), []).append([p.getObjId(), max(p.getIndex(), 1)])
        with open(self._groupsPath(), "w") as fh:
            json.dump(groups, fh)

    def _overrides(self) -> dict:
        """The inference settings of the restore steps (the invention check is its own step)."""
        return {
            "sample_steps": self.sampleSteps.get(),
            "samples": self.samples.get(),
            "batch": self.batch.get(),
            "seed": self.seed.get(),
            "invention_images": 0,
            "invention_threshold": self.inventionThreshold.get(),
        }

    def _inventionPath(self) -> str:
        return self._getExtraPath("invention.json")

    def _canCheckInvention(self) -> bool:
        """Whether the restorer file holds the training references the check needs (files written
        before nt2c checked invention do not)."""
        model = self.inputModel.get()
        return model is not None and bool(model.getMetadata().get("invention_check"))

    def inventionCheckStep(self):
        """``restore-particles --check-only`` on the first stack (in-process or through the
        dedicated environment): extra/invention.json."""
        stack = self._stacks()[0]
        overrides = {**self._overrides(), "invention_images": self.inventionImages.get()}
        out = Path(self._getTmpPath("invention"))
        if self._inProcess():
            from nt2c_core.particles.sr3 import restore_particles

            model = self.inputModel.get().getFileName()
            restore_particles([stack], out, model, overrides, self.postProcess.get(), self._device(), check_only=True)
        else:
            self._runRestore(out, overrides, "--check-only", os.path.abspath(stack))
        shutil.move(str(out / "invention.json"), self._inventionPath())
        report = self._invention()
        (self.warning if report["flagged"] else self.info)(f"NT2C invention check: {report['message']}")

    def _invention(self):
        path = Path(self._inventionPath())
        return json.loads(path.read_text()) if path.is_file() else None

    def _outputPath(self, number: int, stack: str) -> str:
        return self._getExtraPath(f"{number + 1:03d}_{Path(stack).stem}_restored.mrcs")

    def restoreStep(self, number, stack):
        with open(self._groupsPath()) as fh:
            rows = json.load(fh)[stack]
        dst = self._outputPath(number, stack)
        if self._inProcess():
            self._restoreHere(stack, rows, dst)
        else:
            self._restoreIsolated(number, stack, rows, dst)
        variance = self._variancePath(dst) if self.uncertainty.get() else None
        with open(self._getExtraPath(f"{number + 1:03d}.json"), "w") as fh:
            json.dump({"stack": stack, "output": dst, "variance": variance, "objIds": [obj for obj, _ in rows]}, fh)
        self.info(f"stack {number + 1} ({stack}): restored {len(rows)} particles into {dst}")

    @staticmethod
    def _variancePath(dst: str) -> str:
        return dst.replace("_restored.mrcs", "_variance.mrcs")

    def _restoreHere(self, stack, rows, dst):
        import numpy as np

        from nt2c_core.io import write_mrc
        from nt2c_core.logs import stage
        from nt2c_core.particles.sr3 import Restorer
        from nt2c_core.particles.star import read_stack

        images, pixel = read_stack(stack)
        index = [i - 1 for _, i in rows]
        if index and max(index) >= len(images):
            raise ValueError(f"{stack}: particle index {max(index) + 1} but the stack holds {len(images)} images")
        device = self._device()
        with stage(f"restore-particles {stack}", device):
            restorer = Restorer(self.inputModel.get().getFileName(), self._overrides(), self.postProcess.get(), device)
            for warning in restorer.check_pixel(self.inputParticles.get().getSamplingRate(), stack):
                self.warning(warning)
            result = restorer.restore(images[index], np.array([obj for obj, _ in rows]), True, self.uncertainty.get())
            restored, spread = result if self.uncertainty.get() else (result, None)
            pixel = pixel or self.inputParticles.get().getSamplingRate()
            if spread is not None:
                write_mrc(self._variancePath(dst), spread, pixel, [restorer.label, "variance"])
            write_mrc(dst, restored, pixel, [restorer.label])

    def _restoreIsolated(self, number, stack, rows, dst):
        """The same stage through the dedicated environment's ``nt2c restore-particles``, given a
        RELION STAR of this stack's particles (start noise then seeded by their order in it, not
        by objId: the two routes give equally valid, not identical, draws)."""
        star = Path(self._getTmpPath(f"{number + 1:03d}.star"))
        lines = ["data_particles", "", "loop_", "_rlnImageName #1"]
        lines += [f"{index:06d}@{os.path.abspath(stack)}" for _, index in rows]
        star.write_text("\n".join(lines) + "\n")
        out = Path(self._getTmpPath(f"{number + 1:03d}"))
        extra = ["--uncertainty"] if self.uncertainty.get() else []
        self._runRestore(out, self._overrides(), *extra, str(star.absolute()))
        produced = sorted((out / "Particles").glob("*_restored.mrcs"))
        if len(produced) != 1:
            raise RuntimeError(f"nt2c restore-particles wrote {len(produced)} stacks in {out / 'Particles'}")
        shutil.move(str(produced[0]), dst)
        if self.uncertainty.get():
            shutil.move(self._variancePath(str(produced[0])), self._variancePath(dst))

    def _runRestore(self, out: Path, overrides: dict, *args):
        """The dedicated environment's ``nt2c restore-particles -o OUT`` with this form's model,
        device, post-processing and ``overrides``, then ``args`` (options and the input)."""
        self._runNT2C(
            "restore-particles",
            "--model",
            os.path.abspath(self.inputModel.get().getFileName()),
            "-o",
            str(out.absolute()),
            "--device",
            self._cliDevice(),
            *([] if self.postProcess.get() else ["--no-post"]),
            *[arg for key, value in overrides.items() for arg in (f"--{key.replace('_', '-')}", value)],
            *args,
        )

    def createOutputStep(self):
        in_set = self.inputParticles.get()
        where, spread = {}, {}
        with open(self._groupsPath()) as fh:
            stacks = len(json.load(fh))
        for number in range(stacks):
            info = Path(self._getExtraPath(f"{number + 1:03d}.json"))
            if info.exists():
                data = json.loads(info.read_text())
                where.update({obj: (i + 1, data["output"]) for i, obj in enumerate(data["objIds"])})
                if data.get("variance"):
                    spread.update({obj: (i + 1, data["variance"]) for i, obj in enumerate(data["objIds"])})
        outputs = {OUTPUT_PARTICLES: self._particlesAt(in_set, where, "")}
        if spread:
            outputs[OUTPUT_VARIANCE] = self._particlesAt(in_set, spread, "variance")
        report = self._invention()
        for out in outputs.values():
            if report is not None:
                out.nt2cInventionExcess = Float(report["excess"])
                out.nt2cInventionFlagged = Boolean(report["flagged"])
                out.nt2cInvention = String(report["message"])
        self._defineOutputs(**outputs)
        for out in outputs.values():
            self._defineSourceRelation(self.inputParticles, out)

    def _particlesAt(self, in_set, where: dict, suffix: str):
        """A copy of the input particles (objId, CTF, alignment, coordinates) at new locations."""
        out = self._createSetOfParticles(suffix)
        out.copyInfo(in_set)
        for particle in in_set.iterItems(orderBy="id"):
            if particle.getObjId() not in where:
                continue
            new = particle.clone()
            new.setLocation(*where[particle.getObjId()])
            out.append(new)
        return out

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        from nt2c_core.errors import NT2CError
        from nt2c_core.settings import RestorerConfig

        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        model = self.inputModel.get()
        if model is None:
            errors.append("Choose an SR3 restorer (train one, or import a .pt file).")
        elif model.getKind() != "particle-restorer":
            errors.append(
                f"{model.getFileName()}: is a {model.getKind()!r} model; this protocol needs a "
                "'particle-restorer' (from 'train particle restorer (SR3)')."
            )
        try:
            overrides = {**self._overrides(), "invention_images": self.inventionImages.get()}
            RestorerConfig(**{**RestorerConfig().__dict__, **overrides}).validate()
        except NT2CError as exc:
            errors.append(f"Restoration settings: {exc}")
        if self.uncertainty.get() and self.samples.get() < 2:
            errors.append("Writing the uncertainty needs 'Draws averaged' >= 2 (the variance over the draws).")
        particles = self.inputParticles.get()
        if particles is not None and particles.getSize():
            missing = [s for s in self._stacks() if not Path(s).is_file()]
            if missing:
                errors.append(f"Particle stack not found: {missing[0]}")
        return errors

    def _warnings(self):
        model, particles = self.inputModel.get(), self.inputParticles.get()
        if model is None or particles is None or not model.getPixelSize():
            return []
        ratio = particles.getSamplingRate() / model.getPixelSize()
        if not 0.8 <= ratio <= 1.25:
            return [
                f"The particles' pixel size ({particles.getSamplingRate():.3g} Å) differs from the restorer's "
                f"({model.getPixelSize():.3g} Å) by more than 25 %."
            ]
        return []

    def _summary(self):
        out = getattr(self, OUTPUT_PARTICLES, None)
        report = self._invention()
        lines = []
        if report is not None:
            lines.append(
                ("WARNING: " if report["flagged"] else "") + report["message"][0].upper() + report["message"][1:]
            )
        elif self.inventionImages.get() == 0:
            lines.append("Invention check off: restored images were not checked for invented structure.")
        elif not self._canCheckInvention():
            lines.append(
                "Not checked for invented structure: the restorer file holds no training references "
                "(written before nt2c checked invention); retrain it to have it checked."
            )
        if out is None:
            return lines + ["Running or not started."]
        lines.append(
            f"Restored {out.getSize()} of {self.inputParticles.get().getSize()} particles with "
            f"{self.inputModel.get().getFileName()} ({self.sampleSteps.get()} diffusion steps, "
            f"{self.samples.get()} draw(s), post-processing {'on' if self.postProcess.get() else 'off'})."
        )
        return lines

    def _methods(self):
        return [
            "Particle images were restored with an SR3 conditional diffusion model and a post-processing "
            f"U-Net [Zhang2024SR3] as implemented in scipion-em-nt2c ({self.sampleSteps.get()} DDIM steps)."
        ]

    def _citations(self):
        return ["Zhang2024SR3"]
