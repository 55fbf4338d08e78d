"""Pictures as init images, masks, Extras and PNG Info images: every mode and format Pillow
opens must work (200), what it cannot open is a 400 that names the field, and pictures over the
pixel limit (bombs that declare gigapixels, a real 100 MP PNG) are a 400 that mentions the limit
and cost nothing. Then bad base64 and things that are not base64 at all."""

from __future__ import annotations

import base64

import pytest

from tests.hostile.harness import IMG2IMG, Case, both, gives_image, nothing_outside, post, run_case
from tests.hostile.images import PNG_INFO_ONLY, READABLE, TOO_LARGE, UNREADABLE, b64_file, png_b64

ROTATED = {"jpeg-exif-rotated": (48, 64)}  # 64x48 stored, shown turned: the upscale follows what is shown


def _init(name):
    return lambda: {"prompt": "x", "init_images": [b64_file(name)], **IMG2IMG}


def _mask(name):
    return lambda: {"prompt": "x", "init_images": [png_b64()], "mask": b64_file(name, "mask"), "inpaint_full_res": False, **IMG2IMG}


def _extras(name):
    return lambda: {"image": b64_file(name), "upscaling_resize": 2, "upscaler_1": "Lanczos"}


def _batch(names):
    return lambda: {"imageList": [{"data": b64_file(n), "name": f"{n}.img"} for n in names], "upscaling_resize": 1.5, "upscaler_1": "Nearest"}


def _png_info(name):
    return lambda: {"image": b64_file(name)}


def _extras_size(name):
    if name == "png-1x1":
        return (2, 2)
    if name == "png-2048x8":
        return (4096, 16)
    w, h = ROTATED.get(name, (64, 64))
    return (2 * w, 2 * h)


CASES: list[Case] = []
for name in READABLE:
    CASES += [
        post(f"img2img-init-{name}", "img2img", _init(name), expect=200, then=gives_image((64, 64))),
        post(f"img2img-mask-{name}", "img2img", _mask(name), expect=200, then=gives_image((64, 64))),
        post(f"extras-single-{name}", "extra-single-image", _extras(name), expect=200, then=gives_image(_extras_size(name))),
        post(f"png-info-{name}", "png-info", _png_info(name), expect=200),
    ]
CASES.append(post("extras-batch-every-readable-format", "extra-batch-images", _batch(list(READABLE)), expect=200,
                  then=lambda h, r: len(r.json()["images"]) == len(READABLE) or pytest.fail(f"{len(r.json()['images'])} images back")))
for name in PNG_INFO_ONLY:
    CASES.append(post(f"png-info-{name}", "png-info", _png_info(name), expect=200, seconds=5))

for name, (_, reason) in UNREADABLE.items():
    CASES += [
        post(f"img2img-init-unreadable-{name}", "img2img", lambda n=name: {"init_images": [b64_file(n) or "AA=="], **IMG2IMG},
             expect=400, mentions=(r"init_images\[0\]", reason)),
        post(f"img2img-mask-unreadable-{name}", "img2img",
             lambda n=name: {"init_images": [png_b64()], "mask": b64_file(n, "mask") or "AA==", **IMG2IMG}, expect=400, mentions=(r"\bmask\b", reason)),
        post(f"extras-single-unreadable-{name}", "extra-single-image", lambda n=name: {"image": b64_file(n) or "AA=="}, expect=400,
             mentions=(r"\bimage\b", reason)),
        post(f"extras-batch-unreadable-{name}", "extra-batch-images",
             lambda n=name: {"imageList": [{"data": png_b64(), "name": "fine.png"}, {"data": b64_file(n) or "AA==", "name": "bad.png"}]},
             expect=400, mentions=(r"imageList\[1\]", reason)),
        post(f"png-info-unreadable-{name}", "png-info", lambda n=name: {"image": b64_file(n) or "AA=="}, expect=400, mentions=(r"\bimage\b", reason)),
    ]

LIMIT = r"limit|megapixel|too large"
for name in TOO_LARGE:
    CASES += [
        post(f"img2img-init-too-large-{name}", "img2img", lambda n=name: {"init_images": [b64_file(n)], **IMG2IMG}, expect=400,
             mentions=(r"init_images\[0\]", LIMIT), seconds=5),
        post(f"img2img-mask-too-large-{name}", "img2img", lambda n=name: {"init_images": [png_b64()], "mask": b64_file(n), **IMG2IMG},
             expect=400, mentions=(r"\bmask\b", LIMIT), seconds=5),
        post(f"extras-single-too-large-{name}", "extra-single-image", lambda n=name: {"image": b64_file(n)}, expect=400,
             mentions=(r"\bimage\b", LIMIT), seconds=5),
        post(f"extras-batch-too-large-{name}", "extra-batch-images", lambda n=name: {"imageList": [{"data": b64_file(n)}]}, expect=400,
             mentions=(r"imageList\[0\]", LIMIT), seconds=5),
        post(f"queue-img2img-too-large-{name}", "queue/img2img", lambda n=name: {"init_images": [b64_file(n)], **IMG2IMG}, expect=400,
             mentions=(r"init_images\[0\]", LIMIT), seconds=5),
    ]
# PNG Info reads text, not pixels: a picture over the limit may still have its parameters read, or be refused.
CASES += [post(f"png-info-too-large-{name}", "png-info", lambda n=name: {"image": b64_file(n)}, expect=(200, 400), seconds=5) for name in TOO_LARGE]


def _png_text() -> str:
    return png_b64()


def _with_newlines() -> str:
    text = png_b64()
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def _unpadded() -> str:
    return png_b64().rstrip("=")


def _urlsafe() -> str:
    return base64.urlsafe_b64encode(base64.b64decode(png_b64())).decode()


FIELD = r"init_images\[0\]"
BAD_BASE64 = [
    ("not-base64-at-all", "!!!not base64!!!", 400),
    ("only-padding", "====", 400),
    ("empty-data-url", "data:image/png;base64,", 400),
    ("whitespace", "   \n\t ", 400),
    ("one-character", "A", 400),
    ("http-url", "http://127.0.0.1:9/x.png", 400),
    ("file-url", "file:///etc/passwd", 400),
    ("absolute-path", "/etc/passwd", 400),
    ("traversal-path", "../../outside.safetensors", 400),
    ("html-data-url", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", 400),
    ("nul-bytes", "iVBORw0KGgo\x00\x00\x00", 400),
    ("base64-of-base64", lambda: base64.b64encode(png_b64().encode()).decode(), 400),
]
for label, value, status in BAD_BASE64:
    CASES += [
        post(f"img2img-init-base64-{label}", "img2img", lambda v=value: {"init_images": [v() if callable(v) else v], **IMG2IMG}, expect=status,
             mentions=(FIELD,)),
        post(f"img2img-mask-base64-{label}", "img2img",
             lambda v=value: {"init_images": [png_b64()], "mask": v() if callable(v) else v, **IMG2IMG}, expect=(200, 400) if label == "whitespace" else status),
        post(f"extras-single-base64-{label}", "extra-single-image", lambda v=value: {"image": v() if callable(v) else v}, expect=status,
             mentions=(r"\bimage\b",)),
        post(f"png-info-base64-{label}", "png-info", lambda v=value: {"image": v() if callable(v) else v}, expect=(400, 404)),
    ]

CASES += [
    post("img2img-init-base64-with-newlines", "img2img", lambda: {"init_images": [_with_newlines()], **IMG2IMG}, expect=200),
    post("img2img-init-data-url-upper-case", "img2img", lambda: {"init_images": ["DATA:IMAGE/PNG;BASE64," + png_b64()], **IMG2IMG}, expect=200),
    post("img2img-init-data-url-webp-label-on-png", "img2img", lambda: {"init_images": ["data:image/webp;base64," + png_b64()], **IMG2IMG},
         expect=200),
    post("img2img-init-unpadded-base64", "img2img", lambda: {"init_images": [_unpadded()], **IMG2IMG}, expect=(200, 400)),
    post("img2img-init-urlsafe-base64", "img2img", lambda: {"init_images": [_urlsafe()], **IMG2IMG}, expect=(200, 400)),
    post("img2img-init-empty-list", "img2img", {"init_images": [], **IMG2IMG}, expect=404, mentions=(r"init image",)),
    post("img2img-init-null-entry", "img2img", {"init_images": [None], **IMG2IMG}, expect=422, mentions=(r"init_images",)),
    post("img2img-init-number-entry", "img2img", {"init_images": [123], **IMG2IMG}, expect=422, mentions=(r"init_images",)),
    post("img2img-init-a-string-not-a-list", "img2img", lambda: {"init_images": png_b64(), **IMG2IMG}, expect=422, mentions=(r"init_images",)),
    post("img2img-init-object-entry", "img2img", {"init_images": [{"data": "x"}], **IMG2IMG}, expect=422),
    post("img2img-second-init-image-broken", "img2img", lambda: {"init_images": [png_b64(), "@@@"], **IMG2IMG}, expect=400,
         mentions=(r"init_images\[1\]",)),
    post("img2img-mask-other-size", "img2img", lambda: {"init_images": [png_b64()], "mask": png_b64("mask", (128, 32)), **IMG2IMG}, expect=200),
    post("img2img-mask-all-black", "img2img",
         lambda: {"init_images": [png_b64()], "mask": base64.b64encode(_black()).decode(), **IMG2IMG},
         expect=(200, 400)),
    post("img2img-mask-number", "img2img", lambda: {"init_images": [png_b64()], "mask": 5, **IMG2IMG}, expect=422, mentions=(r"mask",)),
    post("img2img-init-and-mask-1x1", "img2img", lambda: {"init_images": [b64_file("png-1x1")], "mask": b64_file("png-1x1", "mask"), **IMG2IMG},
         expect=200),
    post("extras-batch-names-are-paths-saved-inside", "extra-batch-images",
         lambda: {"imageList": [{"data": png_b64(), "name": n} for n in ("../../../evil.png", "/tmp/evil.png", "..\\..\\evil.png", "a/../../../evil",
                                                                       "evil\x00.png", "..", "", "CON")],
                  "save_images": True, "upscaling_resize": 1},
         expect=(200, 400), then=nothing_outside),
    post("extras-batch-fifty-images", "extra-batch-images", lambda: {"imageList": [{"data": png_b64()}] * 50, "upscaling_resize": 1}, expect=(200, 400)),
    post("extras-single-rotated-upscaled-to-size", "extra-single-image",
         lambda: {"image": b64_file("jpeg-exif-rotated"), "resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 50,
                  "upscaler_1": "Lanczos"}, expect=200, then=both(gives_image((100, 50)))),
]


def _black() -> bytes:
    from PIL import Image

    from tests.hostile.images import save

    return save(Image.new("L", (64, 64), 0), "PNG")


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_image_request(hostile, group_rss, case):
    run_case(hostile, case)


def test_memory_is_back_after_the_image_cases(memory_check):
    memory_check("image")
