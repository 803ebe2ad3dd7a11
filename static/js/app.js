// Small console behaviours; htmx does the rest.
document.body.addEventListener("htmx:responseError", (event) => {
  const target = event.detail.target;
  if (target) target.setAttribute("data-error", "The server did not answer; retrying.");
});
