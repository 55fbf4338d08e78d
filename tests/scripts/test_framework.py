"""The script framework itself: arguments read like A1111's script_args, a run queues each
of its jobs as the single job and waits for them, interrupt stops it, failures come back."""

from __future__ import annotations

import pytest
from PIL import ImageChops

from modules.generation.params import GenerationParams
from modules.scripts.args import ScriptArg, parse_args
from modules.scripts.base import Script, ScriptResult
from modules.scripts.registry import ScriptRegistry

ARGS = [
    ScriptArg("kind", "Kind", "index", 0, choices=("a", "b", "c")),
    ScriptArg("text", "Text", "text", ""),
    ScriptArg("count", "Count", "slider", 2, minimum=1, maximum=4, step=1),
    ScriptArg("flag", "Flag", "checkbox", True),
    ScriptArg("picks", "Picks", "multiselect", ["left"], choices=("left", "right")),
]


def test_positional_args_are_read_like_a1111_with_defaults_for_the_rest():
    assert parse_args("T", ARGS, [2, "hello"]) == {"kind": 2, "text": "hello", "count": 2, "flag": True, "picks": ["left"]}
    assert parse_args("T", ARGS, ["b", "x", 3.0, "false", "right"])["kind"] == 1
    assert parse_args("T", ARGS, {"count": 4})["count"] == 4


@pytest.mark.parametrize("values, words", [
    ([5], ["argument 0", "Kind", "out of range"]),
    ([0, "", 9], ["argument 2", "Count", "outside"]),
    ([0, "", 2, "maybe"], ["argument 3", "Flag"]),
    ([0, "", 2, True, ["a"], "extra"], ["at most 5"]),
    ("not a list", ["must be a list"]),
])
def test_wrong_args_are_refused_naming_the_argument(values, words):
    with pytest.raises(ValueError) as error:
        parse_args("T", ARGS, values)
    for word in words:
        assert word in str(error.value)


class Twice(Script):
    """A test script: the request's job twice, with seeds s and s+10."""

    title = "Twice"

    def args(self, env, img2img):
        return [ScriptArg("offset", "Offset", "int", 10, minimum=0, maximum=100)]

    def prepare(self, request, args, env):
        if request.params.seed < 0:
            raise ValueError("Twice needs a fixed seed")

        def run(ctx):
            cells = [request.params, request.params.model_copy(update={"seed": request.params.seed + args["offset"]})]
            result = ScriptResult(request.params)
            for child in ctx.run_all([{"params": p} for p in cells]):
                result.add(child)
            return result

        return run


def test_registry_finds_titles_in_any_case_and_lists_the_tab_scripts():
    registry = ScriptRegistry([Twice()])
    assert registry.find("twice", "txt2img").title == "Twice"
    with pytest.raises(ValueError, match="Scripts for txt2img: 'twice'"):
        registry.find("x/y/z plot", "txt2img")


@pytest.fixture(scope="module")
def app(script_app):
    script_app.runner.registry.add(Twice())
    return script_app


def test_each_job_of_a_run_is_the_single_job(app):
    script_app = app
    params = GenerationParams.create(prompt="a cat", width=64, height=64, steps=2, seed=3)
    submitted = []
    run = script_app.start("Twice", "txt2img", params, [5], on_submit=submitted.append)
    assert run.done.wait(300)
    assert run.error is None, run.error
    result = run.result
    assert len(result.images) == 2 and result.seeds == [3, 8] and len(submitted) == 2
    for image, seed in zip(result.images, result.seeds):
        single = script_app.single(params.model_copy(update={"seed": seed}))
        assert ImageChops.difference(image.convert("RGB"), single.images[0].convert("RGB")).getbbox() is None
    assert [job.kind for job in submitted] == ["txt2img", "txt2img"]


def test_a_bad_request_is_refused_before_any_job(app):
    script_app = app
    before = len(script_app.queue.list())
    with pytest.raises(ValueError, match="fixed seed"):
        script_app.start("Twice", "txt2img", GenerationParams.create(width=64, height=64, steps=2, seed=-1), [])
    with pytest.raises(ValueError, match="argument 0"):
        script_app.start("Twice", "txt2img", GenerationParams.create(width=64, height=64, steps=2, seed=1), [-1])
    assert len(script_app.queue.list()) == before


def test_another_users_job_takes_its_turn_between_a_plots_cells(script_app):
    """A plot's cells wait in its user's lane like any jobs: another user's job submitted while
    the first cell runs waits for one more of them at most (lanes take turns), not the plot."""
    import time

    params = GenerationParams.create(prompt="a cat", width=64, height=64, steps=3, seed=5)
    cells = []
    run = script_app.start("X/Y/Z plot", "txt2img", params, [4, "12,12,12,12", [], 0, "", [], 0, "", []], user="alice",
                           on_submit=cells.append)
    deadline = time.monotonic() + 60
    while not (cells and cells[0].status.value == "running") and time.monotonic() < deadline:
        time.sleep(0.01)
    other = script_app.queue.submit("txt2img", lambda j: script_app.single(params), user="bob")
    assert run.done.wait(300) and run.error is None, run.error
    assert other.wait(60)
    assert len(cells) == 4
    started = [c.progress.started_at for c in cells]
    assert started[1] < other.progress.started_at < started[2], "bob's job did not take the next turn"
