#!/bin/sh
# bench_append: event store write and read paths against their natural
# baselines, measured in the same run:
#   1. single-event ep.append, 4 clients, vs a plain INSERT of the same row
#      into a table with the same keys: with default settings (target ratio
#      >= 0.85), the same with a listener on ep_events, then with
#      notify=commit and notify=off
#   2. 100-event ep.append_events, 4 clients, vs a plain 100-row INSERT
#      (events/s ratio, target >= 0.80)
#   3. ep.read_stream of a 1,000-event stream vs the bare index scan
#   4. ep.read_all paging (1,000 per page) with 1M events stored vs the bare
#      index scan on global_position
# Reads return every row and column to the client, as applications do (a
# count(*) baseline would be an index-only scan that never reads the rows).
. "$BENCH_DIR/common.sh"
T=${BENCH_SECONDS:-5}

sql "CREATE EXTENSION event_patterns"
sql "CREATE TABLE plain_events (
        global_position bigserial PRIMARY KEY,
        stream_id text NOT NULL, stream_version bigint NOT NULL,
        event_id uuid NOT NULL UNIQUE, event_type text NOT NULL,
        data jsonb NOT NULL, metadata jsonb, schema_version int NOT NULL DEFAULT 1,
        recorded_at timestamptz NOT NULL DEFAULT now(), category text NOT NULL,
        UNIQUE (stream_id, stream_version))"
sql "CREATE INDEX ON plain_events (category, global_position)"
sql "CREATE SEQUENCE plain_version"

cat > "$BENCH_DIR/append1.sql" <<'SQL'
\set s random(1, 100000)
SELECT ep.append('acct-' || :s, 'Deposited', '{"amount": 10}');
SQL
cat > "$BENCH_DIR/insert1.sql" <<'SQL'
\set s random(1, 100000)
INSERT INTO plain_events (stream_id, stream_version, event_id, event_type, data, category)
VALUES ('acct-' || :s, nextval('plain_version'), gen_random_uuid(), 'Deposited', '{"amount": 10}', 'acct');
SQL
cat > "$BENCH_DIR/append100.sql" <<'SQL'
\set s random(1, 100000)
SELECT ep.append_events('batch-' || :s, (SELECT jsonb_agg(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', i))) FROM generate_series(1, 100) i));
SQL
cat > "$BENCH_DIR/insert100.sql" <<'SQL'
\set s random(1, 100000)
INSERT INTO plain_events (stream_id, stream_version, event_id, event_type, data, category)
SELECT 'batch-' || :s, nextval('plain_version'), gen_random_uuid(), 'Deposited', jsonb_build_object('amount', i), 'batch'
  FROM generate_series(1, 100) i;
SQL

# warm up both paths, then alternate measurements (medians of 3 rounds)
tps "$BENCH_DIR/insert1.sql" 4 2 >/dev/null
tps "$BENCH_DIR/append1.sql" 4 2 >/dev/null
set -- $(paired "$BENCH_DIR/append1.sql" "$BENCH_DIR/insert1.sql" 4 "$T")
echo "append (1 event, 4 clients, default settings: notify=$(sql "SHOW event_patterns.notify")): ep.append $1 tps, plain INSERT $2 tps, ratio $3 (target >= 0.85)"
# the same with a session listening on ep_events all along (the worker
# then sends its coalesced NOTIFYs; without listeners it has nobody to wake)
PGAPPNAME=bench_listener $PSQL -c "LISTEN ep_events" -c "SELECT pg_sleep($T * 6 + 20)" >/dev/null 2>&1 &
listener=$!
sleep 1
set -- $(paired "$BENCH_DIR/append1.sql" "$BENCH_DIR/insert1.sql" 4 "$T")
sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'bench_listener'" >/dev/null
wait "$listener" 2>/dev/null
echo "append (1 event, 4 clients, default settings, a session listening on ep_events): ep.append $1 tps, plain INSERT $2 tps, ratio $3 (target >= 0.85)"
# notify=commit: each transaction sends NOTIFY itself, and PostgreSQL
# serializes the commits of notifying transactions (a database-wide lock
# taken in PreCommit_Notify); notify=off: nobody is told
sql "ALTER DATABASE $BENCH_DB SET event_patterns.notify = commit"
set -- $(paired "$BENCH_DIR/append1.sql" "$BENCH_DIR/insert1.sql" 4 "$T")
sql "ALTER DATABASE $BENCH_DB RESET event_patterns.notify"
echo "append (1 event, 4 clients, notify=commit): ep.append $1 tps, plain INSERT $2 tps, ratio $3"
sql "ALTER DATABASE $BENCH_DB SET event_patterns.notify = off"
set -- $(paired "$BENCH_DIR/append1.sql" "$BENCH_DIR/insert1.sql" 4 "$T")
sql "ALTER DATABASE $BENCH_DB RESET event_patterns.notify"
echo "append (1 event, 4 clients, notify=off): ep.append $1 tps, plain INSERT $2 tps, ratio $3 (target >= 0.85)"

set -- $(paired "$BENCH_DIR/append100.sql" "$BENCH_DIR/insert100.sql" 4 "$T")
echo "append_events (100 events, 4 clients): $(awk -v t="$1" 'BEGIN{printf "%.0f", t*100}') events/s, plain INSERT $(awk -v t="$2" 'BEGIN{printf "%.0f", t*100}') rows/s, ratio $3 (target >= 0.80)"

# fill the store to 1M events (append_events batches of 1,000)
have=$(sql "SELECT count(*) FROM ep.events")
$PSQL -c "DO \$\$
DECLARE b jsonb;
BEGIN
  SELECT jsonb_agg(jsonb_build_object('type', 'Filled', 'data', jsonb_build_object('i', i))) INTO b
    FROM generate_series(1, 1000) i;
  FOR k IN 1 .. greatest(0, (1000000 - $have) / 1000) LOOP
    PERFORM ep.append_events('fill-' || k, b);
  END LOOP;
END \$\$"
sql "VACUUM ANALYZE ep.events"
echo "stored events: $(sql 'SELECT count(*) FROM ep.events')"

# read_stream of a 1,000-event stream (fill-500) vs the bare index scan
cat > "$BENCH_DIR/rs.sql" <<'SQL'
\set k random(1, 900)
SELECT * FROM ep.read_stream('fill-' || :k);
SQL
cat > "$BENCH_DIR/rs_base.sql" <<'SQL'
\set k random(1, 900)
SELECT * FROM ep.events WHERE stream_id = 'fill-' || :k ORDER BY stream_version;
SQL
set -- $(paired "$BENCH_DIR/rs.sql" "$BENCH_DIR/rs_base.sql" 1 "$T")
echo "read_stream (1,000 events): ep.read_stream $1 calls/s, bare index scan $2 queries/s, ratio $3"

# read_all paging at 1M events
max=$(sql "SELECT max(global_position) FROM ep.events")
cat > "$BENCH_DIR/ra.sql" <<SQL
\\set p random(1, $max - 2000)
SELECT * FROM ep.read_all(:p, 1000);
SQL
cat > "$BENCH_DIR/ra_base.sql" <<SQL
\\set p random(1, $max - 2000)
SELECT * FROM ep.events WHERE global_position > :p ORDER BY global_position LIMIT 1000;
SQL
set -- $(paired "$BENCH_DIR/ra.sql" "$BENCH_DIR/ra_base.sql" 1 "$T")
echo "read_all (pages of 1,000 at 1M events): ep.read_all $1 pages/s, bare index scan $2 pages/s, ratio $3"
