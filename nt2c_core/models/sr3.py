"""The SR3 particle restorer's networks (registered as ``sr3-restorer``).

:class:`SR3Restorer` holds two U-Nets of the same residual-block design (GroupNorm, SiLU, 3x3
convolutions, average-pool down, nearest up, skip concatenation; channels width, 2 width,
2 width, 4 width, ... per level):

- ``diffusion``: SR3's denoiser (Saharia et al. 2022): input the noisy particle image (the
  condition) and the diffusion state x_t as two channels, conditioned on the noise level
  sqrt(gamma) through a sinusoidal embedding that scales and shifts every block (FiLM);
  output v = sqrt(gamma) eps - sqrt(1 - gamma) x0 (the "v" parameterization: stable at both ends
  of the schedule, where predicting eps or x0 alone is ill-conditioned).
- ``refine``: the light post-processing U-Net (input: the diffusion output and the noisy image;
  output: a correction added to the diffusion output). Its last convolution starts at zero, so an
  untrained ``refine`` is the identity and a model trained without post-processing restores
  exactly as its diffusion part.

Any image size: inputs are reflect-padded to a multiple of 2^(levels - 1) and cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU, a 1x1 skip when the width changes, and
    (when ``emb_dim``) a FiLM scale/shift from the noise-level embedding after the first."""

    def __init__(self, cin: int, cout: int, emb_dim: int = 0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm2(self.conv1(F.silu(self.norm1(x))))
        if self.film is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class UNetCore(nn.Module):
    """``in_channels`` -> 1 channel U-Net of :class:`ResBlock` levels (optionally FiLM-conditioned)."""

    def __init__(self, in_channels: int, width: int, levels: int, emb_dim: int = 0):
        super().__init__()
        chans = [width * min(2 ** ((i + 1) // 2), 4) for i in range(levels)]  # w, 2w, 2w, 4w, 4w
        self.multiple = 2 ** (levels - 1)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        cin = width
        for c in chans:
            self.down.append(ResBlock(cin, c, emb_dim))
            cin = c
        self.middle = ResBlock(cin, cin, emb_dim)
        self.up = nn.ModuleList()
        for c in reversed(chans):
            self.up.append(ResBlock(cin + c, c, emb_dim))
            cin = c
        self.head = nn.Sequential(nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.Conv2d(cin, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        out = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            out = block(out, emb)
            skips.append(out)
            if i < len(self.down) - 1:
                out = F.avg_pool2d(out, 2)
        out = self.middle(out, emb)
        for block in self.up:
            skip = skips.pop()
            if out.shape[-2:] != skip.shape[-2:]:
                out = F.interpolate(out, size=skip.shape[-2:], mode="nearest")
            out = block(torch.cat([out, skip], 1), emb)
        return self.head(out)[..., :h, :w]


def noise_level_embedding(level: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of the continuous noise level sqrt(gamma) in [0, 1] (SR3)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    angles = 1000.0 * level.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class SR3Restorer(nn.Module):
    """The diffusion U-Net and the post-processing U-Net of the SR3 restorer (see module doc)."""

    def __init__(self, width: int = 32, levels: int = 3, refine_width: int = 16):
        super().__init__()
        self.config = {"name": "sr3-restorer", "width": width, "levels": levels, "refine_width": refine_width}
        self.size_multiple = 1
        emb = 4 * width
        self.emb_dim = width
        self.embed = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.diffusion = UNetCore(2, width, levels, emb)
        self.refine = UNetCore(2, refine_width, levels)
        last = self.refine.head[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def velocity(self, condition: torch.Tensor, state: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """v prediction for noisy images ``condition`` and diffusion states ``state`` (N, 1, H, W)
        at noise levels ``level`` = sqrt(gamma) (N,)."""
        emb = self.embed(noise_level_embedding(level, self.emb_dim))
        return self.diffusion(torch.cat([condition, state], 1), emb)

    def refined(self, restored: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """The post-processing: ``restored`` plus the refine network's correction."""
        return restored + self.refine(torch.cat([restored, condition], 1))

    def forward(self, condition: torch.Tensor, state: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return self.velocity(condition, state, level)
