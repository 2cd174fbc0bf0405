/*
 * event_patterns install script, assembled by the Makefile from the files of src/sql
 * in name order. Every name is schema-qualified so that no search_path can
 * hijack what the extension runs.
 */
\echo Use "CREATE EXTENSION event_patterns" to load this file. \quit

CREATE SCHEMA ep;
COMMENT ON SCHEMA ep IS 'event_patterns: event store, CQRS projections and incremental materialized views';
GRANT USAGE ON SCHEMA ep TO PUBLIC;
