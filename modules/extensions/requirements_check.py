"""Read an extension's requirements.txt before pip sees it, and refuse one that would replace
the torch build the web UI runs on (a common way an extension breaks an install: its
requirements pin an old torch, or pull a CPU wheel from another index).

The check is by reading, not by asking pip: a line naming torch, torchvision or torchaudio
must be satisfied by the installed version; they may not come from a URL or a file; another
package index is not allowed beside a torch line; `-r`/`-c` includes must stay inside the
extension. What a package pulls in by its own dependencies is kept off by the installer's
constraints file (`protected_pins`).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PROTECTED = ("torch", "torchvision", "torchaudio")
DEFAULT_INDEXES = ("https://pypi.org/simple",)
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(\S.*)$")
_INDEX = re.compile(r"^(-i|--index-url|--extra-index-url|-f|--find-links)(?:\s+|=)(\S.*)$")
_EDITABLE = re.compile(r"^(-e|--editable)(?:\s+|=)(\S.*)$")
_WHEEL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._]*?)-\d")


@dataclass(frozen=True)
class Line:
    """One logical line of a requirements file (continuations joined, comment removed)."""

    file: Path
    number: int
    text: str

    def where(self, root: Path) -> str:
        try:
            name = self.file.relative_to(root).as_posix()
        except ValueError:
            name = self.file.name
        return f"{name} line {self.number} ({self.text!r})"


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_lines(path: Path, root: Path, _seen: set[Path] | None = None) -> list[Line]:
    """Every line of `path` and of the files it includes with -r/-c, which must lie inside
    `root` (the extension's folder). ValueError for an include outside it or missing."""
    path, root = Path(path), Path(root).resolve()
    seen = set() if _seen is None else _seen
    resolved = path.resolve()
    if resolved in seen:
        return []
    seen.add(resolved)
    try:
        text = resolved.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    lines: list[Line] = []
    number, pending, start = 0, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        joined, pending = (pending + raw), ""
        stripped = re.sub(r"(^|\s)#.*$", "", joined).strip()
        if not stripped:
            continue
        line = Line(resolved, start, stripped)
        include = _INCLUDE.match(stripped)
        if include:
            target = (resolved.parent / include.group(2).strip()).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"{line.where(root)} includes a file outside the extension's folder")
            if not target.is_file():
                raise ValueError(f"{line.where(root)} includes a file that does not exist")
            lines.append(line)
            lines.extend(read_lines(target, root, seen))
            continue
        lines.append(line)
    return lines


def _url_name(target: str) -> str | None:
    """The package a URL, path or VCS requirement installs: its #egg=, else its wheel or sdist file name."""
    egg = re.search(r"[#&]egg=([A-Za-z0-9._-]+)", target)
    if egg:
        return canonicalize_name(egg.group(1))
    last = target.split("#")[0].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    wheel = _WHEEL.match(last)
    return canonicalize_name(wheel.group(1)) if wheel else None


def _without_options(line: str) -> str:
    """A requirement line without its per-requirement options (`--hash=...`, `--config-settings ...`)."""
    return re.sub(r"\s+--[A-Za-z][A-Za-z-]*(=|\s|$).*$", "", line)


def _protected_name(line: str) -> tuple[str | None, Requirement | None, bool]:
    """(protected package named, its parsed requirement, whether it comes from a URL or path)."""
    line = _without_options(line)
    editable = _EDITABLE.match(line)
    if editable:
        name = _url_name(editable.group(2))
        return (name if name in PROTECTED else None), None, True
    try:
        req = Requirement(line)
    except InvalidRequirement:
        name = _url_name(line)  # a bare URL or file path (./torch-1.13.1-cp310-...whl)
        return (name if name in PROTECTED else None), None, True
    name = canonicalize_name(req.name)
    if name not in PROTECTED:
        return None, req, bool(req.url)
    return name, req, bool(req.url)


def check_requirements(path: Path, root: Path | None = None, installed: Callable[[str], str | None] = installed_version,
                       allowed_indexes: tuple[str, ...] | None = None) -> list[Line]:
    """The lines of `path` when it leaves torch, torchvision and torchaudio as they are;
    ValueError naming the line, the installed version and what it asks for otherwise.
    `root` (default: the file's folder) bounds -r includes; `allowed_indexes` are the
    package indexes that are ours (PyPI and INDEX_URL by default)."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    lines = read_lines(path, root)
    allowed = {_index_key(u) for u in (allowed_indexes if allowed_indexes is not None else default_indexes())}
    torch_lines, other_indexes = [], []
    for line in lines:
        index = _INDEX.match(line.text)
        if index:
            if _index_key(index.group(2)) not in allowed:
                other_indexes.append((line, index.group(2).strip()))
            continue
        if line.text.startswith("-") and not _EDITABLE.match(line.text):
            continue  # other pip options (--prefer-binary, --no-binary ...) install nothing by themselves
        name, req, from_url = _protected_name(line.text)
        if name is None:
            continue
        if req is not None and req.marker is not None and not req.marker.evaluate():
            continue  # for another platform or Python
        torch_lines.append((line, name))
        have = installed(name)
        if from_url:
            raise ValueError(f"{line.where(root)} installs {name} from a URL or file, which would replace the installed "
                             f"{name} {have or '(none)'}; the web UI needs the {name} it has. Remove that line.")
        if have is None or req is None or not req.specifier:
            continue
        try:
            fits = req.specifier.contains(Version(have), prereleases=True)
        except InvalidVersion:
            fits = True
        if not fits:
            raise ValueError(f"{line.where(root)} would replace {name} {have} (it asks for {name}{req.specifier}); "
                             f"the web UI needs the {name} it has. Remove or loosen that line.")
    if torch_lines and other_indexes:
        (line, url), (torch_line, name) = other_indexes[0], torch_lines[0]
        raise ValueError(f"{line.where(root)} points pip at another package index ({url}) while {torch_line.where(root)} "
                         f"asks for {name}: that could install a different {name} build. Remove the index line.")
    return lines


def unmet(lines: list[Line], installed: Callable[[str], str | None] = installed_version) -> list[Line]:
    """The requirement lines not satisfied by what is installed (URL, path and editable lines
    always count as unmet), so pip runs only when something is missing."""
    missing = []
    for line in lines:
        if line.text.startswith("-") and not _EDITABLE.match(line.text):
            continue
        try:
            req = Requirement(_without_options(line.text))
        except InvalidRequirement:
            missing.append(line)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = installed(req.name)
        try:
            fits = have is not None and not req.url and (not req.specifier or req.specifier.contains(Version(have), prereleases=True))
        except InvalidVersion:
            fits = False
        if not fits:
            missing.append(line)
    return missing


def protected_pins(installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """Constraint lines (`torch==2.14.1`) for a pip run: a dependency that wants another torch
    then makes pip fail instead of replacing it."""
    return [f"{name}=={version}" for name in PROTECTED if (version := installed(name))]


def default_indexes() -> tuple[str, ...]:
    """PyPI, and INDEX_URL when the owner set one (launch.py's pip calls use it too)."""
    extra = os.environ.get("INDEX_URL")
    return DEFAULT_INDEXES + ((extra,) if extra else ())


def _index_key(url: str) -> str:
    return url.strip().rstrip("/").lower()
