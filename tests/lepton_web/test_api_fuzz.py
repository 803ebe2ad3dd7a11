"""Every operation of /api/schema/, fuzzed against a live server: no request may get a 5xx
(issue 9, item 9).

Schemathesis generates requests from the OpenAPI schema the server publishes (valid ones and
ones that break the schema), sends them over HTTP to ``live_server`` (PostgreSQL when
``DATABASE_URL`` is set: it finds errors SQLite hides, like an integer out of range) as an
admin, and the test fails listing every operation that answered with a server error, with a
curl command to reproduce it. The number of examples is bounded and the generation is
derandomized, so the run is repeatable and takes about a minute; raise
``LEPTON_FUZZ_EXAMPLES`` for a deeper local run.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from datasets_app.services.snapshots import snapshot_create
from lepton_web.accounts import user_token_issue
from tests.conftest import broker_for_this_process
from tests.datasets_app.factories import imported_dataset

EXAMPLES_PER_OPERATION = int(os.environ.get("LEPTON_FUZZ_EXAMPLES", "12"))


@pytest.fixture
def fuzz_target(live_server, transactional_db, make_user, redis_url):
    """The live server, an admin's token, and a dataset with records and a snapshot, whose ids
    a second pass puts in the paths so the fuzzed queries and bodies reach the real work."""
    admin = make_user("admin")
    key = user_token_issue(user=admin)
    with broker_for_this_process(redis_url):
        dataset = imported_dataset(
            admin,
            "text,label\nwhere is my card,card\nreset my PIN,pin\ntop up failed,top_up\n",
            {"text_columns": ["text"], "label_column": "label"},
            report=False,
        )
        snapshot = snapshot_create(dataset=dataset, user=admin)
        known_ids = {
            "dataset_id": dataset.pk,
            "record_id": dataset.records.order_by("pk").first().pk,
            "snapshot_id": snapshot.pk,
        }
        yield live_server.url, {"Authorization": f"Token {key}"}, known_ids


def _fuzz(
    operation, mode: GenerationMode, base_url: str, headers: dict, path_parameters: dict
) -> tuple[list[str], int]:
    """Send up to EXAMPLES_PER_OPERATION generated requests; one report per 5xx status."""
    errors: list[str] = []
    sent = 0

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimize
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def send(case):
        nonlocal sent
        response = case.call(base_url=base_url, headers=dict(headers), timeout=30)
        sent += 1
        if response.status_code >= 500 and not any(
            f"-> {response.status_code}:" in error for error in errors
        ):
            errors.append(
                f"{operation.label} ({mode.value}) -> {response.status_code}: "
                f"{response.text[:300]}\n    "
                + case.as_curl_command(headers=dict(headers), base_url=base_url)
            )

    # Unsatisfiable: nothing in this operation can be made invalid for the negative mode.
    with contextlib.suppress(Unsatisfiable):
        send()
    return errors, sent


def _passes(operation, known_ids: dict) -> list[tuple[GenerationMode, dict]]:
    """(mode, fixed path parameters) to run: generated ids, then the seeded rows' ids where the
    path takes only those (not for DELETE, which would remove them for the operations after)."""
    names = {parameter.name for parameter in operation.path_parameters}
    # Without a parameter or a body there is nothing to break (and Hypothesis would spend
    # seconds proving it).
    breakable = bool(names) or any(len(part) for part in (operation.query, operation.body))
    passes = [(GenerationMode.POSITIVE, {})]
    if breakable:
        passes.append((GenerationMode.NEGATIVE, {}))
    if names and names <= set(known_ids) and operation.method.upper() != "DELETE":
        fixed = {name: known_ids[name] for name in names}
        passes.append((GenerationMode.POSITIVE, fixed))
        if any(len(part) for part in (operation.query, operation.body)):
            passes.append((GenerationMode.NEGATIVE, fixed))
    return passes


def test_no_operation_of_the_api_schema_answers_with_a_server_error(fuzz_target):
    base_url, headers, known_ids = fuzz_target
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "GET /api/v1/datasets/{dataset_id}/records/" in [op.label for op in operations]

    errors: list[str] = []
    sent = 0
    for operation in operations:
        for mode, fixed in _passes(operation, known_ids):
            found, count = _fuzz(operation, mode, base_url, headers, fixed)
            errors += found
            sent += count

    assert sent >= len(operations)
    assert errors == [], "\n".join(errors)
