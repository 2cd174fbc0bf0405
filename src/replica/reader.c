/*-------------------------------------------------------------------------
 *
 * reader.c
 *	  The reader side of read nodes: whether this database follows a store,
 *	  its read horizon, EP005 for writes, ep.wait_for_position,
 *	  ep.last_position and the wake-up of the worker when the writer's
 *	  horizon arrives.
 *
 * A database is a reader while ep.store_follow holds a row (written by
 * ep.follow_store, follow.c).  Each backend caches that fact and the
 * subscription's OID; the cache is dropped on any relcache invalidation of
 * ep.store_follow (follow/unfollow send one) and, for the readiness of the
 * subscription's tables, on invalidations of pg_subscription_rel.
 *
 * The horizon on a reader is the replicated ep.store_horizon.position + 1
 * (see replica.h for why it never lets a read skip an event), read with a
 * fresh snapshot; the callers (stream_read.c, projection.c) take their
 * event snapshot afterwards, as on the writer.  While the subscription's
 * initial copy is still running (a table not yet in state 'r') the tables
 * are not consistent with each other (each is copied at its own moment):
 * the horizon is then 1, nothing is readable yet.
 *
 * Projections on a reader decode the reader's own WAL (the apply worker's
 * inserts carry a replication origin, which the decoder does not filter).
 * Their "cover" needs the reader's analogue of the writer's high-water
 * mark: ep_replica_round_bounds reads H first, then the largest position
 * present; when that is below H, every event at or above H is applied
 * after this moment (position.c's argument, with "applied" for "drawn").
 *
 * The apply worker fires the ENABLE REPLICA trigger
 * ep._store_horizon_applied on ep.store_horizon; the commit callback then
 * wakes this database's worker, so reader projections follow at once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_subscription.h"
#include "catalog/pg_subscription_rel.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "position.h"
#include "replica/replica.h"
#include "worker.h"

/* ep.store_follow and ep.store_horizon columns */
#define Anum_store_follow_name			1
#define Anum_store_follow_subscription	2
#define Anum_store_follow_source		4
#define Anum_store_horizon_position		2

typedef struct EpReaderCache
{
	bool		valid;
	bool		is_reader;
	bool		ready;			/* every table of the subscription in state 'r' */
	Oid			follow_relid;
	Oid			horizon_relid;
	Oid			subid;
	char		source[256];	/* writer, for messages (no password) */
} EpReaderCache;

static EpReaderCache reader = {false};
static bool callbacks_registered = false;
static bool wake_at_commit = false;
static int64 session_last_position = 0;

static void
ep_reader_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == reader.follow_relid)
		reader.valid = false;
}

static void
ep_reader_subrel_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	reader.ready = false;
}

void
ep_replica_forget(void)
{
	reader.valid = false;
}

/* First row of a small table, read with a fresh snapshot; false if none. */
static bool
ep_first_row(Oid relid, int natts, Datum *values, bool *nulls)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);
	HeapTuple	tup = heap_getnext(scan, ForwardScanDirection);
	bool		found = HeapTupleIsValid(tup);

	if (found)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		int			i;

		for (i = 0; i < natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			values[i] = heap_getattr(tup, i + 1, desc, &nulls[i]);
			if (!nulls[i])
				values[i] = datumCopy(values[i], att->attbyval, att->attlen);
		}
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return found;
}

static void
ep_reader_load(void)
{
	const EpCatalog *cat;
	Datum		values[4];
	bool		nulls[4];

	if (reader.valid)
		return;
	if (!callbacks_registered)
	{
		ep_register_relcache_callback(ep_reader_relcache_cb);
		CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, ep_reader_subrel_cb, (Datum) 0);
		callbacks_registered = true;
	}
	memset(&reader, 0, sizeof(reader));
	cat = ep_catalog();
	if (cat->version >= EP_VERSION_0_2)
	{
		reader.follow_relid = get_relname_relid("store_follow", cat->schema);
		reader.horizon_relid = get_relname_relid("store_horizon", cat->schema);
	}
	if (OidIsValid(reader.follow_relid) && OidIsValid(reader.horizon_relid) &&
		ep_first_row(reader.follow_relid, 4, values, nulls))
	{
		reader.is_reader = true;
		reader.subid = get_subscription_oid(NameStr(*DatumGetName(values[Anum_store_follow_subscription - 1])), true);
		if (!nulls[Anum_store_follow_source - 1])
			strlcpy(reader.source, TextDatumGetCString(values[Anum_store_follow_source - 1]),
					sizeof(reader.source));
		else
			strlcpy(reader.source, TextDatumGetCString(values[Anum_store_follow_name - 1]),
					sizeof(reader.source));
	}
	reader.valid = true;
}

bool
ep_replica_is_reader(void)
{
	ep_reader_load();
	return reader.is_reader;
}

/*
 * EP005: the store of a reader is a copy of the writer's; "what" names the
 * refused operation ("append", "delete_stream", ...).
 */
void
ep_replica_check_writable(const char *what)
{
	if (!ep_replica_is_reader())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_EP_READ_ONLY_COPY),
			 errmsg("ep.events is a read-only copy on this database: %s is not allowed", what),
			 errdetail("This database follows the store of another database (ep.follow_store)."),
			 errhint("Write on the writer: %s.", reader.source)));
}

/* Every table of the subscription has finished its initial copy. */
static bool
ep_reader_ready(void)
{
	List	   *notready;

	if (reader.ready)
		return true;
	/* a subscription dropped by hand leaves a frozen, consistent copy */
	if (!OidIsValid(reader.subid))
		return true;
	notready = GetSubscriptionNotReadyRelations(reader.subid);
	reader.ready = (notready == NIL);
	list_free_deep(notready);
	return reader.ready;
}

/*
 * On a reader: *horizon = the exclusive upper bound of readable positions
 * (replicated), and true.  False on a writer (or a plain database).
 */
bool
ep_replica_reader_horizon(int64 *horizon)
{
	Datum		values[2];
	bool		nulls[2];

	if (!ep_replica_is_reader())
		return false;
	*horizon = 1;
	if (!ep_reader_ready())
		return true;
	if (ep_first_row(reader.horizon_relid, 2, values, nulls) &&
		!nulls[Anum_store_horizon_position - 1])
		*horizon = DatumGetInt64(values[Anum_store_horizon_position - 1]) + 1;
	return true;
}

/*
 * Bounds of a projection round on a reader (projection.c): H first, then
 * the largest position present ("water"), each with a fresh snapshot.
 */
bool
ep_replica_round_bounds(int64 *water, int64 *horizon)
{
	const EpCatalog *cat;
	Relation	rel;
	Relation	idx;
	Snapshot	snap;
	IndexScanDesc scan;
	TupleTableSlot *slot;

	if (!ep_replica_reader_horizon(horizon))
		return false;
	cat = ep_catalog();
	*water = 0;
	snap = RegisterSnapshot(GetLatestSnapshot());
	rel = table_open(cat->events, AccessShareLock);
	idx = index_open(cat->events_pkey, AccessShareLock);
	scan = index_beginscan(rel, idx, snap, 0, 0);
	index_rescan(scan, NULL, 0, NULL, 0);
	slot = table_slot_create(rel, NULL);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;
		Datum		v = slot_getattr(slot, 1, &isnull);

		if (!isnull)
			*water = DatumGetInt64(v);
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);
	return true;
}

/* ------------------------------------------------------------------------
 * Worker wake-up when the writer's horizon is applied
 * ------------------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(ep_store_horizon_applied);
Datum
ep_store_horizon_applied(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._store_horizon_applied() must be called as a trigger")));
	if (RelationGetRelid(trigdata->tg_relation) !=
		get_relname_relid("store_horizon", get_rel_namespace(ep_catalog()->events)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._store_horizon_applied() fires only on ep.store_horizon")));
	wake_at_commit = true;
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_newtuple);
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/* Commit callback: true (once) when this transaction applied a horizon. */
bool
ep_replica_take_wake(void)
{
	bool		w = wake_at_commit;

	wake_at_commit = false;
	return w;
}

/* ------------------------------------------------------------------------
 * Read-your-writes: ep.last_position() and ep.wait_for_position()
 * ------------------------------------------------------------------------
 */
void
ep_replica_note_commit(int64 last_position)
{
	if (last_position > 0)
		session_last_position = last_position;
}

PG_FUNCTION_INFO_V1(ep_last_position);
Datum
ep_last_position(PG_FUNCTION_ARGS)
{
	int64		pos = ep_position_last_in_xact();

	if (pos <= 0)
		pos = session_last_position;
	if (pos <= 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(pos);
}

PG_FUNCTION_INFO_V1(ep_wait_for_position);
Datum
ep_wait_for_position(PG_FUNCTION_ARGS)
{
	int64		target;
	Interval   *timeout;
	int64		timeout_ms;
	TimestampTz deadline;
	const EpCatalog *cat;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("position must not be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be NULL")));
	target = PG_GETARG_INT64(0);
	timeout = PG_GETARG_INTERVAL_P(1);
	timeout_ms = (int64) (DatumGetFloat8(DirectFunctionCall2(interval_part,
															 CStringGetTextDatum("epoch"),
															 IntervalPGetDatum(timeout))) * 1000.0);
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	if (ep_position_reserved_in_xact())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for a position in a transaction that appended events"),
				 errhint("Commit first, then call ep.wait_for_position().")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for a position in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("Its snapshot would not see the events the wait was for."),
				 errhint("Wait in a READ COMMITTED transaction, then read.")));

	cat = ep_catalog();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	for (;;)
	{
		int64		horizon = ep_position_horizon(cat->position_seq);
		long		remaining;

		if (horizon - 1 >= target)
			PG_RETURN_BOOL(true);
		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			PG_RETURN_BOOL(false);
		/* the horizon row changes at most every few milliseconds */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(remaining, 2L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
