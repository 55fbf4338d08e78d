"""What the enabled extensions brought, once loaded: their scripts (selectable and always-on),
callbacks, settings, page JavaScript and CSS, and the errors of those that did not load."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

from modules.extensions import callbacks as cb
from modules.extensions.hook_scripts import AlwaysVisible, Script, SelectableScript, script_title, shows, ui_args
from modules.extensions.layout import Extension
from modules.scripts.base import Script as QueueScript

log = logging.getLogger(__name__)

KINDS = ("txt2img", "img2img")


@dataclass
class LoadedExtensions:
    extensions: list[Extension]
    errors: dict[str, str] = field(default_factory=dict)  # extension name -> why it is off (traceback)
    callbacks: cb.Callbacks = field(default_factory=cb.Callbacks)
    settings: list = field(default_factory=list)  # modules.settings.Setting added by extensions
    loaded_names: list[str] = field(default_factory=list)
    queue_scripts: list[QueueScript] = field(default_factory=list)
    hook_scripts: list[Script] = field(default_factory=list)  # A1111-style, those whose title() and ui() worked at start

    def add(self, extension: Extension, scripts: list, callbacks: cb.Callbacks, settings: list) -> None:
        """A loaded extension's parts (the loader calls this only when all its scripts imported)."""
        self.loaded_names.append(extension.name)
        for script in scripts:
            (self.queue_scripts if isinstance(script, QueueScript) else self.hook_scripts).append(script)
        for kind, items in callbacks.by_kind.items():
            self.callbacks.by_kind[kind].extend(items)
        self.settings.extend(settings)

    def by_name(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)

    def run_ui_settings(self) -> None:
        """Each on_ui_settings callback, inside its extension's registration context (add_setting works there)."""
        for item in self.callbacks.of("ui_settings"):
            extension = self.by_name(item.extension)
            added: list = []
            try:
                with cb.loading(item.extension, self.callbacks, added, extension.path if extension else None):
                    item.fn()
            except Exception:
                self.callbacks.failed(item.extension, "on_ui_settings")
                continue
            self.settings.extend(added)

    # ------------------------------------------------------------------ scripts

    def describe_scripts(self) -> None:
        """Call each A1111-style script's title(), show() and ui() once per tab now, at start on the
        main thread, and keep the arguments ui() describes: a job or an API request never calls
        ui() (gradio's page-building state is process-wide). A script whose title or ui() fails
        is left out, with its traceback in the Extensions tab."""
        usable = []
        for script in self.hook_scripts:
            try:
                script_title(script)
                for kind in KINDS:
                    if shows(script, kind == "img2img") in (True, AlwaysVisible):
                        ui_args(script, kind == "img2img")
            except Exception:
                text = self.callbacks.failed(script.extension, f"{type(script).__name__} (title or ui)")
                self.errors.setdefault(script.extension, text)
                continue
            usable.append(script)
        self.hook_scripts = usable

    def selectable(self) -> list[QueueScript]:
        """The Script menu's extension scripts in load order: queue scripts as they are, A1111-style
        ones whose show() is True on a tab wrapped to run as a queue script."""
        out: list[QueueScript] = list(self.queue_scripts)
        for script in self.hook_scripts:
            on = {kind: shows(script, kind == "img2img") for kind in KINDS}
            if any(v is True for v in on.values()):
                out.append(SelectableScript(script, on["txt2img"] is True, on["img2img"] is True))
        return out

    def alwayson(self, kind: str) -> list[Script]:
        """The always-on scripts of a tab ("txt2img" or "img2img"), in load order."""
        return [s for s in self.hook_scripts if shows(s, kind == "img2img") is AlwaysVisible]

    def find_alwayson(self, title: str, kind: str) -> Script:
        """The always-on script titled `title` (any case) on that tab; ValueError naming the choices."""
        wanted = str(title).strip().lower()
        for script in self.alwayson(kind):
            if script_title(script).lower() == wanted:
                return script
        names = ", ".join(f"'{script_title(s)}'" for s in self.alwayson(kind)) or "none"
        raise ValueError(f"alwayson_scripts: no always-on script titled '{title}' for {kind}. Always-on scripts for {kind}: {names}.")

    def alwayson_defaults(self, script: Script, img2img: bool) -> list[Any]:
        return [a.default for a in ui_args(script, img2img)]

    def describe_alwayson(self) -> list[dict]:
        """A1111's /script-info entries of the always-on scripts (name in lower case, is_alwayson)."""
        info = []
        for kind in KINDS:
            for script in self.alwayson(kind):
                args = [a.describe() for a in ui_args(script, kind == "img2img")]
                info.append({"name": script_title(script).lower(), "is_alwayson": True, "is_img2img": kind == "img2img", "args": args})
        return info

    # ------------------------------------------------------------------ page

    def _enabled(self) -> list[Extension]:
        return [e for e in self.extensions if e.name in self.loaded_names or (e.enabled and not e.scripts and e.name not in self.errors)]

    def head(self) -> str:
        """<script> elements with every enabled extension's javascript/*.js, in load order."""
        parts = []
        for extension in self._enabled():
            for path in extension.javascript:
                try:
                    code = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    log.error("Extension '%s': cannot read %s: %s", extension.name, path.name, exc)
                    continue
                source = html.escape(f"{extension.name}/javascript/{path.name}", quote=True)
                code = code.replace("</script", "<\\/script")  # the file cannot end the element early
                parts.append(f'<script data-extension-file="{source}">\n{code}\n</script>')
        return "\n".join(parts)

    def css(self) -> str:
        """Every enabled extension's style.css, appended to the page's CSS."""
        parts = []
        for extension in self._enabled():
            if extension.style is not None:
                try:
                    parts.append(f"/* {extension.name}/style.css */\n" + extension.style.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError) as exc:
                    log.error("Extension '%s': cannot read style.css: %s", extension.name, exc)
        return "\n".join(parts)

