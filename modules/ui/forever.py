"""A1111's "Generate forever": right-click Generate for a menu with "Generate forever" and
"Cancel generate forever". While it is on, each finished generation clicks Generate again,
so the next run reads the controls as they are then (a -1 seed is random each time, an edited
prompt is used), and every run is an ordinary job in the user's lane. Interrupt, the menu, or
a failed run stops it.

The loop lives in the browser, as in A1111: it is per page (each visitor's own), needs no
server state, and ends when the page is closed. The page learns that a run finished from
gradio's own "after this event" hooks (`wire_forever`), not by watching the DOM.
"""

from __future__ import annotations

from typing import Any

# Added to the page's <head>. window.generateForever.done(tab) / .failed(tab) are called by the
# events wire_forever chains after each tab's Generate.
FOREVER_HEAD = """
<style>
#generate_forever_menu { position: absolute; z-index: 10000; background: var(--background-fill-primary, #fff);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px; box-shadow: 0 4px 12px rgba(0,0,0,.25); padding: 4px 0; }
#generate_forever_menu div { padding: 6px 14px; cursor: pointer; white-space: nowrap; }
#generate_forever_menu div:hover { background: var(--color-accent-soft, #eee); }
.generate-forever-on { outline: 3px dashed var(--color-accent, #f97316); outline-offset: 2px; }
.generate-forever-badge { font-size: 0.8em; text-align: center; color: var(--color-accent, #f97316); margin-top: 0.3em; }
</style>
<script>
(() => {
  const TABS = ['txt2img', 'img2img'];
  const on = {}, busy = {};
  const button = (tab) => document.getElementById(tab + '_generate');
  function show(tab) {
    const b = button(tab);
    if (!b) return;
    b.classList.toggle('generate-forever-on', !!on[tab]);
    let badge = document.getElementById(tab + '_generate_forever');
    if (on[tab] && !badge) {
      badge = document.createElement('div');
      badge.id = tab + '_generate_forever';
      badge.className = 'generate-forever-badge';
      badge.textContent = 'Generating forever (right-click Generate to cancel)';
      b.insertAdjacentElement('afterend', badge);
    } else if (!on[tab] && badge) {
      badge.remove();
    }
  }
  function set(tab, value) {
    on[tab] = value;
    show(tab);
    if (value && !busy[tab]) button(tab)?.click();
  }
  function closeMenu() { document.getElementById('generate_forever_menu')?.remove(); }
  function openMenu(tab, x, y) {
    closeMenu();
    const menu = document.createElement('div');
    menu.id = 'generate_forever_menu';
    for (const [label, value] of [['Generate forever', true], ['Cancel generate forever', false]]) {
      const item = document.createElement('div');
      item.textContent = label;
      item.addEventListener('click', (e) => { e.stopPropagation(); closeMenu(); set(tab, value); });
      menu.appendChild(item);
    }
    menu.style.left = x + 'px';
    menu.style.top = y + 'px';
    document.body.appendChild(menu);
  }
  const tabOf = (el, suffix) => {
    const hit = el && el.closest && el.closest(TABS.map((t) => '#' + t + suffix).join(','));
    return hit ? hit.id.split('_')[0] : null;
  };
  document.addEventListener('contextmenu', (e) => {
    const tab = tabOf(e.target, '_generate');
    if (!tab) return;
    e.preventDefault();
    openMenu(tab, e.pageX, e.pageY);
  });
  document.addEventListener('click', (e) => {
    // The loop's own Generate clicks (untrusted) leave an open menu alone.
    if (e.isTrusted && !(e.target.closest && e.target.closest('#generate_forever_menu'))) closeMenu();
    const generating = tabOf(e.target, '_generate');
    if (generating) busy[generating] = true;
    const stopping = tabOf(e.target, '_interrupt');
    if (stopping && on[stopping]) set(stopping, false);
  }, true);
  window.generateForever = {
    done(tab) {
      busy[tab] = false;
      if (on[tab]) setTimeout(() => { if (on[tab] && !busy[tab]) button(tab)?.click(); }, 300);
    },
    failed(tab) { busy[tab] = false; if (on[tab]) set(tab, false); },
    active: (tab) => !!on[tab],
    running: (tab) => !!busy[tab],
    set,
  };
})();
</script>
"""


def wire_forever(event: Any, prefix: str) -> None:
    """Tell the page when `prefix`'s Generate event (the dependency its .click returned) ends:
    after a success the forever loop clicks Generate again; after an error it stops."""
    event.success(None, None, None, js=f"() => {{ window.generateForever && window.generateForever.done('{prefix}'); }}",
                  queue=False, api_name=False)
    event.failure(None, None, None, js=f"() => {{ window.generateForever && window.generateForever.failed('{prefix}'); }}",
                  queue=False, api_name=False)
