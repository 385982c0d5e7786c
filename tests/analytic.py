"""An analytic Gaussian-mixture "model": the exact optimal ε for data from a mixture of Gaussians.

Data: x0 ~ sum_c w_c N(m_c, diag(var)). At timestep t, x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) n, so under
class c, x_t ~ N(sqrt(ᾱ) m_c, ᾱ var + 1 - ᾱ) and
    E[x0 | x_t, c] = m_c + var sqrt(ᾱ) / (ᾱ var + 1 - ᾱ) (x_t - sqrt(ᾱ) m_c),
    ε*(x_t) = (x_t - sqrt(ᾱ) E[x0 | x_t]) / sqrt(1 - ᾱ),
with the class posterior weighting E[x0 | x_t, c]. A "prompt" picks the prior weights w: "A" and
"B" are the two classes, "" is the unconditional mixture. A condition also carries a "bias" (D,)
added to ε, zero for every prompt: an embedding with one degree of freedom per coordinate of ε,
which null-text inversion optimises (as it does a text encoder's states).
"""

from __future__ import annotations

import torch

from image_core.stable_diffusion.tiny import SD_SCHEDULER

SCHEDULER_CONFIG = SD_SCHEDULER  # the Stable Diffusion scheduler

PROMPTS = {"A": (1.0, 0.0), "B": (0.0, 1.0), "": (0.5, 0.5)}


class GaussianMixtureModel:
    """A ``LatentModel`` over (B, D) float64 latents with two classes."""

    scheduler_config = SCHEDULER_CONFIG
    device = torch.device("cpu")
    null_text_keys = ("bias",)

    def __init__(self, dim: int = 32, seed: int = 0, separation: float = 2.0, region: slice | None = None) -> None:
        """``region``: the coordinates where the classes differ (all by default); elsewhere both
        classes have the same mean, so an edit from A to B has nothing to change there."""
        from diffusers import DDIMScheduler

        g = torch.Generator().manual_seed(seed)
        direction = torch.randn(dim, generator=g, dtype=torch.float64)
        direction /= direction.norm() / dim**0.5
        if region is not None:
            inside = torch.zeros(dim, dtype=torch.bool)
            inside[region] = True
            direction = torch.where(inside, direction.sign() * direction.abs().clamp(min=0.5), 0.0)
        self.means = torch.stack([separation * direction, -separation * direction])  # (2, D)
        self.var = 0.2 + 0.8 * torch.rand(dim, generator=g, dtype=torch.float64)  # (D,)
        self.alphas_cumprod = DDIMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.to(torch.float64)
        self.calls = 0
        self.rows = 0

    def sample(self, cls: int, n: int, seed: int) -> torch.Tensor:
        """(n, D) draws from class ``cls``."""
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, self.means.shape[1], generator=g, dtype=torch.float64)
        return self.means[cls] + self.var.sqrt() * noise

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        weights = torch.tensor([PROMPTS[p] for p in prompts], dtype=torch.float64)
        return {"weights": weights, "bias": torch.zeros(len(prompts), self.means.shape[1], dtype=torch.float64)}

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        self.rows += x_t.shape[0]
        a = self.alphas_cumprod[t].unsqueeze(1)  # (B, 1)
        v = a * self.var + (1 - a)  # (B, D) per-class variance of x_t
        diff = x_t.unsqueeze(1) - a.sqrt().unsqueeze(1) * self.means  # (B, 2, D)
        loglik = -0.5 * (diff**2 / v.unsqueeze(1)).sum(-1)  # shared variance: log det cancels
        w = torch.softmax(cond["weights"].log() + loglik, dim=1)  # (B, 2)
        x0_c = self.means + (self.var * a.sqrt() / v).unsqueeze(1) * diff  # (B, 2, D)
        x0 = (w.unsqueeze(-1) * x0_c).sum(1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if "bias" not in cond else eps + cond["bias"]

    def fingerprint(self) -> str:
        return "gaussian-mixture"
