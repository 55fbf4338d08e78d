"""Reading a model file's tensors without running any of its code: safetensors, or torch's
weights-only unpickler. Every downloaded model (upscalers, face restorers, TAESD, interrogate)
goes through here, so a pickle that needs more than tensors is refused in one place."""

from __future__ import annotations

import pickle
import re
from pathlib import Path


def read_weights(path: Path, what: str) -> dict:
    """A model file's tensors, never running its code: safetensors, or torch's weights-only
    unpickler. Problems are ValueErrors that start with `what`."""
    import torch

    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights-only unpickler names the object it refused
        needed = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if needed is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", str(exc), re.S)
            reason = detail.group(1).strip() if detail else short_reason(exc)
            raise ValueError(f"{what} {path.name} cannot be read: corrupt or not a model file ({reason}).") from None
        raise ValueError(f"{what} {path.name} is not a plain weights file: it needs Python objects beyond tensors "
                         f"({needed.group(1)}), which are not loaded for safety. Use a .safetensors or weights-only .pth file.") from None
    except FileNotFoundError:
        raise ValueError(f"{what} {path.name} is gone from {path.parent}.") from None
    except Exception as exc:
        raise ValueError(f"{what} {path.name} cannot be read: corrupt or not a model file ({short_reason(exc)}).") from None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{what} {path.name} holds no weights (not a state dict).")
    return state


def short_reason(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
