"""NMSG's 3-D U-Net: a Topaz-style max-pool U-Net on volumes.

Three max-pool levels and nearest-upsampling skips, LeakyReLU(0.1), no normalization layers.
``residual``: output = input + correction (the authors' formulation; what model files without the
key were trained with), else the network's output itself (NMSG's default: a residual
network starts at the identity, and single-volume training often stays near it for most of its
budget; see ``benchmarks/results/*-tomo-residual-*.json``). ``width`` scales every layer (48
with a 7³ first kernel is the authors'; 16 with 5³ is our CPU default, about 40x cheaper). Input
(N, 1, D, H, W); any size: reflect-padded to a multiple of 8 inside ``forward`` and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MULTIPLE = 8  # 2^3: three poolings


def _block(cin: int, cout: int, kernel: int = 3, convs: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        conv = nn.Conv3d(cin if i == 0 else cout, cout, kernel, padding=kernel // 2)
        layers += [conv, nn.LeakyReLU(0.1, inplace=True)]  # in place: one full-size activation less
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """3-D U-Net, residual or direct (registered as ``unet3d`` in :mod:`nt2c_core.models.registry`)."""

    def __init__(self, width: int = 16, first_kernel: int = 5, residual: bool = True):
        super().__init__()
        w, w2 = width, 2 * width
        self.residual = residual
        self.config = {"name": "unet3d", "width": width, "first_kernel": first_kernel, "residual": residual}
        self.size_multiple = MULTIPLE
        self.enc = nn.ModuleList([_block(1, w, first_kernel), _block(w, w), _block(w, w)])
        self.bottom = _block(w, w)
        self.dec = nn.ModuleList([_block(w2, w2, convs=2), _block(w2 + w, w2, convs=2)])
        self.head = nn.Sequential(_block(w2 + 1, w, convs=2), nn.Conv3d(w, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[-3:]
        pads = [(-n) % MULTIPLE for n in shape]
        padded = x
        if any(pads):
            mode = "reflect" if all(p < n for p, n in zip(pads, shape)) else "replicate"
            padded = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode=mode)
        skips = [padded]
        out = padded
        for block in self.enc:
            out = F.max_pool3d(block(out), 2)
            skips.append(out)
        out = self.bottom(skips.pop())
        for block in self.dec:
            skip = skips.pop()
            out = block(torch.cat([F.interpolate(out, size=skip.shape[-3:], mode="nearest"), skip], 1))
        skip = skips.pop()
        out = self.head(torch.cat([F.interpolate(out, size=skip.shape[-3:], mode="nearest"), skip], 1))
        if self.residual:
            out = padded + out
        return out[..., : shape[0], : shape[1], : shape[2]]
