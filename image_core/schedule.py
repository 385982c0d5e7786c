"""The noise schedule as an immutable value: a Gaussian path x_t = α_t x0 + σ_t ε at the chosen times.

Every model the core serves noises its data along such a path; they differ only in α and σ:

==============  =====================================  ==========================================
path            α_t, σ_t                               models (diffusers scheduler config)
==============  =====================================  ==========================================
``"vp"``        sqrt(ᾱ_t), sqrt(1 - ᾱ_t)               SD, AudioLDM (DDPM/DDIM: ``alphas_cumprod``)
``"edm"``       1 / sqrt(1 + s²), s / sqrt(1 + s²)     Stable Audio Open (EDM's s = σ_edm; the
                                                       sampler's x_edm = x_t / α_t, VE form)
``"flow"``      1 - t, t                               rectified flow (``FlowMatchEulerDiscrete``)
==============  =====================================  ==========================================

The schedule stores the squares, so that the variance-preserving formulas keep the exact rounding
they have on the VP path.

Notation (code name -> paper symbol):

=====================  =========================================================
``timesteps[k]``       t_k of the N-step chain, descending (t_N ... t_1): the VP
                       path's int64 training timestep; EDM's noise level σ_edm;
                       the flow time t in [0, 1] (float64; the model adapter
                       maps them to its network's time input)
``alphas[k]``          α_t² (ᾱ_t on the VP path)
``variances[k]``       σ_t² (1 - ᾱ_t on the VP path)
``alphas_prev[k]``     α_s² of the step's predecessor s (t_{k+1}; after the last
                       timestep the scheduler's final value)
``variances_prev[k]``  σ_s²
``order``              1: the first-order step (DDPM / DDIM); 2: DPM-Solver++(2M)
                       (a multistep correction of x0_hat, see ``sampling``)
=====================  =========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError

PATHS = ("vp", "edm", "flow")
EDM_SCHEDULERS = ("CosineDPMSolverMultistepScheduler",)
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)


@dataclass(frozen=True)
class Schedule:
    """(α_t, σ_t) at the N timesteps of a sampling chain (as squares, float64).

    Attributes:
        timesteps: (N,) descending; the time the denoiser is called with: on the VP path int64,
            exactly those of ``DDIMScheduler.set_timesteps(N)``; on the EDM path the noise level
            σ_edm, on the flow path the flow time t (float64).
        alphas: (N,) α_t² at each timestep (ᾱ_t on the VP path).
        alphas_prev: (N,) α_s² at the next timestep of the chain; the last entry is the
            scheduler's final value (VP: ``alphas_cumprod[0]`` when ``set_alpha_to_one`` is False,
            else 1; EDM and flow: 1, the data).
        num_train_timesteps: T of the training process.
        variances: (N,) σ_t²; None: 1 - α_t² (a variance-preserving path).
        variances_prev: (N,) σ_s²; None: 1 - α_s².
        path: one of ``PATHS``.
        order: 1 (first-order steps) or 2 (DPM-Solver++(2M) where ``weights`` is not zero).
        weights: (N,) float64 multistep weights w_k (x0_hat + w_k (x0_hat - x0_hat of the step
            before); zero for first-order steps); None: all zero.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    num_train_timesteps: int
    variances: torch.Tensor = None  # type: ignore[assignment]
    variances_prev: torch.Tensor = None  # type: ignore[assignment]
    path: str = "vp"
    order: int = 1
    weights: torch.Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}: use one of {PATHS}")
        if self.variances is None:
            object.__setattr__(self, "variances", 1 - self.alphas)
        if self.variances_prev is None:
            object.__setattr__(self, "variances_prev", 1 - self.alphas_prev)
        if self.weights is None:
            object.__setattr__(self, "weights", torch.zeros(len(self.timesteps), dtype=torch.float64))

    # ------------------------------------------------------------------------------ constructors

    @classmethod
    def from_config(cls, config: Mapping[str, Any], num_steps: int) -> Schedule:
        """The schedule of ``num_steps`` steps for a diffusers scheduler config.

        A ``CosineDPMSolverMultistepScheduler`` config (Stable Audio Open) gives the EDM path with
        that scheduler's σ and its solver order; a ``FlowMatchEulerDiscreteScheduler`` config the
        rectified-flow path; any other (DDPM, DDIM, PNDM...) the VP path with the timesteps of
        ``DDIMScheduler`` for the same config. The predecessor of a step is the next timestep of
        the chain (on the VP path identical to DDIM's ``t - T // N`` for "leading" spacing, the
        spacing of the SD and AudioLDM configs).
        """
        kind = path_of(config)
        most = cls.max_steps(config)
        if not 1 <= num_steps <= most:
            raise InputError(f"steps must be between 1 and {most} for this model, got {num_steps}")
        if kind == "edm":
            return _edm_from_config(config, num_steps)
        if kind == "flow":
            return _flow_from_config(config, num_steps)
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(dict(config))
        T = int(scheduler.config.num_train_timesteps)
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps.to(torch.int64).clone()
        alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        final = torch.tensor([float(scheduler.final_alpha_cumprod)], dtype=torch.float64)
        alphas = alphas_cumprod[timesteps]
        return cls(timesteps, alphas, torch.cat([alphas[1:], final]), T)

    @classmethod
    def edm(cls, sigmas: torch.Tensor, order: int = 1, final_first_order: bool = True, num_train_timesteps: int = 1000) -> Schedule:
        """The EDM path at EDM noise levels ``sigmas`` (N + 1,) descending (the last the final
        level, 0 for the data); the timesteps are the first N levels.

        α² = 1 / (1 + s²), σ² = s² / (1 + s²); with ``order`` 2 every step but the run's first (and
        the chain's last where ``final_first_order``) is a DPM-Solver++(2M) midpoint step.
        """
        s = sigmas.to(torch.float64)
        alpha2 = 1 / (1 + s**2)
        var = s**2 / (1 + s**2)
        weights = _midpoint_weights(_log_snr(alpha2, var), order, final_first_order)
        return cls(s[:-1].clone(), alpha2[:-1], alpha2[1:], num_train_timesteps, var[:-1], var[1:], "edm", order, weights)

    @classmethod
    def flow(cls, times: torch.Tensor, num_train_timesteps: int = 1000) -> Schedule:
        """The rectified-flow path at flow times ``times`` (N + 1,) in [0, 1], descending (the last
        the final time, 0 for the data): α = 1 - t, σ = t; the timesteps are the first N times."""
        t = times.to(torch.float64)
        alpha2, var = (1 - t) ** 2, t**2
        return cls(t[:-1].clone(), alpha2[:-1], alpha2[1:], num_train_timesteps, var[:-1], var[1:], "flow")

    @staticmethod
    def max_steps(config: Mapping[str, Any]) -> int:
        """The most steps of a chain: on the VP path those whose timesteps stay below T
        (T - steps_offset for "leading" spacing, the SD and AudioLDM configs: 999; T otherwise);
        T on the other paths."""
        if path_of(config) != "vp":
            return int(config.get("num_train_timesteps", 1000))
        from diffusers import DDIMScheduler

        return _max_steps(DDIMScheduler.from_config(dict(config)).config)

    # ------------------------------------------------------------------------------ views

    @property
    def num_steps(self) -> int:
        """N, the number of steps of the full chain."""
        return len(self.timesteps)

    @property
    def alpha(self) -> torch.Tensor:
        """(N,) α_t."""
        return self.alphas.sqrt()

    @property
    def sigma(self) -> torch.Tensor:
        """(N,) σ_t."""
        return self.variances.sqrt()

    def times_like(self, like: torch.Tensor) -> torch.Tensor:
        """(N,) the timesteps on ``like``'s device (continuous ones in its dtype: MPS has no float64)."""
        dtype = like.dtype if self.timesteps.is_floating_point() else self.timesteps.dtype
        return self.timesteps.to(like.device, dtype)

    def last(self, t_start: int) -> range:
        """Indices of the last ``t_start`` steps: the ones an edit that starts at t_start runs."""
        if not 1 <= t_start <= self.num_steps:
            raise InputError(f"tstart must be between 1 and steps ({self.num_steps}), got {t_start}")
        if t_start == self.num_steps and float(self.alphas[0]) == 0:
            raise InputError(f"the chain's first step is pure noise (α = 0) on this path: use a tstart below {self.num_steps}")
        return range(self.num_steps - t_start, self.num_steps)


def path_of(config: Mapping[str, Any]) -> str:
    """The path of a diffusers scheduler config: "edm", "flow" or "vp" (see the module table)."""
    name = config.get("_class_name")
    if name in EDM_SCHEDULERS or (name is None and "sigma_data" in config and "sigma_max" in config):
        return "edm"
    if name in FLOW_SCHEDULERS or (name is None and "shift" in config and "use_dynamic_shifting" in config):
        return "flow"
    return "vp"


def _log_snr(alpha2: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """λ = log(α / σ) (+inf where σ is zero)."""
    return 0.5 * (alpha2.log() - var.log())


def _midpoint_weights(lam: torch.Tensor, order: int, final_first_order: bool) -> torch.Tensor:
    """(N,) DPM-Solver++(2M) midpoint weights from the log-SNRs λ (N + 1,) of the chain's levels.

    The step from level k to k + 1 with the data estimates D_k (now) and D_{k-1} (the step before)
    uses D_k + w_k (D_k - D_{k-1}), w_k = 1 / (2 r_k), r_k = h_{k-1} / h_k, h_k = λ_{k+1} - λ_k.
    Step 0 has no step before it (w = 0); the last step is first-order where ``final_first_order``.
    """
    N = len(lam) - 1
    weights = torch.zeros(N, dtype=torch.float64)
    if order < 2:
        return weights
    for k in range(1, N):
        if k == N - 1 and final_first_order:
            continue
        h, h_before = lam[k + 1] - lam[k], lam[k] - lam[k - 1]
        weights[k] = 0.5 * h / h_before
    return weights


def _edm_from_config(config: Mapping[str, Any], num_steps: int) -> Schedule:
    """The EDM schedule of ``CosineDPMSolverMultistepScheduler.set_timesteps(num_steps)`` for a
    config, computed as that scheduler does (float32 σ, timesteps atan(σ) · 2 / π) without
    instantiating it (its class needs an optional package)."""
    sigma_min, sigma_max = float(config.get("sigma_min", 0.3)), float(config.get("sigma_max", 500.0))
    if float(config.get("sigma_data", 1.0)) != 1.0:
        raise InputError("only sigma_data = 1 EDM schedulers are supported")
    if config.get("solver_type", "midpoint") not in ("midpoint", "logrho", "bh1", "bh2"):
        raise InputError(f"solver_type {config.get('solver_type')!r} is not supported: use midpoint")
    ramp = torch.linspace(0, 1, num_steps)
    if config.get("sigma_schedule", "exponential") == "karras":
        rho = float(config.get("rho", 7.0))
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = (hi + ramp * (lo - hi)) ** rho
    else:
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), len(ramp)).exp().flip(0)
    sigmas = sigmas.to(torch.float32)
    final_type = config.get("final_sigmas_type", "zero")
    last = 0.0 if final_type == "zero" else sigma_min
    full = torch.cat([sigmas, torch.tensor([last], dtype=torch.float32)])
    final_first = bool(
        config.get("euler_at_final", False)
        or (config.get("lower_order_final", True) and num_steps < 15)
        or final_type == "zero"
    )  # fmt: skip
    return Schedule.edm(full, int(config.get("solver_order", 2)), final_first, int(config.get("num_train_timesteps", 1000)))


def _flow_from_config(config: Mapping[str, Any], num_steps: int) -> Schedule:
    """The flow schedule of ``FlowMatchEulerDiscreteScheduler.set_timesteps(num_steps)``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(config))
    if scheduler.config.use_dynamic_shifting:
        raise InputError("flow schedulers with dynamic shifting (a resolution-dependent shift) are not supported")
    scheduler.set_timesteps(num_steps)
    return Schedule.flow(scheduler.sigmas.to(torch.float64), int(scheduler.config.num_train_timesteps))


def _max_steps(ddim_config: Any) -> int:
    """``Schedule.max_steps`` of a ``DDIMScheduler``'s config (its defaults filled in)."""
    leading = ddim_config.timestep_spacing == "leading"
    return int(ddim_config.num_train_timesteps) - (int(ddim_config.steps_offset) if leading else 0)
