#!/bin/sh
# regress-dev.sh [PG_CONFIG] [suite ...]: run pg_regress suites (default: all
# of REGRESS; with ISO=1 the named isolation specs) against the installed extension, for development. Runs as the
# postgres OS user from a copy of the tree when root.
PG_CONFIG=${1:-pg_config}; shift
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
make -s PG_CONFIG="$PG_CONFIG" test/tmp/test.conf >/dev/null
suites=${*:-$(make -s PG_CONFIG="$PG_CONFIG" print-REGRESS)}
work=$(mktemp -d /tmp/ep-regress.XXXXXX)
tar --exclude=.git --exclude=./tmp_check -cf - . | (cd "$work" && tar xf -)
mkdir -p "$work/tmp_check"; [ "$(id -u)" = 0 ] && chown -R postgres "$work"
cd "$work"
if [ -n "$ISO" ]; then
    # ISO=1: the named isolation specs instead
    as_pg "$pgxsdir/src/test/isolation/pg_isolation_regress" --bindir="$bindir" \
        --inputdir=test/isolation --outputdir=. \
        --temp-instance=tmp_check/isolation --temp-config=test/tmp/test.conf \
        --temp-config=test/regress.conf --port="$(free_port 58000)" $suites
else
    as_pg "$pgxsdir/src/test/regress/pg_regress" --bindir="$bindir" --inputdir=. \
        --temp-instance=tmp_check/regress --temp-config=test/tmp/test.conf \
        --temp-config=test/regress.conf --port="$(free_port 58000)" $suites
fi
rc=$?
rm -rf "$top/tmp_check/dev"; mkdir -p "$top/tmp_check/dev"
cp -r results regression.diffs "$top/tmp_check/dev/" 2>/dev/null
rm -rf "$work"
exit $rc
