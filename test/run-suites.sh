#!/bin/sh
# run-suites.sh [PG_CONFIG]: run every suite against the installed extension.
# Must not run as root. Prints a summary line "N passed, M failed".
set -u
PG_CONFIG=${1:-pg_config}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. test/lib.sh

passed=0
failed=0
failures=""

note_result() { # name rc
    if [ "$2" = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures="$failures $1"
    fi
}

count_pg_regress() { # logfile prefix
    ok=$(grep -E '^(test |     |ok |not ok )' "$1" | grep -cE '\.\.\. ok|^ok ')
    bad=$(grep -E '\.\.\. FAILED|^not ok |\.\.\. failed' "$1" | sed 's/^/    /')
    nbad=$(grep -cE '\.\.\. FAILED|^not ok |\.\.\. failed' "$1")
    passed=$((passed + ok)); failed=$((failed + nbad))
    [ "$nbad" -gt 0 ] && failures="$failures $2"
    return 0
}

make -s PG_CONFIG="$PG_CONFIG" test/tmp/test.conf >/dev/null
mkdir -p tmp_check

printf '\n== pg_regress (sql/)\n'
regress=$(make -s PG_CONFIG="$PG_CONFIG" print-REGRESS)
rm -f regression.diffs
"$pgxsdir/src/test/regress/pg_regress" --bindir="$bindir" --inputdir=. \
    --temp-instance=tmp_check/regress --temp-config=test/tmp/test.conf \
    --port="$(free_port 57000)" $regress > tmp_check/regress.log 2>&1
rc=$?
cat tmp_check/regress.log
count_pg_regress tmp_check/regress.log regress
if [ $rc != 0 ]; then
    [ -f regression.diffs ] && cat regression.diffs
    grep -qE '\.\.\. FAILED|^not ok ' tmp_check/regress.log || note_result regress-harness 1
fi

printf '\n== isolation (test/isolation/specs/)\n'
isolation=$(make -s PG_CONFIG="$PG_CONFIG" print-ISOLATION)
rm -rf output_iso
"$pgxsdir/src/test/isolation/pg_isolation_regress" --bindir="$bindir" \
    --inputdir=test/isolation --outputdir=output_iso \
    --temp-instance=tmp_check/isolation --temp-config=test/tmp/test.conf \
    --port="$(free_port 57100)" $isolation > tmp_check/isolation.log 2>&1
rc=$?
cat tmp_check/isolation.log
count_pg_regress tmp_check/isolation.log isolation
if [ $rc != 0 ]; then
    [ -f output_iso/regression.diffs ] && cat output_iso/regression.diffs
    grep -qE '\.\.\. FAILED|^not ok ' tmp_check/isolation.log || note_result isolation-harness 1
fi

printf '\n== pgTAP (test/pgtap/)\n'
rm -rf tmp_check/pgtap
port=$(free_port 57200)
if cluster_start "$top/tmp_check/pgtap" "$port" test/tmp/test.conf; then
    "$bindir/psql" -X -q -h /tmp -p "$port" -U postgres -d postgres \
        -c 'CREATE DATABASE pgtap_test' >/dev/null
    "$bindir/psql" -X -q -h /tmp -p "$port" -U postgres -d pgtap_test \
        -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION event_patterns' >/dev/null
    for f in test/pgtap/*.sql; do
        pg_prove -h /tmp -p "$port" -U postgres -d pgtap_test "$f"
        note_result "$f" $?
    done
    cluster_stop "$top/tmp_check/pgtap"
else
    cat "$top/tmp_check/pgtap/server.log"
    note_result pgtap-cluster 1
fi

printf '\n== TAP (test/tap/t/)\n'
rm -rf tmp_check/tap; mkdir -p tmp_check/tap
for f in test/tap/t/*.pl; do
    TESTDIR="$top/tmp_check/tap" PATH="$bindir:$PATH" \
    PG_REGRESS="$pgxsdir/src/test/regress/pg_regress" \
    EP_TEST_CONF="$top/test/tmp/test.conf" \
        prove -I "$pgxsdir/src/test/perl" -I test/tap "$f"
    rc=$?
    note_result "$f" $rc
    if [ $rc != 0 ]; then
        for l in tmp_check/tap/tmp_check/log/*.log; do
            [ -f "$l" ] && { echo "---- $l (tail)"; tail -n 40 "$l"; }
        done
    fi
done

echo
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
