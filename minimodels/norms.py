"""RMSNorm (Zhang & Sennrich 2019), the normalisation DeepSeek uses everywhere.

Scales each vector by the reciprocal of its root-mean-square, then by a learned per-channel gain; no mean
subtraction and no bias. Taught in lessons/01_baseline_gpt.ipynb.
"""

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) * weight.  (..., D) -> (..., D)"""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # normalise in fp32 so bf16 activations don't lose the small mean-square
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)
