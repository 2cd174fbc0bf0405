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
