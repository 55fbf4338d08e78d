"""The assembled app in-process: builds, generates and saves without touching the network."""

from __future__ import annotations


from PIL import Image

import webui
from modules.demo.embedded import EMBEDDED_PATH
from modules.generation.params import GenerationParams
from modules.jobs.queue import JobStatus
from modules.options import parse_args
from modules.version import VERSION


def test_first_start_offline_builds_page_generates_and_saves(tmp_path, no_network):
    args = parse_args(["--data-dir", str(tmp_path), "--disable-console-progressbars"])
    app = webui.App.create(args)
    try:
        app.build_asgi()
        assert app.start().wait(60)
        # No checkpoint of the user's own and no network: the shipped demo model, nothing written.
        assert app.models.active.info.path == EMBEDDED_PATH
        assert list((tmp_path / "models" / "Stable-diffusion").iterdir()) == []
        params = GenerationParams.create(prompt="offline", width=64, height=64, steps=3, seed=11, n_iter=2)
        job = app.queue.submit("txt2img", lambda j: app.service.run_txt2img(j, params))
        assert job.wait(60) and job.status is JobStatus.DONE, job.error
        paths = job.result.paths
        assert [p.name for p in paths] == ["00000-11.png", "00001-12.png"]
        assert paths[0].parent.parent == tmp_path / "outputs" / "txt2img-images"
        assert Image.open(paths[1]).info["parameters"].startswith("offline\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 12, Size: 64x64, Model hash: ")
        assert Image.open(paths[1]).info["parameters"].endswith(", Model: demo-shapes-64px, Version: " + VERSION)
        assert job.result.grid_path is not None and job.result.grid_path.name == "grid-0000.png"
    finally:
        app.queue.shutdown()
    assert no_network == []


def test_counter_continues_across_restarts(tmp_path):
    for expected in (["00000-5.png"], ["00001-5.png"]):
        app = webui.App.create(parse_args(["--data-dir", str(tmp_path), "--disable-console-progressbars"]))
        app.start()
        try:
            params = GenerationParams.create(prompt="again", width=64, height=64, steps=2, seed=5)
            job = app.queue.submit("txt2img", lambda j: app.service.run_txt2img(j, params))
            assert job.wait(60) and job.status is JobStatus.DONE, job.error
            assert [p.name for p in job.result.paths] == expected
        finally:
            app.queue.shutdown()


def test_switching_after_a_generation_frees_the_old_model_and_ckpt_path_is_loaded(tmp_path, tiny_checkpoint):
    import gc
    import weakref

    from modules.models import tiny
    from tests.conftest import CONFIGS

    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (ckpts / "a-first.safetensors").write_bytes(tiny_checkpoint.read_bytes())
    elsewhere = tiny.write_tiny_checkpoint(tmp_path / "elsewhere" / "z-mine.safetensors", CONFIGS, seed=7)
    app = webui.App.create(parse_args(["--data-dir", str(tmp_path), "--ckpt", str(elsewhere), "--disable-console-progressbars"]))
    try:
        assert app.start(str(elsewhere)).wait(60)
        assert app.models.active.info.path == elsewhere  # --ckpt wins over the first in the list
        params = GenerationParams.create(prompt="x", width=64, height=64, steps=2, seed=1)
        job = app.queue.submit("txt2img", lambda j: app.service.run_txt2img(j, params))
        assert job.wait(60) and job.status is JobStatus.DONE, job.error
        old_unet = weakref.ref(app.models.active.model.unet)
        switch = app.queue.submit("load_model", lambda j: app.models.load("a-first"))
        assert switch.wait(60) and switch.status is JobStatus.DONE, switch.error
        gc.collect()
        assert old_unet() is None, "the previous model is still held after the switch"
        job = app.queue.submit("txt2img", lambda j: app.service.run_txt2img(j, params))
        assert job.wait(60) and "Model: a-first," in job.result.infotexts[0]
    finally:
        app.queue.shutdown()
