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

from image_core.adapters import eps_from_prediction
from image_core.stable_diffusion.tiny import SD_SCHEDULER

SCHEDULER_CONFIG = SD_SCHEDULER  # the Stable Diffusion scheduler
EDM_CONFIG = {  # Stable Audio Open's scheduler (its model card's scheduler_config.json)
    "_class_name": "CosineDPMSolverMultistepScheduler", "sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0,
    "sigma_schedule": "exponential", "num_train_timesteps": 1000, "solver_order": 2, "prediction_type": "v_prediction",
    "rho": 7.0, "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False, "final_sigmas_type": "zero",
}  # fmt: skip
FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
CONFIGS = {"vp": SCHEDULER_CONFIG, "edm": EDM_CONFIG, "flow": FLOW_CONFIG}
PREDICTION = {"vp": "epsilon", "edm": "v_prediction", "flow": "flow"}  # what the model outputs on each path


def path_coefficients(path: str, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, σ_t) (B,) float64 of the model's time input t on each path (written from the path's
    definition: VP x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε; EDM x_edm = x0 + s ε scaled by 1 / sqrt(1 + s²);
    flow x_t = (1 - t) x0 + t ε)."""
    if path == "vp":
        a = alphas_cumprod[t]
        return a.sqrt(), (1 - a).sqrt()
    t = t.to(torch.float64)
    if path == "edm":
        return 1 / (1 + t**2).sqrt(), t / (1 + t**2).sqrt()
    return 1 - t, t

PROMPTS = {"A": (1.0, 0.0), "B": (0.0, 1.0), "": (0.5, 0.5)}


class GaussianMixtureModel:
    """A ``LatentModel`` over (B, D) float64 latents with two classes."""

    scheduler_config: dict = SCHEDULER_CONFIG
    device = torch.device("cpu")
    null_text_keys = ("bias",)

    def __init__(self, dim: int = 32, seed: int = 0, separation: float = 2.0, region: slice | None = None, path: str = "vp") -> None:
        """``region``: the coordinates where the classes differ (all by default); elsewhere both
        classes have the same mean, so an edit from A to B has nothing to change there.
        ``path``: the Gaussian path and scheduler ("vp", "edm" or "flow"); off the VP path the model
        outputs that path's native prediction (v, flow velocity), converted to ε as a model
        adapter does."""
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
        self.path = path
        self.scheduler_config = CONFIGS[path]
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
        if self.path != "vp":
            return self._predict_on_path(x_t, t, cond)
        a = self.alphas_cumprod[t].unsqueeze(1)  # (B, 1)
        v = a * self.var + (1 - a)  # (B, D) per-class variance of x_t
        diff = x_t.unsqueeze(1) - a.sqrt().unsqueeze(1) * self.means  # (B, 2, D)
        loglik = -0.5 * (diff**2 / v.unsqueeze(1)).sum(-1)  # shared variance: log det cancels
        w = torch.softmax(cond["weights"].log() + loglik, dim=1)  # (B, 2)
        x0_c = self.means + (self.var * a.sqrt() / v).unsqueeze(1) * diff  # (B, 2, D)
        x0 = (w.unsqueeze(-1) * x0_c).sum(1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if "bias" not in cond else eps + cond["bias"]

    def posterior_mean(self, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] (B, D) for x_t = α x0 + σ n, α and σ (B, 1), prior class weights (B, 2)."""
        v = alpha**2 * self.var + sigma**2  # (B, D) per-class variance of x_t
        diff = x_t.unsqueeze(1) - alpha.unsqueeze(1) * self.means  # (B, 2, D)
        loglik = -0.5 * (diff**2 / v.unsqueeze(1)).sum(-1)
        w = torch.softmax(weights.log() + loglik, dim=1)
        x0_c = self.means + (self.var * alpha / v).unsqueeze(1) * diff
        return (w.unsqueeze(-1) * x0_c).sum(1)

    def _predict_on_path(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        alpha, sigma = path_coefficients(self.path, t, self.alphas_cumprod)
        a, s = alpha.unsqueeze(1), sigma.unsqueeze(1)
        x0 = self.posterior_mean(x_t, a, s, cond["weights"])
        eps = (x_t - a * x0) / s
        native = {"edm": a * eps - s * x0, "flow": eps - x0}[self.path]  # v; the flow velocity
        eps = eps_from_prediction(native, x_t, alpha, sigma, PREDICTION[self.path])
        return eps if "bias" not in cond else eps + cond["bias"]

    def fingerprint(self) -> str:
        return "gaussian-mixture" if self.path == "vp" else f"gaussian-mixture-{self.path}"
