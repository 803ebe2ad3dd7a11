// Labeling queue: number keys pick a label (or tick it, where a record may have several, and
// Enter saves), S skips, B goes back; with many labels a filter box narrows them and Enter
// picks the only one left. Keys are ignored while typing.
(function () {
  "use strict";
  const form = document.querySelector("[data-testid=label-form]");
  if (!form) return;
  const filter = form.querySelector("[data-label-filter]");
  const buttons = Array.from(form.querySelectorAll("button[name=label], .label-toggle"));
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
        const name = (button.value || button.textContent).toLowerCase();
        button.hidden = wanted !== "" && !name.includes(wanted);
      });
    });
    filter.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        const left = visible();
        if (left.length !== 1) return;
        const box = left[0].querySelector("input[type=checkbox]");
        if (box) box.checked = !box.checked; // several labels: tick it, Enter again saves
        else pick(left[0]);
      }
    });
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const typing = target && ((target.tagName === "INPUT" && target.type !== "checkbox") ||
      target.tagName === "TEXTAREA" || target.isContentEditable);
    if (typing) return;
    const key = event.key.toLowerCase();
    const keyed = form.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (keyed && keyed.type === "checkbox") {
      event.preventDefault();
      keyed.checked = !keyed.checked; // several labels: keys tick, Enter saves
    } else if (keyed) {
      event.preventDefault();
      pick(keyed);
    } else if (key === "enter" && form.querySelector("[data-save]") &&
               (target === document.body || form.contains(target))) {
      // Enter on a link or another form's button keeps its own meaning.
      event.preventDefault();
      pick(form.querySelector("[data-save]"));
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
