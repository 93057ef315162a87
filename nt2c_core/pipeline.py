"""The whole NT2C procedure for a folder of raw micrographs, resumable stage by stage. Each
stage calls the function of :mod:`nt2c_core.stages` that the CLI command and the Scipion
protocol of that stage call too.

Work dir layout (:class:`nt2c_core.layout.WorkLayout`; one subfolder per stage; a stage is
complete when its ``DONE.json`` exists, so a rerun skips it; training stages also resume from
their checkpoints; a stage that reruns marks the later ones ``STALE``, so they are redone from
scratch):
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
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .calibrate import calibrate_files
from .denoise import Denoiser, denoise_files
from .errors import InputError
from .io import ensure_writable_dir, read_json, read_mrc, write_json
from .layout import WorkLayout
from .noise.extract import too_few_message
from .pairs import film_names, load_pairs
from .settings import COARSE, COARSE_TRANSFER, PIXEL_MATCH, STAGES, ExtractionSettings, PipelineConfig
from .simulate import simulate_dataset
from .stages import extract_background, train_coarse, train_fine, train_noise_model

log = logging.getLogger(__name__)


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


def check_inputs(config: PipelineConfig, full: bool = True) -> list[Path]:
    """Validate everything a run needs before any stage starts; returns the raw files. Every raw
    micrograph is read once (truncated, not an image, NaN/Inf pixels: refused by name), every
    structure loaded (NaN coordinates, no atoms), and a ``coarse_init`` model file checked to be a
    denoiser (a noise GAN, pickled code or damaged metadata are refused here, not after three
    stages). ``full`` False (a resumed run, its first stage done): the first micrograph is read and
    the others' headers checked."""
    from .io import check_mrc_header
    from .models.store import load_model
    from .simulate.structure import load_structure

    config.validate()
    files = raw_files(config.raw)
    sim_pixel = config.simulation.acquisition.pixel_size
    started = time.perf_counter()
    for i, path in enumerate(files):
        if i and not full:
            check_mrc_header(path)
            continue
        _, pixel = read_mrc(path)
        if i == 0 and pixel > 0 and abs(pixel - sim_pixel) > PIXEL_MATCH * sim_pixel:
            raise InputError(
                f"{path}: pixel size {pixel:.4f} Å differs from the simulation's {sim_pixel:.4f} Å; "
                "simulate at the data's pixel size (simulation.acquisition.pixel_size)"
            )
    if full:
        log.info(f"checked {len(files)} raw micrographs in {time.perf_counter() - started:.1f} s")
    for path in (Path(s) for s in config.structures):
        load_structure(path)
    if config.coarse_init not in ("general", "none"):
        load_model(config.coarse_init, kind="denoiser")
    return files


def _check_inputs_outside_work(config: PipelineConfig, files: list[Path], work: Path) -> None:
    """No input of the run (raw micrographs, structures, a coarse_init model, a calibration) lies
    where the run writes: the work folder itself (as a file), a stage folder or its records."""
    layout = WorkLayout(work)
    root = Path(os.path.realpath(work))
    written = [
        Path(os.path.realpath(p))
        for p in [*(layout.stage(name) for name in STAGES), work / "config.json", work / "pipeline.json"]
    ]
    inputs = [*files, *(Path(s) for s in config.structures)]
    inputs += [Path(p) for p in (config.coarse_init, config.calibration) if p and p not in ("general", "none")]
    for path in inputs:
        real = Path(os.path.realpath(path))
        for place in written:
            if real == place or place in real.parents or real == root:
                raise InputError(
                    f"--work {work}: the run would write over its input {path}; choose another work folder"
                )


def run_pipeline(
    config: PipelineConfig, work_dir: str | os.PathLike, progress: bool = True, only: Sequence[str] | None = None
) -> dict:
    """Run (or resume) every stage, or only the stages named in ``only`` (their inputs, the
    earlier stages' outputs, must be complete); returns the summary also written to
    ``work_dir/pipeline.json``. A stage whose ``DONE.json`` exists is skipped. A stage that runs
    marks every later stage STALE on disk (its DONE removed), so a later stage is redone from
    scratch, not resumed from an old checkpoint, even when it runs in another call or process
    (one Scipion step per stage)."""
    unknown = set(only or ()) - set(STAGES)
    if unknown:
        raise InputError(f"unknown pipeline stages {sorted(unknown)}; stages are {', '.join(STAGES)}")
    files = check_inputs(config, full=not stage_done(work_dir, "simulate"))
    _check_inputs_outside_work(config, files, Path(work_dir))
    from .device import resolve_device

    config = dataclasses.replace(config, device=str(resolve_device(config.device)))  # 'auto' -> cuda or cpu
    work = ensure_writable_dir(work_dir)
    write_json(work / "config.json", config.to_dict())
    summary_path = work / "pipeline.json"
    summary: dict = {"nt2c_version": __version__, "raw": [str(p) for p in files], "stages": {}}
    if only and summary_path.exists():
        summary["stages"] = json.loads(summary_path.read_text()).get("stages", {})
    coarse_runs = (not only or "coarse" in only) and not stage_done(work, "coarse")
    if coarse_runs and config.coarse_init == "none" and config.coarse.lr == COARSE_TRANSFER.lr:  # said before any work
        log.warning(
            f"[coarse] trains from scratch (coarse_init none) at coarse.lr {config.coarse.lr:g}, the rate for "
            f"starting from the general model; from scratch set coarse.lr to {COARSE.lr:g}"
        )
    for name in STAGES:
        if only and name not in only:
            continue
        summary["stages"][name] = _run_stage(name, config, work, files, progress)
    write_json(summary_path, summary)
    return summary


def stage_done(work_dir: str | os.PathLike, name: str) -> bool:
    """Whether stage ``name`` of a work dir is complete."""
    return WorkLayout(work_dir).done(name).exists()


def stage_seconds(work_dir: str | os.PathLike) -> dict:
    """Wall seconds of each complete stage of a work dir, as recorded when it ran (None where the
    work dir predates the record)."""
    layout = WorkLayout(work_dir)
    out = {}
    for name in STAGES:
        try:
            out[name] = json.loads(layout.done(name).read_text()).get("seconds")
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
    return out


# the config entries each stage's result depends on besides the earlier stages' outputs; a finished stage records
# them in its DONE.json, and a rerun that skips it says which of them the config now changes
STAGE_SETTINGS = {
    "simulate": ("structures", "simulation", "calibrate", "calibration", "mix_shipped", "density"),
    "coarse": ("coarse", "coarse_init"),
    "noise": ("raw", "extraction", "min_noise_patches", "few_patches"),
    "gan": ("gan", "noise_model"),
    "fine": ("fine", "noise_level", "noise_model"),
    "denoised": ("raw", "tiles", "choose_model"),
}


def stage_settings(name: str, config: PipelineConfig) -> dict:
    """The config entries stage ``name`` depends on (:data:`STAGE_SETTINGS`), as JSON values."""
    values = config.to_dict()
    return json.loads(json.dumps({key: values[key] for key in STAGE_SETTINGS[name]}))


def changed_settings(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted names (``coarse.lr``) of the entries whose values differ between two settings dicts."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def _done_record(done: Path) -> dict | None:
    """A stage's DONE.json, or None when there is none; a damaged one (not a JSON object: a disk
    fault, a hand edit) is set aside as DONE.json.damaged with a warning, and the stage is redone."""
    if not done.exists():
        return None
    try:
        record = read_json(done, "stage record")
        if isinstance(record, dict):
            return record
        problem = "not a JSON object"
    except InputError as exc:
        problem = str(exc).replace(f"{done}: ", "")[:120]
    damaged = done.with_name(done.name + ".damaged")
    os.replace(done, damaged)
    log.warning(f"[{done.parent.name}] {done} is damaged ({problem}): kept as {damaged.name}; the stage is redone")
    return None


def _run_stage(name: str, config: PipelineConfig, work: Path, files: list[Path], progress: bool) -> dict:
    layout = WorkLayout(work)
    folder = layout.stage(name)
    done, stale = layout.done(name), layout.stale(name)
    record = _done_record(done)
    if record is not None:
        changed = changed_settings(record["settings"], stage_settings(name, config)) if "settings" in record else []
        if changed:
            log.warning(
                f"[{name}] WARNING: already complete with other settings than the config now gives "
                f"({', '.join(changed)}), skipped: delete {folder} to redo it (and the later stages) with them"
            )
        else:
            log.info(f"[{name}] already complete, skipped")
        return record
    missing = [s for s in STAGES[: STAGES.index(name)] if not stage_done(work, s)]
    if missing:
        raise InputError(f"{work}: stage {name} needs stage {missing[0]} to be complete first")
    fresh = stale.exists()
    log.info(f"[{name}] running" + (f" (after {stale.read_text().strip()} changed)" if fresh else ""))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = {
        **STAGE_FUNCTIONS[name](config, work, files, folder, fresh, progress),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),  # this stage's wall time (a resumed one: this run's)
        "settings": stage_settings(name, config),
    }
    for later in STAGES[STAGES.index(name) + 1 :]:
        if layout.stage(later).exists():
            layout.done(later).unlink(missing_ok=True)
            if not layout.stale(later).exists():
                layout.stale(later).write_text(name)
    stale.unlink(missing_ok=True)
    write_json(done, result)
    return result


def _stage_simulate(config, work, files, folder, fresh, progress) -> dict:
    simulation, summary = config.simulation, {}
    if config.calibration:
        from .calibrate import apply_calibration

        simulation = apply_calibration(simulation, config.calibration)
        summary = {
            "calibration_reused": config.calibration,
            "defocus_um": list(simulation.defocus_um),
            "dose": simulation.acquisition.dose,
        }
    if config.calibrate:
        result = calibrate_files(files, simulation, folder / "calibration", config.structures)
        simulation = result.simulation
        summary = {
            "calibrated": {
                "defocus_um": list(simulation.defocus_um),
                "dose": simulation.acquisition.dose,
                "ice_thickness": simulation.ice_thickness,
                "notes": result.notes,
            }
        }
    if config.density == "match":
        concentration = measured_concentration(config, files)
        simulation = dataclasses.replace(simulation, concentration=concentration)
        summary["particles_per_um2"] = round(concentration, 2)
        log.info(
            f"[simulate] particle concentration of the raw micrographs: {concentration:.1f} /µm² "
            f"({simulation.particles_per_micrograph()} per simulated micrograph)"
        )
    structures = training_structures(config)
    pairs = simulate_dataset(structures, simulation, folder, progress=progress)
    return {"pairs": len(pairs.names), "structures": [Path(p).name for p in structures], **summary}


def measured_concentration(config: PipelineConfig, files: list[Path], sample: int = 4) -> float:
    """Particles per µm² on the general model's output of central crops (<= 1024 px) of up to
    ``sample`` raw micrographs, picked at the particle radius of the atomic models."""
    from .evaluation.picking import particle_concentration
    from .general import general_model_path

    denoiser = Denoiser.from_file(general_model_path(), config.device, config.tiles)
    pixel = config.simulation.acquisition.pixel_size
    radius = extraction_settings(config).particle_diameter / 2 / pixel
    return particle_concentration([denoiser.denoise(crop) for _, crop in raw_crops(files, sample)], radius, pixel)


def raw_crops(files: list[Path], count: int = 4, size: int = 1024) -> list[tuple[str, np.ndarray]]:
    """(name, central crop of at most ``size`` px) of up to ``count`` raw micrographs spread over
    ``files``: what the model choice and the density count look at."""
    from .images import centre_crop

    return [(path.name, centre_crop(read_mrc(path)[0], size)) for path in files[:: max(1, len(files) // count)][:count]]


def training_structures(config: PipelineConfig) -> list[str]:
    """The structures the training pairs are simulated from: the data set's, plus (``mix_shipped``)
    one shipped structure that is not among them (apoferritin, else the proteasome)."""
    from .data import APOFERRITIN, PROTEASOME

    names = {Path(p).name for p in config.structures}
    helpers = [str(s) for s in (APOFERRITIN, PROTEASOME) if s.name not in names]
    return list(config.structures) + helpers[:1] if config.mix_shipped else list(config.structures)


def coarse_init_model(config: PipelineConfig) -> Path | None:
    """The model the coarse training starts from (None: from scratch)."""
    if config.coarse_init == "none":
        return None
    if config.coarse_init == "general":
        from .general import general_model_path

        return general_model_path()
    return Path(config.coarse_init)


def _stage_coarse(config, work, files, folder, fresh, progress) -> dict:
    init, layout = coarse_init_model(config), WorkLayout(work)
    result = train_coarse(
        layout.pairs,
        layout.model("coarse"),
        config.coarse,
        config.device,
        init=init,
        resume=not fresh,
        progress=progress,
    )
    return {**_trained(result), "init": str(init) if init else None}


def _stage_noise(config, work, files, folder, fresh, progress) -> dict:
    return _extract(files, WorkLayout(work).model("coarse"), folder, config, progress)


def _too_few(work: Path) -> str | None:
    """Why the noise stage gave no noise model (too few patches), or None."""
    return json.loads(WorkLayout(work).done("noise").read_text()).get("insufficient")


def _stage_gan(config, work, files, folder, fresh, progress) -> dict:
    why = _too_few(work)
    if why:
        log.warning(f"[gan] skipped: {why}")
        return {"skipped": why}
    if config.noise_model == "patches":
        log.info("[gan] skipped: noise_model 'patches' samples the real noise patches directly")
        return {"skipped": "noise_model patches"}
    layout = WorkLayout(work)
    model = train_noise_model(
        layout.noise_patches, layout.model("gan"), config.gan, config.device, resume=not fresh, progress=progress
    )
    return {"model": str(model)}


def _stage_fine(config, work, files, folder, fresh, progress) -> dict:
    why = _too_few(work)
    if why:
        log.warning(f"[fine] skipped: {why}")
        return {"skipped": why}
    layout = WorkLayout(work)
    noise = layout.noise_patches if config.noise_model == "patches" else layout.model("gan")
    result = train_fine(
        layout.pairs,
        layout.model("coarse"),
        noise,
        layout.model("fine"),
        config.fine,
        config.device,
        config.noise_level,
        resume=not fresh,
        progress=progress,
        micrographs=files,
    )
    return _trained(result)


def _stage_denoised(config, work, files, folder, fresh, progress) -> dict:
    layout = WorkLayout(work)
    candidates = {"general": None, "coarse": layout.model("coarse"), "fine": layout.model("fine")}
    from .general import general_model_path

    candidates["general"] = general_model_path()
    candidates = {k: v for k, v in candidates.items() if v.is_file()}
    if config.choose_model:
        chosen, selection = _select(config, work, files, candidates, folder)
    else:
        chosen = "fine" if "fine" in candidates else "coarse"
        selection = {"chosen": chosen, "reason": "model choice off (choose_model false)"}
    result = _denoise(files, candidates[chosen], folder, config, progress, fresh)
    return {**result, "model": str(candidates[chosen]), "chosen": chosen, "selection": selection}


def _select(config: PipelineConfig, work: Path, files: list[Path], candidates: dict, folder: Path) -> tuple[str, dict]:
    """Score the candidate models (``nt2c_core.selection``) on the training run's held-out
    simulated micrographs (those without a carbon film: a film is scored by the erasure check, and
    the general model's weakness there would otherwise count as the trained models' gain on data
    that may have none) and on central crops of up to 4 raw micrographs; write selection.json.
    With real noise patches (2 or more), the held-out pairs and the erasure check's micrographs
    carry the real noise in place of the simulator's (``selection.with_real_noise``)."""
    from .selection import as_dicts, choose_model, mixed_structure_pairs, score_model, score_table, with_real_noise

    layout = WorkLayout(work)
    held_out = load_pairs(layout.pairs).split(config.coarse.val_fraction)[1]
    in_ice = held_out.without(film_names(layout.pairs))  # the carbon film has its own check (mixed)
    held_out = in_ice if len(in_ice) else held_out
    real, pixel = raw_crops(files), config.simulation.acquisition.pixel_size
    radius = extraction_settings(config).particle_diameter / 2 / pixel
    mixed = mixed_structure_pairs(training_structures(config), config.simulation)
    stack = layout.noise_patches
    patches = read_mrc(stack, allow_stack=True)[0] if stack.is_file() else None
    patches = patches if patches is not None and patches.ndim == 3 and len(patches) else None
    noise = "real" if patches is not None and len(patches) >= 2 else "simulated"
    if noise == "real":
        held_out, mixed = with_real_noise(held_out, mixed, patches, config.fine.seed)
    scores = []
    for name, path in candidates.items():
        denoiser = Denoiser.from_file(path, config.device, config.tiles)
        scores.append(score_model(name, denoiser.denoise, held_out, real, radius, mixed, patches))
    chosen, reason = choose_model(scores, noise=noise)
    table = score_table(scores, chosen)
    log.info(f"[denoised] model choice ({noise} noise in the held-out pairs and the erasure check):\n{table}\n{reason}")
    selection = {
        "chosen": chosen,
        "reason": reason,
        "scores": as_dicts(scores),
        "table": table,
        "noise": noise,
        "held_out_micrographs": held_out.names,
        "real_micrographs": [n for n, _ in real],
    }
    write_json(layout.selection, selection)
    return chosen, selection


STAGE_FUNCTIONS = {
    "simulate": _stage_simulate,
    "coarse": _stage_coarse,
    "noise": _stage_noise,
    "gan": _stage_gan,
    "fine": _stage_fine,
    "denoised": _stage_denoised,
}


def _trained(result) -> dict:
    """A training stage's summary (its ``DONE.json``)."""
    return {"model": str(result.model_path), "val_psnr_db": result.val_psnr, "raw_val_psnr_db": result.raw_val_psnr}


def extraction_settings(config: PipelineConfig) -> ExtractionSettings:
    """The extraction settings with the particle diameter filled in from the atomic models (the
    largest one) when the config gives none."""
    settings = config.extraction
    if settings.particle_diameter is None:
        from .simulate.structure import load_structure

        diameter = max(2 * load_structure(p).radius for p in config.structures)
        settings = dataclasses.replace(settings, particle_diameter=round(diameter, 1))
    return settings


def _extract(files, coarse: Path, folder: Path, config: PipelineConfig, progress: bool) -> dict:
    """Noise patches from the raw micrographs. The mask rule finds the particles on the shipped
    general model's output (it keeps what it does not know, unlike a coarse model trained on one
    structure); the SSIM rule, as in the paper, on the coarse model's."""
    settings = extraction_settings(config)
    stop = config.few_patches == "stop"
    report = extract_background(
        files,
        folder,
        settings,
        None if settings.rule == "mask" else coarse,
        config.device,
        config.tiles,
        config.min_noise_patches if stop else 0,
        progress,
        "extraction",
    )
    insufficient = None
    if report.total < config.min_noise_patches:
        insufficient = too_few_message(
            report.total,
            config.min_noise_patches,
            len(report.counts),
            settings,
            report.patch,
            report.free_fraction,
            "extraction",
        )
        log.warning(
            f"[noise] WARNING: {insufficient}; going on without a noise model (the GAN and fine stages are "
            "skipped, the best of the general and coarse models denoises)"
        )
    return {
        "patches": report.total,
        "insufficient": insufficient,
        "patch": report.patch,
        "rule": settings.rule,
        "particle_diameter_A": settings.particle_diameter,
        "per_micrograph": report.counts,
        "free_fraction": report.free_fraction,
        "band_power_ratio": report.band_power_ratio,
        "without_background": report.without_background,
        "failed": report.failed,
    }


def _denoise(files, model: Path, folder: Path, config: PipelineConfig, progress: bool, stale: bool) -> dict:
    """Denoise every raw micrograph; keeps outputs of an interrupted run unless the model changed."""
    report = denoise_files(
        Denoiser.from_file(model, config.device, config.tiles), files, folder, overwrite=stale, progress=progress
    )
    if report.failed:
        log.info(report.summary())
    return {"written": len(report.written) + len(report.skipped), "failed": report.failed}
