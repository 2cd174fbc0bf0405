#!/bin/sh
# bench_read_nodes.sh: read nodes (issue 15), on one cluster: the bench
# database is the writer, two more databases follow its store.
#  1. commit on the writer -> event readable on a reader (ep.read_all
#     polled every millisecond on the reader), at a steady 2000 events/s:
#     p50 / p99 (target p99 < 100 ms);
#  2. the same async projection catching up N stored events on a reader and
#     on the writer, alternating, best of four each: rate ratio (target
#     >= 0.9); and its commit -> applied lag at 2000 events/s on both;
#  3. writer append throughput with the two readers following vs a database
#     of the same cluster whose store is not published, alternating, the
#     readers' subscriptions disabled during the baseline rounds (so no
#     walsender decodes meanwhile): ratio (target >= 0.9);
#  4. the floor of 3. on this machine: the same measure with plain tables
#     (the columns, keys, indexes and checks of ep.events and ep.streams,
#     one SQL function writing the same two rows per append) and two plain
#     native subscriptions, no extension involved: what native logical
#     replication alone costs the writer when its subscribers share its
#     cores.
. "$(dirname "$0")/common.sh"

N=${BENCH_READ_EVENTS:-50000}
R1="${BENCH_DB}_r1"
R2="${BENCH_DB}_r2"
BASE="${BENCH_DB}_base"
PW="${BENCH_DB}_pw"; PR1="${BENCH_DB}_pr1"; PR2="${BENCH_DB}_pr2"; PBASE="${BENCH_DB}_pbase"
CONN="dbname=$BENCH_DB host=/tmp port=$BENCH_PORT user=postgres"
PSQL_AT="$BENCH_BINDIR/psql -X -q -At -h /tmp -p $BENCH_PORT -U postgres -v ON_ERROR_STOP=1"
on() { db=$1; shift; $PSQL_AT -d "$db" -c "$1"; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n * 1000 / t }'; }

cleanup() {
    on "$R1" "SELECT ep.unfollow_store('bench_r1')" >/dev/null 2>&1
    on "$R2" "SELECT ep.unfollow_store('bench_r2')" >/dev/null 2>&1
    for r in "$PR1" "$PR2"; do
        on "$r" "ALTER SUBSCRIPTION plain_$r DISABLE" >/dev/null 2>&1
        on "$r" "ALTER SUBSCRIPTION plain_$r SET (slot_name = NONE)" >/dev/null 2>&1
        on "$r" "DROP SUBSCRIPTION plain_$r" >/dev/null 2>&1
        on "$PW" "SELECT pg_drop_replication_slot('plain_$r')" >/dev/null 2>&1
    done
    for d in "$R1" "$R2" "$BASE" "$PW" "$PR1" "$PR2" "$PBASE"; do
        "$BENCH_BINDIR/dropdb" -h /tmp -p "$BENCH_PORT" -U postgres --if-exists "$d"
    done
}
trap cleanup EXIT

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
for d in "$R1" "$R2" "$BASE"; do
    "$BENCH_BINDIR/createdb" -h /tmp -p "$BENCH_PORT" -U postgres "$d"
    on "$d" "CREATE EXTENSION event_patterns" >/dev/null
done
for d in "$BENCH_DB" "$R1" "$R2"; do
    on "$d" "CREATE TABLE read_model (stream text PRIMARY KEY, n bigint NOT NULL);
             CREATE FUNCTION upsert_h(e ep.events) RETURNS void LANGUAGE sql AS \$\$
               INSERT INTO public.read_model AS r VALUES (e.stream_id, 1)
               ON CONFLICT (stream) DO UPDATE SET n = r.n + 1 \$\$;
             CREATE TABLE lag_log (lag_ms double precision);
             CREATE FUNCTION lag_h(e ep.events) RETURNS void LANGUAGE sql AS \$\$
               INSERT INTO public.lag_log VALUES (1000 * pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - e.recorded_at)) \$\$" >/dev/null
done

sql "SELECT ep.publish_store()" >/dev/null
on "$R1" "SELECT ep.follow_store('bench_r1', '$CONN')" >/dev/null
# one initial copy at a time (walsenders are few in the test configuration)
caught_up() { # db
    pos=$(sql "SELECT COALESCE(max(global_position), 0) FROM ep.events")
    [ "$(on "$1" "SELECT ep.wait_for_position($pos, '120 s')")" = t ] || { echo "$1 did not catch up" >&2; exit 1; }
}
caught_up "$R1"
on "$R2" "SELECT ep.follow_store('bench_r2', '$CONN')" >/dev/null
caught_up "$R2"

# 1. commit -> readable on a reader at 2000 events/s
on "$R1" "CREATE TABLE seen_lag (lag_ms double precision);
          CREATE PROCEDURE watch(p_seconds float8) LANGUAGE plpgsql AS \$\$
          DECLARE
              last bigint := (SELECT COALESCE(max(global_position), 0) FROM ep.events);
              r record; n int;
              deadline timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
          BEGIN
              WHILE clock_timestamp() < deadline LOOP
                  n := 0;
                  FOR r IN SELECT global_position, recorded_at FROM ep.read_all(last, 1000) LOOP
                      INSERT INTO seen_lag VALUES (1000 * date_part('epoch', clock_timestamp() - r.recorded_at));
                      last := r.global_position; n := n + 1;
                  END LOOP;
                  COMMIT;
                  IF n = 0 THEN PERFORM pg_sleep(0.001); END IF;
              END LOOP;
          END \$\$" >/dev/null
echo "SELECT ep.append('lat-' || (random() * 100)::int, 'E', '{}');" > "$BENCH_DIR/rn_append.sql"
$PSQL_AT -d "$R1" -c "CALL watch(13)" >/dev/null &
watcher=$!
sleep 1
$PGBENCH -n -f "$BENCH_DIR/rn_append.sql" -c 4 -j 2 -R 2000 -T 10 >/dev/null 2>&1
wait $watcher
echo "read node: commit on the writer -> readable on a reader at 2000 events/s: $(on "$R1" "SELECT count(*) || ' events, p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1) || ' ms, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1) || ' ms, max ' || round(max(lag_ms)::numeric, 1) || ' ms' FROM seen_lag") (target p99 < 100 ms)"

# 2. the same projection on a reader and on the writer
left=$N
while [ "$left" -gt 0 ]; do
    sql "SELECT count(ep.append_events('p-' || b, (SELECT jsonb_agg(jsonb_build_object('type', 'E', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 100) i)))
           FROM generate_series(1, 100) b" >/dev/null
    left=$(( left - 10000 ))
done
caught_up "$R1"
caught_up "$R2"
on "$R1" "VACUUM ANALYZE ep.events" >/dev/null
sql "VACUUM ANALYZE ep.events" >/dev/null
total=$(sql "SELECT count(*) FROM ep.events")
drain() { # db name -> elapsed ms until its lag is 0
    t0=$(now_ms)
    while [ "$(on "$1" "SELECT lag_events FROM ep.projections WHERE name = '$2'")" != 0 ]; do
        on "$1" "SELECT ep.apply_projections()" >/dev/null
    done
    echo $(( $(now_ms) - t0 ))
}
t_w=999999999; t_r=999999999
for round in 1 2 3 4; do
    # alternate which side goes first
    if [ $((round % 2)) = 1 ]; then order="$BENCH_DB $R1"; else order="$R1 $BENCH_DB"; fi
    for d in $order; do
        on "$d" "TRUNCATE read_model" >/dev/null
        on "$d" "SELECT ep.create_projection('catchup', 'upsert_h(ep.events)')" >/dev/null
        t=$(drain "$d" catchup)
        if [ "$d" = "$BENCH_DB" ]; then [ "$t" -lt "$t_w" ] && t_w=$t; else [ "$t" -lt "$t_r" ] && t_r=$t; fi
        if [ "$d" = "$BENCH_DB" ]; then ok_w=$(sql "SELECT sum(n) = $total FROM read_model"); else ok_r=$(on "$R1" "SELECT sum(n) = $total FROM read_model"); fi
        on "$d" "SELECT ep.drop_projection('catchup')" >/dev/null
    done
done
echo "read node: projection catch-up of $total events: reader $t_r ms ($(rate "$total" "$t_r")/s, correct: $ok_r), writer $t_w ms ($(rate "$total" "$t_w")/s, correct: $ok_w); ratio $(ratio "$(rate "$total" "$t_r")" "$(rate "$total" "$t_w")") (target 0.9)"

for d in "$BENCH_DB" "$R1"; do
    on "$d" "SELECT ep.create_projection('lag', 'lag_h(ep.events)', category => 'plag')" >/dev/null
done
sleep 2
echo "SELECT ep.append('plag-' || (random() * 100)::int, 'E', '{}');" > "$BENCH_DIR/rn_plag.sql"
$PGBENCH -n -f "$BENCH_DIR/rn_plag.sql" -c 4 -j 2 -R 2000 -T 10 >/dev/null 2>&1
sleep 3
lagq="SELECT count(*) || ' events, p50 ' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1) || ' ms, p99 ' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms)::numeric, 1) || ' ms' FROM lag_log"
echo "read node: projection lag (writer's commit -> applied) at 2000 events/s: on the reader $(on "$R1" "$lagq"); on the writer $(sql "$lagq")"
for d in "$BENCH_DB" "$R1"; do on "$d" "SELECT ep.drop_projection('lag')" >/dev/null; done

# 3. append throughput: two readers following vs a store nobody follows
echo "SELECT ep.append('t-' || (random() * 1000)::int, 'E', '{\"a\": 1}');" > "$BENCH_DIR/rn_tps.sql"
subs() { # enable|disable
    on "$R1" "ALTER SUBSCRIPTION bench_r1 $1" >/dev/null
    on "$R2" "ALTER SUBSCRIPTION bench_r2 $1" >/dev/null
}
tps_db() { # db seconds
    "$BENCH_BINDIR/pgbench" -h /tmp -p "$BENCH_PORT" -U postgres -n -f "$BENCH_DIR/rn_tps.sql" -c 4 -j 4 -T "$2" "$1" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
eps=""; bases=""; ratios=""
for round in 1 2 3; do
    subs disable; sleep 1
    b=$(tps_db "$BASE" 8)
    subs enable
    sleep 2
    e=$(tps_db "$BENCH_DB" 8)
    eps="$eps $e"; bases="$bases $b"; ratios="$ratios $(ratio "$e" "$b")"
done
caught_up "$R1"
caught_up "$R2"
echo "read node: writer appends with two readers following: $(median $eps) tps; store not published, nobody following: $(median $bases) tps; ratio $(median $ratios) (target 0.9)"

# 4. the floor: native logical replication of plain tables, no extension
subs disable
for d in "$PW" "$PR1" "$PR2" "$PBASE"; do
    "$BENCH_BINDIR/createdb" -h /tmp -p "$BENCH_PORT" -U postgres "$d"
    on "$d" "CREATE SEQUENCE pos_seq AS bigint CACHE 1;
             CREATE TABLE events (global_position bigint NOT NULL PRIMARY KEY, stream_id text NOT NULL,
                 stream_version bigint NOT NULL CHECK (stream_version >= 1), event_id uuid NOT NULL UNIQUE,
                 event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
                 schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
                 recorded_at timestamptz NOT NULL, category text NOT NULL, UNIQUE (stream_id, stream_version));
             CREATE INDEX ON events (category, global_position);
             CREATE TABLE streams (stream_id text PRIMARY KEY, category text NOT NULL, version bigint NOT NULL DEFAULT 0,
                 created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz,
                 tombstoned boolean NOT NULL DEFAULT false, deleted_before bigint, deleted_at timestamptz,
                 max_count bigint CHECK (max_count >= 0), max_age interval,
                 truncate_before bigint CHECK (truncate_before >= 0), metadata jsonb);
             CREATE INDEX ON streams (stream_id) WHERE (truncate_before IS NOT NULL OR deleted_before IS NOT NULL
                 OR max_count IS NOT NULL OR max_age IS NOT NULL);
             CREATE FUNCTION append(s text, t text, d jsonb) RETURNS bigint LANGUAGE sql AS \$\$
               WITH v AS (INSERT INTO streams AS st (stream_id, category, version, updated_at)
                          VALUES (s, split_part(s, '-', 1), 1, now())
                          ON CONFLICT (stream_id) DO UPDATE SET version = st.version + 1, updated_at = now()
                          RETURNING version)
               INSERT INTO events SELECT nextval('pos_seq'), s, v.version, gen_random_uuid(), t, d, NULL, 1,
                                         clock_timestamp(), split_part(s, '-', 1) FROM v
               RETURNING stream_version \$\$" >/dev/null
done
on "$PW" "CREATE PUBLICATION plain FOR TABLE events, streams" >/dev/null
for r in "$PR1" "$PR2"; do
    # same cluster: the slot first, through its own connection (see subscribe.c)
    on "$PW" "SELECT pg_create_logical_replication_slot('plain_$r', 'pgoutput')" >/dev/null
    on "$r" "CREATE SUBSCRIPTION plain_$r CONNECTION 'dbname=$PW host=/tmp port=$BENCH_PORT user=postgres'
             PUBLICATION plain WITH (create_slot = false, slot_name = 'plain_$r', binary = true)" >/dev/null
done
echo "SELECT append('t-' || (random() * 1000)::int, 'E', '{\"a\": 1}');" > "$BENCH_DIR/rn_plain.sql"
plain_subs() { # enable|disable
    on "$PR1" "ALTER SUBSCRIPTION plain_$PR1 $1" >/dev/null
    on "$PR2" "ALTER SUBSCRIPTION plain_$PR2 $1" >/dev/null
}
plain_tps() { # db seconds
    "$BENCH_BINDIR/pgbench" -h /tmp -p "$BENCH_PORT" -U postgres -n -f "$BENCH_DIR/rn_plain.sql" -c 4 -j 4 -T "$2" "$1" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
sleep 2
eps=""; bases=""; ratios=""
for round in 1 2 3; do
    plain_subs disable; sleep 1
    b=$(plain_tps "$PBASE" 8)
    plain_subs enable
    sleep 2
    e=$(plain_tps "$PW" 8)
    eps="$eps $e"; bases="$bases $b"; ratios="$ratios $(ratio "$e" "$b")"
done
echo "read node: floor, native logical replication of plain tables (same rows per append, no extension): two subscribers following: $(median $eps) tps; nobody following: $(median $bases) tps; ratio $(median $ratios)"
