"""Denoise a SetOfTomograms with NMSG (one network per tomogram, trained on that volume alone, or a
saved NMSG model). Needs scipion-em-tomo (``pip install scipion-em-nt2c[tomo]``); the plugin
registers this protocol only when it imports.

Outputs keep each tomogram's objId, tsId, sampling rate, origin and acquisition (clone of the input
item with a new file named ``<objId>_<stem>.mrc``, so equal file names in different folders cannot
collide).
"""

import json
import os
import time
from enum import Enum
from pathlib import Path

import pyworkflow.protocol.params as params
from pyworkflow.protocol import STEPS_PARALLEL
from tomo.objects import SetOfTomograms

from nt2c_core.settings import NMSG, TOMO_NOISE_MODELS, TOMO_PAIRINGS

from .protocol_base import ProtNT2CBase

OUTPUT_TOMOGRAMS = "outputTomograms"


class DenoiseTomoOutputs(Enum):
    outputTomograms = SetOfTomograms


class ProtNT2CDenoiseTomo(ProtNT2CBase):
    """NMSG cryo-ET denoising (Yang et al. 2024): for each tomogram, a 3-D U-Net is trained on that
    noisy volume alone (its own background noise, a sparsity term against an over-smoothed version
    and a Gaussian guide), then denoises it. No clean data, no even/odd halves needed. A saved
    model (from an earlier run's extra folder) can be applied instead."""

    _label = "denoise tomograms (NMSG)"
    _possibleOutputs = DenoiseTomoOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def _defineParams(self, form):
        form.addSection("Input")
        form.addParam(
            "inputTomograms",
            params.PointerParam,
            pointerClass="SetOfTomograms",
            important=True,
            label="Tomograms",
            help="Reconstructed tomograms (any size; e.g. binned WBP or SIRT).",
        )
        form.addParam(
            "modelSource",
            params.EnumParam,
            choices=["train on each tomogram (NMSG)", "saved NMSG model"],
            default=0,
            display=params.EnumParam.DISPLAY_HLIST,
            label="Model",
            help="NMSG trains one network per tomogram on that volume alone (minutes to an hour on CPU, "
            "faster on GPU). A saved model (the .nmsg.pt files this protocol writes to its extra "
            "folder) denoises in seconds, best on tomograms of the same data set.",
        )
        form.addParam(
            "modelFile",
            params.PathParam,
            condition="modelSource == 1",
            label="NMSG model file",
            help="A .nmsg.pt file written by this protocol or by 'nt2c denoise-tomo'.",
        )
        form.addSection("Training")
        form.addParam(
            "steps",
            params.IntParam,
            default=NMSG.steps,
            label="Training steps",
            help="Adam steps of the 3-D U-Net per tomogram (cosine learning-rate decay).",
        )
        form.addParam(
            "learningRate",
            params.FloatParam,
            default=NMSG.lr,
            expertLevel=params.LEVEL_ADVANCED,
            label="Learning rate",
            help="Adam's initial learning rate (cosine decay to 5 % of it).",
        )
        form.addParam(
            "tileSize",
            params.IntParam,
            default=NMSG.tile_size,
            label="Tile side x, y (px)",
            help="Training tiles are tile side x tile side x tile depth voxels; multiples of 8.",
        )
        form.addParam(
            "tileDepth",
            params.IntParam,
            default=NMSG.tile_depth,
            label="Tile depth z (px)",
            help="Depth of the training tiles (multiple of 8, at most the tomogram's thickness).",
        )
        form.addParam(
            "noiseModel",
            params.EnumParam,
            choices=list(TOMO_NOISE_MODELS),
            default=TOMO_NOISE_MODELS.index(NMSG.noise_model),
            label="Noise synthesizer",
            help="patches3d: 3-D mosaics of the tomogram's quietest blocks (16 x 16 px, 32 px deep: "
            "they keep the noise's correlation along z). gan2d: the authors' 2-D WGAN-GP, one independent "
            "sample per slice (slower).",
        )
        form.addParam(
            "noiseCap",
            params.BooleanParam,
            default=NMSG.noise_cap,
            expertLevel=params.LEVEL_ADVANCED,
            label="Cap the noise's power spectrum?",
            help="Filter the synthetic noise so that at no spatial frequency it carries more power than "
            "the tomogram itself. The mosaics' block seams put noise into the missing wedge, where "
            "the tomogram is almost empty; the cap removes it (+0.4 to +0.8 dB on the benchmark "
            "tomograms).",
        )
        form.addParam(
            "pairing",
            params.EnumParam,
            choices=list(TOMO_PAIRINGS),
            default=TOMO_PAIRINGS.index(NMSG.pairing),
            label="Training pairs",
            help="r2r: input = tomogram + alpha x synthetic noise, target = tomogram - noise / alpha; its "
            "expected target is the clean volume, so the network learns to denoise (better on our "
            "benchmarks). nmsg: the authors' pairs (input = tomogram + noise, target = tomogram).",
        )
        form.addParam(
            "alpha",
            params.FloatParam,
            default=NMSG.alpha,
            expertLevel=params.LEVEL_ADVANCED,
            condition="pairing == 0",
            label="r2r noise scale (alpha)",
            help="Scale of the synthetic noise added to the input (r2r); the target subtracts noise / alpha.",
        )
        form.addParam(
            "inferDraws",
            params.IntParam,
            default=NMSG.infer_draws,
            expertLevel=params.LEVEL_ADVANCED,
            condition="pairing == 0",
            label="Inference noise draws",
            help="r2r: the output averages the network over this many fresh noise draws (0 = the "
            "tomogram alone, faster).",
        )
        form.addParam(
            "flips",
            params.BooleanParam,
            default=NMSG.flips,
            expertLevel=params.LEVEL_ADVANCED,
            label="Flip training tiles?",
            help="Flip each training tile (and its targets) at random along z, y and x. The single-axis "
            "tilt geometry, missing wedge included, is unchanged by each flip, so the network sees "
            "8x more distinct views of the one tomogram.",
        )
        form.addParam(
            "inferFlips",
            params.BooleanParam,
            default=NMSG.infer_flips,
            expertLevel=params.LEVEL_ADVANCED,
            label="Average over flips?",
            help="With noise draws, draw k goes through the network under the k-th of the volume's 8 "
            "flips (no extra time); without draws the output is the mean over the 8 flips (8x the "
            "inference time, still small next to training).",
        )
        form.addParam(
            "width",
            params.IntParam,
            default=NMSG.width,
            expertLevel=params.LEVEL_ADVANCED,
            label="Network width",
            help="Channels of the 3-D U-Net's first level (the authors' 48).",
        )
        form.addParam(
            "residual",
            params.BooleanParam,
            default=NMSG.residual,
            expertLevel=params.LEVEL_ADVANCED,
            label="Residual network?",
            help="Yes: the network predicts a correction added to the tomogram (the authors'). No "
            "(default): it predicts the denoised volume itself. A residual network starts as the "
            "identity, and training on one tomogram often stays near it for most of its budget.",
        )
        line = form.addLine(
            "Loss weights",
            expertLevel=params.LEVEL_ADVANCED,
            help="recon: MSE to the raw volume; smooth: Sobel term against the over-smoothed "
            "reference; guide: MSE to the Gaussian-filtered raw volume (the authors' 1, 0.05, 0.5).",
        )
        line.addParam(
            "reconWeight", params.FloatParam, default=NMSG.recon, label="recon", help="Weight of MSE(f(noisier), raw)."
        )
        line.addParam(
            "smoothWeight",
            params.FloatParam,
            default=NMSG.smooth,
            label="smooth",
            help="Weight of the in-plane Sobel term against the over-smoothed reference.",
        )
        line.addParam(
            "guideWeight",
            params.FloatParam,
            default=NMSG.guide,
            label="guide",
            help="Weight of MSE(f(noisier), Gaussian-filtered raw).",
        )
        form.addParam(
            "guideSigma",
            params.FloatParam,
            default=NMSG.guide_sigma,
            expertLevel=params.LEVEL_ADVANCED,
            label="Guide Gaussian sigma (px)",
            help="Sigma of the Gaussian that makes the guide volume.",
        )
        form.addParam(
            "oversmoothSigma",
            params.FloatParam,
            default=NMSG.oversmooth_sigma,
            expertLevel=params.LEVEL_ADVANCED,
            label="Over-smoothing sigma (px)",
            help="Sigma of the Gaussian that makes the over-smoothed reference of the sparsity term.",
        )
        form.addParam(
            "seed",
            params.IntParam,
            default=NMSG.seed,
            expertLevel=params.LEVEL_ADVANCED,
            label="Random seed",
            help="The same seed and settings give the same result.",
        )
        self._defineGpuParams(form)
        self._defineThreadParams(form, threads=1)

    # --- steps ----------------------------------------------------------------------------
    def _insertAllSteps(self):
        deps = [
            self._insertFunctionStep(self.denoiseStep, tomo.getObjId(), prerequisites=[])
            for tomo in self.inputTomograms.get()
        ]
        self._insertFunctionStep(self.createOutputStep, prerequisites=deps, needsGPU=False)

    def _config(self):
        """The form's NMSG settings (``nt2c_core.settings.NMSGConfig``; what both routes run with)."""
        from nt2c_core.settings import replace

        return replace(
            NMSG,
            steps=self.steps.get(),
            lr=self.learningRate.get(),
            tile_size=self.tileSize.get(),
            tile_depth=self.tileDepth.get(),
            noise_model=TOMO_NOISE_MODELS[self.noiseModel.get()],
            noise_cap=self.noiseCap.get(),
            width=self.width.get(),
            residual=self.residual.get(),
            pairing=TOMO_PAIRINGS[self.pairing.get()],
            alpha=self.alpha.get(),
            infer_draws=self.inferDraws.get(),
            flips=self.flips.get(),
            infer_flips=self.inferFlips.get(),
            recon=self.reconWeight.get(),
            smooth=self.smoothWeight.get(),
            guide=self.guideWeight.get(),
            guide_sigma=self.guideSigma.get(),
            oversmooth_sigma=self.oversmoothSigma.get(),
            seed=self.seed.get(),
        )

    def _outputPath(self, tomo) -> str:
        return self._getExtraPath(f"{tomo.getObjId():04d}_{Path(tomo.getFileName()).stem}.mrc")

    def denoiseStep(self, objId):
        tomo = self.inputTomograms.get()[objId]
        dst = self._outputPath(tomo)
        model = self.modelFile.get() if self.modelSource.get() == 1 else None
        work = self._getTmpPath(f"{objId:04d}")
        if self._inProcess():
            from nt2c_core.tomo.nmsg import denoise_tomogram

            report = denoise_tomogram(
                tomo.getFileName(),
                dst,
                model=model,
                config=self._config(),
                device=self._device(),
                progress=True,
                work=work,
            )
            seconds, saved, trained, final = (
                report.seconds,
                report.model,
                report.trained,
                report.log[-1] if report.log else None,
            )
        else:  # the same stage through the dedicated environment's command line
            start = time.time()
            trained = model is None
            saved = os.path.abspath(Path(dst).with_suffix(".nmsg.pt")) if trained else model
            model_args = ["--save-model", saved] if trained else ["--model", os.path.abspath(model)]
            self._runStage(
                "denoise-tomo",
                self._config(),
                "-o",
                os.path.abspath(dst),
                "--work",
                os.path.abspath(work),
                *model_args,
                os.path.abspath(tomo.getFileName()),
            )
            seconds, final = time.time() - start, None
        self.info(
            f"tomogram {objId} ({tomo.getTsId()}): wrote {dst} in {seconds:.0f} s"
            + (f"; model {saved}" if trained else "")
        )
        with open(self._getExtraPath(f"{objId:04d}.json"), "w") as fh:
            json.dump({"seconds": seconds, "model": str(saved), "trained": trained, "final": final}, fh)

    def createOutputStep(self):
        in_set = self.inputTomograms.get()
        out = SetOfTomograms.create(self._getPath(), template="tomograms%s.sqlite")
        out.copyInfo(in_set)
        for tomo in in_set:
            path = self._outputPath(tomo)
            if not os.path.exists(path):
                continue
            new = tomo.clone()
            new.setLocation(path)
            out.append(new)
        self._defineOutputs(**{OUTPUT_TOMOGRAMS: out})
        self._defineSourceRelation(self.inputTomograms, out)

    # --- info -----------------------------------------------------------------------------
    def _validate(self):
        from nt2c_core.errors import NT2CError

        errors = self._validateGpuList() + self._validateRoute() + self._validateThreadParams()
        try:
            self._config().validate()
        except NT2CError as exc:
            errors.append(f"Training settings: {exc}")
        if self.modelSource.get() == 1 and self._inProcess():  # (the isolated route checks it when it runs)
            from nt2c_core.models.store import load_model

            path = self.modelFile.get()
            try:
                load_model(path, kind="tomo-denoiser")
            except NT2CError as exc:
                errors.append(str(exc))
        return errors

    def _summary(self):
        out = getattr(self, OUTPUT_TOMOGRAMS, None)
        if out is None:
            return ["Running or not started."]
        lines = [
            f"Denoised {out.getSize()} tomograms with NMSG "
            + ("(a network trained on each)." if self.modelSource.get() == 0 else f"({self.modelFile.get()}).")
        ]
        for tomo in self.inputTomograms.get():
            info = Path(self._getExtraPath(f"{tomo.getObjId():04d}.json"))
            if info.exists():
                data = json.loads(info.read_text())
                lines.append(f"{tomo.getTsId() or tomo.getObjId()}: {data['seconds']:.0f} s")
            else:
                lines.append(f"Not denoised: {tomo.getTsId() or tomo.getObjId()} ({tomo.getFileName()})")
        return lines

    def _methods(self):
        return [
            "Tomograms were denoised with NMSG [Yang2024NMSG] as implemented in scipion-em-nt2c "
            f"({self.steps.get()} training steps per tomogram, noise synthesizer "
            f"{TOMO_NOISE_MODELS[self.noiseModel.get()]}, {TOMO_PAIRINGS[self.pairing.get()]} training pairs)."
        ]

    def _citations(self):
        return ["Yang2024NMSG"]
