"""DDIM inversion, SDEdit and DiffEdit masks against the analytic Gaussian-mixture denoiser."""

import pytest
import torch
from analytic import GaussianMixtureModel

from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.inversion import Inversion

REGION = slice(8, 24)  # of 48 coordinates: where classes A and B differ


@pytest.fixture(scope="module")
def world():
    model = GaussianMixtureModel(dim=48, region=REGION, separation=3.0)
    return model, model.sample(0, 1, seed=11)  # one latent of class A


def editor(model):
    return LatentEditor(model, progress=False)


def inside():
    flags = torch.zeros(48, dtype=torch.bool)
    flags[REGION] = True
    return flags


def test_diffedit_mask_finds_where_the_classes_differ(world):
    model, x0 = world
    inv = editor(model).invert_latent(x0, "A", 50, 30, 3.5)
    mask = editor(model).mask_latent(inv, "B")
    assert mask.shape == (1, 48) and set(mask.unique().tolist()) <= {0.0, 1.0}
    found, truth = mask[0] > 0, inside()
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.8


def test_masked_ddpm_edit_changes_nothing_outside_and_moves_inside(world):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 3.5, seed=[0, 1])
    mask = inside().to(torch.float64).view(1, 48)
    edited = ed.edit_latent(inv, "B", 15.0, mask=mask)
    outside = ~inside()
    assert torch.equal(edited[:, outside], x0.expand(2, -1)[:, outside])  # bitwise
    to_b = (edited[:, REGION] - model.means[1, REGION]).norm(dim=1)
    assert (to_b < (x0[:, REGION] - model.means[1, REGION]).norm(dim=1) / 2).all()
    plain = ed.edit_latent(inv, "B", 15.0)
    assert not torch.equal(plain[:, outside], x0.expand(2, -1)[:, outside])  # the mask is what kept them


def test_auto_mask_then_masked_edit(world):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 50, 30, 3.5)
    mask = ed.mask_latent(inv, "B")
    edited = ed.edit_latent(inv, "B", 15.0, mask=mask)
    keep = mask[0] == 0
    assert torch.equal(edited[0, keep], x0[0, keep])


def test_ddim_inversion_error_shrinks_with_steps_and_grows_with_guidance(world):
    """DDIM inversion evaluates ε at x_s instead of x_t: its reconstruction error shrinks as the steps
    get finer and grows with guidance; edit-friendly DDPM inversion stays exact at any guidance."""
    model, x0 = world
    ed = editor(model)

    def error(steps, guidance, method):
        inv = ed.invert_latent(x0, "A", steps, steps, guidance, method=method)
        return ((ed.reconstruct_latent(inv) - x0).norm() / x0.norm()).item()

    unguided = [error(steps, 1.0, "ddim") for steps in (10, 50, 250)]
    guided = [error(steps, 7.5, "ddim") for steps in (10, 50, 250)]
    assert unguided[0] > unguided[1] > unguided[2] and unguided[2] < 0.02
    assert guided[0] > guided[1] > guided[2]
    assert guided[1] > 1.3 * unguided[1] and guided[2] > 1.3 * unguided[2]
    assert error(50, 7.5, "ddpm") < 1e-6
    inv = ed.invert_latent(x0, "A", 20, 12, 1.0, method="ddim")
    assert inv.zs is None and inv.settings.method == "ddim" and inv.settings.eta == 0.0


def test_ddim_inversion_round_trips_through_files(world, tmp_path):
    model, x0 = world
    ed = editor(model)
    inv = ed.invert_latent(x0, "A", 20, 12, 1.0, method="ddim")
    inv.save(tmp_path / "d.inv")
    back = Inversion.load(tmp_path / "d.inv")
    assert back.zs is None and back.settings == inv.settings and torch.equal(back.xts, inv.xts)
    assert torch.equal(ed.edit_latent(back, "B", 7.5), ed.edit_latent(inv, "B", 7.5))


def test_sdedit_keeps_less_of_the_input_than_ddpm_inversion(world):
    model, _ = world
    x0 = model.sample(0, 1, seed=3)
    ed = editor(model)
    seeds = list(range(6))
    inv = ed.invert_latent(x0, "A", 100, 60, 3.5, seed=seeds)
    ddpm = ed.edit_latent(inv, "B", 15.0)
    sde = ed.sdedit_latent(x0, "B", 100, 60, 15.0, seed=seeds)
    assert sde.shape == ddpm.shape == (6, 48)
    deviation = (x0 - model.means[0])[0, ~inside()]  # what an edit to B should keep: off-region detail
    kept = lambda y: ((y[:, ~inside()] - deviation).norm(dim=1).mean()).item()  # noqa: E731
    assert kept(ddpm) < 0.8 * kept(sde)
    two = ed.sdedit_latent(x0, ["B", "A"], 100, 60, [15.0, 3.0], seed=seeds[:2])
    assert two.shape == (4, 48) and torch.allclose(two[:2], sde[:2], atol=1e-12)


def test_bad_method_mask_and_seed_settings_are_refused(world):
    model, x0 = world
    ed = editor(model)
    with pytest.raises(InputError, match="method"):
        ed.invert_latent(x0, "A", 20, 10, method="ddpn")
    with pytest.raises(InputError, match="deterministic"):
        ed.invert_latent(x0, "A", 20, 10, seed=[0, 1], method="ddim")
    inv = ed.invert_latent(x0, "A", 20, 10)
    with pytest.raises(InputError, match="does not fit"):
        ed.edit_latent(inv, "B", mask=torch.ones(1, 47))
    with pytest.raises(InputError, match="empty"):
        ed.edit_latent(inv, "B", mask=torch.zeros(1, 48))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ed.edit_latent(inv, "B", mask=torch.full((1, 48), 2.0))
    for kwargs, words in [({"strength": 0.0}, "strength"), ({"draws": 0}, "draws"), ({"threshold": 1.0}, "threshold")]:
        with pytest.raises(InputError, match=words):
            ed.mask_latent(inv, "B", **kwargs)
    with pytest.raises(InputError, match="differs"):
        ed.mask_latent(inv, "A")
