#!/bin/sh
# gen-conf.sh PG_CONFIG IN OUT
# Writes the test/demo server configuration: IN, plus output_plugin_libraries
# when the server supports that setting. On 15.18 and older the setting does
# not exist and naming it in a configuration file stops the server, so it is
# added only after asking the server binary itself.
set -e
pg_config=${1:-pg_config}
in=$2
out=$3
bindir=$($pg_config --bindir)
mkdir -p "$(dirname "$out")"
cp "$in" "$out.tmp"
if "$bindir/postgres" --describe-config 2>/dev/null | grep -q '^output_plugin_libraries'; then
    echo "output_plugin_libraries = 'pgoutput, test_decoding, event_patterns'" >> "$out.tmp"
fi
mv "$out.tmp" "$out"
