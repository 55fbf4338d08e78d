"""A job that ends while the tab is in the background: a browser notification and A1111's
sound (a tone without notification.mp3); none while the tab is in front; no sound with
`notification_audio` off. The browser's Notification, Audio and AudioContext are stubbed so the
test can count what the page does."""

from __future__ import annotations

from tests.e2e.test_txt2img_page import set_number

STUBS = """
window.__notes = []; window.__sounds = []; window.__asked = 0;
class FakeNotification {
  constructor(title, options) { window.__notes.push({title: title, body: options && options.body, icon: options && options.icon}); }
  close() {}
}
FakeNotification.permission = 'default';
FakeNotification.requestPermission = () => { window.__asked += 1; FakeNotification.permission = 'granted'; return Promise.resolve('granted'); };
window.Notification = FakeNotification;
window.Audio = class { constructor(src) { this.src = src; } play() { window.__sounds.push({file: this.src, volume: this.volume}); return Promise.resolve(); } };
class FakeContext {
  constructor() { this.currentTime = 0; this.destination = {}; }
  createOscillator() { return {frequency: {value: 0}, connect() {}, stop() {}, start() { window.__sounds.push({tone: this.frequency.value}); }}; }
  createGain() { return {connect() {}, gain: {setValueAtTime(v) { window.__gain = v; }, exponentialRampToValueAtTime() {}}}; }
  resume() { return Promise.resolve(); }
}
window.AudioContext = FakeContext; window.webkitAudioContext = FakeContext;
"""

HIDE = "Object.defineProperty(document, 'hidden', {get: () => true, configurable: true}); document.hasFocus = () => false;"


def test_notification_and_sound_only_for_a_job_that_ends_in_the_background(page_context, server):
    page = page_context.new_page()
    page.add_init_script(STUBS)
    page.goto(server["url"])
    try:
        page.locator("#model_guide", has_text="a COLOUR SHAPE").wait_for(timeout=30000)
        assert page.evaluate("window.__asked") == 0  # never asked on load
        page.fill("#txt2img_prompt textarea", "a red circle on a blue background")
        set_number(page, "txt2img_steps", 2)

        # In front: the job ends with no notification and no sound, but the press asked for permission.
        page.click("#txt2img_generate")
        page.locator("#txt2img_html_log", has_text="time taken").wait_for(timeout=60000)
        page.wait_for_timeout(500)
        assert page.evaluate("[window.__notes.length, window.__sounds.length, window.__asked]") == [0, 0, 1]
        first = page.get_attribute("#txt2img_gallery img", "src")

        # In the background, a batch of two: one notification counting the pictures (not the grid, which
        # is its icon), one tone at the volume (100 %).
        set_number(page, "txt2img_batch_size", 2)
        page.evaluate(HIDE)
        page.click("#txt2img_generate")
        page.wait_for_function("window.__notes.length >= 1 && window.__sounds.length >= 1", timeout=60000)
        page.wait_for_timeout(300)
        notes, sounds = page.evaluate("[window.__notes, window.__sounds]")
        assert page.get_attribute("#txt2img_gallery img", "src") != first  # (the status line may read the same, to the 0.1 s)
        assert len(notes) == 1 and notes[0]["title"] == "Stable Diffusion" and notes[0]["body"] == "2 images ready", notes
        icon = notes[0]["icon"]
        assert icon == page.get_attribute("#txt2img_gallery img", "src") and "grid-" in icon and icon.split("?")[0].endswith(".png")
        assert sounds == [{"tone": 880}] and abs(page.evaluate("window.__gain") - 0.25) < 1e-6

        # notification_audio off (the page reads the setting when the job ends, no reload): the notification,
        # no sound. The setting's route answers as it would with the box unticked (tests/ui/test_styles_editor.py
        # checks the route itself), so the shared server's config.json is left alone.
        page.route("**/internal/notification", lambda route: route.fulfill(json={"audio": False, "volume": 100, "sound": None}))
        page.click("#txt2img_generate")
        page.wait_for_function("window.__notes.length >= 2", timeout=60000)
        page.wait_for_timeout(500)
        assert page.evaluate("[window.__notes.length, window.__sounds.length, window.__asked]") == [2, 1, 1]
    finally:
        page.close()
