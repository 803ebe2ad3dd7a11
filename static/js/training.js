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

  // --- run page -------------------------------------------------------------------------------
  const charts = document.getElementById("run-charts");
  if (charts && typeof Chart !== "undefined") {
    const lossCanvas = document.getElementById("loss-chart");
    const validationCanvas = document.getElementById("validation-chart");
    const lossChart = new Chart(lossCanvas, {
      type: "line",
      data: { datasets: [dataset("training loss", [], 0)] },
      options: { ...lineOptions("loss"), plugins: { legend: { display: false } } },
    });
    const validationChart = new Chart(validationCanvas, {
      type: "line",
      data: { datasets: [] },
      options: lineOptions(""),
    });

    function setText(id, text) {
      const el = document.getElementById(id);
      if (el) el.textContent = text;
    }

    function last(series) {
      return series && series.length ? series[series.length - 1].value : null;
    }

    function render(series, status) {
      lossChart.data.datasets[0].data = points(series.train_loss);
      lossChart.update();
      const names = Object.keys(series).filter((name) => name.startsWith("val_")).sort();
      validationChart.data.datasets = names.map((name, i) => dataset(name.slice(4), points(series[name]), i));
      validationChart.update();
      const lossEmpty = document.getElementById("loss-chart-empty");
      if (lossEmpty) lossEmpty.hidden = !!(series.train_loss && series.train_loss.length);
      const validationEmpty = document.getElementById("validation-chart-empty");
      if (validationEmpty) validationEmpty.hidden = names.length > 0;
      const badge = document.getElementById("run-status");
      if (badge && (status === "queued" || status === "running")) {
        badge.className = "badge badge-" + status;
        badge.textContent = status === "queued" ? "Queued" : "Running";
      }
      if (status === "queued" || status === "running") {
        const speed = last(series.train_examples_per_second);
        const left = last(series.train_seconds_left);
        if (speed !== null) setText("run-throughput", speed.toFixed(1));
        if (left !== null) setText("run-time-left", Math.round(left) + " s");
      }
    }

    render(jsonData("run-metrics-data") || {}, null);

    if (charts.dataset.active === "true") {
      const url = charts.dataset.metricsUrl;
      let timer = null;
      const poll = () => {
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
          .then((body) => {
            render(body.series || {}, body.status);
            if (body.status !== "queued" && body.status !== "running") {
              clearInterval(timer); // finished: the progress component reloads the page
              charts.dataset.active = "false";
            }
          })
          .catch(() => {}); // a missed poll is retried by the next tick
      };
      timer = setInterval(poll, 3000);
      poll();
    }
  }

  // --- comparison page ------------------------------------------------------------------------
  const compareCanvas = document.getElementById("compare-chart");
  const compare = jsonData("compare-data");
  if (compareCanvas && compare && typeof Chart !== "undefined") {
    const select = document.getElementById("compare-metric");
    const chart = new Chart(compareCanvas, { type: "line", data: { datasets: [] }, options: lineOptions("") });
    const draw = () => {
      const metric = select ? select.value : compare.metrics[0];
      chart.data.datasets = compare.runs.map((run, i) => dataset(run.name, points(run.series[metric]), i));
      chart.options.scales.y.title = { display: true, text: metric };
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
