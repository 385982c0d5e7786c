"""Text-based editing of real recordings with AudioLDM / AudioLDM2 by edit-friendly DDPM inversion."""

from image_core.errors import EditError, InputError, ModelLoadError
from image_core.inversion import Inversion

from .audio_io import Audio, load_audio, save_audio
from .editor import AudioEditor

__all__ = ["Audio", "AudioEditor", "EditError", "InputError", "Inversion", "ModelLoadError", "load_audio", "save_audio"]
