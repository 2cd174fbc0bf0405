#!/bin/sh
# tap-one.sh TEST.pl [PG_CONFIG]: run one TAP test against the installed
# extension (as the postgres OS user when root), for development.
set -e
t=$1; PG_CONFIG=${2:-pg_config}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh
make -s PG_CONFIG="$PG_CONFIG" test/tmp/test.conf >/dev/null
work=$(mktemp -d /tmp/ep-tap.XXXXXX)
cp -r test "$work/"
mkdir -p "$work/tmp"
chown -R postgres "$work"
cd "$work"
as_pg env TESTDIR="$work/tmp" PATH="$bindir:$PATH" \
    PG_REGRESS="$pgxsdir/src/test/regress/pg_regress" \
    EP_TEST_CONF="$work/test/tmp/test.conf" \
    prove -I "$pgxsdir/src/test/perl" -I test/tap "$work/$t" || {
      grep -h -B2 -A8 "error running\|^not ok\|ERROR" "$work"/tmp/tmp_check/log/* | head -80; exit 1; }
rm -rf "$work"
