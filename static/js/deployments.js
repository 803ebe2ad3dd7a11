// Deployments page: p50/p95 latency per minute over the last hour (Chart.js, served locally).
// The endpoint list is refreshed by htmx every few seconds, so charts are drawn after each swap.
(function () {
  function draw() {
    if (!window.Chart) return;
    document.querySelectorAll("canvas.latency-chart").forEach(function (canvas) {
      const source = document.getElementById(canvas.dataset.seriesId);
      if (!source) return;
      const series = JSON.parse(source.textContent);
      const old = window.Chart.getChart(canvas);
      if (old) old.destroy();
      new window.Chart(canvas, {
        type: "line",
        data: {
          labels: series.map((p) => p.minute.slice(11, 16)),
          datasets: [
            { label: "p50 (ms)", data: series.map((p) => p.p50_ms), spanGaps: true },
            { label: "p95 (ms)", data: series.map((p) => p.p95_ms), spanGaps: true },
            { label: "requests", data: series.map((p) => p.requests), yAxisID: "requests", type: "bar" },
          ],
        },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } }, requests: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } } },
        },
      });
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSwap", draw);
})();
