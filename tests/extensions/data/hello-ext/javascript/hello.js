// Runs in the page's <head>: mark the document so a test can see extension JavaScript ran.
document.documentElement.dataset.helloExtension = "loaded";

// A1111's page helpers: once the controls exist, and each time the top tab changes.
onUiLoaded(() => {
  document.documentElement.dataset.helloUi = gradioApp().querySelector("#hello_words_txt2img") ? "found" : "missing";
});
onUiTabChange(() => {
  document.documentElement.dataset.helloTab = get_uiCurrentTab().innerText.trim();
});
