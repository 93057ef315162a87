"""One code path per stage: the ``nt2c`` commands and ``nt2c run`` use the defaults of
``nt2c_core.settings`` and the functions of ``nt2c_core.stages``, so the same inputs give the same
settings, the same metadata and the same weights (the Scipion routes are pinned in
nt2c_scipion/tests/test_protocol_stages.py)."""

import argparse
import dataclasses
import json
import sys

import pytest
import torch

from nt2c_core.cli import main
from nt2c_core.commands import noise as noise_commands
from nt2c_core.commands import train as train_commands
from nt2c_core.data import APOFERRITIN
from nt2c_core.layout import WorkLayout, checkpoint, loss_csv
from nt2c_core.models import load_model
from nt2c_core.pipeline import PipelineConfig, run_pipeline
from nt2c_core.settings import COARSE, COARSE_TRANSFER, EXTRACTION, FINE, GAN, MIN_NOISE_PATCHES, TILES
from nt2c_core.simulate import Acquisition, SimulationConfig


def _parse(add, argv):
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


def test_cli_and_run_defaults_are_the_settings_module():
    coarse = train_commands.train_config(_parse(train_commands.add_arguments, ["--pairs", "p", "-o", "m.pt"]))
    fine = train_commands.train_config(
        _parse(noise_commands.add_fine, ["--pairs", "p", "--coarse", "c.pt", "--noise-model", "g.pt", "-o", "m.pt"])
    )
    gan = noise_commands.gan_config(_parse(noise_commands.add_gan, ["--patches", "x.mrcs", "-o", "g.pt"]))
    extract = _parse(noise_commands.add_extract, ["-o", "out", "a.mrc"])
    assert coarse == COARSE and fine == FINE and gan == GAN
    assert extract.min_patches == MIN_NOISE_PATCHES
    assert (extract.rule, extract.threshold, extract.dilation, extract.target_patches) == (
        EXTRACTION.rule,
        EXTRACTION.threshold,
        EXTRACTION.dilation,
        EXTRACTION.target_patches,
    )
    run = PipelineConfig(raw=["*.mrc"], structures=["s.pdb"])
    assert (run.coarse, run.fine, run.gan, run.extraction, run.tiles, run.min_noise_patches) == (
        COARSE_TRANSFER,
        FINE,
        GAN,
        EXTRACTION,
        TILES,
        MIN_NOISE_PATCHES,
    )
    assert run.coarse_init == "general" and COARSE_TRANSFER.lr == COARSE.lr / 4  # fine-tuning the general model
    # the pipeline's copies are its own: changing one never changes the shared defaults
    run.fine.steps = 1
    assert FINE.steps == 1000


def test_help_and_menus_need_no_torch():
    """The settings and layout modules (form defaults, menus) import without torch."""
    import subprocess

    code = (
        "import sys, nt2c_core.settings, nt2c_core.layout; "
        "sys.exit(1 if 'torch' in sys.modules or 'numpy' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


TINY = dict(steps=4, batch_size=2, crop=64, width=8, val_every=2, checkpoint_every=2, seed=3)


@pytest.fixture(scope="module")
def run_work(tmp_path_factory):
    """``nt2c run`` up to the coarse model, from scratch, on a tiny simulated data set."""
    from nt2c_core.simulate.experimental import make_experimental_dataset

    root = tmp_path_factory.mktemp("routes")
    acq = Acquisition(pixel_size=2.5)
    make_experimental_dataset(
        [APOFERRITIN],
        SimulationConfig(acq, size=(128, 128), particles=2, count=1, seed=4),
        root / "exp",
        progress=False,
    )
    config = PipelineConfig(
        raw=[str(root / "exp" / "raw" / "*.mrc")],
        structures=[str(APOFERRITIN)],
        simulation=SimulationConfig(acq, size=(96, 96), particles=2, count=3, library_size=3, seed=1),
        coarse=dataclasses.replace(COARSE, **TINY),
        fine=dataclasses.replace(FINE, **TINY),
        coarse_init="none",
    )
    run_pipeline(config, root / "work", progress=False, only=["simulate", "coarse"])
    return root


def test_cli_train_gives_the_weights_and_metadata_of_nt2c_run(run_work, tmp_path):
    layout = WorkLayout(run_work / "work")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    assert main(["train", "--pairs", str(layout.pairs), "-o", str(tmp_path / "cli.pt"), *flags]) == 0
    run_net, run_meta = load_model(layout.model("coarse"))
    cli_net, cli_meta = load_model(tmp_path / "cli.pt")
    for (name, a), b in zip(run_net.state_dict().items(), cli_net.state_dict().values()):
        assert torch.equal(a, b), name
    for meta in (run_meta, cli_meta):
        assert meta["stage"] == "coarse" and meta["acquisition"]["pixel_size"] == 2.5
        assert meta["simulation"]["count"] == 3  # the pairs folder's params.json, read by the stage itself
    assert run_meta["training"] == {
        **cli_meta["training"],
        "seconds_this_run": run_meta["training"]["seconds_this_run"],
        "init": None,
    }
    assert checkpoint(tmp_path / "cli.pt").exists() and loss_csv(tmp_path / "cli.pt").exists()


def test_noise_model_records_its_pixel_size_on_every_route(run_work, tmp_path):
    """Before, only the Scipion route recorded the GAN's pixel size."""
    import numpy as np

    from nt2c_core.io import write_mrc

    stack = write_mrc(
        tmp_path / "noise_patches.mrcs", np.random.default_rng(0).normal(size=(6, 32, 32)).astype(np.float32), 2.5
    )
    assert (
        main(
            [
                "train-noise-gan",
                "--patches",
                str(stack),
                "-o",
                str(tmp_path / "gan.pt"),
                "--iterations",
                "2",
                "--batch-size",
                "2",
                "--width",
                "4",
                "--checkpoint-every",
                "1",
                "--log-every",
                "1",
            ]
        )
        == 0
    )
    _, meta = load_model(tmp_path / "gan.pt", kind="noise-gan")
    assert meta["pixel_size"] == pytest.approx(2.5) and meta["source"] == str(stack)
    assert json.loads(json.dumps(meta))  # plain JSON metadata


def test_settings_files_round_trip_every_stage_and_pipeline_validation_needs_no_torch(tmp_path):
    """What the Scipion plugin hands the dedicated environment's command line (``--settings``) is
    read back as the same settings; a pipeline config is validated without torch (the one-click
    form checks it in Scipion's Python)."""
    import subprocess

    from nt2c_core.settings import RESTORER, ExtractionSettings, ParticleSimulationConfig, read_settings, write_settings

    changed = [
        dataclasses.replace(COARSE, steps=7, width=16),
        dataclasses.replace(GAN, betas=(0.4, 0.9), crop=64),
        ExtractionSettings(rule="ssim", patch=64, threshold=0.2),
        SimulationConfig(Acquisition(pixel_size=3.1, dose=33.0), defocus_um=(0.7, 1.9), size=(96, 128)),
        ParticleSimulationConfig(box=48, count=5),
        dataclasses.replace(RESTORER, sample_steps=3),
        PipelineConfig(
            raw=["a.mrc"],
            structures=["s.cif"],
            coarse=dataclasses.replace(COARSE, crop=64),
            simulation=SimulationConfig(count=2),
        ),
    ]
    for settings in changed:
        path = write_settings(settings, tmp_path / f"{type(settings).__name__}.json")
        assert read_settings(type(settings), path) == settings
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 5, "stpes": 3}))
    assert main(["train", "--pairs", "p", "-o", str(tmp_path / "m.pt"), "--settings", str(bad)]) == 2
    bad.write_text(json.dumps({"steps": "5"}))
    assert main(["train", "--pairs", "p", "-o", str(tmp_path / "m.pt"), "--settings", str(bad)]) == 2
    code = (
        "import sys; from nt2c_core.settings import PipelineConfig, SimulationConfig; "
        "PipelineConfig(raw=['a.mrc'], structures=['s.cif'], simulation=SimulationConfig(count=2), "
        "device='auto:1').validate(); "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_train_with_a_settings_file_gives_the_weights_of_its_flags(run_work, tmp_path, capsys):
    from nt2c_core.settings import write_settings

    layout = WorkLayout(run_work / "work")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    settings = write_settings(dataclasses.replace(COARSE, **TINY), tmp_path / "train.settings.json")
    assert main(["train", "--pairs", str(layout.pairs), "-o", str(tmp_path / "flags.pt"), *flags]) == 0
    assert (
        main(
            [
                "train",
                "--pairs",
                str(layout.pairs),
                "-o",
                str(tmp_path / "file.pt"),
                "--settings",
                str(settings),
                "--steps",
                "999",
            ]
        )
        == 0
    )  # the file replaces the options
    a, meta_a = load_model(tmp_path / "flags.pt")
    b, meta_b = load_model(tmp_path / "file.pt")
    assert meta_a["training"]["steps"] == meta_b["training"]["steps"] == TINY["steps"]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
