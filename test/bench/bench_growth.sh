#!/bin/sh
# bench_growth.sh: append rate and read_stream latency with 10M events stored
# against the same with 100k stored (target: within 1.25x).
#
# Two databases of the same cluster: the baseline holds 100k events, the
# large one GROWTH_EVENTS (default 10,000,000). Both are filled with
# ep.append_events batches of 1,000 events, as an application would, and
# VACUUM ANALYZE'd. The measurements alternate between the two databases for
# GROWTH_ROUNDS rounds of GROWTH_SECONDS (default 6 of 4 s) and keep each side's best, so that load
# from other processes on the machine does not decide the ratio.
set -e
. "$BENCH_DIR/common.sh"
big=${GROWTH_EVENTS:-10000000}
secs=${GROWTH_SECONDS:-4}
rounds=${GROWTH_ROUNDS:-6}
small_db=$BENCH_DB
big_db=${BENCH_DB}_big

PSQL_BASE="$BENCH_BINDIR/psql -X -q -h /tmp -p $BENCH_PORT -U postgres -v ON_ERROR_STOP=1"
on() { db=$1; shift; $PSQL_BASE -d "$db" -At -c "$1"; }

$BENCH_BINDIR/dropdb -h /tmp -p "$BENCH_PORT" -U postgres --if-exists "$big_db"
$BENCH_BINDIR/createdb -h /tmp -p "$BENCH_PORT" -U postgres "$big_db"
trap '$BENCH_BINDIR/dropdb -h /tmp -p "$BENCH_PORT" -U postgres --if-exists "$big_db"' EXIT

for db in "$small_db" "$big_db"; do
    $PSQL_BASE -d "$db" <<'SQL'
CREATE EXTENSION IF NOT EXISTS event_patterns;
-- fill streams load-<first> .. load-<last> with 1,000 events each
CREATE PROCEDURE load_streams(first int, last int) LANGUAGE plpgsql AS $$
DECLARE
    b jsonb := (SELECT jsonb_agg(jsonb_build_object('type',
                   CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
                   'data', jsonb_build_object('amount', i, 'note', 'payment reference ' || i)))
                FROM generate_series(1, 1000) i);
BEGIN
    FOR s IN first .. last LOOP
        PERFORM ep.append_events('load-' || s, b);
        IF s % 100 = 0 THEN COMMIT; END IF;
    END LOOP;
END $$;
SQL
done

cat > "$BENCH_DIR/growth_append.sql" <<'S'
\set s random(1, 10000)
SELECT ep.append('hot-' || :s, 'Deposited', '{"amount": 1, "note": "payment"}');
S
cat > "$BENCH_DIR/growth_read.sql" <<'S'
\set s random(1, 100)
\set v random(1, 980)
SELECT count(*) FROM ep.read_stream('load-' || :s, :v, 20);
S
cat > "$BENCH_DIR/growth_read_last.sql" <<'S'
\set s random(1, 100)
SELECT count(*) FROM ep.read_stream('load-' || :s, NULL, 10, true);
S

on "$small_db" "CALL load_streams(1, 100)"
start=$(date +%s)
last=$((big / 1000))
from=1
while [ "$from" -le "$last" ]; do
    to=$((from + 999)); [ "$to" -gt "$last" ] && to=$last
    on "$big_db" "CALL load_streams($from, $to)"
    from=$((to + 1))
done
load_s=$(( $(date +%s) - start ))
for db in "$small_db" "$big_db"; do
    on "$db" "VACUUM ANALYZE ep.events" >/dev/null
    on "$db" "VACUUM ANALYZE ep.streams" >/dev/null
done
n_small=$(on "$small_db" "SELECT count(*) FROM ep.events")
n_big=$(on "$big_db" "SELECT count(*) FROM ep.events")
size=$(on "$big_db" "SELECT pg_size_pretty(pg_total_relation_size('ep.events'))")
echo "loaded $n_big events in ${load_s} s ($(awk -v n="$n_big" -v s="$load_s" 'BEGIN{ if (s > 0) printf "%.0f", n/s; else print "n/a" }') events/s); ep.events with indexes: $size"

# tps_on DB FILE CLIENTS
tps_on() {
    $BENCH_BINDIR/pgbench -h /tmp -p "$BENCH_PORT" -U postgres -n -f "$2" -c "$3" -j "$3" -T "$secs" "$1" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }

a_s=0; a_b=0; r_s=0; r_b=0; l_s=0; l_b=0
i=1
while [ "$i" -le "$rounds" ]; do
    a_s=$(best "$a_s" "$(tps_on "$small_db" "$BENCH_DIR/growth_append.sql" 2)")
    a_b=$(best "$a_b" "$(tps_on "$big_db" "$BENCH_DIR/growth_append.sql" 2)")
    r_s=$(best "$r_s" "$(tps_on "$small_db" "$BENCH_DIR/growth_read.sql" 1)")
    r_b=$(best "$r_b" "$(tps_on "$big_db" "$BENCH_DIR/growth_read.sql" 1)")
    l_s=$(best "$l_s" "$(tps_on "$small_db" "$BENCH_DIR/growth_read_last.sql" 1)")
    l_b=$(best "$l_b" "$(tps_on "$big_db" "$BENCH_DIR/growth_read_last.sql" 1)")
    i=$((i + 1))
done
ms() { awk -v t="$1" 'BEGIN { if (t > 0) printf "%.3f", 1000 / t; else print "n/a" }'; }
echo "at $n_small events: append $a_s tps (2 clients), read_stream 20 events $(ms "$r_s") ms, last 10 backwards $(ms "$l_s") ms"
echo "at $n_big events: append $a_b tps (2 clients), read_stream 20 events $(ms "$r_b") ms, last 10 backwards $(ms "$l_b") ms"
echo "growth: append rate at ${n_small} / at ${n_big}: ratio $(ratio "$a_s" "$a_b") (target <= 1.25)"
echo "growth: read_stream latency at ${n_big} / at ${n_small}: ratio $(ratio "$r_s" "$r_b") (target <= 1.25)"
echo "growth: read_stream backwards latency at ${n_big} / at ${n_small}: ratio $(ratio "$l_s" "$l_b") (target <= 1.25)"
