"""Modes: what each feeds the one denoising loop in `t2vzero.generate`."""
