// Labeling queue: number keys pick a label, S skips, B goes back; with many labels a filter
// box narrows the buttons and Enter picks the only one left. Keys are ignored while typing.
(function () {
  "use strict";
  const form = document.querySelector("[data-testid=label-form]");
  if (!form) return;
  const filter = form.querySelector("[data-label-filter]");
  const buttons = Array.from(form.querySelectorAll("button[name=label]"));
  let sent = false;

  function pick(button) {
    if (sent || !button) return;
    sent = true; // one label per keypress, even if a key repeats before the page changes
    form.requestSubmit(button);
  }
  form.addEventListener("submit", () => { sent = true; });

  function visible() {
    return buttons.filter((button) => !button.hidden);
  }

  if (filter) {
    filter.addEventListener("input", () => {
      const wanted = filter.value.trim().toLowerCase();
      buttons.forEach((button) => {
        button.hidden = wanted !== "" && !button.value.toLowerCase().includes(wanted);
      });
    });
    filter.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        const left = visible();
        if (left.length === 1) pick(left[0]);
      }
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable)) return;
    const key = event.key.toLowerCase();
    const keyed = form.querySelector(`button[data-key="${CSS.escape(key)}"]`);
    if (keyed) {
      event.preventDefault();
      pick(keyed);
    } else if (key === "s") {
      const skip = document.querySelector("[data-key-skip]");
      if (skip) window.location.href = skip.href;
    } else if (key === "b") {
      const back = document.querySelector("[data-key-back]");
      if (back) window.location.href = back.href;
    }
  });
  form.dataset.keys = "ready";
})();
