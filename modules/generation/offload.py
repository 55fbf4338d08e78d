"""A1111's --medvram and --lowvram: keep a model in system RAM and give the GPU only the part
that is running, for cards with less memory than the whole model needs.

- "model" (--medvram, or --medvram-sdxl on SDXL): one component at a time (text encoders,
  UNet, VAE), each moved to the GPU when it runs and sent home when another one starts. A
  component stays on the GPU across its calls, so the UNet moves once per job, not per step.
- "blocks" (--lowvram): the text encoders and the VAE as with "model"; the UNet is streamed
  by diffusers' group offloading, one resnet, attention or resampler at a time: on CUDA the
  weights wait in pinned memory and the next layer's copy runs on a side stream while the
  current one computes, so a step costs about max(compute, PCIe copy) instead of their sum.
  On the CPU (the tests) the same hooks run without streams and move nothing. The flags are
  CUDA-only (devices.py): diffusers' stream-less path does not send a ModelMixin group (the
  UNet's attentions) home, so it would save little memory on MPS.

Why two mechanisms: group offloading sends every group home after each forward, which for
"model" would copy the whole UNet in and out on every step; and the VAE's encode/decode
(diffusers' `apply_forward_hook`, modules/generation/vae_tiling.py) bring a VAE in through an
accelerate `_hf_hook`, which group offloading does not provide. So the components take turns
through a small accelerate hook of ours (`_Turn`), and only the UNet of "blocks" is grouped.
The images are the same as without offload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from accelerate.hooks import ModelHook, add_hook_to_module
from accelerate.utils import send_to_device

if TYPE_CHECKING:
    from modules.models.loaded import LoadedModel

MODES = ("none", "model", "blocks")
_UNET_BLOCKS = ("down_blocks", "mid_block", "up_blocks")


def offload(model: "LoadedModel", device: torch.device, mode: str, beside: "LoadedModel | None" = None) -> None:
    """Install the hooks on a model loaded on the CPU; `model.device` becomes `device`, where
    the core puts its tensors. "none" moves the whole model to `device` instead. `beside`: a
    model held at the same time (a job's refiner beside its checkpoint): both models' parts take
    turns on the GPU, so the idle one waits in system RAM (`leave` undoes it)."""
    if mode not in MODES:
        raise ValueError(f"Unknown offload mode {mode!r}; use one of {', '.join(MODES)}.")
    device = torch.device(device)
    encoders = [m for m in (model.text_encoder, model.text_encoder_2, model.text_encoder_3) if m is not None]
    if mode == "none":
        for module in (*encoders, model.unet, model.vae):
            module.to(device)
    else:
        shared = beside.extra.get("offload_turns") if beside is not None else None
        turns = shared if shared is not None and shared.device == device else _Turns(device)
        model.extra["offload_turns"] = turns
        for module in encoders:
            turns.hook(module)
        if mode == "model":
            turns.hook(model.unet)
        else:
            stream_blocks(model.unet, device)
            turns.join(model.unet)
        turns.hook(model.vae)
    model.device = device


def parts(model: "LoadedModel") -> list[torch.nn.Module]:
    """The model's components that hold weights: text encoders, UNet (or transformer), VAE."""
    return [m for m in (model.text_encoder, model.text_encoder_2, model.text_encoder_3, model.unet, model.vae) if m is not None]


def weight_bytes(model: "LoadedModel") -> int:
    """What the model's weights take on the GPU when all of it is there."""
    return sum(t.numel() * t.element_size() for m in parts(model) for t in (*m.parameters(), *m.buffers()))


def leave(model: "LoadedModel") -> None:
    """A model being dropped leaves the turns it shared with another, which would otherwise
    keep its parts alive. Its part on the GPU goes home first: once forgotten, no other part's
    turn would send it there."""
    turns = model.extra.pop("offload_turns", None)
    if turns is not None:
        mine = {id(m) for m in parts(model)}
        for part in turns.parts:
            if id(part) in mine and id(part) in turns.resident:
                part.to("cpu")
        turns.parts = [m for m in turns.parts if id(m) not in mine]
        turns.resident -= mine


def keep_whole(model: "LoadedModel", device: torch.device) -> None:
    """Undo "model" turns (`offload`): the parts lose their hooks and the whole model moves to
    `device` (the GPU, or the CPU to wait in system RAM)."""
    from accelerate.hooks import remove_hook_from_module

    leave(model)
    device = torch.device(device)
    for part in parts(model):
        remove_hook_from_module(part)
        part.to(device)
    model.device = device


def stream_blocks(unet: torch.nn.Module, device: torch.device) -> None:
    """diffusers' block-level group offloading of the UNet, one layer group (a resnet, an
    attention, a resampler of a down/mid/up block) at a time; its small top-level layers
    (conv_in, time embedding, conv_out) come in for each call. With CUDA: streams (the next
    group's copy overlaps this group's compute), pinned memory, record_stream. A Flux/SD3
    transformer streams one transformer block at a time (its block lists are top-level)."""
    from diffusers.hooks import apply_group_offloading

    streams = device.type == "cuda"
    # Recurse into each down/mid/up block (their indices name them inside the ModuleLists),
    # so a group is one of the block's layers rather than the whole block (up to 0.5 GiB each
    # on SD 1.5, 2.2 GiB on SDXL: a whole block plus the one prefetched would not fit 1.2 GiB).
    blocks = None  # a transformer: diffusers groups its top-level block lists itself
    if hasattr(unet, "down_blocks"):
        blocks = [*_UNET_BLOCKS, *map(str, range(max(len(unet.down_blocks), len(unet.up_blocks))))]
    apply_group_offloading(unet, onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
                           num_blocks_per_group=1, use_stream=streams, record_stream=streams, low_cpu_mem_usage=False,
                           block_modules=blocks)
    if streams:
        unet.register_forward_pre_hook(_PinnedParams(unet))


def is_streamed(module: torch.nn.Module) -> bool:
    """Whether `module` is group-offloaded (its weights come in per layer group)."""
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    return _is_group_offload_enabled(module)


class _Turns:
    """Whose turn it is on the GPU: a component about to run sends the others home first."""

    def __init__(self, device: torch.device):
        self.device = device
        self.parts: list[torch.nn.Module] = []
        self.resident: set[int] = set()  # ids of the parts moved to the GPU whole

    def hook(self, module: torch.nn.Module) -> None:
        """Move `module` whole to the GPU when it runs (its forward, or diffusers' VAE encode/decode)."""
        self.parts.append(module)
        add_hook_to_module(module, _Turn(self))

    def join(self, module: torch.nn.Module) -> None:
        """A part that brings its own weights in (the streamed UNet) but sends the others home first."""
        self.parts.append(module)
        module.register_forward_pre_hook(lambda m, args: self.take(m, whole=False))

    def take(self, module: torch.nn.Module, whole: bool = True) -> None:
        if id(module) in self.resident:
            return
        for other in self.parts:
            if other is not module and id(other) in self.resident:
                other.to("cpu")
                self.resident.discard(id(other))
        if whole:
            module.to(self.device)
            self.resident.add(id(module))


class _Turn(ModelHook):
    """accelerate's hook protocol (`_hf_hook`), which diffusers' VAE encode/decode and
    vae_tiling call before they use the VAE."""

    def __init__(self, turns: _Turns):
        self.turns = turns

    def init_hook(self, module):
        return module.to("cpu")

    def pre_forward(self, module, *args, **kwargs):
        self.turns.take(module)
        return send_to_device(args, self.turns.device), send_to_device(kwargs, self.turns.device)


class _PinnedParams:
    """With streams, group offloading copies each weight from a pinned copy made when it was
    applied; a LoRA injected later (peft adds lora_A/lora_B weights to the UNet's layers, and
    deleting an adapter removes them) has none. Before each UNet call, when the UNet's peft
    adapters are not the ones seen last (a cheap check: walking all weights costs ~2-8 ms a
    step), give the new weights their pinned copies and drop the gone ones."""

    def __init__(self, unet: torch.nn.Module):
        self.seen = self._adapters(unet)

    @staticmethod
    def _adapters(unet: torch.nn.Module) -> tuple[str, ...]:
        return tuple(getattr(unet, "peft_config", None) or ())

    def __call__(self, unet: torch.nn.Module, args) -> None:
        now = self._adapters(unet)
        if now != self.seen:
            refresh_pinned(unet)
            self.seen = now


def refresh_pinned(unet: torch.nn.Module) -> None:
    """Make the streamed groups' pinned copies match the UNet's weights now."""
    for group in _groups(unet):
        if group.stream is None:
            continue
        tensors = [t for m in group.modules for t in (*m.parameters(), *m.buffers())] + list(group.parameters) + list(group.buffers)
        live = {id(t) for t in tensors}
        for stale in [t for t in group.cpu_param_dict if id(t) not in live]:
            del group.cpu_param_dict[stale]
        for tensor in tensors:
            if tensor not in group.cpu_param_dict:
                pinned = tensor.data.to("cpu").pin_memory()
                tensor.data = pinned
                group.cpu_param_dict[tensor] = pinned


def _groups(module: torch.nn.Module) -> list:
    """The distinct group-offloading groups in `module`."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING

    found = {}
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hook = registry.get_hook(_GROUP_OFFLOADING) if registry is not None else None
        if hook is not None:
            found[id(hook.group)] = hook.group
    return list(found.values())
