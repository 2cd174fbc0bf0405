#!/bin/sh
# bench/run.sh [PG_CONFIG]: build and install, start a throwaway cluster, and
# run every benchmark script test/bench/bench_*.sh against it. Each script
# measures its own baseline in the same run and prints its figures as
# "name: value ... ratio R (target T)". Benchmarks are never part of make test.
# Helpers (common.sh, *.pl) are copied next to the scripts. BENCH=name runs
# only the scripts whose name contains it (make bench BENCH=notify).
set -e
PG_CONFIG=${1:-pg_config}
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
. test/lib.sh

make -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
make -s PG_CONFIG="$PG_CONFIG" test/tmp/test.conf >/dev/null

dir=$(pg_writable_dir "$top/tmp_bench")
rm -rf "$dir/data"
port=$(free_port 56432)
cluster_start "$dir/data" "$port" "$top/test/tmp/test.conf"
trap 'cluster_stop "$dir/data"' EXIT

export BENCH_PORT="$port" BENCH_BINDIR="$bindir" BENCH_DIR="$dir"
only=${BENCH:-}
for b in test/bench/bench_*.sh; do
    name=$(basename "$b" .sh)
    if [ -n "$only" ] && ! echo "$name" | grep -q "$only"; then continue; fi
    echo "== $name"
    as_pg "$bindir/createdb" -h /tmp -p "$port" -U postgres "$name"
    cp "$b" "$dir/$name.sh"; cp test/bench/common.sh test/bench/*.pl "$dir/"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/$name.sh" "$dir/common.sh" "$dir"/*.pl
    as_pg env BENCH_DB="$name" BENCH_PORT="$port" BENCH_BINDIR="$bindir" BENCH_DIR="$dir" \
        sh "$dir/$name.sh"
    as_pg "$bindir/dropdb" -h /tmp -p "$port" -U postgres "$name"
done
