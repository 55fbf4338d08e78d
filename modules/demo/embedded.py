"""Where the shipped demo model lives, and the names it goes by."""

from __future__ import annotations

from pathlib import Path

FILE_NAME = "demo-shapes-64px.safetensors"
CONFIG_NAME = "demo-shapes"  # configs/<CONFIG_NAME>/, also the architecture name the loader detects
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
EMBEDDED_PATH = REPO_ROOT / "models" / "Stable-diffusion" / FILE_NAME
