"""Every route, field by field: wrong types, nulls, numbers far out of range, and routes asked
with the wrong method or odd query strings. Bad values are a 4xx naming the field; values
A1111's API takes (null for a default, "64" for 64, 7.5 for a whole number) still work."""

from __future__ import annotations

import pytest

from tests.hostile.harness import API, IMG2IMG, SMALL, Case, get, gives_image, options_still_served, post, raw_json, run_case
from tests.hostile.images import png_b64

BIG = 10**30


def t2i(id: str, extra: dict, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"txt2img-{id}", "txt2img", {"prompt": "x", **SMALL, **extra}, expect=expect, mentions=mentions, **kw)


def i2i(id: str, extra: dict, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"img2img-{id}", "img2img", lambda: {"prompt": "x", "init_images": [png_b64()], **IMG2IMG, **extra}, expect=expect,
                mentions=mentions, **kw)


def extras(id: str, extra: dict, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"extras-{id}", "extra-single-image", lambda: {"image": png_b64(), **extra}, expect=expect, mentions=mentions, **kw)


def option(id: str, values: dict, expect="4xx", mentions: tuple[str, ...] = (), **kw) -> Case:
    return post(f"options-{id}", "options", values, expect=expect, mentions=mentions, then=options_still_served, **kw)


def no_images(hostile, response):
    assert response.json()["images"] == [], "send_images false still sent pictures"


def echoes_init_images(hostile, response):
    assert response.json()["parameters"]["init_images"], "include_init_images did not echo them"


CASES: list[Case] = [
    # --- txt2img: types
    t2i("prompt-number", {"prompt": 123}, 422, (r"prompt",)),
    t2i("prompt-list", {"prompt": ["a", "b"]}, 422, (r"prompt",)),
    t2i("prompt-object", {"prompt": {"a": 1}}, 422, (r"prompt",)),
    t2i("prompt-null", {"prompt": None}, 200),
    t2i("negative-prompt-number", {"negative_prompt": 5}, 422, (r"negative_prompt",)),
    t2i("negative-prompt-null", {"negative_prompt": None}, 200),
    t2i("every-field-null", {k: None for k in ("prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "sampler_name",
                                               "sampler_index", "scheduler", "batch_size", "n_iter", "cfg_scale", "restore_faces", "tiling",
                                               "eta", "s_churn", "s_tmin", "s_tmax", "s_noise", "denoising_strength", "override_settings",
                                               "override_settings_restore_afterwards", "enable_hr", "hr_scale", "hr_upscaler", "script_args",
                                               "alwayson_scripts", "send_images", "save_images", "infotext", "comments")}, 200),
    t2i("steps-word", {"steps": "many"}, 422, (r"steps",)),
    t2i("steps-negative", {"steps": -1}, 400, (r"steps",)),
    t2i("steps-zero", {"steps": 0}, 400, (r"steps",)),
    t2i("steps-huge", {"steps": BIG}, 400, (r"steps",)),
    t2i("steps-fraction-truncated", {"steps": 2.9}, 200),
    t2i("steps-numeric-string", {"steps": "2"}, 200),
    t2i("steps-list", {"steps": [2]}, 422, (r"steps",)),
    t2i("seed-2-to-the-64", {"seed": 2**64}, 400, (r"seed",)),
    t2i("seed-minus-2", {"seed": -2}, 400, (r"seed",)),
    t2i("seed-1e308", {"seed": 1e308}, 400, (r"seed",)),
    t2i("seed-word", {"seed": "random"}, 422, (r"seed",)),
    t2i("width-negative", {"width": -64}, 400, (r"width",)),
    t2i("width-zero", {"width": 0}, 400, (r"width",)),
    t2i("width-huge", {"width": 10**9}, 400, (r"width",)),
    t2i("width-2-to-the-63", {"width": 2**63}, 400, (r"width",)),
    t2i("width-numeric-string", {"width": "64"}, 200),
    t2i("height-seven", {"height": 7}, 400, (r"height",)),
    t2i("width-not-a-multiple-of-8-rounded", {"width": 100}, 200, warns=(r"Width 100 was rounded down to 96",)),
    t2i("batch-size-zero", {"batch_size": 0}, 400, (r"batch size",)),
    t2i("batch-size-negative", {"batch_size": -1}, 400, (r"batch size",)),
    t2i("batch-size-million", {"batch_size": 10**6}, 400, (r"batch size",)),
    t2i("n-iter-zero", {"n_iter": 0}, 400, (r"batch count",)),
    t2i("n-iter-billion", {"n_iter": 10**9}, 400, (r"batch count",)),
    t2i("cfg-word", {"cfg_scale": "high"}, 422, (r"cfg_scale",)),
    t2i("cfg-1e308", {"cfg_scale": 1e308}, 400, (r"cfg",)),
    t2i("cfg-minus-1e308", {"cfg_scale": -1e308}, 400, (r"cfg",)),
    t2i("cfg-zero", {"cfg_scale": 0}, 400, (r"cfg",)),
    t2i("sampler-number", {"sampler_name": 5}, 422, (r"sampler_name",)),
    t2i("sampler-empty-means-default", {"sampler_name": ""}, 200),
    t2i("sampler-unknown", {"sampler_name": "Nope"}, 400, (r"sampler", r"Nope")),
    t2i("sampler-index-unknown", {"sampler_index": "Nope"}, 400, (r"sampler",)),
    t2i("scheduler-unknown-is-automatic", {"scheduler": "Nope"}, 200, warns=(r"Schedule type 'Nope'",)),
    t2i("scheduler-number", {"scheduler": 3}, 422, (r"scheduler",)),
    t2i("styles-a-string", {"styles": "cinema"}, 422, (r"styles",)),
    t2i("styles-numbers", {"styles": [1, 2]}, 422, (r"styles",)),
    t2i("styles-null-entry", {"styles": [None]}, 422, (r"styles",)),
    t2i("styles-unknown", {"styles": ["nope"]}, 200, warns=(r"Style 'nope' not found",)),
    t2i("styles-known", {"styles": ["cinema"]}, 200),
    t2i("override-settings-string", {"override_settings": "x"}, 422, (r"override_settings",)),
    t2i("override-settings-list", {"override_settings": []}, 422, (r"override_settings",)),
    t2i("override-clip-skip-negative", {"override_settings": {"CLIP_stop_at_last_layers": -1}}, 400, (r"CLIP_stop_at_last_layers",)),
    t2i("override-clip-skip-word", {"override_settings": {"CLIP_stop_at_last_layers": "abc"}}, 400, (r"CLIP_stop_at_last_layers",)),
    t2i("override-clip-skip-1e400-string", {"override_settings": {"CLIP_stop_at_last_layers": "1e400"}}, 400, (r"CLIP_stop_at_last_layers",)),
    t2i("override-emphasis-number", {"override_settings": {"emphasis": 5}}, 400, (r"emphasis",)),
    t2i("override-emphasis-unknown", {"override_settings": {"emphasis": "Loud"}}, 400, (r"emphasis",)),
    t2i("override-rng-unknown", {"override_settings": {"randn_source": "/dev/urandom"}}, 400, (r"random|rng|randn",)),
    t2i("override-ensd-negative", {"override_settings": {"eta_noise_seed_delta": -1}}, 400, (r"seed delta|ensd|eta_noise",)),
    t2i("override-ensd-huge", {"override_settings": {"eta_noise_seed_delta": BIG}}, 400, (r"seed delta|ensd|eta_noise",)),
    t2i("override-checkpoint-list", {"override_settings": {"sd_model_checkpoint": ["x"]}}, 400, (r"sd_model_checkpoint",)),
    t2i("override-vae-number", {"override_settings": {"sd_vae": 5}}, 400, (r"sd_vae|vae",)),
    t2i("override-unknown-setting-ignored", {"override_settings": {"my_extension_setting": [1, 2]}}, 200),
    t2i("hires-scale-100", {"enable_hr": True, "hr_scale": 100}, 400, (r"upscale by|hr_scale",)),
    t2i("hires-resize-negative", {"enable_hr": True, "hr_resize_x": -8}, 400, (r"resize",)),
    t2i("hires-steps-negative", {"enable_hr": True, "hr_second_pass_steps": -1}, 400, (r"hires steps|hr_second_pass_steps",)),
    t2i("hires-upscaler-unknown", {"enable_hr": True, "hr_upscaler": "Nope"}, 400, (r"upscaler", r"Nope")),
    t2i("hires-sampler-unknown", {"enable_hr": True, "hr_sampler_name": "Nope"}, 400, (r"sampler", r"Nope")),
    t2i("hires-would-be-too-large", {"enable_hr": True, "width": 2048, "height": 2048, "hr_scale": 4, "steps": 1}, 400, (r"hires",)),
    t2i("enable-hr-word-yes", {"enable_hr": "yes", "hr_scale": 1.5}, 200, then=gives_image((96, 96))),
    t2i("enable-hr-word-maybe", {"enable_hr": "maybe"}, 422, (r"enable_hr",)),
    t2i("send-images-false", {"send_images": False}, 200, then=no_images),
    t2i("script-args-string", {"script_args": "x"}, 422, (r"script_args",)),
    t2i("script-name-unknown", {"script_name": "../../x"}, 400, (r"Script '\.\./\.\./x' not found",)),
    t2i("alwayson-scripts-given", {"alwayson_scripts": {"ADetailer": {"args": []}}}, 422, (r"alwayson_scripts", r"ADetailer")),
    t2i("alwayson-controlnet-no-units", {"alwayson_scripts": {"ControlNet": {"args": []}}}, 200),  # webuiapi sends this
    t2i("alwayson-controlnet-args-string", {"alwayson_scripts": {"controlnet": {"args": "x"}}}, 400, (r"controlnet", r"list")),
    t2i("alwayson-controlnet-unit-number", {"alwayson_scripts": {"controlnet": {"args": [5]}}}, 400, (r"ControlNet unit 0",)),
    t2i("alwayson-scripts-list", {"alwayson_scripts": []}, "4xx"),
    t2i("comments-string", {"comments": "x"}, 422, (r"comments",)),
    t2i("force-task-id-number", {"force_task_id": 5}, 422, (r"force_task_id",)),
    t2i("infotext-number", {"infotext": 5}, 422, (r"infotext",)),
    t2i("unknown-extra-fields-accepted", {"zzz": [1, 2, 3], "another": {"deep": None}}, 200),
    t2i("restore-faces-without-a-model", {"restore_faces": True}, 400, (r"Restore faces", r"gfpgan-v1\.4")),
    t2i("tiling", {"tiling": True}, 200, then=gives_image((64, 64))),
    t2i("tiling-word-maybe", {"tiling": "maybe"}, 422, (r"tiling",)),
    t2i("refiner-not-there", {"refiner_checkpoint": "no-such-refiner"}, 400, (r"Refiner", r"not found")),
    t2i("firstpass-image", {"firstpass_image": "x"}, 422, (r"firstpass_image",)),
    t2i("denoising-ignored-without-hires", {"denoising_strength": 0.3}, 200),
    # --- img2img fields
    i2i("denoising-two", {"denoising_strength": 2}, 400, (r"denoising",)),
    i2i("denoising-negative", {"denoising_strength": -0.5}, 400, (r"denoising",)),
    i2i("resize-mode-seven", {"resize_mode": 7}, 400, (r"resize",)),
    i2i("resize-mode-negative", {"resize_mode": -1}, 400, (r"resize",)),
    i2i("resize-mode-word", {"resize_mode": "crop"}, 422, (r"resize_mode",)),
    i2i("mask-blur-negative", {"mask_blur": -1}, 400, (r"mask blur",)),
    i2i("mask-blur-million", {"mask_blur": 10**6}, 400, (r"mask blur",)),
    i2i("inpainting-fill-nine", {"inpainting_fill": 9}, 400, (r"masked content|inpainting_fill",)),
    i2i("padding-negative", {"inpaint_full_res_padding": -5}, 400, (r"padding",)),
    i2i("mask-invert-five", {"inpainting_mask_invert": 5}, 400, (r"mask mode|inpainting_mask_invert",)),
    i2i("include-init-images", {"include_init_images": True}, 200, then=echoes_init_images),
    i2i("latent-mask", {"latent_mask": "x"}, 422, (r"latent_mask",)),
    i2i("hires-refused", {"enable_hr": True}, 422, (r"enable_hr",)),
    i2i("all-resize-modes", {"resize_mode": 2, "width": 96, "height": 64}, 200, then=gives_image((96, 64))),
    i2i("steps-zero", {"steps": 0}, 400, (r"steps",)),
    i2i("mask-blur-x-y-huge", {"mask_blur_x": 10**6, "mask_blur_y": -5}, 400, (r"mask blur",)),
    # --- extras fields
    extras("resize-mode-five", {"resize_mode": 5}, 400, (r"resize",)),
    extras("upscale-zero", {"upscaling_resize": 0}, 400, (r"resize",)),
    extras("upscale-negative", {"upscaling_resize": -2}, 400, (r"resize",)),
    extras("upscale-thousand", {"upscaling_resize": 1000}, 400, (r"resize|8192|size",)),
    extras("scale-to-zero", {"resize_mode": 1, "upscaling_resize_w": 0, "upscaling_resize_h": 64}, 400, (r"width|size|result",)),
    extras("scale-to-billion", {"resize_mode": 1, "upscaling_resize_w": 10**9, "upscaling_resize_h": 64}, 400, (r"width|size|result",)),
    extras("upscaler-unknown", {"upscaler_1": "Nope"}, 400, (r"upscaler", r"Nope")),
    extras("upscaler-null-means-none", {"upscaler_1": None}, (200, 400)),
    extras("upscaler-2-unknown", {"upscaler_2": "Nope", "extras_upscaler_2_visibility": 0.5}, 400, (r"upscaler", r"Nope")),
    extras("visibility-five", {"upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 5}, 400, (r"visibility",)),
    extras("image-missing", {"image": None}, 422, (r"image",)),
    extras("image-number", {"image": 5}, 422, (r"image",)),
    extras("face-restoration-without-a-model", {"gfpgan_visibility": 1, "codeformer_visibility": 1}, 400, (r"GFPGAN", r"gfpgan-v1\.4")),
    extras("face-visibility-five", {"gfpgan_visibility": 5}, 400, (r"visibility",)),
    extras("save-images-word", {"save_images": "often"}, 422, (r"save_images",)),
    post("extras-single-empty-body-object", "extra-single-image", {}, 400, (r"image",)),
    post("extras-batch-not-a-list", "extra-batch-images", {"imageList": "x"}, 422, (r"imageList",)),
    post("extras-batch-data-number", "extra-batch-images", {"imageList": [{"data": 5}]}, 422, (r"imageList",)),
    post("extras-batch-entry-without-data", "extra-batch-images", {"imageList": [{"nodata": 1}]}, 400, (r"imageList\[0\]",)),
    post("extras-batch-empty-list", "extra-batch-images", {"imageList": []}, 200),
    post("extras-batch-entry-a-string", "extra-batch-images", {"imageList": ["abc"]}, 422, (r"imageList",)),
    # --- png-info and interrogate
    post("png-info-image-number", "png-info", {"image": 5}, 422, (r"image",)),
    post("png-info-image-null", "png-info", {"image": None}, 422, (r"image",)),
    post("png-info-image-empty", "png-info", {"image": ""}, 404, (r"image",)),
    post("png-info-image-list", "png-info", {"image": ["x"]}, 422, (r"image",)),
    post("interrogate-image-number", "interrogate", {"image": 5}, 422, (r"image",)),
    post("interrogate-unknown-model", "interrogate", {"image": "x", "model": "../../clip"}, 404, (r"Model not found",)),
    post("interrogate-without-weights", "interrogate", {"image": "x", "model": "clip"}, 503, (r"clip-vit-large-patch14",)),
    post("interrogate-model-number", "interrogate", {"model": 5}, 422, (r"model",)),
    # --- options values
    option("samples-format-null", {"samples_format": None}, 400, (r"samples_format",)),
    option("samples-format-exe", {"samples_format": "exe"}, 400, (r"samples_format",)),
    option("jpeg-quality-string", {"jpeg_quality": "80"}, 400, (r"jpeg_quality",)),
    option("jpeg-quality-huge", {"jpeg_quality": BIG}, 400, (r"jpeg_quality",)),
    option("bool-as-string", {"samples_save": "false"}, 400, (r"samples_save",)),
    option("ensd-2-to-the-100", {"eta_noise_seed_delta": 2**100}, 400, (r"eta_noise_seed_delta",)),
    option("clip-skip-1e400-string", {"CLIP_stop_at_last_layers": "1e400"}, 400, (r"CLIP_stop_at_last_layers",)),
    option("preview-period-negative-huge", {"show_progress_every_n_steps": -10**6}, 400, (r"show_progress_every_n_steps",)),
    option("gallery-per-page-zero", {"gallery_per_page": 0}, 400, (r"gallery_per_page",)),
    option("pattern-a-list", {"samples_filename_pattern": ["[seed]"]}, 400, (r"samples_filename_pattern",)),
    option("unknown-keys-kept", {"my_extension_setting": {"nested": [1, 2, {"x": None}]}}, 200),
    option("empty-object", {}, 200),
    option("deep-but-parseable-value", {"my_extension_setting": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, 200),
    # --- the queue routes
    post("queue-txt2img-valid", "queue/txt2img", {"prompt": "x", **SMALL}, 200),
    post("queue-txt2img-steps-negative", "queue/txt2img", {"prompt": "x", **SMALL, "steps": -1}, 400, (r"steps",)),
    post("queue-txt2img-prompt-number", "queue/txt2img", {"prompt": 5, **SMALL}, 422, (r"prompt",)),
    post("queue-img2img-no-init", "queue/img2img", {"prompt": "x", **IMG2IMG}, 404, (r"init image",)),
    post("queue-img2img-valid", "queue/img2img", lambda: {"prompt": "x", "init_images": [png_b64()], **IMG2IMG}, 200),
    get("queue-list-with-junk-query", "queue", params={"x": "../../etc/passwd", "limit": "-1"}, expect=200),
    get("queue-job-unknown", "queue/task(99999)", expect=404, mentions=(r"task\(99999\)|job",)),
    get("queue-job-negative", "queue/task(-1)", expect=404),
    get("queue-job-exponent", "queue/task(1e99)", expect=404),
    get("queue-job-unicode-digits", "queue/task(٣)", expect=404),
    get("queue-job-superscript", "queue/task(²)", expect=404),
    get("queue-job-20-digits", "queue/task(99999999999999999999)", expect=404),
    get("queue-job-traversal-encoded", "queue/..%2F..%2Fetc%2Fpasswd", expect=404),
    get("queue-job-nul", "queue/task%00(1)", expect=404),
    get("queue-job-10000-characters", "queue/" + "x" * 10_000, expect="4xx"),
    get("queue-job-preview-not-a-bool", "queue/task(1)", params={"preview": "perhaps"}, expect=422, mentions=(r"preview",)),
    Case("queue-cancel-unknown", "DELETE", f"{API}/queue/task(99999)", expect=404, mentions=(r"task\(99999\)|job",)),
    Case("queue-cancel-traversal", "DELETE", f"{API}/queue/..%2F..%2Fetc%2Fpasswd", expect=404),
    Case("queue-cancel-with-a-body", "DELETE", f"{API}/queue/task(99999)", body={"force": True}, expect=404),
    post("queue-skip-unknown", "queue/task(99999)/skip", None, "4xx", (r"task\(99999\)|running",)),
    post("queue-skip-nul", "queue/%00/skip", None, "4xx"),
    # --- progress, interrupt, skip
    get("progress-skip-image-not-a-bool", "progress", params={"skip_current_image": "perhaps"}, expect=422, mentions=(r"skip_current_image",)),
    get("progress-skip-image-nul", "progress", params={"skip_current_image": "\x00"}, expect=422),
    get("progress-junk-query", "progress", params={"id_task": "../../x", "a" * 1000: "b" * 10_000}, expect=200),
    post("interrupt-with-junk-body", "interrupt", {"id": "../../x", "all": [1] * 1000}, 200),
    post("interrupt-with-broken-json", "interrupt", b"{not json", 200),
    post("skip-with-junk-body", "skip", [None, "x"], 200),
    post("interrupt-when-idle-twice", "interrupt", None, 200),
    # --- listing and refresh routes with odd input
    get("sd-models-junk-query", "sd-models", params={"path": "../../etc/passwd"}, expect=200),
    post("refresh-checkpoints-with-body", "refresh-checkpoints", {"folder": "/etc"}, 200),
    post("refresh-vae-with-body", "refresh-vae", {"folder": "../../"}, 200),
    post("refresh-loras-with-body", "refresh-loras", {"folder": "../../"}, 200),
    post("refresh-embeddings-with-body", "refresh-embeddings", {"folder": "../../"}, 200),
    get("loras-junk-query", "loras", params={"name": "\x00"}, expect=200),
    get("embeddings-junk-query", "embeddings", params={"name": "../../x"}, expect=200),
    get("memory-junk-query", "memory", params={"x": "1"}, expect=200),
    get("cmd-flags", "cmd-flags", expect=200),
    get("samplers", "samplers", expect=200),
    get("schedulers", "schedulers", expect=200),
    get("upscalers", "upscalers", expect=200),
    get("latent-upscale-modes", "latent-upscale-modes", expect=200),
    get("sd-vae", "sd-vae", expect=200),
    get("prompt-styles", "prompt-styles", expect=200),
    get("scripts", "scripts", expect=200),
    get("script-info", "script-info", expect=200),
    get("extensions-junk-query", "extensions", params={"name": "../../x"}, expect=200),
    get("workers-junk-query", "workers", params={"id": "../../x"}, expect=200),
    get("face-restorers", "face-restorers", expect=200),
    get("hypernetworks", "hypernetworks", expect=200),
    get("realesrgan-models", "realesrgan-models", expect=200),
    get("options", "options", expect=200),
    # --- the ControlNet extension's routes
    Case("controlnet-version", "GET", "/controlnet/version", expect=200),
    Case("controlnet-model-list-update-word", "GET", "/controlnet/model_list", params={"update": "maybe"}, expect=422, mentions=(r"update",)),
    Case("controlnet-module-list-alias-word", "GET", "/controlnet/module_list", params={"alias_names": "x"}, expect=422, mentions=(r"alias_names",)),
    Case("controlnet-control-types", "GET", "/controlnet/control_types", expect=200),
    Case("controlnet-settings", "GET", "/controlnet/settings", expect=200),
    Case("controlnet-detect-unknown-module", "POST", "/controlnet/detect", {"controlnet_module": "../x", "controlnet_input_images": ["x"]}, 422,
         (r"Module not available", r"canny")),
    Case("controlnet-detect-no-image", "POST", "/controlnet/detect", {"controlnet_module": "canny"}, 422, (r"No image",)),
    Case("controlnet-detect-images-string", "POST", "/controlnet/detect", {"controlnet_input_images": "x"}, 422, (r"controlnet_input_images",)),
    Case("controlnet-detect-not-an-image", "POST", "/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images": ["bm90IGFuIGltYWdl"]},
         400, (r"controlnet_input_images\[0\]",)),
    Case("controlnet-detect-res-huge", "POST", "/controlnet/detect", lambda: {"controlnet_module": "canny", "controlnet_input_images": [png_b64()],
                                                                            "controlnet_processor_res": BIG}, 400, (r"controlnet_processor_res",)),
    Case("controlnet-detect-threshold-nan", "POST", "/controlnet/detect", raw_json('{"controlnet_module": "canny", "controlnet_threshold_a": NaN}'),
         422, (r"controlnet_threshold_a",)),
    Case("controlnet-detect-101-images", "POST", "/controlnet/detect", {"controlnet_module": "canny", "controlnet_input_images": ["x"] * 101},
         422, (r"controlnet_input_images",)),
    # --- wrong methods and paths
    get("txt2img-with-get", "txt2img", expect=405),
    get("img2img-with-get", "img2img", expect=405),
    Case("options-with-delete", "DELETE", f"{API}/options", expect=405),
    Case("progress-with-put", "PUT", f"{API}/progress", body={}, expect=405),
    Case("samplers-with-patch", "PATCH", f"{API}/samplers", expect=405),
    get("unknown-route", "no-such-route", expect=404),
    Case("path-traversal-route", "GET", f"{API}/..%2F..%2F..%2Fetc%2Fpasswd", expect=404),
    Case("path-double-slash", "GET", "/sdapi//v1//progress", expect=(200, 404)),
]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_field_request(hostile, group_rss, case):
    run_case(hostile, case)


def test_memory_is_back_after_the_field_cases(memory_check):
    memory_check("field")
