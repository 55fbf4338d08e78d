"""The Extras tab's handler, called as gradio would call it: what each sub-tab hands the
queue, what the gallery and log show, and readable errors."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from modules.jobs.extras_task import ExtrasService
from modules.jobs.queue import JobQueue
from modules.ui.extras import build_extras_tab
from tests import aio


@pytest.fixture
def tab(tmp_path):
    queue = JobQueue()
    service = ExtrasService(tmp_path / "outputs" / "extras-images")
    with gr.Blocks():
        controls = build_extras_tab(queue, lambda: service)
    yield controls, service, tmp_path
    queue.shutdown()


def values(mode=0, resize_tab=0, image=None, files=None, input_dir="", output_dir="", show=True, resize=2, width=512, height=512, crop=True,
           up1="Nearest", up2="None", visibility=0.0) -> list:
    return [mode, resize_tab, image, files, input_dir, output_dir, show, resize, width, height, crop, up1, up2, visibility]


def press(controls, *inputs):
    return aio.run(controls.run(None, gr.Progress(), *inputs))


def test_single_image_is_saved_and_shown(tab):
    controls, service, tmp_path = tab
    gallery, info, log = press(controls, *values(image=Image.new("RGBA", (10, 6), (0, 255, 0, 255))))
    saved = tmp_path / "outputs" / "extras-images" / "00000.png"
    assert gallery == [str(saved)] and Image.open(saved).size == (20, 12)
    assert "Postprocess upscale by: 2, Postprocess upscaler: Nearest" in info
    assert "1 image(s)" in log and str(saved.parent) in log


def test_scale_to_tab_uses_width_and_height(tab):
    controls, _, tmp_path = tab
    press(controls, *values(resize_tab=1, image=Image.new("RGB", (10, 20)), width=30, height=15.0, crop=False, up1="Lanczos"))
    assert Image.open(tmp_path / "outputs" / "extras-images" / "00000.png").size == (30, 15)


def test_batch_upload_keeps_names_and_skips_what_is_not_an_image(tab):
    controls, _, tmp_path = tab
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(uploads / "red.png")
    (uploads / "readme.txt").write_text("hello")
    gallery, _, log = press(controls, *values(mode=1, files=[str(uploads / "red.png"), str(uploads / "readme.txt")]))
    assert [g.rsplit("/", 1)[-1] for g in gallery] == ["red.png"]
    assert "Skipped readme.txt: not an image." in log


def test_folder_batch_can_hide_results(tab):
    controls, _, tmp_path = tab
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    gallery, _, log = press(controls, *values(mode=2, input_dir=str(folder), output_dir=str(out), show=False))
    assert gallery == [] and (out / "a.png").is_file() and "1 image(s)" in log
    gallery, _, _ = press(controls, *values(mode=2, input_dir=str(folder), output_dir=str(out), show=True))
    assert len(gallery) == 1 and isinstance(gallery[0], Image.Image)  # outside the extras folder: the image itself


@pytest.mark.parametrize(
    "inputs, message",
    [
        (values(), "Upload an image to the Single Image tab"),
        (values(mode=1, files=[]), "Upload images to the Batch Process tab"),
        (values(mode=2), "Enter the input directory"),
        (values(mode=2, input_dir="/no/such/folder"), "does not exist"),
        (values(image=Image.new("RGB", (2000, 8)), resize=8), "each side must be 1 to 8192"),
        (values(image=Image.new("RGB", (8, 8)), up1="SwinIR"), "Upscaler 1 'SwinIR' not found"),
    ],
)
def test_problems_are_shown_as_errors(tab, inputs, message):
    controls, _, _ = tab
    with pytest.raises(gr.Error, match=message):
        press(controls, *inputs)


def test_the_tabs_track_which_mode_and_resize_tab_are_chosen(tab):
    controls, _, _ = tab
    assert controls.image.elem_id == "extras_image" and controls.generate.elem_id == "extras_generate"
    assert controls.gallery.elem_id == "extras_gallery" and controls.info.elem_id == "extras_html_info"
    mode, resize_tab = controls.inputs[:2]
    assert isinstance(mode, gr.State) and isinstance(resize_tab, gr.State)
