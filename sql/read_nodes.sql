-- Read nodes: the API's errors and the simple answers. (Replication itself,
-- the horizon across the link, projections on readers and re-sync are TAP
-- tests: 090_read_node_stress.pl, 091_read_nodes.pl.)
\pset null '(null)'
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.try(text) TO PUBLIC;
CREATE ROLE regress_rn_user;

-- read-your-writes token: NULL before the first append, then the last position
SELECT ep.last_position();
SELECT ep.append('rnpost-1', 'Posted', '{}');
SELECT ep.last_position() = (SELECT max(global_position) FROM ep.events) AS last;
BEGIN;
SELECT ep.append('rnpost-1', 'Posted', '{}');
SELECT ep.last_position() = (SELECT max(global_position) FROM ep.events) AS inside_the_transaction;
ROLLBACK;

-- wait_for_position: bad arguments, an old position, a position not written
SELECT pg_temp.try($$SELECT ep.wait_for_position(NULL)$$);
SELECT pg_temp.try($$SELECT ep.wait_for_position(1, NULL)$$);
SELECT pg_temp.try($$SELECT ep.wait_for_position(1, '-1 s')$$);
SELECT ep.wait_for_position(0, '0 s');
SELECT ep.wait_for_position(ep.last_position(), '1 s');
SELECT ep.wait_for_position(ep.last_position() + 100, '10 ms');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT pg_temp.try($$SELECT ep.wait_for_position(1)$$);
ROLLBACK;

-- publish_store: bad arguments
SELECT pg_temp.try($$SELECT ep.publish_store(NULL)$$);
SELECT pg_temp.try($$SELECT ep.publish_store('p', '{}')$$);
SELECT pg_temp.try($$SELECT ep.publish_store('p', '{NULL}')$$);
SELECT pg_temp.try($$SELECT ep.publish_store('p', '{""}')$$);
-- administrative: not PUBLIC
SET ROLE regress_rn_user;
SELECT pg_temp.try($$SELECT ep.publish_store()$$);
SELECT pg_temp.try($$SELECT ep.follow_store('x', 'dbname=nowhere')$$);
SELECT pg_temp.try($$SELECT ep.unfollow_store('x')$$);
SELECT pg_temp.try($$SELECT ep.resync_store('x')$$);
SELECT pg_temp.try($$SELECT ep.publish_horizon()$$);
RESET ROLE;
-- and granting EXECUTE does not make an ordinary role able to subscribe
GRANT EXECUTE ON FUNCTION ep.follow_store(text, text, name) TO regress_rn_user;
SET ROLE regress_rn_user;
SELECT pg_temp.try($$SELECT ep.follow_store('x', 'dbname=nowhere')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION ep.follow_store(text, text, name) FROM regress_rn_user;

-- a store that is not published publishes no horizon
SELECT ep.publish_horizon();
SELECT * FROM ep.store_status;
-- published: the horizon row follows the store; a writer without followers
SELECT ep.publish_store();
SELECT pg_temp.try($$SELECT ep.publish_store()$$);
-- (a rolled-back append drew a position too: the horizon may be past the last event)
SELECT ep.publish_horizon() >= (SELECT max(global_position) FROM ep.events) AS horizon_published;
SELECT position >= (SELECT max(global_position) FROM ep.events) AS row_written FROM ep.store_horizon;
SELECT role, source, readable_position >= (SELECT max(global_position) FROM ep.events) AS readable,
       follower, slot_name, wal_status
  FROM ep.store_status;
SELECT pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
  FROM pg_publication ORDER BY 1;
SELECT p.pubname, p.tablename, p.rowfilter IS NOT NULL AS filtered
  FROM pg_publication_tables p ORDER BY 1, 2;
-- a category filter
SELECT ep.publish_store('rn_posts', '{rnpost}');
SELECT p.tablename, p.rowfilter
  FROM pg_publication_tables p WHERE p.pubname = 'rn_posts' ORDER BY 1;
SELECT c.relname, c.relreplident FROM pg_class c
 WHERE c.oid IN ('ep.events'::regclass, 'ep.redactions'::regclass, 'ep.streams'::regclass) ORDER BY 1;
-- redaction and deletion still work on the writer with the filter in place
SELECT ep.redact_stream('rnpost-1', 'test');
SELECT ep.delete_stream('rnpost-1', hard => true);
-- a writer does not follow
SELECT pg_temp.try($$SELECT ep.follow_store('x', 'dbname=nowhere')$$);
SELECT pg_temp.try($$SELECT ep.unfollow_store('x')$$);
SELECT pg_temp.try($$SELECT ep.resync_store('x')$$);
SELECT pg_temp.try($$SELECT ep.unpublish_store('nope')$$);
SELECT ep.unpublish_store('rn_posts');
SELECT ep.unpublish_store();
SELECT count(*) FROM pg_publication;
-- a store with events cannot become a reader
SELECT pg_temp.try($$SELECT ep.follow_store('x', 'dbname=nowhere')$$);
SELECT ep._is_reader();

-- a reader in a database of the same cluster (the slot is created first)
SELECT ep.publish_store();
SELECT current_database() AS writer_db, current_setting('port') AS port,
       split_part(current_setting('unix_socket_directories'), ',', 1) AS sockdir \gset
CREATE DATABASE regress_rn_reader;
\c regress_rn_reader
\pset null '(null)'
CREATE EXTENSION event_patterns;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'connection to server.*', 'connection to server ...');
END $$;
SELECT format('dbname=%s port=%s host=%s', :'writer_db', :'port', :'sockdir') AS conninfo \gset
-- bad names and unreachable writers
SELECT pg_temp.try(format($$SELECT ep.follow_store('Bad-Name', %L)$$, :'conninfo'));
SELECT pg_temp.try($$SELECT ep.follow_store('x', 'port=1 host=/nonexistent')$$);
SELECT pg_temp.try($$SELECT ep.follow_store(NULL, 'dbname=x')$$);
-- in a transaction that has written, the slot could never be created
BEGIN;
CREATE TABLE t_written ();
SELECT pg_temp.try(format($$SELECT ep.follow_store('rn_reader', %L)$$, :'conninfo'));
ROLLBACK;
SELECT ep.follow_store('rn_reader', :'conninfo');
SELECT ep._is_reader();
SELECT name, subscription, publication, source LIKE '%dbname=' || :'writer_db' || '%' AS source_named
  FROM ep.store_follow;
SELECT subname, subslotname LIKE 'rn_reader_%' AS slot_named, subenabled FROM pg_subscription;
SELECT pg_temp.try($$SELECT ep.follow_store('again', 'dbname=x')$$);
-- EP005: the copy is read-only
SELECT pg_temp.try($$SELECT ep.append('rnpost-2', 'Posted', '{}')$$);
SELECT pg_temp.try($$SELECT ep.append_events('rnpost-2', '[{"type": "Posted"}]')$$);
SELECT pg_temp.try($$SELECT ep.delete_stream('rnpost-2')$$);
SELECT pg_temp.try($$SELECT ep.set_stream_metadata('rnpost-2', max_count => 1)$$);
SELECT pg_temp.try($$SELECT ep.redact_stream('rnpost-2', 'x')$$);
SELECT pg_temp.try($$SELECT ep.scavenge()$$);
SELECT pg_temp.try($$SELECT ep.publish_store()$$);
-- views over the copy: statement triggers never fire for replicated rows,
-- so only views that recompute, or async ones (from this database's WAL), are allowed
SELECT pg_temp.try($$SELECT ep.create_incremental_view('rn_counts', 'SELECT stream_id, count(*) AS n FROM ep.events GROUP BY stream_id', 'deferred')$$);
SELECT pg_temp.try($$SELECT ep.create_incremental_view('rn_counts', 'SELECT stream_id, count(*) AS n FROM ep.events GROUP BY stream_id', 'full')$$);
SELECT pg_temp.try($$SELECT ep.create_incremental_view('rn_counts_async', 'SELECT stream_id, count(*) AS n FROM ep.events GROUP BY stream_id', 'async')$$);
SELECT pg_temp.try($$SELECT ep.unfollow_store('other')$$);
SELECT role, follower, slot_name FROM ep.store_status;
SELECT ep.unfollow_store('rn_reader');
SELECT ep._is_reader();
SELECT count(*) FROM pg_subscription;
\c :writer_db
-- unfollow dropped the reader's slot here
SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'rn_reader_%';
SELECT ep.unpublish_store();
DROP DATABASE regress_rn_reader;
DROP ROLE regress_rn_user;
