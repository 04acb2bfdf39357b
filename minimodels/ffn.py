"""The dense SwiGLU feed-forward layer (Shazeer 2020), DeepSeek's `MLP`.

FFN(x) = w2(silu(w1 x) ⊙ w3 x): a gated hidden layer of width inter_dim. DeepSeekMoE's experts are the same
module with a smaller width (lesson 07). Taught in lessons/01_baseline_gpt.ipynb.
"""

import torch.nn.functional as F
from torch import Tensor, nn


class FeedForward(nn.Module):
    """SwiGLU MLP.  (B, T, D) -> (B, T, D)"""

    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)  # gate projection
        self.w2 = nn.Linear(inter_dim, dim, bias=False)  # down projection
        self.w3 = nn.Linear(dim, inter_dim, bias=False)  # up projection

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))  # hidden (B, T, inter_dim)
