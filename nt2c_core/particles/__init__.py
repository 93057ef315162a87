"""Particle images: simulated pairs with ground truth (:mod:`.simulate`), 3-D maps and direct
Fourier reconstruction (:mod:`.maps`), RELION particle STAR files (:mod:`.star`), and the SR3
diffusion restorer (:mod:`.sr3`)."""
