#!/bin/sh
# bench_saga.sh: sagas of three local no-op steps completed per second by
# the background worker, against the floor: the same three functions called
# in one transaction (pgbench, 1 client). A saga step is a transaction of
# its own in the worker (row lock, owner switch, the call in a
# subtransaction, the state change and a history event, a commit), so the
# ratio is far below 1; the per-step overhead is
# (1 / sagas_per_s - 1 / floor_per_s) / 3. Also printed: the same sagas
# driven by ep.run_sagas() in one session transaction (no commit per step).
set -e
. "$BENCH_DIR/common.sh"
N=${SAGA_BENCH_N:-1000}

sql "CREATE EXTENSION IF NOT EXISTS event_patterns"
$PSQL >/dev/null <<'SQL'
CREATE FUNCTION n1(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION n2(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION n3(saga_id text, data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
SELECT ep.define_saga('noop', '[{"name": "s1", "action": "n1"}, {"name": "s2", "action": "n2"},
                                {"name": "s3", "action": "n3"}]');
SQL

# the floor: the three calls in one transaction
cat > "$BENCH_DIR/saga_floor.sql" <<'EOF2'
SELECT n1('x', '{}'), n2('x', '{}'), n3('x', '{}');
EOF2
floor=$(tps "$BENCH_DIR/saga_floor.sql" 1 5)

now_ms() { sql "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"; }

# the worker: start N sagas in one transaction, time until all completed
run_worker() {
    prefix=$1
    sql "SELECT count(ep.start_saga('noop', '$prefix-' || i, '{}')) FROM generate_series(1, $N) i" >/dev/null
    t0=$(now_ms)
    while [ "$(sql "SELECT count(*) FROM ep.saga_instances WHERE saga_id LIKE '$prefix-%' AND status = 'completed'")" -lt "$N" ]; do
        sleep 0.05
    done
    t1=$(now_ms)
    awk -v n="$N" -v ms="$((t1 - t0))" 'BEGIN { printf "%.1f", n * 1000 / ms }'
}
w1=$(run_worker a); w2=$(run_worker b); w3=$(run_worker c)
worker=$(median "$w1" "$w2" "$w3")

# by hand: started and run in one session transaction (the worker cannot
# see them before the commit); only ep.run_sagas() is timed
manual=$($PSQL -At <<SQL
BEGIN;
SELECT count(ep.start_saga('noop', 'm-' || i, '{}')) AS started FROM generate_series(1, $N) i \gset
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT ep.run_sagas($N * 3 + 10) AS ran \gset
SELECT round($N / extract(epoch FROM clock_timestamp() - to_timestamp(:t0))::numeric, 1);
COMMIT;
SQL
)
overhead=$(awk -v s="$worker" -v f="$floor" 'BEGIN { if (s > 0 && f > 0) printf "%.3f", (1 / s - 1 / f) * 1000 / 3; else print "n/a" }')
echo "sagas of 3 no-op steps: worker $worker sagas/s (runs: $w1 $w2 $w3), floor (3 calls in one transaction) $floor/s, ratio $(ratio "$worker" "$floor"), overhead per step $overhead ms"
echo "the same sagas driven by ep.run_sagas() in one transaction: $manual sagas/s, ratio $(ratio "$manual" "$floor")"
