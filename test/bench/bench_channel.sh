#!/bin/sh
# bench_channel.sh: service channels between two databases of the cluster.
#  1. ep.send cost: pgbench transactions of one ep.send against one plain
#     INSERT into a table with the same columns and keys (target >= 0.85);
#  2. end to end: N messages sent (transactions of 10) and handled on the
#     consumer by a one-row upsert handler, against native logical
#     replication of the same rows into a plain table with no handler
#     (target >= 0.7, messages/s ratio; each pipeline alone, the median
#     of the per-round ratios);
#  3. latency from commit to handled at 2,000 messages/s (pgbench --rate),
#     p50/p99 over every message (target p99 < 200 ms).
. "$(dirname "$0")/common.sh"

N=${BENCH_CHANNEL_MESSAGES:-50000}
SECS=${BENCH_CHANNEL_SECONDS:-5}
CONS="${BENCH_DB}_consumer"
BASE="${BENCH_DB}_native"
PSQLC="$BENCH_BINDIR/psql -X -q -h /tmp -p $BENCH_PORT -U postgres -d $CONS -v ON_ERROR_STOP=1"
PSQLB="$BENCH_BINDIR/psql -X -q -h /tmp -p $BENCH_PORT -U postgres -d $BASE -v ON_ERROR_STOP=1"
csql() { $PSQLC -At -c "$1"; }
bsql() { $PSQLB -At -c "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n * 1000 / t }'; }
conn="host=/tmp port=$BENCH_PORT dbname=$BENCH_DB user=postgres"

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
sql "SELECT ep.create_channel('bench.orders')" >/dev/null
# the baseline outbox: the same columns and keys, no extension code
sql "CREATE SEQUENCE plain_seq"
sql "CREATE TABLE plain_out (channel text NOT NULL, message_id uuid NOT NULL DEFAULT gen_random_uuid(),
       position bigint NOT NULL DEFAULT nextval('plain_seq'), message_type text NOT NULL, key text,
       payload jsonb, headers jsonb, sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
       PRIMARY KEY (channel, message_id))"
sql "CREATE INDEX ON plain_out (channel, position)"

# 1. ep.send against a plain INSERT
cat > "$BENCH_DIR/send.sql" <<'EOF'
\set k random(1, 1000)
SELECT ep.send('bench.orders', 'OrderPlaced', '{"amount": 10, "currency": "EUR"}', 'order-' || :k);
EOF
cat > "$BENCH_DIR/insert.sql" <<'EOF'
\set k random(1, 1000)
INSERT INTO plain_out (channel, message_type, key, payload) VALUES ('bench.orders', 'OrderPlaced', 'order-' || :k, '{"amount": 10, "currency": "EUR"}');
EOF
set -- $(paired "$BENCH_DIR/send.sql" "$BENCH_DIR/insert.sql" 2 "$SECS" 3)
echo "channel send: ep.send $1 tps, plain INSERT $2 tps, ratio $3 (target 0.85)"
sql "TRUNCATE plain_out; DELETE FROM ep.messages" >/dev/null

# consumer: subscription and a one-row upsert handler
$BENCH_BINDIR/createdb -h /tmp -p "$BENCH_PORT" -U postgres "$CONS"
csql "CREATE EXTENSION event_patterns" >/dev/null
csql "SELECT ep.subscribe_channel('bench.orders', '$conn')" >/dev/null
csql "CREATE TABLE totals (key text PRIMARY KEY, n bigint NOT NULL)"
csql "CREATE FUNCTION upsert_h(m ep.messages) RETURNS void LANGUAGE sql AS \$\$
        INSERT INTO public.totals AS t VALUES (m.key, 1)
        ON CONFLICT (key) DO UPDATE SET n = t.n + 1 \$\$"
csql "SELECT ep.create_message_handler('totals', 'bench.orders', 'upsert_h(ep.messages)')" >/dev/null
# native baseline: the same rows replicated into a plain table, no handler
$BENCH_BINDIR/createdb -h /tmp -p "$BENCH_PORT" -U postgres "$BASE"
sql "CREATE PUBLICATION plain_pub FOR TABLE plain_out WITH (publish = 'insert')"
bsql "CREATE SEQUENCE plain_seq"
bsql "CREATE TABLE plain_out (channel text NOT NULL, message_id uuid NOT NULL DEFAULT gen_random_uuid(),
       position bigint NOT NULL DEFAULT nextval('plain_seq'), message_type text NOT NULL, key text,
       payload jsonb, headers jsonb, sent_at timestamptz NOT NULL DEFAULT clock_timestamp(),
       PRIMARY KEY (channel, message_id))"
sql "SELECT pg_create_logical_replication_slot('plain_sub', 'pgoutput')" >/dev/null
bsql "CREATE SUBSCRIPTION plain_sub CONNECTION '$conn' PUBLICATION plain_pub WITH (create_slot = false, slot_name = 'plain_sub')"
sleep 3

sql "CREATE PROCEDURE send_n(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n / 10 LOOP
        PERFORM ep.send('bench.orders', 'OrderPlaced', '{\"amount\": 10}', 'order-' || (i * 10 + j) % 1000)
           FROM generate_series(1, 10) j;
        COMMIT;
    END LOOP;
END \$\$"
sql "CREATE PROCEDURE insert_n(n int) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1..n / 10 LOOP
        INSERT INTO plain_out (channel, message_type, key, payload)
        SELECT 'bench.orders', 'OrderPlaced', 'order-' || (i * 10 + j) % 1000, '{\"amount\": 10}'
          FROM generate_series(1, 10) j;
        COMMIT;
    END LOOP;
END \$\$"

# 2. end to end, alternating, ROUNDS rounds; the median of the per-round
# ratios (as paired does for pgbench). Each pipeline runs alone: the other
# subscription is disabled meanwhile, so that its walsender does not decode
# (and throw away) the same WAL on the same two cores, and it has decoded
# everything before the next timed round starts. Each timed part starts
# right after a checkpoint (a checkpoint inside one of them would make it
# write full pages that the other does not).
ROUNDS=${BENCH_CHANNEL_ROUNDS:-5}
EPSUB=$(csql "SELECT subscription FROM ep.channel_defs WHERE channel = 'bench.orders'")
sub_off() { $BENCH_BINDIR/psql -X -q -h /tmp -p "$BENCH_PORT" -U postgres -d "$1" -c "ALTER SUBSCRIPTION \"$2\" DISABLE"; }
sub_on() {
    $BENCH_BINDIR/psql -X -q -h /tmp -p "$BENCH_PORT" -U postgres -d "$1" -c "ALTER SUBSCRIPTION \"$2\" ENABLE"
    target=$(sql "SELECT pg_current_wal_lsn()")
    until [ "$(sql "SELECT EXISTS (SELECT 1 FROM pg_stat_replication WHERE application_name = '$2' AND sent_lsn >= '$target')")" = t ]; do sleep 0.1; done
}
ts_ep=""; ts_native=""; ratios=""
round=0
while [ $round -lt "$ROUNDS" ]; do
    round=$((round + 1))
    sub_off "$CONS" "$EPSUB"; sub_on "$BASE" plain_sub
    base=$(bsql "SELECT count(*) FROM plain_out")
    sql "CHECKPOINT"
    t0=$(now_ms)
    sql "CALL insert_n($N)"
    until [ "$(bsql "SELECT count(*) >= $base + $N FROM plain_out")" = t ]; do sleep 0.05; done
    tn=$(( $(now_ms) - t0 ))

    sub_off "$BASE" plain_sub; sub_on "$CONS" "$EPSUB"
    base=$(csql "SELECT coalesce(sum(n), 0) FROM totals")
    sql "CHECKPOINT"
    t0=$(now_ms)
    sql "CALL send_n($N)"
    until [ "$(csql "SELECT coalesce(sum(n), 0) >= $base + $N FROM totals")" = t ]; do sleep 0.05; done
    te=$(( $(now_ms) - t0 ))
    ts_ep="$ts_ep $te"; ts_native="$ts_native $tn"; ratios="$ratios $(ratio "$tn" "$te")"
done
sub_on "$BASE" plain_sub
ok=$(csql "SELECT sum(n) = $ROUNDS * $N FROM totals")
t_ep=$(median $ts_ep); t_native=$(median $ts_native)
r_ep=$(rate "$N" "$t_ep"); r_native=$(rate "$N" "$t_native")
echo "channel end to end: $N messages sent and handled in ${t_ep} ms ($r_ep msg/s), native replication into a plain table ${t_native} ms ($r_native msg/s) (medians of $ROUNDS rounds), ratio $(median $ratios) (median of the rounds:$ratios) (target 0.7), handled exactly once: $ok"

# 3. latency at 2,000 messages/s
csql "CREATE TABLE lat (ms double precision)"
csql "CREATE FUNCTION lat_h(m ep.messages) RETURNS void LANGUAGE sql AS \$\$
        INSERT INTO public.lat VALUES (extract(epoch FROM clock_timestamp() - m.sent_at) * 1000) \$\$"
csql "SELECT ep.drop_projection('totals')" >/dev/null
csql "DELETE FROM ep.messages" >/dev/null   # handled already: not for the new handler
csql "SELECT ep.create_message_handler('lat', 'bench.orders', 'lat_h(ep.messages)')" >/dev/null
sleep 2
csql "TRUNCATE lat"
before=$(sql "SELECT coalesce(max(position), 0) FROM ep.messages")
$PGBENCH -n -f "$BENCH_DIR/send.sql" -c 2 -j 2 -R 2000 -T 10 >/dev/null 2>&1
sent=$(sql "SELECT count(*) FROM ep.messages WHERE position > $before")
until [ "$(csql "SELECT count(*) >= $sent FROM lat")" = t ]; do sleep 0.1; done
echo "channel latency at 2000 msg/s: $(csql "SELECT count(*) || ' messages, p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ms, max ' || round(max(ms)::numeric, 1) || ' ms' FROM lat") (target p99 < 200 ms)"

csql "SELECT ep.drop_projection('lat')" >/dev/null
csql "SELECT ep.unsubscribe_channel('bench.orders')" >/dev/null
bsql "DROP SUBSCRIPTION plain_sub" >/dev/null
$BENCH_BINDIR/dropdb -h /tmp -p "$BENCH_PORT" -U postgres "$CONS"
$BENCH_BINDIR/dropdb -h /tmp -p "$BENCH_PORT" -U postgres "$BASE"
sql "SELECT ep.drop_channel('bench.orders')" >/dev/null
