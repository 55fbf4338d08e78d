"""A real queue, generation service and script runner on the tiny checkpoint, for script tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from modules.jobs.generation_task import GenerationService
from modules.jobs.queue import Job, JobQueue
from modules.models.catalog import HashCache
from modules.models.manager import ModelManager
from modules.options import OutputSettings
from modules.scripts.base import ScriptRequest, ScriptResult
from modules.scripts.runner import ScriptRunner
from tests.scripts import classic

classic.register()  # before the test modules import sdext_classic_scripts.*

DAY = datetime(2026, 12, 6, 12, 0)


class _Settings:
    """The few settings the runner reads (a SettingsStore stand-in)."""

    def __init__(self, **values):
        self.values = {"script_max_jobs": 200, **values}

    def __getitem__(self, key):
        return self.values[key]

    def get(self, key, default=None):
        return self.values.get(key, default)


@dataclass
class ScriptApp:
    queue: JobQueue
    service: GenerationService
    models: ModelManager
    runner: ScriptRunner
    settings: _Settings
    data: Path

    def request(self, kind: str, params, init=None, save: bool | None = None) -> ScriptRequest:
        return ScriptRequest(kind, params, init, self.models.pin(), None, (), save)

    def start(self, title: str, kind: str, params, args, init=None, user: str = "", save: bool | None = None, on_submit=None):
        return self.runner.start(title, self.request(kind, params, init, save), args, user=user, on_submit=on_submit)

    def run(self, title: str, kind: str, params, args, init=None, user: str = "", save: bool | None = None) -> ScriptResult:
        """Run a script to its end; its error (a ValueError from a job) is raised here."""
        run = self.start(title, kind, params, args, init, user, save)
        assert run.done.wait(300), f"{title} did not finish"
        if run.error is not None:
            raise ValueError(run.error)
        return run.result

    def single(self, params, init=None):
        """The single job a request with these params makes (the reference a script's cell must equal)."""
        job = Job(id="task(single)", kind="single", task=lambda j: None)
        if init is None:
            return self.service.run_txt2img(job, params, save=False, checkpoint=self.models.pin())
        return self.service.run_img2img(job, params, init, save=False, checkpoint=self.models.pin())


@pytest.fixture(scope="module")
def script_app(tmp_path_factory, tiny_checkpoint, configs_dir):
    """Two checkpoints in a fresh data folder: the tiny one (loaded) and `tiny-other` (other weights)."""
    from modules.generation.devices import device_settings
    from modules.models.tiny import write_tiny_checkpoint

    data = tmp_path_factory.mktemp("scripts-data")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (ckpts / tiny_checkpoint.name).write_bytes(tiny_checkpoint.read_bytes())
    write_tiny_checkpoint(ckpts / "tiny-other.safetensors", configs_dir, seed=7)
    models = ModelManager((ckpts,), configs_dir, lambda: device_settings(use_cpu=True), HashCache(data / "cache.json"))
    models.load(tiny_checkpoint.name)
    service = GenerationService(models, OutputSettings(), data, console_progress=False, clock=lambda: DAY)
    queue = JobQueue()
    settings = _Settings()
    runner = ScriptRunner.for_app(queue, service, settings)
    yield ScriptApp(queue, service, models, runner, settings, data)
    queue.shutdown()
