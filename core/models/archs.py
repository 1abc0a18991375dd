"""Architectures of plain Gaussian denoisers that load from a safetensors file."""
from __future__ import annotations

import os

import torch
from torch import nn


class BFCNN(nn.Module):
    """Bias-free CNN denoiser (Mohan et al. 2020; Kadkhodaie & Simoncelli 2021).

    conv(C->K) + ReLU, then ``L-2`` x [conv(K->K), / running_sd, * gamma, ReLU],
    then conv(K->C); no additive constants anywhere, so the network is
    scale-equivariant and generalises across noise levels. Returns the noise
    residual (``denoised = y - net(y)``).
    """

    def __init__(self, channels: int = 3, features: int = 64, layers: int = 20, kernel: int = 3):
        super().__init__()
        pad = kernel // 2
        convs = [nn.Conv2d(channels, features, kernel, padding=pad, bias=False)]
        convs += [nn.Conv2d(features, features, kernel, padding=pad, bias=False) for _ in range(layers - 2)]
        convs += [nn.Conv2d(features, channels, kernel, padding=pad, bias=False)]
        self.conv_layers = nn.ModuleList(convs)
        self.running_sd = nn.ParameterList([nn.Parameter(torch.ones(1, features, 1, 1)) for _ in range(layers - 2)])
        self.gammas = nn.ParameterList([nn.Parameter(torch.ones(1, features, 1, 1)) for _ in range(layers - 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv_layers[0](x))
        for i in range(len(self.running_sd)):
            h = self.conv_layers[i + 1](h) / self.running_sd[i] * self.gammas[i]
            h = torch.relu(h)
        return self.conv_layers[-1](h)


def load_bfcnn(path: str | os.PathLike, device=None, dtype=torch.float32) -> BFCNN:
    """A :class:`BFCNN` with weights from ``path`` (architecture inferred from the tensors)."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"denoiser weights not found: {path}")
    sd = load_file(str(path))
    n = sum(1 for k in sd if k.startswith("conv_layers."))
    w0 = sd["conv_layers.0.weight"]
    net = BFCNN(channels=w0.shape[1], features=w0.shape[0], layers=n, kernel=w0.shape[-1])
    net.load_state_dict(sd)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)
