"""Train the demo's 4× upscaler (RealESRGAN Compact) and write it to models/ESRGAN.

    venv/bin/python scripts/train_upscaler.py            # the shipped recipe (10-15 minutes on 2 busy CPU cores)
    venv/bin/python scripts/train_upscaler.py --quick    # a few steps, to try the pipeline

Training checkpoints into the work folder (default ``build/upscaler``) every few hundred
steps; run it again to resume with the same result, or delete the folder to start over.
Uses CUDA when present. Writes ``models/ESRGAN/4x-demo-shapes-compact.safetensors``
(``--out`` to write elsewhere) and prints its PSNR on held-out pictures against Lanczos
and bicubic (bench/upscaler_psnr.py measures the same).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.demo import upscaler_training as training  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "upscaler", help="training checkpoint folder")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "ESRGAN" / training.FILE_NAME)
    parser.add_argument("--quick", action="store_true", help="a few steps (a smoke test, not a model)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for this small network on a busy CPU)")
    parser.add_argument("--eval-pictures", type=int, default=64, help="held-out pictures to score")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from modules.demo import upscaler_eval

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    recipe = training.Recipe.quick() if args.quick else training.Recipe()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.work.mkdir(parents=True, exist_ok=True)
    recipe_file = args.work / "recipe.json"
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) != json.loads(json.dumps(asdict(recipe))):
        parser.error(f"{args.work} holds a checkpoint of a different recipe: delete it or pass another --work")
    recipe_file.write_text(json.dumps(asdict(recipe), indent=2))
    print(f"Training the upscaler on {device} ({torch.get_num_threads()} threads) in {args.work}", flush=True)

    started = time.perf_counter()
    with tqdm(total=recipe.steps, desc="Train", unit="step") as bar:
        state = args.work / training.STATE_FILE
        if state.is_file():
            bar.update(int(torch.load(state, map_location="cpu", weights_only=True)["step"]))

        def progress(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        model = training.train(recipe, args.work, device, progress)
    seconds = time.perf_counter() - started

    model = model.to("cpu")
    training.write_model(model, args.out, recipe)
    descriptor = upscaler_eval.load_model(args.out)
    pairs = upscaler_eval.held_out_pairs(args.eval_pictures)
    scores = upscaler_eval.compare(
        {"model": upscaler_eval.model_upscaler(descriptor), **{n: upscaler_eval.pil_upscaler(n) for n in upscaler_eval.PIL_FILTERS}},
        pairs,
    )
    report = {
        "recipe": asdict(recipe),
        "train_seconds": round(seconds, 1),
        "file": str(args.out),
        "bytes": args.out.stat().st_size,
        "held_out_psnr": {k: round(v, 3) for k, v in scores.psnr.items()},
        "gain_over_lanczos_db": round(scores.gain("model"), 3),
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(f"Wrote {args.out} ({report['bytes'] / 1024:.0f} KiB, {descriptor.architecture.name} {descriptor.scale}x)")
    print("Held-out PSNR (dB):", json.dumps(report["held_out_psnr"]), f"gain over Lanczos {report['gain_over_lanczos_db']:+.2f} dB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
