#!/bin/sh
# install-deps.sh: install the Debian packages the build, the tests, the demo
# and the benchmarks need (libdbd-pg-perl: test/bench/notify_latency.pl).
# Idempotent: does nothing when everything is present.
set -e
PKGS="postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl libipc-run-perl libdbd-pg-perl acl make gcc"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# the server's socket directory as Debian's packages make it: tests put a
# socket there (a directory nobody but the server's user may write to)
if [ ! -d /run/postgresql ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
    install -d -m 2775 -o postgres -g postgres /run/postgresql
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $missing >/dev/null
if [ ! -d /run/postgresql ]; then
    install -d -m 2775 -o postgres -g postgres /run/postgresql
fi
