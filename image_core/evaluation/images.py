"""Image metrics: CLIP score of an edit to its target text, LPIPS between edit and input.

CLIP score (Hessel et al. 2021, as torchmetrics' ``CLIPScore`` computes it): ``100 * max(cos(E_I, E_T), 0)``
with ``E_I``, ``E_T`` CLIP's projected image and text embeddings. LPIPS (Zhang et al. 2018): torchmetrics'
``LearnedPerceptualImagePatchSimilarity`` on images scaled to [-1, 1]; an output whose size differs from
its input's is resized to it first (Lanczos).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import adapters
from ..errors import InputError, ModelLoadError
from .loading import TINY, load_parts
from .lpaps import lpaps_windows

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
"""torchmetrics' ``CLIPScore`` default (ViT-L/14, the CLIP most image-editing papers report with)."""

CLIP_HUB_IDS = ("openai/clip-vit-large-patch14", "openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16")
LPIPS_NETS = ("alex", "vgg", "squeeze", "none")
DEFAULT_LPIPS = "alex"


def read_image(path: str | Path) -> Any:
    """The RGB picture at ``path`` (a ``PIL.Image``); InputError (one line) when missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise InputError(f"image file not found: {file}")
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(f"cannot read image file {file}: {adapters.first_line(error)}") from None


def check_image(path: str | Path) -> None:
    """InputError (one line) unless ``path`` is a picture PIL can decode (checks it without keeping it)."""
    read_image(path)


def to_tensor(image: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL picture as float32 shaped ``(1, 3, height, width)`` in [-1, 1], first resized to ``size``
    (width, height) when given and different."""
    from PIL import Image

    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return pixels.permute(2, 0, 1).unsqueeze(0)


@dataclass
class Clip:
    """A loaded CLIP model with its image processor and tokenizer, on ``device``."""

    model: Any
    processor: Any
    tokenizer: Any
    device: torch.device
    name: str

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, float32 shaped ``(len(texts), dim)``."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        out = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return _unit(out)

    @torch.no_grad()
    def image_embeddings(self, images: list[Any]) -> np.ndarray:
        """Unit-length embeddings of PIL ``images``, float32 shaped ``(len(images), dim)``."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return _unit(self.model.get_image_features(pixel_values=pixels))


def clip_score(image_embedding: np.ndarray, text_embedding: np.ndarray) -> float:
    """``100 * max(cos, 0)`` of two unit-length embeddings shaped ``(dim,)``."""
    return 100.0 * max(float(np.dot(image_embedding, text_embedding)), 0.0)


def load_clip(name: str | None = None, device: str | torch.device | None = None) -> Clip:
    """A CLIP model: a hub id, a local folder, or "tiny" (random weights, offline); None: :data:`DEFAULT_CLIP`.
    ModelLoadError (one line) when it does not load."""
    from transformers import AutoTokenizer, CLIPModel

    from .tiny import tiny_clip

    name = name or DEFAULT_CLIP
    where = adapters.resolve_device(str(device) if device is not None else "auto")
    parts = [("CLIP model", CLIPModel.from_pretrained), ("image processor", clip_processor_class().from_pretrained),
             ("tokenizer", AutoTokenizer.from_pretrained)]  # fmt: skip
    model, processor, tokenizer = load_parts(name, CLIP_HUB_IDS, tiny_clip, parts)
    return Clip(model=model.to(where).eval(), processor=processor, tokenizer=tokenizer, device=where, name=name)


class Lpips:
    """LPIPS between pictures: torchmetrics' learned metric on ``net``, or (``net`` "tiny") an offline
    stand-in with the same arithmetic on three random conv layers and no learned channel weights."""

    def __init__(self, net: str = DEFAULT_LPIPS, device: str | torch.device | None = None) -> None:
        self.device = adapters.resolve_device(str(device) if device is not None else "auto")
        self.net = net
        if net == TINY:
            from .tiny import tiny_feature_net

            self._features = tiny_feature_net().to(self.device)
            return
        self._metric = _torchmetrics_lpips(net).to(self.device)

    @torch.no_grad()
    def __call__(self, reference: Any, edited: Any) -> float:
        """LPIPS of two PIL pictures; ``edited`` is resized to ``reference``'s size when they differ."""
        x = to_tensor(reference).to(self.device)
        y = to_tensor(edited, reference.size).to(self.device)
        if self.net == TINY:
            # LPIPS' arithmetic: unit channel vectors per position, squared distance, mean over positions
            fx = [f.flatten(2).cpu() for f in self._features(x)]
            fy = [f.flatten(2).cpu() for f in self._features(y)]
            return float(lpaps_windows(fx, fy, normalize="channels")[0])
        return float(self._metric(y, x))


def _torchmetrics_lpips(net: str) -> Any:
    """torchmetrics' LPIPS module on ``net``; ModelLoadError (one line) when its package, torchvision or
    the backbone's pretrained weights are missing."""
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    except ImportError:
        raise ModelLoadError("LPIPS needs torchmetrics: pip install 'ddpm-edit[eval]' (or --lpips-net none)") from None
    try:
        return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=False)
    except ModuleNotFoundError:
        raise ModelLoadError(
            "LPIPS needs torchvision (for its pretrained backbone): pip install torchvision matching your torch "
            "(or --lpips-net none)"
        ) from None
    except Exception as error:
        raise ModelLoadError(
            f"cannot load LPIPS on {net} ({adapters.first_line(error)}): its backbone's ImageNet weights download "
            "once from download.pytorch.org into ~/.cache/torch; run once with network access (or --lpips-net none)"
        ) from None


def clip_processor_class() -> Any:
    """CLIP's image processor class (the PIL backend where transformers has it, needing no torchvision)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _unit(out: Any) -> np.ndarray:
    x = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy()
