"""Held-out scores (modules/training/scores.py): FID/KID with the FID Inception from models/,
CLIP score with the interrogator's CLIP, the demo judge, and scores.json."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.demo import shapes
from modules.demo.shapes import FULL_TEMPLATES, Scene
from modules.training import scores
from modules.training.scores import CaptionScene, ScoreModels, Scores, append_scores, evaluate, judge_score, parse_caption, read_scores
from tests.postprocessing.interrogate_models import write_clip


def write_random_inception(path) -> None:
    """torch-fidelity's FID Inception with random weights (He-initialised so activations keep
    their scale through the layers), saved as the real file is: a plain torch state dict."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the real weights are not on this machine
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    model = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_random_inception(root / "inception" / scores.INCEPTION_FILES[0])
    write_clip(root / "CLIP")
    return root


@pytest.fixture(scope="module")
def score_models(models_dir):
    return ScoreModels(models_dir)


@pytest.fixture(autouse=True)
def smallest_inception_input(request, monkeypatch):
    """The network resizes every picture to 299x299 itself; the default suite runs it at 75x75,
    its smallest input (16x less work), and the slow test at the real size."""
    if request.node.get_closest_marker("slow") is None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)


def pictures(scene: Scene, count: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(shapes.random_picture(scene, rng, size)) for _ in range(count)]


RED_CIRCLES = Scene("red", "circle", "white")
BLUE_SQUARES = Scene("blue", "square", "black")


def test_fid_and_kid_of_a_set_with_itself_are_zero_and_of_a_different_set_larger(score_models):
    model = score_models.inception()
    circles = scores.inception_features(model, pictures(RED_CIRCLES, 5))
    # Training pictures come in bucket sizes: a wide one goes through the same 299x299 resize.
    circles_again = scores.inception_features(model, pictures(RED_CIRCLES, 4, seed=1) + pictures(RED_CIRCLES, 1, size=96, seed=2))
    squares = scores.inception_features(model, pictures(BLUE_SQUARES, 5))
    assert circles.shape == (5, 2048)
    fid_self, kid_self, _ = scores.fid_kid(circles, circles)
    fid_near, kid_near, _ = scores.fid_kid(circles, circles_again)
    fid_far, kid_far, kid_std = scores.fid_kid(circles, squares)
    assert all(math.isfinite(v) for v in (fid_self, kid_self, fid_near, kid_near, fid_far, kid_far, kid_std))
    assert abs(fid_self) < 1e-6 * fid_far
    assert fid_far > 2 * fid_near > 0
    assert kid_far > kid_near and kid_far > kid_self
    assert abs(kid_self) < 0.2 * kid_far


@pytest.mark.slow
def test_fid_at_the_networks_real_input_size(score_models):
    model = score_models.inception()
    assert model.INPUT_IMAGE_SIZE == 299
    circles = scores.inception_features(model, pictures(RED_CIRCLES, 3))
    squares = scores.inception_features(model, pictures(BLUE_SQUARES, 3))
    fid_self, _, _ = scores.fid_kid(circles, circles)
    fid_far, kid_far, _ = scores.fid_kid(circles, squares)
    assert abs(fid_self) < 1e-6 * fid_far and kid_far > 0


def test_fid_from_few_pictures_is_the_librarys_fid():
    import torch
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 64, generator=generator, dtype=torch.float64)
    y = 0.5 * torch.randn(5, 64, generator=generator, dtype=torch.float64) + 0.3
    library = fid_statistics_to_metric(fid_features_to_statistics(x), fid_features_to_statistics(y), verbose=False)
    ours = scores.fid_kid(x, y)[0]
    assert ours == pytest.approx(library["frechet_inception_distance"], rel=1e-6)
    many = torch.randn(80, 64, generator=generator, dtype=torch.float64)  # more pictures than dimensions: the library's way
    assert scores.fid_kid(many, y)[0] == pytest.approx(scores.few_picture_fid(many, y), rel=1e-6)


def test_evaluate_scores_generated_pictures_against_training_pictures(models_dir, score_models):
    generated = pictures(RED_CIRCLES, 3)  # fewer than KID's usual 1000-picture subsets: they shrink to 3
    captions = [RED_CIRCLES.prompt()] * 3
    same = evaluate(generated, captions, generated, models_dir=models_dir, step=100, demo=True, models=score_models)
    other = evaluate(generated, captions, pictures(BLUE_SQUARES, 4), models_dir=models_dir, step=200, models=score_models)
    assert (same.step, same.count, other.step) == (100, 3, 200)
    assert same.fid is not None and other.fid is not None and abs(same.fid) < 1e-6 * other.fid
    assert other.kid > same.kid and other.kid_std is not None
    assert 0 <= same.clip_score <= 100 and same.clip_score == other.clip_score  # the same pictures and captions
    assert same.judge == 1.0 and other.judge is None  # the judge only for the demo model
    assert not any("missing" in n or "needs" in n for n in same.notes)


def test_the_training_pictures_go_through_the_network_once_per_run(models_dir):
    models = ScoreModels(models_dir)
    seen = []
    models.inception().register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    generated, training = pictures(RED_CIRCLES, 2), pictures(BLUE_SQUARES, 3)
    first = evaluate(generated, ["a red circle"] * 2, training, models_dir=models_dir, step=1, models=models)
    again = evaluate(generated, ["a red circle"] * 2, pictures(BLUE_SQUARES, 3), models_dir=models_dir, step=2, models=models)
    assert seen == [2, 3, 2] and again.fid == first.fid
    other = evaluate(generated, ["a red circle"] * 2, pictures(BLUE_SQUARES, 3, seed=5), models_dir=models_dir, step=3, models=models)
    assert seen[3:] == [2, 3] and other.fid != first.fid


def test_missing_weights_leave_the_scores_empty_with_notes_naming_the_files(tmp_path):
    generated = pictures(RED_CIRCLES, 2)
    result = evaluate(generated, ["a red circle"] * 2, generated, models_dir=tmp_path / "models", step=5)
    assert (result.fid, result.kid, result.kid_std, result.clip_score, result.judge) == (None,) * 5
    fid_note = next(n for n in result.notes if n.startswith("FID"))
    assert scores.INCEPTION_FILES[0] in fid_note and str(tmp_path / "models" / "inception") in fid_note
    assert "'fid-inception-v3' from the Models tab" in fid_note
    clip_note = next(n for n in result.notes if n.startswith("CLIP"))
    assert str(tmp_path / "models" / "CLIP") in clip_note and "clip-vit-large-patch14" in clip_note


def test_a_file_that_is_not_the_fid_inception_is_refused_by_name(tmp_path):
    import torch

    path = tmp_path / "inception" / scores.INCEPTION_FILES[1]  # pytorch-fid's name is found too
    path.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    assert scores.inception_file(tmp_path) == path
    with pytest.raises(ValueError, match="pt_inception-2015-12-05-6726825d.pth is not the FID Inception"):
        scores.load_inception(path)
    generated = pictures(RED_CIRCLES, 2)
    result = evaluate(generated, ["a red circle"] * 2, generated, models_dir=tmp_path, step=1)  # the run still gets its scores
    assert result.fid is None and any("is not the FID Inception" in n for n in result.notes)


def test_too_few_pictures_for_fid_is_a_note(models_dir, score_models):
    one = pictures(RED_CIRCLES, 1)
    result = evaluate(one, [RED_CIRCLES.prompt()], pictures(RED_CIRCLES, 3), models_dir=models_dir, step=1, models=score_models)
    assert result.fid is None and result.kid is None and result.clip_score is not None
    assert any("at least 2 generated and 2 training pictures (got 1 and 3)" in n for n in result.notes)


def test_clip_score_is_the_mean_of_each_pairs_score_within_0_and_100(score_models):
    parts = score_models.clip()
    images = pictures(RED_CIRCLES, 1) + pictures(BLUE_SQUARES, 1)
    captions = ["a red circle on a white background", "a blue square on a black background"]
    each = [scores.clip_score(parts, [image], [caption]) for image, caption in zip(images, captions)]
    both = scores.clip_score(parts, images, captions)
    assert all(0 <= v <= 100 for v in each)
    assert both == pytest.approx(sum(each) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="one caption per picture"):
        scores.clip_score(parts, images, captions[:1])


def test_the_clip_folder_the_interrogator_uses_is_where_clip_score_looks(tmp_path):
    from modules.postprocessing.interrogate import ClipInterrogator

    write_clip(tmp_path / "CLIP")
    assert scores.clip_file(tmp_path) == ClipInterrogator(tmp_path / "BLIP", tmp_path / "CLIP").clip_dir / "clip-vit-large-patch14.safetensors"


# --------------------------------------------------------------------------- the demo judge

SCENES = (Scene("red", "circle", "white"), Scene("blue", "square", "yellow"), Scene("green", "triangle", "black"),
          Scene("orange", "star", "purple"))


def drawn(scene: Scene) -> Image.Image:
    return shapes.draw(scene, (32.0, 32.0), 20.0)


def test_judge_gives_1_for_pictures_that_match_their_captions_and_0_for_swapped_captions():
    images = [drawn(s) for s in SCENES]
    captions = [s.prompt(FULL_TEMPLATES[k % len(FULL_TEMPLATES)]) for k, s in enumerate(SCENES)]
    assert judge_score(images, captions) == 1.0
    assert judge_score(images, captions[1:] + captions[:1]) == 0.0


def test_judge_checks_only_what_a_caption_names_and_leaves_out_what_it_cannot_read():
    images = [drawn(SCENES[0]), drawn(SCENES[1]), drawn(SCENES[2])]
    # "a red circle" says nothing of the background; "a circle" is wrong for a square; the last names no scene.
    assert judge_score(images, ["a red circle", "a circle", "sks style, masterpiece"]) == 0.5
    assert judge_score(images[:1], ["photo of sks"]) is None


def test_judge_reads_a_taught_colour_word():
    teal = (0, 128, 128)
    image = Image.new("RGB", (64, 64), shapes.PALETTE["white"])
    ImageDraw.Draw(image).ellipse([12, 12, 52, 52], fill=teal)
    assert judge_score([image], ["a teal circle on a white background"], {"teal": teal}) == 1.0
    assert judge_score([image], ["a green circle on a white background"], {"teal": teal}) == 0.0


def test_captions_parse_as_the_demo_grammar_in_every_template():
    colours = tuple(shapes.PALETTE) + ("teal", "light pink")
    scene = Scene("teal", "star", "light pink")
    for template in FULL_TEMPLATES:
        assert parse_caption(scene.prompt(template), colours) == CaptionScene("teal", "star", "light pink"), template
    assert parse_caption("a red shape", colours) == CaptionScene("red", None, None)
    assert parse_caption("blue background", colours) == CaptionScene(None, None, "blue")
    assert parse_caption("a red circle and a blue square", colours) is None  # two scenes: not one to check
    assert parse_caption("red", colours) is None


# --------------------------------------------------------------------------- scores.json

def test_scores_json_round_trip_and_appending(tmp_path):
    first = Scores(step=100, fid=12.5, kid=0.01, kid_std=0.002, clip_score=None, judge=0.75, count=8, notes=("CLIP score needs ...",))
    assert Scores.from_json(json.loads(json.dumps(first.to_json()))) == first
    path = tmp_path / "run" / "scores.json"
    append_scores(path, Scores(step=200, fid=9.0, count=8))
    append_scores(path, first)
    append_scores(path, Scores(step=200, fid=7.0, count=8))  # a resumed run scores step 200 again
    data = json.loads(path.read_text(encoding="utf-8"))
    assert [item["step"] for item in data] == [100, 200] and data[1]["fid"] == 7.0
    assert read_scores(path)[0] == first
    assert [p.name for p in path.parent.iterdir()] == ["scores.json"]  # no temporary file left


def test_entries_from_a_later_version_keep_their_fields_and_a_broken_file_is_named(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps([{"step": 50, "fid": 3.0, "precision": 0.9}]), encoding="utf-8")
    append_scores(path, Scores(step=60))
    assert json.loads(path.read_text(encoding="utf-8"))[0] == {"step": 50, "fid": 3.0, "precision": 0.9}
    assert read_scores(path)[0] == Scores(step=50, fid=3.0)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="scores.json cannot be read"):
        append_scores(path, Scores(step=70))


def test_the_catalog_entry_downloads_the_file_the_scores_look_for(tmp_path):
    from modules.models.downloadable import MODEL_FOLDERS, Catalog, resolve_request

    source, folder = resolve_request(scores.INCEPTION_ENTRY, Catalog.load())
    assert folder == scores.INCEPTION_FOLDER and folder in MODEL_FOLDERS
    assert source.filename in scores.INCEPTION_FILES and source.sha256.startswith("6726825d") and source.size == 95628359
    (tmp_path / folder).mkdir()
    (tmp_path / folder / source.filename).write_bytes(b"x")
    assert scores.inception_file(tmp_path) == tmp_path / folder / source.filename
