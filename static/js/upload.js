// Drag-and-drop upload with a progress bar. Falls back to the plain form without JavaScript.
(function () {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = form.querySelector("input[type=file]");
  const zone = document.getElementById("dropzone");
  const bar = form.querySelector(".upload-progress");
  const fill = bar.querySelector(".progress-bar");
  const error = document.getElementById("upload-error");

  function showError(text) { error.textContent = text; error.hidden = false; bar.hidden = true; }

  function send(file) {
    const data = new FormData(form);
    data.set("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) fill.style.width = Math.round((100 * e.loaded) / e.total) + "%";
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status === 201 && body.redirect) { window.location = body.redirect; return; }
      showError(body.detail || "The upload failed (" + xhr.status + "). Try again.");
    });
    xhr.addEventListener("error", () => showError("The connection was lost during the upload. Try again."));
    error.hidden = true; bar.hidden = false; fill.style.width = "0%";
    xhr.send(data);
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!input.files.length) { showError("Choose a file to upload (CSV, TSV, JSON Lines, optionally .gz)."); return; }
    send(input.files[0]);
  });
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]); });
  input.addEventListener("change", () => { if (input.files.length) zone.querySelector("strong").textContent = input.files[0].name; });
})();
