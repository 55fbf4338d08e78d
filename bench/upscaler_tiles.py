"""Model upscaler cost with and without tiling: a Real-ESRGAN x4plus-sized RRDBNet (23 blocks,
64 filters, random weights: the cost does not depend on the values) upscales one picture,
untiled and with A1111's default tile (192, overlap 8). Prints seconds and, on CUDA, the peak
GPU memory of each, fp16 where spandrel says the architecture allows it.

    venv/bin/python bench/upscaler_tiles.py --size 1024      # on a GPU
    venv/bin/python bench/upscaler_tiles.py --size 128       # a CPU smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="side of the square input picture")
    parser.add_argument("--tile", type=int, default=192)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=23, help="RRDB blocks (23: x4plus, 6: x4plus anime)")
    args = parser.parse_args()

    from spandrel.architectures.ESRGAN import ESRGAN

    from modules.postprocessing.upscalers import TileSettings, UpscalerModels, upscale_tiled

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "RealESRGAN_x4plus_like.pth"
        torch.manual_seed(0)
        torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=args.blocks, scale=4).state_dict(), path)
        models = UpscalerModels(console=False)
        model = models.load(path)
    print(f"device {models.device}, dtype {model.dtype}, {args.blocks} RRDB blocks, input {args.size}x{args.size}, output x{model.scale}")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    results = {}
    for label, tiles in (("untiled", TileSettings(0, 0)), (f"tile {args.tile}/{args.overlap}", TileSettings(args.tile, args.overlap))):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            results[label] = upscale_tiled(model, image, tiles)
        except torch.OutOfMemoryError:
            print(f"{label:>16}: out of GPU memory")
            continue
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        print(f"{label:>16}: {seconds:7.2f} s{peak}")
    if len(results) == 2:
        a, b = (np.asarray(r, dtype=np.int16) for r in results.values())
        print(f"tiled vs untiled: max difference {np.abs(a - b).max()}/255, mean {np.abs(a - b).mean():.3f}/255")
    return 0


if __name__ == "__main__":
    sys.exit(main())
