"""`python -m t2vzero.comfy install COMFYUI_DIR`: add the Text2Video-Zero nodes to a ComfyUI."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from .install import install


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t2vzero.comfy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("install", help="write custom_nodes/t2vzero_nodes (a shim and example workflows)")
    add.add_argument("comfyui", help="the ComfyUI folder (the one holding main.py and custom_nodes/)")
    args = parser.parse_args(argv)
    try:
        pack = install(args.comfyui)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"installed the Text2Video-Zero nodes in {pack}; restart ComfyUI to load them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
