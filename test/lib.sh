# lib.sh: shell helpers shared by the demo, the test runner and the benchmarks.
# Sourced, not run. Expects PG_CONFIG to be set.
#
# PostgreSQL refuses to run as root. When these scripts run as root they
# hand the server-side work to the unprivileged "postgres" OS user, in a
# directory that user can write.

bindir=$($PG_CONFIG --bindir)
pgxsdir=$(dirname "$($PG_CONFIG --pgxs)")/../..

# as_pg CMD...: run CMD as the postgres OS user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# free_port: print a TCP port nobody listens on.
free_port() {
    local p
    p=${1:-55432}
    while as_pg "$bindir/pg_isready" -q -h /tmp -p "$p" >/dev/null 2>&1 ||
          [ -e "/tmp/.s.PGSQL.$p" ] || [ -e "/tmp/.s.PGSQL.$p.lock" ]; do
        p=$((p + 1))
    done
    echo "$p"
}

# pg_writable_dir PREFERRED: print PREFERRED if the postgres user can work
# there, else a fresh directory under /tmp.
pg_writable_dir() {
    local d
    d=$1
    mkdir -p "$d"
    [ "$(id -u)" = 0 ] && chown postgres "$d"
    if as_pg test -w "$d" -a -x "$d" 2>/dev/null; then
        echo "$d"
    else
        rmdir "$d" 2>/dev/null || true
        d=$(mktemp -d /tmp/event_patterns.XXXXXX)
        [ "$(id -u)" = 0 ] && chown postgres "$d"
        echo "$d"
    fi
}

# cluster_start DIR PORT CONF: initdb DIR (if new) with CONF, start on PORT,
# sockets in /tmp.
cluster_start() {
    local cdir cport cconf
    cdir=$1; cport=$2; cconf=$3
    if [ ! -f "$cdir/PG_VERSION" ]; then
        as_pg "$bindir/initdb" -D "$cdir" -A trust -U postgres --no-sync >/dev/null
        cp "$cconf" "$cdir/event_patterns.conf"
        [ "$(id -u)" = 0 ] && chown postgres "$cdir/event_patterns.conf"
        echo "include 'event_patterns.conf'" >> "$cdir/postgresql.conf"
    fi
    as_pg "$bindir/pg_ctl" -D "$cdir" -l "$cdir/server.log" -w -t 60 \
        -o "-p $cport -k /tmp -c listen_addresses=''" start >/dev/null
}

cluster_stop() {
    as_pg "$bindir/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
}
