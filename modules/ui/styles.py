"""A1111's prompt styles beside Generate: pick styles to apply, write them into the prompts, and
edit them (✎: create, overwrite, rename, delete) in styles.csv through the StyleStore.

The handlers (`save_style`, `rename_style`, `delete_style`) are plain functions over a store,
so they are tested without a page; `build_styles` wires them to the controls. Each tab's editor
bumps a hidden counter after a change, and the tabs' menus listen to each other's counters, so
a style made in txt2img shows in img2img's menu too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import gradio as gr

from modules.generation.styles import PromptStyle, ReadOnlyStylesFile, apply_style_text

if TYPE_CHECKING:
    from modules.generation.styles import StyleStore
    from modules.jobs.generation_task import GenerationService

VERSION_SUFFIX = "_styles_edit_version"  # elem_id tail of each tab's change counter
MENU_SUFFIX = "_styles"  # elem_id tail of each tab's Styles menu

# The editor floats over the page (A1111's popup dialog): the column beside Generate is narrow.
STYLES_CSS = """
.styles-edit-dialog { position: fixed !important; top: 8vh; left: 50%; transform: translateX(-50%); z-index: 1000;
  width: min(760px, 94vw) !important; max-height: 84vh; overflow-y: auto; padding: 1em !important;
  background: var(--background-fill-primary); border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  box-shadow: 0 12px 40px rgba(0, 0, 0, 0.35); }
"""

# Delete asks first, as A1111 does; an answer of "no" sends an empty name, which does nothing.
CONFIRM_DELETE_JS = """
(name, chosen, count) => {
  if (!name) return ["", chosen, count];
  const ask = (typeof window.getTranslation === 'function' && window.getTranslation('Delete this style?')) || 'Delete this style?';
  return [confirm(ask + '\\n\\n' + name) ? name : "", chosen, count];
}
"""


def _names(store: "StyleStore | None") -> list[str]:
    return list(store.names) if store is not None else []


def _need_store(store: "StyleStore | None") -> "StyleStore":
    if store is None:
        raise gr.Error("No styles file is configured.")
    return store


def _write_error(exc: Exception) -> gr.Error:
    if isinstance(exc, ReadOnlyStylesFile):
        return gr.Error(f"The styles file {exc.path} is read-only. Nothing was changed.")
    return gr.Error(f"Could not save the style: {exc}")


def _vanished(name: str) -> gr.Error:
    return gr.Error(f"The style '{name}' is no longer in the styles file: it was deleted or renamed meanwhile.")


def save_style(store: "StyleStore | None", name: str | None, prompt: str | None, negative: str | None) -> str:
    """Create the style, or overwrite the one of that name (in the file it came from)."""
    store = _need_store(store)
    name = (name or "").strip()
    if not name:
        raise gr.Error("Give the style a name first.")
    try:
        store.save(PromptStyle(name, prompt or "", negative or ""))
    except (OSError, ValueError) as exc:
        raise _write_error(exc) from None
    gr.Info(f"Saved style '{name}'.")
    return name


def rename_style(store: "StyleStore | None", old: str | None, new: str | None) -> str:
    """Rename in place: the prompts stay, and no copy is left under the old name."""
    store = _need_store(store)
    old, new = (old or "").strip(), (new or "").strip()
    if not old:
        raise gr.Error("Pick the style to rename first.")
    if not new:
        raise gr.Error("Type the style's new name first.")
    if store.get(old) is None:
        raise _vanished(old)
    if new != old and store.get(new) is not None:
        raise gr.Error(f"A style named '{new}' exists already: pick another name, or delete that style first.")
    try:
        store.rename(old, new)
    except (OSError, ValueError) as exc:
        raise _write_error(exc) from None
    gr.Info(f"Renamed style '{old}' to '{new}'.")
    return new


def delete_style(store: "StyleStore | None", name: str | None) -> bool:
    """Delete the style; an empty name (the user said no) does nothing and returns False."""
    name = (name or "").strip()
    if not name:
        return False
    store = _need_store(store)
    if store.get(name) is None:
        raise _vanished(name)
    try:
        store.delete(name)
    except (OSError, ValueError) as exc:
        raise _write_error(exc) from None
    gr.Info(f"Deleted style '{name}'.")
    return True


def kept_choices(chosen: Sequence[str] | None, names: Sequence[str], renamed: tuple[str, str] | None = None) -> list[str]:
    """The menu's picked styles after a change: a renamed one under its new name, a deleted one gone."""
    old, new = renamed or (None, None)
    kept = [new if c == old else c for c in (chosen or [])]
    return [c for c in dict.fromkeys(kept) if c in names]


def _link_menus(menu: gr.Dropdown, version: gr.Number, store: "StyleStore | None") -> None:
    """Refresh this tab's menu when another tab's editor changes a style, and theirs when ours
    does. The tab built later wires both ways, finding the earlier tabs by elem_id."""
    from gradio.context import get_blocks_context

    config = get_blocks_context()
    if config is None:
        return

    def refresh(chosen):
        names = _names(store)
        return gr.update(choices=names, value=kept_choices(chosen, names))

    for block in list(config.blocks.values()):
        elem_id = getattr(block, "elem_id", None) or ""
        if block is version or not elem_id.endswith(VERSION_SUFFIX):
            continue
        menu_id = elem_id[: -len(VERSION_SUFFIX)] + MENU_SUFFIX
        other = next((b for b in config.blocks.values() if getattr(b, "elem_id", None) == menu_id), None)
        if other is None:
            continue
        block.change(refresh, menu, menu, queue=False, api_name=False, show_progress="hidden")
        version.change(refresh, other, other, queue=False, api_name=False, show_progress="hidden")


def build_styles(prefix: str, service: "GenerationService", prompt: gr.Textbox, negative: gr.Textbox) -> gr.Dropdown:
    """A1111's styles: the selected ones are applied when generating; 📋 writes them into the
    prompts instead; ✎ opens the styles editor."""
    store = service.libraries.styles

    styles = gr.Dropdown(_names(store), value=[], multiselect=True, label="Styles", elem_id=f"{prefix}_styles")
    with gr.Row():
        apply = gr.Button("📋", elem_id=f"{prefix}_style_apply", size="sm", min_width=40)
        refresh = gr.Button("🔄", elem_id=f"{prefix}_style_refresh", size="sm", min_width=40)
        edit = gr.Button("✎", elem_id=f"{prefix}_styles_edit_button", size="sm", min_width=40)
    with gr.Column(visible=False, elem_id=f"{prefix}_styles_edit_box", elem_classes=["styles-edit-dialog"]) as box:
        select = gr.Dropdown(
            _names(store), value=None, allow_custom_value=True, label="Style", elem_id=f"{prefix}_styles_edit_select",
            info="Pick a style to edit, or type a new name. Put {prompt} in a style's text where the prompt goes; "
                 "without it, the style's text is added at the end of the prompt.",
        )
        style_prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{prefix}_styles_edit_prompt")
        style_negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_styles_edit_neg_prompt")
        with gr.Row():
            copy = gr.Button("📝 Copy from prompt", elem_id=f"{prefix}_styles_edit_copy", size="sm")
            use = gr.Button("Apply to the prompt", elem_id=f"{prefix}_styles_edit_apply", size="sm")
        with gr.Row(equal_height=True):
            new_name = gr.Textbox(label="New name", elem_id=f"{prefix}_styles_edit_new_name", scale=3)
            rename = gr.Button("Rename", elem_id=f"{prefix}_styles_edit_rename", scale=1)
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id=f"{prefix}_styles_edit_save")
            delete = gr.Button("Delete", variant="stop", elem_id=f"{prefix}_styles_edit_delete")
            close = gr.Button("Close", elem_id=f"{prefix}_styles_edit_close")
        version = gr.Number(0, visible="hidden", elem_id=f"{prefix}{VERSION_SUFFIX}")
    for control in (select, style_prompt, style_negative, new_name, version):
        control.do_not_save_to_config = True  # ui-config.json keeps no editor state (A1111's mark)

    def apply_styles(text: str, neg: str, chosen: list[str]):
        if store is None or not chosen:
            return gr.update(), gr.update(), gr.update()
        try:
            text, neg = store.apply(text, neg, chosen)
        except ValueError as exc:
            raise gr.Error(str(exc)) from None
        return text, neg, gr.update(value=[])

    def open_editor(chosen: list[str]):
        names = _names(store)
        return gr.update(visible=True), gr.update(choices=names), gr.update(choices=names, value=kept_choices(chosen, names))

    def pick(name: str | None):
        """An existing style fills the fields; a new name keeps what is typed (to save it as new)."""
        style = store.get(name) if store is not None and name else None
        if style is None:
            return gr.update(), gr.update(), gr.update()
        return style.prompt, style.negative_prompt, style.name

    def changed(selected: str | None, chosen: list[str], count, renamed: tuple[str, str] | None = None) -> list:
        names = _names(store)
        return [gr.update(choices=names, value=selected), gr.update(choices=names, value=kept_choices(chosen, names, renamed)),
                int(count or 0) + 1]

    def do_save(name, text, neg, chosen, count):
        saved = save_style(store, name, text, neg)
        return [*changed(saved, chosen, count), saved]

    def do_rename(old, new, chosen, count):
        renamed = rename_style(store, old, new)
        return [*changed(renamed, chosen, count, (old, renamed)), renamed]

    def do_delete(name, chosen, count):
        if not delete_style(store, name):
            return [gr.update()] * 6
        return [*changed(None, chosen, count), "", "", ""]

    edited = [select, styles, version]
    apply.click(apply_styles, [prompt, negative, styles], [prompt, negative, styles], queue=False, api_name=False)
    refresh.click(lambda chosen: gr.update(choices=_names(store), value=kept_choices(chosen, _names(store))), styles, styles,
                  queue=False, api_name=False)
    edit.click(open_editor, styles, [box, select, styles], queue=False, api_name=False)
    close.click(lambda: gr.update(visible=False), None, box, queue=False, api_name=False)
    select.change(pick, select, [style_prompt, style_negative, new_name], queue=False, api_name=False, show_progress="hidden")
    copy.click(lambda text, neg: (text, neg), [prompt, negative], [style_prompt, style_negative], queue=False, api_name=False)
    use.click(lambda st, sn, text, neg: (apply_style_text(st or "", text or ""), apply_style_text(sn or "", neg or "")),
              [style_prompt, style_negative, prompt, negative], [prompt, negative], queue=False, api_name=False)
    save.click(do_save, [select, style_prompt, style_negative, styles, version], [*edited, new_name], concurrency_limit=None, api_name=False)
    rename.click(do_rename, [select, new_name, styles, version], [*edited, new_name], concurrency_limit=None, api_name=False)
    delete.click(do_delete, [select, styles, version], [*edited, style_prompt, style_negative, new_name], js=CONFIRM_DELETE_JS,
                 concurrency_limit=None, api_name=False)
    _link_menus(styles, version, store)
    return styles
