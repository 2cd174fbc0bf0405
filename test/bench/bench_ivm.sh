#!/bin/sh
# bench_ivm.sh: cost of keeping an incremental view fresh, on a 1M-row table
# grouped into 1,000 groups, view SELECT grp, count(*), sum(amount),
# max(amount) FROM facts GROUP BY grp. All figures come from this run, on
# warm pgbench connections:
#   - one-row UPDATE latency with an immediate view vs no view (target <= 3x)
#     and vs REFRESH MATERIALIZED VIEW of the same query (target >= 300x);
#     and vs the floor: the UPDATE plus a hand-written one-row update of a
#     summary table, the least any maintenance must write
#   - random one-row UPDATE throughput from 4 clients, immediate vs no view
#     (target >= 0.5) and deferred vs no view (target >= 0.85)
# The baseline runs on an identical table without a view ("plain"); the
# measurements alternate in short rounds so that load from other processes
# on the machine affects both sides alike. Totals over the rounds are
# compared.
set -e
. "$BENCH_DIR/common.sh"
SECS=${IVM_BENCH_SECS:-4}
ROUNDS=${IVM_BENCH_ROUNDS:-3}
Q='SELECT grp, count(*) AS n, sum(amount) AS total, max(amount) AS hi FROM facts GROUP BY grp'

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
for t in facts plain; do
    sql "CREATE TABLE $t (id int PRIMARY KEY, grp int NOT NULL, amount numeric NOT NULL)" >/dev/null
    sql "INSERT INTO $t SELECT g, g % 1000, (g::bigint * 7919) % 100000 FROM generate_series(1, 1000000) g" >/dev/null
    sql "CREATE INDEX ${t}_grp_idx ON $t (grp)" >/dev/null
    sql "VACUUM ANALYZE $t" >/dev/null
    cat > "$BENCH_DIR/ivm_update_$t.sql" <<SQL
\set id random(1, 1000000)
\set v random(0, 99999)
UPDATE $t SET amount = :v WHERE id = :id;
SQL
done
# the floor: the same UPDATE plus a one-row update of a 1,000-row summary
# table by primary key, in one statement, with no view: the least any
# maintenance of the view must write
sql "CREATE TABLE summary (grp int PRIMARY KEY, n bigint NOT NULL)" >/dev/null
sql "INSERT INTO summary SELECT g, 0 FROM generate_series(0, 999) g" >/dev/null
sql "VACUUM ANALYZE summary" >/dev/null
cat > "$BENCH_DIR/ivm_update_floor.sql" <<SQL
\set id random(1, 1000000)
\set v random(0, 99999)
WITH u AS (UPDATE plain SET amount = :v WHERE id = :id RETURNING grp)
UPDATE summary SET n = n + 1 FROM u WHERE summary.grp = u.grp;
SQL
refresh="$BENCH_DIR/ivm_refresh.sql"
echo "REFRESH MATERIALIZED VIEW facts_mv;" > "$refresh"
sql "CREATE MATERIALIZED VIEW facts_mv AS $Q" >/dev/null

add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a + b }'; }

# rounds CLIENTS WITH_REFRESH: sets none_t, view_t, mv_t, floor_t (sums of tps)
rounds() {
    none_t=0; view_t=0; mv_t=0; floor_t=0
    tps "$BENCH_DIR/ivm_update_plain.sql" "$1" 1 >/dev/null
    tps "$BENCH_DIR/ivm_update_facts.sql" "$1" 1 >/dev/null
    r=0
    while [ $r -lt "$ROUNDS" ]; do
        none_t=$(add "$none_t" "$(tps "$BENCH_DIR/ivm_update_plain.sql" "$1" "$SECS")")
        view_t=$(add "$view_t" "$(tps "$BENCH_DIR/ivm_update_facts.sql" "$1" "$SECS")")
        if [ "$2" = 1 ]; then
            mv_t=$(add "$mv_t" "$(tps "$refresh" 1 "$SECS")")
            floor_t=$(add "$floor_t" "$(tps "$BENCH_DIR/ivm_update_floor.sql" "$1" "$SECS")")
        fi
        r=$((r + 1))
    done
}
check() { # view -> differing rows between the view and its query
    sql "SELECT (SELECT count(*) FROM (SELECT * FROM $1 EXCEPT ALL $Q) a) + (SELECT count(*) FROM ($Q EXCEPT ALL SELECT * FROM $1) b)"
}

sql "SELECT ep.create_incremental_view('facts_ivm', '$Q', 'immediate')" >/dev/null
rounds 1 1
none1=$none_t; imm1=$view_t; mv=$mv_t; floor1=$floor_t
rounds 4 0
none4=$none_t; imm4=$view_t
# the same single-client comparison without waiting for the WAL flush at
# commit: what maintenance costs in CPU, not hidden behind the disk
export PGOPTIONS='-c synchronous_commit=off'
rounds 1 1
nonea=$none_t; imma=$view_t; mva=$mv_t; floora=$floor_t
unset PGOPTIONS
diff=$(check facts_ivm)
sql "SELECT ep.drop_incremental_view('facts_ivm')" >/dev/null

sql "SELECT ep.create_incremental_view('facts_dv', '$Q', 'deferred')" >/dev/null
rounds 4 0
none4b=$none_t; def4=$view_t
pending=$(sql "SELECT pending_changes FROM ep.incremental_views WHERE name = 'facts_dv'")
sql "SELECT ep.refresh_view('facts_dv')" >/dev/null
ms=$(sql "SELECT round(last_refresh_ms::numeric, 1) FROM ep.incremental_views WHERE name = 'facts_dv'")
ddiff=$(check facts_dv)
sql "SELECT ep.drop_incremental_view('facts_dv')" >/dev/null

echo "ivm update latency, immediate view vs none: $(ratio "$none1" "$imm1")x (tps summed over $ROUNDS rounds: none ${none1}, immediate ${imm1}; target <= 3x)"
echo "ivm update vs REFRESH MATERIALIZED VIEW: $(ratio "$imm1" "$mv")x faster (refreshes/s summed: ${mv}; target >= 300x)"
echo "ivm update latency, immediate view vs the floor (UPDATE + one-row summary update, no view): $(ratio "$floor1" "$imm1")x (floor ${floor1}; REFRESH MATERIALIZED VIEW is $(ratio "$floor1" "$mv")x slower than the floor)"
echo "ivm update latency, immediate view vs none, synchronous_commit=off: $(ratio "$nonea" "$imma")x (none ${nonea}, immediate ${imma})"
echo "ivm update latency, immediate view vs the floor, synchronous_commit=off: $(ratio "$floora" "$imma")x (floor ${floora}; REFRESH is $(ratio "$floora" "$mva")x slower than the floor)"
echo "ivm update vs REFRESH MATERIALIZED VIEW, synchronous_commit=off: $(ratio "$imma" "$mva")x faster (refreshes/s summed: ${mva})"
echo "ivm 4-client update throughput, immediate/none: ratio $(ratio "$imm4" "$none4") (immediate ${imm4}, none ${none4}; target 0.5)"
echo "ivm 4-client update throughput, deferred/none: ratio $(ratio "$def4" "$none4b") (deferred ${def4}, none ${none4b}; target 0.85)"
echo "ivm deferred refresh of ${pending} pending changes: ${ms} ms"
echo "ivm views equal their query after the run: immediate ${diff} and deferred ${ddiff} differing rows (expected 0)"
