/*-------------------------------------------------------------------------
 *
 * ivm_async.c
 *	  Async incremental views (refresh => 'async'): maintained by the
 *	  per-database worker from the WAL, with no trigger on any base table,
 *	  so writers pay nothing; also on a logical-replication subscriber,
 *	  where the apply worker fires no statement triggers.
 *
 * An async view has the objects of a deferred view (ivm_define.c): storage,
 * one change log per base table and the batch SQL. A round decodes the
 * base tables' changes from the slot ep_ivm_<database oid> (decoder.c, in
 * raw_rows mode: heap tuples, every origin), registers each base table's
 * old and new rows as the transition tables __ep_old/__ep_new, fills the
 * logs with the deferred trigger's own statements and applies the batch
 * with the deferred refresh (ivm_refresh.c) — the same deltas the other
 * modes compute, per group of commits, as the view's owner through the
 * owner primitive with the recorded search_path. TRUNCATE of a base, a
 * lost slot, a batch past the memory budget or a changed table definition
 * recompute the view (writing only the difference), and so do the shapes
 * maintained by recompute-and-diff (ivm_recompute.c) on any change.
 *
 * Consistency. The batch SQL computes the delta from the base tables'
 * current state, which must be exactly the applied state plus the batch.
 * A round therefore reads and writes with one snapshot S (worker: a
 * REPEATABLE READ transaction; ep.apply_async_views: base tables locked
 * in SHARE mode, so nothing commits on them meanwhile), takes the WAL
 * insert position U after S, and decodes up to U: every transaction S sees
 * has its commit record before U. The decoder drops the changes of the
 * transactions S does not see (committed after it); the round's cut is the
 * start of the first of those's commit record (or U). A transaction S
 * sees that committed after one it does not (the commit record and the
 * visibility of two transactions can swap) makes the round give up and try
 * again: nothing is written. (Decoding skips transactions whose commit
 * record starts before the slot's confirmed position, hence the start.)
 *
 * Exactly once. ep.ivm_async.applied_lsn is written in the same
 * transaction as the view's rows; a change is applied when its
 * transaction's end is above it. A crash repeats a round from the stored
 * position (the slot's confirmed position is durable only at
 * checkpoints). The slot is confirmed by the next round, once this one has
 * committed, to the smallest position any view still needs. Views over
 * views: a view's maintenance writes its storage like any table, in the
 * WAL; views are applied newest first, so a view over another one reads
 * its base before this round writes it, and decodes those writes in the
 * next round.
 *
 * The worker polls (event_patterns.async_view_naptime; 50 ms after a
 * hundred polls found no new WAL) while async views exist, and only decodes
 * when the WAL moved. Errors of a view (its
 * owner's code) are caught per view in a subtransaction, recorded in
 * ep.ivm_async.last_error, and retried with backoff; they never stop the
 * other views.
 *
 * Checks at creation and ep.refresh_view of an async view are in
 * ivm_async_define.c.
 *
 * Shared memory: per database, the cut of the last committed round and
 * the time of its snapshot (lag, ep.wait_for_view), and a condition
 * variable broadcast after each committed round.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/slot.h"
#include "storage/condition_variable.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/queryenvironment.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "event_patterns.h"
#include "ivm.h"
#include "ivm_async.h"
#include "launcher.h"
#include "owner.h"
#include "projection.h"
#include "shmem.h"
#include "worker.h"

#define EP_ASYNC_MAX_DB			64
#define EP_ASYNC_RESTART_LAG	(128 * 1024)	/* see ep_decoder_help_restart */
#define EP_ASYNC_CHECK_MS		1000	/* re-read the catalog when idle */
#define EP_ASYNC_MAX_BACKOFF_MS	60000
#define EP_ASYNC_IDLE_POLLS		100		/* polls without WAL before ... */
#define EP_ASYNC_IDLE_NAPTIME_MS	50	/* ... polling this often */

int			ep_guc_async_view_naptime_ms = 10;
int			ep_guc_async_view_batch_memory_kb = 65536;

typedef struct EpAsyncDb
{
	Oid			dbid;
	XLogRecPtr	decoded;		/* cut of the last committed round */
	TimestampTz at;				/* time of that round's snapshot */
} EpAsyncDb;

typedef struct EpAsyncShared
{
	slock_t		mutex;
	ConditionVariable cv;
	EpAsyncDb	dbs[EP_ASYNC_MAX_DB];
} EpAsyncShared;

static EpAsyncShared *async_shared = NULL;

/* One async view in a round. */
typedef struct AsyncView
{
	int64		view_id;
	char	   *name;
	int			nbase;
	Oid		   *bases;
	XLogRecPtr	applied;		/* InvalidXLogRecPtr: never computed */
	bool		needs_full;
	bool		ok;				/* applied (or had nothing) this round */
	bool		skipped;		/* waiting for its retry */
	bool		wrote;			/* changed its storage this round */
	Oid			storage;
} AsyncView;

/* Retry times of failing views (worker only). */
typedef struct AsyncBackoff
{
	int64		view_id;
	int			attempts;
	TimestampTz retry_at;
} AsyncBackoff;

static HTAB *backoffs = NULL;

/* published / confirmed once the round's transaction commits */
static bool pending_publish = false;
static XLogRecPtr pending_decoded = InvalidXLogRecPtr;
static TimestampTz pending_at = 0;
static XLogRecPtr pending_confirm = InvalidXLogRecPtr;
static XLogRecPtr next_confirm = InvalidXLogRecPtr;

/* worker state between rounds */
static XLogRecPtr last_upto = InvalidXLogRecPtr;
static bool views_exist = true;
static TimestampTz last_check = 0;
static int	idle_polls = 0;
static int	step_failures = 0;
static TimestampTz step_retry_at = 0;

static ProcessUtility_hook_type prev_utility_hook = NULL;

static void
ivm_async_slot_name(char *buf, Size len, Oid dbid)
{
	snprintf(buf, len, "ep_ivm_%u", dbid);
}

/* ---------------------------------------------------------------------
 * Shared memory
 * ---------------------------------------------------------------------
 */
Size
ep_ivm_async_shmem_size(void)
{
	return MAXALIGN(sizeof(EpAsyncShared));
}

void
ep_ivm_async_shmem_init(void)
{
	bool		found;

	async_shared = ShmemInitStruct("event_patterns async views", sizeof(EpAsyncShared), &found);
	if (!found)
	{
		memset(async_shared, 0, sizeof(EpAsyncShared));
		SpinLockInit(&async_shared->mutex);
		ConditionVariableInit(&async_shared->cv);
	}
}

static void
ivm_async_publish(XLogRecPtr decoded, TimestampTz at)
{
	int			i;
	int			freeslot = -1;

	if (async_shared == NULL)
		return;
	SpinLockAcquire(&async_shared->mutex);
	for (i = 0; i < EP_ASYNC_MAX_DB; i++)
	{
		if (async_shared->dbs[i].dbid == MyDatabaseId)
			break;
		if (async_shared->dbs[i].dbid == InvalidOid && freeslot < 0)
			freeslot = i;
	}
	if (i == EP_ASYNC_MAX_DB)
		i = freeslot;
	if (i >= 0)
	{
		EpAsyncDb  *db = &async_shared->dbs[i];

		if (db->dbid != MyDatabaseId)
		{
			db->dbid = MyDatabaseId;
			db->decoded = InvalidXLogRecPtr;
			db->at = 0;
		}
		db->decoded = Max(db->decoded, decoded);
		db->at = Max(db->at, at);
	}
	SpinLockRelease(&async_shared->mutex);
	ConditionVariableBroadcast(&async_shared->cv);
}

static void
ivm_async_published(XLogRecPtr *decoded, TimestampTz *at)
{
	int			i;

	*decoded = InvalidXLogRecPtr;
	*at = 0;
	if (async_shared == NULL)
		return;
	SpinLockAcquire(&async_shared->mutex);
	for (i = 0; i < EP_ASYNC_MAX_DB; i++)
	{
		if (async_shared->dbs[i].dbid == MyDatabaseId)
		{
			*decoded = async_shared->dbs[i].decoded;
			*at = async_shared->dbs[i].at;
			break;
		}
	}
	SpinLockRelease(&async_shared->mutex);
}

static void
ivm_async_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (pending_publish)
			{
				ivm_async_publish(pending_decoded, pending_at);
				if (pending_confirm != InvalidXLogRecPtr)
					next_confirm = Max(next_confirm, pending_confirm);
			}
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pending_publish = false;
			pending_decoded = InvalidXLogRecPtr;
			pending_confirm = InvalidXLogRecPtr;
			break;
		default:
			break;
	}
}

/* ---------------------------------------------------------------------
 * The round
 * ---------------------------------------------------------------------
 */
static void
ivm_async_round_locktag(LOCKTAG *tag)
{
	/* field4 0x4556: no SQL advisory-lock call can take it */
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0x45504956, 0x4153594e, 0x4556);
}

static bool
ivm_async_installed(void)
{
	Oid			nsp = get_namespace_oid(EP_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("ivm_async", nsp)) &&
		get_extension_oid("event_patterns", true) != InvalidOid;
}

/* The async views, newest first. SPI connected as the extension owner. */
static int
ivm_async_load(AsyncView **out)
{
	uint64		n;
	uint64		i;
	AsyncView  *views;

	if (SPI_execute("SELECT v.view_id, v.base_rels::pg_catalog.oid[], a.applied_lsn,"
					"       COALESCE(a.needs_full, true), v.name, v.storage_rel::pg_catalog.oid"
					"  FROM ep.ivm_views v LEFT JOIN ep.ivm_async a"
					"    ON a.view_id OPERATOR(pg_catalog.=) v.view_id"
					" WHERE v.refresh OPERATOR(pg_catalog.=) 'async'"
					" ORDER BY v.view_id DESC", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the async views");
	n = SPI_processed;
	views = palloc0(sizeof(AsyncView) * (n + 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		AsyncView  *v = &views[i];
		bool		isnull;
		Datum		x;
		Datum	   *elems;
		bool	   *enulls;
		int			k;

		v->view_id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		x = SPI_getbinval(t, d, 2, &isnull);
		deconstruct_array(DatumGetArrayTypeP(x), OIDOID, sizeof(Oid), true, TYPALIGN_INT,
						  &elems, &enulls, &v->nbase);
		v->bases = palloc(sizeof(Oid) * Max(v->nbase, 1));
		for (k = 0; k < v->nbase; k++)
			v->bases[k] = DatumGetObjectId(elems[k]);
		x = SPI_getbinval(t, d, 3, &isnull);
		v->applied = isnull ? InvalidXLogRecPtr : DatumGetLSN(x);
		v->needs_full = DatumGetBool(SPI_getbinval(t, d, 4, &isnull));
		v->name = SPI_getvalue(t, d, 5);
		v->storage = DatumGetObjectId(SPI_getbinval(t, d, 6, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	*out = views;
	return (int) n;
}

/* Does the descriptor a row was written with still read as the table's? */
static bool
ivm_async_desc_ok(TupleDesc written, TupleDesc now)
{
	int			a;

	if (written->natts > now->natts)
		return false;
	for (a = 0; a < written->natts; a++)
	{
		Form_pg_attribute x = TupleDescAttr(written, a);
		Form_pg_attribute y = TupleDescAttr(now, a);

		if (x->atttypid != y->atttypid || x->attisdropped != y->attisdropped ||
			(x->atttypmod != y->atttypmod && !x->attisdropped))
			return false;
	}
	return true;
}

static void
ivm_async_register(const char *name, Oid relid, Tuplestorestate *ts)
{
	EphemeralNamedRelation enr = palloc0(sizeof(EphemeralNamedRelationData));

	enr->md.name = pstrdup(name);
	enr->md.reliddesc = relid;
	enr->md.tupdesc = NULL;
	enr->md.enrtype = ENR_NAMED_TUPLESTORE;
	enr->md.enrtuples = tuplestore_tuple_count(ts);
	enr->reldata = ts;
	if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
		elog(ERROR, "could not register transition table \"%s\"", name);
}

/*
 * The owner may still read every base table, and no row-level security
 * applies to it (decoded changes carry every row): privileges checked when
 * the view was created can be taken away later, so every round checks
 * again, as table projections do. ep.events filters its changes itself in
 * the view's SQL (categories the owner may read).
 */
static void
ivm_async_check_access(IvmViewCache *vc)
{
	int			b;

	for (b = 0; b < vc->nbase; b++)
	{
		Oid			relid = vc->base_oids[b];

		if (pg_class_aclcheck(relid, vc->owner, ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table %s", get_rel_name(relid)),
					 errdetail("An async view reads its base tables as its owner, role \"%s\".",
							   GetUserNameFromId(vc->owner, false))));
		if (relid != ep_catalog()->events)
			ep_check_rls_bypass(relid, vc->owner);
	}
}

/*
 * Apply one view's changes (or recompute it), as its owner. SPI connected
 * as the extension owner. Returns the number of changes applied.
 */
static int64
ivm_async_apply_view(AsyncView *v, EpDecodeRound *round, bool full_in)
{
	volatile bool full = full_in;
	IvmViewCache *vc = ep_ivm_view_cache(v->view_id, false);
	EpOwnerCall call;
	EpChange   *c;
	int64		n = 0;
	int			b;
	bool		direct;
	bool	   *has = palloc0(sizeof(bool) * Max(vc->nbase, 1));

	/* what this view gets from the round */
	for (c = round->head; c && !full; c = c->next)
	{
		for (b = 0; b < vc->nbase; b++)
			if (vc->base_oids[b] == c->relid)
				break;
		if (b == vc->nbase || c->lsn <= v->applied)
			continue;
		if (strcmp(c->op, "TRUNCATE") == 0 || strcmp(c->op, "RECOMPUTE") == 0)
			full = true;
		has[b] = true;
		n++;
	}
	if (!full && n == 0)
		return 0;
	if (!full && vc->recompute)
		full = true;

	/* a batch larger than a fraction of the table recomputes (as deferred) */
	if (!full)
	{
		double		tuples = 0;

		for (b = 0; b < vc->nbase; b++)
		{
			Relation	rel = table_open(vc->base_oids[b], AccessShareLock);

			tuples += Max(rel->rd_rel->reltuples, 0);
			table_close(rel, AccessShareLock);
		}
		if (tuples > 0 && (double) n > IVM_FULL_FRACTION * tuples)
			full = true;
	}
	/* one table, one reference: the immediate mode's own statement, on the batch */
	direct = !full && vc->nbase == 1 && !vc->multi_occurrence && vc->sql_update &&
		vc->sql_update[0] != NULL;

	ep_ivm_view_pin(vc);
	ep_ivm_owner_enter(vc, &call);
	ep_ivm_writing++;
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		ivm_async_check_access(vc);
		for (b = 0; b < vc->nbase && !full; b++)
		{
			Tuplestorestate *ts_old;
			Tuplestorestate *ts_new;
			Relation	rel;
			int			rc;

			if (!has[b])
				continue;
			rel = table_open(vc->base_oids[b], AccessShareLock);
			ts_old = tuplestore_begin_heap(false, false, work_mem);
			ts_new = tuplestore_begin_heap(false, false, work_mem);
			for (c = round->head; c; c = c->next)
			{
				if (c->relid != vc->base_oids[b] || c->lsn <= v->applied)
					continue;
				if (!ivm_async_desc_ok(c->desc, RelationGetDescr(rel)))
				{
					full = true;
					break;
				}
				if (c->old_tup)
					tuplestore_puttuple(ts_old, c->old_tup);
				if (c->new_tup)
					tuplestore_puttuple(ts_new, c->new_tup);
			}
			table_close(rel, AccessShareLock);
			if (!full)
			{
				ivm_async_register(IVM_OLD_TABLE, vc->base_oids[b], ts_old);
				ivm_async_register(IVM_NEW_TABLE, vc->base_oids[b], ts_new);
				if (direct)
				{
					/* old rows -1, new rows +1: the batch telescopes */
					rc = SPI_execute(vc->sql_update[b], false, 0);
					if (rc != SPI_OK_SELECT)
						elog(ERROR, "maintenance of incremental view \"%s\" failed: %s",
							 vc->name, SPI_result_code_string(rc));
					ep_ivm_apply_result(vc, SPI_tuptable, SPI_processed, InvalidSnapshot);
				}
				else
				{
					rc = SPI_execute(vc->sql_log_update[b], false, 0);
					if (rc != SPI_OK_INSERT)
						elog(ERROR, "could not log the changes of incremental view \"%s\": %s",
							 vc->name, SPI_result_code_string(rc));
				}
				SPI_unregister_relation(IVM_OLD_TABLE);
				SPI_unregister_relation(IVM_NEW_TABLE);
			}
			tuplestore_end(ts_old);
			tuplestore_end(ts_new);
		}
		if (full)
		{
			/* whatever was logged above goes with the recompute */
			for (b = 0; b < vc->nbase && !vc->recompute; b++)
				if (vc->log_rels && vc->log_rels[b])
					SPI_execute(psprintf("DELETE FROM %s", vc->log_rels[b]), false, 0);
			ep_ivm_full_recompute(vc, false);
		}
		else if (!direct)
			ep_ivm_refresh_body(vc, vc->name, v->view_id, false);
		SPI_finish();
	}
	PG_FINALLY();
	{
		ep_ivm_writing--;
	}
	PG_END_TRY();
	ep_owner_leave(&call);
	ep_ivm_view_unpin(vc);
	return full ? Max(n, 1) * -1 : n;
}

static AsyncBackoff *
ivm_async_backoff(int64 view_id, bool create)
{
	bool		found;
	AsyncBackoff *b;

	if (backoffs == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(AsyncBackoff);
		backoffs = hash_create("event_patterns async view backoff", 16, &ctl,
							   HASH_ELEM | HASH_BLOBS);
	}
	b = hash_search(backoffs, &view_id, create ? HASH_ENTER : HASH_FIND, &found);
	if (create && !found)
	{
		b->attempts = 0;
		b->retry_at = 0;
	}
	return b;
}

/* Record a view's progress (or error); as the extension owner. */
static void
ivm_async_save(AsyncView *v, XLogRecPtr lsn, TimestampTz at, int64 napplied, bool full,
			   const char *error)
{
	Oid			types[6] = {INT8OID, LSNOID, TIMESTAMPTZOID, INT8OID, BOOLOID, TEXTOID};
	Datum		args[6];
	char		nulls[6] = "      ";

	args[0] = Int64GetDatum(v->view_id);
	args[1] = LSNGetDatum(lsn);
	args[2] = TimestampTzGetDatum(at);
	args[3] = Int64GetDatum(napplied);
	args[4] = BoolGetDatum(full);
	if (error)
		args[5] = CStringGetTextDatum(error);
	else
		nulls[5] = 'n';
	if (error)
	{
		if (SPI_execute_with_args("INSERT INTO ep.ivm_async AS a (view_id, last_error) VALUES ($1, $6)"
								  " ON CONFLICT (view_id) DO UPDATE SET last_error = $6",
								  6, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the error of async view " INT64_FORMAT, v->view_id);
		return;
	}
	if (SPI_execute_with_args("INSERT INTO ep.ivm_async AS a (view_id, applied_lsn, applied_at, needs_full,"
							  "   applied_changes, recomputes)"
							  " VALUES ($1, $2, $3, false, $4, CASE WHEN $5 THEN 1 ELSE 0 END)"
							  " ON CONFLICT (view_id) DO UPDATE SET"
							  "   applied_lsn = GREATEST(a.applied_lsn, $2), applied_at = $3,"
							  "   needs_full = false, last_error = NULL,"
							  "   applied_changes = a.applied_changes OPERATOR(pg_catalog.+) $4,"
							  "   recomputes = a.recomputes OPERATOR(pg_catalog.+) CASE WHEN $5 THEN 1 ELSE 0 END",
							  6, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the progress of async view " INT64_FORMAT, v->view_id);
}

/*
 * One attempt at a view in a subtransaction: true when it committed; else
 * *ed holds the error (in cxt). Errors that must end the round propagate.
 */
static bool
ivm_async_try(AsyncView *v, EpDecodeRound *round, bool full, XLogRecPtr cut,
			  TimestampTz start, MemoryContext cxt, ResourceOwner owner,
			  int64 *n, ErrorData **ed)
{
	volatile bool ok = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*n = ivm_async_apply_view(v, round, full);
		if (*n != 0)
			ivm_async_save(v, Max(v->applied, cut), start, *n < 0 ? 0 : *n, *n < 0, NULL);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *e;

		MemoryContextSwitchTo(cxt);
		e = CopyErrorData();
		if (e->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			e->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
			(e->sqlerrcode == ERRCODE_QUERY_CANCELED && !ep_owner_timed_out()))
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*ed = e;
	}
	PG_END_TRY();
	return ok;
}

/*
 * One round, in the caller's transaction, whose snapshot rules are set up
 * by the caller (see the header comment); SPI not connected. Returns the
 * number of changes applied; *more when the round gave up (try again).
 */
static int64
ivm_async_round(bool in_worker, bool slot_created, XLogRecPtr *upto_out, bool *more,
				bool *gave_up)
{
	EpSavedUser saved;
	AsyncView  *views;
	int			nviews;
	int			i;
	int			k;
	XLogRecPtr	upto;
	XLogRecPtr	cut;
	EpDecodeRound round;
	Snapshot	snap;
	char		slot[NAMEDATALEN];
	int64		applied = 0;
	TimestampTz start = GetCurrentTimestamp();
	XLogRecPtr	confirm = InvalidXLogRecPtr;
	int			guc_nest;
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	*more = false;
	*gave_up = false;
	ivm_async_slot_name(slot, sizeof(slot), MyDatabaseId);
	/*
	 * Batches are planned for their size each round: compiling them (JIT)
	 * would cost more than it saves. Rolled back with the nest level below.
	 */
	guc_nest = NewGUCNestLevel();
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the worker's first statement takes the transaction's snapshot S */
	nviews = ivm_async_load(&views);
	if (!in_worker)
	{
		/* nothing commits on the base tables until this transaction ends */
		for (i = 0; i < nviews; i++)
			for (k = 0; k < views[i].nbase; k++)
				LockRelationOid(views[i].bases[k], ShareLock);
		snap = RegisterSnapshot(GetLatestSnapshot());
	}
	else
		snap = RegisterSnapshot(GetTransactionSnapshot());

	/* (ep.apply_async_views: S is taken after the slot was created) */
	if (slot_created)
	{
		for (i = 0; i < nviews; i++)
			views[i].needs_full = true;
	}

	/* after S: every transaction S sees committed before upto */
	upto = GetXLogInsertRecPtr();
	if (upto % XLOG_BLCKSZ <= SizeOfXLogLongPHD)
		upto -= upto % XLOG_BLCKSZ;
	XLogFlush(upto);
	*upto_out = upto;
	ep_decoder_help_restart_named(slot, EP_ASYNC_RESTART_LAG);

	memset(&round, 0, sizeof(round));
	round.cxt = AllocSetContextCreate(cxt, "ep async view changes", ALLOCSET_DEFAULT_SIZES);
	round.events_relid = InvalidOid;
	round.collect_after = PG_INT64_MAX;
	round.horizon = PG_INT64_MAX;
	round.max_changes = PG_INT64_MAX;
	round.max_bytes = (Size) ep_guc_async_view_batch_memory_kb * 1024;
	round.raw_rows = true;
	round.snap = snap;
	{
		int			total = 1;

		for (i = 0; i < nviews; i++)
			total += views[i].nbase;
		round.watch = palloc(sizeof(Oid) * total);
	}
	for (i = 0; i < nviews; i++)
	{
		for (k = 0; k < views[i].nbase; k++)
		{
			int			j;

			for (j = 0; j < round.nwatch; j++)
				if (round.watch[j] == views[i].bases[k])
					break;
			if (j == round.nwatch)
				round.watch[round.nwatch++] = views[i].bases[k];
		}
	}
	round.touched = palloc0(sizeof(bool) * Max(round.nwatch, 1));

	/*
	 * Confirm what the last committed round no longer needs, or at least
	 * what every view has stored (committed) as applied.
	 */
	confirm = next_confirm;
	{
		XLogRecPtr	stored = InvalidXLogRecPtr;
		bool		all = nviews > 0;

		for (i = 0; i < nviews; i++)
		{
			if (views[i].needs_full || views[i].applied == InvalidXLogRecPtr)
				continue;
			if (views[i].applied < stored || stored == InvalidXLogRecPtr)
				stored = views[i].applied;
		}
		for (i = 0; i < nviews; i++)
			if (!views[i].needs_full && views[i].applied == InvalidXLogRecPtr)
				all = false;
		if (all && stored > confirm)
			confirm = stored;
	}
	{
		/* decoding logs two lines per pass at LOG: not every few ms */
		int			nest = NewGUCNestLevel();

		(void) set_config_option("log_min_messages", "warning", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		ep_decoder_run_named(slot, &round, confirm, upto);
		AtEOXact_GUC(true, nest);
	}

	if (round.visible_after)
	{
		/* commit order and visibility swapped right at S: try again */
		elog(DEBUG1, "event_patterns: async view round gave up at %X/%X",
			 LSN_FORMAT_ARGS(round.first_invisible));
		UnregisterSnapshot(snap);
		SPI_finish();
		ep_restore_user(&saved);
		AtEOXact_GUC(true, guc_nest);
		MemoryContextDelete(round.cxt);
		*more = true;
		*gave_up = true;
		return 0;
	}
	elog(DEBUG1, "event_patterns: async views decoded %X/%X..%X/%X: " INT64_FORMAT " changes%s in %ld ms",
		 LSN_FORMAT_ARGS(confirm), LSN_FORMAT_ARGS(round.decoded_to), round.nchanges,
		 round.overflow ? " (overflow)" : "",
		 (long) ((GetCurrentTimestamp() - start) / 1000));

	/*
	 * Applied through the cut: every transaction S sees ends at or before
	 * it; the first one S does not see commits at it (and the slot,
	 * confirmed to the cut, still decodes that one).
	 */
	cut = round.first_invisible != InvalidXLogRecPtr ? round.first_invisible : round.decoded_to;

	for (i = 0; i < nviews; i++)
	{
		AsyncView  *v = &views[i];
		bool		full = v->needs_full || v->applied == InvalidXLogRecPtr;
		AsyncBackoff *bo = in_worker ? ivm_async_backoff(v->view_id, false) : NULL;
		int64		n = 0;

		if (bo && bo->retry_at > start)
		{
			v->skipped = true;
			continue;
		}
		if (round.overflow)
		{
			for (k = 0; k < v->nbase; k++)
			{
				int			j;

				for (j = 0; j < round.nwatch; j++)
					if (round.watch[j] == v->bases[k] && round.touched[j])
						full = true;
			}
		}

		{
			ErrorData  *ed = NULL;
			bool		ok;

			TimestampTz t0 = GetCurrentTimestamp();

			ok = ivm_async_try(v, &round, full, cut, start, cxt, owner, &n, &ed);
			elog(DEBUG1, "event_patterns: async view \"%s\": " INT64_FORMAT " changes%s in %ld ms",
				 v->name, n < 0 ? 0 : n, n < 0 ? " (recomputed)" : "",
				 (long) ((GetCurrentTimestamp() - t0) / 1000));
			if (!ok && !full)
			{
				/* a batch that fails may still recompute (e.g. 1/x of a row gone since) */
				FreeErrorData(ed);
				ok = ivm_async_try(v, &round, true, cut, start, cxt, owner, &n, &ed);
			}
			if (ok)
			{
				v->ok = true;
				v->wrote = n != 0;
				applied += n < 0 ? 0 : n;
				if (bo)
					hash_search(backoffs, &v->view_id, HASH_REMOVE, NULL);
				continue;
			}
			/* SPI of the round is still connected, as the extension owner */
			ivm_async_save(v, cut, start, 0, false, ed->message);
			if (in_worker)
			{
				AsyncBackoff *b2 = ivm_async_backoff(v->view_id, true);
				long		wait_ms;

				b2->attempts++;
				wait_ms = Min(500L << Min(b2->attempts - 1, 10), (long) EP_ASYNC_MAX_BACKOFF_MS);
				b2->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), wait_ms);
				ereport(LOG,
						(errmsg("event_patterns: async view \"%s\" failed: %s",
								v->name, ed->message),
						 errdetail("It is tried again in %ld ms; the other views go on.", wait_ms)));
			}
			else
				ereport(WARNING,
						(errmsg("async view \"%s\" failed: %s", v->name, ed->message)));
			FreeErrorData(ed);
		}
	}

	/* a view over another one's storage catches up in the next round, at once */
	for (i = 0; i < nviews; i++)
	{
		if (!views[i].wrote)
			continue;
		for (k = 0; k < nviews; k++)
		{
			int			j;

			for (j = 0; j < views[k].nbase; j++)
				if (views[k].bases[j] == views[i].storage)
					*more = true;
		}
	}

	/* what the slot may forget once this commits */
	{
		XLogRecPtr	need = cut;

		for (i = 0; i < nviews; i++)
		{
			AsyncView  *v = &views[i];

			if (!v->ok && !v->needs_full && v->applied != InvalidXLogRecPtr)
				need = Min(need, v->applied);
		}
		pending_confirm = need;
		pending_decoded = cut;
		pending_at = start;
		pending_publish = true;
	}

	UnregisterSnapshot(snap);
	SPI_finish();
	ep_restore_user(&saved);
	AtEOXact_GUC(true, guc_nest);
	MemoryContextDelete(round.cxt);
	return applied;
}

static bool
ivm_async_any_view(void)
{
	EpSavedUser saved;
	bool		any;

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT 1 FROM ep.ivm_views WHERE refresh OPERATOR(pg_catalog.=) 'async' LIMIT 1",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.ivm_views");
	any = SPI_processed > 0;
	SPI_finish();
	ep_restore_user(&saved);
	return any;
}

/*
 * The worker step: when async views exist and the WAL moved, one round in
 * a REPEATABLE READ transaction; asks for the next round within
 * event_patterns.async_view_naptime.
 */
static bool
ivm_async_step(void)
{
	volatile bool more = false;
	volatile bool locked = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz now;
	XLogRecPtr	insert;
	LOCKTAG		tag;
	XLogRecPtr	upto = InvalidXLogRecPtr;

	if (RecoveryInProgress() || async_shared == NULL)
		return false;
	now = GetCurrentTimestamp();
	if (step_failures > 0 && now < step_retry_at)
	{
		ep_worker_request_round(ep_guc_async_view_naptime_ms);
		return false;
	}
	if (!views_exist && !TimestampDifferenceExceeds(last_check, now, EP_ASYNC_CHECK_MS))
		return false;

	insert = GetXLogInsertRecPtr();
	if (insert % XLOG_BLCKSZ <= SizeOfXLogLongPHD)
		insert -= insert % XLOG_BLCKSZ;
	if (views_exist && insert == last_upto &&
		!TimestampDifferenceExceeds(last_check, now, EP_ASYNC_CHECK_MS))
	{
		XLogRecPtr	decoded;
		TimestampTz at;

		/* nothing was written: the views are as current as they were */
		ivm_async_published(&decoded, &at);
		if (decoded >= insert)
			ivm_async_publish(decoded, now);
		/* after a second without WAL, poll less often (the worker's other steps run each time) */
		idle_polls++;
		ep_worker_request_round(idle_polls < EP_ASYNC_IDLE_POLLS ? ep_guc_async_view_naptime_ms :
								Max(ep_guc_async_view_naptime_ms, EP_ASYNC_IDLE_NAPTIME_MS));
		return false;
	}

	idle_polls = 0;
	ivm_async_round_locktag(&tag);
	PG_TRY();
	{
		ep_bgw_start_xact();
		/* one snapshot for the whole round (see the header comment) */
		XactIsoLevel = XACT_REPEATABLE_READ;
		PushActiveSnapshot(GetTransactionSnapshot());
		last_check = now;
		if (!ivm_async_installed() || ep_catalog()->version < EP_VERSION_0_2)
			views_exist = false;
		else
		{
			views_exist = ivm_async_any_view();
			if (!views_exist)
			{
				char		slot[NAMEDATALEN];

				ivm_async_slot_name(slot, sizeof(slot), MyDatabaseId);
				ep_decoder_drop_named_slot(slot);
			}
			else if (LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL)
			{
				char		slot[NAMEDATALEN];
				bool		created;
				bool		m;
				bool		g;

				locked = true;
				ivm_async_slot_name(slot, sizeof(slot), MyDatabaseId);
				created = ep_decoder_ensure_named_slot(slot);
				if (created)
				{
					/*
					 * The views are recomputed by the next round, whose
					 * snapshot is taken after the slot exists: what commits
					 * before its consistent point is in that snapshot, the
					 * rest is decoded.
					 */
					EpSavedUser saved;

					ep_become_owner(&saved);
					if (SPI_connect() != SPI_OK_CONNECT)
						elog(ERROR, "SPI_connect failed");
					if (SPI_execute("UPDATE ep.ivm_async SET needs_full = true", false, 0) != SPI_OK_UPDATE)
						elog(ERROR, "could not mark the async views for recompute");
					SPI_finish();
					ep_restore_user(&saved);
					ereport(LOG,
							(errmsg("event_patterns: replication slot \"%s\" created; async views of this database are recomputed", slot)));
					more = true;
				}
				else
				{
					(void) ivm_async_round(true, false, &upto, &m, &g);
					more = m;
				}
			}
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (locked)
			LockRelease(&tag, ExclusiveLock, true);
		locked = false;
		if (upto != InvalidXLogRecPtr)
			last_upto = upto;
		step_failures = 0;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		FlushErrorState();
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		AbortCurrentTransaction();
		if (locked)
			LockRelease(&tag, ExclusiveLock, true);
		locked = false;
		if (ed->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE)
			more = true;		/* a concurrent ep.refresh_view: again */
		else
		{
			step_failures++;
			step_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Min(1000L << Min(step_failures - 1, 9), 300000L));
			ereport(LOG,
					(errmsg("event_patterns: async view round failed: %s", ed->message),
					 errdetail("Async views of this database are retried in %d seconds.",
							   (int) Min(1L << Min(step_failures - 1, 9), 300L))));
		}
		FreeErrorData(ed);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	if (views_exist)
		ep_worker_request_round(ep_guc_async_view_naptime_ms);
	return more;
}

/* ---------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------
 */

/*
 * ep.apply_async_views() RETURNS bigint: one round in this transaction
 * (tests and manual use; the worker does the same by itself). The base
 * tables are locked in SHARE mode until the transaction ends.
 */
PG_FUNCTION_INFO_V1(ep_apply_async_views);
Datum
ep_apply_async_views(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	char		slot[NAMEDATALEN];
	bool		created;
	bool		more;
	bool		gave_up = true;
	XLogRecPtr	upto;
	int64		total = 0;
	int			tries;

	ep_require_preload("applying async views");
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("async views cannot be applied during recovery")));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("async views cannot be applied in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errhint("Call ep.apply_async_views() in a READ COMMITTED transaction.")));
	{
		EpSavedUser saved;
		bool		any;

		ep_become_owner(&saved);
		SPI_connect();
		any = SPI_execute("SELECT 1 FROM ep.ivm_views WHERE refresh OPERATOR(pg_catalog.=) 'async' LIMIT 1",
						  true, 0) == SPI_OK_SELECT && SPI_processed > 0;
		SPI_finish();
		ep_restore_user(&saved);
		if (!any)
			PG_RETURN_INT64(0);
	}
	ivm_async_round_locktag(&tag);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	ivm_async_slot_name(slot, sizeof(slot), MyDatabaseId);
	created = ep_decoder_ensure_named_slot(slot);
	/* under the locks nothing can swap; one retry is plenty */
	for (tries = 0; gave_up && tries < 3; tries++)
	{
		total += ivm_async_round(false, created, &upto, &more, &gave_up);
		created = false;
	}
	PG_RETURN_INT64(total);
}

/* ep._ivm_async_decoded() */
PG_FUNCTION_INFO_V1(ep_ivm_async_decoded);
Datum
ep_ivm_async_decoded(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	XLogRecPtr	decoded;
	TimestampTz at;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	ivm_async_published(&decoded, &at);
	values[0] = LSNGetDatum(decoded);
	values[1] = TimestampTzGetDatum(at);
	nulls[0] = decoded == InvalidXLogRecPtr;
	nulls[1] = at == 0;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * ep.wait_for_view(name text, timeout interval) RETURNS boolean
 *
 * The target is the WAL insert position at the call: every transaction
 * committed before the call ends before it. The view has reached it when
 * its stored position, or (while it has no error) the cut of the last
 * committed round, is there. The published cut is read before the view's
 * row, so an error recorded by that round is seen.
 */
static bool
ivm_async_wait(int64 view_id, TimestampTz deadline, int depth)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(view_id)};
	SPIPlanPtr	plan;
	XLogRecPtr	target;
	bool		done = false;
	bool		isnull;
	uint64		nbase;
	int64	   *bases;
	uint64		i;

	/*
	 * A view over other async views' storage: those first; their writes
	 * (which reflect everything before our target) then come before a
	 * target taken afterwards.
	 */
	if (SPI_execute_with_args("SELECT w.view_id FROM ep.ivm_views v"
							  " CROSS JOIN LATERAL pg_catalog.unnest(v.base_rels) b(rel)"
							  " JOIN ep.ivm_views w ON w.storage_rel OPERATOR(pg_catalog.=) b.rel"
							  " WHERE v.view_id OPERATOR(pg_catalog.=) $1"
							  "   AND w.refresh OPERATOR(pg_catalog.=) 'async'",
							  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the bases of async view " INT64_FORMAT, view_id);
	nbase = SPI_processed;
	bases = palloc(sizeof(int64) * (nbase + 1));
	for (i = 0; i < nbase; i++)
		bases[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	for (i = 0; i < nbase; i++)
		if (depth < 32 && !ivm_async_wait(bases[i], deadline, depth + 1))
			return false;

	target = GetXLogInsertRecPtr();
	if (target % XLOG_BLCKSZ <= SizeOfXLogLongPHD)
		target -= target % XLOG_BLCKSZ;
	plan = SPI_prepare("SELECT applied_lsn, needs_full, last_error IS NULL FROM ep.ivm_async"
					   " WHERE view_id OPERATOR(pg_catalog.=) $1", 1, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed");
	ep_worker_wake(MyDatabaseId);

	ConditionVariablePrepareToSleep(&async_shared->cv);
	for (;;)
	{
		XLogRecPtr	decoded = InvalidXLogRecPtr;
		TimestampTz at;
		Snapshot	latest;
		int			rc;

		ivm_async_published(&decoded, &at);
		latest = RegisterSnapshot(GetLatestSnapshot());
		rc = SPI_execute_snapshot(plan, args, NULL, latest, InvalidSnapshot, true, false, 1);
		UnregisterSnapshot(latest);
		if (rc == SPI_OK_SELECT && SPI_processed == 1)
		{
			HeapTuple	t = SPI_tuptable->vals[0];
			TupleDesc	d = SPI_tuptable->tupdesc;
			Datum		x = SPI_getbinval(t, d, 1, &isnull);
			XLogRecPtr	applied = isnull ? InvalidXLogRecPtr : DatumGetLSN(x);
			bool		needs_full = DatumGetBool(SPI_getbinval(t, d, 2, &isnull));
			bool		healthy = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));

			if (!needs_full && applied != InvalidXLogRecPtr &&
				(applied >= target || (healthy && decoded >= target)))
				done = true;
		}
		if (done || GetCurrentTimestamp() >= deadline)
			break;
		(void) ConditionVariableTimedSleep(&async_shared->cv, 20, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		ep_worker_wake(MyDatabaseId);
	}
	ConditionVariableCancelSleep();
	SPI_freeplan(plan);
	return done;
}

/*
 * ep.wait_for_view(name text, timeout interval) RETURNS boolean
 *
 * The target is the WAL insert position at the call: every transaction
 * committed before the call ends before it. The view has reached it when
 * its stored position, or (while it has no error) the cut of the last
 * committed round, is there. The published cut is read before the view's
 * row, so an error recorded by that round is seen.
 */
PG_FUNCTION_INFO_V1(ep_wait_for_view);
Datum
ep_wait_for_view(PG_FUNCTION_ARGS)
{
	char	   *name;
	Interval   *timeout;
	TimestampTz deadline;
	Oid			types[1] = {TEXTOID};
	Datum		args[1];
	int64		view_id;
	bool		isnull;
	bool		done;
	char	   *refresh;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be null")));
	timeout = PG_GETARG_INTERVAL_P(1);
	{
		int64		us = timeout->time + (int64) timeout->day * USECS_PER_DAY +
			(int64) timeout->month * 30 * USECS_PER_DAY;

		if (us < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must not be negative")));
		deadline = GetCurrentTimestamp() + us;
	}
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async views are not maintained during recovery")));

	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT view_id, refresh FROM ep._ivm_lookup($1)",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look up incremental view \"%s\"", name);
	view_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	refresh = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (strcmp(refresh, "async") != 0 || async_shared == NULL)
	{
		/* immediate views are current at every commit; the others wait for a refresh */
		SPI_finish();
		PG_RETURN_BOOL(strcmp(refresh, "immediate") == 0);
	}
	done = ivm_async_wait(view_id, deadline, 0);
	SPI_finish();
	PG_RETURN_BOOL(done);
}

/* ---------------------------------------------------------------------
 * DROP DATABASE / DROP EXTENSION let go of the slot; initialization
 * ---------------------------------------------------------------------
 */
static void
ivm_async_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;
	char		slot[NAMEDATALEN];

	if (IsA(node, DropdbStmt) && max_replication_slots > 0)
	{
		Oid			db = get_database_oid(((DropdbStmt *) node)->dbname, true);

		if (OidIsValid(db) && pg_database_ownercheck(db, GetUserId()))
		{
			ivm_async_slot_name(slot, sizeof(slot), db);
			ep_decoder_drop_named_slot(slot);
		}
	}

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (IsA(node, DropStmt) && ((DropStmt *) node)->removeType == OBJECT_EXTENSION &&
		max_replication_slots > 0 && get_extension_oid("event_patterns", true) == InvalidOid)
	{
		ivm_async_slot_name(slot, sizeof(slot), MyDatabaseId);
		ep_decoder_drop_named_slot(slot);
	}
}

void
ep_ivm_async_init(void)
{
	static bool done = false;

	if (done)
		return;
	done = true;
	DefineCustomIntVariable("event_patterns.async_view_naptime",
							"Longest wait of the worker before it looks for new changes of async views' base tables.",
							"Only while async views exist; a round decodes only when the WAL moved.",
							&ep_guc_async_view_naptime_ms,
							10, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("event_patterns.async_view_batch_memory",
							"Most memory the decoded rows of one round of async views may use.",
							"Views whose base tables changed beyond it are recomputed instead.",
							&ep_guc_async_view_batch_memory_kb,
							65536, 1024, INT_MAX / 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	RegisterXactCallback(ivm_async_xact_callback, NULL);
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = ivm_async_utility;
	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("async views", ivm_async_step);
}
