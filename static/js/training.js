// Training pages: live run charts, the runs comparison chart, and the "Compare selected" form.
// Chart.js is served locally (vendor/chartjs); pages without charts do not load it.
(function () {
  "use strict";
  const COLORS = ["#4f46e5", "#12b76a", "#f79009", "#d92d20", "#0ba5ec", "#7a5af8", "#ee46bc", "#667085"];

  function jsonData(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function points(series) {
    return (series || []).map((p) => ({ x: p.step, y: p.value }));
  }

  function lineOptions(yTitle) {
    return {
      maintainAspectRatio: false,
      animation: false,
      parsing: false,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } },
        y: { title: { display: !!yTitle, text: yTitle || "" } },
      },
      plugins: { legend: { display: true, position: "bottom" } },
    };
  }

  function dataset(label, data, index) {
    const color = COLORS[index % COLORS.length];
    return { label, data, borderColor: color, backgroundColor: color, pointRadius: 2, borderWidth: 2, tension: 0.15 };
  }

  // Loss-like metrics (lower is better, unbounded) share the left axis; scores the right one.
  const LOSS_METRICS = ["loss", "mse", "mae"];
  const METRIC_WORDS = {
    macro_f1: "macro-F1", micro_f1: "micro-F1", accuracy: "accuracy", subset_accuracy: "subset accuracy",
    loss: "loss", mse: "MSE", mae: "MAE", r2: "R²", spearman: "Spearman",
  };
  function metricWord(name) { return METRIC_WORDS[name] || name.replace(/_/g, " "); }

  function validationDatasets(series, names, labelOf) {
    return names.map((name, i) => {
      const metric = name.replace(/^val_/, "");
      return {
        ...dataset(labelOf(metric), points(series[name]), i),
        yAxisID: LOSS_METRICS.includes(metric) ? "loss" : "score",
        pointRadius: 4,
        showLine: true,
      };
    });
  }

  function twoAxisOptions() {
    const options = lineOptions("");
    options.scales = {
      x: options.scales.x,
      loss: { type: "linear", position: "left", title: { display: true, text: "loss" }, beginAtZero: true },
      score: { type: "linear", position: "right", title: { display: true, text: "score" }, suggestedMin: 0, suggestedMax: 1, grid: { drawOnChartArea: false } },
    };
    return options;
  }

  // --- run page: one live state (GET data-live-url) drives badge, progress, tiles, events, charts
  const live = document.getElementById("run-live");
  const charts = document.getElementById("run-charts");
  if (live) {
    const hasCharts = charts && typeof Chart !== "undefined";
    let lossChart = null;
    let validationChart = null;
    if (hasCharts) {
      lossChart = new Chart(document.getElementById("loss-chart"), {
        type: "line",
        data: { datasets: [{ ...dataset("training loss", [], 0), pointRadius: 0 }] },
        options: { ...lineOptions("loss"), plugins: { legend: { display: false } } },
      });
      validationChart = new Chart(document.getElementById("validation-chart"), {
        type: "line",
        data: { datasets: [] },
        options: twoAxisOptions(),
      });
    }

    function setText(id, text) {
      const el = document.getElementById(id);
      if (el && el.textContent !== text) el.textContent = text;
    }

    function renderCharts(series) {
      if (!hasCharts) return;
      lossChart.data.datasets[0].data = points(series.train_loss);
      lossChart.update();
      const names = Object.keys(series).filter((name) => name.startsWith("val_")).sort();
      validationChart.data.datasets = validationDatasets(series, names, metricWord);
      validationChart.options.scales.loss.display = names.some((n) => LOSS_METRICS.includes(n.slice(4)));
      validationChart.options.scales.score.display = names.some((n) => !LOSS_METRICS.includes(n.slice(4)));
      validationChart.update();
      const lossEmpty = document.getElementById("loss-chart-empty");
      if (lossEmpty) lossEmpty.hidden = !!(series.train_loss && series.train_loss.length);
      const validationEmpty = document.getElementById("validation-chart-empty");
      if (validationEmpty) validationEmpty.hidden = names.length > 0;
    }

    function renderEvents(state) {
      const list = document.getElementById("run-events-list");
      const empty = document.getElementById("run-events-empty");
      if (!list) return;
      list.replaceChildren(...state.events.map((event) => {
        const item = document.createElement("li");
        item.className = "event event-" + event.kind;
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = event.kind;
        const time = document.createElement("span");
        time.className = "muted small";
        time.title = event.timestamp;
        time.textContent = event.time;
        item.append(badge, " " + event.message + " ", time);
        return item;
      }));
      list.hidden = state.events.length === 0;
      if (empty) {
        empty.hidden = state.events.length > 0;
        empty.textContent = state.events_empty_text;
      }
    }

    function render(state) {
      for (const id of ["run-status", "run-progress-status"]) {
        const badge = document.getElementById(id);
        if (badge) {
          badge.className = "badge badge-" + state.status;
          badge.textContent = state.status_display;
        }
      }
      const progress = document.getElementById("run-progress");
      if (progress) {
        progress.className = "job job-" + state.status;
        progress.dataset.status = state.status;
      }
      const bar = document.getElementById("run-progress-bar");
      if (bar) {
        bar.setAttribute("aria-valuenow", String(state.progress));
        bar.firstElementChild.style.width = state.progress + "%";
      }
      const message = document.getElementById("run-message");
      if (message) {
        message.className = state.error_message ? "error-text" : "";
        message.textContent = state.error_message || state.message;
      }
      setText("run-progress-text", state.progress_text);
      setText("run-steps", state.tiles.steps);
      setText("run-time-left", state.tiles.time_left);
      setText("run-throughput", state.tiles.throughput);
      renderEvents(state);
      renderCharts(state.series || {});
    }

    renderCharts(jsonData("run-metrics-data") || {});

    if (live.dataset.active === "true") {
      let timer = null;
      const poll = () => {
        fetch(live.dataset.liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
          .then((state) => {
            render(state);
            if (!state.is_active) {
              // Ended: the page around the run changes (test report, model version), so reload it.
              clearInterval(timer);
              live.dataset.active = "false";
              window.location.reload();
            }
          })
          .catch(() => {}); // a missed poll is retried by the next tick
      };
      timer = setInterval(poll, 2000);
      poll();
    }
  }

  // --- comparison page ------------------------------------------------------------------------
  const compare = jsonData("compare-data");
  const compareLossCanvas = document.getElementById("compare-loss-chart");
  if (compareLossCanvas && compare && typeof Chart !== "undefined") {
    new Chart(compareLossCanvas, {
      type: "line",
      data: { datasets: compare.runs.map((run, i) => ({ ...dataset(run.name, points(run.train_loss), i), pointRadius: 0 })) },
      options: lineOptions("training loss"),
    });
  }
  const compareCanvas = document.getElementById("compare-chart");
  if (compareCanvas && compare && typeof Chart !== "undefined") {
    const select = document.getElementById("compare-metric");
    const chart = new Chart(compareCanvas, { type: "line", data: { datasets: [] }, options: lineOptions("") });
    const draw = () => {
      const metric = select ? select.value : compare.metrics[0];
      chart.data.datasets = compare.runs.map((run, i) => ({ ...dataset(run.name, points(run.series[metric]), i), pointRadius: 4, showLine: true }));
      chart.options.scales.y.title = { display: true, text: (compare.metric_labels || {})[metric] || metric };
      chart.update();
    };
    if (select) select.addEventListener("change", draw);
    draw();
  }

  // --- run list: "Compare selected" goes to ?runs=1,2,3 ----------------------------------------
  const compareForm = document.getElementById("compare-form");
  if (compareForm) {
    const button = document.getElementById("compare-button");
    const boxes = () => Array.from(compareForm.querySelectorAll('input[name="runs"]:checked'));
    const refresh = () => { if (button) button.disabled = boxes().length < 2; };
    compareForm.addEventListener("change", refresh);
    compareForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const ids = boxes().map((box) => box.value);
      window.location.href = compareForm.action + "?runs=" + ids.join(",");
    });
    refresh();
  }
})();
