#!/bin/sh
# bench_notify: listener wake-up latency of LISTEN ep_events, the time from
# an appending commit returning to the appender to the listener receiving
# the notification (test/bench/notify_latency.pl, DBD::Pg), for
#   - notify = commit: the appending transaction sends NOTIFY itself (the
#     baseline: PostgreSQL delivers it as part of the commit), and
#   - notify = worker (the default): the commit wakes the database's worker,
#     which sends one coalesced NOTIFY right after;
# first with the database otherwise idle, then while 4 other clients append
# single events as fast as they can. Prints p50/p99 for both and the
# difference (target: worker within a few milliseconds of commit).
. "$BENCH_DIR/common.sh"
N=${BENCH_NOTIFY_SAMPLES:-300}
T=${BENCH_SECONDS:-5}
export PGHOST=/tmp PGPORT="$BENCH_PORT" PGUSER=postgres PGDATABASE="$BENCH_DB"

sql "CREATE EXTENSION event_patterns"
i=0
while [ "$(sql "SELECT count(*) FROM ep.workers WHERE state <> 'starting'")" = 0 ] && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i + 1))
done

lat() { perl "$BENCH_DIR/notify_latency.pl" "$1" "$N"; }

# measure MODE LABEL: alternate the two modes (commit first), print both
measure() {
    set -- $(lat commit) $(lat worker)
    echo "$1 $2 $3 $4 $5 $6 $7 $8"
}

report() { # label c50 c99 cmax cto w50 w99 wmax wto
    echo "notify wake-up latency, $1: commit p50 $2 ms, p99 $3 ms (max $4, missed $5); worker p50 $6 ms, p99 $7 ms (max $8, missed $9); worker - commit: p50 $(awk -v a="$6" -v b="$2" 'BEGIN{printf "%+.2f", a - b}') ms, p99 $(awk -v a="$7" -v b="$3" 'BEGIN{printf "%+.2f", a - b}') ms (target: within a few ms, none missed)"
}

lat commit >/dev/null   # warm-up
report "idle database, $N appends each" $(measure)

# under load: 4 clients append single events (default settings) meanwhile
cat > "$BENCH_DIR/notify_load.sql" <<'SQL'
\set s random(1, 100000)
SELECT ep.append('load-' || :s, 'Deposited', '{"amount": 10}');
SQL
load_secs=$(( T * 6 + 30 ))
$PGBENCH -n -f "$BENCH_DIR/notify_load.sql" -c 4 -j 2 -T "$load_secs" >/dev/null 2>&1 &
load=$!
sleep 1
report "4 clients appending meanwhile, $N appends each" $(measure)
kill "$load" 2>/dev/null; wait "$load" 2>/dev/null || true
