// Playground: draw the class probabilities of each result as a horizontal bar chart.
// Chart.js is served locally; it is loaded here on first use unless the page has it already.
(function () {
  const script = document.currentScript;
  const chartSrc = script && script.dataset.chartSrc;
  let loading = null;

  function withChart(callback) {
    if (window.Chart) return callback();
    if (!chartSrc) return;
    if (!loading) {
      loading = new Promise(function (resolve) {
        const tag = document.createElement("script");
        tag.src = chartSrc;
        tag.onload = resolve;
        document.head.appendChild(tag);
      });
    }
    loading.then(callback);
  }

  function draw() {
    document.querySelectorAll("canvas.playground-bars").forEach(function (canvas) {
      const source = document.getElementById(canvas.dataset.barsId);
      if (!source || canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      const bars = JSON.parse(source.textContent);
      withChart(function () {
        const old = window.Chart.getChart(canvas);
        if (old) old.destroy();
        new window.Chart(canvas, {
          type: "bar",
          data: {
            labels: bars.map((b) => b.label),
            datasets: [{ label: "probability", data: bars.map((b) => b.score) }],
          },
          options: {
            indexAxis: "y",
            animation: false,
            maintainAspectRatio: false,
            plugins: { legend: { display: false } },
            scales: { x: { min: 0, max: 1 } },
          },
        });
        canvas.dataset.chart = "ready";
      });
    });
  }

  if (!window.leptonPlayground) {
    window.leptonPlayground = true;
    document.addEventListener("htmx:afterSwap", draw);
  }
  draw();
})();
