"""An export's graph is published only by the attempt that still owns the job: a worker the
sweeper gave up on that wakes after its last progress report stores its graph under a name of
its own and loses the publish, so the current attempt's published file stays and the stale
one's is removed. Two attempts of one job, the old one resumed after the new one finished."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from lepton_web.jobs import jobs_sweep
from models_app.exports import model_export_execute
from models_app.models import ModelExport
from tests.models_app.serving_helpers import make_version
from tests.training_app.snapshot_helpers import make_snapshot, toy_rows

pytestmark = pytest.mark.django_db


def test_a_stale_export_attempt_neither_publishes_nor_leaves_its_file(
    tmp_path_factory, monkeypatch
):
    version = make_version(tmp_path_factory)
    version.snapshot = make_snapshot(toy_rows(12))
    version.save()
    export = ModelExport.objects.create(model_version=version, kind="onnx-fp32")
    report = ModelExport.report
    handed_over = []

    def report_then_hand_over(self, *, progress=None, message=None):
        alive = report(self, progress=progress, message=message)
        if progress == 95 and not handed_over:  # the first attempt, about to store its graph
            handed_over.append(self.claimed_attempt)
            row = ModelExport.objects.get(pk=export.pk)
            jobs_sweep(now=row.heartbeat_at + timedelta(seconds=25))
            assert ModelExport.objects.get(pk=export.pk).status == "queued"
            second = model_export_execute(export_id=export.pk)  # the second worker, to the end
            assert second.status == "succeeded", second.error_message
        return alive

    monkeypatch.setattr(ModelExport, "report", report_then_hand_over)

    model_export_execute(export_id=export.pk)  # the first worker, resumed

    assert handed_over == [1]
    export.refresh_from_db()
    assert (export.status, export.attempts) == ("succeeded", 2)
    assert default_storage.exists(export.file_path)
    onnx = Path(default_storage.path(f"{version.artifact_uri}/onnx"))
    stored = [p.relative_to(onnx).as_posix() for p in onnx.rglob("*") if p.is_file()]
    assert stored == [export.file_path.split("/onnx/", 1)[1]]  # the stale graph is gone
