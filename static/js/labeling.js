// Labeling page.
//
// Everywhere: number keys pick a label (or tick it, where a record may have several, and Enter
// saves), S skips, B goes back, ? shows the keys (Esc closes them). Keys are ignored while typing.
// With more labels than keys (over 10) a filter box finds them: typing narrows the buttons (every
// word typed is somewhere in the label; _ and - count as spaces), Enter gives the first match (or
// the one ↑/↓ moved to), Esc empties the box and then leaves it, / comes back to it. While the box
// is empty the usual keys still work from it: a number key picks its label, Enter accepts the
// model's suggestion, Backspace undoes, ? shows the keys. In the queue the box has the focus.
//
// In the queue (one label per record, the page has a #labeling-config), the page works without
// reloading: the next record is fetched ahead, so a key shows it at once; the label goes into an
// outbox (kept in localStorage) that is sent in order, each with a key made here so that a label
// sent again after a lost answer is applied once. If the server cannot be reached a banner says
// so and the outbox is retried with growing waits; nothing is dropped without a message. A model
// suggestion is highlighted and Enter accepts it. U or Backspace undoes the last label given
// here; the speed line counts records per minute since the page was opened. Where a record may
// have several labels (config.multiple), number keys tick and untick labels and Enter saves the
// ticked set, or, before any is ticked or unticked, accepts the model's suggested set; the set
// goes through the same outbox as one label ("a|b").
(function () {
  "use strict";
  const form = document.querySelector("[data-testid=label-form]");
  const help = document.querySelector("[data-testid=help-overlay]");

  function typingIn(target) {
    return target && ((target.tagName === "INPUT" && target.type !== "checkbox") ||
      target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable);
  }

  function helpKeys(event) {
    // ? opens the list of keys, Esc (or ? again) closes it. True when the key was used.
    if (!help) return false;
    if (event.key === "?") {
      help.hidden = !help.hidden;
      if (!help.hidden) help.focus();
      return true;
    }
    if (event.key === "Escape" && !help.hidden) {
      help.hidden = true;
      return true;
    }
    return !help.hidden; // while it is open, other keys do nothing
  }
  if (help) {
    help.querySelectorAll("[data-close]").forEach((button) =>
      button.addEventListener("click", () => { help.hidden = true; }));
  }

  function labelFilter(box, buttons, actions) {
    // The filter box of a page with many labels. ``actions``: pick(button) gives (or ticks) a
    // label; key(event) is the page's own handling of a key typed while the box is empty (a
    // number key, Enter, Backspace, ?), true when it used it; after a label the box empties.
    let active = -1; // the match ↑/↓ moved to (-1: the first)
    const words = (text) => text.toLowerCase().replace(/[_\-\s]+/g, " ").trim();
    const labels = new Map(buttons.map((button) => {
      const input = button.querySelector("input");
      return [button, (input ? input.value : button.value) || button.textContent.trim()];
    }));
    const names = new Map(buttons.map((button) => [button, words(labels.get(button))]));
    const countNode = box.parentElement.querySelector("[data-filter-count]");
    const hint = countNode ? countNode.textContent : ""; // said while the box is empty
    function matches() {
      return buttons.filter((button) => !button.hidden);
    }
    function mark() {
      const left = matches();
      const chosen = box.value.trim() || active >= 0 ? left[Math.max(active, 0)] : null;
      buttons.forEach((button) => button.classList.toggle("filter-active", button === chosen));
      if (countNode) {
        countNode.textContent = !box.value.trim() ? hint : left.length === 0
          ? `No label contains “${box.value.trim()}”: Esc empties the box.`
          : `${left.length} of ${buttons.length} labels; Enter ${actions.verb || "gives"} ` +
            `“${labels.get(chosen)}”.`;
      }
      return chosen;
    }
    function apply() {
      const wanted = words(box.value).split(" ").filter(Boolean);
      buttons.forEach((button) => {
        button.hidden = !wanted.every((word) => names.get(button).includes(word));
      });
      active = -1;
      mark();
    }
    function clear() {
      box.value = "";
      apply();
    }
    box.addEventListener("input", apply);
    box.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const empty = box.value === "";
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const left = matches().length;
        if (!left) return;
        // From the match marked now (the first while text is typed; none in an empty box).
        const at = box.value.trim() || active >= 0 ? Math.max(active, 0) : -1;
        if (event.key === "ArrowDown") active = (at + 1) % left;
        else active = at <= 0 ? left - 1 : at - 1;
        const chosen = mark();
        if (chosen) chosen.scrollIntoView({ block: "nearest" });
      } else if (event.key === "Enter" && (empty && active < 0)) {
        // Never the form's own submission (it would give the first button's label).
        event.preventDefault();
        actions.key(event);
      } else if (event.key === "Enter") {
        event.preventDefault();
        const chosen = mark();
        if (!chosen) return; // nothing matches: the line under the box says so
        clear();
        actions.pick(chosen);
      } else if (event.key === "Escape") {
        event.preventDefault();
        if (empty && active < 0) box.blur();
        else clear();
      } else if (empty && actions.key(event)) {
        event.preventDefault();
      }
    });
    // / goes back to the box from anywhere on the page.
    document.addEventListener("keydown", (event) => {
      if (event.key === "/" && !typingIn(event.target) && (!help || help.hidden)) {
        event.preventDefault();
        box.focus();
      }
    });
    if (help) {
      // Closing the keys overlay returns to the box.
      new MutationObserver(() => { if (help.hidden) box.focus(); })
        .observe(help, { attributes: true, attributeFilter: ["hidden"] });
    }
    return { clear, focus: () => box.focus() };
  }

  if (!form) {
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typingIn(event.target)) return;
      if (helpKeys(event)) event.preventDefault();
    });
    return;
  }
  const configNode = document.getElementById("labeling-config");
  if (configNode) queue(JSON.parse(configNode.textContent));
  else classic();

  // ---------------------------------------------------------------- one page per record
  function classic() {
    const filter = form.querySelector("[data-label-filter]");
    const buttons = Array.from(form.querySelectorAll("button[name=label], .label-toggle"));
    let sent = false;

    function pick(button) {
      if (sent || !button) return;
      sent = true; // one label per keypress, even if a key repeats before the page changes
      form.requestSubmit(button);
    }
    form.addEventListener("submit", () => { sent = true; });

    if (filter) {
      labelFilter(filter, buttons, {
        verb: buttons.some((button) => button.querySelector("input")) ? "ticks" : "gives",
        pick(button) {
          const box = button.querySelector("input[type=checkbox]");
          if (box) box.checked = !box.checked; // several labels: tick it, Enter saves
          else pick(button);
        },
        key(event) {
          // From the empty box: ? and the number keys as anywhere else, Enter saves ticks.
          if (event.key === "?") return helpKeys(event);
          return keys(event);
        },
      });
    }

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (typingIn(event.target)) return;
      if (helpKeys(event)) { event.preventDefault(); return; }
      if (keys(event)) event.preventDefault();
    });

    function keys(event) {
      // The page's keys; true when the key was used.
      const target = event.target;
      const key = event.key.toLowerCase();
      const keyed = form.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (keyed && keyed.type === "checkbox") {
        keyed.checked = !keyed.checked; // several labels: keys tick, Enter saves
      } else if (keyed) {
        pick(keyed);
      } else if (key === "enter" && form.querySelector("[data-save]") &&
                 (target === document.body || form.contains(target))) {
        // Enter on a link or another form's button keeps its own meaning.
        pick(form.querySelector("[data-save]"));
      } else if (key === "s" && !typingIn(target)) {
        const skip = document.querySelector("[data-key-skip]");
        if (skip) window.location.href = skip.href;
      } else if (key === "b" && !typingIn(target)) {
        const back = document.querySelector("[data-key-back]");
        if (back) window.location.href = back.href;
      } else {
        return false;
      }
      return true;
    }
    form.dataset.keys = "ready";
  }

  // ---------------------------------------------------------------- the queue, without reloads
  function queue(config) {
    const card = document.querySelector("[data-testid=label-record]");
    const textNode = card.querySelector("[data-testid=label-text]");
    const metaNode = card.querySelector("[data-testid=record-meta]");
    const columnsNode = card.querySelector("[data-testid=record-metadata]");
    const stateNode = card.querySelector("[data-testid=record-label-state]");
    const suggestionNode = card.querySelector("[data-testid=suggestion]");
    const errorNode = card.querySelector("[data-testid=label-error]");
    const doneNode = card.querySelector("[data-testid=queue-done]");
    const statusNode = document.querySelector("[data-testid=label-status]");
    const banner = document.querySelector("[data-testid=connection-banner]");
    const speedNode = document.querySelector("[data-testid=speed]");
    const buttons = Array.from(form.querySelectorAll("button[name=label]"));
    const multiple = Boolean(config.multiple);
    const boxes = Array.from(form.querySelectorAll("input[type=checkbox][name=label]"));
    const saveButton = form.querySelector("[data-save]");
    let ticked = new Set(); // several labels: the labels ticked for the record shown
    let touched = false; // several labels: whether a label was ticked or unticked since shown
    const pageCsrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
    function csrf() {
      // The cookie's current token: logging in again (another tab) replaces the page's one.
      const cookie = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
      return cookie ? decodeURIComponent(cookie.slice("csrftoken=".length)) : pageCsrf;
    }
    const storeKey = `lepton-labeling-outbox-${config.dataset}-${config.user}`;
    const openedAt = Date.now();
    const MAX_WAIT_MS = 30000;
    const AHEAD = 2; // records fetched ahead of the one shown

    let current = config.record; // what is shown; null while loading or when nothing is left
    let shownAt = performance.now();
    const ahead = []; // records fetched ahead, held for this person on the server
    let after = current ? current.id : null;
    let fetching = false;
    let exhausted = false;
    let fetchWait = 1000;
    let outbox = loadOutbox(); // labels not yet confirmed by the server, oldest first
    let sending = null; // the promise of the request in flight
    let sendWait = 1000;
    let retryTimer = null;
    const given = []; // labels given in this sitting: {record, key}, for undo
    let count = 0; // records labeled in this sitting (undone ones taken off)

    function loadOutbox() {
      try {
        const saved = JSON.parse(window.localStorage.getItem(storeKey) || "[]");
        return Array.isArray(saved) ? saved : [];
      } catch (error) {
        return [];
      }
    }
    const settled = new Set(); // keys this page saw confirmed, refused or undone
    function saveOutbox() {
      // How many labels wait to be confirmed, for people (the banner) and tests alike.
      document.querySelector("[data-testid=labeling-progress]").dataset.waiting = outbox.length;
      try {
        // Another tab on this dataset keeps its waiting labels in the same place: left there.
        // (A label sent by two tabs is applied once: the server knows its key.)
        const mine = new Set(outbox.map((item) => item.key));
        const others = loadOutbox().filter((item) => item && !mine.has(item.key) &&
          !settled.has(item.key));
        window.localStorage.setItem(storeKey, JSON.stringify(others.concat(outbox)));
      } catch (error) { /* private mode: the outbox still lives in this page */ }
    }
    function newKey() {
      if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
      return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 14)}`;
    }

    function say(text, kind) {
      statusNode.textContent = text;
      statusNode.className = `small ${kind === "error" ? "error-text" : "muted"}`;
    }

    function connection(lost, waitMs) {
      if (!lost) {
        banner.hidden = true;
        return;
      }
      const waiting = outbox.length;
      const labels = waiting === 1 ? "1 label is" : `${waiting} labels are`;
      banner.hidden = false;
      banner.textContent = `Connection lost. ${waiting ? `${labels} waiting here and will be ` +
        "sent when it is back; nothing is lost. " : ""}Trying again in ${Math.round(waitMs / 1000)} s.`;
    }

    function progress(figures) {
      if (!figures) return;
      const node = document.querySelector("[data-testid=labeling-progress]");
      node.querySelector("[data-progress-text]").textContent =
        `${figures.labeled.toLocaleString()} of ${figures.total.toLocaleString()} records labeled · ` +
        `${figures.unlabeled.toLocaleString()} to go`;
      node.querySelector("[data-progress-mine]").textContent =
        `you labeled ${figures.mine_today.toLocaleString()} today`;
      const bar = node.querySelector(".progress");
      bar.setAttribute("aria-valuenow", figures.percent);
      bar.querySelector(".progress-bar").style.width = `${figures.percent}%`;
    }

    function speed() {
      const minutes = (Date.now() - openedAt) / 60000;
      // A rate from one or two labels says little (one label a second after opening the page
      // is not 60 a minute): shown from the third on.
      // Until then the line says so in words, not as a dash.
      if (count >= 3 && minutes > 0) {
        speedNode.textContent =
          `${(count / minutes).toFixed(1)} records/min in this sitting (${count} labeled)`;
      } else if (count === 0) {
        speedNode.textContent = "no labels yet in this sitting";
      } else {
        speedNode.textContent =
          `${count} labeled in this sitting; the speed shows from the third label`;
      }
    }
    window.setInterval(speed, 5000);

    let shownError = config.error || ""; // why the record shown came back, if it did

    function render() {
      const error = shownError;
      card.dataset.recordId = current ? current.id : "";
      card.dataset.ahead = ahead.length; // records fetched ahead (for tests)
      const showing = Boolean(current);
      form.hidden = !showing && exhausted;
      doneNode.hidden = showing || !exhausted;
      buttons.forEach((button) => {
        button.disabled = !showing;
        button.classList.toggle("btn-primary", showing && button.value === current.label);
        button.classList.toggle("suggested", Boolean(showing && current.suggestion &&
          button.value === current.suggestion.label));
      });
      if (multiple) {
        const suggested = new Set(showing && current.suggestion
          ? splitLabels(current.suggestion.label) : []);
        boxes.forEach((box) => {
          box.disabled = !showing;
          box.checked = showing && ticked.has(box.value);
          const toggle = box.closest(".label-toggle") || box;
          toggle.classList.toggle("suggested", suggested.has(box.value));
          toggle.classList.toggle("ticked", box.checked);
        });
        if (saveButton) saveButton.disabled = !showing;
      }
      errorNode.textContent = error || "";
      errorNode.hidden = !error;
      if (!showing) {
        textNode.textContent = exhausted ? "" : "Loading the next record…";
        metaNode.textContent = "";
        columnsNode.hidden = true;
        stateNode.textContent = "";
        suggestionNode.hidden = true;
        return;
      }
      textNode.textContent = current.text;
      metaNode.textContent = current.meta;
      const columns = Object.entries(current.metadata || {});
      columnsNode.hidden = !columns.length;
      columnsNode.querySelector("tbody").replaceChildren(...columns.map(([name, value]) => {
        const row = document.createElement("tr");
        const head = document.createElement("th");
        const cell = document.createElement("td");
        head.textContent = name;
        cell.textContent = value === null || typeof value !== "object" ? String(value ?? "")
          : JSON.stringify(value);
        row.append(head, cell);
        return row;
      }));
      stateNode.replaceChildren();
      if (current.label) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.dataset.testid = "current-label";
        badge.textContent = current.label;
        stateNode.append("Labeled ", badge);
      } else {
        const none = document.createElement("span");
        none.className = "muted";
        none.textContent = "No label yet";
        stateNode.append(none);
      }
      const suggestion = current.suggestion;
      suggestionNode.hidden = !suggestion;
      if (suggestion) {
        suggestionNode.querySelector("[data-suggestion-label]").textContent = multiple
          ? splitLabels(suggestion.label).join(", ") : suggestion.label;
        suggestionNode.querySelector("[data-suggestion-probability]").textContent =
          suggestion.probability === null ? "" : `${Math.round(suggestion.probability * 100)}%`;
      }
    }

    function splitLabels(label) {
      return (label || "").split("|").map((part) => part.trim()).filter(Boolean);
    }

    function show(record, error) {
      current = record;
      ticked = new Set(record ? splitLabels(record.label) : []);
      touched = false;
      shownError = error || "";
      shownAt = performance.now();
      render();
      fetchAhead();
    }

    function advance() {
      if (ahead.length) show(ahead.shift());
      else show(null);
    }

    function held() {
      // Records this person still needs held on the server: shown, fetched ahead, or labeled
      // here and not yet sent.
      const ids = new Set(ahead.map((record) => record.id));
      if (current) ids.add(current.id);
      outbox.forEach((item) => ids.add(item.record_id));
      return Array.from(ids);
    }

    async function request(url, options) {
      const response = await fetch(url, {
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(),
          Accept: "application/json" },
        ...options,
      });
      const json = (response.headers.get("Content-Type") || "").includes("application/json");
      if (response.redirected || !json) {
        // The login page (the session ended) or a proxy's error page: never taken as saved.
        return { status: response.status >= 500 ? response.status : 401, body: {} };
      }
      let body = {};
      try {
        body = await response.json();
      } catch (error) { /* cut off mid-answer */
        return { status: 0, body };
      }
      return { status: response.status, body };
    }
    function unreachable(status) {
      // No answer at all, or one from a proxy or a server in trouble: try again later.
      return status === 0 || status === 408 || status === 429 || status >= 500;
    }

    async function fetchAhead() {
      if (fetching || exhausted || ahead.length >= AHEAD) return;
      fetching = true;
      const query = new URLSearchParams();
      if (after) query.set("after", after);
      const keep = held();
      if (keep.length) query.set("keep", keep.join(","));
      let result;
      try {
        result = await request(`${config.urls.next}?${query}`, { method: "GET" });
      } catch (error) {
        result = { status: 0, body: {} };
      }
      fetching = false;
      if (unreachable(result.status) || result.status === 401 || result.status === 403) {
        connection(true, fetchWait);
        window.setTimeout(fetchAhead, fetchWait);
        fetchWait = Math.min(fetchWait * 2, MAX_WAIT_MS);
        return;
      }
      fetchWait = 1000;
      if (!outbox.length) connection(false);
      if (result.status !== 200) {
        say(result.body.error || "The next record could not be loaded; reload the page.", "error");
        return;
      }
      progress(result.body.progress);
      const record = result.body.record;
      const known = record && (held().includes(record.id));
      if (!record || known) {
        exhausted = true; // nothing left that is not already here
        if (!current) render();
        return;
      }
      after = record.id;
      if (!current) show(record);
      else {
        ahead.push(record);
        render();
        fetchAhead();
      }
    }

    function give(label) {
      if (!current) return;
      const record = current;
      const suggestion = record.suggestion;
      const item = {
        key: newKey(),
        record_id: record.id,
        label,
        expected_label: record.label,
        suggestion_label: suggestion ? suggestion.label : "",
        suggestion_probability: suggestion ? suggestion.probability : null,
        time_spent_ms: Math.round(performance.now() - shownAt),
        text: record.text.slice(0, 60),
      };
      outbox.push(item);
      saveOutbox();
      given.push({ record, key: item.key });
      count += 1;
      speed();
      say("");
      if (filter) {
        filter.clear(); // the next record starts with every label shown
        filter.focus();
      }
      advance();
      send();
    }

    function send() {
      if (sending || !outbox.length) return sending;
      window.clearTimeout(retryTimer);
      const item = outbox[0];
      sending = (async () => {
        let result;
        try {
          result = await request(config.urls.submit, { method: "POST", body: JSON.stringify(item) });
        } catch (error) {
          result = { status: 0, body: {} };
        }
        const loggedOut = result.status === 401 || result.status === 403;
        if (unreachable(result.status) || loggedOut) {
          // Kept, in order, and sent again later with the same key.
          connection(true, sendWait);
          const reason = result.body.detail || result.body.error;
          if (loggedOut && reason) {
            // Refused as a whole (an expired form, a dataset no longer assigned): said, kept.
            say(`Your labels cannot be saved now: ${reason} They wait here and are sent again.`,
              "error");
          } else if (loggedOut) {
            say("Your labels cannot be saved: you were logged out. Log in again in another tab; " +
              "your labels wait here and are sent once you are back.", "error");
          }
          retryTimer = window.setTimeout(send, sendWait);
          sendWait = Math.min(sendWait * 2, MAX_WAIT_MS);
          return;
        }
        sendWait = 1000;
        outbox = outbox.filter((waiting) => waiting.key !== item.key);
        settled.add(item.key);
        saveOutbox();
        connection(false);
        if (result.status === 200) {
          progress(result.body.progress);
        } else {
          // Refused (someone else labeled it meanwhile, or the label is no longer offered):
          // the record comes back as it is now, with the reason.
          const index = given.findIndex((entry) => entry.key === item.key);
          if (index >= 0) {
            given.splice(index, 1);
            count -= 1;
            speed();
          }
          const reason = result.body.error || "The label was refused.";
          if (result.body.record) {
            if (current && current.id !== result.body.record.id) ahead.unshift(current);
            show(result.body.record, reason);
          } else {
            say(`Your label “${item.label}” for “${item.text}” was not saved: ${reason}`, "error");
          }
        }
      })().finally(() => {
        sending = null;
        if (outbox.length && banner.hidden) send();
      });
      return sending;
    }

    async function undo() {
      const last = given[given.length - 1];
      if (!last) {
        say("Nothing to undo: you have not labeled a record since this page was opened.", "error");
        return;
      }
      let index = outbox.findIndex((item) => item.key === last.key);
      if (index === 0 && sending) {
        await sending;
        index = outbox.findIndex((item) => item.key === last.key);
      }
      if (given[given.length - 1] !== last) return; // refused meanwhile: already back
      if (index >= 0) {
        // Not sent yet: simply not sent.
        settled.add(outbox[index].key);
        outbox.splice(index, 1);
        saveOutbox();
        given.pop();
        count -= 1;
        speed();
        if (current) ahead.unshift(current);
        show(last.record);
        say(`Undone: “${last.record.text.slice(0, 60)}” is back without your label.`);
        return;
      }
      let result;
      try {
        result = await request(config.urls.undo, {
          method: "POST", body: JSON.stringify({ record_id: last.record.id }),
        });
      } catch (error) {
        result = { status: 0, body: {} };
      }
      if (unreachable(result.status) || result.status === 401 || result.status === 403) {
        say(result.status >= 401 && result.status <= 403
          ? "You were logged out, so the label cannot be undone now; log in again and retry."
          : "The server cannot be reached, so the label cannot be undone now; try again.", "error");
        return;
      }
      given.pop();
      if (result.status !== 200) {
        say(result.body.error || "That label can no longer be undone.", "error");
        return;
      }
      count -= 1;
      speed();
      progress(result.body.progress);
      if (current) ahead.unshift(current);
      show(result.body.record);
      say(`Undone: “${result.body.record.text.slice(0, 60)}” has its earlier label back.`);
    }

    function toggle(label) {
      // Several labels: a number key (or a click) ticks or unticks one; Enter saves them.
      if (!current) return;
      if (ticked.has(label)) ticked.delete(label);
      else ticked.add(label);
      touched = true;
      say("");
      render();
    }

    function saveTicked() {
      // Several labels: Enter (or Save) gives the ticked set, in the list's order; before any
      // label was ticked or unticked, the model's suggested set when one is shown.
      if (!current) return;
      if (!touched && current.suggestion) {
        give(current.suggestion.label);
        return;
      }
      const labels = boxes.map((box) => box.value).filter((label) => ticked.has(label));
      if (!labels.length) {
        say("Tick at least one label with its number key, then press Enter to save.", "error");
        return;
      }
      give(labels.join("|"));
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault(); // a click on a label button: the same as its key
      if (multiple) saveTicked();
      else if (event.submitter && event.submitter.value) give(event.submitter.value);
    });
    boxes.forEach((box) => box.addEventListener("change", () => {
      if (box.checked !== ticked.has(box.value)) toggle(box.value);
    }));
    const undoButton = document.querySelector("[data-undo]");
    if (undoButton) undoButton.addEventListener("click", undo);

    function keys(event) {
      // The queue's keys; true when the key was used. From the empty filter box: the number
      // keys, Enter and Backspace (letters go into the box).
      const target = event.target;
      const typing = typingIn(target);
      const key = event.key.toLowerCase();
      const keyed = current && form.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (keyed) {
        if (multiple) toggle(keyed.value);
        else give(keyed.value);
      } else if (key === "enter" && (target === document.body || form.contains(target))) {
        if (multiple) saveTicked();
        else if (current && current.suggestion) give(current.suggestion.label);
        else if (current) {
          say(filter ? "This record has no model suggestion to accept: type a label's name " +
            "or press its key." : "This record has no model suggestion to accept: press a " +
            "label's key.");
        }
      } else if ((key === "u" && !typing) || key === "backspace") {
        undo();
      } else if (key === "s" && current && !typing) {
        advance(); // the record is let go by the next fetch
      } else if (key === "b" && !typing) {
        const last = given[given.length - 1];
        const back = document.querySelector("[data-key-back]");
        if (last) window.location.href = `?record=${last.record.id}`;
        else if (back) window.location.href = back.href;
      } else {
        return false;
      }
      return true;
    }

    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (typingIn(event.target)) return;
      if (helpKeys(event)) { event.preventDefault(); return; }
      if (keys(event)) event.preventDefault();
    });

    // Many labels: the filter box, focused, so that typing a label's name finds it.
    const filterBox = form.querySelector("[data-label-filter]");
    const filter = filterBox && labelFilter(filterBox,
      multiple ? Array.from(form.querySelectorAll(".label-toggle")) : buttons, {
        verb: multiple ? "ticks" : "gives",
        pick(item) {
          if (multiple) toggle(item.querySelector("input").value);
          else give(item.value);
        },
        key(event) {
          if (event.key === "?") return helpKeys(event);
          return keys(event);
        },
      });
    if (filter) filter.focus();
    window.addEventListener("online", () => {
      sendWait = 1000;
      fetchWait = 1000;
      send();
      fetchAhead();
    });

    render();
    saveOutbox();
    speed();
    fetchAhead();
    send(); // labels left waiting by an earlier page
    form.dataset.keys = "ready";
  }
})();
