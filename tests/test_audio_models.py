"""AudioModel on the tiny AudioLDM / AudioLDM2 checkpoints: loading, conditioning, denoiser, VAE, vocoder."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch
from diffusers import AudioLDM2Pipeline, AudioLDMPipeline, DDIMScheduler
from transformers import GenerationMixin, GPT2Model

from audio_edit.models import AudioModel
from audio_edit.tiny import build_tiny
from image_core.errors import InputError, ModelLoadError

TINY = {"audioldm2": "tiny", "audioldm": "tiny-audioldm"}


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """The tiny models run many very small ops; with several threads each op pays a thread wake-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["audioldm2", "audioldm"])
def model(request: pytest.FixtureRequest) -> AudioModel:
    start = time.perf_counter()
    loaded = AudioModel.from_pretrained(TINY[request.param])
    print(f"from_pretrained({TINY[request.param]!r}) took {time.perf_counter() - start:.2f} s")
    return loaded


@pytest.fixture(scope="module")
def saved(model: AudioModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(model.family) / "checkpoint"
    model.save_pretrained(folder)
    return folder


def latents(model: AudioModel, batch: int, frames: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, model.latent_channels, frames, model.mel_bins // model.vae_factor, generator=generator)


def assert_cond_close(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].shape == second[key].shape, key
        assert first[key].dtype == second[key].dtype, key
        torch.testing.assert_close(first[key], second[key], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ conditioning


def test_cond_shapes_and_types(model: AudioModel) -> None:
    cond = model.encode_prompts(["a dog barking", "", "rain on a tin roof"])
    if model.family == "audioldm2":
        assert set(cond) == {"gpt2", "t5", "t5_mask"}
        assert cond["gpt2"].shape == (3, 8, model.language_model.config.n_embd)
        length = cond["t5_mask"].shape[1]
        assert cond["t5"].shape == (3, length, model.text_encoder_2.config.d_model)
        assert cond["t5_mask"].dtype == torch.long
        # "" is the T5 end token only: one valid position, the rest is padding with zero states
        assert cond["t5_mask"].sum(dim=1).tolist()[1] == 1
        assert torch.all(cond["t5"][1, 1:] == 0)
        assert int(cond["t5_mask"][2].sum()) == length
    else:
        assert set(cond) == {"class_labels"}
        assert cond["class_labels"].shape == (3, model.text_encoder.config.projection_dim)
        torch.testing.assert_close(cond["class_labels"].norm(dim=-1), torch.ones(3))
    for key, value in cond.items():
        assert value.device == model.device
        if value.is_floating_point():
            assert value.dtype == model.dtype, key


def test_joint_encoding_equals_one_by_one(model: AudioModel) -> None:
    prompts = ["a dog barking", "", "rain on a tin roof", "a dog barking"]
    joint = model.encode_prompts(prompts)
    for row, prompt in enumerate(prompts):
        alone = model.encode_prompts([prompt])
        for key, value in alone.items():
            length = value.shape[1] if value.ndim >= 2 else None
            torch.testing.assert_close(joint[key][row : row + 1, :length], value, atol=1e-6, rtol=1e-6)


def test_prompts_give_different_cond(model: AudioModel) -> None:
    cond = model.encode_prompts(["", "a dog"])
    key = "gpt2" if model.family == "audioldm2" else "class_labels"
    assert not torch.allclose(cond[key][0], cond[key][1])


class GenerativeGPT2(GPT2Model, GenerationMixin):
    """diffusers 0.42's encode_prompt calls generation helpers that GPT2Model lacks under transformers 5."""


def test_audioldm2_matches_diffusers_encode_prompt() -> None:
    model = AudioModel.from_pretrained("tiny")
    components = build_tiny("audioldm2")
    language_model = GenerativeGPT2(components["language_model"].config).eval()
    language_model.load_state_dict(components["language_model"].state_dict())
    pipeline = AudioLDM2Pipeline(**{**components, "language_model": language_model})
    for prompt in ["a dog barking in the rain", ""]:
        with torch.no_grad():
            t5, t5_mask, gpt2 = pipeline.encode_prompt(
                prompt, torch.device("cpu"), num_waveforms_per_prompt=1, do_classifier_free_guidance=False
            )
        assert_cond_close(model.encode_prompts([prompt]), {"gpt2": gpt2, "t5": t5, "t5_mask": t5_mask})


def test_audioldm_matches_diffusers_encode_prompt() -> None:
    model = AudioModel.from_pretrained("tiny-audioldm")
    pipeline = AudioLDMPipeline(**build_tiny("audioldm"))
    with torch.no_grad():
        expected = pipeline._encode_prompt("a dog barking in the rain", torch.device("cpu"), 1, False)
    assert_cond_close(model.encode_prompts(["a dog barking in the rain"]), {"class_labels": expected})


# -------------------------------------------------------------------------------------------- denoiser


def test_predict_eps_shape_and_prompt_dependence(model: AudioModel) -> None:
    x = latents(model, 2)
    t = torch.tensor([999, 20])
    eps_dog = model.predict_eps(x, t, model.encode_prompts(["a dog", "a dog"]))
    eps_rain = model.predict_eps(x, t, model.encode_prompts(["rain", "rain"]))
    assert eps_dog.shape == x.shape and eps_dog.dtype == x.dtype
    assert torch.isfinite(eps_dog).all()
    assert not torch.allclose(eps_dog, eps_rain)


def test_predict_eps_rows_are_independent(model: AudioModel) -> None:
    """Per-row timesteps and zero-padded cond rows give what each row gives on its own."""
    x = latents(model, 3)
    t = torch.tensor([900, 500, 1])
    prompts = ["a long prompt about a dog barking", "", "rain"]
    batch = model.predict_eps(x, t, model.encode_prompts(prompts))
    for row, prompt in enumerate(prompts):
        alone = model.predict_eps(x[row : row + 1], t[row : row + 1], model.encode_prompts([prompt]))
        torch.testing.assert_close(batch[row : row + 1], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_predict_eps_converts_other_parameterisations(model: AudioModel, prediction_type: str) -> None:
    components = build_tiny(model.family)
    components.pop("scheduler")
    config = model.scheduler_config
    epsilon_model = AudioModel(model.family, model.name, components, config)
    other = AudioModel(model.family, model.name, components, {**config, "prediction_type": prediction_type})
    x = latents(model, 2)
    t = torch.tensor([700, 30])
    cond = model.encode_prompts(["a dog", ""])
    output = epsilon_model.predict_eps(x, t, cond)  # the raw UNet output
    alpha_bar = DDIMScheduler.from_config(config).alphas_cumprod[t].reshape(-1, 1, 1, 1)
    if prediction_type == "v_prediction":
        expected = alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x
    else:
        expected = (x - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    torch.testing.assert_close(other.predict_eps(x, t, cond), expected)


# ----------------------------------------------------------------------------------------- VAE, vocoder


def test_vae_round_trip_shapes_and_vocoder_length(model: AudioModel) -> None:
    assert (model.vae_factor, model.latent_channels, model.mel_bins) == (4, 8, 64)
    assert (model.latent_window, model.sample_rate, model.hop_length) == (256, 16000, 160)
    assert model.latent_multiple == 4
    mel = torch.randn(2, 1, 48, 64)
    latent = model.encode_mel(mel)
    assert latent.shape == (2, 8, 12, 16) and latent.dtype == model.dtype
    decoded = model.decode_latent(latent)
    assert decoded.shape == mel.shape and decoded.dtype == torch.float32
    waveform = model.vocode(decoded)
    assert waveform.shape == (2, 48 * 160) and waveform.dtype == torch.float32


def test_encode_mel_rejects_bad_shapes(model: AudioModel) -> None:
    with pytest.raises(InputError, match="multiple of 4"):
        model.encode_mel(torch.randn(1, 1, 10, 64))
    with pytest.raises(InputError, match="shape"):
        model.encode_mel(torch.randn(1, 10, 64))


# -------------------------------------------------------------------------------------- save and load


def test_save_and_reload_gives_same_model(model: AudioModel, saved: Path) -> None:
    reloaded = AudioModel.from_pretrained(str(saved))
    assert reloaded.family == model.family and reloaded.name == str(saved)
    assert reloaded.fingerprint() == model.fingerprint()
    assert reloaded.scheduler_config == model.scheduler_config
    prompts = ["a dog barking", ""]
    assert_cond_close(reloaded.encode_prompts(prompts), model.encode_prompts(prompts))
    x = latents(model, 2)
    t = torch.tensor([500, 10])
    cond = model.encode_prompts(prompts)
    torch.testing.assert_close(reloaded.predict_eps(x, t, cond), model.predict_eps(x, t, cond), atol=1e-5, rtol=1e-5)
    mel = torch.randn(1, 1, 16, 64)
    torch.testing.assert_close(reloaded.encode_mel(mel), model.encode_mel(mel), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reloaded.vocode(mel), model.vocode(mel), atol=1e-5, rtol=1e-5)


def test_saved_folder_loads_in_diffusers(model: AudioModel, saved: Path) -> None:
    pipeline_class = AudioLDM2Pipeline if model.family == "audioldm2" else AudioLDMPipeline
    pipeline = pipeline_class.from_pretrained(saved)
    assert isinstance(pipeline, pipeline_class)
    for name, module in model._modules():
        expected = module.state_dict()
        for key, value in getattr(pipeline, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key}"


def test_cached_hub_id_loads_offline_with_the_folder_fingerprint(
    saved: Path, model: AudioModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id found in the Hugging Face cache loads without network, giving the same model as the folder."""
    repo_id = {"audioldm2": "cvssp/audioldm2", "audioldm": "cvssp/audioldm-s-full-v2"}[model.family]
    cached_repo = tmp_path / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = "0" * 40
    shutil.copytree(saved, cached_repo / "snapshots" / revision)
    (cached_repo / "refs").mkdir()
    (cached_repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from_hub = AudioModel.from_pretrained(repo_id)
    assert from_hub.name == repo_id
    assert from_hub.fingerprint() == model.fingerprint()


def test_fingerprint_is_stable_and_tells_models_apart() -> None:
    first, second = AudioModel.from_pretrained("tiny"), AudioModel.from_pretrained("tiny")
    assert first.fingerprint() == AudioModel.from_pretrained("tiny").fingerprint()
    with torch.no_grad():  # as a fine-tune of one attention layer would
        second.unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.weight.mul_(1.001)
    assert first.fingerprint() != second.fingerprint()
    assert first.fingerprint() != AudioModel.from_pretrained("tiny-audioldm").fingerprint()


# ------------------------------------------------------------------------------------------------ errors


def load_error(name: str) -> str:
    """The message of the ModelLoadError that loading ``name`` raises: one line that names it."""
    with pytest.raises(ModelLoadError) as caught:
        AudioModel.from_pretrained(name)
    message = str(caught.value)
    assert "\n" not in message and name in message
    return message


def test_missing_folder_is_a_load_error(tmp_path: Path) -> None:
    message = load_error(str(tmp_path / "missing"))
    assert "no such folder" in message and "save_pretrained" in message


def test_unknown_hub_id_offline_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert "save_pretrained" in load_error("no-such-owner/no-such-audio-model")
    assert time.perf_counter() - start < 5


def test_broken_folder_is_a_load_error(saved: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    assert "save_pretrained" in load_error(str(broken))


def test_other_pipeline_is_a_load_error(saved: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(saved, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    assert "StableDiffusionPipeline" in load_error(str(other))


def test_fingerprint_sees_one_changed_entry_of_a_text_embedding() -> None:
    """Every weight counts: one number in one row of the Flan-T5 embedding changes the fingerprint."""
    first, second = AudioModel.from_pretrained("tiny"), AudioModel.from_pretrained("tiny")
    embedding = second.text_encoder_2.get_input_embeddings().weight
    with torch.no_grad():
        embedding[5, 3] = torch.nextafter(embedding[5, 3], torch.tensor(float("inf")))
    assert first.fingerprint() != second.fingerprint()

