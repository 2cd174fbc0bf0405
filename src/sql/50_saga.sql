-- ---------------------------------------------------------------------------
-- Sagas (src/saga.c): long-running business transactions made of steps, each
-- with a compensation; when a step fails for good, the completed steps are
-- compensated in reverse order.
--
-- ep.saga_types/ep.saga_steps hold the definitions (ep.define_saga), with
-- their owner and the search_path recorded at definition; every action and
-- compensation runs as that owner. ep.saga_instances holds the live state of
-- each saga; only the extension's own functions write it (as the extension
-- owner), and row-level security shows a role only the sagas of owners whose
-- privileges it has. Every state change is also an event of the saga's own
-- stream saga_<type>-<saga_id> (category saga_<type>, owned by the saga
-- type's owner).
-- ---------------------------------------------------------------------------

CREATE TABLE ep.saga_types (
    saga_type   text        NOT NULL PRIMARY KEY
                            CHECK (saga_type OPERATOR(pg_catalog.~) '^[A-Za-z_][A-Za-z0-9_]{0,62}$'),
    owner       regrole     NOT NULL,
    search_path text,
    definition  jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE ep.saga_types IS 'Saga definitions (ep.define_saga): owner, recorded search_path, steps as given';

CREATE TABLE ep.saga_steps (
    saga_type    text         NOT NULL REFERENCES ep.saga_types ON DELETE CASCADE,
    step_no      integer      NOT NULL CHECK (step_no OPERATOR(pg_catalog.>=) 1),
    name         text         NOT NULL CHECK (name OPERATOR(pg_catalog.<>) ''),
    action       regprocedure NOT NULL,
    compensation regprocedure,
    timeout      interval     CHECK (timeout OPERATOR(pg_catalog.>) '0'),
    retries      integer      NOT NULL DEFAULT 0 CHECK (retries BETWEEN 0 AND 100),
    retry_delay  interval     NOT NULL DEFAULT '1 second' CHECK (retry_delay OPERATOR(pg_catalog.>=) '0'),
    PRIMARY KEY (saga_type, step_no),
    UNIQUE (saga_type, name)
);
COMMENT ON TABLE ep.saga_steps IS 'Steps of each saga type, in order: action and compensation functions fn(saga_id text, data jsonb) RETURNS jsonb, timeout, retries and the first retry delay';

CREATE TABLE ep.saga_instances (
    saga_id     text        NOT NULL PRIMARY KEY,
    saga_type   text        NOT NULL REFERENCES ep.saga_types,
    owner       regrole     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'completed', 'compensating',
                                                       'compensated', 'failed')),
    step_no     integer,
    phase       text        CHECK (phase IN ('due', 'waiting')),
    attempts    integer     NOT NULL DEFAULT 0,
    next_run_at timestamptz,
    deadline    timestamptz,
    failed_step integer,
    data        jsonb       NOT NULL,
    input       jsonb,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_error  text
);
COMMENT ON TABLE ep.saga_instances IS 'Live state of every saga (read it through ep.sagas); written only by the extension';
COMMENT ON COLUMN ep.saga_instances.step_no IS 'running: the step whose action runs or is awaited; compensating: the step being compensated; NULL once finished';
COMMENT ON COLUMN ep.saga_instances.phase IS 'due: the worker runs the step at next_run_at; waiting: the action returned NULL and ep.complete_step/ep.fail_step finish it (or its deadline fails it)';
COMMENT ON COLUMN ep.saga_instances.attempts IS 'Failed attempts of the current step (retries back off exponentially from the step''s retry_delay)';
CREATE INDEX saga_instances_due_idx ON ep.saga_instances (next_run_at)
    WHERE phase OPERATOR(pg_catalog.=) 'due';
CREATE INDEX saga_instances_deadline_idx ON ep.saga_instances (deadline)
    WHERE deadline IS NOT NULL;
CREATE INDEX saga_instances_type_idx ON ep.saga_instances (saga_type, status);

SELECT pg_catalog.pg_extension_config_dump('ep.saga_types', '');
SELECT pg_catalog.pg_extension_config_dump('ep.saga_steps', '');
SELECT pg_catalog.pg_extension_config_dump('ep.saga_instances', '');

-- Definitions are public (they name functions, not data); a saga's state
-- and data are visible only to roles with the privileges of its owner.
GRANT SELECT ON ep.saga_types, ep.saga_steps TO PUBLIC;
ALTER TABLE ep.saga_instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY saga_instances_owner ON ep.saga_instances FOR SELECT
    USING (pg_catalog.pg_has_role(CURRENT_USER, owner, 'USAGE'));
GRANT SELECT ON ep.saga_instances TO PUBLIC;

CREATE VIEW ep.sagas WITH (security_invoker = true) AS
    SELECT i.saga_type, i.saga_id, i.status, s.name AS current_step, i.data,
           i.started_at, i.updated_at, i.deadline, i.last_error,
           i.phase, i.attempts, i.next_run_at, i.input,
           pg_catalog.pg_get_userbyid(i.owner::pg_catalog.oid) AS owner
      FROM ep.saga_instances i
      LEFT JOIN ep.saga_steps s
        ON s.saga_type OPERATOR(pg_catalog.=) i.saga_type
       AND s.step_no OPERATOR(pg_catalog.=) i.step_no;
COMMENT ON VIEW ep.sagas IS
    'Sagas and their live state (running, completed, compensating, compensated, failed); a role sees the sagas of owners whose privileges it has';
GRANT SELECT ON ep.sagas TO PUBLIC;

CREATE VIEW ep.saga_definitions AS
    SELECT t.saga_type, pg_catalog.pg_get_userbyid(t.owner::pg_catalog.oid) AS owner,
           t.definition AS steps, t.search_path, t.created_at, t.updated_at
      FROM ep.saga_types t;
COMMENT ON VIEW ep.saga_definitions IS 'Saga types defined with ep.define_saga, their owner and recorded search_path';
GRANT SELECT ON ep.saga_definitions TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Internal state machine. Called by the C functions as the extension owner,
-- with the instance row locked; never by users.
-- ---------------------------------------------------------------------------

-- The steps of a definition, checked for shape (names, types, ranges); the
-- functions are resolved by the caller under the definer's search_path.
CREATE FUNCTION ep._saga_parse_steps(steps jsonb,
        OUT step_no integer, OUT name text, OUT action text, OUT compensation text,
        OUT timeout interval, OUT retries integer, OUT retry_delay interval)
    RETURNS SETOF record LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e jsonb;
    n integer := 0;
    k text;
    v jsonb;
    seen text[] := '{}';
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' OR jsonb_array_length(steps) = 0 THEN
        RAISE EXCEPTION 'saga steps must be a non-empty JSON array'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give [{"name": ..., "action": ..., "compensation": ..., "timeout": ..., "retries": ...}, ...].';
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(steps) AS a(x) LOOP
        n := n + 1;
        IF jsonb_typeof(e) <> 'object' THEN
            RAISE EXCEPTION 'saga step % must be a JSON object', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR k IN SELECT jsonb_object_keys(e) LOOP
            IF k NOT IN ('name', 'action', 'compensation', 'timeout', 'retries', 'retry_delay') THEN
                RAISE EXCEPTION 'unknown key "%" in saga step %', k, n
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A step has name, action, compensation, timeout, retries and retry_delay.';
            END IF;
        END LOOP;
        step_no := n;
        IF jsonb_typeof(e->'name') IS DISTINCT FROM 'string' OR btrim(e->>'name') = '' THEN
            RAISE EXCEPTION 'saga step % needs a "name" (a non-empty string)', n
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        name := e->>'name';
        IF name = ANY (seen) THEN
            RAISE EXCEPTION 'saga step name "%" is used twice', name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Step names must be unique within a saga.';
        END IF;
        seen := seen || name;
        IF jsonb_typeof(e->'action') IS DISTINCT FROM 'string' OR btrim(e->>'action') = '' THEN
            RAISE EXCEPTION 'saga step "%" needs an "action" (a function name)', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        action := e->>'action';
        v := e->'compensation';
        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
            compensation := NULL;
        ELSIF jsonb_typeof(v) <> 'string' OR btrim(v #>> '{}') = '' THEN
            RAISE EXCEPTION 'the "compensation" of saga step "%" must be a function name or null', name
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            compensation := v #>> '{}';
        END IF;
        timeout := ep._saga_interval(e->'timeout', name, 'timeout');
        IF timeout IS NOT NULL AND timeout <= interval '0' THEN
            RAISE EXCEPTION 'the "timeout" of saga step "%" must be positive', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        retry_delay := coalesce(ep._saga_interval(e->'retry_delay', name, 'retry_delay'), interval '1 second');
        IF retry_delay < interval '0' THEN
            RAISE EXCEPTION 'the "retry_delay" of saga step "%" must not be negative', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v := e->'retries';
        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
            retries := 0;
        ELSIF jsonb_typeof(v) <> 'number' OR (v #>> '{}')::numeric <> trunc((v #>> '{}')::numeric)
              OR (v #>> '{}')::numeric NOT BETWEEN 0 AND 100 THEN
            RAISE EXCEPTION 'the "retries" of saga step "%" must be an integer from 0 to 100', name
                USING ERRCODE = 'invalid_parameter_value';
        ELSE
            retries := (v #>> '{}')::integer;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION ep._saga_parse_steps(jsonb) IS 'Internal: the steps of a saga definition, checked for shape';

-- An interval given as a string ('30 seconds') or a number of seconds.
CREATE FUNCTION ep._saga_interval(v jsonb, step text, field text) RETURNS interval
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    ELSIF jsonb_typeof(v) = 'number' THEN
        RETURN make_interval(secs => (v #>> '{}')::double precision);
    ELSIF jsonb_typeof(v) = 'string' THEN
        BEGIN
            RETURN (v #>> '{}')::interval;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
            NULL;
        END;
    END IF;
    RAISE EXCEPTION 'the "%" of saga step "%" must be an interval (''30 seconds'') or a number of seconds', field, step
        USING ERRCODE = 'invalid_parameter_value';
END
$$;
COMMENT ON FUNCTION ep._saga_interval(jsonb, text, text) IS 'Internal: an interval of a saga step, given as text or seconds';

-- History: every state change is an event of the saga's stream.
CREATE FUNCTION ep._saga_history(saga_type text, saga_id text, event_type text, data jsonb,
                                 expected_version bigint DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM ep.append('saga_' OPERATOR(pg_catalog.||) saga_type OPERATOR(pg_catalog.||) '-'
                      OPERATOR(pg_catalog.||) saga_id, event_type, data, NULL, expected_version);
END
$$;
COMMENT ON FUNCTION ep._saga_history(text, text, text, jsonb, bigint) IS 'Internal: append an event to a saga''s stream (saga_<type>-<saga_id>)';

-- Data after a step: an object result is merged, anything else is kept
-- under the step's name.
CREATE FUNCTION ep._saga_merge(data jsonb, step text, result jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN result IS NULL OR jsonb_typeof(result) = 'null' THEN data
                WHEN jsonb_typeof(result) = 'object' THEN data || result
                ELSE data || jsonb_build_object(step, result) END;
END
$$;
COMMENT ON FUNCTION ep._saga_merge(jsonb, text, jsonb) IS 'Internal: merge a step''s result into the saga''s data';

CREATE FUNCTION ep._saga_start(saga_type text, saga_id text, input jsonb, owner regrole)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    first ep.saga_steps;
    existing text;
BEGIN
    SELECT s.* INTO first FROM ep.saga_steps s
     WHERE s.saga_type = _saga_start.saga_type ORDER BY s.step_no LIMIT 1;
    INSERT INTO ep.saga_instances AS i (saga_id, saga_type, owner, status, step_no, phase,
                                        next_run_at, deadline, data, input)
    VALUES (saga_id, saga_type, owner, 'running', first.step_no, 'due', now(),
            now() + first.timeout, coalesce(input, '{}'), input)
    ON CONFLICT ON CONSTRAINT saga_instances_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT i.saga_type INTO existing FROM ep.saga_instances i WHERE i.saga_id = _saga_start.saga_id;
        IF existing IS DISTINCT FROM saga_type THEN
            RAISE EXCEPTION 'saga id "%" is already used by a saga of another type', saga_id
                USING ERRCODE = 'unique_violation',
                      HINT = 'Saga ids are unique across saga types.';
        END IF;
        RETURN false;
    END IF;
    PERFORM ep._saga_history(saga_type, saga_id, 'SagaStarted',
                             jsonb_build_object('input', input, 'owner', owner::text), 0);
    RETURN true;
END
$$;
COMMENT ON FUNCTION ep._saga_start(text, text, jsonb, regrole) IS 'Internal: create a saga instance (false when it exists already)';

-- One outcome of the current step of a saga:
--   ok       the action (or compensation) returned result, or complete_step
--   wait     the action returned NULL: wait for complete_step / fail_step
--   error    the call raised err: retry with backoff, then fail for good
--   fail     fail_step: the step failed for good
--   timeout  the step's deadline passed
CREATE FUNCTION ep._saga_advance(saga_id text, outcome text, result jsonb, err text)
    RETURNS text LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i ep.saga_instances;
    st ep.saga_steps;
    nxt ep.saga_steps;
    delay interval;
BEGIN
    SELECT * INTO i FROM ep.saga_instances s WHERE s.saga_id = _saga_advance.saga_id FOR UPDATE;
    IF NOT FOUND OR i.status NOT IN ('running', 'compensating') THEN
        RETURN i.status;
    END IF;
    SELECT * INTO st FROM ep.saga_steps s
     WHERE s.saga_type = i.saga_type AND s.step_no = i.step_no;

    IF i.status = 'running' THEN
        IF outcome = 'ok' THEN
            i.data := ep._saga_merge(i.data, st.name, result);
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepCompleted',
                                     jsonb_build_object('step', st.name, 'result', result));
            SELECT * INTO nxt FROM ep.saga_steps s
             WHERE s.saga_type = i.saga_type AND s.step_no > i.step_no
             ORDER BY s.step_no LIMIT 1;
            IF NOT FOUND THEN
                UPDATE ep.saga_instances s
                   SET status = 'completed', step_no = NULL, phase = NULL, attempts = 0,
                       next_run_at = NULL, deadline = NULL, data = i.data, updated_at = now()
                 WHERE s.saga_id = i.saga_id;
                PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompleted',
                                         jsonb_build_object('data', i.data));
                RETURN 'completed';
            END IF;
            UPDATE ep.saga_instances s
               SET step_no = nxt.step_no, phase = 'due', attempts = 0, next_run_at = now(),
                   deadline = now() + nxt.timeout, data = i.data, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            RETURN 'running';
        ELSIF outcome = 'wait' THEN
            UPDATE ep.saga_instances s
               SET phase = 'waiting', next_run_at = NULL, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepWaiting',
                                     jsonb_build_object('step', st.name, 'deadline', i.deadline));
            RETURN 'running';
        ELSIF outcome = 'error' AND i.attempts < st.retries THEN
            delay := least(st.retry_delay * power(2, least(i.attempts, 20))::integer, interval '1 hour');
            UPDATE ep.saga_instances s
               SET attempts = i.attempts + 1, phase = 'due', next_run_at = now() + delay,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepAttemptFailed',
                                     jsonb_build_object('step', st.name, 'attempt', i.attempts + 1,
                                                        'error', err, 'retry_at', now() + delay));
            RETURN 'running';
        END IF;
        -- failed for good (error after the retries, fail_step, timeout):
        -- compensate the completed steps, last first
        IF outcome = 'timeout' THEN
            err := format('step "%s" timed out after %s s', st.name,
                          trim_scale(extract(epoch FROM st.timeout)));
        ELSIF outcome = 'error' AND st.retries > 0 THEN
            err := format('step "%s" failed after %s attempts: %s', st.name, i.attempts + 1, err);
        ELSE
            err := format('step "%s" failed: %s', st.name, err);
        END IF;
        PERFORM ep._saga_history(i.saga_type, i.saga_id,
                                 CASE WHEN outcome = 'timeout' THEN 'SagaStepTimedOut' ELSE 'SagaStepFailed' END,
                                 jsonb_build_object('step', st.name, 'error', err));
        i.failed_step := i.step_no;
    ELSE
        -- compensating
        IF outcome = 'ok' THEN
            i.data := ep._saga_merge(i.data, st.name || '_compensation', result);
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaStepCompensated',
                                     jsonb_build_object('step', st.name, 'result', result));
        ELSIF outcome = 'error' AND i.attempts < st.retries THEN
            delay := least(st.retry_delay * power(2, least(i.attempts, 20))::integer, interval '1 hour');
            UPDATE ep.saga_instances s
               SET attempts = i.attempts + 1, phase = 'due', next_run_at = now() + delay,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompensationAttemptFailed',
                                     jsonb_build_object('step', st.name, 'attempt', i.attempts + 1,
                                                        'error', err, 'retry_at', now() + delay));
            RETURN 'compensating';
        ELSE
            err := format('compensation of step "%s" failed%s: %s', st.name,
                          CASE WHEN st.retries > 0 THEN format(' after %s attempts', i.attempts + 1) ELSE '' END,
                          err);
            UPDATE ep.saga_instances s
               SET status = 'failed', phase = NULL, next_run_at = NULL, deadline = NULL,
                   last_error = err, updated_at = now()
             WHERE s.saga_id = i.saga_id;
            PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaFailed',
                                     jsonb_build_object('step', st.name, 'error', err));
            RETURN 'failed';
        END IF;
        err := i.last_error;
    END IF;

    -- the next step to compensate: the last completed one below this one
    -- that has a compensation
    SELECT * INTO nxt FROM ep.saga_steps s
     WHERE s.saga_type = i.saga_type AND s.step_no < i.step_no AND s.compensation IS NOT NULL
     ORDER BY s.step_no DESC LIMIT 1;
    IF NOT FOUND THEN
        UPDATE ep.saga_instances s
           SET status = 'compensated', step_no = NULL, phase = NULL, attempts = 0,
               next_run_at = NULL, deadline = NULL, failed_step = i.failed_step,
               data = i.data, last_error = err, updated_at = now()
         WHERE s.saga_id = i.saga_id;
        PERFORM ep._saga_history(i.saga_type, i.saga_id, 'SagaCompensated',
                                 jsonb_build_object('error', err));
        RETURN 'compensated';
    END IF;
    UPDATE ep.saga_instances s
       SET status = 'compensating', step_no = nxt.step_no, phase = 'due', attempts = 0,
           next_run_at = now(), deadline = NULL, failed_step = i.failed_step,
           data = i.data, last_error = err, updated_at = now()
     WHERE s.saga_id = i.saga_id;
    RETURN 'compensating';
END
$$;
COMMENT ON FUNCTION ep._saga_advance(text, text, jsonb, text) IS
    'Internal: apply one outcome (ok, wait, error, fail, timeout) of a saga''s current step; returns the new status';

-- A reply for a waiting step (complete_step, fail_step). Replies for a step
-- the saga is no longer waiting for (late, or repeated) are ignored.
CREATE FUNCTION ep._saga_reply(saga_id text, step text, ok boolean, result jsonb, err text)
    RETURNS boolean LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i ep.saga_instances;
    st ep.saga_steps;
BEGIN
    SELECT * INTO i FROM ep.saga_instances s WHERE s.saga_id = _saga_reply.saga_id FOR UPDATE;
    SELECT * INTO st FROM ep.saga_steps s WHERE s.saga_type = i.saga_type AND s.name = step;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'saga type "%" has no step "%"', i.saga_type, step
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status = 'running' AND i.step_no = st.step_no AND i.phase = 'waiting' THEN
        PERFORM ep._saga_advance(saga_id, CASE WHEN ok THEN 'ok' ELSE 'fail' END, result, err);
        RETURN true;
    END IF;
    IF i.status = 'running' AND st.step_no >= i.step_no THEN
        RAISE EXCEPTION 'saga "%" is not waiting for step "%"', saga_id, step
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = CASE WHEN st.step_no > i.step_no THEN 'The step has not started yet.'
                                ELSE 'The step''s action has not returned NULL (it has not run yet, or it is being retried).' END;
    END IF;
    RAISE NOTICE 'saga "%" is no longer waiting for step "%": reply ignored', saga_id, step
        USING DETAIL = format('The saga is %s.', i.status);
    RETURN false;
END
$$;
COMMENT ON FUNCTION ep._saga_reply(text, text, boolean, jsonb, text) IS
    'Internal: finish a waiting step with a result or an error; false when the saga no longer waits for it';

REVOKE ALL ON FUNCTION ep._saga_parse_steps(jsonb), ep._saga_interval(jsonb, text, text),
    ep._saga_history(text, text, text, jsonb, bigint), ep._saga_start(text, text, jsonb, regrole),
    ep._saga_advance(text, text, jsonb, text), ep._saga_reply(text, text, boolean, jsonb, text)
    FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- API (C, src/saga.c)
-- ---------------------------------------------------------------------------

CREATE FUNCTION ep.define_saga(saga_type text, steps jsonb)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_define_saga';
COMMENT ON FUNCTION ep.define_saga(text, jsonb) IS
    'Define (or redefine, when no saga of the type is active) a saga type: steps is an array of {"name", "action", "compensation", "timeout", "retries", "retry_delay"}; action and compensation name functions fn(saga_id text, data jsonb) RETURNS jsonb, resolved with the caller''s search_path; they run as the caller';

CREATE FUNCTION ep.drop_saga(saga_type text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_drop_saga';
COMMENT ON FUNCTION ep.drop_saga(text) IS
    'Remove a saga type and its finished sagas (refused while one is running or compensating); its history stays in the event store';

CREATE FUNCTION ep.start_saga(saga_type text, saga_id text, input jsonb)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_start_saga';
COMMENT ON FUNCTION ep.start_saga(text, text, jsonb) IS
    'Start a saga with input (a JSON object) in the caller''s transaction; idempotent per saga_id. Needs the privileges of the saga type''s owner';

CREATE FUNCTION ep.complete_step(saga_id text, step text, result jsonb DEFAULT NULL)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_complete_step';
COMMENT ON FUNCTION ep.complete_step(text, text, jsonb) IS
    'Finish a waiting step (its action returned NULL) with a result, merged into the saga''s data; a reply for a step no longer awaited is ignored with a notice';

CREATE FUNCTION ep.fail_step(saga_id text, step text, error text)
    RETURNS void LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_fail_step';
COMMENT ON FUNCTION ep.fail_step(text, text, text) IS
    'Fail a waiting step for good: the completed steps are compensated in reverse order';

CREATE FUNCTION ep.run_sagas(max_steps integer DEFAULT 1000)
    RETURNS integer LANGUAGE c VOLATILE PARALLEL UNSAFE
    AS 'MODULE_PATHNAME', 'ep_run_sagas';
COMMENT ON FUNCTION ep.run_sagas(integer) IS
    'Run the due steps, retries, compensations and timeouts of the sagas the caller may drive (those of owners whose privileges it has), in this transaction, until none is due or max_steps ran; returns the number of steps run. The worker does the same in the background';
