# Sagas survive a crash: an immediate shutdown while the worker runs the
# steps of many sagas; after the restart every saga finishes and each
# action and compensation ran exactly once (side effects counted in a
# table the steps write in their own transaction). A third of the sagas
# fail at their last step and are compensated in reverse order; steps that
# wait for a reply are finished by a session across the crash too.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EPTest;

my $node = ep_node('saga_crash');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION event_patterns;
CREATE ROLE shop LOGIN;
CREATE SCHEMA shop AUTHORIZATION shop;
SET ROLE shop;
SET search_path = shop;
CREATE TABLE effects (n bigserial PRIMARY KEY, saga_id text NOT NULL, what text NOT NULL,
                      who text NOT NULL DEFAULT current_user);
CREATE FUNCTION act(saga_id text, what text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.002);
    INSERT INTO effects (saga_id, what) VALUES (saga_id, what);
    RETURN jsonb_build_object(what, true);
END $$;
CREATE FUNCTION a1(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT act(saga_id, 'a1') $$;
CREATE FUNCTION a2(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT act(saga_id, 'a2') $$;
CREATE FUNCTION c1(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT act(saga_id, 'c1') $$;
CREATE FUNCTION c2(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT act(saga_id, 'c2') $$;
-- waits for a reply when the input asks for it
CREATE FUNCTION a3(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM act(saga_id, 'a3');
    IF (data->>'wait')::boolean THEN
        RETURN NULL;
    END IF;
    RETURN '{}';
END $$;
-- the last step fails for every third saga (after its effect: rolled back)
CREATE FUNCTION a4(saga_id text, data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM act(saga_id, 'a4');
    IF (data->>'i')::int % 3 = 0 THEN
        RAISE EXCEPTION 'step 4 of % fails', saga_id;
    END IF;
    RETURN '{}';
END $$;
CREATE FUNCTION c3(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT act(saga_id, 'c3') $$;
SELECT ep.define_saga('crash', '[
    {"name": "s1", "action": "a1", "compensation": "c1"},
    {"name": "s2", "action": "a2", "compensation": "c2"},
    {"name": "s3", "action": "a3", "compensation": "c3"},
    {"name": "s4", "action": "a4", "retries": 1, "retry_delay": 0}
]');
});

my $n = 300;
$node->safe_psql('postgres', qq{
SET ROLE shop;
SELECT ep.start_saga('crash', 'k' || i, jsonb_build_object('i', i, 'wait', i % 5 = 0))
  FROM generate_series(1, $n) i;
});

# replies to waiting steps while the worker runs; then a crash mid-way
$node->poll_query_until('postgres',
	"SELECT count(*) >= 40 FROM ep.sagas WHERE status IN ('completed', 'compensated')")
  or die "the worker finished no sagas";
$node->safe_psql('postgres', q{
SET ROLE shop;
SELECT ep.complete_step(saga_id, 's3', '{"replied": true}')
  FROM ep.sagas WHERE current_step = 's3' AND phase = 'waiting'});
my $done_before = $node->safe_psql('postgres',
	"SELECT count(*) FROM ep.sagas WHERE status IN ('completed', 'compensated')");
$node->stop('immediate');
$node->start;
ok($done_before < $n, "the crash came while sagas were running ($done_before of $n finished)");

# after the restart the worker goes on; waiting steps get their replies
for my $i (1 .. 120)
{
	$node->safe_psql('postgres', q{
SET ROLE shop;
SELECT ep.complete_step(saga_id, 's3', '{"replied": true}')
  FROM ep.sagas WHERE current_step = 's3' AND phase = 'waiting'});
	last if $node->safe_psql('postgres',
		"SELECT count(*) FROM ep.sagas WHERE status NOT IN ('completed', 'compensated')") == 0;
	sleep 1;
}
is($node->safe_psql('postgres',
		"SELECT status, count(*) FROM ep.sagas GROUP BY 1 ORDER BY 1"),
	"compensated|100\ncompleted|200", 'every saga finished, the failing ones compensated');

# exactly once: every effect a saga should have, once, and no other
my $expected = q{
SELECT 'k' || i, w
  FROM generate_series(1, 300) i,
       unnest(CASE WHEN i % 3 = 0 THEN ARRAY['a1', 'a2', 'a3', 'c3', 'c2', 'c1']
                   ELSE ARRAY['a1', 'a2', 'a3', 'a4'] END) w};
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM (
  (SELECT saga_id, what FROM shop.effects EXCEPT ALL ($expected))
  UNION ALL
  (($expected) EXCEPT ALL SELECT saga_id, what FROM shop.effects)) d}),
	'0', 'each action and compensation ran exactly once');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM shop.effects GROUP BY saga_id, what HAVING count(*) > 1}),
	'', 'no effect twice');

# compensations ran in reverse order of the completed steps
is($node->safe_psql('postgres', q{
SELECT count(*) FROM (
  SELECT saga_id, string_agg(what, ',' ORDER BY n) AS seq FROM shop.effects GROUP BY saga_id) s
 WHERE seq NOT IN ('a1,a2,a3,a4', 'a1,a2,a3,c3,c2,c1')}),
	'0', 'steps and compensations in order');

# the history of each saga ends once: one final event per stream, no gaps
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ep.events
 WHERE category = 'saga_crash' AND event_type IN ('SagaCompleted', 'SagaCompensated')}),
	$n, 'one final event per saga');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ep.events
 WHERE category = 'saga_crash' AND event_type = 'SagaStepCompleted'}),
	# 4 steps of 200 sagas, 3 of 100
	200 * 4 + 100 * 3, 'one completion event per completed step');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ep.events
 WHERE category = 'saga_crash' AND event_type = 'SagaStepCompensated'}),
	100 * 3, 'one compensation event per compensated step');
is($node->safe_psql('postgres', q{
SELECT count(*) FROM ep.events
 WHERE category = 'saga_crash' AND event_type = 'SagaStepAttemptFailed'}),
	100, 'one failed attempt (the retry) per failing saga');

is($node->safe_psql('postgres', q{SELECT DISTINCT who FROM shop.effects}),
	'shop', 'every step ran as the saga type\'s owner');

# many sagas ran interleaved: the worker did not finish them one by one
ok($node->safe_psql('postgres', q{
SELECT count(DISTINCT saga_id) FROM (
  SELECT saga_id FROM shop.effects ORDER BY n LIMIT 60) f}) > 1,
	'sagas run in parallel, not one after the other');

$node->stop;
done_testing();
