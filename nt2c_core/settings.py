"""Every stage's settings and defaults, and the names the plugin needs at menu time.

Torch-free (numpy is not needed either), so the Scipion plugin reads its form defaults and choice
lists from here without importing torch when the GUI loads its menus, and so the CLI, ``nt2c run``
and the protocols cannot drift apart: each stage's defaults exist once, below (``COARSE``,
``FINE``, ``GAN``, ``EXTRACTION``, ``TILES``, ``MIN_NOISE_PATCHES``), and the stage functions in
:mod:`nt2c_core.stages` are the only place a stage is assembled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import InitVar, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .acquisition import DETECTORS, Acquisition  # noqa: F401  (DETECTORS: re-exported for the CLI and forms)
from .data import APOFERRITIN, PROTEASOME
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .pairs import PairSet

STAGES = ("simulate", "coarse", "noise", "gan", "fine", "denoised")  # the stages of 'nt2c run', in order
NOISE_LEVELS = ("real", "simulated")  # nt2c_core.noise.reweight
RULES = ("mask", "ssim")  # noise-patch extraction rules (nt2c_core.noise.extract)
NOISE_MODELS = ("gan", "patches")  # what the fine stage draws real noise from
CONSISTENCY_REFERENCES = ("general", "none")  # the data-consistency band's other side (nt2c_core.consistency)
SIZE_MULTIPLE = 32  # training crops, GAN crops, tiles and margins: the U-Net pools five times
PIXEL_MATCH = 0.01  # relative: simulated pairs / noise model / raw data must agree this closely
PIXEL_RANGE_SLACK = (0.8, 1.25)  # a model is used without warning within this factor of its pixel range
MIN_NOISE_PATCHES = 32  # fewer noise patches cannot train a noise model
UNET = {"name": "unet", "width": 48, "first_kernel": 11}  # the paper's U-Net (width 24: ~3x faster on CPU)
PAPER_PATCH = 320  # the paper's SSIM tile [px]


def suggest_patch_size(diameter_a: float, pixel_size: float, minimum: int = 64, maximum: int = 512) -> int:
    """Noise patch side d [px] for particles of ``diameter_a`` Å at ``pixel_size`` Å/px: the
    smallest multiple of 32 holding two particle diameters (a d/2 sub-patch then holds a whole
    particle, so a tile touching one fails the SSIM rule), within [minimum, maximum]. The paper's
    d = 320 corresponds to ~150 px particles."""
    if diameter_a <= 0 or pixel_size <= 0:
        raise InputError(f"particle diameter {diameter_a} Å and pixel size {pixel_size} Å/px must be positive")
    d = 32 * math.ceil(2 * diameter_a / pixel_size / 32)
    return int(min(max(d, minimum), maximum))


@dataclass
class TrainConfig:
    """steps: optimizer steps; batch_size: crops per step; crop: crop size [px] (multiple of 32);
    lr: initial Adam learning rate, decayed by a cosine to lr * final_lr_fraction; val_fraction:
    micrographs held out for validation; val_every / checkpoint_every: in steps; architecture:
    the network to train (a name of :mod:`nt2c_core.models.registry` and its sizes; ignored with
    an init model, whose architecture is kept); consistency: weight of the data-consistency term on
    the real micrographs (:mod:`nt2c_core.consistency`; 0 = off; used by the fine stage, which
    has the real micrographs); consistency_reference: the other side of the term's band, "general"
    (the shipped general model's output) or "none" (the raw micrograph alone). ``width=`` /
    ``first_kernel=`` given to the constructor (or
    ``replace``) set those sizes of the architecture (the U-Net's)."""

    steps: int = 2000
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    final_lr_fraction: float = 0.05
    val_fraction: float = 0.1
    val_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    amp: bool = True
    architecture: dict = field(default_factory=lambda: dict(UNET))
    consistency: float = 0.0
    consistency_reference: str = "general"
    width: InitVar[int | None] = None
    first_kernel: InitVar[int | None] = None

    def __post_init__(self, width: int | None, first_kernel: int | None) -> None:
        sizes = {k: v for k, v in (("width", width), ("first_kernel", first_kernel)) if v is not None}
        self.architecture = {**self.architecture, **sizes}  # an own copy, never the shared default

    def validate(self, section: str | None = None) -> "TrainConfig":
        """Check every value (types and ranges); ``section`` names the settings as in a pipeline
        config (``fine.steps``), None as on the command line (``--steps``)."""
        from .validation import at_least_one, check_rules, check_types, positive, require

        check_types(self, section)
        check_rules(
            self,
            section,
            {
                "steps": (at_least_one, "must be at least 1"),
                "batch_size": (at_least_one, "must be at least 1"),
                "crop": (lambda v: v >= 32 and v % 32 == 0, "must be a multiple of 32, at least 32 px"),
                "lr": (positive, "learning rate must be positive"),
                "final_lr_fraction": (lambda v: 0 < v <= 1, "must lie in (0, 1]"),
                "val_fraction": (lambda v: 0 <= v < 1, "fraction of micrographs held out: must lie in [0, 1)"),
                "val_every": (at_least_one, "must be at least 1 step"),
                "checkpoint_every": (at_least_one, "must be at least 1 step"),
                "consistency": (lambda v: v >= 0 and math.isfinite(v), "must be 0 (off) or a positive weight"),
                "consistency_reference": (
                    lambda v: v in CONSISTENCY_REFERENCES,
                    f"choose one of {', '.join(CONSISTENCY_REFERENCES)}",
                ),
            },
        )
        from .models.registry import check_architecture

        problem = check_architecture(self.architecture)
        require(problem is None, "architecture", section, self.architecture, problem or "")
        require(
            self.architecture.get("first_kernel", 1) % 2 == 1,
            "architecture",
            section,
            self.architecture,
            "first_kernel must be an odd number of pixels",
        )
        return self

    def check_pairs(self, pairs: "PairSet") -> "TrainConfig":
        """The pairs suit these settings (crop no larger than a micrograph)."""
        small = [n for n, x in zip(pairs.names, pairs.noisy) if min(x.shape) < self.crop]
        if small:
            raise InputError(f"crop = {self.crop} px is larger than micrograph(s) {', '.join(small[:3])}")
        return self


@dataclass
class GANConfig:
    """iterations: generator steps; n_critic: critic steps per generator step; crop: training
    patch size [px] (a multiple of 32, at most the extracted patch size; None = that size);
    latent/width: network sizes; lr/betas: Adam; gp_weight: lambda of eq. 2."""

    iterations: int = 2000
    n_critic: int = 5
    batch_size: int = 32
    crop: int | None = None
    latent: int = 64
    width: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    gp_weight: float = 10.0
    spectral_weight: float = 10.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 200

    def loop(self) -> "LoopConfig":
        """The training loop's settings: Adam at a constant ``lr`` with ``betas``, one step per
        generator iteration (the critic's ``n_critic`` steps inside it), no mixed precision."""
        return LoopConfig(
            self.iterations,
            self.lr,
            False,
            self.seed,
            self.log_every,
            self.checkpoint_every,
            json.dumps({k: v for k, v in asdict(self).items() if k != "iterations"}),
            tuple(self.betas),
            1.0,
        )

    def validate(self, section: str | None = None) -> "GANConfig":
        """Check every value; ``section`` as in :meth:`nt2c_core.training.TrainConfig.validate`."""
        from .validation import at_least_one, check_rules, check_types, positive, require

        check_types(self, section)
        check_rules(
            self,
            section,
            {
                "iterations": (at_least_one, "must be at least 1"),
                "n_critic": (at_least_one, "must be at least 1"),
                "batch_size": (at_least_one, "must be at least 1"),
                "crop": (
                    lambda v: v is None or (v >= SIZE_MULTIPLE and v % SIZE_MULTIPLE == 0),
                    f"must be a multiple of {SIZE_MULTIPLE}",
                ),
                "latent": (at_least_one, "must be at least 1"),
                "width": (at_least_one, "must be at least 1"),
                "lr": (positive, "learning rate must be positive"),
                "gp_weight": (lambda v: v >= 0, "must not be negative"),
                "spectral_weight": (lambda v: v >= 0, "must not be negative"),
                "log_every": (at_least_one, "must be at least 1"),
                "checkpoint_every": (at_least_one, "must be at least 1"),
            },
        )
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        require(
            len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
            "betas",
            section,
            self.betas,
            "two numbers in [0, 1)",
        )
        return self


@dataclass
class ExtractionSettings:
    """patch: tile/patch size d [px] (None: the mask rule chooses it from the free area, the SSIM
    rule takes two particle diameters, or the paper's 320 px without a diameter); rule: 'mask'
    (default, any particle density) or 'ssim' (the paper's). SSIM rule: step: tile step [px]
    (default d/2); sub_patches: N, a square number (4 = 2 x 2); threshold: minimum pairwise SSIM;
    c1, c2: SSIM constants on [0, 1]; smooth: Gaussian sigma [px] applied to the enhanced image;
    flatten: subtract its low-pass (sigma = d) before scaling. Mask rule: particle_diameter [Å]
    (required; the pipeline takes it from the atomic model); dilation: growth of the particle
    mask in particle radii; target_patches: the automatic patch size is the largest that gives
    this many patches over the first ``sample_micrographs`` micrographs (scaled to all)."""

    patch: int | None = None
    step: int | None = None
    sub_patches: int = 4
    threshold: float = 0.7
    c1: float = 0.01**2
    c2: float = 0.03**2
    smooth: float = 1.5
    flatten: bool = True
    rule: str = "mask"
    particle_diameter: float | None = None
    dilation: float = 0.25
    target_patches: int = 256
    sample_micrographs: int = 8

    def validate(self, section: str | None = None) -> "ExtractionSettings":
        from .validation import check_types, require, setting_name

        check_types(self, section)
        require(self.rule in RULES, "rule", section, self.rule, f"choose one of {', '.join(RULES)}")
        d = self.particle_diameter
        require(
            d is None or (isinstance(d, (int, float)) and not isinstance(d, bool) and d > 0),
            "particle_diameter",
            section,
            d,
            "particle diameter in Å: must be positive",
        )
        if self.rule == "mask" and d is None:
            raise InputError(
                f"{setting_name('particle_diameter', section)}: the mask rule needs the particle "
                "diameter in Å (or use the SSIM rule)"
            )
        if self.rule == "mask":
            require(
                self.patch is None or (self.patch >= 32 and self.patch % 32 == 0),
                "patch",
                section,
                self.patch,
                "noise patch size: a multiple of 32 px (or automatic)",
            )
        require(self.dilation >= 0, "dilation", section, self.dilation, "must not be negative")
        require(self.target_patches >= 1, "target_patches", section, self.target_patches, "must be at least 1")
        require(
            self.sample_micrographs >= 1, "sample_micrographs", section, self.sample_micrographs, "must be at least 1"
        )
        if self.sub_patches < 1:
            raise InputError(f"sub-patches N = {self.sub_patches}: must be a square number >= 4")
        n = math.isqrt(self.sub_patches)
        if n * n != self.sub_patches or n < 2:
            raise InputError(f"sub-patches N = {self.sub_patches}: must be a square number >= 4")
        if self.patch is not None and (self.patch < 8 or self.patch % n):
            raise InputError(f"patch d = {self.patch} px: must be >= 8 and divisible by sqrt(N) = {n}")
        if not -1 < self.threshold < 1:
            raise InputError(f"threshold = {self.threshold}: SSIM threshold must lie in (-1, 1)")
        if self.step is not None and self.step < 1:
            raise InputError(f"step = {self.step}: must be >= 1 px")
        return self

    @property
    def stride(self) -> int:
        return self.step if self.step else self.patch // 2

    def ssim_patch(self, pixel_size: float) -> int:
        """The SSIM rule's tile size: the given one, else two particle diameters, else 320 px."""
        if self.patch:
            return self.patch
        if self.particle_diameter and pixel_size > 0:
            return suggest_patch_size(self.particle_diameter, pixel_size)
        return PAPER_PATCH


@dataclass
class TileSettings:
    """tile: tile size [px], a multiple of 32; margin: overlap context per side [px], a multiple of
    32; batch: tiles per forward pass. ``low_memory`` halves the tile."""

    tile: int = 1024
    margin: int = 128
    batch: int = 1

    def validate(self, section: str | None = None) -> "TileSettings":
        from .validation import check_types

        check_types(self, section)
        if self.margin < 0:
            raise InputError(f"margin {self.margin} px: must not be negative")
        if self.tile % SIZE_MULTIPLE or self.margin % SIZE_MULTIPLE or self.tile < 64:
            raise InputError(
                f"tile {self.tile} / margin {self.margin} px: both must be multiples of {SIZE_MULTIPLE}, tile >= 64"
            )
        if 2 * self.margin >= self.tile:
            raise InputError(f"margin {self.margin} px: must be less than half the tile ({self.tile} px)")
        if self.batch < 1:
            raise InputError("batch must be at least 1")
        return self


MAX_SIDE = 8192
MAX_PIXELS = MAX_SIDE * MAX_SIDE  # a 4096² micrograph takes ~1.5 GB to simulate; 8192² about 6 GB
# fraction of the pipeline's training micrographs simulated near a carbon rim (presets, demo, Scipion):
# without them the coarse and fine models leave a carbon film noisy and lose 0.8-3 dB near its edge
# against the general model (EMPIAR-10028 run, 2026-12-03)
TRAINING_CARBON_FRACTION = 0.25
MAX_ICE_GRADIENT = 0.9  # relative ice-thickness change from a micrograph's centre to its edge (the ice stays > 0)


@dataclass
class SimulationConfig:
    """Everything a simulation run needs besides the structures.

    defocus_um: (min, max) nominal defocus [µm], drawn uniformly per micrograph (positive =
    underfocus); astigmatism_um: defocus U - V [µm], azimuth random; ice_thickness [Å];
    size: (width, height) [px]; particles: particles per micrograph, unless concentration
    [particles/µm^2] is given; count: number of micrographs; slab_thickness: depth [Å] of the ice
    slabs sharing one defocus; library_size: 0 projects every particle from its atoms, N > 0 draws
    from N precomputed projections per structure pasted with sub-pixel shifts (fast batch mode);
    pad: field margin [px] against CTF wrap-around; carbon_fraction: fraction of the micrographs
    taken near the rim of a hole in a carbon film (:mod:`nt2c_core.simulate.carbon`), so that a
    model also meets the film, its edge and particles on it; ice_gradient: largest relative change
    of the ice thickness from a micrograph's centre to its edge: each micrograph gets a linear
    thickness ramp in a random direction with an amplitude drawn uniformly in [0, ice_gradient]
    (:func:`nt2c_core.simulate.micrograph.through_uneven_ice`; the clean target stays flat), so
    that a model meets the uneven ice of real grids.
    """

    acquisition: Acquisition = field(default_factory=Acquisition)
    defocus_um: tuple[float, float] = (1.0, 2.5)
    astigmatism_um: float = 0.05
    ice_thickness: float = 300.0
    size: tuple[int, int] = (1024, 1024)
    particles: int = 50
    concentration: float | None = None
    count: int = 1
    seed: int = 0
    slab_thickness: float = 100.0
    library_size: int = 0
    pad: int = 128
    carbon_fraction: float = 0.0
    ice_gradient: float = 0.0

    def validate(self) -> "SimulationConfig":
        """Raise :class:`InputError` naming the first parameter out of range."""
        self.acquisition.validate()
        lo, hi = self.defocus_um
        if not (-5.0 <= lo <= hi <= 20.0):
            raise InputError(f"defocus range ({lo}, {hi}) µm: need -5 <= min <= max <= 20")
        if not 0 <= self.astigmatism_um <= 5:
            raise InputError(f"astigmatism = {self.astigmatism_um} µm: need 0 <= value <= 5")
        if not 0 <= self.ice_thickness <= 5000:
            raise InputError(f"ice thickness = {self.ice_thickness} Å: need 0 <= value <= 5000")
        width, height = self.size
        if width < 16 or height < 16 or width * height > MAX_PIXELS:
            raise InputError(
                f"micrograph size {width} x {height} px: need at least 16 px a side and at most "
                f"{MAX_PIXELS // 2**20} Mpx ({MAX_SIDE} x {MAX_SIDE}); simulate at a binned pixel size"
            )
        if self.count < 1:
            raise InputError(f"count = {self.count}: need at least one micrograph")
        if self.particles < 0 or (self.concentration is not None and self.concentration < 0):
            raise InputError("particles/concentration: must not be negative")
        if self.slab_thickness <= 0 or self.library_size < 0 or self.pad < 0:
            raise InputError("slab thickness must be > 0, library size and pad >= 0")
        if not 0 <= self.carbon_fraction <= 1:
            raise InputError(f"carbon fraction = {self.carbon_fraction}: need 0 <= value <= 1")
        if not 0 <= self.ice_gradient <= MAX_ICE_GRADIENT:
            raise InputError(
                f"ice gradient = {self.ice_gradient}: need 0 <= value <= {MAX_ICE_GRADIENT} "
                "(a relative change of the ice thickness)"
            )
        return self

    def particles_per_micrograph(self) -> int:
        if self.concentration is None:
            return int(self.particles)
        area_um2 = self.size[0] * self.size[1] * (self.acquisition.pixel_size * 1e-4) ** 2
        return int(round(self.concentration * area_um2))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["defocus_um"] = list(self.defocus_um)
        out["size"] = list(self.size)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "SimulationConfig":
        return settings_from_dict(cls, data, "simulation settings")


# The simulation NT2C trains on, one preset for every route: `nt2c simulate`'s carbon default,
# `nt2c run --example`, the one-click and the stage-by-stage "simulate training pairs" protocols, the demo
TRAINING_SIMULATION = SimulationConfig(library_size=200, carbon_fraction=TRAINING_CARBON_FRACTION)

DETECTOR_NAMES = ("K2", "K3", "Falcon4")


@dataclass
class GeneralRecipe:
    """Ranges the general model is trained over (uniform draws; units in the names)."""

    structures: list[str] = field(default_factory=lambda: [str(PROTEASOME), str(APOFERRITIN)])
    configs: int = 200
    per_config: int = 2
    size: int = 384
    pixel_size_A: tuple[float, float] = (0.6, 2.0)
    dose_e_per_A2: tuple[float, float] = (20.0, 60.0)
    defocus_um: tuple[float, float] = (0.5, 3.5)
    ice_thickness_A: tuple[float, float] = (100.0, 600.0)
    voltages_kv: tuple[float, ...] = (300.0, 300.0, 200.0)
    detectors: tuple[str, ...] = DETECTOR_NAMES
    coverage: tuple[float, float] = (0.05, 0.4)
    seed: int = 2024
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=4000,
            batch_size=8,
            crop=128,
            width=24,
            lr=1e-3,
            val_every=250,
            checkpoint_every=250,
            val_fraction=0.05,
        )
    )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["structures"] = [Path(s).name for s in self.structures]
        return out

    def validate(self) -> "GeneralRecipe":
        """Raise :class:`InputError` naming the first flag out of range."""
        if self.configs < 1:
            raise InputError(f"--configs = {self.configs}: must be at least 1")
        if self.per_config < 1:
            raise InputError(f"--per-config = {self.per_config}: must be at least 1")
        if self.configs * self.per_config < 2:
            raise InputError(
                f"--configs x --per-config = {self.configs * self.per_config}: need at least 2 "
                "micrographs (one is held out for validation)"
            )
        self.train.validate()
        return self


TOMO_NOISE_MODELS = ("patches3d", "gan2d")  # NMSG's noise synthesizers (nt2c_core.tomo.noise)
TOMO_PAIRINGS = ("r2r", "nmsg")  # how synthetic noise makes training pairs (nt2c_core.tomo.nmsg)
UNET3D = {"name": "unet3d", "width": 16, "first_kernel": 5}  # NMSG's 3-D U-Net (authors: width 48, kernel 7)
UNET3D_MULTIPLE = 8  # three poolings


@dataclass
class TomoSimulationConfig:
    """A simulated tomogram (``nt2c simulate-tomo``, NMSG's benchmark and tests).

    acquisition: the microscope; ``dose`` is the TOTAL dose of the tilt series [e/Å²], split evenly
    over the tilts; size: (x, y) [px]; thickness: reconstructed depth z [px]; ice_thickness [Å]
    (particles stay inside it); particles: how many (placed without overlap in 3-D); tilt_range_deg
    / tilt_step_deg: the tilt series (tilt axis = y); defocus_um: nominal defocus [µm] of every tilt;
    oversmooth_sigma: Gaussian sigma [px] applied to each tilt before the over-smoothed
    reconstruction NMSG's sparsity term uses."""

    acquisition: Acquisition = field(
        default_factory=lambda: Acquisition(pixel_size=8.0, dose=60.0, b_factor=60.0, detector="ideal")
    )
    size: tuple[int, int] = (128, 128)
    thickness: int = 48
    ice_thickness: float = 300.0
    particles: int = 20
    tilt_range_deg: tuple[float, float] = (-60.0, 60.0)
    tilt_step_deg: float = 3.0
    defocus_um: float = 3.0
    oversmooth_sigma: float = 2.0
    seed: int = 0

    def tilt_angles(self) -> list[float]:
        lo, hi = self.tilt_range_deg
        n = int(math.floor((hi - lo) / self.tilt_step_deg + 1e-6)) + 1
        return [lo + i * self.tilt_step_deg for i in range(n)]

    def validate(self) -> "TomoSimulationConfig":
        """Raise :class:`InputError` naming the first parameter out of range."""
        self.acquisition.validate()
        width, height = self.size
        if min(width, height, self.thickness) < 16 or width * height * self.thickness > 1024**3:
            raise InputError(
                f"tomogram size {width} x {height} x {self.thickness} px: need at least 16 px a side "
                "and at most 1024³ voxels"
            )
        lo, hi = self.tilt_range_deg
        if not (-80 <= lo < hi <= 80) or not 0 < self.tilt_step_deg <= hi - lo:
            raise InputError(
                f"tilt range {lo}..{hi}° in {self.tilt_step_deg}° steps: need -80 <= min < max <= 80 "
                "and a step within the range"
            )
        if self.particles < 0 or not 0 < self.ice_thickness <= self.thickness * self.acquisition.pixel_size:
            raise InputError(
                f"particles = {self.particles} must be >= 0 and ice thickness = {self.ice_thickness} Å "
                f"within (0, thickness x pixel size = {self.thickness * self.acquisition.pixel_size} Å]"
            )
        if not -5.0 <= self.defocus_um <= 20.0 or self.oversmooth_sigma < 0:
            raise InputError("defocus must be within -5..20 µm and the over-smoothing sigma >= 0")
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["size"], out["tilt_range_deg"] = list(self.size), list(self.tilt_range_deg)
        return out


@dataclass
class NMSGConfig:
    """NMSG training on one tomogram (``nt2c denoise-tomo``, the Scipion tomogram protocol).

    steps/batch_size/lr: Adam with cosine decay (the authors use Adagrad 1e-3, 40 epochs of 128³
    tiles; we use Adam as our 2-D denoisers do); tile_depth/tile_size: training tiles z x y x x [px]
    (multiples of 8); width/first_kernel: the 3-D U-Net; residual: the U-Net predicts a correction
    added to its input (the authors') instead of the volume itself (our default: a residual network
    starts at the identity and single-volume training often stays near it); recon/smooth/guide: loss weights of
    MSE(f(s), n), MSE(Sobel f(s), Sobel o), MSE(f(s), g) (the authors' 1.0 / 0.05 / 0.5; ours 1 / 0 / 0
    with r2r pairs, where the two extra terms cost PSNR: see benchmarks/bench_tomo.py);
    guide_sigma: the Gaussian [px] making g from the raw volume; oversmooth_sigma: the Gaussian [px]
    making the over-smoothed reference o when none is given; noise_model: 'patches3d' (3-D mosaics
    of the tomogram's own noise cubes) or 'gan2d' (the authors' 2-D WGAN-GP, one sample per slice);
    noise_cube: x-y side [px] of the noise blocks; noise_depth: their z side [px] (0: noise_cube;
    deeper blocks keep the noise's correlation along z); noise_fraction: share of the quietest
    blocks taken as noise; noise_cap: filter the synthetic noise so that at no spatial frequency it
    has more power than the volume itself (:class:`nt2c_core.tomo.noise.PowerCapped`);
    gan_iterations: GAN generator steps for 'gan2d'; pairing: 'nmsg' (the authors': input
    raw + noise, target raw) or 'r2r' (recorrupted pairs: input raw + alpha noise, target raw -
    noise / alpha, whose expected target is the clean volume); alpha: the r2r noise scale;
    infer_draws: r2r inference averages the network over this many noise draws (0 = the raw volume
    alone); infer_margin: overlap [px] of inference tiles; flips: each training tile (and its
    targets) flipped along z, y and x at random (the single-axis tilt geometry, missing wedge
    included, maps onto itself under each flip; x-y transposes would rotate the wedge, so none);
    infer_flips: r2r inference with noise draws runs draw k under the k-th of the 8 flips (no extra
    time); without draws the output is the mean over the volume's 8 flips (8x the time)."""

    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-3
    tile_depth: int = 32
    tile_size: int = 64
    width: int = 16
    first_kernel: int = 5
    residual: bool = False
    recon: float = 1.0
    smooth: float = 0.0
    guide: float = 0.0
    guide_sigma: float = 1.0
    oversmooth_sigma: float = 3.0
    noise_model: str = "patches3d"
    noise_cube: int = 16
    noise_depth: int = 32
    noise_fraction: float = 0.2
    noise_cap: bool = True
    gan_iterations: int = 300
    pairing: str = "r2r"
    alpha: float = 1.0
    infer_draws: int = 8
    infer_margin: int = 8
    flips: bool = True
    infer_flips: bool = True
    amp: bool = True
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100

    def architecture(self) -> dict:
        return {**UNET3D, "width": self.width, "first_kernel": self.first_kernel, "residual": self.residual}

    def validate(self, section: str | None = None) -> "NMSGConfig":
        """Check every value; messages name the CLI flag (or ``section.key``)."""
        from .validation import at_least_one, check_rules, check_types, positive

        check_types(self, section)
        multiple = (
            lambda v: v >= UNET3D_MULTIPLE and v % UNET3D_MULTIPLE == 0,
            f"must be a multiple of {UNET3D_MULTIPLE}",
        )
        check_rules(
            self,
            section,
            {
                "steps": (at_least_one, "must be at least 1"),
                "batch_size": (at_least_one, "must be at least 1"),
                "lr": (positive, "learning rate must be positive"),
                "tile_depth": multiple,
                "tile_size": multiple,
                "width": (at_least_one, "must be at least 1"),
                "first_kernel": (lambda v: v >= 1 and v % 2 == 1, "must be an odd number"),
                "recon": (lambda v: v >= 0, "must not be negative"),
                "smooth": (lambda v: v >= 0, "must not be negative"),
                "guide": (lambda v: v >= 0, "must not be negative"),
                "guide_sigma": (positive, "must be positive"),
                "oversmooth_sigma": (positive, "must be positive"),
                "noise_model": (lambda v: v in TOMO_NOISE_MODELS, f"must be one of {', '.join(TOMO_NOISE_MODELS)}"),
                "noise_cube": (lambda v: v >= 4, "must be at least 4"),
                "noise_depth": (lambda v: v == 0 or v >= 4, "must be 0 (= --noise-cube) or at least 4"),
                "noise_fraction": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
                "gan_iterations": (at_least_one, "must be at least 1"),
                "pairing": (lambda v: v in TOMO_PAIRINGS, f"must be one of {', '.join(TOMO_PAIRINGS)}"),
                "alpha": (lambda v: 0 < v <= 2, "must be in (0, 2]"),
                "infer_draws": (lambda v: v >= 0, "must not be negative"),
                "infer_margin": (lambda v: v >= 0, "must not be negative"),
                "log_every": (at_least_one, "must be at least 1"),
                "checkpoint_every": (at_least_one, "must be at least 1"),
            },
        )
        if self.recon + self.smooth + self.guide <= 0:
            raise InputError("loss weights --recon, --smooth and --guide are all zero: nothing to train")
        return self


NMSG = NMSGConfig()
"""NMSG's defaults (CLI ``nt2c denoise-tomo``, the Scipion tomogram protocol)."""


COARSE = TrainConfig()
"""The coarse U-Net's defaults from scratch (CLI ``nt2c train``, the Scipion coarse protocol)."""
COARSE_TRANSFER = TrainConfig(lr=COARSE.lr / 4)
"""The coarse U-Net's defaults when it starts from the shipped general model (``nt2c run``'s and
the one-click protocol's default ``coarse_init`` 'general'): a quarter of the learning rate, so the
transfer keeps what the general model learned. Measured (2026-12-03, same simulation and seeds):
EMPIAR-10028 (bench_real_picked's coarse rate, 5e-4 -> 2.5e-4): the fine model's DoG picking AP
0.674 -> 0.686 (raw 0.678, general 0.668, Topaz 0.687), eq. 5 SNR 24.56 -> 24.05 dB; demo
2e-3 -> 5e-4: coarse 29.36 -> 29.52 dB against the truth, fine 29.38 -> 29.50 (general 29.47)."""
FINE = TrainConfig(steps=1000, lr=3e-4, consistency=10.0)
"""The fine U-Net's defaults: it starts from the coarse model, so fewer steps and a lower rate,
and at the particle scale it keeps between the real micrographs and the general model's output
(:mod:`nt2c_core.consistency`; weight 10 holds that band, 1 let a fifth of the departure through)."""
GAN = GANConfig()
EXTRACTION = ExtractionSettings()
TILES = TileSettings()


def replace(settings, **changes):
    """A copy of a settings dataclass with ``changes`` (``dataclasses.replace``)."""
    return dataclasses.replace(settings, **changes)


SR3 = {"name": "sr3-restorer", "width": 32, "levels": 3, "refine_width": 16}  # diffusion U-Net + post-processing
# Particle restorers: SR3 (diffusion + post-processing) or the NT2C U-Net trained on the same pairs
# (MSE, one pass at restoration: the baseline any generative restorer has to beat).
RESTORER_METHODS = ("sr3", "unet")
PARTICLE_UNET = {"name": "unet", "width": 24, "first_kernel": 11}
PARTICLE_NOISE = ("simulated", "patches")  # noise of simulated particle pairs (nt2c_core.particles.simulate)
# Contrast of particle stacks on disk: 'white' (protein bright: RELION's convention, what relion_refine
# and relion_reconstruct expect without --invert_contrast) or 'dark' (physical contrast, as in raw micrographs).
PARTICLE_CONTRAST = ("white", "dark")


@dataclass
class ParticleSimulationConfig:
    """Simulated particle images with ground truth (``nt2c simulate-particles``; SR3's training
    and benchmark data).

    acquisition: the microscope (``dose`` per image [e/Å²], pixel size [Å/px]); box: image side
    [px]; count: particles; defocus_range_um: defocus drawn uniformly in this range [µm];
    astigmatism_um: largest |defocus U - V| / 2 [µm]; ice_thickness: amorphous ice [Å] (0 = none);
    max_shift: largest random particle offset from the box centre [px] (written as the origin);
    noise: 'simulated' (shot noise through the detector model) or 'patches' (the data set's real
    background patches, scaled to the simulated noise's standard deviation); contrast: of the
    written stacks, 'white' (protein bright, RELION's convention; default) or 'dark' (physical,
    as in raw micrographs; the arrays in memory always are); seed."""

    acquisition: Acquisition = field(
        default_factory=lambda: Acquisition(pixel_size=3.0, dose=30.0, b_factor=60.0, detector="K3")
    )
    box: int = 64
    count: int = 1000
    defocus_range_um: tuple[float, float] = (1.0, 2.5)
    astigmatism_um: float = 0.05
    ice_thickness: float = 300.0
    max_shift: float = 0.0
    noise: str = "simulated"
    contrast: str = "white"
    seed: int = 0

    def validate(self) -> "ParticleSimulationConfig":
        """Raise :class:`InputError` naming the first parameter out of range."""
        self.acquisition.validate()
        lo, hi = self.defocus_range_um
        problems = [
            (16 <= self.box <= 512 and self.box % 2 == 0, f"--box = {self.box}: must be even, 16..512 px"),
            (self.count >= 1, f"--count = {self.count}: must be at least 1"),
            (-5.0 <= lo <= hi <= 20.0, f"--defocus-range = {lo} {hi}: need -5 <= min <= max <= 20 µm"),
            (0 <= self.astigmatism_um <= 2.0, f"--astigmatism = {self.astigmatism_um}: must be within 0..2 µm"),
            (0 <= self.ice_thickness <= 5000, f"--ice-thickness = {self.ice_thickness}: must be within 0..5000 Å"),
            (0 <= self.max_shift <= self.box / 4, f"--max-shift = {self.max_shift}: must be within 0..box/4 px"),
            (self.noise in PARTICLE_NOISE, f"--noise = {self.noise!r}: must be one of {', '.join(PARTICLE_NOISE)}"),
            (
                self.contrast in PARTICLE_CONTRAST,
                f"--contrast = {self.contrast!r}: must be one of {', '.join(PARTICLE_CONTRAST)}",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise InputError(message)
        return self

    def to_dict(self) -> dict:
        out = asdict(self)
        out["defocus_range_um"] = list(self.defocus_range_um)
        return out


@dataclass
class LoopConfig:
    """What :func:`nt2c_core.training.fit` needs of a training: steps, Adam learning rate (and
    betas; decayed by a cosine to ``final_lr_fraction`` of it, 1 = constant), mixed precision on
    CUDA, seed, logging and checkpoint intervals; ``settings``: a text naming every other setting
    that shapes the run, so a checkpoint made with others is refused."""

    steps: int
    lr: float
    amp: bool
    seed: int
    log_every: int
    checkpoint_every: int
    settings: str = ""
    betas: tuple[float, float] = (0.9, 0.999)
    final_lr_fraction: float = 0.05


MAX_RESTORER_SAMPLES = 64  # draws averaged per particle: past this the mean no longer changes measurably


@dataclass
class RestorerConfig:
    """The particle restorer (``nt2c train-restorer``, ``nt2c restore-particles``, the Scipion
    particle protocols). See :mod:`nt2c_core.particles.sr3` for the method.

    method: 'sr3' (the diffusion restorer) or 'unet' (the NT2C U-Net trained on the same pairs with
    MSE: one pass, no draws; width is its channel count, the SR3-only settings are unused);
    steps/batch_size/lr: training of the diffusion U-Net (Adam, cosine decay); width/levels: its
    channels at full resolution and its number of resolution levels; sample_steps: DDIM steps of
    restoration (the paper's count is not public; 4 measured best with post-processing); samples: restored
    draws averaged per particle (1 = one posterior sample; more approach the posterior mean);
    refine_steps/refine_width: the post-processing U-Net (0 steps = none); refine_pool: training
    particles restored by the diffusion model to train the post-processing on; empty_fraction:
    fraction of training boxes that hold only the noise (target: an empty box), so that the
    restorer learns that an empty box exists instead of painting its mean particle into noise;
    batch: particles per restoration batch; amp: mixed precision on CUDA; invention_images /
    invention_threshold: the invention check run with every restoration (matched-noise images
    restored, 0 = no check; excess correlation over blurred noise that flags the restorer, see
    :mod:`nt2c_core.particles.invention`); seed; log_every / checkpoint_every [steps]."""

    method: str = "sr3"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 5e-4
    width: int = 32
    levels: int = 3
    sample_steps: int = 4
    samples: int = 1
    refine_steps: int = 600
    refine_width: int = 16
    refine_pool: int = 256
    empty_fraction: float = 0.25
    batch: int = 16
    amp: bool = True
    invention_images: int = 256
    invention_threshold: float = 0.05
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 250

    def architecture(self) -> dict:
        if self.method == "unet":
            return {**PARTICLE_UNET, "width": self.width}
        return {**SR3, "width": self.width, "levels": self.levels, "refine_width": self.refine_width}

    def diffusion_loop(self) -> LoopConfig:
        return LoopConfig(
            self.steps,
            self.lr,
            self.amp,
            self.seed,
            self.log_every,
            self.checkpoint_every,
            f"diffusion batch {self.batch_size} {self.architecture()} empty {self.empty_fraction}",
        )

    def refine_loop(self) -> LoopConfig:
        return LoopConfig(
            self.refine_steps,
            1e-3,
            self.amp,
            self.seed,
            self.log_every,
            self.checkpoint_every,
            f"refine batch {self.batch_size} {self.architecture()} pool {self.refine_pool} "
            f"sample {self.sample_steps} samples {self.samples} empty {self.empty_fraction}",
        )

    def validate(self, section: str | None = None) -> "RestorerConfig":
        """Check every value; messages name the CLI flag (or ``section.key``)."""
        from .validation import at_least_one, check_rules, check_types, positive

        check_types(self, section)
        non_negative = (lambda v: v >= 0, "must not be negative")
        check_rules(
            self,
            section,
            {
                "method": (lambda v: v in RESTORER_METHODS, f"must be one of {', '.join(RESTORER_METHODS)}"),
                "steps": (at_least_one, "must be at least 1"),
                "batch_size": (at_least_one, "must be at least 1"),
                "lr": (positive, "learning rate must be positive"),
                "width": (
                    lambda v: 4 <= v <= 512 and v % 2 == 0,
                    "must be even, within 4..512 (the noise-level embedding has width channels, sine and cosine)",
                ),
                "levels": (lambda v: 1 <= v <= 5, "must be within 1..5"),
                "sample_steps": (lambda v: 1 <= v <= 1000, "must be within 1..1000"),
                "samples": (
                    lambda v: 1 <= v <= MAX_RESTORER_SAMPLES,
                    f"must be within 1..{MAX_RESTORER_SAMPLES} (draws averaged per particle; time grows "
                    "linearly with it)",
                ),
                "refine_steps": non_negative,
                "refine_width": (lambda v: 4 <= v <= 512, "must be within 4..512"),
                "refine_pool": (lambda v: v >= 2, "must be at least 2"),
                "empty_fraction": (lambda v: 0 <= v < 1, "must be within 0..1 (fraction of empty training boxes)"),
                "invention_images": (
                    lambda v: v == 0 or 16 <= v <= 4096,
                    "must be 0 (no invention check) or within 16..4096",
                ),
                "invention_threshold": (lambda v: 0 < v < 1, "must be within 0..1 (a correlation)"),
                "batch": (at_least_one, "must be at least 1"),
                "log_every": (at_least_one, "must be at least 1"),
                "checkpoint_every": (at_least_one, "must be at least 1"),
            },
        )
        return self


RESTORER = RestorerConfig()


def settings_from_dict(kind, data, where: str, section: str = ""):
    """A settings dataclass ``kind`` from a JSON object (as :func:`settings_to_dict` or
    ``dataclasses.asdict`` wrote it): nested settings and tuples rebuilt, unknown keys and values
    of the wrong type refused (``where`` names the file, ``section`` the nested key, e.g.
    ``simulation``, in the message: ``FILE: simulation.size = 'big': must be 2 numbers``)."""
    from .validation import check_types

    if not isinstance(data, dict):
        raise InputError(
            f"{where}{': ' + section if section else ''} must be an object of settings, not {str(data)[:80]!r}"
        )
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(data) - set(fields)
    if unknown:
        raise InputError(f"{where}{': ' + section if section else ''}: unknown keys {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        f = fields[name]
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        if dataclasses.is_dataclass(default):
            value = settings_from_dict(type(default), value, where, f"{section}.{name}".lstrip("."))
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        settings = kind(**values)
    except TypeError as exc:  # a required key missing
        raise InputError(f"{where}: {exc}") from None
    try:
        check_types(settings, section, deep=True)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return settings


def settings_to_dict(settings) -> dict:
    """A settings dataclass as a JSON-ready dict (what :func:`settings_from_dict` reads)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def write_settings(settings, path: str | os.PathLike) -> Path:
    """``settings`` as a JSON file, written atomically (the ``--settings`` of the ``nt2c`` stage
    commands; what the Scipion plugin hands the dedicated environment's command line)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # unique per thread too
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(settings_to_dict(settings), indent=1))
    os.replace(tmp, path)
    return path


def read_settings(kind, path: str | os.PathLike):
    """The settings dataclass ``kind`` from a JSON file of :func:`write_settings`, validated when
    the class has a ``validate``."""
    from .io import read_json

    path = Path(path)
    data = read_json(path, "settings file")
    settings = settings_from_dict(kind, data, str(path))
    return settings.validate() if hasattr(settings, "validate") else settings


@dataclass
class PipelineConfig:
    """raw: micrograph paths or glob patterns; structures: PDB/mmCIF files for the simulation;
    simulation: its settings (its acquisition must be the data's: pixel size, kV, dose...);
    min_noise_patches: fewer extracted patches means no noise model; few_patches: then
    'continue' (warn, skip the GAN and fine stages, denoise with the best model available) or
    'stop' (an error); noise_level: 'real' or 'simulated' (see ``nt2c_core.noise.reweight``);
    calibrate: before simulating, estimate defocus range, astigmatism, dose and ice thickness from
    the raw micrographs (``nt2c_core.calibrate``) and simulate with them (what could not be
    estimated keeps the given value; see ``simulate/calibration.json``); calibration: instead,
    reuse the calibration.json of an earlier 'nt2c calibrate'; coarse_init: 'general' (the
    coarse model starts from the shipped general model, whose architecture it keeps; the default
    coarse settings are :data:`COARSE_TRANSFER`'s, a quarter of the from-scratch rate), 'none'
    (from scratch, as the paper; give coarse.lr 1e-3, :data:`COARSE`'s) or a model file; choose_model: score general,
    coarse and fine
    before denoising and use the best (``nt2c_core.selection``), else always the fine model;
    noise_model: 'gan' (the paper's WGAN-GP, trained in the gan stage) or 'patches' (the real
    noise patches tiled directly, ``nt2c_core.noise.real_patches``; the gan stage is skipped);
    mix_shipped: simulate the training pairs with a shipped structure mixed in with the data set's
    (apoferritin, or the proteasome when apoferritin is the data set's), half the particles each,
    so the coarse and fine models learn that particles differ instead of painting every particle
    like the data set's structure; the other shipped structure stays unseen for the model choice
    (:func:`training_structures`); density: 'given' (simulation.particles or concentration as
    set) or 'match' (the particle concentration counted on the general model's output of up to 4
    raw micrographs, :func:`nt2c_core.evaluation.picking.particle_concentration`, replaces it)."""

    raw: list[str]
    structures: list[str]
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    coarse: TrainConfig = field(default_factory=lambda: dataclasses.replace(COARSE_TRANSFER))
    extraction: ExtractionSettings = field(default_factory=lambda: dataclasses.replace(EXTRACTION))
    gan: GANConfig = field(default_factory=lambda: dataclasses.replace(GAN))
    fine: TrainConfig = field(default_factory=lambda: dataclasses.replace(FINE))
    tiles: TileSettings = field(default_factory=lambda: dataclasses.replace(TILES))
    min_noise_patches: int = MIN_NOISE_PATCHES
    noise_level: str = "real"
    device: str = "cpu"
    calibrate: bool = False
    calibration: str | None = None
    coarse_init: str = "general"
    choose_model: bool = True
    few_patches: str = "continue"
    noise_model: str = "patches"
    mix_shipped: bool = False
    density: str = "given"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["simulation"] = self.simulation.to_dict()
        return out

    def validate(self) -> "PipelineConfig":
        """Check every section's values (types and ranges) before any stage runs, naming a bad
        setting as it is written in the config file (``fine.steps``); inputs on disk are checked
        by :func:`check_inputs`."""
        from .device import check_device_name
        from .validation import check_types, require

        check_types(self, "")
        for key in ("raw", "structures"):
            value = getattr(self, key)
            require(
                isinstance(value, list) and value and all(isinstance(v, str) for v in value),
                key,
                "",
                value,
                "must be a non-empty list of paths",
            )
        self.simulation.validate()
        if self.simulation.count < 2:
            raise InputError("simulation.count: need at least 2 simulated micrographs (training and validation)")
        self.coarse.validate("coarse")
        self.fine.validate("fine")
        for name, train in (("coarse", self.coarse), ("fine", self.fine)):
            require(
                train.crop <= min(self.simulation.size),
                f"{name}.crop",
                "",
                train.crop,
                f"larger than the simulated micrographs ({self.simulation.size[0]} x {self.simulation.size[1]} px)",
            )
        # the particle diameter, when not given, comes from the atomic models (extraction_settings)
        diameter = self.extraction.particle_diameter
        dataclasses.replace(self.extraction, particle_diameter=1.0 if diameter is None else diameter).validate(
            "extraction"
        )
        self.gan.validate("gan")
        self.tiles.validate("tiles")
        require(
            self.noise_level in NOISE_LEVELS,
            "noise_level",
            "",
            self.noise_level,
            f"choose one of {', '.join(NOISE_LEVELS)}",
        )
        require(self.min_noise_patches >= 1, "min_noise_patches", "", self.min_noise_patches, "must be at least 1")
        require(
            self.few_patches in ("continue", "stop"), "few_patches", "", self.few_patches, "choose continue or stop"
        )
        require(
            self.noise_model in NOISE_MODELS,
            "noise_model",
            "",
            self.noise_model,
            f"choose one of {', '.join(NOISE_MODELS)}",
        )
        require(self.density in ("given", "match"), "density", "", self.density, "choose given or match")
        require(
            self.calibration is None or isinstance(self.calibration, str),
            "calibration",
            "",
            self.calibration,
            "path of a calibration.json",
        )
        require(
            isinstance(self.coarse_init, str)
            and (self.coarse_init in ("general", "none") or Path(self.coarse_init).is_file()),
            "coarse_init",
            "",
            self.coarse_init,
            "general, none or an existing model file",
        )
        if self.calibrate and self.calibration:
            raise InputError("calibrate and calibration: give one (calibrate anew, or reuse a calibration.json)")
        try:
            check_device_name(self.device)
        except InputError as exc:
            raise InputError(f"device: {exc}") from None
        return self

    @classmethod
    def from_dict(cls, data: dict) -> "PipelineConfig":
        return settings_from_dict(cls, data, "pipeline config")

    @classmethod
    def example(cls, preset: str = "cpu") -> "PipelineConfig":
        """A complete config that passes :meth:`validate`. 'cpu': U-Net width 24 and short
        training (about an hour on 2 cores for a few micrographs); 'gpu': width 48 (the paper's)
        and the longer budgets a GPU makes practical."""
        gpu = preset == "gpu"
        width, steps = (48, 4000) if gpu else (24, 1000)
        return cls(
            raw=["raw/*.mrc"],
            structures=["model.cif"],
            simulation=replace(TRAINING_SIMULATION, size=(512, 512), particles=20, count=256 if gpu else 64),
            coarse=replace(COARSE_TRANSFER, steps=steps, width=width, val_every=100, checkpoint_every=100),
            extraction=ExtractionSettings(),
            gan=GANConfig(iterations=4000 if gpu else 1000, batch_size=32 if gpu else 16),
            fine=replace(
                FINE, steps=steps // 2, width=width, crop=256 if gpu else 128, val_every=100, checkpoint_every=100
            ),
            device="auto",
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "PipelineConfig":
        from .io import read_json

        path = Path(path)
        data = read_json(path, "pipeline config")
        try:
            return settings_from_dict(cls, data, str(path))
        except (ValueError, TypeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a valid pipeline config ({exc})") from exc
