"""The Extras job: where its files go, what they are called, what metadata they keep, and
folder batches that skip what is not an image and never overwrite their inputs."""

from __future__ import annotations

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.jobs.extras_task import ExtrasService
from modules.jobs.queue import JobQueue, JobStatus
from modules.outputs.infotext import read_infotext

SOURCE_TEXT = "a red square\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 16x16"


def made_png(path, size=(16, 16), colour=(200, 10, 10), text: str | None = SOURCE_TEXT) -> Image.Image:
    """A generated-looking PNG, opened from disk so its chunks are in .info."""
    info = PngInfo()
    if text:
        info.add_text("parameters", text)
    Image.new("RGB", size, colour).save(path, pnginfo=info)
    return Image.open(path)


@pytest.fixture
def service(tmp_path):
    return ExtrasService(tmp_path / "outputs" / "extras-images")


def test_single_images_are_numbered_in_the_extras_folder_and_keep_their_parameters(tmp_path, service):
    source = made_png(tmp_path / "in.png")
    params = service.params(upscaling_resize=2, upscaler_1="Lanczos")
    first = service.run(None, [(source, None)], params)
    second = service.run(None, [(source, None)], params)
    folder = tmp_path / "outputs" / "extras-images"
    assert first.paths == [folder / "00000.png"] and second.paths == [folder / "00001.png"]  # no date folder
    with Image.open(first.paths[0]) as saved:
        assert saved.size == (32, 32)
        assert saved.info["parameters"] == SOURCE_TEXT
        assert saved.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
        assert saved.info["extras"] == saved.info["postprocessing"]
    assert first.infotexts == ["Postprocess upscale by: 2, Postprocess upscaler: Lanczos"] and first.parameters == [SOURCE_TEXT]
    assert first.images[0].size == (32, 32)


def test_an_image_without_parameters_gets_none(tmp_path, service):
    result = service.run(None, [(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), None)], service.params(upscaling_resize=1))
    with Image.open(result.paths[0]) as saved:
        assert "parameters" not in saved.info and saved.info["postprocessing"].startswith("Postprocess upscale by: 1")
        assert saved.getpixel((3, 3)) == (255, 255, 255)  # transparency flattened to white, as A1111


def test_jpeg_keeps_the_parameters_in_exif(tmp_path, service):
    service.configure(file_format="jpg", jpeg_quality=90)
    result = service.run(None, [(made_png(tmp_path / "in.png"), None)], service.params(upscaling_resize=2))
    assert result.paths[0].name == "00000.jpg"
    assert read_infotext(result.paths[0]) == SOURCE_TEXT
    with pytest.raises(ValueError):
        service.configure(file_format="bmp")
    assert service.settings.file_format == "jpg"  # a bad value changes nothing


def test_batch_uploads_keep_their_names_unless_told_not_to(tmp_path, service):
    a, b = made_png(tmp_path / "cat.png"), made_png(tmp_path / "dog.png", colour=(0, 0, 200))
    params = service.params(upscaling_resize=1.5)
    result = service.run(None, [(a, "cat.png"), (b, "C:\\photos\\dog.png")], params)
    assert [p.name for p in result.paths] == ["cat.png", "dog.png"]
    again = service.run(None, [(a, "cat.png")], params)
    assert again.paths[0].name == "cat-1.png"  # never over an earlier result
    service.configure(use_original_name_batch=False)
    numbered = service.run(None, [(a, "cat.png")], params)
    assert numbered.paths[0].name == "00000.png"


def test_not_saving_writes_nothing(tmp_path, service):
    result = service.run(None, [(made_png(tmp_path / "in.png"), None)], service.params(), save=False)
    assert result.paths == [] and result.images[0].size == (32, 32)
    assert result.images[0].info["parameters"] == SOURCE_TEXT and "postprocessing" in result.images[0].info
    assert not (tmp_path / "outputs").exists()


def test_folder_batch_skips_other_files_and_never_overwrites_inputs(tmp_path, service):
    folder = tmp_path / "photos"
    folder.mkdir()
    made_png(folder / "a.png").close()
    made_png(folder / "b.png", colour=(0, 200, 0)).close()
    (folder / "notes.txt").write_text("not a picture")
    (folder / "sub").mkdir()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    result = service.run_folder(None, folder, folder, service.params(upscaling_resize=2))
    assert result.notes == ["Skipped notes.txt: not an image."]
    assert [p.name for p in result.paths] == ["a-1.png", "b-1.png"]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before
    with Image.open(folder / "b-1.png") as out:
        assert out.size == (32, 32) and out.getpixel((5, 5)) == (0, 200, 0) and out.info["parameters"] == SOURCE_TEXT


def test_folder_batch_defaults_to_the_extras_folder_and_can_hide_results(tmp_path, service):
    folder = tmp_path / "in"
    folder.mkdir()
    made_png(folder / "x.png").close()
    result = service.run_folder(None, folder, "  ", service.params(), show_results=False)
    assert result.paths == [tmp_path / "outputs" / "extras-images" / "x.png"] and result.images == [] and result.count == 1
    with pytest.raises(ValueError, match="does not exist"):
        service.run_folder(None, tmp_path / "missing", None, service.params())
    with pytest.raises(ValueError, match="input directory"):
        service.run_folder(None, "", None, service.params())


def test_extras_run_on_the_queue_and_an_interrupt_stops_between_images(tmp_path, service):
    queue = JobQueue()
    try:
        source = made_png(tmp_path / "in.png")
        job = queue.submit("extras", lambda j: service.run(j, [(source, None), (source, None)], service.params()), user="u")
        assert job.wait(30) and job.status is JobStatus.DONE and len(job.result.paths) == 2 and not job.recorded

        def interrupted(j):
            j.control.interrupt()  # as if Interrupt was pressed while the first image ran
            return service.run(j, [(source, None), (source, None)], service.params())

        job = queue.submit("extras", interrupted, user="u")
        assert job.wait(30) and job.status is JobStatus.INTERRUPTED and job.result.count == 0
        bad = queue.submit("extras", lambda j: service.run(j, [(Image.new("RGB", (2000, 10)), None)], service.params(upscaling_resize=8)))
        assert bad.wait(30) and bad.status is JobStatus.FAILED and "each side must be 1 to 8192" in bad.error
    finally:
        queue.shutdown()


def test_logged_in_users_results_go_to_their_own_folder(tmp_path):
    from modules.jobs.queue import Job

    service = ExtrasService(tmp_path / "extras-images", user_folders=True)
    params = service.params(upscaling_resize=2, upscaler_1="Nearest")
    alice = Job(id="task(a)", kind="extras", task=lambda j: None, user="alice")
    (mine,) = service.run(alice, [(Image.new("RGB", (8, 8), "red"), None)], params).paths
    (named,) = service.run(alice, [(Image.new("RGB", (8, 8), "red"), "cat.png")], params).paths
    anonymous = Job(id="task(b)", kind="extras", task=lambda j: None, user="ip:10.0.0.2")
    (theirs,) = service.run(anonymous, [(Image.new("RGB", (8, 8), "red"), None)], params).paths
    assert (mine.parent, named) == (tmp_path / "extras-images" / "alice", tmp_path / "extras-images" / "alice" / "cat.png")
    assert theirs.parent == tmp_path / "extras-images"
