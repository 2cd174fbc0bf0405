/*-------------------------------------------------------------------------
 *
 * stream_read.c
 *	  Reading the event store: ep.read_stream, ep.read_all,
 *	  ep.read_category, and the global scan that ep.poll shares.
 *
 * Every read is a direct index scan of ep.events:
 *	- read_stream: (stream_id, stream_version), forwards or backwards, with
 *	  the statement's snapshot (a transaction sees its own appends).
 *	- read_all: (global_position); read_category: (category,
 *	  global_position). Both stop below the horizon of position.c and scan
 *	  with a snapshot taken after it, so a reader that resumes from the last
 *	  position it saw never skips an event (see position.c). Events of the
 *	  reader's own open transaction are not returned by global reads.
 *
 * Category ownership (category.c): read_stream of an owned category the
 * reader may not read raises 42501; global reads skip such categories
 * (the list is computed once per call; with no owned category it is
 * empty and costs nothing per row).
 *
 * Stream limits (max_count, max_age, truncate_before, soft delete) hide
 * events at once. Streams carrying limits are found through the partial
 * index ep.streams_limited_idx; when there are none, global reads pay
 * nothing; when there are few they are loaded into a hash table per call;
 * when there are many, each stream met is looked up once per call.
 *
 * Upcasting (upcast.c): every row passes through ep_read_emit, which lifts
 * it to the latest schema version of its type in a per-row memory context
 * before it is copied into the tuplestore; with no upcaster registered the
 * rows go straight in.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xlog.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "category.h"
#include "position.h"
#include "stream_read.h"
#include "upcast.h"

#define EP_LIMITS_PRELOAD_MAX 5000

typedef struct EpLimits
{
	bool		limited;
	int64		min_version;	/* lowest visible version */
	bool		has_max_age;
	TimestampTz cutoff;			/* events recorded before it are hidden */
} EpLimits;

typedef struct EpLimitsEntry
{
	text	   *key;			/* hash key: pointer to stream id */
	EpLimits	limits;
} EpLimitsEntry;

typedef struct EpLimitsCache
{
	bool		any;			/* some stream has limits */
	bool		complete;		/* hash holds every limited stream */
	HTAB	   *hash;
	SPIPlanPtr	lookup;
} EpLimitsCache;

static SPIPlanPtr plan_limits_one = NULL;
static SPIPlanPtr plan_limits_all = NULL;

text *
ep_category_of(const char *stream_id, int len)
{
	const char *dash = memchr(stream_id, '-', len);

	return cstring_to_text_with_len(stream_id, dash ? (int) (dash - stream_id) : len);
}

/* dynahash callbacks for keys that are pointers to text (also upcast.c) */
uint32
ep_text_key_hash(const void *key, Size keysize)
{
	text	   *t = *(text *const *) key;

	return hash_bytes((const unsigned char *) VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

int
ep_text_key_match(const void *key1, const void *key2, Size keysize)
{
	text	   *a = *(text *const *) key1;
	text	   *b = *(text *const *) key2;
	int			la = VARSIZE_ANY_EXHDR(a);

	if (la != (int) VARSIZE_ANY_EXHDR(b))
		return 1;
	return memcmp(VARDATA_ANY(a), VARDATA_ANY(b), la);
}

int64
ep_read_max_count(FunctionCallInfo fcinfo, int argno)
{
	int64		n;

	if (PG_ARGISNULL(argno))
		return -1;
	n = PG_GETARG_INT32(argno);
	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative")));
	return n;
}

/* Limits of one stream from a row (version, truncate_before, deleted_before, max_count, max_age). */
static void
ep_limits_from_row(HeapTuple tup, TupleDesc desc, int firstcol, TimestampTz now, EpLimits *l)
{
	bool		isnull;
	int64		version = DatumGetInt64(SPI_getbinval(tup, desc, firstcol, &isnull));
	Datum		d;

	l->limited = false;
	l->min_version = 1;
	l->has_max_age = false;

	d = SPI_getbinval(tup, desc, firstcol + 1, &isnull);	/* truncate_before */
	if (!isnull && DatumGetInt64(d) > l->min_version)
		l->min_version = DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, firstcol + 2, &isnull);	/* deleted_before */
	if (!isnull && DatumGetInt64(d) > l->min_version)
		l->min_version = DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, firstcol + 3, &isnull);	/* max_count */
	if (!isnull && version - DatumGetInt64(d) + 1 > l->min_version)
		l->min_version = version - DatumGetInt64(d) + 1;
	d = SPI_getbinval(tup, desc, firstcol + 4, &isnull);	/* max_age */
	if (!isnull)
	{
		l->has_max_age = true;
		l->cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
															TimestampTzGetDatum(now), d));
	}
	l->limited = l->min_version > 1 || l->has_max_age;
}

#define EP_LIMITS_COLUMNS "version, truncate_before, deleted_before, max_count, max_age"
#define EP_LIMITED_PREDICATE \
	"(truncate_before IS NOT NULL OR deleted_before IS NOT NULL OR max_count IS NOT NULL OR max_age IS NOT NULL)"

/* Limits of one stream, looked up in ep.streams. */
static void
ep_limits_lookup(text *stream, EpLimits *l)
{
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];

	if (plan_limits_one == NULL)
	{
		SPIPlanPtr	p = SPI_prepare("SELECT " EP_LIMITS_COLUMNS ", tombstoned FROM ep.streams "
									"WHERE stream_id OPERATOR(pg_catalog.=) $1", 1, argt);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed");
		SPI_keepplan(p);
		plan_limits_one = p;
	}
	args[0] = PointerGetDatum(stream);
	if (SPI_execute_plan(plan_limits_one, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "stream lookup failed");
	if (SPI_processed == 0)
	{
		l->limited = false;
		l->min_version = 1;
		l->has_max_age = false;
		return;
	}
	ep_limits_from_row(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
					   GetCurrentTransactionStartTimestamp(), l);
}

/*
 * Limits and state of one stream, for other modules (aggregate, retention):
 * the same visibility rule read_stream applies. SPI must be connected.
 */
void
ep_read_stream_limits(text *stream, EpStreamLimits *out)
{
	EpLimits	l;

	memset(out, 0, sizeof(*out));
	ep_limits_lookup(stream, &l);
	out->min_version = l.min_version;
	out->has_max_age = l.has_max_age;
	out->cutoff = l.has_max_age ? l.cutoff : 0;
	out->limited = l.limited;
	if (SPI_processed > 0)
	{
		bool		isnull;

		out->exists = true;
		out->version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
		out->tombstoned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 6, &isnull));
		/* a soft-deleted stream (deleted_before set) counts as limited */
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		if (!isnull)
			out->limited = true;
	}
}

static void
ep_limits_cache_init(EpLimitsCache *cache)
{
	HASHCTL		ctl;
	uint64		i;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	memset(cache, 0, sizeof(*cache));
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_limits_all,
										  "SELECT stream_id, " EP_LIMITS_COLUMNS " FROM ep.streams WHERE "
										  EP_LIMITED_PREDICATE " LIMIT " CppAsString2(EP_LIMITS_PRELOAD_MAX) " + 1",
										  0, NULL),
						 NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "stream limits lookup failed");
	if (SPI_processed == 0)
		return;

	cache->any = true;
	cache->complete = SPI_processed <= EP_LIMITS_PRELOAD_MAX;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(text *);
	ctl.entrysize = sizeof(EpLimitsEntry);
	ctl.hash = ep_text_key_hash;
	ctl.match = ep_text_key_match;
	ctl.hcxt = CurrentMemoryContext;
	cache->hash = hash_create("event_patterns stream limits", 256, &ctl,
							  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	if (!cache->complete)
		return;
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		text	   *key = DatumGetTextPCopy(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		EpLimitsEntry *e;
		bool		found;

		e = hash_search(cache->hash, &key, HASH_ENTER, &found);
		e->key = key;
		ep_limits_from_row(tup, SPI_tuptable->tupdesc, 2, now, &e->limits);
	}
}

/* Is the event (stream, version, recorded_at) hidden by its stream's limits? */
static bool
ep_limits_hide(EpLimitsCache *cache, text *stream, int64 version, TimestampTz recorded_at)
{
	EpLimitsEntry *e;
	bool		found;

	if (!cache->any)
		return false;
	e = hash_search(cache->hash, &stream, HASH_FIND, &found);
	if (e == NULL)
	{
		if (cache->complete)
			return false;
		{
			text	   *key = DatumGetTextPCopy(PointerGetDatum(stream));
			EpLimits	l;

			ep_limits_lookup(key, &l);
			e = hash_search(cache->hash, &key, HASH_ENTER, &found);
			e->key = key;
			e->limits = l;
		}
	}
	if (!e->limits.limited)
		return false;
	if (version < e->limits.min_version)
		return true;
	if (e->limits.has_max_age && recorded_at < e->limits.cutoff)
		return true;
	return false;
}

void
ep_read_filter_types(EpGlobalFilter *filter, ArrayType *types)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				k = 0;

	deconstruct_array(types, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	filter->types = palloc(sizeof(text *) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			filter->types[k++] = DatumGetTextPP(elems[i]);
	filter->ntypes = k;
	if (k == 0)
	{
		/* an empty list matches nothing; keep one impossible entry */
		filter->types[0] = NULL;
		filter->ntypes = -1;
	}
}

void
ep_read_check_consumer(bool member_null, int member, bool size_null, int size,
					   EpGlobalFilter *filter)
{
	filter->consumer_size = 0;
	if (member_null && size_null)
		return;
	if (member_null || size_null)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_member and consumer_size must be given together")));
	if (size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_size must be at least 1")));
	if (member < 0 || member >= size)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_member must be between 0 and %d", size - 1)));
	filter->consumer_member = member;
	filter->consumer_size = size;
}

static inline uint32
ep_stream_hash(text *stream)
{
	return hash_bytes((const unsigned char *) VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream));
}

static bool
ep_text_eq(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/*
 * Rows that may need upcasting are handed to the caller's tuplestore in
 * batches, so that the upcasters of a batch run in one call of the owner
 * primitive (see ep_upcast_rows); the rows are copied out of the scan's
 * buffers into rowcxt, which is reset after each batch.
 */
#define EP_EMIT_BATCH	64

typedef struct EpEmit
{
	ReturnSetInfo *rsinfo;
	EpUpcastState *up;
	MemoryContext rowcxt;
	int			n;
	Datum	   *values[EP_EMIT_BATCH];
	bool	   *isnull[EP_EMIT_BATCH];
} EpEmit;

static void
ep_emit_init(EpEmit *emit, ReturnSetInfo *rsinfo, EpUpcastState *up, MemoryContext rowcxt)
{
	emit->rsinfo = rsinfo;
	emit->up = up;
	emit->rowcxt = rowcxt;
	emit->n = 0;
}

static void
ep_emit_flush(EpEmit *emit)
{
	MemoryContext old;
	int			i;

	if (emit->n == 0)
		return;
	old = MemoryContextSwitchTo(emit->rowcxt);
	ep_upcast_rows(emit->up, emit->n, emit->values, emit->isnull);
	MemoryContextSwitchTo(old);
	for (i = 0; i < emit->n; i++)
		tuplestore_putvalues(emit->rsinfo->setResult, emit->rsinfo->setDesc,
							 emit->values[i], emit->isnull[i]);
	emit->n = 0;
	MemoryContextReset(emit->rowcxt);
}

/* Hand one row of ep.events to the caller's tuplestore, upcast when an upcaster applies. */
static void
ep_read_emit(EpEmit *emit, TupleTableSlot *slot)
{
	int			natts = slot->tts_tupleDescriptor->natts;
	MemoryContext old;
	HeapTuple	copy;

	if (emit->up == NULL)
	{
		tuplestore_putvalues(emit->rsinfo->setResult, emit->rsinfo->setDesc,
							 slot->tts_values, slot->tts_isnull);
		return;
	}
	old = MemoryContextSwitchTo(emit->rowcxt);
	copy = ExecCopySlotHeapTuple(slot);
	emit->values[emit->n] = palloc(sizeof(Datum) * natts);
	emit->isnull[emit->n] = palloc(sizeof(bool) * natts);
	heap_deform_tuple(copy, slot->tts_tupleDescriptor,
					  emit->values[emit->n], emit->isnull[emit->n]);
	MemoryContextSwitchTo(old);
	if (++emit->n == EP_EMIT_BATCH)
		ep_emit_flush(emit);
}

/*
 * The global scan behind read_all, read_category and poll: events with
 * after < global_position < horizon, ascending, filtered, at most
 * max_count (-1: no limit), into the function's tuplestore.
 */
void
ep_read_global(FunctionCallInfo fcinfo, int64 after, int64 max_count,
			   const EpGlobalFilter *filter)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const EpCatalog *cat = ep_catalog();
	EpLimitsCache limits;
	int64		horizon;
	Snapshot	snap;
	Relation	rel;
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[3];
	int			nkeys = 0;
	AttrNumber	posatt;
	int64		count = 0;
	EpUpcastState *up;
	MemoryContext rowcxt;
	EpEmit		emit;
	text	  **hidden;
	int			nhidden;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("global reads are not available during recovery"),
				 errdetail("A standby cannot see which positions the primary has reserved but not yet committed, so a resuming reader could skip events."),
				 errhint("Read global order from the primary; ep.read_stream works on a standby.")));
	if (max_count == 0 || filter->ntypes < 0)
		return;

	horizon = ep_position_horizon(cat->position_seq);
	if (horizon <= after + 1)
		return;

	/* owned categories the reader may not read are skipped (category.c) */
	hidden = ep_category_hidden(GetUserId(), &nhidden);
	if (hidden != NULL && filter->category != NULL &&
		ep_category_in(hidden, nhidden, filter->category))
		return;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ep_limits_cache_init(&limits);
	up = ep_upcast_begin();
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "event_patterns read row",
								   ALLOCSET_DEFAULT_SIZES);
	ep_emit_init(&emit, rsinfo, up, rowcxt);

	/* a snapshot taken after the horizon: see position.c */
	snap = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(cat->events, AccessShareLock);
	if (filter->category != NULL)
	{
		idx = index_open(cat->events_category_idx, AccessShareLock);
		ScanKeyEntryInitialize(&keys[nkeys++], 0, 1, BTEqualStrategyNumber, InvalidOid,
							   DEFAULT_COLLATION_OID, F_TEXTEQ, PointerGetDatum(filter->category));
		posatt = 2;
	}
	else
	{
		idx = index_open(cat->events_pkey, AccessShareLock);
		posatt = 1;
	}
	ScanKeyInit(&keys[nkeys++], posatt, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	ScanKeyInit(&keys[nkeys++], posatt, BTLessStrategyNumber, F_INT8LT, Int64GetDatum(horizon));

	scan = index_beginscan(rel, idx, snap, nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	slot = table_slot_create(rel, NULL);

	while ((max_count < 0 || count < max_count) &&
		   index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		text	   *stream;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(slot);
		stream = DatumGetTextPP(slot->tts_values[Anum_ep_events_stream_id - 1]);

		if (filter->ntypes > 0)
		{
			text	   *type = DatumGetTextPP(slot->tts_values[Anum_ep_events_event_type - 1]);
			int			i;

			for (i = 0; i < filter->ntypes; i++)
				if (ep_text_eq(type, filter->types[i]))
					break;
			if (i == filter->ntypes)
				continue;
		}
		if (hidden != NULL && filter->category == NULL &&
			ep_category_in(hidden, nhidden,
						   DatumGetTextPP(slot->tts_values[Anum_ep_events_category - 1])))
			continue;
		if (filter->consumer_size > 0 &&
			ep_stream_hash(stream) % (uint32) filter->consumer_size != (uint32) filter->consumer_member)
			continue;
		if (ep_limits_hide(&limits, stream,
						   DatumGetInt64(slot->tts_values[Anum_ep_events_stream_version - 1]),
						   DatumGetTimestampTz(slot->tts_values[Anum_ep_events_recorded_at - 1])))
			continue;

		ep_read_emit(&emit, slot);
		count++;
	}
	ep_emit_flush(&emit);

	MemoryContextDelete(rowcxt);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);
	SPI_finish();
}

/*
 * ep.read_stream(stream_id, from_version, max_count, backwards)
 */
PG_FUNCTION_INFO_V1(ep_read_stream);
Datum
ep_read_stream(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	const EpCatalog *cat;
	text	   *stream;
	bool		backwards = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);
	int64		max_count = ep_read_max_count(fcinfo, 2);
	EpLimits	limits;
	Relation	rel;
	Relation	idx;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[3];
	int			nkeys = 0;
	int64		count = 0;
	EpUpcastState *up;
	MemoryContext rowcxt;
	EpEmit		emit;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be null")));
	stream = PG_GETARG_TEXT_PP(0);
	cat = ep_catalog();
	ep_category_check_stream(stream, EP_CAT_READ, "read");
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (max_count == 0)
		PG_RETURN_NULL();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ep_limits_lookup(stream, &limits);
	SPI_finish();
	up = ep_upcast_begin();
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "event_patterns read row",
								   ALLOCSET_DEFAULT_SIZES);
	ep_emit_init(&emit, rsinfo, up, rowcxt);

	rel = table_open(cat->events, AccessShareLock);
	idx = index_open(cat->events_stream_idx, AccessShareLock);
	ScanKeyEntryInitialize(&keys[nkeys++], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   DEFAULT_COLLATION_OID, F_TEXTEQ, PointerGetDatum(stream));
	if (!backwards)
	{
		int64		from = PG_ARGISNULL(1) ? 1 : PG_GETARG_INT64(1);

		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(Max(from, limits.min_version)));
	}
	else
	{
		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(limits.min_version));
		if (!PG_ARGISNULL(1))
			ScanKeyInit(&keys[nkeys++], 2, BTLessEqualStrategyNumber, F_INT8LE,
						PG_GETARG_DATUM(1));
	}

	scan = index_beginscan(rel, idx, GetActiveSnapshot(), nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	slot = table_slot_create(rel, NULL);
	while ((max_count < 0 || count < max_count) &&
		   index_getnext_slot(scan, backwards ? BackwardScanDirection : ForwardScanDirection, slot))
	{
		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(slot);
		if (limits.has_max_age &&
			DatumGetTimestampTz(slot->tts_values[Anum_ep_events_recorded_at - 1]) < limits.cutoff)
			continue;
		ep_read_emit(&emit, slot);
		count++;
	}
	ep_emit_flush(&emit);
	MemoryContextDelete(rowcxt);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	PG_RETURN_NULL();
}

/*
 * ep.read_all(after_position, max_count, event_types)
 */
PG_FUNCTION_INFO_V1(ep_read_all);
Datum
ep_read_all(PG_FUNCTION_ARGS)
{
	EpGlobalFilter filter;
	int64		after = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	int64		max_count = ep_read_max_count(fcinfo, 1);

	memset(&filter, 0, sizeof(filter));
	if (!PG_ARGISNULL(2))
		ep_read_filter_types(&filter, PG_GETARG_ARRAYTYPE_P(2));
	ep_read_global(fcinfo, after, max_count, &filter);
	PG_RETURN_NULL();
}

/*
 * ep.read_category(category, after_position, max_count, consumer_member, consumer_size)
 */
PG_FUNCTION_INFO_V1(ep_read_category);
Datum
ep_read_category(PG_FUNCTION_ARGS)
{
	EpGlobalFilter filter;
	int64		after = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
	int64		max_count = ep_read_max_count(fcinfo, 2);

	memset(&filter, 0, sizeof(filter));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("category must not be null")));
	filter.category = PG_GETARG_TEXT_PP(0);
	ep_read_check_consumer(PG_ARGISNULL(3), PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3),
						   PG_ARGISNULL(4), PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4),
						   &filter);
	ep_read_global(fcinfo, after, max_count, &filter);
	PG_RETURN_NULL();
}

/*
 * ep.consumer_member(stream_id, consumer_size): the member of a consumer
 * group of that size that receives the stream's events.
 */
PG_FUNCTION_INFO_V1(ep_consumer_member);
Datum
ep_consumer_member(PG_FUNCTION_ARGS)
{
	int32		size = PG_GETARG_INT32(1);

	if (size < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_size must be at least 1")));
	PG_RETURN_INT32((int32) (ep_stream_hash(PG_GETARG_TEXT_PP(0)) % (uint32) size));
}
