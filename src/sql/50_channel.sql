-- ---------------------------------------------------------------------------
-- Service channels (database per service): a transactional outbox on the
-- producer, native logical replication, exactly-once handlers on consumers.
--
-- Every channel's messages live in a partition of ep.messages named
-- ep_channels."<channel>", the same name on the producer and on every
-- consumer (native replication matches tables by name). Channel names are
-- global: by convention they start with the producing service's name
-- ("orders.events"), and a database cannot consume a channel of the same
-- name as one it produces. The producer publishes its partition with
-- publish = 'insert' (its pruning never deletes a consumer's copy).
--
-- Who may do what (the extension owner may do everything):
--   create_channel      roles with CREATE on the database; they own it
--   send, forward       the owner and roles granted 'send'
--   read messages       the owner and roles granted 'read' (ep.messages
--                       shows only channels the caller may read)
--   subscribe_channel   not PUBLIC (it connects to other servers and creates
--                       a subscription); granted explicitly; the caller owns
--                       the consumer side of the channel
--   message handlers    the owner and roles granted 'read' on the consumer
-- ---------------------------------------------------------------------------

CREATE SCHEMA ep_channels;
COMMENT ON SCHEMA ep_channels IS
    'event_patterns: one table per service channel (a partition of ep.messages), named after the channel on producer and consumers alike';

CREATE SEQUENCE ep.message_received_seq;
COMMENT ON SEQUENCE ep.message_received_seq IS
    'Internal: order in which a consumer received messages (ep.messages.received_seq)';

CREATE TABLE ep.messages (
    channel      text        NOT NULL,
    message_id   uuid        NOT NULL,
    position     bigint      NOT NULL,
    message_type text        NOT NULL,
    key          text,
    payload      jsonb,
    headers      jsonb,
    sent_at      timestamptz NOT NULL,
    received_seq bigint,
    PRIMARY KEY (channel, message_id)
) PARTITION BY LIST (channel);
COMMENT ON TABLE ep.messages IS
    'Messages of the service channels of this database, sent (producer) or received (consumer); position: commit-independent send order on the producer; received_seq: arrival order on a consumer (NULL on the producer); headers may carry reply_to and correlation_id';
CREATE INDEX messages_position_idx ON ep.messages (channel, position);

CREATE TABLE ep.channel_defs (
    channel       text        NOT NULL PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('producer', 'consumer')),
    owner         regrole     NOT NULL,
    partition     regclass    NOT NULL,
    publication   name,
    subscription  name,
    slot_name     name,
    source        text,
    generation    integer     NOT NULL DEFAULT 0,
    senders       regrole[]   NOT NULL DEFAULT '{}',
    readers       regrole[]   NOT NULL DEFAULT '{}',
    pruned_below  bigint      NOT NULL DEFAULT 0,
    pruned_count  bigint      NOT NULL DEFAULT 0,
    pruned_before timestamptz,
    dedup_until   pg_lsn,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.channel_defs IS
    'Service channels of this database (read them through ep.channels): producer side (publication) or consumer side (subscription, slot on the producer, source without password); senders/readers: roles granted send/read; pruned_*: what retention removed; dedup_until: messages fetched at subscription may also be streamed until the subscription has applied the producer''s WAL to here (the receive trigger drops them)';

-- Backends cache the table (ep.send, message handlers): every change makes
-- them read it again.
CREATE FUNCTION ep._channel_defs_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_channel_defs_changed';
COMMENT ON FUNCTION ep._channel_defs_changed() IS
    'Internal: trigger on ep.channel_defs that makes every backend reload its cache of channel definitions';
REVOKE ALL ON FUNCTION ep._channel_defs_changed() FROM PUBLIC;
-- only what the cache holds: not the bookkeeping of retention and errors
CREATE TRIGGER channel_defs_changed
    AFTER INSERT OR UPDATE OF channel, role, owner, partition, senders, readers OR DELETE OR TRUNCATE
    ON ep.channel_defs
    FOR EACH STATEMENT EXECUTE FUNCTION ep._channel_defs_changed();

-- Producer: (horizon, lsn) marks. Every message with position < horizon
-- committed before lsn; once every consumer's slot confirmed lsn they all
-- have received them.
CREATE TABLE ep.channel_marks (
    channel   text        NOT NULL REFERENCES ep.channel_defs ON DELETE CASCADE,
    horizon   bigint      NOT NULL,
    lsn       pg_lsn      NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (channel, horizon)
);
COMMENT ON TABLE ep.channel_marks IS
    'Internal: points of the producer''s pruning: every message with position below horizon committed before lsn';

CREATE TABLE ep.channel_forwards (
    forward_id  integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text        NOT NULL REFERENCES ep.channel_defs ON DELETE CASCADE,
    category    text,
    event_types text[],
    owner       regrole     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE NULLS NOT DISTINCT (channel, category, event_types)
);
COMMENT ON TABLE ep.channel_forwards IS
    'Events forwarded to channels by ep.forward_events (category and/or event types; NULL: all)';

-- Definitions are not secret (no passwords: source has them masked);
-- messages are (ep.messages shows readable channels only).
GRANT SELECT ON ep.channel_forwards, ep.channel_defs, ep.channel_marks TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('ep.channel_defs', '');
SELECT pg_catalog.pg_extension_config_dump('ep.channel_forwards', '');

-- Privilege checks --------------------------------------------------------

CREATE FUNCTION ep._channel_may(channel text, member regrole, privilege text) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE((SELECT pg_catalog.pg_has_role($2::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER')
                            OR pg_catalog.pg_has_role($2::pg_catalog.oid,
                                   (SELECT e.extowner FROM pg_catalog.pg_extension e
                                     WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER')
                            OR EXISTS (SELECT 1 FROM pg_catalog.unnest(CASE $3
                                                           WHEN 'send' THEN d.senders
                                                           ELSE d.readers END) g
                                        WHERE pg_catalog.pg_has_role($2::pg_catalog.oid, g::pg_catalog.oid, 'MEMBER'))
                       FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) $1), false)
$$;
COMMENT ON FUNCTION ep._channel_may(text, regrole, text) IS
    'Internal: may the role send on (privilege ''send'') or read (''read'') the channel: its owner, the extension owner, and roles granted the privilege';

CREATE FUNCTION ep._readable_channels() RETURNS text[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(pg_catalog.array_agg(d.channel), '{}')
      FROM ep.channel_defs d
     WHERE ep._channel_may(d.channel, ep._role(CURRENT_USER), 'read')
$$;
COMMENT ON FUNCTION ep._readable_channels() IS
    'Internal: the channels the current user may read (for row-level security; evaluate it once per query as a scalar subquery)';

CREATE FUNCTION ep._channel_check_name(channel text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF channel IS NULL OR channel OPERATOR(pg_catalog.!~) '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'
       OR pg_catalog.length(channel) OPERATOR(pg_catalog.>) 48 THEN
        RAISE EXCEPTION 'invalid channel name "%"', channel
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'A channel name is lower-case letters, digits and underscores in dot-separated parts, at most 48 characters.',
                  HINT = 'Start it with the producing service''s name, e.g. ''orders.events'': channel names are shared by every service.';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._channel_check_name(text) IS 'Internal: raises 42602 for a malformed channel name';

-- Row-level security: ep.messages shows the channels the caller may read.
ALTER TABLE ep.messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY messages_read ON ep.messages FOR SELECT
    USING (channel OPERATOR(pg_catalog.=) ANY ((SELECT ep._readable_channels())::pg_catalog.text[]));
GRANT SELECT ON ep.messages TO PUBLIC;

-- The partition of a channel ------------------------------------------------

CREATE FUNCTION ep._channel_create_partition(channel text, consumer boolean) RETURNS regclass
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    g oid;
BEGIN
    EXECUTE pg_catalog.format('CREATE TABLE ep_channels.%I PARTITION OF ep.messages FOR VALUES IN (%L)',
                              channel, channel);
    part := pg_catalog.format('ep_channels.%I', channel)::pg_catalog.regclass;
    -- read directly, a partition bypasses ep.messages' row-level security:
    -- nobody but its owner has privileges on it, whatever default
    -- privileges the extension owner has set up
    FOR g IN SELECT DISTINCT a.grantee
               FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
              WHERE c.oid OPERATOR(pg_catalog.=) part AND a.grantee OPERATOR(pg_catalog.<>) c.relowner LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM %s', part,
                                  CASE WHEN g OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
                                       ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(g)) END);
    END LOOP;
    EXECUTE pg_catalog.format('COMMENT ON TABLE ep_channels.%I IS %L', channel,
                              pg_catalog.format('Messages of channel %s (%s side)', channel,
                                                CASE WHEN consumer THEN 'consumer' ELSE 'producer' END));
    IF consumer THEN
        EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ALTER COLUMN received_seq'
                                  ' SET DEFAULT pg_catalog.nextval(''ep.message_received_seq''::pg_catalog.regclass)',
                                  channel);
        EXECUTE pg_catalog.format('CREATE INDEX ON ep_channels.%I (received_seq)', channel);
        -- fires for the apply worker and the initial copy (replica mode)
        EXECUTE pg_catalog.format('CREATE TRIGGER receive BEFORE INSERT ON ep_channels.%I'
                                  ' FOR EACH ROW EXECUTE FUNCTION ep._message_receive(''dedup'')', channel);
        EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ENABLE ALWAYS TRIGGER receive', channel);
    END IF;
    RETURN part;
END
$$;
COMMENT ON FUNCTION ep._channel_create_partition(text, boolean) IS
    'Internal: create the partition ep_channels."<channel>" of ep.messages (on a consumer with arrival order and the receive trigger)';

CREATE FUNCTION ep._message_receive() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'ep_message_receive';
COMMENT ON FUNCTION ep._message_receive() IS
    'Internal trigger on a consumer''s channel table: wakes the worker at commit; with the argument ''dedup'' (only while the messages fetched at subscription may arrive again) drops a message whose id is present';

CREATE FUNCTION ep._channel_set_dedup(channel text, dedup boolean) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format('DROP TRIGGER receive ON ep_channels.%I', channel);
    EXECUTE pg_catalog.format('CREATE TRIGGER receive BEFORE INSERT ON ep_channels.%I'
                              ' FOR EACH ROW EXECUTE FUNCTION ep._message_receive(%s)', channel,
                              CASE WHEN dedup THEN '''dedup''' ELSE '' END);
    EXECUTE pg_catalog.format('ALTER TABLE ep_channels.%I ENABLE ALWAYS TRIGGER receive', channel);
END
$$;
COMMENT ON FUNCTION ep._channel_set_dedup(text, boolean) IS
    'Internal: switch the receive trigger of a consumer''s channel table between checking for messages received twice and only waking the worker';
REVOKE ALL ON FUNCTION ep._channel_set_dedup(text, boolean) FROM PUBLIC;

-- Producer ------------------------------------------------------------------

CREATE FUNCTION ep._create_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
    pub name;
BEGIN
    PERFORM ep._channel_check_name(channel);
    IF NOT pg_catalog.has_database_privilege(caller::pg_catalog.oid, pg_catalog.current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'permission denied to create channel "%"', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Creating a channel creates a publication, which needs CREATE on the database.';
    END IF;
    IF EXISTS (SELECT 1 FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) _create_channel.channel) THEN
        RAISE EXCEPTION 'channel "%" already exists', channel USING ERRCODE = 'duplicate_object';
    END IF;
    part := ep._channel_create_partition(channel, false);
    pub := ('ep_channel:' OPERATOR(pg_catalog.||) channel)::name;
    EXECUTE pg_catalog.format('CREATE PUBLICATION %I FOR TABLE ep_channels.%I'
                              ' (channel, message_id, position, message_type, key, payload, headers, sent_at)'
                              ' WITH (publish = ''insert'')', pub, channel);
    INSERT INTO ep.channel_defs (channel, role, owner, partition, publication)
    VALUES (channel, 'producer', caller, part, pub);
END
$$;
COMMENT ON FUNCTION ep._create_channel(regrole, text) IS 'Internal: ep.create_channel() for the calling role (run as the extension owner by ep.create_channel)';
REVOKE ALL ON FUNCTION ep._create_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.create_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.create_channel(text) IS
    'On the producer: create a channel (its outbox table ep_channels."<channel>" and a publication of its inserts); the caller owns it. Name it after the producing service, e.g. ''orders.events''';

CREATE FUNCTION ep.send(channel text, message_type text, payload jsonb, key text DEFAULT NULL,
                        headers jsonb DEFAULT NULL)
    RETURNS uuid LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_send';
COMMENT ON FUNCTION ep.send(text, text, jsonb, text, jsonb) IS
    'Send a message on a channel in the caller''s transaction (outbox): delivered to every consumer if and only if the transaction commits, in commit order; returns the message id. Headers reply_to (a channel) and correlation_id (text) are the request/reply convention';

CREATE FUNCTION ep.reply(request ep.messages, message_type text, payload jsonb,
                         headers jsonb DEFAULT NULL)
    RETURNS uuid LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF request.headers IS NULL OR request.headers OPERATOR(pg_catalog.->>) 'reply_to' IS NULL THEN
        RAISE EXCEPTION 'the request has no reply_to header'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send requests with headers {"reply_to": "<channel>"}.';
    END IF;
    RETURN ep.send(request.headers OPERATOR(pg_catalog.->>) 'reply_to', message_type, payload, request.key,
                   COALESCE(headers, '{}'::jsonb) OPERATOR(pg_catalog.||)
                   pg_catalog.jsonb_build_object('correlation_id',
                       COALESCE(request.headers OPERATOR(pg_catalog.->>) 'correlation_id', request.message_id::text),
                       'in_reply_to', request.message_id));
END
$$;
COMMENT ON FUNCTION ep.reply(ep.messages, text, jsonb, jsonb) IS
    'Answer a request: send on the channel named by its reply_to header, with its correlation_id (or its message id) and in_reply_to; the caller must be allowed to send on that channel';

CREATE FUNCTION ep._channel_privileges(caller regrole, channel text, grantee regrole, privileges text[],
                                       grant_them boolean)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _channel_privileges.channel FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER')
       AND NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                     WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = pg_catalog.format('Only the channel''s owner can %s privileges on it.',
                                             CASE WHEN grant_them THEN 'grant' ELSE 'revoke' END);
    END IF;
    -- the same for grant and revoke: a NULL takes nothing back silently
    IF grantee IS NULL THEN
        RAISE EXCEPTION 'grantee must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF privileges IS NULL OR pg_catalog.cardinality(privileges) OPERATOR(pg_catalog.=) 0
       OR NOT (privileges OPERATOR(pg_catalog.<@) '{send,read}'::text[])
       OR pg_catalog.array_position(privileges, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'privileges must be a non-empty subset of {send,read}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ep.channel_defs c
       SET senders = CASE WHEN NOT 'send' OPERATOR(pg_catalog.=) ANY (privileges) THEN c.senders
                          WHEN NOT grant_them THEN pg_catalog.array_remove(c.senders, grantee)
                          WHEN grantee OPERATOR(pg_catalog.=) ANY (c.senders) THEN c.senders
                          ELSE c.senders OPERATOR(pg_catalog.||) grantee END,
           readers = CASE WHEN NOT 'read' OPERATOR(pg_catalog.=) ANY (privileges) THEN c.readers
                          WHEN NOT grant_them THEN pg_catalog.array_remove(c.readers, grantee)
                          WHEN grantee OPERATOR(pg_catalog.=) ANY (c.readers) THEN c.readers
                          ELSE c.readers OPERATOR(pg_catalog.||) grantee END
     WHERE c.channel OPERATOR(pg_catalog.=) _channel_privileges.channel;
END
$$;
COMMENT ON FUNCTION ep._channel_privileges(regrole, text, regrole, text[], boolean) IS
    'Internal: grant (true) or revoke (false) send/read on a channel for the calling role: only the channel''s owner or the extension owner';
REVOKE ALL ON FUNCTION ep._channel_privileges(regrole, text, regrole, text[], boolean) FROM PUBLIC;

-- ep.grant_channel and ep.revoke_channel call ep._<name> (ep_channel_api)
CREATE FUNCTION ep._grant_channel(caller regrole, channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._channel_privileges(caller, channel, grantee, privileges, true) $$;
COMMENT ON FUNCTION ep._grant_channel(regrole, text, regrole, text[]) IS 'Internal: ep.grant_channel() for the calling role (run as the extension owner by ep.grant_channel)';
REVOKE ALL ON FUNCTION ep._grant_channel(regrole, text, regrole, text[]) FROM PUBLIC;

CREATE FUNCTION ep.grant_channel(channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.grant_channel(text, regrole, text[]) IS
    'Let a role send on (''send'') or read and handle (''read'') a channel; only the channel''s owner (or the extension owner) may call it';

CREATE FUNCTION ep._revoke_channel(caller regrole, channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$ SELECT ep._channel_privileges(caller, channel, grantee, privileges, false) $$;
COMMENT ON FUNCTION ep._revoke_channel(regrole, text, regrole, text[]) IS 'Internal: ep.revoke_channel() for the calling role (run as the extension owner by ep.revoke_channel)';
REVOKE ALL ON FUNCTION ep._revoke_channel(regrole, text, regrole, text[]) FROM PUBLIC;

CREATE FUNCTION ep.revoke_channel(channel text, grantee regrole, privileges text[])
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.revoke_channel(text, regrole, text[]) IS
    'Take back privileges granted with ep.grant_channel (message handlers of a role that can no longer read stop with status failed)';

-- Forwarding events: an AFTER INSERT trigger on ep.events that exists only
-- while some forward does (appends pay nothing otherwise).
CREATE FUNCTION ep._forward_events_trigger() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- it runs as the extension owner: only on the store's own table
    IF TG_RELID OPERATOR(pg_catalog.<>) 'ep.events'::pg_catalog.regclass
       OR TG_WHEN OPERATOR(pg_catalog.<>) 'AFTER' OR TG_OP OPERATOR(pg_catalog.<>) 'INSERT'
       OR TG_LEVEL OPERATOR(pg_catalog.<>) 'ROW' THEN
        RAISE EXCEPTION 'ep._forward_events_trigger() fires only as the AFTER INSERT row trigger of ep.events'
            USING ERRCODE = 'triggered_action_exception';
    END IF;
    INSERT INTO ep.messages (channel, message_id, position, message_type, key, payload, headers, sent_at)
    SELECT DISTINCT ON (f.channel) f.channel, NEW.event_id, NEW.global_position, NEW.event_type, NEW.stream_id, NEW.data,
           (CASE WHEN pg_catalog.jsonb_typeof(NEW.metadata) OPERATOR(pg_catalog.=) 'object'
                 THEN NEW.metadata ELSE '{}'::jsonb END)
           OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('stream_id', NEW.stream_id,
                                                                 'stream_version', NEW.stream_version,
                                                                 'global_position', NEW.global_position),
           pg_catalog.clock_timestamp()
      FROM ep.channel_forwards f
     WHERE (f.category IS NULL OR f.category OPERATOR(pg_catalog.=) NEW.category)
       AND (f.event_types IS NULL OR NEW.event_type OPERATOR(pg_catalog.=) ANY (f.event_types))
       -- privileges are checked on every event, not only when the forward
       -- was made: a forward whose owner lost send on the channel or read
       -- on the category sends nothing (the append itself goes on)
       AND ep._category_may_read(NEW.category, f.owner)
       AND ep._channel_may(f.channel, f.owner, 'send')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION ep._forward_events_trigger() IS
    'Internal trigger on ep.events: sends every appended event that a forward matches on its channel, in the appending transaction (message id = event id, position = global position, key = stream id)';
REVOKE ALL ON FUNCTION ep._forward_events_trigger() FROM PUBLIC;

CREATE FUNCTION ep._sync_forward_trigger()
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted boolean;
    present boolean;
BEGIN
    SELECT EXISTS (SELECT 1 FROM ep.channel_forwards) INTO wanted;
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                    WHERE t.tgrelid OPERATOR(pg_catalog.=) 'ep.events'::regclass
                      AND t.tgname OPERATOR(pg_catalog.=) 'events_forward_to_channels')
      INTO present;
    IF wanted AND NOT present THEN
        CREATE TRIGGER events_forward_to_channels AFTER INSERT ON ep.events
            FOR EACH ROW EXECUTE FUNCTION ep._forward_events_trigger();
    ELSIF present AND NOT wanted THEN
        DROP TRIGGER events_forward_to_channels ON ep.events;
    END IF;
END
$$;
COMMENT ON FUNCTION ep._sync_forward_trigger() IS 'Internal: create or drop the forwarding trigger on ep.events';
REVOKE ALL ON FUNCTION ep._sync_forward_trigger() FROM PUBLIC;

CREATE FUNCTION ep._forward_events(caller regrole, channel text, category text, event_types text[])
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    me regrole := caller;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ep.channel_defs d WHERE d.channel OPERATOR(pg_catalog.=) _forward_events.channel
                                                   AND d.role OPERATOR(pg_catalog.=) 'producer') THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel
            USING ERRCODE = 'undefined_object', HINT = 'Create it with ep.create_channel() on this database.';
    END IF;
    IF NOT ep._channel_may(channel, me, 'send') THEN
        RAISE EXCEPTION 'permission denied to send on channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF event_types IS NOT NULL AND (pg_catalog.array_position(event_types, NULL) IS NOT NULL
                                    OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0) THEN
        RAISE EXCEPTION 'event_types must be NULL or a non-empty array without NULL elements'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- forwarding publishes what the caller reads: an owned category needs read
    PERFORM ep._category_check_read(category, me);
    IF category IS NULL AND EXISTS (SELECT 1 FROM ep.categories c
                                     WHERE NOT pg_catalog.pg_has_role(me::pg_catalog.oid, c.owner::pg_catalog.oid, 'MEMBER'))
       AND NOT pg_catalog.pg_has_role(me::pg_catalog.oid, (SELECT e.extowner FROM pg_catalog.pg_extension e
                                                          WHERE e.extname OPERATOR(pg_catalog.=) 'event_patterns'), 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to forward every category'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Some categories are owned by other roles.',
                  HINT = 'Forward one category at a time.';
    END IF;
    INSERT INTO ep.channel_forwards (channel, category, event_types, owner)
    VALUES (channel, category, event_types, me)
    ON CONFLICT DO NOTHING;
    PERFORM ep._sync_forward_trigger();
END
$$;
COMMENT ON FUNCTION ep._forward_events(regrole, text, text, text[]) IS 'Internal: ep.forward_events() for the calling role (run as the extension owner by ep.forward_events)';
REVOKE ALL ON FUNCTION ep._forward_events(regrole, text, text, text[]) FROM PUBLIC;

CREATE FUNCTION ep.forward_events(channel text, category text DEFAULT NULL, event_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.forward_events(text, text, text[]) IS
    'On the producer: from now on every appended event of the category (NULL: all) and event types (NULL: all) is also sent on the channel, in the appending transaction; message id = event id, key = stream id, headers = metadata plus stream_id, stream_version, global_position';

CREATE FUNCTION ep._unforward_events(caller regrole, channel text, category text, event_types text[])
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT ep._channel_may(channel, caller, 'send') THEN
        RAISE EXCEPTION 'permission denied to send on channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM ep.channel_forwards f
     WHERE f.channel OPERATOR(pg_catalog.=) _unforward_events.channel
       AND f.category IS NOT DISTINCT FROM _unforward_events.category
       AND f.event_types IS NOT DISTINCT FROM _unforward_events.event_types;
    PERFORM ep._sync_forward_trigger();
END
$$;
COMMENT ON FUNCTION ep._unforward_events(regrole, text, text, text[]) IS 'Internal: ep.unforward_events() for the calling role (run as the extension owner by ep.unforward_events)';
REVOKE ALL ON FUNCTION ep._unforward_events(regrole, text, text, text[]) FROM PUBLIC;

CREATE FUNCTION ep.unforward_events(channel text, category text DEFAULT NULL, event_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.unforward_events(text, text, text[]) IS 'Stop a forward created by ep.forward_events';

-- Consumer ------------------------------------------------------------------

CREATE FUNCTION ep._channel_slot_base(channel text) RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(channel), 10) OPERATOR(pg_catalog.||) '_'
            OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(s.system_identifier::text OPERATOR(pg_catalog.||) ':'
                                         OPERATOR(pg_catalog.||) d.oid::text), 10))::name
      FROM pg_catalog.pg_control_system() s, pg_catalog.pg_database d
     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()
$$;
COMMENT ON FUNCTION ep._channel_slot_base(text) IS
    'Internal: name of a consumer''s slots on the producer (epch_<channel hash>_<consumer hash>, then _<generation>); the producer finds its consumers by the channel hash';

CREATE FUNCTION ep._channel_remote_slot(conninfo text, slot_name name, create_it boolean)
    RETURNS boolean LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_slot';
COMMENT ON FUNCTION ep._channel_remote_slot(text, name, boolean) IS
    'Internal: create (true) a pgoutput slot on the producer now, dropped again if the (sub)transaction aborts, or drop (false) one just before commit (the slot part of the native-subscription primitive); creating must run before the transaction writes (same-cluster slots wait for writing transactions)';
REVOKE ALL ON FUNCTION ep._channel_remote_slot(text, name, boolean) FROM PUBLIC;

CREATE FUNCTION ep._channel_fetch(conninfo text, of_channel text,
                                  OUT channel text, OUT message_id uuid, OUT "position" bigint,
                                  OUT message_type text, OUT key text, OUT payload jsonb, OUT headers jsonb,
                                  OUT sent_at timestamptz)
    RETURNS SETOF record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_fetch';
COMMENT ON FUNCTION ep._channel_fetch(text, text) IS
    'Internal: the messages the producer has on a channel (ep.channel_messages there), through a connection to it';
REVOKE ALL ON FUNCTION ep._channel_fetch(text, text) FROM PUBLIC;

CREATE FUNCTION ep._channel_remote_lsn(conninfo text) RETURNS pg_lsn
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_lsn';
COMMENT ON FUNCTION ep._channel_remote_lsn(text) IS 'Internal: the producer''s current WAL insert position';
REVOKE ALL ON FUNCTION ep._channel_remote_lsn(text) FROM PUBLIC;

CREATE FUNCTION ep._channel_remote_state(conninfo text, channel text, slot_name name,
                                         OUT channel_exists boolean, OUT slot_exists boolean,
                                         OUT pruned_below bigint, OUT pruned_count bigint,
                                         OUT min_position bigint)
    RETURNS record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_remote_state';
COMMENT ON FUNCTION ep._channel_remote_state(text, text, name) IS
    'Internal: ask the producer whether the channel and the slot exist and what its retention removed';
REVOKE ALL ON FUNCTION ep._channel_remote_state(text, text, name) FROM PUBLIC;

CREATE FUNCTION ep._channel_check_conninfo(caller regrole, conninfo text) RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_check_conninfo';
COMMENT ON FUNCTION ep._channel_check_conninfo(regrole, text) IS
    'Internal: the connection string the extension owner uses for the caller: as given for a superuser; any other caller must give a password the producer asks for (a test connection checks) and one server by socket directory or numeric address, and the result presents none of the server''s own credentials';
REVOKE ALL ON FUNCTION ep._channel_check_conninfo(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep._channel_conninfo_shown(conninfo text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT
    AS 'MODULE_PATHNAME', 'ep_channel_conninfo_shown';
COMMENT ON FUNCTION ep._channel_conninfo_shown(text) IS
    'Internal: a connection string as keyword=value pairs without its passwords (ep.channel_defs.source)';
REVOKE ALL ON FUNCTION ep._channel_conninfo_shown(text) FROM PUBLIC;

CREATE FUNCTION ep._subscribe_channel(caller regrole, channel text, conninfo text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    st record;
    slot name;
    gen integer := 0;
    sub name;
    part regclass;
    local_max bigint;
    shown text;
BEGIN
    PERFORM ep._channel_check_name(channel);
    IF conninfo IS NULL THEN
        RAISE EXCEPTION 'conninfo must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    IF FOUND AND d.role OPERATOR(pg_catalog.=) 'producer' THEN
        RAISE EXCEPTION 'channel "%" is produced by this database', channel
            USING ERRCODE = 'duplicate_object',
                  DETAIL = 'A database cannot consume a channel of the same name as one it produces.';
    END IF;
    IF FOUND AND NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- the extension owner connects: for a role that is not a superuser,
    -- with a checked password and none of the server's own credentials;
    -- every connection below uses this connection string (and the
    -- definition shows it, without passwords: a socket directory as used)
    conninfo := ep._channel_check_conninfo(caller, conninfo);
    shown := ep._channel_conninfo_shown(conninfo);
    -- nothing is written before the slot exists (see ep._channel_remote_slot)
    st := ep._channel_remote_state(conninfo, channel, d.slot_name);
    IF NOT st.channel_exists THEN
        RAISE EXCEPTION 'channel "%" does not exist on the producer', channel
            USING ERRCODE = 'undefined_object', HINT = 'Run ep.create_channel() on the producer first.';
    END IF;
    IF d.channel IS NOT NULL AND st.slot_exists THEN
        RAISE NOTICE 'channel "%" is already subscribed', channel;
        RETURN;
    END IF;
    IF d.channel IS NOT NULL THEN
        gen := d.generation OPERATOR(pg_catalog.+) 1;
    END IF;
    slot := (ep._channel_slot_base(channel) OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) gen::text)::name;
    -- if anything below fails, the abort drops the slot again: it does not
    -- stay behind pinning the producer's WAL
    PERFORM ep._channel_remote_slot(conninfo, slot, true);
    sub := ('ep_channel:' OPERATOR(pg_catalog.||) channel)::name;
    IF d.channel IS NULL THEN
        part := ep._channel_create_partition(channel, true);
        INSERT INTO ep.channel_defs (channel, role, owner, partition, subscription, slot_name, source)
        VALUES (channel, 'consumer', caller, part, sub, slot,
                shown);
    ELSE
        -- re-synchronization: the old slot is gone; what the producer still
        -- has is copied again (messages received before are dropped by the
        -- receive trigger), what its retention removed is lost
        SELECT pg_catalog.max(m.position) INTO local_max FROM ep.messages m
         WHERE m.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
        local_max := GREATEST(COALESCE(local_max, 0), d.pruned_below OPERATOR(pg_catalog.-) 1);
        IF st.pruned_below OPERATOR(pg_catalog.>) (local_max OPERATOR(pg_catalog.+) 1) THEN
            UPDATE ep.channel_defs c
               SET last_error = pg_catalog.format('re-synchronized at %s: the producer had already removed messages with positions below %s (%s removed in all); those sent after position %s that this consumer had not received are lost',
                                                  pg_catalog.now(), st.pruned_below, st.pruned_count, local_max)
             WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
            RAISE WARNING 'channel "%": messages may have been lost', channel
                USING DETAIL = pg_catalog.format('The producer removed messages with positions below %s before this consumer received them; this consumer has everything up to position %s.',
                                                 st.pruned_below, local_max);
        END IF;
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', sub);
        EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', sub);
        EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', sub);
        UPDATE ep.channel_defs c
           SET slot_name = slot, generation = gen,
               source = shown
         WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    END IF;
    -- what the producer has now, in send order: everything committed
    -- before the slot's start is among it; what also arrives through
    -- the slot is dropped by the receive trigger until the subscription
    -- has applied the producer's WAL past the fetch (dedup_until). On a
    -- re-synchronization, messages this consumer handled and removed
    -- (sent before pruned_before) are not taken again.
    PERFORM ep._channel_set_dedup(channel, true);
    -- into the partition itself: its default numbers the arrivals
    EXECUTE pg_catalog.format(
        'INSERT INTO %s (channel, message_id, position, message_type, key, payload, headers, sent_at)'
        ' SELECT f.channel, f.message_id, f.position, f.message_type, f.key, f.payload, f.headers, f.sent_at'
        '   FROM ep._channel_fetch($1, $2) f'
        '  WHERE f.channel OPERATOR(pg_catalog.=) $2'
        '    AND ($3 IS NULL OR f.sent_at OPERATOR(pg_catalog.>=) $3)'
        '  ORDER BY f.position', COALESCE(part, d.partition))
      USING conninfo, channel, d.pruned_before;
    UPDATE ep.channel_defs c SET dedup_until = ep._channel_remote_lsn(conninfo)
     WHERE c.channel OPERATOR(pg_catalog.=) _subscribe_channel.channel;
    EXECUTE pg_catalog.format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I'
                              ' WITH (create_slot = false, slot_name = %L, copy_data = false)',
                              sub, conninfo, 'ep_channel:' OPERATOR(pg_catalog.||) channel, slot);
    -- the subscription takes every table the producer's publication lists,
    -- by name, and applies into it as the extension owner: a producer that
    -- published anything but the channel's table would write this
    -- database's tables. Refused (the abort undoes everything above).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel r
                 JOIN pg_catalog.pg_subscription s ON s.oid OPERATOR(pg_catalog.=) r.srsubid
                WHERE s.subname OPERATOR(pg_catalog.=) sub
                  AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                                         WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
                  AND r.srrelid OPERATOR(pg_catalog.<>) COALESCE(part, d.partition)::pg_catalog.oid) THEN
        RAISE EXCEPTION 'the producer''s publication of channel "%" lists other tables than the channel''s', channel
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('Publication %I on the producer must contain only table ep_channels.%I; a subscription would write every table it lists.',
                                             'ep_channel:' OPERATOR(pg_catalog.||) channel, channel),
                  HINT = 'Remove the other tables from the publication on the producer (ALTER PUBLICATION ... DROP TABLE).';
    END IF;
END
$$;
COMMENT ON FUNCTION ep._subscribe_channel(regrole, text, text) IS 'Internal: ep.subscribe_channel() for the calling role (run as the extension owner by ep.subscribe_channel)';
REVOKE ALL ON FUNCTION ep._subscribe_channel(regrole, text, text) FROM PUBLIC;

CREATE FUNCTION ep.subscribe_channel(channel text, conninfo text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.subscribe_channel(text, text) IS
    'On a consumer: receive a channel from its producer (native subscription; works between databases of one cluster: the slot is created first, outside the transaction''s writes). Call it as the first statement of a transaction. Called again after the consumer''s slot was lost, it re-synchronizes from what the producer still has and warns about what retention removed';
REVOKE ALL ON FUNCTION ep.subscribe_channel(text, text) FROM PUBLIC;

CREATE FUNCTION ep._unsubscribe_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    conn text;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _unsubscribe_channel.channel
                                            AND c.role OPERATOR(pg_catalog.=) 'consumer';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" is not subscribed', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF EXISTS (SELECT 1 FROM ep.projection_defs p WHERE p.kind OPERATOR(pg_catalog.=) 'message'
                                                   AND p.source OPERATOR(pg_catalog.=) d.partition) THEN
        RAISE EXCEPTION 'channel "%" still has message handlers', channel
            USING ERRCODE = 'dependent_objects_still_exist', HINT = 'Drop them with ep.drop_projection() first.';
    END IF;
    SELECT s.subconninfo INTO conn FROM pg_catalog.pg_subscription s
     WHERE s.subname OPERATOR(pg_catalog.=) d.subscription
       AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                              WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database());
    -- the slot on the producer is dropped just before commit, through a
    -- connection of its own (DROP SUBSCRIPTION would need to run outside
    -- any transaction to drop it); an aborted transaction keeps it
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I DISABLE', d.subscription);
    EXECUTE pg_catalog.format('ALTER SUBSCRIPTION %I SET (slot_name = NONE)', d.subscription);
    EXECUTE pg_catalog.format('DROP SUBSCRIPTION %I', d.subscription);
    EXECUTE pg_catalog.format('DROP TABLE %s', d.partition);
    DELETE FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _unsubscribe_channel.channel;
    IF conn IS NOT NULL THEN
        PERFORM ep._channel_remote_slot(conn, d.slot_name, false);
    END IF;
END
$$;
COMMENT ON FUNCTION ep._unsubscribe_channel(regrole, text) IS 'Internal: ep.unsubscribe_channel() for the calling role (run as the extension owner by ep.unsubscribe_channel)';
REVOKE ALL ON FUNCTION ep._unsubscribe_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.unsubscribe_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.unsubscribe_channel(text) IS
    'On a consumer: stop receiving a channel (drops the subscription, its slot on the producer and the received messages)';
REVOKE ALL ON FUNCTION ep.unsubscribe_channel(text) FROM PUBLIC;

CREATE FUNCTION ep._drop_channel(caller regrole, channel text)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
BEGIN
    SELECT * INTO d FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _drop_channel.channel
                                            AND c.role OPERATOR(pg_catalog.=) 'producer';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel "%" does not exist', channel USING ERRCODE = 'undefined_object';
    END IF;
    IF NOT pg_catalog.pg_has_role(caller::pg_catalog.oid, d.owner::pg_catalog.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for channel "%"', channel USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM ep.channel_forwards f WHERE f.channel OPERATOR(pg_catalog.=) _drop_channel.channel;
    PERFORM ep._sync_forward_trigger();
    EXECUTE pg_catalog.format('DROP PUBLICATION %I', d.publication);
    EXECUTE pg_catalog.format('DROP TABLE %s', d.partition);
    DELETE FROM ep.channel_defs c WHERE c.channel OPERATOR(pg_catalog.=) _drop_channel.channel;
END
$$;
COMMENT ON FUNCTION ep._drop_channel(regrole, text) IS 'Internal: ep.drop_channel() for the calling role (run as the extension owner by ep.drop_channel)';
REVOKE ALL ON FUNCTION ep._drop_channel(regrole, text) FROM PUBLIC;

CREATE FUNCTION ep.drop_channel(channel text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_channel_api';
COMMENT ON FUNCTION ep.drop_channel(text) IS
    'On the producer: drop a channel, its outbox and its publication (consumers'' slots stay until they unsubscribe)';

CREATE FUNCTION ep.create_message_handler(name text, channel text, handler regprocedure,
                                          message_types text[], search_path text,
                                          handler_timeout interval DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    IF name IS NULL OR name OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'projection name must be a non-empty string'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF handler IS NULL THEN
        RAISE EXCEPTION 'handler must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT d.partition INTO part FROM ep.channel_defs d
     WHERE d.channel OPERATOR(pg_catalog.=) create_message_handler.channel
       AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF part IS NULL THEN
        RAISE EXCEPTION 'channel "%" is not subscribed in this database', channel
            USING ERRCODE = 'undefined_object', HINT = 'Run ep.subscribe_channel() first.';
    END IF;
    PERFORM ep._check_projection_options(create_message_handler.search_path,
                                         create_message_handler.handler_timeout);
    BEGIN
        -- 'rebuilding': the first round hands over the messages received so far
        INSERT INTO ep.projection_defs (name, kind, handler, owner, mode, event_types, source, status,
                                        search_path, handler_timeout)
        VALUES (create_message_handler.name, 'message', create_message_handler.handler,
                ep._role(CURRENT_USER), 'async', message_types, part, 'rebuilding',
                create_message_handler.search_path, create_message_handler.handler_timeout);
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'projection "%" already exists', name
            USING ERRCODE = 'duplicate_object';
    END;
END
$$;
COMMENT ON FUNCTION ep.create_message_handler(text, text, regprocedure, text[], text, interval) IS
    'Create a message handler whose handler runs with the given search_path and time limit per call (NULL: event_patterns.handler_timeout)';

-- No SET clause, so that current_setting() sees the caller's search_path.
CREATE FUNCTION ep.create_message_handler(name text, channel text, handler regprocedure,
                                          message_types text[] DEFAULT NULL)
    RETURNS void LANGUAGE sql VOLATILE
AS $$ SELECT ep.create_message_handler(name, channel, handler, message_types,
                                       pg_catalog.current_setting('search_path'), NULL::pg_catalog.interval) $$;
COMMENT ON FUNCTION ep.create_message_handler(text, text, regprocedure, text[]) IS
    'On a consumer: handler(message ep.messages) RETURNS void is called once for every message of the channel (of message_types, NULL: all) received so far and from now on, in arrival order (the producer''s commit order), exactly once, as the creating role with the creator''s search_path; retried, parked and listed in ep.projections like projections (drop it with ep.drop_projection)';

-- Maintenance: marks and pruning (the worker calls it about once a second) --

CREATE FUNCTION ep._channel_mark_point(OUT horizon bigint, OUT lsn pg_lsn)
    RETURNS record LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_channel_mark_point';
COMMENT ON FUNCTION ep._channel_mark_point() IS
    'Internal: a position horizon and a WAL position such that every message below the horizon committed before that position';
REVOKE ALL ON FUNCTION ep._channel_mark_point() FROM PUBLIC;

CREATE FUNCTION ep._channel_maintain(retention interval)
    RETURNS bigint LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d ep.channel_defs;
    mp record;
    m ep.channel_marks;
    received pg_lsn;
    n bigint;
    total bigint := 0;
    handled bigint;
    cut timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) retention;
    oldest_seq bigint;
    oldest_at timestamptz;
    young bigint;
BEGIN
    FOR d IN SELECT * FROM ep.channel_defs ORDER BY channel LOOP
        IF d.role OPERATOR(pg_catalog.=) 'producer' THEN
            -- a new mark when messages were sent since the last one
            mp := ep._channel_mark_point();
            IF EXISTS (SELECT 1 FROM ep.messages x WHERE x.channel OPERATOR(pg_catalog.=) d.channel
                          AND x.position OPERATOR(pg_catalog.>=) COALESCE((SELECT pg_catalog.max(k.horizon) FROM ep.channel_marks k
                                                        WHERE k.channel OPERATOR(pg_catalog.=) d.channel), 0)
                          AND x.position OPERATOR(pg_catalog.<) mp.horizon) THEN
                INSERT INTO ep.channel_marks (channel, horizon, lsn) VALUES (d.channel, mp.horizon, mp.lsn)
                ON CONFLICT DO NOTHING;
            END IF;
            -- what every consumer whose slot is usable has received
            SELECT pg_catalog.min(s.confirmed_flush_lsn) INTO received
              FROM pg_catalog.pg_replication_slots s
             WHERE s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
               AND s.wal_status IS DISTINCT FROM 'lost';
            SELECT * INTO m FROM ep.channel_marks k
             WHERE k.channel OPERATOR(pg_catalog.=) d.channel
               AND k.taken_at OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.-) retention)
               AND (received IS NULL OR k.lsn OPERATOR(pg_catalog.<=) received)
             ORDER BY k.horizon DESC LIMIT 1;
            IF FOUND THEN
                DELETE FROM ep.messages x WHERE x.channel OPERATOR(pg_catalog.=) d.channel
                                          AND x.position OPERATOR(pg_catalog.<) m.horizon;
                GET DIAGNOSTICS n = ROW_COUNT;
                DELETE FROM ep.channel_marks k WHERE k.channel OPERATOR(pg_catalog.=) d.channel
                                                AND k.horizon OPERATOR(pg_catalog.<) m.horizon;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    UPDATE ep.channel_defs c
                       SET pruned_below = GREATEST(c.pruned_below, m.horizon),
                           pruned_count = c.pruned_count OPERATOR(pg_catalog.+) n,
                           pruned_before = m.taken_at
                     WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
                    total := total OPERATOR(pg_catalog.+) n;
                END IF;
            END IF;
        ELSE
            -- consumer: once the subscription applied the producer's WAL past
            -- the fetch at subscription, nothing can arrive twice
            IF d.dedup_until IS NOT NULL
               AND pg_catalog.pg_replication_origin_progress(
                       'pg_' OPERATOR(pg_catalog.||) (SELECT s.oid FROM pg_catalog.pg_subscription s
                                                       WHERE s.subname OPERATOR(pg_catalog.=) d.subscription
                                                         AND s.subdbid OPERATOR(pg_catalog.=) (SELECT b.oid FROM pg_catalog.pg_database b
                                                                                                WHERE b.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))::text,
                       true) OPERATOR(pg_catalog.>=) d.dedup_until THEN
                PERFORM ep._channel_set_dedup(d.channel, false);
                UPDATE ep.channel_defs c SET dedup_until = NULL WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
            END IF;
            -- consumer: what every message handler of the channel has
            -- handled; a handler whose owner may no longer read the channel
            -- holds nothing back (revoking read releases its messages)
            handled := ep._channel_handled(d.partition);
            -- in arrival order, from the oldest, up to the first one sent
            -- after the cut (arrival follows sending closely; what a
            -- re-synchronization copied late goes once the younger ones do):
            -- while the oldest message is young this is one index probe
            oldest_seq := NULL;
            IF handled IS NOT NULL THEN
                EXECUTE pg_catalog.format('SELECT x.received_seq, x.sent_at FROM ONLY %s x'
                                          ' WHERE x.received_seq IS NOT NULL ORDER BY x.received_seq LIMIT 1',
                                          d.partition)
                   INTO oldest_seq, oldest_at;
            END IF;
            IF oldest_seq OPERATOR(pg_catalog.<=) handled AND oldest_at OPERATOR(pg_catalog.<) cut THEN
                EXECUTE pg_catalog.format('SELECT x.received_seq FROM ONLY %s x'
                                          ' WHERE x.received_seq OPERATOR(pg_catalog.>) $1'
                                          '   AND x.received_seq OPERATOR(pg_catalog.<=) $2'
                                          '   AND x.sent_at OPERATOR(pg_catalog.>=) $3'
                                          ' ORDER BY x.received_seq LIMIT 1', d.partition)
                   INTO young USING oldest_seq, handled, cut;
                EXECUTE pg_catalog.format('DELETE FROM ONLY %s x'
                                          ' WHERE x.received_seq OPERATOR(pg_catalog.<=) $1'
                                          '   AND x.sent_at OPERATOR(pg_catalog.<) $2', d.partition)
                   USING COALESCE(young OPERATOR(pg_catalog.-) 1, handled), cut;
                GET DIAGNOSTICS n = ROW_COUNT;
                IF n OPERATOR(pg_catalog.>) 0 THEN
                    UPDATE ep.channel_defs c
                       SET pruned_count = c.pruned_count OPERATOR(pg_catalog.+) n,
                           pruned_before = cut
                     WHERE c.channel OPERATOR(pg_catalog.=) d.channel;
                    total := total OPERATOR(pg_catalog.+) n;
                END IF;
            END IF;
        END IF;
    END LOOP;
    RETURN total;
END
$$;
COMMENT ON FUNCTION ep._channel_maintain(interval) IS
    'Internal: producer: mark what was sent, remove messages older than retention that every consumer''s slot has confirmed; consumer: remove handled messages sent more than retention ago; returns how many were removed';
REVOKE ALL ON FUNCTION ep._channel_maintain(interval) FROM PUBLIC;

CREATE FUNCTION ep.maintain_channels()
    RETURNS bigint LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'ep_maintain_channels';
COMMENT ON FUNCTION ep.maintain_channels() IS
    'Run the channels'' clean-up now (the worker runs it about once a second): returns how many messages were removed';
REVOKE ALL ON FUNCTION ep.maintain_channels() FROM PUBLIC;

-- Views ---------------------------------------------------------------------

CREATE FUNCTION ep._channel_handled(source regclass) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.min(p.last_position) FROM ep.projection_defs p, ep.channel_defs d
     WHERE p.kind OPERATOR(pg_catalog.=) 'message' AND p.source OPERATOR(pg_catalog.=) $1
       AND d.partition OPERATOR(pg_catalog.=) $1
       AND ep._channel_may(d.channel, p.owner, 'read')
$$;
COMMENT ON FUNCTION ep._channel_handled(regclass) IS
    'Internal: arrival order (received_seq) up to which every message handler of a channel table whose owner may read the channel has handled the messages (NULL: none)';

CREATE FUNCTION ep._messages_pending(source regclass, after bigint, upto bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ch text;
BEGIN
    SELECT d.channel INTO ch FROM ep.channel_defs d
     WHERE d.partition OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'consumer';
    IF ch IS NULL THEN
        RETURN false;
    END IF;
    -- as the caller: row-level security shows only the channels it may read
    RETURN EXISTS (SELECT 1 FROM ep.messages m
                    WHERE m.channel OPERATOR(pg_catalog.=) ch
                      AND m.received_seq OPERATOR(pg_catalog.>) $2
                      AND m.received_seq OPERATOR(pg_catalog.<=) $3);
END
$$;
COMMENT ON FUNCTION ep._messages_pending(regclass, bigint, bigint) IS
    'Internal: are messages numbered (after, upto] visible in a consumer''s channel table (ep.wait_for_projection of a message handler)';

CREATE FUNCTION ep._channel_status()
    RETURNS TABLE (channel text, role text, owner regrole, source text, backlog bigint,
                   lag_seconds double precision, lag_bytes bigint, consumers integer,
                   wal_status text, subscription_active boolean, pruned_below bigint, pruned_count bigint,
                   last_error text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
    WITH slots AS (
        SELECT d.channel, s.*
          FROM ep.channel_defs d
          JOIN pg_catalog.pg_replication_slots s
            ON s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
         WHERE d.role OPERATOR(pg_catalog.=) 'producer'),
    received AS (
        SELECT d.channel,
               (SELECT pg_catalog.max(k.horizon) FROM ep.channel_marks k
                 WHERE k.channel OPERATOR(pg_catalog.=) d.channel
                   AND k.lsn OPERATOR(pg_catalog.<=) (SELECT pg_catalog.min(s.confirmed_flush_lsn) FROM slots s
                                                        WHERE s.channel OPERATOR(pg_catalog.=) d.channel)) AS horizon
          FROM ep.channel_defs d WHERE d.role OPERATOR(pg_catalog.=) 'producer'),
    handled AS (
        SELECT d.channel, ep._channel_handled(d.partition) AS upto
          FROM ep.channel_defs d
         WHERE d.role OPERATOR(pg_catalog.=) 'consumer')
    SELECT d.channel, d.role, d.owner,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN d.publication::text ELSE d.source END,
           b.backlog, b.lag_seconds,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT pg_catalog.max(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn))::bigint
                  FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT pg_catalog.count(*)::integer FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer' THEN
               (SELECT s.wal_status FROM slots s WHERE s.channel OPERATOR(pg_catalog.=) d.channel
                 ORDER BY CASE s.wal_status WHEN 'lost' THEN 0 WHEN 'unreserved' THEN 1 WHEN 'extended' THEN 2 ELSE 3 END
                 LIMIT 1)
           END,
           CASE WHEN d.role OPERATOR(pg_catalog.=) 'consumer' THEN
               EXISTS (SELECT 1 FROM pg_catalog.pg_stat_subscription ss
                        WHERE ss.subname OPERATOR(pg_catalog.=) d.subscription AND ss.pid IS NOT NULL AND ss.relid IS NULL)
           END,
           d.pruned_below, d.pruned_count, d.last_error
      FROM ep.channel_defs d
      LEFT JOIN received r ON r.channel OPERATOR(pg_catalog.=) d.channel
      LEFT JOIN handled h ON h.channel OPERATOR(pg_catalog.=) d.channel
      LEFT JOIN LATERAL (
          SELECT pg_catalog.count(*) AS backlog,
                 pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(x.sent_at)) AS lag_seconds
            FROM ep.messages x
           WHERE x.channel OPERATOR(pg_catalog.=) d.channel
             AND CASE WHEN d.role OPERATOR(pg_catalog.=) 'producer'
                      THEN x.position OPERATOR(pg_catalog.>=) COALESCE(r.horizon, 0)
                      ELSE x.received_seq OPERATOR(pg_catalog.>) COALESCE(h.upto, 0) END) b ON true
     WHERE ep._channel_may(d.channel, ep._role(CURRENT_USER), 'read')
$$;
COMMENT ON FUNCTION ep._channel_status() IS 'Internal: rows of ep.channels for the channels the caller may read (it runs as the caller: backlog counts the messages the caller may read)';

CREATE VIEW ep.channels AS SELECT * FROM ep._channel_status();
COMMENT ON VIEW ep.channels IS
    'Service channels: role producer (source: its publication; backlog: messages not yet confirmed by every consumer''s slot, lag_seconds: age of the oldest, lag_bytes and wal_status of the slowest consumer''s slot, consumers: their number — a dead consumer shows as growing lag and a slot wal_status of extended/unreserved/lost) or consumer (source: producer connection without password; backlog: received messages not yet handled by every message handler; subscription_active); pruned_*: what retention removed';
GRANT SELECT ON ep.channels TO PUBLIC;

CREATE VIEW ep.channel_consumers AS
    SELECT d.channel, s.slot_name, s.active, s.confirmed_flush_lsn,
           pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
           s.wal_status, s.safe_wal_size
      FROM ep.channel_defs d
      JOIN pg_catalog.pg_replication_slots s
        ON s.slot_name OPERATOR(pg_catalog.~~) ('epch_' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(d.channel), 10) OPERATOR(pg_catalog.||) '\_%')
     WHERE d.role OPERATOR(pg_catalog.=) 'producer';
COMMENT ON VIEW ep.channel_consumers IS
    'On the producer: the slot of every consumer of each channel (active, confirmed position, lag in bytes, wal_status, safe_wal_size)';
GRANT SELECT ON ep.channel_consumers TO PUBLIC;

CREATE FUNCTION ep.channel_messages(of_channel text)
    RETURNS TABLE (channel text, message_id text, "position" bigint, message_type text, key text,
                   payload text, headers text, sent_at text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the current role: the consumer's connection, or the owner of whatever
    -- code calls it (never the session's user: owner code runs in sessions
    -- of other roles, the worker's among them)
    IF NOT ep._channel_may($1, ep._role(CURRENT_USER), 'read') THEN
        RAISE EXCEPTION 'permission denied to read channel "%"', $1
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Consumers connect as a role granted read: ep.grant_channel(channel, role, ''{read}'').';
    END IF;
    RETURN QUERY
        SELECT m.channel, m.message_id::text, m.position, m.message_type, m.key, m.payload::text,
               m.headers::text, pg_catalog.to_char(m.sent_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          FROM ep.messages m WHERE m.channel OPERATOR(pg_catalog.=) $1 ORDER BY m.position;
END
$$;
COMMENT ON FUNCTION ep.channel_messages(text) IS
    'On the producer: the messages it still has on a channel, for a consumer that (re-)subscribes; the current role (the consumer''s connection) needs read on the channel';

CREATE FUNCTION ep.channel_info(channel text, OUT pruned_below bigint, OUT pruned_count bigint,
                                OUT min_position bigint)
    RETURNS record LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT COALESCE(d.pruned_below, 0), COALESCE(d.pruned_count, 0),
           (SELECT pg_catalog.min(m.position) FROM ep.messages m WHERE m.channel OPERATOR(pg_catalog.=) $1)
      FROM (SELECT 1) one
      LEFT JOIN ep.channel_defs d ON d.channel OPERATOR(pg_catalog.=) $1 AND d.role OPERATOR(pg_catalog.=) 'producer'
$$;
COMMENT ON FUNCTION ep.channel_info(text) IS
    'On the producer: what retention removed from a channel (messages below pruned_below, pruned_count in all) and the lowest position it still has; consumers ask it when they re-synchronize';
