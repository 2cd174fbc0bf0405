-- ---------------------------------------------------------------------------
-- Category ownership: services sharing one store, each owning its streams
-- (src/category.c). A category without an owner is open to every role.
-- ---------------------------------------------------------------------------

CREATE TABLE ep.category_owners (
    category   text        NOT NULL PRIMARY KEY CHECK (category <> '' AND pg_catalog.strpos(category, '-') = 0),
    owner      regrole     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.category_owners IS 'Owned categories (set with ep.set_category_owner); only the owner and the roles it grants may use their streams';

CREATE TABLE ep.category_grants (
    category   text        NOT NULL,
    grantee    regrole     NOT NULL,
    may_read   boolean     NOT NULL DEFAULT false,
    may_append boolean     NOT NULL DEFAULT false,
    may_admin  boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (category, grantee)
);
COMMENT ON TABLE ep.category_grants IS 'Privileges on owned categories granted to other roles (ep.grant_category, ep.revoke_category)';
COMMENT ON COLUMN ep.category_grants.may_admin IS 'delete_stream, set_stream_metadata and redact_stream on the category''s streams';

GRANT SELECT ON ep.category_owners, ep.category_grants TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.category_owners', '');
SELECT pg_catalog.pg_extension_config_dump('ep.category_grants', '');

-- Every backend caches both tables; a change makes them reload.
CREATE FUNCTION ep._category_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_category_changed';
COMMENT ON FUNCTION ep._category_changed() IS
    'Internal: trigger on ep.category_owners and ep.category_grants that makes every backend reload its category cache';
CREATE TRIGGER category_owners_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ep.category_owners
    FOR EACH STATEMENT EXECUTE FUNCTION ep._category_changed();
CREATE TRIGGER category_grants_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ep.category_grants
    FOR EACH STATEMENT EXECUTE FUNCTION ep._category_changed();

CREATE FUNCTION ep._unreadable_categories() RETURNS text[]
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_unreadable_categories';
COMMENT ON FUNCTION ep._unreadable_categories() IS
    'Internal: the owned categories the current user may not read (for row-level security; evaluate it once per query as a scalar subquery)';

CREATE FUNCTION ep._category_check_read(category text, role regrole) RETURNS void
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_category_check_read';
COMMENT ON FUNCTION ep._category_check_read(text, regrole) IS
    'Internal: raises 42501 unless the role may read the category (subscriptions, projections)';

CREATE FUNCTION ep._category_may_read(category text, role regrole) RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'ep_category_may_read';
COMMENT ON FUNCTION ep._category_may_read(text, regrole) IS
    'Internal: may the role read the category (true for a NULL category)';

CREATE FUNCTION ep.set_category_owner(category text, owner regrole)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_set_category_owner';
COMMENT ON FUNCTION ep.set_category_owner(text, regrole) IS
    'Give a category an owner: from then on only the owner and the roles it grants may append to, read, delete, set metadata on, redact, subscribe to or project its streams (NULL: open to every role again). The extension owner or the current owner may call it';

CREATE FUNCTION ep.grant_category(category text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_grant_category';
COMMENT ON FUNCTION ep.grant_category(text, regrole, text[]) IS
    'Grant privileges on an owned category: read, append, admin (delete, metadata, redact) or all; the owner or the extension owner may call it';

CREATE FUNCTION ep.revoke_category(category text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_revoke_category';
COMMENT ON FUNCTION ep.revoke_category(text, regrole, text[]) IS
    'Revoke privileges (read, append, admin or all) on an owned category; the owner or the extension owner may call it';

CREATE VIEW ep.categories AS
    SELECT o.category, o.owner,
           COALESCE((SELECT pg_catalog.jsonb_object_agg(g.grantee::pg_catalog.text,
                                pg_catalog.to_jsonb(pg_catalog.array_remove(ARRAY[
                                    CASE WHEN g.may_read THEN 'read' END,
                                    CASE WHEN g.may_append THEN 'append' END,
                                    CASE WHEN g.may_admin THEN 'admin' END]::pg_catalog.text[], NULL)))
                       FROM ep.category_grants g
                      WHERE g.category OPERATOR(pg_catalog.=) o.category),
                    '{}'::pg_catalog.jsonb) AS grants
      FROM ep.category_owners o;
COMMENT ON VIEW ep.categories IS 'Owned categories, their owners and the privileges granted on them ({"role": ["read", "append", "admin"]})';
GRANT SELECT ON ep.categories TO PUBLIC;

-- Reads of the store's tables hide owned categories from roles without
-- read. The policy's subquery is evaluated once per query; per row it is
-- one comparison with each unreadable category (none in a database without
-- owned categories). The extension's own statements run as the tables'
-- owner, which row-level security does not restrict.
ALTER TABLE ep.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_category_read ON ep.events FOR SELECT
    USING (category OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[]));
ALTER TABLE ep.streams ENABLE ROW LEVEL SECURITY;
CREATE POLICY streams_category_read ON ep.streams FOR SELECT
    USING (category OPERATOR(pg_catalog.<>) ALL ((SELECT ep._unreadable_categories())::pg_catalog.text[]));

-- Destructive functions are not PUBLIC (DESIGN.md §1, "Trust model"):
-- GRANT EXECUTE them to the roles that may use them; category ownership
-- limits them further.
COMMENT ON FUNCTION ep.delete_stream(text, bigint, boolean) IS
    'Soft delete (reads hide the events; a later append continues the numbering) or hard delete (events removed, id tombstoned: appends raise EP002). Not PUBLIC: GRANT EXECUTE it to the roles that may delete; an owned category also needs its admin privilege';
REVOKE ALL ON FUNCTION ep.delete_stream(text, bigint, boolean) FROM PUBLIC;
COMMENT ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) IS
    'Set a stream''s read limits (NULL removes one); every read honours them at once and a scavenge removes what they hide. Not PUBLIC: GRANT EXECUTE it to the roles that may set them; an owned category also needs its admin privilege';
REVOKE ALL ON FUNCTION ep.set_stream_metadata(text, bigint, interval, bigint) FROM PUBLIC;
