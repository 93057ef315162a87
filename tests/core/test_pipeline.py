"""``nt2c run``: all stages in order, skipping complete ones, redoing what an interruption or an
upstream change left stale, and refusing bad input before any work. Tiny settings: this checks
the plumbing (quality is checked in the stage tests); the extraction threshold accepts every tile
because a 6-step coarse model cannot flatten any background."""

import dataclasses
import json

import pytest

from nt2c_core.cli import main
from nt2c_core.data import APOFERRITIN
from nt2c_core.denoise import TileSettings
from nt2c_core.errors import InputError
from nt2c_core.noise.extract import ExtractionSettings
from nt2c_core.noise.synthesize import GANConfig
from nt2c_core.pipeline import STAGES, PipelineConfig, run_pipeline, stage_seconds
from nt2c_core.simulate import Acquisition, SimulationConfig
from nt2c_core.simulate.experimental import make_experimental_dataset
from nt2c_core.training import TrainConfig

ACQ = Acquisition(pixel_size=2.5)


def _config(raw_glob: str, **changes) -> PipelineConfig:
    tiny = dict(steps=6, batch_size=2, crop=64, width=8, val_every=3, checkpoint_every=3)
    cfg = PipelineConfig(
        raw=[raw_glob],
        structures=[str(APOFERRITIN)],
        simulation=SimulationConfig(ACQ, size=(128, 128), particles=2, count=3, library_size=5, seed=1),
        coarse=TrainConfig(**tiny),
        fine=TrainConfig(**tiny),
        extraction=ExtractionSettings(patch=64, step=32, threshold=-0.99, rule="ssim"),
        gan=GANConfig(iterations=3, batch_size=4, crop=64, latent=8, width=4, log_every=1, checkpoint_every=2),
        tiles=TileSettings(128, 32, 1),
        min_noise_patches=1,
        coarse_init="none",
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    make_experimental_dataset(
        [APOFERRITIN], SimulationConfig(ACQ, size=(192, 160), particles=2, count=2, seed=4), out, progress=False
    )
    return out


def _stamps(work):
    return {s: (work / s / "DONE.json").stat().st_mtime_ns for s in STAGES}


def test_pipeline_runs_every_stage_then_skips_them(tmp_path, raw_dir, capsys):
    work = tmp_path / "work"
    summary = run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False)
    assert list(summary["stages"]) == list(STAGES)
    assert sorted(p.name for p in (work / "denoised").glob("*.mrc")) == ["exp_0000.mrc", "exp_0001.mrc"]
    assert summary["stages"]["noise"]["patches"] > 0
    selection = json.loads((work / "denoised" / "selection.json").read_text())
    scores = selection["scores"]
    assert all(s["residual_correlation"] is not None and s["residual_band_excess"] > 0 for s in scores)
    assert selection["noise"] == "real" and "real noise" in selection["reason"]  # scored in the data's noise
    first, seconds = _stamps(work), stage_seconds(work)
    assert list(seconds) == list(STAGES) and all(s is not None and s >= 0 for s in seconds.values()), seconds
    capsys.readouterr()
    run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False)
    assert capsys.readouterr().out.count("already complete, skipped") == len(STAGES)
    assert _stamps(work) == first and stage_seconds(work) == seconds  # a skipped stage keeps its own time
    changed = _config(str(raw_dir / "raw" / "*.mrc"))
    changed.coarse = dataclasses.replace(changed.coarse, lr=changed.coarse.lr / 2)
    run_pipeline(changed, work, progress=False)  # finished stages are kept, and the changed one is named
    out = capsys.readouterr().out
    assert "[coarse] WARNING: already complete with other settings than the config now gives (coarse.lr)" in out
    assert out.count("already complete, skipped") == len(STAGES) - 1 and _stamps(work) == first


def test_interrupted_stage_resumes_and_later_stages_are_redone(tmp_path, raw_dir, capsys):
    work = tmp_path / "work"
    run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False)
    before = _stamps(work)
    denoised = (work / "denoised" / "exp_0000.mrc").stat().st_mtime_ns
    # as if killed during fine training: no DONE, no model, a checkpoint from step 3
    (work / "fine" / "DONE.json").unlink()
    (work / "fine" / "model.pt").unlink()
    assert (work / "fine" / "model.pt.ckpt").exists()
    capsys.readouterr()
    run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False)
    out = capsys.readouterr().out
    after = _stamps(work)
    assert all(after[s] == before[s] for s in ("simulate", "coarse", "noise", "gan"))
    assert after["fine"] > before["fine"] and after["denoised"] > before["denoised"]
    assert "[denoised] running (after fine changed)" in out
    assert (work / "denoised" / "exp_0000.mrc").stat().st_mtime_ns > denoised  # redone with the new model
    assert (work / "fine" / "model.pt").exists()
    # one stage per call (one Scipion step per stage): a rerun stage marks the later ones stale on disk
    (work / "noise" / "DONE.json").unlink()
    run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False, only=["noise"])
    assert all((work / s / "STALE").read_text() == "noise" for s in ("gan", "fine", "denoised"))
    assert not any((work / s / "DONE.json").exists() for s in ("gan", "fine", "denoised"))
    with pytest.raises(InputError, match="needs stage gan"):
        run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False, only=["fine"])
    capsys.readouterr()
    for name in ("gan", "fine", "denoised"):
        run_pipeline(_config(str(raw_dir / "raw" / "*.mrc")), work, progress=False, only=[name])
    out = capsys.readouterr().out
    assert "[gan] running (after noise changed)" in out and "[denoised] running (after noise changed)" in out
    assert not any((work / s / "STALE").exists() for s in STAGES)
    assert list(json.loads((work / "pipeline.json").read_text())["stages"]) == list(STAGES)


def test_bad_input_is_refused_before_any_work(tmp_path, raw_dir):
    with pytest.raises(InputError, match="pixel size 2.5000 Å differs from the simulation's 1.0000 Å"):
        run_pipeline(
            _config(str(raw_dir / "raw" / "*.mrc"), simulation=SimulationConfig(Acquisition(pixel_size=1.0), count=3)),
            tmp_path / "w1",
        )
    with pytest.raises(InputError, match="no raw micrographs match"):
        run_pipeline(_config(str(tmp_path / "nothing" / "*.mrc")), tmp_path / "w2")
    with pytest.raises(InputError, match="at least 2 simulated"):
        run_pipeline(
            _config(str(raw_dir / "raw" / "*.mrc"), simulation=SimulationConfig(ACQ, size=(128, 128), count=1)),
            tmp_path / "w3",
        )
    assert not (tmp_path / "w1").exists() and not (tmp_path / "w2").exists()


def test_too_few_noise_patches_names_the_parameter_to_relax(tmp_path, raw_dir):
    cfg = _config(
        str(raw_dir / "raw" / "*.mrc"),
        extraction=ExtractionSettings(patch=64, step=32, threshold=0.999, rule="ssim"),
        few_patches="stop",
    )
    with pytest.raises(InputError, match="lower extraction.threshold"):  # named as in the config file
        run_pipeline(cfg, tmp_path / "work", progress=False)
    assert not (tmp_path / "work" / "noise" / "DONE.json").exists()


def test_too_few_noise_patches_warns_and_denoises_with_the_best_model_available(tmp_path, raw_dir, capsys):
    """The default: no hours lost; the GAN and fine stages are skipped and the better of the
    general and coarse models (scored, see nt2c_core.selection) denoises every micrograph."""
    cfg = _config(
        str(raw_dir / "raw" / "*.mrc"), extraction=ExtractionSettings(patch=64, step=32, threshold=0.999, rule="ssim")
    )
    summary = run_pipeline(cfg, tmp_path / "work", progress=False)
    out = capsys.readouterr().out
    assert "WARNING: only 0 noise patches" in out and "going on without a noise model" in out
    assert summary["stages"]["gan"]["skipped"] and summary["stages"]["fine"]["skipped"]
    denoised = summary["stages"]["denoised"]
    assert denoised["chosen"] in ("general", "coarse") and denoised["written"] == 2
    selection = json.loads((tmp_path / "work" / "denoised" / "selection.json").read_text())
    assert {s["name"] for s in selection["scores"]} == {"general", "coarse"}
    assert selection["noise"] == "simulated"  # no real noise patches to score with
    assert all(
        s["held_out_psnr_db"] is not None
        and 0 < s["lowpass_agreement"] <= 1
        and s["unknown_structure_psnr_db"] is not None
        and s["carbon_edge_psnr_db"] is not None
        and -1 <= s["residual_correlation"] <= 1
        and s["residual_band_excess"] is None
        for s in selection["scores"]
    )  # no patches found
    assert "| model | held-out PSNR" in out and "carbon edge PSNR" in out


def test_run_cli_with_a_json_config(tmp_path, raw_dir, capsys):
    config = tmp_path / "nt2c.json"
    config.write_text(json.dumps(_config(str(raw_dir / "raw" / "*.mrc")).to_dict()))
    assert main(["run", str(config), "--work", str(tmp_path / "work")]) == 0
    assert (tmp_path / "work" / "pipeline.json").exists()
    config.write_text(json.dumps({"raw": [], "structures": [], "bogus": 1}))
    assert main(["run", str(config), "--work", str(tmp_path / "w2")]) == 2
    assert "unknown keys ['bogus']" in capsys.readouterr().err


def test_coarse_starts_from_the_general_model(tmp_path, raw_dir):
    from nt2c_core.general import general_model_path
    from nt2c_core.models import load_model

    cfg = _config(str(raw_dir / "raw" / "*.mrc"), coarse_init="general")
    run_pipeline(cfg, tmp_path / "work", progress=False, only=["simulate", "coarse"])
    _, meta = load_model(tmp_path / "work" / "coarse" / "model.pt")
    assert meta["training"]["init"] == str(general_model_path())
    assert meta["architecture"] == load_model(general_model_path())[1]["architecture"]  # width 24, kept


def test_from_scratch_at_the_transfer_rate_warns(tmp_path, raw_dir, caplog):
    """coarse_init none with the coarse rate meant for starting from the general model (what a
    config that only switches coarse_init off gets) says which rate to give; at its own rate, no
    word."""
    import dataclasses
    import logging

    from nt2c_core.settings import COARSE_TRANSFER

    cfg = _config(str(raw_dir / "raw" / "*.mrc"))
    with caplog.at_level(logging.WARNING):
        run_pipeline(cfg, tmp_path / "own", progress=False, only=["simulate", "coarse"])
    assert "rate for starting from the general model" not in caplog.text
    cfg.coarse = dataclasses.replace(cfg.coarse, lr=COARSE_TRANSFER.lr)
    with caplog.at_level(logging.WARNING):
        run_pipeline(cfg, tmp_path / "transfer", progress=False, only=["simulate", "coarse"])
    assert (
        "coarse.lr 0.00025, the rate for starting from the general model; from scratch set coarse.lr to 0.001"
        in caplog.text
    )


def test_patches_noise_model_skips_the_gan_and_trains_fine_on_real_noise(tmp_path, raw_dir):
    cfg = _config(str(raw_dir / "raw" / "*.mrc"), noise_model="patches", choose_model=False)
    summary = run_pipeline(cfg, tmp_path / "work", progress=False)
    assert summary["stages"]["gan"]["skipped"] == "noise_model patches"
    assert not (tmp_path / "work" / "gan" / "model.pt").exists()
    from nt2c_core.models import load_model

    _, meta = load_model(tmp_path / "work" / "fine" / "model.pt", kind="denoiser")
    assert meta["noise_model"] == "patches"
    assert summary["stages"]["denoised"]["written"] == 2
    with pytest.raises(InputError, match="noise_model.*choose one of gan, patches"):
        run_pipeline(_config(str(raw_dir / "raw" / "*.mrc"), noise_model="diffusion"), tmp_path / "w2")


def test_density_match_simulates_the_concentration_counted_on_the_raw_micrographs(tmp_path, raw_dir):
    cfg = _config(str(raw_dir / "raw" / "*.mrc"), density="match")
    summary = run_pipeline(cfg, tmp_path / "work", progress=False, only=["simulate"])
    measured = summary["stages"]["simulate"]["particles_per_um2"]
    truth = 2 / (192 * 160 * (2.5e-4) ** 2)  # 2 particles in each raw micrograph
    assert 0.3 * truth < measured < 3 * truth
    params = json.loads((tmp_path / "work" / "simulate" / "params.json").read_text())
    assert params["config"]["concentration"] == pytest.approx(measured, rel=0.01)
    with pytest.raises(InputError, match="density.*choose given or match"):
        _config(str(raw_dir / "raw" / "*.mrc"), density="auto").validate()
