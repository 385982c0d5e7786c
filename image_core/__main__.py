from .stable_diffusion.cli import main

main()
