"""The page's language: which localization a page shows, the translator script that puts it
into the page, and the server-side translation of long Markdown.

The language is the `localization` setting, overridden per browser by `?localization=<name>`
in the page's address ("None": English). The page's HTML gets, at the top of its head (the
`LocalizedPage` middleware), the active strings and `navigator.language` set to the language,
before gradio's own script reads it: so gradio's built-in strings ("Drop Image Here", "Clear")
follow our setting from gradio's shipped translations. The translator then translates the
DOM's text nodes and placeholder/title/aria-label attributes by exact English match, and
keeps doing so as gradio renders (a MutationObserver); see TRANSLATOR_JS for its rules.

A long Markdown text (the demo model's guide) is translated here as a whole instead
(`localized_markdown`): per text node, its sentences would be split at every bold word.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from modules.localization import ENGLISH, Localizations, language_code
from modules.ui.page_request import PagePath

if TYPE_CHECKING:
    from modules.settings import SettingsStore

QUERY_PARAMETER = "localization"

# The translator. translateText is pure (strings, text) -> translated text or null, so tests drive it.
TRANSLATOR_JS = r"""
(() => {
  if (window.webuiLocalization) return;
  const SKIP_TAGS = new Set(['SCRIPT', 'STYLE', 'TEXTAREA', 'INPUT', 'SELECT', 'OPTION', 'CODE', 'PRE', 'NOSCRIPT', 'SVG']);
  // User data and values: never translated (dropdown lists and tokens are choices, captions and infotexts are the user's).
  const SKIP_SELECTOR = '.notranslate, .infotext, .options, .token, .wrap-inner, .caption, .caption-label, code, pre, [contenteditable="true"]';
  const ATTRIBUTES = ['placeholder', 'title', 'aria-label'];
  const SENTENCE_END = /([.!?:])(\s+)/g;
  let strings = {}, templates = [], hasStrings = false;
  let cache = new Map(), attrCache = new Map();  // English text -> what it shows (the page repeats many texts)
  const stats = { ms: 0, texts: 0 };  // time spent translating, for tests and curious users

  function compile(table) {
    const found = [];
    for (const [key, value] of Object.entries(table)) {
      if (!value || !/\{\d+\}/.test(key)) continue;
      const order = [];
      const source = key.split(/(\{\d+\})/).map((part) => {
        const m = /^\{(\d+)\}$/.exec(part);
        if (m) { order.push(Number(m[1])); return '([\\s\\S]+?)'; }
        return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      }).join('');
      found.push({ re: new RegExp('^' + source + '$'), order, value, literal: key.replace(/\{\d+\}/g, '').length });
    }
    return found.sort((a, b) => b.literal - a.literal);  // the most specific template first
  }

  function own(table, key) {  // the table's own entry, never Object.prototype's ("constructor")
    const value = Object.prototype.hasOwnProperty.call(table, key) ? table[key] : null;
    return typeof value === 'string' && value ? value : null;
  }

  function whole(table, compiled, text, pieceTable) {
    const exact = own(table, text);
    if (exact !== null) return exact;
    for (const t of compiled) {
      const m = t.re.exec(text);
      if (!m) continue;
      const pieces = {};
      // A piece is the user's value (a style or file name) and stays as it is, except where the caller
      // says the pieces are page strings too (an attribute's "number input for {0}", a block's notice).
      t.order.forEach((n, i) => { pieces[n] = (pieceTable && own(pieceTable, m[i + 1])) || m[i + 1]; });
      return t.value.replace(/\{(\d+)\}/g, (all, n) => (n in pieces ? pieces[n] : all));
    }
    return null;
  }

  // Exact match, then a template; else the longest runs of sentences that match, the rest kept as it is.
  function translateText(table, text, compiled, piecesAreLabels) {
    if (typeof text !== 'string') return null;
    const trimmed = text.trim();
    if (!trimmed || !/\p{L}/u.test(trimmed)) return null;  // numbers, emoji, punctuation: nothing to translate
    compiled = compiled || compile(table);
    const lead = text.slice(0, text.indexOf(trimmed)), tail = text.slice(text.indexOf(trimmed) + trimmed.length);
    const found = whole(table, compiled, trimmed, piecesAreLabels ? table : null);
    if (found !== null) return lead + found + tail;
    const parts = [];  // [sentence, separator after it]
    let last = 0, m;
    SENTENCE_END.lastIndex = 0;
    while ((m = SENTENCE_END.exec(trimmed)) !== null) {
      parts.push([trimmed.slice(last, m.index + 1), m[2]]);
      last = m.index + m[0].length;
    }
    parts.push([trimmed.slice(last), '']);
    if (parts.length < 2) return null;
    let out = '', changed = false;
    for (let i = 0; i < parts.length;) {
      let done = false;
      for (let j = parts.length; j > i && !done; j--) {
        if (i === 0 && j === parts.length) continue;  // the whole text was tried already
        let run = '';
        for (let k = i; k < j; k++) run += parts[k][0] + (k < j - 1 ? parts[k][1] : '');
        const t = whole(table, compiled, run);
        if (t !== null) { out += t + parts[j - 1][1]; i = j; done = changed = true; }
      }
      if (!done) { out += parts[i][0] + parts[i][1]; i += 1; }
    }
    return changed ? lead + out + tail : null;
  }

  // Markdown keys (inline markup, or several paragraphs): each paragraph or list item of the key is
  // matched against a block's whole text (markup stripped) and the block gets the translation, rendered.
  const BLOCK_TAGS = new Set(['P', 'LI', 'H1', 'H2', 'H3', 'H4', 'H5', 'H6', 'TD', 'TH']);
  const MARKUP = /\*\*|__|`|\]\(|(^|\s)[*_][^\s*_]|^#{1,6}\s|^\s*(?:[-*+]|\d+\.)\s|\n\s*\n/m;
  let blocks = { exact: {}, templates: [] };

  function stripInline(md) {
    return md.replace(/^\s*#{1,6}\s+/, '').replace(/^\s*(?:[-*+]|\d+\.)\s+/, '')
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/`([^`]*)`/g, '$1')
      .replace(/(\*\*|__)(.+?)\1/g, '$2').replace(/(^|[^\w*])[*_]([^*_\s][^*_]*)[*_](?![\w*])/g, '$1$2')
      .replace(/\s+/g, ' ').trim();
  }

  function markdownBlocks(md) {  // paragraphs; a paragraph of list items is one block per item
    const found = [];
    for (const para of md.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean)) {
      const lines = para.split('\n');
      if (lines.every((l) => /^\s*(?:[-*+]|\d+\.)\s/.test(l))) found.push(...lines);
      else found.push(para);
    }
    return found;
  }

  function escapeHtml(text) {
    return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  }

  function renderInline(md) {
    const codes = [];
    let html = escapeHtml(stripBlockMarker(md)).replace(/`([^`]*)`/g, (all, c) => { codes.push(c); return '\u0000' + (codes.length - 1) + '\u0000'; });
    html = html.replace(/\[([^\]]*)\]\(((?:https?:\/\/|\/|\.\/|#)[^)\s]*)\)/g, '<a href="$2" target="_blank" rel="noopener">$1</a>')
      .replace(/(\*\*|__)(.+?)\1/g, '<strong>$2</strong>').replace(/(^|[^\w*])[*_]([^*_\s][^*_]*)[*_](?![\w*])/g, '$1<em>$2</em>')
      .replace(/\n/g, ' ');
    return html.replace(/\u0000(\d+)\u0000/g, (all, i) => '<code>' + codes[Number(i)] + '</code>');
  }

  function stripBlockMarker(md) { return md.replace(/^\s*#{1,6}\s+/, '').replace(/^\s*(?:[-*+]|\d+\.)\s+/, ''); }

  function compileBlocks(table) {
    const exact = {}, keyed = {};
    for (const [key, value] of Object.entries(table)) {
      if (!value || !MARKUP.test(key)) continue;
      const ks = markdownBlocks(key), vs = markdownBlocks(value);
      if (ks.length !== vs.length) continue;
      ks.forEach((k, i) => { const plain = stripInline(k); if (plain) { exact[plain] = vs[i]; keyed[plain] = vs[i]; } });
    }
    return { exact, templates: compile(keyed) };
  }

  const blockMemory = new WeakMap();  // block element -> {orig, shown} (innerHTML)

  function doBlock(element) {
    if (!BLOCK_TAGS.has(element.tagName) || skipped(element)) return false;
    const memory = blockMemory.get(element);
    if (memory && element.innerHTML === memory.shown) return true;
    const text = element.textContent.replace(/\s+/g, ' ').trim();
    if (!text) return false;
    const md = whole(blocks.exact, blocks.templates, text, strings);  // a piece is a page string (the notice under a bold title)
    if (md === null) return false;
    const orig = element.innerHTML, shown = renderInline(md);
    element.innerHTML = shown;
    blockMemory.set(element, { orig, shown: element.innerHTML });
    return true;
  }

  function restoreBlocks() {
    for (const element of document.querySelectorAll('p, li, h1, h2, h3, h4, h5, h6, td, th')) {
      const memory = blockMemory.get(element);
      if (memory && element.innerHTML === memory.shown) element.innerHTML = memory.orig;
      blockMemory.delete(element);
    }
  }

  const textMemory = new WeakMap();  // text node -> {orig, shown}
  const attrMemory = new WeakMap();  // element -> {attribute: {orig, shown}}

  function skipped(element) {
    if (!element || element.nodeType !== 1) return true;
    if (SKIP_TAGS.has(element.tagName.toUpperCase())) return true;
    return element.closest(SKIP_SELECTOR) !== null;
  }

  function translated(original, piecesAreLabels) {
    const cached = piecesAreLabels ? attrCache : cache;
    let shown = cached.get(original);
    if (shown === undefined) {
      const t = translateText(strings, original, templates, piecesAreLabels);
      shown = t === null ? original : t;
      if (cached.size < 20000) cached.set(original, shown);
    }
    stats.texts += 1;
    return shown;
  }

  function doText(node) {
    if (skipped(node.parentElement)) return;
    const now = node.nodeValue;
    let record = textMemory.get(node);
    if (!record || now !== record.shown) { record = { orig: now, shown: now }; textMemory.set(node, record); }  // new or changed by gradio
    const shown = translated(record.orig);
    record.shown = shown;
    if (now !== shown) node.nodeValue = shown;
  }

  function doAttribute(element, name) {
    if (!element.hasAttribute(name) || element.closest('.notranslate, .infotext, .options, .token')) return;
    let memory = attrMemory.get(element);
    if (!memory) { memory = {}; attrMemory.set(element, memory); }
    const now = element.getAttribute(name);
    if (!memory[name] || now !== memory[name].shown) memory[name] = { orig: now, shown: now };
    const shown = translated(memory[name].orig, true);  // an attribute's values are labels ("number input for Seed")
    memory[name].shown = shown;
    if (now !== shown) element.setAttribute(name, shown);
  }

  function untouchable(element) {  // nothing inside is ours to change, attributes included
    return element.tagName === 'SCRIPT' || element.tagName === 'STYLE' || element.classList.contains('notranslate');
  }

  function walk(root) {
    if (!root) return;
    if (root.nodeType === 3) { doText(root); return; }
    if (root.nodeType !== 1 && root.nodeType !== 9 && root.nodeType !== 11) return;
    if (root.nodeType === 1) {
      if (root.closest('.notranslate, script, style')) return;
      for (const a of ATTRIBUTES) doAttribute(root, a);
      doBlock(root);
    }
    // Skipped elements (a dropdown's box, inputs) are still entered: their attributes (aria-label) are labels.
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT, {
      acceptNode: (n) => (n.nodeType === 1 && untouchable(n) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (n.nodeType === 3) doText(n);
      else {
        for (const a of ATTRIBUTES) doAttribute(n, a);
        doBlock(n);  // a Markdown paragraph matched whole: its new children are Korean and match nothing
      }
    }
  }

  function translateAll() { walk(document.body || document.documentElement); }

  const observer = new MutationObserver((mutations) => {
    if (!hasStrings) return;
    const start = performance.now();
    for (const m of mutations) {
      if (m.type === 'childList') m.addedNodes.forEach(walk);
      else if (m.type === 'characterData') doText(m.target);
      else if (m.type === 'attributes') doAttribute(m.target, m.attributeName);
    }
    stats.ms += performance.now() - start;
  });

  function use(data) {
    strings = (data && data.strings) || {};
    hasStrings = Object.keys(strings).length > 0;
    cache = new Map(); attrCache = new Map();
    templates = compile(strings);
    restoreBlocks();
    blocks = compileBlocks(strings);
    window.localization = strings;  // A1111's global, for extensions' scripts
    document.documentElement.setAttribute('lang', data && data.lang ? data.lang : 'en');
    const start = performance.now();
    translateAll();
    stats.ms += performance.now() - start;
  }

  window.webuiLocalization = { translateText, compile, use, stripInline, renderInline, translateAll, stats, get name() { return window.__webui_localization_name; } };
  window.getTranslation = (text) => { const t = translateText(strings, text, templates); return t === null ? undefined : t; };
  window.hasLocalization = () => Object.keys(strings).length > 0;
  observer.observe(document.documentElement, { childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ATTRIBUTES });

  const injected = window.__webui_localization_data;
  if (injected) { window.__webui_localization_name = injected.name; use(injected); return; }
  // Served without the middleware (another page path): ask the route.
  const asked = new URLSearchParams(window.location.search).get('localization');
  fetch('internal/localization' + (asked ? '?localization=' + encodeURIComponent(asked) : ''), { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json() : null))
    .then((data) => { if (data) { window.__webui_localization_name = data.name; use(data); } })
    .catch(() => {});
})();
"""

LOCALIZATION_HEAD = f"<script>{TRANSLATOR_JS}</script>\n"  # for gradio's head: a no-op when the middleware put it in already


def active_name(settings: "SettingsStore", localizations: Localizations, asked: str | None = None) -> str:
    """The localization a page shows: `asked` (the address's ?localization=) when it names one
    ("None" included), else the setting; "None" when the setting names a file no longer there."""
    names = localizations.choices()
    if asked and asked in names:
        return asked
    chosen = settings["localization"] or ENGLISH
    return chosen if chosen in names else ENGLISH


def page_data(name: str, localizations: Localizations) -> dict[str, Any]:
    """What the page's translator takes: the name, its `lang` and the merged strings."""
    return {"name": name, "lang": language_code(name), "strings": localizations.strings(name)}


def head_script(data: dict[str, Any]) -> str:
    """The script put first in the page's head: the strings, `navigator.language` set to the
    page's language before gradio picks its own, and the translator."""
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    lang = json.dumps(data["lang"])
    return (f"<script>window.__webui_localization_data = {payload};\n"
            f"try {{ Object.defineProperty(navigator, 'language', {{ get: () => {lang}, configurable: true }});\n"
            f"Object.defineProperty(navigator, 'languages', {{ get: () => [{lang}], configurable: true }}); }} catch (e) {{}}\n"
            f"document.documentElement.setAttribute('lang', {lang});</script>\n<script>{TRANSLATOR_JS}</script>\n")


def asked_name(query_string: str) -> str | None:
    """The `localization` parameter of a page address's query string, if any."""
    values = parse_qs(query_string, keep_blank_values=False).get(QUERY_PARAMETER)
    return values[0] if values else None


def localized_markdown(text: str, settings: "SettingsStore", localizations: Localizations | None, request: Any = None) -> str:
    """A long Markdown text in the page's language, looked up whole (its full English source is
    the key); the English text when there is no entry."""
    if not text or localizations is None:
        return text
    params = getattr(request, "query_params", None) or {}
    name = active_name(settings, localizations, params.get(QUERY_PARAMETER) if hasattr(params, "get") else None)
    return localizations.translate(name, text) if name != ENGLISH else text


class LocalizedPage:
    """ASGI middleware: the page's HTML (a GET of `page_path`) gets `head_script` first in its
    head, for the language of that request (`data_for(query_string)`); everything else passes."""

    def __init__(self, app, data_for, page_path: str = "/"):
        self.app, self.data_for = app, data_for
        self.page = PagePath(page_path)

    async def __call__(self, scope, receive, send):
        if not self.page.matches(scope):
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await send_page(b"".join(body))

        async def send_page(content: bytes):
            headers = [(k, v) for k, v in start.get("headers", [])]
            kind = dict(headers).get(b"content-type", b"")
            encoded = dict(headers).get(b"content-encoding", b"")
            if b"text/html" in kind and not encoded:
                at = content.lower().find(b"<head>")
                if at >= 0:
                    script = head_script(self.data_for(scope.get("query_string", b"").decode("latin-1"))).encode("utf-8")
                    content = content[:at + 6] + script + content[at + 6:]
                    headers = [(k, v) for k, v in headers if k != b"content-length"] + [(b"content-length", str(len(content)).encode())]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, capture)
