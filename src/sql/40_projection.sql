-- ---------------------------------------------------------------------------
-- CQRS projections (src/projection.c, src/projection_api.c, src/decoder.c)
--
-- Async projections are applied by the per-database worker (or by
-- ep.apply_projections()) from the database's logical replication slot
-- ep_<database oid>, decoded by the extension's own output plugin; inline
-- projections run in the appending transaction.
-- Apply rounds are serialized by a lock of the extension (not reachable from SQL)
-- The API never waits for a round: a round stores a
-- projection's progress only if the projection is still the one it loaded
-- (same generation, still running), else it undoes that projection's work.
-- ---------------------------------------------------------------------------

CREATE TABLE ep.projection_defs (
    projection_id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name <> ''),
    kind            text        NOT NULL CHECK (kind IN ('events', 'table', 'message')),
    handler         regprocedure NOT NULL,
    owner           regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    mode            text        NOT NULL DEFAULT 'async' CHECK (mode IN ('async', 'inline')),
    event_types     text[],
    category        text,
    source          regclass,
    status          text        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'paused', 'failed', 'rebuilding')),
    last_position   bigint      NOT NULL DEFAULT 0,
    last_lsn        pg_lsn,
    last_applied_at timestamptz,
    last_error      text,
    applied_count   bigint      NOT NULL DEFAULT 0,
    decoded_count   bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    search_path     text        NOT NULL DEFAULT 'pg_catalog, pg_temp',
    handler_timeout interval    CHECK (handler_timeout >= '0'),
    generation      integer     NOT NULL DEFAULT 0,
    consecutive_failures integer NOT NULL DEFAULT 0,
    CHECK ((kind IN ('table', 'message')) = (source IS NOT NULL))
);
COMMENT ON TABLE ep.projection_defs IS
    'Projections and their progress (read them through ep.projections). last_position: every event at or below it has been applied (async event projections); last_lsn: commit LSN of the last change applied (table projections); search_path: what the handler runs with (recorded at creation); handler_timeout: time limit of one handler call (NULL: event_patterns.handler_timeout)';

-- No foreign key to ep.projection_defs: ep.drop_projection never waits for
-- an apply round that is parking an event (it removes the rows itself).
CREATE TABLE ep.parked (
    parked_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection_id   integer     NOT NULL,
    global_position bigint,
    op              text,
    old_row         jsonb,
    new_row         jsonb,
    error           text        NOT NULL,
    attempts        integer     NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    retry           boolean     NOT NULL DEFAULT false
);
CREATE INDEX parked_projection_idx ON ep.parked (projection_id, parked_id);
COMMENT ON TABLE ep.parked IS
    'Events (or table changes) whose handler failed after every retry (read them through ep.parked_events)';

-- One row: what the apply rounds know about the slot.
--   cover_position: every event above it commits after the slot's confirmed
--                   position, so decoding delivers it (NULL: unknown, events
--                   are read from ep.events until it is established)
--   confirm_lsn:    applied and committed up to here; the next round confirms
--                   it to the slot before decoding
CREATE TABLE ep.projection_state (
    singleton       boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton),
    cover_position  bigint,
    confirm_lsn     pg_lsn,
    slot_created_at timestamptz
);
INSERT INTO ep.projection_state DEFAULT VALUES;
COMMENT ON TABLE ep.projection_state IS 'Internal: handover state between the event table and the replication slot';

-- Owners see and change only their own projections (row-level security);
-- the apply rounds and superusers see them all.
ALTER TABLE ep.projection_defs ENABLE ROW LEVEL SECURITY;
CREATE POLICY projection_defs_owner ON ep.projection_defs
    USING (pg_catalog.pg_has_role(CURRENT_USER, owner, 'MEMBER'))
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
ALTER TABLE ep.parked ENABLE ROW LEVEL SECURITY;
CREATE POLICY parked_owner ON ep.parked
    USING (EXISTS (SELECT 1 FROM ep.projection_defs d
                    WHERE d.projection_id OPERATOR(pg_catalog.=) parked.projection_id));
-- No DELETE and no table-wide UPDATE (both allow LOCK TABLE ... ACCESS
-- EXCLUSIVE, which would stop the worker): the columns the API changes, and
-- ep._catalog_delete() to remove rows.
GRANT SELECT, INSERT ON ep.projection_defs TO PUBLIC;
GRANT UPDATE (status, consecutive_failures, last_position, last_lsn, last_error, generation)
    ON ep.projection_defs TO PUBLIC;
GRANT SELECT ON ep.parked TO PUBLIC;
GRANT UPDATE (retry) ON ep.parked TO PUBLIC;
CREATE TRIGGER projection_defs_identity BEFORE INSERT ON ep.projection_defs
    FOR EACH ROW EXECUTE FUNCTION ep._identity_guard('projection_id');

-- Owners may change their rows directly (row-level security keeps them to
-- their own), so every row is validated as the API would: a handler of the
-- right signature that its owner may run, a readable source table, event
-- types without NULLs. The apply rounds never see a row they cannot run.
CREATE FUNCTION ep._projection_defs_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.event_types IS NOT NULL AND (pg_catalog.array_position(NEW.event_types, NULL) IS NOT NULL
                                        OR pg_catalog.cardinality(NEW.event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.kind OPERATOR(pg_catalog.=) 'table' THEN
        PERFORM ep._check_table_source(NEW.source);
    END IF;
    -- a message handler reads a channel its owner may read (ep.grant_channel)
    IF NEW.kind OPERATOR(pg_catalog.=) 'message' THEN
        PERFORM ep._check_message_source(NEW.source, NEW.owner);
    END IF;
    PERFORM ep._check_handler(NEW.handler, NEW.kind);
    -- an inline handler runs inside every appender's transaction
    IF NEW.mode OPERATOR(pg_catalog.=) 'inline'
       AND NOT pg_catalog.has_table_privilege(NEW.owner::pg_catalog.oid, 'ep.events'::pg_catalog.regclass, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to create inline projection "%"', NEW.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An inline projection runs its handler in the transaction of every role that appends events.',
                  HINT = 'The owner of the event_patterns extension can GRANT TRIGGER ON ep.events to this role, or create the projection as async.';
    END IF;
    -- an owned category needs its read privilege (events of categories the
    -- owner cannot read are never delivered in any case)
    PERFORM ep._category_check_read(NEW.category, NEW.owner);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._projection_defs_check() IS
    'Trigger: validates every projection row (handler signature and rights, source, event types, read privilege on an owned category), also on direct writes';
CREATE TRIGGER projection_defs_check
    BEFORE INSERT OR UPDATE OF kind, handler, owner, mode, event_types, category, source ON ep.projection_defs
    FOR EACH ROW EXECUTE FUNCTION ep._projection_defs_check();
GRANT SELECT ON ep.projection_state TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('ep.projection_defs', '');
SELECT pg_catalog.pg_extension_config_dump('ep.parked', '');

-- ---------------------------------------------------------------------------
-- C entry points
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.apply_projections(max_events integer DEFAULT 10000)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_apply_projections';
COMMENT ON FUNCTION ep.apply_projections(integer) IS
    'Run decoding and apply rounds of the async projections in this session until nothing is ready or max_events were applied; returns the number of handler calls that succeeded. The worker does the same in the background';
REVOKE ALL ON FUNCTION ep.apply_projections(integer) FROM PUBLIC;

CREATE FUNCTION ep.wait_for_projection(name text DEFAULT NULL,
                                       timeout interval DEFAULT '10 seconds')
    RETURNS boolean LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_wait_for_projection';
COMMENT ON FUNCTION ep.wait_for_projection(text, interval) IS
    'Wait until the projection (NULL: every running async projection) has applied everything committed before the call; false on timeout';

CREATE FUNCTION ep._inline_projection_trigger() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_inline_projection_trigger';
COMMENT ON FUNCTION ep._inline_projection_trigger() IS
    'Internal trigger on ep.events: runs the inline projections in the appending transaction';

CREATE FUNCTION ep._check_handler(handler regprocedure, kind text)
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_check_handler';
COMMENT ON FUNCTION ep._check_handler(regprocedure, text) IS
    'Internal: validate a projection handler''s signature and the caller''s right to execute it';

CREATE FUNCTION ep._check_table_source(source regclass)
    RETURNS void LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_check_table_source';
COMMENT ON FUNCTION ep._check_table_source(regclass) IS
    'Internal: validate the source table of a table projection (kind, WAL logging, replica identity, privileges)';

-- Keeps the inline trigger on ep.events only while some inline projection
-- exists, so appends pay nothing otherwise.
CREATE FUNCTION ep._sync_inline_trigger()
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted boolean;
    present boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM ep.projection_defs d WHERE d.mode OPERATOR(pg_catalog.=) 'inline')
      INTO wanted;
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid OPERATOR(pg_catalog.=) 'ep.events'::regclass
                      AND t.tgname OPERATOR(pg_catalog.=) 'events_inline_projections')
      INTO present;
    IF wanted AND NOT present THEN
        CREATE TRIGGER events_inline_projections AFTER INSERT ON ep.events
            FOR EACH ROW EXECUTE FUNCTION ep._inline_projection_trigger();
    ELSIF present AND NOT wanted THEN
        DROP TRIGGER events_inline_projections ON ep.events;
    END IF;
END
$$;
COMMENT ON FUNCTION ep._sync_inline_trigger() IS
    'Internal: create or drop the inline-projection trigger on ep.events';
REVOKE ALL ON FUNCTION ep._sync_inline_trigger() FROM PUBLIC;

-- SECURITY DEFINER so that owners need no privilege on the trigger; it only
-- looks at the catalog row-level security already filtered for them.
CREATE FUNCTION ep._projection_changed()
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep._sync_inline_trigger();
END
$$;
COMMENT ON FUNCTION ep._projection_changed() IS 'Internal: bookkeeping after a projection was created, changed or dropped';

-- ---------------------------------------------------------------------------
-- API
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep._check_projection_options(search_path text, handler_timeout interval)
    RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF search_path IS NULL THEN
        RAISE EXCEPTION 'search_path must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the schemas the handler''s unqualified names live in, e.g. ''public''.';
    END IF;
    IF handler_timeout OPERATOR(pg_catalog.<) '0'::pg_catalog.interval THEN
        RAISE EXCEPTION 'handler_timeout must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._check_projection_options(text, interval) IS 'Internal: validate the search_path and handler_timeout of a new projection';

-- The full form: the handler runs with search_path and at most
-- handler_timeout per call (NULL: event_patterns.handler_timeout).
CREATE FUNCTION ep.create_projection(name text, handler regprocedure,
                                     event_types text[],
                                     category text,
                                     mode text,
                                     search_path text,
                                     handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF handler IS NULL THEN
        RAISE EXCEPTION 'projection handler must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF mode IS NULL OR mode NOT IN ('async', 'inline') THEN
        RAISE EXCEPTION 'invalid projection mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The mode is "async" (applied from the WAL by the worker) or "inline" (in the appending transaction).';
    END IF;
    IF category OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'category must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF event_types IS NOT NULL AND (pg_catalog.array_position(event_types, NULL) IS NOT NULL
                                    OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ep._check_handler(handler, 'events');
    PERFORM ep._check_projection_options(create_projection.search_path, create_projection.handler_timeout);
    -- an inline handler runs inside every appender's transaction
    IF mode OPERATOR(pg_catalog.=) 'inline'
       AND NOT pg_catalog.has_table_privilege('ep.events'::pg_catalog.regclass, 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to create inline projection "%"', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An inline projection runs its handler in the transaction of every role that appends events.',
                  HINT = 'The owner of the event_patterns extension can GRANT TRIGGER ON ep.events to this role, or create the projection as async.';
    END IF;
    BEGIN
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, event_types, category,
                                        search_path, handler_timeout)
        VALUES (create_projection.name, 'events', create_projection.handler, ep._role(CURRENT_USER),
                create_projection.mode, create_projection.event_types, create_projection.category,
                create_projection.search_path, create_projection.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_projection(text, regprocedure, text[], text, text, text, interval) IS
    'Create a projection whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

-- The contract's form: the handler resolves names with the caller's
-- search_path. No SET clause, so that current_setting() sees the caller's;
-- every name in the body is qualified.
CREATE FUNCTION ep.create_projection(name text, handler regprocedure,
                                     event_types text[] DEFAULT NULL,
                                     category text DEFAULT NULL,
                                     mode text DEFAULT 'async')
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_projection(name, handler, event_types, category, mode,
                                  pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_projection(text, regprocedure, text[], text, text) IS
    'Create a projection: handler(event ep.events) RETURNS void is called for every matching event, in commit order, exactly once, as the creating role with the creator''s search_path; async (from the WAL, starting with the events already stored) or inline (in the appending transaction; needs TRIGGER on ep.events)';

CREATE FUNCTION ep.create_table_projection(name text, source regclass, handler regprocedure,
                                           search_path text,
                                           handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF source IS NULL OR handler IS NULL THEN
        RAISE EXCEPTION 'source and handler must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ep._check_table_source(source);
    PERFORM ep._check_handler(handler, 'table');
    PERFORM ep._check_projection_options(create_table_projection.search_path,
                                         create_table_projection.handler_timeout);
    BEGIN
        -- 'rebuilding': the next round loads the current rows, then follows changes
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, source, status,
                                        search_path, handler_timeout)
        VALUES (create_table_projection.name, 'table', create_table_projection.handler,
                ep._role(CURRENT_USER), 'async', create_table_projection.source, 'rebuilding',
                create_table_projection.search_path, create_table_projection.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.create_table_projection(text, regclass, regprocedure, text, interval) IS
    'Create a table projection whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

CREATE FUNCTION ep.create_table_projection(name text, source regclass, handler regprocedure)
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_table_projection(name, source, handler,
                                        pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_table_projection(text, regclass, regprocedure) IS
    'Change data capture of a table: handler(op text, old_row jsonb, new_row jsonb) is called with INSERT for every existing row, then for every INSERT, UPDATE, DELETE and TRUNCATE in commit order, as the creating role with the creator''s search_path; the handler''s own writes to the table are not fed back';

CREATE FUNCTION ep._projection_row(name text) RETURNS ep.projection_defs
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'projection name must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM ep.projection_defs d WHERE d.name OPERATOR(pg_catalog.=) _projection_row.name
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projection "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION ep._projection_row(text) IS 'Internal: lock and return a projection visible to the caller, or raise undefined_object';

CREATE FUNCTION ep.pause_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    UPDATE ep.projection_defs d SET status = 'paused'
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.pause_projection(text) IS
    'Stop applying a projection; an async one resumes where it stopped (a paused table projection keeps its changes in the WAL)';

CREATE FUNCTION ep.resume_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    IF r.status OPERATOR(pg_catalog.=) ANY ('{paused,failed}') THEN
        -- a table projection that never loaded its source does it now
        UPDATE ep.projection_defs d
           SET status = CASE WHEN d.kind OPERATOR(pg_catalog.=) ANY ('{table,message}') AND d.last_lsn IS NULL
                             THEN 'rebuilding' ELSE 'running' END,
               consecutive_failures = 0
         WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
    END IF;
END
$$;
COMMENT ON FUNCTION ep.resume_projection(text) IS 'Resume a paused projection, or a failed one once its cause is fixed';

CREATE FUNCTION ep.rebuild_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    IF r.mode OPERATOR(pg_catalog.=) 'inline' THEN
        RAISE EXCEPTION 'cannot rebuild inline projection "%"', name
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Replay the events yourself with ep.read_all(), or recreate the projection as async.';
    END IF;
    PERFORM ep._catalog_delete('parked', r.projection_id::pg_catalog.text);
    -- a round still applying the old run gives way (its work is undone)
    UPDATE ep.projection_defs d
       SET status = 'rebuilding', last_position = 0, last_lsn = NULL, last_error = NULL,
           generation = d.generation OPERATOR(pg_catalog.+) 1, consecutive_failures = 0
     WHERE d.projection_id OPERATOR(pg_catalog.=) r.projection_id;
END
$$;
COMMENT ON FUNCTION ep.rebuild_projection(text) IS
    'Replay every matching event from the store (a table projection: every current row after a TRUNCATE call), then continue live; the handler''s owner resets the read model first';

CREATE FUNCTION ep.drop_projection(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
BEGIN
    r := ep._projection_row(name);
    PERFORM ep._catalog_delete('projection', r.projection_id::pg_catalog.text);
    PERFORM ep._projection_changed();
END
$$;
COMMENT ON FUNCTION ep.drop_projection(text) IS 'Drop a projection and its parked events (its read model is left alone)';

CREATE FUNCTION ep.retry_parked(name text)
    RETURNS integer LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r ep.projection_defs;
    n integer;
BEGIN
    r := ep._projection_row(name);
    UPDATE ep.parked p SET retry = true
     WHERE p.projection_id OPERATOR(pg_catalog.=) r.projection_id AND NOT p.retry;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION ep.retry_parked(text) IS
    'Hand a projection''s parked events back to it: the next apply round calls the handler again (an event that fails again is parked again); returns how many';

-- ---------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep._slot_name() RETURNS name
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT ('ep_' OPERATOR(pg_catalog.||) d.oid::text)::name FROM pg_catalog.pg_database d
           WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database() $$;
COMMENT ON FUNCTION ep._slot_name() IS 'Name of the replication slot of this database''s projections';

CREATE VIEW ep.projection_slot WITH (security_invoker = true) AS
    SELECT ep._slot_name() AS slot_name, s.confirmed_flush_lsn, s.restart_lsn, s.wal_status, s.safe_wal_size,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
           (SELECT st.cover_position FROM ep.projection_state st) AS cover_position,
           (SELECT st.slot_created_at FROM ep.projection_state st) AS slot_created_at
      FROM (SELECT 1) one
      LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name OPERATOR(pg_catalog.=) ep._slot_name();
COMMENT ON VIEW ep.projection_slot IS
    'The replication slot of this database''s projections: WAL it retains (retained_bytes, wal_status, safe_wal_size) and how far decoding is behind (lag_bytes); no row values when the slot does not exist (yet)';

-- Lag of an event projection. Functions with their own settings, so that the
-- view's cost estimate stays small (no JIT for a catalog view).
CREATE FUNCTION ep._lag_events(after bigint, event_types text[], category text)
    RETURNS bigint LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ SELECT pg_catalog.count(*) FROM ep.events e
           WHERE e.global_position OPERATOR(pg_catalog.>) $1
             AND ($2 IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($2))
             AND ($3 IS NULL OR e.category OPERATOR(pg_catalog.=) $3) $$;
COMMENT ON FUNCTION ep._lag_events(bigint, text[], text) IS 'Internal: matching events after a position';

CREATE FUNCTION ep._lag_seconds(after bigint, event_types text[], category text)
    RETURNS double precision LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(e.recorded_at))
            FROM ep.events e
           WHERE e.global_position OPERATOR(pg_catalog.>) $1
             AND ($2 IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($2))
             AND ($3 IS NULL OR e.category OPERATOR(pg_catalog.=) $3) $$;
COMMENT ON FUNCTION ep._lag_seconds(bigint, text[], text) IS 'Internal: age in seconds of the oldest matching event after a position';

-- Lag of a message handler (channels, 50_channel.sql): received messages
-- not handled yet, read through ep.messages (only readable channels).
CREATE FUNCTION ep._lag_messages(source regclass, after bigint, message_types text[])
    RETURNS bigint LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ BEGIN RETURN (SELECT pg_catalog.count(*) FROM ep.messages m
           WHERE m.channel OPERATOR(pg_catalog.=) (SELECT d.channel FROM ep.channel_defs d
                                                    WHERE d.partition OPERATOR(pg_catalog.=) $1)
             AND m.received_seq OPERATOR(pg_catalog.>) $2
             AND ($3 IS NULL OR m.message_type OPERATOR(pg_catalog.=) ANY ($3))); END $$;
COMMENT ON FUNCTION ep._lag_messages(regclass, bigint, text[]) IS 'Internal: received messages of a channel table not yet handled';

CREATE FUNCTION ep._lag_message_seconds(source regclass, after bigint, message_types text[])
    RETURNS double precision LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
    AS $$ BEGIN RETURN (SELECT pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(m.sent_at))
            FROM ep.messages m
           WHERE m.channel OPERATOR(pg_catalog.=) (SELECT d.channel FROM ep.channel_defs d
                                                    WHERE d.partition OPERATOR(pg_catalog.=) $1)
             AND m.received_seq OPERATOR(pg_catalog.>) $2
             AND ($3 IS NULL OR m.message_type OPERATOR(pg_catalog.=) ANY ($3))); END $$;
COMMENT ON FUNCTION ep._lag_message_seconds(regclass, bigint, text[]) IS 'Internal: age in seconds of the oldest received message not yet handled';

CREATE FUNCTION ep._check_message_source(source regclass, owner regrole)
    RETURNS void LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text;
BEGIN
    SELECT d.channel INTO ch FROM ep.channel_defs d
     WHERE d.partition OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF ch IS NULL THEN
        RAISE EXCEPTION 'relation % is not the table of a subscribed channel', source
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT ep._channel_may(ch, owner, 'read') THEN
        RAISE EXCEPTION 'permission denied to read channel "%"', ch
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The channel''s owner can run ep.grant_channel(channel, role, ''{read}'').';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._check_message_source(regclass, regrole) IS
    'Internal: raises unless source is a subscribed channel''s table the role may read';

CREATE VIEW ep.projections WITH (security_invoker = true) AS
    SELECT d.name, d.mode,
           d.status,
           CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events' AND d.mode OPERATOR(pg_catalog.=) 'async'
                THEN d.last_position END AS last_position,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'inline' THEN 0::bigint
                WHEN d.kind OPERATOR(pg_catalog.=) 'events' THEN
                    ep._lag_events(d.last_position, d.event_types, d.category)
                WHEN d.kind OPERATOR(pg_catalog.=) 'message' THEN
                    ep._lag_messages(d.source, d.last_position, d.event_types)
           END AS lag_events,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'async' THEN
               (SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint
                  FROM pg_catalog.pg_replication_slots s
                 WHERE s.slot_name OPERATOR(pg_catalog.=) ep._slot_name())
           END AS lag_bytes,
           d.last_applied_at, d.last_error,
           (SELECT pg_catalog.count(*) FROM ep.parked p
             WHERE p.projection_id OPERATOR(pg_catalog.=) d.projection_id) AS parked,
           -- extra columns
           d.kind,
           CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events' AND d.mode OPERATOR(pg_catalog.=) 'async' THEN
               ep._lag_seconds(d.last_position, d.event_types, d.category)
                WHEN d.kind OPERATOR(pg_catalog.=) 'message' THEN
               ep._lag_message_seconds(d.source, d.last_position, d.event_types)
           END AS lag_seconds,
           d.handler, d.owner, d.event_types, d.category, d.source, d.last_lsn,
           d.applied_count, d.decoded_count,
           CASE WHEN d.mode OPERATOR(pg_catalog.=) 'async' THEN
               (SELECT s.wal_status FROM pg_catalog.pg_replication_slots s
                 WHERE s.slot_name OPERATOR(pg_catalog.=) ep._slot_name())
           END AS wal_status,
           d.search_path, d.handler_timeout
      FROM ep.projection_defs d;
COMMENT ON VIEW ep.projections IS
    'Projections with their progress: last_position (every event at or below it applied), lag in events, WAL bytes and seconds, parked events, the slot''s wal_status, and the search_path and time limit their handler runs with';

CREATE VIEW ep.parked_events WITH (security_invoker = true) AS
    SELECT d.name AS projection, p.global_position, p.error, p.attempts, p.parked_at,
           p.op, p.old_row, p.new_row, p.retry
      FROM ep.parked p
      JOIN ep.projection_defs d USING (projection_id);
COMMENT ON VIEW ep.parked_events IS
    'Events (global_position) or table changes (op, old_row, new_row) a projection''s handler failed on after every retry';

GRANT SELECT ON ep.projections, ep.parked_events, ep.projection_slot TO PUBLIC;
