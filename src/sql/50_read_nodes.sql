-- ---------------------------------------------------------------------------
-- Read nodes (DESIGN.md section 6): a writer publishes its store with native
-- logical replication, readers follow it (src/replica/)
-- ---------------------------------------------------------------------------

-- The writer's read horizon, published with the events: "every position at
-- or below position has committed or never will". Written by the writer's
-- worker after appending commits (ep.publish_horizon); replicated in commit
-- order, so on a reader it arrives after every event below it. On a reader
-- global reads stop at it.
CREATE TABLE ep.store_horizon (
    id           boolean     NOT NULL DEFAULT true PRIMARY KEY CHECK (id),
    "position"   bigint      NOT NULL DEFAULT 0,
    issued       bigint      NOT NULL DEFAULT 0,
    published_at timestamptz
);
INSERT INTO ep.store_horizon DEFAULT VALUES;
COMMENT ON TABLE ep.store_horizon IS 'The writer''s read horizon (one row), published with its store: every event at or below "position" has committed or never will';
COMMENT ON COLUMN ep.store_horizon."position" IS 'Highest position readers may read up to without ever skipping an event';
COMMENT ON COLUMN ep.store_horizon.issued IS 'Highest position the writer had handed out when it published this horizon';
COMMENT ON COLUMN ep.store_horizon.published_at IS 'When the writer published this horizon (writer''s clock)';
GRANT SELECT ON ep.store_horizon TO PUBLIC;

-- On a reader the apply worker's writes to ep.store_horizon wake the
-- reader's worker (its projections follow at once). ENABLE REPLICA: the
-- trigger fires only for replicated changes.
CREATE FUNCTION ep._store_horizon_applied() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_store_horizon_applied';
COMMENT ON FUNCTION ep._store_horizon_applied() IS 'Internal trigger: a replicated horizon wakes this database''s worker at commit';
CREATE TRIGGER store_horizon_applied AFTER INSERT OR UPDATE ON ep.store_horizon
    FOR EACH ROW EXECUTE FUNCTION ep._store_horizon_applied();
ALTER TABLE ep.store_horizon ENABLE REPLICA TRIGGER store_horizon_applied;

-- Publications of the store made by ep.publish_store (on a writer).
CREATE TABLE ep.store_publications (
    publication name        NOT NULL PRIMARY KEY,
    categories  text[],
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.store_publications IS 'Publications of the store made by ep.publish_store (writer side); categories NULL = every category';
SELECT pg_catalog.pg_extension_config_dump('ep.store_publications', '');

-- The store this database follows (at most one; reader side).
CREATE TABLE ep.store_follow (
    name         text        NOT NULL PRIMARY KEY,
    subscription name        NOT NULL,
    publication  name        NOT NULL,
    source       text,
    followed_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX store_follow_one ON ep.store_follow ((true));
COMMENT ON TABLE ep.store_follow IS 'The store this database follows (ep.follow_store): its subscription, publication and writer (connection string without password)';

CREATE FUNCTION ep.publish_horizon() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_publish_horizon';
COMMENT ON FUNCTION ep.publish_horizon() IS 'On a writer that publishes its store: publish its current read horizon to the readers now (the worker does it after appending commits); returns the horizon position, NULL when the store is not published';
REVOKE ALL ON FUNCTION ep.publish_horizon() FROM PUBLIC;

CREATE FUNCTION ep._is_reader() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'ep_is_reader';
COMMENT ON FUNCTION ep._is_reader() IS 'Internal: true when this database follows a store (its ep.events is a read-only copy)';

CREATE FUNCTION ep._readable_position() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_readable_position';
COMMENT ON FUNCTION ep._readable_position() IS 'Internal: the highest position global reads may return now in this database';

CREATE FUNCTION ep.publish_store(publication name DEFAULT 'ep_store', categories text[] DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    events_filter text := '';
    streams_filter text := '';
BEGIN
    IF publication IS NULL THEN
        RAISE EXCEPTION 'publication must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF categories IS NOT NULL AND (pg_catalog.cardinality(categories) OPERATOR(pg_catalog.=) 0
                                   OR pg_catalog.array_position(categories, NULL) IS NOT NULL
                                   OR '' OPERATOR(pg_catalog.=) ANY (categories)) THEN
        RAISE EXCEPTION 'categories must be NULL or a non-empty array of non-empty names'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ep._is_reader() THEN
        RAISE EXCEPTION 'this database follows another store and cannot publish its copy'
            USING ERRCODE = 'EP005',
                  HINT = 'Publish the store on its writer; every reader may follow the writer directly.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_publication p WHERE p.pubname OPERATOR(pg_catalog.=) publication) THEN
        RAISE EXCEPTION 'publication "%" already exists', publication USING ERRCODE = 'duplicate_object';
    END IF;
    IF categories IS NOT NULL THEN
        -- Row filters of UPDATE/DELETE may only use replica-identity columns:
        -- the events' category is not in their key. Redactions and deletions
        -- are rare, so the full old row is logged for them; ep.streams (updated
        -- by every append) is filtered on its key, the stream id.
        ALTER TABLE ep.events REPLICA IDENTITY FULL;
        ALTER TABLE ep.redactions REPLICA IDENTITY FULL;
        events_filter := pg_catalog.format(' WHERE (category OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[]))',
                                           categories);
        streams_filter := pg_catalog.format(' WHERE (pg_catalog.split_part(stream_id, %L, 1) OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[]))',
                                            '-', categories);
    END IF;
    EXECUTE pg_catalog.format('CREATE PUBLICATION %I FOR TABLE ep.events%s, ep.streams%s, ep.redactions%s, ep.store_horizon',
                              publication, events_filter, streams_filter, streams_filter);
    INSERT INTO ep.store_publications (publication, categories) VALUES (publication, categories);
    PERFORM ep.publish_horizon();
END
$$;
COMMENT ON FUNCTION ep.publish_store(name, text[]) IS 'On the writer: a native publication of the store (events, stream limits and deletions, redactions, the read horizon), optionally only of some categories';
REVOKE ALL ON FUNCTION ep.publish_store(name, text[]) FROM PUBLIC;

CREATE FUNCTION ep.unpublish_store(publication name DEFAULT 'ep_store')
    RETURNS void LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM ep.store_publications s WHERE s.publication OPERATOR(pg_catalog.=) unpublish_store.publication) THEN
        RAISE EXCEPTION 'publication "%" is not a publication of the store', publication
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE pg_catalog.format('DROP PUBLICATION IF EXISTS %I', publication);
    DELETE FROM ep.store_publications s WHERE s.publication OPERATOR(pg_catalog.=) unpublish_store.publication;
END
$$;
COMMENT ON FUNCTION ep.unpublish_store(name) IS 'On the writer: drop a publication made by ep.publish_store (its followers stop receiving; their slots stay until they unfollow)';
REVOKE ALL ON FUNCTION ep.unpublish_store(name) FROM PUBLIC;

CREATE FUNCTION ep.follow_store(name text, conninfo text, publication name DEFAULT 'ep_store')
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_follow_store';
COMMENT ON FUNCTION ep.follow_store(text, text, name) IS 'On a reader: follow the store published by a writer (native subscription, its slot created first, also within one cluster); ep.events becomes a read-only copy (EP005); superusers only';
REVOKE ALL ON FUNCTION ep.follow_store(text, text, name) FROM PUBLIC;

CREATE FUNCTION ep.unfollow_store(name text)
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_unfollow_store';
COMMENT ON FUNCTION ep.unfollow_store(text) IS 'On a reader: stop following (drops the subscription and its slot on the writer); the copy stays and becomes writable';
REVOKE ALL ON FUNCTION ep.unfollow_store(text) FROM PUBLIC;

CREATE FUNCTION ep.last_position() RETURNS bigint
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_last_position';
COMMENT ON FUNCTION ep.last_position() IS 'The global position of the last event this session appended (a read-your-writes token for ep.wait_for_position on a reader); NULL before the first append';

CREATE FUNCTION ep.wait_for_position("position" bigint, timeout interval DEFAULT '10 seconds')
    RETURNS boolean LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_wait_for_position';
COMMENT ON FUNCTION ep.wait_for_position(bigint, interval) IS 'True once every event up to position is readable in this database (on a reader: replicated and below the writer''s horizon); false after the timeout';

-- One row on a reader; on a writer one row per follower slot (logical slots
-- of this database using pgoutput), or one row when none follows.
CREATE VIEW ep.store_status AS
SELECT 'reader'::text AS role,
       f.source,
       ep._readable_position() AS readable_position,
       GREATEST(GREATEST(h.issued, (SELECT pg_catalog.max(e.global_position) FROM ep.events e))
                OPERATOR(pg_catalog.-) ep._readable_position(), 0)::bigint AS lag_events,
       CASE WHEN h.published_at IS NULL THEN NULL::double precision
            WHEN h.issued OPERATOR(pg_catalog.<=) h."position" THEN 0::double precision
            ELSE pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) h.published_at)
       END AS lag_seconds,
       f.name AS follower,
       NULL::name AS slot_name,
       NULL::bigint AS slot_lag_bytes,
       NULL::text AS wal_status,
       (s.pid IS NOT NULL) AS active,
       h.published_at AS horizon_published_at
  FROM ep.store_follow f
  LEFT JOIN ep.store_horizon h ON true
  LEFT JOIN pg_catalog.pg_stat_subscription s
         ON s.subname OPERATOR(pg_catalog.=) f.subscription AND s.relid IS NULL
UNION ALL
SELECT 'writer'::text,
       NULL::text,
       ep._readable_position(),
       NULL::bigint,
       CASE WHEN r.pid IS NULL THEN NULL::double precision
            ELSE COALESCE(pg_catalog.date_part('epoch', r.replay_lag), 0) END,
       r.application_name::text,
       sl.slot_name,
       pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), sl.confirmed_flush_lsn)::bigint,
       sl.wal_status,
       sl.active,
       h.published_at
  FROM ep.store_horizon h
  LEFT JOIN pg_catalog.pg_replication_slots sl
         ON sl.database OPERATOR(pg_catalog.=) pg_catalog.current_database()
        AND sl.plugin OPERATOR(pg_catalog.=) 'pgoutput'
        AND sl.slot_type OPERATOR(pg_catalog.=) 'logical'
  LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid OPERATOR(pg_catalog.=) sl.active_pid
 WHERE EXISTS (SELECT FROM ep.store_publications)
   AND NOT EXISTS (SELECT FROM ep.store_follow);
COMMENT ON VIEW ep.store_status IS 'Read nodes: on a reader its source, readable position and lag; on a writer each follower''s slot (lag in bytes and seconds, wal_status: lost means the follower must re-sync)';
GRANT SELECT ON ep.store_status TO PUBLIC;

CREATE FUNCTION ep.resync_store(name text)
    RETURNS void LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_resync_store';
COMMENT ON FUNCTION ep.resync_store(text) IS 'On a reader whose slot the writer lost or dropped: a new subscription and slot, the local copy emptied and copied again; projections keep their progress; superusers only';
REVOKE ALL ON FUNCTION ep.resync_store(text) FROM PUBLIC;
