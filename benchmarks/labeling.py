"""Labeling queue benchmark: "save this label and give me the next record" at 1,000,000 records.

    .venv/bin/python benchmarks/labeling.py [--records 1000000] [--actions 2000] [--json FILE]

Loads the records into PostgreSQL once (the import's COPY writer, ``RecordWriter``, straight
from generated rows; kept for later runs), then times the server side of one labeling action,
the two service calls the labeling page and API make: ``record_label_set`` then
``labeling_next(after=...)``. Each figure is measured for:
  before    the queue as it was before issue 12 (the module at commit BEFORE, loaded from git):
            the dataset row locked for the whole of each call
  previous  the hot path as query strings, 4 round trips an action (the module at PREVIOUS)
  ours      the current queue (no dataset lock per label; overlap; annotations; on
            PostgreSQL one call of a PL/pgSQL function per service call)
alone (one annotator, ``--actions`` actions) and with ``--annotators`` concurrent annotators
(threads with connections of their own, ``--actions`` in all, spread over ``--processes``
processes: 2, as the Procfile's web runs 2 gunicorn processes of 4 threads; ours is also
measured with all of them in one process, as earlier runs did); both also alone without a
label list (the labels offered then come from the records and the label log, read on every
call; a quarter of the actions); and ours also at overlap 2 and in uncertainty order (least
confidence) after pre-labeling 100k records: through
``benchmarks/prelabel.py`` (int8 endpoint) where that exists, else stored suggestions. Prints
p50/p95 in ms, the ratio of p95 to the 20 ms target, the floors (an empty SELECT 1; a one-row
INSERT committed durably, the disk wait every label's commit makes), the CPU of an action alone
(Python and PostgreSQL backend), and EXPLAIN ANALYZE of the queue's queries. Uses --database-url (default postgres://postgres@127.0.0.1:5432/lepton_bench_labeling,
created and migrated if missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/lepton_bench_labeling"
BEFORE = "e9eb458"  # the last commit before issue 12's queue
PREVIOUS = "67e6712"  # the hot path as query strings (4 round trips an action), before 0026
TARGET_MS = 20.0
LABELS = ["billing", "cards", "transfers", "other"]
from ingest import WORDS  # noqa: E402  (the ingest benchmark's vocabulary; benchmarks/ is on sys.path)

NAME = "labeling benchmark"


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


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")
    import django

    django.setup()


def load_records(count: int):
    """The benchmark dataset with ``count`` unlabeled records, loaded with the import's COPY
    writer if it is not there yet (or has another size)."""
    import pandas as pd
    from django.db import connection
    from django.utils import timezone

    from datasets_app.models import Dataset, DatasetJob
    from datasets_app.services.imports import RecordWriter, records_delete

    dataset = Dataset.objects.filter(name=NAME).first()
    if dataset and dataset.record_count == count and dataset.active_import_id:
        print(f"records: {count:,} already loaded (dataset {dataset.pk})")
        return dataset
    if dataset:
        from datasets_app.models import Record

        records_delete(Record.objects.filter(dataset=dataset))
        dataset.delete()
    dataset = Dataset.objects.create(
        name=NAME,
        status=Dataset.Status.READY,
        source_filename="generated.csv",
        source_sha256="0" * 64,
        label_schema=LABELS,
    )
    job = DatasetJob.objects.create(
        dataset=dataset, kind=DatasetJob.Kind.IMPORT, status="succeeded", finished_at=timezone.now()
    )
    rng = random.Random(12)
    started = time.perf_counter()
    writer = RecordWriter(dataset_id=dataset.pk, import_run_id=job.pk)
    chunk = 100_000
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 30))) for _ in range(size)]
        writer.write(
            pd.DataFrame(
                {
                    "source_row": range(start + 1, start + size + 1),
                    "text": texts,
                    "label": [""] * size,
                    "split": [""] * size,
                    "external_id": [""] * size,
                    "metadata": ["{}"] * size,
                    "flags": [""] * size,
                }
            )
        )
    writer.close()
    seconds = time.perf_counter() - started
    Dataset.objects.filter(pk=dataset.pk).update(
        active_import=job, record_count=count, label_counts_base={"": count}
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE datasets_app_record")
    print(f"records: loaded {count:,} in {seconds:.1f} s ({count / seconds:,.0f} rows/s, COPY)")
    dataset.refresh_from_db()
    return dataset


def vacuum() -> None:
    """VACUUM ANALYZE the queue's tables (before each phase), as autovacuum keeps them in a
    running system (it visits a busy table about once a minute; a phase lasts seconds, and the
    phase before it left thousands of dead rows behind, the dataset row's among them): the
    planner then knows the labeled records have left the index of unlabeled ones (with
    statistics from the load, where every record was unlabeled, it walks the primary key over
    every labeled record instead)."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in (
            "dataset",
            "record",
            "annotation",
            "labelclaim",
            "labelchange",
            "labelcountshard",
        ):
            cursor.execute(f"VACUUM ANALYZE datasets_app_{table}")


def before_module(commit: str = BEFORE, name: str = "labeling_before"):
    """The labeling services as they were at ``commit``, loaded from git."""
    source = subprocess.run(
        ["git", "show", f"{commit}:datasets_app/services/labeling.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    # Those commits knew the dataset's counts as the field label_counts; it is label_counts_base
    # now (the same column; labels since add to shards, services/label_counts.py). Their Python
    # reads and writes the column under its new name; their SQL names the column as it is.
    source = (
        source.replace("dataset.label_counts", "dataset.label_counts_base")
        .replace('"label_counts"', '"label_counts_base"')
        .replace("label_counts=_sorted_counts", "label_counts_base=_sorted_counts")
    )
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)  # noqa: S102
    return module


def annotators(count: int) -> list:
    from django.contrib.auth.models import Group, User

    group, _ = Group.objects.get_or_create(name="annotator")
    people = []
    for number in range(count):
        user, _ = User.objects.get_or_create(username=f"bench-annotator-{number}")
        user.groups.add(group)
        people.append(user)
    return people


def act(service, dataset, user, count: int, timings: list[float]) -> None:
    """``count`` actions of one annotator: label the record shown, get the next one."""
    item = service.labeling_next(dataset=dataset, user=user)
    for step in range(count):
        if item.record is None:
            return
        started = time.perf_counter()
        service.record_label_set(
            dataset=dataset,
            user=user,
            record_id=item.record.pk,
            label=LABELS[step % len(LABELS)],
            expected_label="",
        )
        item = service.labeling_next(dataset=dataset, user=user, after=item.record.pk)
        timings.append((time.perf_counter() - started) * 1000)


def measure(service, dataset, people, actions: int, processes: int = 1) -> list[float]:
    """Timings of ``actions`` actions shared by ``people`` at once: threads with connections
    of their own, spread over ``processes`` processes (forked; the Procfile's web is 2
    gunicorn processes of 4 threads, so 8 annotators' requests share two interpreters, not
    one)."""
    if len(people) == 1:
        timings: list[float] = []
        act(service, dataset, people[0], actions, timings)
        return timings
    if processes <= 1:
        return _measure_threads(service, dataset, people, actions, threading.Barrier(len(people)))
    import multiprocessing

    from django.db import connections

    context = multiprocessing.get_context("fork")
    connections.close_all()  # each process opens its own
    barrier = context.Barrier(len(people))
    answers = context.Queue()
    share = actions // len(people)

    def child(group):
        try:
            timings = _measure_threads(service, dataset, group, share * len(group), barrier)
            answers.put((timings, None))
        except BaseException as exc:  # reported by the parent
            answers.put(([], repr(exc)))

    groups = [people[index::processes] for index in range(processes)]
    children = [context.Process(target=child, args=(group,)) for group in groups]
    for process in children:
        process.start()
    results = [answers.get() for _ in children]
    for process in children:
        process.join()
    failures = [failure for _, failure in results if failure]
    if failures:
        raise RuntimeError(failures[0])
    return [value for timings, _ in results for value in timings]


def _measure_threads(service, dataset, people, actions: int, barrier) -> list[float]:
    from django.db import connection

    timings: list[float] = []
    failures: list[BaseException] = []

    def work(person):
        try:
            barrier.wait()
            act(service, dataset, person, actions // len(people), timings)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(person,)) for person in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return timings


def round_trips(service, dataset, user) -> int:
    """Queries one action makes (label + next)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    item = service.labeling_next(dataset=dataset, user=user)
    with CaptureQueriesContext(connection) as queries:
        service.record_label_set(
            dataset=dataset, user=user, record_id=item.record.pk, label=LABELS[0], expected_label=""
        )
        service.labeling_next(dataset=dataset, user=user, after=item.record.pk)
    return len(queries.captured_queries)  # BEGIN and COMMIT included


def _timed_statement(people, samples: int, sql: str) -> list[float]:
    """``sql`` run ``samples`` times in all, shared by one connection per person (threads),
    each run timed in ms."""
    from django.db import connection

    timings: list[float] = []

    def work(count):
        try:
            with connection.cursor() as cursor:
                for _ in range(count):
                    started = time.perf_counter()
                    cursor.execute(sql)
                    if cursor.description:
                        cursor.fetchone()
                    timings.append((time.perf_counter() - started) * 1000)
        finally:
            if len(people) > 1:
                connection.close()

    if len(people) == 1:
        work(samples)
        return timings
    threads = [threading.Thread(target=work, args=(samples // len(people),)) for _ in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def floor(people, samples: int) -> list[float]:
    """The machine's floor: one empty query (SELECT 1) per sample, timed like an action."""
    return _timed_statement(people, samples, "SELECT 1")


def commit_floor(people, samples: int) -> list[float]:
    """The floor of a label on this machine: a one-row INSERT committed durably (the wait for
    the disk that every label's commit makes; holds commit without it), per sample."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_commit_floor (id bigserial PRIMARY KEY, at timestamptz)"
        )
    timings = _timed_statement(
        people, samples, "INSERT INTO bench_commit_floor (at) VALUES (now())"
    )
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bench_commit_floor")
    return timings


def cpu_per_action(service, dataset, user, count: int) -> dict:
    """CPU time of one action, alone: this process's (Python and the driver, process_time)
    and its PostgreSQL backend's (user + system, from /proc: the server runs on this
    machine), in ms, over ``count`` actions."""
    from django.db import connection

    def backend() -> float:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    act(service, dataset, user, 10, [])
    server, python = backend(), time.process_time()
    act(service, dataset, user, count, [])
    server, python = backend() - server, time.process_time() - python
    return {
        "python_ms": round(1000 * python / count, 2),
        "postgres_ms": round(1000 * server / count, 2),
    }


def summary(name: str, timings: list[float]) -> dict:
    ordered = sorted(timings)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    row = {
        "name": name,
        "actions": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(p95, 2),
        "p95_vs_target": round(p95 / TARGET_MS, 2),
    }
    print(
        f"  {name:<44} n={row['actions']:>5}  p50 {row['p50_ms']:7.2f} ms  "
        f"p95 {row['p95_ms']:7.2f} ms  p95/20ms {row['p95_vs_target']:.2f}"
    )
    return row


def prelabel(dataset, records: int, *, model: bool) -> dict:
    """Pre-label ``records`` records: the int8 endpoint's time through benchmarks/prelabel.py
    (its own dataset of TREC questions; PyTorch on 2,000 for the ratio) unless ``model`` is
    False, then suggestions on the benchmark's records for the uncertainty order, stored as
    batch prediction stores them (timed)."""
    figures: dict = {}
    if model:
        try:
            from benchmarks.prelabel import prelabel_benchmark

            figures["model"] = prelabel_benchmark(records=records, baseline_records=2000)
            print(f"  pre-label {records:,} records with the int8 endpoint: {figures['model']}")
        except ImportError:
            print("  benchmarks/prelabel.py is not there: the model's time is not measured")
    from datasets_app.selectors import records_unlabeled
    from datasets_app.services.suggestions import record_suggestions_store

    rng = random.Random(5)
    ids = list(records_unlabeled(dataset).order_by("id").values_list("id", flat=True)[:records])

    def predictions():
        for record_id in ids:
            top = rng.uniform(0.25, 1.0)
            second = rng.uniform(0, min(top, 1 - top))
            yield {
                "record_id": record_id,
                "label": rng.choice(LABELS),
                "probability": top,
                "margin": top - second,
                "entropy": rng.uniform(0, 1.38),
            }

    started = time.perf_counter()
    stored = record_suggestions_store(dataset=dataset, predictions=predictions(), source="bench")
    seconds = time.perf_counter() - started
    print(
        f"  stored {stored['stored']:,} suggestions on the benchmark's records in {seconds:.1f} s"
    )
    figures["stored"] = {"suggestions": stored["stored"], "seconds": round(seconds, 1)}
    return figures


def without_label_list(dataset, before, ours, user, actions: int) -> list[dict]:
    """Alone, with the dataset's label list cleared: the labels offered are then those its
    records have and those its label log holds (every label given or replaced so far), read
    on every call; before and ours."""
    from datasets_app.models import Dataset

    schema = list(dataset.label_schema)
    Dataset.objects.filter(pk=dataset.pk).update(label_schema=[])
    dataset.label_schema = []
    rows = []
    try:
        for name, service in (("before", before), ("ours", ours)):
            rows.append(
                summary(
                    f"{name}, 1 annotator, no label list",
                    measure(service, dataset, [user], actions),
                )
            )
    finally:
        Dataset.objects.filter(pk=dataset.pk).update(label_schema=schema)
        dataset.label_schema = schema
    return rows


def explain(dataset, user) -> None:
    from datasets_app.models import LabelingOrder
    from datasets_app.services import labeling

    print("EXPLAIN ANALYZE of the queue's next-record query (ours):")
    for order in (LabelingOrder.FILE, LabelingOrder.LEAST_CONFIDENCE):
        dataset.labeling_order = order
        if order == LabelingOrder.FILE:  # as _first_unlocked reads it
            candidates = labeling._candidates(dataset, user, 1, [])
            window = candidates.order_by("id").values("id")[: labeling.QUEUE_WINDOW]
            query = candidates.filter(id__in=window).order_by("id")[:1]
        else:
            query = (
                labeling.RecordSuggestion.objects.filter(
                    dataset=dataset,
                    probability__isnull=False,
                    record__in=labeling._candidates(dataset, user, 1, []),
                )
                .order_by("probability", "record_id")
                .values_list("record_id", flat=True)[:1]
            )
        plan = query.explain(analyze=True).splitlines()
        print(f"  [{order}]")
        for line in plan:
            print(f"    {line}")
    dataset.labeling_order = LabelingOrder.FILE


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--actions", type=int, default=2000)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--prelabel", type=int, default=100_000)
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes the concurrent annotators are spread over (the Procfile's web: "
        "gunicorn --workers 2 --threads 4)",
    )
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="skip timing the int8 endpoint (benchmarks/prelabel.py); suggestions are stored",
    )
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    ensure_database(args.database_url)
    setup_django(args.database_url)

    from datasets_app.models import LabelingOrder
    from datasets_app.services import labeling as ours
    from datasets_app.services.labeling import labeling_settings_set

    dataset = load_records(args.records)
    people = annotators(args.annotators)
    from django.contrib.auth.models import User

    analyst, _ = User.objects.get_or_create(username="bench-analyst", is_superuser=True)
    labeling_settings_set(dataset=dataset, user=analyst, overlap=1, order=LabelingOrder.FILE)
    before = before_module()
    vacuum()
    rows = []
    print(
        f"save a label + next record, server side (service calls), {args.records:,} records, "
        f"{args.actions:,} actions a phase; {args.annotators} annotators are threads of "
        f"{args.processes} process(es):"
    )
    with open("/proc/loadavg") as handle:
        print(f"load average now: {handle.read().split()[0]} on {os.cpu_count()} cores")
    rows.append(summary("floor: SELECT 1, 1 connection", floor(people[:1], args.actions)))
    rows.append(
        summary(f"floor: SELECT 1, {args.annotators} connections", floor(people, args.actions))
    )
    rows.append(summary("floor: durable commit, 1 connection", commit_floor(people[:1], 500)))
    rows.append(
        summary(f"floor: durable commit, {args.annotators} connections", commit_floor(people, 500))
    )
    previous = before_module(PREVIOUS, "labeling_previous")
    cpu = {}
    for name, service in (("before", before), ("previous", previous), ("ours", ours)):
        vacuum()  # each phase starts from tables as autovacuum keeps them, not the last's debris
        act(service, dataset, people[0], 50, [])  # warm up
        print(f"  {name}: {round_trips(service, dataset, people[0])} round trips per action")
        cpu[name] = cpu_per_action(service, dataset, people[0], max(args.actions // 10, 50))
        print(f"  {name}: CPU per action alone {cpu[name]}")
        rows.append(
            summary(f"{name}, 1 annotator", measure(service, dataset, people[:1], args.actions))
        )
        rows.append(
            summary(
                f"{name}, {args.annotators} annotators",
                measure(service, dataset, people, args.actions, args.processes),
            )
        )
        if name == "ours" and args.processes > 1:
            # The harness of earlier runs: every annotator a thread of this one process.
            rows.append(
                summary(
                    f"{name}, {args.annotators} annotators, 1 process",
                    measure(service, dataset, people, args.actions, 1),
                )
            )
    labeling_settings_set(dataset=dataset, user=analyst, overlap=2)
    for name, service in (("previous", previous), ("ours", ours)):
        vacuum()
        rows.append(
            summary(
                f"{name}, {args.annotators} annotators, overlap 2",
                measure(service, dataset, people, args.actions, args.processes),
            )
        )
    labeling_settings_set(dataset=dataset, user=analyst, overlap=1)
    rows += without_label_list(dataset, before, ours, people[0], max(args.actions // 4, 50))
    print(f"pre-labeling {args.prelabel:,} records for the uncertainty order:")
    prelabeled = prelabel(dataset, args.prelabel, model=not args.no_model)
    labeling_settings_set(dataset=dataset, user=analyst, order=LabelingOrder.LEAST_CONFIDENCE)
    for name, service in (("previous", previous), ("ours", ours)):
        vacuum()
        rows.append(
            summary(
                f"{name}, 1 annotator, least confidence first",
                measure(service, dataset, people[:1], args.actions),
            )
        )
        rows.append(
            summary(
                f"{name}, {args.annotators} annotators, least confidence first",
                measure(service, dataset, people, args.actions, args.processes),
            )
        )
    labeling_settings_set(dataset=dataset, user=analyst, order=LabelingOrder.FILE)
    explain(dataset, people[0])
    by_name = {row["name"]: row for row in rows}
    crowd = f"{args.annotators} annotators"
    old, new = by_name[f"before, {crowd}"], by_name[f"ours, {crowd}"]
    print(
        f"{crowd}: p95 before {old['p95_ms']} ms -> ours {new['p95_ms']} ms "
        f"({old['p95_ms'] / max(new['p95_ms'], 0.01):.1f}x faster); "
        f"ours p95 / target 20 ms = {new['p95_vs_target']}"
    )
    with open("/proc/loadavg") as handle:
        print(f"load average at the end: {handle.read().split()[0]}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "prelabel": prelabeled, "cpu": cpu}, indent=2)
        )


if __name__ == "__main__":
    main()
