"""Figures written next to results (PNG, Agg backend, written atomically): one place for
plotting, so the modules that compute things never import matplotlib.

- :func:`loss_curve`: a denoiser's training loss and validation PSNR (``MODEL.loss.png``).
- :func:`gan_losses`, :func:`noise_samples`: the noise GAN's losses and real vs generated patches.
- :func:`draw_overlay`, :func:`noise_overlay`: background tiles outlined on a micrograph.
- :func:`frc_and_psnr`: ``nt2c evaluate``'s FRC curves and PSNR per file.
- :func:`panels`: images side by side with one contrast stretch each (the demo's before/after).
- :func:`plot_comparison`: real vs simulated spectra before and after calibration.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (its folder made if needed) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    return path


def loss_curve(path: str | os.PathLike, log: list[dict]) -> Path | None:
    """Training L2 loss (log scale) and validation PSNR [dB] against step."""
    if not log:
        return None
    plt = _pyplot()
    steps = [r["step"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(steps, [r["loss"] for r in log], color="C0")
    ax.set_xlabel("step")
    ax.set_ylabel("training L2 loss", color="C0")
    if any(r["val_psnr"] is not None for r in log):
        ax2 = ax.twinx()
        ax2.plot(steps, [r["val_psnr"] for r in log], color="C1")
        ax2.set_ylabel("validation PSNR (dB)", color="C1")
    fig.tight_layout()
    return save_figure(fig, path)


def gan_losses(path: str | os.PathLike, log: list[dict]) -> Path | None:
    """The critic's Wasserstein estimate, the gradient penalty and the spectral term per iteration."""
    if not log:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["iteration"] for r in log]
    ax.plot(steps, [r["wasserstein"] for r in log], label="critic's Wasserstein estimate")
    ax.plot(steps, [r["gradient_penalty"] for r in log], label="gradient penalty")
    ax.plot(steps, [r.get("spectral_loss", np.nan) for r in log], label="spectral term")
    ax.set_xlabel("generator iteration")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def noise_samples(path: str | os.PathLike, real: np.ndarray, fake: np.ndarray) -> Path:
    """A row of real noise patches over a row of generated ones, same contrast stretch."""
    plt = _pyplot()
    count = len(fake)
    rows = [real[:count], fake]
    lo, hi = np.percentile(np.concatenate([r.ravel() for r in rows]), (1, 99))
    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.6), squeeze=False)
    for r, (label, images) in enumerate(zip(("real", "generated"), rows)):
        for c in range(count):
            ax = axes[r, c]
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=lo, vmax=hi)
            ax.axis("off")
        axes[r, 0].set_title(label, fontsize=9, loc="left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def draw_overlay(ax, raw: np.ndarray, origins: np.ndarray, patch: int, title: str) -> None:
    """Draw the (low-passed) raw micrograph with ``patch`` px tiles at ``origins`` (y, x) outlined."""
    from matplotlib.patches import Rectangle
    from scipy.ndimage import gaussian_filter

    shown = gaussian_filter(raw.astype(np.float32), max(raw.shape) / 512)
    lo, hi = np.percentile(shown, (1, 99))
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi)
    for y, x in origins:
        ax.add_patch(Rectangle((x, y), patch, patch, fill=False, edgecolor="lime", lw=0.8))
    ax.set_title(title)
    ax.axis("off")


def noise_overlay(path: str | os.PathLike, raw: np.ndarray, origins: np.ndarray, patch: int, title: str) -> Path:
    """PNG of :func:`draw_overlay`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6 * raw.shape[0] / raw.shape[1]))
    draw_overlay(ax, raw, origins, patch, title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def frc_and_psnr(path: str | os.PathLike, per_file: dict, curves: dict) -> Path:
    """FRC curves against the truth (0.5 and 0.143 marked) and the PSNR of each file."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, curve in curves.items():
        ax1.plot(curve.frequency, curve.correlation, lw=0.8, label=name if len(curves) <= 8 else None)
    for level in (0.5, 0.143):
        ax1.axhline(level, color="grey", ls=":", lw=0.8)
    ax1.set_xlabel("spatial frequency (1/Å)")
    ax1.set_ylabel("FRC with ground truth")
    if len(curves) <= 8:
        ax1.legend(fontsize=7)
    names = list(per_file)
    ax2.bar(range(len(names)), [per_file[n]["psnr_db"] for n in names])
    ax2.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax2.set_ylabel("PSNR (dB)")
    fig.tight_layout()
    return save_figure(fig, path)


def panels(path: str | os.PathLike, images: list[tuple[str, np.ndarray]], title: str = "") -> Path:
    """Images side by side, each stretched to its 1-99 % range, titled."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4.4), squeeze=False)
    for ax, (label, image) in zip(axes[0], images):
        lo, hi = np.percentile(image, (1, 99))
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(label)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=70)


def plot_comparison(path: str | os.PathLike, before: dict, after: dict) -> Path:
    """PNG: real vs simulated spectra, before and after calibration, whole and background."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, part in zip(axes, ("whole", "background")):
        k = np.asarray(before[part]["k"])
        ax.semilogy(k, before[part]["real"], "k", lw=1.2, label="real")
        ax.semilogy(
            k, before[part]["simulated"], "C1", lw=0.8, label=f"simulated, given ({before[part]['log_distance']:.3f})"
        )
        ax.semilogy(
            k,
            after[part]["simulated"],
            "C0",
            lw=0.8,
            label=f"simulated, calibrated ({after[part]['log_distance']:.3f})",
        )
        ax.set_xlabel("spatial frequency [1/Å]")
        ax.set_ylabel("power (contrast²)")
        ax.set_title(f"{part}: mean |log10 ratio| in brackets")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
