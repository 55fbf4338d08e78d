"""A1111's "job done" notification: when a job this page started finishes while the tab is in
the background, a browser notification and (setting `notification_audio`) a sound at
`notification_volume` %: `notification.mp3` from the data folder, as A1111 plays it, or a short
tone made in the browser when there is no such file.

The page learns the settings from `GET /internal/notification` when a job finishes, so a change
in the Settings tab applies without a reload. The routes are page routes: the page's log-in
(GradioGuard) covers them. The head script asks for notification permission at the first press
of Generate (browsers allow asking only after a user gesture), never on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

if TYPE_CHECKING:
    from webui import App

SOUND_FILE = "notification.mp3"  # A1111's name, in the data folder
SETTINGS_PATH = "/internal/notification"
SOUND_PATH = "/internal/notification.mp3"


class NotificationRoutes:
    """The two routes' handlers over the app's settings and data folder."""

    def __init__(self, settings, data_dir: Path) -> None:
        self.settings, self.data_dir = settings, Path(data_dir)

    def sound_file(self) -> Path | None:
        path = self.data_dir / SOUND_FILE
        return path if path.is_file() else None

    def describe(self) -> dict:
        """What the page needs when a job finishes: sound on or off, its volume, which sound."""
        volume = max(0, min(100, int(self.settings["notification_volume"])))
        return {"audio": bool(self.settings["notification_audio"]), "volume": volume,
                "sound": SOUND_PATH.lstrip("/") if self.sound_file() is not None else None}

    def sound(self) -> FileResponse:
        path = self.sound_file()
        if path is None:
            raise HTTPException(404, f"There is no {SOUND_FILE} in the data folder.")
        return FileResponse(path, media_type="audio/mpeg", headers={"Cache-Control": "no-cache"})


def build_notifications_router(app: "App") -> APIRouter:
    routes = NotificationRoutes(app.settings, app.paths.data_dir)
    router = APIRouter(include_in_schema=False)
    router.add_api_route(SETTINGS_PATH, routes.describe, methods=["GET"])
    router.add_api_route(SOUND_PATH, routes.sound, methods=["GET"])
    return router


# Watches the tabs' Generate buttons and their status lines (`<tab>_html_log`, which the job's
# result rewrites; gradio's progress text lives in a separate element of the block) and galleries.
NOTIFICATIONS_HEAD = """
<script>
(() => {
  const TABS = ['txt2img', 'img2img', 'extras'];
  const pending = new Map();  // tab -> {text, image}: its status line and first picture when Generate was pressed
  let asked = false;
  const tr = (text) => (typeof window.getTranslation === 'function' && window.getTranslation(text)) || text;
  const statusText = (tab) => {
    const block = document.getElementById(tab + '_html_log');
    if (!block) return '';
    const shown = block.querySelector('.prose') || block.querySelector('[data-testid="html"]') || block;
    return (shown.textContent || '').trim();
  };
  const galleryImages = (tab) => {
    const gallery = document.getElementById(tab + '_gallery');
    const sources = gallery ? Array.from(gallery.querySelectorAll('img')).map((img) => img.src).filter(Boolean) : [];
    return Array.from(new Set(sources));
  };
  const inBackground = () => document.hidden || !document.hasFocus();
  const root = () => ((window.gradio_config && window.gradio_config.root) || '').replace(/\\/+$/, '');
  const url = (path) => (root() ? root() + '/' + path : path);

  document.addEventListener('click', (event) => {
    const button = event.target && event.target.closest && event.target.closest(TABS.map((t) => '#' + t + '_generate').join(', '));
    if (!button) return;
    const tab = button.id.replace(/_generate$/, '');
    pending.set(tab, {text: statusText(tab), image: galleryImages(tab)[0] || ''});
    if (!asked && 'Notification' in window && Notification.permission === 'default') {
      asked = true;
      try { Promise.resolve(Notification.requestPermission()).catch(() => {}); } catch (e) { /* old Safari */ }
    }
  }, true);

  function tone(volume) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    const context = new Context();
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.type = 'sine';
    oscillator.frequency.value = 880;
    const now = context.currentTime || 0;
    gain.gain.setValueAtTime(0.25 * volume, now);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + 0.4);
    oscillator.connect(gain);
    gain.connect(context.destination);
    oscillator.start(now);
    oscillator.stop(now + 0.4);
    if (context.resume) Promise.resolve(context.resume()).catch(() => {});
  }

  async function finished(tab) {
    let settings = {audio: true, volume: 100, sound: null};
    try {
      const answer = await fetch(url('internal/notification'), {credentials: 'same-origin'});
      if (answer.ok) settings = await answer.json();
    } catch (e) { /* keep the defaults */ }
    const images = galleryImages(tab);
    const pictures = images.filter((src) => !/\\/grid-[^\\/]*$/.test(decodeURIComponent(src.split('?')[0])));
    const count = pictures.length || images.length;
    let body = count === 1 ? tr('1 image ready') : count > 1 ? tr(count + ' images ready') : statusText(tab);
    if (!body) body = tr('The job has finished.');
    if ('Notification' in window && Notification.permission === 'granted') {
      try {
        const note = new Notification('Stable Diffusion', {body: body, icon: images[0] || undefined});
        note.onclick = function () { window.focus(); this.close(); };
      } catch (e) { /* a browser without page notifications (Android Chrome) */ }
    }
    if (settings.audio) {
      const volume = Math.max(0, Math.min(100, Number(settings.volume))) / 100;
      if (settings.sound) {
        const audio = new Audio(url(settings.sound));
        audio.volume = volume;
        Promise.resolve(audio.play()).catch(() => tone(volume));
      } else {
        tone(volume);
      }
    }
  }

  // gradio's progress overlay in the status block: shown while the job runs, hidden ("hide") after.
  const running = (tab) => {
    const tracker = document.querySelector('#' + tab + '_html_log [data-testid="status-tracker"]');
    return !!tracker && !tracker.classList.contains('hide');
  };

  function check() {
    for (const [tab, before] of Array.from(pending)) {
      if (running(tab)) continue;
      // A job that failed changes neither: it stays pending until the next press resets it.
      if (statusText(tab) === before.text && (galleryImages(tab)[0] || '') === before.image) continue;
      pending.delete(tab);
      if (inBackground()) finished(tab);
    }
  }

  // Mutation callbacks run in a background tab too (timers there may wait a minute).
  new MutationObserver(() => { if (pending.size) check(); })
    .observe(document.documentElement, {childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ['class']});
})();
</script>
"""
