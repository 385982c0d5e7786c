"""Null-text inversion (Mokady et al., "Null-text Inversion for Editing Real Images using Guided
Diffusion Models", CVPR 2023).

DDIM inversion retraces its input only without guidance; under classifier-free guidance of scale w
the guided sampler drifts away from it. Null-text inversion keeps the prompts and the weights and
instead tunes the unconditional condition ∅, one copy per step:

1. The pivot: DDIM inversion with the source prompt at scale 1, x*_{t_start} ... x*_1 (and x*_0 = x0).
2. From x̄ = x*_{t_start}, at each step t -> s of the sampler: starting from the previous step's ∅_t,
   a few Adam steps on

       loss(∅_t) = mean ‖ x_s(x̄, ε_u(x̄, ∅_t) + w (ε_c(x̄) - ε_u(x̄, ∅_t))) - x*_s ‖²

   (x_s the deterministic DDIM step), then x̄ <- x_s with the ∅_t kept.

Editing then samples deterministically from x*_{t_start} with the target prompt and ∅_t at step t.

Defaults (the paper's; its code stretched to any number of steps where it counts steps):
``INNER_STEPS`` = 10 Adam steps per step; learning rate ``LEARNING_RATE`` · (1 - i / (2K)) at the
i-th of K steps (the paper's 1e-2 · (1 - i / 100) at its K = 50); a step stops early once its loss
is below ``EARLY_STOP`` · (1 + 100 i / K) (the paper's 1e-5 + 2e-5 · i at K = 50; 0 never stops
early); guidance ``GUIDANCE`` = 7.5; the paper runs 50 steps of the whole chain. The early-stop
threshold is an absolute mean squared error, set for latents of unit variance (SD's and AudioLDM's
are scaled so); it lets later steps keep larger errors.

Precision: the optimised ∅ and the loss are float32 whatever the model's dtype; ∅ is cast to the
condition's dtype on its way into the model, so gradients flow through a float16 / bfloat16 UNet
in its own dtype. Their backward pass carries the gradient of the summed squared error, a fixed
loss scale of the number of elements that keeps half-precision gradients clear of underflow; it
is divided out in float32 before Adam, which thus sees the gradient of the mean, as in the paper.

Order, as in the paper's code (``null_optimization``): each inner iteration measures the loss,
takes the Adam step, and then stops if the loss it measured was below the threshold, so every step
is optimised at least once and the kept embedding is the one after the last Adam step. Cost: the
conditional ε of a step is evaluated once (it does not depend on ∅); the kept embedding's
unconditional call also moves x̄. Per step that is one conditional call and at most
``inner_steps`` + 1 unconditional ones with ``inner_steps`` backward passes. The early stop compares
each loss with its threshold, so it reads one number back from the device per inner step; without
it (``early_stop`` 0) a run reads its losses once, at the end, and a loss or gradient that is not
finite is reported then.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from ..progress import Progress

from ..batching import Cond
from ..errors import EditError, InputError
from ..guidance import ClassifierFreeGuidance, Denoiser
from ..sampling import mean_from_x0, predicted_x0
from ..schedule import Schedule
from .ddim import ddim_invert

INNER_STEPS = 10  # Adam steps per sampler step (paper: N = 10)
LEARNING_RATE = 1e-2  # Adam's learning rate at the first step, halved linearly over the run (paper)
EARLY_STOP = 1e-5  # a step stops once its loss is below EARLY_STOP * (1 + 100 i / K) (paper); 0: never
GUIDANCE = 7.5  # the guidance scale the embeddings are optimised for (paper)
MAX_INNER_STEPS = 1000  # a bound against typos


@dataclass(frozen=True)
class NullTextInversion:
    """What ``null_text_invert`` returns.

    Attributes:
        xts: (B, K, ...) the pivot, x*_t at the K timesteps of the edit, descending (xts[:, 0] = x*_{t_start}).
        uncond: the unconditional condition of every step: each tensor (B, K, ...), row [:, j] the
            condition of the j-th step (optimised keys in float32, the others as given).
        losses: K lists, the loss of every embedding tried at that step; the last is the kept one's.
    """

    xts: torch.Tensor
    uncond: dict[str, torch.Tensor]
    losses: list[list[float]]

    @property
    def backward_passes(self) -> int:
        """Model backward passes the optimisation ran (one per Adam step)."""
        return sum(len(step) - 1 for step in self.losses)


def check_null_text_settings(inner_steps: int, learning_rate: float, early_stop: float) -> None:
    """Refuse optimisation settings outside their ranges (``InputError``, one line)."""
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or not 0 <= inner_steps <= MAX_INNER_STEPS:
        raise InputError(f"inner steps must be a whole number from 0 to {MAX_INNER_STEPS}, got {inner_steps}")
    if not (isinstance(learning_rate, (int, float)) and 0 < learning_rate <= 1):
        raise InputError(f"the learning rate must be in (0, 1], got {learning_rate}")
    if not (isinstance(early_stop, (int, float)) and 0 <= early_stop < 1):
        raise InputError(f"the early-stop loss must be in [0, 1), got {early_stop}")


def null_text_invert(
    denoiser: Denoiser,
    schedule: Schedule,
    x0: torch.Tensor,
    cond: Cond,
    uncond: dict[str, torch.Tensor],
    keys: tuple[str, ...],
    t_start: int,
    scale: float = GUIDANCE,
    inner_steps: int = INNER_STEPS,
    learning_rate: float = LEARNING_RATE,
    early_stop: float = EARLY_STOP,
    progress: bool = True,
) -> NullTextInversion:
    """Invert ``x0`` by DDIM (the pivot) and optimise the unconditional condition of every step.

    Args:
        denoiser: the plain (unguided) ε-predictor; it must be differentiable in its condition.
        x0: (B, ...) clean latents.
        cond: B rows of the source prompt's condition.
        uncond: B rows of the unconditional condition to start from (the encoding of "").
        keys: the tensors of ``uncond`` to optimise (floating point); the rest stay as given.
        scale: the guidance scale to reconstruct under (the edits' scale).
    Returns:
        the pivot, the per-step conditions and the losses (see ``NullTextInversion``).
    """
    check_null_text_settings(inner_steps, learning_rate, early_stop)
    missing = [key for key in keys if key not in uncond or not uncond[key].is_floating_point()]
    if missing:
        raise ValueError(f"cannot optimise {missing}: not floating-point tensors of the condition")
    xts = ddim_invert(ClassifierFreeGuidance(denoiser, cond), schedule, x0, t_start, progress)
    if scale == 1:  # ε is then ε_c alone: the loss does not depend on ∅, there is nothing to optimise
        inner_steps = 0
    steps = schedule.last(t_start)
    K = len(steps)
    embedding = {key: uncond[key].detach().float() for key in keys}
    kept: list[dict[str, torch.Tensor]] = []
    losses: list[list[torch.Tensor]] = []  # on the device: read once at the end unless the early stop needs them
    healthy = torch.ones((), dtype=torch.bool, device=x0.device)  # every loss and gradient finite so far
    reads = early_stop > 0  # comparing a loss with its threshold reads it back: one read per inner step
    timesteps = schedule.times_like(x0)
    x = xts[:, 0]
    bar = Progress(steps, desc="null-text inversion", disable=not progress)
    for j, k in enumerate(bar):
        target = xts[:, j + 1] if j + 1 < K else x0
        t = timesteps[k].expand(x.shape[0])
        a_t, a_s = float(schedule.alphas[k]), float(schedule.alphas_prev[k])
        v_t, v_s = float(schedule.variances[k]), float(schedule.variances_prev[k])
        with torch.no_grad():
            eps_c = denoiser(x, t, cond)

        def step(variables: dict[str, torch.Tensor]) -> torch.Tensor:
            eps_u = denoiser(x, t, {**uncond, **{key: v.to(uncond[key].dtype) for key, v in variables.items()}})
            eps = eps_u + scale * (eps_c - eps_u)
            return mean_from_x0(a_s, 0.0, predicted_x0(a_t, x, eps, v_t), eps, v_s)

        variables = {key: value.clone().requires_grad_(True) for key, value in embedding.items()}
        optimizer = torch.optim.Adam(list(variables.values()), lr=learning_rate * (1 - j / (2 * K)))
        threshold = early_stop * (1 + 100 * j / K)
        tried: list[torch.Tensor] = []
        stop = inner_steps  # the inner iteration that only evaluates the kept embedding
        for i in range(inner_steps + 1):
            last = i == stop
            with torch.set_grad_enabled(not last):
                x_s = step(variables)
                squared = (x_s.float() - target.float()) ** 2  # float32 whatever the latents' dtype
                total = squared.sum()  # a loss scale of squared.numel(), divided out below
            tried.append(total.detach() / squared.numel())
            healthy = healthy & torch.isfinite(tried[-1])
            if reads and not math.isfinite(float(tried[-1])):
                raise _diverged(j, K, "loss")
            if last:  # the kept embedding's own evaluation, which also moves x̄
                break
            optimizer.zero_grad()
            total.backward()
            for value in variables.values():
                value.grad /= squared.numel()  # type: ignore[operator]
            finite = torch.stack([torch.isfinite(value.grad).all() for value in variables.values()]).all()  # type: ignore[arg-type]
            healthy = healthy & finite
            if reads and not bool(finite):
                raise _diverged(j, K, "gradient")
            optimizer.step()  # always a step, then the check of the loss it was taken from (the paper's order)
            if reads and float(tried[-1]) < threshold:
                stop = i + 1
        embedding = {key: value.detach() for key, value in variables.items()}
        kept.append(embedding)
        losses.append(tried)
        x = x_s.detach()
        del x_s, squared, total  # after an early stop they hold a forward pass's activations
        if reads:
            bar.set_postfix(loss=f"{float(tried[-1]):.2e}")
    values = torch.stack([loss for tried in losses for loss in tried]).tolist()  # the one read of the run
    numbers, at = [], 0
    for tried in losses:
        numbers.append(values[at : at + len(tried)])
        at += len(tried)
    if not bool(healthy):
        first = next(j for j, tried in enumerate(numbers) if not all(math.isfinite(v) for v in tried)) if any(
            not math.isfinite(v) for v in values) else K - 1  # fmt: skip
        raise _diverged(first, K, "loss or gradient")
    per_step = {
        key: torch.stack([step[key] for step in kept], 1) if key in keys else value.unsqueeze(1).repeat_interleave(K, 1)
        for key, value in uncond.items()
    }
    return NullTextInversion(xts, per_step, numbers)


def _diverged(j: int, K: int, what: str) -> EditError:
    advice = "use float32 or bfloat16 for the model" if what == "gradient" else "use float32 or bfloat16, or a lower guidance scale"
    return EditError(f"null-text inversion diverged at step {j + 1} of {K} (the {what} is not finite): {advice}")
