// Search page: each trial's validation score and the best so far (Chart.js, served locally).
// The live part is swapped by htmx every 3 s while the search runs, so the chart is redrawn.
(function () {
  function draw() {
    const canvas = document.getElementById("search-chart");
    const source = document.getElementById("search-chart-data");
    if (!window.Chart || !canvas || !source) return;
    const chart = JSON.parse(source.textContent);
    const old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    const colours = { succeeded: "#027a48", pruned: "#b54708", running: "#175cd3", queued: "#98a2b3", failed: "#b42318", cancelled: "#98a2b3" };
    new window.Chart(canvas, {
      type: "line",
      data: {
        datasets: [
          {
            label: "trial score (" + chart.metric + ")",
            data: chart.points.filter((p) => p.y !== null),
            showLine: false,
            pointRadius: 5,
            pointBackgroundColor: chart.points.filter((p) => p.y !== null).map((p) => colours[p.status] || "#344054"),
          },
          { label: "best so far", data: chart.best.filter((p) => p.y !== null), stepped: true, pointRadius: 0 },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        scales: { x: { type: "linear", title: { display: true, text: "trial" }, ticks: { precision: 0 } }, y: { title: { display: true, text: "validation " + chart.metric } } },
      },
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  document.addEventListener("htmx:afterSettle", draw);
})();
