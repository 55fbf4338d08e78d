"""The Settings tab: change settings, apply, see them saved to config.json and used by the
next picture."""

from __future__ import annotations

import json

from tests.e2e.test_txt2img_page import set_number


def apply(page, expect: str) -> None:
    page.click("#settings_submit")
    page.locator("#settings_result", has_text=expect).wait_for(timeout=20000)


def test_settings_apply_save_and_take_effect(page, server):
    data = server["data"]
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.get_by_role("tab", name="Settings").click()
    page.get_by_role("tab", name="Saving images/grids").click()
    pattern = page.locator("#settings_samples_filename_pattern textarea, #settings_samples_filename_pattern input").first
    pattern.fill("[seed]-[model_name]-[steps]")
    page.get_by_role("tab", name="Saving to a directory").click()
    page.locator("#settings_save_to_dirs input[type=checkbox]").uncheck()
    apply(page, "2 settings changed")
    page.screenshot(path=str(data / "settings-applied.png"), full_page=True)
    saved = json.loads((data / "config.json").read_text())
    assert saved["samples_filename_pattern"] == "[seed]-[model_name]-[steps]" and saved["save_to_dirs"] is False

    try:
        page.get_by_role("tab", name="txt2img").click()
        page.fill("#txt2img_prompt textarea", "a blue star on a black background")
        set_number(page, "txt2img_seed", 31337)
        set_number(page, "txt2img_steps", 3)
        page.click("#txt2img_generate")
        page.locator("#txt2img_html_info", has_text="Seed: 31337").wait_for(timeout=60000)
        names = [p.name for p in (data / "outputs" / "txt2img-images").glob("*-31337-*.png")]
        assert len(names) == 1 and names[0].endswith("-31337-demo-shapes-64px-3.png"), names

        page.get_by_role("tab", name="Settings").click()
        page.get_by_role("tab", name="Saving images/grids").click()
        pattern.fill("")
        page.get_by_role("tab", name="Saving to a directory").click()
        page.locator("#settings_save_to_dirs input[type=checkbox]").check()
        apply(page, "2 settings changed")
    finally:  # the other page tests expect A1111's default names
        saved = json.loads((data / "config.json").read_text())
        if saved.get("samples_filename_pattern") or saved.get("save_to_dirs") is False:
            page.get_by_role("tab", name="Settings").click()
            page.get_by_role("tab", name="Saving images/grids").click()
            pattern.fill("")
            page.get_by_role("tab", name="Saving to a directory").click()
            page.locator("#settings_save_to_dirs input[type=checkbox]").check()
            page.click("#settings_submit")
    saved = json.loads((data / "config.json").read_text())
    assert saved["samples_filename_pattern"] == "" and saved["save_to_dirs"] is True and saved["jpeg_quality"] == 80
