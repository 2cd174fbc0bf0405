#!/bin/sh
# bench_ivm.sh: cost of keeping an incremental view fresh, on a 1M-row table
# grouped into 1,000 groups, view SELECT grp, count(*), sum(amount),
# max(amount) FROM facts GROUP BY grp. All figures come from this run, on
# warm pgbench connections:
#   - one-row UPDATE latency with an immediate view vs no view (target <= 3x)
#     and vs REFRESH MATERIALIZED VIEW of the same query (target >= 300x)
#   - random one-row UPDATE throughput from 4 clients, immediate vs no view
#     (target >= 0.5) and deferred vs no view (target >= 0.85)
set -e
. "$BENCH_DIR/common.sh"
SECS=${IVM_BENCH_SECS:-10}
Q='SELECT grp, count(*) AS n, sum(amount) AS total, max(amount) AS hi FROM facts GROUP BY grp'

sql "CREATE EXTENSION IF NOT EXISTS event_patterns" >/dev/null
sql "CREATE TABLE facts (id int PRIMARY KEY, grp int NOT NULL, amount numeric NOT NULL)" >/dev/null
sql "INSERT INTO facts SELECT g, g % 1000, (g::bigint * 7919) % 100000 FROM generate_series(1, 1000000) g" >/dev/null
sql "CREATE INDEX facts_grp_idx ON facts (grp)" >/dev/null
sql "VACUUM ANALYZE facts" >/dev/null

upd="$BENCH_DIR/ivm_update.sql"
cat > "$upd" <<'SQL'
\set id random(1, 1000000)
\set v random(0, 99999)
UPDATE facts SET amount = :v WHERE id = :id;
SQL
refresh="$BENCH_DIR/ivm_refresh.sql"
echo "REFRESH MATERIALIZED VIEW facts_mv;" > "$refresh"

measure() { # clients -> tps (after a short warm-up)
    tps "$upd" "$1" 2 >/dev/null
    tps "$upd" "$1" "$SECS"
}

# Each view's figures are compared with a no-view baseline measured right
# before it on the same (vacuumed) table, so table bloat from earlier phases
# does not favour either side.
fresh() { sql "VACUUM facts" >/dev/null; }

# single client: no view, REFRESH MATERIALIZED VIEW, immediate view
fresh
none1=$(measure 1)
sql "CREATE MATERIALIZED VIEW facts_mv AS $Q" >/dev/null
tps "$refresh" 1 2 >/dev/null
mv=$(tps "$refresh" 1 "$SECS")
sql "DROP MATERIALIZED VIEW facts_mv" >/dev/null
fresh
sql "SELECT ep.create_incremental_view('facts_ivm', '$Q', 'immediate')" >/dev/null
imm1=$(measure 1)
sql "SELECT ep.drop_incremental_view('facts_ivm')" >/dev/null

# four clients: no view, immediate view
fresh
none4=$(measure 4)
fresh
sql "SELECT ep.create_incremental_view('facts_ivm', '$Q', 'immediate')" >/dev/null
imm4=$(measure 4)
diff=$(sql "SELECT (SELECT count(*) FROM (SELECT * FROM facts_ivm EXCEPT ALL $Q) a) + (SELECT count(*) FROM ($Q EXCEPT ALL SELECT * FROM facts_ivm) b)")
sql "SELECT ep.drop_incremental_view('facts_ivm')" >/dev/null

# four clients: no view, deferred view
fresh
none4b=$(measure 4)
fresh
sql "SELECT ep.create_incremental_view('facts_dv', '$Q', 'deferred')" >/dev/null
def4=$(measure 4)
pending=$(sql "SELECT pending_changes FROM ep.incremental_views WHERE name = 'facts_dv'")
sql "SELECT ep.refresh_view('facts_dv')" >/dev/null
ms=$(sql "SELECT round(last_refresh_ms::numeric, 1) FROM ep.incremental_views WHERE name = 'facts_dv'")
ddiff=$(sql "SELECT (SELECT count(*) FROM (SELECT * FROM facts_dv EXCEPT ALL $Q) a) + (SELECT count(*) FROM ($Q EXCEPT ALL SELECT * FROM facts_dv) b)")
sql "SELECT ep.drop_incremental_view('facts_dv')" >/dev/null

echo "ivm update latency, immediate view vs none: $(ratio "$none1" "$imm1")x (none ${none1} tps, immediate ${imm1} tps; target <= 3x)"
echo "ivm update vs REFRESH MATERIALIZED VIEW: $(ratio "$imm1" "$mv")x faster (refresh ${mv}/s; target >= 300x)"
echo "ivm 4-client update throughput, immediate/none: ratio $(ratio "$imm4" "$none4") (immediate ${imm4} tps, none ${none4} tps; target 0.5)"
echo "ivm 4-client update throughput, deferred/none: ratio $(ratio "$def4" "$none4b") (deferred ${def4} tps, none ${none4b} tps; target 0.85)"
echo "ivm deferred refresh of ${pending} pending changes: ${ms} ms"
echo "ivm views equal their query after the run: immediate ${diff} and deferred ${ddiff} differing rows (expected 0)"
