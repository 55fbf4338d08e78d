"""An extension's requirements.txt is read before pip runs: one that would replace torch,
torchvision or torchaudio is refused with the line, the installed version and what it asks for."""

from __future__ import annotations

import pytest

from modules.extensions.requirements_check import check_requirements, protected_pins, unmet

INSTALLED = {"torch": "2.14.1+cpu", "torchvision": "0.29.1", "numpy": "2.1.0"}


def check(tmp_path, text: str, files: dict[str, str] | None = None, **kwargs):
    for name, body in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    (tmp_path / "requirements.txt").write_text(text)
    return check_requirements(tmp_path / "requirements.txt", tmp_path, installed=INSTALLED.get, allowed_indexes=("https://pypi.org/simple",))


@pytest.mark.parametrize("text", [
    "torch\ntorchvision>=0.20\nnumpy\n",
    "torch==2.14.1  # the one we have\n",
    "torch>=2.0,<3; python_version >= '3.8'\n",
    "torch==1.13.1; sys_platform == 'nonexistent'\n",  # for another platform
    "torchaudio==2.0.0\n",  # not installed: nothing to replace (the constraints keep torch)
    "--extra-index-url https://download.pytorch.org/whl/cu121\nnumpy\n",  # another index without a torch line
    "--index-url https://pypi.org/simple/\ntorch\n",
    "-r more.txt\n",
])
def test_requirements_that_leave_torch_alone_pass(tmp_path, text):
    lines = check(tmp_path, text, {"more.txt": "numpy\n"})
    assert lines


@pytest.mark.parametrize("text, message", [
    ("numpy\ntorch==1.13.1\n", r"requirements.txt line 2 \('torch==1.13.1'\) would replace torch 2.14.1\+cpu \(it asks for torch==1.13.1\)"),
    ("torchvision<0.20\n", r"line 1 \('torchvision<0.20'\) would replace torchvision 0.29.1 \(it asks for torchvision<0.20\)"),
    ("Torch >= 3\n", r"would replace torch 2.14.1\+cpu"),
    ("torch @ https://download.pytorch.org/whl/cpu/torch-2.0.0%2Bcpu-cp311-cp311-linux_x86_64.whl\n", "installs torch from a URL or file"),
    ("https://download.pytorch.org/whl/torch-2.0.0-cp311-cp311-linux_x86_64.whl\n", "installs torch from a URL or file"),
    ("./wheels/torchvision-0.15.0-cp311-none-any.whl\n", "installs torchvision from a URL or file"),
    ("-e git+https://github.com/pytorch/vision#egg=torchvision\n", "installs torchvision from a URL or file"),
    ("--extra-index-url https://download.pytorch.org/whl/cu118\ntorch\n",
     r"line 1 .* points pip at another package index \(https://download.pytorch.org/whl/cu118\) while requirements.txt line 2 \('torch'\) asks for torch"),
    ("-r more.txt\n", r"more.txt line 2 \('torch==2.0.0'\) would replace torch"),
    ("-r ../outside.txt\n", "includes a file outside the extension's folder"),
    ("-r missing.txt\n", "includes a file that does not exist"),
    ("torch==1.13.1 \\\n  --hash=sha256:abc\n", r"line 1 .*would replace torch"),
])
def test_requirements_that_would_replace_torch_are_refused(tmp_path, text, message):
    extension = tmp_path / "ext"
    extension.mkdir()
    (tmp_path / "outside.txt").write_text("numpy\n")
    with pytest.raises(ValueError, match=message):
        check(extension, text, {"more.txt": "numpy\ntorch==2.0.0\n"})


def test_unmet_lines_decide_whether_pip_runs(tmp_path):
    lines = check(tmp_path, "numpy>=2\ntorch\nnot-installed-package\nnumpy<2\n")
    assert [line.text for line in unmet(lines, installed=INSTALLED.get)] == ["not-installed-package", "numpy<2"]
    assert protected_pins(installed=INSTALLED.get) == ["torch==2.14.1+cpu", "torchvision==0.29.1"]
