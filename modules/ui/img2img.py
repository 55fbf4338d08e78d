"""The img2img tab: A1111's modes (img2img, Sketch, Inpaint, Inpaint upload, Batch) over the
same job runner, output panel and parameter model as txt2img.

The handler only turns the chosen mode's widgets into an init image and a mask, builds an
Img2ImgParams, and queues the job; everything else is the generation core's.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr
from fastapi.concurrency import run_in_threadpool
from PIL import Image, ImageChops

from modules.generation.image_input import read_image, to_mask, to_rgb
from modules.generation.params import INPAINT_AREAS, MASK_MODES, MASKED_CONTENT, RESIZE_MODES, GenerationParams, Img2ImgParams
from modules.jobs.generation_task import GenerationService, img2img_payload
from modules.jobs.queue import JobQueue
from modules.network import ServerAccess
from modules.scripts.base import ScriptRequest
from modules.ui.controlnet import build_controlnet
from modules.ui.forever import wire_forever
from modules.ui.scripts import build_script_menu
from modules.ui.alwayson import build_alwayson
from modules.ui.refiner import build_refiner
from modules.ui.flow_controls import build_flow_controls
from modules.ui.interrogate_buttons import build_interrogate_buttons, wire_interrogate
from modules.ui.common import (
    UPLOAD_SOURCES, JobRunner, PasteTarget, Quicksettings, build_output_panel, build_sampling, build_seed, build_size, build_toprow, slider, wire_paste,
)

if TYPE_CHECKING:
    from modules.extensions.loaded import LoadedExtensions
    from modules.jobs.interrogate_task import InterrogateService
    from modules.scripts.runner import ScriptRunner

PREFIX = "img2img"
MODES = ("img2img", "Sketch", "Inpaint", "Inpaint upload", "Batch")
MODE_IDS = ("img2img_mode_img2img", "img2img_mode_sketch", "img2img_mode_inpaint", "img2img_mode_inpaint_upload", "img2img_mode_batch")
INPAINT_MODES = (2, 3, 4)  # tabs whose inpaint controls matter (Batch, with a mask folder)
SKETCH_COLOURS = ["#000000", "#ffffff", "#cc3232", "#e08a1e", "#e6d23c", "#32a852", "#3264cc", "#8a3ccc"]
BATCH_FEATURE = "img2img Batch (folders on the server)"


def uploaded_file(component, payload) -> Path | None:
    """The file behind gradio's raw record of an upload (an image, or an editor's background),
    only if it lies in gradio's upload cache: a raw record comes from the client as sent."""
    record = payload.get("background", payload) if isinstance(payload, dict) else None
    if not isinstance(record, dict) or not record.get("path"):
        return None
    path = Path(record["path"]).resolve()
    return path if path.is_relative_to(Path(component.GRADIO_CACHE).resolve()) and path.is_file() else None


def readable_size(path: Path | None) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            image.verify()
            return image.size
    except (OSError, ValueError, TypeError, Image.DecompressionBombError):
        return None


def guard_upload(component, label: str, max_pixels: Callable[[], int | None] = lambda: None, mask: bool = False) -> None:
    """Check an upload as soon as it arrives (a raw record: gradio's own preprocessing would fail
    on a CMYK JPEG, a LAB or float TIFF): what cannot be read, or is over the pixel limit, is
    refused with a plain warning and the box emptied; a picture in a mode or colour space the
    page cannot show, or rotated by its EXIF tag, is replaced by its sRGB PNG."""

    def check(payload):
        path = uploaded_file(component, payload)
        if path is None:
            return gr.update()
        try:
            image = read_image(path, label, max_pixels())
        except ValueError as exc:
            unreadable = "not an image that can be read" in str(exc)
            gr.Warning(f"{label}: {path.name} is not an image that can be read (use PNG, JPEG or WebP)." if unreadable else str(exc))
            return None
        if not needs_conversion(path):
            return gr.update()
        fixed = to_mask(image) if mask else to_rgb(image)
        out = Path(tempfile.mkdtemp(dir=component.GRADIO_CACHE)) / f"{path.stem}.png"
        fixed.save(out, "PNG")
        return {"background": str(out), "layers": [], "composite": str(out)} if isinstance(component, gr.ImageEditor) else str(out)

    component.upload(check, component, component, preprocess=False, api_name=False)


def needs_conversion(path: Path) -> bool:
    """Whether a readable upload differs from what the browser shows and gradio converts
    plainly: another mode, a colour profile, several frames or an EXIF rotation."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
            return (image.mode not in ("RGB", "RGBA", "L", "LA", "P") or "icc_profile" in image.info or getattr(image, "n_frames", 1) > 1
                    or orientation not in (None, 1))
    except Exception:  # readable a moment ago (read_image): convert rather than guess  # noqa: BLE001
        return True


@dataclass(frozen=True)
class Img2ImgControls:
    by_field: dict[str, Any]  # generation parameter name -> its control, for per-model defaults
    paste: PasteTarget  # where PNG Info's "Send to img2img" lands
    image: gr.Image  # the img2img init image, which "Send to img2img" fills too
    inpaint: gr.ImageMask  # the Inpaint tab's editor, which "Send to inpaint" fills
    mode_tabs: gr.Tabs  # img2img / Sketch / Inpaint / ... (tab ids are MODE_IDS)
    mode: gr.State  # the index of the chosen mode, as the Generate handler reads it
    inpaint_controls: gr.Group  # shown for the inpainting modes only
    output: Any = None  # the tab's OutputPanel, whose buttons the page wires (Send to needs every tab)


def _layers_mask(layers: list[Image.Image] | None, size: tuple[int, int]) -> Image.Image:
    """Everything painted on any layer of the inpaint editor, as a white-on-black mask."""
    mask = Image.new("L", size, 0)
    for layer in layers or []:
        if layer is None:
            continue
        alpha = layer.getchannel("A") if layer.mode in ("RGBA", "LA") else layer.convert("L")
        mask = ImageChops.lighter(mask, alpha.resize(size))
    return mask


def init_from_widgets(mode: int, image, sketch, inpaint, base, mask) -> tuple[Image.Image, Image.Image | None]:
    """The init image and mask the chosen tab holds; a readable ValueError when one is missing."""
    if mode == 0:
        if image is None:
            raise ValueError("Upload an image to the img2img tab first (or paste or drop one).")
        return image, None
    if mode == 1:
        picture = (sketch or {}).get("composite")
        if picture is None:
            raise ValueError("Upload an image to the Sketch tab and draw on it first.")
        return picture, None
    if mode == 2:
        background = (inpaint or {}).get("background")
        if background is None:
            raise ValueError("Upload an image to the Inpaint tab and paint the area to change.")
        return background, _layers_mask(inpaint.get("layers"), background.size)
    if base is None or mask is None:
        raise ValueError("Inpaint upload needs both an image and a mask.")
    return base, mask


def build_img2img_tab(queue: JobQueue, service: GenerationService, preview_every: Callable[[], int] = lambda: 0,
                      access: ServerAccess | None = None, interrogate: "InterrogateService | None" = None,
                      controlnet: Any = None, scripts: "ScriptRunner | None" = None,
                      extensions: "LoadedExtensions | None" = None, quick: "Quicksettings | None" = None) -> Img2ImgControls:
    """`access` decides whether the Batch tab may use folders on the server (None: it may);
    with `interrogate`, the Interrogate CLIP / DeepBooru buttons fill the prompt; with
    `controlnet` (the app's ControlNet service), the ControlNet accordion is added; with
    `scripts`, the Script menu; with `extensions`, their always-on scripts under it."""
    jobs = JobRunner(queue, preview_every)
    meta = Img2ImgParams.field_meta
    top = build_toprow(PREFIX, service, quick)  # quick: the page's checkpoint and VAE menus, which the model cards set
    asks = build_interrogate_buttons(PREFIX) if interrogate is not None else None
    mode = gr.State(0)
    resize_tab = gr.State(0)  # 0: Resize to, 1: Resize by

    with gr.Row():
        with gr.Column(scale=1):
            tabs = []
            with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
                with gr.Tab("img2img", id=MODE_IDS[0], elem_id="img2img_img2img_tab") as tab:
                    image = gr.Image(label="Image for img2img", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="RGBA", height=400, elem_id="img2img_image")
                    tabs.append(tab)
                with gr.Tab("Sketch", id=MODE_IDS[1], elem_id="img2img_img2img_sketch_tab") as tab:
                    sketch = gr.ImageEditor(
                        label="Image for img2img", type="pil", format="png", sources=UPLOAD_SOURCES, height=400, elem_id="img2img_sketch",
                        brush=gr.Brush(colors=SKETCH_COLOURS, default_color=SKETCH_COLOURS[2], color_mode="defaults"),
                    )
                    tabs.append(tab)
                with gr.Tab("Inpaint", id=MODE_IDS[2], elem_id="img2img_inpaint_tab") as tab:
                    inpaint = gr.ImageMask(
                        label="Image for inpainting with mask", type="pil", format="png", sources=UPLOAD_SOURCES, height=400, elem_id="img2maskimg",
                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False,
                    )
                    tabs.append(tab)
                with gr.Tab("Inpaint upload", id=MODE_IDS[3], elem_id="img2img_inpaint_upload_tab") as tab:
                    base = gr.Image(label="Image for img2img", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="RGBA", height=300, elem_id="img_inpaint_base")
                    mask = gr.Image(label="Mask", type="pil", format="png", sources=UPLOAD_SOURCES, image_mode="RGBA", height=300, elem_id="img_inpaint_mask")
                    tabs.append(tab)
                with gr.Tab("Batch", id=MODE_IDS[4], elem_id="img2img_batch_tab") as tab:
                    gr.Markdown("Process every image in a folder on the server. Images are saved under their own names in the output folder "
                                "(the usual img2img folder when empty); with a mask folder, each image uses the mask of the same name.")
                    refusal = access.refusal(BATCH_FEATURE) if access else None
                    if refusal:
                        gr.Markdown(f"**{refusal}**", elem_id="img2img_batch_refused")
                    input_dir = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
                    mask_dir = gr.Textbox(label="Inpaint batch mask directory (required for inpaint batch processing only)", elem_id="img2img_batch_inpaint_mask_dir")
                    tabs.append(tab)

            resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], type="index", label=meta("resize_mode")["label"], elem_id="resize_mode")
            with gr.Group(visible=False, elem_id="img2img_inpaint_controls") as inpaint_controls:
                mask_blur = slider(PREFIX, "mask_blur", Img2ImgParams)
                with gr.Row():
                    mask_mode = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], type="index", label=meta("inpainting_mask_invert")["label"], elem_id="img2img_mask_mode")
                    fill = gr.Radio(list(MASKED_CONTENT), value=MASKED_CONTENT[1], type="index", label=meta("inpainting_fill")["label"], elem_id="img2img_inpainting_fill")
                with gr.Row():
                    area = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], type="index", label=meta("inpaint_full_res")["label"], elem_id="img2img_inpaint_full_res")
                    padding = slider(PREFIX, "inpaint_full_res_padding", Img2ImgParams)
            sampler, schedule, steps = build_sampling(PREFIX)
            top.wire_counters(service, steps)
            with gr.Tabs(elem_id="img2img_tabs_resize"):
                with gr.Tab("Resize to", elem_id="img2img_tab_resize_to") as to_tab:
                    width, height, n_iter, batch_size = build_size(PREFIX)
                with gr.Tab("Resize by", elem_id="img2img_tab_resize_by") as by_tab:
                    scale_by = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale")
                    scaled_size = gr.HTML(elem_id="img2img_scale_resolution_preview")
            cfg = slider(PREFIX, "cfg_scale")
            flow = build_flow_controls(PREFIX)  # Flux dev's Distilled CFG Scale, the flow models' Shift
            denoising = slider(PREFIX, "denoising_strength", Img2ImgParams)
            exact = gr.Checkbox(label=meta("img2img_fix_steps")["label"], value=False, elem_id="img2img_fix_steps")
            with gr.Row():
                restore = gr.Checkbox(label=meta("restore_faces")["label"], value=False, elem_id="img2img_restore_faces")
                tiling = gr.Checkbox(label=meta("tiling")["label"], value=False, elem_id="img2img_tiling")
            refiner = build_refiner(PREFIX, service.models)
            seed_row = build_seed(PREFIX)
            cn = build_controlnet(PREFIX, controlnet, queue, width, height, img2img=True, max_pixels=lambda: service.limits.max_pixels,
                                  picture=([mode, image, sketch, inpaint, base, mask], _init_picture(service)))
            menu = build_script_menu(PREFIX, scripts)
            alwayson = build_alwayson(PREFIX, extensions)
        with gr.Column(scale=1):
            panel = build_output_panel(PREFIX)
    seed_row.wire(panel)
    top.networks.wire_output(panel.gallery, panel.selected)  # Extra networks' Replace preview: the selected output

    fields = {
        "prompt": top.prompt, "negative_prompt": top.negative, "styles": top.styles, "sampler_name": sampler, "scheduler": schedule,
        "steps": steps, "width": width, "height": height, "n_iter": n_iter, "batch_size": batch_size, "cfg_scale": cfg, **flow,
        "seed": seed_row.seed,
        **seed_row.fields,
        "denoising_strength": denoising, "img2img_fix_steps": exact, "resize_mode": resize_mode, "mask_blur": mask_blur,
        "inpainting_mask_invert": mask_mode, "inpainting_fill": fill, "inpaint_full_res": area, "inpaint_full_res_padding": padding,
        "restore_faces": restore, "tiling": tiling, **refiner,
    }
    names = list(fields)
    overrides = gr.State({})  # Clip skip and emphasis read by ↙ from a pasted infotext
    paste_target = PasteTarget(fields, overrides, img2img=True, extras=(seed_row, cn) if cn else (seed_row,), alwayson=alwayson,
                               on_pasted=extensions.callbacks.infotext_pasted if extensions is not None else None,
                               active_model=lambda: service.models.current.title if service.models.current else "")
    wire_paste(top, paste_target)
    widgets = [mode, image, sketch, inpaint, base, mask, input_dir, output_dir, mask_dir, resize_tab, scale_by]

    def prepare(*inputs):
        """The job's task, its record and the request a script would start from, from the tab's
        inputs (decoding images: run on a thread)."""
        from modules.generation import images as imgops
        from modules.generation.runner import InitImages

        mode, image, sketch, inpaint, base, mask, input_dir, output_dir, mask_dir, resize_tab, scale_by, pasted = inputs[: len(widgets) + 1]
        values = {**dict(zip(names, inputs[len(widgets) + 1 :])), **service.prompt_settings(), **(pasted or {})}
        checkpoint, vae = service.models.pin(), service.pin_vae()  # selected now, whatever others pick before the job's turn
        try:
            units = cn.units_from(inputs[len(widgets) + 1 + len(names) : len(widgets) + 1 + len(names) + len(cn.inputs)]) if cn else []
            at = len(widgets) + 1 + len(names) + (len(cn.inputs) if cn else 0)
            extension_args = alwayson.args_from(inputs[at:at + len(alwayson.inputs)])
            if units:
                cn.check(units)
            if mode == 4:
                if access:
                    access.require_server_folders(BATCH_FEATURE)
                if not (input_dir or "").strip():
                    raise ValueError("Enter the input directory of the batch.")
                params = Img2ImgParams.create(**values)
                service.check_limits(params)
                out = Path(output_dir.strip()) if (output_dir or "").strip() else None
                masks = Path(mask_dir.strip()) if (mask_dir or "").strip() else None
                task = lambda j: service.run_img2img_folder(j, params, Path(input_dir.strip()), out, masks, checkpoint=checkpoint, vae=vae,  # noqa: E731
                                                            controlnet=units, alwayson=extension_args)
                payload = None  # a folder batch is not recorded: its folders may be gone after a restart
                script_request = None
            else:
                picture, drawn = init_from_widgets(mode, image, sketch, inpaint, base, mask)
                picture = imgops.open_image(picture, "init image", service.limits.max_pixels)
                if resize_tab == 1:
                    values["width"], values["height"] = _scaled(picture.size, scale_by)
                params = Img2ImgParams.create(**values)
                service.check_limits(params)
                init = InitImages((picture,), imgops.open_mask(drawn) if mode in INPAINT_MODES and drawn is not None else None)
                task = lambda j: service.run_img2img(j, params, init, checkpoint=checkpoint, vae=vae, controlnet=units,  # noqa: E731
                                                     alwayson=extension_args)
                payload = img2img_payload(params, init, checkpoint=checkpoint, vae=vae, controlnet=units,
                                          alwayson=extension_args)  # recorded, so it survives a restart
                script_request = ScriptRequest("img2img", params, init, checkpoint, vae, tuple(units), alwayson=extension_args)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return task, payload, script_request

    async def run(request: gr.Request, progress=gr.Progress(), *inputs):  # gradio fills request and progress
        title, script_args = menu.args_from(inputs[len(inputs) - len(menu.inputs):]) if menu else (None, {})
        task, payload, script_request = await run_in_threadpool(prepare, *inputs)
        if title is not None:
            if script_request is None:
                raise gr.Error("Scripts run on one picture: use the img2img, Sketch, Inpaint or Inpaint upload tab, not Batch.")
            async for shown in jobs.run_script(scripts, title, script_request, script_args, request, progress):
                yield shown
            return
        async for shown in jobs.run("img2img", task, request, progress, payload=payload):
            yield shown

    for component, label in ((image, "Image for img2img"), (sketch, "Sketch"), (inpaint, "Inpaint"), (base, "Image for img2img"), (mask, "Mask")):
        guard_upload(component, label, lambda: service.limits.max_pixels, mask=component is mask)

    def select_mode(index: int):
        return index, gr.update(visible=index in INPAINT_MODES)

    for index, tab in enumerate(tabs):
        tab.select(lambda i=index: select_mode(i), None, [mode, inpaint_controls], queue=False, api_name=False)
    to_tab.select(lambda: 0, None, resize_tab, queue=False, api_name=False)
    by_tab.select(lambda: 1, None, resize_tab, queue=False, api_name=False)

    def preview_scale(payload, scale):
        size = readable_size(uploaded_file(image, payload))
        if size is None:
            return "<p>Upload an image to see the size.</p>"
        w, h = _scaled(size, scale)
        return f"<p>Resize: from {size[0]}x{size[1]} to <b>{w}x{h}</b></p>"

    # Raw records (preprocess=False), so a bad upload cannot make gradio's preprocessing fail here.
    scale_by.change(preview_scale, [image, scale_by], scaled_size, queue=False, preprocess=False, api_name=False)
    image.change(preview_scale, [image, scale_by], scaled_size, queue=False, preprocess=False, api_name=False)
    generated = top.generate.click(run, [*widgets, overrides, *fields.values(), *(cn.inputs if cn else []), *alwayson.inputs,
                                         *(menu.inputs if menu else [])],
                                   panel.outputs, concurrency_limit=None, api_name="img2img")
    wire_forever(generated, PREFIX)
    jobs.wire_stop_buttons(top)
    if asks is not None:
        def picture_of(mode, image, sketch, inpaint, base, mask):
            from modules.generation import images as imgops

            if mode == 4:
                raise ValueError("Interrogate reads the picture of the img2img, Sketch, Inpaint or Inpaint upload tab.")
            return imgops.open_image(init_from_widgets(mode, image, sketch, inpaint, base, mask if mask is not None else base)[0], "image",
                                     service.limits.max_pixels)

        wire_interrogate(asks, queue, interrogate, [mode, image, sketch, inpaint, base, mask], picture_of, top.prompt)
    by_field = {"sampler_name": sampler, "scheduler": schedule, "steps": steps, "width": width, "height": height, "cfg_scale": cfg}
    return Img2ImgControls(by_field, paste_target, image, inpaint, mode_tabs, mode, inpaint_controls, panel)


def _init_picture(service: GenerationService) -> Callable[..., Image.Image]:
    """img2img's input picture from the mode widgets' values, for ControlNet units that use it."""

    def picture(mode, image, sketch, inpaint, base, mask) -> Image.Image:
        from modules.generation import images as imgops

        if mode == 4:
            raise ValueError("In Batch, each picture of the folder is the ControlNet input: preview with an uploaded control image.")
        chosen = init_from_widgets(mode, image, sketch, inpaint, base, mask if mask is not None else base)[0]
        return imgops.open_image(chosen, "img2img input", service.limits.max_pixels)

    return picture


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """A1111's "Resize by": the init image's size times the scale, to a multiple of 8 within limits."""
    meta = GenerationParams.field_meta("width")
    return tuple(min(meta["maximum"], max(meta["minimum"], int(side * scale) // 8 * 8)) for side in size)  # type: ignore[return-value]
