"""Options that keep the frames and change the cost: compilation, memory layout, offloading, VAE tiling.

All act on loaded components (once, at load time), never inside the method: `optimize(components, ...)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from .errors import UserError

OFFLOAD_MODES = ("model", "sequential")


def check_speed_args(*, offload: str | None = None, device: str | None = None) -> None:
    """Options that cannot work on the chosen device are refused before anything is loaded.

    Offloading moves weights between the CPU and an accelerator; on a CPU there is nowhere to move them.
    """
    if offload is None:
        return
    if offload not in OFFLOAD_MODES:
        raise UserError(f"unknown offload mode {offload!r}; use one of {', '.join(OFFLOAD_MODES)}")
    if device is not None and str(device).startswith("cpu"):
        raise UserError(f"--offload {offload} keeps weights on the CPU and runs them on a GPU, but the device is the "
                        "CPU; drop --offload (everything already runs from CPU memory)")


def optimize(components: dict[str, Any], extra_models: Sequence[Any] = (), *, compile: bool = False,
             channels_last: bool = False, vae_tiling: bool = False, offload: str | None = None) -> list[str]:
    """Apply the options to the UNet, VAE (and ControlNets in `extra_models`) in place.

    Returns one-line notes about what could not be applied (e.g. a compiler that does not work here);
    the models then run as they were, so the frames never depend on these options beyond rounding.
    """
    import torch

    notes: list[str] = []
    unet, vae = components["unet"], components["vae"]
    nets = [m for m in (unet, *extra_models) if m is not None]
    if offload is not None:
        device = unet.device
        check_speed_args(offload=offload, device=str(device))
        _offload(components, extra_models, offload, device)
    if channels_last:
        for m in (*nets, vae):
            m.to(memory_format=torch.channels_last)
    if vae_tiling:
        vae.enable_tiling()
    if compile:
        problem = compiler_problem()
        if problem:
            notes.append(f"torch.compile does not work here ({problem}); running uncompiled")
        else:
            import torch._dynamo

            # A region that fails to compile at run time falls back to eager instead of failing the run.
            torch._dynamo.config.suppress_errors = True
            for m in nets:
                if getattr(m, "_repeated_blocks", None):
                    m.compile_repeated_blocks(fullgraph=False)  # regional: short compile, same speed-up
                else:
                    m.compile()
            vae.decoder.compile()
    return notes


def compiler_problem() -> str | None:
    """Why torch.compile cannot run here (no C++ compiler, an unsupported Python...), or None."""
    import torch

    try:
        probe = torch.compile(lambda x: x * 2 + 1, fullgraph=True)
        if not torch.equal(probe(torch.ones(2)), torch.full((2,), 3.0)):
            return "a test function compiled to wrong results"
    except Exception as exc:  # any backend failure means: do not compile
        text = str(exc).strip().splitlines()
        return text[0][:200] if text else type(exc).__name__
    finally:
        torch._dynamo.reset()
    return None


def _offload(components: dict[str, Any], extra_models: Sequence[Any], mode: str, device: Any) -> None:
    """accelerate's hooks, as diffusers' pipelines use them: whole models moved to `device` while they run
    ("model"), or each layer's weights streamed in as it runs ("sequential")."""
    from accelerate import cpu_offload, cpu_offload_with_hook

    encoders = [components[k] for k in ("text_encoder", "text_encoder_2") if components.get(k) is not None]
    models = [*encoders, components["unet"], *extra_models, components["vae"]]
    if mode == "sequential":
        for m in models:
            cpu_offload(m, execution_device=device)
        return
    hook = None
    for m in models:
        m.to("cpu")
        _, hook = cpu_offload_with_hook(m, execution_device=device, prev_module_hook=hook)


def warn(notes: Sequence[str]) -> None:
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
