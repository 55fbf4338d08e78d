import pytest

from modules.generation.params import GenerationParams, infotext_fields


def test_ui_defaults_are_a1111s():
    p = GenerationParams()
    assert (p.sampler_name, p.scheduler, p.steps, p.width, p.height, p.cfg_scale, p.seed, p.n_iter, p.batch_size) == (
        "DPM++ 2M", "Automatic", 20, 512, 512, 7.0, -1, 1, 1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"width": 65}, "Width: must be a multiple of 8 from 64 to 2048, got 65"),
        ({"height": 4096}, "Height: must be a multiple of 8 from 64 to 2048, got 4096"),
        ({"height": 56}, "Height: must be a multiple of 8"),
        ({"steps": 0}, "Sampling steps"),
        ({"steps": 151}, "Sampling steps"),
        ({"sampler_name": "Nope"}, "Sampler not found: 'Nope'"),
        ({"batch_size": 9}, "Batch size"),
        ({"cfg_scale": 31}, "CFG Scale"),
        ({"frobnicate": 1}, "frobnicate: is not a known parameter"),
    ],
)
def test_bad_input_gives_one_readable_message(values, message):
    with pytest.raises(ValueError) as err:
        GenerationParams.create(**values)
    assert message in str(err.value)
    assert "pydantic" not in str(err.value)


def test_none_means_default():
    assert GenerationParams.create(steps=None, sampler_name=None).steps == 20


def test_infotext_fields_in_a1111_order():
    p = GenerationParams.create(prompt="x", steps=20, cfg_scale=7, width=512, height=768)
    fields = infotext_fields(p, seed=5, model_hash="abcdef0123", model_name="m", version="v1")
    assert fields == [
        ("Steps", 20), ("Sampler", "DPM++ 2M"), ("Schedule type", "Karras"), ("CFG scale", "7"), ("Seed", 5),
        ("Size", "512x768"), ("Model hash", "abcdef0123"), ("Model", "m"), ("Clip skip", None), ("Version", "v1"),
    ]
    p2 = GenerationParams.create(cfg_scale=7.5, clip_skip=2, sampler_name="Euler a")
    f2 = dict(infotext_fields(p2, seed=1, model_hash=None, model_name=None, version="v1"))
    assert f2["CFG scale"] == "7.5" and f2["Clip skip"] == 2 and f2["Schedule type"] == "Automatic"
