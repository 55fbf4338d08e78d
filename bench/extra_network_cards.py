#!/usr/bin/env python
"""What the Extra networks Lora tab costs with many LoRAs (200 by default), each with a 512x768
preview, a kohya header (ss_output_name, a 200-tag ss_tag_frequency) and no user json:

- rendering the tab's HTML: after a rescan with nothing cached (the first page load), after a
  rescan with the headers cached (each later page load or 🔄), and without a rescan (search,
  sort, a click's re-render);
- serving every card's picture: scaled on the server the first time, then from the cache.

Run from the repository root:  venv/bin/python bench/extra_network_cards.py [--count 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from modules.jobs.generation_task import Libraries  # noqa: E402
from modules.models.catalog import HashCache  # noqa: E402
from modules.models.lora import LoraLibrary  # noqa: E402
from modules.models.network_cards import NetworkCards, search, sort_cards  # noqa: E402
from modules.ui.extra_networks import cards_html  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    count = parser.parse_args().count
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tags = json.dumps({"10_set": {f"tag{i}": i for i in range(200)}})
        for i in range(count):
            save_file({"w": torch.zeros(4)}, str(root / f"lora{i:04d}.safetensors"), metadata={"ss_output_name": f"l{i}", "ss_tag_frequency": tags})
            Image.new("RGB", (512, 768), (i % 256, 100, 200)).save(root / f"lora{i:04d}.preview.png")
        cards = NetworkCards(Libraries(LoraLibrary((root,), HashCache(None))), None)
        for label, rescan in (("render after a rescan, nothing cached", True), ("render after a rescan", True), ("render", False)):
            start = time.perf_counter()
            page = cards_html("lora", sort_cards(search(cards.cards("lora", rescan), ""), "Name", "Ascending"), (), False)
            print(f"{label}: {(time.perf_counter() - start) * 1000:.0f} ms ({len(page) / 1024:.0f} KiB of HTML)")
        names = [f"lora{i:04d}" for i in range(count)]
        for label in ("pictures, first time", "pictures, cached"):
            start = time.perf_counter()
            size = sum(len(cards.thumbnail("lora", name) or b"") for name in names)
            print(f"{label}: {(time.perf_counter() - start) * 1000:.0f} ms for {count} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
