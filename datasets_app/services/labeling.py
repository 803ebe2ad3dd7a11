"""Labeling records one at a time: the label schema, the queue, and saving a label.

The queue hands each annotator the next record without a label, in id order, and holds it
for them (a ``LabelClaim``) so that two people labeling the same dataset never get the same
record. Saving a label checks that the record still has the label the annotator saw, so a
label someone else gave meanwhile is never overwritten without them seeing it. Label counts
are kept up to date in the same transaction; the first label a record had is kept
(``original_label``), and every label given is logged (``LabelChange``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from datasets_app.models import (
    MAX_OVERLAP,
    Annotation,
    BulkLabel,
    Dataset,
    DatasetAssignment,
    LabelChange,
    LabelClaim,
    LabelingOrder,
    Record,
    RecordSuggestion,
    ReviewItem,
)
from datasets_app.services.jobs import LOCK_WAIT, DatasetBusy, dataset_lock
from datasets_app.services.label_counts import label_counts_known, label_counts_move
from lepton_web.access import access_check

MAX_LABELS = 200
MAX_LABEL_CHARS = 500
LABEL_SEPARATOR = "|"  # several labels of one record, as multi-label training reads them


def _field_error(field: str, message: str) -> ValidationError:
    """A refusal the API reports under the request's field (``errors: {field: [...]}``); pages
    show its message as before."""
    return ValidationError({field: [message]})


class LabelConflict(ValidationError):
    """The record's label changed after the annotator was shown it."""


class LabelsInUse(ValidationError):
    """A new label list leaves out labels that records have; ``labels`` maps each to its
    record count."""

    def __init__(self, message: str, *, labels: dict[str, int]):
        super().__init__(message)
        self.labels = labels


# Pieces of a page template (a tag the page failed to render) are never labels: saving them
# would replace the list with debris, as a tag broken over two lines once did.
TEMPLATE_DEBRIS = ("{{", "}}", "{%", "%}")


def _labels_in_use(dataset: Dataset, multiple: bool) -> dict[str, int]:
    """Labels the dataset's current records have (not excluded), with their record counts."""
    used: dict[str, int] = {}
    for label, count in (dataset.label_counts or {}).items():
        for one in split_labels(label) if multiple else [label]:
            if one and count > 0:
                used[one] = used.get(one, 0) + count
    return used


@dataclass(frozen=True)
class LabelingItem:
    record: Record | None  # None: nothing left to label
    remaining: int  # records without a label (not excluded), this one included
    labels: list[str]
    previous_id: int | None  # the record this user labeled last, to go back to


def _fast_sql() -> bool:
    """Whether the queue's hot path (the next record past the last one; saving a label) runs
    as PostgreSQL functions (migration 0026), one call each with the dataset read, rather than
    through the ORM (SQLite; and on PostgreSQL a record asked for by id, an uncertainty order
    from the top, the end of the queue, a label above overlap 1 after the call). Tests switch
    it off to hold both paths to the same results."""
    return connection.vendor == "postgresql"


def _claim_seconds() -> int:
    return settings.LABELING_CLAIM_SECONDS


def label_schema_set(
    *,
    dataset: Dataset,
    user,
    labels: list[str],
    multiple: bool | None = None,
    drop_labels_in_use: bool = False,
) -> Dataset:
    """Set the labels annotators choose from, in order, and whether a record may get several
    of them (``multiple``; None keeps the current choice). Records keep the labels they have.

    A list that leaves out labels records have raises ``LabelsInUse`` (nothing changes) unless
    ``drop_labels_in_use``: those labels would silently stop being offered."""
    access_check(user, "dataset", "change")
    multiple = dataset.label_multiple if multiple is None else bool(multiple)
    cleaned: list[str] = []
    for raw in labels:
        label = str(raw).strip()
        if not label:
            continue
        if any(piece in label for piece in TEMPLATE_DEBRIS):
            raise _field_error(
                "labels",
                f'The label "{label[:40]}" looks like a piece of a page template, not a label. '
                "Write the labels themselves, one per line.",
            )
        if multiple and LABEL_SEPARATOR in label:
            raise _field_error(
                "labels",
                f'The label "{label[:40]}" contains "{LABEL_SEPARATOR}", which joins the labels '
                "of a record that has several. Rename it, or allow one label per record.",
            )
        if len(label) > MAX_LABEL_CHARS:
            raise _field_error(
                "labels", f'The label "{label[:40]}…" is longer than {MAX_LABEL_CHARS} characters.'
            )
        if label in cleaned:
            raise _field_error("labels", f'The label "{label}" is listed twice.')
        cleaned.append(label)
    if not cleaned:
        raise _field_error("labels", "Give at least one label, one per line.")
    if len(cleaned) > MAX_LABELS:
        raise _field_error(
            "labels", f"{len(cleaned)} labels were given; a schema holds at most {MAX_LABELS}."
        )
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        missing = {
            label: count
            for label, count in _labels_in_use(dataset, multiple).items()
            if label not in cleaned
        }
        if missing and not drop_labels_in_use:
            listed = ", ".join(
                f'"{label[:40]}" ({count:,} record{"" if count == 1 else "s"})'
                for label, count in sorted(missing.items(), key=lambda item: (-item[1], item[0]))[
                    :10
                ]
            )
            more = f" and {len(missing) - 10:,} more" if len(missing) > 10 else ""
            raise LabelsInUse(
                f"The new list leaves out labels that records have: {listed}{more}. Records "
                "keep their labels either way, but these would no longer be offered. Add them "
                "back to the list, or confirm that you mean to leave them off.",
                labels=missing,
            )
        dataset.label_schema = cleaned
        dataset.label_multiple = multiple
        dataset.save(update_fields=["label_schema", "label_multiple", "updated_at"])
    return dataset


def _unlabeled(dataset: Dataset):
    return Record.objects.filter(
        import_run_id=dataset.active_import_id, label="", is_excluded=False
    )


def _overlap(dataset: Dataset) -> int:
    return max(1, int(dataset.label_overlap or 1))


def dataset_labelable_check(dataset: Dataset, user) -> None:
    """Refuse (PermissionDenied, a plain sentence) an annotator the dataset is not assigned
    to, when it has assigned annotators. Analysts and admins label every dataset."""
    from datasets_app.selectors import dataset_visible_to

    if not dataset_visible_to(dataset=dataset, user=user):
        raise PermissionDenied(_NOT_ASSIGNED)


_NOT_ASSIGNED = "This dataset is not assigned to you. Ask an analyst to assign you to it."


def dataset_labeling_read(dataset: Dataset, user=None, *, previous: bool = False) -> Dataset:
    """The dataset as committed now, in one round trip, checked as labelable by ``user``.
    ``previous``: also the record ``user`` labeled last in it (``previous_id``, None if none),
    read in the same round trip.

    Labeling never holds the dataset lock (every annotator queued on it, which was most of
    the time of a label): label counts move in one statement at the end. On PostgreSQL the
    read takes a share lock that ends with the statement (its own implicit transaction, when
    not in a caller's), so it waits out a split, fix or import saving its work, up to
    LOCK_WAIT (then ``DatasetBusy``), while annotators never block each other on it. Whether
    the dataset has assigned annotators, and ``user`` among them, comes with the same row."""
    from datasets_app.selectors import _assignment_limited

    table = Dataset._meta.db_table
    assigned = DatasetAssignment._meta.db_table
    user_id = getattr(user, "pk", None)
    last = ""
    params = [user_id]
    if previous:
        # The annotation_user_recent index answers this with one entry.
        last = (
            f", (SELECT n.record_id FROM {Annotation._meta.db_table} n WHERE n.dataset_id = d.id "  # noqa: S608
            "AND n.user_id = %s ORDER BY n.updated_at DESC, n.id DESC LIMIT 1) AS previous_id"
        )
        params.append(user_id)
    select = (
        f"SELECT d.*, EXISTS (SELECT 1 FROM {assigned} a WHERE a.dataset_id = d.id) AS has_assigned, "  # noqa: S608
        f"EXISTS (SELECT 1 FROM {assigned} a WHERE a.dataset_id = d.id AND a.user_id = %s) "
        f"AS is_assigned{last} FROM {table} d WHERE d.id = %s"
    )
    params.append(dataset.pk)
    if connection.vendor == "postgresql":
        settings_sql = "set_config('lock_timeout', %s, true)"
        if not connection.in_atomic_block:
            # The share lock makes this a writing transaction; what it wrote (a lock, gone at
            # its end) needs no wait for the disk at commit: 5-8 ms saved per call.
            settings_sql += ", set_config('synchronous_commit', 'off', true)"
        select = f"SELECT {settings_sql}; {select} FOR SHARE OF d"
        params = [LOCK_WAIT, *params]
    try:
        rows = list(Dataset.objects.raw(select, params))
    except OperationalError as exc:
        if getattr(exc.__cause__, "pgcode", None) == "55P03":  # lock_not_available
            raise DatasetBusy() from None
        raise
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        # In the caller's transaction the wait limit would last to its end: only this read
        # waits at most LOCK_WAIT; what follows waits as it did.
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    if not rows:
        raise ValidationError("This dataset does not exist any more.")
    fresh = rows[0]
    limited = user is not None and fresh.has_assigned and not fresh.is_assigned
    if limited and _assignment_limited(user):
        raise PermissionDenied(_NOT_ASSIGNED)
    return fresh


def _release_and_read_holds(
    dataset: Dataset, user, keep: list[int], *, soft: bool = False
) -> dict[int, int]:
    """Let go of ``user``'s holds on the dataset (but ``keep``), and return the records held by
    other people now with how many hold each (few: one hold a person). One round trip on
    PostgreSQL. ``soft``: this transaction writes only holds, which are soft state (a hold lost
    in a database crash just expires early), so its commit need not wait for the disk."""
    now = timezone.now()
    if connection.vendor != "postgresql":
        LabelClaim.objects.filter(dataset=dataset, user=user).exclude(record_id__in=keep).delete()
        held = (
            LabelClaim.objects.filter(dataset=dataset, expires_at__gt=now)
            .exclude(user=user)
            .values_list("record_id", flat=True)
        )
    else:
        table = LabelClaim._meta.db_table
        lazy = "SELECT set_config('synchronous_commit', 'off', true); " if soft else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"{lazy}WITH gone AS (DELETE FROM {table} WHERE dataset_id = %s AND user_id = %s "  # noqa: S608
                "AND NOT (record_id = ANY(%s::bigint[]))) "
                f"SELECT record_id FROM {table} WHERE dataset_id = %s AND expires_at > %s "
                "AND user_id <> %s",
                [dataset.pk, user.pk, list(keep), dataset.pk, now, user.pk],
            )
            held = [row[0] for row in cursor.fetchall()]
    holds: dict[int, int] = {}
    for record_id in held:
        holds[record_id] = holds.get(record_id, 0) + 1
    return holds


def _hold(dataset: Dataset, user, record: Record, k: int) -> bool:
    """Hold ``record`` for ``user`` if fewer than ``k`` people hold or annotated it.

    Called with the record's row locked (on PostgreSQL): the claims read below, by a statement
    that starts after every earlier holder committed, are all of them, and the row read under
    the lock has the current annotation count; so no record is ever held or annotated by more
    than ``k`` people at once. (The queue's query already left out records this person
    annotated.) One read and one write."""
    now = timezone.now()
    expires = now + timedelta(seconds=_claim_seconds())
    claims = list(
        LabelClaim.objects.filter(record=record).values_list("pk", "user_id", "expires_at")
    )
    mine = next((pk for pk, holder, _ in claims if holder == user.pk), None)
    others = sum(1 for _, holder, until in claims if holder != user.pk and until > now)
    expired = [pk for pk, holder, until in claims if holder != user.pk and until <= now]
    # With overlap 1 a hold is exclusive, as before: the record's label decides the rest.
    if mine is None and (others >= k or (k > 1 and others + record.annotation_count >= k)):
        return False
    if expired:
        LabelClaim.objects.filter(pk__in=expired).delete()
    if mine is None:
        LabelClaim.objects.create(record=record, dataset=dataset, user=user, expires_at=expires)
    else:
        LabelClaim.objects.filter(pk=mine).update(expires_at=expires)
    return True


def _lock(records):
    if connection.features.has_select_for_update_skip_locked:
        return records.select_for_update(skip_locked=True, of=("self",))
    return records


def labeling_next(
    *,
    dataset: Dataset,
    user,
    after: int | None = None,
    record_id: int | None = None,
    keep: Collection[int] = (),
) -> LabelingItem:
    """The record to show ``user`` now, held for them.

    ``record_id`` asks for one record (to relabel it, or to go back); otherwise the next record
    that needs an annotation from them (without a label, fewer than the dataset's overlap
    annotations, none of them theirs) after ``after``, in the dataset's labeling order (file
    order, or the most uncertain suggestion first), wrapping around to the records skipped
    earlier, and never one that already has as many holders as it needs. ``keep``: records
    the page still shows this person (preloaded), not let go.
    """
    access_check(user, "labeling", "label")
    keep = [int(pk) for pk in keep]
    soft = not connection.in_atomic_block  # the transaction below is ours alone
    fresh = None
    if record_id is None and _fast_sql():
        status, fresh, previous, record = _next_pg(dataset, user, after, keep, soft=soft)
        if status == "ok":
            return LabelingItem(record, _remaining(fresh), label_choices(fresh), previous)
        if status == "walk":
            fresh.previous_id = previous
        else:
            fresh = None  # the general read below says why (not assigned; gone)
    dataset = fresh or dataset_labeling_read(dataset, user, previous=True)
    if not dataset.active_import_id:
        raise ValidationError("This dataset has no imported records yet; import it first.")
    labels = label_choices(dataset)
    previous = dataset.previous_id
    with transaction.atomic():
        # One claim per person and dataset (besides those kept): letting go of the last first.
        mine = LabelClaim.objects.filter(dataset=dataset, user=user).exclude(record_id__in=keep)
        if record_id is not None:
            record = Record.objects.filter(
                pk=record_id, import_run_id=dataset.active_import_id
            ).first()
            if record is None:
                raise ValidationError(
                    "That record is not in this dataset any more (it was imported again or "
                    "deleted)."
                )
            mine.exclude(record=record).delete()
            record = _lock(Record.objects.filter(pk=record.pk)).first() or record
            _hold(dataset, user, record, _overlap(dataset))
            return LabelingItem(record, _remaining(dataset), labels, previous)
        holds = _release_and_read_holds(dataset, user, keep, soft=soft)
        record = _next_unclaimed(dataset, user, after, exclude=keep, holds=holds)
        return LabelingItem(record, _remaining(dataset), labels, previous)


# Uncertainty orders: the suggestion field, most uncertain first.
ORDER_FIELDS = {
    LabelingOrder.LEAST_CONFIDENCE: "probability",
    LabelingOrder.MARGIN: "margin",
    LabelingOrder.ENTROPY: "-entropy",
}


def _candidates(dataset: Dataset, user, k: int, skip: list[int]):
    records = _unlabeled(dataset)
    if k > 1:
        records = records.filter(annotation_count__lt=k).exclude(
            Exists(
                Annotation.objects.filter(
                    record_id=OuterRef("pk"), user=user, undone_at__isnull=True
                )
            )
        )
    if skip:
        records = records.exclude(id__in=skip)
    return records


def _after_uncertain(field: str, dataset: Dataset, after: int) -> Q | None:
    """Suggestions after the record ``after`` in the uncertainty order (keyset)."""
    name = field.lstrip("-")
    score = (
        RecordSuggestion.objects.filter(dataset=dataset, record_id=after)
        .exclude(**{f"{name}__isnull": True})
        .order_by(field)
        .values_list(name, flat=True)
        .first()
    )
    if score is None:
        return None
    past, from_ = ("lt", "lte") if field.startswith("-") else ("gt", "gte")
    beyond = Q(**{f"suggestions__{name}__{past}": score}) | Q(
        **{f"suggestions__{name}": score, "id__gt": after}
    )
    # The redundant bound is what the index can start from (an OR alone is only a filter, and
    # the walk would go over every suggestion before ``after``).
    return Q(**{f"suggestions__{name}__{from_}": score}) & beyond


def _uncertain_record(dataset: Dataset, user, k: int, skip: list[int], beyond: Q | None):
    """The most uncertain record needing an annotation (past ``beyond``), locked (rows being
    locked by others are skipped), or None. One query: the suggestion index in order, joined
    to the records."""
    field = ORDER_FIELDS[dataset.labeling_order]
    name = field.lstrip("-")
    scored = Q(suggestions__dataset=dataset) & Q(**{f"suggestions__{name}__isnull": False})
    if beyond is not None:
        scored &= beyond
    rows = _candidates(dataset, user, k, skip).filter(scored)
    ordering = f"-suggestions__{name}" if field.startswith("-") else f"suggestions__{name}"
    return _lock(rows.order_by(ordering, "id")).first()


# How many of the next records the file-order walk reads from the unlabeled index at once.
QUEUE_WINDOW = 32
# The same in an uncertainty order, where each record of the window is a lookup from the
# order's suggestion index into the records (32 of them were 0.45 of the 0.72 ms of that
# statement). With the records others hold left out of it, only records being handed out
# at that moment are locked, at most one per other annotator at once: 12 leaves a free one
# for 12 people labeling at once.
UNCERTAIN_WINDOW = 12


def _first_unlocked(candidates) -> Record | None:
    """The first of ``candidates`` in id order, locked (skipping rows others are locking).

    The ids come first from the index of unlabeled records (``record_run_unlabeled``, an
    index-only scan of a few entries), and only those rows are locked: left to itself the
    planner walks the primary key and steps over every labeled record before the first
    unlabeled one (16,000 rows, 28 ms, after 16,000 labels on a million records), since
    its statistics cannot tell that the labeled ones all come first. If every row of the
    window is being locked by others, the plain walk follows."""
    window = candidates.order_by("id").values("id")[:QUEUE_WINDOW]
    found = _lock(candidates.filter(id__in=window).order_by("id")).first()
    locked_out = found is None and connection.vendor == "postgresql"
    if locked_out and candidates.filter(id__in=window).exists():
        found = _lock(candidates.order_by("id")).first()
    return found


# Attempts of the one-round-trip hand-out before the general walk takes over (a record refused
# after locking it: as many people hold or annotated it as need to).
FAST_ATTEMPTS = 4


# Per model and database: the concrete fields' attribute names, each field's converters, and
# per function call shape the column list (built once: building them cost a third of the
# Python time of a labeling action).
_MODEL_READERS: dict = {}
_FUNCTION_COLUMNS: dict = {}
# Columns the queue never reads from the dataset it gets back, left out (deferred: read from
# the database only if something asks): parsing a quality report on every call cost more than
# the call's SQL on a real dataset.
_DEFERRED = {
    Dataset: {"description", "status_message", "detection", "mapping", "quality_report"},
}


def _read_fields(model) -> list:
    deferred = _DEFERRED.get(model, ())
    return [field for field in model._meta.concrete_fields if field.attname not in deferred]


def _model_reader(model) -> tuple[list[str], list[tuple]]:
    key = (model, connection.alias)
    reader = _MODEL_READERS.get(key)
    if reader is None:
        fields = _read_fields(model)
        reader = (
            [field.attname for field in fields],
            [(field, tuple(field.get_db_converters(connection))) for field in fields],
        )
        _MODEL_READERS[key] = reader
    return reader


def _model_from_db(model, values: list):
    """An instance of ``model`` from its concrete fields' column values (as the ORM converts
    them), or None when the row is absent (a NULL composite: every value NULL)."""
    if values[0] is None:
        return None
    attnames, converters = _model_reader(model)
    converted = []
    for (field, field_converters), value in zip(converters, values, strict=True):
        for converter in field_converters:
            value = converter(value, field, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


def _function_columns(scalars: list[str], rows: dict[str, type]) -> str:
    key = (connection.alias, tuple(scalars), tuple(rows.items()))
    columns = _FUNCTION_COLUMNS.get(key)
    if columns is None:
        quote = connection.ops.quote_name
        names = list(scalars)
        for out, model in rows.items():
            names += [f"(x.{out}).{quote(field.column)}" for field in _read_fields(model)]
        columns = _FUNCTION_COLUMNS[key] = ", ".join(names)
    return columns


def _pg_function(
    name: str,
    params: list[tuple],
    scalars: list[str],
    rows: dict[str, type],
    raw: Collection[str] = (),
) -> list:
    """Call the PostgreSQL function ``name`` (migration 0026) in one round trip with
    ``params`` (value, SQL type) in order. Its composite
    outputs (``rows``: output name -> model) come back as model instances, each column of the
    model read out of the composite by name (those in ``raw``: their column values, for
    ``_model_from_db`` when needed); ``scalars`` as they are. A share lock on the
    dataset that timed out (a split, fix or import being saved) raises DatasetBusy.

    The call is a prepared statement of the connection (``LABELING_PREPARED_STATEMENTS``),
    prepared in the same round trip as its first use: parsing and planning the call's
    statement each time cost about 0.13 ms of the database's CPU, a sixth of a label's."""
    columns = _function_columns(scalars, rows)
    values = [value for value, _ in params]
    try:
        with connection.cursor() as cursor:
            if settings.LABELING_PREPARED_STATEMENTS:
                _execute_prepared(cursor, name, columns, params, values)
            else:
                placeholders = ", ".join(f"%s::{kind}" for _, kind in params)
                cursor.execute(
                    f"SELECT {columns} FROM {name}({placeholders}) x",  # noqa: S608
                    values,
                )
            fetched = cursor.fetchall()
    except OperationalError as exc:
        if getattr(exc.__cause__, "pgcode", None) == "55P03":  # lock_not_available
            raise DatasetBusy() from None
        raise
    answers = []
    for row in fetched:
        answer = list(row[: len(scalars)])
        at = len(scalars)
        for out, model in rows.items():
            width = len(_model_reader(model)[0])
            values = list(row[at : at + width])
            answer.append(values if out in raw else _model_from_db(model, values))
            at += width
        answers.append(answer)
    return answers


# Per function call shape: its prepared statement's name and PREPARE text.
_PREPARED_TEXT: dict = {}


def _execute_prepared(cursor, name: str, columns: str, params: list[tuple], values: list) -> None:
    """Run ``name``'s call as a prepared statement of this database connection, preparing it
    in the same round trip the first time the connection runs it. A statement the server
    lost (DISCARD ALL; or a migration that changed the function's result: "cached plan must
    not change result type") is prepared again and the call retried, outside a transaction
    (inside one the error stands, and the next call prepares it afresh)."""
    kinds = tuple(kind for _, kind in params)
    key = (name, columns, kinds)
    known = _PREPARED_TEXT.get(key)
    if known is None:
        digest = hashlib.sha1(repr(key).encode(), usedforsecurity=False).hexdigest()[:10]
        statement = f"{name}_{digest}"
        arguments = ", ".join(f"${number}::{kind}" for number, kind in enumerate(kinds, 1))
        prepare = (
            f"PREPARE {statement} ({', '.join(kinds)}) AS "  # noqa: S608
            f"SELECT {columns} FROM {name}({arguments}) x"
        )
        known = _PREPARED_TEXT[key] = (statement, prepare)
    statement, prepare = known
    raw = connection.connection
    prepared = getattr(connection, "_lepton_prepared", None)
    if prepared is None or prepared[0] is not raw:
        prepared = connection._lepton_prepared = (raw, set())
    execute = f"EXECUTE {statement} ({', '.join(['%s'] * len(values))})"
    first = statement not in prepared[1]
    prepared[1].add(statement)  # prepared statements outlive a rolled-back transaction
    try:
        cursor.execute(f"{prepare}; {execute}" if first else execute, values)
    except DatabaseError as exc:
        code = getattr(exc.__cause__, "pgcode", None)
        # 26000: no such prepared statement; 0A000: its result type changed; 42P05: there
        # is one of that name already.
        if code not in ("26000", "0A000", "42P05"):
            raise
        if connection.in_atomic_block:
            if code != "42P05":
                prepared[1].discard(statement)
            raise
        cursor.execute(f"DEALLOCATE ALL; {prepare}; {execute}", values)
        prepared[1].clear()
        prepared[1].add(statement)


def _next_pg(
    dataset: Dataset, user, after: int | None, keep: list[int], *, soft: bool
) -> tuple[str, Dataset | None, int | None, Record | None]:
    """The next record on PostgreSQL in one round trip, the dataset read included:
    ``lepton_labeling_next`` (migration 0026). It waits out a split, fix or import being saved
    as ``dataset_labeling_read`` does, lets go of ``user``'s holds (but ``keep``), reads a
    window of the next records that need ``user``'s annotation past ``after`` (in file order
    from the ``record_run_unlabeled`` index; in an uncertainty order from the order's
    suggestion index, past ``after``'s score as ``_after_uncertain``), locks the first of them
    that nobody else is locking and holds it: a statement after the lock counts the claims,
    so it sees every earlier holder's (as ``_hold`` does), and reads the record's current
    annotation count.

    Returns ``(status, dataset, previous_id, record)``: "ok" with the record held; "walk"
    when the general walk must decide (no import; an uncertainty order from the top, or past
    a record without a suggestion; nothing free in the window: at the end of the queue, or
    every row of it being locked by others; or refused too often); "refused" or "gone" (the
    general read says why)."""
    from datasets_app.selectors import _assignment_limited

    now = timezone.now()
    (answer,) = _pg_function(
        "lepton_labeling_next",
        [
            (dataset.pk, "bigint"),
            (user.pk, "integer"),
            (after or 0, "bigint"),
            (keep, "bigint[]"),
            (_assignment_limited(user), "boolean"),
            (now, "timestamptz"),
            (now + timedelta(seconds=_claim_seconds()), "timestamptz"),
            (soft, "boolean"),
            (LOCK_WAIT, "text"),
            (
                UNCERTAIN_WINDOW if dataset.labeling_order in ORDER_FIELDS else QUEUE_WINDOW,
                "integer",
            ),
            (FAST_ATTEMPTS, "integer"),
        ],
        ["x.o_status", "x.o_previous", "x.o_shards"],
        {"o_ds": Dataset, "o_rec": Record},
    )
    status, previous, shards, fresh, record = answer
    if fresh is not None:
        # The counts as the share lock saw them (migration 0028): no query to count again.
        label_counts_known(fresh, shards)
    return status, fresh, previous, record


def _next_unclaimed(
    dataset: Dataset,
    user,
    after: int | None,
    *,
    exclude: Collection[int] = (),
    holds: dict[int, int] | None = None,
) -> Record | None:
    """The next record to hold for ``user``: in file order; or, with an uncertainty order,
    the records with a suggestion most uncertain first, then those without one in file order.
    Past ``after`` first, then wrapping around to the records skipped earlier."""
    k = _overlap(dataset)
    if holds is None:
        holds = _release_and_read_holds(dataset, user, list(exclude))
    # Records as many people hold as need to; with overlap above 1 the check after locking
    # a record also counts its annotations.
    refused: list[int] = [pk for pk, count in holds.items() if count >= k] + list(exclude)

    def uncertain(beyond: Q | None) -> Record | None:
        while True:
            record = _uncertain_record(dataset, user, k, refused, beyond)
            if record is None or _hold(dataset, user, record, k):
                return record
            refused.append(record.pk)

    def in_file_order(start: int | None, unsuggested: bool) -> Record | None:
        while True:
            candidates = _candidates(dataset, user, k, refused)
            if unsuggested:
                field = ORDER_FIELDS[dataset.labeling_order].lstrip("-")
                candidates = candidates.exclude(
                    Exists(
                        RecordSuggestion.objects.filter(
                            record_id=OuterRef("pk"), **{f"{field}__isnull": False}
                        )
                    )
                )
            if start:
                candidates = candidates.filter(id__gt=start)
            found = _first_unlocked(candidates)
            if found is None:
                return None
            if _hold(dataset, user, found, k):
                return found
            refused.append(found.pk)

    if dataset.labeling_order not in ORDER_FIELDS:
        steps = [lambda: in_file_order(after, False)] if after else []
        steps.append(lambda: in_file_order(None, False))
    else:
        field = ORDER_FIELDS[dataset.labeling_order]
        beyond = _after_uncertain(field, dataset, after) if after else None
        if not after:
            steps = [lambda: uncertain(None), lambda: in_file_order(None, True)]
        elif beyond is None:  # past a record without a suggestion: carry on in file order
            steps = [lambda: in_file_order(after, True)]
        else:
            steps = [lambda: uncertain(beyond), lambda: in_file_order(None, True)]
        steps += [lambda: uncertain(None), lambda: in_file_order(None, False)]
    for step in steps:
        record = step()
        if record is not None:
            return record
    return None


def _validated_label(dataset: Dataset, label: str) -> str:
    """``label`` checked against the dataset's labels; several (a|b) where the list allows
    them, stored once each in the list's order."""
    label = (label or "").strip()
    if not label:
        raise _field_error("label", "Choose a label.")
    choices = label_choices(dataset)
    given = split_labels(label) if dataset.label_multiple else [label]
    if not given:
        raise _field_error("label", "Choose a label.")
    for one in given:
        if one not in choices:
            shown = ", ".join(f'"{choice}"' for choice in choices[:20]) or "none yet"
            raise _field_error(
                "label",
                f'"{one[:80]}" is not one of this dataset\'s labels ({shown}). An analyst '
                "can add it to the label list.",
            )
    # Several labels are stored once each, in the list's order: "b|a" and "a|b" are one.
    label = LABEL_SEPARATOR.join(sorted(set(given), key=choices.index))
    if len(label) > MAX_LABEL_CHARS:
        raise _field_error(
            "label",
            f"Together these labels are {len(label):,} characters long; a record's labels "
            f"can be at most {MAX_LABEL_CHARS}. Choose fewer of them.",
        )
    return label


def split_labels(label: str) -> list[str]:
    """The labels of one record that may have several ("a|b")."""
    return [part.strip() for part in label.split(LABEL_SEPARATOR) if part.strip()]


def label_choices(dataset: Dataset) -> list[str]:
    """The labels offered: the list an analyst wrote; else every label the records have now
    or were given in the queue (so a label stays offered after its last record is relabeled,
    and a new import's labels appear), by name."""
    if dataset.label_schema:
        return list(dataset.label_schema)
    seen = set(dataset.label_choices) | _labels_logged(dataset)
    if dataset.label_multiple:  # "a|b" is two labels
        seen = {part for label in seen for part in split_labels(label)}
    return sorted(seen)


def _labels_logged(dataset: Dataset) -> set[str]:
    """Every label given or replaced in the dataset's label log. On PostgreSQL one index step
    per distinct label (a recursive walk of the (dataset, label) indexes: a label log of
    100,000 changes was read whole, twice an action); elsewhere SELECT DISTINCT."""
    if connection.vendor != "postgresql":
        seen: set[str] = set()
        for old, new in (
            LabelChange.objects.filter(dataset=dataset)
            .values_list("old_label", "new_label")
            .distinct()
        ):
            seen.update((old, new))
        return seen - {""}
    table = LabelChange._meta.db_table
    walks = [
        f"(WITH RECURSIVE walk(label) AS ((SELECT {column} FROM {table} "  # noqa: S608
        f"WHERE dataset_id = %s ORDER BY {column} LIMIT 1) UNION ALL SELECT (SELECT {column} "
        f"FROM {table} WHERE dataset_id = %s AND {column} > walk.label ORDER BY {column} "
        "LIMIT 1) FROM walk WHERE walk.label IS NOT NULL) SELECT label FROM walk)"
        for column in ("old_label", "new_label")
    ]
    with connection.cursor() as cursor:
        cursor.execute(" UNION ".join(walks), [dataset.pk] * 4)
        return {label for (label,) in cursor.fetchall() if label}


def _remaining(dataset: Dataset) -> int:
    return dataset.unlabeled_count


def dataset_label_counts_move(dataset: Dataset, moves: dict[str, int], *, user=None) -> None:
    """Add ``moves`` (label -> +n/-n) to the dataset's label counts as a label by ``user``:
    their shard of the counts, never the dataset row (services/label_counts.py). Refused
    (nothing saved) if another import became active meanwhile."""
    label_counts_move(dataset, moves, user=user)


def majority_label(labels: list[str]) -> str | None:
    """The label more than half of ``labels`` agree on; None without a strict majority."""
    if not labels:
        return None
    counts = Counter(labels)
    label, count = max(counts.items(), key=lambda item: (item[1], item[0]))
    return label if count * 2 > len(labels) else None


def _resolve(dataset: Dataset, record: Record, given: str | None) -> str | None:
    """The record's label from its annotations: with overlap 1 the label just given (as
    before overlap existed); above 1 the strict majority once ``label_overlap`` annotations
    exist, "" while there is none (a tie: the record goes to review), None before enough
    annotations exist (the record keeps its label)."""
    k = _overlap(dataset)
    if k == 1:
        return given
    labels = list(
        Annotation.objects.filter(record=record, undone_at__isnull=True).values_list(
            "label", flat=True
        )
    )
    return _resolved(dataset, record, labels, k)


def _resolved(dataset: Dataset, record: Record, labels: list[str], k: int) -> str | None:
    """``_resolve`` from the labels of the record's annotations (in any order)."""
    if len(labels) < k:
        return None
    winner = majority_label(labels)
    if winner is None:
        review_item_add(
            dataset=dataset,
            record_id=record.pk,
            reason=ReviewItem.Reason.DISAGREEMENT,
            detail={"labels": dict(Counter(labels))},
        )
        return ""
    return winner


def _label_write(dataset: Dataset, record: Record, label: str, user, also=()) -> None:
    """Give the locked ``record`` the label ``label``: kept original, LabelChange, counts.
    ``also``: other fields of the record to save in the same UPDATE."""
    old = record.label
    if old == label:
        if also:
            record.save(update_fields=list(also))
        return
    if record.original_label is None and old:
        # The label the file (or cleaning) gave, kept; a record that had none keeps NULL
        # ("never edited"): its history is in LabelChange.
        record.original_label = old
    record.label = label
    record.save(update_fields=["label", "original_label", *also])
    LabelChange.objects.create(
        dataset=dataset, record=record, old_label=old, new_label=label, user=user
    )
    if not record.is_excluded:
        dataset_label_counts_move(dataset, {old: -1, label: +1}, user=user)


def record_label_resolve(*, dataset: Dataset, record: Record, user=None) -> str:
    """Resolve the locked ``record``'s label again from its annotations, after one was
    undone: counts its annotations, and with overlap above 1 sets the majority (or sends a
    tie to review). With overlap 1 the label is left as it is (undo restores it). Returns the
    record's label."""
    record.annotation_count = Annotation.objects.filter(
        record=record, undone_at__isnull=True
    ).count()
    record.save(update_fields=["annotation_count"])
    if _overlap(dataset) > 1:
        resolved = _resolve(dataset, record, None)
        if resolved is not None:
            _label_write(dataset, record, resolved, user)
    return record.label


def _conflict(record: Record) -> LabelConflict:
    last = (
        LabelChange.objects.filter(record=record)
        .select_related("user")
        .order_by("-created_at", "-id")
        .first()
    )
    who = last.user.get_username() if last and last.user else "someone else"
    now = f'"{record.label}"' if record.label else "no label"
    return LabelConflict(
        f"While you were reading, {who} changed this record's label to {now}. It is "
        "shown as it is now; choose again to change it."
    )


_GONE = "That record is not in this dataset any more (it was imported again or deleted)."


def _answered_already(record: Record, user) -> bool:
    """What the label statements found before writing (overlap 1 and above alike): a retried
    submission (applied already: True, its annotation on the record), a label that changed
    since the annotator saw it (``LabelConflict``), or this person's label again (nothing to
    change: True); False when the label was written."""
    if record.dup_id is not None:
        record.annotation = Annotation.objects.get(pk=record.dup_id)
        return True
    if record.conflict:
        raise _conflict(record)
    if record.same:
        record.annotation = Annotation.objects.get(record_id=record.pk, user=user)
        return True
    return False


def _annotation_given(
    dataset: Dataset, record: Record, user, label: str, now, annotation: dict
) -> Annotation:
    """The annotation the label statements upserted, as written (without reading it back)."""
    return Annotation(
        id=record.annotation_id,
        dataset_id=dataset.pk,
        record_id=record.pk,
        user_id=user.pk,
        label=label,
        undone_at=None,
        created_at=record.annotation_created_at,
        updated_at=now,
        **annotation,
    )


def _label_set_one_pg(
    dataset: Dataset,
    user,
    record_id: int,
    label: str,
    *,
    expected_label,
    annotation: dict,
    checked: bool,
) -> tuple[str, Dataset | None, Record | None]:
    """``record_label_set`` on PostgreSQL in one round trip, the dataset read included:
    ``lepton_label_set`` (migrations 0026, 0030), where the ORM makes ten (twelve above overlap
    1, when a tie opens a review item).

    The dataset read waits out a split, fix or import being saved (as
    ``dataset_labeling_read``) and the label must be plainly one of the dataset's label list
    (unless ``checked``: the caller checked it). Then the record's lock; a statement after it
    reads the record and this person's annotation as the last holder of the lock left them.
    It writes nothing for a retried client key, or a record whose label is not
    ``expected_label``; else it lets go of the record's holds (above overlap 1: this person's),
    saves the annotation (one row a person and record: an upsert) and resolves the record:
    at overlap 1 the label given; above it the strict majority once the overlap is reached,
    a tie opening (or updating) the record's disagreement review item, as ``_resolved``. When
    the resolved label changes: the record (keeping the first label in ``original_label``), a
    LabelChange and the dataset's counts, on the current import only (at overlap 1 nothing
    else is written when another import became active meanwhile). The dataset row is
    share-locked first and held to the end of the call's commit (or the caller's).

    Returns ``(status, dataset, record)``: "ok" with the record brought to what was written
    (``record.annotation`` the annotation); "check" (the general path must check the label,
    or say why it cannot label) or "gone" (no dataset) with the dataset, nothing written."""
    from datasets_app.selectors import _assignment_limited

    now = timezone.now()
    rows = _pg_function(
        "lepton_label_set",
        [
            (dataset.pk, "bigint"),
            (user.pk, "integer"),
            (_assignment_limited(user), "boolean"),
            (record_id, "bigint"),
            (label, "text"),
            (expected_label, "text"),
            (annotation["client_key"], "text"),
            (annotation["time_spent_ms"], "integer"),
            (annotation["suggestion_label"], "text"),
            (annotation["suggestion_probability"], "double precision"),
            (annotation["suggestion_accepted"], "boolean"),
            (now, "timestamptz"),
            (LOCK_WAIT, "text"),
            (checked, "boolean"),
        ],
        [
            "x.o_status",
            "x.o_dup_id",
            "x.o_conflict",
            "x.o_fresh",
            "x.o_same",
            "x.o_annotation_id",
            "x.o_annotation_created_at",
            "x.o_counted",
            "x.o_overlap",
        ],
        {"o_ds": Dataset, "o_rec": Record},
        raw=("o_ds",),  # the dataset is built only when the label did not go through
    )
    if not rows:
        raise ValidationError(_GONE)
    (
        status,
        dup_id,
        conflict,
        fresh,
        same,
        annotation_id,
        created_at,
        counted,
        overlap,
        found,
        record,
    ) = rows[0]
    if status != "ok":
        return status, _model_from_db(Dataset, found), None
    found = None  # not read when the label went through
    record.dup_id, record.conflict, record.fresh, record.same = dup_id, conflict, fresh, same
    record.annotation_id, record.annotation_created_at = annotation_id, created_at
    if _answered_already(record, user):
        return status, found, record
    if overlap == 1:  # the record as it was before: apply what was written
        old = record.label
        if old != label:
            if not record.is_excluded and not counted:
                raise ValidationError(_GONE)  # another import became active: nothing written
            if record.original_label is None and old:
                record.original_label = old
            record.label = label
        if record.fresh:
            record.annotation_count += 1
    record.annotation = _annotation_given(dataset, record, user, label, now, annotation)
    return status, found, record


def record_label_set(
    *,
    dataset: Dataset,
    user,
    record_id: int,
    label: str,
    expected_label: str | None = None,
    time_spent_ms: int | None = None,
    suggestion_label: str = "",
    suggestion_probability: float | None = None,
    suggestion_accepted: bool | None = None,
    client_key: str = "",
) -> Record:
    """Record ``user``'s label ``label`` for record ``record_id`` (their ``Annotation``) and
    resolve the record's label: with overlap 1 it is the label given; above 1 the majority
    once the dataset's overlap is reached (a tie goes to the review queue).

    ``expected_label`` is the label the annotator saw; if the record has another one now,
    ``LabelConflict`` is raised and nothing changes. ``client_key``: the page's key for this
    submission; a second one with the same key changes nothing. The annotation is returned on
    the record as ``record.annotation``.
    """
    access_check(user, "labeling", "label")
    label = (label or "").strip()
    if not label:
        raise ValidationError("Choose a label.")
    client_key = (client_key or "").strip()[:64]
    if time_spent_ms is not None:
        time_spent_ms = max(0, min(int(time_spent_ms), 2_147_483_647))
    given = {
        "time_spent_ms": time_spent_ms,
        "suggestion_label": (suggestion_label or "")[:MAX_LABEL_CHARS],
        "suggestion_probability": suggestion_probability,
        "suggestion_accepted": suggestion_accepted if suggestion_label else None,
        "client_key": client_key,
    }
    if _fast_sql() and LABEL_SEPARATOR not in label:
        # One round trip for a label plainly in the label list (one label: stored as given).
        status, fresh, record = _label_set_one_pg(
            dataset,
            user,
            record_id,
            label,
            expected_label=expected_label,
            annotation=given,
            checked=False,
        )
        if status == "ok":
            return record
        # "check" or "gone": the general read and the label check below say why, or pass.
    dataset = dataset_labeling_read(dataset, user)
    label = _validated_label(dataset, label)
    if _fast_sql():
        status, _, record = _label_set_one_pg(
            dataset,
            user,
            record_id,
            label,
            expected_label=expected_label,
            annotation=given,
            checked=True,
        )
        if status != "ok":  # no import any more, or no dataset: nothing was written
            raise ValidationError(_GONE)
        return record
    with transaction.atomic():
        record = (
            Record.objects.select_for_update(of=("self",))
            .filter(pk=record_id, import_run_id=dataset.active_import_id)
            .first()
        )
        if record is None:
            raise ValidationError(
                "That record is not in this dataset any more (it was imported again or deleted)."
            )
        if client_key:
            done = Annotation.objects.filter(user=user, client_key=client_key).first()
            if done is not None:  # a retried submission: applied already
                record.annotation = done
                return record
        if expected_label is not None and record.label != expected_label:
            last = (
                LabelChange.objects.filter(record=record)
                .select_related("user")
                .order_by("-created_at", "-id")
                .first()
            )
            who = last.user.get_username() if last and last.user else "someone else"
            now = f'"{record.label}"' if record.label else "no label"
            raise LabelConflict(
                f"While you were reading, {who} changed this record's label to {now}. It is "
                "shown as it is now; choose again to change it."
            )
        k = _overlap(dataset)
        claims = LabelClaim.objects.filter(record=record)
        (claims if k == 1 else claims.filter(user=user)).delete()
        annotation = Annotation.objects.filter(record=record, user=user).first()
        fresh = annotation is None or annotation.undone_at is not None
        if annotation is None:
            annotation = Annotation(dataset=dataset, record=record, user=user)
        elif not fresh and annotation.label == label and record.label == label:
            record.annotation = annotation
            return record
        annotation.label = label
        annotation.undone_at = None
        annotation.time_spent_ms = time_spent_ms
        annotation.suggestion_label = (suggestion_label or "")[:MAX_LABEL_CHARS]
        annotation.suggestion_probability = suggestion_probability
        annotation.suggestion_accepted = (
            None if not annotation.suggestion_label else suggestion_accepted
        )
        annotation.client_key = client_key
        annotation.save()
        counted = []
        if fresh:  # the row is locked: its count is current, and written with the label
            record.annotation_count += 1
            counted = ["annotation_count"]
        resolved = _resolve(dataset, record, label)
        if resolved is not None and resolved != record.label:
            _label_write(dataset, record, resolved, user, also=counted)
        elif counted:
            record.save(update_fields=counted)
        record.annotation = annotation
    return record


def labeling_progress(*, dataset: Dataset, user) -> dict:
    """How far the dataset is, and how many labels ``user`` gave today."""
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = Annotation.objects.filter(
        dataset=dataset, user=user, updated_at__gte=today, undone_at__isnull=True
    ).count()
    return {**dataset.labeling_totals, "mine_today": mine}


CARRY_BATCH = 2000


def labels_carry_over(*, dataset_id: int, previous_import_id: int, import_id: int) -> int:
    """Keep labels given in the console when the file is imported again.

    A record labeled in the console whose row (same source row, and the same text as the file
    gave it or as cleaning left it) is in the new import gets its console label there, and its
    label history follows it. Rows whose text changed (another text mapping) keep what the file
    says. Returns how many were carried. Runs in the transaction that makes the new import
    active; one join finds every pair, however many labels there are.
    """
    from django.db.models import Case, Value, When

    record = Record._meta.db_table
    change = LabelChange._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT old.id, new.id, old.label, new.label, new.original_label "  # noqa: S608
            f"FROM {record} old JOIN {record} new "
            "ON new.import_run_id = %s AND new.source_row = old.source_row "
            "AND (new.text = old.text OR new.text = old.original_text) "
            "WHERE old.import_run_id = %s AND old.id IN "
            f"(SELECT record_id FROM {change} WHERE dataset_id = %s)",
            [import_id, previous_import_id, dataset_id],
        )
        pairs = cursor.fetchall()
    annotated = dict(
        Record.objects.filter(import_run_id=previous_import_id, annotation_count__gt=0).values_list(
            "id", "annotation_count"
        )
    )
    updated = [
        Record(
            id=new_id,
            label=label,
            original_label=file_original if file_original is not None else (file_label or None),
        )
        for _, new_id, label, file_label, file_original in pairs
        if label != file_label
    ]
    Record.objects.bulk_update(updated, ["label", "original_label"], batch_size=CARRY_BATCH)
    for start in range(0, len(pairs), CARRY_BATCH):
        chunk = pairs[start : start + CARRY_BATCH]
        moved = Case(*(When(record_id=old, then=new) for old, new, *_ in chunk))
        for model in (LabelChange, Annotation, ReviewItem):
            model.objects.filter(record_id__in=[old for old, *_ in chunk]).update(record_id=moved)
        counts = Case(
            *(When(id=new, then=Value(n)) for old, new, *_ in chunk if (n := annotated.get(old))),
            default=Value(0),
        )
        Record.objects.filter(id__in=[new for _, new, *_ in chunk]).update(annotation_count=counts)
    return len(pairs)


BULK_LIMIT = 50_000
BULK_FILTERS = ("label", "split", "flag", "search")


def _bulk_filters(filters: dict) -> dict:
    """The records page's filters that bulk labeling takes; refuses none at all."""
    filters = {key: value for key, value in filters.items() if key in BULK_FILTERS}
    # "" is a choice for label and split (no label, unassigned); for flag and search it is none.
    chosen = [
        key
        for key, value in filters.items()
        if (key in ("label", "split") and value is not None and value != "__any__")
        or (key in ("flag", "search") and value)
    ]
    if not chosen:
        raise ValidationError(
            "Choose a filter first (a search, a label, a split or a flag): labeling every "
            "record at once is not offered."
        )
    return filters


def _bulk_changing(dataset: Dataset, label: str, filters: dict):
    """The matching records that do not have ``label`` yet, refused past BULK_LIMIT."""
    from datasets_app.selectors import records_filtered

    records, _ = records_filtered(dataset=dataset, **filters)
    changing = records.exclude(label=label)
    if changing.order_by().values("id")[BULK_LIMIT : BULK_LIMIT + 1].exists():
        raise ValidationError(
            f"More than {BULK_LIMIT:,} records match these filters; label at most "
            f"{BULK_LIMIT:,} at once. Narrow the filters and try again."
        )
    return records, changing


@dataclass(frozen=True)
class BulkLabelPreview:
    label: str
    matching: int  # records the filters match
    changing: int  # of them, those that do not have the label yet
    by_label: dict[str, int]  # the labels the changing ones have now ("" = none), most first


def records_label_bulk_preview(
    *, dataset: Dataset, user, label: str, filters: dict
) -> BulkLabelPreview:
    """What ``records_label_bulk`` would change, to show before asking to confirm."""
    from django.db.models import Count

    access_check(user, "dataset", "change")
    filters = _bulk_filters(filters)
    if not dataset.active_import_id:
        raise ValidationError("This dataset has no imported records yet; import it first.")
    label = _validated_label(dataset, label)
    records, changing = _bulk_changing(dataset, label, filters)
    by_label = {
        row["label"]: row["count"]
        for row in changing.order_by().values("label").annotate(count=Count("id"))
    }
    return BulkLabelPreview(
        label=label,
        matching=records.count(),
        changing=sum(by_label.values()),
        by_label=dict(sorted(by_label.items(), key=lambda item: (-item[1], item[0]))),
    )


def records_label_bulk(
    *,
    dataset: Dataset,
    user,
    label: str,
    filters: dict,
    expected_count: int | None = None,
) -> BulkLabel | None:
    """Give every current record matching the records page's ``filters`` (label, split, flag,
    search) the label ``label``, e.g. all texts that mention "refund". Returns the BulkLabel
    (``changed_count``; undo it with ``records_label_bulk_undo``), or None if none changed.

    For analysts (it rewrites many records at once); at most BULK_LIMIT records, so a filter
    left empty by mistake cannot relabel a whole dataset. ``expected_count``: the number of
    records the person confirmed; if another number would change now, nothing does. Each change
    is logged like a label given in the queue, the file's label is kept as the original, and
    counts are recomputed.
    """
    from datasets_app.services.imports import dataset_refresh_counts

    access_check(user, "dataset", "change")
    filters = _bulk_filters(filters)
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        if not dataset.active_import_id:
            raise ValidationError("This dataset has no imported records yet; import it first.")
        label = _validated_label(dataset, label)
        _, changing_records = _bulk_changing(dataset, label, filters)
        changing = list(changing_records.order_by("id").values_list("id", "label"))
        if expected_count is not None and len(changing) != expected_count:
            raise ValidationError(
                f"{len(changing):,} records would get this label now, not the "
                f"{expected_count:,} you confirmed (the records changed meanwhile). Nothing "
                "was changed; check the list and confirm again."
            )
        if not changing:
            return None
        bulk = BulkLabel.objects.create(
            dataset=dataset,
            label=label,
            filters=filters,
            changed_count=len(changing),
            created_by=user,
        )
        ids = [record_id for record_id, _ in changing]
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            # The file's (or cleaning's) label is kept once, as for a label given in the queue.
            Record.objects.filter(id__in=chunk, original_label__isnull=True).exclude(
                label=""
            ).update(original_label=F("label"))
            Record.objects.filter(id__in=chunk).update(label=label)
        LabelChange.objects.bulk_create(
            [
                LabelChange(
                    dataset=dataset,
                    record_id=record_id,
                    old_label=old,
                    new_label=label,
                    user=user,
                    bulk_label=bulk,
                )
                for record_id, old in changing
            ],
            batch_size=5000,
        )
        LabelClaim.objects.filter(record_id__in=ids).delete()
        dataset_refresh_counts(dataset)
    return bulk


def records_label_bulk_undo(*, dataset: Dataset, user, bulk_label_id: int) -> BulkLabel:
    """Give the records a bulk label changed the labels they had before it.

    A record labeled again since (in the queue, or by a later bulk label that was not undone)
    or changed by cleaning keeps its newer label, as a cleaning undo keeps queue labels; so
    does a record an import replaced. ``restored_count`` on the returned row says how many
    got their earlier label back.
    """
    from datasets_app.services.imports import dataset_refresh_counts

    access_check(user, "dataset", "change")
    with transaction.atomic():
        dataset = dataset_lock(dataset)
        bulk = (
            BulkLabel.objects.select_for_update().filter(pk=bulk_label_id, dataset=dataset).first()
        )
        if bulk is None:
            raise ValidationError("This dataset has no such bulk label.")
        if bulk.undone_at is not None:
            raise ValidationError("This bulk label was undone already.")
        changes = list(bulk.changes.values_list("record_id", "old_label"))
        restored: list[Record] = []
        for start in range(0, len(changes), 10_000):
            chunk = dict(changes[start : start + 10_000])
            newer = (
                LabelChange.objects.filter(
                    record_id__in=list(chunk), created_at__gte=bulk.created_at
                )
                .exclude(bulk_label=bulk)
                .exclude(bulk_label__undone_at__isnull=False)
                .values("record_id")
            )
            records = (
                Record.objects.filter(
                    id__in=list(chunk), import_run_id=dataset.active_import_id, label=bulk.label
                )
                .exclude(id__in=newer)
                .only("id", "label", "original_label")
            )
            for record in records:
                record.label = chunk[record.id]
                if record.original_label == record.label:
                    record.original_label = None  # as before the bulk label kept it
                restored.append(record)
        Record.objects.bulk_update(restored, ["label", "original_label"], batch_size=5000)
        LabelClaim.objects.filter(record_id__in=[record.id for record in restored]).delete()
        bulk.undone_at = timezone.now()
        bulk.undone_by = user
        bulk.restored_count = len(restored)
        bulk.save(update_fields=["undone_at", "undone_by", "restored_count", "updated_at"])
        dataset_refresh_counts(dataset)
    return bulk


def review_item_add(
    *,
    dataset: Dataset,
    record_id: int,
    reason: str,
    suggested_label: str = "",
    detail: dict | None = None,
    user=None,
) -> ReviewItem:
    """Put a record in the review queue for ``reason`` ("disagreement": its annotators have no
    majority; "likely_mislabeled": a model confidently disagrees with its label), with an
    optional ``suggested_label``. A record has one open item per reason: adding it again
    updates that item's suggestion and detail."""
    if reason not in ReviewItem.Reason.values:
        raise ValidationError(
            f'"{reason}" is not a review reason; use one of: {", ".join(ReviewItem.Reason.values)}.'
        )
    suggested_label = (suggested_label or "").strip()
    if len(suggested_label) > MAX_LABEL_CHARS:
        raise ValidationError(f"A suggested label can be at most {MAX_LABEL_CHARS} characters.")
    if not Record.objects.filter(pk=record_id, dataset=dataset).exists():
        raise ValidationError("That record is not in this dataset.")
    with transaction.atomic():
        item = (
            ReviewItem.objects.select_for_update()
            .filter(record_id=record_id, reason=reason, status=ReviewItem.Status.OPEN)
            .first()
        )
        if item is None:
            try:
                with transaction.atomic():
                    return ReviewItem.objects.create(
                        dataset=dataset,
                        record_id=record_id,
                        reason=reason,
                        suggested_label=suggested_label,
                        detail=detail or {},
                        created_by=user,
                    )
            except IntegrityError:  # added meanwhile by someone else
                item = ReviewItem.objects.get(
                    record_id=record_id, reason=reason, status=ReviewItem.Status.OPEN
                )
        item.suggested_label = suggested_label or item.suggested_label
        item.detail = detail if detail is not None else item.detail
        item.save(update_fields=["suggested_label", "detail", "updated_at"])
    return item


def _review_item(dataset: Dataset, item_id: int) -> ReviewItem:
    item = ReviewItem.objects.select_for_update().filter(pk=item_id, dataset=dataset).first()
    if item is None:
        raise ValidationError("This dataset has no such review item.")
    if item.status != ReviewItem.Status.OPEN:
        raise ValidationError(
            f"This review item was {item.get_status_display().lower()} already"
            + (f' (as "{item.resolved_label}").' if item.resolved_label else ".")
        )
    return item


def review_item_adjudicate(*, dataset: Dataset, user, item_id: int, label: str) -> ReviewItem:
    """An analyst decides the record's label: it is set (logged as a LabelChange) and every
    open review item of the record is closed with it."""
    access_check(user, "dataset", "change")
    with transaction.atomic():
        # The dataset's share lock (to the commit) before the record's, as every label path
        # takes them: a split or import holding the dataset and waiting for this record would
        # otherwise deadlock with the count change below.
        dataset = dataset_labeling_read(dataset)
        label = _validated_label(dataset, label)
        item = _review_item(dataset, item_id)
        record = (
            Record.objects.select_for_update(of=("self",))
            .filter(pk=item.record_id, import_run_id=dataset.active_import_id)
            .first()
        )
        if record is None:
            raise ValidationError(
                "That record is not in this dataset any more (it was imported again or deleted)."
            )
        _label_write(dataset, record, label, user)
        now = timezone.now()
        ReviewItem.objects.filter(record=record, status=ReviewItem.Status.OPEN).update(
            status=ReviewItem.Status.RESOLVED,
            resolved_label=label,
            resolved_by=user,
            resolved_at=now,
            updated_at=now,
        )
        item.refresh_from_db()
    return item


def review_item_dismiss(*, dataset: Dataset, user, item_id: int) -> ReviewItem:
    """Close a review item without changing the record's label."""
    access_check(user, "dataset", "change")
    with transaction.atomic():
        item = _review_item(dataset, item_id)
        item.status = ReviewItem.Status.DISMISSED
        item.resolved_by = user
        item.resolved_at = timezone.now()
        item.save(update_fields=["status", "resolved_by", "resolved_at", "updated_at"])
    return item


def labeling_settings_set(
    *, dataset: Dataset, user, overlap: int | str | None = None, order: str | None = None
) -> Dataset:
    """Set the dataset's overlap (annotators per record, 1 to MAX_OVERLAP) and the queue's
    order (file order or an uncertainty order). None leaves a setting as it is."""
    access_check(user, "dataset", "change")
    fields = []
    if overlap is not None:
        try:
            value = int(str(overlap).strip())
        except ValueError:
            raise ValidationError(
                f'The overlap must be a whole number from 1 to {MAX_OVERLAP}; "{overlap}" is not.'
            ) from None
        if not 1 <= value <= MAX_OVERLAP:
            raise ValidationError(
                f"The overlap must be from 1 to {MAX_OVERLAP} annotators per record; "
                f"{value} was given."
            )
        dataset.label_overlap = value
        fields.append("label_overlap")
    if order is not None:
        if order not in LabelingOrder.values:
            shown = ", ".join(f'"{value}"' for value in LabelingOrder.values)
            raise ValidationError(f'"{order}" is not a queue order; choose one of {shown}.')
        dataset.labeling_order = order
        fields.append("labeling_order")
    if fields:
        Dataset.objects.filter(pk=dataset.pk).update(
            **{name: getattr(dataset, name) for name in fields}
        )
    return dataset


def dataset_assign(*, dataset: Dataset, user, annotator) -> DatasetAssignment:
    """Assign ``annotator`` to the dataset: from then on the dataset is shown only to the
    annotators assigned to it."""
    from lepton_web.access import ANNOTATOR, user_roles

    access_check(user, "dataset", "change")
    if annotator is None or not annotator.is_active:
        raise ValidationError("Choose an active user to assign.")
    if ANNOTATOR not in user_roles(annotator):
        raise ValidationError(
            f"{annotator.get_username()} is not an annotator; only annotators are assigned "
            "(analysts and admins see every dataset)."
        )
    assignment, _ = DatasetAssignment.objects.get_or_create(
        dataset=dataset, user=annotator, defaults={"assigned_by": user}
    )
    return assignment


def dataset_unassign(*, dataset: Dataset, user, annotator) -> None:
    """Take ``annotator`` off the dataset; their holds on its records are let go."""
    access_check(user, "dataset", "change")
    with transaction.atomic():
        DatasetAssignment.objects.filter(dataset=dataset, user=annotator).delete()
        LabelClaim.objects.filter(dataset=dataset, user=annotator).delete()
