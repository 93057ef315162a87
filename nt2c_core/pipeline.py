"""The whole NT2C procedure for a folder of raw micrographs, resumable stage by stage.

Work dir layout (one subfolder per stage; a stage is complete when its ``DONE.json`` exists, so
a rerun skips it; training stages also resume from their checkpoints; a stage that reruns marks
the later ones ``STALE``, so they are redone from scratch):
  simulate/  clean/noisy pairs of the structure(s) with the data's acquisition
  coarse/    model.pt: coarse U-Net trained on the simulated pairs
  noise/     noise_patches.mrcs/.star, overlays/: background tiles of the raw micrographs
  gan/       model.pt: WGAN-GP noise synthesizer
  fine/      model.pt: fine U-Net, started from the coarse one, trained on noise-transferred pairs
  denoised/  every raw micrograph denoised with the fine model
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from . import __version__
from .calibrate import calibrate_files
from .denoise import Denoiser, TileSettings, denoise_files
from .errors import InputError
from .io import read_mrc, write_json
from .models.store import load_model
from .noise.extract import ExtractionSettings, extract_noise
from .noise.reweight import NoiseTransfer
from .noise.synthesize import GANConfig, train_noise_gan
from .pairs import load_pairs
from .simulate import SimulationConfig, simulate_dataset
from .training import TrainConfig, train_denoiser

STAGES = ("simulate", "coarse", "noise", "gan", "fine", "denoised")


@dataclass
class PipelineConfig:
    """raw: micrograph paths or glob patterns; structures: PDB/mmCIF files for the simulation;
    simulation: its settings (its acquisition must be the data's: pixel size, kV, dose...);
    min_noise_patches: fewer extracted patches is an error; noise_level: 'real' or 'simulated'
    (see ``nt2c_core.noise.reweight``); calibrate: before simulating, estimate defocus range,
    astigmatism, dose and ice thickness from the raw micrographs (``nt2c_core.calibrate``) and
    simulate with them (what could not be estimated keeps the given value; see
    ``simulate/calibration.json``)."""

    raw: list[str]
    structures: list[str]
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    coarse: TrainConfig = field(default_factory=TrainConfig)
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    gan: GANConfig = field(default_factory=GANConfig)
    fine: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=3e-4))
    tiles: TileSettings = field(default_factory=TileSettings)
    min_noise_patches: int = 32
    noise_level: str = "real"
    device: str = "cpu"
    calibrate: bool = False

    def to_dict(self) -> dict:
        out = asdict(self)
        out["simulation"] = self.simulation.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"pipeline config: unknown keys {sorted(unknown)}")
        for key, kind in (("coarse", TrainConfig), ("extraction", ExtractionSettings), ("gan", GANConfig),
                          ("fine", TrainConfig), ("tiles", TileSettings)):
            if key in data:
                data[key] = kind(**data[key])
        if "simulation" in data:
            data["simulation"] = SimulationConfig.from_dict(data["simulation"])
        if "gan" in data:
            data["gan"].betas = tuple(data["gan"].betas)
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PipelineConfig":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(f"{path}: not a valid pipeline config ({exc})") from exc


def raw_files(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        files += [Path(m) for m in matches]
    if not files:
        raise InputError(f"no raw micrographs match {patterns}")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: raw micrograph not found")
    return files


def check_inputs(config: PipelineConfig) -> list[Path]:
    """Validate everything a run needs before any stage starts; returns the raw files."""
    files = raw_files(config.raw)
    config.simulation.validate()
    if config.simulation.count < 2:
        raise InputError("simulation count: need at least 2 simulated micrographs (training and validation)")
    _, pixel = read_mrc(files[0])
    sim_pixel = config.simulation.acquisition.pixel_size
    if pixel > 0 and abs(pixel - sim_pixel) > 0.01 * sim_pixel:
        raise InputError(f"{files[0]}: pixel size {pixel:.4f} Å differs from the simulation's {sim_pixel:.4f} Å; "
                         "simulate at the data's pixel size (simulation.acquisition.pixel_size)")
    for path in (Path(s) for s in config.structures):
        if not path.is_file():
            raise InputError(f"{path}: structure file not found")
    return files


def run_pipeline(config: PipelineConfig, work_dir: str | os.PathLike, progress: bool = True,
                 only: Sequence[str] | None = None) -> dict:
    """Run (or resume) every stage, or only the stages named in ``only`` (their inputs, the
    earlier stages' outputs, must be complete); returns the summary also written to
    ``work_dir/pipeline.json``. A stage whose ``DONE.json`` exists is skipped. A stage that runs
    marks every later stage STALE on disk (its DONE removed), so a later stage is redone from
    scratch, not resumed from an old checkpoint, even when it runs in another call or process
    (one Scipion step per stage)."""
    unknown = set(only or ()) - set(STAGES)
    if unknown:
        raise InputError(f"unknown pipeline stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    files = check_inputs(config)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / "config.json", config.to_dict())
    summary_path = work / "pipeline.json"
    summary: dict = {"nt2c_version": __version__, "raw": [str(p) for p in files], "stages": {}}
    if only and summary_path.exists():
        summary["stages"] = json.loads(summary_path.read_text()).get("stages", {})
    for name in STAGES:
        if only and name not in only:
            continue
        summary["stages"][name] = _run_stage(name, config, work, files, progress)
    write_json(summary_path, summary)
    return summary


def stage_done(work_dir: str | os.PathLike, name: str) -> bool:
    """Whether stage ``name`` of a work dir is complete."""
    return (Path(work_dir) / name / "DONE.json").exists()


def _run_stage(name: str, config: PipelineConfig, work: Path, files: list[Path], progress: bool) -> dict:
    folder = work / name
    done, stale = folder / "DONE.json", folder / "STALE"
    if done.exists():
        print(f"[{name}] already complete, skipped")
        return json.loads(done.read_text())
    missing = [s for s in STAGES[:STAGES.index(name)] if not stage_done(work, s)]
    if missing:
        raise InputError(f"{work}: stage {name} needs stage {missing[0]} to be complete first")
    fresh = stale.exists()
    print(f"[{name}] running" + (f" (after {stale.read_text().strip()} changed)" if fresh else ""))
    folder.mkdir(parents=True, exist_ok=True)
    result = {**STAGE_FUNCTIONS[name](config, work, files, folder, fresh, progress),
              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    for later in STAGES[STAGES.index(name) + 1:]:
        later_dir = work / later
        if later_dir.exists():
            (later_dir / "DONE.json").unlink(missing_ok=True)
            if not (later_dir / "STALE").exists():
                (later_dir / "STALE").write_text(name)
    stale.unlink(missing_ok=True)
    write_json(done, result)
    return result


def _acq_meta(config: PipelineConfig, stage: str, **extra) -> dict:
    return {"acquisition": config.simulation.acquisition.to_dict(), "stage": stage, **extra}


def _stage_simulate(config, work, files, folder, fresh, progress) -> dict:
    simulation, summary = config.simulation, {}
    if config.calibrate:
        result = calibrate_files(files, simulation, folder / "calibration", config.structures)
        simulation = result.simulation
        summary = {"calibrated": {"defocus_um": list(simulation.defocus_um), "dose": simulation.acquisition.dose,
                                  "ice_thickness": simulation.ice_thickness, "notes": result.notes}}
    return {"pairs": len(simulate_dataset(config.structures, simulation, folder, progress=progress).names), **summary}


def _stage_coarse(config, work, files, folder, fresh, progress) -> dict:
    return _train(load_pairs(work / "simulate"), folder, config.coarse, config.device, progress,
                  _acq_meta(config, "coarse"), fresh=fresh)


def _stage_noise(config, work, files, folder, fresh, progress) -> dict:
    return _extract(files, work / "coarse" / "model.pt", folder, config, progress)


def _stage_gan(config, work, files, folder, fresh, progress) -> dict:
    return _gan(work / "noise" / "noise_patches.mrcs", folder, config.gan, config.device, progress, fresh)


def _stage_fine(config, work, files, folder, fresh, progress) -> dict:
    generator, _ = load_model(work / "gan" / "model.pt", kind="noise-gan")
    transfer = NoiseTransfer(generator, config.fine.seed, config.device, config.noise_level)
    return _train(load_pairs(work / "simulate"), folder, config.fine, config.device, progress,
                  _acq_meta(config, "fine", noise_level=config.noise_level), init=work / "coarse" / "model.pt",
                  fresh=fresh, transform=transfer)


def _stage_denoised(config, work, files, folder, fresh, progress) -> dict:
    return _denoise(files, work / "fine" / "model.pt", folder, config, progress, fresh)


STAGE_FUNCTIONS = {"simulate": _stage_simulate, "coarse": _stage_coarse, "noise": _stage_noise,
                   "gan": _stage_gan, "fine": _stage_fine, "denoised": _stage_denoised}


def _train(pairs, folder: Path, cfg: TrainConfig, dev: str, progress: bool, meta: dict, init=None, transform=None,
           fresh: bool = False) -> dict:
    """Train into ``folder/model.pt``, resuming its checkpoint unless ``fresh`` (inputs changed)."""
    result = train_denoiser(pairs, folder / "model.pt", cfg, init=init, resume=not fresh, device=dev,
                            progress=progress, metadata=meta, transform=transform)
    return {"model": str(result.model_path), "val_psnr_db": result.val_psnr, "raw_val_psnr_db": result.raw_val_psnr}


def _extract(files, coarse: Path, folder: Path, config: PipelineConfig, progress: bool) -> dict:
    denoiser = Denoiser.from_file(coarse, config.device, config.tiles)
    report = extract_noise(files, denoiser.denoise, folder, config.extraction, config.min_noise_patches,
                           progress=progress)
    return {"patches": report.total, "per_micrograph": report.counts, "without_background": report.without_background,
            "failed": report.failed}


def _gan(stack: Path, folder: Path, cfg: GANConfig, dev: str, progress: bool, fresh: bool = False) -> dict:
    patches, _ = read_mrc(stack, allow_stack=True)
    model = train_noise_gan(patches, folder / "model.pt", cfg, resume=not fresh, device=dev, progress=progress,
                            metadata={"source": str(stack)})
    return {"model": str(model), "patches": int(len(patches))}


def _denoise(files, model: Path, folder: Path, config: PipelineConfig, progress: bool, stale: bool) -> dict:
    """Denoise every raw micrograph; keeps outputs of an interrupted run unless the model changed."""
    report = denoise_files(Denoiser.from_file(model, config.device, config.tiles), files, folder,
                           overwrite=stale, progress=progress)
    if report.failed:
        print(report.summary())
    return {"written": len(report.written) + len(report.skipped), "failed": report.failed}
