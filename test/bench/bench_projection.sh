#!/bin/sh
# bench_projection.sh: async projection apply rate against the same handler
# called over the same events in one plain SQL statement, and backend memory
# with a large backlog. Apply rounds are run with ep.apply_projections() in
# one session (the same code the per-database worker runs each round).
# Prints: ratios (target >= 0.8) and peak backend memory (VmHWM).
. "$(dirname "$0")/common.sh"

N=${BENCH_PROJ_EVENTS:-100000}
BIG=${BENCH_PROJ_BACKLOG:-300000}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
sql "CREATE TABLE read_model (stream text PRIMARY KEY, n bigint NOT NULL)"
sql "CREATE FUNCTION upsert_h(e ep.events) RETURNS void LANGUAGE sql AS \$\$
       INSERT INTO public.read_model AS r VALUES (e.stream_id, 1)
       ON CONFLICT (stream) DO UPDATE SET n = r.n + 1 \$\$"

append() { # count
    sql "SELECT count(ep.append_events('s-' || b, (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 100) i)))
           FROM generate_series(1, $1 / 100) b" >/dev/null
}

drain() { # name -> prints elapsed ms
    t0=$(now_ms)
    while :; do
        n=$(sql "SELECT ep.apply_projections(1000000)")
        lag=$(sql "SELECT lag_events FROM ep.projections WHERE name = '$1'")
        [ "$n" = 0 ] && [ "$lag" = 0 ] && break
    done
    echo $(( $(now_ms) - t0 ))
}

# live: the projection exists, N events arrive, one apply pass decodes them
sql "SELECT ep.create_projection('live', 'upsert_h(ep.events)')" >/dev/null
sql "SELECT ep.apply_projections()" >/dev/null
append "$N"
sql "CHECKPOINT" >/dev/null
t0=$(now_ms)
$PSQL -At -c "SET event_patterns.projection_batch_size = $((N + 1000))" -c "SELECT ep.apply_projections($((N + 1000)))" >/dev/null
t_live=$(( $(now_ms) - t0 ))
$PSQL -At -c "SET event_patterns.projection_batch_size = $((N + 1000))" -c "SELECT ep.apply_projections($((N + 1000)))" >/dev/null
decoded=$(sql "SELECT decoded_count FROM ep.projections WHERE name = 'live'")
applied=$(sql "SELECT applied_count FROM ep.projections WHERE name = 'live'")
sql "SELECT ep.drop_projection('live')" >/dev/null

# baseline: the same handler over the same events in one plain statement
sql "TRUNCATE read_model"
t0=$(now_ms)
sql "SELECT count(upsert_h(e)) FROM ep.events e" >/dev/null
t_base=$(( $(now_ms) - t0 ))

# catch-up: a new projection reads the stored events in batches of 10000
sql "TRUNCATE read_model"
sql "SELECT ep.create_projection('catchup', 'upsert_h(ep.events)')" >/dev/null
t_catch=$(drain catchup)
ok=$(sql "SELECT sum(n) = (SELECT count(*) FROM ep.events) FROM read_model")
sql "SELECT ep.drop_projection('catchup')" >/dev/null

rate_base=$(awk -v n="$N" -v t="$t_base" 'BEGIN { printf "%.0f", n * 1000 / t }')
rate_live=$(awk -v n="$N" -v t="$t_live" 'BEGIN { printf "%.0f", n * 1000 / t }')
rate_catch=$(awk -v n="$N" -v t="$t_catch" 'BEGIN { printf "%.0f", n * 1000 / t }')
echo "projection baseline (one SELECT over $N events): $t_base ms, $rate_base events/s"
echo "projection live (decoded, $decoded of $applied from WAL): $t_live ms, $rate_live events/s, ratio $(ratio "$rate_live" "$rate_base") (target 0.8)"
echo "projection catch-up (from ep.events, read model correct: $ok): $t_catch ms, $rate_catch events/s, ratio $(ratio "$rate_catch" "$rate_base") (target 0.8)"

# memory with a large backlog: peak RSS of the applying backend
hwm() { # max_events -> VmHWM (kB) of a fresh backend after one apply pass
    $PSQL -At -c "SELECT ep.apply_projections($1)" \
        -c "SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'), 'VmHWM:\\s+(\\d+)'))[1]" | tail -1
}
sql "TRUNCATE read_model"
sql "SELECT ep.create_projection('backlog', 'upsert_h(ep.events)')" >/dev/null
sql "SELECT ep.apply_projections(1000000)" >/dev/null
append 1000
small=$(hwm 1000000)
append "$BIG"
big=$(hwm 1000000)
echo "projection memory: peak backend RSS $small kB applying a 1000-event backlog, $big kB applying a $BIG-event backlog in one pass (batch 10000, 64 MB cap)"
