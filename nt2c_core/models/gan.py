"""WGAN-GP noise synthesizer (NT2C paper section 2.1.2, Fig. 3).

Generator: a latent map z (latent x s x s, standard normal) -> a 3x3 conv, then five stride-2
4x4 transposed convolutions (six layers in all, as in the paper) with feature normalization +
LeakyReLU, to a noise patch of 32 s x 32 s px. Being fully convolutional, the same generator makes patches of the
training size (d = 32 s) or larger ones, with stationary statistics and no tiling seams. Each
up-sampling block also receives a fresh per-pixel noise channel (noise injection), so the fine,
high-frequency texture of detector and shot noise is easy to learn. Output is linear (no tanh):
patches are z-scored micrograph units, whose tails would not fit tanh's range.

Critic: five stride-2 4x4 convolutions with LeakyReLU(0.2), then a 3x3 conv to a score map
averaged to one score per patch. No BatchNorm in the critic: WGAN-GP's authors (Gulrajani et al.
2017) advise against it because the gradient penalty is per sample and BatchNorm couples the
samples of a batch. In the generator the paper's BatchNorm is replaced by pixel-wise feature
normalization (Karras et al. 2018, ProGAN): BatchNorm made the output depend on batch statistics,
so patches sampled in eval mode (running statistics) carried 15-20 % more power than the patches
trained in batch mode, an error as large as the real-vs-simulated noise gap noise transfer is
meant to correct. Pixel norm normalizes each pixel's feature vector on its own: the same output
in training and sampling, at any batch size and patch size.
"""

from __future__ import annotations

import torch
from torch import nn

UPSAMPLINGS = 5
SCALE = 2**UPSAMPLINGS  # output px per latent px


class PixelNorm(nn.Module):
    """Scale each pixel's feature vector to unit root mean square (no batch statistics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class NoisyUp(nn.Module):
    """Transposed conv (x2) on features plus one injected noise channel, pixel norm, LeakyReLU."""

    def __init__(self, cin: int, cout: int, final: bool = False):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin + 1, cout, 4, stride=2, padding=1)
        self.post = nn.Identity() if final else nn.Sequential(PixelNorm(), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[-2:], device=x.device, dtype=x.dtype, generator=generator)
        return self.post(self.conv(torch.cat([x, noise], 1)))


class NoiseGenerator(nn.Module):
    """z (N, latent, s, s) -> noise patches (N, 1, 32 s, 32 s)."""

    def __init__(self, latent: int = 64, width: int = 32):
        super().__init__()
        self.config = {"name": "noise-generator", "latent": latent, "width": width}
        self.size_multiple = SCALE
        self.latent = latent
        chans = [width * 2 ** min(i, 3) for i in range(UPSAMPLINGS, 0, -1)]  # e.g. 256, 256, 128, 64, 32
        self.stem = nn.Sequential(nn.Conv2d(latent, chans[0], 3, padding=1), PixelNorm(), nn.LeakyReLU(0.2))
        ups = [NoisyUp(chans[i], chans[i + 1]) for i in range(UPSAMPLINGS - 1)]
        self.ups = nn.ModuleList(ups + [NoisyUp(chans[-1], 1, final=True)])

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.stem(z)
        for up in self.ups:
            x = up(x, generator)
        return x

    @torch.no_grad()
    def sample(self, count: int, size: int | tuple[int, int], seed: int, device="cpu") -> torch.Tensor:
        """``count`` patches of ``size`` px (rounded up to a multiple of 32, then cropped), seeded."""
        h, w = (size, size) if isinstance(size, int) else size
        gen = torch.Generator(device=device).manual_seed(int(seed))
        sh, sw = -(-h // SCALE), -(-w // SCALE)
        z = torch.randn(count, self.latent, sh, sw, generator=gen, device=device)
        was_training = self.training
        self.eval()
        out = self(z, gen)[..., :h, :w]
        self.train(was_training)
        return out


class Critic(nn.Module):
    """Noise patch (N, 1, H, W) -> Wasserstein critic score (N,)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"name": "noise-critic", "width": width}
        layers: list[nn.Module] = []
        cin = 1
        for i in range(UPSAMPLINGS):
            cout = width * 2 ** min(i, 3)
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean((1, 2, 3))


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mean over samples of (||grad_x D(x_hat)||_2 - 1)^2 with x_hat on random real-fake segments;
    the norm is taken per sample over all its pixels (not per pixel)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
