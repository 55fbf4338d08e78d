"""The styles editor (✎ beside the Styles menu): create a style from the prompt, edit it, rename
it, find it in both tabs' Styles menus under its new name, delete it; styles.csv on disk after
each step."""

from __future__ import annotations

import csv
import io
import time


def rows(path) -> list[tuple[str, str, str]]:
    text = path.read_text(encoding="utf-8-sig") if path.exists() else ""
    return [(r["name"], r["prompt"], r["negative_prompt"]) for r in csv.DictReader(io.StringIO(text))]


def wait_rows(path, expected, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while rows(path) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows(path) == expected


def menu_options(page, tab: str) -> list[str]:
    page.click(f"#{tab}_styles input")
    page.locator("[role=option]").first.wait_for(timeout=10000)
    names = [o.strip() for o in page.locator("[role=option]").all_inner_texts()]
    page.keyboard.press("Escape")
    return names


def test_create_edit_rename_and_delete_a_style(page, server):
    styles_csv = server["data"] / "styles.csv"
    before = styles_csv.read_bytes() if styles_csv.exists() else None
    styles_csv.write_text("name,prompt,negative_prompt\nkeep,kept text,\n", encoding="utf-8")
    try:
        page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
        page.fill("#txt2img_neg_prompt textarea", "green")
        page.click("#txt2img_styles_edit_button")
        editor = page.locator("#txt2img_styles_edit_box")
        editor.wait_for(state="visible", timeout=10000)

        # A new name, the prompts copied in, Save: a new row after the existing one.
        select = page.locator("#txt2img_styles_edit_select input")
        select.fill("my style")
        select.press("Enter")
        page.click("#txt2img_styles_edit_copy")
        page.wait_for_function("document.querySelector('#txt2img_styles_edit_prompt textarea').value === 'a red circle on a blue background'",
                               timeout=10000)
        page.click("#txt2img_styles_edit_save")
        wait_rows(styles_csv, [("keep", "kept text", ""), ("my style", "a red circle on a blue background", "green")])

        # Edit its prompt and save again: the same row, new text.
        page.fill("#txt2img_styles_edit_prompt textarea", "{prompt}, oil painting")
        page.click("#txt2img_styles_edit_save")
        wait_rows(styles_csv, [("keep", "kept text", ""), ("my style", "{prompt}, oil painting", "green")])

        # Rename: the text stays, nothing is left under the old name.
        page.fill("#txt2img_styles_edit_new_name textarea, #txt2img_styles_edit_new_name input", "painted")
        page.click("#txt2img_styles_edit_rename")
        wait_rows(styles_csv, [("keep", "kept text", ""), ("painted", "{prompt}, oil painting", "green")])
        page.locator(".toast-body", has_text="Renamed style 'my style' to 'painted'.").first.wait_for(timeout=10000)

        # A rename onto an existing name is refused with a sentence, and the file stays.
        page.fill("#txt2img_styles_edit_new_name textarea, #txt2img_styles_edit_new_name input", "keep")
        page.click("#txt2img_styles_edit_rename")
        page.locator(".toast-body", has_text="A style named 'keep' exists already").first.wait_for(timeout=10000)
        assert rows(styles_csv) == [("keep", "kept text", ""), ("painted", "{prompt}, oil painting", "green")]

        # Apply to the prompt: the style's text around the prompt.
        page.click("#txt2img_styles_edit_apply")
        page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value === "
                               "'a red circle on a blue background, oil painting'", timeout=10000)
        page.click("#txt2img_styles_edit_close")
        editor.wait_for(state="hidden", timeout=10000)

        # Both tabs' Styles menus show the new name, not the old one.
        assert menu_options(page, "txt2img") == ["keep", "painted"]
        page.get_by_role("tab", name="img2img", exact=True).click()
        page.locator("#img2img_styles").wait_for(state="visible", timeout=10000)
        assert menu_options(page, "img2img") == ["keep", "painted"]
        page.get_by_role("tab", name="txt2img", exact=True).click()

        # Delete (confirmed in the browser's dialog, as A1111 asks): the row is gone, the editor emptied.
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#txt2img_styles_edit_button")
        editor.wait_for(state="visible", timeout=10000)
        assert page.input_value("#txt2img_styles_edit_select input") == "painted"
        page.click("#txt2img_styles_edit_delete")
        wait_rows(styles_csv, [("keep", "kept text", "")])
        page.wait_for_function("document.querySelector('#txt2img_styles_edit_prompt textarea').value === ''", timeout=10000)
        page.click("#txt2img_styles_edit_close")
        assert menu_options(page, "txt2img") == ["keep"]
    finally:
        if before is None:
            styles_csv.unlink(missing_ok=True)
        else:
            styles_csv.write_bytes(before)
