// The review page: answer with one key (1-9 and 0: the ten categories, o: not in the
// catalog, s: skip; u: undo the last answer) or one click; the answer is posted with
// fetch and the next item replaces this one without a reload. Without this script
// every button is a plain form post.
"use strict";
const main = document.getElementById("main");
let sending = false;

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const key = CSS.escape(event.key.toLowerCase());
  const button = main.querySelector(`form button[data-key="${key}"]`);
  if (button) {
    event.preventDefault();
    button.click();
  }
});

main.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("form.answers, form.undo")) return;
  event.preventDefault();
  if (sending) return;
  sending = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      body: new URLSearchParams(new FormData(form, event.submitter)),
      headers: { "X-Review-Partial": "1" },
      credentials: "same-origin",
    });
    if (response.redirected || !response.ok) {
      window.location.assign(response.redirected ? response.url : window.location.href);
      return;
    }
    main.innerHTML = await response.text();
  } finally {
    sending = false;
  }
});
