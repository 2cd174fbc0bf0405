#!/bin/sh
# demo.sh [PG_CONFIG]: build and install the extension, start a throwaway
# cluster with the settings it needs, run test/demo.sql, stop the cluster.
set -e
PG_CONFIG=${1:-pg_config}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

echo "== building and installing event_patterns"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
make -s PG_CONFIG="$PG_CONFIG" test/tmp/test.conf >/dev/null

dir=$(pg_writable_dir "$top/tmp_demo")
rm -rf "$dir/data"
port=$(free_port 55432)
echo "== starting a throwaway cluster in $dir/data on port $port"
cluster_start "$dir/data" "$port" "$top/test/tmp/test.conf"
trap 'cluster_stop "$dir/data"' EXIT
as_pg "$bindir/createdb" -h /tmp -p "$port" -U postgres demo
cp test/demo.sql "$dir/demo.sql"
[ "$(id -u)" = 0 ] && chown postgres "$dir/demo.sql"
echo "== running test/demo.sql"
as_pg "$bindir/psql" -X -h /tmp -p "$port" -U postgres -d demo \
    -v ON_ERROR_STOP=1 -v port="$port" -f "$dir/demo.sql"
echo "== demo finished; stopping the cluster"
