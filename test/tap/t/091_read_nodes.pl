# Read nodes: a writer and two readers, one in the same cluster (r1, the
# whole store) and one in another cluster (r2, a publication of one
# category). EP005 on readers; category filter; hard deletes, scavenging
# and redactions reach readers; upcasters of a reader apply to its reads;
# read-your-writes; ep.store_status on both sides; an async projection of a
# non-superuser on a reader applies every event exactly once across a crash
# of the reader and a restart of the writer; a reader whose slot the
# writer dropped re-syncs without applying anything twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use IPC::Run;
use Test::More;
use EPTest;

my $conf = "max_wal_senders = 12\nmax_replication_slots = 20\n"
  . "max_logical_replication_workers = 8\n";
my $a = ep_node('rn_writer');
$a->append_conf('postgresql.conf', $conf);
$a->start;
my $b = ep_node('rn_other');
$b->append_conf('postgresql.conf', $conf);
$b->start;

$a->safe_psql('postgres', 'CREATE DATABASE w');
$a->safe_psql('postgres', 'CREATE DATABASE r1');
$b->safe_psql('postgres', 'CREATE DATABASE r2');
$a->safe_psql('w', q{
CREATE EXTENSION event_patterns;
CREATE PROCEDURE burst(prefix text, n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM ep.append(prefix || '-' || (i % 9), 'Posted', jsonb_build_object('i', i));
        IF i % 2 = 0 THEN PERFORM ep.append('secret-' || (i % 3), 'Hidden', '{}'); END IF;
        COMMIT;
    END LOOP;
END $$;
CALL burst('post', 40);
SELECT ep.publish_store();
SELECT ep.publish_store('ep_posts', ARRAY['post']);
});

# the reader's projection belongs to an ordinary role, handler names unqualified
my $reader_setup = q{
CREATE EXTENSION event_patterns;
CREATE ROLE app LOGIN;
GRANT CREATE ON SCHEMA public TO app;
SET ROLE app;
CREATE TABLE feed (n bigserial PRIMARY KEY, pos bigint NOT NULL, stream text NOT NULL);
CREATE FUNCTION record(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO feed (pos, stream) VALUES (e.global_position, e.stream_id) $$;
SELECT ep.create_projection('feed', 'record(ep.events)', category => 'post');
RESET ROLE;
};
$a->safe_psql('r1', $reader_setup);
$b->safe_psql('r2', $reader_setup);
my $wconn = $a->connstr('w');
$a->safe_psql('r1', "SELECT ep.follow_store('same_cluster', \$\$$wconn\$\$)");
$b->safe_psql('r2', "SELECT ep.follow_store('posts', \$\$$wconn\$\$, 'ep_posts')");

sub caught_up
{
	my ($node, $db) = @_;
	my $pos = $a->safe_psql('w', 'SELECT max(global_position) FROM ep.events');
	$a->safe_psql('w', 'SELECT ep.publish_horizon()');
	return $node->safe_psql($db, "SELECT ep.wait_for_position($pos, '60 s')") eq 't';
}
ok(caught_up($a, 'r1'), 'r1 (same cluster) caught up with the initial copy');
ok(caught_up($b, 'r2'), 'r2 (other cluster) caught up with the initial copy');

# --- EP005 ------------------------------------------------------------
my ($ret, $out, $err) = $a->psql('r1', q{SELECT ep.append('post-1', 'Posted', '{}')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/EP005/, 'append on a reader raises EP005');
like($err, qr/HINT:.*dbname=w/, 'the hint names the writer');
($ret, $out, $err) = $b->psql('r2', q{SELECT ep.delete_stream('post-1')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/EP005/, 'delete_stream on a reader raises EP005');
is($a->safe_psql('r1', 'SELECT count(*) FROM ep.events'),
	$a->safe_psql('w', 'SELECT count(*) FROM ep.events'), 'nothing was written on the reader');

# --- a projection created on a reader after the copy arrived -------------
# (its events were applied before the reader's slot position: they must
# come from the table, not be assumed to be decoded)
is($a->safe_psql('r1', q{SELECT ep.wait_for_projection('feed', '60 s')}), 't', 'r1 projection caught up');
$a->safe_psql('r1', q{
SET ROLE app;
CREATE TABLE late (pos bigint NOT NULL);
CREATE FUNCTION record_late(e ep.events) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO late (pos) VALUES (e.global_position) $$;
SELECT ep.create_projection('late', 'record_late(ep.events)');
});
is($a->safe_psql('r1', q{SELECT ep.wait_for_projection('late', '60 s')}), 't', 'a late projection caught up');
is($a->safe_psql('r1', q{SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT FROM late l WHERE l.pos = e.global_position)}),
	'0', 'the late projection skipped no copied event');

# --- category-filtered publication -------------------------------------
is($b->safe_psql('r2', q{SELECT count(*) FROM ep.events WHERE category <> 'post'}),
	'0', 'the filtered reader holds no event of another category');
is($b->safe_psql('r2', q{SELECT string_agg(global_position::text, ',' ORDER BY 1) FROM ep.read_all(0, 10000)}),
	$a->safe_psql('w', q{SELECT string_agg(global_position::text, ',' ORDER BY 1) FROM ep.events WHERE category = 'post'}),
	'read_all on the filtered reader: exactly the category, with the writer\'s positions');
is($b->safe_psql('r2', q{SELECT count(*) FROM ep.streams WHERE stream_id NOT LIKE 'post-%'}),
	'0', 'streams of other categories are not published either');

# --- read-your-writes --------------------------------------------------
my $res = $a->safe_psql('w', q{
SELECT ep.append('post-ryw', 'Posted', '{"hello": 1}');
SELECT ep.last_position();});
my ($v, $pos) = split /\n/, $res;
is($a->safe_psql('r1', "SELECT ep.wait_for_position($pos, '30 s')"), 't',
	'wait_for_position on a reader returns true for the writer\'s last_position');
is($a->safe_psql('r1', "SELECT data->>'hello' FROM ep.read_stream('post-ryw')"), '1',
	'the write is readable on the reader right after');
is($b->safe_psql('r2', "SELECT ep.wait_for_position($pos, '30 s')"), 't', 'and on the other cluster');
is($b->safe_psql('r2', "SELECT ep.wait_for_position($pos + 1000, '200 ms')"), 'f',
	'wait_for_position times out for a position not written');

# --- deletes, scavenging, redactions reach readers ----------------------
$a->safe_psql('w', q{
SELECT ep.delete_stream('post-1', hard => true);
SELECT ep.redact_stream('post-2', 'gdpr request');
SELECT ep.set_stream_metadata('post-3', max_count => 1);
SELECT ep.scavenge();
});
ok(caught_up($a, 'r1') && caught_up($b, 'r2'), 'readers caught up after deletes');
for my $r ([ $a, 'r1' ], [ $b, 'r2' ])
{
	my ($node, $db) = @$r;
	$node->poll_query_until($db, q{SELECT count(*) = 0 FROM ep.events WHERE stream_id = 'post-1'})
	  or diag('hard delete did not reach ' . $db);
	is($node->safe_psql($db, q{SELECT count(*) FROM ep.events WHERE stream_id = 'post-1'}), '0',
		"$db: hard-deleted events are gone");
	is($node->safe_psql($db, q{SELECT bool_and(data = '{"redacted": true}') FROM ep.events WHERE stream_id = 'post-2'}),
		't', "$db: redacted payloads arrived");
	is($node->safe_psql($db, q{SELECT count(*) FROM ep.read_stream('post-3')}), '1',
		"$db: the stream limit applies to reads");
	is($node->safe_psql($db, q{SELECT count(*) FROM ep.events WHERE stream_id = 'post-3'}),
		$a->safe_psql('w', q{SELECT count(*) FROM ep.events WHERE stream_id = 'post-3'}),
		"$db: scavenged events are gone as on the writer");
}

# --- upcasters registered on a reader apply to its reads ----------------
$a->safe_psql('r1', q{
CREATE FUNCTION lift(d jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    AS $$ SELECT d || '{"lifted": true}' $$;
SELECT ep.register_upcaster('Posted', 1, 'lift(jsonb)');
});
is($a->safe_psql('r1', q{SELECT data->>'lifted' FROM ep.read_stream('post-ryw')}), 'true',
	'an upcaster of the reader lifts what it reads');
is($a->safe_psql('w', q{SELECT data->>'lifted' FROM ep.read_stream('post-ryw')}), '',
	'the writer\'s reads are unchanged');

# --- ep.store_status ----------------------------------------------------
is($a->safe_psql('w', q{SELECT count(*) FROM ep.store_status WHERE role = 'writer' AND wal_status = 'reserved'}),
	'2', 'writer: one row per follower slot, WAL reserved');
is($b->safe_psql('r2', q{SELECT role || ' ' || (source LIKE '%dbname=w%') || ' ' || (lag_events >= 0) FROM ep.store_status}),
	'reader true true', 'reader: its role, its source (no password) and its lag');
is($b->safe_psql('r2', q{SELECT readable_position FROM ep.store_status}),
	$a->safe_psql('w', q{SELECT position FROM ep.store_horizon}), 'reader: readable up to the writer\'s horizon');

# --- an async view on a reader of another cluster: maintained from the
# reader's own WAL (the apply worker's changes), across the crash below
$b->safe_psql('r2', q{
SET ROLE app;
SELECT ep.create_incremental_view('post_counts',
    'SELECT stream_id, count(*) AS n, max(global_position) AS last FROM ep.events GROUP BY stream_id', 'async');
});

# --- projection exactly-once across a reader crash and a writer restart --
my $wconnstr = $a->connstr('w');
my ($o1, $e1) = ('', '');
my $burst = IPC::Run::start([ 'psql', '-X', '-d', $wconnstr, '-c', "CALL burst('post-b', 3000)" ],
	'>', \$o1, '2>', \$e1);
$b->poll_query_until('r2', 'SELECT count(*) > 300 FROM feed') or die 'reader projection does not run';
$b->stop('immediate');
$b->start;
$b->poll_query_until('r2', 'SELECT count(*) > 1000 FROM feed') or die 'reader projection does not resume';
$a->stop('fast');
$burst->finish;
$a->start;
$a->safe_psql('w', "CALL burst('post-c', 500)");
ok(caught_up($b, 'r2'), 'r2 caught up after the crash and the restart');
is($b->safe_psql('r2', q{SELECT ep.wait_for_projection('feed', '60 s')}), 't', 'the projection caught up');
my $posts = $a->safe_psql('w', q{SELECT count(*) FROM ep.events WHERE category = 'post'});
cmp_ok($posts, '>', 1500, "the writer holds $posts posts");
is($b->safe_psql('r2', 'SELECT count(*) - count(DISTINCT pos) FROM feed'), '0',
	'no event applied twice on the reader');
is($b->safe_psql('r2', q{SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT FROM feed f WHERE f.pos = e.global_position)}),
	'0', 'no event skipped on the reader');
is($b->safe_psql('r2', 'SELECT count(*) FROM ep.events'), $posts, 'the reader holds every post');
is($b->safe_psql('r2', q{SET ROLE app; SELECT ep.wait_for_view('post_counts', '60 s')}), 't',
	'the async view on the reader caught up');
is($b->safe_psql('r2', q{SET ROLE app;
SELECT count(*) FROM (
  (SELECT stream_id, n, last FROM post_counts
   EXCEPT ALL SELECT stream_id, count(*), max(global_position) FROM ep.events GROUP BY stream_id)
  UNION ALL
  (SELECT stream_id, count(*), max(global_position) FROM ep.events GROUP BY stream_id
   EXCEPT ALL SELECT stream_id, n, last FROM post_counts)) d}), '0',
	'the async view equals its query on the reader');

# --- re-sync after the writer dropped the reader's slot -----------------
ok(caught_up($a, 'r1'), 'r1 caught up');
is($a->safe_psql('r1', q{SELECT ep.wait_for_projection('feed', '60 s')}), 't', 'r1 projection caught up');
my $slot = $a->safe_psql('w', q{SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'same_cluster_%'});
$a->safe_psql('w', qq{
DO \$\$
BEGIN
    FOR i IN 1..500 LOOP
        BEGIN
            PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
              WHERE slot_name = '$slot' AND active_pid IS NOT NULL;
            PERFORM pg_drop_replication_slot('$slot');
            RETURN;
        EXCEPTION WHEN object_in_use THEN
            PERFORM pg_sleep(0.01);
        END;
    END LOOP;
    RAISE 'could not drop the slot';
END
\$\$;
});
$a->safe_psql('w', "CALL burst('post-d', 100)");
$a->safe_psql('w', 'SELECT ep.publish_horizon()');
my $last = $a->safe_psql('w', 'SELECT max(global_position) FROM ep.events');
is($a->safe_psql('r1', "SELECT ep.wait_for_position($last, '2 s')"), 'f',
	'without its slot the reader falls behind');
$a->safe_psql('r1', q{SELECT ep.resync_store('same_cluster')});
ok(caught_up($a, 'r1'), 'after ep.resync_store the reader caught up');
is($a->safe_psql('r1', 'SELECT count(*) FROM ep.events'),
	$a->safe_psql('w', 'SELECT count(*) FROM ep.events'), 'the copy is complete again');
is($a->safe_psql('r1', q{SELECT ep.wait_for_projection('feed', '60 s')}), 't', 'the projection caught up again');
is($a->safe_psql('r1', 'SELECT count(*) - count(DISTINCT pos) FROM feed'), '0',
	're-sync applied no event twice');
is($a->safe_psql('r1', q{SELECT count(*) FROM ep.events e WHERE e.category = 'post' AND NOT EXISTS (SELECT FROM feed f WHERE f.pos = e.global_position)}),
	'0', 're-sync skipped no event');
is($a->safe_psql('w', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'same_cluster%'}), '1',
	'the writer holds one slot for the re-synced reader');

# --- a dead reader and max_slot_wal_keep_size: the slot is lost, re-sync --
$a->safe_psql('w', q{ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf();});
$b->stop('fast');
for my $i (1 .. 4)
{
	$a->safe_psql('w', "CALL burst('post-l$i', 50); SELECT pg_switch_wal(); CHECKPOINT;");
}
ok($a->poll_query_until('w', q{SELECT wal_status = 'lost' FROM ep.store_status WHERE slot_name LIKE 'posts_%'}),
	'writer: the dead reader\'s slot is lost beyond max_slot_wal_keep_size');
$a->safe_psql('w', q{ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf();});
$b->start;
$a->safe_psql('w', 'SELECT ep.publish_horizon()');
$last = $a->safe_psql('w', 'SELECT max(global_position) FROM ep.events');
is($b->safe_psql('r2', "SELECT ep.wait_for_position($last, '2 s')"), 'f',
	'with a lost slot the reader cannot catch up');
$b->safe_psql('r2', q{SELECT ep.resync_store('posts')});
ok(caught_up($b, 'r2'), 'after ep.resync_store the reader caught up');
is($b->safe_psql('r2', 'SELECT count(*) FROM ep.events'),
	$a->safe_psql('w', q{SELECT count(*) FROM ep.events WHERE category = 'post'}), 'the copy is complete again');
is($b->safe_psql('r2', q{SELECT ep.wait_for_projection('feed', '60 s')}), 't', 'its projection caught up again');
is($b->safe_psql('r2', 'SELECT count(*) - count(DISTINCT pos) FROM feed'), '0', 'nothing applied twice');
is($b->safe_psql('r2', q{SELECT count(*) FROM ep.events e WHERE NOT EXISTS (SELECT FROM feed f WHERE f.pos = e.global_position)}),
	'0', 'nothing skipped');
is($a->safe_psql('w', q{SELECT string_agg(wal_status, ',') FROM ep.store_status WHERE slot_name LIKE 'posts_%'}),
	'reserved', 'the writer holds one healthy slot for it');

# --- unfollow: the copy becomes a store of its own ----------------------
$b->safe_psql('r2', q{SELECT ep.unfollow_store('posts')});
is($a->safe_psql('w', q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'posts_%'}), '0',
	'unfollow dropped the slot on the writer');
my $max = $b->safe_psql('r2', 'SELECT max(global_position) FROM ep.events');
$b->safe_psql('r2', q{SELECT ep.append('post-new', 'Posted', '{}')});
cmp_ok($b->safe_psql('r2', q{SELECT global_position FROM ep.events WHERE stream_id = 'post-new'}),
	'>', $max, 'appends after unfollow continue after the copied positions');

$a->stop;
$b->stop;
done_testing();
