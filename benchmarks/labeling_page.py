"""Labeling page benchmark: how long an annotator waits between records, in headless Chromium.

    .venv/bin/python benchmarks/labeling_page.py [--records 10000] [--labels 100] [--think-ms 400]

Starts the console (``manage.py runserver``, DEBUG for its static files) on a benchmark
database (--database-url, default postgres://postgres@127.0.0.1:5432/lepton_bench_labeling_page,
created and migrated if missing; records loaded as benchmarks/labeling.py loads them), logs an
annotator in and, in the page itself (timed with ``performance.now()``, no Playwright overhead):

  ours      a label key pressed -> the next record shown, with the page's records fetched
            ahead and labels sent in the background; the annotator takes --think-ms to read
            each record
  waiting   the baseline, measured in the same run: what a page that waits for the server
            between records waits, one label saved (POST .../label/submit/) then the next record
            fetched (GET .../label/next/), back to back

and prints p50/p95 of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/lepton_bench_labeling_page"
PASSWORD = "benchmark labeling page"  # noqa: S105 - the benchmark user made here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]

OURS_JS = """async ([count, thinkMs]) => {
  const card = document.querySelector("[data-testid=label-record]");
  const pause = (ms) => new Promise((done) => setTimeout(done, ms));
  const out = [];
  for (let step = 0; step < count; step++) {
    await pause(thinkMs);  // reading the record
    while (!card.dataset.recordId) await pause(2);
    const before = card.dataset.recordId;
    const started = performance.now();
    document.dispatchEvent(new KeyboardEvent("keydown", { key: String(1 + (step % 4)) }));
    while (!card.dataset.recordId || card.dataset.recordId === before) await pause(1);
    out.push(performance.now() - started);
  }
  return out;
}"""

WAITING_JS = """async (count) => {
  const config = JSON.parse(document.getElementById("labeling-config").textContent);
  const labels = Array.from(document.querySelectorAll("button[name=label]"), (b) => b.value);
  const token = document.cookie.split("; ").find((part) => part.startsWith("csrftoken="));
  const headers = { "Content-Type": "application/json", Accept: "application/json",
    "X-CSRFToken": decodeURIComponent(token.slice("csrftoken=".length)) };
  let record = (await (await fetch(config.urls.next, { headers })).json()).record;
  const out = [];
  for (let step = 0; step < count && record; step++) {
    const started = performance.now();
    const saved = await fetch(config.urls.submit, { method: "POST", headers, body: JSON.stringify({
      record_id: record.id, label: labels[step % labels.length], expected_label: "",
      key: crypto.randomUUID() }) });
    if (!saved.ok) throw new Error(`submit answered ${saved.status}`);
    const next = await fetch(`${config.urls.next}?after=${record.id}`, { headers });
    record = (await next.json()).record;
    out.push(performance.now() - started);
  }
  return out;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def annotator():
    from django.contrib.auth.models import Group, User

    group, _ = Group.objects.get_or_create(name="annotator")
    user, _ = User.objects.get_or_create(username="bench-page-annotator")
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(group)
    return user


def start_server(database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "true"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit("The console did not start within 60 s.")


def summary(name: str, timings: list[float]) -> dict:
    ordered = sorted(timings)
    row = {
        "name": name,
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }
    print(
        f"  {name:<52} n={row['n']:>4}  p50 {row['p50_ms']:8.2f} ms  "
        f"p95 {row['p95_ms']:8.2f} ms  max {row['max_ms']:8.2f} ms"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--think-ms", type=int, default=400)
    args = parser.parse_args()

    from benchmarks.labeling import ensure_database, load_records, setup_django

    ensure_database(args.database_url)
    setup_django(args.database_url)
    dataset = load_records(args.records)
    user = annotator()
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("Chromium is not installed. Install it with: apt-get install chromium")

    port = free_port()
    server = start_server(args.database_url, port)
    base = f"http://127.0.0.1:{port}"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base}/")
            page.get_by_label("Username").fill(user.username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(lambda url: "login" not in url)
            queue = f"{base}/datasets/{dataset.pk}/label/"
            page.goto(queue)
            page.wait_for_selector("[data-testid=label-form][data-keys=ready]")
            print(
                f"labeling page, {args.records:,} records, {args.labels} labels each, "
                f"{os.cpu_count()} CPUs"
            )
            ours = page.evaluate(OURS_JS, [args.labels, args.think_ms])
            page.wait_for_selector("[data-testid=labeling-progress][data-waiting='0']")
            page.goto(queue)
            waiting = page.evaluate(WAITING_JS, args.labels)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)

    mine = summary(f"ours: key -> next record shown ({args.think_ms} ms to read)", ours)
    base_row = summary("waiting: save, then fetch the next (baseline)", waiting)
    print(
        f"  p50 waiting / ours: {base_row['p50_ms'] / max(mine['p50_ms'], 0.01):.0f}x, "
        f"p95: {base_row['p95_ms'] / max(mine['p95_ms'], 0.01):.0f}x"
    )


if __name__ == "__main__":
    main()
