"""The NT2C denoising U-Net (paper Fig. 2; the authors' Topaz-derived topology).

Five max-pool down blocks and five nearest-upsampling up blocks with skip connections; the last
level concatenates the raw input. LeakyReLU(0.1), no normalization layers, linear output, trained
with L2. ``width`` scales every layer (48 is the paper's; 24 is a fast variant). Any input size:
the input is reflect-padded to a multiple of 32 inside ``forward`` and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MULTIPLE = 32  # 2^5: five poolings


def _conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


def _block(*convs: nn.Conv2d) -> nn.Sequential:
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net denoiser mapping a normalized micrograph (N, 1, H, W) to its clean estimate
    (registered as ``unet`` in :mod:`nt2c_core.models.registry`)."""

    def __init__(self, width: int = 48, first_kernel: int = 11):
        super().__init__()
        w, w2 = width, 2 * width
        self.config = {"name": "unet", "width": width, "first_kernel": first_kernel}
        self.size_multiple = MULTIPLE
        self.enc = nn.ModuleList([_block(_conv(1, w, first_kernel))] + [_block(_conv(w, w)) for _ in range(4)])
        self.bottom = _block(_conv(w, w))
        self.dec = nn.ModuleList(
            [_block(_conv(w2, w2), _conv(w2, w2))] + [_block(_conv(w2 + w, w2), _conv(w2, w2)) for _ in range(3)]
        )
        f1, f2 = round(4 * w / 3), round(2 * w / 3)
        self.head = nn.Sequential(_block(_conv(w2 + 1, f1), _conv(f1, f2)), _conv(f2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, MULTIPLE)
        skips = [x]
        out = x
        for block in self.enc:
            out = F.max_pool2d(block(out), 2)
            skips.append(out)
        out = self.bottom(skips.pop())
        for block in self.dec:
            skip = skips.pop()
            out = block(torch.cat([F.interpolate(out, size=skip.shape[-2:], mode="nearest"), skip], 1))
        skip = skips.pop()
        out = self.head(torch.cat([F.interpolate(out, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return out[..., :h, :w]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dims at the bottom/right up to a multiple (reflect, or replicate when too small)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
