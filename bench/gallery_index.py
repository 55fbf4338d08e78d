#!/usr/bin/env python
"""How fast the gallery index opens a big outputs folder, and how little a refresh costs once
it is built.

Writes N small PNGs with an A1111 infotext into a temporary outputs folder: half in one date
folder (the "folder of 10,000 images" case, where new files land), the rest 250 to a date
folder. Then it times, in one run: the cold index (every file opened), a warm refresh with
nothing changed (directory stats only), a refresh after adding one file (one folder listed,
one file read), the first and the last page of 36, and a search by seed, each with the refresh
that every query does. It prints the ratio cold/warm, which is what incremental indexing buys.

The folders are dated back a minute before indexing: the index lists a directory changed in
the last 2 s again (a coarse clock could hide a second change), and a real outputs folder is
not rewritten as a whole just before someone opens the gallery.

Run from the repository root:  venv/bin/python bench/gallery_index.py [--count 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from modules.outputs.gallery import GalleryIndex  # noqa: E402
from modules.outputs.saving import encode_image  # noqa: E402

PROMPTS = ["a red circle", "a blue square on a green background", "a yellow triangle", "a photo of a cat"]


def infotext(n: int) -> str:
    return (f"{PROMPTS[n % len(PROMPTS)]}, number {n}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
            f"Seed: {1000 + n}, Size: 64x64, Model hash: abcdef1234, Model: tiny, Version: v0.1")


def png_bytes(n: int) -> bytes:
    buffer = io.BytesIO()
    encode_image(Image.new("RGB", (64, 64), (n % 256, 80, 160)), buffer, "png", infotext(n))
    return buffer.getvalue()


def populate(root: Path, count: int) -> Path:
    """Write the images; returns the big date folder."""
    big = root / "txt2img-images" / "2024-07-27"
    first_day = date(2024, 7, 26)
    start = time.time() - 60 - count  # one second apart, oldest first
    for n in range(count):
        if n < count - count // 2:
            folder = root / "txt2img-images" / (first_day - timedelta(days=n // 250)).isoformat()
        else:
            folder = big
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{n:05d}-{1000 + n}.png"
        path.write_bytes(png_bytes(n))
        os.utime(path, (start + n, start + n))
    return big


def settle(root: Path) -> None:
    old = time.time() - 60
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(directory, (old, old))


def timed(action, repeat: int) -> tuple[float, object]:
    """Median seconds over `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def line(label: str, seconds: float, note: str) -> None:
    print(f"  {label:<34}{seconds * 1000:9.1f} ms  ({note})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="images to index")
    parser.add_argument("--repeat", type=int, default=5, help="runs per warm measurement (median)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "outputs"
        start = time.perf_counter()
        big = populate(root, args.count)
        settle(root)
        dirs = sum(1 for p in root.rglob("*") if p.is_dir()) + 1
        print(f"{args.count} PNGs (64x64 with infotext) in {dirs} folders, {len(os.listdir(big))} in {big.relative_to(root)}; "
              f"written in {time.perf_counter() - start:.1f} s")

        index = GalleryIndex(root, Path(tmp) / "gallery.sqlite3")
        cold, stats = timed(index.refresh, 1)
        line("cold index", cold, f"{stats.added} files read, {stats.dirs_listed} folders listed")
        warm, stats = timed(index.refresh, args.repeat)
        line("warm refresh, nothing changed", warm, f"{stats.dirs_listed} folders listed, {stats.added + stats.updated} files read")

        def add_one() -> object:
            n = args.count + len(os.listdir(big))
            (big / f"{n:05d}-{1000 + n}.png").write_bytes(png_bytes(n))
            return index.refresh()

        added, stats = timed(add_one, args.repeat)
        line("refresh after adding 1 file", added, f"{stats.dirs_listed} folder listed, {stats.added} file read")

        settle(root)
        index.refresh()
        first, page = timed(lambda: index.query(per_page=36), args.repeat)
        line("query, first page of 36", first, f"{page.total} images, {page.pages} pages")
        last, page = timed(lambda: index.query(page=10**9, per_page=36), args.repeat)
        line("query, last page", last, f"page {page.page}")
        seed = 1000 + args.count // 3
        search, page = timed(lambda: index.query(search=f"seed:{seed}"), args.repeat)
        line(f"search seed:{seed}", search, f"{page.total} found")
        word, page = timed(lambda: index.query(search='"yellow triangle"'), args.repeat)
        line('search "yellow triangle"', word, f"{page.total} found")
        index.close()

    print(f"  cold / warm refresh: {cold / warm:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
