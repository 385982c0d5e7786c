"""One paper per module, each a few plain functions over a denoiser, a schedule and the one sampler.

- ``ddpm``: edit-friendly DDPM inversion and editing (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024).
- ``ddim``: DDIM inversion (Song et al., ICLR 2021), the deterministic baseline.
- ``null_text``: null-text inversion (Mokady et al., CVPR 2023): DDIM inversion whose unconditional
  condition is optimised per step for guided sampling.
- ``sdedit``: SDEdit (Meng et al., ICLR 2022), noise to a strength then sample with fresh noise.
- ``diffedit``: DiffEdit masks (Couairon et al., ICLR 2023) and masked editing.
- ``sega``: semantic guidance (Brack et al., NeurIPS 2023) on DDPM inversions, i.e. LEDITS.
- ``pcs``: posterior principal components (Manor & Michaeli, ICML 2024): prompt-free edits.
"""
