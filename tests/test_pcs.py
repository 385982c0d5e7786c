"""Posterior principal components against a Gaussian prior with a full, non-isotropic covariance,
whose posterior covariance is known in closed form: Cov[x0 | x_t] = (Σ^-1 + ᾱ/(1 - ᾱ) I)^-1."""

import pytest
import torch
from analytic import SCHEDULER_CONFIG

from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.methods.pcs import PosteriorPCs, posterior_pcs

D, INSIDE = 24, slice(0, 12)  # the first 12 coordinates are correlated among themselves only


class GaussianModel:
    """x0 ~ N(m, Σ) with Σ block-diagonal: a full block on INSIDE, independent coordinates outside."""

    scheduler_config = SCHEDULER_CONFIG
    device = torch.device("cpu")

    def __init__(self) -> None:
        from diffusers import DDIMScheduler

        g = torch.Generator().manual_seed(1)
        Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
        spectrum = torch.tensor([9.0, 5.0, 3.0, 2.0] + [1.0 - 0.05 * i for i in range(8)], dtype=torch.float64)
        self.sigma = torch.diag(0.3 + 0.5 * torch.rand(D, generator=g, dtype=torch.float64))
        self.sigma[INSIDE, INSIDE] = Q @ torch.diag(spectrum) @ Q.T
        self.mean = torch.randn(D, generator=g, dtype=torch.float64)
        self.alphas_cumprod = DDIMScheduler.from_config(SCHEDULER_CONFIG).alphas_cumprod.double()
        self.calls = 0

    def encode_prompts(self, prompts):
        return {"w": torch.ones(len(prompts), 1, dtype=torch.float64)}

    def predict_eps(self, x_t, t, cond):
        self.calls += 1
        out = []
        for x, a in zip(x_t, self.alphas_cumprod[t]):
            gain = a.sqrt() * self.sigma @ torch.linalg.inv(a * self.sigma + (1 - a) * torch.eye(D, dtype=torch.float64))
            x0 = self.mean + gain @ (x - a.sqrt() * self.mean)
            out.append((x - a.sqrt() * x0) / (1 - a).sqrt())
        return torch.stack(out)

    def posterior_covariance(self, a):
        return torch.linalg.inv(torch.linalg.inv(self.sigma) + a / (1 - a) * torch.eye(D, dtype=torch.float64))

    def fingerprint(self):
        return "gaussian"


@pytest.fixture(scope="module")
def world():
    model = GaussianModel()
    x0 = (model.mean + torch.linalg.cholesky(model.sigma) @ torch.randn(D, generator=torch.Generator().manual_seed(2), dtype=torch.float64))[None]
    ed = LatentEditor(model, progress=False)
    return model, ed, ed.invert_latent(x0, "", 50, 30, 1.0)


def principal_angles(a, b):
    qa, _ = torch.linalg.qr(a.reshape(a.shape[0], -1).T)
    qb, _ = torch.linalg.qr(b.reshape(b.shape[0], -1).T)
    return torch.arccos(torch.linalg.svdvals(qa.T @ qb).clamp(max=1))


@pytest.mark.parametrize("step", [0, 15])
def test_pcs_match_the_closed_form(world, step):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=3, step=step)
    a = float(ed_alpha(ed, inv, step))
    values, vectors = torch.linalg.eigh(model.posterior_covariance(a))
    top = vectors[:, values.argsort(descending=True)[:3]].T
    assert principal_angles(pcs.vectors, top).max() < 1e-3
    assert torch.allclose(pcs.values, values.sort(descending=True).values[:3], rtol=0.01)
    assert pcs.info["iterations"] < 50 and pcs.info["angle"] < 1e-4  # stopped by convergence


def ed_alpha(ed, inv, step):
    from image_core.schedule import Schedule

    schedule = Schedule.from_config(ed.model.scheduler_config, inv.settings.num_steps)
    return schedule.alphas[schedule.last(inv.settings.t_start)][step]


def test_one_model_call_per_iteration_plus_the_batched_variances_along_the_trajectory(world):
    model, ed, inv = world
    model.calls = 0
    pcs = ed.principal_components(inv, n=3)
    products = 3 * 30  # each component at each of the inversion's 30 steps
    assert model.calls == pcs.info["iterations"] + -(-products // ed.product_rows(inv.x0))


def test_region_limited_pcs_are_zero_outside_and_move_only_inside(world):
    model, ed, inv = world
    region = torch.zeros(1, D, dtype=torch.float64)
    region[0, 4:20] = 1  # across the block boundary
    pcs = ed.principal_components(inv, n=2, region=region)
    assert torch.equal(pcs.vectors[:, region[0] == 0], torch.zeros(2, int((region == 0).sum()), dtype=torch.float64))
    a = float(ed_alpha(ed, inv, 0))
    P = torch.diag(region[0])
    values, vectors = torch.linalg.eigh(P @ model.posterior_covariance(a) @ P)
    top = vectors[:, values.argsort(descending=True)[:2]].T
    assert principal_angles(pcs.vectors, top).max() < 1e-3
    rec = ed.reconstruct_latent(inv)
    inside_block = torch.zeros(D, dtype=torch.bool)
    inside_block[INSIDE] = True
    block = ed.principal_components(inv, n=1, region=inside_block[None].double())
    moved = ed.edit_pc_latent(inv, block, pc=1, amount=3.0)
    assert torch.allclose(moved[:, ~inside_block], rec[:, ~inside_block], atol=1e-10)
    assert (moved[:, inside_block] - rec[:, inside_block]).norm() > 0.1


def test_moving_along_pc1_moves_along_the_top_direction(world):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=2)
    rec = ed.reconstruct_latent(inv)
    moved = ed.edit_pc_latent(inv, pcs, pc=1, amount=2.0)
    change = (moved - rec)[0]
    cosine = torch.nn.functional.cosine_similarity(change, pcs.vectors[0], dim=0).abs()
    assert cosine > 0.999 and change.norm() > 0.1


def test_amount_zero_is_the_reconstruction_and_a_batch_equals_single_runs(world):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=2)
    assert torch.equal(ed.edit_pc_latent(inv, pcs, pc=1, amount=0.0), ed.reconstruct_latent(inv))
    batch = ed.edit_pc_latent(inv, pcs, pc=[1, 2], amount=[-2.0, 0.0, 2.0])
    assert batch.shape == (6, D)
    for i, (k, a) in enumerate([(k, a) for k in (1, 2) for a in (-2.0, 0.0, 2.0)]):
        assert torch.allclose(batch[i : i + 1], ed.edit_pc_latent(inv, pcs, pc=k, amount=a), atol=1e-12)


def test_pcs_round_trip_and_refuse_another_inversion(world, tmp_path):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=2)
    pcs.save(tmp_path / "p.pcs")
    back = PosteriorPCs.load(tmp_path / "p.pcs")
    assert torch.equal(back.vectors, pcs.vectors) and torch.equal(back.values, pcs.values) and back.step == pcs.step
    assert torch.equal(ed.edit_pc_latent(inv, back, 1, 2.0), ed.edit_pc_latent(inv, pcs, 1, 2.0))
    other = ed.invert_latent(inv.x0 + 0.1, "", 50, 30, 1.0)
    with pytest.raises(InputError, match="another inversion"):
        ed.edit_pc_latent(other, pcs, 1, 2.0)
    (tmp_path / "bad.pcs").write_text("no")
    with pytest.raises(InputError, match="principal components"):
        PosteriorPCs.load(tmp_path / "bad.pcs")


@pytest.mark.parametrize(
    "kwargs, words",
    [({"pc": 3}, "between 1 and 2"), ({"pc": 0}, "between 1 and 2"), ({"amount": float("nan")}, "amounts")],
)
def test_bad_pc_settings_are_refused(world, kwargs, words):
    _, ed, inv = world
    pcs = ed.principal_components(inv, n=2)
    with pytest.raises(InputError, match=words):
        ed.edit_pc_latent(inv, pcs, **{"pc": 1, "amount": 1.0, **kwargs})


def test_bad_extraction_settings_are_refused(world):
    _, ed, inv = world
    with pytest.raises(InputError, match="step"):
        ed.principal_components(inv, n=2, step=30)  # the inversion covers 30 steps: 0..29
    with pytest.raises(InputError, match="components"):
        ed.principal_components(inv, n=0)


def test_core_function_matches_closed_form_directly():
    """posterior_pcs on its own, with a region that keeps everything, at a noisy step."""
    model = GaussianModel()
    a = float(model.alphas_cumprod[600])
    x_t = torch.randn(1, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    from image_core.guidance import ClassifierFreeGuidance

    vectors, values, info = posterior_pcs(ClassifierFreeGuidance(model.predict_eps, model.encode_prompts([""])), a, 600, x_t,
                                          n=4, progress=False)  # fmt: skip
    exact = torch.linalg.eigvalsh(model.posterior_covariance(a)).sort(descending=True).values[:4]
    assert torch.allclose(values, exact, rtol=0.01)


def test_variances_along_the_trajectory_match_the_closed_form(world):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=2, step=5)
    assert pcs.variances.shape == (2, 30 - 5)
    for j in range(25):
        cov = model.posterior_covariance(float(ed_alpha(ed, inv, 5 + j)))
        exact = torch.stack([v @ cov @ v for v in pcs.vectors])
        assert torch.allclose(pcs.variances[:, j], exact, rtol=1e-6)
    assert torch.allclose(pcs.variances[:, 0], pcs.values, rtol=1e-6)


def _official_drift(model, ed, inv, v, amount, first):
    """The edit of the official ``apply_drift`` (AudioEditingCode, pc_drift.py) written from its
    description, with the closed-form posterior: at every step from ``first`` to the end, x0_hat moves
    by amount · sqrt(λ_t) · v (λ_t the variance along v at that step; here every Cov_t has the same
    eigenvectors, so v is each step's own PC), ε' = ε - sqrt(ᾱ_t / (1 - ᾱ_t)) · shift (x_t unchanged),
    x_s = sqrt(ᾱ_s) x0_hat' + sqrt(1 - ᾱ_s - σ²) ε' + σ z, with the inversion's noise maps z."""
    from image_core.schedule import Schedule

    s = inv.settings
    schedule = Schedule.from_config(model.scheduler_config, s.num_steps)
    x = inv.xts[:, 0].clone()
    for j, k in enumerate(schedule.last(s.t_start)):
        a_t, a_s = float(schedule.alphas[k]), float(schedule.alphas_prev[k])
        sigma = s.eta * ((1 - a_s) / (1 - a_t)) ** 0.5 * (1 - a_t / a_s) ** 0.5
        eps = model.predict_eps(x, schedule.timesteps[[k]], {})
        x0_hat = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if j >= first:
            shift = amount * float(v @ model.posterior_covariance(a_t) @ v) ** 0.5 * v
            x0_hat, eps = x0_hat + shift, eps - (a_t / (1 - a_t)) ** 0.5 * shift
        x = a_s**0.5 * x0_hat + (1 - a_s - sigma**2) ** 0.5 * eps + sigma * inv.zs[:, j]
    return x


@pytest.mark.parametrize("step, amount", [(0, 2.0), (10, -3.0)])
def test_a_drift_moves_x0_as_the_official_apply_drift(world, step, amount):
    model, ed, inv = world
    pcs = ed.principal_components(inv, n=1, step=step)
    values, vectors = torch.linalg.eigh(model.posterior_covariance(float(ed_alpha(ed, inv, step))))
    v = vectors[:, values.argmax()] * torch.sign(vectors[:, values.argmax()] @ pcs.vectors[0])
    rec = ed.reconstruct_latent(inv)
    expected = _official_drift(model, ed, inv, v, amount, step) - rec
    moved = ed.edit_pc_latent(inv, pcs, 1, amount) - rec
    assert expected.norm() > 0.1
    assert (moved - expected).norm() / expected.norm() < 1e-3
    # one eigenvalue at every step (λ of the components' step) would move x0 far more
    along = float(expected[0] @ v)
    late = (pcs.variances[0, -1] / pcs.variances[0, 0]).sqrt()
    assert late < 0.2 and abs(float(moved[0] @ v) - along) < 1e-3 * abs(along)
