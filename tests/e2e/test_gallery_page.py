"""The Gallery tab as a user meets it: generate, find the picture by its seed, look at it,
send it to img2img with its parameters, and delete and restore it."""

from __future__ import annotations

from tests.e2e.test_txt2img_page import set_number


def test_generate_find_by_seed_send_to_img2img_delete_and_undo(page, server):
    page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=15000)
    page.fill("#txt2img_prompt textarea", "a green square on a white background")
    set_number(page, "txt2img_seed", 424242)
    set_number(page, "txt2img_steps", 4)
    page.click("#txt2img_generate")
    page.locator("#txt2img_html_info", has_text="Seed: 424242").wait_for(timeout=60000)
    saved = list((server["data"] / "outputs" / "txt2img-images").glob("*/*-424242.png"))
    assert len(saved) == 1

    page.get_by_role("tab", name="Gallery").click()
    page.fill("#gallery_search textarea, #gallery_search input", "seed:424242")
    page.press("#gallery_search textarea, #gallery_search input", "Enter")
    page.locator("#gallery_status", has_text="1 image").wait_for(timeout=20000)
    page.screenshot(path=str(server["data"] / "gallery-found.png"), full_page=True)
    page.locator("#gallery_images img").first.click()
    page.locator("#gallery_selected_info", has_text="Seed: 424242").wait_for(timeout=10000)
    assert "a green square on a white background" in page.inner_text("#gallery_selected_info")
    page.locator("#gallery_selected_image img").first.wait_for(timeout=10000)

    page.click("#gallery_send_img2img")
    page.wait_for_function("document.querySelector('#img2img_seed input') && document.querySelector('#img2img_seed input').value == '424242'",
                           timeout=15000)
    assert page.input_value("#img2img_prompt textarea") == "a green square on a white background"
    assert page.input_value("#img2img_steps input[type=number]") == "4"
    page.locator("#img2img_image img").first.wait_for(timeout=10000)  # the picture came along
    page.screenshot(path=str(server["data"] / "gallery-sent.png"), full_page=True)

    # Delete moves it to the trash (the search finds nothing), undo puts it back.
    page.get_by_role("tab", name="Gallery").click()
    page.locator("#gallery_images img").first.click()
    page.locator("#gallery_selected_info", has_text="Seed: 424242").wait_for(timeout=10000)
    page.click("#gallery_delete")
    page.locator("#gallery_status", has_text="0 images").wait_for(timeout=15000)
    assert not saved[0].exists() and list((server["data"] / "outputs" / ".trash").rglob("*-424242.png"))
    page.click("#gallery_undo")
    page.locator("#gallery_status", has_text="1 image").wait_for(timeout=15000)
    assert saved[0].exists()
