/*-------------------------------------------------------------------------
 *
 * event_store.c
 *	  Writing to the event store: ep.append, ep.append_events,
 *	  ep.stream_version, ep.delete_stream, ep.set_stream_metadata.
 *
 * An append is, in one transaction:
 *	1. (only when the first event carries an id) the idempotency check: if
 *	   that id is stored already, the batch must match the stored events of
 *	   the same stream in order; then nothing is written and the version
 *	   after that batch is returned. Any other reuse of an id is EP003.
 *	   Two retries of one batch running at the same time both pass this
 *	   check; the second then waits for the first on the stream's row (2.)
 *	   and, instead of failing with EP001/EP003, checks again with a fresh
 *	   snapshot, gives back the versions it claimed and answers as a retry
 *	   (ep_concurrent_repeat).
 *	2. one upsert of the stream's row in ep.streams that adds the batch
 *	   size to its version and returns the new version: the row lock it
 *	   takes serializes appends to the same stream (and only those); the
 *	   expected version is then checked against new - n, and a failure
 *	   aborts the transaction, so nothing is written.
 *	3. one position per event (position.c), then one INSERT of all events
 *	   from arrays. Events carrying caller-supplied ids use ON CONFLICT
 *	   (event_id) DO NOTHING: a row that was not inserted is an id conflict
 *	   (EP003).
 *	4. the notification on channel ep_events (notify.c).
 *
 * The statements are prepared once per backend (SPI_keepplan), name every
 * object and operator with its schema, and run as the extension owner
 * (ep_become_owner): callers need no privileges on the tables.
 *
 * Input is validated completely before anything is written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "event_patterns.h"
#include "category.h"
#include "notify.h"
#include "owner.h"
#include "position.h"
#include "replica/replica.h"

typedef struct EpNewEvent
{
	Datum		id;				/* uuid */
	bool		has_id;
	text	   *type;
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent */
	int32		schema_version;
} EpNewEvent;

static SPIPlanPtr plan_unclaim = NULL;
static SPIPlanPtr plan_upsert_stream = NULL;
static SPIPlanPtr plan_insert = NULL;
static SPIPlanPtr plan_insert_ids = NULL;
static SPIPlanPtr plan_insert_one = NULL;
static SPIPlanPtr plan_insert_one_id = NULL;
static SPIPlanPtr plan_find_event = NULL;
static SPIPlanPtr plan_stream_ids = NULL;
static SPIPlanPtr plan_stream_row = NULL;
static SPIPlanPtr plan_lock_stream = NULL;
static SPIPlanPtr plan_hard_delete = NULL;

/* ----------------------------------------------------------------
 * input validation
 * ----------------------------------------------------------------
 */

static text *
ep_arg_stream_id(FunctionCallInfo fcinfo, int argno)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be null")));
	t = PG_GETARG_TEXT_PP(argno);
	if (VARSIZE_ANY_EXHDR(t) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_id must not be empty")));
	return t;
}

static void
ep_check_expected_arg(FunctionCallInfo fcinfo, int argno)
{
	if (!PG_ARGISNULL(argno) && PG_GETARG_INT64(argno) < -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid expected_version %lld",
						(long long) PG_GETARG_INT64(argno)),
				 errhint("Use NULL (any), 0 (stream must not exist), -1 (stream must exist) or the exact current version.")));
}

static void
ep_check_metadata(Jsonb *metadata, int index)
{
	if (metadata != NULL && !JB_ROOT_IS_OBJECT(metadata))
	{
		if (index >= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("metadata of event %d must be a JSON object", index + 1)));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metadata must be a JSON object")));
	}
}

static Datum
ep_random_uuid(void)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;	/* version 4 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	return UUIDPGetDatum(uuid);
}

static const char *
jbv_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "a JSON value";
	}
}

/*
 * Parse the events argument of ep.append_events into an array of
 * EpNewEvent. Every element must be an object with a non-empty string
 * "type"; "data" (any JSON, default {}), "metadata" (object), "id" (uuid)
 * and "schema_version" (positive integer) are optional; other keys are
 * rejected so that a misspelt key loses nothing silently.
 */
static EpNewEvent *
ep_parse_events(Jsonb *events, int *n_out)
{
	int			n,
				i;
	EpNewEvent *out;

	if (!JB_ROOT_IS_ARRAY(events) || JB_ROOT_IS_SCALAR(events))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array"),
				 errhint("Pass an array such as '[{\"type\": \"Deposited\", \"data\": {\"amount\": 10}}]'.")));

	n = JB_ROOT_COUNT(events);
	out = palloc0(sizeof(EpNewEvent) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(&events->root, i);
		JsonbContainer *obj;
		JsonbIterator *it;
		JsonbIteratorToken tok;
		JsonbValue	v;
		EpNewEvent *ev = &out[i];

		if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event %d must be a JSON object, not %s", i + 1, jbv_type_name(elem))));
		obj = elem->val.binary.data;
		ev->schema_version = 1;

		it = JsonbIteratorInit(obj);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *key;
			JsonbValue	val;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(v.val.string.val, v.val.string.len);
			tok = JsonbIteratorNext(&it, &val, true);
			Assert(tok == WJB_VALUE);

			if (strcmp(key, "type") == 0)
			{
				if (val.type != jbvString || val.val.string.len == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("\"type\" of event %d must be a non-empty string", i + 1)));
				ev->type = cstring_to_text_with_len(val.val.string.val, val.val.string.len);
			}
			else if (strcmp(key, "data") == 0)
				ev->data = JsonbValueToJsonb(&val);
			else if (strcmp(key, "metadata") == 0)
			{
				if (val.type == jbvNull)
					ev->metadata = NULL;
				else
				{
					if (val.type != jbvBinary || !JsonContainerIsObject(val.val.binary.data))
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("\"metadata\" of event %d must be a JSON object, not %s",
										i + 1, jbv_type_name(&val))));
					ev->metadata = JsonbValueToJsonb(&val);
				}
			}
			else if (strcmp(key, "id") == 0)
			{
				if (val.type == jbvNull)
					continue;
				if (val.type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("\"id\" of event %d must be a UUID string", i + 1)));
				ev->id = DirectFunctionCall1(uuid_in,
											 CStringGetDatum(pnstrdup(val.val.string.val,
																	  val.val.string.len)));
				ev->has_id = true;
			}
			else if (strcmp(key, "schema_version") == 0)
			{
				bool		ok = false;

				if (val.type == jbvNumeric)
				{
					Numeric		num = val.val.numeric;

					if (!numeric_is_nan(num))
					{
						ev->schema_version = DatumGetInt32(DirectFunctionCall1(numeric_int4,
																			   NumericGetDatum(num)));
						ok = ev->schema_version >= 1 &&
							DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num),
															 DirectFunctionCall1(int4_numeric,
																				 Int32GetDatum(ev->schema_version))));
					}
				}
				if (!ok)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("\"schema_version\" of event %d must be a positive integer", i + 1)));
			}
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unknown key \"%s\" in event %d", key, i + 1),
						 errhint("Event objects take the keys \"type\", \"data\", \"metadata\", \"id\" and \"schema_version\".")));
		}

		if (ev->type == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event %d has no \"type\"", i + 1),
					 errhint("Every event needs a non-empty string \"type\".")));
		if (ev->data == NULL)
			ev->data = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		if (!ev->has_id)
			ev->id = ep_random_uuid();
	}
	*n_out = n;
	return out;
}

/* ----------------------------------------------------------------
 * expected version
 * ----------------------------------------------------------------
 */

static bool
ep_expected_ok(bool has_expected, int64 expected, int64 actual)
{
	return !has_expected ||
		(expected == 0 && actual == 0) ||
		(expected == -1 && actual > 0) ||
		(expected > 0 && actual == expected);
}

static void
ep_check_expected(const char *stream, bool has_expected, int64 expected, int64 actual)
{
	if (ep_expected_ok(has_expected, expected, actual))
		return;

	if (expected == 0)
		ereport(ERROR,
				(errcode(ERRCODE_EP_WRONG_EXPECTED_VERSION),
				 errmsg("wrong expected version for stream \"%s\": expected 0 (no stream), actual %lld",
						stream, (long long) actual),
				 errdetail("The stream was expected not to exist, but it is at version %lld.",
						   (long long) actual)));
	else if (expected == -1)
		ereport(ERROR,
				(errcode(ERRCODE_EP_WRONG_EXPECTED_VERSION),
				 errmsg("wrong expected version for stream \"%s\": expected -1 (existing stream), actual %lld",
						stream, (long long) actual),
				 errdetail("The stream was expected to exist, but it has no events.")));
	else
		ereport(ERROR,
				(errcode(ERRCODE_EP_WRONG_EXPECTED_VERSION),
				 errmsg("wrong expected version for stream \"%s\": expected %lld, actual %lld",
						stream, (long long) expected, (long long) actual),
				 errdetail("Another writer appended to the stream since it was read."),
				 errhint("Read the stream again and retry with its current version.")));
}

/* ----------------------------------------------------------------
 * idempotency
 * ----------------------------------------------------------------
 */

static char *
uuid_str(Datum id)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, id));
}

/*
 * If the first event's id is stored already, decide whether the batch is a
 * repetition of an earlier append; returns true and sets *version when it
 * is, raises EP003 when the id is reused otherwise, returns false when the
 * id is new.
 */
static bool
ep_idempotent_repeat(text *stream, const char *stream_c, EpNewEvent *evs, int n, int64 *version)
{
	Oid			argt1[1] = {UUIDOID};
	Oid			argt3[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		args[3];
	SPIPlanPtr	plan;
	char	   *found_stream;
	int64		first;
	bool		isnull;
	int			i;

	plan = ep_spi_keep_plan(&plan_find_event,
					  "SELECT stream_id, stream_version FROM ep.events "
					  "WHERE event_id OPERATOR(pg_catalog.=) $1",
					  1, argt1);
	args[0] = evs[0].id;
	/* not read-only: a fresh snapshot sees this transaction's own appends */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "event lookup failed");
	if (SPI_processed == 0)
		return false;

	found_stream = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	first = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (strcmp(found_stream, stream_c) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_EP_EVENT_ID_CONFLICT),
				 errmsg("event id %s already exists in stream \"%s\"",
						uuid_str(evs[0].id), found_stream),
				 errdetail("An append to stream \"%s\" cannot reuse it.", stream_c)));

	plan = ep_spi_keep_plan(&plan_stream_ids,
					  "SELECT event_id FROM ep.events "
					  "WHERE stream_id OPERATOR(pg_catalog.=) $1 "
					  "AND stream_version OPERATOR(pg_catalog.>=) $2 "
					  "AND stream_version OPERATOR(pg_catalog.<=) $3 "
					  "ORDER BY stream_version",
					  3, argt3);
	args[0] = PointerGetDatum(stream);
	args[1] = Int64GetDatum(first);
	args[2] = Int64GetDatum(first + n - 1);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "event lookup failed");
	for (i = 0; i < n; i++)
	{
		Datum		stored;

		if (i >= (int) SPI_processed || !evs[i].has_id)
			break;
		stored = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		if (memcmp(DatumGetUUIDP(stored), DatumGetUUIDP(evs[i].id), UUID_LEN) != 0)
			break;
	}
	if (i < n)
		ereport(ERROR,
				(errcode(ERRCODE_EP_EVENT_ID_CONFLICT),
				 errmsg("event id %s already exists at version %lld of stream \"%s\"",
						uuid_str(evs[0].id), (long long) first, stream_c),
				 errdetail("The batch does not repeat the events stored from that version on, so it is not an idempotent retry.")));
	*version = first + n - 1;
	return true;
}

/*
 * Two retries of one batch running at the same time: both passed the
 * idempotency check before either committed, the second then waited for the
 * first on the stream's row and now either fails the expected version or
 * finds its ids taken. Under READ COMMITTED this statement's fresh snapshot
 * sees the first one's events; if they are this batch, undo the version
 * claim (the row lock is still ours, and the first append's time is the
 * stream's last change) and answer as a retry. Only for batches with ids.
 */
static bool
ep_concurrent_repeat(text *stream, const char *stream_c, EpNewEvent *evs, int n, int64 *version)
{
	Oid			argt[2] = {TEXTOID, INT8OID};
	Datum		args[2];

	if (n == 0 || !evs[0].has_id || IsolationUsesXactSnapshot())
		return false;
	if (!ep_idempotent_repeat(stream, stream_c, evs, n, version))
		return false;
	args[0] = PointerGetDatum(stream);
	args[1] = Int64GetDatum(n);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_unclaim,
									"UPDATE ep.streams AS s SET version = s.version OPERATOR(pg_catalog.-) $2, "
									"updated_at = (SELECT pg_catalog.max(e.recorded_at) FROM ep.events e "
									"WHERE e.stream_id OPERATOR(pg_catalog.=) $1) "
									"WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
									2, argt),
						 args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "could not release the versions claimed for stream \"%s\"", stream_c);
	return true;
}

/* Name one of the batch's ids that exists already (for EP003 messages). */
static void
ep_report_id_conflict(const char *stream_c, EpNewEvent *evs, int n, int64 first_version)
{
	Oid			argt1[1] = {UUIDOID};
	int			i;

	for (i = 0; i < n; i++)
	{
		Datum		args[1];

		if (!evs[i].has_id)
			continue;
		args[0] = evs[i].id;
		if (SPI_execute_plan(ep_spi_keep_plan(&plan_find_event,
										"SELECT stream_id, stream_version FROM ep.events "
										"WHERE event_id OPERATOR(pg_catalog.=) $1",
										1, argt1),
							 args, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed > 0)
		{
			bool		isnull;
			char	   *found = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			int64		found_version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 2, &isnull));

			/* the row this very append inserted for event i is not a conflict */
			if (strcmp(found, stream_c) == 0 && found_version == first_version + i)
				continue;
			ereport(ERROR,
					(errcode(ERRCODE_EP_EVENT_ID_CONFLICT),
					 errmsg("event id %s already exists in stream \"%s\"",
							uuid_str(evs[i].id),
							SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
					 errdetail("Event %d of the append to stream \"%s\" reuses it.", i + 1, stream_c)));
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_EP_EVENT_ID_CONFLICT),
			 errmsg("event id conflict in append to stream \"%s\"", stream_c),
			 errdetail("An event id of the batch was appended concurrently by another transaction.")));
}

/* ----------------------------------------------------------------
 * the append itself
 * ----------------------------------------------------------------
 */

static ArrayType *
ep_array(Datum *values, bool *nulls, int n, Oid elemtype, int typlen, bool byval, char align)
{
	int			dims[1];
	int			lbs[1];

	dims[0] = n;
	lbs[0] = 1;
	return construct_md_array(values, nulls, 1, dims, lbs, elemtype, typlen, byval, align);
}

/* Current version of a stream and whether it is tombstoned (no lock). */
static int64
ep_stream_row(text *stream, bool *exists, bool *tombstoned)
{
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	args[0] = PointerGetDatum(stream);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_stream_row,
									"SELECT version, tombstoned FROM ep.streams "
									"WHERE stream_id OPERATOR(pg_catalog.=) $1",
									1, argt),
						 args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "stream lookup failed");
	if (SPI_processed == 0)
	{
		*exists = false;
		*tombstoned = false;
		return 0;
	}
	*exists = true;
	*tombstoned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
ep_raise_deleted(const char *stream_c)
{
	ereport(ERROR,
			(errcode(ERRCODE_EP_STREAM_DELETED),
			 errmsg("stream \"%s\" has been deleted", stream_c),
			 errdetail("The stream was hard-deleted; its id is tombstoned and cannot be appended to.")));
}

static int
ep_uuid_cmp(const void *a, const void *b)
{
	return memcmp(DatumGetUUIDP(*(const Datum *) a), DatumGetUUIDP(*(const Datum *) b), UUID_LEN);
}

/* Reject a batch that carries the same event id twice. */
static void
ep_check_batch_ids(const char *stream_c, EpNewEvent *evs, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			k = 0,
				i;

	for (i = 0; i < n; i++)
		if (evs[i].has_id)
			ids[k++] = evs[i].id;
	qsort(ids, k, sizeof(Datum), ep_uuid_cmp);
	for (i = 1; i < k; i++)
		if (ep_uuid_cmp(&ids[i - 1], &ids[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_EP_EVENT_ID_CONFLICT),
					 errmsg("event id %s appears twice in the append to stream \"%s\"",
							uuid_str(ids[i]), stream_c)));
	pfree(ids);
}

static int64
ep_do_append(text *stream, bool has_expected, int64 expected, EpNewEvent *evs, int n)
{
	const EpCatalog *cat = ep_catalog();
	char	   *stream_c = text_to_cstring(stream);
	text	   *category = ep_category_of(VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream));
	EpSavedUser saved;
	int64		new_version;
	int64		result;
	bool		any_id = false;
	bool		isnull;
	int			i;

	ep_replica_check_writable("appending");

	for (i = 0; i < n; i++)
		any_id |= evs[i].has_id;
	if (any_id && n > 1)
		ep_check_batch_ids(stream_c, evs, n);
	ep_category_check_stream(stream, EP_CAT_APPEND, "append to");

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* 1. idempotent repetition of an earlier batch? */
	if (n > 0 && evs[0].has_id &&
		ep_idempotent_repeat(stream, stream_c, evs, n, &result))
		goto done;

	if (n == 0)
	{
		bool		exists,
					tombstoned;
		int64		v = ep_stream_row(stream, &exists, &tombstoned);

		if (tombstoned)
			ep_raise_deleted(stream_c);
		ep_check_expected(stream_c, has_expected, expected, v);
		result = v;
		goto done;
	}

	/* 2. claim the versions: one upsert, row lock on the stream only */
	{
		Oid			argt[3] = {TEXTOID, TEXTOID, INT8OID};
		Datum		args[3];

		args[0] = PointerGetDatum(stream);
		args[1] = PointerGetDatum(category);
		args[2] = Int64GetDatum(n);
		if (SPI_execute_plan(ep_spi_keep_plan(&plan_upsert_stream,
										"INSERT INTO ep.streams AS s (stream_id, category, version, created_at, updated_at) "
										"VALUES ($1, $2, $3, pg_catalog.now(), pg_catalog.now()) "
										"ON CONFLICT (stream_id) DO UPDATE "
										"SET version = s.version OPERATOR(pg_catalog.+) $3, updated_at = pg_catalog.now() "
										"RETURNING s.version, s.tombstoned",
										3, argt),
							 args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "stream upsert failed");
		new_version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
			ep_raise_deleted(stream_c);
		/* a concurrent retry of this batch may have committed meanwhile */
		if (!ep_expected_ok(has_expected, expected, new_version - n) &&
			ep_concurrent_repeat(stream, stream_c, evs, n, &result))
			goto done;
		ep_check_expected(stream_c, has_expected, expected, new_version - n);
	}

	/* 3. positions, then one INSERT of the whole batch */
	{
		Datum	   *pos = palloc(sizeof(Datum) * n);
		Datum	   *ver = palloc(sizeof(Datum) * n);
		Datum	   *ids = palloc(sizeof(Datum) * n);
		Datum	   *types = palloc(sizeof(Datum) * n);
		Datum	   *data = palloc(sizeof(Datum) * n);
		Datum	   *meta = palloc(sizeof(Datum) * n);
		bool	   *metanull = palloc(sizeof(bool) * n);
		Datum	   *schema = palloc(sizeof(Datum) * n);
		Oid			argt[9] = {INT8ARRAYOID, INT8ARRAYOID, UUIDARRAYOID, TEXTARRAYOID,
		JSONBARRAYOID, JSONBARRAYOID, INT4ARRAYOID, TEXTOID, TEXTOID};
		Datum		args[9];
		SPIPlanPtr	plan;
		int64		first_version = new_version - n + 1;
		int			ret;

		for (i = 0; i < n; i++)
		{
			ver[i] = Int64GetDatum(first_version + i);
			ids[i] = evs[i].id;
			types[i] = PointerGetDatum(evs[i].type);
			data[i] = JsonbPGetDatum(evs[i].data);
			meta[i] = evs[i].metadata ? JsonbPGetDatum(evs[i].metadata) : (Datum) 0;
			metanull[i] = evs[i].metadata == NULL;
			schema[i] = Int32GetDatum(evs[i].schema_version);
		}
		for (i = 0; i < n; i++)
			pos[i] = Int64GetDatum(ep_position_next(cat->position_seq));

		args[7] = PointerGetDatum(stream);
		args[8] = PointerGetDatum(category);

#define EP_INSERT_EVENTS \
	"INSERT INTO ep.events (global_position, stream_id, stream_version, event_id, event_type, " \
	"data, metadata, schema_version, recorded_at, category) " \
	"SELECT u.p, $8, u.v, u.i, u.t, u.d, u.m, u.s, pg_catalog.now(), $9 " \
	"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), " \
	"pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7)) " \
	"AS u(p, v, i, t, d, m, s)"

		if (n == 1)
		{
			/* one event: plain VALUES, no arrays to build and unnest */
			Oid			argt1[9] = {INT8OID, INT8OID, UUIDOID, TEXTOID, JSONBOID, JSONBOID,
			INT4OID, TEXTOID, TEXTOID};

#define EP_INSERT_ONE \
	"INSERT INTO ep.events (global_position, stream_id, stream_version, event_id, event_type, " \
	"data, metadata, schema_version, recorded_at, category) " \
	"VALUES ($1, $8, $2, $3, $4, $5, $6, $7, pg_catalog.now(), $9)"

			args[0] = pos[0];
			args[1] = ver[0];
			args[2] = ids[0];
			args[3] = types[0];
			args[4] = data[0];
			args[5] = meta[0];
			args[6] = schema[0];
			plan = any_id ?
				ep_spi_keep_plan(&plan_insert_one_id, EP_INSERT_ONE " ON CONFLICT (event_id) DO NOTHING", 9, argt1) :
				ep_spi_keep_plan(&plan_insert_one, EP_INSERT_ONE, 9, argt1);
			ret = ep_spi_execute_internal(plan, args, metanull[0] ? "     n   " : NULL);
		}
		else
		{
			args[0] = PointerGetDatum(ep_array(pos, NULL, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			args[1] = PointerGetDatum(ep_array(ver, NULL, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			args[2] = PointerGetDatum(ep_array(ids, NULL, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
			args[3] = PointerGetDatum(ep_array(types, NULL, n, TEXTOID, -1, false, TYPALIGN_INT));
			args[4] = PointerGetDatum(ep_array(data, NULL, n, JSONBOID, -1, false, TYPALIGN_INT));
			args[5] = PointerGetDatum(ep_array(meta, metanull, n, JSONBOID, -1, false, TYPALIGN_INT));
			args[6] = PointerGetDatum(ep_array(schema, NULL, n, INT4OID, 4, true, TYPALIGN_INT));
			plan = any_id ?
				ep_spi_keep_plan(&plan_insert_ids, EP_INSERT_EVENTS " ON CONFLICT (event_id) DO NOTHING", 9, argt) :
				ep_spi_keep_plan(&plan_insert, EP_INSERT_EVENTS, 9, argt);
			ret = ep_spi_execute_internal(plan, args, NULL);
		}

		if (ret != SPI_OK_INSERT)
			elog(ERROR, "event insert failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 0 && ep_concurrent_repeat(stream, stream_c, evs, n, &result))
			goto done;
		if ((int) SPI_processed != n)
			ep_report_id_conflict(stream_c, evs, n, first_version);
		result = new_version;
	}

	/* 4. listeners of ep_events are woken right after commit */
	ep_notify_appended();

done:
	SPI_finish();
	ep_restore_user(&saved);
	return result;
}

/*
 * ep.append(stream_id, event_type, data, metadata, expected_version, event_id)
 */
PG_FUNCTION_INFO_V1(ep_append);
Datum
ep_append(PG_FUNCTION_ARGS)
{
	text	   *stream = ep_arg_stream_id(fcinfo, 0);
	EpNewEvent ev;

	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(PG_ARGISNULL(1) ? ERRCODE_NULL_VALUE_NOT_ALLOWED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_type must be a non-empty string")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("data must not be null"),
				 errhint("Use '{}' for an event without data.")));
	ep_check_expected_arg(fcinfo, 4);

	memset(&ev, 0, sizeof(ev));
	ev.type = PG_GETARG_TEXT_PP(1);
	ev.data = PG_GETARG_JSONB_P(2);
	ev.metadata = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	ep_check_metadata(ev.metadata, -1);
	ev.schema_version = 1;
	if (PG_ARGISNULL(5))
		ev.id = ep_random_uuid();
	else
	{
		ev.id = PG_GETARG_DATUM(5);
		ev.has_id = true;
	}

	PG_RETURN_INT64(ep_do_append(stream, !PG_ARGISNULL(4),
								 PG_ARGISNULL(4) ? 0 : PG_GETARG_INT64(4), &ev, 1));
}

/*
 * ep.append_events(stream_id, events jsonb, expected_version)
 */
PG_FUNCTION_INFO_V1(ep_append_events);
Datum
ep_append_events(PG_FUNCTION_ARGS)
{
	text	   *stream = ep_arg_stream_id(fcinfo, 0);
	EpNewEvent *evs;
	int			n;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events must not be null")));
	ep_check_expected_arg(fcinfo, 2);
	evs = ep_parse_events(PG_GETARG_JSONB_P(1), &n);

	PG_RETURN_INT64(ep_do_append(stream, !PG_ARGISNULL(2),
								 PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2), evs, n));
}

/*
 * ep.stream_version(stream_id): 0 when the stream does not exist.
 */
PG_FUNCTION_INFO_V1(ep_stream_version);
Datum
ep_stream_version(PG_FUNCTION_ARGS)
{
	text	   *stream = ep_arg_stream_id(fcinfo, 0);
	bool		exists,
				tombstoned;
	int64		v;
	EpSavedUser saved;

	ep_category_check_stream(stream, EP_CAT_READ, "read");
	/* as the extension owner, like the append path: one plan, no policies */
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	v = ep_stream_row(stream, &exists, &tombstoned);
	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_INT64(v);
}

/* Lock the stream's row; returns false when there is none. */
static bool
ep_lock_stream(text *stream, int64 *version, bool *tombstoned)
{
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	args[0] = PointerGetDatum(stream);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_lock_stream,
									"SELECT version, tombstoned FROM ep.streams "
									"WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
									1, argt),
						 args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "stream lookup failed");
	if (SPI_processed == 0)
		return false;
	*version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*tombstoned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

static void
ep_exec(const char *sql, int nargs, Oid *argtypes, Datum *args, const char *nulls, int expect)
{
	int			ret = SPI_execute_with_args(sql, nargs, argtypes, args, nulls, false, 0);

	if (ret != expect)
		elog(ERROR, "statement failed (%s): %s", SPI_result_code_string(ret), sql);
}

/*
 * ep.delete_stream(stream_id, expected_version, hard)
 *
 * Soft: every event up to the current version is hidden from reads (the
 * stream's deleted_before mark); a later append continues the numbering
 * and its events are visible. Hard: the events are removed and the id is
 * tombstoned, so later appends fail with EP002. Deleting a deleted stream
 * again does nothing.
 */
PG_FUNCTION_INFO_V1(ep_delete_stream);
Datum
ep_delete_stream(PG_FUNCTION_ARGS)
{
	text	   *stream = ep_arg_stream_id(fcinfo, 0);
	char	   *stream_c = text_to_cstring(stream);
	bool		hard = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
	EpSavedUser saved;
	int64		version = 0;
	bool		tombstoned = false;
	bool		exists;
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];

	ep_replica_check_writable("ep.delete_stream");

	ep_check_expected_arg(fcinfo, 1);
	ep_catalog();
	ep_category_check_stream(stream, EP_CAT_ADMIN, "delete streams of");
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (hard)
	{
		/*
		 * A hard delete needs the row to lock even when the stream does not
		 * exist yet, or a concurrent first append could slip past the
		 * expected-version check.
		 */
		Oid			argt2[2] = {TEXTOID, TEXTOID};
		Datum		args2[2];

		args2[0] = PointerGetDatum(stream);
		args2[1] = PointerGetDatum(ep_category_of(VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream)));
		ep_exec("INSERT INTO ep.streams (stream_id, category, version) VALUES ($1, $2, 0) "
				"ON CONFLICT (stream_id) DO NOTHING",
				2, argt2, args2, NULL, SPI_OK_INSERT);
	}
	exists = ep_lock_stream(stream, &version, &tombstoned);
	if (!tombstoned)
		ep_check_expected(stream_c, !PG_ARGISNULL(1),
						  PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1), version);
	args[0] = PointerGetDatum(stream);

	if (tombstoned)
	{
		/* already hard-deleted: nothing left to do */
	}
	else if (hard)
	{
		/* the row exists: it was inserted above when the stream had none */
		ep_exec("UPDATE ep.streams SET tombstoned = true, deleted_at = pg_catalog.now(), "
				"updated_at = pg_catalog.now() WHERE stream_id OPERATOR(pg_catalog.=) $1",
				1, argt, args, NULL, SPI_OK_UPDATE);
		if (ep_spi_execute_internal(ep_spi_keep_plan(&plan_hard_delete,
													 "DELETE FROM ep.events WHERE stream_id OPERATOR(pg_catalog.=) $1",
													 1, argt),
									args, NULL) != SPI_OK_DELETE)
			elog(ERROR, "hard delete of stream \"%s\" failed", stream_c);
	}
	else if (exists && version > 0)
		ep_exec("UPDATE ep.streams SET deleted_before = version OPERATOR(pg_catalog.+) 1, "
				"deleted_at = pg_catalog.now(), updated_at = pg_catalog.now() "
				"WHERE stream_id OPERATOR(pg_catalog.=) $1",
				1, argt, args, NULL, SPI_OK_UPDATE);

	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_VOID();
}

/*
 * ep.set_stream_metadata(stream_id, max_count, max_age, truncate_before)
 *
 * Sets all three limits (NULL removes one). Reads hide what falls outside
 * at once; a scavenge removes it physically. A stream that does not exist
 * yet gets a row at version 0, so limits can be set before the first
 * append.
 */
PG_FUNCTION_INFO_V1(ep_set_stream_metadata);
Datum
ep_set_stream_metadata(PG_FUNCTION_ARGS)
{
	text	   *stream = ep_arg_stream_id(fcinfo, 0);
	char	   *stream_c = text_to_cstring(stream);
	EpSavedUser saved;
	Oid			argt[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	int64		version;
	bool		tombstoned = false;

	ep_replica_check_writable("ep.set_stream_metadata");

	if (!PG_ARGISNULL(1) && PG_GETARG_INT64(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative")));
	if (!PG_ARGISNULL(2))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(2);
		Interval	zero;

		memset(&zero, 0, sizeof(zero));
		if (DatumGetBool(DirectFunctionCall2(interval_le, IntervalPGetDatum(iv),
											 IntervalPGetDatum(&zero))))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_age must be a positive interval")));
	}
	if (!PG_ARGISNULL(3) && PG_GETARG_INT64(3) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("truncate_before must not be negative")));

	ep_catalog();
	ep_category_check_stream(stream, EP_CAT_ADMIN, "set stream metadata in");
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	args[0] = PointerGetDatum(stream);
	args[1] = PointerGetDatum(ep_category_of(VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream)));
	ep_exec("INSERT INTO ep.streams (stream_id, category, version) VALUES ($1, $2, 0) "
			"ON CONFLICT (stream_id) DO NOTHING",
			2, argt, args, NULL, SPI_OK_INSERT);
	if (ep_lock_stream(stream, &version, &tombstoned) && tombstoned)
		ep_raise_deleted(stream_c);

	{
		Oid			uargt[4] = {TEXTOID, INT8OID, INTERVALOID, INT8OID};
		Datum		uargs[4];
		char		unulls[4] = {' ', ' ', ' ', ' '};
		int			i;

		uargs[0] = PointerGetDatum(stream);
		for (i = 1; i <= 3; i++)
		{
			uargs[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
			unulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		}
		ep_exec("UPDATE ep.streams SET max_count = $2, max_age = $3, truncate_before = $4, "
				"updated_at = pg_catalog.now() WHERE stream_id OPERATOR(pg_catalog.=) $1",
				4, uargt, uargs, unulls, SPI_OK_UPDATE);
	}

	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_VOID();
}
