"""Text-based editing of real recordings with AudioLDM / AudioLDM2 through edit-friendly DDPM inversion."""
