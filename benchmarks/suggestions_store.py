"""Storing pre-label suggestions: ``record_suggestions_store`` for 100k records on PostgreSQL,
against the function as it was at BASELINE (loaded from git) in the same run.

    source your env; .venv/bin/python benchmarks/suggestions_store.py [--records 100000]
        [--dataset-records N] [--rounds 2] [--database-url URL] [--json FILE]

Uses the database of --database-url (default: DATABASE_URL; created and migrated if missing)
and a dataset of --dataset-records unlabeled records (default: --records) named "suggestions
benchmark N" (loaded once with the import's COPY writer, kept for later runs); the suggestions go
to a random --records of them. Each round times, for the baseline and for ours in
alternation (both see the same load), the three ways a pre-label job stores suggestions:
  fresh     a new source on records without suggestions
  again     the same source stored again (every row replaced: ON CONFLICT … DO UPDATE)
  replace   a newer model's source with ``replaces_prefix`` (the older source's rows removed)
and prints seconds (best of the rounds), suggestions/s and the ratio baseline/ours. The
suggestions stored by both are compared row by row (label, probability, margin, entropy), so a
faster store that stores something else fails the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
BASELINE = "4d8d9af"  # record_suggestions_store as batch prediction used it (bulk_create per 5k)
NAME = "suggestions benchmark"
LABELS = ["billing", "cards", "transfers", "other"]


def baseline_module():
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:datasets_app/services/suggestions.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("suggestions_baseline", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, "suggestions_baseline.py", "exec"), module.__dict__)  # noqa: S102
    return module


def predictions(ids: list[int], seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for record_id in ids:
        top = rng.uniform(0.25, 1.0)
        second = rng.uniform(0, min(top, 1 - top))
        rows.append(
            {
                "record_id": record_id,
                "label": rng.choice(LABELS),
                "probability": top,
                "margin": top - second,
                "entropy": rng.uniform(0, 1.38),
            }
        )
    return rows


def stored_rows(dataset) -> list[tuple]:
    from datasets_app.models import RecordSuggestion

    return list(
        RecordSuggestion.objects.filter(dataset=dataset)
        .order_by("record_id", "source")
        .values_list("record_id", "source", "label", "probability", "margin", "entropy")
    )


def run_round(store, dataset, ids: list[int], tag: str) -> dict[str, float]:
    """The three stores, timed; ``tag`` keeps the baseline's and ours' sources apart."""
    from django.db import connection

    from datasets_app.models import RecordSuggestion

    RecordSuggestion.objects.filter(dataset=dataset).delete()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE datasets_app_recordsuggestion")
    first, second = predictions(ids, 1), predictions(ids, 2)
    times = {}
    started = time.perf_counter()
    outcome = store(dataset=dataset, predictions=iter(first), source="bench v1")
    times["fresh"] = time.perf_counter() - started
    assert outcome == {"stored": len(ids), "skipped": 0}, outcome
    started = time.perf_counter()
    store(dataset=dataset, predictions=iter(second), source="bench v1")
    times["again"] = time.perf_counter() - started
    started = time.perf_counter()
    store(
        dataset=dataset,
        predictions=iter(first),
        source="bench v2",
        replaces_prefix="bench ",
    )
    times["replace"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dataset-records", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--json", default="")
    arguments = parser.parse_args()
    if not arguments.database_url.startswith("postgres"):
        parser.error("Give a PostgreSQL --database-url (or set DATABASE_URL).")

    import labeling as labeling_bench  # benchmarks/labeling.py: database and COPY loading

    labeling_bench.ensure_database(arguments.database_url)
    labeling_bench.setup_django(arguments.database_url)
    size = max(arguments.dataset_records, arguments.records)
    labeling_bench.NAME = NAME if size == arguments.records else f"{NAME} {size}"
    dataset = labeling_bench.load_records(size)

    from datasets_app.models import Record
    from datasets_app.services import suggestions

    ids = list(
        Record.objects.filter(import_run_id=dataset.active_import_id)
        .order_by("id")
        .values_list("id", flat=True)
    )
    if len(ids) > arguments.records:
        ids = sorted(random.Random(7).sample(ids, arguments.records))
    baseline = baseline_module()
    contenders = {
        "baseline": baseline.record_suggestions_store,
        "ours": suggestions.record_suggestions_store,
    }
    best: dict[str, dict[str, float]] = {name: {} for name in contenders}
    contents = {}
    load = os.getloadavg()
    for round_number in range(arguments.rounds):
        order = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
        for name in order:
            times = run_round(contenders[name], dataset, ids, name)
            contents[name] = stored_rows(dataset)
            for phase, seconds in times.items():
                best[name][phase] = min(best[name].get(phase, seconds), seconds)
            print(
                f"round {round_number + 1} {name:8s} "
                + "  ".join(f"{phase} {seconds:6.2f} s" for phase, seconds in times.items())
            )
    same = contents["baseline"] == contents["ours"]
    print(
        f"\n{len(ids):,} suggestions on a dataset of {size:,} records, best of "
        f"{arguments.rounds} rounds "
        f"(load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end); baseline = {BASELINE}"
    )
    figures = {
        "records": len(ids),
        "dataset_records": size,
        "baseline_commit": BASELINE,
        "phases": {},
    }
    for phase in ("fresh", "again", "replace"):
        before, ours = best["baseline"][phase], best["ours"][phase]
        print(
            f"  {phase:8s} baseline {before:7.2f} s ({len(ids) / before:9,.0f}/s)   "
            f"ours {ours:7.2f} s ({len(ids) / ours:9,.0f}/s)   baseline/ours {before / ours:5.2f}x"
        )
        figures["phases"][phase] = {"baseline_s": before, "ours_s": ours, "ratio": before / ours}
    print(f"  stored rows identical: {same}")
    figures["identical"] = same
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2))
    if not same:
        sys.exit("The two stores left different suggestions.")


if __name__ == "__main__":
    main()
