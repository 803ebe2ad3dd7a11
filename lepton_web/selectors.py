"""Reads of the console core: system health, dashboard counts, job lookups."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.http import Http404

from lepton_web.access import access_check
from lepton_web.jobs import Job, job_model_for_label
from lepton_web.models import WorkerPresence


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if host else f"{parts.scheme}://"


def database_health() -> dict:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        connection.close()
        return {
            "ok": False,
            "vendor": connection.vendor,
            "detail": f"Unreachable: {exc}".strip()[:300],
        }
    return {
        "ok": True,
        "vendor": connection.vendor,
        "detail": "Connected.",
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
    }


def broker_health() -> dict:
    from lepton_web.celery import app

    url = app.conf.broker_url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport error means "down" for the dashboard
        return {"ok": False, "url": _redact(url), "detail": f"Unreachable: {exc}"[:300]}
    return {"ok": True, "url": _redact(url), "detail": "Connected."}


def worker_list() -> list[dict]:
    workers = []
    for presence in WorkerPresence.objects.all():
        workers.append(
            {
                "hostname": presence.hostname,
                "queues": presence.queues,
                "online": presence.is_online,
                "last_seen_at": presence.last_seen_at,
                "started_at": presence.started_at,
            }
        )
    return workers


def system_health() -> dict:
    database = database_health()
    broker = broker_health()
    workers = worker_list() if database["ok"] else []
    online = [w for w in workers if w["online"]]
    queues = {
        queue: sorted(w["hostname"] for w in online if queue in w["queues"])
        for queue in ("default", "gpu")
    }
    return {
        "ok": database["ok"] and broker["ok"] and all(queues.values()),
        "database": database,
        "broker": broker,
        "workers": workers,
        "queues": queues,
    }


def dashboard_counts() -> list[dict]:
    """Counts for the dashboard tiles; each later feature adds its model here."""
    tiles = [
        ("datasets_app", "Dataset", "Datasets", "datasets:dataset_list"),
        ("training_app", "TrainingRun", "Training runs", "training:run_list"),
        ("models_app", "ModelVersion", "Model versions", "models:model_list"),
        ("models_app", "Deployment", "Deployments", "models:deployment_list"),
        ("models_app", "BaseModel", "Base models", "models:model_list"),
    ]
    counts = []
    for app_label, model_name, title, url_name in tiles:
        try:
            model = apps.get_model(app_label, model_name)
        except LookupError:
            continue
        counts.append({"title": title, "count": model.objects.count(), "url_name": url_name})
    counts.append({"title": "Users", "count": get_user_model().objects.count(), "url_name": None})
    return counts


def job_get_for_user(*, user, label: str, job_id: int) -> Job:
    model = job_model_for_label(label)
    if model is None:
        raise Http404("No such kind of job.")
    access_check(user, model.access_resource, "view")
    job = model.objects.filter(pk=job_id).first()
    if job is None or not _job_dataset_visible(job, user):
        raise Http404("This job does not exist.")
    return job


def _job_dataset_visible(job: Job, user) -> bool:
    """A job of a dataset (an import, a fix, a likely-mislabeled scan) is shown only to those
    who see the dataset: an annotator not assigned to it gets the same 404 as for the dataset."""
    from datasets_app.selectors import dataset_visible_to

    dataset = getattr(job, "dataset", None) if hasattr(job, "dataset_id") else None
    return dataset is None or dataset_visible_to(dataset=dataset, user=user)
