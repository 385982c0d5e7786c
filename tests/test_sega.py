"""Semantic guidance (LEDITS) against the analytic Gaussian mixture, where the classes differ only
inside a known region: concept B's noise estimate equals the unconditional one everywhere else."""

import pytest
import torch
from analytic import GaussianMixtureModel

from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.methods.sega import Concept

REGION = slice(8, 24)  # of 48 coordinates


@pytest.fixture(scope="module")
def world():
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0)
    x0 = model.sample(0, 1, seed=11)  # class A
    ed = LatentEditor(model, progress=False)
    return model, ed, ed.invert_latent(x0, "A", 50, 30, 3.5, seed=[0, 1])


def inside():
    flags = torch.zeros(48, dtype=torch.bool)
    flags[REGION] = True
    return flags


def test_adding_a_concept_moves_inside_its_region_and_keeps_the_rest(world):
    model, ed, inv = world
    plain = ed.edit_latent(inv, "A", 3.5)
    added = ed.edit_latent(inv, None, 3.5, concepts=[Concept("B", scale=8.0, threshold=0.5, warmup=0)])  # source prompt kept
    assert torch.equal(added, ed.edit_latent(inv, "A", 3.5, concepts=[Concept("B", scale=8.0, threshold=0.5, warmup=0)]))
    out = ~inside()
    assert torch.allclose(added[:, out], plain[:, out], atol=1e-10)  # γ is zero where the concept adds nothing
    to_b = lambda y: (y[:, REGION] - model.means[1, REGION]).norm(dim=1)  # noqa: E731
    assert (to_b(added) < 0.8 * to_b(plain)).all()


def test_removing_a_concept_moves_away_from_it(world):
    model, ed, inv = world
    plain = ed.edit_latent(inv, "B", 1.0)  # an edit towards B that removes A on the way
    removed = ed.edit_latent(inv, "B", 1.0, concepts=[Concept("A", scale=2.0, remove=True, threshold=0.5, warmup=0)])
    to_a = lambda y: (y[:, REGION] - model.means[0, REGION]).norm(dim=1)  # noqa: E731
    assert (to_a(removed) > 1.2 * to_a(plain)).all()


def test_a_higher_threshold_guides_fewer_cells(world):
    """At the first guided step x_s moves exactly where the concept's mask lets γ through: the cells
    of the region whose |ψ| reaches the threshold quantile of the 48."""
    _, ed, inv = world

    def first_step(**kwargs):
        seen = []
        ed.edit_latent(inv, "A", 3.5, callback=lambda step: seen.append(step.x_s) or step.x_s, **kwargs)
        return seen[0]

    plain = first_step()
    changed = []
    for threshold in (0.5, 0.8, 0.9):
        guided = first_step(concepts=[Concept("B", scale=8.0, threshold=threshold, warmup=0)])
        moved = (guided - plain).abs() > 1e-12
        assert not moved[:, ~inside()].any()
        changed.append(moved.sum(1).tolist())
    assert changed[0] == [16, 16]  # the quantile 0.5 of |ψ| is 0: the whole region
    assert all(a > b > c > 0 for a, b, c in zip(*changed))
    assert all(round(0.1 * 48) <= c <= round(0.1 * 48) + 1 for c in changed[2])


def test_scale_zero_is_the_plain_edit_exactly(world):
    _, ed, inv = world
    plain = ed.edit_latent(inv, "B", 7.5)
    assert torch.equal(ed.edit_latent(inv, "B", 7.5, concepts=[Concept("A", scale=0.0)]), plain)


def _swap_concept_and_unconditional(model):
    """A model whose answers for the unconditional rows and the concept rows are swapped (a sign
    error of ψ), for one concept: rows are [target N, unconditional N, concepts N]."""
    inner = model.predict_eps

    def swapped(x, t, cond):
        eps = inner(x, t, cond)
        n = x.shape[0] // 3
        return torch.cat([eps[:n], eps[2 * n :], eps[n : 2 * n]])

    return swapped


@pytest.mark.parametrize("swap", [False, pytest.param(True, marks=pytest.mark.xfail(strict=True, reason="ψ sign flipped"))])
def test_swapped_rows_are_caught(world, swap):
    model, ed, inv = world
    editor = LatentEditor(model, denoiser=_swap_concept_and_unconditional(model) if swap else None, progress=False)
    plain = ed.edit_latent(inv, "A", 3.5)
    added = editor.edit_latent(inv, None, 3.5, concepts=[Concept("B", scale=8.0, threshold=0.5, warmup=0)])
    to_b = lambda y: (y[:, REGION] - model.means[1, REGION]).norm(dim=1)  # noqa: E731
    assert (to_b(added) < 0.8 * to_b(plain)).all()


def test_warm_up_leaves_the_first_steps_as_the_plain_edit(world):
    _, ed, inv = world

    def trajectory(**kwargs):
        seen = []
        ed.edit_latent(inv, "A", 3.5, callback=lambda step: seen.append(step.x_s) or step.x_s, **kwargs)
        return seen

    plain = trajectory()
    warm = trajectory(concepts=[Concept("B", scale=8.0, threshold=0.5, warmup=5)])
    assert all(torch.equal(a, b) for a, b in zip(plain[:5], warm[:5]))
    assert not torch.allclose(plain[5], warm[5])


def test_momentum_lives_in_the_run(world, monkeypatch):
    """Momentum adds s_m v from the second guided step; two edits in a row equal each alone."""
    _, ed, inv = world
    concepts = [Concept("B", scale=8.0, threshold=0.5, warmup=0)]
    first = ed.edit_latent(inv, None, 3.5, concepts=concepts)
    assert torch.equal(ed.edit_latent(inv, None, 3.5, concepts=concepts), first)
    from image_core.methods import sega

    monkeypatch.setattr(sega, "MOMENTUM_SCALE", 0.0)
    without = ed.edit_latent(inv, None, 3.5, concepts=concepts)
    assert not torch.allclose(first, without)


def test_one_model_call_per_step_whatever_the_number_of_concepts(world):
    model, ed, inv = world
    model.calls = 0
    concepts = [Concept("B", scale=3.0), Concept("A", scale=2.0, remove=True), Concept("B", scale=1.0, threshold=0.8)]
    ed.edit_latent(inv, ["A", "B"], 3.5, concepts=concepts)
    assert model.calls == 30  # 30 steps; rows: 2 targets x 2 inversions x (target, unconditional, 3 concepts)


def test_concept_sets_targets_and_seeds_in_one_batch_equal_single_runs(world):
    _, ed, inv = world
    sets = [[Concept("B", scale=6.0, threshold=0.5, warmup=0)], [Concept("A", scale=4.0, remove=True, warmup=2), Concept("B", scale=2.0)]]
    batch = ed.edit_latent(inv, ["A", ""], [3.5, 5.0], concepts=sets)
    assert batch.shape == (2 * 2 * 2, 48)
    for k, concept_set in enumerate(sets):
        for i, (target, cfg) in enumerate([("A", 3.5), ("", 5.0)]):
            single = ed.edit_latent(inv, target, cfg, concepts=concept_set)
            assert torch.allclose(batch[k * 4 + i * 2 : k * 4 + i * 2 + 2], single, atol=1e-10)


@pytest.mark.parametrize(
    "concepts, words",
    [
        ([Concept(" ")], "must not be empty"),
        ([Concept("B", scale=float("nan"))], "scales"),
        ([Concept("B", scale=1000.0)], "scales"),
        ([Concept("B", threshold=1.0)], "threshold"),
        ([Concept("B", threshold=-0.1)], "threshold"),
        ([Concept("B", warmup=-1)], "warm-up"),
        ([Concept("B")] * 17, "at most 16"),
    ],
)
def test_bad_concepts_are_refused(world, concepts, words):
    _, ed, inv = world
    with pytest.raises(InputError, match=words):
        ed.edit_latent(inv, "B", 7.5, concepts=concepts)


def test_neither_target_nor_concepts_is_refused(world):
    _, ed, inv = world
    with pytest.raises(InputError, match="target prompt, or concepts"):
        ed.edit_latent(inv, None)


def _semantic_terms(steps, warmup=0, cooldown=None, momentum_scale=0.5, beta=0.6):
    """The semantic term ε - ε_u - s_g (ε_tar - ε_u) that ``SemanticGuidance`` applies at each step
    for one concept whose ψ is the same constant at every step (threshold 0: every cell guided)."""
    from image_core.guidance import ClassifierFreeGuidance
    from image_core.methods.sega import SemanticGuidance

    psi = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)[None]

    def model(x_t, t, cond):  # ε = the condition's row: ε_u = 0, ε_tar = 0, ε_c = ψ
        return cond["e"]

    zero = {"e": torch.zeros(1, 6, dtype=torch.float64)}
    run = SemanticGuidance(
        ClassifierFreeGuidance(model, zero, zero, 3.0), {"e": psi[:, None]}, scale=torch.tensor([[2.0]]),
        threshold=torch.tensor([[0.0]]), warmup=torch.tensor([[warmup]]),
        cooldown=torch.tensor([[cooldown if cooldown is not None else 2**62]]),
        momentum_scale=momentum_scale, momentum_beta=beta, channel_axis=None,
    )
    x, t = torch.zeros(1, 6, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    terms = [run(x, t, j) for j in range(steps)]
    gamma = 2.0 * psi
    return [term / gamma for term in terms]  # in units of γ (every cell the same multiple)


def _paper_recursion(steps, warmup=0, cooldown=None, s_m=0.5, beta=0.6):
    """SEGA (Brack et al. 2023, Sec. 3.3; diffusers' SemanticStableDiffusionPipeline): the guidance
    term g_t = γ_t + s_m v_t is applied once past the warm-up, and the momentum is updated with it,
    v_{t+1} = β v_t + (1 - β) g_t, from the first step on; past the cool-down γ_t = 0. In units of γ."""
    v, applied = 0.0, []
    for i in range(steps):
        gamma = 0.0 if cooldown is not None and i >= cooldown else 1.0
        g = gamma + s_m * v
        applied.append(g if i >= warmup else 0.0)
        v = beta * v + (1 - beta) * g
    return applied


@pytest.mark.parametrize("warmup, cooldown", [(0, None), (3, None), (0, 5), (2, 6)])
def test_momentum_follows_the_sega_recursion(warmup, cooldown):
    terms = _semantic_terms(80, warmup, cooldown)
    reference = _paper_recursion(80, warmup, cooldown)
    for term, expected in zip(terms, reference):
        assert torch.allclose(term, torch.full_like(term, expected), rtol=1e-12, atol=1e-12)
    if cooldown is None:  # a constant concept levels off at γ / (1 - s_m) = 2γ with the LEDITS defaults
        assert abs(float(terms[-1][0, 0]) - 2.0) < 1e-6
    if warmup == 0 and cooldown is None:
        assert [round(float(term[0, 0]), 4) for term in terms[:3]] == [1.0, 1.2, 1.36]
    if cooldown is not None:  # the concept stops feeding the momentum: what is left decays by β + (1 - β) s_m
        assert abs(float(terms[cooldown + 1][0, 0]) / float(terms[cooldown][0, 0]) - 0.8) < 1e-12


def test_no_float64_arithmetic_with_float32_latents():
    """MPS has no float64: with float32 latents and model, a LEDITS step (guidance, concept masks,
    their quantiles, momentum) and a masked step compute nothing in float64."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from image_core.conditions import Prompts
    from image_core.methods.diffedit import keep_outside
    from image_core.sampling import Step

    class Float32Model:
        def encode_prompts(self, prompts):
            return {"e": torch.stack([torch.full((4, 6), float(len(p))) for p in prompts])}

        def predict_eps(self, x_t, t, cond):
            return x_t * 0.5 + cond["e"]

    class Dtypes(TorchDispatchMode):
        seen: set = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for value in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(value, torch.Tensor):
                    self.seen.add((str(func), value.dtype))
            return out

    model = Float32Model()
    guidance = Prompts(model, model.predict_eps).semantic(["a b"], "", [7.5], 2, [[Concept("c", threshold=0.9, warmup=0)]], 1)
    x, t = torch.randn(2, 4, 6), torch.tensor([10, 10])
    trajectory, x0 = torch.randn(2, 3, 4, 6), torch.randn(2, 4, 6)
    callback = keep_outside(torch.tensor([[[[1.0] * 6] * 2 + [[0.0] * 6] * 2]], dtype=torch.float64)[0], trajectory, x0)
    with Dtypes() as mode:
        for j in range(3):
            eps = guidance(x, t, j)
        callback(Step(0, 0, 10, x, eps, x, 0.5, 0.6, 0.1, 0.0, x))
    assert eps.dtype == torch.float32
    assert not [op for op, dtype in mode.seen if dtype == torch.float64]
