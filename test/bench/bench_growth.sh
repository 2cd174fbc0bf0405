#!/bin/sh
# bench_growth.sh: append rate and read_stream latency with 10M events stored
# against the same with 100k stored (target: within 1.25x). The store is
# filled with ep.append_events batches of 1,000 events (one transaction per
# 1,000 batches), as a real application would, then VACUUM ANALYZE'd at
# both sizes. GROWTH_EVENTS overrides the large size (default 10,000,000).
set -e
. "$BENCH_DIR/common.sh"
big=${GROWTH_EVENTS:-10000000}
secs=${GROWTH_SECONDS:-15}

sql "CREATE EXTENSION IF NOT EXISTS event_patterns"
$PSQL <<'SQL'
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

measure() {
    sql "VACUUM ANALYZE ep.events" >/dev/null
    sql "VACUUM ANALYZE ep.streams" >/dev/null
    a=$(tps "$BENCH_DIR/growth_append.sql" 2 "$secs")
    r=$(tps "$BENCH_DIR/growth_read.sql" 1 "$secs")
    l=$(tps "$BENCH_DIR/growth_read_last.sql" 1 "$secs")
    echo "$a $r $l"
}

sql "CALL load_streams(1, 100)"
set -- $(measure)
a1=$1; r1=$2; l1=$3
n1=$(sql "SELECT count(*) FROM ep.events")
echo "at $n1 events: append $a1 tps (2 clients), read_stream 20 events $(awk -v t="$r1" 'BEGIN{printf "%.3f", 1000/t}') ms, last 10 backwards $(awk -v t="$l1" 'BEGIN{printf "%.3f", 1000/t}') ms"

start=$(date +%s)
last=$((big / 1000))
from=101
while [ "$from" -le "$last" ]; do
    to=$((from + 999)); [ "$to" -gt "$last" ] && to=$last
    sql "CALL load_streams($from, $to)"
    from=$((to + 1))
done
load_s=$(( $(date +%s) - start ))
set -- $(measure)
a2=$1; r2=$2; l2=$3
n2=$(sql "SELECT count(*) FROM ep.events")
size=$(sql "SELECT pg_size_pretty(pg_total_relation_size('ep.events'))")
echo "loaded $((n2 - n1)) events in ${load_s} s ($(awk -v n=$((n2 - n1)) -v s="$load_s" 'BEGIN{ if (s > 0) printf "%.0f", n/s; else print "n/a" }') events/s); ep.events with indexes: $size"
echo "at $n2 events: append $a2 tps (2 clients), read_stream 20 events $(awk -v t="$r2" 'BEGIN{printf "%.3f", 1000/t}') ms, last 10 backwards $(awk -v t="$l2" 'BEGIN{printf "%.3f", 1000/t}') ms"
echo "growth: append rate at 100k / at ${n2}: ratio $(ratio "$a1" "$a2") (target <= 1.25)"
echo "growth: read_stream latency at ${n2} / at 100k: ratio $(ratio "$r1" "$r2") (target <= 1.25)"
echo "growth: read_stream backwards latency at ${n2} / at 100k: ratio $(ratio "$l1" "$l2") (target <= 1.25)"
