"""Face restoration: the shipped Haar cascade finds a drawn face, faces are cut out upright,
restored by random-weight GFPGAN / CodeFormer models of the real layouts (loaded from their
folders through spandrel) and pasted back so that only the face changes; bad model files
are clear errors that name the catalog entry to download."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from modules.postprocessing import face_restoration as fr
from modules.postprocessing.face_detection import YUNET_FILE, Face, FaceDetector, eyes_from_box
from tests.postprocessing.face_models import FACE_CENTRE, drawn_face, write_codeformer, write_compact_upscaler, write_gfpgan


def folders(root):
    return {"GFPGAN": root / "GFPGAN", "Codeformer": root / "Codeformer", "face-detection": root / "face-detection"}


@pytest.fixture(scope="module")
def gfpgan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("face-models")
    write_gfpgan(root / "GFPGAN" / "GFPGANv1.4.pth")
    return root


def changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=2) > 0


def test_the_shipped_haar_cascade_finds_the_drawn_face(tmp_path):
    detector = FaceDetector(tmp_path)  # no YuNet model there
    assert detector.kind == "Haar cascade"
    faces = detector.detect(drawn_face())
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    cx, cy = FACE_CENTRE
    assert x < cx < x + w and y < cy < y + h and 100 < w < 220
    left, right = faces[0].eyes
    assert left[0] < cx < right[0] and abs(left[1] - right[1]) < 1
    assert detector.detect(Image.new("RGB", (256, 256), (40, 60, 90))) == []


def test_a_broken_yunet_file_falls_back_to_the_cascade(tmp_path):
    (tmp_path / YUNET_FILE).write_bytes(b"not an onnx model")
    detector = FaceDetector(tmp_path)
    assert detector.kind == "Haar cascade" and len(detector.detect(drawn_face())) == 1


def test_alignment_turns_a_tilted_face_upright_onto_the_template_eyes():
    angle = math.radians(25)
    centre, half = np.array([300.0, 200.0]), 40.0
    offset = np.array([math.cos(angle), math.sin(angle)]) * half
    eyes = (tuple(centre - offset), tuple(centre + offset))
    matrix = fr.alignment(Face((0, 0, 1, 1), eyes, True))
    for eye, target in zip(eyes, fr.TEMPLATE_EYES):
        mapped = matrix @ np.array([*eye, 1.0])
        # the template's eyes are level to within 0.25 px; a similarity maps both within a pixel
        assert np.allclose(mapped, target, atol=0.6), (mapped, target)


def test_paste_back_changes_the_face_only_and_visibility_blends():
    image = drawn_face()
    faces = FaceDetector(None).detect(image)
    invert = lambda crop: 255 - crop  # noqa: E731 - a restorer whose effect is unmistakable
    full = fr.paste_faces(image, faces, invert)
    moved = changed(image, full)
    x, y, w, h = faces[0].box
    assert moved[y + h // 4: y + 3 * h // 4, x + w // 4: x + 3 * w // 4].all()  # the middle of the face: all new
    assert not moved[:48].any() and not moved[-48:].any() and not moved[:, :48].any() and not moved[:, -48:].any()  # far away: bit for bit
    assert np.array_equal(np.asarray(fr.paste_faces(image, faces, invert, visibility=0)), np.asarray(image))
    half = np.asarray(fr.paste_faces(image, faces, invert, visibility=0.5), np.float32)
    centre = (slice(y + h // 3, y + 2 * h // 3), slice(x + w // 3, x + 2 * w // 3))
    expected = (np.asarray(image, np.float32)[centre] + np.asarray(full, np.float32)[centre]) / 2
    assert np.abs(half[centre] - expected).max() <= 1.0
    edge = np.asarray(full, np.int16)[moved] - np.asarray(image, np.int16)[moved]  # the feathered rim takes part of the change
    assert (np.abs(edge) < np.abs(255 - 2 * np.asarray(image, np.int16)[moved]) - 2).any()


def test_gfpgan_from_its_folder_restores_the_face_and_nothing_else(gfpgan_root):
    faces = fr.FaceRestoration(folders(gfpgan_root))
    assert faces.available() == ["GFPGAN"] and faces.describe() == [{"name": "GFPGAN", "cmd_dir": None}]
    image = drawn_face()
    box = faces.detector().detect(image)[0].box
    restored = faces.restore(image, "CodeFormer")  # the chosen one is missing: the one present runs
    moved = changed(image, restored)
    x, y, w, h = box
    assert moved[y + h // 4: y + 3 * h // 4, x + w // 4: x + 3 * w // 4].mean() > 0.9
    assert not moved[:48].any() and not moved[-48:].any() and not moved[:, :48].any() and not moved[:, -48:].any()
    assert np.array_equal(np.asarray(faces.restore(image, "GFPGAN", visibility=0)), np.asarray(image))
    faces.unload_after_use = True  # face_restoration_unload: moved off the GPU (nothing to move on this CPU), still usable
    blank = Image.new("RGB", (128, 128), (40, 60, 90))
    assert np.array_equal(np.asarray(faces.restore(blank, "GFPGAN")), np.asarray(blank))  # no face: unchanged


def test_codeformer_weight_reaches_the_network(tmp_path, monkeypatch):
    write_codeformer(tmp_path / "Codeformer" / "codeformer-v0.1.0.pth")
    restorer = fr.FaceRestoration(folders(tmp_path)).restorers["CodeFormer"]
    descriptor = restorer.load()
    assert descriptor.architecture.id == "CodeFormer"
    seen = []

    def spy(x, weight=0.5, **kw):  # the network itself runs in the Extras API test; here: what it is handed
        seen.append((weight, tuple(x.shape), round(float(x.min()), 3), round(float(x.max()), 3)))
        return (x, None)

    monkeypatch.setattr(descriptor.model, "forward", spy)
    crop = np.zeros((512, 512, 3), np.uint8)
    crop[:, 256:] = 255
    out = restorer.restore_crop(crop, weight=0.25)
    assert seen == [(0.25, (1, 3, 512, 512), -1.0, 1.0)]  # weight passed, RGB scaled to [-1, 1]
    assert np.array_equal(out, crop)  # and scaled back


def test_a_model_of_another_architecture_is_named_and_the_other_restorer_still_works(tmp_path, gfpgan_root):
    write_compact_upscaler(tmp_path / "GFPGAN" / "GFPGANv1.4.pth")
    faces = fr.FaceRestoration(folders(tmp_path))
    with pytest.raises(ValueError, match=r"GFPGANv1\.4\.pth in .* is a .*Compact.* model, not GFPGAN: download 'gfpgan-v1\.4' from the Models tab"):
        faces.restore(drawn_face(), "GFPGAN")
    (tmp_path / "Codeformer").mkdir()
    (tmp_path / "Codeformer" / "codeformer-v0.1.0.pth").write_bytes(b"\x80\x04truncated")
    with pytest.raises(ValueError, match=r"CodeFormer model codeformer-v0\.1\.0\.pth cannot be read: corrupt .*'codeformer-v0\.1\.0'"):
        faces.restorers["CodeFormer"].load()
    empty = fr.FaceRestoration(folders(tmp_path / "nothing"))
    with pytest.raises(ValueError, match=r"Restore faces needs a face restoration model: download 'gfpgan-v1\.4' or 'codeformer-v0\.1\.0'"):
        empty.pick("GFPGAN")
    with pytest.raises(ValueError, match=r"No GFPGAN model in .*: download 'gfpgan-v1\.4'"):
        empty.restore(drawn_face(), "GFPGAN", exact=True)


def test_a_torchscript_pt_file_is_refused_without_running_it(tmp_path, monkeypatch):
    """spandrel's own loader hands a .pt file to torch.jit.load, which runs a whole program:
    face models are read weights-only like the upscalers."""
    import torch

    (tmp_path / "GFPGAN").mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "GFPGAN" / "GFPGANv1.4.pt"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran"))
    faces = fr.FaceRestoration(folders(tmp_path))
    with pytest.raises(ValueError, match=r"GFPGAN model GFPGANv1\.4\.pt cannot be read.*download 'gfpgan-v1\.4'"):
        faces.restorers["GFPGAN"].load()


def test_codeformer_without_its_optional_package_says_so(tmp_path, monkeypatch):
    write_compact_upscaler(tmp_path / "Codeformer" / "codeformer-v0.1.0.pth")  # never read: the package check comes first
    monkeypatch.setattr(fr, "codeformer_supported", lambda: False)
    faces = fr.FaceRestoration(folders(tmp_path))
    assert faces.available() == []
    with pytest.raises(ValueError, match=r"spandrel-extra-arches.*non-commercial"):
        faces.restorers["CodeFormer"].load()


def test_the_spandrel_registry_is_our_copy():
    from spandrel import MAIN_REGISTRY

    before = len(MAIN_REGISTRY)
    registry = fr.spandrel_registry()
    assert "CodeFormer" in registry and "CodeFormer" not in MAIN_REGISTRY and len(MAIN_REGISTRY) == before


def test_haar_eyes_sit_in_the_upper_half_of_the_box():
    (lx, ly), (rx, ry) = eyes_from_box((10, 20, 100, 100))
    assert 10 < lx < 60 < rx < 110 and ly == ry and 20 < ly < 70
