-- ---------------------------------------------------------------------------
-- Persistent subscriptions
-- ---------------------------------------------------------------------------

CREATE TABLE ep.subscriptions (
    name          text        NOT NULL PRIMARY KEY CHECK (name <> ''),
    category      text,
    event_types   text[],
    from_position bigint      NOT NULL DEFAULT 0 CHECK (from_position >= 0),
    owner         regrole     NOT NULL DEFAULT ep._role(CURRENT_USER),
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.subscriptions IS 'Persistent subscriptions: a category and/or event types, and where they start';

CREATE TABLE ep.subscription_checkpoints (
    subscription    text        NOT NULL REFERENCES ep.subscriptions (name) ON DELETE CASCADE,
    consumer_member integer     NOT NULL DEFAULT -1,
    position        bigint      NOT NULL CHECK (position >= 0),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (subscription, consumer_member)
);
COMMENT ON TABLE ep.subscription_checkpoints IS 'Last acknowledged position of each subscription (per consumer member; -1 without a consumer group)';

GRANT SELECT ON ep.subscriptions, ep.subscription_checkpoints TO PUBLIC;

-- The subscription functions run as their caller (SECURITY INVOKER): who
-- may change a subscription is decided by current_user, the role whose
-- code is running -- in a job, a handler or a view that is the code's
-- owner, never the session's user. Row-level security lets every role read
-- subscriptions and checkpoints, create subscriptions of its own, and move
-- or drop only those of roles it is a member of.
ALTER TABLE ep.subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscriptions_read ON ep.subscriptions FOR SELECT USING (true);
CREATE POLICY subscriptions_create ON ep.subscriptions FOR INSERT
    WITH CHECK (owner OPERATOR(pg_catalog.=) (SELECT ep._role(CURRENT_USER)));
-- dropping goes through ep._catalog_delete() (no DELETE privilege: it would allow LOCK TABLE)
GRANT INSERT ON ep.subscriptions TO PUBLIC;

ALTER TABLE ep.subscription_checkpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY subscription_checkpoints_read ON ep.subscription_checkpoints FOR SELECT USING (true);
CREATE POLICY subscription_checkpoints_ack ON ep.subscription_checkpoints FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM ep.subscriptions s
                         WHERE s.name OPERATOR(pg_catalog.=) subscription
                           AND pg_catalog.pg_has_role(CURRENT_USER, s.owner::pg_catalog.oid, 'MEMBER')));
CREATE POLICY subscription_checkpoints_move ON ep.subscription_checkpoints FOR UPDATE
    USING (EXISTS (SELECT 1 FROM ep.subscriptions s
                    WHERE s.name OPERATOR(pg_catalog.=) subscription
                      AND pg_catalog.pg_has_role(CURRENT_USER, s.owner::pg_catalog.oid, 'MEMBER')));
GRANT INSERT, UPDATE (position, updated_at) ON ep.subscription_checkpoints TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('ep.subscription_checkpoints', '');

-- Only the role that created a subscription (or a member of it, or a
-- superuser) may move its checkpoint or drop it.
CREATE FUNCTION ep._subscription_check_owner(name text)
    RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o regrole;
BEGIN
    SELECT s.owner INTO o FROM ep.subscriptions s WHERE s.name = _subscription_check_owner.name;
    IF o IS NOT NULL AND NOT pg_has_role(current_user, o, 'MEMBER') THEN
        RAISE EXCEPTION 'must be a member of role "%" to change subscription "%"', o, name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._subscription_check_owner(text) IS 'Internal: raises 42501 unless the current user (a member of its owner) may change the subscription';

CREATE FUNCTION ep.create_subscription(name text, category text DEFAULT NULL,
                                       event_types text[] DEFAULT NULL,
                                       from_position bigint DEFAULT 0)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'subscription name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF from_position IS NULL OR from_position < 0 THEN
        RAISE EXCEPTION 'from_position must be a non-negative position'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF category = '' THEN
        RAISE EXCEPTION 'category must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ep.subscriptions (name, category, event_types, from_position, owner)
    VALUES (create_subscription.name, create_subscription.category,
            create_subscription.event_types, create_subscription.from_position, ep._role(current_user))
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END IF;
    -- an owned category needs its read privilege (the insert goes with the error)
    PERFORM ep._category_check_read(create_subscription.category, ep._role(current_user));
END
$$;
COMMENT ON FUNCTION ep.create_subscription(text, text, text[], bigint) IS
    'Create a persistent subscription with a server-side checkpoint';

CREATE FUNCTION ep.poll(subscription text, max_count integer DEFAULT 100,
                        consumer_member integer DEFAULT NULL,
                        consumer_size integer DEFAULT NULL)
    RETURNS SETOF ep.events LANGUAGE c VOLATILE PARALLEL UNSAFE ROWS 100
    AS 'MODULE_PATHNAME', 'ep_poll';
COMMENT ON FUNCTION ep.poll(text, integer, integer, integer) IS
    'Next committed events after the subscription''s checkpoint (of that consumer member); does not move the checkpoint';

CREATE FUNCTION ep.ack(subscription text, "position" bigint, consumer_member integer DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF ack."position" IS NULL OR ack."position" < 0 THEN
        RAISE EXCEPTION 'position must be a non-negative position'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF consumer_member < 0 THEN
        RAISE EXCEPTION 'consumer_member must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM 1 FROM ep.subscriptions s WHERE s.name = ack.subscription;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription "%" does not exist', subscription
            USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM ep._subscription_check_owner(ack.subscription);
    INSERT INTO ep.subscription_checkpoints AS c (subscription, consumer_member, position)
    VALUES (ack.subscription, coalesce(ack.consumer_member, -1), ack."position")
    ON CONFLICT ON CONSTRAINT subscription_checkpoints_pkey
    DO UPDATE SET position = excluded.position, updated_at = now();
END
$$;
COMMENT ON FUNCTION ep.ack(text, bigint, integer) IS
    'Move a subscription''s checkpoint (of a consumer member) to a position';

CREATE FUNCTION ep.drop_subscription(name text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep._subscription_check_owner(drop_subscription.name);
    IF NOT ep._catalog_delete('subscription', drop_subscription.name) THEN
        RAISE EXCEPTION 'subscription "%" does not exist', name
            USING ERRCODE = 'undefined_object';
    END IF;
END
$$;
COMMENT ON FUNCTION ep.drop_subscription(text) IS 'Drop a persistent subscription and its checkpoints';
