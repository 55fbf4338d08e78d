"""Names that point at files: checkpoints, VAEs, LoRAs and embeddings in prompts, styles,
samplers, upscalers, output folders and file-name patterns, batch image names. Unknown names
get A1111's answer (400 naming it, or a warning where A1111 skips them); traversal strings
(`../`, absolute paths, `..\\`, URL-encoded, NUL bytes) never reach a file outside the model
folders, and nothing is ever written outside the data folder."""

from __future__ import annotations

import pytest

from tests.hostile.harness import IMG2IMG, SMALL, Case, both, gives_image, nothing_outside, options_still_served, post, run_case
from tests.hostile.images import png_b64

TRAVERSALS = {
    "dotdot": "../../etc/passwd",
    "dotdot-decoy": "../../../outside.safetensors",
    "dotdot-decoy-stem": "../../../outside",
    "absolute": "/etc/passwd",
    "absolute-decoy": "{root}/outside.safetensors",
    "backslashes": "..\\..\\..\\outside.safetensors",
    "windows-drive": "C:\\Windows\\win.ini",
    "unc": "\\\\server\\share\\x.safetensors",
    "url-encoded": "..%2F..%2F..%2Foutside.safetensors",
    "double-encoded": "%252e%252e%252foutside",
    "nul-byte": "tiny-test-model-random\x00.safetensors",
    "nul-then-traversal": "\x00../../outside",
    "home": "~/.ssh/id_rsa",
    "other-home": "~nosuchuser-hostile/x.safetensors",
    "inside-then-out": "models/Stable-diffusion/../../../outside.safetensors",
    "file-url": "file:///etc/passwd",
    "long": "../" * 2000 + "x",
}


CASES: list[Case] = []
for label, value in TRAVERSALS.items():
    CASES += [
        post(f"txt2img-checkpoint-{label}", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_model_checkpoint": value}},
             400, (r"checkpoint",)),
        post(f"options-checkpoint-{label}", "options", {"sd_model_checkpoint": value}, 400, (r"checkpoint",), then=options_still_served),
        post(f"txt2img-vae-{label}", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_vae": value}}, 400, (r"VAE",)),
        post(f"options-vae-{label}", "options", {"sd_vae": value}, 400, (r"vae",), then=options_still_served),
        post(f"txt2img-sampler-{label}", "txt2img", {"prompt": "x", **SMALL, "sampler_name": value}, 400, (r"sampler",)),
        post(f"txt2img-hires-upscaler-{label}", "txt2img", {"prompt": "x", **SMALL, "enable_hr": True, "hr_upscaler": value}, 400, (r"upscaler",)),
        post(f"extras-upscaler-{label}", "extra-single-image", {"image": "@", "upscaler_1": value}, 400, (r"upscaler|image",)),
        post(f"txt2img-style-{label}", "txt2img", {"prompt": "x", **SMALL, "styles": [value]}, (200, 400), (r"style",)),
        post(f"txt2img-lora-{label}", "txt2img", {"prompt": f"x <lora:{value}:1>", **SMALL}, 200, warns=(r"LoRA|lora",)),
        post(f"img2img-lora-{label}", "img2img", {"prompt": f"<lora:{value}:0.5> x", **IMG2IMG, "init_images": ["{png}"]}, 200,
             warns=(r"LoRA|lora",)),
        post(f"txt2img-embedding-word-{label}", "txt2img", {"prompt": f"a {value} b", **SMALL}, 200 if label != "long" else (200, 400)),
        post(f"txt2img-negative-embedding-{label}", "txt2img", {"prompt": "x", "negative_prompt": value, **SMALL}, 200 if label != "long" else (200, 400)),
    ]

CASES += [
    post("txt2img-checkpoint-unknown", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_model_checkpoint": "nope"}}, 400,
         (r"checkpoint", r"nope")),
    post("txt2img-checkpoint-empty-means-current", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_model_checkpoint": ""}}, 200),
    post("txt2img-vae-unknown", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_vae": "nope.safetensors"}}, 400, (r"VAE", r"nope")),
    post("txt2img-vae-none", "txt2img", {"prompt": "x", **SMALL, "override_settings": {"sd_vae": "None"}}, 200),
    post("txt2img-lora-unknown", "txt2img", {"prompt": "x <lora:nope:1>", **SMALL}, 200, warns=(r"LoRA 'nope' not found",)),
    post("txt2img-lora-unloadable-file", "txt2img", {"prompt": "x <lora:glow:1>", **SMALL}, 200, warns=(r"glow",)),
    post("txt2img-lora-weight-word", "txt2img", {"prompt": "x <lora:glow:strong>", **SMALL}, 200, warns=(r"glow|number",)),
    post("txt2img-lora-weight-inf", "txt2img", {"prompt": "x <lora:glow:inf>", **SMALL}, 200, warns=(r"finite|glow",)),
    post("txt2img-lora-empty", "txt2img", {"prompt": "x <lora:>", **SMALL}, 200, warns=(r"lora",)),
    post("txt2img-hypernet-unsupported", "txt2img", {"prompt": "x <hypernet:../../x:1>", **SMALL}, 200, warns=(r"not supported",)),
    post("txt2img-lora-disabled", "txt2img", {"prompt": "x <lora:../../outside:1>", "disable_extra_networks": True, **SMALL}, 200),
    post("txt2img-embedding-known", "txt2img", {"prompt": "tinystyle", **SMALL}, 200),
    post("extras-upscaler-esrgan-not-installed", "extra-single-image", lambda: {"image": png_b64(), "upscaler_1": "ESRGAN_4x"}, 400, (r"upscaler", r"ESRGAN")),
    post("txt2img-style-unknown", "txt2img", {"prompt": "x", **SMALL, "styles": ["nope", "cinema"]}, 200, warns=(r"Style 'nope' not found",)),
]

# Output folders and name patterns: this server is not shared, so (as in A1111) its owner may
# point outputs anywhere, but a NUL byte can name no folder; whatever is accepted, a picture
# saved afterwards must land inside the data folder or the folder named.
OUTDIR_VALUES = {"dotdot": "../../evil", "absolute": "/nonexistent-root-folder/evil", "backslashes": "..\\..\\evil", "url-encoded": "..%2F..%2Fevil"}
for label, value in OUTDIR_VALUES.items():
    CASES.append(post(f"options-outdir-{label}-local", "options", {"outdir_txt2img_samples": value}, (200, 400, 403), then=options_still_served))
CASES += [
    post("options-outdir-nul-byte", "options", {"outdir_txt2img_samples": "outputs/\x00evil"}, 400, (r"outdir_txt2img_samples",),
         then=options_still_served),
    post("options-outdir-10000-characters", "options", {"outdir_txt2img_samples": "x" * 10_000}, (200, 400), then=options_still_served),
]


def _save_with(pattern_key: str, pattern: str):
    def check(hostile, response):
        r = hostile.client.post("/sdapi/v1/txt2img", json={"prompt": "../../evil", **SMALL, "save_images": True})
        assert r.status_code in (200, 400), f"saving with {pattern_key}={pattern!r}: {r.status_code} {r.text[:300]}"
        hostile.assert_nothing_written_outside()
    return check


PATTERNS = {
    "samples_filename_pattern": ["../../../evil-[seed]", "/tmp/evil-[seed]", "..\\..\\..\\evil-[seed]", "[prompt]/../../../evil", "\x00[seed]",
                                 "[seed]" * 500, "[datetime<../../%Y>]", "[prompt_words]", "CON", "[none]"],
    "directories_filename_pattern": ["../../../evil", "/tmp/evil", "..\\..\\evil", "[prompt]", "[date]/../../../evil", "\x00", "[datetime<..>]"],
}
for key, values in PATTERNS.items():
    for i, value in enumerate(values):
        CASES.append(post(f"options-{key}-{i}-then-save", "options", {key: value}, (200, 400), then=both(options_still_served, _save_with(key, value))))

CASES += [
    post("extras-batch-names-traversal-saved-inside", "extra-batch-images",
         lambda: {"imageList": [{"data": png_b64(), "name": v} for v in TRAVERSALS.values() if "{root}" not in v], "save_images": True,
                  "upscaling_resize": 1}, (200, 400), then=nothing_outside),
    post("extras-single-save-after-traversal-prompt", "extra-single-image", lambda: {"image": png_b64(), "save_images": True, "upscaling_resize": 1},
         200, then=both(gives_image((64, 64)), nothing_outside)),
    post("txt2img-saved-prompt-traversal", "txt2img", {"prompt": "../../../../evil/\x00/..\\..\\x", **SMALL, "save_images": True}, 200,
         then=nothing_outside),
]


# On a server shared on the network (--listen) no output folder may leave the data folder.
SHARED_OUTDIRS = {
    "dotdot": "../evil", "deep-dotdot": "outputs/../../evil", "absolute": "{root}/evil", "backslashes": "..\\..\\evil",
    "tmp": "/tmp/hostile-evil", "home": "~/evil", "nul-byte": "outputs/\x00evil", "dotdot-at-end": "outputs/..", "only-dotdot": "..",
}
# These name folders inside the data folder on Linux (a literal "~" or "..\\.." folder, the data folder itself):
HARMLESS_HERE = {"backslashes", "home", "dotdot-at-end"}
SHARED_CASES = [
    post(f"shared-options-{key}-{label}", "options", {key: value},
         (200, 403) if label in HARMLESS_HERE else (400, 403) if label == "nul-byte" else 403, (key,), then=options_still_served)
    for label, value in SHARED_OUTDIRS.items() for key in ("outdir_txt2img_samples", "outdir_extras_samples")
] + [
    post("shared-options-outdir-inside", "options", {"outdir_txt2img_samples": "outputs/mine"}, 200, then=options_still_served),
    post("shared-options-outdir-url-encoded-is-a-name-inside", "options", {"outdir_img2img_samples": "..%2F..%2Fevil"}, 200,
         then=options_still_served),
]


def _resolve(case: Case, hostile) -> Case:
    """Fill `{root}` (the decoys' folder) and `{png}` (a valid picture) into a case's body."""
    import json

    body = case.body
    if isinstance(body, dict):
        text = json.dumps(body).replace("{root}", str(hostile.root).replace("\\", "\\\\"))
        data = json.loads(text)
        if data.get("init_images") == ["{png}"]:
            data["init_images"] = [png_b64()]
        case = Case(**{**case.__dict__, "body": data})
    return case


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_named_request(hostile, group_rss, case):
    run_case(hostile, _resolve(case, hostile))


@pytest.mark.parametrize("case", [c.param() for c in SHARED_CASES])
def test_shared_server_keeps_outputs_inside(shared_hostile, case):
    run_case(shared_hostile, _resolve(case, shared_hostile))


def test_nothing_was_written_outside_the_data_folder(hostile):
    hostile.assert_nothing_written_outside()


def test_memory_is_back_after_the_name_cases(memory_check):
    memory_check("name")
