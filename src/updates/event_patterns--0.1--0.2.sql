-- event_patterns 0.1 -> 0.2
\echo Use "ALTER EXTENSION event_patterns UPDATE TO '0.2'" to load this file. \quit

-- Every change to the extension's SQL objects since 0.1 is made here as well
-- as in src/sql/*.sql (the full 0.2 install script); TAP test
-- 060_upgrade.pl checks that both give the same objects.
