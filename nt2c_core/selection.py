"""Which denoiser to hand the user: general, coarse or fine, measured, never assumed.

A model trained on one structure can do better on that structure's simulation and still be worse
on the real data: it paints a flat background and erases what does not look like its training
structure (a broken particle, another conformation, an aggregate). So each candidate is scored
on two things at once:

- **held-out simulated pairs** (the training run's validation micrographs, never trained on):
  PSNR against the clean truth. Rewards denoising, punishes blur.
- **the real micrographs**, with no picks needed: the *low-pass agreement*, the correlation of
  the denoised and the raw micrograph after both are Gaussian low-passed with sigma = particle
  radius / 3, i.e. at the scale where the raw data still shows particles. A denoiser that removes
  or invents particle-sized structure disagrees with the raw image there; blurring does not, so
  this check guards against erasure and is never used alone.

Rule: the candidate with the best held-out PSNR among those whose low-pass agreement is no more
than ``tolerance`` below the general model's; the general model when none qualifies. The table
and the reason go into the run's report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from .metrics import psnr
from .pairs import PairSet

TOLERANCE = 0.005


@dataclass
class ModelScore:
    """held_out_psnr_db: mean PSNR on held-out simulated pairs; lowpass_agreement: mean
    correlation with the raw micrographs at the particle scale; per_micrograph: that
    correlation per real micrograph."""

    name: str
    held_out_psnr_db: float | None
    lowpass_agreement: float | None
    per_micrograph: dict[str, float]


def lowpass_agreement(raw: np.ndarray, denoised: np.ndarray, radius_px: float) -> float:
    """Correlation of raw and denoised after a Gaussian low-pass with sigma = radius / 3 [px]."""
    from scipy.ndimage import gaussian_filter

    sigma = max(radius_px / 3.0, 1.0)
    a = gaussian_filter(np.asarray(raw, np.float64), sigma)
    b = gaussian_filter(np.asarray(denoised, np.float64), sigma)
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def score_model(name: str, denoise, held_out: PairSet | None, real: Sequence[tuple[str, np.ndarray]],
                radius_px: float) -> ModelScore:
    """Score one denoiser (``denoise``: array -> array) on held-out pairs and real micrographs."""
    held = None
    if held_out is not None and len(held_out):
        held = float(np.mean([psnr(denoise(x), y) for x, y in zip(held_out.noisy, held_out.clean)]))
    per = {label: round(lowpass_agreement(image, denoise(image), radius_px), 4) for label, image in real}
    agreement = float(np.mean(list(per.values()))) if per else None
    return ModelScore(name, None if held is None else round(held, 3),
                      None if agreement is None else round(agreement, 4), per)


def choose_model(scores: Sequence[ModelScore], reference: str = "general",
                 tolerance: float = TOLERANCE) -> tuple[str, str]:
    """(chosen name, reason) by the rule in the module doc."""
    by_name = {s.name: s for s in scores}
    ref = by_name.get(reference)
    floor = None if ref is None or ref.lowpass_agreement is None else ref.lowpass_agreement - tolerance
    fair = [s for s in scores if floor is None or (s.lowpass_agreement is not None and s.lowpass_agreement >= floor)]
    rated = [s for s in fair if s.held_out_psnr_db is not None]
    if not rated:
        return reference, f"no candidate could be scored on held-out pairs; the {reference} model is used"
    best = max(rated, key=lambda s: s.held_out_psnr_db)
    dropped = [s.name for s in scores if s not in fair]
    reason = f"{best.name}: best held-out PSNR ({best.held_out_psnr_db:.2f} dB)"
    if floor is not None:
        reason += f" among models agreeing with the raw micrographs at the particle scale within {tolerance} of the "
        reason += f"{reference} model ({ref.lowpass_agreement:.4f})"
    if dropped:
        reason += f"; not eligible (they depart further from the raw data): {', '.join(dropped)}"
    return best.name, reason


def score_table(scores: Sequence[ModelScore], chosen: str) -> str:
    """The scores as a Markdown table (for run logs, reports and Scipion summaries)."""
    lines = ["| model | held-out PSNR (dB) | low-pass agreement with raw | chosen |", "|---|---|---|---|"]
    for s in scores:
        held = "-" if s.held_out_psnr_db is None else f"{s.held_out_psnr_db:.2f}"
        agree = "-" if s.lowpass_agreement is None else f"{s.lowpass_agreement:.4f}"
        lines.append(f"| {s.name} | {held} | {agree} | {'yes' if s.name == chosen else ''} |")
    return "\n".join(lines)


def as_dicts(scores: Sequence[ModelScore]) -> list[dict]:
    return [asdict(s) for s in scores]
