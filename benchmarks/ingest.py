"""Dataset import benchmark: 1,000,000 rows into PostgreSQL through the real import job.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--json FILE]

Generates a CSV (texts of 20-300 characters with commas, quotes, newlines and CJK, plus a
label), then measures, each in a fresh process so peak memory is the phase's own:
  parse floor    pandas.read_csv of the whole file
  COPY floor     psycopg2 COPY ... FROM STDIN of the file into a bare (text, label) table
  naive          csv module + Django bulk_create(batch_size=5000) into the records table
  ours           the import job (decode, validate, normalise, write with the table's indexes
                 and key checks), then, timed apart, the job that builds the word-search index
and then a snapshot of all rows and a records page deep in the set. Needs PostgreSQL: it uses
the database named by --database-url (default postgres://postgres@127.0.0.1:5432/lepton_bench,
created and migrated if missing). Prints figures and ratios; --json also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/lepton_bench"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "analysts",
    "label",
    "customer",
    "messages",
    "about",
    "refunds",
    "cards",
    "transfers",
    "and",
    "exchange",
    "rates",
    "in",
    "many",
    "languages",
    "every",
    "single",
    "day",
]
CJK = "数据集导入测试中文文本处理速度非常重要日本語のテキストも少し含まれています"
LABELS = [f"label_{i:02d}" for i in range(20)]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        for _ in range(rows):
            target = rng.randint(20, 300)
            parts: list[str] = []
            length = 0
            while length < target:
                roll = rng.random()
                if roll < 0.05:
                    word = rng.choice(CJK) * rng.randint(1, 4)
                elif roll < 0.08:
                    word = 'said "hello, world"'
                elif roll < 0.10:
                    word = "line\nbreak"
                else:
                    word = rng.choice(WORDS)
                if rng.random() < 0.1:
                    word += ","
                parts.append(word)
                length += len(word) + 1
            text = " ".join(parts)[:target]
            handle.write('"' + text.replace('"', '""') + '",' + rng.choice(LABELS) + "\n")


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")
    import django

    django.setup()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- phases, each run in its own process ----------------------------------------------------------
def phase_pandas(path: Path, database_url: str) -> dict:
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(frame), "peak_mb": peak_mb()}


def phase_copy(path: Path, database_url: str) -> dict:
    import psycopg2

    connection = psycopg2.connect(database_url)
    with connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_bare")
        cursor.execute("CREATE TABLE bench_bare (text text, label text)")
    started = time.perf_counter()
    with connection, connection.cursor() as cursor, path.open("r", encoding="utf-8") as handle:
        cursor.copy_expert("COPY bench_bare FROM STDIN WITH (FORMAT csv, HEADER true)", handle)
    seconds = time.perf_counter() - started
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_bare")
        rows = cursor.fetchone()[0]
        cursor.execute("DROP TABLE bench_bare")
    return {"seconds": seconds, "rows": rows, "peak_mb": peak_mb()}


def _bench_dataset(name: str):
    from django.core.files import File

    from datasets_app.models import Dataset

    _delete_datasets(name)
    return File, Dataset


def _delete_datasets(name: str) -> None:
    """Delete earlier bench datasets the way the console does (records set-based, with their
    search entries), not by the ORM's cascade, which leaves the word index's rows behind."""
    from datasets_app.models import Dataset
    from datasets_app.services import dataset_delete

    deleted = False
    for dataset in Dataset.objects.filter(name=name):
        dataset_delete(dataset=dataset, user=_bench_user())
        deleted = True
    if deleted:
        # A million dead rows until autovacuum comes by slow down the planner and index
        # scans of the next phase (100+ ms to plan a search page): start each phase clean.
        from django.db import connection

        with connection.cursor() as cursor:
            for table in ("datasets_app_record", "datasets_app_recordsearch"):
                cursor.execute(f"VACUUM ANALYZE {table}")


def _bench_user():
    from django.contrib.auth import get_user_model

    from lepton_web.accounts import roles_ensure

    roles_ensure()
    user = get_user_model().objects.filter(username="bench").first()
    if user is None:
        from lepton_web.accounts import user_create

        user, _ = user_create(username="bench", role="analyst")
    return user


def phase_bulk_create(path: Path, database_url: str) -> dict:
    import csv

    setup_django(database_url)
    from datasets_app.models import Dataset, DatasetJob, Record

    user = _bench_user()
    _delete_datasets("bench-bulk")
    dataset = Dataset.objects.create(name="bench-bulk", source_filename="x.csv", created_by=user)
    job = DatasetJob.objects.create(dataset=dataset, kind="import", status="running")
    started = time.perf_counter()
    batch: list[Record] = []
    rows = 0
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for number, (text, label) in enumerate(reader, start=1):
            batch.append(
                Record(dataset=dataset, import_run=job, source_row=number, text=text, label=label)
            )
            if len(batch) == 5000:
                Record.objects.bulk_create(batch)
                rows += len(batch)
                batch = []
    Record.objects.bulk_create(batch)
    rows += len(batch)
    seconds = time.perf_counter() - started
    _delete_datasets("bench-bulk")
    return {"seconds": seconds, "rows": rows, "peak_mb": peak_mb()}


def phase_ours(path: Path, database_url: str) -> dict:
    setup_django(database_url)
    from django.core.files import File

    from datasets_app.models import DatasetJob
    from datasets_app.services import dataset_import_execute, dataset_upload

    user = _bench_user()
    _delete_datasets("bench-ours")
    with path.open("rb") as handle:
        dataset = dataset_upload(user=user, file=File(handle, name="bench.csv"), name="bench-ours")
    # The job row is what dataset_import_start creates; the broker hop is left out of the timing.
    job = DatasetJob.objects.create(
        dataset=dataset, kind="import", mapping={"text_columns": ["text"], "label_column": "label"}
    )
    started = time.perf_counter()
    dataset_import_execute(job_id=job.pk)
    seconds = time.perf_counter() - started
    job.refresh_from_db()
    dataset.refresh_from_db()
    if job.status != "succeeded":
        raise SystemExit(f"Import failed: {job.error_message}")
    import_peak = peak_mb()
    # The word index is built by a job queued when the import commits; records are browsable
    # and searchable by substring before it ends. Timed here on its own.
    from datasets_app.services.search import dataset_search_index_execute

    index_job = dataset.jobs.filter(kind=DatasetJob.Kind.SEARCH_INDEX).first()
    if index_job is None:  # the broker refused it: run one by hand
        index_job = DatasetJob.objects.create(dataset=dataset, kind=DatasetJob.Kind.SEARCH_INDEX)
    started = time.perf_counter()
    dataset_search_index_execute(job_id=index_job.pk)
    index_seconds = time.perf_counter() - started
    dataset.refresh_from_db()
    if dataset.search_import_id != dataset.active_import_id:
        raise SystemExit("The search index job did not finish.")
    return {
        "seconds": seconds,
        "rows": dataset.record_count,
        "peak_mb": import_peak,
        "search_index_seconds": index_seconds,
        "dataset_id": dataset.pk,
    }


def phase_after(path: Path, database_url: str) -> dict:
    setup_django(database_url)
    from datasets_app.models import Dataset, Record
    from datasets_app.selectors import record_page
    from datasets_app.services import snapshot_create

    dataset = Dataset.objects.get(name="bench-ours")
    user = _bench_user()
    started = time.perf_counter()
    snapshot = snapshot_create(dataset=dataset, user=user)
    snapshot_seconds = time.perf_counter() - started
    ids = (
        Record.objects.filter(import_run_id=dataset.active_import_id)
        .order_by("id")
        .values_list("id", flat=True)
    )
    deep = ids[int(dataset.record_count * 0.9)]
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        page = record_page(dataset=dataset, after=deep)
        timings.append(time.perf_counter() - started)
        assert len(page.records) == 50
    label_timings = []
    for _ in range(10):
        started = time.perf_counter()
        record_page(dataset=dataset, after=deep, label="label_07")
        label_timings.append(time.perf_counter() - started)
    search_timings = {}
    for name, words in (("common_word", "the"), ("phrase", '"quick brown"'), ("no_match", "zzzz")):
        timings_of_search = []
        for _ in range(5):
            started = time.perf_counter()
            record_page(dataset=dataset, search=words)
            timings_of_search.append(time.perf_counter() - started)
        search_timings[name] = statistics.median(timings_of_search) * 1000
    _delete_datasets("bench-ours")
    return {
        "search_page_ms": search_timings,
        "snapshot_seconds": snapshot_seconds,
        "snapshot_rows": snapshot.record_count,
        "deep_page_ms": statistics.median(timings) * 1000,
        "deep_page_label_filter_ms": statistics.median(label_timings) * 1000,
    }


PHASES = {
    "pandas": phase_pandas,
    "copy": phase_copy,
    "bulk_create": phase_bulk_create,
    "ours": phase_ours,
    "after": phase_after,
}


def run_phase(name: str, path: Path, database_url: str) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            name,
            "--file",
            str(path),
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(f"Phase {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ensure_database(database_url: str) -> None:
    import psycopg2

    name = database_url.rsplit("/", 1)[1]
    admin = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument(
        "--skip-bulk-create", action="store_true", help="skip the slow naive baseline"
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        print(json.dumps(PHASES[args.phase](args.file, args.database_url)))
        return

    ensure_database(args.database_url)
    work = ROOT / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"ingest_{args.rows}.csv"
    if not path.exists():
        print(f"Generating {args.rows:,} rows ...", flush=True)
        generate(path, args.rows)
    size_mb = path.stat().st_size / 1024**2
    print(f"File: {path} ({size_mb:.0f} MB, {args.rows:,} rows)")

    results = {"rows": args.rows, "file_mb": round(size_mb, 1)}
    for name in (
        "pandas",
        "copy",
        *(() if args.skip_bulk_create else ("bulk_create",)),
        "ours",
        "after",
    ):
        print(f"  running {name} ...", flush=True)
        results[name] = run_phase(name, path, args.database_url)

    ours, copy, parse = results["ours"], results["copy"], results["pandas"]
    ratios = {
        "copy_vs_pandas": copy["seconds"] / parse["seconds"],
        "ours_vs_copy": ours["seconds"] / copy["seconds"],
    }
    # The import makes records browsable and substring-searchable; word search waits for the
    # index job after it. Both ways of counting are printed.
    with_index = ours["seconds"] + ours["search_index_seconds"]
    ratios["ours_with_word_index_vs_copy"] = with_index / copy["seconds"]
    if "bulk_create" in results:
        ratios["bulk_create_vs_copy"] = results["bulk_create"]["seconds"] / copy["seconds"]
        ratios["ours_speedup_vs_bulk_create"] = results["bulk_create"]["seconds"] / ours["seconds"]
        ratios["ours_with_word_index_speedup_vs_bulk_create"] = (
            results["bulk_create"]["seconds"] / with_index
        )
    results["ratios"] = ratios
    after = results["after"]
    print()
    print(f"{'phase':<28}{'seconds':>10}{'rows/s':>14}{'peak MB':>10}")
    for name in ("pandas", "copy", "bulk_create", "ours"):
        if name in results:
            r = results[name]
            print(
                f"{name:<28}{r['seconds']:>10.2f}{r['rows'] / r['seconds']:>14,.0f}{r['peak_mb']:>10.0f}"
            )
    print(
        f"{'then: word search index':<28}{ours['search_index_seconds']:>10.2f}   (a job after the import)"
    )
    print(f"{'snapshot of all rows':<28}{after['snapshot_seconds']:>10.2f}")
    searched = after["search_page_ms"]
    print(
        "word search, first page: "
        + ", ".join(f"{name.replace('_', ' ')} {ms:.1f} ms" for name, ms in searched.items())
    )
    print(
        f"records page at 90% depth: {after['deep_page_ms']:.1f} ms (label filter {after['deep_page_label_filter_ms']:.1f} ms)"
    )
    print()
    print(f"COPY / pandas.read_csv:        {ratios['copy_vs_pandas']:.2f}x")
    print(f"ours / COPY:                   {ratios['ours_vs_copy']:.2f}x   (target <= 1.5x)")
    print(
        f"  with the word index job:     {ratios['ours_with_word_index_vs_copy']:.2f}x   ({with_index:.2f} s)"
    )
    if "bulk_create_vs_copy" in ratios:
        print(f"bulk_create / COPY:            {ratios['bulk_create_vs_copy']:.2f}x")
        print(
            f"ours faster than bulk_create:  {ratios['ours_speedup_vs_bulk_create']:.2f}x   (target >= 5x)"
        )
        print(
            f"  with the word index job:     {ratios['ours_with_word_index_speedup_vs_bulk_create']:.2f}x"
        )
    print(f"peak memory of the import:     {ours['peak_mb']:.0f} MB   (target <= 300 MB)")
    print(f"snapshot:                      {after['snapshot_seconds']:.2f} s   (target <= 10 s)")
    print(f"deep records page:             {after['deep_page_ms']:.1f} ms   (target <= 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nWrote {args.json}")


if __name__ == "__main__":
    main()
