"""Bodies no JSON client should send, on every route that takes one: broken and truncated
JSON, bytes that are not UTF-8, the wrong top-level type, 100,000 levels of nesting, NaN and
Infinity as bare words, 50 MB bodies. Each is a 4xx with a sentence, never a 500, and the
server keeps answering."""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import IMG2IMG, SMALL, Case, both, options_still_served, post, raw_json, run_case
from tests.hostile.images import png_b64

# Every route that reads a JSON body, with a minimal valid body for it.
BODY_ROUTES = {
    "txt2img": lambda: {"prompt": "x", **SMALL},
    "img2img": lambda: {"prompt": "x", "init_images": [png_b64()], **IMG2IMG},
    "queue/txt2img": lambda: {"prompt": "x", **SMALL},
    "queue/img2img": lambda: {"prompt": "x", "init_images": [png_b64()], **IMG2IMG},
    "options": lambda: {"jpeg_quality": 80},
    "png-info": lambda: {"image": png_b64()},
    "extra-single-image": lambda: {"image": png_b64(), "upscaling_resize": 1},
    "extra-batch-images": lambda: {"imageList": [{"data": png_b64()}], "upscaling_resize": 1},
}
NESTING = 100_000

MALFORMED = {
    "not-json": b"{not json",
    "truncated-object": b'{"prompt": "x", "steps": ',
    "unterminated-string": b'{"prompt": "x',
    "trailing-garbage": b'{"prompt": "x"} and more',
    "single-quotes": b"{'prompt': 'x'}",
    "trailing-comma": b'{"prompt": "x",}',
    "comment": b'{"prompt": "x" /* hi */}',
    "not-utf8": b'{"prompt": "\xff\xfe\xfa caf\xe9"}',
    "nul-bytes": b'{"prompt": "x"\x00\x00}',
    "top-level-array": b"[]",
    "top-level-string": b'"prompt"',
    "top-level-number": b"123",
    "top-level-null": b"null",
    "top-level-true": b"true",
    "empty-body": b"",
    "deep-open-brackets": lambda: b"[" * NESTING,
    "deep-balanced-arrays": lambda: b"[" * NESTING + b"]" * NESTING,
    "deep-objects-in-a-field": lambda: b'{"prompt": "x", "comments": ' + b'{"a":' * NESTING + b"1" + b"}" * NESTING + b"}",
}
# A number field of each route, for numbers JSON allows and floats do not hold.
NUMBER_FIELD = {"txt2img": "steps", "img2img": "steps", "queue/txt2img": "cfg_scale", "queue/img2img": "denoising_strength",
                "options": "jpeg_quality", "png-info": "image", "extra-single-image": "upscaling_resize", "extra-batch-images": "upscaling_resize"}

CASES: list[Case] = []
for route in BODY_ROUTES:
    for label, body in MALFORMED.items():
        expect = "4xx"
        if route == "options" and label == "deep-objects-in-a-field":
            body = lambda: b'{"x": ' + b'{"a":' * NESTING + b"1" + b"}" * NESTING + b"}"  # noqa: E731
        CASES.append(post(f"{route}-{label}", route, body, expect=expect, then=options_still_served if route == "options" else None))
    CASES.append(post(f"{route}-utf16-with-bom", route, lambda r=route: json.dumps(BODY_ROUTES[r]()).encode("utf-16"), expect=(200, "4xx")))
    field = NUMBER_FIELD[route]
    CASES.append(post(f"{route}-{field}-100000-digits", route, lambda r=route, f=field: _with_raw(r, f, "9" * 100_000)))
    CASES.append(post(f"{route}-{field}-1e999999999", route, lambda r=route, f=field: _with_raw(r, f, "1e999999999"),
                      then=options_still_served if route == "options" else None))
    CASES.append(Case(f"{route}-form-encoded", "POST", f"/sdapi/v1/{route}", b"prompt=x&steps=2",
                      headers={"content-type": "application/x-www-form-urlencoded"}))
    CASES.append(Case(f"{route}-text-plain-json", "POST", f"/sdapi/v1/{route}", b'{"prompt": 5}', headers={"content-type": "text/plain"}))
    CASES.append(Case(f"{route}-multipart", "POST", f"/sdapi/v1/{route}", b"--x\r\n\r\n--x--", headers={"content-type": "multipart/form-data; boundary=x"}))

MB50 = 50 * 2**20
CASES += [
    post("txt2img-50MB-prompt", "txt2img", lambda: {"prompt": "a" * MB50, **SMALL}, mentions=(r"limit|large|long",)),
    post("queue-txt2img-50MB-prompt", "queue/txt2img", lambda: {"prompt": "a " * (MB50 // 2), **SMALL}, mentions=(r"limit|large|long",)),
    post("txt2img-50MB-of-styles", "txt2img", lambda: {"prompt": "x", "styles": ["nope"] * (MB50 // 8), **SMALL}),
    post("img2img-50MB-init-image", "img2img", lambda: {"init_images": ["QUFB" * (MB50 // 4)], **IMG2IMG}),
    post("img2img-50MB-of-init-images", "img2img", lambda: {"init_images": [png_b64()] * (MB50 // 450), **IMG2IMG}),
    post("png-info-50MB-image", "png-info", lambda: {"image": "iVBO" + "A" * MB50}),
    post("extras-single-50MB-image", "extra-single-image", lambda: {"image": "/9j/" + "A" * MB50}),
    post("extras-batch-50MB-of-entries", "extra-batch-images", lambda: {"imageList": [{"data": "", "name": "x" * 1000}] * (MB50 // 1024)}),
    post("options-50MB-value", "options", lambda: {"my_extension_setting": "x" * MB50}, then=options_still_served),
    post("options-50MB-of-keys", "options", lambda: {f"key{i}": i for i in range(MB50 // 16)}, then=options_still_served),
]

# NaN and Infinity: Python's json reads the bare words, so each must be refused or harmless,
# and no answer may carry them back (they are not JSON).
NAN = [  # route, field, word, other fields, what the message must name
    ("txt2img", "cfg_scale", "NaN", {}, r"cfg"),
    ("txt2img", "cfg_scale", "Infinity", {}, r"cfg"),
    ("txt2img", "steps", "NaN", {}, r"steps"),
    ("txt2img", "seed", "Infinity", {}, r"seed"),
    ("txt2img", "width", "-Infinity", {}, r"width"),
    ("txt2img", "denoising_strength", "NaN", {"enable_hr": True}, r"denoising"),
    ("txt2img", "hr_scale", "Infinity", {"enable_hr": True}, r"hr_scale|upscale by"),
    ("txt2img", "eta", "NaN", {}, r"eta"),
    ("txt2img", "s_churn", "Infinity", {}, r"churn"),
    ("txt2img", "s_noise", "NaN", {}, r"noise"),
    ("txt2img", "subseed_strength", "NaN", {}, r"subseed|variation"),
    ("queue/txt2img", "cfg_scale", "NaN", {}, r"cfg"),
    ("img2img", "denoising_strength", "NaN", {}, r"denoising"),
    ("img2img", "mask_blur", "Infinity", {}, r"mask.blur"),
    ("img2img", "inpaint_full_res_padding", "NaN", {}, r"padding"),
    ("img2img", "resize_mode", "-Infinity", {}, r"resize"),
    ("queue/img2img", "denoising_strength", "Infinity", {}, r"denoising"),
    ("extra-single-image", "upscaling_resize", "NaN", {}, r"upscaling_resize|resize"),
    ("extra-single-image", "upscaling_resize", "Infinity", {}, r"upscaling_resize|resize"),
    ("extra-single-image", "upscaling_resize", "-Infinity", {}, r"upscaling_resize|resize"),
    ("extra-single-image", "upscaling_resize_w", "Infinity", {"resize_mode": 1}, r"upscaling_resize_w|width"),
    ("extra-single-image", "extras_upscaler_2_visibility", "NaN", {"upscaler_2": "Lanczos"}, r"visibility"),
    ("extra-batch-images", "upscaling_resize", "NaN", {}, r"upscaling_resize|resize"),
    ("options", "s_churn", "NaN", {}, r"s_churn|churn|config|JSON"),
    ("options", "jpeg_quality", "Infinity", {}, r"jpeg_quality"),
    ("options", "eta_ancestral", "-Infinity", {}, r"eta_ancestral"),
    ("options", "my_extension_setting", "NaN", {}, r"my_extension_setting|config|JSON"),
    ("options", "sigma_max", "Infinity", {}, r"sigma_max"),
    ("png-info", "image", "NaN", {}, r"image"),
]


def _with_raw(route: str, name: str, word: str, extra: dict | None = None) -> bytes:
    """The route's valid body with `name` set to `word` written as is (NaN, a 100,000-digit number)."""
    base = {**BODY_ROUTES[route](), **(extra or {})}
    base.pop(name, None)
    text = json.dumps(base)
    return raw_json(text[:-1] + (", " if base else "") + f'"{name}": {word}}}')


for route, name, word, extra, names in NAN:
    CASES.append(post(f"{route}-{name}-{word}", route, lambda r=route, n=name, w=word, e=extra: _with_raw(r, n, w, e), mentions=(names,),
                      then=options_still_served if route == "options" else None))

# Fields the server accepts and does not use: NaN there may be ignored (200) but must not come back.
for route, name in (("txt2img", "s_min_uncond"), ("txt2img", "refiner_switch_at"), ("img2img", "image_cfg_scale"),
                    ("img2img", "initial_noise_multiplier"), ("extra-single-image", "gfpgan_visibility"), ("txt2img", "comments")):
    CASES.append(post(f"{route}-unused-{name}-NaN", route, lambda r=route, n=name: _with_raw(r, n, "NaN", {}), expect=(200, 400, 422)))
    CASES.append(post(f"{route}-unused-{name}-Infinity", route, lambda r=route, n=name: _with_raw(r, n, "Infinity", {}), expect=(200, 400, 422)))
CASES.append(post("txt2img-unknown-extra-field-NaN", "txt2img", lambda: _with_raw("txt2img", "my_client_field", "NaN", {}), expect=(200, 400, 422)))
CASES.append(post("txt2img-NaN-inside-override-settings", "txt2img",
                  raw_json('{"prompt": "x", "width": 64, "height": 64, "steps": 2, "override_settings": {"s_noise": NaN}}'), mentions=(r"noise",)))
CASES.append(post("txt2img-Infinity-sigma-max-with-karras", "txt2img",
                  raw_json('{"prompt": "x", "width": 64, "height": 64, "steps": 2, "scheduler": "Karras", "override_settings": {"sigma_max": Infinity}}'),
                  mentions=(r"sigma",)))
CASES.append(post("options-NaN-then-options-still-served", "options", raw_json('{"rho": NaN, "jpeg_quality": 80}'),
                  then=both(options_still_served)))


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_hostile_body(hostile, group_rss, case):
    run_case(hostile, case)


def test_memory_is_back_after_the_body_cases(memory_check):
    memory_check("body")
