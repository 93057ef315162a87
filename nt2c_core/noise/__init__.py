"""Noise transfer (paper sections 2.2.2-2.2.3): background noise patches, the WGAN-GP noise
synthesizer, and contrast-guided re-weighting of simulated pairs."""
