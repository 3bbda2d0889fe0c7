"""What the video commands' options mean, shared by the command line, `t2vzero batch` and Ray.

Parsing and checks that need no torch (so bad input is refused at once), the speed options, the
ControlNet conditions, the prompt warnings that need a loaded tokenizer, and quieting the libraries'
own output. Nothing here prints: warnings come back as lines for the caller to show or record.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

SPEED_KEYS = ("compile", "channels_last", "vae_tiling", "offload")  # applied to the loaded models


def parse_pair(text: str, sep: str, what: str, cast: Any = float) -> tuple[Any, Any]:
    """'512x320' → (512, 320); '12,0' → (12.0, 0.0)."""
    parts = text.lower().split(sep)
    example = "512x512" if sep == "x" else "12,12"
    try:
        if len(parts) != 2:
            raise ValueError
        pair = cast(parts[0]), cast(parts[1])
    except ValueError:
        raise UserError(f"{what} {text!r} is not of the form {example}") from None
    if not all(math.isfinite(v) for v in pair):
        raise UserError(f"{what} {text!r} must be two finite numbers, e.g. {example}")
    return pair


def check_prompt_text(prompt: str) -> str:
    """An empty prompt is a valid unconditional prompt; undecodable bytes or control codes are not text."""
    # Surrogates (0xD800-0xDFFF) are no characters: undecodable bytes (0xDC80-0xDCFF) or half of a broken pair.
    if any(0xD800 <= ord(c) <= 0xDFFF for c in prompt) or any(ord(c) < 32 and c not in "\t\n" for c in prompt):
        raise UserError("the prompt is not text (it holds binary or control characters); pass words in quotes")
    return prompt


def motion_from_options(motion: str | None, motion_file: str | None, no_motion: bool = False) -> Any:
    """The camera path of --motion SPEC, --motion-file FILE or --no-motion (at most one); None: the model's."""
    given = [name for name, value in (("--motion", motion), ("--motion-file", motion_file), ("--no-motion", no_motion))
             if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} contradict each other; give one of them")
    from .motion import Pan, load_motion_file, parse_motion

    if no_motion:
        return Pan(0.0, 0.0)
    if motion_file:
        return load_motion_file(motion_file)
    return parse_motion(motion) if motion else None


def check_t0_t1(t0: int | None, t1: int | None) -> None:
    if t0 is not None and t1 is not None and t0 >= t1:
        raise UserError(f"t0={t0} must be smaller than t1={t1} (diffusion timesteps, 0 <= t0 < t1 < 1000)")


def check_single_file_config(model: str | None, config: str | None) -> None:
    if config is not None and (model is None or not Path(model).is_file()):
        raise UserError("--config only applies to a single-file .safetensors --model (a folder or hub id has "
                        "its own configs); drop --config")


def check_loras(specs: Sequence[str]) -> None:
    """Each --lora parses and names something that exists (a missing file would fail only once weights load)."""
    from .models import check_lora_exists, parse_lora

    for spec in specs:
        check_lora_exists(os.path.expanduser(parse_lora(spec)[0]))


def check_speed(params: dict[str, Any]) -> None:
    """Refuse --offload on a CPU before any weights load (on Ray, where the device named is the workers': this
    machine's may differ)."""
    if params.get("offload"):
        from .models import resolve_device
        from .speed import check_speed_args

        on_ray = params.get("ray") is not None
        check_speed_args(offload=params["offload"], device=params["device"] if on_ray else
                         resolve_device(params["device"]))


def apply_speed(pipe: Any, params: dict[str, Any], controlnets: Sequence[Any] = ()) -> list[str]:
    """The speed options applied to the loaded models; warnings for what could not be applied."""
    from .speed import optimize

    notes = optimize(pipe.components, controlnets, **{k: params.get(k) or None for k in SPEED_KEYS})
    return [f"warning: {note}" for note in notes]


def condition_kinds(params: dict[str, Any]) -> list[str]:
    """One condition per --controlnet (canny by default), checked before any work."""
    from .inputs import ANNOTATORS
    from .models import check_controlnet_folder, parse_lora

    low, high = params.get("canny_low"), params.get("canny_high")
    if low is not None and high is not None and not 0 <= low <= high:
        raise UserError(f"--canny-low {low} and --canny-high {high}: thresholds must be >= 0 with low <= high "
                        "(e.g. 100 and 200)")

    for spec in params["controlnets"]:  # MODEL[:SCALE] reads like a LoRA spec (a model may be a hub id)
        check_controlnet_folder(parse_lora(spec)[0])
    for kind in params["conditions"]:
        if kind not in ANNOTATORS and not Path(kind).exists():
            raise UserError(f"--condition {kind!r} is neither {', '.join(ANNOTATORS)} nor an existing video or "
                            "folder of condition maps")
    if params["conditions"] and params["condition_videos"] and len(params["controlnets"]) > 1:
        # The command line keeps each option's values in order, but not their order between the two options.
        raise UserError("--condition and --condition-video together cannot say which ControlNet each map is for; "
                        "give every condition with --condition (a kind or a PATH), in --controlnet order")
    kinds = list(params["conditions"]) + list(params["condition_videos"])
    kinds += ["canny"] * (len(params["controlnets"]) - len(kinds))
    if len(kinds) != len(params["controlnets"]):
        raise UserError(f"{len(kinds)} conditions for {len(params['controlnets'])} ControlNets; give one per "
                        "--controlnet")
    return kinds


# Parameters that name files or folders: a job's are made absolute, since a worker on another node (or in
# another working directory) would read a relative path against its own.
PATH_PARAMS = ("model", "model_config", "input_video", "image", "annotator", "motion_file")
PATH_LISTS = ("lora", "controlnets", "conditions", "condition_videos")  # (PATH[:SCALE] or a condition kind)


def absolute_paths(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with every existing relative path made absolute (hub ids, condition kinds and missing
    paths stay as given, so their errors read as typed)."""
    out = dict(params)
    for name in PATH_PARAMS:
        if isinstance(out.get(name), str):
            out[name] = _absolute(out[name])
    from .inputs import ANNOTATORS

    for name in PATH_LISTS:
        if name in out and out[name] is not None:
            out[name] = tuple(spec if spec in ANNOTATORS else _absolute_spec(spec) for spec in out[name])
    return out


def _absolute(path: str) -> str:
    return os.path.abspath(path) if path and Path(path).exists() else path


def _absolute_spec(spec: str) -> str:
    """PATH[:SCALE] with PATH absolute where it exists."""
    if Path(spec).exists():
        return os.path.abspath(spec)
    path, sep, scale = spec.rpartition(":")
    if sep and path and Path(path).exists():
        return f"{os.path.abspath(path)}:{scale}"
    return spec


def long_prompt_warnings(pipe: Any, *texts: str) -> list[str]:
    """CLIP reads a fixed number of tokens; the rest of a longer prompt is cut off."""
    from .prompts import token_limit

    tokenizer = pipe.tokenizer
    limit = token_limit(tokenizer, pipe.text_encoder)
    return [f"warning: the prompt {text[:40]!r}... is longer than the model's {limit} tokens; the rest is ignored"
            for text in texts if text and len(tokenizer(text).input_ids) > limit]


def unknown_words_warning(prompt: str, vocabulary: list[str] | None) -> str | None:
    """Models trained on a closed caption grammar (the built-in one) list their words in t2vzero.json."""
    if not vocabulary:
        return None
    known = {w.lower() for w in vocabulary}
    # Words without punctuation, and any other symbol (an emoji) on its own: the model saw none of them.
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s.,;:!?'\"()\[\]{}<>/\\-]", prompt.lower())
    unknown = [w for w in dict.fromkeys(words) if w not in known]
    if not unknown:
        return None
    return (f"warning: this model only knows captions like 'a red circle on a blue background'; "
            f"it never saw: {', '.join(unknown)}")


def quiet_libraries() -> None:
    """Our progress bar is the only one on stderr; library loading bars and notices would bury it."""
    import warnings

    import diffusers
    import transformers

    # Deprecation notices about library keyword names are for us, not for people running the CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)

    # CRITICAL: diffusers logs a failed safetensors lookup at ERROR before falling back to allowed .bin
    # weights; real failures still raise and reach the user as one line.
    diffusers.utils.logging.set_verbosity(diffusers.utils.logging.CRITICAL)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
