"""Prompts as weapons: lone surrogates, megabytes of text, thousands of AND parts, schedule
entries, LoRA tags and tokens, jobs that would hold the worker for a day, weights that
overflow, and `infotext` full of garbage. Work over a limit is a 400 naming the limit and the
value, sent before anything is queued; garbage in `infotext` is skipped and named in warnings."""

from __future__ import annotations

import pytest

from tests.hostile.harness import IMG2IMG, SMALL, Case, options_still_served, post, raw_json, run_case
from tests.hostile.images import png_b64

SURROGATE = r"surrogate|UTF-8|unicode|character"


def surrogate_body(route: str, field_json: str) -> bytes:
    """A body whose `field_json` holds the escape \\ud800 (a lone surrogate), as JSON clients send it."""
    base = {"txt2img": '"prompt": "x", "width": 64, "height": 64, "steps": 2',
            "queue/txt2img": '"prompt": "x", "width": 64, "height": 64, "steps": 2',
            "img2img": '"prompt": "x", "width": 64, "height": 64, "steps": 2, "denoising_strength": 0.5, "init_images": ["' + png_b64() + '"]',
            "options": None, "png-info": None, "extra-single-image": '"upscaling_resize": 1',
            "extra-batch-images": '"upscaling_resize": 1'}[route]
    return raw_json("{" + (base + ", " if base else "") + field_json + "}")


SURROGATES = [
    ("txt2img", "prompt", '"prompt": "a \\ud800 cat"'),
    ("txt2img", "negative_prompt", '"negative_prompt": "\\udfff"'),
    ("txt2img", "hr_prompt", '"enable_hr": true, "hr_scale": 1.5, "hr_prompt": "\\ud800"'),
    ("txt2img", "styles", '"styles": ["\\ud800"]'),
    ("txt2img", "sampler_name", '"sampler_name": "\\ud800"'),
    ("txt2img", "infotext", '"infotext": "x\\nSteps: 2, Sampler: \\ud800, Seed: 1"'),
    ("txt2img", "override_settings", '"override_settings": {"sd_vae": "\\ud800"}'),
    ("txt2img", "lora-tag", '"prompt": "<lora:\\ud800:1>"'),
    ("queue/txt2img", "prompt", '"prompt": "\\ud800"'),
    ("img2img", "prompt", '"prompt": "\\ud800\\ud800"'),
    ("img2img", "mask", '"mask": "\\ud800"'),
    ("options", "samples_filename_pattern", '"samples_filename_pattern": "[seed]\\ud800"'),
    ("options", "key", '"\\ud800": 1'),
    ("options", "unknown-value", '"my_extension_setting": "\\ud800"'),
    ("png-info", "image", '"image": "\\ud800"'),
    ("extra-single-image", "image", '"image": "\\ud800"'),
    ("extra-batch-images", "name", '"imageList": [{"data": "\\ud800", "name": "\\ud800"}]'),
]

CASES: list[Case] = []
# In a picture field a surrogate is simply not base64: naming the field is enough there.
PICTURE_FIELDS = {"mask": r"\bmask\b", "image": r"\bimage\b", "name": r"imageList\[0\]"}
for route, label, field in SURROGATES:
    CASES.append(post(f"{route}-lone-surrogate-{label}", route, lambda r=route, f=field: surrogate_body(r, f), 400,
                      (PICTURE_FIELDS[label] if label in PICTURE_FIELDS else SURROGATE,),
                      then=options_still_served if route == "options" else None))
CASES += [
    post("txt2img-surrogate-pair-is-an-emoji", "txt2img", raw_json('{"prompt": "a \\ud83d\\ude00 cat", "width": 64, "height": 64, "steps": 2}'), 200),
    post("txt2img-nul-and-control-characters", "txt2img", {"prompt": "a\x00b\x01\x1b[31m\u202ered\u200b\ufeff", **SMALL}, 200),
    post("txt2img-right-to-left-and-combining", "txt2img", {"prompt": "\u05d0\u05d1 e\u0301\u0301\u0301\u0301 \U0001f600" * 10, **SMALL}, 200),
]

MB = 1_000_000
LIMIT = r"limit"
CASES += [
    # Characters
    post("txt2img-1MB-prompt", "txt2img", {"prompt": "a" * MB, **SMALL}, 400, (r"characters", r"1,?000,?000", LIMIT)),
    post("txt2img-1MB-negative-prompt", "txt2img", {"prompt": "x", "negative_prompt": "b " * (MB // 2), **SMALL}, 400,
         (r"negative", r"1,?000,?000", LIMIT)),
    post("txt2img-1MB-hires-prompt", "txt2img", {"prompt": "x", "enable_hr": True, "hr_prompt": "c" * MB, **SMALL}, 400,
         (r"hires", r"1,?000,?000", LIMIT)),
    post("img2img-1MB-prompt", "img2img", lambda: {"prompt": "d" * MB, "init_images": [png_b64()], **IMG2IMG}, 400, (r"1,?000,?000", LIMIT)),
    post("queue-txt2img-1MB-prompt", "queue/txt2img", {"prompt": "e " * (MB // 2), **SMALL}, 400, (r"1,?000,?000", LIMIT)),
    post("txt2img-1MB-of-spaces", "txt2img", {"prompt": " " * MB, **SMALL}, (200, 400), seconds=5),
    post("txt2img-1MB-comment", "txt2img", {"prompt": "x\n#" + "c" * MB, **SMALL}, (200, 400), seconds=5),
    # AND parts
    post("txt2img-4000-AND-parts", "txt2img", {"prompt": " AND ".join(["a"] * 4000), **SMALL}, 400, (r"AND", r"4,?000", LIMIT), seconds=5),
    post("img2img-4000-AND-parts", "img2img", lambda: {"prompt": " AND ".join(["a"] * 4000), "init_images": [png_b64()], **IMG2IMG}, 400,
         (r"AND", r"4,?000", LIMIT), seconds=5),
    post("queue-txt2img-4000-AND-parts", "queue/txt2img", {"prompt": " AND ".join(["a"] * 4000), **SMALL}, 400, (r"AND", r"4,?000", LIMIT),
         seconds=5),
    post("txt2img-4000-AND-parts-in-hires-prompt", "txt2img", {"prompt": "x", "enable_hr": True, "hr_prompt": " AND ".join(["a"] * 4000), **SMALL},
         400, (r"AND", r"4,?000", LIMIT), seconds=5),
    post("txt2img-3000-weighted-AND-parts", "txt2img", {"prompt": " AND ".join(["a:2"] * 3000), **SMALL}, 400, (r"AND", r"3,?000"), seconds=5),
    post("txt2img-AND-with-huge-weight", "txt2img", {"prompt": "a :1" + "0" * 400 + " AND b", **SMALL}, (200, 400)),
    # Schedule entries
    post("txt2img-alternation-in-20-parts-150-steps", "queue/txt2img", {"prompt": " AND ".join(["[a|b]"] * 20), **SMALL, "steps": 150}, 400,
         (r"schedule", r"3,?000", LIMIT), seconds=5),
    post("txt2img-2000-different-edit-steps", "queue/txt2img",
         {"prompt": " ".join(f"[a{i}:b{i}:{i % 150 + 1}]" for i in range(2000)) + " AND " + "[x|y]", **SMALL, "steps": 150}, 400,
         (r"schedule|token", LIMIT), seconds=5),
    post("txt2img-nested-edits", "txt2img", {"prompt": "[a:" * 300 + "b" + ":1]" * 300, **SMALL}, (200, 400), seconds=5),
    post("txt2img-edit-at-1e999", "txt2img", {"prompt": "[a:b:1e999] [c:d:-1e999] [e:f:nan]", **SMALL}, 200),
    # LoRAs
    post("txt2img-1000-lora-tags", "txt2img", {"prompt": "<lora:glow:1>" * 1000, **SMALL}, 400, (r"LoRA", r"1,?000", LIMIT), seconds=5),
    post("txt2img-1000-different-loras", "txt2img", {"prompt": "".join(f"<lora:x{i}:1>" for i in range(1000)), **SMALL}, 400,
         (r"LoRA", r"1,?000", LIMIT), seconds=5),
    post("txt2img-loras-in-negative", "txt2img", {"prompt": "x", "negative_prompt": "<lora:glow:1>" * 1000, **SMALL}, 400, (r"LoRA", LIMIT)),
    # Tokens
    post("txt2img-8000-tokens", "txt2img", {"prompt": "cat " * 8000, **SMALL}, 400, (r"token", r"\d,?\d{3}", LIMIT), seconds=10),
    post("txt2img-16000-nested-emphasis", "txt2img", {"prompt": "(a" * 16000 + ")" * 100, **SMALL}, 400, (r"token|characters", LIMIT), seconds=10),
    post("txt2img-1000-BREAKs", "txt2img", {"prompt": "a BREAK " * 1000, **SMALL}, (200, 400), (r"token|BREAK|chunk",), seconds=10),
    post("txt2img-32000-open-brackets", "txt2img", {"prompt": "[" * 32000, **SMALL}, (200, 400), seconds=10),
    post("txt2img-32000-open-parens", "txt2img", {"prompt": "(" * 32000, **SMALL}, (200, 400), seconds=10),
    post("txt2img-16000-escapes", "txt2img", {"prompt": "\\(" * 16000, **SMALL}, 400, (r"token", LIMIT), seconds=10),
    post("txt2img-weight-overflow", "txt2img", {"prompt": "(a:" + "9" * 400 + ")", **SMALL}, (200, 400), (r"weight|NaN",)),
    post("txt2img-weight-huge-negative", "txt2img", {"prompt": "(a:-99999999999)", **SMALL}, (200, 400), (r"weight|NaN",)),
    post("txt2img-deep-nesting-overflows-weight", "txt2img", {"prompt": "(" * 8000 + "a" + ")" * 8000, **SMALL}, (200, 400), (r"weight|NaN|token",)),
    # Work: batch x count x steps x pixels (queued routes: if it were accepted it is cancelled)
    post("queue-txt2img-a-day-of-work", "queue/txt2img",
         {"prompt": "x", "batch_size": 8, "n_iter": 100, "steps": 150, "width": 2048, "height": 2048}, 400, (r"megapixel|work|steps", LIMIT), seconds=5),
    post("queue-txt2img-hires-work", "queue/txt2img",
         {"prompt": "x", "batch_size": 8, "n_iter": 100, "steps": 150, "width": 1024, "height": 1024, "enable_hr": True, "hr_scale": 4}, 400,
         (r"megapixel|work|steps|hires", LIMIT), seconds=5),
    post("queue-img2img-a-day-of-work", "queue/img2img",
         lambda: {"prompt": "x", "init_images": [png_b64()], "batch_size": 8, "n_iter": 100, "steps": 150, "width": 2048, "height": 2048,
                  "denoising_strength": 1}, 400, (r"megapixel|work|steps", LIMIT), seconds=5),
]

# `infotext` fills the fields a request leaves out (A1111); what it holds that cannot apply is
# skipped and named in the answer's warnings.
GARBAGE = ("x\nSteps: abc, Sampler: ../../x, CFG scale: NaN, Seed: 1e999, Size: 99999x99999, Clip skip: -5, Schedule max sigma: inf, "
           "Schedule rho: -1, Denoising strength: 7, Mask blur: nope, Model: ../../outside, VAE: \x00, RNG: /dev/urandom, ENSD: -1, Eta: inf")
CASES += [
    post("txt2img-infotext-garbage", "txt2img", {"infotext": GARBAGE, **SMALL}, 200,
         warns=(r"Steps", r"Sampler", r"CFG scale", r"Seed", r"Size", r"Clip skip", r"Schedule max sigma", r"RNG", r"ENSD", r"Eta")),
    post("img2img-infotext-garbage", "img2img", lambda: {"infotext": GARBAGE, "init_images": [png_b64()], **IMG2IMG}, 200,
         warns=(r"Steps", r"CFG scale", r"Mask blur")),
    post("txt2img-infotext-nan-cfg", "txt2img", {"infotext": "x\nSteps: 2, CFG scale: nan, Seed: 1, Size: 64x64", **SMALL}, 200, warns=(r"CFG scale",)),
    post("txt2img-infotext-inf-sigma", "txt2img",
         {"infotext": "x\nSteps: 2, Sampler: Euler, Schedule type: Karras, Schedule max sigma: inf, Schedule min sigma: -inf, Seed: 1, Size: 64x64",
          **SMALL}, 200, warns=(r"Schedule max sigma",)),
    post("txt2img-infotext-unknown-schedule", "txt2img", {"infotext": "x\nSteps: 2, Sampler: Euler, Schedule type: ../../x, Seed: 1", **SMALL}, 200,
         warns=(r"Schedule type",)),
    post("txt2img-infotext-hires-too-large", "queue/txt2img",
         {"infotext": "x\nSteps: 2, Seed: 1, Size: 2048x2048, Hires upscale: 4, Hires upscaler: Latent, Denoising strength: 0.5"}, 400,
         (r"hires", r"8192|4096")),
    post("txt2img-infotext-500kB-line", "txt2img", {"infotext": "x\n" + "word " * 100_000, **SMALL}, 400, (r"characters", LIMIT), seconds=5),
    post("txt2img-infotext-many-pairs", "txt2img", {"infotext": "x\n" + ", ".join(f"Key {i}: {i}" for i in range(20_000)), **SMALL}, 200, seconds=10),
    post("txt2img-infotext-deep-quotes", "txt2img", {"infotext": "x\nSteps: 2, Seed: 1, Note: \"" + "\\\"" * 50_000, **SMALL}, 200, seconds=5),
    post("txt2img-infotext-only-prompt", "txt2img", {"infotext": "just words, with: colons", **SMALL}, 200),
    post("txt2img-infotext-empty", "txt2img", {"infotext": "", **SMALL}, 200),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_prompt_request(hostile, group_rss, case):
    run_case(hostile, case)


def test_memory_is_back_after_the_prompt_cases(memory_check):
    memory_check("prompt")
