# common.sh: helpers for benchmark scripts (sourced; runs as the postgres user).
# Environment: BENCH_DB, BENCH_PORT, BENCH_BINDIR, BENCH_DIR.
PSQL="$BENCH_BINDIR/psql -X -q -h /tmp -p $BENCH_PORT -U postgres -d $BENCH_DB -v ON_ERROR_STOP=1"
PGBENCH="$BENCH_BINDIR/pgbench -h /tmp -p $BENCH_PORT -U postgres $BENCH_DB"

# sql "..." : run SQL, print unaligned tuples only
sql() { $PSQL -At -c "$1"; }

# tps FILE CLIENTS SECONDS : run a pgbench custom script, print its tps
tps() {
    $PGBENCH -n -f "$1" -c "$2" -j "$2" -T "$3" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

# ratio A B : A / B with two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# paired FILE_EP FILE_BASE CLIENTS SECONDS [ROUNDS]: run the two pgbench
# scripts alternately ROUNDS times (default 3) and print
# "<median ep tps> <median base tps> <median of the per-round ratios>".
# Alternating and taking medians keeps the ratio stable on a noisy machine.
paired() {
    rounds=${5:-3}
    i=0; eps=""; bases=""; ratios=""
    while [ $i -lt "$rounds" ]; do
        b=$(tps "$2" "$3" "$4"); e=$(tps "$1" "$3" "$4")
        eps="$eps $e"; bases="$bases $b"; ratios="$ratios $(ratio "$e" "$b")"
        i=$((i + 1))
    done
    echo "$(median $eps) $(median $bases) $(median $ratios)"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
