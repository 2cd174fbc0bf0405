-- ---------------------------------------------------------------------------
-- Event store: tables
-- ---------------------------------------------------------------------------

-- CACHE 1 is required: positions must be handed out in increasing order
-- across backends (see src/position.c).
CREATE SEQUENCE ep.events_global_position_seq AS bigint CACHE 1;

CREATE TABLE ep.events (
    global_position bigint      NOT NULL,
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    data            jsonb       NOT NULL,
    metadata        jsonb,
    schema_version  integer     NOT NULL DEFAULT 1,
    recorded_at     timestamptz NOT NULL,
    category        text        NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (global_position),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_check CHECK (stream_version >= 1),
    CONSTRAINT events_schema_version_check CHECK (schema_version >= 1)
);
CREATE INDEX events_category_idx ON ep.events (category, global_position);

COMMENT ON TABLE ep.events IS 'Immutable events of every stream, in global position order; written only through ep.append and ep.append_events';
COMMENT ON COLUMN ep.events.global_position IS 'Position in the global order; increasing, not gapless; global reads never skip one';
COMMENT ON COLUMN ep.events.stream_version IS 'Version of the stream after this event (1-based, gapless within a stream)';
COMMENT ON COLUMN ep.events.category IS 'Part of stream_id before the first "-" (the whole id when it has none)';

CREATE TABLE ep.streams (
    stream_id       text        NOT NULL PRIMARY KEY,
    category        text        NOT NULL,
    version         bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz,
    tombstoned      boolean     NOT NULL DEFAULT false,
    deleted_before  bigint,
    deleted_at      timestamptz,
    max_count       bigint CHECK (max_count >= 0),
    max_age         interval,
    truncate_before bigint CHECK (truncate_before >= 0),
    metadata        jsonb
);
-- Streams whose reads must hide something; global reads consult only these.
CREATE INDEX streams_limited_idx ON ep.streams (stream_id)
    WHERE (truncate_before IS NOT NULL OR deleted_before IS NOT NULL
           OR max_count IS NOT NULL OR max_age IS NOT NULL);

COMMENT ON TABLE ep.streams IS 'One row per stream: current version, deletion state and read limits';
COMMENT ON COLUMN ep.streams.deleted_before IS 'Soft delete: events with a lower version are hidden';
COMMENT ON COLUMN ep.streams.tombstoned IS 'Hard-deleted: events removed, appends fail with EP002';

-- Immutability: only the extension's own functions may change events.
-- Users hold only SELECT on ep.events, so they cannot insert directly; the
-- trigger stops UPDATE, DELETE and TRUNCATE even by the table's owner. It
-- does not fire on INSERT, which keeps the append path free of per-row
-- trigger calls.
CREATE FUNCTION ep.events_immutable() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_events_immutable';
COMMENT ON FUNCTION ep.events_immutable() IS 'Trigger: raises EP004 on UPDATE, DELETE or TRUNCATE of ep.events outside the extension''s functions';
CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON ep.events
    FOR EACH ROW EXECUTE FUNCTION ep.events_immutable();
CREATE TRIGGER events_immutable_truncate BEFORE TRUNCATE ON ep.events
    FOR EACH STATEMENT EXECUTE FUNCTION ep.events_immutable();

GRANT SELECT ON ep.events, ep.streams TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('ep.events', '');
SELECT pg_catalog.pg_extension_config_dump('ep.streams', '');
SELECT pg_catalog.pg_extension_config_dump('ep.events_global_position_seq', '');

-- ---------------------------------------------------------------------------
-- Event store: functions
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.append(stream_id text, event_type text, data jsonb,
                          metadata jsonb DEFAULT NULL,
                          expected_version bigint DEFAULT NULL,
                          event_id uuid DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_append';
COMMENT ON FUNCTION ep.append(text, text, jsonb, jsonb, bigint, uuid) IS
    'Append one event to a stream; returns the stream''s new version. expected_version: NULL any, 0 no stream, -1 existing stream, n exact (EP001 otherwise)';

CREATE FUNCTION ep.append_events(stream_id text, events jsonb,
                                 expected_version bigint DEFAULT NULL)
    RETURNS bigint LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_append_events';
COMMENT ON FUNCTION ep.append_events(text, jsonb, bigint) IS
    'Append a JSON array of {type, data, metadata, id, schema_version} atomically; returns the stream''s new version';

CREATE FUNCTION ep.stream_version(stream_id text)
    RETURNS bigint LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_stream_version';
COMMENT ON FUNCTION ep.stream_version(text) IS
    'Current version of a stream; 0 when it does not exist';

CREATE FUNCTION ep.read_stream(stream_id text, from_version bigint DEFAULT NULL,
                               max_count integer DEFAULT NULL,
                               backwards boolean DEFAULT false)
    RETURNS SETOF ep.events LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 100
    AS 'MODULE_PATHNAME', 'ep_read_stream';
COMMENT ON FUNCTION ep.read_stream(text, bigint, integer, boolean) IS
    'Events of one stream, forwards from from_version (NULL: first) or backwards from it (NULL: last)';

CREATE FUNCTION ep.read_all(after_position bigint DEFAULT 0,
                            max_count integer DEFAULT 1000,
                            event_types text[] DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
    AS 'MODULE_PATHNAME', 'ep_read_all';
COMMENT ON FUNCTION ep.read_all(bigint, integer, text[]) IS
    'Committed events of all streams after a position, ascending; resuming from the last position seen never skips an event';

CREATE FUNCTION ep.read_category(category text, after_position bigint DEFAULT 0,
                                 max_count integer DEFAULT 1000,
                                 consumer_member integer DEFAULT NULL,
                                 consumer_size integer DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 1000
    AS 'MODULE_PATHNAME', 'ep_read_category';
COMMENT ON FUNCTION ep.read_category(text, bigint, integer, integer, integer) IS
    'Committed events of one category after a position; with a consumer group, only the streams of that member';

CREATE FUNCTION ep.consumer_member(stream_id text, consumer_size integer)
    RETURNS integer LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_consumer_member';
COMMENT ON FUNCTION ep.consumer_member(text, integer) IS
    'The consumer-group member (0 .. consumer_size-1) that receives a stream''s events';

CREATE FUNCTION ep.delete_stream(stream_id text, expected_version bigint DEFAULT NULL,
                                 hard boolean DEFAULT false)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_delete_stream';
COMMENT ON FUNCTION ep.delete_stream(text, bigint, boolean) IS
    'Soft delete (reads hide the events; a later append continues the numbering) or hard delete (events removed, id tombstoned: appends raise EP002)';

CREATE FUNCTION ep.set_stream_metadata(stream_id text, max_count bigint DEFAULT NULL,
                                       max_age interval DEFAULT NULL,
                                       truncate_before bigint DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_stream_metadata';
COMMENT ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) IS
    'Set a stream''s read limits (NULL removes one); every read honours them at once';
