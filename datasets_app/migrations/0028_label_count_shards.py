"""Label counts off the dataset row (issue 12's labeling benchmark): ``Dataset.label_counts``
becomes ``label_counts_base`` (the same column; what imports, splits, fixes and recounts set)
and labels add their changes to ``LabelCountShard`` rows (services/label_counts.py). The queue's
PL/pgSQL functions follow: the dataset's share lock is held to the end of the transaction (no
subtransaction), a label at overlap 1 adds to the annotator's shard instead of updating the
dataset row, which every annotator's calls had to wait on and walk past, and the next record
returns the shards (``o_shards``) with the dataset. At overlap 1 the next record's window reads
the records others hold once (``v_claimed``), not once per candidate."""

import importlib

from django.db import migrations, models
import django.db.models.deletion

FUNCTIONS = r"""
DROP FUNCTION IF EXISTS lepton_labeling_next(bigint, integer, bigint, bigint[], boolean,
    timestamptz, timestamptz, boolean, text, integer, integer);
-- The dataset as committed now, held FOR SHARE until the caller's transaction ends: it waits
-- out a split, fix or import being saved (up to p_wait, then lock_not_available, 55P03), and
-- none of those can set the label counts while a label is in flight (0028: labels count in
-- LabelCountShard rows, so annotators no longer write this row and never wait on each other
-- for it).
CREATE OR REPLACE FUNCTION lepton_labeling_dataset(p_dataset bigint, p_wait text)
RETURNS datasets_app_dataset LANGUAGE plpgsql AS $fn$
DECLARE
    v_ds datasets_app_dataset;
    v_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', p_wait, true);
    SELECT d.* INTO v_ds FROM datasets_app_dataset d WHERE d.id = p_dataset FOR SHARE;
    PERFORM set_config('lock_timeout', v_timeout, true);
    RETURN v_ds;
END
$fn$;

-- Label count changes (label -> change) added up, as LabelCountShard keeps them.
CREATE OR REPLACE FUNCTION lepton_counts_add(a jsonb, b jsonb)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT COALESCE(a, '{}'::jsonb) || COALESCE((SELECT jsonb_object_agg(e.key,
        COALESCE((a->>e.key)::bigint, 0) + e.value::bigint) FROM jsonb_each_text(b) AS e),
        '{}'::jsonb)
$fn$;

-- The next record for p_user, held for them (labeling_next), past p_after in the dataset's
-- order: file order, or an uncertainty order (least_confidence, margin: smallest first;
-- entropy: largest first) past p_after's suggestion. o_status 'ok' with the record; 'walk'
-- when the general walk must decide (no import; an uncertainty order from the top or past a
-- record without a suggestion; the end of the window; or refused too often: the user's holds
-- but p_keep let go already, unless there is no import); 'refused' (not assigned); 'gone'
-- (no such dataset).
CREATE OR REPLACE FUNCTION lepton_labeling_next(
    p_dataset bigint, p_user integer, p_after bigint, p_keep bigint[], p_limited boolean,
    p_now timestamptz, p_expires timestamptz, p_soft boolean, p_wait text,
    p_window integer, p_attempts integer)
RETURNS TABLE (o_status text, o_ds datasets_app_dataset, o_previous bigint, o_rec datasets_app_record,
    o_shards jsonb)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ds datasets_app_dataset;
    v_order text;
    v_score double precision;
    v_k integer;
    v_run bigint;
    v_skip bigint[] := p_keep;
    v_window bigint[];
    v_id bigint;
    v_others bigint;
    v_rec datasets_app_record;
    v_claimed bigint[];
BEGIN
    v_ds := lepton_labeling_dataset(p_dataset, p_wait);
    IF v_ds.id IS NULL THEN
        o_status := 'gone';
        RETURN NEXT;
        RETURN;
    END IF;
    o_ds := v_ds;
    -- The label counts' shards of the active import (0028): o_ds's counts plus these are
    -- exact while the share lock holds.
    o_shards := (SELECT jsonb_agg(s.counts) FROM datasets_app_labelcountshard s
                 WHERE s.dataset_id = p_dataset AND s.import_run_id = v_ds.active_import_id);
    IF p_limited AND EXISTS (SELECT 1 FROM datasets_app_datasetassignment a
                             WHERE a.dataset_id = p_dataset)
            AND NOT EXISTS (SELECT 1 FROM datasets_app_datasetassignment a
                            WHERE a.dataset_id = p_dataset AND a.user_id = p_user) THEN
        -- An annotator limited to the datasets assigned to them, not assigned to this one.
        o_status := 'refused';
        RETURN NEXT;
        RETURN;
    END IF;
    -- The annotation_user_recent index answers this with one entry.
    o_previous := (SELECT n.record_id FROM datasets_app_annotation n
                   WHERE n.dataset_id = p_dataset AND n.user_id = p_user
                   ORDER BY n.updated_at DESC, n.id DESC LIMIT 1);
    v_run := v_ds.active_import_id;
    v_order := CASE WHEN v_ds.labeling_order IN ('least_confidence', 'margin', 'entropy')
                    THEN v_ds.labeling_order ELSE 'file' END;
    IF v_order <> 'file' AND p_after > 0 THEN
        -- The keyset: p_after's score (its most uncertain suggestion), as _after_uncertain.
        IF v_order = 'least_confidence' THEN
            SELECT min(s.probability) INTO v_score FROM datasets_app_recordsuggestion s
            WHERE s.dataset_id = p_dataset AND s.record_id = p_after;
        ELSIF v_order = 'margin' THEN
            SELECT min(s.margin) INTO v_score FROM datasets_app_recordsuggestion s
            WHERE s.dataset_id = p_dataset AND s.record_id = p_after;
        ELSE
            SELECT max(s.entropy) INTO v_score FROM datasets_app_recordsuggestion s
            WHERE s.dataset_id = p_dataset AND s.record_id = p_after;
        END IF;
    END IF;
    IF v_run IS NULL OR (v_order <> 'file' AND v_score IS NULL) THEN
        o_status := 'walk';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_soft THEN
        -- Only holds are written (soft state): the commit need not wait for the disk.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    v_k := greatest(1, coalesce(v_ds.label_overlap, 1));
    DELETE FROM datasets_app_labelclaim
    WHERE dataset_id = p_dataset AND user_id = p_user AND NOT (record_id = ANY(p_keep));
    IF v_k = 1 THEN
        -- Records others hold now, read once from the labelclaim_dataset_expiry index (a
        -- count per candidate record walked the claims table once for each).
        v_claimed := ARRAY(SELECT c.record_id FROM datasets_app_labelclaim c
                           WHERE c.dataset_id = p_dataset AND c.expires_at > p_now
                           AND c.user_id <> p_user);
    END IF;
    FOR attempt IN 1..p_attempts LOOP
        -- A window of the next records that need an annotation from p_user and are not held
        -- by as many people as need them, in order: in file order from the index of
        -- unlabeled records (record_run_unlabeled), else from the suggestion index of the
        -- order (suggestion_least_conf, suggestion_margin, suggestion_entropy) past p_after.
        IF v_order = 'file' THEN
            v_window := ARRAY(
                SELECT w.id FROM datasets_app_record w
                WHERE w.import_run_id = v_run AND w.label = '' AND NOT w.is_excluded
                    AND w.id > p_after AND NOT (w.id = ANY(v_skip))
                    AND (v_k = 1 OR (w.annotation_count < v_k AND NOT EXISTS (
                        SELECT 1 FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL)))
                    AND (v_k > 1 OR NOT (w.id = ANY(v_claimed)))
                    AND (v_k = 1 OR (SELECT count(*) FROM datasets_app_labelclaim c
                         WHERE c.record_id = w.id AND c.user_id <> p_user
                         AND c.expires_at > p_now) < v_k)
                ORDER BY w.import_run_id, w.id LIMIT p_window);
        ELSIF v_order = 'least_confidence' THEN
            v_window := ARRAY(
                SELECT s.record_id FROM datasets_app_recordsuggestion s
                JOIN datasets_app_record w ON w.id = s.record_id
                WHERE s.dataset_id = p_dataset AND s.probability >= v_score
                    AND (s.probability > v_score OR s.record_id > p_after)
                    AND w.import_run_id = v_run AND w.label = '' AND NOT w.is_excluded
                    AND NOT (w.id = ANY(v_skip))
                    AND (v_k = 1 OR (w.annotation_count < v_k AND NOT EXISTS (
                        SELECT 1 FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL)))
                    AND (v_k > 1 OR NOT (w.id = ANY(v_claimed)))
                    AND (v_k = 1 OR (SELECT count(*) FROM datasets_app_labelclaim c
                         WHERE c.record_id = w.id AND c.user_id <> p_user
                         AND c.expires_at > p_now) < v_k)
                ORDER BY s.probability, s.record_id LIMIT p_window);
        ELSIF v_order = 'margin' THEN
            v_window := ARRAY(
                SELECT s.record_id FROM datasets_app_recordsuggestion s
                JOIN datasets_app_record w ON w.id = s.record_id
                WHERE s.dataset_id = p_dataset AND s.margin >= v_score
                    AND (s.margin > v_score OR s.record_id > p_after)
                    AND w.import_run_id = v_run AND w.label = '' AND NOT w.is_excluded
                    AND NOT (w.id = ANY(v_skip))
                    AND (v_k = 1 OR (w.annotation_count < v_k AND NOT EXISTS (
                        SELECT 1 FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL)))
                    AND (v_k > 1 OR NOT (w.id = ANY(v_claimed)))
                    AND (v_k = 1 OR (SELECT count(*) FROM datasets_app_labelclaim c
                         WHERE c.record_id = w.id AND c.user_id <> p_user
                         AND c.expires_at > p_now) < v_k)
                ORDER BY s.margin, s.record_id LIMIT p_window);
        ELSE
            v_window := ARRAY(
                SELECT s.record_id FROM datasets_app_recordsuggestion s
                JOIN datasets_app_record w ON w.id = s.record_id
                WHERE s.dataset_id = p_dataset AND s.entropy <= v_score
                    AND (s.entropy < v_score OR s.record_id > p_after)
                    AND w.import_run_id = v_run AND w.label = '' AND NOT w.is_excluded
                    AND NOT (w.id = ANY(v_skip))
                    AND (v_k = 1 OR (w.annotation_count < v_k AND NOT EXISTS (
                        SELECT 1 FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL)))
                    AND (v_k > 1 OR NOT (w.id = ANY(v_claimed)))
                    AND (v_k = 1 OR (SELECT count(*) FROM datasets_app_labelclaim c
                         WHERE c.record_id = w.id AND c.user_id <> p_user
                         AND c.expires_at > p_now) < v_k)
                ORDER BY s.entropy DESC, s.record_id LIMIT p_window);
        END IF;
        -- The first of the window, locked; rows others are locking skipped.
        SELECT r.id INTO v_id FROM unnest(v_window) WITH ORDINALITY AS u(id, n)
        JOIN datasets_app_record r ON r.id = u.id
        WHERE r.import_run_id = v_run AND r.label = '' AND NOT r.is_excluded
            AND (v_k = 1 OR r.annotation_count < v_k)
        ORDER BY u.n LIMIT 1 FOR UPDATE OF r SKIP LOCKED;
        EXIT WHEN v_id IS NULL;
        -- Statements after the lock was granted: every earlier holder's claim, and the
        -- record's current annotation count.
        SELECT count(*) INTO v_others FROM datasets_app_labelclaim c
        WHERE c.record_id = v_id AND c.user_id <> p_user AND c.expires_at > p_now;
        SELECT r.* INTO v_rec FROM datasets_app_record r WHERE r.id = v_id;
        IF v_others < v_k AND (v_k = 1 OR v_others + v_rec.annotation_count < v_k) THEN
            DELETE FROM datasets_app_labelclaim c
            WHERE c.record_id = v_id AND c.user_id <> p_user AND c.expires_at <= p_now;
            INSERT INTO datasets_app_labelclaim (record_id, dataset_id, user_id, expires_at)
            VALUES (v_id, p_dataset, p_user, p_expires)
            ON CONFLICT (record_id, user_id) DO UPDATE SET expires_at = EXCLUDED.expires_at;
            o_status := 'ok';
            o_rec := v_rec;
            RETURN NEXT;
            RETURN;
        END IF;
        v_skip := v_skip || v_id;
    END LOOP;
    o_status := 'walk';
    RETURN NEXT;
END
$fn$;

-- A label at overlap 1 (record_label_set): o_status 'ok' with what was done; 'check' when the
-- service must take its general path (nothing written: no import, not assigned, or the label
-- not plainly in the label list, unless p_checked: the service checked it against the labels
-- offered); 'many' (overlap above 1, nothing written); 'gone' (no such dataset). No row at
-- all: the record is not in the dataset's active import.
CREATE OR REPLACE FUNCTION lepton_label_set(
    p_dataset bigint, p_user integer, p_limited boolean, p_record bigint, p_label text,
    p_expected text, p_key text, p_time_spent_ms integer, p_suggestion_label text,
    p_suggestion_probability double precision, p_suggestion_accepted boolean,
    p_now timestamptz, p_wait text, p_checked boolean)
RETURNS TABLE (o_status text, o_ds datasets_app_dataset, o_rec datasets_app_record,
    o_dup_id bigint, o_conflict boolean, o_fresh boolean, o_same boolean,
    o_annotation_id bigint, o_annotation_created_at timestamptz, o_counted boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_ds datasets_app_dataset;
    v_run bigint;
BEGIN
    v_ds := lepton_labeling_dataset(p_dataset, p_wait);
    IF v_ds.id IS NULL THEN
        o_status := 'gone';
        RETURN NEXT;
        RETURN;
    END IF;
    o_ds := v_ds;
    v_run := v_ds.active_import_id;
    IF v_run IS NULL OR (p_limited AND EXISTS (SELECT 1 FROM datasets_app_datasetassignment a
                                                WHERE a.dataset_id = p_dataset)
                         AND NOT EXISTS (SELECT 1 FROM datasets_app_datasetassignment a
                                         WHERE a.dataset_id = p_dataset AND a.user_id = p_user))
            OR NOT (p_checked OR (jsonb_typeof(v_ds.label_schema) = 'array'
                                  AND v_ds.label_schema ? p_label)) THEN
        o_status := 'check';
        RETURN NEXT;
        RETURN;
    END IF;
    IF greatest(1, coalesce(v_ds.label_overlap, 1)) > 1 THEN
        o_status := 'many';
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM 1 FROM datasets_app_record WHERE id = p_record AND import_run_id = v_run FOR UPDATE;
    -- After the record's lock: the record and this person's annotation as the last holder of
    -- the lock left them. Nothing written for a retried key or a label other than
    -- p_expected; else the record's holds let go, the annotation upserted and, when the label
    -- changes, the count changes added to this person's shard (of the active import, which
    -- the dataset's share lock keeps active until the commit), the record (its first label
    -- kept) and a LabelChange. The record returned is as it was before.
    RETURN QUERY
    WITH r AS (SELECT t.id, t.label, t.original_label, t.annotation_count, t.is_excluded
               FROM datasets_app_record t WHERE t.id = p_record AND t.import_run_id = v_run),
    prev AS (SELECT a.label, a.undone_at FROM datasets_app_annotation a
             WHERE a.record_id = p_record AND a.user_id = p_user),
    s AS (SELECT r.id, r.label AS old, r.original_label, r.annotation_count, r.is_excluded,
            (SELECT d.id FROM datasets_app_annotation d WHERE p_key <> '' AND d.user_id = p_user
             AND d.client_key = p_key LIMIT 1) AS dup_id,
            (p_expected IS NOT NULL AND r.label <> p_expected) AS conflict,
            NOT EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL) AS fresh,
            (EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL AND prev.label = p_label)
             AND r.label = p_label) AS same
          FROM r),
    go AS (SELECT * FROM s WHERE s.dup_id IS NULL AND NOT s.conflict),
    counted AS (INSERT INTO datasets_app_labelcountshard AS c (dataset_id, import_run_id,
            shard, counts)
        SELECT p_dataset, v_run, mod(p_user, 16), jsonb_build_object(go.old::text, -1, p_label, 1)
        FROM go WHERE NOT go.same AND go.old <> p_label AND NOT go.is_excluded
        ON CONFLICT (dataset_id, import_run_id, shard) DO UPDATE
        SET counts = lepton_counts_add(c.counts, EXCLUDED.counts)
        RETURNING c.dataset_id AS id),
    ok AS (SELECT * FROM go WHERE go.same OR go.old = p_label OR go.is_excluded
           OR EXISTS (SELECT 1 FROM counted)),
    gone AS (DELETE FROM datasets_app_labelclaim c USING ok WHERE c.record_id = ok.id),
    w AS (SELECT * FROM ok WHERE NOT ok.same),
    ann AS (INSERT INTO datasets_app_annotation AS n (dataset_id, record_id, user_id, label,
            time_spent_ms, suggestion_label, suggestion_probability, suggestion_accepted,
            client_key, undone_at, created_at, updated_at)
        SELECT p_dataset, w.id, p_user, p_label, p_time_spent_ms, p_suggestion_label,
            p_suggestion_probability, p_suggestion_accepted, p_key, NULL, p_now, p_now FROM w
        ON CONFLICT (record_id, user_id) DO UPDATE SET dataset_id = EXCLUDED.dataset_id,
            label = EXCLUDED.label, time_spent_ms = EXCLUDED.time_spent_ms,
            suggestion_label = EXCLUDED.suggestion_label,
            suggestion_probability = EXCLUDED.suggestion_probability,
            suggestion_accepted = EXCLUDED.suggestion_accepted, client_key = EXCLUDED.client_key,
            undone_at = NULL, updated_at = EXCLUDED.updated_at
        RETURNING n.id, n.created_at),
    up AS (UPDATE datasets_app_record u SET label = p_label, original_label = CASE WHEN
            w.old <> p_label AND w.original_label IS NULL AND w.old <> '' THEN w.old
            ELSE w.original_label END,
            annotation_count = w.annotation_count + CASE WHEN w.fresh THEN 1 ELSE 0 END
        FROM w WHERE u.id = w.id AND (w.old <> p_label OR w.fresh) RETURNING u.id),
    ch AS (INSERT INTO datasets_app_labelchange (dataset_id, record_id, old_label, new_label,
            user_id, created_at)
        SELECT p_dataset, w.id, w.old, p_label, p_user, p_now FROM w WHERE w.old <> p_label
        RETURNING id)
    SELECT 'ok'::text, v_ds, (SELECT t FROM datasets_app_record t WHERE t.id = s.id),
        s.dup_id, s.conflict, s.fresh, s.same,
        (SELECT ann.id FROM ann), (SELECT ann.created_at FROM ann),
        EXISTS (SELECT 1 FROM counted)
    FROM s;
END
$fn$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        before = importlib.import_module("datasets_app.migrations.0026_labeling_queue_functions")
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS lepton_labeling_next(bigint, integer, bigint, bigint[], "
            "boolean, timestamptz, timestamptz, boolean, text, integer, integer)"
        )
        schema_editor.execute(before.FUNCTIONS)
        schema_editor.execute("DROP FUNCTION IF EXISTS lepton_counts_add(jsonb, jsonb)")


class Migration(migrations.Migration):
    dependencies = [
        ("datasets_app", "0027_merge_agreement_count_labeling_functions"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameField(
                    model_name="dataset", old_name="label_counts", new_name="label_counts_base"
                ),
                migrations.AlterField(
                    model_name="dataset",
                    name="label_counts_base",
                    field=models.JSONField(blank=True, db_column="label_counts", default=dict),
                ),
            ],
        ),
        migrations.CreateModel(
            name="LabelCountShard",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("import_run_id", models.BigIntegerField()),
                ("shard", models.PositiveSmallIntegerField()),
                ("counts", models.JSONField(blank=True, default=dict)),
                (
                    "dataset",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="datasets_app.dataset",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("dataset", "import_run_id", "shard"), name="labelcountshard_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
