// Dataset charts: label distribution and text-length histogram (Chart.js, served locally).
(function () {
  if (typeof Chart === "undefined") return;
  const brand = "#4f46e5";
  function data(id) { const el = document.getElementById(id); return el ? JSON.parse(el.textContent) : null; }
  // Counts are whole records: no 0.5 ticks when the largest bar is 1 or 2.
  const countAxis = { beginAtZero: true, ticks: { precision: 0 } };
  const labels = data("label-chart-data");
  const labelCanvas = document.getElementById("label-chart");
  if (labels && labelCanvas && labels.labels.length) {
    new Chart(labelCanvas, {
      type: "bar",
      data: { labels: labels.labels, datasets: [{ label: "Records", data: labels.values, backgroundColor: brand }] },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { autoSkip: false, maxRotation: 70, font: { size: 10 } } }, y: countAxis } },
    });
  }
  const lengths = data("length-chart-data");
  const lengthCanvas = document.getElementById("length-chart");
  if (lengths && lengthCanvas && lengths.counts) {
    // Bins are [start, end) in whole characters, the last one also holding every longer text:
    // "12", "10–14", "40 or more".
    const last = lengths.counts.length - 1;
    const names = lengths.counts.map((_, i) => {
      const start = Math.round(lengths.edges[i]);
      const end = Math.round(lengths.edges[i + 1]) - 1;
      if (i === last) return start + " or more";
      return end > start ? start + "–" + end : String(start);
    });
    new Chart(lengthCanvas, {
      type: "bar",
      data: { labels: names, datasets: [{ label: "Records", data: lengths.counts, backgroundColor: "#12b76a" }] },
      options: { maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { font: { size: 10 } } }, y: countAxis } },
    });
  }
})();
