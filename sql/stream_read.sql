-- Reading: by stream, in global order, by category; stream lifecycle.
\pset null '(null)'
DROP EXTENSION IF EXISTS event_patterns;
CREATE EXTENSION event_patterns;

SELECT ep.append_events('cart-1', '[{"type": "Added", "data": {"sku": "a"}},
                                    {"type": "Added", "data": {"sku": "b"}},
                                    {"type": "Removed", "data": {"sku": "a"}},
                                    {"type": "CheckedOut"}]');
SELECT ep.append('user-1', 'Registered', '{}');
SELECT ep.append('cart-2', 'Added', '{"sku": "c"}');
SELECT ep.append('cart-1', 'Paid', '{}');
SELECT ep.append('cart-' || i, 'Added', '{}') FROM generate_series(3, 6) i;

-- read_stream forwards, from a version, limited, backwards
SELECT stream_version, event_type FROM ep.read_stream('cart-1');
SELECT stream_version, event_type FROM ep.read_stream('cart-1', 3);
SELECT stream_version, event_type FROM ep.read_stream('cart-1', 2, 2);
SELECT stream_version, event_type FROM ep.read_stream('cart-1', NULL, 2, true);
SELECT stream_version, event_type FROM ep.read_stream('cart-1', 3, NULL, true);
SELECT count(*) FROM ep.read_stream('no-such-stream');
SELECT count(*) FROM ep.read_stream('cart-1', NULL, 0);
SELECT ep.read_stream('cart-1', NULL, -1);
SELECT ep.read_stream(NULL);

-- read_all: ascending positions after a position, page size, type filter
SELECT global_position, stream_id, stream_version FROM ep.read_all();
SELECT global_position, stream_id FROM ep.read_all(3, 2);
SELECT global_position, event_type FROM ep.read_all(0, 100, ARRAY['Paid', 'Registered']);
SELECT count(*) FROM ep.read_all(0, 100, ARRAY[]::text[]);
SELECT count(*) FROM ep.read_all(0, NULL);
SELECT ep.read_all(0, -1);
-- paging: resuming from the last position seen returns each event once
WITH RECURSIVE pages(last, n) AS (
    SELECT 0::bigint, 0
    UNION ALL
    SELECT (SELECT max(global_position) FROM ep.read_all(p.last, 2)), n + 1
      FROM pages p WHERE EXISTS (SELECT 1 FROM ep.read_all(p.last, 2))
)
SELECT max(n) AS pages, max(last) AS last_position FROM pages;

-- read_category and consumer groups
SELECT global_position, stream_id FROM ep.read_category('cart');
SELECT global_position, stream_id FROM ep.read_category('cart', 2, 3);
SELECT count(*) FROM ep.read_category('nothing');
SELECT stream_id, ep.consumer_member(stream_id, 2) AS member
  FROM ep.streams WHERE category = 'cart' ORDER BY 1;
-- the members of a group partition the category
SELECT (SELECT count(*) FROM ep.read_category('cart', 0, 100, 0, 2))
     + (SELECT count(*) FROM ep.read_category('cart', 0, 100, 1, 2)) AS both_members,
       (SELECT count(*) FROM ep.read_category('cart')) AS whole;
SELECT bool_and(ep.consumer_member(stream_id, 2) = 1), count(*) FROM ep.read_category('cart', 0, 100, 1, 2);
SELECT bool_and(ep.consumer_member(stream_id, 2) = 0), count(*) FROM ep.read_category('cart', 0, 100, 0, 2);
SELECT ep.read_category('cart', 0, 100, 2, 2);
SELECT ep.read_category('cart', 0, 100, 0, NULL);
SELECT ep.read_category('cart', 0, 100, 0, 0);
SELECT ep.read_category(NULL);

-- stream metadata: limits hide events from every read at once
SELECT ep.append_events('log-1', '[{"type": "L"}, {"type": "L"}, {"type": "L"}, {"type": "L"}, {"type": "L"}]');
SELECT ep.set_stream_metadata('log-1', max_count => 2);
SELECT stream_version FROM ep.read_stream('log-1');
SELECT stream_version FROM ep.read_stream('log-1', NULL, NULL, true);
SELECT stream_version FROM ep.read_all(0, 1000) WHERE stream_id = 'log-1';
SELECT stream_version FROM ep.read_category('log');
SELECT ep.set_stream_metadata('log-1', truncate_before => 4);
SELECT stream_version FROM ep.read_stream('log-1');
SELECT ep.set_stream_metadata('log-1', max_age => '1 hour');
SELECT stream_version FROM ep.read_stream('log-1');
-- events recorded by an earlier transaction are older than a microsecond
SELECT ep.set_stream_metadata('log-1', max_age => '1 microsecond');
SELECT count(*) FROM ep.read_stream('log-1');
SELECT count(*) FROM ep.read_all() WHERE stream_id = 'log-1';
SELECT ep.set_stream_metadata('log-1');  -- clears every limit
SELECT count(*) FROM ep.read_stream('log-1');
SELECT ep.set_stream_metadata('log-1', max_count => -1);
SELECT ep.set_stream_metadata('log-1', max_age => '-1 hour');
SELECT ep.set_stream_metadata('log-1', truncate_before => -3);
SELECT ep.set_stream_metadata(NULL, max_count => 1);
-- limits can be set before the first append
SELECT ep.set_stream_metadata('log-2', max_count => 1);
SELECT ep.stream_version('log-2');
SELECT ep.append('log-2', 'L', '{}', NULL, 0);
SELECT ep.append('log-2', 'L', '{}');
SELECT stream_version FROM ep.read_stream('log-2');

-- soft delete: reads return nothing, a later append continues the numbering
SELECT ep.delete_stream('cart-2');
SELECT count(*) FROM ep.read_stream('cart-2');
SELECT count(*) FROM ep.read_all() WHERE stream_id = 'cart-2';
SELECT ep.stream_version('cart-2');
SELECT ep.append('cart-2', 'Added', '{"sku": "d"}', NULL, 1);
SELECT stream_version, data FROM ep.read_stream('cart-2');
SELECT stream_version FROM ep.read_all() WHERE stream_id = 'cart-2';
-- expected version on delete
SELECT ep.delete_stream('cart-2', 1);
-- hard delete: events gone, id tombstoned
SELECT ep.delete_stream('user-1', NULL, true);
SELECT count(*) FROM ep.events WHERE stream_id = 'user-1';
SELECT ep.append('user-1', 'Registered', '{}');
SELECT ep.append_events('user-1', '[{"type": "Registered"}]');
SELECT ep.set_stream_metadata('user-1', max_count => 1);
SELECT ep.delete_stream('user-1', NULL, true);  -- again: nothing to do
SELECT ep.delete_stream('never-1', NULL, true); -- tombstone an unused id
SELECT ep.append('never-1', 'A', '{}');
SELECT ep.delete_stream('never-2');             -- soft delete of nothing
SELECT ep.delete_stream(NULL);
