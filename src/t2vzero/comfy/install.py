"""Install the nodes into a ComfyUI: `python -m t2vzero.comfy install COMFYUI_DIR`.

Run it with the Python that runs ComfyUI, after `pip install t2vzero` there. It writes the folder
`custom_nodes/t2vzero_nodes/`: a one-file shim (`__init__.py`, which imports this package) and the
example workflows in UI format (`example_workflows/`, which ComfyUI lists among its templates). The
node code stays in the installed package, so `pip install -U t2vzero` updates the nodes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError
from ..video import atomic_write

PACK = "t2vzero_nodes"  # not "t2vzero": the folder's name must not look like the package it imports
WORKFLOWS = Path(__file__).with_name("workflows")
SHIM = '''"""Text2Video-Zero nodes; their code is the t2vzero package (written by `python -m t2vzero.comfy install`)."""

try:
    from t2vzero.comfy import comfy_entrypoint  # noqa: F401
except ImportError as exc:
    import sys

    raise ImportError(f"the Text2Video-Zero nodes need the t2vzero package in the Python that runs ComfyUI: "
                      f"{sys.executable} -m pip install t2vzero ({exc})") from exc
'''


def install(comfyui: str | Path) -> Path:
    """Write the shim and the example workflows into `comfyui`/custom_nodes/t2vzero_nodes; returns that folder."""
    custom_nodes = Path(comfyui) / "custom_nodes"
    if not custom_nodes.is_dir():
        raise UserError(f"{comfyui} has no custom_nodes folder; give the ComfyUI folder that holds main.py")
    pack = custom_nodes / PACK
    examples = pack / "example_workflows"
    examples.mkdir(parents=True, exist_ok=True)
    atomic_write(pack / "__init__.py", lambda tmp: tmp.write_text(SHIM, encoding="utf-8"))
    for workflow in ui_workflows():
        atomic_write(examples / workflow.name, lambda tmp, src=workflow: shutil.copyfile(src, tmp))
    return pack


def ui_workflows() -> list[Path]:
    """The example workflows in ComfyUI's UI (graph) format; `*.api.json` are the same in API format."""
    return sorted(p for p in WORKFLOWS.glob("*.json") if not p.name.endswith(".api.json"))


def api_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.api.json"))
