#!/bin/sh
# bench_upcast.sh: reading events that need upcasting. ep.read_all pages of
# 1,000 events of schema version 1 lifted to version 2 by a registered
# upcaster (run as the upcaster function's owner, with its recorded
# search_path and time limit: the trust boundary) against the same page
# read by a plain query that calls the same function on each row. Target:
# ratio >= 0.8 (the owner switch must cost little next to the upcaster).
set -e
. "$BENCH_DIR/common.sh"

sql "CREATE EXTENSION IF NOT EXISTS event_patterns"
$PSQL <<'SQL'
CREATE FUNCTION paid_v1_to_v2(d jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN d || jsonb_build_object('currency', 'EUR');
END $$;
SELECT ep.register_upcaster('Paid', 1, 'paid_v1_to_v2(jsonb)');
SELECT count(*) FROM (SELECT ep.append_events('order-' || (i / 10), jsonb_build_array(jsonb_build_object(
           'type', 'Paid', 'data', jsonb_build_object('amount', i), 'schema_version', 1)))
  FROM generate_series(1, 20000) i) s;
SQL
lo=$(sql "SELECT min(global_position) FROM ep.events")
cat > "$BENCH_DIR/upcast_ep.sql" <<EOF2
\set p random($lo, $lo + 18999)
SELECT sum(length(data::text)) FROM ep.read_all(:p, 1000);
EOF2
cat > "$BENCH_DIR/upcast_base.sql" <<EOF2
\set p random($lo, $lo + 18999)
SELECT sum(length(paid_v1_to_v2(data)::text)) FROM
    (SELECT data FROM ep.events WHERE global_position > :p ORDER BY global_position LIMIT 1000) s;
EOF2
# both return the same data
same=$(sql "SELECT (SELECT array_agg(data ORDER BY global_position) FROM ep.read_all($lo, 1000))
            = (SELECT array_agg(paid_v1_to_v2(data) ORDER BY global_position) FROM
                (SELECT * FROM ep.events WHERE global_position > $lo ORDER BY global_position LIMIT 1000) s)")
[ "$same" = t ] || { echo "upcast: results differ"; exit 1; }
set -- $(paired "$BENCH_DIR/upcast_ep.sql" "$BENCH_DIR/upcast_base.sql" 1 5)
echo "read_all with an upcaster (pages of 1,000, 1 client): $1 vs plain query calling it $2 pages/s, ratio $3 (target 0.80)"
