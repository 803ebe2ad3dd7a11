// Dataset charts: label distribution and text-length histogram (Chart.js, served locally).
(function () {
  if (typeof Chart === "undefined") return;
  const brand = "#4f46e5";
  function data(id) { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }
  const labels = data("label-chart-data");
  const labelCanvas = document.getElementById("label-chart");
  if (labels && labelCanvas && labels.labels.length) {
    new Chart(labelCanvas, {
      type: "bar",
      data: { labels: labels.labels, datasets: [{ label: "Records", data: labels.values, backgroundColor: brand }] },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { autoSkip: false, maxRotation: 70, font: { size: 10 } } } } },
    });
  }
  const lengths = data("length-chart-data");
  const lengthCanvas = document.getElementById("length-chart");
  if (lengths && lengthCanvas && lengths.counts) {
    const names = lengths.counts.map((_, i) => Math.round(lengths.edges[i]) + "–" + Math.round(lengths.edges[i + 1]));
    new Chart(lengthCanvas, {
      type: "bar",
      data: { labels: names, datasets: [{ label: "Records", data: lengths.counts, backgroundColor: "#12b76a" }] },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { font: { size: 10 } } } } },
    });
  }
})();
