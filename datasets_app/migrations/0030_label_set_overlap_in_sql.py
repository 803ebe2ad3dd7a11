"""A label above overlap 1 in one call (issue 12's labeling benchmark, 8 annotators at overlap
2): ``lepton_label_set`` now also saves the annotation, resolves the record (the strict
majority once the overlap is reached; a tie opens or updates the record's disagreement review
item) and writes the resolved label, its LabelChange and the count change, where the service
made a second transaction of up to eleven round trips (the record's lock, the annotation, the
review item's check, savepoints, lock and insert, the label's writes). ``o_overlap`` says which
way the record came back: at overlap 1 as it was before the label (the service applies what
was written, as before), above 1 as written. ``lepton_labeling_next`` above overlap 1 looks up
whether the annotator labeled each candidate in the (record, user) index instead of hashing
every annotation they ever gave. Both run without JIT compilation: a plan's cost estimate past
``jit_above_cost`` (the window's, with a lookup per candidate over a million records) compiled
it on every call, 11 ms for a statement that runs in 0.4."""

import importlib

from django.db import migrations

FUNCTIONS = r"""
-- The next record (0028's), but for whether p_user annotated a candidate record above overlap
-- 1: a lookup in the (record, user) unique index per candidate; as NOT EXISTS under the OR the
-- planner hashed every annotation p_user ever gave (1.1 ms at 2,249, growing with each label).
-- JIT off: the window's cost estimate passes jit_above_cost, and compiling it took 11 ms.
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
LANGUAGE plpgsql SET jit = off AS $fn$
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
                    AND (v_k = 1 OR (w.annotation_count < v_k AND (
                        SELECT a.id FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL) IS NULL))
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
                    AND (v_k = 1 OR (w.annotation_count < v_k AND (
                        SELECT a.id FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL) IS NULL))
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
                    AND (v_k = 1 OR (w.annotation_count < v_k AND (
                        SELECT a.id FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL) IS NULL))
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
                    AND (v_k = 1 OR (w.annotation_count < v_k AND (
                        SELECT a.id FROM datasets_app_annotation a WHERE a.record_id = w.id
                        AND a.user_id = p_user AND a.undone_at IS NULL) IS NULL))
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

DROP FUNCTION IF EXISTS lepton_label_set(bigint, integer, boolean, bigint, text, text, text,
    integer, text, double precision, boolean, timestamptz, text, boolean);
-- A label (record_label_set): o_status 'ok' with what was done; 'check' when the service must
-- take its general path (nothing written: no import, not assigned, or the label not plainly
-- in the label list, unless p_checked: the service checked it against the labels offered);
-- 'gone' (no such dataset). No row at all: the record is not in the dataset's active import.
-- o_overlap: the dataset's overlap; at 1 o_rec is the record as it was before the label, above
-- 1 as written (its resolved label and annotation count).
CREATE OR REPLACE FUNCTION lepton_label_set(
    p_dataset bigint, p_user integer, p_limited boolean, p_record bigint, p_label text,
    p_expected text, p_key text, p_time_spent_ms integer, p_suggestion_label text,
    p_suggestion_probability double precision, p_suggestion_accepted boolean,
    p_now timestamptz, p_wait text, p_checked boolean)
RETURNS TABLE (o_status text, o_ds datasets_app_dataset, o_rec datasets_app_record,
    o_dup_id bigint, o_conflict boolean, o_fresh boolean, o_same boolean,
    o_annotation_id bigint, o_annotation_created_at timestamptz, o_counted boolean,
    o_overlap integer)
LANGUAGE plpgsql SET jit = off AS $fn$
DECLARE
    v_ds datasets_app_dataset;
    v_run bigint;
    v_k integer;
    v_id bigint;
    v_old text;
    v_original text;
    v_excluded boolean;
    v_labels text[];
    v_resolved text;
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
    v_k := greatest(1, coalesce(v_ds.label_overlap, 1));
    o_overlap := v_k;
    PERFORM 1 FROM datasets_app_record WHERE id = p_record AND import_run_id = v_run FOR UPDATE;
    IF v_k = 1 THEN
        -- After the record's lock: the record and this person's annotation as the last holder
        -- of the lock left them. Nothing written for a retried key or a label other than
        -- p_expected; else the record's holds let go, the annotation upserted and, when the
        -- label changes, the count changes added to this person's shard (of the active import,
        -- which the dataset's share lock keeps active until the commit), the record (its first
        -- label kept) and a LabelChange. The record returned is as it was before.
        RETURN QUERY
        WITH r AS (SELECT t.id, t.label, t.original_label, t.annotation_count, t.is_excluded
                   FROM datasets_app_record t WHERE t.id = p_record AND t.import_run_id = v_run),
        prev AS (SELECT a.label, a.undone_at FROM datasets_app_annotation a
                 WHERE a.record_id = p_record AND a.user_id = p_user),
        s AS (SELECT r.id, r.label AS old, r.original_label, r.annotation_count, r.is_excluded,
                (SELECT d.id FROM datasets_app_annotation d WHERE p_key <> ''
                 AND d.user_id = p_user AND d.client_key = p_key LIMIT 1) AS dup_id,
                (p_expected IS NOT NULL AND r.label <> p_expected) AS conflict,
                NOT EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL) AS fresh,
                (EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL
                         AND prev.label = p_label) AND r.label = p_label) AS same
              FROM r),
        go AS (SELECT * FROM s WHERE s.dup_id IS NULL AND NOT s.conflict),
        counted AS (INSERT INTO datasets_app_labelcountshard AS c (dataset_id, import_run_id,
                shard, counts)
            SELECT p_dataset, v_run, mod(p_user, 16),
                jsonb_build_object(go.old::text, -1, p_label, 1)
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
                p_suggestion_probability, p_suggestion_accepted, p_key, NULL, p_now, p_now
            FROM w
            ON CONFLICT (record_id, user_id) DO UPDATE SET dataset_id = EXCLUDED.dataset_id,
                label = EXCLUDED.label, time_spent_ms = EXCLUDED.time_spent_ms,
                suggestion_label = EXCLUDED.suggestion_label,
                suggestion_probability = EXCLUDED.suggestion_probability,
                suggestion_accepted = EXCLUDED.suggestion_accepted,
                client_key = EXCLUDED.client_key, undone_at = NULL,
                updated_at = EXCLUDED.updated_at
            RETURNING n.id, n.created_at),
        up AS (UPDATE datasets_app_record u SET label = p_label, original_label = CASE WHEN
                w.old <> p_label AND w.original_label IS NULL AND w.old <> '' THEN w.old
                ELSE w.original_label END,
                annotation_count = w.annotation_count + CASE WHEN w.fresh THEN 1 ELSE 0 END
            FROM w WHERE u.id = w.id AND (w.old <> p_label OR w.fresh) RETURNING u.id),
        ch AS (INSERT INTO datasets_app_labelchange (dataset_id, record_id, old_label,
                new_label, user_id, created_at)
            SELECT p_dataset, w.id, w.old, p_label, p_user, p_now FROM w WHERE w.old <> p_label
            RETURNING id)
        SELECT 'ok'::text, v_ds, (SELECT t FROM datasets_app_record t WHERE t.id = s.id),
            s.dup_id, s.conflict, s.fresh, s.same,
            (SELECT ann.id FROM ann), (SELECT ann.created_at FROM ann),
            EXISTS (SELECT 1 FROM counted), v_k
        FROM s;
        RETURN;
    END IF;
    -- Above overlap 1, after the record's lock: the same checks; unless nothing is to be
    -- written, this person's hold let go, their annotation upserted, the record's annotation
    -- count moved, and the labels of the record's other annotations read.
    WITH r AS (SELECT t.id, t.label, t.original_label, t.annotation_count, t.is_excluded
               FROM datasets_app_record t WHERE t.id = p_record AND t.import_run_id = v_run),
    prev AS (SELECT a.label, a.undone_at FROM datasets_app_annotation a
             WHERE a.record_id = p_record AND a.user_id = p_user),
    s AS (SELECT r.id, r.label AS old, r.original_label, r.annotation_count, r.is_excluded,
            (SELECT d.id FROM datasets_app_annotation d WHERE p_key <> ''
             AND d.user_id = p_user AND d.client_key = p_key LIMIT 1) AS dup_id,
            (p_expected IS NOT NULL AND r.label <> p_expected) AS conflict,
            NOT EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL) AS fresh,
            (EXISTS (SELECT 1 FROM prev WHERE prev.undone_at IS NULL
                     AND prev.label = p_label) AND r.label = p_label) AS same
          FROM r),
    go AS (SELECT * FROM s WHERE s.dup_id IS NULL AND NOT s.conflict),
    gone AS (DELETE FROM datasets_app_labelclaim c USING go
             WHERE c.record_id = go.id AND c.user_id = p_user),
    w AS (SELECT * FROM go WHERE NOT go.same),
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
    up AS (UPDATE datasets_app_record u SET annotation_count = u.annotation_count + 1 FROM w
           WHERE u.id = w.id AND w.fresh RETURNING u.id)
    SELECT s.id, s.old, s.original_label, s.is_excluded, s.dup_id, s.conflict, s.fresh, s.same,
        (SELECT ann.id FROM ann), (SELECT ann.created_at FROM ann),
        ARRAY(SELECT o.label FROM datasets_app_annotation o WHERE o.record_id = s.id
              AND o.user_id IS DISTINCT FROM p_user AND o.undone_at IS NULL)
    INTO v_id, v_old, v_original, v_excluded, o_dup_id, o_conflict, o_fresh, o_same,
        o_annotation_id, o_annotation_created_at, v_labels
    FROM s;
    IF v_id IS NULL THEN
        RETURN;  -- not in the active import: no row
    END IF;
    o_counted := false;
    IF o_dup_id IS NULL AND NOT o_conflict AND NOT o_same THEN
        -- The resolution, as _resolved: the strict majority once the overlap is reached; a
        -- tie opens the record's disagreement review item (or updates its counts) and leaves
        -- the record unlabeled; before the overlap is reached the label stays.
        v_labels := v_labels || p_label;
        IF cardinality(v_labels) >= v_k THEN
            SELECT l INTO v_resolved FROM unnest(v_labels) AS l GROUP BY l
            HAVING count(*) * 2 > cardinality(v_labels);
            IF v_resolved IS NULL THEN
                INSERT INTO datasets_app_reviewitem AS i (dataset_id, record_id, reason,
                    suggested_label, detail, status, resolved_label, resolved_by_id,
                    resolved_at, created_by_id, created_at, updated_at)
                SELECT p_dataset, v_id, 'disagreement', '', jsonb_build_object('labels',
                    (SELECT jsonb_object_agg(c.l, c.n) FROM (SELECT l, count(*) AS n
                     FROM unnest(v_labels) AS l GROUP BY l) c)),
                    'open', '', NULL, NULL, NULL, p_now, p_now
                ON CONFLICT (record_id, reason) WHERE status = 'open' DO UPDATE
                SET detail = EXCLUDED.detail, updated_at = EXCLUDED.updated_at;
                v_resolved := '';
            END IF;
            IF v_resolved <> v_old THEN
                UPDATE datasets_app_record SET label = v_resolved,
                    original_label = CASE WHEN v_original IS NULL AND v_old <> '' THEN v_old
                                     ELSE v_original END
                WHERE id = v_id;
                INSERT INTO datasets_app_labelchange (dataset_id, record_id, old_label,
                    new_label, user_id, created_at)
                VALUES (p_dataset, v_id, v_old, v_resolved, p_user, p_now);
                IF NOT v_excluded THEN
                    INSERT INTO datasets_app_labelcountshard AS c (dataset_id, import_run_id,
                        shard, counts)
                    VALUES (p_dataset, v_run, mod(p_user, 16),
                            jsonb_build_object(v_old, -1, v_resolved, 1))
                    ON CONFLICT (dataset_id, import_run_id, shard) DO UPDATE
                    SET counts = lepton_counts_add(c.counts, EXCLUDED.counts);
                    o_counted := true;
                END IF;
            END IF;
        END IF;
    END IF;
    o_status := 'ok';
    o_rec := (SELECT t FROM datasets_app_record t WHERE t.id = v_id);
    RETURN NEXT;
END
$fn$;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        before = importlib.import_module("datasets_app.migrations.0028_label_count_shards")
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS lepton_label_set(bigint, integer, boolean, bigint, text, "
            "text, text, integer, text, double precision, boolean, timestamptz, text, boolean)"
        )
        schema_editor.execute(before.FUNCTIONS)


class Migration(migrations.Migration):
    dependencies = [
        ("datasets_app", "0029_labeling_hot_path_indexes"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
