#!/bin/sh
# bench_bgw.sh: what the worker runtime costs the append path. Every commit
# that appends wakes the database's worker (a spinlock and a SetLatch), and
# the worker then runs a round and sends NOTIFY ep_events (notify = worker,
# the default). Baseline: the same appends with the workers switched off
# (event_patterns.enabled = off) and no notification, measured in the same run,
# alternating to even out noise; the best of three runs each is kept.
. "$BENCH_DIR/common.sh"

sql "CREATE EXTENSION IF NOT EXISTS event_patterns"
cat > "$BENCH_DIR/bgw_append.sql" <<'SQL'
\set s random(1, 1000)
SELECT ep.append('acct-' || :s, 'Deposited', '{"amount": 1}');
SQL

workers() { sql "SELECT count(*) FROM ep.workers WHERE pid IS NOT NULL"; }
set_enabled() { # on|off, then wait until the worker is there or gone
    sql "ALTER SYSTEM SET event_patterns.enabled = $1" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    want=$([ "$1" = on ] && echo 1 || echo 0)
    i=0
    while [ "$(workers)" != "$want" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }

# CPU time (clock ticks) of a process, from /proc
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

off=0; on=0; wticks=0; wsecs=0
for round in 1 2 3; do
    # baseline: no worker and no notification at all (with the workers off
    # the default notify = worker would make each transaction notify itself)
    set_enabled off
    sql "ALTER DATABASE $BENCH_DB SET event_patterns.notify = off" >/dev/null
    off=$(best "$off" "$(tps "$BENCH_DIR/bgw_append.sql" 2 5)")
    sql "ALTER DATABASE $BENCH_DB RESET event_patterns.notify" >/dev/null
    # default settings: the worker is woken by every commit and sends the
    # coalesced notifications
    set_enabled on
    wpid=$(sql "SELECT pid FROM ep.workers")
    t0=$(ticks "$wpid")
    on=$(best "$on" "$(tps "$BENCH_DIR/bgw_append.sql" 2 5)")
    wticks=$((wticks + $(ticks "$wpid") - t0)); wsecs=$((wsecs + 5))
done
hz=$(getconf CLK_TCK)
cpu=$(awk -v t="$wticks" -v hz="$hz" -v s="$wsecs" 'BEGIN { printf "%.1f", 100 * t / hz / s }')
sql "ALTER SYSTEM RESET event_patterns.enabled" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
echo "bgw_append_wake: with worker $on tps, workers off $off tps, ratio $(ratio "$on" "$off") (target >= 0.95)"
echo "bgw_worker_cpu: the woken worker used $cpu% of one CPU while appending (ratio $(awk -v c="$cpu" 'BEGIN { printf "%.3f", c / 100 }') of a core; target <= 0.05)"
