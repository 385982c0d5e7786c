"""The audio paper's settings (Manor & Michaeli, ICML 2024): the defaults of the editor, the
``audio-edit`` command and the demo. Kept free of heavy imports so that the command starts fast."""

MODEL = "cvssp/audioldm2-music"  # the music model of the paper
NUM_STEPS = 200  # steps of the full chain
T_START = 100  # steps the edit runs (the inversion covers only these)
CFG_SRC = 3.0  # guidance scale of the source prompt during inversion
CFG_TAR = 12.0  # guidance scale of the target prompt
