"""Train the demo ControlNet (canny edges -> the demo shapes model) and write it to models/ControlNet.

    venv/bin/python scripts/train_controlnet.py --threads 1  # the shipped recipe (11-25 minutes on 2 busy CPU cores)
    venv/bin/python scripts/train_controlnet.py --quick    # a few steps, to try the pipeline

Training checkpoints into the work folder (default ``build/controlnet``) every hundred
steps; run it again to resume with the same result, or delete the folder to start over.
Uses CUDA when present. Writes the diffusers folder ``models/ControlNet/demo-shapes-canny``
(``--out`` to write elsewhere), then measures how it steers (``--skip-eval`` not to):
bench/controlnet_steering.py measures the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modules.demo import controlnet_training as training  # noqa: E402
from modules.demo.embedded import EMBEDDED_PATH  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "controlnet", help="training checkpoint folder")
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "ControlNet" / training.FOLDER_NAME)
    parser.add_argument("--checkpoint", type=Path, default=EMBEDDED_PATH, help="the demo model it steers")
    parser.add_argument("--quick", action="store_true", help="a few steps (a smoke test, not a model)")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of the recipe's")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--skip-eval", action="store_true", help="do not measure the steering afterwards")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    from modules.demo import evaluation

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    recipe = training.Recipe.quick() if args.quick else training.Recipe()
    if args.steps:
        recipe = replace(recipe, steps=args.steps)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.work.mkdir(parents=True, exist_ok=True)
    recipe_file = args.work / "recipe.json"
    recipe_json = json.loads(json.dumps(asdict(recipe)))
    if recipe_file.is_file() and json.loads(recipe_file.read_text()) != recipe_json:
        parser.error(f"{args.work} holds a checkpoint of a different recipe: delete it or pass another --work")
    recipe_file.write_text(json.dumps(recipe_json, indent=2))
    model = evaluation.load_demo(args.checkpoint, ROOT / "configs", device)
    print(f"Training the demo ControlNet on {device} ({torch.get_num_threads()} threads) in {args.work}", flush=True)

    started = time.perf_counter()
    with tqdm(total=recipe.steps, desc="Train", unit="step", mininterval=5) as bar:
        state = args.work / training.STATE_FILE
        if state.is_file():
            bar.update(int(torch.load(state, map_location="cpu", weights_only=True)["step"]))

        def progress(step: int, loss: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        controlnet = training.train(recipe, model, args.work, progress)
    seconds = time.perf_counter() - started
    training.write_model(controlnet, args.out, recipe)
    size = (args.out / "diffusion_pytorch_model.safetensors").stat().st_size
    print(f"Wrote {args.out} ({size / 2**20:.1f} MiB, fp16) after {seconds:.0f} s of training", flush=True)
    report = {"recipe": recipe_json, "train_seconds": round(seconds, 1), "folder": str(args.out), "bytes": size}

    if not args.skip_eval:
        from modules.demo import controlnet_eval

        result = controlnet_eval.measure(controlnet_eval.load(args.out, args.checkpoint, ROOT / "configs"))
        report["steering"] = result.summary()
        print(controlnet_eval.format_summary(result), flush=True)
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
