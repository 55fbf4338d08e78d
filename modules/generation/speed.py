"""Model-wide speed options, applied once to a freshly loaded model (before any offload hooks).

- channels_last (A1111's --opt-channelslast): the UNet's and VAE's convolutions read NHWC
  memory, which cuDNN and oneDNN run faster on some hardware; same arithmetic, reordered.
- tf32: TF32 matrix multiplies and convolutions for the float32 parts on Ampere and newer
  NVIDIA GPUs (A1111 turns it on too); nothing changes elsewhere.
- compile: torch.compile of the UNet (and the VAE decoder), in place, so the compiled code stays
  with the module across jobs. The batch dimension is marked dynamic at the first call so a
  batch-size change does not recompile; the timestep is a tensor, so step counts never do.
  A new image size compiles once more (then dynamo makes the size dynamic too).
- fp8_storage (A1111's setting): the UNet's weights stored as float8 and cast up layer by layer
  as they run (diffusers' layerwise casting): about half the UNet's memory in fp16, slightly
  different pictures. LoRAs stay unmerged peft adapters, so they keep their own precision.

Per-job speed options (token merging, negative guidance minimum sigma) are job parameters
instead: see modules.generation.params.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import torch

    from modules.models.loaded import LoadedModel

log = logging.getLogger(__name__)

COMPILE_TARGETS = ("none", "unet", "unet+vae")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FP8_CHOICES = ("Disable", "Enable for SDXL", "Enable")  # A1111's fp8_storage values
FP8_FORMATS = ("e4m3fn", "e5m2")  # torch.float8_<format>; Forge's --unet-in-fp8-<format> flags
# The settings' labels for the compile targets (Settings > Optimizations).
COMPILE_LABELS = {"none": "Disable", "unet": "UNet", "unet+vae": "UNet and VAE decoder"}


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False
    tf32: bool = True
    compile: str = "none"  # one of COMPILE_TARGETS
    compile_mode: str = "default"  # one of COMPILE_MODES
    fp8_storage: str = "Disable"  # one of FP8_CHOICES
    fp8_format: str = "e4m3fn"  # one of FP8_FORMATS

    def __post_init__(self):
        for name, value, allowed in (("compile", self.compile, COMPILE_TARGETS), ("compile_mode", self.compile_mode, COMPILE_MODES),
                                     ("fp8_storage", self.fp8_storage, FP8_CHOICES), ("fp8_format", self.fp8_format, FP8_FORMATS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], args: Any = None) -> "SpeedOptions":
        """The settings' choices (Settings > Optimizations), with the command-line flags winning
        where given: --opt-channelslast, --no-tf32, --compile, --compile-mode and Forge's
        --unet-in-fp8-e4m3fn / --unet-in-fp8-e5m2."""
        label_to_target = {label: target for target, label in COMPILE_LABELS.items()}
        compile_target = label_to_target.get(values.get("sd_compile", "Disable"), "none")
        fp8, fp8_format = values.get("fp8_storage", "Disable"), "e4m3fn"
        if fp8 not in FP8_CHOICES:
            fp8 = "Disable"
        if args is not None:
            compile_target = getattr(args, "compile", None) or compile_target
            for name in FP8_FORMATS:
                if getattr(args, f"unet_in_fp8_{name}", False):
                    fp8, fp8_format = "Enable", name
        mode = (getattr(args, "compile_mode", None) if args is not None else None) or values.get("sd_compile_mode", "default")
        return cls(
            channels_last=bool(values.get("opt_channelslast", False)) or bool(getattr(args, "opt_channelslast", False)),
            tf32=bool(values.get("opt_tf32", True)) and not getattr(args, "no_tf32", False),
            compile=compile_target,
            compile_mode=mode if mode in COMPILE_MODES else "default",
            fp8_storage=fp8,
            fp8_format=fp8_format,
        )

    def model_part(self) -> "SpeedOptions":
        """What changes the loaded model (a change needs a reload); TF32 is process-wide and
        is switched without one."""
        return replace(self, tf32=SpeedOptions.tf32)

    def fp8_for(self, arch: str) -> bool:
        return self.fp8_storage == "Enable" or (self.fp8_storage == "Enable for SDXL" and arch.startswith("sdxl"))


def apply(model: "LoadedModel", options: SpeedOptions) -> tuple[str, ...]:
    """Apply the model-wide options to a freshly loaded model, before offload hooks (TF32 is
    `set_tf32`'s, process-wide); returns what was applied, for the log. Records the fp8 choice
    in `model.extra["fp8_storage"]` for the infotext."""
    import torch

    applied: list[str] = []
    if options.channels_last:
        model.unet.to(memory_format=torch.channels_last)
        model.vae.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    stored = model.extra.get("weights_fp8") or model.extra.get("weights_quantized")  # the file's own fp8 or GGUF storage
    if options.fp8_for(model.arch) and model.device.type == "mps":
        log.warning("FP8 weight storage is not used on Apple GPUs (MPS has no float8).")
    elif options.fp8_for(model.arch) and stored:
        log.info("FP8 weight storage: the checkpoint's transformer is stored as %s already.", stored)
    elif options.fp8_for(model.arch):
        storage = getattr(torch, f"float8_{options.fp8_format}")
        model.unet.enable_layerwise_casting(storage_dtype=storage, compute_dtype=model.dtype)
        model.extra["fp8_storage"] = options.fp8_storage
        applied.append(f"fp8 {options.fp8_format} UNet weights")
    else:
        model.extra.pop("fp8_storage", None)
    if options.compile != "none":
        compile_model(model, options)
        applied.append(f"torch.compile {options.compile} ({options.compile_mode})")
    return tuple(applied)


def set_tf32(device: torch.device, on: bool) -> bool:
    """TF32 for float32 matmuls and convolutions, on CUDA GPUs that have it (compute capability
    8 and up); returns whether it is on. torch keeps this process-wide."""
    import torch

    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    on = on and torch.cuda.get_device_capability(device)[0] >= 8
    # The long-standing switches: torch 2.9's per-backend fp32_precision cannot be mixed with
    # them, and inductor's autotuning still reads get_float32_matmul_precision().
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
    return on


def compile_model(model: "LoadedModel", options: SpeedOptions) -> None:
    """torch.compile of the modules' `forward`, in place, so every holder of `model.unet`
    (runner, ControlNet, LoRA loader) calls the compiled code and it survives across jobs. A
    forward pre-hook, which runs before the compiled forward, marks the batch dimension of the
    UNet's inputs dynamic, so CFG on/off and batch sizes share one graph; the first call of
    each new image size pays the compile."""
    import torch

    for module in (model.unet, *([model.vae.decoder] if options.compile == "unet+vae" else [])):
        module.register_forward_pre_hook(_dynamic_batch, with_kwargs=True)
        module.forward = torch.compile(module.forward, mode=options.compile_mode)
    model.extra["compiled"] = options.compile
    log.info("torch.compile (%s, mode %s): the first job of each size compiles (tens of seconds, minutes for SDXL)",
             options.compile, options.compile_mode)


def _dynamic_batch(module, args, kwargs):
    """Mark dim 0 of the batched inputs as maybe-dynamic before dynamo sees them."""
    import torch
    from torch._dynamo import maybe_mark_dynamic

    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            maybe_mark_dynamic(value, 0)
        elif isinstance(value, dict):  # SDXL's added_cond_kwargs
            for inner in value.values():
                if isinstance(inner, torch.Tensor) and inner.dim() > 0:
                    maybe_mark_dynamic(inner, 0)
    return None
