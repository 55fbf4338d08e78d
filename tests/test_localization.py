"""Localizations: finding the files (shipped, --localizations-dir, extensions; later ones win
key by key; bad files skipped), the setting's guard, the route and the page's HTML, and the
page translator's rules, run in Chromium on a bare page."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from modules.localization import ENGLISH, Localizations, language_code
from modules.options import Paths, parse_args
from modules.settings import SettingsStore
from modules.ui.localization import TRANSLATOR_JS, active_name, asked_name, head_script, localized_markdown

CHROMIUM = "/usr/bin/chromium"


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def folders(tmp_path):
    shipped, user, ext = tmp_path / "shipped", tmp_path / "user", tmp_path / "ext" / "localizations"
    write(shipped, "ko_KR", {"Generate": "생성", "Prompt": "프롬프트", "Seed": "시드"})
    write(user, "ko_KR", {"Seed": "씨앗", "Steps": "단계"})
    write(ext, "ko_KR", {"Steps": "스텝", "My extension": "내 확장"})
    write(ext, "fr_FR", {"Generate": "Générer"})
    return shipped, user, ext


def test_sources_merge_by_name_later_ones_winning_key_by_key(folders):
    shipped, user, ext = folders
    locs = Localizations((shipped, user), lambda: [ext])
    assert locs.names() == ["fr_FR", "ko_KR"] and locs.choices() == [ENGLISH, "fr_FR", "ko_KR"]
    assert locs.strings("ko_KR") == {"Generate": "생성", "Prompt": "프롬프트", "Seed": "씨앗", "Steps": "스텝", "My extension": "내 확장"}
    assert locs.strings(ENGLISH) == {}
    assert locs.translate("ko_KR", "Generate") == "생성" and locs.translate("ko_KR", "Unknown words") == "Unknown words"
    assert locs.translate("xx", "Generate") == "Generate"
    with pytest.raises(ValueError, match="no localization named 'xx'"):
        locs.strings("xx")


def test_a_disabled_extension_brings_nothing(folders):
    shipped, user, ext = folders
    on = {"value": True}
    locs = Localizations((shipped, user), lambda: [ext] if on["value"] else [])
    assert "fr_FR" in locs.names()
    on["value"] = False
    assert locs.names() == ["ko_KR"] and locs.strings("ko_KR")["Steps"] == "단계"


def test_an_edited_file_is_read_again(folders):
    shipped, user, _ = folders
    locs = Localizations((shipped, user))
    assert locs.strings("ko_KR")["Seed"] == "씨앗"
    path = write(user, "ko_KR", {"Seed": "시드값"})
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    assert locs.strings("ko_KR")["Seed"] == "시드값"


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '{"Generate": 5}', b"\xff\xfe\x00"])
def test_a_bad_file_is_skipped_with_a_warning_that_names_it(folders, caplog, content):
    shipped, user, _ = folders
    path = user / "ko_KR.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    locs = Localizations((shipped, user))
    with caplog.at_level(logging.WARNING, logger="modules.localization"):
        assert locs.strings("ko_KR") == {"Generate": "생성", "Prompt": "프롬프트", "Seed": "시드"}  # the shipped file still counts
        locs.strings("ko_KR")
    warnings = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # once, not at every page load


def test_localizations_dir_flag_and_default(tmp_path):
    own = tmp_path / "mine"
    write(own, "de_DE", {"Generate": "Erzeugen"})
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path / "data"), "--localizations-dir", str(own)]))
    assert paths.localizations == own.resolve()
    assert "de_DE" in Localizations.for_app(paths).names()
    default = Paths.from_args(parse_args(["--data-dir", str(tmp_path / "data")]))
    assert default.localizations == (tmp_path / "data" / "localizations").resolve()


def test_the_setting_refuses_an_unknown_name_with_a_sentence(folders, tmp_path):
    shipped, user, _ = folders
    locs = Localizations((shipped, user))
    store = SettingsStore.open(tmp_path / "config.json")
    store.add_guard(locs.check_setting)
    with pytest.raises(ValueError, match="localization must be one of: None, ko_KR; got 'xx_XX'"):
        store.update({"localization": "xx_XX"})
    assert store.update({"localization": "ko_KR"}) == {"localization": "ko_KR"}
    assert json.loads((tmp_path / "config.json").read_text())["localization"] == "ko_KR"
    assert active_name(store, locs) == "ko_KR" and active_name(store, locs, "None") == ENGLISH and active_name(store, locs, "zz") == "ko_KR"
    assert store.update({"localization": "None"}) == {"localization": "None"}


def test_helpers():
    assert language_code("ko_KR") == "ko" and language_code("None") == "en" and language_code("pt-BR") == "pt"
    assert asked_name("a=1&localization=ko_KR") == "ko_KR" and asked_name("") is None
    script = head_script({"name": "x", "lang": "ko", "strings": {"</script><b>": "a\u2028b"}})
    assert "</script><b>" not in script and "\\u003c/script>" in script and "\u2028" not in script


def test_the_guide_is_translated_whole_for_the_page_language(folders, tmp_path):
    shipped, user, _ = folders
    guide = "Draw **one** shape.\n\nPick a colour."
    write(user, "ko_KR", {guide: "도형을 **하나** 그립니다.\n\n색을 고르세요."})
    locs = Localizations((shipped, user))
    store = SettingsStore.open(tmp_path / "config.json")

    class Request:
        query_params = {"localization": "ko_KR"}

    assert localized_markdown(guide, store, locs, Request()) == "도형을 **하나** 그립니다.\n\n색을 고르세요."
    assert localized_markdown(guide, store, locs, None) == guide  # the setting is None
    store.update({"localization": "ko_KR"})
    assert localized_markdown(guide, store, locs, None).startswith("도형을")


# ---------------------------------------------------------------- the server: route, HTML, log-in


PAGE_HTML = "<!doctype html><html><head><meta charset='utf-8'><script>window.gradio_config = {};</script></head><body></body></html>"


@pytest.fixture
def served(tmp_path):
    """The route and the page middleware as webui.py mounts them, over a stand-in page, behind the
    real log-in guard (a session cookie stands for gradio's). tests/test_lan_access.py's sweep
    checks every route of the real app, this one included, for the log-in too."""
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from fastapi.testclient import TestClient

    from modules.network import GradioGuard
    from modules.ui.localization import LocalizedPage, page_data
    from modules.ui.localization_routes import build_localization_router

    write(tmp_path / "localizations", "xx_YY", {"Generate": "GEN-XX", "Prompt": "PROMPT-XX"})
    write(tmp_path / "localizations", "broken", "[1]")
    localizations = Localizations((tmp_path / "shipped", tmp_path / "localizations"))
    settings = SettingsStore.open(tmp_path / "config.json")
    settings.add_guard(localizations.check_setting)
    app = SimpleNamespace(settings=settings, localizations=localizations)
    asgi = FastAPI()
    asgi.include_router(build_localization_router(app))
    asgi.add_api_route("/", lambda: HTMLResponse(PAGE_HTML), methods=["GET"])
    asgi.add_middleware(LocalizedPage, page_path="/",
                        data_for=lambda query: page_data(active_name(settings, localizations, asked_name(query)), localizations))
    asgi.add_middleware(GradioGuard, session_user=lambda cookies: cookies.get("session"))
    with TestClient(asgi) as client:
        yield client, app


def test_route_needs_the_page_log_in_then_answers(served):
    client, app = served
    client.cookies.clear()
    anonymous = client.get("/internal/localization?localization=xx_YY", follow_redirects=False)
    assert anonymous.status_code in (401, 403) or anonymous.is_redirect
    assert "GEN-XX" not in anonymous.text
    client.cookies.set("session", "owner")
    r = client.get("/internal/localization?localization=xx_YY")
    assert r.status_code == 200 and r.json() == {"name": "xx_YY", "lang": "xx", "strings": {"Generate": "GEN-XX", "Prompt": "PROMPT-XX"}}
    r = client.get("/internal/localization")
    assert r.status_code == 200 and r.json()["name"] == "None" and r.json()["strings"] == {}
    r = client.get("/internal/localization?localization=nope")
    assert r.status_code == 404 and "There is no localization named 'nope'" in r.json()["detail"]
    assert "xx_YY" in r.json()["detail"]
    r = client.get("/internal/localization?localization=broken")  # a bad file: listed, empty, logged
    assert r.status_code == 200 and r.json()["strings"] == {}


def test_the_page_html_brings_the_language_first_in_its_head(served):
    client, app = served
    client.cookies.set("session", "owner")
    html = client.get("/?localization=xx_YY", headers={"accept": "text/html"}).text
    head = html[html.lower().index("<head>"):]
    assert head.index("__webui_localization_data") < head.index("gradio_config")  # before gradio's own scripts
    assert '"Generate": "GEN-XX"' in html and "navigator, 'language'" in html and '"xx"' in html
    app.settings.update({"localization": "xx_YY"})
    try:
        assert '"name": "xx_YY"' in client.get("/").text
        assert '"name": "None"' in client.get("/?localization=None").text  # one browser reads English
        with pytest.raises(ValueError, match="localization must be one of"):
            app.settings.update({"localization": "nope"})
    finally:
        app.settings.update({"localization": "None"})
    assert '"name": "None"' in client.get("/").text


# ---------------------------------------------------------------- the translator's rules, in Chromium


STRINGS = {
    "Generate": "생성",
    "Prompt": "프롬프트",
    "Seed": "시드",
    "Search...": "검색...",
    "Could not load {0}": "{0}을(를) 불러올 수 없습니다",
    "Moved {0} to {1}.": "{1}(으)로 {0} 이동함.",
    "Done.": "완료.",
    "Nothing to do.": "할 일이 없습니다.",
    "Saved. Reload the page.": "저장됨. 페이지를 새로고침하세요.",
    "Empty": "",
}


@pytest.fixture(scope="module")
def chromium_page():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_content("<html><head></head><body></body></html>")
        page.evaluate("data => { window.__webui_localization_data = data; }", {"name": "ko_KR", "lang": "ko", "strings": STRINGS})
        page.add_script_tag(content=TRANSLATOR_JS)
        yield page
        browser.close()


def translate(page, text):
    return page.evaluate("([s, t]) => window.webuiLocalization.translateText(s, t)", [STRINGS, text])


@pytest.mark.parametrize("text, expected", [
    ("Generate", "생성"),
    ("  Prompt \n", "  프롬프트 \n"),  # surrounding whitespace kept
    ("Could not load model.safetensors", "model.safetensors을(를) 불러올 수 없습니다"),
    ("Moved a.png to b/c.", "b/c(으)로 a.png 이동함."),  # pieces in the translation's own order
    ("Done. Nothing to do.", "완료. 할 일이 없습니다."),  # a status line of two messages
    ("Done. Something else. Nothing to do.", "완료. Something else. 할 일이 없습니다."),
    ("Saved. Reload the page. Done.", "저장됨. 페이지를 새로고침하세요. 완료."),  # the longest run wins
    ("Generated", None), ("generate", None), ("12.5", None), ("Empty", None),  # no entry; an empty translation is no entry
    ("constructor", None), ("toString", None), ("Could not load __proto__", "__proto__을(를) 불러올 수 없습니다"),  # not Object's own
])
def test_translation_rules(chromium_page, text, expected):
    assert translate(chromium_page, text) == expected


def test_the_dom_is_translated_and_kept_translated(chromium_page):
    page = chromium_page
    page.evaluate("""s => { window.webuiLocalization.use({name: 'ko_KR', lang: 'ko', strings: s}); document.body.innerHTML = `
        <button id="b">Generate</button>
        <label id="l"><span>Prompt</span><textarea id="t" placeholder="Prompt">Prompt</textarea></label>
        <div class="notranslate" id="n">Generate</div>
        <div class="infotext" id="i"><p>Seed</p></div>
        <ul class="options"><li id="o">Seed</li></ul>
        <input id="s" title="Search..." aria-label="Seed" value="Generate">
        <code id="c">Generate</code>`; }""", STRINGS)
    page.wait_for_function("document.getElementById('b').textContent === '생성'")
    got = page.evaluate("""() => ({
        b: document.getElementById('b').textContent, l: document.querySelector('#l span').textContent,
        tp: document.getElementById('t').placeholder, tv: document.getElementById('t').value,
        n: document.getElementById('n').textContent, i: document.querySelector('#i p').textContent,
        o: document.getElementById('o').textContent, st: document.getElementById('s').title,
        sa: document.getElementById('s').getAttribute('aria-label'), sv: document.getElementById('s').value,
        c: document.getElementById('c').textContent, lang: document.documentElement.lang })""")
    assert got == {"b": "생성", "l": "프롬프트", "tp": "프롬프트", "tv": "Prompt", "n": "Generate", "i": "Seed", "o": "Seed",
                   "st": "검색...", "sa": "시드", "sv": "Generate", "c": "Generate", "lang": "ko"}
    # gradio changes a text: it is looked up afresh; a toast added later is translated too
    page.evaluate("""() => { document.getElementById('b').firstChild.nodeValue = 'Could not load x.ckpt';
        const toast = document.createElement('div'); toast.id = 'toast'; toast.textContent = 'Done. Nothing to do.';
        document.body.appendChild(toast); document.getElementById('s').setAttribute('title', 'Prompt'); }""")
    page.wait_for_function("document.getElementById('toast').textContent === '완료. 할 일이 없습니다.'")
    page.wait_for_function("document.getElementById('b').textContent === 'x.ckpt을(를) 불러올 수 없습니다'")
    page.wait_for_function("document.getElementById('s').title === '프롬프트'")
    # a language change goes back to the English originals, never translating twice
    page.evaluate("() => window.webuiLocalization.use({name: 'x', lang: 'en', strings: {'Could not load {0}': 'Cannot load {0}', 'Prompt': 'Prompt text'}})")
    got = page.evaluate("() => [document.getElementById('b').textContent, document.querySelector('#l span').textContent, "
                        "document.getElementById('toast').textContent, document.documentElement.lang]")
    assert got == ["Cannot load x.ckpt", "Prompt text", "Done. Nothing to do.", "en"]


def test_markdown_paragraphs_are_translated_whole_with_their_markup(chromium_page):
    page = chromium_page
    strings = {**STRINGS,
               "Saved to `{0}`. Control defaults are in `ui-config.json`.": "`{0}`에 저장됨. 기본값은 `ui-config.json`에 있습니다.",
               "**Tiny model.** Draws *noise*.\n\n- one [link](https://example.com)\n- two": "**작은 모델.** *노이즈*를 그립니다.\n\n- 하나 [링크](https://example.com)\n- 둘",
               "**Notice.** {0}": "**알림.** {0}", "It draws shapes only.": "도형만 그립니다."}
    page.evaluate("""s => { document.body.innerHTML = `<div class="prose">
        <p id="p1">Saved to <code>/tmp/a b/config.json</code>. Control defaults are in <code>ui-config.json</code>.</p>
        <p id="p2"><strong>Tiny model.</strong> Draws <em>noise</em>.</p>
        <ul><li id="l1">one <a href="https://example.com">link</a></li><li id="l2">two</li></ul>
        <p id="p3"><strong>Other</strong> text.</p><p id="p4"><strong>Notice.</strong> It draws shapes only.</p></div>`;
        window.webuiLocalization.use({name: 'ko_KR', lang: 'ko', strings: s}); }""", strings)
    got = page.evaluate("() => ['p1', 'p2', 'l1', 'l2', 'p3', 'p4'].map((id) => document.getElementById(id).innerHTML)")
    assert got == ["<code>/tmp/a b/config.json</code>에 저장됨. 기본값은 <code>ui-config.json</code>에 있습니다.",
                   "<strong>작은 모델.</strong> <em>노이즈</em>를 그립니다.",
                   '하나 <a href="https://example.com" target="_blank" rel="noopener">링크</a>', "둘", "<strong>Other</strong> text.",
                   "<strong>알림.</strong> 도형만 그립니다."]
    page.evaluate("() => window.webuiLocalization.use({name: 'None', lang: 'en', strings: {}})")  # back to English, as it was
    assert page.evaluate("() => document.getElementById('p2').innerHTML") == "<strong>Tiny model.</strong> Draws <em>noise</em>."


def test_a_value_in_a_message_stays_the_users_but_a_label_in_an_attribute_is_translated(chromium_page):
    """A style named "Prompt" is the user's word: the toast keeps it. gradio's screen-reader label
    "number input for Batch count" names a control: its label is translated too."""
    strings = {"number input for {0}": "{0} 숫자 입력", "Batch count": "배치 수", "Saved style '{0}'.": "'{0}' 스타일을 저장했습니다.",
               "Prompt": "프롬프트"}
    evaluate = "([s, t, labels]) => window.webuiLocalization.translateText(s, t, undefined, labels)"
    assert chromium_page.evaluate(evaluate, [strings, "Saved style 'Prompt'.", False]) == "'Prompt' 스타일을 저장했습니다."
    assert chromium_page.evaluate(evaluate, [strings, "number input for Batch count", True]) == "배치 수 숫자 입력"
    assert chromium_page.evaluate(evaluate, [strings, "number input for Seed", True]) == "Seed 숫자 입력"
    chromium_page.evaluate("""s => { window.webuiLocalization.use({name: 'ko_KR', lang: 'ko', strings: s});
        document.body.innerHTML = `<p id="toast">Saved style 'Prompt'.</p><input id="n" aria-label="number input for Batch count">`; }""", strings)
    chromium_page.wait_for_function("document.getElementById('n').getAttribute('aria-label') === '배치 수 숫자 입력'")
    assert chromium_page.evaluate("() => document.getElementById('toast').textContent") == "'Prompt' 스타일을 저장했습니다."
    from modules.localization import lookup

    assert lookup(strings, "Saved style 'Prompt'.") == "'Prompt' 스타일을 저장했습니다."
    assert lookup(strings, "number input for Batch count", pieces_are_labels=True) == "배치 수 숫자 입력"


def test_a_dropdowns_aria_label_is_translated_but_not_its_value(chromium_page):
    chromium_page.evaluate("""s => { window.webuiLocalization.use({name: 'ko_KR', lang: 'ko', strings: s});
        document.body.innerHTML = `<div class="wrap-inner"><div class="token"><span id="tok">Seed</span></div>
        <input id="dd" aria-label="Prompt" value="Generate"></div>`; }""", STRINGS)
    chromium_page.wait_for_function("document.getElementById('dd').getAttribute('aria-label') === '프롬프트'")
    assert chromium_page.evaluate("() => [document.getElementById('tok').textContent, document.getElementById('dd').value]") == ["Seed", "Generate"]


def test_for_app_reads_the_shipped_folder_yours_and_enabled_extensions_only(tmp_path):
    from modules.extensions.layout import Extension
    from modules.extensions.loaded import LoadedExtensions

    on, off = tmp_path / "ext-on", tmp_path / "ext-off"
    write(on / "localizations", "ko_KR", {"Hello extension": "안녕 확장"})
    write(off / "localizations", "ko_KR", {"Generate": "꺼진 확장"})
    write(off / "localizations", "zz_ZZ", {"Generate": "zz"})
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path / "data")]))
    write(paths.localizations, "ko_KR", {"Generate": "만들기"})
    loaded = LoadedExtensions([Extension("ext-on", on, builtin=False), Extension("ext-off", off, builtin=False, enabled=False)])
    locs = Localizations.for_app(paths, loaded)
    table = locs.strings("ko_KR")
    assert table["Generate"] == "만들기" and table["Hello extension"] == "안녕 확장"  # yours over the shipped file; the enabled extension's too
    assert table.get("Prompt")  # the shipped Korean file is read first
    assert "zz_ZZ" not in locs.names()
