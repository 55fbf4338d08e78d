"""The A1111 clients people already use, replayed against the real server over HTTP: each test
sends what that client sends with its default settings (routes, headers, bodies, read from the
client's public source) and reads what it reads. Sizes are ones the client lets a user pick
(64 px, so the CPU stays quick); everything else is the client's default.

Sources: Open WebUI backend/open_webui/routers/images.py; SillyTavern src/endpoints/
stable-diffusion.js and public/scripts/extensions/stable-diffusion/index.js; aiyabot
core/settings.py and core/stablecog.py; AI-Render sd_backends/automatic1111_api.py;
stable-gimpfusion stable_gimpfusion.py; Auto-Photoshop-StableDiffusion-Plugin
utility/session.js and sd_tab/util.ts; sd-backend-client api/webui/*.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import random
import time
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw



@pytest.fixture(scope="module")
def server(api_server):
    """The real server shared with test_webuiapi_client.py (tests/api/conftest.py)."""
    return api_server[0]


class RawClient:
    """HTTP as Node's fetch and aiohttp send it: headers go out exactly as given (httpx refuses
    the trailing space of `Basic `, which is what these clients put on the wire)."""

    def __init__(self, base: str, headers: dict[str, str]):
        parts = urlsplit(base)
        self.host, self.port, self.headers = parts.hostname, parts.port, headers

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=300)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **({"Content-Type": "application/json"} if payload is not None else {})}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return response.status, json.loads(raw) if raw else None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None):
        return self.request("POST", path, body)


def b64png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def picture(text: str) -> Image.Image:
    """A base64 string as a client decodes it (a plain b64decode: no data: prefix allowed)."""
    return Image.open(io.BytesIO(base64.b64decode(text, validate=True)))


def shapes(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (40, 70, 220))
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(220, 40, 40))
    return image


def test_open_webui(server):
    """Open WebUI's AUTOMATIC1111 engine with AUTOMATIC1111_API_AUTH left empty: every call
    carries `authorization: Basic ` ('Basic ' + base64 of nothing)."""
    http_ = RawClient(server, {"authorization": "Basic " + base64.b64encode(b"").decode()})
    status, _ = http_.get("/sdapi/v1/options")  # "verify connection": raise_for_status
    assert status == 200
    status, listed = http_.get("/sdapi/v1/sd-models")
    models = [{"id": m["title"], "name": m["model_name"]} for m in listed]
    assert models and all(m["id"] and m["name"] for m in models)
    # Saving the image settings with no model chosen posts the whole options object back, model "".
    _, options = http_.get("/sdapi/v1/options")
    current = options["sd_model_checkpoint"]
    options["sd_model_checkpoint"] = ""
    assert http_.post("/sdapi/v1/options", options)[0] == 200
    assert http_.get("/sdapi/v1/options")[1]["sd_model_checkpoint"] == current
    # A generation: the model check, then txt2img with IMAGE_SIZE "100x100" (any WxH passes its check) and IMAGE_STEPS 50.
    assert http_.get("/sdapi/v1/options")[1]["sd_model_checkpoint"] == current
    _, res = http_.post("/sdapi/v1/txt2img", {"prompt": "a lighthouse at dusk", "batch_size": 1, "width": 100, "height": 100, "steps": 50})
    images = res["images"]
    assert len(images) == 1 and "," not in images[0]  # no data: URL, so Open WebUI takes it as image/png
    assert picture(images[0]).format == "PNG" and picture(images[0]).size == (96, 96)
    assert isinstance(res["info"], str)  # stored as it comes


def test_sillytavern(server):
    """SillyTavern's Stable Diffusion extension, source 'auto', auth setting empty: its server
    calls A1111 with `Authorization: Basic ` on every request."""
    http_ = RawClient(server, {"Authorization": "Basic " + base64.b64encode(b"").decode()})
    assert http_.get("/sdapi/v1/options")[0] == 200  # ping
    samplers = [x["name"] for x in http_.get("/sdapi/v1/samplers")[1]]
    schedulers = [x["name"] for x in http_.get("/sdapi/v1/schedulers")[1]]
    models = [x["title"] for x in http_.get("/sdapi/v1/sd-models")[1]]
    upscalers = [x["name"] for x in http_.get("/sdapi/v1/upscalers")[1]]
    latent = [x["name"] for x in http_.get("/sdapi/v1/latent-upscale-modes")[1]]
    vaes = ["Automatic", *(x["model_name"] for x in http_.get("/sdapi/v1/sd-vae")[1])]
    hires_upscalers = [upscalers[0], *latent, *upscalers[1:]]
    assert samplers[0] == "DPM++ 2M" and "automatic" in schedulers and models and "Latent" in hires_upscalers and vaes[0] == "Automatic"
    model = http_.get("/sdapi/v1/options")[1]["sd_model_checkpoint"]
    assert model in models
    # set-model, then wait until idle as SillyTavern does (progress == 0 and job_count === 0)
    assert http_.post("/sdapi/v1/options", {"sd_model_checkpoint": model})[0] == 200
    for _ in range(10):
        progress = http_.get("/sdapi/v1/progress")[1]
        if progress["progress"] == 0.0 and progress["state"]["job_count"] == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail("never idle")
    body = {
        "url": server, "auth": "", "prompt": "best quality, absurdres, aesthetic, a knight", "negative_prompt": "lowres, bad anatomy, blurry",
        "sampler_name": samplers[0], "scheduler": schedulers[0], "steps": 20, "cfg_scale": 7, "width": 64, "height": 64,
        "restore_faces": False, "enable_hr": False, "hr_upscaler": "Latent", "hr_scale": 2, "denoising_strength": 0.7,
        "hr_second_pass_steps": 0, "override_settings": {"CLIP_stop_at_last_layers": 1}, "override_settings_restore_afterwards": True,
        "clip_skip": 1, "save_images": True, "send_images": True, "do_not_save_grid": False, "do_not_save_samples": False,
        "hr_additional_modules": [],
    }
    status, data = http_.post("/sdapi/v1/txt2img", body)
    assert status == 200, data
    assert picture(data["images"][0]).size == (64, 64)
    # the browser closed the request: SillyTavern interrupts with no body and no content type
    assert http_.post("/sdapi/v1/interrupt")[0] == 200


def test_aiyabot(server):
    """aiyabot (Discord) with its default config: no API auth, a requests session that posts
    /login before every operation, numbers from its config as strings."""
    plain = httpx.Client(base_url=server, timeout=300)
    assert plain.get("/sdapi/v1/cmd-flags").status_code == 200  # 401 would mean --api-auth, 404 "no --api"
    plain.head("/")
    version = plain.get("/sdapi/v1/version")
    assert version.json().get("app") != "sd.next"  # anything else: an A1111 backend
    config = plain.get("/config")
    config_json = config.json()  # parsed outside any try: must be JSON
    plain.post("/login")  # no gradio auth: the bot logs in anyway, any answer will do
    samplers = [s["name"] for s in plain.get("/sdapi/v1/samplers").json()]
    styles = [(s["name"], s["prompt"], s["negative_prompt"]) for s in plain.get("/sdapi/v1/prompt-styles").json()]
    face_restorers = [f["name"] for f in plain.get("/sdapi/v1/face-restorers").json()]
    embeddings = plain.get("/sdapi/v1/embeddings").json()
    for group in ("loaded", "skipped"):
        for entry in embeddings[group].values():
            assert "shape" in entry
    hypernets = [h["name"] for h in plain.get("/sdapi/v1/hypernetworks").json()]
    upscalers = [u["name"] for u in plain.get("/sdapi/v1/upscalers").json()]
    models = plain.get("/sdapi/v1/sd-models").json()
    loras = [lora["alias"] for lora in plain.get("/sdapi/v1/loras").json()]
    hires_choices = [c.get("props", {}).get("choices") for c in config_json.get("components", []) if c.get("props", {}).get("elem_id") == "txt2img_hr_upscaler"]
    assert "Euler a" in samplers and isinstance(styles, list) and face_restorers == [] and hypernets == [] and "Lanczos" in upscalers
    assert models and isinstance(loras, list) and hires_choices and "Latent" in str(hires_choices[0])

    plain.post("/login")
    assert plain.post("/sdapi/v1/options", json={"sd_model_checkpoint": models[0]["title"]}).json() == {}
    payload = {
        "prompt": "a castle", "negative_prompt": "", "steps": 30, "width": 64, "height": 64, "cfg_scale": "7.0", "sampler_index": "Euler a",
        "seed": random.Random(1).randint(0, 0xFFFFFFFF) | 0xFFFF0000, "seed_resize_from_h": -1, "seed_resize_from_w": -1,
        "denoising_strength": None, "n_iter": 1, "batch_size": 1, "styles": ["None"], "override_settings": {"CLIP_stop_at_last_layers": 1},
    }
    r = plain.post("/sdapi/v1/txt2img", json=payload)
    assert r.status_code == 200, r.text
    for image in r.json()["images"]:
        Image.open(io.BytesIO(base64.b64decode(image))).load()
        info = plain.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + image}).json().get("info")
        lines = info.split("\n")
        assert lines[0] == "a castle" and "Sampler: Euler a" in lines[-1] and f"Seed: {payload['seed']}" in lines[-1]
    # hires fix from the bot: half the steps as a float, strength as a string
    hires = {**payload, "enable_hr": True, "hr_upscaler": "Latent", "hr_scale": 1, "hr_second_pass_steps": int(payload["steps"]) / 2,
             "denoising_strength": "0.75"}
    r = plain.post("/sdapi/v1/txt2img", json=hires)
    assert r.status_code == 200, r.text
    assert "Hires steps: 15" in json.loads(r.json()["info"])["infotexts"][0]
    # buttons and the other commands
    plain.post("/login")
    assert plain.post("/sdapi/v1/skip").status_code == 200 and plain.post("/sdapi/v1/interrupt").status_code == 200
    progress = plain.get("/sdapi/v1/progress").json()
    assert progress["state"]["job"] == "" and "current_image" in progress and progress["eta_relative"] == 0
    up = plain.post("/sdapi/v1/extra-single-image", json={
        "upscaling_resize": "2.0", "upscaler_1": "Lanczos", "image": "data:image/png;base64," + r.json()["images"][0],
        "gfpgan_visibility": "0.0", "codeformer_visibility": "0.0", "upscale_first": False, "upscaler_2": "None",
        "extras_upscaler_2_visibility": "0.5"})
    assert up.status_code == 200 and picture(up.json()["image"]).size == (128, 128)
    missing = plain.post("/sdapi/v1/extra-single-image", json={"upscaling_resize": "2.0", "upscaler_1": "ESRGAN_4x", "image": r.json()["images"][0]})
    assert missing.status_code == 400 and "ESRGAN_4x" in missing.json()["detail"]  # its default upscaler: a message, not a crash
    caption = plain.post("/sdapi/v1/interrogate", json={"image": "data:image/png;base64," + r.json()["images"][0], "model": "clip"})
    assert caption.status_code == 503 and "--download" in caption.json()["detail"]  # no interrogate weights here: what to fetch


def test_ai_render(server):
    """AI Render (Blender): always img2img, the render as an RGBA PNG data URL, the sampler in
    sampler_index with A1111's legacy names, and its own extra keys."""
    http = httpx.Client(base_url=server, headers={"User-Agent": "Blender/4.2.0", "Accept": "*/*"}, timeout=300)
    render = Image.new("RGBA", (128, 128), (90, 120, 200, 255))
    for name in ("DPM++ 2M Karras", "DPM++ 3M SDE Exponential", "DPM adaptive", "Restart", "DPM++ 2S a Karras", "LMS Karras"):
        body = {
            "prompt": "a spaceship, digital art", "negative_prompt": "ugly, bad art", "width": 128, "height": 128, "image_similarity": 0.4,
            "denoising_strength": round(1 - 0.4, 2), "seed": random.Random(name).randint(1000000000, 2147483647), "cfg_scale": 7.0, "steps": 8,
            "sampler": name, "sampler_index": name, "init_images": ["data:image/png;base64," + b64png(render)],
        }
        response = http.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 200, (name, response.text)
        base64_img = response.json().get("images", [False])[0] or response.json().get("image")
        assert picture(base64_img.replace("data:image/png;base64,", "")).size == (128, 128)
    upscalers = [m["name"] for m in httpx.get(server + "/sdapi/v1/upscalers", headers={"Accept": "application/json"}, timeout=5).json()]
    up = http.post("/sdapi/v1/extra-single-image", json={
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0, "codeformer_weight": 0,
        "upscaling_resize": 2.0, "upscaling_resize_w": 256, "upscaling_resize_h": 256, "upscaling_crop": True, "upscaler_1": upscalers[1],
        "upscaler_2": "None", "extras_upscaler_2_visibility": 0, "upscale_first": True, "image": "data:image/png;base64," + b64png(render)})
    assert up.status_code == 200 and picture(up.json()["image"]).size == (256, 256)


def test_stable_gimpfusion(server):
    """Stable Gimpfusion (GIMP 2.10): every URL ends in '?', GETs carry a JSON content type,
    sizes and counts arrive as floats, images as raw base64."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    http = httpx.Client(base_url=server, headers=headers, timeout=300)
    checkpoint = http.get("/sdapi/v1/options?").json()["sd_model_checkpoint"]
    titles = [m["title"] for m in http.get("/sdapi/v1/sd-models?").json()]
    assert titles.index(checkpoint) >= 0  # the plug-in fails to register otherwise
    http.post("/sdapi/v1/options?", content=json.dumps({"sd_model_checkpoint": checkpoint}))
    common = {"prompt": "a forest", "negative_prompt": "", "cfg_scale": 7.5, "denoising_strength": 0.8, "steps": 50, "width": 64.0,
              "height": 64.0, "sampler_index": "Euler a", "batch_size": 1.0, "seed": -1}
    for route, extra in (
        ("/sdapi/v1/txt2img?", {}),
        ("/sdapi/v1/img2img?", {"resize_mode": 0, "init_images": [b64png(shapes())]}),
        ("/sdapi/v1/img2img?", {"resize_mode": 0, "init_images": [b64png(shapes())], "mask": b64png(Image.new("L", (64, 64), 255)),
                                "inpaint_full_res": True, "inpaint_full_res_padding": 10, "inpainting_mask_invert": 0}),
    ):
        response = http.post(route, content=json.dumps({**common, **extra}))
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        assert len(info["all_seeds"]) == len(info["infotexts"]) == 1
        for i, data in enumerate(response.json()["images"][: len(info["all_seeds"])]):
            assert picture(data).size == (64, 64) and f"Seed: {info['all_seeds'][i]}" in info["infotexts"][i]


def test_auto_photoshop_sd(server):
    """Auto-Photoshop-SD (Automatic1111 backend): seed as a string, sampler in sampler_index,
    the plug-in's own keys in the body, and each result's seed read back through png-info."""
    http = httpx.Client(base_url=server, headers={"Accept": "application/json", "Content-Type": "application/json"}, timeout=300)
    options = httpx.get(server + "/sdapi/v1/options").json()
    assert {"sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"} <= set(options)
    assert http.post("/sdapi/v1/options", json={"inpainting_mask_weight": 1.0}).json() == {}
    sampler = httpx.get(server + "/sdapi/v1/samplers").json()[0]["name"]
    for route in ("sd-models", "loras", "upscalers", "scripts"):
        assert httpx.get(f"{server}/sdapi/v1/{route}").status_code == 200
    assert isinstance(httpx.get(server + "/sdapi/v1/embeddings").json()["loaded"], dict)
    body = {
        "prompt": "a fox", "negative_prompt": "", "original_prompt": "a fox", "original_negative_prompt": "", "steps": 20, "cfg_scale": 7,
        "width": 64, "height": 64, "denoising_strength": 0.5, "batch_size": 1, "seed": "-1", "sampler_index": sampler, "mask_blur": 4,
        "restore_faces": False, "tiling": False, "clip_skip": 1, "alwayson_scripts": {}, "selection_info": {"left": 0, "top": 0},
        "use_sharp_mask": "auto1111_extension", "use_prompt_shortcut": True, "prompt_shortcut_ui_dict": {}, "uniqueDocumentId": "doc-1",
        "mode": "txt2img", "session_id": "s-1",
    }
    response = http.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 200, response.text
    for image in response.json()["images"]:
        info = http.post("/sdapi/v1/png-info", json={"image": "data:image/png;base64," + image}).json()["info"]
        last = info.rsplit("\n", 1)[-1]
        seed = dict(part.split(": ", 1) for part in last.split(", "))["Seed"]
        assert seed.isdigit()
    inpaint = {**body, "mode": "inpaint", "init_images": [b64png(shapes())], "mask": b64png(Image.new("L", (64, 64), 255)),
               "expanded_mask": "", "mask_expansion": 0, "inpaint_full_res": False, "inpaint_full_res_padding": 0, "inpainting_fill": 1,
               "denoising_strength": 0.7}
    assert http.post("/sdapi/v1/img2img", json=inpaint).status_code == 200
    progress = httpx.get(server + "/sdapi/v1/progress?skip_current_image=false").json()
    assert progress["progress"] == 0 and "current_image" in progress
    assert http.post("/sdapi/v1/interrupt").json() == {}  # JSON content type, no body
    up = http.post("/sdapi/v1/extra-single-image", json={
        "resize_mode": 0, "show_extras_results": 0, "gfpgan_visibility": 0, "codeformer_visibility": 0, "codeformer_weight": 0,
        "upscaling_resize": 1.5, "upscaling_resize_w": 96.0, "upscaling_resize_h": 96.0, "upscaling_crop": True, "upscaler_1": "None",
        "upscaler_2": "None", "extras_upscaler_2_visibility": 0, "upscale_first": False, "image": b64png(shapes())})
    assert up.status_code == 200 and picture(up.json()["image"]).size == (96, 96)


def test_sd_backend_client(server):
    """sd-backend-client (IntraPaint's): anything but 200 is an error, the probes must not look
    like ComfyUI, and every generation's `info` must carry A1111's full key set."""
    http = httpx.Client(base_url=server, timeout=300)
    stats = http.get("/system_stats")
    assert not (stats.status_code == 200 and isinstance(stats.json(), dict) and "system" in stats.json())
    options = http.get("/sdapi/v1/options")
    assert options.status_code == 200 and options.json()
    for entry in http.get("/sdapi/v1/samplers").json():
        assert isinstance(entry["aliases"], list) and all(isinstance(v, str) for v in entry["options"].values())
    for entry in http.get("/sdapi/v1/upscalers").json():
        assert {"model_name", "model_path", "model_url"} <= set(entry) and isinstance(entry["scale"], (int, float))
    assert all({"title", "model_name", "filename"} <= set(m) for m in http.get("/sdapi/v1/sd-models").json())
    assert all({"model_name", "filename"} <= set(v) for v in http.get("/sdapi/v1/sd-vae").json())
    assert all({"name", "alias", "path"} <= set(lora) for lora in http.get("/sdapi/v1/loras").json())
    assert all(isinstance(s[k], str) for s in http.get("/sdapi/v1/prompt-styles").json() for k in ("name", "prompt", "negative_prompt"))
    scripts = http.get("/sdapi/v1/scripts").json()
    assert isinstance(scripts["txt2img"], list) and isinstance(scripts["img2img"], list)
    assert http.get("/sdapi/v1/script-info").status_code == 200
    assert "normal" in [s["name"] for s in http.get("/sdapi/v1/schedulers").json()]
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-loras"):
        assert http.post(f"/sdapi/v1/{route}", json={}).status_code == 200
    progress = http.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()
    state = progress["state"]
    assert isinstance(progress["progress"], float) and isinstance(progress["eta_relative"], float)
    assert {"current_image", "textinfo"} <= set(progress) and isinstance(state["job_timestamp"], str)
    assert all(isinstance(state[k], bool) for k in ("skipped", "interrupted", "stopping_generation"))
    assert all(isinstance(state[k], int) for k in ("job_count", "job_no", "sampling_step", "sampling_steps"))
    model = options.json()["sd_model_checkpoint"]
    body = {"prompt": "a red square", "negative_prompt": "", "sampler_name": "Euler a", "scheduler": "normal", "batch_size": 1, "n_iter": 1,
            "steps": 30, "cfg_scale": 7.0, "width": 64, "height": 64, "seed": -1, "override_settings": {"sd_model_checkpoint": model},
            "restore_faces": False, "tiling": False, "send_images": True, "save_images": False, "force_task_id": "task(txt2img-ABC1234)",
            "alwayson_scripts": {}}
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    for route, extra in (("txt2img", {}), ("img2img", {"init_images": ["data:image/png;base64," + b64png(shapes())], "denoising_strength": 0.75}),
                         ("img2img", {"init_images": ["data:image/png;base64," + b64png(shapes())], "denoising_strength": 0.75,
                                      "mask": "data:image/png;base64," + b64png(mask), "inpainting_fill": 1})):
        response = http.post(f"/sdapi/v1/{route}", json={**body, **extra, "force_task_id": f"task({route}-ABC1234)"})
        assert response.status_code == 200, response.text
        info = json.loads(response.json()["info"])
        required = {"prompt": str, "all_prompts": list, "negative_prompt": str, "all_negative_prompts": list, "seed": int, "all_seeds": list,
                    "subseed": int, "all_subseeds": list, "subseed_strength": (int, float), "width": int, "height": int, "sampler_name": str,
                    "cfg_scale": (int, float), "batch_size": int, "restore_faces": bool, "sd_model_name": str, "sd_model_hash": str,
                    "extra_generation_params": dict, "index_of_first_image": int, "infotexts": list, "styles": list, "job_timestamp": str,
                    "clip_skip": int, "is_using_inpainting_conditioning": bool, "version": str}
        for key, kind in required.items():
            assert isinstance(info[key], kind), key
        for key in ("sd_vae_name", "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength"):
            assert key in info, key
        assert picture(response.json()["images"][0]).size == (64, 64)
    assert http.post("/sdapi/v1/interrupt", json={}).json() == {}
    assert http.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 1}).json() == {}
