"""Print the page's strings that a localization has no entry for, as a JSON object to fill:

    python scripts/localization_missing.py ko_KR > missing.json

Each key is an English string of the page (a label, info line, button, tab, message, or the
demo model's guide) and each value is "" for its translation. Copy the filled entries into
`<name>.json` (in configs/localizations/, your --localizations-dir, or an extension's
localizations/ folder). A name no file has yet prints every string: a new language's start.
Extensions that are enabled in this data folder count (--data-dir, default the repo's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the localization's name, e.g. ko_KR")
    parser.add_argument("--data-dir", type=Path, default=None, help="the data folder whose extensions and --localizations-dir count")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.ERROR)
    from modules.localization import Localizations, lookup
    from modules.options import REPO_DIR, Paths, parse_args
    from modules.ui.ui_strings import messages, needs_translation, page_strings

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="l10n-"))
    shown = page_strings(data_dir)
    paths = Paths.from_args(parse_args(["--data-dir", str(data_dir)]))
    localizations = Localizations.for_app(paths)
    table = localizations.strings(args.name) if args.name in localizations.names() else {}
    guide = json.loads((REPO_DIR / "configs" / "demo-shapes" / "webui.json").read_text(encoding="utf-8")).get("guide", "")
    wanted = [*sorted(shown), *sorted(messages()), *([guide.strip()] if guide else [])]
    missing = {text: "" for text in wanted if needs_translation(text) and lookup(table, text) is None and not table.get(text)}
    json.dump(missing, sys.stdout, ensure_ascii=False, indent=2)
    print()
    print(f"{len(missing)} of {len(set(wanted))} strings have no entry in {args.name}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
