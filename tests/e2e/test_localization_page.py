"""The page in Korean: `?localization=ko_KR` in the address, or the Settings tab's Localization
(after a reload). Labels, buttons, tabs, placeholders, gradio's own strings, toasts and error
dialogs read Korean; every tab is walked and no known English string of the page, nor any
English sentence outside user data, is left showing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modules.ui.ui_strings import component_strings, needs_translation

KOREAN = json.loads((Path(__file__).resolve().parents[2] / "configs" / "localizations" / "ko_KR.json").read_text(encoding="utf-8"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
# Where English is the content, not the page's words: the demo guide quotes its English prompt
# syntax, the example prompts are prompts, the downloads table shows file names and the
# server's error text, the loss plot's labels are drawn by Vega.
ENGLISH_CONTENT = ("#model_guide", "#model_examples", "#models_downloads", "#train_lora_loss")

# Visible text nodes and placeholder/title attributes, where the page's translator works (not in
# user data, values, code or the dropdowns' lists), with the id of the nearest element that has one.
COLLECT = """(excluded) => {
  const SKIP = '.notranslate, .infotext, .options, .token, .wrap-inner, .caption, .caption-label, code, pre, textarea, script, style, '
    + excluded.join(', ');
  const where = (el) => (el.closest('[id]') || {}).id || '';
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT, {
    acceptNode: (n) => (n.nodeType === 1 && (!n.checkVisibility({ visibilityProperty: true }) || n.matches(SKIP))
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),  // hidden or skipped: its whole subtree
  });
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.nodeType === 3) { if (n.nodeValue.trim()) out.push([n.nodeValue.trim(), where(n.parentElement)]); continue; }
    for (const a of ['placeholder', 'title']) if ((n.getAttribute(a) || '').trim()) out.push([n.getAttribute(a).trim(), where(n) + '@' + a]);
  }
  return out;
}"""


def english_words(text: str) -> list[str]:
    """The English words of a text, leaving out syntax ([seed], <lora:...>, {prompt}) and file
    names, paths and addresses."""
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\{[^}]*\}", " ", text)
    tokens = [t for t in text.split() if not re.search(r"[./\\:=]\w", t)]
    return re.findall(r"\b[A-Za-z]{2,}\b", " ".join(tokens))


def either(english: str) -> re.Pattern:
    """A tab's name in English or Korean."""
    return re.compile(r"^\s*(%s|%s)\s*$" % (re.escape(english), re.escape(KOREAN.get(english) or english)))


def open_settings_section(page, section: str) -> None:
    page.locator("#tabs [role=tab]").filter(has_text=either("Settings")).first.click()
    tab = page.locator("#settings_sections [role=tab]").filter(has_text=either(section)).first
    if not tab.is_visible():  # the section row is full: the rest are under "More tabs"
        labels = {"More tabs", KOREAN.get("More tabs") or "More tabs"}
        page.click(", ".join(f"#settings_sections button[aria-label='{label}']" for label in labels))
        tab = page.locator("#settings_sections .overflow-dropdown button").filter(has_text=either(section)).first
    tab.click()


def open_page(page_context, url: str):
    page = page_context.new_page()
    page.goto(url)
    page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
    return page


@pytest.fixture(scope="module")
def korean_page(page_context, server):
    """One Korean page for the tests that only read it (each starts on the tab it needs): a page load is seconds."""
    page = open_page(page_context, server["url"] + "?localization=ko_KR")
    page.wait_for_function("document.getElementById('txt2img_generate').textContent.trim() === %s" % json.dumps(KOREAN["Generate"]),
                           timeout=15000)
    yield page
    page.close()


def test_labels_buttons_tabs_and_gradios_own_strings_read_korean(korean_page):
    page = korean_page
    page.get_by_role("tab", name="txt2img", exact=True).first.click()
    assert page.evaluate("document.documentElement.lang") == "ko"
    assert page.locator("#txt2img_prompt label span, #txt2img_prompt [data-testid=block-info]").first.inner_text().strip() == KOREAN["Prompt"]
    assert page.locator("#txt2img_prompt textarea").get_attribute("placeholder").startswith(KOREAN["Prompt"])
    page.get_by_role("tab", name=KOREAN["Extras"], exact=True).wait_for(timeout=5000)
    page.locator("#model_guide", has_text=KOREAN["Prompt"]).wait_for(timeout=15000)  # the demo guide, translated whole on the server
    page.get_by_role("tab", name="img2img", exact=True).first.click()
    drop = page.locator("#img2img_image")
    drop.wait_for(timeout=10000)
    assert "Drop Image Here" not in drop.inner_text() and "Click to Upload" not in drop.inner_text()  # gradio's own Korean
    open_settings_section(page, "User interface")
    assert page.locator("#settings_localization").inner_text().splitlines()[0].strip() == KOREAN["Localization"]


def test_toasts_and_error_dialogs_read_korean(korean_page):
    page = korean_page
    page.get_by_role("tab", name="txt2img", exact=True).first.click()
    page.fill("#txt2img_prompt textarea", "")
    page.click("#txt2img_paste")  # gr.Info: nothing to read
    info = "No generation parameters found: paste an infotext (PNG Info shows one) and press ↙."
    page.get_by_text(KOREAN[info], exact=True).wait_for(timeout=15000)
    page.get_by_role("tab", name=KOREAN["Models"], exact=True).click()
    page.click("#models_download_url")  # gr.Error: no URL
    page.get_by_text(KOREAN["Paste the URL of a .safetensors file first."], exact=True).wait_for(timeout=15000)
    toasts = page.locator(".toast-body, [data-testid=toast-body]").all_inner_texts()
    assert not any(info in t or "Paste the URL" in t for t in toasts), toasts


def _visit_everything(page) -> list[tuple[str, str]]:
    """Every top-level tab, the img2img modes and a sample of the Settings sections; what each shows."""
    seen: list[tuple[str, str]] = []
    collect = lambda: seen.extend(tuple(x) for x in page.evaluate(COLLECT, list(ENGLISH_CONTENT)))  # noqa: E731
    tabs = page.locator("#tabs [role=tablist]").first.locator("[role=tab]")
    for i in range(tabs.count()):
        tab = tabs.nth(i)
        if not tab.is_visible():
            continue
        tab.click()
        page.wait_for_timeout(150)
        collect()
        if tab.inner_text().strip() == "img2img":
            modes = page.locator("#mode_img2img [role=tab]")
            for j in range(1, modes.count()):
                modes.nth(j).click()
                page.wait_for_timeout(100)
                collect()
            modes.nth(0).click()
        if tab.inner_text().strip() == KOREAN["Settings"]:
            sections = page.locator("#settings_sections [role=tab]")
            for j in range(0, sections.count(), 5):
                if sections.nth(j).is_visible():
                    sections.nth(j).click()
                    page.wait_for_timeout(100)
                    collect()
    return seen


def test_no_english_is_left_on_any_tab(korean_page):
    page = korean_page
    known = {t for t in component_strings(page.request.get(page.url.split("?")[0] + "config").json()) if needs_translation(t)}
    shown = _visit_everything(page)
    assert len({text for text, _ in shown}) > 200  # the walk saw the page
    untranslated = sorted({(text, where) for text, where in shown if text in known and KOREAN.get(text) != text})
    english = sorted({(text, where) for text, where in shown
                      if not HANGUL.search(text) and len(english_words(text)) >= 3 and KOREAN.get(text) != text})
    assert not untranslated, "known English strings of the page shown untranslated:\n" + "\n".join(f"  {t!r} ({w})" for t, w in untranslated)
    assert not english, "English text shown on the Korean page:\n" + "\n".join(f"  {t!r} ({w})" for t, w in english)


def saved(server) -> dict:
    path = server["data"] / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _set_localization(page, server, name: str) -> None:
    open_settings_section(page, "User interface")
    page.locator("#settings_localization input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.click("#settings_submit")
    for _ in range(100):
        if saved(server).get("localization", "None") == name:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the localization setting did not become {name}")


def test_the_setting_switches_the_page_after_a_reload(page_context, server):
    page = open_page(page_context, server["url"])
    try:
        assert page.locator("#txt2img_generate").inner_text().strip() == "Generate"
        _set_localization(page, server, "ko_KR")
        page.reload()
        page.wait_for_selector("#txt2img_prompt textarea", timeout=30000)
        page.wait_for_function("document.getElementById('txt2img_generate').textContent.trim() === %s" % json.dumps(KOREAN["Generate"]),
                               timeout=15000)
        assert page.evaluate("document.documentElement.lang") == "ko"
    finally:  # the server is shared: back to English
        if saved(server).get("localization", "None") != "None":
            _set_localization(page, server, "None")
        page.close()
    assert saved(server).get("localization", "None") == "None"
