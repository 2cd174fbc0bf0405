#!/bin/sh
# bench_projection_sql: a projection whose handler is written the way a new
# user writes it, in plain SQL with unqualified names (an upsert into a
# balances table), applied by the per-database background worker, against
# the same handler called over the same events in one plain statement
# (SELECT count(apply_balance(e)) FROM ep.events e, jit off). Two figures:
#   1. catch-up: N stored events, then the projection is created and the
#      worker applies them (until ep.wait_for_projection returns);
#   2. live: the projection is caught up; bursts of 10,000 events are
#      appended in one transaction each and the worker applies each burst.
# Each measured three times, alternating with the baseline; best of each
# (the machine is shared). Target ratio >= 0.8.
. "$BENCH_DIR/common.sh"
N=${BENCH_PROJ_EVENTS:-50000}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n * 1000 / t }'; }

sql "CREATE EXTENSION event_patterns"
sql "CREATE TABLE balances (account text PRIMARY KEY, balance numeric NOT NULL DEFAULT 0)"
sql "CREATE FUNCTION apply_balance(e ep.events) RETURNS void LANGUAGE sql AS \$\$
       INSERT INTO balances VALUES (e.stream_id, (e.data->>'amount')::numeric)
       ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance \$\$"
i=0
while [ "$(sql "SELECT count(*) FROM ep.workers WHERE state <> 'starting'")" = 0 ] && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i + 1))
done
if [ "$(sql "SELECT count(*) FROM ep.workers")" = 0 ]; then
    echo "projection with a SQL handler: skipped (no background worker)"; exit 0
fi

append() { # count: transactions of 10,000 events, 1,000 accounts
    left=$1
    while [ "$left" -gt 0 ]; do
        chunk=$(( left < 10000 ? left : 10000 ))
        sql "SELECT count(ep.append_events('acc-' || b, (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', i))) FROM generate_series(1, $chunk / 1000) i)))
               FROM generate_series(1, 1000) b" >/dev/null
        left=$(( left - chunk ))
    done
}
baseline() { # WHERE clause -> elapsed ms of the plain statement
    sql "TRUNCATE balances"
    t0=$(now_ms)
    $PSQL -At -c "SET jit = off" -c "SELECT count(apply_balance(e)) FROM ep.events e WHERE $1" >/dev/null
    echo $(( $(now_ms) - t0 ))
}
expected() { sql "SELECT sum((data->>'amount')::numeric) FROM ep.events WHERE $1"; }

append "$N"
sql "VACUUM ANALYZE" >/dev/null
sql "CHECKPOINT" >/dev/null

# 1. catch-up by the worker
t_catch=999999999; t_base1=999999999; ok_catch=t
for round in 1 2 3; do
    b=$(baseline true); [ "$b" -lt "$t_base1" ] && t_base1=$b
    sql "TRUNCATE balances"
    t0=$(now_ms)
    sql "SELECT ep.create_projection('balances', 'apply_balance(ep.events)', ARRAY['Deposited'], 'acc')" >/dev/null
    done_=$(sql "SELECT ep.wait_for_projection('balances', '10 minutes')")
    t=$(( $(now_ms) - t0 )); [ "$t" -lt "$t_catch" ] && t_catch=$t
    [ "$done_" = t ] && [ "$(sql "SELECT sum(balance) FROM balances")" = "$(expected true)" ] || ok_catch=f
    sql "SELECT ep.drop_projection('balances')" >/dev/null
done
echo "projection with a SQL handler (unqualified names), catch-up by the worker: $N events in $t_catch ms ($(rate "$N" "$t_catch")/s, correct: $ok_catch); one plain statement: $t_base1 ms ($(rate "$N" "$t_base1")/s); ratio $(ratio "$(rate "$N" "$t_catch")" "$(rate "$N" "$t_base1")") (target >= 0.8)"

# 2. live: bursts of 10,000 events, each applied by the worker
sql "TRUNCATE balances"
sql "SELECT ep.create_projection('balances', 'apply_balance(ep.events)', ARRAY['Deposited'], 'acc')" >/dev/null
sql "SELECT ep.wait_for_projection('balances', '10 minutes')" >/dev/null
start=$(sql "SELECT COALESCE(max(global_position), 0) FROM ep.events")
rounds=""; k=0; ok_live=t
while [ $k -lt 5 ]; do
    append 10000
    t0=$(now_ms)
    [ "$(sql "SELECT ep.wait_for_projection('balances', '10 minutes')")" = t ] || ok_live=f
    rounds="$rounds $(( $(now_ms) - t0 ))"
    k=$((k + 1))
done
[ "$(sql "SELECT sum(balance) FROM balances")" = "$(expected "global_position > 0")" ] || ok_live=f
t_live=$(echo $rounds | tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
t_base2=999999999
for round in 1 2 3; do
    b=$(baseline "global_position > $start AND global_position <= $start + 10000"); [ "$b" -lt "$t_base2" ] && t_base2=$b
done
echo "projection with a SQL handler (unqualified names), live by the worker: bursts of 10000 events applied in$rounds ms (median $t_live ms, $(rate 10000 "$t_live")/s, correct: $ok_live); one plain statement: $t_base2 ms ($(rate 10000 "$t_base2")/s); ratio $(ratio "$(rate 10000 "$t_live")" "$(rate 10000 "$t_base2")") (target >= 0.8)"
