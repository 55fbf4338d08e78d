"""The ControlNet accordion of the txt2img and img2img tabs, laid out as the A1111 ControlNet
extension lays it out: one tab per unit ("ControlNet Unit 0", ...), each with its picture, the
preprocessor's preview beside it, and the unit's settings.

Element ids are the extension's (`txt2img_controlnet_ControlNet-0_controlnet_enable_checkbox`),
so scripts and ui-config.json entries written for it find the same controls. The panel turns
its values into `ControlUnit`s (modules/controlnet/units.py) for the job; everything else (model
loading, preprocessing, the residuals) is the ControlNet service's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import gradio as gr

from modules.controlnet.service import check_resolution
from modules.controlnet.units import CONTROL_MODES, HR_OPTIONS, RESIZE_MODES, ControlUnit, UnitSettings, settings_from
from modules.ui.common import UPLOAD_SOURCES

if TYPE_CHECKING:
    from modules.controlnet.preprocessors import Slider
    from modules.jobs.queue import JobQueue

ALL_TYPES = "All"
NO_MODEL = "None"
DEFAULT_MODULE = "none"
TRIGGER = "\U0001F4A5"  # 💥, the extension's "Run preprocessor" button
REFRESH = "\U0001F504"  # 🔄

# Picture source of an img2img unit: img2img's own input, or a picture of the unit's own.
PictureOf = Callable[..., Any]


def _slider_update(spec: "Slider | None", value: float | None = None, hidden: bool = False) -> dict:
    """A threshold/resolution slider shaped as the preprocessor's: its label and range, the
    default value unless `value` (in range) is given; hidden when it has none."""
    if spec is None:
        return gr.update(visible=False)
    chosen = spec.value if value is None or value < spec.minimum or value > spec.maximum else value
    return gr.update(label=spec.label, minimum=spec.minimum, maximum=spec.maximum, step=spec.step, value=chosen, visible=not hidden)


@dataclass(frozen=True)
class UnitControls:
    """One unit's controls. `independent` (img2img only) is the extension's "Upload independent
    control image"; unticked, the unit works on img2img's input picture."""

    index: int
    enabled: gr.Checkbox
    image: gr.Image
    use_mask: gr.Checkbox
    mask: gr.Image
    independent: gr.Checkbox | None
    low_vram: gr.Checkbox
    pixel_perfect: gr.Checkbox
    allow_preview: gr.Checkbox
    preview: gr.Image
    preview_column: gr.Column
    run: gr.Button
    type_filter: gr.Radio
    module: gr.Dropdown
    model: gr.Dropdown
    refresh: gr.Button
    weight: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    processor_res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    control_mode: gr.Radio
    resize_mode: gr.Radio
    hr_option: gr.Radio | None

    def inputs(self) -> list:
        """What Generate reads of this unit, in `unit()`'s order."""
        return [self.enabled, self.image, self.use_mask, self.mask, *([self.independent] if self.independent else []), self.low_vram,
                self.pixel_perfect, self.module, self.model, self.weight, self.guidance_start, self.guidance_end, self.processor_res,
                self.threshold_a, self.threshold_b, self.control_mode, self.resize_mode, *([self.hr_option] if self.hr_option else [])]

    def pasted(self) -> list:
        """The controls a pasted infotext sets (in `ControlNetPanel._pasted_unit`'s order), then the type filter."""
        return [self.enabled, self.module, self.model, self.weight, self.resize_mode, self.processor_res, self.threshold_a,
                self.threshold_b, self.guidance_start, self.guidance_end, self.pixel_perfect, self.control_mode, self.type_filter]


class ControlNetPanel:
    """The accordion's units and what the tab needs of them: the inputs Generate reads, the
    units those values make, and the paste target for `ControlNet N` infotext values."""

    def __init__(self, service: Any, units: list[UnitControls], img2img: bool):
        self.service = service
        self.units = units
        self.img2img = img2img

    # ---- Generate ----
    @property
    def inputs(self) -> list:
        return [c for unit in self.units for c in unit.inputs()]

    def units_from(self, values: Sequence[Any]) -> list[ControlUnit]:
        """The units the panel's values describe (`inputs` order), every unit in its place so that
        `ControlNet N` keeps the unit's number; [] when none is enabled. ValueError names the unit."""
        values = list(values)
        units: list[ControlUnit] = []
        for controls in self.units:
            count = len(controls.inputs())
            units.append(self._unit(controls, values[:count]))
            values = values[count:]
        return units if any(u.settings.enabled for u in units) else []

    def _unit(self, controls: UnitControls, values: list) -> ControlUnit:
        values = list(values)
        enabled, image, use_mask, mask = values[:4]
        rest = values[4:]
        independent = bool(rest.pop(0)) if controls.independent is not None else True
        low_vram, pixel_perfect, module, model, weight, start, end, res, a, b, control_mode, resize_mode = rest[:12]
        hr_option = rest[12] if controls.hr_option is not None else HR_OPTIONS[0]
        if not enabled:
            return ControlUnit(UnitSettings(enabled=False))
        what = f"ControlNet Unit {controls.index}"
        sliders = self._sliders(module, what)
        settings = settings_from({
            "enabled": True, "module": module or DEFAULT_MODULE, "model": model or NO_MODEL, "weight": weight, "resize_mode": resize_mode,
            "low_vram": bool(low_vram), "pixel_perfect": bool(pixel_perfect), "guidance_start": start, "guidance_end": end,
            "processor_res": int(res) if sliders[0] is not None and res is not None else -1,
            "threshold_a": a if sliders[1] is not None and a is not None else -1,
            "threshold_b": b if sliders[2] is not None and b is not None else -1,
            "control_mode": control_mode, "hr_option": hr_option, "use_img2img_input": self.img2img and not independent,
        }, what)
        own = independent or not self.img2img
        return ControlUnit(settings, image if own else None, mask if own and use_mask else None)

    def _sliders(self, module: str | None, what: str) -> tuple:
        try:
            p = self.service.preprocessors.get(module or DEFAULT_MODULE)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        return p.resolution, p.threshold_a, p.threshold_b

    def check(self, units: list[ControlUnit]) -> None:
        """What the service refuses before a job is queued (unknown model, no picture, ...)."""
        if units:
            self.service.check(units, img2img=self.img2img)

    # ---- paste ----
    @property
    def outputs(self) -> list:
        return [c for unit in self.units for c in unit.pasted()]

    def updates(self, text: str) -> list:
        """Control updates for a pasted infotext: unit N gets its `ControlNet N` values (all but
        the picture); units it does not name are switched off, so the same picture comes out again.
        A unit naming a preprocessor or model this server lacks is left as it is, and said so.
        (Malformed values are among the paste's "Not applied" keys.)"""
        from modules.outputs.paste import params_from_infotext

        pasted = params_from_infotext(text or "", img2img=self.img2img)
        updates: list = []
        problems: list[str] = []
        for controls in self.units:
            key = f"ControlNet {controls.index}"
            count = len(controls.pasted())
            settings = pasted.controlnet.get(controls.index)
            if settings is None:
                named = key in pasted.skipped  # there, but unreadable: leave the unit alone
                updates += ([gr.update()] if named else [gr.update(value=False)]) + [gr.update()] * (count - 1)
                continue
            try:
                updates += self._pasted_unit(settings)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
                updates += [gr.update()] * count
        if problems:
            gr.Warning("Not applied: " + " ".join(problems), duration=15)
        return updates

    def _pasted_unit(self, settings: UnitSettings) -> list:
        p = self.service.preprocessors.get(settings.module)
        models = self.model_choices()
        found = self.service.library.find(settings.model)  # ValueError naming the choices when unknown
        model = NO_MODEL if found is None else found.name
        if model not in models:  # listed since
            models = [*models, model]
        return [gr.update(value=True), gr.update(choices=self.module_choices(), value=p.display_name),
                gr.update(choices=models, value=model), gr.update(value=settings.weight), gr.update(value=settings.resize_mode),
                _slider_update(p.resolution, settings.processor_res, hidden=settings.pixel_perfect),
                _slider_update(p.threshold_a, settings.threshold_a), _slider_update(p.threshold_b, settings.threshold_b),
                gr.update(value=settings.guidance_start), gr.update(value=settings.guidance_end),
                gr.update(value=settings.pixel_perfect), gr.update(value=settings.control_mode), gr.update(value=ALL_TYPES)]

    # ---- choices ----
    def module_choices(self) -> list[str]:
        return self.service.preprocessors.labels()

    def model_choices(self) -> list[str]:
        return [NO_MODEL, *(n for n in self.service.library.names() if n != NO_MODEL)]

    def control_types(self) -> dict[str, dict]:
        return self.service.preprocessors.control_types(self.model_choices())


def build_controlnet(prefix: str, service: Any, queue: "JobQueue", width: gr.Slider, height: gr.Slider, img2img: bool = False,
                     max_pixels: Callable[[], int | None] = lambda: None,
                     picture: tuple[list, PictureOf] | None = None) -> ControlNetPanel | None:
    """The "ControlNet" accordion with `service.unit_count` units; None without a service.

    The preview runs on `queue`. `width`/`height` are the tab's size sliders (Pixel Perfect's preview resolution); `picture`,
    for img2img, is (components, function of their values -> img2img's input picture), what a
    unit that uses the img2img input previews."""
    if service is None:
        return None
    tabname = f"{prefix}_controlnet"
    panel = ControlNetPanel(service, [], img2img)
    with gr.Column(elem_id=tabname):
        with gr.Accordion("ControlNet", open=False, elem_id=f"{tabname}_accordion") as accordion:
            with gr.Tabs(elem_id=f"{tabname}_tabs"):
                for i in range(max(1, int(service.unit_count))):
                    with gr.Tab(f"ControlNet Unit {i}", id=f"{tabname}_unit_{i}", elem_classes=["cnet-unit-tab"]):
                        panel.units.append(_build_unit(panel, i, f"{tabname}_ControlNet-{i}", img2img))
    for unit in panel.units:
        _wire_unit(panel, queue, unit, width, height, max_pixels, picture, accordion)
    return panel


def _build_unit(panel: ControlNetPanel, index: int, eid: str, img2img: bool) -> UnitControls:
    """One unit's controls, in the extension's order; `eid` is its element id prefix."""
    types = panel.control_types()
    with gr.Row(equal_height=False):
        with gr.Column(visible=not img2img, min_width=200) as upload_column:
            image = gr.Image(label="Image", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="RGB", height=260,
                             elem_id=f"{eid}_input_image", elem_classes=["cnet-image"])
            mask = gr.Image(label="Mask (white: the part to repaint)", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="L",
                            height=200, visible=False, elem_id=f"{eid}_mask_image", elem_classes=["cnet-mask-image"])
        with gr.Column(visible=False, min_width=200) as preview_column:
            preview = gr.Image(label="Preprocessor Preview", type="pil", format="png", interactive=False, height=260,
                               elem_id=f"{eid}_generated_image", elem_classes=["cnet-image"])
    with gr.Row(elem_classes=["controlnet_main_options"]):
        enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{eid}_controlnet_enable_checkbox", elem_classes=["cnet-unit-enabled"])
        low_vram = gr.Checkbox(label="Low VRAM", value=False, elem_id=f"{eid}_controlnet_low_vram_checkbox")
        pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=False, elem_id=f"{eid}_controlnet_pixel_perfect_checkbox")
        allow_preview = gr.Checkbox(label="Allow Preview", value=False, elem_id=f"{eid}_controlnet_preprocessor_preview_checkbox",
                                    elem_classes=["cnet-allow-preview"])
        use_mask = gr.Checkbox(label="Mask", value=False, elem_id=f"{eid}_controlnet_mask_upload_checkbox", visible=not img2img)
    independent = None
    if img2img:
        independent = gr.Checkbox(label="Upload independent control image", value=False,
                                  info="Unticked, the unit uses the img2img input picture.",
                                  elem_id=f"{eid}_controlnet_same_img2img_checkbox", elem_classes=["cnet-unit-same_img2img"])
        independent.change(lambda on: (gr.update(visible=on), gr.update(visible=on)), independent, [upload_column, use_mask],
                           queue=False, api_name=False)
    type_filter = gr.Radio(list(types), value=ALL_TYPES, label="Control Type", elem_id=f"{eid}_controlnet_type_filter_radio",
                           elem_classes=["controlnet_control_type_filter_group"])
    with gr.Row(elem_classes=["controlnet_preprocessor_model"]):
        module = gr.Dropdown(panel.module_choices(), value=DEFAULT_MODULE, label="Preprocessor", scale=4,
                             elem_id=f"{eid}_controlnet_preprocessor_dropdown")
        run = gr.Button(TRIGGER, size="sm", scale=0, min_width=40, elem_id=f"{eid}_controlnet_trigger_preprocessor",
                        elem_classes=["cnet-run-preprocessor"])
        model = gr.Dropdown(panel.model_choices(), value=NO_MODEL, label="Model", scale=4, elem_id=f"{eid}_controlnet_model_dropdown")
        refresh = gr.Button(REFRESH, size="sm", scale=0, min_width=40, elem_id=f"{eid}_controlnet_refresh_models")
    with gr.Row(elem_classes=["controlnet_weight_steps"]):
        weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight", elem_id=f"{eid}_controlnet_control_weight_slider")
        start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                          elem_id=f"{eid}_controlnet_start_control_step_slider")
        end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step", elem_id=f"{eid}_controlnet_ending_control_step_slider")
    none = panel.service.preprocessors.get(DEFAULT_MODULE)
    with gr.Row():
        processor_res = gr.Slider(64, 2048, value=512, step=8, label="Preprocessor Resolution", visible=none.resolution is not None,
                                  elem_id=f"{eid}_controlnet_preprocessor_resolution_slider")
        threshold_a = gr.Slider(0, 255, value=100, step=1, label="Threshold A", visible=False, elem_id=f"{eid}_controlnet_threshold_A_slider")
        threshold_b = gr.Slider(0, 255, value=200, step=1, label="Threshold B", visible=False, elem_id=f"{eid}_controlnet_threshold_B_slider")
    control_mode = gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], label="Control Mode", elem_id=f"{eid}_controlnet_control_mode_radio")
    resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[1], label="Resize Mode", elem_id=f"{eid}_controlnet_resize_mode_radio")
    hr_option = None
    if not img2img:
        hr_option = gr.Radio(list(HR_OPTIONS), value=HR_OPTIONS[0], label="Hires-Fix Option", elem_id=f"{eid}_controlnet_hr_option_radio")
    return UnitControls(index, enabled, image, use_mask, mask, independent, low_vram, pixel_perfect, allow_preview, preview,
                        preview_column, run, type_filter, module, model, refresh, weight, start, end, processor_res, threshold_a,
                        threshold_b, control_mode, resize_mode, hr_option)


def _wire_unit(panel: ControlNetPanel, queue: "JobQueue", unit: UnitControls, width: gr.Slider, height: gr.Slider,
               max_pixels: Callable[[], int | None], picture: tuple[list, PictureOf] | None, accordion: gr.Accordion) -> None:
    from modules.ui.img2img import guard_upload

    service = panel.service
    guard_upload(unit.image, f"ControlNet Unit {unit.index} image", max_pixels)
    guard_upload(unit.mask, f"ControlNet Unit {unit.index} mask", max_pixels, mask=True)
    # A picture put in a unit switches the unit on, as the extension's page does.
    unit.image.upload(lambda payload: gr.update(value=True) if payload else gr.update(), unit.image, unit.enabled,
                      preprocess=False, queue=False, api_name=False)
    unit.use_mask.change(lambda on: gr.update(visible=on), unit.use_mask, unit.mask, queue=False, api_name=False)
    unit.allow_preview.change(lambda on: (gr.update(visible=on), gr.update() if on else None), unit.allow_preview,
                              [unit.preview_column, unit.preview], queue=False, api_name=False)

    def pick_type(control_type: str):
        """The extension's Control Type filter: that type's preprocessors and models, and its defaults."""
        types = panel.control_types()
        entry = types.get(control_type) or types[ALL_TYPES]
        return (gr.update(choices=entry["module_list"], value=entry["default_option"]),
                gr.update(choices=entry["model_list"], value=entry["default_model"]))

    # .input: a user's choice (a pasted infotext sets "All" without resetting the unit).
    unit.type_filter.input(pick_type, unit.type_filter, [unit.module, unit.model], queue=False, api_name=False)

    def shapes(module: str, pixel_perfect: bool, res=None, a=None, b=None):
        """Label, range and visibility follow the preprocessor; values given stay (a paste set
        them), values not given (a user's new choice) are the preprocessor's defaults."""
        try:
            p = service.preprocessors.get(module or DEFAULT_MODULE)
        except ValueError:
            return gr.update(), gr.update(), gr.update()
        return (_slider_update(p.resolution, res, hidden=pixel_perfect), _slider_update(p.threshold_a, a),
                _slider_update(p.threshold_b, b))

    slider_outputs = [unit.processor_res, unit.threshold_a, unit.threshold_b]
    unit.module.input(shapes, [unit.module, unit.pixel_perfect], slider_outputs, queue=False, api_name=False)
    unit.module.change(shapes, [unit.module, unit.pixel_perfect, *slider_outputs], slider_outputs, queue=False, api_name=False)
    unit.pixel_perfect.change(shapes, [unit.module, unit.pixel_perfect, *slider_outputs], slider_outputs, queue=False, api_name=False)
    # A preprocessor chosen by ui-config.json was set after the sliders were built: shape them on opening.
    accordion.expand(shapes, [unit.module, unit.pixel_perfect, *slider_outputs], slider_outputs, queue=False, api_name=False)

    def refresh_models(current: str, control_type: str):
        """The model list as the folders hold it now (the library reads them on every call)."""
        types = panel.control_types()
        entry = types.get(control_type) or types[ALL_TYPES]
        choices = entry["model_list"]
        return gr.update(choices=choices, value=current if current in choices else NO_MODEL)

    unit.refresh.click(refresh_models, [unit.model, unit.type_filter], unit.model, queue=False, api_name=False)

    extra = list(picture[0]) if picture else []
    own_inputs = [unit.image, unit.use_mask, unit.mask, *([unit.independent] if unit.independent else [])]

    def detect_task(values: tuple, max_pixels_now: int | None) -> Callable[[Any], list]:
        """The preview's work for the queue, from the button's inputs; ValueError for what is missing."""
        image, use_mask, mask = values[:3]
        rest = list(values[3:])
        independent = bool(rest.pop(0)) if unit.independent is not None else True
        module, res, a, b, pixel_perfect, resize_mode, w, h = rest[:8]
        if not independent:
            image, mask = (picture[1](*rest[8:]) if picture else None), None
        if image is None:
            raise ValueError(f"ControlNet Unit {unit.index} has no picture to preprocess: upload one first.")
        p = service.preprocessors.get(module or DEFAULT_MODULE)
        if p.resolution is None:
            res = -1
        elif pixel_perfect:
            res = service.preprocessors.pixel_perfect_resolution(image.size, int(w), int(h), resize_mode)
        res = -1 if res is None else int(res)
        check_resolution(res, image.size, max_pixels_now, f"the ControlNet Unit {unit.index} image")
        masks = [mask] if use_mask and mask is not None else []
        a = a if p.threshold_a is not None and a is not None else -1
        b = b if p.threshold_b is not None and b is not None else -1
        return lambda job: service.detect(p.display_name, [image], res, a, b, masks=masks)

    async def run_preprocessor(request: gr.Request, *values):  # gradio fills request
        """The extension's 💥: the preprocessor alone on the unit's picture, shown beside it. It
        runs as a queue job in the user's lane, taking turns with generation as /controlnet/detect
        does (model-based preprocessors share the device, and their cache is the worker's)."""
        from fastapi.concurrency import run_in_threadpool

        from modules.controlnet.routes import DETECT_KIND
        from modules.jobs.queue import JobStatus, QueueStopped, done_future
        from modules.ui.common import page_user

        try:
            task = await run_in_threadpool(detect_task, values, max_pixels())
            job = await run_in_threadpool(queue.submit, DETECT_KIND, task, user=page_user(request))
        except (ValueError, QueueStopped) as exc:
            gr.Warning(str(exc), duration=15)
            return gr.update(), gr.update(), gr.update()
        await done_future(job)
        if job.status is not JobStatus.DONE or not job.result:
            gr.Warning(job.error or "The preprocessor did not finish.", duration=15)
            return gr.update(), gr.update(), gr.update()
        shown, job.result = job.result[0], None
        return gr.update(value=shown), gr.update(visible=True), gr.update(value=True)

    unit.run.click(run_preprocessor, [*own_inputs, unit.module, unit.processor_res, unit.threshold_a, unit.threshold_b,
                                      unit.pixel_perfect, unit.resize_mode, width, height, *extra],
                   [unit.preview, unit.preview_column, unit.allow_preview], api_name=False)
