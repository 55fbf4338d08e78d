"""The Train tab: A1111's place for training, with a LoRA sub-tab (kohya's options, run as a
queue job) and the textual-inversion sub-tabs (modules/ui/train_embedding.py).

The LoRA controls are built from `LoraTrainingParams`' field definitions, so the page and the
API route take the same values. While a run trains, a timer polls the run folder through
`TrainingService.view` (the same record the API reads, which survives a restart) and the job's
place in the queue; nothing is kept here but the page's own state. So a page opened (or
reloaded) while a run trains, whoever started it and however, follows it like its own.

A checkpoint whose config folder's webui.json has a "training" object (the demo model's 64 px
recipe) gives the controls its values, as txt2img takes a model's "defaults".
"""

from __future__ import annotations

import html
import typing
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from fastapi.concurrency import run_in_threadpool

from modules.jobs.queue import FINISHED, Job, JobQueue, JobStatus, QueueStopped, login_of
from modules.models.hints import ModelHints
from modules.training.params import LoraTrainingParams
from modules.training.routes import LORA_KIND, job_run_name, run_job
from modules.ui.common import page_user

if TYPE_CHECKING:
    from modules.training.service import TrainingService
    from webui import App

PREFIX = "train_lora"
# The sub-tab's first rows; the rest go into the accordions below, in this order.
MAIN_FIELDS = ("output_name", "train_data_dir", "checkpoint", "caption_template", "trigger_word")
NETWORK_FIELDS = ("network_dim", "network_alpha", "learning_rate", "lr_scheduler", "max_train_steps", "max_train_epochs",
                  "train_batch_size", "resolution")
ACCORDIONS = (  # (title, elem_id suffix, fields)
    ("Learning rates and optimizer", "rates", ("unet_lr", "text_encoder_lr", "lr_warmup_steps", "optimizer_type")),
    ("Conv layers (LoCon)", "locon", ("conv_dim", "conv_alpha")),
    ("Dataset and captions", "dataset", ("caption_extension", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                                         "bucket_reso_steps", "caption_dropout_rate", "shuffle_caption", "keep_tokens", "network_train_unet_only")),
    ("Noise, seed and precision", "noise", ("noise_offset", "min_snr_gamma", "seed", "mixed_precision", "gradient_checkpointing")),
    ("Samples, copies and scores", "sampling", ("sample_every_n_steps", "sample_steps", "sample_seed", "sample_prompts",
                                                "save_every_n_steps", "eval_every_n_steps", "eval_images_per_prompt", "eval_prompts")),
)
NUMBER_BOXES = {"learning_rate", "unet_lr", "text_encoder_lr", "network_alpha", "min_snr_gamma", "seed", "sample_seed"}
METRICS = {"FID": "fid", "KID": "kid", "CLIP score": "clip_score", "Judge": "judge"}


def build_train_tab(app: "App") -> None:
    """The Train tab with its sub-tabs; the LoRA one says so when training is not set up."""
    from modules.ui.train_embedding import build_embedding_tabs

    with gr.Tab("Train", id="train", elem_id="tab_train") as tab:
        with gr.Tabs(elem_id="train_tabs"):
            with gr.Tab("LoRA", id="train_lora", elem_id="tab_train_lora"):
                service = getattr(app, "training", None)
                if service is None:
                    gr.Markdown("LoRA training is not set up on this server.")
                else:
                    LoraTab(app.queue, service, app.models).build(tab)
            build_embedding_tabs(app)


def lora_control(name: str) -> gr.components.Component:
    """One control from the field's label, range, choices and type."""
    meta = LoraTrainingParams.field_meta(name)
    annotation = LoraTrainingParams.model_fields[name].annotation
    default, label, elem_id = meta["default"], meta["label"], f"{PREFIX}_{name}"
    low, high = meta.get("minimum"), meta.get("maximum")
    if "choices" in meta:
        return gr.Dropdown(list(meta["choices"]), value=default, label=label, elem_id=elem_id)
    if annotation is bool:
        return gr.Checkbox(value=default, label=label, elem_id=elem_id)
    if annotation is str:
        return gr.Textbox(value=default, label=label, elem_id=elem_id)
    if typing.get_origin(annotation) is tuple:
        return gr.Textbox(value="\n".join(default), label=label, lines=3, elem_id=elem_id)
    whole = annotation is int
    if name not in NUMBER_BOXES and low is not None and high is not None and (whole and (high - low <= 256 or "step" in meta)
                                                                             or not whole and high <= 1):
        step = meta.get("step", 1 if whole else 0.01)
        return gr.Slider(low, high, value=default, step=step, label=label, elem_id=elem_id)
    return gr.Number(value=default, label=label, precision=0 if whole else None, minimum=low, maximum=high, elem_id=elem_id)


def loss_frame(losses: list[tuple[int, float]]) -> pd.DataFrame:
    """Typed columns even when empty: the plot keeps the axis kinds of its first value, and an
    untyped empty frame would make the loss axis a list of labels instead of a scale."""
    return pd.DataFrame({"step": pd.Series([int(s) for s, _ in losses], dtype="int64"),
                         "loss": pd.Series([float(v) for _, v in losses], dtype="float64")})


def scores_frame(views: list[Any], key: str) -> pd.DataFrame:
    """One row per (run, step) that has a `key` score, for the comparison plot."""
    rows = [(view.name, int(score["step"]), float(score[key])) for view in views for score in view.scores
            if score.get(key) is not None]
    return pd.DataFrame({"run": pd.Series([r[0] for r in rows], dtype="object"), "step": pd.Series([r[1] for r in rows], dtype="int64"),
                         "value": pd.Series([r[2] for r in rows], dtype="float64")})


def scores_notes(views: list[Any]) -> str:
    """Each run's latest scores and why any is missing (no Inception weights, no CLIP, ...)."""
    lines = []
    for view in views:
        if not view.scores:
            lines.append(f"**{view.name}**: no scores yet.")
            continue
        last = view.scores[-1]
        shown = ", ".join(f"{label} {last[key]:.4g}" for label, key in METRICS.items() if last.get(key) is not None)
        notes = last.get("notes") or []
        notes = [notes] if isinstance(notes, str) else list(notes)
        lines.append(f"**{view.name}** at step {last.get('step')}: {shown or 'none'}" + "".join(f"  \n{n}" for n in notes))
    return "\n\n".join(lines)


def status_text(view: Any | None, job: Job | None, queue: JobQueue) -> str:
    """The status line: the queue position while waiting, then steps, rate and ETA, then the outcome."""
    if job is not None and job.status is JobStatus.QUEUED:
        position = queue.position(job)
        return f"Waiting in the queue: {position} of {queue.pending_count()}." if position else "Starting…"
    if job is not None and job.status is JobStatus.RUNNING:
        p = job.progress
        rate = f", {view.rate:.2f} steps/s" if view is not None and view.rate else ""
        if not p.steps:
            return "Training: loading the model and the pictures…"
        # from the steps' own rate when the log has one: the job's clock also counts loading the model
        eta = (p.steps - p.step) / view.rate if view is not None and view.rate else p.eta_seconds()
        return f"Training: Step {p.step}/{p.steps}{rate}" + (f", ETA {_duration(eta)}" if eta is not None else "") + "."
    if view is None:
        return job.error or "" if job is not None else ""
    text = f"Run {view.name}: {view.status}, {view.steps_done}/{view.total_steps} steps."
    if job is not None and job.status is JobStatus.FAILED and job.error:
        return f"{text} {job.error}"
    if view.message:  # the service's own account: what was saved, or why it failed
        return f"{text} {view.message}"
    return f"{text} LoRA {view.lora.name}." if view.lora is not None else text


def checkpoint_hints(models: Any, title: str | None) -> ModelHints:
    """The guide of checkpoint `title` (None: the one in use) without loading it: the loaded
    model's own hints, else those of the config folder it would be loaded with; none when the
    file cannot be read (the run's own check says why when it starts)."""
    info = models.find(title) if title else models.current
    if info is None:
        return ModelHints()
    active = models.active
    if active is not None and active.info.path == info.path:
        return active.hints
    if info.path.is_dir():  # a diffusers folder holds its own config
        return ModelHints.read(info.path)
    from modules.models.arch import detect_architecture, read_checkpoint_shapes
    from modules.models.loader import choose_config

    try:
        return ModelHints.read(choose_config(info.path, detect_architecture(read_checkpoint_shapes(info.path)), models.configs_dir).folder)
    except (OSError, ValueError):
        return ModelHints()


def hint_text(training: dict[str, Any], applied: list[str], kept: list[str]) -> str:
    """The line under the checkpoint menu: which values came from the model's guide."""
    if not training:
        return ""
    label = lambda name: LoraTrainingParams.field_meta(name)["label"].split(" (")[0]  # noqa: E731
    shown = ", ".join(f"{label(n)} {_said(value)}" for n, value in training.items() if n in applied)  # in the guide's order
    text = f"From this model's guide: {shown}." if shown else ""
    if kept:
        text += f" {'Kept' if shown else 'The guide suggests other values; kept'} your own: " + ", ".join(
            f"{label(n)} (guide: {_said(value)})" for n, value in training.items() if n in kept) + "."
    return text.strip()


def _said(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(value: Any) -> Any:
    """A value as its control shows it: prompt lists one per line."""
    return "\n".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _same(a: Any, b: Any) -> bool:
    """Whether a control's value is `b`: numbers by value (a Number box gives 8.0 for 8),
    prompt lists as the box's lines."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return _shown(a) == _shown(b)
    return a == b


def _pictures(paths: list) -> list:
    """The sample files as pictures: the run folder is not one the page serves files from."""
    from PIL import Image

    pictures = []
    for path in paths:
        try:
            with Image.open(path) as image:
                pictures.append(image.convert("RGB"))
        except OSError:  # being written, or removed: the next tick shows it
            continue
    return pictures


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LoraTab:
    """The LoRA sub-tab's controls and handlers over the queue and the training service."""

    def __init__(self, queue: JobQueue, service: "TrainingService", models: Any):
        self.queue, self.service, self.models = queue, service, models

    def titles(self) -> list[str]:
        return list(self.models.titles())

    def current_title(self) -> str:
        chosen = self.models.selected or self.models.current  # what jobs submitted now run on
        return chosen.title if chosen is not None else ""

    def build(self, tab: gr.Tab) -> dict[str, gr.components.Component]:
        """The sub-tab's controls (returned by field name) and their handlers."""
        controls: dict[str, gr.components.Component] = {}
        gr.Markdown("Train a LoRA on the checkpoint below from a folder of pictures with captions (a `.txt` beside each picture, "
                    "or the caption template: `[trigger]` is the trigger word, `[filewords]` the caption file). It runs as a "
                    "queue job and saves `models/Lora/<name>.safetensors`.", elem_id=f"{PREFIX}_intro")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    for name in MAIN_FIELDS:
                        controls[name] = (self._checkpoint_menu() if name == "checkpoint" else lora_control(name))
                hint_note = gr.Markdown("", elem_id=f"{PREFIX}_checkpoint_hint")
                with gr.Row():
                    for name in NETWORK_FIELDS:
                        controls[name] = lora_control(name)
                placed = {*MAIN_FIELDS, *NETWORK_FIELDS, *(n for _, _, names in ACCORDIONS for n in names)}
                others = tuple(n for n in LoraTrainingParams.model_fields if n not in placed)  # a new field shows up here
                for title, suffix, names in (*ACCORDIONS, *((("More", "more", others),) if others else ())):
                    with gr.Accordion(title, open=False, elem_id=f"{PREFIX}_{suffix}_box"):
                        with gr.Row():
                            for name in names:
                                controls[name] = lora_control(name)
            with gr.Column(scale=2):
                with gr.Row():
                    train = gr.Button("Train LoRA", variant="primary", elem_id=f"{PREFIX}_start", scale=3)
                    interrupt = gr.Button("Interrupt", elem_id=f"{PREFIX}_interrupt", scale=1)
                status = gr.Markdown("", elem_id=f"{PREFIX}_status")
                loss = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Loss", label="Loss", elem_id=f"{PREFIX}_loss", height=240)
                samples = gr.Gallery(label="Samples", columns=4, height=260, elem_id=f"{PREFIX}_samples", interactive=False)
                with gr.Row():
                    run = gr.Dropdown(self.service.run_names(), value=None, label="Show run", elem_id=f"{PREFIX}_run", scale=4)
                    refresh = gr.Button("🔄", elem_id=f"{PREFIX}_refresh", size="sm", scale=0, min_width=40)
        with gr.Accordion("Compare runs: scores per step", open=False, elem_id=f"{PREFIX}_compare_box"):
            with gr.Row():
                compare = gr.Dropdown(self.service.run_names(), value=[], multiselect=True, label="Runs", elem_id=f"{PREFIX}_compare", scale=4)
                metric = gr.Radio(list(METRICS), value="FID", label="Score", elem_id=f"{PREFIX}_metric", scale=2)
            # Points, not lines: a run is scored a few times, often once at the end. It starts as None: a plot
            # with a colour column whose first value is an empty frame draws no marks for later data (gradio 6).
            score_plot = gr.ScatterPlot(None, x="step", y="value", color="run", title="Scores", label="Scores",
                                        elem_id=f"{PREFIX}_scores", height=260)
            notes = gr.Markdown("", elem_id=f"{PREFIX}_score_notes")

        job_id = gr.State(None)  # the job this page started or watches
        shown_step = gr.State(-1)  # the step whose samples the gallery shows (-1: none yet for this run)
        hinted = gr.State(None)  # (checkpoint title, its training hints) the controls were last given
        timer = gr.Timer(1.0, active=False)
        live = [status, loss, samples, shown_step, timer]
        hintable = {name: control for name, control in controls.items() if name != "checkpoint"}
        fields = list(hintable)

        async def start(values: dict, request: gr.Request):
            chosen = {name: values[control] for name, control in controls.items()}
            try:
                params = LoraTrainingParams.from_request(self._request(chosen))
                job = await run_in_threadpool(self.service.submit, self.queue, params, page_user(request))  # checks first
            except (ValueError, QueueStopped) as exc:  # AccessRefused is a ValueError too
                gr.Warning(str(exc), duration=20)
                return [f"**Not started.** {html.escape(str(exc))}", gr.update(), gr.update(), -1, gr.Timer(active=False), None,
                        gr.update()]
            names = self.service.run_names()
            return [status_text(None, job, self.queue), loss_frame([]), [], -1, gr.Timer(active=True), job.id,
                    gr.update(choices=self._with(names, params.output_name), value=params.output_name)]

        def show(name: str | None, watched: str | None):
            """Another run picked: show it from the start; poll while its job runs."""
            job = self._job(name, None)
            return [*self._live(name, job.id if job is not None else None, -1), job.id if job is not None else None]

        def stop(name: str | None, watched: str | None, request: gr.Request):
            level, said = self.interrupt(name, watched, page_user(request))
            (gr.Warning if level == "warning" else gr.Info)(said)

        def rescan(name: str | None, chosen: list[str]):
            names = self.service.run_names()
            return (gr.update(choices=names, value=name if name in names else None),
                    gr.update(choices=names, value=[c for c in chosen or [] if c in names]))

        def compare_scores(chosen: list[str], label: str):
            views = [v for v in map(self._view, chosen or []) if v is not None]
            frame = scores_frame(views, METRICS.get(label, "fid"))
            return (frame if len(frame) else None), scores_notes(views)

        def checkpoint_picked(title: str | None, last: Any, *values: Any):
            return self.hint_updates(title, last, dict(zip(fields, values)), hintable)

        train.click(start, set(controls.values()), [*live, job_id, run], concurrency_limit=None, api_name=False)
        timer.tick(self._live, [run, job_id, shown_step], live, api_name=False, show_progress="hidden")
        run.select(show, [run, job_id], [*live, job_id], api_name=False)
        interrupt.click(stop, [run, job_id], None, api_name=False)
        refresh.click(rescan, [run, compare], [run, compare], queue=False, api_name=False)
        compare.change(compare_scores, [compare, metric], [score_plot, notes], api_name=False)
        metric.change(compare_scores, [compare, metric], [score_plot, notes], api_name=False)
        hinted_outputs = [*hintable.values(), hint_note, hinted]
        controls["checkpoint"].input(checkpoint_picked, [controls["checkpoint"], hinted, *hintable.values()], hinted_outputs,
                                     api_name=False)
        following = [run, compare, *live, job_id]
        # A page opened while a run trains (started over the API, or before a reload) shows it at once.
        gr.on(None, lambda: self.follow(None, []), None, following, api_name=False, show_progress="hidden")

        def opened(name: str | None, chosen: list[str], last: Any, *values: Any):
            """On opening the tab: the checkpoint in use chosen (its guide's training values set), and
            the runs now, following the one that trains (see `follow`)."""
            title = self.current_title() or None
            return (gr.update(choices=self.titles(), value=title), *self.follow(name, chosen),
                    *self.hint_updates(title, last, dict(zip(fields, values)), hintable))

        tab.select(opened, [run, compare, hinted, *hintable.values()], [controls["checkpoint"], *following, *hinted_outputs],
                   queue=False, api_name=False)
        return controls

    def interrupt(self, name: str | None, watched: str | None, user: str) -> tuple[str, str]:
        """Stop the shown run's job, whoever started it and however, but a logged-in user's
        only for that user. Returns ("info" or "warning", the sentence to show)."""
        job = self._job(name, watched)
        if job is None:
            return "info", "No training job of this run is waiting or running."
        if login_of(job.user) and job.user != user:
            return "warning", "That training run was started by someone else."
        self.queue.interrupt(job.id)
        return "info", "Interrupting: the run saves what it has learnt so far."

    def follow(self, name: str | None, chosen: list[str]) -> list:
        """The "Show run" menu filled and the run to show, followed: `name` while its job is
        waiting or running, else the run that trains now (the running one before a waiting one),
        else `name` if it is still there, else the newest. Outputs: run menu, compare menu, the
        live outputs (`_live`) and the watched job's id."""
        names = self.service.run_names()
        training = self._training_runs()
        if not (name in names and name in training):
            name = next((n for n in training if n in names), name if name in names else (names[0] if names else None))
        job = run_job(self.queue, name) if name else None
        watched = job.id if job is not None else None
        return [gr.update(choices=names, value=name), gr.update(choices=names, value=[c for c in chosen or [] if c in names]),
                *self._live(name, watched, -1), watched]

    def hint_updates(self, title: str | None, last: Any, values: dict[str, Any],
                     controls: dict[str, gr.components.Component]) -> list:
        """Give the controls checkpoint `title`'s training values (its webui.json "training") and
        say so under the menu. As txt2img does with a model's defaults: a control takes the
        model's value only while the user has not changed it (it shows the usual default, or the
        value the previous model's guide gave) and no ui-config.json default of the user's own
        replaces the built-in one; the previous model's values the user kept go back to the usual
        defaults. `last` is the (title, values) the controls were given before. Outputs: one
        update per control, the note, the new `last`."""
        old_title, old = last if last else (None, {})
        if last and title == old_title:  # the same model: nothing to change (and no typing overwritten)
            return [gr.update() for _ in controls] + [gr.update(), gr.update()]
        new = dict(checkpoint_hints(self.models, title).training)
        updates, applied, kept = [], [], []
        for name, control in controls.items():
            usual, current = control.value, values.get(name)
            untouched = _same(current, usual) or (name in old and _same(current, old[name]))
            if name in new:
                if untouched and _same(usual, LoraTrainingParams.field_meta(name)["default"]):
                    updates.append(gr.update(value=_shown(new[name])))
                    applied.append(name)
                else:
                    updates.append(gr.update())
                    kept.append(name)
            elif name in old and _same(current, old[name]):
                updates.append(gr.update(value=usual))
            else:
                updates.append(gr.update())
        return [*updates, hint_text(new, applied, kept), (title, new)]

    # -- helpers ---------------------------------------------------------------------------

    def _checkpoint_menu(self) -> gr.Dropdown:
        meta = LoraTrainingParams.field_meta("checkpoint")
        current = self.current_title()
        return gr.Dropdown(self.titles(), value=current or None, label=meta["label"].split(" (")[0], elem_id=f"{PREFIX}_checkpoint",
                           info="The model the LoRA is trained on; it starts as the one in use.")

    @staticmethod
    def _request(values: dict[str, Any]) -> dict[str, Any]:
        """The page's values as the API's body: empty boxes mean the default, the checkpoint
        menu's None the one in use, whole-number boxes whole numbers."""
        request = {}
        for name, value in values.items():
            if value is None or (isinstance(value, str) and not value.strip() and name not in ("caption_template", "trigger_word")):
                continue
            if LoraTrainingParams.model_fields[name].annotation is int and isinstance(value, float) and value.is_integer():
                value = int(value)
            request[name] = value
        return request

    @staticmethod
    def _with(names: list[str], name: str) -> list[str]:
        return names if name in names else [name, *names]

    def _training_runs(self) -> list[str]:
        """Runs with a training job not finished: the running ones first, then the waiting ones,
        each in the queue's order."""
        jobs = [job for job in self.queue.list() if job.kind == LORA_KIND and job.status not in FINISHED]
        jobs.sort(key=lambda job: job.status is not JobStatus.RUNNING)  # stable: the queue's order within each
        return [name for name in map(job_run_name, jobs) if name]

    def _job(self, name: str | None, watched: str | None) -> Job | None:
        """The unfinished job of run `name`: the one this page started, else one in the queue."""
        job = self.queue.get(watched) if watched else None
        if job is not None and job.status not in FINISHED:
            return job
        if not name:
            return None
        return run_job(self.queue, name)

    def _view(self, name: str | None) -> Any | None:
        """Run `name` as its folder shows it; None before its folder exists or once it is gone."""
        try:
            return self.service.view(name) if name else None
        except KeyError:
            return None

    def _live(self, name: str | None, watched: str | None, step_shown: int) -> list:
        """Status, loss plot and the newest samples of run `name`; the timer runs while its job does."""
        job = self.queue.get(watched) if watched else None
        if job is None and name:
            job = self._job(name, None)
        view = self._view(name)
        active = job is not None and job.status not in FINISHED
        status = status_text(view, job, self.queue)
        if view is None:
            return [status, gr.update(), gr.update(), step_shown, gr.Timer(active=active)]
        gallery, shown = gr.update(), step_shown
        if not view.samples and step_shown == -1:  # a run shown afresh has no samples yet: not the last run's
            gallery, shown = gr.update(value=[], label="Samples"), 0
        if view.samples and view.samples[-1][0] != step_shown:
            step, paths = view.samples[-1]
            prompts = list(view.params.get("sample_prompts") or [])
            pictures = [(picture, f"step {step}: {prompts[k]}" if k < len(prompts) else f"step {step}")
                        for k, picture in enumerate(_pictures(paths))]
            gallery = gr.update(value=pictures, label=f"Samples at step {step}")
            shown = step if len(pictures) == len(paths) else step_shown  # one still being written: show it next tick
        return [status, loss_frame(view.losses), gallery, shown, gr.Timer(active=active)]
