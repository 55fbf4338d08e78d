"""The parts the txt2img and img2img tabs share: prompt row, sampling controls, seed row,
output panel, and the handler that runs a job on the queue and shows its result.

Controls are built from the parameter model's field definitions (labels, ranges, defaults),
so the page cannot drift from the API and the infotext.
"""

from __future__ import annotations

import asyncio
import html
import threading
import time
from dataclasses import dataclass, field
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from modules.generation import samplers
from modules.generation.params import SETTING_FIELDS, GenerationParams
from modules.jobs.queue import FINISHED, Job, JobQueue, JobStatus, done_future
from modules.ui.extra_networks import build_extra_networks
from modules.ui.styles import build_styles

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.ui.output_buttons import OutputButtons
    from modules.scripts.base import ScriptRequest
    from modules.scripts.runner import ScriptRun, ScriptRunner

# Values the output panel's handler returns, in this order.
OUTPUT_COUNT = 7
UPLOAD_SOURCES = ["upload", "clipboard"]  # picture inputs: upload (which also takes drag and drop) and paste


def slider(prefix: str, name: str, params: type[GenerationParams] = GenerationParams, **overrides: Any) -> gr.Slider:
    meta = params.field_meta(name)
    options = dict(
        minimum=meta.get("minimum"), maximum=meta.get("maximum"), step=meta.get("step", 1), value=meta["default"], label=meta["label"],
        elem_id=f"{prefix}_{name}",
    )
    return gr.Slider(**{**options, **overrides})


def infotext_html(text: str) -> str:
    return f"<div class='infotext notranslate'><p>{html.escape(text).replace(chr(10), '<br>')}</p></div>" if text else ""


@dataclass
class SessionJobs:
    """The unfinished jobs each browser session started, so Interrupt and Skip act on that
    session's jobs only (A1111's buttons stop whoever is running)."""

    _jobs: dict[str, list[Job]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: str, job: Job) -> None:
        with self._lock:
            self._prune()
            self._jobs.setdefault(session, []).append(job)

    def unfinished(self, session: str) -> list[Job]:
        with self._lock:
            self._prune()
            return list(self._jobs.get(session, []))

    def _prune(self) -> None:
        for session in list(self._jobs):
            self._jobs[session] = [j for j in self._jobs[session] if j.status not in FINISHED]
            if not self._jobs[session]:
                del self._jobs[session]


@dataclass(frozen=True)
class TopRow:
    prompt: gr.Textbox
    negative: gr.Textbox
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    prompt_column: gr.Column  # room under the prompts (the model guide)
    styles: gr.Dropdown  # styles.csv names applied when the job runs
    counters: tuple[gr.HTML, gr.HTML]  # under the prompt and the negative prompt
    paste: gr.Button  # ↙: read generation parameters from the prompt box
    networks: Any = None  # the Extra networks cards (extra_networks.ExtraNetworks): the tab wires "Replace preview" to its output

    def wire_counters(self, service: "GenerationService", steps: gr.Slider) -> None:
        """Keep the "N/75" counters current as the prompts, the chosen styles or the step count
        change: A1111 counts the prompts with their styles, over the schedule at that many steps."""

        def count(text: str, styles: list[str], step_count, negative: bool) -> str:
            try:
                return counter_html(*service.count_tokens(text or "", int(step_count or 20), negative, styles or ()))
            except Exception:  # the counter must never get in the way of typing
                return gr.update()

        for box, counter, negative in ((self.prompt, self.counters[0], False), (self.negative, self.counters[1], True)):
            handler = (lambda text, styles, n, negative=negative: count(text, styles, n, negative))
            for trigger in (box.change, self.styles.change, steps.change):
                trigger(handler, [box, self.styles, steps], counter, queue=False, api_name=False, trigger_mode="always_last")


@dataclass(frozen=True)
class Quicksettings:
    """What the tabs' Extra networks take from the page: its top row (checkpoint and VAE menus),
    which the Checkpoints and VAE cards set, and the app's one card cache."""

    checkpoint: Any = None  # gr.Dropdown
    vae: Any = None  # gr.Dropdown
    cards: Any = None  # modules.models.network_cards.NetworkCards (None: the tab makes its own)


def build_toprow(prefix: str, service: "GenerationService", quick: Quicksettings | None = None) -> TopRow:
    """Prompts with their token counters and the extra-network pickers; Generate, Interrupt,
    Skip and the styles beside them."""
    with gr.Row(elem_id=f"{prefix}_toprow"):
        with gr.Column(scale=6) as column:
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{prefix}_prompt", placeholder="Prompt\n(Press Ctrl+Enter to generate, Alt+Enter to skip, Esc to interrupt)")
            prompt_count = gr.HTML(counter_html(0, 75), elem_id=f"{prefix}_token_counter", elem_classes="token-counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt", placeholder="Negative prompt")
            negative_count = gr.HTML(counter_html(0, 75), elem_id=f"{prefix}_negative_token_counter", elem_classes="token-counter")
            networks = build_extra_networks(prefix, service, prompt, negative, quick or Quicksettings())
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}_generate", elem_classes="generate-button")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{prefix}_interrupt", size="sm")
                skip = gr.Button("Skip", elem_id=f"{prefix}_skip", size="sm")
            paste = gr.Button("↙ Read parameters from the prompt", elem_id=f"{prefix}_paste", size="sm")
            styles = build_styles(prefix, service, prompt, negative)
    return TopRow(prompt, negative, generate, interrupt, skip, column, styles, (prompt_count, negative_count), paste, networks)


@dataclass(frozen=True)
class PasteTarget:
    """A tab's controls by parameter name and its overrides state: where a pasted infotext
    (↙, or PNG Info's "Send to") lands."""

    fields: dict[str, Any]
    overrides: gr.State
    img2img: bool = False
    upscalers: Callable[[], tuple[str, ...]] = lambda: ()  # the model upscalers "Hires upscaler" may name
    extras: tuple = ()  # more targets with `outputs` and `updates(text)` (the ControlNet units)
    alwayson: Any = None  # the extensions' always-on scripts (modules.ui.alwayson.AlwaysOnPanel): their infotext_fields
    on_pasted: Callable[[str, dict], Any] | None = None  # the extensions' on_infotext_pasted callbacks
    active_model: Callable[[], str] = lambda: ""  # the checkpoint in use (its title): a picture made with it needs no note

    @property
    def outputs(self) -> list:
        scripts = self.alwayson.outputs if self.alwayson is not None else []
        return [*self.fields.values(), self.overrides, *(c for extra in self.extras for c in extra.outputs), *scripts]

    def updates(self, text: str) -> list:
        """Control updates for an infotext: every control it names gets its value; Clip skip
        and emphasis, settings rather than controls, become the tab's overrides for its next
        jobs, so the same picture comes out again. What cannot be applied is shown."""
        from modules.outputs.paste import params_from_infotext

        pasted = params_from_infotext(text or "", img2img=self.img2img, upscalers=self.upscalers(), on_pasted=self.on_pasted,
                                      known=self.alwayson.keys if self.alwayson is not None else ())
        if len(pasted.values) <= 2:
            gr.Info("No generation parameters found: paste an infotext (PNG Info shows one) and press ↙.")
            return [gr.update()] * len(self.outputs)
        notes = [f"Not applied: {pasted.report()}"] if pasted.skipped else []
        made_with = str(pasted.settings.get("sd_model_checkpoint") or "")
        if made_with and made_with.lower() not in (self.active_model() or "").lower():
            notes.append(f"The picture was made with model {pasted.settings['sd_model_checkpoint']} (not switched).")
        overrides = {k: pasted.values[k] for k in SETTING_FIELDS if k in pasted.values}
        unusual = [f"{GenerationParams.field_meta(k)['infotext'] or k} {v}" for k, v in overrides.items()
                   if v != GenerationParams.model_fields[k].default]
        if unusual:
            notes.append(f"This tab's next jobs use {', '.join(unusual)}.")
        if notes:
            gr.Info(" ".join(notes), duration=15)
        updates = [gr.update(value=pasted.values[name]) if name in pasted.values else gr.update() for name in self.fields]
        scripts = self.alwayson.updates(pasted.fields) if self.alwayson is not None else []
        return updates + [overrides] + [u for extra in self.extras for u in extra.updates(text)] + scripts


def _shown_files(result) -> list:
    """What the gallery shows, in order: each saved image's file, else the image itself (saving
    off, or an unfinished picture from an interrupt or skip)."""
    if not result.paths:
        return list(result.images)
    unfinished = set(getattr(result, "unfinished", ()))
    saved = iter(result.paths)
    return [image if i in unfinished else str(next(saved, image)) for i, image in enumerate(result.images)]


def wire_paste(top: TopRow, target: PasteTarget) -> None:
    """A1111's ↙ button: an infotext pasted into the prompt box fills every control it names."""
    top.paste.click(target.updates, top.prompt, target.outputs, concurrency_limit=None, api_name=False)  # queued: gr.Info only shows from queued events


def counter_html(tokens: int, capacity: int) -> str:
    """A1111's "N/75" (75 per chunk: 80 tokens show as 80/150); the chunk count is its tooltip."""
    chunks = capacity // 75
    return f"<span class='token-count' title='{chunks} chunk{'s' if chunks != 1 else ''} of 75 tokens'>{tokens}/{capacity}</span>"


def build_sampling(prefix: str) -> tuple[gr.Dropdown, gr.Dropdown, gr.Slider]:
    meta = GenerationParams.field_meta
    with gr.Row():
        sampler = gr.Dropdown([s.name for s in samplers.SAMPLERS], value=meta("sampler_name")["default"], label=meta("sampler_name")["label"], elem_id=f"{prefix}_sampling")
        schedule = gr.Dropdown([s.label for s in samplers.SCHEDULES], value=meta("scheduler")["default"], label=meta("scheduler")["label"], elem_id=f"{prefix}_scheduler")
    return sampler, schedule, slider(prefix, "steps")


def build_size(prefix: str) -> tuple[gr.Slider, gr.Slider, gr.Slider, gr.Slider]:
    """Width and height with the ⇅ swap button, beside batch count and size."""
    with gr.Row():
        with gr.Column(scale=4):
            width = slider(prefix, "width")
            height = slider(prefix, "height")
        swap = gr.Button("⇅", elem_id=f"{prefix}_res_switch_btn", size="sm", scale=0, min_width=40)
        with gr.Column(scale=2):
            n_iter = slider(prefix, "n_iter")
            batch_size = slider(prefix, "batch_size")
    swap.click(lambda w, h: (h, w), [width, height], [width, height], queue=False, api_name=False)
    return width, height, n_iter, batch_size


@dataclass(frozen=True)
class OutputPanel:
    gallery: gr.Gallery
    info: gr.HTML
    status: gr.HTML
    seeds: gr.State  # per gallery entry, so ♻️ reuses the selected image's seed
    selected: gr.State
    infotexts: gr.State
    files: gr.State  # per gallery entry, its saved file (None: not saved), for Save and 📂
    buttons: "OutputButtons | None" = None  # 📂, Save, Copy infotext, Send to ... (wired by the page)

    @property
    def outputs(self) -> list:
        return [self.gallery, self.info, self.status, self.seeds, self.selected, self.infotexts, self.files]


def build_output_panel(prefix: str) -> OutputPanel:
    """The output gallery, A1111's row of buttons under it, the infotext and the job's log."""
    from modules.ui.output_buttons import build_output_buttons

    # "contain": a script's grid (wider than a cell, with its legends) shows whole in its thumbnail
    gallery = gr.Gallery(label="Output", columns=4, height=520, elem_id=f"{prefix}_gallery", format="png", interactive=False, object_fit="contain")
    buttons = build_output_buttons(prefix, gallery)
    info = gr.HTML(elem_id=f"{prefix}_html_info")
    status = gr.HTML(elem_id=f"{prefix}_html_log")
    panel = OutputPanel(gallery, info, status, gr.State([]), gr.State(0), gr.State([]), gr.State([]), buttons)

    def show_selected(texts: list[str], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else 0
        return (infotext_html(texts[index]) if 0 <= index < len(texts) else ""), index

    gallery.select(show_selected, panel.infotexts, [info, panel.selected], queue=False, api_name=False)
    return panel


@dataclass(frozen=True)
class SeedRow:
    """The seed with A1111's "Extra" options: variation seed and strength, and seed resize."""

    seed: gr.Number
    random: gr.Button
    reuse: gr.Button
    extra: gr.Checkbox  # A1111's "Extra": shows the variation and seed-resize controls
    subseed: gr.Number
    random_subseed: gr.Button
    reuse_subseed: gr.Button
    subseed_strength: gr.Slider
    resize_w: gr.Slider
    resize_h: gr.Slider
    extras_box: gr.Group

    @property
    def fields(self) -> dict[str, Any]:
        """The Extra controls by parameter name, for a tab's `fields` (so ↙ fills them too)."""
        return {"subseed": self.subseed, "subseed_strength": self.subseed_strength, "seed_resize_from_w": self.resize_w,
                "seed_resize_from_h": self.resize_h}

    @property
    def outputs(self) -> list:  # as a PasteTarget extra: ↙ opens Extra when the infotext uses it
        return [self.extra]

    def updates(self, text: str) -> list:
        from modules.outputs.infotext import parse_infotext

        used = {"Variation seed", "Variation seed strength", "Seed resize from"} & set(parse_infotext(text or ""))
        return [gr.update(value=True) if used else gr.update()]

    def wire(self, panel: OutputPanel) -> None:
        """🎲 sets -1 (random); ♻️ brings back the selected (or first) image's seed, or its
        variation seed. Extra shows its controls; closing it turns variation and seed resize
        off, as A1111 ignores them while it is closed."""

        def reuse(seeds: list[int], index: int, current):
            return seeds[index] if 0 <= index < len(seeds) else current

        self.random.click(lambda: -1, None, self.seed, queue=False, api_name=False)
        self.reuse.click(reuse, [panel.seeds, panel.selected, self.seed], self.seed, queue=False, api_name=False)
        self.random_subseed.click(lambda: -1, None, self.subseed, queue=False, api_name=False)
        self.reuse_subseed.click(reused_subseed, [panel.infotexts, panel.selected, self.subseed], self.subseed, queue=False, api_name=False)
        self.extra.change(show_seed_extras, self.extra, [self.extras_box, self.subseed_strength, self.resize_w, self.resize_h], queue=False,
                          api_name=False)


def reused_subseed(texts: list[str], index: int, current):
    """♻️ beside the variation seed: the selected image's variation seed, from its infotext."""
    from modules.outputs.infotext import parse_infotext

    text = texts[index] if 0 <= index < len(texts) else ""
    found = str(parse_infotext(text).get("Variation seed", "")).strip() if text else ""
    return int(found) if found.isdigit() else current


def show_seed_extras(on: bool) -> tuple:
    """Extra opened shows its controls; closed hides them and sets variation strength and seed
    resize to off, since A1111 ignores them while Extra is closed."""
    off = gr.update() if on else gr.update(value=0)
    return gr.update(visible=bool(on)), off, off, off


def build_seed(prefix: str) -> SeedRow:
    meta = GenerationParams.field_meta("seed")
    with gr.Row():
        seed = gr.Number(label=meta["label"], value=meta["default"], precision=0, elem_id=f"{prefix}_seed", scale=4)
        random_seed = gr.Button("🎲", elem_id=f"{prefix}_random_seed", size="sm", scale=0, min_width=40)
        reuse_seed = gr.Button("♻️", elem_id=f"{prefix}_reuse_seed", size="sm", scale=0, min_width=40)
        extra = gr.Checkbox(label="Extra", value=False, elem_id=f"{prefix}_subseed_show", scale=0, min_width=80)
    with gr.Group(visible=False, elem_id=f"{prefix}_seed_extras") as box:
        with gr.Row():
            sub = GenerationParams.field_meta("subseed")
            subseed = gr.Number(label=sub["label"], value=sub["default"], precision=0, elem_id=f"{prefix}_subseed", scale=4)
            random_subseed = gr.Button("🎲", elem_id=f"{prefix}_random_subseed", size="sm", scale=0, min_width=40)
            reuse_subseed = gr.Button("♻️", elem_id=f"{prefix}_reuse_subseed", size="sm", scale=0, min_width=40)
            strength = slider(prefix, "subseed_strength", scale=4)
        with gr.Row():
            resize_w = slider(prefix, "seed_resize_from_w")
            resize_h = slider(prefix, "seed_resize_from_h")
    return SeedRow(seed, random_seed, reuse_seed, extra, subseed, random_subseed, reuse_subseed, strength, resize_w, resize_h, box)


def page_user(request: gr.Request | None) -> str:
    """Whose lane a page job waits in: the --gradio-auth user, else the client's address."""
    if request is None:
        return ""
    if getattr(request, "username", None):
        return str(request.username)
    client = getattr(request, "client", None)
    return f"ip:{client.host}" if client is not None and getattr(client, "host", None) else ""


async def watch(queue: JobQueue, job: Job, progress: gr.Progress, preview_every: int = 0) -> AsyncIterator[Any]:
    """Mirror a job's place in the queue and its steps into the page's progress bar until it
    ends, without holding a server thread; with `preview_every` > 0, ask for a live preview
    every that many steps and yield each new one."""
    done = done_future(job)
    last = None
    while not done.done():
        if job.status is JobStatus.QUEUED:
            position = queue.position(job)
            progress(0, desc=f"In queue: {position} of {queue.pending_count()}" if position else "Starting…")
        elif job.progress.steps:
            p = job.progress
            progress(p.fraction, desc=p.text())
            if preview_every > 0:
                p.want_preview(preview_every)
                if p.preview is not None and p.preview is not last:
                    last = p.preview
                    yield last
        await asyncio.wait([done], timeout=0.2)


@dataclass
class SessionRuns:
    """The unfinished Script menu runs of each browser session."""

    _runs: dict[str, list["ScriptRun"]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, session: str, run: "ScriptRun") -> None:
        with self._lock:
            self._runs = {k: [r for r in v if not r.done.is_set()] for k, v in self._runs.items()}
            self._runs.setdefault(session, []).append(run)

    def unfinished(self, session: str) -> list["ScriptRun"]:
        with self._lock:
            return [r for r in self._runs.get(session, []) if not r.done.is_set()]


async def watch_script(queue: JobQueue, run: "ScriptRun", progress: gr.Progress, preview_every: int = 0) -> AsyncIterator[Any]:
    """watch() for a script run: "X/Y/Z plot: 3 of 9" with the running job's steps inside the
    overall bar, its place in the queue while it waits, and its live previews."""
    waiter = asyncio.ensure_future(run.wait())
    last = None
    title = run.script.title
    try:
        while not waiter.done():
            done, total, text = run.progress
            head = text or (f"{title}: {min(done + 1, total)} of {total}" if total else title)
            job = run.current
            if job is not None and job.progress.steps:
                p = job.progress
                progress((done + p.fraction) / total if total else p.fraction, desc=f"{head} · {p.text()}")
                if preview_every > 0:
                    p.want_preview(preview_every)
                    if p.preview is not None and p.preview is not last:
                        last = p.preview
                        yield last
            else:
                waiting = next((j for j in run.context.children if j.status is JobStatus.QUEUED), None)
                position = queue.position(waiting) if waiting is not None else None
                progress(done / total if total else 0, desc=f"{head} · in queue: {position} of {queue.pending_count()}" if position else head)
            await asyncio.wait([waiter], timeout=0.2)
    finally:
        if not waiter.done():
            waiter.cancel()


def shown_script(run: "ScriptRun", seconds: float) -> list:
    """The output panel's values for a finished script run: its grids first, then its pictures
    (each saved file, else the picture), their infotexts and seeds."""
    if not run.done.is_set():  # woken because the server is stopping
        raise gr.Error("The server is stopping: the script was not finished.")
    if run.error is not None:
        raise gr.Error(run.error)
    result = run.result
    if result is None or not result.images:
        note = "Interrupted before any picture was finished." if result is None or result.interrupted else "The script made no pictures."
        return [[], "", f"<p>{html.escape(note)}</p>", [], 0, [], []]
    paths = list(result.paths) + [None] * (len(result.images) - len(result.paths))
    files = [str(path) if path is not None else image for image, path in zip(result.images, paths)]
    infotexts = list(result.infotexts) + [""] * (len(files) - len(result.infotexts))
    seeds = list(result.seeds) + [result.params.seed] * (len(files) - len(result.seeds))
    folders = list(dict.fromkeys(str(p.parent) for p in paths if p is not None))  # the grids' folder, then the pictures'
    where = " and ".join(html.escape(f) for f in folders) if folders else "nowhere (saving off)"
    pictures = len(files) - result.grids
    made = [f"{pictures} image(s)"] if pictures else []
    made += [f"{result.grids} grid{'s' if result.grids != 1 else ''}"] if result.grids else []
    note = "Interrupted. " if result.interrupted else ""
    notes = "".join(f"<br>{html.escape(n)}" for n in result.notes)
    log = f"<p>{note}{run.script.title}: {' and '.join(made)}, time taken: {seconds:.1f}s. Saved to {where}.{notes}</p>"
    saved = [str(path) if path is not None else None for path in paths]
    return [files, infotext_html(infotexts[0]), log, seeds, 0, infotexts, saved]


class JobRunner:
    """Submits a tab's jobs, mirrors their progress (and live previews) into the page, turns the
    result into the output panel's values, and lets Interrupt and Skip reach this session's
    own jobs. `preview_every` gives the steps between previews (0: none), from the settings."""

    def __init__(self, queue: JobQueue, preview_every: Callable[[], int] = lambda: 0):
        self.queue = queue
        self.sessions = SessionJobs()
        self.preview_every = preview_every
        self.script_runs = SessionRuns()  # this session's Script menu runs, which Interrupt stops as a whole

    async def run(self, kind: str, task: Callable[[Job], Any], request: gr.Request, progress: gr.Progress,
                  payload: Any = None) -> AsyncIterator[list]:
        """Queue the job in the user's lane (the log-in name, else the browser's address) and
        follow it: yields the output panel's values, with each live preview in the gallery,
        then the result. With a payload the job is recorded and survives a restart."""
        job = await run_in_threadpool(self.queue.submit, kind, task, user=page_user(request), payload=payload)
        self.sessions.add(request.session_hash or "", job)
        async for preview in watch(self.queue, job, progress, self.preview_every()):
            yield [[preview], *[gr.update()] * (OUTPUT_COUNT - 1)]
        yield self._shown(job)

    async def run_script(self, scripts: "ScriptRunner", title: str, script_request: "ScriptRequest", args: dict, request: gr.Request,
                         progress: gr.Progress) -> AsyncIterator[list]:
        """Start a Script menu run in the user's lane (a bad argument becomes a visible error
        before any job is queued), mirror its progress and its running job's previews, then
        show what it made. Its jobs join the session, so Interrupt and Skip reach them."""
        session = request.session_hash or ""
        started = time.monotonic()
        try:
            run = await run_in_threadpool(scripts.start, title, script_request, args, page_user(request),
                                          lambda job: self.sessions.add(session, job))
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        self.script_runs.add(session, run)
        async for preview in watch_script(self.queue, run, progress, self.preview_every()):
            yield [[preview], *[gr.update()] * (OUTPUT_COUNT - 1)]
        yield shown_script(run, time.monotonic() - started)

    @staticmethod
    def _shown(job: Job) -> list:
        if job.status not in FINISHED:  # woken because the server is stopping
            if job.recorded:
                raise gr.Error("The server is stopping: your job stays queued and runs when it starts again; its images will be in outputs/.")
            raise gr.Error("The server is stopping: your job was not run.")
        if job.status is JobStatus.FAILED:
            raise gr.Error(job.error or "Generation failed")
        result = job.result
        if result is None:  # cancelled before it started
            return [[], "", "Interrupted before start.", [], 0, [], []]
        files = _shown_files(result)
        saved = [f if isinstance(f, str) else None for f in files]  # the files behind the entries (Save, 📂)
        shown_infotexts, seeds = list(result.infotexts), list(result.seeds)
        if result.grid_path is not None:  # the grid comes first, standing for the first image
            files, saved = [str(result.grid_path), *files], [str(result.grid_path), *saved]
            shown_infotexts, seeds = [result.infotexts[0], *shown_infotexts], [result.seeds[0], *seeds]
        maps = list(getattr(result, "detected_maps", None) or [])  # none with control_net_no_detectmap
        if maps:  # after the images, as A1111 shows ControlNet's detected maps
            files, shown_infotexts, seeds = [*files, *maps], [*shown_infotexts, *[""] * len(maps)], [*seeds, *seeds[-1:] * len(maps)]
            saved += [None] * len(maps)
        note = "Interrupted. " if job.status is JobStatus.INTERRUPTED else ""
        if result.paths:
            where = html.escape(str(result.paths[0].parent))
        else:
            where = "nowhere (unfinished pictures are not saved)" if getattr(result, "unfinished", None) else "nowhere (saving off)"
        notes = "".join(f"<br>{html.escape(n)}" for n in getattr(result, "notes", []))
        log = f"<p>{note}{len(result.images)} image(s), time taken: {job.run_seconds or 0:.1f}s. Saved to {where}.{notes}</p>"
        return [files, infotext_html(shown_infotexts[0] if shown_infotexts else ""), log, seeds, 0, shown_infotexts, saved]

    def wire_stop_buttons(self, top: TopRow) -> None:
        def interrupt_own(request: gr.Request) -> None:
            """Stop this session's running job and drop its queued ones."""
            for run in self.script_runs.unfinished(request.session_hash or ""):
                run.interrupt()  # before its jobs, so it starts no more of them
            for job in self.sessions.unfinished(request.session_hash or ""):
                self.queue.interrupt(job.id)

        def skip_own(request: gr.Request) -> None:
            for job in self.sessions.unfinished(request.session_hash or ""):
                self.queue.skip(job.id)  # only the running one has a batch to skip

        top.interrupt.click(interrupt_own, None, None, queue=False, api_name=False)
        top.skip.click(skip_own, None, None, queue=False, api_name=False)
