"""A1111's Extra networks under the prompt: tabs of cards for Textual Inversion, Checkpoints, Lora
and VAE, each with its preview picture, description and trigger words. A click on a LoRA or
embedding card adds its tag to the prompt (a second click takes it out again); a click on a
checkpoint or VAE card selects it in the page's top menus. 🛠 on a card edits its user metadata
(`<name>.json`) and can make the tab's selected output its preview.

The cards are rendered here as HTML (names escaped, user data marked `notranslate`); a click in
the browser becomes a `use` or `edit` event with the card's kind and key, handled in Python, so
the prompt rules below are plain functions. The card data comes from modules/models/network_cards.py;
the pictures from the route in modules/ui/network_previews.py.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

import gradio as gr

from modules.models.network_cards import KINDS, ORDERS, SORT_FIELDS, NetworkCard, NetworkCards, save_preview, search, sort_cards, write_user_metadata

if TYPE_CHECKING:
    from modules.jobs.generation_task import GenerationService
    from modules.ui.common import Quicksettings

PREVIEW_ROUTE = "extra-networks/thumb"  # relative to the page, so a --subpath page finds it too
PROMPT_KINDS = ("lora", "textual_inversion")  # a click edits the prompt; the other kinds select a model

# A click anywhere on a card: 🛠 opens its editor, elsewhere it is used. One listener on the
# component, so cards rendered later (search, refresh) need nothing of their own.
CARDS_JS = """
const fire = (event) => {
    const card = event.target.closest('.extra-network-card');
    if (!card || !element.contains(card)) return;
    const data = {kind: card.dataset.kind, name: card.dataset.name};
    if (event.target.closest('.card-edit')) trigger('edit', data); else trigger('use', data);
};
element.addEventListener('click', fire);
element.addEventListener('keydown', (event) => {  // a focused card (its 🛠 is a button of its own)
    if (event.target.classList.contains('extra-network-card') && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        fire(event);
    }
});
"""

CARDS_CSS = """
.extra-network-cards { display: flex; flex-wrap: wrap; gap: 8px; max-height: 480px; overflow-y: auto; padding: 2px; }
.extra-network-card { position: relative; width: 160px; height: 220px; border-radius: 8px; overflow: hidden; cursor: pointer;
  background: var(--neutral-200, #ddd); box-shadow: 0 0 0 1px var(--border-color-primary, #ccc); }
.extra-network-card:hover, .extra-network-card:focus { box-shadow: 0 0 0 2px var(--color-accent, #f97316); outline: none; }
.extra-network-card .card-preview { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: cover; }
.extra-network-card .card-placeholder { position: absolute; inset: 0; background: linear-gradient(135deg, #9ca3af, #4b5563); }
.extra-network-card .card-edit { position: absolute; top: 4px; right: 4px; border: none; border-radius: 4px; padding: 0 4px;
  background: rgba(0, 0, 0, .55); color: white; cursor: pointer; font-size: 15px; }
.extra-network-card .card-text { position: absolute; left: 0; right: 0; bottom: 0; padding: 6px; color: white;
  background: linear-gradient(transparent, rgba(0, 0, 0, .85) 30%); font-size: 12px; line-height: 1.3; word-break: break-word; }
.extra-network-card .card-name, .extra-network-card .card-alias, .extra-network-card .card-description { color: white; }
.extra-network-card .card-name { font-weight: bold; font-size: 14px; }
.extra-network-card .card-alias { opacity: .8; }
.extra-network-card .card-description, .extra-network-card .card-trigger { max-height: 4em; overflow: hidden; }
.extra-network-card .card-trigger { color: #fde68a; }
.extra-network-card .card-error { color: #fca5a5; }
.extra-network-empty { padding: 8px; opacity: .8; }
"""


# --------------------------------------------------------------------------- the prompt rules


def append_to_prompt(text: str, addition: str) -> str:
    """`addition` at the end of the prompt; on a new line when the last line ends in a `#`
    comment, which would otherwise swallow it."""
    text = (text or "").rstrip()
    if not text:
        return addition
    separator = "\n" if "#" in text.rsplit("\n", 1)[-1] else " "
    return f"{text}{separator}{addition}"


def remove_from_prompt(text: str, start: int, end: int) -> str:
    """The prompt without `text[start:end]`, the spaces around the cut joined into one."""
    before, after = text[:start].rstrip(" \t"), text[end:].lstrip(" \t")
    if not after.strip(" ,"):  # nothing after the cut: no comma dangling at the end either
        before, after = before.rstrip(" \t,"), ""
    if not before.strip(" ,"):
        before, after = "", after.lstrip(" \t,")
    joint = " " if before and after and not before.endswith("\n") and not after.startswith(("\n", ",")) else ""
    return (before + joint + after).rstrip()


def _find_lora(text: str, names: tuple[str, ...]) -> re.Match | None:
    """The first `<lora:NAME:…>` (any weight) for any of `names`."""
    for name in names:
        found = re.search(rf"<lora:{re.escape(name)}(?::[^>]*)?>", text)
        if found:
            return found
    return None


def _find_word(text: str, word: str) -> re.Match | None:
    """`word` standing alone between spaces or commas (as a click adds it), not inside a longer word."""
    return re.search(rf"(?<![^\s,]){re.escape(word)}(?![^\s,])", text) if word else None


def toggle_card(prompt: str, negative: str, card: NetworkCard, default_multiplier: float) -> tuple[str, str]:
    """A1111's card click: add the card's text to the prompt (and its negative text to the
    negative prompt); if the prompt already has the card's tag, take it (with its activation
    text and negative text) out instead."""
    prompt, negative = prompt or "", negative or ""
    if card.kind == "lora":
        found = _find_lora(prompt, tuple(n for n in (card.alias, card.name) if n))
    else:
        found = _find_word(prompt, card.name)
    if found is None:
        prompt = append_to_prompt(prompt, card.prompt_text(default_multiplier))
        if card.negative_text and _find_word(negative, card.negative_text) is None:
            negative = append_to_prompt(negative, card.negative_text)
        return prompt, negative
    end = found.end()
    if card.kind == "lora" and card.activation_text:
        trailing = re.match(rf"[ \t]*{re.escape(card.activation_text)}(?![^\s,])", prompt[end:])  # not the start of a longer word
        end += trailing.end() if trailing else 0
    prompt = remove_from_prompt(prompt, found.start(), end)
    negative_found = _find_word(negative, card.negative_text)
    if negative_found is not None:
        negative = remove_from_prompt(negative, *negative_found.span())
    return prompt, negative


# --------------------------------------------------------------------------- the cards as HTML


def _attr(value: Any) -> str:
    """Escaped for HTML, and for the template gr.HTML fills in (`${…}`, `{{…}}` stay text)."""
    return html.escape(str(value), quote=True).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def preview_url(card: NetworkCard) -> str | None:
    if card.preview is None:
        return None
    try:
        version = card.preview.stat().st_mtime_ns
    except OSError:
        return None
    return f"{PREVIEW_ROUTE}?{urlencode({'kind': card.kind, 'name': card.name, 'v': version})}"


def card_html(card: NetworkCard) -> str:
    url = preview_url(card)
    picture = (f"<img class='card-preview' src='{_attr(url)}' loading='lazy' alt=''>" if url
               else "<div class='card-placeholder'></div>")
    lines = [f"<div class='card-name notranslate'>{_attr(card.name)}</div>"]
    if card.alias:
        lines.append(f"<div class='card-alias notranslate'>{_attr(card.alias)}</div>")
    if card.error:
        lines.append(f"<div class='card-error'>{_attr(card.error)}</div>")
    if card.description:
        lines.append(f"<div class='card-description notranslate'>{_attr(card.description)}</div>")
    trigger = card.activation_text or ", ".join(card.trained.tags)
    if trigger:
        lines.append(f"<div class='card-trigger notranslate'>{_attr(trigger)}</div>")
    return (f"<div class='extra-network-card' tabindex='0' role='button' data-kind='{_attr(card.kind)}' data-name='{_attr(card.name)}'>"
            f"{picture}<button class='card-edit' title='Edit metadata'>🛠</button>"
            f"<div class='card-text'>{''.join(lines)}</div></div>")


def cards_html(kind: str, cards: list[NetworkCard], folders: tuple[Path, ...], searched: bool) -> str:
    if cards:
        return f"<div class='extra-network-cards' data-kind='{_attr(kind)}'>{''.join(card_html(c) for c in cards)}</div>"
    if searched:
        return "<div class='extra-network-empty'>No cards match the search.</div>"
    where = "".join(f"<li class='notranslate'>{_attr(folder)}</li>" for folder in folders)
    return f"<div class='extra-network-empty'><p>Nothing here. Add some content to the following directories:</p><ul>{where}</ul></div>"


# --------------------------------------------------------------------------- the panel


@dataclass
class ExtraNetworks:
    """One tab's cards and editor. `wire_output` gives "Replace preview" the tab's output
    gallery once that exists (it is built after the prompt)."""

    cards: NetworkCards
    settings: Callable[[], dict]
    service: "GenerationService"
    htmls: dict[str, gr.HTML]
    search: gr.Textbox
    sort: gr.Dropdown
    order: gr.Dropdown
    editing: gr.State  # [kind, key] of the card whose editor is open
    replace: Any = None  # gr.Button "Replace preview"
    refresh: Any = None  # gr.Button 🔄

    def folders(self, kind: str) -> tuple[Path, ...]:
        libs = self.service.libraries
        library = {"lora": libs.loras, "textual_inversion": libs.embeddings, "vae": libs.vaes}.get(kind)
        if kind == "checkpoints":
            return tuple(self.service.models.ckpt_dirs) if self.service.models is not None else ()
        return tuple(library.dirs) if library is not None else ()

    def default_order(self) -> tuple[str, str]:
        return card_order(self.settings())

    def render(self, kind: str, query: str = "", field_name: str | None = None, order: str | None = None,
               rescan: bool = False) -> str:
        default_field, default_order = self.default_order()
        shown = sort_cards(search(self.cards.cards(kind, rescan), query), field_name or default_field, order or default_order)
        return cards_html(kind, shown, self.folders(kind), bool((query or "").strip()))

    def render_all(self, query: str, field_name: str, order: str, rescan: bool = False) -> list[str]:
        return [self.render(kind, query, field_name, order, rescan) for kind in self.htmls]

    def wire_output(self, gallery: gr.Gallery, selected: gr.State) -> None:
        """Replace preview writes the gallery's selected picture as the edited card's preview."""

        def replace(editing, pictures, index, query, field_name, order):
            path = self._editing_path(editing)
            if path is None:
                return [gr.update()] * len(self.htmls)
            image = selected_picture(pictures, index)
            if image is None:
                gr.Warning("No output to use as the preview: generate a picture first.")
                return [gr.update()] * len(self.htmls)
            try:
                save_preview(path, image)
            except ValueError as exc:
                gr.Warning(str(exc))
                return [gr.update()] * len(self.htmls)
            return self.render_all(query, field_name, order)

        self.replace.click(replace, [self.editing, gallery, selected, self.search, self.sort, self.order], list(self.htmls.values()),
                           concurrency_limit=None, api_name=False)  # queued: gr.Warning only shows from queued events

    def _editing_path(self, editing) -> Path | None:
        kind, key = (editing or [None, None])[:2]
        path = self.cards.path_of(kind, key) if kind in KINDS else None
        if path is None:
            gr.Warning("That file is gone: press 🔄 to refresh the cards.")
        return path


def card_order(values: dict) -> tuple[str, str]:
    """A1111's extra_networks_card_order_field and extra_networks_card_order, checked."""
    field_name = values.get("extra_networks_card_order_field", "Path")
    order = values.get("extra_networks_card_order", "Ascending")
    return (field_name if field_name in SORT_FIELDS else "Path"), (order if order in ORDERS else "Ascending")


def selected_picture(pictures, index) -> Any:
    """The gallery entry `index` (its first when out of range) as a PIL image, or None."""
    from PIL import Image

    if not pictures:
        return None
    entry = pictures[index] if isinstance(index, int) and 0 <= index < len(pictures) else pictures[0]
    picture = entry[0] if isinstance(entry, (tuple, list)) else entry
    if isinstance(picture, dict):  # a gallery value that was not preprocessed
        picture = picture.get("path") or (picture.get("image") or {}).get("path")
    try:
        if isinstance(picture, (str, Path)):
            with Image.open(picture) as image:
                return image.copy()
        if isinstance(picture, Image.Image):
            return picture.copy()
        if picture is not None:
            import numpy as np

            return Image.fromarray(np.asarray(picture))
    except (OSError, ValueError, TypeError):
        return None
    return None


def build_extra_networks(prefix: str, service: "GenerationService", prompt: gr.Textbox, negative: gr.Textbox,
                         quick: "Quicksettings") -> ExtraNetworks:
    """The Extra networks accordion under the prompts."""
    cards = quick.cards or NetworkCards(service.libraries, service.models)
    settings = lambda: dict(getattr(service, "settings_values", dict)() or {})  # noqa: E731 (config.json now)
    htmls: dict[str, gr.HTML] = {}
    with gr.Accordion("Extra networks", open=False, elem_id=f"{prefix}_extra_networks"):
        with gr.Row(equal_height=True):
            search_box = gr.Textbox(label="Search", placeholder="Search", elem_id=f"{prefix}_extra_search", scale=4, show_label=False,
                                    container=False)
            # Callable values: each page load starts from the settings' order, as the cards do.
            sort = gr.Dropdown(list(SORT_FIELDS), value=lambda: card_order(settings())[0], label="Sort by", elem_id=f"{prefix}_extra_sort",
                               scale=1, show_label=False, container=False)
            order = gr.Dropdown(list(ORDERS), value=lambda: card_order(settings())[1], label="Sort order", elem_id=f"{prefix}_extra_order",
                                scale=1, show_label=False, container=False)
            refresh = gr.Button("🔄", elem_id=f"{prefix}_extra_refresh", size="sm", scale=0, min_width=40)
        panel = ExtraNetworks(cards, settings, service, htmls, search_box, sort, order, gr.State(None), refresh=refresh)
        with gr.Tabs(elem_id=f"{prefix}_extra_tabs"):
            for kind, label in KINDS.items():
                with gr.Tab(label, id=f"{prefix}_extra_{kind}"):
                    # A callable value renders again at each page load, so files added meanwhile appear.
                    htmls[kind] = gr.HTML(lambda kind=kind: panel.render(kind, rescan=kind != "checkpoints"), elem_id=f"{prefix}_{kind}_cards",
                                          js_on_load=CARDS_JS, css_template=CARDS_CSS, padding=False)
        with gr.Group(visible=False, elem_id=f"{prefix}_extra_editor") as editor:
            heading = gr.HTML(elem_id=f"{prefix}_extra_editor_name")
            description = gr.Textbox(label="Description", lines=3, elem_id=f"{prefix}_extra_description")
            activation = gr.Textbox(label="Activation text", info="Will be added to prompt along with the tag.",
                                    elem_id=f"{prefix}_extra_activation")
            # A number, not a slider: a negative weight (<lora:x:-1>) or one above 2 is a user's real choice.
            weight = gr.Number(value=0, step=0.05, label="Preferred weight", info="Set to 0 to use the default multiplier.",
                               elem_id=f"{prefix}_extra_weight")
            negative_text = gr.Textbox(label="Negative prompt", info="Will be added to negative prompts.",
                                       elem_id=f"{prefix}_extra_negative_text")
            notes = gr.Textbox(label="Notes", lines=3, elem_id=f"{prefix}_extra_notes")
            with gr.Row():
                replace = gr.Button("Replace preview", elem_id=f"{prefix}_extra_replace_preview")
                save = gr.Button("Save", variant="primary", elem_id=f"{prefix}_extra_save")
                cancel = gr.Button("Cancel", elem_id=f"{prefix}_extra_cancel")
    panel.replace = replace
    outputs_all = list(htmls.values())
    ordering = [search_box, sort, order]

    search_box.input(panel.render_all, ordering, outputs_all, queue=False, api_name=False, trigger_mode="always_last")
    for control in (sort, order):
        control.input(panel.render_all, ordering, outputs_all, queue=False, api_name=False)
    refresh.click(lambda q, f, o: panel.render_all(q, f, o, rescan=True), ordering, outputs_all, queue=False, api_name=False)

    targets = [prompt, negative] + [c for c in (quick.checkpoint, quick.vae) if c is not None]

    def use(prompt_text: str, negative_text_value: str, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        updates = [gr.update()] * len(targets)
        card = cards.card(data.get("kind"), data.get("name")) if data.get("kind") in KINDS else None
        if card is None:
            gr.Warning("That file is gone: press 🔄 to refresh the cards.")
            return updates
        if card.kind in PROMPT_KINDS:
            multiplier = settings().get("extra_networks_default_multiplier")
            multiplier = float(multiplier) if isinstance(multiplier, (int, float)) else 1.0
            return [*toggle_card(prompt_text, negative_text_value, card, multiplier), *updates[2:]]
        menu = quick.checkpoint if card.kind == "checkpoints" else quick.vae
        if menu is None:
            return updates
        updates[targets.index(menu)] = _menu_update(service, card)
        return updates

    def edit(evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        card = cards.card(data.get("kind"), data.get("name")) if data.get("kind") in KINDS else None
        if card is None:
            gr.Warning("That file is gone: press 🔄 to refresh the cards.")
            return [gr.update()] * 8
        lora, prompts = card.kind == "lora", card.kind in PROMPT_KINDS
        user = card.user
        return [
            gr.update(visible=True), f"<h3 class='notranslate'>{_attr(card.relative)}</h3>",
            gr.update(value=_plain(user.get("description"))),
            gr.update(value=_plain(user.get("activation text")), visible=lora),
            gr.update(value=card.preferred_weight, visible=lora),
            gr.update(value=_plain(user.get("negative text")), visible=prompts),
            gr.update(value=_plain(user.get("notes"))),
            [card.kind, card.name],
        ]

    editor_fields = [editor, heading, description, activation, weight, negative_text, notes, panel.editing]
    for html_component in htmls.values():
        html_component.use(use, [prompt, negative], targets, concurrency_limit=None, api_name=False)  # queued: gr.Warning
        html_component.edit(edit, None, editor_fields, concurrency_limit=None, api_name=False)

    def save_metadata(editing, description_text, activation_text, preferred, negative_value, notes_text, query, field_name, order_name):
        path = panel._editing_path(editing)
        if path is None:
            return [gr.update()] * (len(htmls) + 1)
        kind = editing[0]
        values = {"description": description_text or "", "notes": notes_text or ""}
        if kind == "lora":
            values.update({"activation text": activation_text or "", "preferred weight": float(preferred or 0)})
        if kind in PROMPT_KINDS:
            values["negative text"] = negative_value or ""
        try:
            write_user_metadata(path, values)
        except ValueError as exc:
            gr.Warning(str(exc))
            return [gr.update()] * (len(htmls) + 1)
        return [*panel.render_all(query, field_name, order_name), gr.update(visible=False)]

    save.click(save_metadata, [panel.editing, description, activation, weight, negative_text, notes, *ordering], [*outputs_all, editor],
               concurrency_limit=None, api_name=False)
    cancel.click(lambda: gr.update(visible=False), None, editor, queue=False, api_name=False)
    return panel


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _menu_update(service: "GenerationService", card: NetworkCard) -> Any:
    """The top menu's update that selects the card's checkpoint or VAE (its `.change` does the rest)."""
    if card.kind == "checkpoints":
        info = service.models.find(card.name)
        return gr.update(choices=service.models.titles(), value=info.title) if info is not None else gr.update()
    vaes = service.libraries.vaes
    return gr.update(choices=vaes.choices(), value=card.name) if vaes is not None else gr.update()
