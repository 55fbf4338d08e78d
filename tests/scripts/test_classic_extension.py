"""The built-in scripts as the built-in extension extensions-builtin/classic-scripts: they use
only the public extension API, load in A1111's menu order, and carry their manifest."""

from __future__ import annotations

import ast
from types import SimpleNamespace

from modules.extensions.layout import Manifest
from modules.scripts.registry import ScriptRegistry, builtin_scripts
from tests.scripts.classic import FOLDER

A1111_FILES = ["loopback.py", "outpainting_mk_2.py", "poor_mans_outpainting.py", "prompt_matrix.py", "prompts_from_file.py",
               "sd_upscale.py", "xyz_grid.py"]


def project_imports(path) -> list[str]:
    """The modules.* names a file imports (absolute imports only; relative ones stay inside the extension)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return [n for n in names if n == "modules" or n.startswith("modules.")]


def test_the_classic_scripts_import_nothing_from_modules_but_the_extension_api():
    files = sorted(FOLDER.rglob("*.py"))
    assert sorted(p.name for p in (FOLDER / "scripts").glob("*.py")) == A1111_FILES
    offending = {str(p.relative_to(FOLDER)): bad for p in files
                 if (bad := [n for n in project_imports(p) if n != "modules.extensions.api"])}
    assert offending == {}
    assert all("modules.extensions.api" in project_imports(FOLDER / "scripts" / name) for name in A1111_FILES)


def test_the_boundary_check_sees_a_forbidden_import(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from modules.generation.runner import InitImages\n    import modules.scripts.base as b\n")
    assert project_imports(sneaky) == ["modules.generation.runner", "modules.scripts.base"]


def test_the_extension_loads_in_a1111_menu_order_with_its_manifest():
    registry = ScriptRegistry(builtin_scripts())
    assert [s.title for s in registry.for_kind("txt2img")] == ["Prompt matrix", "Prompts from file or textbox", "X/Y/Z plot"]
    assert [s.title for s in registry.for_kind("img2img")] == [
        "Loopback", "Outpainting mk2", "Poor man's outpainting", "Prompt matrix", "Prompts from file or textbox", "SD upscale",
        "X/Y/Z plot"]
    assert all(type(s).__module__.startswith("sdext_classic_scripts.scripts.") for s in registry.for_kind("img2img"))
    manifest = Manifest.read(FOLDER)
    assert manifest.name == "Classic scripts" and "X/Y/Z plot" in manifest.description


def test_the_pages_xyz_picker_offers_the_samplers_the_extensions_plot_names():
    """The Script menu asks the script itself (QueueScript.axis_choices) what an axis offers."""
    import gradio as gr

    from modules.extensions.api import ScriptEnv, sampler_names
    from modules.ui.scripts import build_script_menu

    registry = ScriptRegistry(builtin_scripts())
    runner = SimpleNamespace(env=ScriptEnv(), registry=registry, titles=lambda kind: [s.title for s in registry.for_kind(kind)])
    with gr.Blocks() as blocks:
        panel = build_script_menu("txt2img", runner)
    x_type, x_text, x_picker = panel.controls["X/Y/Z plot"][:3]
    sampler = list(panel.specs["X/Y/Z plot"][0].choices).index("Sampler")
    handler = next(fn.fn for fn in blocks.fns.values() if (x_type._id, "change") in fn.targets)
    text, picker = handler(sampler, "Euler a, nonsense", [], False)
    assert picker["visible"] is True and text["visible"] is False
    assert picker["choices"] == sampler_names() and picker["value"] == ["Euler a"]
    assert handler(list(panel.specs["X/Y/Z plot"][0].choices).index("Steps"), "1,2", [], False)[1]["visible"] is False
