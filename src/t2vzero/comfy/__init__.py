"""Text2Video-Zero as ComfyUI nodes: cross-frame attention on a MODEL, a SAMPLER that runs the paper's
schedule around any of ComfyUI's samplers, a KSampler-style node, a MOTION value and shared noise.

ComfyUI imports this package through a one-file shim in its `custom_nodes/` folder (written by
`python -m t2vzero.comfy install COMFYUI_DIR`); nothing else imports it, and ComfyUI is never a
dependency of t2vzero. Importing this module itself needs no ComfyUI: the nodes load in `comfy_entrypoint`.
"""

from __future__ import annotations

from typing import Any


async def comfy_entrypoint() -> Any:
    """ComfyUI's V3 entry point: the extension that lists the nodes."""
    from .nodes import TextToVideoZeroExtension

    return TextToVideoZeroExtension()
