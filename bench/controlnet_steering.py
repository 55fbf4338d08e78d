#!/usr/bin/env python
"""How the shipped demo ControlNet steers the demo model (issue 20's goals).

The condition is the canny map of a square in the left half of the picture
(modules/demo/controlnet_eval.py); every seed is generated through the generation core
with and without the unit, prompted with the held-out square scenes. Printed:

- the share of seeds whose generated shape's centroid lies in the left half, with and
  without the unit (goal: >= 90 % with; about 50 % is chance),
- the mean IoU of the generated shape's mask with the condition's filled square, with and
  without (goal: >= 0.6 with),
- weight 0 against no unit: the largest pixel difference (goal: 0, bit for bit),
- guidance end 0.3 against 1.0: the mean pixel change each makes from the picture without
  the unit (goal: 0.3 changes less).

Exit status 1 when a goal is missed.

Run from the repository root:  venv/bin/python bench/controlnet_steering.py [--seeds 20] [--steps 20] [--sheet out.png]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=REPO / "models" / "ControlNet" / "demo-shapes-canny")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--sheet", type=Path, default=None, help="save the pictures (with, then without) as one PNG")
    args = parser.parse_args()

    import numpy as np
    import torch

    from modules.demo import controlnet_eval as ce
    from modules.demo.embedded import EMBEDDED_PATH
    from modules.generation.runner import Runner

    if args.threads:
        torch.set_num_threads(args.threads)
    demo = ce.load(args.folder, EMBEDDED_PATH, REPO / "configs")
    with torch.inference_mode():
        result = ce.measure(demo, seeds=range(args.seeds), steps=args.steps)
        runner = Runner(demo.model)
        seeds = list(range(100, 100 + ce.PER_PROMPT))
        prompt = ce.prompts()[0]

        def pictures(settings):
            return ce.generate(runner, demo, prompt, seeds[0], settings, batch_size=len(seeds), steps=args.steps)

        plain = pictures(None)
        zero = pictures(ce.unit_settings(weight=0.0))
        early = pictures(ce.unit_settings(guidance_end=0.3))
        full = pictures(ce.unit_settings(guidance_end=1.0))
    summary = result.summary()
    zero_diff = max(int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max()) for a, b in zip(plain, zero))
    early_change, full_change = ce.mean_difference(plain, early), ce.mean_difference(plain, full)
    print(ce.format_summary(result))
    print(f"Weight 0 against no unit: largest pixel difference {zero_diff}")
    print(f"Guidance end 0.3 changes the picture by {early_change:.1f} levels on average, guidance end 1.0 by {full_change:.1f}")
    print(json.dumps({**summary, "weight0_max_diff": zero_diff, "guidance_end_0.3_change": round(early_change, 2),
                      "guidance_end_1.0_change": round(full_change, 2)}))
    if args.sheet:
        from modules.demo.evaluation import contact_sheet

        contact_sheet(result.pictures_with + result.pictures_without, columns=min(20, args.seeds)).save(args.sheet)
    ok = (summary["left_share_with"] >= 0.9 and summary["iou_with"] >= 0.6 and zero_diff == 0
          and early_change < full_change)
    if not ok:
        print("FAIL: a goal was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
