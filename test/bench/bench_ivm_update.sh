#!/bin/sh
# bench_ivm_update.sh: what an immediate incremental view costs its writers
# in CPU (issue 13, "Performance"). fsync = off for the run (commit flushes
# would hide the CPU cost), a 1M-row table in 1,000 groups, immediate view
# SELECT grp, count(*), sum(amount), max(amount) FROM facts GROUP BY grp,
# random one-row UPDATEs:
#   - 4-client throughput with the view vs an identical table without one
#     (target >= 0.6)
#   - one-row UPDATE latency (1 client) with the view vs without
#     (target <= 1.5x)
# Both sides run alternately in short rounds (medians), in this run.
set -e
. "$BENCH_DIR/common.sh"
SECS=${IVM_BENCH_SECS:-5}
ROUNDS=${IVM_BENCH_ROUNDS:-3}
Q='SELECT grp, count(*) AS n, sum(amount) AS total, max(amount) AS hi FROM facts GROUP BY grp'

sql "ALTER SYSTEM SET fsync = off" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
trap 'sql "ALTER SYSTEM RESET fsync" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null' EXIT

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
for t in facts plain; do
    sql "CREATE TABLE $t (id int PRIMARY KEY, grp int NOT NULL, amount numeric NOT NULL)" >/dev/null
    sql "INSERT INTO $t SELECT g, g % 1000, (g::bigint * 7919) % 100000 FROM generate_series(1, 1000000) g" >/dev/null
    sql "CREATE INDEX ${t}_grp_idx ON $t (grp)" >/dev/null
    sql "VACUUM ANALYZE $t" >/dev/null
    cat > "$BENCH_DIR/ivm_upd_$t.sql" <<SQL
\set id random(1, 1000000)
\set v random(0, 99999)
UPDATE $t SET amount = :v WHERE id = :id;
SQL
done
sql "SELECT ep.create_incremental_view('facts_ivm', '$Q')" >/dev/null
# warm up both (plans, caches)
tps "$BENCH_DIR/ivm_upd_plain.sql" 4 2 >/dev/null
tps "$BENCH_DIR/ivm_upd_facts.sql" 4 2 >/dev/null

set -- $(paired "$BENCH_DIR/ivm_upd_facts.sql" "$BENCH_DIR/ivm_upd_plain.sql" 4 "$SECS" "$ROUNDS")
view4=$1; none4=$2; r4=$3
set -- $(paired "$BENCH_DIR/ivm_upd_facts.sql" "$BENCH_DIR/ivm_upd_plain.sql" 1 "$SECS" "$ROUNDS")
view1=$1; none1=$2; r1=$3
lat=$(awk -v r="$r1" 'BEGIN { if (r > 0) printf "%.2f", 1 / r; else print "n/a" }')
diff=$(sql "SELECT (SELECT count(*) FROM (SELECT * FROM facts_ivm EXCEPT ALL $Q) a) + (SELECT count(*) FROM ($Q EXCEPT ALL SELECT * FROM facts_ivm) b)")
sql "SELECT ep.drop_incremental_view('facts_ivm')" >/dev/null

echo "ivm update, fsync=off, 4 clients, immediate view/none: ratio $r4 (tps medians: view $view4, none $none4; target >= 0.6)"
echo "ivm update, fsync=off, one-row latency, immediate view vs none: ${lat}x (1-client tps medians: view $view1, none $none1; target <= 1.5x)"
echo "ivm update view equals its query after the run: $diff differing rows (expected 0)"
