"""Rebuild `configs/clip-tokenizer/{vocab.json,merges.txt}` from CLIP's BPE merge list.

The merge list (`bpe_simple_vocab_16e6.txt.gz`, MIT licence) ships inside the
`open_clip_torch` wheel. That package depends on torchvision, so it is downloaded without its
dependencies and only the one member is read; nothing is installed.

    python scripts/build_clip_tokenizer.py            # downloads the wheel with pip
    python scripts/build_clip_tokenizer.py FILE.gz    # or use a merge list you already have
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "configs" / "clip-tokenizer"
WHEEL = "open_clip_torch==3.3.0"
MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408


def bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins CLIP uses for raw bytes, in CLIP's vocabulary order
    (printable bytes first, then the rest mapped above U+0100)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def build(merge_text: str) -> tuple[dict[str, int], list[str]]:
    lines = merge_text.split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the 48,894 merges CLIP actually uses
    base = bytes_to_unicode()
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def fetch_merge_list() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return gzip.decompress(zf.read(MEMBER)).decode("utf-8")


def main() -> None:
    text = gzip.decompress(Path(sys.argv[1]).read_bytes()).decode("utf-8") if len(sys.argv) > 1 else fetch_merge_list()
    vocab, merges = build(text)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (OUT_DIR / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT_DIR}")


if __name__ == "__main__":
    main()
