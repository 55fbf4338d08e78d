// Runs in the page's <head>: mark the document so a test can see extension JavaScript ran.
document.documentElement.dataset.helloExtension = "loaded";
