/*-------------------------------------------------------------------------
 *
 * ivm_delta.c
 *	  Statement-level AFTER triggers on the base tables of incremental views
 *	  (ep._ivm_maintain) and the per-backend cache of each view's
 *	  maintenance plans.
 *
 * Each trigger sees the statement's transition tables (__ep_old/__ep_new).
 *	 immediate: runs the view's generated upsert for (base table, event)
 *				with a kept plan, then deletes groups whose count reached
 *				zero and recomputes min/max of groups that lost their extreme
 *				value, both by tid;
 *	 deferred:	appends the transition rows, signed, to the view's log of
 *				that base table;
 *	 full:		appends the number of changed rows to the view's counter.
 * TRUNCATE recomputes an immediate view, marks a deferred view as needing a
 * full recompute and counts one change for a full view.
 *
 * Locking: single-table views take no lock beyond the row locks of the
 * storage rows they upsert, so writers of different groups never wait for
 * each other and writers of one group serialize on that row. For a view
 * with several table references the delta of a writer of table B joins its
 * changes with the committed state of the other tables, so it must not run
 * concurrently with a writer of another base table C (the delta(B) x
 * delta(C) term would be lost), nor with another writer of B when B occurs
 * twice (self-join). Such writers take the view's writer lock (an advisory
 * lock tag of our own, EXCLUSIVE, held to the end of the transaction) in the
 * BEFORE STATEMENT trigger, before the statement locks any storage row, and
 * again in the AFTER trigger (TRUNCATE has no BEFORE trigger). Finer locks
 * (one per pair of tables, letting writers of one table run in parallel)
 * were tried: transactions that write two tables of a view must then
 * upgrade, and deadlock with each other constantly. The delta runs with a
 * fresh snapshot taken after the lock (under READ COMMITTED every statement
 * has one; under REPEATABLE READ and SERIALIZABLE the latest snapshot is
 * passed explicitly, as the RI triggers do), so it sees the previous
 * writer's committed change instead of failing or missing joined rows.
 *
 * Overlapping statements: the delta of one base table of a join is computed
 * against the other tables' current state, which is right only when no other
 * statement changing a base table of the same view is still in flight. A
 * writable CTE writing two base tables, a user trigger on one base table
 * writing another, or a cascading foreign key all fire the AFTER STATEMENT
 * triggers of the view's tables with several changes outstanding. Even on
 * one table, a statement nested in another (a row trigger on t updating
 * t) finishes first, and its old rows may be rows whose insertion the outer
 * statement's delta has not applied yet: counts go negative and are
 * dropped, a min/max keeps a value that is gone. So the base tables of
 * every immediate view also carry a BEFORE STATEMENT trigger
 * (ep._ivm_before) that records each statement in flight with its command
 * id (backend-local, per subtransaction). An AFTER trigger that finds
 * another statement of the same view still in flight (on another table, on
 * the same table when it occurs twice in the query, or another statement -
 * another command id - on the same table) skips its delta and marks the
 * view; the last statement of the view to finish recomputes it, writing
 * only the difference. The events of one statement (INSERT ... ON CONFLICT,
 * MERGE) share a command id and do not overlap. Entries and marks made in
 * an aborted subtransaction vanish with it; everything is forgotten at the
 * end of the transaction.
 *
 * Storage guard: a BEFORE STATEMENT trigger on each view's storage
 * (ep._ivm_guard) refuses every write unless ep_ivm_writing is set, which
 * only maintenance and refreshes do (reset on error by PG_FINALLY, and at
 * the end of the transaction).
 *
 * Catalog reads: a view's catalog row is read with the latest snapshot, so
 * a REPEATABLE READ transaction older than the view (which already sees
 * its triggers: the relcache is always current) finds it.
 *
 * Trust: all generated SQL runs through the owner primitive (owner.h,
 * ep_ivm_owner_enter): as the view's owner, in a security-restricted
 * operation, in a GUC nest level of its own with the search_path recorded
 * when the view was created (pg_temp last) and under the view's time limit,
 * whoever writes the base table. It is parsed, planned and revalidated only
 * there: a writer's search_path, temporary objects or settings never change
 * what it means, and no SET made by code the view calls survives.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "storage/itemptr.h"
#include "access/xact.h"

#include "event_patterns.h"
#include "owner.h"
#include "ivm.h"

static HTAB *view_cache = NULL;

/*
 * Statements in flight on base tables of immediate join views, and views
 * whose deltas were skipped; both in TopTransactionContext.
 */
typedef struct IvmInFlight
{
	int64		view_id;
	int			base;			/* trigger argument: index into base_oids */
	bool		repeated;		/* the table occurs more than once in the query */
	TriggerEvent event;			/* TRIGGER_EVENT_INSERT/UPDATE/DELETE */
	CommandId	cid;			/* the statement's command (see below) */
	SubTransactionId subid;
} IvmInFlight;

typedef struct IvmSkipped
{
	int64		view_id;
	SubTransactionId subid;
} IvmSkipped;

static List *ivm_in_flight = NIL;
static List *ivm_skipped = NIL;
static bool ivm_callbacks_registered = false;

/* > 0 while maintenance or a refresh writes storage (ep_ivm_guard) */
int			ep_ivm_writing = 0;

static void
ivm_xact_callback(XactEvent event, void *arg)
{
	/*
	 * A view whose delta was skipped must have been recomputed by the last
	 * statement in flight; if that did not happen, do not commit a wrong
	 * view.
	 */
	if ((event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE) &&
		ivm_skipped != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("incremental view " INT64_FORMAT " was not maintained",
						((IvmSkipped *) linitial(ivm_skipped))->view_id),
				 errdetail("A statement that changed several of its base tables did not finish its maintenance.")));
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PREPARE && event != XACT_EVENT_PARALLEL_COMMIT &&
		event != XACT_EVENT_PARALLEL_ABORT)
		return;

	/* the lists live in TopTransactionContext, which goes away now */
	ivm_in_flight = NIL;
	ivm_skipped = NIL;
	ep_ivm_writing = 0;

	/* nothing is pinned between transactions */
	if (view_cache != NULL)
	{
		HASH_SEQ_STATUS status;
		IvmViewCache *vc;

		hash_seq_init(&status, view_cache);
		while ((vc = hash_seq_search(&status)) != NULL)
			vc->busy = 0;
	}
}

static void
ivm_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					 SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		/* what the aborted subtransaction did is rolled back with it */
		foreach(lc, ivm_in_flight)
		{
			if (((IvmInFlight *) lfirst(lc))->subid == mySubid)
				ivm_in_flight = foreach_delete_current(ivm_in_flight, lc);
		}
		foreach(lc, ivm_skipped)
		{
			if (((IvmSkipped *) lfirst(lc))->subid == mySubid)
				ivm_skipped = foreach_delete_current(ivm_skipped, lc);
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, ivm_in_flight)
		{
			if (((IvmInFlight *) lfirst(lc))->subid == mySubid)
				((IvmInFlight *) lfirst(lc))->subid = parentSubid;
		}
		foreach(lc, ivm_skipped)
		{
			if (((IvmSkipped *) lfirst(lc))->subid == mySubid)
				((IvmSkipped *) lfirst(lc))->subid = parentSubid;
		}
	}
}

static void
ivm_register_callbacks(void)
{
	if (ivm_callbacks_registered)
		return;
	RegisterXactCallback(ivm_xact_callback, NULL);
	RegisterSubXactCallback(ivm_subxact_callback, NULL);
	ivm_callbacks_registered = true;
}

/* field4 of our advisory lock tags on incremental views */
#define EP_IVM_LOCK_FIELD4	0x4551

/*
 * See "Locking" above: a writer of a view with several table references
 * holds the view's writer lock until the end of its transaction.
 */
static void
ivm_lock_writers(IvmViewCache *vc)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) vc->view_id,
						 (uint32) ((uint64) vc->view_id >> 32), EP_IVM_LOCK_FIELD4);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * BEFORE STATEMENT trigger on the base tables of an immediate join view:
 * note the statement as in flight. Arguments: view id, base index, and
 * whether the table occurs more than once in the view's query.
 */
PG_FUNCTION_INFO_V1(ep_ivm_before);
Datum
ep_ivm_before(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	IvmInFlight *f;
	MemoryContext oldcxt;
	IvmViewCache *vc;
	int64		view_id;
	int			base;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._ivm_before must be fired BEFORE INSERT, UPDATE or DELETE ... FOR EACH STATEMENT")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 3)
		elog(ERROR, "ep._ivm_before expects three arguments");
	view_id = pg_strtoint64(trigger->tgargs[0]);
	base = pg_strtoint32(trigger->tgargs[1]);

	/*
	 * Only the view's own triggers may note statements: a trigger of
	 * anybody's making that named the view would otherwise suppress its
	 * maintenance. (A view whose catalog row is gone is not maintained.)
	 */
	vc = ep_ivm_view_cache(view_id, true);
	if (vc == NULL)
		return PointerGetDatum(NULL);
	if (vc->refresh != IVM_IMMEDIATE ||
		base < 0 || base >= vc->nbase ||
		vc->base_oids[base] != RelationGetRelid(trigdata->tg_relation))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" does not belong to incremental view " INT64_FORMAT,
						trigger->tgname, view_id)));

	/*
	 * Take the view's writer lock now, before the statement locks any row
	 * of the view's storage (the AFTER trigger would take it only after the
	 * triggers of other views on the table ran): a writer waiting for it
	 * then holds no storage row another writer needs. (Views over one table
	 * reference take no lock: see "Locking".)
	 */
	if (vc->multi_occurrence)
		ivm_lock_writers(vc);

	ivm_register_callbacks();
	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	f = palloc(sizeof(IvmInFlight));
	f->view_id = view_id;
	f->base = base;
	f->repeated = strcmp(trigger->tgargs[2], "1") != 0;
	f->event = trigdata->tg_event & TRIGGER_EVENT_OPMASK;
	f->cid = GetCurrentCommandId(false);
	f->subid = GetCurrentSubTransactionId();
	ivm_in_flight = lappend(ivm_in_flight, f);
	MemoryContextSwitchTo(oldcxt);
	return PointerGetDatum(NULL);
}

/*
 * BEFORE INSERT, UPDATE, DELETE or TRUNCATE ... FOR EACH STATEMENT trigger
 * on the storage of a view (argument: view id): only maintenance and
 * refreshes (ep_ivm_writing) write there. A write through the view itself
 * (a DISTINCT or aggregate view is a simple, auto-updatable view over its
 * storage) lands here too, whatever the number of rows.
 */
PG_FUNCTION_INFO_V1(ep_ivm_guard);
Datum
ep_ivm_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	IvmViewCache *vc = NULL;
	const char *storage;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._ivm_guard must be fired BEFORE ... FOR EACH STATEMENT")));
	if (ep_ivm_writing > 0)
		return PointerGetDatum(NULL);
	storage = RelationGetRelationName(trigdata->tg_relation);
	if (trigdata->tg_trigger->tgnargs == 1)
		vc = ep_ivm_view_cache(pg_strtoint64(trigdata->tg_trigger->tgargs[0]), true);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("incremental view \"%s\" cannot be written directly",
					vc ? vc->name : storage),
			 errdetail("Table \"%s\" holds the view's rows; only the view's maintenance writes it.",
					   storage),
			 errhint("Write to the view's base tables instead; ep.refresh_view(name, full => true) recomputes the view.")));
	return PointerGetDatum(NULL);	/* keep compiler quiet */
}

/*
 * The snapshot maintenance of a view with several table references runs
 * with: InvalidSnapshot (SPI takes a fresh one per statement) under READ
 * COMMITTED, the latest one under REPEATABLE READ and SERIALIZABLE
 * (registered; the caller unregisters it).
 */
static Snapshot
ivm_snapshot(IvmViewCache *vc)
{
	if (vc->multi_occurrence && IsolationUsesXactSnapshot())
		return RegisterSnapshot(GetLatestSnapshot());
	return InvalidSnapshot;
}

static int
ivm_execute_plan(SPIPlanPtr plan, Datum *args, Snapshot snap)
{
	if (snap != InvalidSnapshot)
		return SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, false, true, 0);
	return SPI_execute_plan(plan, args, NULL, false, 0);
}

static int
ivm_execute_sql(const char *sql, Snapshot snap)
{
	SPIPlanPtr	plan;
	int			rc;

	if (snap == InvalidSnapshot)
		return SPI_execute(sql, false, 0);
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, NULL, NULL, snap, InvalidSnapshot, false, true, 0);
	SPI_freeplan(plan);
	return rc;
}

/*
 * An AFTER STATEMENT trigger of a view fires: forget its statement's entry
 * and tell whether another statement of the view is still in flight
 * (*overlap) and whether this was the view's last one in flight (*last).
 * Cheap when nothing is in flight (single-table views never note any).
 */
static void
ivm_statement_done(int64 view_id, int base, TriggerEvent event, bool *overlap, bool *last)
{
	ListCell   *lc;
	IvmInFlight *mine = NULL;

	*overlap = false;
	*last = true;
	if (ivm_in_flight == NIL)
		return;
	event &= TRIGGER_EVENT_OPMASK;

	/*
	 * This statement's entry is the newest matching one: statements nested
	 * in it (run by its triggers) finish before it does.
	 */
	foreach(lc, ivm_in_flight)
	{
		IvmInFlight *f = lfirst(lc);

		if (f->view_id == view_id && f->base == base && f->event == event)
			mine = f;
	}
	foreach(lc, ivm_in_flight)
	{
		IvmInFlight *f = lfirst(lc);

		if (f->view_id != view_id || f == mine)
			continue;
		*last = false;

		/*
		 * Another table, a table that occurs twice, or another statement
		 * on the same table (one nested in the other by a trigger or a
		 * function: the nested one finishes first, though its old rows may
		 * be rows the outer one's delta has not added yet). The events of
		 * one statement (INSERT ... ON CONFLICT, MERGE) share its command
		 * id and do not overlap.
		 */
		if (f->base != base || f->repeated || mine == NULL || f->cid != mine->cid)
			*overlap = true;
	}
	if (mine != NULL)
	{
		ivm_in_flight = list_delete_ptr(ivm_in_flight, mine);
		pfree(mine);
	}
}

/* No statement of the view is in flight. */
static bool
ivm_statement_last(int64 view_id)
{
	ListCell   *lc;

	foreach(lc, ivm_in_flight)
	{
		if (((IvmInFlight *) lfirst(lc))->view_id == view_id)
			return false;
	}
	return true;
}

static bool
ivm_is_skipped(int64 view_id)
{
	ListCell   *lc;

	foreach(lc, ivm_skipped)
	{
		if (((IvmSkipped *) lfirst(lc))->view_id == view_id)
			return true;
	}
	return false;
}

static void
ivm_set_skipped(int64 view_id, bool skipped)
{
	ListCell   *lc;

	if (skipped)
	{
		MemoryContext oldcxt;
		IvmSkipped *s;

		if (ivm_is_skipped(view_id))
			return;
		oldcxt = MemoryContextSwitchTo(TopTransactionContext);
		s = palloc(sizeof(IvmSkipped));
		s->view_id = view_id;
		s->subid = GetCurrentSubTransactionId();
		ivm_skipped = lappend(ivm_skipped, s);
		MemoryContextSwitchTo(oldcxt);
		return;
	}
	foreach(lc, ivm_skipped)
	{
		if (((IvmSkipped *) lfirst(lc))->view_id == view_id)
			ivm_skipped = foreach_delete_current(ivm_skipped, lc);
	}
}

/*
 * A view's entry is forgotten when its storage table changes or goes away
 * (DROP of the view, of a base table with CASCADE, of the extension): view
 * ids restart with the extension's sequence, so an id alone is not enough.
 */
static void
ivm_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	IvmViewCache *vc;

	if (view_cache == NULL)
		return;
	hash_seq_init(&status, view_cache);
	while ((vc = hash_seq_search(&status)) != NULL)
	{
		if (relid == InvalidOid || vc->storage == relid ||
			(vc->fast != NULL && vc->base_oids[0] == relid))
			vc->valid = false;
	}
}

static char **
ivm_text_array_get(Datum d, bool isnull, int *n, MemoryContext cxt)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	char	  **out;
	int			i;

	*n = 0;
	if (isnull)
		return NULL;
	arr = DatumGetArrayTypeP(d);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &count);
	out = MemoryContextAllocZero(cxt, sizeof(char *) * Max(count, 1));
	for (i = 0; i < count; i++)
		out[i] = nulls[i] ? NULL : MemoryContextStrdup(cxt, TextDatumGetCString(elems[i]));
	*n = count;
	return out;
}

static char *
ivm_text_get(Datum d, bool isnull, MemoryContext cxt)
{
	if (isnull)
		return NULL;
	return MemoryContextStrdup(cxt, TextDatumGetCString(d));
}

static void
ivm_free_plans(SPIPlanPtr *plans, int n)
{
	for (int i = 0; plans && i < n; i++)
	{
		if (plans[i])
			SPI_freeplan(plans[i]);
	}
}

/*
 * Free what a stale entry holds, unless a call further up the stack still
 * uses it (then it stays allocated: a rare, bounded leak beats a crash).
 */
static void
ivm_view_cache_release(IvmViewCache *vc)
{
	if (vc->cxt == NULL || vc->busy > 0)
		return;
	ivm_free_plans(vc->plan_insert, vc->nbase);
	ivm_free_plans(vc->plan_delete, vc->nbase);
	ivm_free_plans(vc->plan_update, vc->nbase);
	ivm_free_plans(vc->plan_log_insert, vc->nbase);
	ivm_free_plans(vc->plan_log_delete, vc->nbase);
	ivm_free_plans(vc->plan_log_update, vc->nbase);
	ivm_free_plans(&vc->plan_remove, 1);
	ivm_free_plans(&vc->plan_recompute, 1);
	MemoryContextDelete(vc->cxt);
	vc->cxt = NULL;
}

void
ep_ivm_view_pin(IvmViewCache *vc)
{
	vc->busy++;
}

void
ep_ivm_view_unpin(IvmViewCache *vc)
{
	if (vc->busy > 0)
		vc->busy--;
}

/*
 * The cached state of a view; loaded on first use in this backend, read as
 * the extension owner (the catalog hides rows of other roles).
 */
IvmViewCache *
ep_ivm_view_cache(int64 view_id, bool missing_ok)
{
	IvmViewCache *vc;
	bool		found;
	EpSavedUser saved;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int			n;
	char	   *refresh;
	int			busy;
	Snapshot	latest;
	SPIPlanPtr	plan;
	int			rc;

	if (view_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(IvmViewCache);
		view_cache = hash_create("event_patterns ivm views", 16, &ctl, HASH_ELEM | HASH_BLOBS);
		ep_register_relcache_callback(ivm_relcache_callback);
		ivm_register_callbacks();
	}
	vc = hash_search(view_cache, &view_id, HASH_ENTER, &found);
	if (found && vc->valid)
		return vc;

	/*
	 * A call further up the stack is using this entry: keep it as it is
	 * (its plans are revalidated by the plan cache anyway) rather than
	 * pulling it from under that call.
	 */
	if (found && vc->busy > 0)
		return vc;
	busy = found ? vc->busy : 0;
	if (found)
		ivm_view_cache_release(vc);
	memset(((char *) vc) + sizeof(int64), 0, sizeof(IvmViewCache) - sizeof(int64));
	vc->busy = busy;
	vc->cxt = AllocSetContextCreate(CacheMemoryContext, "event_patterns incremental view",
									ALLOCSET_SMALL_SIZES);

	args[0] = Int64GetDatum(view_id);
	ep_become_owner(&saved);
	SPI_connect();

	/*
	 * Read the row with the latest snapshot: a REPEATABLE READ transaction
	 * that began before the view was created sees its triggers (the
	 * relcache is always current) but not its catalog row.
	 */
	latest = RegisterSnapshot(GetLatestSnapshot());
	plan = SPI_prepare(psprintf("SELECT refresh, v.owner::pg_catalog.oid,"
							  " storage_rel::pg_catalog.oid, multi_occurrence, keep_empty_group,"
							  " sql_insert, sql_delete, sql_update, sql_log_insert, sql_log_delete, sql_remove,"
							  " sql_recompute, sql_full_delete, sql_full_insert, sql_deferred,"
							  " (SELECT pg_catalog.array_agg(pg_catalog.format('%%I.%%I', n.nspname, c.relname) ORDER BY u.o)"
							  "  FROM pg_catalog.unnest(v.log_rels) WITH ORDINALITY u(r, o)"
							  "  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) u.r"
							  "  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace),"
							  " pg_catalog.cardinality(base_rels), base_rels::pg_catalog.oid[], sql_log_update,"
							  " name, %s, kind OPERATOR(pg_catalog.=) 'full'"
							  " FROM ep.ivm_views v WHERE view_id OPERATOR(pg_catalog.=) $1",
							  ep_ivm_catalog_current() ?
							  "search_path, pg_catalog.date_part('epoch', handler_timeout)"
							  " OPERATOR(pg_catalog.*) 1000::pg_catalog.float8, fast_path" :
							  "'pg_catalog, pg_temp'::pg_catalog.text, NULL::pg_catalog.float8,"
							  " NULL::pg_catalog.text"),
					   1, argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, args, NULL, latest, InvalidSnapshot, true, false, 1);
	UnregisterSnapshot(latest);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read incremental view " INT64_FORMAT, view_id);
	if (SPI_processed != 1 && missing_ok)
	{
		SPI_finish();
		ep_restore_user(&saved);
		if (vc->busy == 0)
		{
			MemoryContextDelete(vc->cxt);
			hash_search(view_cache, &view_id, HASH_REMOVE, NULL);
		}
		return NULL;
	}
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("incremental view " INT64_FORMAT " does not exist", view_id),
				 errhint("Drop the leftover triggers __ep_ivm_" INT64_FORMAT "_* or __ep_ivj_" INT64_FORMAT "_* on the table.",
						 view_id, view_id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	refresh = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	vc->refresh = strcmp(refresh, "immediate") == 0 ? IVM_IMMEDIATE :
		strcmp(refresh, "deferred") == 0 ? IVM_DEFERRED : IVM_FULL;
	/* async: the deferred shape, fed from the WAL by ivm_async.c */
	vc->async = strcmp(refresh, "async") == 0;
	if (vc->async)
		vc->refresh = IVM_DEFERRED;
	vc->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	if (isnull)
		elog(ERROR, "owner of incremental view " INT64_FORMAT " does not exist", view_id);
	vc->storage = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	vc->multi_occurrence = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	vc->keep_empty_group = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	vc->nbase = DatumGetInt32(SPI_getbinval(tup, desc, 17, &isnull));
	/* kind 'full' with another refresh mode: recompute-and-diff */
	vc->recompute = vc->refresh != IVM_FULL &&
		DatumGetBool(SPI_getbinval(tup, desc, 24, &isnull));
#define ARR(field, col) \
	do { Datum dd = SPI_getbinval(tup, desc, col, &isnull); \
		vc->field = ivm_text_array_get(dd, isnull, &n, vc->cxt); } while (0)
#define TXT(field, col) \
	do { Datum dd = SPI_getbinval(tup, desc, col, &isnull); \
		vc->field = ivm_text_get(dd, isnull, vc->cxt); } while (0)
	ARR(sql_insert, 6);
	ARR(sql_delete, 7);
	ARR(sql_update, 8);
	ARR(sql_log_insert, 9);
	ARR(sql_log_delete, 10);
	TXT(sql_remove, 11);
	TXT(sql_recompute, 12);
	TXT(sql_full_delete, 13);
	TXT(sql_full_insert, 14);
	TXT(sql_deferred, 15);
	ARR(log_rels, 16);
	ARR(sql_log_update, 19);
	TXT(name, 20);
	TXT(search_path, 21);
#undef ARR
	{
		Datum		dd = SPI_getbinval(tup, desc, 22, &isnull);
		double		ms = isnull ? -1 : DatumGetFloat8(dd);

		vc->timeout_ms = ms < 0 ? -1 : (ms > INT_MAX ? INT_MAX : (int) ms);
	}
	{
		Datum		dd = SPI_getbinval(tup, desc, 18, &isnull);
		Datum	   *elems;
		bool	   *enulls;
		int			count;
		int			i;

		deconstruct_array(DatumGetArrayTypeP(dd), OIDOID, sizeof(Oid), true, TYPALIGN_INT,
						  &elems, &enulls, &count);
		vc->base_oids = MemoryContextAllocZero(vc->cxt, sizeof(Oid) * Max(count, 1));
		for (i = 0; i < count; i++)
			vc->base_oids[i] = DatumGetObjectId(elems[i]);
	}
	{
		char	   *fast;
		Datum		dd = SPI_getbinval(tup, desc, 23, &isnull);

		fast = ivm_text_get(dd, isnull, vc->cxt);
		/* (views over other views are maintained by recompute) */
		if (fast != NULL && vc->refresh == IVM_IMMEDIATE && !vc->async && vc->nbase == 1)
			vc->fast = ep_ivm_fast_load(fast, vc->base_oids[0], vc->storage, vc->cxt);
	}
#undef TXT
	SPI_finish();
	ep_restore_user(&saved);

	vc->plan_insert = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->plan_delete = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->plan_update = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->plan_log_insert = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->plan_log_delete = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->plan_log_update = MemoryContextAllocZero(vc->cxt, sizeof(SPIPlanPtr) * Max(vc->nbase, 1));
	vc->valid = true;
	return vc;
}

/*
 * The catalog has the 0.2 columns search_path, handler_timeout and
 * fast_path (not before ALTER EXTENSION ... UPDATE of a 0.1 installation,
 * whose views run with 'pg_catalog, pg_temp' and the GUC's time limit, and
 * through their generated SQL only, meanwhile).
 */
bool
ep_ivm_catalog_current(void)
{
	Oid			nsp = get_namespace_oid("ep", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("ivm_views", nsp) : InvalidOid;

	return OidIsValid(rel) && get_attnum(rel, "fast_path") != InvalidAttrNumber;
}

/*
 * Enter the view owner's context (owner.h) for the view's generated SQL:
 * its role, SECURITY_RESTRICTED_OPERATION, its own GUC nest level with the
 * recorded search_path (pg_temp last), its time limit. Leave with
 * ep_owner_leave; an error unwinds it with the (sub)transaction.
 */
void
ep_ivm_owner_enter(IvmViewCache *vc, EpOwnerCall *call)
{
	memset(call, 0, sizeof(*call));
	call->owner = vc->owner;
	call->search_path = vc->search_path;
	call->timeout_ms = ep_owner_capped_timeout(vc->owner, vc->timeout_ms);
	call->what = "incremental view";
	call->name = vc->name;
	ep_owner_enter(call);
}

/*
 * Prepare (once) and keep a plan; SPI must be connected, inside the view
 * owner's context (ep_ivm_owner_enter).
 */
static SPIPlanPtr
ivm_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan;

		if (sql == NULL)
			elog(ERROR, "incremental view has no maintenance statement for this change");
		plan = SPI_prepare(sql, nargs, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*slot = plan;
	}
	return *slot;
}

/*
 * Serialize deferred refreshes of a view with several table references by
 * updating its row of ep.ivm_stamps (see 40_ivm.sql); under REPEATABLE READ
 * a refresh whose snapshot predates another one's commit gets a
 * serialization failure. (Immediate writers use ivm_lock_writers.) SPI must
 * be connected.
 */
void
ep_ivm_lock_view(IvmViewCache *vc)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {INT8OID};
	Datum		args[1];
	EpSavedUser saved;

	args[0] = Int64GetDatum(vc->view_id);
	ep_become_owner(&saved);
	if (SPI_execute_plan(ivm_plan(&plan, "UPDATE ep.ivm_stamps SET n = n OPERATOR(pg_catalog.+) 1"
								  " WHERE view_id OPERATOR(pg_catalog.=) $1", 1, argtypes),
						 args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not serialize maintenance of incremental view " INT64_FORMAT, vc->view_id);
	ep_restore_user(&saved);
}

static Datum
ivm_tid_array(ItemPointerData *tids, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * n);
	int			i;

	for (i = 0; i < n; i++)
		d[i] = PointerGetDatum(&tids[i]);
	return PointerGetDatum(construct_array(d, n, TIDOID, sizeof(ItemPointerData), false,
										   TYPALIGN_SHORT));
}

/*
 * Finish an upsert: its result rows (tid, c, dirty) name storage rows whose
 * count reached zero (deleted, unless the view is an aggregate without
 * GROUP BY, whose single row always exists) or whose min/max must be
 * recomputed.
 */
void
ep_ivm_apply_result(IvmViewCache *vc, SPITupleTable *tuptable, uint64 ntuples, Snapshot snap)
{
	ItemPointerData *del;
	ItemPointerData *rec;
	int			ndel = 0;
	int			nrec = 0;
	uint64		i;
	Oid			argtypes[1] = {TIDARRAYOID};
	Datum		args[1];

	if (ntuples == 0)
		return;
	del = palloc(sizeof(ItemPointerData) * ntuples);
	rec = palloc(sizeof(ItemPointerData) * ntuples);
	for (i = 0; i < ntuples; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		bool		isnull;
		ItemPointer tid = (ItemPointer) DatumGetPointer(SPI_getbinval(tup, tuptable->tupdesc, 1, &isnull));
		int64		c = DatumGetInt64(SPI_getbinval(tup, tuptable->tupdesc, 2, &isnull));
		bool		dirty = DatumGetBool(SPI_getbinval(tup, tuptable->tupdesc, 3, &isnull));

		if (c <= 0 && !vc->keep_empty_group)
			del[ndel++] = *tid;
		else if (dirty)
			rec[nrec++] = *tid;
	}
	if (ndel > 0)
	{
		args[0] = ivm_tid_array(del, ndel);
		if (ivm_execute_plan(ivm_plan(&vc->plan_remove, vc->sql_remove, 1, argtypes),
							 args, snap) != SPI_OK_DELETE)
			elog(ERROR, "could not remove empty groups of an incremental view");
	}
	if (nrec > 0)
	{
		args[0] = ivm_tid_array(rec, nrec);
		if (ivm_execute_plan(ivm_plan(&vc->plan_recompute, vc->sql_recompute, 1, argtypes),
							 args, snap) != SPI_OK_UPDATE)
			elog(ERROR, "could not recompute min/max of an incremental view");
	}
}

static void ivm_maintain_view(TriggerData *trigdata, IvmViewCache *vc, int64 view_id, int b,
							  TriggerEvent ev, int64 nold, int64 nnew, bool recompute);

PG_FUNCTION_INFO_V1(ep_ivm_maintain);
Datum
ep_ivm_maintain(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	int64		view_id;
	int			b;
	IvmViewCache *vc;
	int64		nold;
	int64		nnew;
	TriggerEvent ev;
	bool		overlap;
	bool		last;
	bool		recompute;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._ivm_maintain must be fired AFTER ... FOR EACH STATEMENT")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 2)
		elog(ERROR, "ep._ivm_maintain expects two arguments");
	view_id = pg_strtoint64(trigger->tgargs[0]);
	b = pg_strtoint32(trigger->tgargs[1]);
	ev = trigdata->tg_event;

	nold = trigdata->tg_oldtable ? tuplestore_tuple_count(trigdata->tg_oldtable) : 0;
	nnew = trigdata->tg_newtable ? tuplestore_tuple_count(trigdata->tg_newtable) : 0;
	if (TRIGGER_FIRED_BY_TRUNCATE(ev))
	{
		/* TRUNCATE has no BEFORE trigger: in flight if others are */
		overlap = ivm_in_flight != NIL && !ivm_statement_last(view_id);
		last = !overlap;
	}
	else
		ivm_statement_done(view_id, b, ev, &overlap, &last);
	if (overlap)
	{
		/* the view's last statement in flight recomputes it */
		ivm_set_skipped(view_id, true);
		return PointerGetDatum(NULL);
	}
	recompute = last && ivm_skipped != NIL && ivm_is_skipped(view_id);
	if (!recompute && !TRIGGER_FIRED_BY_TRUNCATE(ev) && nold == 0 && nnew == 0)
		return PointerGetDatum(NULL);

	/*
	 * A trigger whose view is gone from the catalog (its owner deleted the
	 * row) must not stop other roles' writes to a shared table such as
	 * ep.events: it does nothing there.
	 */
	vc = ep_ivm_view_cache(view_id, RelationGetRelid(trigdata->tg_relation) == ep_catalog()->events);
	if (vc == NULL)
		return PointerGetDatum(NULL);
	/* only the view's own triggers may feed it changes */
	if (b < 0 || b >= vc->nbase ||
		vc->base_oids[b] != RelationGetRelid(trigdata->tg_relation))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" does not belong to incremental view " INT64_FORMAT,
						trigger->tgname, view_id)));

	ep_ivm_view_pin(vc);
	ep_ivm_writing++;
	PG_TRY();
	{
		ivm_maintain_view(trigdata, vc, view_id, b, ev, nold, nnew, recompute);
	}
	PG_FINALLY();
	{
		/* also when an error is caught by a savepoint further up */
		ep_ivm_writing--;
		ep_ivm_view_unpin(vc);
	}
	PG_END_TRY();
	return PointerGetDatum(NULL);
}

/* The body of ep_ivm_maintain, with the view pinned. */
static void
ivm_maintain_view(TriggerData *trigdata, IvmViewCache *vc, int64 view_id, int b,
				  TriggerEvent ev, int64 nold, int64 nnew, bool recompute)
{
	EpOwnerCall call;
	Snapshot	snap;

	/*
	 * The simplest aggregate views apply most statements without SQL, and
	 * without calling any user code (ivm_fast.c).
	 */
	if (vc->fast != NULL && !recompute && !TRIGGER_FIRED_BY_TRUNCATE(ev) &&
		ep_ivm_fast_apply(vc, trigdata, nold, nnew))
		return;

	ep_ivm_owner_enter(vc, &call);
	SPI_connect();
	if (SPI_register_trigger_data(trigdata) != SPI_OK_TD_REGISTER)
		elog(ERROR, "could not register transition tables");

	if (vc->multi_occurrence && vc->refresh == IVM_IMMEDIATE)
		ivm_lock_writers(vc);
	snap = ivm_snapshot(vc);
	/* (a recompute view whose statements overlapped recomputes fully) */
	if (vc->recompute && !recompute)
		ep_ivm_recompute_statement(vc, b, ev, nold, nnew);
	else if (recompute)
	{
		/*
		 * Statements overlapped: their deltas were skipped. (Under
		 * REPEATABLE READ the recompute reads the latest state, like the
		 * deltas of views over several tables.)
		 */
		ep_ivm_full_recompute(vc, snap != InvalidSnapshot || IsolationUsesXactSnapshot());
		ivm_set_skipped(view_id, false);
	}
	else if (TRIGGER_FIRED_BY_TRUNCATE(ev))
	{
		if (vc->refresh == IVM_IMMEDIATE)
			ep_ivm_full_recompute(vc, snap != InvalidSnapshot);
		else if (vc->refresh == IVM_DEFERRED)
		{
			Oid			argtypes[1] = {INT8OID};
			Datum		args[1] = {Int64GetDatum(view_id)};
			EpSavedUser saved;

			ep_become_owner(&saved);

			/*
			 * Take the change logs first, like every other logging write: a
			 * deferred refresh holds them exclusively while it reads and
			 * then clears needs_full, and must not miss this mark.
			 */
			for (int i = 0; vc->log_rels && i < vc->nbase; i++)
			{
				if (vc->log_rels[i] == NULL)
					continue;
				if (SPI_execute(psprintf("LOCK TABLE %s IN ROW EXCLUSIVE MODE", vc->log_rels[i]),
								false, 0) != SPI_OK_UTILITY)
					elog(ERROR, "could not lock change log");
			}
			if (SPI_execute_with_args("UPDATE ep.ivm_views SET needs_full = true WHERE view_id OPERATOR(pg_catalog.=) $1",
									  1, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not mark incremental view for recompute");
			ep_restore_user(&saved);
		}
		else
		{
			Oid			argtypes[1] = {INT8OID};
			Datum		args[1] = {Int64GetDatum(1)};

			SPI_execute_plan(ivm_plan(&vc->plan_log_insert[b], vc->sql_log_insert[b], 1, argtypes),
							 args, NULL, false, 0);
		}
	}
	else if (vc->refresh == IVM_IMMEDIATE)
	{
		SPIPlanPtr	plan;
		int			rc;

		if (nold + nnew > IVM_REPLAN_ROWS)
		{
			/*
			 * A big statement (bulk load, mass update): plan for its actual
			 * size instead of reusing the plan made for small changes.
			 */
			const char *sql = TRIGGER_FIRED_BY_INSERT(ev) ? vc->sql_insert[b] :
				TRIGGER_FIRED_BY_DELETE(ev) ? vc->sql_delete[b] : vc->sql_update[b];

			rc = ivm_execute_sql(sql, snap);
		}
		else
		{
			if (TRIGGER_FIRED_BY_INSERT(ev))
				plan = ivm_plan(&vc->plan_insert[b], vc->sql_insert[b], 0, NULL);
			else if (TRIGGER_FIRED_BY_DELETE(ev))
				plan = ivm_plan(&vc->plan_delete[b], vc->sql_delete[b], 0, NULL);
			else
				plan = ivm_plan(&vc->plan_update[b], vc->sql_update[b], 0, NULL);
			rc = ivm_execute_plan(plan, NULL, snap);
		}
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "incremental view maintenance failed: %s", SPI_result_code_string(rc));
		ep_ivm_apply_result(vc, SPI_tuptable, SPI_processed, snap);
	}
	else if (vc->refresh == IVM_DEFERRED)
	{
		SPIPlanPtr	plan;

		/* one statement per event: old rows signed -1, new rows +1 */
		if (TRIGGER_FIRED_BY_UPDATE(ev))
			plan = ivm_plan(&vc->plan_log_update[b], vc->sql_log_update[b], 0, NULL);
		else if (TRIGGER_FIRED_BY_INSERT(ev))
			plan = ivm_plan(&vc->plan_log_insert[b], vc->sql_log_insert[b], 0, NULL);
		else
			plan = ivm_plan(&vc->plan_log_delete[b], vc->sql_log_delete[b], 0, NULL);
		if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not log changes of an incremental view");
	}
	else
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1];

		args[0] = Int64GetDatum(TRIGGER_FIRED_BY_UPDATE(ev) ? 2 * nnew : nold + nnew);
		SPI_execute_plan(ivm_plan(&vc->plan_log_insert[b], vc->sql_log_insert[b], 1, argtypes),
						 args, NULL, false, 0);
	}
	if (snap != InvalidSnapshot)
		UnregisterSnapshot(snap);
	SPI_finish();
	ep_owner_leave(&call);
}
