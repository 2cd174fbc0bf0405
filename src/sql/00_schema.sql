/*
 * event_patterns install script, assembled by the Makefile from the files of src/sql
 * in name order. Every name is schema-qualified so that no search_path can
 * hijack what the extension runs.
 */
\echo Use "CREATE EXTENSION event_patterns" to load this file. \quit

CREATE SCHEMA ep;
COMMENT ON SCHEMA ep IS 'event_patterns: event store, CQRS projections and incremental materialized views';
GRANT USAGE ON SCHEMA ep TO PUBLIC;

-- The role named r, by OID. (A cast r::regrole would parse the name as an
-- identifier: a role named "10" would become OID 10, the bootstrap
-- superuser, and "Bob" would become bob.)
CREATE FUNCTION ep._role(r name) RETURNS regrole
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT a.oid::pg_catalog.regrole FROM pg_catalog.pg_roles a WHERE a.rolname OPERATOR(pg_catalog.=) r $$;
COMMENT ON FUNCTION ep._role(name) IS 'Internal: the role of that exact name as regrole (never parses the name)';

-- Every backend caches the extension's objects and the installed version;
-- ALTER EXTENSION ... UPDATE calls this last so that they reload.
CREATE FUNCTION ep._objects_changed() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'ep_objects_changed';
COMMENT ON FUNCTION ep._objects_changed() IS 'Internal: make every backend reload its cache of the extension''s objects (after an update)';
REVOKE ALL ON FUNCTION ep._objects_changed() FROM PUBLIC;

-- Nobody but the extension owner holds DELETE (or a table-wide UPDATE) on
-- the extension's catalog tables: either would let any role LOCK them and
-- stop the background worker. The API removes rows through this function,
-- which checks the current user against the row's owner (catalog_acl.c).
CREATE FUNCTION ep._catalog_delete(kind text, key text) RETURNS boolean
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'ep_catalog_delete';
COMMENT ON FUNCTION ep._catalog_delete(text, text) IS
    'Internal: remove the catalog rows of a projection, its parked events, a job, an incremental view or a subscription, if the current user has the privileges of its owner';

-- Identity columns of the catalog tables roles may insert into: a role
-- cannot pick the id itself (INSERT ... OVERRIDING SYSTEM VALUE) to squat
-- the ids the next projections or jobs of other roles would get. Superuser
-- sessions (restores of a dump) may.
CREATE FUNCTION ep._identity_guard() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    seq text := pg_catalog.pg_get_serial_sequence(pg_catalog.format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_ARGV[0]);
    given bigint := (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.->>) TG_ARGV[0])::pg_catalog.int8;
    last bigint;
BEGIN
    -- (the role the session acts as: SET ROLE, else the session user)
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r
         WHERE r.rolname OPERATOR(pg_catalog.=) COALESCE(NULLIF(pg_catalog.current_setting('role'), 'none'),
                                                     SESSION_USER)) THEN
        RETURN NEW;
    END IF;
    BEGIN
        last := pg_catalog.currval(seq);
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        last := NULL;
    END;
    IF last IS DISTINCT FROM given THEN
        RAISE EXCEPTION 'cannot choose the value of column "%" of table %.%', TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'generated_always',
                  DETAIL = 'Ids are given by the extension, in order.',
                  HINT = 'Leave the column out (do not use OVERRIDING SYSTEM VALUE).';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION ep._identity_guard() IS
    'Internal trigger: refuses ids chosen by the inserting role (OVERRIDING SYSTEM VALUE) in ep.projection_defs and ep.job_registry, except in sessions acting as a superuser';
