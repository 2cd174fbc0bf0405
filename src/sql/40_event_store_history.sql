-- ---------------------------------------------------------------------------
-- Event store, part two: folds (ep.aggregate) and snapshots, upcasting,
-- retention (scavenge) and redaction. See doc/es2.md.
-- ---------------------------------------------------------------------------

-- Upcasters: upcaster(data jsonb) RETURNS jsonb lifts data of event_type
-- from from_schema_version to the next; chains are contiguous from 1.
CREATE TABLE ep.upcasters (
    event_type          text         NOT NULL CHECK (event_type <> ''),
    from_schema_version integer      NOT NULL CHECK (from_schema_version >= 1),
    upcaster            regprocedure NOT NULL,
    registered_by       name         NOT NULL DEFAULT CURRENT_USER,
    registered_at       timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    search_path         text         NOT NULL DEFAULT 'pg_catalog, pg_temp',
    PRIMARY KEY (event_type, from_schema_version)
);
COMMENT ON TABLE ep.upcasters IS 'Upcaster chains: each row lifts one event type from a schema version to the next (register with ep.register_upcaster)';
GRANT SELECT ON ep.upcasters TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.upcasters', '');
COMMENT ON COLUMN ep.upcasters.search_path IS 'search_path the upcaster runs with (the registering session''s); it runs as its function''s owner';


CREATE FUNCTION ep.register_upcaster(event_type text, from_schema_version integer,
                                     upcaster regprocedure)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_register_upcaster';
COMMENT ON FUNCTION ep.register_upcaster(text, integer, regprocedure) IS
    'Register upcaster(data jsonb) RETURNS jsonb lifting event_type from from_schema_version to the next; every read path then delivers the latest schema version';
REVOKE ALL ON FUNCTION ep.register_upcaster(text, integer, regprocedure) FROM PUBLIC;

CREATE FUNCTION ep.unregister_upcaster(event_type text, from_schema_version integer)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_unregister_upcaster';
COMMENT ON FUNCTION ep.unregister_upcaster(text, integer) IS
    'Remove the last upcaster of an event type''s chain; reads then deliver the schema version below';
REVOKE ALL ON FUNCTION ep.unregister_upcaster(text, integer) FROM PUBLIC;

-- Snapshots: the state of a fold of a stream with a reducer, after a version.
CREATE TABLE ep.snapshots (
    stream_id       text         NOT NULL,
    reducer         regprocedure NOT NULL,
    initial_hash    bigint       NOT NULL,
    version         bigint       NOT NULL CHECK (version >= 1),
    state           jsonb,
    fingerprint     bigint       NOT NULL,
    max_recorded_at timestamptz  NOT NULL,
    initial         jsonb,
    created_at      timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (stream_id, reducer, initial_hash, version)
);
COMMENT ON TABLE ep.snapshots IS 'Fold states of ep.aggregate by (stream, reducer, initial state, version); the fingerprint covers the reducer''s definition and the upcasters';
COMMENT ON COLUMN ep.snapshots.initial_hash IS 'Hash of the initial state the fold started from';
COMMENT ON COLUMN ep.snapshots.max_recorded_at IS 'Latest recorded_at of the events folded in (lets as_of_time queries use the snapshot)';
GRANT SELECT ON ep.snapshots TO PUBLIC;
-- Snapshots hold folds of events: hidden like the events (15_category.sql).
ALTER TABLE ep.snapshots ENABLE ROW LEVEL SECURITY;
-- and a fold's state is the reducer owner's: only roles with that owner's
-- privileges see it (the reducer may read what others cannot).
CREATE POLICY snapshots_category_read ON ep.snapshots FOR SELECT
    USING (pg_catalog.split_part(stream_id, '-', 1)
           OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[])
           AND pg_catalog.pg_has_role(CURRENT_USER,
                                      (SELECT p.proowner FROM pg_catalog.pg_proc p
                                        WHERE p.oid OPERATOR(pg_catalog.=) reducer::pg_catalog.oid),
                                      'USAGE'));

CREATE TABLE ep.snapshot_policies (
    reducer    regprocedure NOT NULL PRIMARY KEY,
    every      integer      NOT NULL CHECK (every > 0),
    refresh    interval     CHECK (refresh > interval '0'),
    owner      name         NOT NULL DEFAULT CURRENT_USER,
    updated_at timestamptz  NOT NULL DEFAULT pg_catalog.now(),
    search_path text        NOT NULL DEFAULT 'pg_catalog, pg_temp'
);
COMMENT ON TABLE ep.snapshot_policies IS 'Reducers whose folds write a snapshot every N events (set with ep.set_snapshot_policy)';
GRANT SELECT ON ep.snapshot_policies TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.snapshot_policies', '');
COMMENT ON COLUMN ep.snapshot_policies.search_path IS 'search_path the reducer runs with (as its function''s owner) in every fold that reads or writes the shared snapshots';

CREATE FUNCTION ep.aggregate(stream_id text, reducer regprocedure,
                             initial jsonb DEFAULT '{}',
                             as_of_version bigint DEFAULT NULL,
                             as_of_time timestamptz DEFAULT NULL)
    RETURNS jsonb LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_aggregate';
COMMENT ON FUNCTION ep.aggregate(text, regprocedure, jsonb, bigint, timestamptz) IS
    'Fold a stream with reducer(state jsonb, event ep.events) RETURNS jsonb from initial, up to as_of_version and/or the events recorded by as_of_time; starts from the newest usable snapshot';

CREATE FUNCTION ep.set_snapshot_policy(reducer regprocedure, every integer,
                                       refresh interval DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_snapshot_policy';
COMMENT ON FUNCTION ep.set_snapshot_policy(regprocedure, integer, interval) IS
    'ep.aggregate with this reducer writes a snapshot every N events of a stream; with refresh, a background job brings the snapshotted streams up to date at that interval; NULL or 0 removes the policy and the reducer''s snapshots';

-- Run by the 'snapshot' job: fold again every stream (and initial state)
-- that has a snapshot of this reducer, so that the fold writes a newer one.
CREATE FUNCTION ep.refresh_snapshots(reducer regprocedure)
    RETURNS integer LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    IF reducer IS NULL THEN
        RAISE EXCEPTION 'reducer must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR r IN SELECT DISTINCT ON (s.stream_id, s.initial_hash) s.stream_id, s.initial
               FROM ep.snapshots s
              WHERE s.reducer::oid = refresh_snapshots.reducer::oid
              ORDER BY s.stream_id, s.initial_hash
    LOOP
        PERFORM ep.aggregate(r.stream_id, refresh_snapshots.reducer, r.initial);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ep.refresh_snapshots(regprocedure) IS
    'Fold again every stream that has a snapshot of the reducer, writing newer snapshots per its policy; returns the number of folds';

-- Retention
CREATE FUNCTION ep.scavenge(batch_size integer DEFAULT 1000, max_rows bigint DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_scavenge';
COMMENT ON FUNCTION ep.scavenge(integer, bigint) IS
    'Physically remove events hidden by max_count, max_age, truncate_before and soft deletes, batch_size rows per statement, at most max_rows (NULL: all); returns the number removed';
REVOKE ALL ON FUNCTION ep.scavenge(integer, bigint) FROM PUBLIC;

-- A procedure so that it may COMMIT between batches (which a SET clause
-- would forbid); it names every object with its schema.
CREATE PROCEDURE ep.scavenge_in_batches(batch_size integer DEFAULT 1000)
    LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    LOOP
        n := ep.scavenge(batch_size, batch_size);
        COMMIT;
        EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
    END LOOP;
END
$$;
COMMENT ON PROCEDURE ep.scavenge_in_batches(integer) IS
    'Scavenge in short transactions: one commit per batch_size removed events (CALL it outside a transaction block)';
REVOKE ALL ON PROCEDURE ep.scavenge_in_batches(integer) FROM PUBLIC;

-- The default scavenge job, run by the scheduler as the extension owner.
-- CREATE EXTENSION makes it again on restore, so pg_dump leaves it out.
SELECT ep._schedule_job('scavenge', 'ep.events', interval '5 minutes', 'SELECT ep.scavenge()');
SELECT pg_catalog.pg_extension_config_dump('ep.job_registry',
    'WHERE NOT (kind = ''scavenge'' AND target = ''ep.events'')');

-- Redaction
CREATE TABLE ep.redactions (
    redaction_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id    text        NOT NULL,
    reason       text        NOT NULL CHECK (reason <> ''),
    redacted_by  name        NOT NULL,
    redacted_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    events       integer     NOT NULL DEFAULT 0
);
CREATE INDEX redactions_stream_idx ON ep.redactions (stream_id);
COMMENT ON TABLE ep.redactions IS 'Who redacted which stream, when and why (written by ep.redact_stream)';
SELECT pg_catalog.pg_extension_config_dump('ep.redactions', '');
SELECT pg_catalog.pg_extension_config_dump('ep.redactions_redaction_id_seq', '');

CREATE FUNCTION ep.redact_stream(stream_id text, reason text)
    RETURNS integer LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_redact_stream';
COMMENT ON FUNCTION ep.redact_stream(text, text) IS
    'Replace the payloads of a stream''s events by {"redacted": true}, keeping envelopes, positions and versions; records who, when and why in ep.redactions; returns the number of events';
REVOKE ALL ON FUNCTION ep.redact_stream(text, text) FROM PUBLIC;

-- A regprocedure column records no dependency, so dropped functions are
-- handled here: dropping an upcaster that is still registered is refused
-- (reads of its event type would fail), and dropping a reducer removes its
-- snapshot policy, its snapshots and its refresh job (they are caches).
CREATE FUNCTION ep._functions_on_drop() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    u record;
BEGIN
    FOR d IN
        SELECT o.objid, o.object_identity FROM pg_event_trigger_dropped_objects() o
         WHERE o.classid OPERATOR(pg_catalog.=) 'pg_proc'::regclass
    LOOP
        SELECT x.event_type, x.from_schema_version INTO u FROM ep.upcasters x
         WHERE x.upcaster::oid OPERATOR(pg_catalog.=) d.objid LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'cannot drop function % because it is the upcaster of event type "%" from schema version %',
                            d.object_identity, u.event_type, u.from_schema_version
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = 'Unregister it first with ep.unregister_upcaster().';
        END IF;
        DELETE FROM ep.snapshot_policies p WHERE p.reducer::oid OPERATOR(pg_catalog.=) d.objid;
        DELETE FROM ep.snapshots s WHERE s.reducer::oid OPERATOR(pg_catalog.=) d.objid;
        DELETE FROM ep.job_registry j
         WHERE j.kind OPERATOR(pg_catalog.=) 'snapshot' AND j.target OPERATOR(pg_catalog.=) d.object_identity;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._functions_on_drop() IS
    'Internal event trigger: refuses to drop a registered upcaster; removes the snapshot policy, snapshots and job of a dropped reducer';
CREATE EVENT TRIGGER ep_functions_on_drop ON sql_drop
    EXECUTE FUNCTION ep._functions_on_drop();
