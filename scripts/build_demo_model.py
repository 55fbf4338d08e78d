"""Build the embedded demo model from nothing: data, VAE, text encoder + UNet, files, scores.

    venv/bin/python scripts/build_demo_model.py            # the shipped recipe (about an hour on 2 CPU cores)
    venv/bin/python scripts/build_demo_model.py --quick    # a few steps of everything, to try the pipeline

Every phase saves a checkpoint in the work folder (default ``build/demo-model``) and is
skipped when its result is already there, so an interrupted build resumes with the same
result. Uses CUDA when present. Writes the model to
``models/Stable-diffusion/demo-shapes-64px.safetensors`` and its config folder to
``configs/demo-shapes/`` (pass ``--out``/``--config-out`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.demo import training  # noqa: E402
from modules.demo.embedded import CONFIG_NAME, FILE_NAME  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "demo-model", help="phase checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "Stable-diffusion" / FILE_NAME)
    parser.add_argument("--config-out", type=Path, default=ROOT / "configs" / CONFIG_NAME)
    parser.add_argument("--quick", action="store_true", help="a few steps per phase (a smoke test, not a model)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from modules.demo import evaluation, shapes

    torch.set_flush_denormal(True)  # tiny late-training updates otherwise slow CPU maths down
    recipe = training.Recipe.quick() if args.quick else training.Recipe()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.work.mkdir(parents=True, exist_ok=True)
    recipe_file = args.work / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) != asdict(recipe):
        parser.error(f"{args.work} holds checkpoints of a different recipe: delete it or pass another --work")
    recipe_file.write_text(json.dumps(asdict(recipe), indent=2))
    print(f"Building the demo model on {device} ({torch.get_num_threads()} threads) in {args.work}", flush=True)

    timings = {}
    started = time.perf_counter()
    vae = training.train_vae(recipe, args.work, device)
    timings["vae"] = time.perf_counter() - started
    print("VAE:", (args.work / "vae" / "stats.json").read_text(), flush=True)
    vae.eval()
    latents = training.encode_latents(recipe, args.work, vae, device)
    timings["latents"] = time.perf_counter() - started - sum(timings.values())
    text_encoder, unet = training.train_unet(
        recipe, args.work, latents, float(vae.config.scaling_factor), ROOT / "configs", device
    )
    timings["unet"] = time.perf_counter() - started - sum(timings.values())
    cpu = torch.device("cpu")
    training.write_model(args.out, args.config_out, vae.to(cpu), text_encoder.to(cpu), unet.to(cpu), recipe)
    print(f"Wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) and {args.config_out}", flush=True)
    report = {"recipe": asdict(recipe), "phase_seconds": {k: round(v, 1) for k, v in timings.items()}}

    if not args.skip_eval:
        configs_dir = args.config_out.parent
        tokenizer = configs_dir / "clip-tokenizer"
        if not tokenizer.is_dir():  # the loader reads the shared vocab beside the config folder
            shutil.copytree(ROOT / "configs" / "clip-tokenizer", tokenizer)
        model = evaluation.load_demo(args.out, configs_dir)
        with tqdm(total=len(shapes.held_out_scenes()), desc="Evaluate", unit="image") as bar:
            result = evaluation.evaluate(model, progress=bar)
        evaluation.contact_sheet(result.pictures).save(args.work / "held_out.png")
        report["held_out"] = {**result.scores, "median_seconds_per_image": round(result.seconds_per_image, 3)}
        print("Held-out scenes:", json.dumps(report["held_out"]), flush=True)
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(f"Done in {time.perf_counter() - started:.0f} s; report in {args.work / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
