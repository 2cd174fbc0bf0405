-- Upgrade path: install the oldest version, then walk ALTER EXTENSION ...
-- UPDATE through every version to the newest. Each step must leave the
-- extension usable.
DROP EXTENSION IF EXISTS event_patterns;
CREATE EXTENSION event_patterns VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'event_patterns';
DO $$
DECLARE
    v text;
BEGIN
    FOR v IN
        SELECT target FROM pg_extension_update_paths('event_patterns')
         WHERE source = '0.1' AND path IS NOT NULL
         ORDER BY string_to_array(target, '.')::int[]
    LOOP
        EXECUTE format('ALTER EXTENSION event_patterns UPDATE TO %L', v);
    END LOOP;
END
$$;
-- the newest version is the default version
SELECT e.extversion = a.default_version AS at_newest
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
 WHERE e.extname = 'event_patterns';
SELECT ep.append('upgrade-1', 'Checked', '{}');
DROP EXTENSION event_patterns;
CREATE EXTENSION event_patterns;
