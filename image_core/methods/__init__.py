"""One paper per module, each a few plain functions over a denoiser, a schedule and the one sampler.

- ``ddpm``: edit-friendly DDPM inversion and editing (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024).
- ``sdedit``: SDEdit (Meng et al., ICLR 2022), noise to a strength then sample with fresh noise.
"""
