"""The package's built-in default model: a tiny Stable-Diffusion-shaped model trained from scratch on
synthetic "a {colour} {shape} on a {colour} background" images, plus an analytic judge for its outputs."""
