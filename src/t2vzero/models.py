"""Loading Stable Diffusion components: diffusers-layout dirs, single .safetensors files, hub ids, LoRA."""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model" / "weights"
DEFAULTS_FILE = "t2vzero.json"  # optional per-model generation defaults (size, motion, steps, guidance)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_lora(spec: str) -> tuple[str, float]:
    """`PATH[:SCALE]` → (path, scale); the scale defaults to 1.0.

    Text after the last colon is a scale unless it holds a path separator (`C:\\loras\\x`) or the whole
    spec names an existing file; a scale must be a finite number.
    """
    path, sep, scale = spec.rpartition(":")
    if not sep or not path or "/" in scale or "\\" in scale or Path(spec).exists():
        return spec, 1.0
    try:
        value = float(scale)
    except ValueError:
        raise UserError(f"scale {scale!r} in {spec!r} is not a number; write PATH:0.8") from None
    if not math.isfinite(value):
        raise UserError(f"scale {scale!r} in {spec!r} must be a finite number; write PATH:0.8")
    return path, value


def check_device_name(device: str | None) -> None:
    """A device t2vzero runs on (auto, cpu, cuda, cuda:N, mps), whether or not this machine has it."""
    import torch

    if not device or device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


def resolve_device(device: str | None = None) -> str:
    """`auto`/None picks cuda, then mps, then cpu."""
    import torch

    if device and device != "auto":
        check_device_name(device)
        parsed = torch.device(device)
        kind = parsed.type
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {device} asked for, but CUDA is not available here; use --device cpu or auto")
        if kind == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"device {device} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"device {device} asked for, but MPS is not available here; use --device cpu or auto")
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DTYPE_NAMES = ("auto", "float32", "fp32", "float16", "fp16", "bfloat16", "bf16")


def check_dtype_name(dtype: str | None) -> None:
    """Reject an unknown dtype name before anything heavy is loaded."""
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise UserError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """`auto`/None gives float16 on accelerators and float32 on the CPU."""
    import torch

    check_dtype_name(dtype)
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype and dtype != "auto":
        return names[dtype]
    return torch.float32 if device == "cpu" else torch.float16


def _check_pickle(path: Path, allow_pickle: bool) -> None:
    if allow_pickle:
        return
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{path} is a pickle checkpoint, which can run arbitrary code when loaded; "
                        "convert it to .safetensors or pass --allow-pickle if you trust it")
    if path.is_dir():
        # Per folder (one per component): a mixed checkpoint may hold safetensors for some parts only.
        folders: dict[Path, set[str]] = {}
        for p in path.rglob("*"):
            if p.suffix.lower() in PICKLE_SUFFIXES + (".safetensors",):
                folders.setdefault(p.parent, set()).add(p.suffix.lower())
        for folder, kinds in sorted(folders.items()):
            if ".safetensors" not in kinds:
                where = path if folder == path else folder
                raise UserError(f"{where} holds only pickle weights (.bin/.ckpt), which can run arbitrary code when "
                                "loaded; convert them to safetensors or pass --allow-pickle if you trust them")


def dtype_keyword() -> str:
    """diffusers renamed `torch_dtype` to `dtype` (the old name now warns); older releases know only the old."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present since the rename)
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _pipeline_class(model: str, path: Path) -> Any:
    """The diffusers pipeline class that reads this checkpoint: SD or SDXL (its Instruct-Pix2Pix variants too),
    told from the folder's model index, a single file's tensor names, or a hub id's model index."""
    import diffusers

    name = ""
    if path.is_dir():
        try:
            name = json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError):
            name = ""
    elif path.is_file():
        kind = _single_file_kind(path)
        name = "StableDiffusionXLPipeline" if kind == "sdxl" else ""
    elif _HUB_ID.match(model):
        try:
            name = diffusers.DiffusionPipeline.load_config(model).get("_class_name", "")
        except Exception:  # offline or missing: the SD loader gives the one-line reason
            name = ""
    xl = "XL" in name
    if "InstructPix2Pix" in name:
        return (diffusers.StableDiffusionXLInstructPix2PixPipeline if xl
                else diffusers.StableDiffusionInstructPix2PixPipeline)
    return diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """A .safetensors file's header (tensor name -> dtype, shape, offsets; "__metadata__"), read without any
    tensor data; None when the file is not readable as safetensors."""
    import struct

    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > os.path.getsize(path) - 8:  # not a header length: reading it would ask for exabytes
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _single_file_kind(path: Path) -> str | None:
    """"sdxl" or "sd" for an original-layout checkpoint, by its tensor names (SDXL keeps a second text encoder
    under conditioner.embedders.1); None when the names tell neither; "unreadable" for a broken header."""
    if path.suffix.lower() != ".safetensors":
        return None
    header = safetensors_header(path)
    if header is None:
        return "unreadable"  # the loader names what is wrong with the file
    keys = list(header)
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith(("model.diffusion_model.", "cond_stage_model.", "first_stage_model.")) for k in keys):
        return "sd"
    return None


def _load_pipeline(model: str, allow_pickle: bool, config: str | None, torch_dtype: Any) -> Any:
    path = Path(model).expanduser()
    check_model(model, allow_pickle=allow_pickle, config=config)
    cls = _pipeline_class(model, path)
    common: dict[str, Any] = {dtype_keyword(): torch_dtype}
    if "safety_checker" in inspect.signature(cls.__init__).parameters:
        common.update(safety_checker=None, requires_safety_checker=False)
    if path.is_file():
        if config is not None and Path(config).expanduser().is_dir():  # the config folder names the architecture
            cls = _pipeline_class(config, Path(config).expanduser())
        return cls.from_single_file(str(path), config=config, **common)
    return cls.from_pretrained(str(path) if path.is_dir() else model, use_safetensors=None if allow_pickle else True,
                               **common)


def check_model(model: str | None, *, allow_pickle: bool = False, config: str | None = None) -> None:
    """What can be told of a model before loading it: it exists (or is a hub id), a folder is in the diffusers
    layout, a file is a checkpoint whose architecture its tensor names (or `config`) tell, no pickle weights
    unless allowed. Each problem is a one-line UserError."""
    if model is None:
        return
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{path} is not a Stable Diffusion checkpoint in the diffusers layout "
                            "(no model_index.json); give a diffusers folder, a .safetensors file or a hub id")
        _check_pickle(path, allow_pickle)
    elif path.is_file():
        _check_pickle(path, allow_pickle)
        if path.suffix.lower() != ".safetensors" and path.suffix.lower() not in PICKLE_SUFFIXES:
            raise UserError(f"{path} is not a Stable Diffusion checkpoint (expected a .safetensors file or a folder)")
        kind = _single_file_kind(path)
        if kind == "unreadable":
            raise UserError(f"could not load {path} as a Stable Diffusion checkpoint: its safetensors header is not "
                            "readable (a truncated or corrupt file?)")
        if config is None and path.suffix.lower() == ".safetensors" and kind is None:
            raise UserError(f"cannot tell the architecture of {path} from its tensor names (neither SD nor SDXL "
                            "layout); pass --config with a diffusers folder of its architecture")
    elif not _HUB_ID.match(model) or model.startswith((".", "~")):
        raise UserError(f"model {model} does not exist; give a diffusers folder, a .safetensors file or a hub id")


def load_components(model: str | Path | None = None, *, device: str | None = None, dtype: str | None = None,
                    lora: Sequence[str | tuple[str, float]] = (), allow_pickle: bool = False,
                    config: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load unet, vae, text_encoder, tokenizer and scheduler, plus the model's generation defaults.

    `model` is a diffusers-layout folder, a single-file `.safetensors` checkpoint (with `config`, a
    diffusers folder or hub id for its component configs, when offline), a hub id, or None for the
    built-in model. `lora` entries are `PATH[:SCALE]` strings or (path, scale) pairs.
    """
    if model is None:
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            raise UserError("the built-in model is not installed in this copy of t2vzero; pass --model PATH_OR_ID")
        model = DEFAULT_MODEL_DIR
    model = str(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        pipe = _load_pipeline(model, allow_pickle, config, torch_dtype)
    except UserError:
        raise
    except Exception as exc:  # diffusers raises many types; the user needs the one-line reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ("; offline, a single file needs --config with a diffusers folder of the same architecture"
                if Path(model).is_file() and config is None else "")
        raise UserError(f"could not load {model} as a Stable Diffusion checkpoint: {reason}{hint}") from exc
    _apply_loras(pipe, lora, allow_pickle)
    pipe.to(dev)
    components = {name: getattr(pipe, name) for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}
    if hasattr(pipe, "text_encoder_2"):  # SDXL
        components.update(text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2,
                          force_zeros_for_empty_prompt=bool(pipe.config.get("force_zeros_for_empty_prompt", True)))
    return components, read_model_defaults(model)


def check_lora_exists(path: str) -> None:
    """A LoRA is a local file or folder, or a hub id (fetched when the model loads)."""
    if not Path(path).exists() and not _HUB_ID.match(path):
        raise UserError(f"LoRA {path} does not exist; give a .safetensors file or folder, as PATH[:SCALE]")


def _apply_loras(pipe: Any, lora: Any, allow_pickle: bool) -> None:
    if isinstance(lora, str | os.PathLike):  # one LoRA, not a sequence of characters
        lora = [lora]
    names, scales = [], []
    for i, spec in enumerate(lora):
        path, scale = parse_lora(spec) if isinstance(spec, str) else (spec, 1.0) if isinstance(spec, os.PathLike) \
            else spec
        path = os.path.expanduser(os.fspath(path))
        if Path(path).is_dir() and not any(Path(path).glob("*.safetensors")) and not allow_pickle:
            raise UserError(f"LoRA folder {path} holds no .safetensors file; give the LoRA file itself")
        check_lora_exists(path)
        _check_pickle(Path(path), allow_pickle)
        _check_lora_family(Path(path), pipe.unet.config.cross_attention_dim)
        try:
            pipe.load_lora_weights(path, adapter_name=f"lora{i}")
        except Exception as exc:
            raise UserError(f"could not load LoRA {path}: {_load_error_reason(exc)}") from exc
        names.append(f"lora{i}")
        scales.append(scale)
    if names:
        pipe.set_adapters(names, adapter_weights=scales)


_SIZE_MISMATCH = re.compile(r"size mismatch for ([\w.]+): copying a param with shape (?:torch\.Size\()?"
                            r"\[([\d, ]*)\]\)? from checkpoint, the shape in current model is "
                            r"(?:torch\.Size\()?\[([\d, ]*)\]")


def _load_error_reason(exc: BaseException) -> str:
    """One line from a loading error: a shape mismatch names its first layer and both shapes (torch lists them
    all after a bare "Error(s) in loading state_dict" line)."""
    text = str(exc).strip()
    found = _SIZE_MISMATCH.search(text)
    if found:
        layer, theirs, ours = found.groups()
        count = len(_SIZE_MISMATCH.findall(text))
        return (f"its layer {layer} has shape [{theirs}] but this model's has [{ours}] ({count} layer(s) differ): "
                "it was made for another base model; give a LoRA made for this one")
    return text.splitlines()[0] if text else type(exc).__name__


def vae_scale(vae_config: Any) -> int:
    """Pixels per latent pixel of a VAE config: each block but the last halves the size (8 for Stable Diffusion)."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def native_size(unet_config: Any, vae_config: Any, defaults: dict[str, Any]) -> tuple[int, int]:
    """(height, width): the model's own default size, else the UNet's sample size × the VAE factor."""
    size = unet_config["sample_size"]  # an int, or (height, width)
    h, w = (size, size) if isinstance(size, int) else size
    factor = vae_scale(vae_config)
    return int(defaults.get("height", h * factor)), int(defaults.get("width", w * factor))


_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def lora_text_dim(path: Path) -> int | None:
    """The text width a LoRA's cross-attention keys were trained on (its attn2 to_k down-projection's input),
    read from the safetensors header alone; None when it cannot be told."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    for file in files:
        if file.suffix.lower() != ".safetensors":
            continue
        header = safetensors_header(file)
        if header is None:
            return None
        for key, info in header.items():
            low = key.lower()
            if "attn2" in low and "to_k" in low and ("lora_down" in low or "lora_a" in low) and \
                    "text" not in low.split("attn2")[0][-20:] and len(info.get("shape", ())) == 2:
                return int(info["shape"][1])
    return None


def _check_lora_family(path: Path, base_dim: int) -> None:
    dim = lora_text_dim(path)
    if dim is not None and dim != base_dim:
        ours, theirs = _FAMILIES.get(base_dim, f"a {base_dim}-wide text model"), _FAMILIES.get(dim, f"{dim}-wide text")
        raise UserError(f"LoRA {path} is for {theirs} (cross-attention dim {dim}); the base is {ours} ({base_dim}): "
                        f"give a LoRA made for {ours}")


# What `t2vzero.json` may hold: key -> (check, what it must be)
_DEFAULT_KEYS: dict[str, tuple[Any, str]] = {
    "height": (lambda v: _is_int(v) and 0 < v <= 4096 and v % 8 == 0, "a positive multiple of 8"),
    "width": (lambda v: _is_int(v) and 0 < v <= 4096 and v % 8 == 0, "a positive multiple of 8"),
    "video_length": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "num_inference_steps": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "guidance_scale": (lambda v: _is_number(v), "a finite number"),
    "eta": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "motion": (lambda v: (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)) or _is_motion_spec(v),
               '[dx, dy] or a camera path such as "zoom:1.02+pan:4,0"'),
    "t0": (lambda v: _is_int(v) and v >= 0, "a timestep (whole number)"),
    "t1": (lambda v: _is_int(v) and v >= 0, "a timestep (whole number)"),
    "vocabulary": (lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v), "a list of words"),
    "scheduler": (lambda v: v in _scheduler_names(), "a sampler name (t2vzero.schedulers.SCHEDULERS)"),
    "timestep_spacing": (lambda v: v in ("leading", "trailing", "linspace"), "leading, trailing or linspace"),
}


def _scheduler_names() -> tuple[str, ...]:
    from .schedulers import SCHEDULERS

    return tuple(SCHEDULERS)


def _is_motion_spec(v: Any) -> bool:
    from .motion import parse_motion

    try:
        return isinstance(v, str) and parse_motion(v) is not None
    except UserError:
        return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_model_defaults(model: str | Path) -> dict[str, Any]:
    """Generation defaults a model folder may carry in `t2vzero.json` (e.g. its native size), checked."""
    path = Path(model).expanduser() / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object of generation defaults, not {type(data).__name__}")
    for key, value in data.items():
        if key not in _DEFAULT_KEYS:
            known = ", ".join(_DEFAULT_KEYS)
            raise UserError(f"{path}: unknown key {key!r}; the keys are {known}")
        check, what = _DEFAULT_KEYS[key]
        if not check(value):
            raise UserError(f"{path}: {key} must be {what}, not {value!r}")
    return data


def check_controlnet_folder(model: str) -> None:
    """Refuse a local folder whose config.json names another class (a UNet, VAE or text encoder folder given as
    --controlnet): loading it would leave the missing weights unset and fail deep inside torch."""
    config_file = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a folder, or no readable config: the loader names the problem
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if isinstance(config, dict) and kind != "ControlNetModel" and (kind or "conditioning_channels" not in config):
        raise UserError(f"ControlNet {model} holds {'a ' + kind if kind else 'no ControlNet'} (its config.json), not "
                        "a ControlNet; give a ControlNet's folder, e.g. lllyasviel/sd-controlnet-canny")


def load_controlnet(spec: str | tuple[str, float], *, device: str | None = None, dtype: str | None = None,
                    allow_pickle: bool = False) -> tuple[Any, float]:
    """A ControlNet from `MODEL[:SCALE]` (diffusers folder, .safetensors file or hub id) and its scale."""
    from diffusers import ControlNetModel

    model, scale = parse_lora(spec) if isinstance(spec, str) else spec
    path = Path(model).expanduser()
    if not path.exists() and not _HUB_ID.match(model):
        raise UserError(f"ControlNet {model} does not exist; give a diffusers folder, a .safetensors file or a hub id")
    _check_pickle(path, allow_pickle)
    check_controlnet_folder(str(path))
    try:
        if path.is_file():
            net = ControlNetModel.from_single_file(str(path))
        else:
            net = ControlNetModel.from_pretrained(str(path) if path.is_dir() else model,
                                                  use_safetensors=None if allow_pickle else True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load ControlNet {model}: {reason}") from exc
    dev = resolve_device(device)
    return net.to(dev, resolve_dtype(dtype, dev)).eval(), scale
