"""Contrast-guided noise and signal re-weighting (NT2C paper section 2.2.3, eq. 4).

For a simulated pair (S clean signal, X simulated noisy) and a synthesized real-noise patch V,
eq. 4 fits X ~ alpha S + beta V + gamma by least squares (:func:`fit_coefficients`, closed form,
batched). But V is an independent noise draw, so the fitted beta comes out near 0: least squares
cannot set the noise level. We therefore fit alpha and gamma (the signal's contrast and offset in
X, whose units are the z-scored micrograph, as the denoiser sees it) and choose beta on purpose:

- ``level="real"`` (default): beta = 1. The generator reproduces real background patches in the
  real micrographs' z-scored units, so the new pair carries the *real* noise level next to the
  simulated signal's contrast. Real data usually hold more noise than the simulation (detector
  and specimen effects the simulator lacks); training at the real level is what lets the fine
  model remove it.
- ``level="simulated"``: beta = sqrt(var(X - alpha S - gamma) / var(V)), the simulated residual
  variance: the pair keeps the simulation's SNR and only the noise texture changes.

Measured on the demo data (PSNR vs truth, 6 micrographs): coarse 29.31 dB; fine with the first
GAN (BatchNorm, no spectral term) 29.02 (simulated level) / 29.05 (real level); with the current
GAN 29.30 (300 iterations) / 29.38 (1000 iterations, the demo's), real level; with the extracted
real background patches themselves 29.44; coarse trained 400 steps more without transfer 29.34. With per-micrograph
z-scoring an excess of white
noise in the real data is not transferable (the level is relative to the whole micrograph):
coarse 29.00 / fine 28.99 dB with +50 % noise variance.

The new pair is input Y = alpha S + beta (V - mean V) + gamma, target alpha S + gamma.
"""

from __future__ import annotations

import torch

from ..settings import NOISE_LEVELS


def fit_coefficients(s: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Least-squares (alpha, beta, gamma) of X ~ alpha S + beta V + gamma per image of a batch
    (B, H, W) -> (B, 3), from the 3 x 3 normal equations (float64)."""
    b = s.shape[0]
    basis = torch.stack([s.reshape(b, -1), v.reshape(b, -1), torch.ones_like(s).reshape(b, -1)], 1).double()
    gram = basis @ basis.transpose(1, 2)
    rhs = basis @ x.reshape(b, -1, 1).double()
    return torch.linalg.solve(gram, rhs)[..., 0]


def fit_signal(s: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (alpha, gamma), each (B,), of X ~ alpha S + gamma per image."""
    b = s.shape[0]
    sf, xf = s.reshape(b, -1).double(), x.reshape(b, -1).double()
    sc = sf - sf.mean(1, keepdim=True)
    alpha = (sc * (xf - xf.mean(1, keepdim=True))).sum(1) / (sc * sc).sum(1).clamp_min(1e-12)
    gamma = xf.mean(1) - alpha * sf.mean(1)
    return alpha, gamma


LEVELS = NOISE_LEVELS


def reweight(
    s: torch.Tensor, v: torch.Tensor, x: torch.Tensor, level: str = "real"
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(new noisy input Y, target alpha S + gamma, coefficients) for batches (B, H, W) or
    (B, 1, H, W); ``level`` chooses the noise weight beta (module docstring)."""
    if level not in LEVELS:
        raise ValueError(f"noise level {level!r}: choose one of {LEVELS}")
    shape = s.shape
    s3, v3, x3 = (t.reshape(shape[0], -1) for t in (s, v, x))
    alpha, gamma = fit_signal(s3, x3)
    signal = alpha[:, None] * s3.double() + gamma[:, None]
    if level == "real":
        beta = torch.ones_like(alpha)
    else:
        residual_var = (x3.double() - signal).var(1)
        beta = torch.sqrt(residual_var / v3.double().var(1).clamp_min(1e-12))
    noisy = signal + beta[:, None] * (v3.double() - v3.double().mean(1, keepdim=True))
    coeffs = {"alpha": alpha, "beta": beta, "gamma": gamma}
    return noisy.float().reshape(shape), signal.float().reshape(shape), coeffs


class NoiseTransfer:
    """Batch transform for fine training: replaces the simulated noise of each (X, S) crop with
    fresh synthesized real noise, re-weighted as above. Noise for batch ``key`` is drawn from the
    generator seeded by (seed, key), so a resumed training draws the same noise."""

    def __init__(self, generator, seed: int = 0, device: str | torch.device = "cpu", level: str = "real"):
        self.generator = generator.to(device).eval()
        self.seed = seed
        self.device = torch.device(device)
        self.level = level

    def __call__(self, x, y, key: int):
        """(Y, target) numpy batches (B, 1, H, W) from simulated noisy ``x`` and clean ``y``."""
        b, _, h, w = x.shape
        v = self.generator.sample(b, (h, w), self.seed * 1_000_003 + key, self.device).cpu()
        noisy, target, _ = reweight(torch.from_numpy(y), v, torch.from_numpy(x), self.level)
        return noisy.numpy(), target.numpy()
