#!/bin/sh
# run-all.sh [PG_CONFIG]: build and install the extension, then run every
# test suite (pg_regress, isolation, pgTAP, TAP) and print "N passed, M failed".
# Exits non-zero when anything fails.
#
# As root, the suites run as the postgres OS user from a private copy of the
# tree under /tmp (the server refuses to run as root, and the checkout may sit
# in a directory that user cannot read).
set -e
PG_CONFIG=${1:-pg_config}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

echo "== building and installing event_patterns"
make -s PG_CONFIG="$PG_CONFIG" 2>&1 | tee /tmp/event_patterns-build.log
if grep -q 'warning:' /tmp/event_patterns-build.log; then
    echo "build printed warnings (warnings are defects)"
    exit 1
fi
make -s PG_CONFIG="$PG_CONFIG" install >/dev/null

if [ "$(id -u)" = 0 ]; then
    work=$(mktemp -d /tmp/event_patterns-test.XXXXXX)
    tar --exclude=.git --exclude=./tmp_check --exclude=./tmp_demo -cf - . | (cd "$work" && tar xf -)
    chown -R postgres "$work"
    set +e
    runuser -u postgres -- sh "$work/test/run-suites.sh" "$PG_CONFIG"
    rc=$?
    set -e
    # keep the outputs next to the checkout for inspection
    rm -rf "$top/tmp_check"; mkdir -p "$top/tmp_check"
    for f in regression.diffs output_iso tmp_check/log tmp_check/tap results; do
        [ -e "$work/$f" ] && cp -r "$work/$f" "$top/tmp_check/" 2>/dev/null
    done
    rm -rf "$work"
    exit $rc
else
    exec sh test/run-suites.sh "$PG_CONFIG"
fi
