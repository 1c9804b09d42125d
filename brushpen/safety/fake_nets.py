"""The networks of the fake families added for issue 16, each chosen for the last layer it ends in.

A detector generalises to unseen generators by having seen many kinds of up-sampling, so each
network here differs from the others (and from `fake_models`' autoencoders and UNet) in how it
makes pixels:
- `DCGANGenerator`: noise -> image, every up-sampling a stride-2 transposed convolution
  (Radford et al. 2016), BatchNorm + ReLU, tanh out; `DCGANDiscriminator` is its critic.
- `ConvVAE`: a convolutional VAE with a reparameterised spatial latent whose decoder up-samples
  by bilinear interpolation followed by a convolution.
- `PixelShuffleSR`: super-resolution at the low resolution, ending in a convolution to 3*r*r
  channels and `nn.PixelShuffle(r)` (ESPCN/EDSR; one tail per scale as in MDSR).
- `InterpSR`: super-resolution that interpolates up first, then convolutions predict a
  residual over the interpolated image (SRCNN/VDSR).
The servable ones are diffusers `ModelMixin` + `ConfigMixin`, so `save_pretrained` and
`from_pretrained` just work. `bicubic_down` makes the SR networks' low-resolution inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from brushpen.errors import BadParameter


def _doublings(resolution: int) -> int:
    """How many x2 steps lie between 4x4 and `resolution` (a power of two, 8 or more)."""
    n = int(math.log2(resolution)) - 2 if resolution >= 8 else 0
    if n < 1 or 4 * 2 ** n != resolution:
        raise BadParameter(f"a DCGAN needs a power-of-two resolution of 8 or more, not {resolution}")
    return n


def _dcgan_init(m: nn.Module) -> None:
    # The DCGAN paper's initialisation: N(0, 0.02) weights, BatchNorm scales N(1, 0.02).
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(ModelMixin, ConfigMixin):
    """z -> 4x4 -> 8x8 -> ... -> `resolution`, up-sampled only by 4x4 stride-2 ConvTranspose2d,
    whose uneven kernel overlap leaves the checkerboard fingerprint of transposed convolutions."""

    @register_to_config
    def __init__(self, z_dim: int = 128, width: int = 32, resolution: int = 64):
        super().__init__()
        ups = _doublings(resolution)
        ch = [width * 2 ** i for i in reversed(range(ups))]   # 8w at 4x4 down to w before the last layer
        layers = [nn.ConvTranspose2d(z_dim, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU()]
        for c_in, c_out in zip(ch, ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1), nn.Tanh())
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """The mirror image: stride-2 4x4 convolutions with LeakyReLU (BatchNorm after the first),
    then a 4x4 convolution to one logit per image."""

    def __init__(self, width: int = 32, resolution: int = 64):
        super().__init__()
        ch = [width * 2 ** i for i in range(_doublings(resolution))]
        layers = [nn.Conv2d(3, ch[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(ch, ch[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Conv2d(ch[-1], 1, 4, 1, 0))
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


class ConvVAE(ModelMixin, ConfigMixin):
    """RGB -> a (latent x H/4 x W/4) Gaussian posterior -> RGB. The decoder up-samples by bilinear
    interpolation then a 3x3 convolution, twice: smooth, interpolation-shaped detail."""

    @register_to_config
    def __init__(self, width: int = 32, latent: int = 8):
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 2 * latent, 1))   # mean and log-variance
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(latent, 2 * w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * w, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 3, 3, padding=1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoded posterior sample, mu, logvar): z = mu + sigma * eps, the reparameterisation."""
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator).to(mu.device)
        return self.decoder(z), mu, logvar


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelShuffleSR(ModelMixin, ConfigMixin):
    """Low-resolution RGB -> features at that resolution -> conv to 3*r*r channels ->
    PixelShuffle(r): the sub-pixel last layer. The body is shared by the scales; each scale has
    its own tail."""

    @register_to_config
    def __init__(self, width: int = 32, blocks: int = 3, scales: tuple[int, ...] = (2, 4)):
        super().__init__()
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(blocks)])
        self.tails = nn.ModuleDict({f"x{r}": nn.Sequential(nn.Conv2d(width, 3 * r * r, 3, padding=1),
                                                           nn.PixelShuffle(r)) for r in scales})

    def forward(self, low: torch.Tensor, scale: int) -> torch.Tensor:
        if f"x{scale}" not in self.tails:
            raise BadParameter(f"this network up-samples by {list(self.config.scales)}, not {scale}")
        f = self.head(low)
        return self.tails[f"x{scale}"](f + self.body(f))


class InterpSR(ModelMixin, ConfigMixin):
    """Interpolate up by r (bilinear or nearest), then `depth` 3x3 convolutions at full resolution
    predict a residual over the interpolated image. Any scale works with the same weights."""

    @register_to_config
    def __init__(self, width: int = 32, depth: int = 5, mode: str = "bilinear"):
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise BadParameter("mode must be bilinear or nearest")
        layers = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, low: torch.Tensor, scale: int) -> torch.Tensor:
        corners = {} if self.config.mode == "nearest" else {"align_corners": False}
        up = F.interpolate(low, scale_factor=scale, mode=self.config.mode, **corners)
        return up + self.body(up)


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """[-1, 1] NCHW -> its antialiased bicubic down-sample by `scale` (the SR networks' input)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
