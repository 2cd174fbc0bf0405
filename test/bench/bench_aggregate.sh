#!/bin/sh
# bench_aggregate.sh: ep.aggregate (C fold; plpgsql reducers through the
# function manager, SQL reducers inlined) against the same fold written by a
# user, on a 10,000-event stream (target: >= 3x faster), with two baselines:
#   - "plpgsql FOR loop": FOR e IN SELECT * FROM ep.events ... LOOP
#     st := reducer(st, e); END LOOP (one index scan, the reducer called
#     per row, a SQL reducer inlined as in ep.aggregate);
#   - "plain SQL loop (recursive CTE)": WITH RECURSIVE f(v, st) folding
#     event v + 1 into st per step (one index probe per event).
# Both results are checked equal to ep.aggregate. Reducers: the bank
# account (plpgsql and SQL), a light one (last-write-wins merge of the
# payloads, SQL) and no-op ones (the fold machinery alone). Then, with a
# snapshot policy, the cost of ep.aggregate on a 1,000-event stream against
# a 100,000-event stream (target: independent of the length, ratio ~1).
set -e
. "$BENCH_DIR/common.sh"

sql "CREATE EXTENSION IF NOT EXISTS event_patterns"
$PSQL <<'SQL'
-- the bank-account reducer, in plpgsql and in SQL
CREATE FUNCTION balance_plpgsql(state jsonb, e ep.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
        + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                            WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric ELSE 0 END);
END $$;
CREATE FUNCTION balance_sql(state jsonb, e ep.events) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('balance', coalesce((state->>'balance')::numeric, 0)
        + CASE e.event_type WHEN 'Deposited' THEN (e.data->>'amount')::numeric
                            WHEN 'Withdrawn' THEN -(e.data->>'amount')::numeric ELSE 0 END)
$$;
-- reducers that cost nothing: what remains is the fold machinery itself
CREATE FUNCTION keep_plpgsql(state jsonb, e ep.events) RETURNS jsonb
LANGUAGE plpgsql AS $$ BEGIN RETURN state; END $$;
CREATE FUNCTION keep_sql(state jsonb, e ep.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state $$;
-- a light reducer: the state is the last value of every payload key
CREATE FUNCTION merge_sql(state jsonb, e ep.events) RETURNS jsonb
LANGUAGE sql AS $$ SELECT state || e.data $$;
-- baseline 1: a plpgsql FOR loop calling the reducer
CREATE FUNCTION loop_fold(s text, reducer text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE st jsonb := '{}'; e ep.events;
BEGIN
    IF reducer = 'plpgsql' THEN
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            st := balance_plpgsql(st, e);
        END LOOP;
    ELSIF reducer = 'keep_plpgsql' THEN
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            st := keep_plpgsql(st, e);
        END LOOP;
    ELSIF reducer = 'keep_sql' THEN
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            st := keep_sql(st, e);
        END LOOP;
    ELSIF reducer = 'merge_sql' THEN
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            st := merge_sql(st, e);
        END LOOP;
    ELSIF reducer = 'plpgsql-select' THEN
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            SELECT balance_plpgsql(st, e) INTO st;
        END LOOP;
    ELSE
        FOR e IN SELECT * FROM ep.events WHERE stream_id = s ORDER BY stream_version LOOP
            st := balance_sql(st, e);
        END LOOP;
    END IF;
    RETURN st;
END $$;
-- the other baseline: a plain SQL loop, a recursive CTE folding one event per step
CREATE FUNCTION cte_fold_query(s text, reducer text) RETURNS text LANGUAGE sql AS $$
    SELECT format('WITH RECURSIVE f(v, st) AS ('
                  ' SELECT 0::bigint, %L::jsonb'
                  ' UNION ALL'
                  ' SELECT e.stream_version, %s(f.st, e)'
                  '   FROM f JOIN ep.events e ON e.stream_id = %L AND e.stream_version = f.v + 1)'
                  ' SELECT st FROM f ORDER BY v DESC LIMIT 1', '{}', reducer, s)
$$;
CREATE FUNCTION run_jsonb(q text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    EXECUTE q INTO r;
    RETURN r;
END $$;
-- milliseconds per run of a statement, best of n runs
CREATE FUNCTION bench_ms(q text, n int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz; best float8 := 'infinity'; d float8;
BEGIN
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        d := extract(epoch FROM clock_timestamp() - t0) * 1000;
        best := least(best, d);
    END LOOP;
    RETURN round(best::numeric, 3);
END $$;
CREATE FUNCTION load_stream(s text, n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    FOR b IN 0 .. (n - 1) / 1000 LOOP
        PERFORM ep.append_events(s, (SELECT jsonb_agg(jsonb_build_object(
            'type', CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
            'data', jsonb_build_object('amount', i % 100)))
          FROM generate_series(b * 1000 + 1, least(n, (b + 1) * 1000)) i));
    END LOOP;
END $$;
SQL
sql "SELECT load_stream('acct-10k', 10000)"
sql "SELECT load_stream('acct-1k', 1000)"
sql "SELECT load_stream('acct-100k', 100000)"
sql "VACUUM ANALYZE ep.events"

sql "EXPLAIN (COSTS OFF) $(sql "SELECT cte_fold_query('acct-10k', 'balance_sql')")" | sed 's/^/  CTE plan: /'
# fold NAME REDUCER LOOP_BRANCH: print ep.aggregate against both baselines
fold() {
    name=$1; red=$2; branch=$3
    agg=$(sql "SELECT bench_ms(\$\$SELECT ep.aggregate('acct-10k', '$red(jsonb,ep.events)')\$\$, 7)")
    loop=$(sql "SELECT bench_ms(\$\$SELECT loop_fold('acct-10k', '$branch')\$\$, 7)")
    cte=$(sql "SELECT bench_ms(cte_fold_query('acct-10k', '$red'), 7)")
    eq=$(sql "SELECT ep.aggregate('acct-10k', '$red(jsonb,ep.events)') = loop_fold('acct-10k', '$branch')
                 AND ep.aggregate('acct-10k', '$red(jsonb,ep.events)') = run_jsonb(cte_fold_query('acct-10k', '$red'))")
    echo "aggregate 10k events, $name: ep.aggregate ${agg} ms; plpgsql FOR loop ${loop} ms, ratio $(ratio "$loop" "$agg"); plain SQL loop (recursive CTE) ${cte} ms, ratio $(ratio "$cte" "$agg") (target 3); results equal: $eq"
}
fold "bank reducer in plpgsql" balance_plpgsql plpgsql
fold "bank reducer in SQL" balance_sql sql
fold "light reducer (last-write-wins merge state || e.data, SQL)" merge_sql merge_sql
agg=$(sql "SELECT bench_ms(\$\$SELECT ep.aggregate('acct-10k', 'balance_plpgsql(jsonb,ep.events)')\$\$, 7)")
base=$(sql "SELECT bench_ms(\$\$SELECT loop_fold('acct-10k', 'plpgsql-select')\$\$, 7)")
echo "aggregate 10k events, bank reducer in plpgsql, plpgsql FOR loop written with SELECT ... INTO: ep.aggregate ${agg} ms, loop ${base} ms, ratio $(ratio "$base" "$agg") (target 3)"
for r in keep_plpgsql keep_sql; do
    agg=$(sql "SELECT bench_ms(\$\$SELECT ep.aggregate('acct-10k', '$r(jsonb,ep.events)')\$\$, 7)")
    base=$(sql "SELECT bench_ms(\$\$SELECT loop_fold('acct-10k', '$r')\$\$, 7)")
    echo "aggregate 10k events, no-op reducer $r (fold machinery only): ep.aggregate ${agg} ms ($(awk -v a="$agg" 'BEGIN { printf "%.3f", a * 1000 / 10000 }') us/event), plpgsql FOR loop ${base} ms, ratio $(ratio "$base" "$agg")"
done

# snapshots: cost independent of the stream's length
sql "SELECT ep.set_snapshot_policy('balance_plpgsql(jsonb,ep.events)', 100)"
sql "SELECT ep.aggregate('acct-1k', 'balance_plpgsql(jsonb,ep.events)'), ep.aggregate('acct-100k', 'balance_plpgsql(jsonb,ep.events)')" >/dev/null
sql "SELECT ep.append('acct-1k', 'Deposited', '{\"amount\": 1}'), ep.append('acct-100k', 'Deposited', '{\"amount\": 1}')" >/dev/null
s1=$(sql "SELECT bench_ms(\$\$SELECT ep.aggregate('acct-1k', 'balance_plpgsql(jsonb,ep.events)')\$\$, 20)")
s100=$(sql "SELECT bench_ms(\$\$SELECT ep.aggregate('acct-100k', 'balance_plpgsql(jsonb,ep.events)')\$\$, 20)")
same=$(sql "SELECT ep.aggregate('acct-100k', 'balance_plpgsql(jsonb,ep.events)') = loop_fold('acct-100k', 'plpgsql')")
full=$(sql "SELECT bench_ms(\$\$SELECT loop_fold('acct-100k', 'plpgsql')\$\$, 1)")
echo "snapshots (every 100): 1k stream ${s1} ms, 100k stream ${s100} ms, ratio $(ratio "$s100" "$s1") (target ~1); equal to full fold: $same; full fold of 100k ${full} ms"
