"""The core on every Gaussian path: VP-discrete (SD, AudioLDM), EDM with v-prediction (Stable Audio
Open's cosine DPM-Solver++ SDE scheduler) and rectified flow, against the analytic Gaussian mixture,
whose model outputs each path's native prediction (ε, v, flow velocity).

References are written from the paths' definitions (x_t = α_t x0 + σ_t ε) and from diffusers' own
schedulers: ``CosineDPMSolverMultistepScheduler.step`` (sde-dpmsolver++, first and second order) and
``FlowMatchEulerDiscreteScheduler.step``, driven with the noise the project extracts.
"""

from __future__ import annotations

import math

import pytest
import torch
from analytic import CONFIGS, EDM_CONFIG, FLOW_CONFIG, PREDICTION, GaussianMixtureModel, path_coefficients

from image_core.adapters import eps_from_prediction
from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.guidance import ClassifierFreeGuidance
from image_core.methods.ddim import ddim_invert
from image_core.methods.ddpm import ddpm_edit, ddpm_invert
from image_core.methods.sdedit import sdedit
from image_core.methods.sega import Concept
from image_core.sampling import sample
from image_core.schedule import Schedule

PATHS = ("vp", "edm", "flow")
REGION = slice(8, 24)  # of 48 coordinates: where classes A and B differ
SEEDS = [0, 1, 2, 3]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=PATHS)
def world(request):
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path=request.param)
    return model, model.sample(0, 1, seed=11)


def editor(model):
    return LatentEditor(model, progress=False)


def inside() -> torch.Tensor:
    flags = torch.zeros(48, dtype=torch.bool)
    flags[REGION] = True
    return flags


# ------------------------------------------------------------------------------ the schedules


def test_edm_schedule_is_the_cosine_schedulers():
    """σ of ``CosineDPMSolverMultistepScheduler.set_timesteps`` (float32, exponential), the data at
    the end; α = 1 / sqrt(1 + σ²), α² + σ_vp² = 1; second-order weights 1 / (2 r)."""
    pytest.importorskip("torchsde")
    from diffusers import CosineDPMSolverMultistepScheduler

    for steps in (8, 50, 100):
        reference = CosineDPMSolverMultistepScheduler.from_config(EDM_CONFIG)
        reference.set_timesteps(steps)
        schedule = Schedule.from_config(EDM_CONFIG, steps)
        assert schedule.path == "edm" and schedule.order == 2
        assert torch.equal(schedule.timesteps, reference.sigmas[:-1].double())
        s = reference.sigmas.double()
        assert torch.allclose(schedule.alphas, 1 / (1 + s[:-1] ** 2), rtol=1e-15, atol=0)
        assert torch.allclose(schedule.alphas + schedule.variances, torch.ones(steps, dtype=torch.float64), atol=1e-15)
        assert schedule.alphas_prev[-1] == 1 and schedule.variances_prev[-1] == 0
        lam = -s.log()  # λ = log(α / σ) = -log σ_edm
        for k in range(1, steps - 1):
            r = (lam[k] - lam[k - 1]) / (lam[k + 1] - lam[k])
            assert schedule.weights[k].item() == pytest.approx(0.5 / r.item(), rel=1e-12)
        assert schedule.weights[0] == 0 and schedule.weights[-1] == 0  # first step; final step to σ = 0


def test_flow_schedule_is_the_flow_matching_schedulers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    reference = FlowMatchEulerDiscreteScheduler.from_config(FLOW_CONFIG)
    reference.set_timesteps(20)
    schedule = Schedule.from_config(FLOW_CONFIG, 20)
    t = reference.sigmas.double()
    assert schedule.path == "flow" and torch.equal(schedule.timesteps, t[:-1])
    assert torch.allclose(schedule.alphas.sqrt(), 1 - t[:-1]) and torch.allclose(schedule.variances.sqrt(), t[:-1])
    with pytest.raises(InputError, match="pure noise"):
        schedule.last(20)  # t = 1: α = 0, no x0_hat


@pytest.mark.parametrize("path", PATHS)
def test_every_prediction_converts_to_the_same_eps(path):
    """ε from ε, x0, v (α ε - σ x0) and the flow velocity (ε - x0), on the path's own (α, σ)."""
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(2))
    t = {"vp": torch.tensor([1, 100, 500, 900, 999]), "edm": torch.tensor([0.3, 1.0, 4.0, 80.0, 500.0], dtype=torch.float64),
         "flow": torch.tensor([0.01, 0.2, 0.5, 0.8, 0.99], dtype=torch.float64)}[path]  # fmt: skip
    alpha, sigma = path_coefficients(path, t, GaussianMixtureModel().alphas_cumprod)
    a, s = alpha[:, None], sigma[:, None]
    x_t = a * x0 + s * eps
    outputs = {"epsilon": eps, "sample": x0}
    if path != "flow":
        outputs["v_prediction"] = a * eps - s * x0
    if path == "flow":
        outputs["flow"] = eps - x0
    for kind, output in outputs.items():
        assert torch.allclose(eps_from_prediction(output, x_t, alpha, sigma, kind), eps, atol=1e-9), kind


# ------------------------------------------------------------------------------ exactness and parity


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("cfg_src", [1.0, 3.5])
def test_reconstruction_is_exact_on_every_path(world, eta, cfg_src):
    model, x0 = world
    ed = editor(model)
    for steps, t_start in ((50, 30), (20, 19), (100, 99)):
        inv = ed.invert_latent(x0, "A", steps, t_start, cfg_src, eta, SEEDS)
        assert rel(ed.reconstruct_latent(inv), inv.x0) <= 1e-10
        assert torch.isfinite(inv.zs).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reconstruction_is_exact_with_a_half_precision_model(world, dtype):
    """The model computes in ``dtype`` (inputs cast, outputs back): the float64 sampler retraces the
    inverted x_t, so the model sees the same inputs and reconstruction stays exact."""
    model, x0 = world

    class Cast:
        def __init__(self, inner):
            self.inner, self.scheduler_config, self.device, self.null_text_keys = inner, inner.scheduler_config, inner.device, ()

        def encode_prompts(self, prompts):
            return self.inner.encode_prompts(prompts)

        def predict_eps(self, x_t, t, cond):
            return self.inner.predict_eps(x_t.to(dtype).double(), t, cond).to(dtype).to(x_t.dtype)

        def fingerprint(self):
            return self.inner.fingerprint() + str(dtype)

    ed = LatentEditor(Cast(model), progress=False)
    inv = ed.invert_latent(x0, "A", 40, 30, 3.5, 1.0, SEEDS)
    assert rel(ed.reconstruct_latent(inv), inv.x0) <= 1e-10


def test_sde_dpm_solver_parity_with_the_cosine_scheduler():
    """The noise maps the project extracts on SAO's schedule, given to diffusers'
    ``CosineDPMSolverMultistepScheduler.step`` as its noise (its noise sampler replaced by one that
    returns them), reproduce the project's x_{t-1} at every step: first-order at the first and last
    steps, DPM-Solver++(2M) SDE midpoint steps between. The scheduler works on x_edm = x_t / α_t and
    the model's v; it keeps σ in float32, hence the tolerance."""
    pytest.importorskip("torchsde")
    from diffusers import CosineDPMSolverMultistepScheduler

    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="edm")
    x0 = model.sample(0, 2, seed=5)
    steps = 30
    schedule = Schedule.from_config(EDM_CONFIG, steps)
    enc = model.encode_prompts(["A", "A", "", ""])
    cfg = ClassifierFreeGuidance(model.predict_eps, {"weights": enc["weights"][:2]}, {"weights": enc["weights"][2:]}, 3.0)
    xts, zs, residual = ddpm_invert(cfg, schedule, x0, steps, 1.0, [4, 5], batch_size=7, progress=False)
    scheduler = CosineDPMSolverMultistepScheduler.from_config(EDM_CONFIG)
    scheduler.set_timesteps(steps)
    alpha = schedule.alphas.sqrt().tolist() + [1.0]
    worst = 0.0
    for k in range(steps):
        x_vp = xts[:, k]
        t = schedule.timesteps[k].expand(2)
        eps = cfg(x_vp, t)
        a, s = alpha[k], math.sqrt(float(schedule.variances[k]))
        v = (a * eps - s * ((x_vp - s * eps) / a))  # the model's v that gives this ε
        scheduler.noise_sampler = lambda sigma, sigma_next, z=zs[:, k]: z
        ours = xts[:, k + 1] if k + 1 < steps else x0 - residual  # the step's result (x0 less its residual at the end)
        theirs = scheduler.step(v, scheduler.timesteps[k], x_vp / a).prev_sample * alpha[k + 1]
        worst = max(worst, rel(theirs, ours))
    assert worst < 1e-6, worst  # measured 1.7e-7


def test_flow_euler_parity_at_eta_zero():
    """The deterministic step on the flow path is ``FlowMatchEulerDiscreteScheduler.step``:
    x_s = x_t + (s - t) u."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    model = GaussianMixtureModel(dim=16, path="flow")
    schedule = Schedule.from_config(FLOW_CONFIG, 12)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(FLOW_CONFIG)
    scheduler.set_timesteps(12)
    cond = model.encode_prompts(["B"])
    x = model.sample(0, 1, seed=2) * 0.3 + 0.5 * torch.randn(1, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    guidance = ClassifierFreeGuidance(model.predict_eps, cond)
    ours = sample(guidance, schedule, x, range(1, 12), 0.0, progress=False)
    theirs = x
    scheduler._step_index = 1
    for k in range(1, 12):
        t = schedule.timesteps[k]
        eps = model.predict_eps(theirs, t.expand(1), cond)
        u = eps - (theirs - t * eps) / (1 - t)  # the velocity behind ε: u = ε - x0
        theirs = scheduler.step(u, scheduler.timesteps[k], theirs).prev_sample
    assert rel(ours, theirs) < 1e-6


def test_second_order_edit_uses_the_multistep_history():
    """On SAO's schedule the edit's steps after the first are second order: replacing the weights by
    zeros (first order everywhere) changes an edit, yet both reconstruct exactly from their own maps."""
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0, path="edm")
    x0 = model.sample(0, 1, seed=11)
    schedule = Schedule.from_config(EDM_CONFIG, 40)
    first = Schedule(**{**schedule.__dict__, "weights": torch.zeros(40, dtype=torch.float64), "order": 1})
    enc = model.encode_prompts(["A", "B", ""])
    src = ClassifierFreeGuidance(model.predict_eps, {"weights": enc["weights"][:1]}, {"weights": enc["weights"][2:]}, 3.0)
    tar = ClassifierFreeGuidance(model.predict_eps, {"weights": enc["weights"][1:2]}, {"weights": enc["weights"][2:]}, 12.0)
    edits = []
    for sched in (schedule, first):
        xts, zs, residual = ddpm_invert(src, sched, x0, 30, 1.0, [0], progress=False)
        assert rel(ddpm_edit(src, sched, xts[:, 0], zs, 1.0, residual, progress=False), x0) < 1e-12
        edits.append(ddpm_edit(tar, sched, xts[:, 0], zs, 1.0, residual, progress=False))
    assert rel(edits[0], edits[1]) > 1e-4


# ------------------------------------------------------------------------------ method semantics


def test_text_edit_moves_to_target_and_keeps_structure(world):
    model, _ = world
    x0 = model.sample(0, 1, seed=3)
    ed = editor(model)
    seeds = list(range(6))
    inv = ed.invert_latent(x0, "A", 100, 60, 3.5, seed=seeds)
    ddpm = ed.edit_latent(inv, "B", 15.0)
    sde = ed.sdedit_latent(x0, "B", 100, 60, 15.0, seed=seeds)
    to_b = (ddpm[:, REGION] - model.means[1, REGION]).norm(dim=1)
    assert (to_b < (x0[:, REGION] - model.means[1, REGION]).norm(dim=1) / 2).all()
    deviation = (x0 - model.means[0])[0, ~inside()]  # what an edit to B should keep: off-region detail
    kept = lambda y: ((y[:, ~inside()] - deviation).norm(dim=1).mean()).item()  # noqa: E731
    assert kept(ddpm) < 0.8 * kept(sde)


def test_masked_edit_changes_nothing_outside(world):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 3.5, seed=[0, 1])
    mask = inside().to(torch.float64).view(1, 48)
    edited = ed.edit_latent(inv, "B", 15.0, mask=mask)
    assert torch.equal(edited[:, ~inside()], x0.expand(2, -1)[:, ~inside()])
    to_b = (edited[:, REGION] - model.means[1, REGION]).norm(dim=1)
    assert (to_b < (x0[:, REGION] - model.means[1, REGION]).norm(dim=1) / 2).all()


def test_diffedit_mask_finds_where_the_classes_differ(world):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 3.5)
    found, truth = ed.mask_latent(inv, "B")[0] > 0, inside()
    assert ((found & truth).sum() / (found | truth).sum()) > 0.8


def test_ddim_inversion_is_the_probability_flow_ode(world):
    """Deterministic inversion on the path: its error shrinks with finer steps; DDPM stays exact."""
    model, x0 = world
    ed = editor(model)

    def error(steps, method, guidance=1.0):
        inv = ed.invert_latent(x0, "A", steps, steps - 1, guidance, method=method)
        return rel(ed.reconstruct_latent(inv), inv.x0)

    errors = [error(steps, "ddim") for steps in (10, 40, 160)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05
    assert error(40, "ddpm", 7.5) < 1e-10


def test_null_text_beats_ddim_under_guidance(world):
    model, x0 = world
    ed = editor(model)
    ddim = ed.invert_latent(x0, "A", 30, 20, 7.5, method="ddim")
    null = ed.invert_latent(x0, "A", 30, 20, 7.5, method="null-text")
    assert rel(ed.reconstruct_latent(null), x0) < 0.5 * rel(ed.reconstruct_latent(ddim), x0)


def test_adding_a_concept_moves_inside_its_region(world):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 3.5, seed=[0, 1])
    plain = ed.edit_latent(inv, "A", 3.5)
    guided = ed.edit_latent(inv, "A", 3.5, concepts=[Concept("B", 6.0, threshold=0.0)])
    before = (plain[:, REGION] - model.means[1, REGION]).norm(dim=1)
    after = (guided[:, REGION] - model.means[1, REGION]).norm(dim=1)
    assert (after < before).all()


def test_principal_components_match_the_closed_form(world):
    """For one class, Cov[x0 | x_t] = (Σ⁻¹ + α²/σ² I)⁻¹ = diag(var σ² / (α² var + σ²)) on any path."""
    model, _ = world
    x0 = model.sample(0, 1, seed=4)
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 1.0)
    schedule = Schedule.from_config(model.scheduler_config, 50)
    pcs = ed.principal_components(inv, n=2, step=5, max_iterations=200, tolerance=1e-10)
    k = schedule.last(30)[5]
    a2, s2 = float(schedule.alphas[k]), float(schedule.variances[k])
    truth = (model.var * s2 / (a2 * model.var + s2)).sort(descending=True).values[:2]
    assert torch.allclose(pcs.values, truth, rtol=1e-6)


def test_paths_read_nothing_back_from_the_device():
    """Second-order SDE edits and inversions run with meta latents: no value is read back."""
    meta = torch.device("meta")
    schedule = Schedule.from_config(EDM_CONFIG, 20)

    def denoiser(x_t, t, cond):
        return 0.1 * x_t + cond["e"].to(x_t.dtype)

    cfg = ClassifierFreeGuidance(denoiser, {"e": torch.empty(2, 8, device=meta)}, {"e": torch.empty(2, 8, device=meta)}, 3.0)
    x0 = torch.empty(2, 8, device=meta, dtype=torch.float64)
    xts, zs, residual = ddpm_invert(cfg, schedule, x0, 10, 1.0, [0, 1], 3, False)
    assert zs.device == meta
    assert ddpm_edit(cfg, schedule, xts[:, 0], zs, 1.0, residual, progress=False).device == meta
    assert sdedit(cfg, schedule, x0, 10, 1.0, [0, 1], None, False).device == meta
    assert ddim_invert(cfg, schedule, x0, 10, False).device == meta
    flow = Schedule.from_config(FLOW_CONFIG, 20)
    assert ddpm_invert(cfg, flow, x0, 10, 1.0, [0, 1], 3, False).zs.device == meta


def test_path_configs_are_recognised():
    assert {path: Schedule.from_config(config, 10).path for path, config in CONFIGS.items()} == {p: p for p in PATHS}
    assert PREDICTION == {"vp": "epsilon", "edm": "v_prediction", "flow": "flow"}
