"""The JavaScript helpers A1111 extensions' javascript/*.js call, defined before those files run.

A1111's page offers globals that most extension scripts use: `gradioApp()` (the root to
query), `onUiLoaded(fn)` (once, when the page's controls exist: gradio draws them in
steps, so once the page has been still for 300 ms after the prompt box appeared), `onAfterUiUpdate(fn)` (after
page changes, at most every 200 ms), `onUiUpdate(fn)` (each change, with the mutation records),
`onUiTabChange(fn)` (the top tab changed), `onOptionsChanged(fn)` (here: once, when the page
has loaded, as A1111 calls it when the settings arrive), and `get_uiCurrentTab()`,
`get_uiCurrentTabContent()`, `uiElementIsVisible(el)`. Without them an A1111 extension's script
fails on its first line. A callback that throws is logged in the console; the others still run.
"""

from __future__ import annotations

EXTENSION_JS_HEAD = """
<script>
(() => {
  const lists = {loaded: [], update: [], after: [], tab: [], options: []};
  const run = (name, list, ...args) => {
    for (const fn of list) {
      try { fn(...args); } catch (e) { console.error(`Extension callback ${name} failed:`, e); }
    }
  };
  window.gradioApp = () => {
    const app = document.querySelector('gradio-app');
    return (app && app.shadowRoot) || app || document;
  };
  window.get_uiCurrentTab = () => gradioApp().querySelector('#tabs > .tab-nav > button.selected, #tabs button[role=tab][aria-selected=true]');
  window.get_uiCurrentTabContent = () => [...gradioApp().querySelectorAll('#tabs > .tabitem, #tabs [role=tabpanel]')]
    .find((el) => el.offsetParent !== null) || null;
  window.uiElementIsVisible = (el) => {
    if (!el) return false;
    if (el === document) return true;
    const style = getComputedStyle(el);
    return style.display !== 'none' && style.visibility !== 'hidden' && (el.parentElement ? uiElementIsVisible(el.parentElement) : true);
  };
  window.uiElementInSight = (el) => {
    const box = el.getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  };
  window.onUiLoaded = (fn) => lists.loaded.push(fn);
  window.onUiUpdate = (fn) => lists.update.push(fn);
  window.onAfterUiUpdate = (fn) => lists.after.push(fn);
  window.onUiTabChange = (fn) => lists.tab.push(fn);
  window.onOptionsChanged = (fn) => lists.options.push(fn);

  let loaded = false, seen = 0, loadTimer = null, afterTimer = null, tab = null;
  const tabKey = () => {
    const button = get_uiCurrentTab();
    return button ? (button.dataset.tabId || button.textContent) : null;
  };
  const load = () => {
    if (loaded) return;
    loaded = true;
    tab = tabKey();
    run('onUiLoaded', lists.loaded);
    run('onOptionsChanged', lists.options);
  };
  const observer = new MutationObserver((records) => {
    if (!loaded) {
      if (!gradioApp().querySelector('#txt2img_prompt')) return;
      seen = seen || Date.now();
      clearTimeout(loadTimer);  // gradio draws the page in steps: wait until it has been still for 300 ms (3 s at most)
      loadTimer = setTimeout(load, Math.max(0, Math.min(300, seen + 3000 - Date.now())));
      return;
    }
    run('onUiUpdate', lists.update, records);
    clearTimeout(afterTimer);
    afterTimer = setTimeout(() => run('onAfterUiUpdate', lists.after), 200);
    const now = tabKey();
    if (now !== null && now !== tab) {
      tab = now;
      run('onUiTabChange', lists.tab);
    }
  });
  observer.observe(document, {childList: true, subtree: true, attributes: true, attributeFilter: ['class', 'aria-selected']});
})();
</script>
"""
