// Small console behaviours; htmx does the rest. Pages carry no inline script or handler (the
// Content-Security-Policy allows scripts from this site's files only): they mark elements with
// data attributes and these listeners act on them.
document.body.addEventListener("htmx:responseError", (event) => {
  const target = event.detail.target;
  if (target) target.setAttribute("data-error", "The server did not answer; retrying.");
});

// <form data-confirm="Delete ...?">: asks before the form is sent; Cancel sends nothing.
document.addEventListener("submit", (event) => {
  if (event.defaultPrevented) return; // not being sent anyway: nothing to ask
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) event.preventDefault();
});

// <button data-copy="selector">: copies the text of the element the selector names.
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  if (navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent).then(() => {
      button.textContent = "Copied";
    });
  } else {
    window.getSelection().selectAllChildren(source);
    button.textContent = "Selected: press Ctrl+C";
  }
});

// <div hx-trigger="every 5s" data-pause-while="selector">: a refresh is skipped while anything
// inside matches the selector (a menu in use, an open details, an error being read), so the
// swap does not take it away from under the user.
document.body.addEventListener("htmx:beforeRequest", (event) => {
  const element = event.detail.elt;
  const pauseWhile = element && element.dataset ? element.dataset.pauseWhile : undefined;
  if (pauseWhile && element.querySelector(pauseWhile)) event.preventDefault();
});
