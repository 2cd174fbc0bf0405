/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Apply rounds of the async projections (the worker step and
 *	  ep.apply_projections), ep.wait_for_projection, the slot clean-up on
 *	  DROP DATABASE / DROP EXTENSION, and the projections' shared memory.
 *
 * Progress of an event projection is a prefix: last_position means "every
 * event at or below it has been applied, none above". Positions are drawn
 * in increasing order but commit in any order, so a decoded stream is not
 * a prefix by itself; the read horizon H of position.c makes it one: every
 * event below H has committed (or never will), so a round applies exactly
 * the events in (last_position, H) and stores H - 1, in the same
 * transaction as the handler's writes. A crash anywhere repeats a round
 * from the stored prefix: nothing is applied twice or skipped.
 *
 * Where the events of a round come from:
 *	- from decoding, when the slot is known to deliver them: the stored
 *	  cover_position says every event above it commits after the slot's
 *	  confirmed position; a projection with last_position >= cover whose
 *	  gap to H fits a batch takes the decoded events (the round decodes up
 *	  to an LSN E read after H, after flushing WAL to E, so every commit of
 *	  an event below H is in [confirmed, E]);
 *	- from ep.events (index range scan, batches of bounded size), for a
 *	  new projection, a rebuild, a large backlog, or while cover is unknown
 *	  (first use, slot lost or invalidated). Catch-up and recovery are the
 *	  same path; the handover to decoding needs no coordination because
 *	  both deliver exactly (last_position, H).
 * Keeping cover true: decoding marks every transaction holding an event at
 * or above H as deferred; the slot is confirmed only to the end of the last
 * transaction before the first deferred one, so every event >= H still
 * commits after the confirmed position: cover' = max(cover, H - 1). Cover
 * is also established (or raised) when H = W + 1 at a moment after the
 * confirmed position, W being the sequence's last value: every later event
 * is drawn, hence committed, afterwards.
 *
 * Table projections (change data capture) are exactly-once by LSN: a
 * change is applied when its transaction's end LSN is above the stored
 * last_lsn. Their first round ('rebuilding') locks the source in SHARE
 * mode, so every committed change is in the snapshot and every later one
 * commits after the current insert LSN L, calls the handler with TRUNCATE
 * then INSERT for every row, and stores L. A lost slot puts them back in
 * that state.
 *
 * Message handlers (kind 'message', channels) are not decoded: they read
 * their channel's table in arrival order (ep_apply_messages; channel.c
 * says why that is exactly once) and store the last received_seq. A
 * database whose only async projections are message handlers keeps no
 * slot; rounds that collect nothing decode only now and then, to move
 * the slot on.
 *
 * The slot's confirmed position is stored in ep.projection_state with the
 * round and confirmed to the slot by the next round, before decoding: it
 * is confirmed only once committed. Rounds write nothing when nothing was
 * applied and the positions did not move, so an idle database produces no
 * WAL from here.
 *
 * Each handler runs as the projection's owner (projection_api.c), in a
 * subtransaction per chunk of events; when a chunk fails its events are
 * redone one by one, each retried event_patterns.projection_max_retries
 * times with exponential backoff, then parked in ep.parked; the projection
 * goes on.
 *
 * Locking: a round holds the transaction advisory lock
 * EP_PROJECTION_LOCK_KEY exclusively; the SQL API takes it shared, so
 * definitions never change during a round and two rounds never overlap
 * (the worker only tries it; ep.apply_projections waits).
 * Shared memory: per database the LSN every running table projection has
 * been decoded through, and one condition variable broadcast after each
 * committed round, for ep.wait_for_projection.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "storage/condition_variable.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

#include "event_patterns.h"
#include "category.h"
#include "channel/channel.h"
#include "owner.h"
#include "launcher.h"
#include "position.h"
#include "replica/replica.h"
#include "projection.h"
#include "upcast.h"
#include "shmem.h"
#include "stream_read.h"
#include "worker.h"

#define EP_CHUNK			1000	/* events per subtransaction */
#define EP_TABLE_TURN_MS	250		/* longest turn of a table projection in a round */
#define EP_TABLE_BATCH		1000	/* rows per read of ep.events */
#define EP_MAX_DB			64
#define EP_CONFIRM_WRITE_LAG	(16 * 1024 * 1024)
#define EP_IDLE_DECODE_LAG	(32 * 1024 * 1024)	/* rounds with nothing to decode: */
#define EP_IDLE_DECODE_MS	10000	/* move the slot on this often */

int			ep_guc_projection_max_retries = 3;
int			ep_guc_projection_retry_backoff_ms = 100;
int			ep_guc_projection_batch_size = 10000;
int			ep_guc_projection_batch_memory_kb = 65536;
int			ep_guc_projection_max_failures = 10;
int			ep_guc_projection_slow_call_ms = 500;

/* this process is a projection runner (applies one slow projection) */
static bool in_runner = false;

#define EP_TOO_MANY_FAILURES(p) \
	(ep_guc_projection_max_failures > 0 && (p)->failures >= ep_guc_projection_max_failures)

/*
 * Items whose progress is counted by source transaction (changes of a
 * table projection after its first load); events and messages count one
 * by one.
 */
#define EP_BY_TXN(p) ((p)->is_table && !(p)->is_message && !(p)->rebuilding)

typedef struct EpProjDb
{
	Oid			dbid;
	XLogRecPtr	decoded_to;
} EpProjDb;

typedef struct EpProjShared
{
	slock_t		mutex;
	ConditionVariable cv;
	EpProjDb	dbs[EP_MAX_DB];
} EpProjShared;

static EpProjShared *proj_shared = NULL;

/* published at commit by the transaction callback */
static bool pending_publish = false;
static XLogRecPtr pending_decoded_to = InvalidXLogRecPtr;
static bool round_in_xact = false;
static int	step_failures = 0;	/* consecutive failed worker rounds */
static TimestampTz step_retry_at = 0;
static bool init_done = false;
static ProcessUtility_hook_type prev_utility_hook = NULL;

typedef struct EpProj
{
	int32		id;
	char	   *name;
	bool		is_table;
	bool		is_message;		/* a message handler: table projection of a channel */
	Oid			handler;
	Oid			owner;
	char	   *search_path;	/* recorded at creation */
	int			timeout_ms;		/* -1: event_patterns.handler_timeout */
	int			ntypes;
	char	  **types;
	char	   *category;
	Oid			source;
	bool		rebuilding;
	int64		last_position;
	XLogRecPtr	last_lsn;
	int32		generation;		/* bumped by rebuild: a stale round's work is undone */
	int			failures;		/* events parked in a row */

	/* this round */
	FmgrInfo	flinfo;
	bool		usable;
	bool		decode_ok;
	int64		new_position;
	XLogRecPtr	new_lsn;
	bool		caught_up;
	int64		applied;
	int64		decoded;		/* of which from decoding */
	char	   *last_error;
	MemoryContext chunk_cxt;
	bool		retry_later;	/* worker: a failure to retry in a later round */
	bool		stopped;		/* too many failures in a row: status failed */
	int64		stop_position;	/* events: the last one accounted for */
	XLogRecPtr	stop_lsn;		/* table changes: the last transaction accounted for */
	bool		skip;			/* waiting for a retry: not this round */
	bool		patience;		/* calls limited by projection_slow_call */
	bool		slow;			/* a call ran out of patience: give it a runner */
	bool		parked_in_round;	/* this round parked an item: retries happen in place */
	TimestampTz turn_ends;		/* table changes in the worker: yield after this */
	bool		yielded;		/* its turn ended: the rest waits for the next round */
	XLogRecPtr	yield_lsn;		/* the last transaction applied before yielding */
} EpProj;

typedef struct EpItem
{
	int64		position;		/* events; 0 for table changes */
	XLogRecPtr	lsn;			/* table changes: commit LSN of their transaction */
	int			nargs;
	Datum		args[3];
	bool		nulls[3];
} EpItem;

/* ---------------------------------------------------------------------
 * Shared memory
 * ---------------------------------------------------------------------
 */
Size
ep_projection_shmem_size(void)
{
	return MAXALIGN(sizeof(EpProjShared));
}

void
ep_projection_shmem_init(void)
{
	bool		found;

	proj_shared = ShmemInitStruct("event_patterns projections",
								  ep_projection_shmem_size(), &found);
	if (!found)
	{
		SpinLockInit(&proj_shared->mutex);
		ConditionVariableInit(&proj_shared->cv);
		memset(proj_shared->dbs, 0, sizeof(proj_shared->dbs));
	}
}

XLogRecPtr
ep_projection_decoded_to(void)
{
	XLogRecPtr	lsn = InvalidXLogRecPtr;
	int			i;

	if (proj_shared == NULL)
		return lsn;
	SpinLockAcquire(&proj_shared->mutex);
	for (i = 0; i < EP_MAX_DB; i++)
		if (proj_shared->dbs[i].dbid == MyDatabaseId)
			lsn = proj_shared->dbs[i].decoded_to;
	SpinLockRelease(&proj_shared->mutex);
	return lsn;
}

ConditionVariable *
ep_projection_cv(void)
{
	return proj_shared ? &proj_shared->cv : NULL;
}

static void
ep_publish(XLogRecPtr decoded_to)
{
	int			i;
	int			slot = -1;

	if (proj_shared == NULL)
		return;
	SpinLockAcquire(&proj_shared->mutex);
	for (i = 0; i < EP_MAX_DB; i++)
	{
		if (proj_shared->dbs[i].dbid == MyDatabaseId)
		{
			slot = i;
			break;
		}
		if (slot < 0 && proj_shared->dbs[i].dbid == InvalidOid)
			slot = i;
	}
	if (slot >= 0)
	{
		proj_shared->dbs[slot].dbid = MyDatabaseId;
		if (decoded_to > proj_shared->dbs[slot].decoded_to)
			proj_shared->dbs[slot].decoded_to = decoded_to;
	}
	SpinLockRelease(&proj_shared->mutex);
	ConditionVariableBroadcast(&proj_shared->cv);
}

static void
ep_projection_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (pending_publish)
				ep_publish(pending_decoded_to);
			/* FALLTHROUGH */
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pending_publish = false;
			pending_decoded_to = InvalidXLogRecPtr;
			round_in_xact = false;
			break;
		default:
			break;
	}
}

/* ---------------------------------------------------------------------
 * DROP DATABASE / DROP EXTENSION let go of the slot
 * ---------------------------------------------------------------------
 */
static void
ep_projection_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					  ProcessUtilityContext context, ParamListInfo params,
					  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;

	if (IsA(node, DropdbStmt) && max_replication_slots > 0)
	{
		Oid			db = get_database_oid(((DropdbStmt *) node)->dbname, true);

		if (OidIsValid(db) && pg_database_ownercheck(db, GetUserId()))
			ep_decoder_drop_slot(db);
	}

	if (prev_utility_hook)
		prev_utility_hook(pstmt, queryString, readOnlyTree, context, params,
						  queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	/* after DROP EXTENSION succeeded: nobody needs the slot any more */
	if (IsA(node, DropStmt) && ((DropStmt *) node)->removeType == OBJECT_EXTENSION &&
		max_replication_slots > 0 && get_extension_oid("event_patterns", true) == InvalidOid)
		ep_decoder_drop_slot(MyDatabaseId);
}

/* ---------------------------------------------------------------------
 * Initialization (called from _PG_init)
 * ---------------------------------------------------------------------
 */
void
ep_projection_init(void)
{
	if (init_done)
		return;
	init_done = true;

	DefineCustomIntVariable("event_patterns.projection_max_retries",
							"Retries of a failing projection handler before the event is parked.",
							"Each event is tried once plus this many times, with exponential backoff.",
							&ep_guc_projection_max_retries,
							3, 0, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("event_patterns.projection_retry_backoff",
							"Wait before the first retry of a failing projection handler.",
							"The wait doubles with each further retry, up to 10 seconds.",
							&ep_guc_projection_retry_backoff_ms,
							100, 0, 10000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("event_patterns.projection_batch_size",
							"Most events or changes one projection apply round handles.",
							"Also bounds how many decoded changes a round keeps in memory.",
							&ep_guc_projection_batch_size,
							10000, 1, 10000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("event_patterns.projection_batch_memory",
							"Most memory the decoded changes of one apply round may use.",
							"Decoding stops at the next commit once it is reached.",
							&ep_guc_projection_batch_memory_kb,
							65536, 1024, INT_MAX / 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);

	DefineCustomIntVariable("event_patterns.projection_max_consecutive_failures",
							"Events parked in a row after which a projection stops with status failed.",
							"The projection waits for ep.resume_projection(); 0 never stops it.",
							&ep_guc_projection_max_failures,
							10, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("event_patterns.projection_slow_call",
							"Time a batch of handler calls may take in the worker before its projection gets a process of its own.",
							"The projection is then applied by a projection runner (one of event_patterns.max_job_workers) "
							"with its full handler_timeout, so it never holds the other projections back; 0 keeps every "
							"projection in the worker.",
							&ep_guc_projection_slow_call_ms,
							500, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	RegisterXactCallback(ep_projection_xact_callback, NULL);
	prev_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = ep_projection_utility;

	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("projections", ep_projection_step);
}

/* ---------------------------------------------------------------------
 * SPI helpers (the round runs its own statements as the extension owner)
 * ---------------------------------------------------------------------
 */
static void
ep_exec(const char *sql, int nargs, Oid *argtypes, Datum *args, const char *nulls, int expect)
{
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, argtypes, args, nulls, false, 0);
	if (rc != expect)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql, SPI_result_code_string(rc));
}

/*
 * The statements every round runs keep their plans (per process: a worker
 * serves one database); each call site has its own cache.
 */
static int
ep_run_kept(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes, Datum *args,
			const char *nulls, bool read_only)
{
	return SPI_execute_plan(ep_spi_keep_plan(cache, sql, nargs, argtypes), args, nulls, read_only, 0);
}

static void
ep_exec_kept(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes, Datum *args,
			 const char *nulls, int expect)
{
	int			rc = ep_run_kept(cache, sql, nargs, argtypes, args, nulls, false);

	if (rc != expect)
		elog(ERROR, "SPI_execute_plan failed for \"%s\": %s", sql, SPI_result_code_string(rc));
}

static int64
ep_sequence_last(Oid seqid)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		d;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seqid);
	fcinfo->args[0].isnull = false;
	d = pg_sequence_last_value(fcinfo);
	return fcinfo->isnull ? 0 : DatumGetInt64(d);
}

/*
 * The water mark W and the horizon H of a round.  On a writer W is read
 * before H; on a read node H is the replicated one and W the largest
 * position present, read after it (replica/reader.c explains why).
 */
static void
ep_round_bounds(const EpCatalog *cat, int64 *water, int64 *horizon)
{
	if (ep_replica_round_bounds(water, horizon))
		return;
	*water = ep_sequence_last(cat->position_seq);
	*horizon = ep_position_horizon(cat->position_seq);
}

static char *
ep_getstr(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

static Datum
ep_getbin(HeapTuple tup, TupleDesc desc, int col, bool *isnull)
{
	return SPI_getbinval(tup, desc, col, isnull);
}

/* ---------------------------------------------------------------------
 * Calling handlers
 * ---------------------------------------------------------------------
 */

/*
 * How a projection's handler is called (owner.c). In the worker, calls of
 * event projections run out of patience after projection_slow_call: the
 * projection is then handed to a runner process of its own (see
 * ep_projection_runner_main), so that it never holds the others back.
 */
static bool
ep_patience_binds(EpProj *p)
{
	int			own = p->timeout_ms >= 0 ? p->timeout_ms : ep_guc_handler_timeout_ms;

	return p->patience && ep_guc_projection_slow_call_ms > 0 &&
		(own == 0 || own > ep_guc_projection_slow_call_ms);
}

static void
ep_projection_call(EpOwnerCall *call, EpProj *p)
{
	memset(call, 0, sizeof(*call));
	call->owner = p->owner;
	call->search_path = p->search_path;
	call->timeout_ms = ep_patience_binds(p) ? ep_guc_projection_slow_call_ms :
		ep_owner_capped_timeout(p->owner, p->timeout_ms);
	call->what = "projection handler of";
	call->name = p->name;
	ep_owner_enter(call);
}

/*
 * A table projection applied by the worker has a turn of at most 250 ms
 * (less when event_patterns.projection_slow_call is lower): once it is over, the projection
 * yields at the next source transaction's boundary and the rest of its
 * changes wait for the next round, after the other projections had theirs.
 */
static bool
ep_turn_over(EpProj *p)
{
	return p->turn_ends != 0 && GetCurrentTimestamp() >= p->turn_ends;
}

/*
 * Run items in one subtransaction; on error return false with *err set.
 * *done: how many ran (fewer than n when a table projection's turn ended).
 */
static bool
ep_try_items(EpProj *p, EpItem *items, int n, char **err, int *code, int *done)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;
	int			k;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(p->chunk_cxt);
	PG_TRY();
	{
		EpOwnerCall call;

		ep_projection_call(&call, p);
		/* the handler's writes are tagged, so table projections skip them */
		replorigin_session_origin = DoNotReplicateId;
		*done = n;
		for (k = 0; k < n; k++)
		{
			ep_call_handler(&p->flinfo, items[k].nargs, items[k].args, items[k].nulls);
			if (p->turn_ends != 0 && k + 1 < n && items[k + 1].lsn != items[k].lsn &&
				ep_turn_over(p))
			{
				*done = k + 1;
				break;
			}
		}
		replorigin_session_origin = InvalidRepOriginId;
		ep_owner_leave(&call);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *ed;
		bool		timed_out = ep_owner_timed_out();

		replorigin_session_origin = InvalidRepOriginId;
		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		/* a cancel that is not the handler's time limit stops the round */
		if ((ed->sqlerrcode == ERRCODE_QUERY_CANCELED && !timed_out) ||
			ed->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			PG_RE_THROW();
		if (timed_out)
			QueryCancelPending = false;
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (timed_out && ep_patience_binds(p))
		{
			/* out of the worker's patience, not of its own time limit */
			p->slow = true;
			p->retry_later = true;
		}
		if (timed_out)
		{
			int			limit = ep_owner_capped_timeout(p->owner, p->timeout_ms);

			*err = psprintf("the handler exceeded its time limit of %d ms (event_patterns.handler_timeout)",
							limit >= 0 ? limit : ep_guc_handler_timeout_ms);
		}
		else
			*err = ed->message ? ed->message : pstrdup("unknown error");
		*code = timed_out ? ERRCODE_QUERY_CANCELED : ed->sqlerrcode;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	MemoryContextReset(p->chunk_cxt);
	return ok;
}

/*
 * Errors retrying cannot cure: the handler refers to something that does
 * not exist or that its owner may not use (class 42), or the event's data
 * does not fit it (class 22). The event is parked at once.
 */
static bool
ep_error_is_permanent(int code)
{
	return ERRCODE_TO_CATEGORY(code) == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION ||
		ERRCODE_TO_CATEGORY(code) == ERRCODE_DATA_EXCEPTION;
}

/* ---------------------------------------------------------------------
 * Retries in the worker: a projection whose handler failed with an error
 * worth retrying is left alone until its backoff has passed (its round is
 * rolled back, nothing else waits); the count survives across rounds.
 * ---------------------------------------------------------------------
 */
typedef struct EpBackoff
{
	int32		id;				/* hash key: projection_id */
	int			attempts;
	TimestampTz retry_at;
	TimestampTz delegated_at;	/* a runner was started for it */
} EpBackoff;

static HTAB *backoffs = NULL;
static void ep_round_locktag(LOCKTAG *tag);
static void ep_delegate_projection(EpProj *p);
static bool round_in_worker = false;	/* this round commits per projection */
static TimestampTz last_idle_decode = 0;	/* last decoding pass of this process */
static bool round_without_slot = false;	/* only message handlers: no slot, no decoding */

static EpBackoff *
ep_backoff(int32 id, bool create)
{
	bool		found;
	EpBackoff  *b;

	if (backoffs == NULL)
	{
		HASHCTL		ctl;

		if (!create)
			return NULL;
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(EpBackoff);
		backoffs = hash_create("event_patterns projection retries", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS);
	}
	b = hash_search(backoffs, &id, create ? HASH_ENTER : HASH_FIND, &found);
	if (b != NULL && create && !found)
	{
		b->attempts = 0;
		b->retry_at = 0;
		b->delegated_at = 0;
	}
	return b;
}

static void
ep_backoff_clear(int32 id)
{
	EpBackoff  *b = ep_backoff(id, false);

	if (b != NULL)
	{
		b->attempts = 0;
		b->retry_at = 0;
	}
}

static long
ep_backoff_ms(int attempt)
{
	long		ms = (long) ep_guc_projection_retry_backoff_ms << Min(attempt - 1, 16);

	return Min(ms, 10000L);
}

/*
 * One item. True when it was applied. Otherwise the item is parked (an
 * error retrying cannot cure, or the retries are used up), or, in the
 * worker with defer, p->retry_later asks the caller to undo the round and
 * try again after the backoff: the worker never sleeps inside a round.
 * ep.apply_projections() retries in place, sleeping, as the caller asked
 * for the work to be done now.
 */
static bool
ep_apply_one(EpProj *p, EpItem *item, bool defer, char **err_out, int *attempts_out)
{
	int			attempt;
	char	   *err = NULL;
	int			code = 0;
	int			done;

	for (attempt = 1;; attempt++)
	{
		if (ep_try_items(p, item, 1, &err, &code, &done))
		{
			if (attempts_out)
				*attempts_out = attempt;
			return true;
		}
		if (p->slow)
			return false;		/* not a failure: the projection moves to a runner */
		if (ep_error_is_permanent(code))
			break;
		/*
		 * Once this round has parked an item, undoing it for a later retry
		 * would undo the park too, and the round would start over forever
		 * when two items in a row fail: retry in place instead.
		 */
		if (round_in_worker && defer && !p->parked_in_round)
		{
			EpBackoff  *b = ep_backoff(p->id, true);

			if (b->attempts < ep_guc_projection_max_retries)
			{
				b->attempts++;
				b->retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  ep_backoff_ms(b->attempts));
				p->retry_later = true;
				p->last_error = err;
				return false;
			}
			attempt = b->attempts + 1;
			break;
		}
		if ((!round_in_worker || p->parked_in_round) && attempt <= ep_guc_projection_max_retries)
		{
			if (ep_guc_projection_retry_backoff_ms > 0)
			{
				pg_usleep(ep_backoff_ms(attempt) * 1000L);
				CHECK_FOR_INTERRUPTS();
			}
			continue;
		}
		break;
	}
	if (err_out)
		*err_out = err;
	if (attempts_out)
		*attempts_out = attempt;
	return false;
}

static void
ep_park(EpProj *p, EpItem *item, const char *err, int attempts)
{
	Oid			types[7] = {INT4OID, INT8OID, TEXTOID, JSONBOID, JSONBOID, TEXTOID, INT4OID};
	Datum		args[7];
	char		nulls[7] = "       ";

	args[0] = Int32GetDatum(p->id);
	args[1] = Int64GetDatum(item->position);
	if (p->is_message)
	{
		/* the message as JSON in new_row, as ep.parked_events shows it */
		nulls[1] = nulls[3] = 'n';
		args[2] = CStringGetTextDatum("INSERT");
		args[4] = JsonbPGetDatum(ep_channel_message_jsonb(item->args[0]));
	}
	else if (!p->is_table)
	{
		nulls[2] = nulls[3] = nulls[4] = 'n';
	}
	else
	{
		nulls[1] = 'n';
		args[2] = item->args[0];
		args[3] = item->args[1];
		args[4] = item->args[2];
		if (item->nulls[1])
			nulls[3] = 'n';
		if (item->nulls[2])
			nulls[4] = 'n';
	}
	args[5] = CStringGetTextDatum(err);
	args[6] = Int32GetDatum(attempts);
	ep_exec("INSERT INTO ep.parked (projection_id, global_position, op, old_row, new_row, error, attempts)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, types, args, nulls, SPI_OK_INSERT);
	p->last_error = pstrdup(err);
}

/*
 * Apply items in order: chunks in one subtransaction, failures one by one.
 * Stops early when a failure is to be retried later (p->retry_later) or
 * when event_patterns.projection_max_consecutive_failures items in a row
 * were parked (p->stopped; the projection becomes 'failed'): events stop
 * right after the parked one, table changes at the end of their
 * transaction (their progress is counted by commit).
 */
static void
ep_apply_items(EpProj *p, EpItem *items, int n)
{
	int			i = 0;

	while (i < n && !p->retry_later && !p->stopped)
	{
		int			m = Min(n - i, EP_CHUNK);
		char	   *err = NULL;
		int			code;
		int			done;
		int			j;

		if (p->turn_ends != 0 && i > 0 && items[i].lsn != items[i - 1].lsn &&
			ep_turn_over(p))
		{
			p->yielded = true;
			p->yield_lsn = items[i - 1].lsn;
			return;
		}
		if (ep_try_items(p, items + i, m, &err, &code, &done))
		{
			p->applied += done;
			p->failures = 0;
			ep_backoff_clear(p->id);
			i += done;
			if (done < m)
			{
				p->yielded = true;
				p->yield_lsn = items[i - 1].lsn;
				return;
			}
			continue;
		}
		if (p->slow)
			return;
		for (j = 0; j < m; j++)
		{
			EpItem	   *it = &items[i + j];
			int			attempts;

			/* failing table changes take turns too */
			if (p->turn_ends != 0 && i + j > 0 && it->lsn != it[-1].lsn &&
				ep_turn_over(p))
			{
				p->yielded = true;
				p->yield_lsn = it[-1].lsn;
				return;
			}

			if (EP_TOO_MANY_FAILURES(p) && EP_BY_TXN(p) && it->lsn != p->stop_lsn)
			{
				p->stopped = true;
				return;
			}
			if (ep_apply_one(p, it, true, &err, &attempts))
			{
				p->applied++;
				p->failures = 0;
				ep_backoff_clear(p->id);
				continue;
			}
			if (p->retry_later)
				return;
			ep_park(p, it, err, attempts);
			p->parked_in_round = true;
			ep_backoff_clear(p->id);
			p->failures++;
			if (EP_TOO_MANY_FAILURES(p))
			{
				if (!EP_BY_TXN(p))
				{
					p->stopped = true;
					p->stop_position = it->position;
					return;
				}
				/* table changes: finish this transaction's changes first */
				p->stop_lsn = it->lsn;
			}
		}
		i += m;
	}
	if (EP_TOO_MANY_FAILURES(p) && p->is_table && !p->is_message && !p->retry_later)
		p->stopped = true;
}

/*
 * The event as a handler must see it: lifted to the latest schema version
 * of its type by the registered upcasters (upcast.c). Returns the datum
 * itself when nothing applies.
 */
static Datum
ep_upcast_event_datum(EpUpcastState *up, Datum event)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(event);
	TupleDesc	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(th),
											  HeapTupleHeaderGetTypMod(th));
	HeapTupleData tmp;
	Datum	   *values = palloc(sizeof(Datum) * Max(desc->natts, Anum_ep_events_category));
	bool	   *nulls = palloc(sizeof(bool) * Max(desc->natts, Anum_ep_events_category));

	tmp.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tmp.t_self);
	tmp.t_tableOid = InvalidOid;
	tmp.t_data = th;
	heap_deform_tuple(&tmp, desc, values, nulls);
	if (desc->natts >= Anum_ep_events_category && ep_upcast_values(up, values, nulls))
		event = heap_copy_tuple_as_datum(heap_form_tuple(desc, values, nulls), desc);
	ReleaseTupleDesc(desc);
	return event;
}

static void
ep_event_item(EpItem *item, int64 pos, Datum event)
{
	EpUpcastState *up = ep_upcast_begin();

	/* handlers see the latest schema version, like every read path */
	if (up != NULL)
		event = ep_upcast_event_datum(up, event);
	item->position = pos;
	item->nargs = 1;
	item->args[0] = event;
	item->nulls[0] = false;
}

static void
ep_row_item(EpItem *item, const char *op, Jsonb *old_row, Jsonb *new_row)
{
	item->position = 0;
	item->nargs = 3;
	item->args[0] = CStringGetTextDatum(op);
	item->nulls[0] = false;
	item->args[1] = old_row ? JsonbPGetDatum(old_row) : (Datum) 0;
	item->nulls[1] = (old_row == NULL);
	item->args[2] = new_row ? JsonbPGetDatum(new_row) : (Datum) 0;
	item->nulls[2] = (new_row == NULL);
}

/* ---------------------------------------------------------------------
 * Sources of a round
 * ---------------------------------------------------------------------
 */
static bool
ep_event_matches(EpProj *p, Datum event)
{
	HeapTupleHeader th = DatumGetHeapTupleHeader(event);
	bool		isnull;
	int			i;

	if (p->ntypes > 0)
	{
		char	   *type = TextDatumGetCString(GetAttributeByNum(th, Anum_ep_events_event_type, &isnull));
		bool		found = false;

		for (i = 0; i < p->ntypes && !found; i++)
			found = strcmp(type, p->types[i]) == 0;
		if (!found)
			return false;
	}
	if (p->category)
	{
		char	   *cat = TextDatumGetCString(GetAttributeByNum(th, Anum_ep_events_category, &isnull));

		if (strcmp(cat, p->category) != 0)
			return false;
	}
	/* owned categories the projection's owner may not read (category.c) */
	if (ep_category_any())
	{
		text	   *cat = DatumGetTextPP(GetAttributeByNum(th, Anum_ep_events_category, &isnull));

		if (!isnull &&
			!ep_category_allowed(p->owner, VARDATA_ANY(cat), VARSIZE_ANY_EXHDR(cat), EP_CAT_READ))
			return false;
	}
	return true;
}

/*
 * Scan ep.events through its primary key: positions in (after, horizon),
 * at most limit rows examined, with a snapshot taken after the horizon
 * (see position.c). Matching events are copied into items; *last is the
 * last position examined; returns the number of matches, *exhausted when
 * the range has no more rows.
 */
static int
ep_scan_events(EpProj *p, int64 after, int64 horizon, int limit, EpItem *items,
			   int64 *last, bool *exhausted)
{
	const EpCatalog *cat = ep_catalog();
	Relation	rel = table_open(cat->events, AccessShareLock);
	Relation	idx = index_open(cat->events_pkey, AccessShareLock);
	Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyData keys[2];
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int			examined = 0;
	int			n = 0;

	ScanKeyInit(&keys[0], 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	ScanKeyInit(&keys[1], 1, BTLessStrategyNumber, F_INT8LT, Int64GetDatum(horizon));
	scan = index_beginscan(rel, idx, snap, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(rel, NULL);
	*exhausted = true;
	*last = after;
	while (examined < limit)
	{
		bool		isnull;
		bool		should_free;
		HeapTuple	tup;
		Datum		event;

		CHECK_FOR_INTERRUPTS();
		if (!index_getnext_slot(scan, ForwardScanDirection, slot))
			break;
		examined++;
		*last = DatumGetInt64(slot_getattr(slot, Anum_ep_events_global_position, &isnull));
		tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		event = heap_copy_tuple_as_datum(tup, RelationGetDescr(rel));
		if (should_free)
			heap_freetuple(tup);
		if (p->ntypes > 0 || p->category || ep_category_any())
		{
			if (!ep_event_matches(p, event))
			{
				pfree(DatumGetPointer(event));
				continue;
			}
		}
		ep_event_item(&items[n++], *last, event);
	}
	if (examined >= limit)
		*exhausted = false;
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	UnregisterSnapshot(snap);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return n;
}

/* Events (last_position, horizon) from ep.events, within budget. */
static void
ep_apply_from_table(EpProj *p, int64 horizon, int64 *budget)
{
	int64		cur = p->last_position;
	bool		exhausted = false;

	while (*budget > 0 && !exhausted)
	{
		int			limit = (int) Min(*budget, EP_TABLE_BATCH);
		EpItem	   *items;
		int			n;
		int64		last;
		MemoryContext batch_cxt;
		MemoryContext old;

		batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "ep projection batch",
										  ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(batch_cxt);
		items = palloc(sizeof(EpItem) * limit);
		n = ep_scan_events(p, cur, horizon, limit, items, &last, &exhausted);
		MemoryContextSwitchTo(old);

		ep_apply_items(p, items, n);
		*budget -= Max(n, 1);
		cur = exhausted ? horizon - 1 : last;
		MemoryContextDelete(batch_cxt);
		if (p->stopped)
		{
			cur = p->stop_position;
			break;
		}
		if (p->retry_later)
			break;
	}
	p->new_position = cur;
	p->caught_up = (cur >= horizon - 1);
}

/* Events (last_position, horizon) from the decoded round. */
static void
ep_apply_decoded_events(EpProj *p, EpDecodeRound *round, int64 horizon, int64 *budget)
{
	EpChange   *c;
	EpItem	   *items;
	int			n = 0;

	items = palloc(sizeof(EpItem) * (round->nchanges + 1));
	for (c = round->head; c; c = c->next)
	{
		if (c->kind != EP_CHANGE_EVENT || c->position <= p->last_position ||
			c->position >= horizon)
			continue;
		if (!ep_event_matches(p, c->event))
			continue;
		ep_event_item(&items[n++], c->position, c->event);
	}
	ep_apply_items(p, items, n);
	p->decoded += n;
	*budget -= n;
	pfree(items);
	p->new_position = p->stopped ? p->stop_position : horizon - 1;
	p->caught_up = !p->stopped;
}

/*
 * A table projection's first round (or rebuild): lock the source against
 * writers, TRUNCATE, then INSERT every row, and continue after the current
 * insert LSN.
 */
static void
ep_table_snapshot(EpProj *p)
{
	char	   *sql;
	Portal		portal;
	EpOwnerCall call;
	EpItem		item;
	char	   *err;
	int			attempts;
	char	   *qname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(p->source)),
												   get_rel_name(p->source));

	sql = psprintf("LOCK TABLE ONLY %s IN SHARE MODE", qname);
	ep_exec(sql, 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	p->new_lsn = GetXLogInsertRecPtr();

	ep_row_item(&item, "TRUNCATE", NULL, NULL);
	item.lsn = p->new_lsn;
	if (ep_apply_one(p, &item, true, &err, &attempts))
		p->applied++;
	else if (p->retry_later)
		return;
	else
	{
		ep_park(p, &item, err, attempts);
		p->failures++;
	}

	PushActiveSnapshot(GetLatestSnapshot());
	ep_projection_call(&call, p);
	portal = SPI_cursor_open_with_args(NULL,
									   psprintf("SELECT pg_catalog.to_jsonb(t) FROM ONLY %s t", qname),
									   0, NULL, NULL, NULL, true, 0);
	ep_owner_leave(&call);
	PopActiveSnapshot();

	for (;;)
	{
		uint64		i;
		uint64		n;
		EpItem	   *items;
		MemoryContext batch_cxt;
		MemoryContext old;

		if (p->retry_later || p->stopped)
			break;
		/* the scan runs as the owner, too */
		ep_projection_call(&call, p);
		SPI_cursor_fetch(portal, true, EP_TABLE_BATCH);
		ep_owner_leave(&call);
		n = SPI_processed;
		if (n == 0)
			break;
		batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "ep projection batch",
										  ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(batch_cxt);
		items = palloc(sizeof(EpItem) * n);
		for (i = 0; i < n; i++)
		{
			bool		isnull;
			Datum		row = ep_getbin(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

			ep_row_item(&items[i], "INSERT", NULL,
						DatumGetJsonbP(datumCopy(row, false, -1)));
			items[i].lsn = p->new_lsn;
		}
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
		ep_apply_items(p, items, (int) n);
		MemoryContextDelete(batch_cxt);
	}
	SPI_cursor_close(portal);
	/* a snapshot cut short is loaded again when the projection resumes */
	if (p->stopped)
		p->new_lsn = InvalidXLogRecPtr;
}

/* message handlers (kind 'message'): is the message of a wanted type? */
static bool
ep_message_type_matches(EpProj *p, const char *type)
{
	int			i;

	if (p->ntypes == 0)
		return true;
	if (type == NULL)
		return false;
	for (i = 0; i < p->ntypes; i++)
		if (strcmp(type, p->types[i]) == 0)
			return true;
	return false;
}

/*
 * A message handler's share of a round: the messages received after its
 * stored progress (received_seq), read from the channel's table in arrival
 * order (channel.c explains why that is the producer's commit order and
 * why a snapshot sees a prefix of it), in batches, each batch's handler
 * calls in one subtransaction under one switch to the owner. The progress
 * stored with the handler's writes is the received_seq of the last
 * message accounted for: handled, parked, or not of a wanted type. In the
 * worker the handler has a turn (see ep_turn_over) and yields between two
 * messages once it is over. No decoding is involved: a handler's progress
 * does not depend on the slot, and a lost slot costs it nothing.
 */
/* The owner still may read the channel (ep.grant_channel, ep.revoke_channel)? */
static bool
ep_message_reader_ok(EpProj *p)
{
	char	   *why = ep_channel_reader_denied(p->source, p->owner);

	if (why != NULL)
	{
		/* p->last_error outlives the round's transactions */
		p->usable = false;
		p->last_error = MemoryContextStrdup(MemoryContextGetParent(p->chunk_cxt), why);
	}
	return p->usable;
}

/* The handler's batches: buffers kept by the process (EP_TABLE_BATCH each) */
static EpMessage *message_buf = NULL;
static EpItem *message_items = NULL;

static void
ep_apply_messages(EpProj *p, int64 *budget)
{
	EpMessageScan *scan;
	bool		exhausted = false;

	p->new_position = p->last_position;
	if (round_in_worker && !in_runner && ep_guc_projection_slow_call_ms > 0)
		p->turn_ends = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   Min(ep_guc_projection_slow_call_ms,
													   EP_TABLE_TURN_MS));
	scan = ep_channel_scan_begin(p->source, p->last_position);
	while (*budget > 0 && !exhausted)
	{
		int			limit = (int) Min(*budget, EP_TABLE_BATCH);
		EpMessage  *msgs;
		EpItem	   *items;
		int			n;
		int			m = 0;
		int			k;
		MemoryContext batch_cxt;
		MemoryContext old;

		if (message_buf == NULL)
		{
			message_buf = MemoryContextAlloc(TopMemoryContext, sizeof(EpMessage) * EP_TABLE_BATCH);
			message_items = MemoryContextAlloc(TopMemoryContext, sizeof(EpItem) * EP_TABLE_BATCH);
		}
		msgs = message_buf;
		items = message_items;
		batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "ep message batch",
										  ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(batch_cxt);
		n = ep_channel_scan_next(scan, msgs, limit);
		/*
		 * The owner still may read the channel (ep.revoke_channel): checked
		 * for every batch, against grants as fresh as the scan's snapshot
		 * (a cache lookup; idle rounds do not check).
		 */
		if (n > 0)
		{
			MemoryContextSwitchTo(old);
			if (!ep_message_reader_ok(p))
			{
				MemoryContextDelete(batch_cxt);
				break;
			}
			MemoryContextSwitchTo(batch_cxt);
		}
		for (k = 0; k < n; k++)
		{
			if (!ep_message_type_matches(p, msgs[k].message_type))
				continue;
			items[m].position = msgs[k].seq;
			/* every message is a unit of its own (turns, failures in a row) */
			items[m].lsn = (XLogRecPtr) msgs[k].seq;
			items[m].nargs = 1;
			items[m].args[0] = msgs[k].row;
			items[m].nulls[0] = false;
			m++;
		}
		MemoryContextSwitchTo(old);
		exhausted = (n < limit);
		*budget -= Max(n, 1);

		ep_apply_items(p, items, m);
		if (p->stopped)
			p->new_position = Max(p->new_position, p->stop_position);
		else if (p->yielded)
			p->new_position = Max(p->new_position, (int64) p->yield_lsn);
		else if (!p->retry_later && n > 0)
			p->new_position = Max(p->new_position, msgs[n - 1].seq);
		MemoryContextDelete(batch_cxt);
		if (p->stopped || p->yielded || p->retry_later)
			break;
	}
	ep_channel_scan_end(scan);
	p->turn_ends = 0;
	p->caught_up = exhausted && !p->stopped && !p->yielded && !p->retry_later;
	/* the rest waits for the next round; the slot is not involved */
	p->yielded = false;
}

static void
ep_apply_decoded_rows(EpProj *p, EpDecodeRound *round, int64 *budget)
{
	EpChange   *c;
	EpItem	   *items;
	int			n = 0;
	XLogRecPtr	from = p->new_lsn != InvalidXLogRecPtr ? p->new_lsn : p->last_lsn;

	items = palloc(sizeof(EpItem) * (round->nchanges + 1));
	for (c = round->head; c; c = c->next)
	{
		if (c->kind != EP_CHANGE_ROW || c->relid != p->source || c->lsn <= from)
			continue;
		p->new_lsn = Max(p->new_lsn, c->lsn);
		items[n].lsn = c->lsn;
		ep_row_item(&items[n++], c->op, c->old_row, c->new_row);
	}
	/* in the worker, a turn (see ep_turn_over) */
	if (round_in_worker && !in_runner && ep_guc_projection_slow_call_ms > 0)
		p->turn_ends = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   Min(ep_guc_projection_slow_call_ms,
													   EP_TABLE_TURN_MS));
	ep_apply_items(p, items, n);
	p->turn_ends = 0;
	p->decoded += n;
	*budget -= n;
	if (p->stopped)
		p->new_lsn = p->stop_lsn;
	else if (p->yielded)
		p->new_lsn = p->yield_lsn;
	p->caught_up = !p->stopped && !p->yielded;
	pfree(items);
}

/* Parked events handed back by ep.retry_parked */
static void
ep_retry_parked(EpProj *p)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(p->id)};
	uint64		n;
	uint64		i;
	int64	   *ids;
	EpItem	   *items;
	bool	   *present;

	static SPIPlanPtr plan = NULL;

	if (ep_run_kept(&plan, "SELECT p.parked_id, p.global_position, p.op, p.old_row, p.new_row,"
							  "       (SELECT e FROM ep.events e"
							  "         WHERE e.global_position OPERATOR(pg_catalog.=) p.global_position)"
							  "  FROM ep.parked p WHERE p.projection_id OPERATOR(pg_catalog.=) $1 AND p.retry"
							  " ORDER BY p.parked_id LIMIT 1000 FOR UPDATE OF p SKIP LOCKED",
							  1, types, args, NULL, false) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.parked");
	n = SPI_processed;
	if (n == 0)
		return;
	/* a message handler's owner must still be allowed to read its channel */
	if (p->is_message && !ep_message_reader_ok(p))
	{
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	ids = palloc(sizeof(int64) * n);
	items = palloc0(sizeof(EpItem) * n);
	present = palloc(sizeof(bool) * n);
	for (i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		v;

		ids[i] = DatumGetInt64(ep_getbin(t, d, 1, &isnull));
		present[i] = true;
		if (!p->is_table)
		{
			int64		pos = DatumGetInt64(ep_getbin(t, d, 2, &isnull));

			v = ep_getbin(t, d, 6, &isnull);
			present[i] = !isnull;
			if (!isnull)
				ep_event_item(&items[i], pos, datumCopy(v, false, -1));
		}
		else if (p->is_message)
		{
			/* the message kept as JSON in new_row */
			Datum		nw = ep_getbin(t, d, 5, &isnull);

			present[i] = !isnull;
			if (!isnull)
			{
				items[i].nargs = 1;
				items[i].args[0] = ep_channel_message_datum(DatumGetJsonbP(datumCopy(nw, false, -1)));
				items[i].nulls[0] = false;
			}
		}
		else
		{
			bool		n1,
						n2;
			Datum		o = ep_getbin(t, d, 4, &n1);
			Datum		nw = ep_getbin(t, d, 5, &n2);

			ep_row_item(&items[i], ep_getstr(t, d, 3),
						n1 ? NULL : DatumGetJsonbP(datumCopy(o, false, -1)),
						n2 ? NULL : DatumGetJsonbP(datumCopy(nw, false, -1)));
		}
	}
	SPI_freetuptable(SPI_tuptable);

	for (i = 0; i < n; i++)
	{
		Oid			t2[3] = {INT8OID, TEXTOID, INT4OID};
		Datum		a2[3];
		char	   *err = NULL;
		int			attempts = 0;

		a2[0] = Int64GetDatum(ids[i]);
		if (present[i] && ep_apply_one(p, &items[i], false, &err, &attempts))
		{
			p->applied++;
			ep_exec("DELETE FROM ep.parked WHERE parked_id OPERATOR(pg_catalog.=) $1",
					1, t2, a2, NULL, SPI_OK_DELETE);
		}
		else if (!present[i])
			ep_exec("DELETE FROM ep.parked WHERE parked_id OPERATOR(pg_catalog.=) $1",
					1, t2, a2, NULL, SPI_OK_DELETE);
		else
		{
			a2[1] = CStringGetTextDatum(err);
			a2[2] = Int32GetDatum(attempts);
			ep_exec("UPDATE ep.parked SET retry = false, error = $2,"
					" attempts = attempts OPERATOR(pg_catalog.+) $3, parked_at = pg_catalog.now()"
					" WHERE parked_id OPERATOR(pg_catalog.=) $1",
					3, t2, a2, NULL, SPI_OK_UPDATE);
			p->last_error = pstrdup(err);
		}
	}
}

/* ---------------------------------------------------------------------
 * The round
 * ---------------------------------------------------------------------
 */
static int
ep_load_projections(EpProj **out, MemoryContext cxt)
{
	uint64		n;
	uint64		i;
	EpProj	   *projs;
	MemoryContext old;

	static SPIPlanPtr plan = NULL;

	if (ep_run_kept(&plan, "SELECT projection_id, name, kind, handler::pg_catalog.oid, owner::pg_catalog.oid,"
					"       event_types, category, source::pg_catalog.oid, status, last_position, last_lsn,"
					"       search_path, pg_catalog.date_part('epoch', handler_timeout),"
					"       generation, consecutive_failures"
					"  FROM ep.projection_defs"
					" WHERE mode OPERATOR(pg_catalog.=) 'async'"
					"   AND status OPERATOR(pg_catalog.=) ANY ('{running,rebuilding}')"
					" ORDER BY projection_id", 0, NULL, NULL, NULL, false) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.projection_defs");
	n = SPI_processed;
	/* everything here outlives the transactions of a worker round */
	old = MemoryContextSwitchTo(cxt);
	projs = palloc0(sizeof(EpProj) * (n + 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		EpProj	   *p = &projs[i];
		bool		isnull;
		Datum		v;

		p->id = DatumGetInt32(ep_getbin(t, d, 1, &isnull));
		p->name = ep_getstr(t, d, 2);
		p->is_message = strcmp(ep_getstr(t, d, 3), "message") == 0;
		p->is_table = p->is_message || strcmp(ep_getstr(t, d, 3), "table") == 0;
		p->handler = DatumGetObjectId(ep_getbin(t, d, 4, &isnull));
		p->owner = DatumGetObjectId(ep_getbin(t, d, 5, &isnull));
		v = ep_getbin(t, d, 6, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *enulls;
			int			k;

			deconstruct_array(DatumGetArrayTypeP(v), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &enulls, &p->ntypes);
			p->types = palloc(sizeof(char *) * (p->ntypes + 1));
			for (k = 0; k < p->ntypes; k++)
				p->types[k] = TextDatumGetCString(elems[k]);
		}
		p->category = ep_getstr(t, d, 7);
		v = ep_getbin(t, d, 8, &isnull);
		p->source = isnull ? InvalidOid : DatumGetObjectId(v);
		p->rebuilding = strcmp(ep_getstr(t, d, 9), "rebuilding") == 0;
		p->last_position = DatumGetInt64(ep_getbin(t, d, 10, &isnull));
		v = ep_getbin(t, d, 11, &isnull);
		p->last_lsn = isnull ? InvalidXLogRecPtr : DatumGetLSN(v);
		p->search_path = ep_getstr(t, d, 12);
		v = ep_getbin(t, d, 13, &isnull);
		p->timeout_ms = isnull ? -1 : (int) Min(DatumGetFloat8(v) * 1000.0, (double) INT_MAX);
		p->generation = DatumGetInt32(ep_getbin(t, d, 14, &isnull));
		p->failures = DatumGetInt32(ep_getbin(t, d, 15, &isnull));
		p->new_position = p->last_position;
		p->new_lsn = InvalidXLogRecPtr;
		p->chunk_cxt = AllocSetContextCreate(cxt, "ep handler calls", ALLOCSET_DEFAULT_SIZES);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	*out = projs;
	return (int) n;
}

/*
 * Store a projection's progress. Only while it is still the projection the
 * round loaded (not dropped, rebuilt or paused meanwhile: the API never
 * waits for a round, the round gives way instead); false when the row was
 * not updated, and the caller then undoes the projection's work.
 */
static bool
ep_save_projection(EpProj *p)
{
	Oid			types[10] = {INT4OID, INT8OID, LSNOID, INT8OID, TEXTOID, BOOLOID, BOOLOID, INT8OID,
	INT4OID, INT4OID};
	Datum		args[10];
	char		nulls[10] = "          ";
	static SPIPlanPtr plan = NULL;

	args[0] = Int32GetDatum(p->id);
	args[1] = Int64GetDatum(p->new_position);
	if (p->new_lsn != InvalidXLogRecPtr)
		args[2] = LSNGetDatum(p->new_lsn);
	else
		nulls[2] = 'n';
	args[3] = Int64GetDatum(p->applied);
	if (p->last_error)
		args[4] = CStringGetTextDatum(p->last_error);
	else
		nulls[4] = 'n';
	args[5] = BoolGetDatum(p->caught_up);
	args[6] = BoolGetDatum(p->usable && !p->stopped);
	args[7] = Int64GetDatum(p->decoded);
	args[8] = Int32GetDatum(p->generation);
	args[9] = Int32GetDatum(p->failures);
	ep_exec_kept(&plan, "UPDATE ep.projection_defs SET"
			" last_position = GREATEST(last_position, $2),"
			" last_lsn = CASE WHEN $3 IS NULL THEN last_lsn"
			"            ELSE GREATEST(last_lsn, $3) END,"
			" applied_count = applied_count OPERATOR(pg_catalog.+) $4,"
			" decoded_count = decoded_count OPERATOR(pg_catalog.+) $8,"
			" last_applied_at = CASE WHEN $4 OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now()"
			"                   ELSE last_applied_at END,"
			" last_error = COALESCE($5, last_error),"
			" consecutive_failures = $10,"
			" status = CASE WHEN NOT $7 THEN 'failed'"
			"          WHEN status OPERATOR(pg_catalog.=) 'rebuilding' AND $6 THEN 'running'"
			"          ELSE status END"
			" WHERE projection_id OPERATOR(pg_catalog.=) $1"
			"   AND generation OPERATOR(pg_catalog.=) $9"
			"   AND status OPERATOR(pg_catalog.=) ANY ('{running,rebuilding}')",
			10, types, args, nulls, SPI_OK_UPDATE);
	if (SPI_processed == 0)
		return false;
	if (p->stopped)
		ereport(WARNING,
				(errmsg("event_patterns: projection \"%s\" stopped after %d failed events in a row",
						p->name, p->failures),
				 errdetail("Last error: %s", p->last_error ? p->last_error : "unknown"),
				 errhint("Fix the cause, then call ep.resume_projection('%s'); ep.parked_events lists the events.",
						 p->name)));
	else if (!p->usable)
		ereport(WARNING,
				(errmsg("event_patterns: projection \"%s\" cannot run: %s", p->name,
						p->last_error ? p->last_error : "unknown")));
	return true;
}

/* Can the owner still run the handler (and read the source)? */
static void
ep_prepare_projection(EpProj *p, MemoryContext errcxt)
{
	MemoryContext cxt = CurrentMemoryContext;

	p->usable = true;
	PG_TRY();
	{
		/* (a message handler's read privilege: ep_message_reader_ok) */
		ep_handler_check_privileges(p->handler, p->owner, p->is_message ? InvalidOid : p->source);
		fmgr_info(p->handler, &p->flinfo);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(errcxt);
		ed = CopyErrorData();
		FlushErrorState();
		MemoryContextSwitchTo(cxt);
		p->usable = false;
		p->last_error = ed->message;
	}
	PG_END_TRY();
}

/*
 * A new slot delivers nothing committed before it: forget the handover
 * state (events come from ep.events until decoding covers them again) and
 * reload table projections. SPI must be connected, as the extension owner.
 */
static void
ep_forget_slot_state(void)
{
	ep_exec("UPDATE ep.projection_state SET cover_position = NULL, confirm_lsn = NULL,"
			" slot_created_at = pg_catalog.now()", 0, NULL, NULL, NULL, SPI_OK_UPDATE);
	ep_exec("UPDATE ep.projection_defs SET"
			" status = CASE WHEN status OPERATOR(pg_catalog.=) 'paused' THEN status ELSE 'rebuilding' END,"
			" last_lsn = NULL,"
			" last_error = CASE WHEN status OPERATOR(pg_catalog.=) 'paused'"
			"   THEN 'the replication slot was created again: rebuild this projection' ELSE last_error END"
			" WHERE kind OPERATOR(pg_catalog.=) 'table' AND status OPERATOR(pg_catalog.<>) 'rebuilding'",
			0, NULL, NULL, NULL, SPI_OK_UPDATE);
}

/*
 * One projection's share of a round, in the caller's (sub)transaction,
 * SPI connected as the extension owner. False when its work must be
 * undone: a failure to retry later, or the projection changed meanwhile.
 */
static bool
ep_apply_projection(EpProj *p, EpDecodeRound *round, int64 horizon, int64 *left, bool *more)
{
	if (!p->usable)
		return ep_save_projection(p);
	fmgr_info(p->handler, &p->flinfo);
	if (p->is_message)
	{
		ep_apply_messages(p, left);
		if (!p->usable)
			return ep_save_projection(p);
		if (!p->caught_up && !p->stopped)
			*more = true;
	}
	else if (p->is_table)
	{
		if (p->rebuilding)
			ep_table_snapshot(p);
		if (!p->retry_later && !p->stopped)
			ep_apply_decoded_rows(p, round, left);
		if (!round->complete || p->yielded)
			*more = true;
	}
	else
	{
		if (p->last_position >= horizon - 1)
		{
			p->new_position = p->last_position;
			p->caught_up = true;
		}
		else if (p->decode_ok && round->complete)
			ep_apply_decoded_events(p, round, horizon, left);
		else if (*left > 0)
			ep_apply_from_table(p, horizon, left);
		if (!p->caught_up && !p->stopped)
			*more = true;
	}
	if (p->retry_later)
		return false;
	ep_retry_parked(p);
	if (p->applied > 0 || p->new_position != p->last_position ||
		p->last_error != NULL || (p->rebuilding && p->caught_up) || p->stopped ||
		(p->new_lsn != InvalidXLogRecPtr && p->new_lsn != p->last_lsn))
		return ep_save_projection(p);
	return true;
}

/*
 * One process at a time applies a projection: the worker's rounds and
 * ep.apply_projections() take this lock for the projection's transaction
 * (and skip the projection when it is taken), a projection runner holds it
 * for its whole life.
 */
#define EP_PROJECTION_LOCK_FIELD4	0x4551

static void
ep_projection_locktag(LOCKTAG *tag, int32 id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, 0x45504150, (uint32) id, EP_PROJECTION_LOCK_FIELD4);
}

/*
 * Run one projection's share in a transaction of its own (worker) or a
 * subtransaction (ep.apply_projections). Returns whether it committed;
 * *busy when another process is applying the projection (nothing done).
 */
/* Lock the projection's catalog row for this round, unless somebody holds it. */
static bool
ep_projection_row_free(EpProj *p)
{
	Oid			types[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(p->id)};

	static SPIPlanPtr plan = NULL;

	if (ep_run_kept(&plan, "SELECT 1 FROM ep.projection_defs"
					" WHERE projection_id OPERATOR(pg_catalog.=) $1"
					" FOR NO KEY UPDATE SKIP LOCKED",
					1, types, args, NULL, false) != SPI_OK_SELECT)
		elog(ERROR, "could not lock projection \"%s\"", p->name);
	return SPI_processed == 1;
}

static bool
ep_run_projection(EpProj *p, EpDecodeRound *round, int64 horizon, int64 *left, bool *more,
				  MemoryContext keep_cxt, bool *busy)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = false;
	EpSavedUser saved;
	LOCKTAG		tag;

	*busy = false;
	if (round_in_worker)
		ep_bgw_start_xact();
	ep_projection_locktag(&tag, p->id);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		/* a projection runner has it */
		if (round_in_worker)
			CommitTransactionCommand();
		*busy = true;
		return false;
	}
	if (round_in_worker)
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		ep_become_owner(&saved);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
	}
	else
		BeginInternalSubTransaction(NULL);

	PG_TRY();
	{
		/*
		 * Its owner may hold a lock on its catalog row (any UPDATE of the
		 * columns the API changes, or SELECT ... FOR UPDATE): then it waits
		 * for a later round, undone, instead of stopping the worker.
		 */
		if (ep_projection_row_free(p))
			ok = ep_apply_projection(p, round, horizon, left, more);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(keep_cxt);
		ed = CopyErrorData();
		if (!round_in_worker || ed->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			(ed->sqlerrcode == ERRCODE_QUERY_CANCELED && !ep_owner_timed_out()))
		{
			MemoryContextSwitchTo(oldcxt);
			PG_RE_THROW();
		}
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(oldcxt);
		ereport(LOG,
				(errmsg("event_patterns: round of projection \"%s\" failed: %s",
						p->name, ed->message),
				 errdetail("It is tried again in the next round.")));
		return false;
	}
	PG_END_TRY();

	if (p->retry_later && p->last_error)
		p->last_error = MemoryContextStrdup(keep_cxt, p->last_error);
	if (round_in_worker)
	{
		SPI_finish();
		ep_restore_user(&saved);
		PopActiveSnapshot();

		/*
		 * A message handler's transaction need not wait for its commit
		 * record to reach the disk, as native apply does not: a crash that
		 * loses it loses the handler's writes and its progress together
		 * (one commit), and the messages were received by earlier commits,
		 * earlier in the WAL, so they are still there and handled again.
		 * Nothing in it moves a slot on, and what it sent reaches other
		 * databases only once flushed. Unless the handler appended events:
		 * readers of the store must not see an event a crash could take
		 * back. What depends on a slot (table and decoded event
		 * projections) keeps synchronous commits too.
		 */
		if (ok && p->is_message && !ep_position_reserved_in_xact())
			(void) set_config_option("synchronous_commit", "off",
									 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
									 true, 0, false);
		if (ok)
			CommitTransactionCommand();
		else
			AbortCurrentTransaction();
	}
	else if (ok)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return ok;
}

/*
 * One round. In the worker (round_in_worker) it starts in the caller's
 * transaction, commits it after decoding, runs each projection in a
 * transaction of its own, and returns with a new transaction open that
 * holds the round's slot bookkeeping; in ep.apply_projections everything
 * happens in the caller's transaction, each projection in a
 * subtransaction. Returns the number of handler calls that succeeded;
 * *more when work is left.
 */
static int64
ep_round(int64 budget, bool slot_created, bool try_lock, bool confirm_ok, bool *more)
{
	const EpCatalog *cat = ep_catalog();
	EpSavedUser saved;
	EpProj	   *projs;
	int			nproj;
	int			i;
	int64		cover = -1;
	bool		cover_known;
	XLogRecPtr	stored_confirm = InvalidXLogRecPtr;
	int64		water;
	int64		horizon;
	XLogRecPtr	upto;
	EpDecodeRound round;
	int64		applied = 0;
	int64		left = budget;
	int64		new_cover;
	int64		stored_cover;
	bool		stored_cover_known;
	bool		state_dirty = false;
	bool		table_watch = false;
	XLogRecPtr	hold_lsn = InvalidXLogRecPtr;
	XLogRecPtr	yield_lsn = InvalidXLogRecPtr;
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext round_cxt;
	MemoryContext oldcxt = CurrentMemoryContext;
	static SPIPlanPtr plan_state = NULL;
	static SPIPlanPtr plan_hold = NULL;
	static SPIPlanPtr plan_save = NULL;

	*more = false;
	if (cat->version < EP_VERSION_0_2)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the event_patterns library is newer than the extension's objects in this database"),
				 errhint("Run ALTER EXTENSION event_patterns UPDATE; projections resume where they stopped.")));
	if (!round_in_worker)
	{
		if (try_lock)
		{
			LOCKTAG		rtag;

			ep_round_locktag(&rtag);
			if (LockAcquire(&rtag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
				return 0;
		}
		else
		{
			LOCKTAG		rtag;

			ep_round_locktag(&rtag);
			(void) LockAcquire(&rtag, ExclusiveLock, false, false);
		}
		round_in_xact = true;
	}

	/* decoded changes and the projections outlive the worker's transactions */
	round_cxt = AllocSetContextCreate(round_in_worker ? TopMemoryContext : CurrentMemoryContext,
									  "ep projection round", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		ep_become_owner(&saved);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");

		if (slot_created)
			ep_forget_slot_state();

		if (ep_run_kept(&plan_state, "SELECT cover_position, confirm_lsn FROM ep.projection_state",
						0, NULL, NULL, NULL, false) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "ep.projection_state must hold one row");
		{
			bool		isnull;
			Datum		v;

			v = ep_getbin(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			cover_known = !isnull;
			if (!isnull)
				cover = DatumGetInt64(v);
			v = ep_getbin(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			if (!isnull && confirm_ok)
				stored_confirm = DatumGetLSN(v);
		}
		stored_cover = cover;
		stored_cover_known = cover_known;
		new_cover = cover;

		nproj = ep_load_projections(&projs, round_cxt);

		/* W before H: see the header comment (a read node: replica/reader.c) */
		ep_round_bounds(cat, &water, &horizon);
		if (horizon >= water + 1)
		{
			/* a lower cover is the stronger statement */
			cover = cover_known ? Min(cover, water) : water;
			cover_known = true;
		}

		/*
		 * Decode up to the current insert position, flushed first (below,
		 * when there is decoding to do). Right after a page boundary the
		 * insert position points past the page header that nothing has
		 * been written behind yet: stop at the boundary then.
		 */
		ep_decoder_help_restart();
		upto = GetXLogInsertRecPtr();
		if (upto % XLOG_BLCKSZ <= SizeOfXLogLongPHD)
			upto -= upto % XLOG_BLCKSZ;

		memset(&round, 0, sizeof(round));
		round.cxt = AllocSetContextCreate(round_cxt, "ep decoded changes", ALLOCSET_DEFAULT_SIZES);
		round.events_relid = cat->events;
		round.collect_after = PG_INT64_MAX;
		round.horizon = horizon;
		round.max_changes = Max(Min(budget, (int64) ep_guc_projection_batch_size), 1);
		round.max_bytes = (Size) ep_guc_projection_batch_memory_kb * 1024;
		round.watch = MemoryContextAlloc(round_cxt, sizeof(Oid) * (nproj + 1));

		for (i = 0; i < nproj; i++)
		{
			EpProj	   *p = &projs[i];
			EpBackoff  *b = round_in_worker ? ep_backoff(p->id, false) : NULL;

			ep_prepare_projection(p, round_cxt);
			/* (message handlers read their channel's table: nothing to decode) */
			if (p->is_table && !p->is_message && p->usable)
			{
				/* its changes are decoded even while it waits for a retry */
				round.watch[round.nwatch++] = p->source;
				table_watch = true;
			}
			/* in the worker, event projections run with patience (see ep_projection_call) */
			p->patience = round_in_worker && !in_runner && !p->is_table;
			/* a failure waiting for its retry: leave the projection alone */
			if (b != NULL && b->retry_at > now)
			{
				p->skip = true;
				if (p->is_table && !p->is_message && p->last_lsn != InvalidXLogRecPtr)
					hold_lsn = hold_lsn == InvalidXLogRecPtr ? p->last_lsn : Min(hold_lsn, p->last_lsn);
				continue;
			}
			if (!p->usable || p->is_table)
				continue;
			if (cover_known && p->last_position >= cover &&
				horizon - 1 - p->last_position <= round.max_changes)
			{
				p->decode_ok = true;
				round.collect_after = Min(round.collect_after, p->last_position);
			}
		}

		/*
		 * A round that collects nothing (no table projection watches a
		 * table, no event projection takes decoded events: e.g. a consumer
		 * with message handlers only) would decode only to move the slot
		 * on. That is done now and then, not every round (each pass reads
		 * the WAL again from the slot's restart position): a round that
		 * skips decoding confirms nothing, so every event >= H still
		 * commits after the confirmed position and cover stays true.
		 */
		if (round_without_slot ||
			(!table_watch && round.collect_after == PG_INT64_MAX &&
			 stored_confirm != InvalidXLogRecPtr && upto >= stored_confirm &&
			 upto - stored_confirm < EP_IDLE_DECODE_LAG &&
			 !TimestampDifferenceExceeds(last_idle_decode, now, EP_IDLE_DECODE_MS)))
		{
			round.decoded_to = stored_confirm;
			round.safe_confirm = stored_confirm;
			round.complete = true;
		}
		else
		{
			XLogFlush(upto);
			ep_decoder_run(&round, stored_confirm, upto);
			last_idle_decode = now;
		}
		elog(DEBUG1, "event_patterns: round H=" INT64_FORMAT " W=" INT64_FORMAT " cover=" INT64_FORMAT "%s collect_after=" INT64_FORMAT " decoded %X/%X..%X/%X changes=" INT64_FORMAT " complete=%d",
			 horizon, water, cover, cover_known ? "" : "(unknown)", round.collect_after,
			 LSN_FORMAT_ARGS(stored_confirm), LSN_FORMAT_ARGS(round.decoded_to), round.nchanges, round.complete);

		if (round_in_worker)
		{
			/* decoding is done: every projection gets a transaction of its own */
			SPI_finish();
			ep_restore_user(&saved);
			PopActiveSnapshot();
			CommitTransactionCommand();
		}

		for (i = 0; i < nproj; i++)
		{
			EpProj	   *p = &projs[i];
			bool		m = false;

			bool		busy;

			if (p->skip)
				continue;
			if (ep_run_projection(p, &round, horizon, &left, &m, round_cxt, &busy))
			{
				applied += p->applied;
				state_dirty = true;
				/* its turn ended: the slot keeps the changes it has not seen */
				if (p->yielded)
				{
					hold_lsn = hold_lsn == InvalidXLogRecPtr ? p->new_lsn : Min(hold_lsn, p->new_lsn);
					yield_lsn = yield_lsn == InvalidXLogRecPtr ? p->new_lsn : Min(yield_lsn, p->new_lsn);
				}
			}
			else if (busy)
				continue;
			else if (p->slow)
				ep_delegate_projection(p);
			else
			{
				/* undone: a table projection needs its changes again */
				if (p->is_table && !p->is_message && !p->rebuilding &&
					p->last_lsn != InvalidXLogRecPtr)
					hold_lsn = hold_lsn == InvalidXLogRecPtr ? p->last_lsn : Min(hold_lsn, p->last_lsn);
				if (p->retry_later)
					ereport(LOG,
							(errmsg("event_patterns: handler of projection \"%s\" failed, retrying later: %s",
									p->name, p->last_error ? p->last_error : "unknown")));
			}
			if (m)
				*more = true;
		}

		if (round_in_worker)
		{
			ep_bgw_start_xact();
			PushActiveSnapshot(GetTransactionSnapshot());
			ep_become_owner(&saved);
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "SPI_connect failed");
		}

		/*
		 * Paused (or failed) table projections resume from their last LSN,
		 * and those whose work was undone retry from theirs: keep their
		 * changes in the slot.
		 */
		if (ep_run_kept(&plan_hold, "SELECT pg_catalog.min(last_lsn) FROM ep.projection_defs"
						" WHERE kind OPERATOR(pg_catalog.=) 'table'"
						"   AND status OPERATOR(pg_catalog.=) ANY ('{paused,failed}')",
						0, NULL, NULL, NULL, true) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;
			Datum		v = ep_getbin(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				hold_lsn = hold_lsn == InvalidXLogRecPtr ? DatumGetLSN(v) : Min(hold_lsn, DatumGetLSN(v));
		}
		if (hold_lsn != InvalidXLogRecPtr && hold_lsn < round.safe_confirm)
			round.safe_confirm = Max(hold_lsn, stored_confirm);

		/* events >= horizon commit after the position confirmed below */
		if (cover_known)
			new_cover = Max(cover, horizon - 1);
		{
			int64		water2;
			int64		horizon2;

			ep_round_bounds(cat, &water2, &horizon2);

			if (horizon2 >= water2 + 1)
			{
				new_cover = cover_known ? Min(new_cover, water2) : water2;
				cover_known = true;
			}
		}

		if ((state_dirty && round.safe_confirm != stored_confirm) ||
			cover_known != stored_cover_known || new_cover != stored_cover ||
			(round.safe_confirm > stored_confirm &&
			 round.safe_confirm - stored_confirm >= EP_CONFIRM_WRITE_LAG))
		{
			Oid			types[2] = {INT8OID, LSNOID};
			Datum		args[2];
			char		nulls[2] = "  ";

			if (cover_known)
				args[0] = Int64GetDatum(new_cover);
			else
				nulls[0] = 'n';
			if (round.safe_confirm != InvalidXLogRecPtr)
				args[1] = LSNGetDatum(round.safe_confirm);
			else
				nulls[1] = 'n';
			ep_exec_kept(&plan_save, "UPDATE ep.projection_state SET cover_position = $1,"
					" confirm_lsn = COALESCE(GREATEST(confirm_lsn, $2), $2)",
					2, types, args, nulls, SPI_OK_UPDATE);
			state_dirty = true;
		}

		if (!round.complete || round.stop)
			*more = true;
		if (left <= 0)
			*more = true;

		/* table projections are decoded through here once this commits */
		pending_publish = true;
		if (round.complete || !table_watch)
			pending_decoded_to = Max(pending_decoded_to,
									 yield_lsn != InvalidXLogRecPtr ?
									 Min(round.decoded_to, yield_lsn) : round.decoded_to);

		/*
		 * Nothing was written: whatever was decoded needs nothing, so the
		 * slot can move on at once (else the next round confirms what this
		 * one commits).
		 */
		if (confirm_ok && !state_dirty && round.safe_confirm > stored_confirm &&
			!round_without_slot)
			ep_decoder_confirm(round.safe_confirm);

		SPI_finish();
		ep_restore_user(&saved);
	}
	PG_FINALLY();
	{
		/* the worker's first transaction (and its memory) is long gone */
		if (!round_in_worker)
			MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(round_cxt);
	}
	PG_END_TRY();
	return applied;
}

static bool
ep_projections_installed(void)
{
	Oid			nsp = get_namespace_oid(EP_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("projection_state", nsp)) &&
		get_extension_oid("event_patterns", true) != InvalidOid;
}

/*
 * Is there any async projection; *need_slot: one that decodes (message
 * handlers read their channel's table: a database with only those needs
 * no slot, and keeps none). Asked in every worker round: the query's plan
 * is kept (ep_run_kept).
 */
static bool
ep_any_async_projection(bool *need_slot)
{
	bool		any = false;
	bool		isnull;
	EpSavedUser saved;
	static SPIPlanPtr plan = NULL;

	*need_slot = false;
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (ep_run_kept(&plan, "SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 0,"
					"       pg_catalog.bool_or(kind OPERATOR(pg_catalog.<>) 'message')"
					"  FROM ep.projection_defs WHERE mode OPERATOR(pg_catalog.=) 'async'",
					0, NULL, NULL, NULL, true) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read ep.projection_defs");
	any = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*need_slot = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) && !isnull;
	SPI_finish();
	ep_restore_user(&saved);
	return any;
}

/* The rounds' lock as a session lock: a worker round spans transactions. */
static void
ep_round_locktag(LOCKTAG *tag)
{
	/*
	 * field4 0x4552 ("ER"): not 1 or 2, so no SQL advisory-lock call can
	 * take or hold this lock (a role holding it would stop every round).
	 */
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (EP_PROJECTION_LOCK_KEY >> 32),
						 (uint32) EP_PROJECTION_LOCK_KEY, 0x4552);
}

/* ---------------------------------------------------------------------
 * Projection runners: a projection whose handler calls run out of the
 * worker's patience (event_patterns.projection_slow_call) is applied by a
 * process of its own, with its full time limit, so that it never holds the
 * other projections (nor the worker's jobs) back. The runner reads the
 * events from ep.events (the catch-up path: exactly the events between the
 * stored prefix and the horizon), holds the projection's lock for its life
 * (the worker skips the projection meanwhile), and leaves after ten idle
 * seconds; the worker then applies the projection again, with patience.
 * Runners use the job runners' slots (event_patterns.max_job_workers);
 * without a free slot the worker applies the projection itself with its
 * full limit for a while.
 * ---------------------------------------------------------------------
 */
typedef struct EpProjRunner
{
	int32		id;
	int			slot;
	uint64		generation;
	BackgroundWorkerHandle *handle;
} EpProjRunner;

static List *proj_runners = NIL;	/* runners this worker started */

static void
ep_reap_projection_runners(void)
{
	ListCell   *lc;

	foreach(lc, proj_runners)
	{
		EpProjRunner *r = (EpProjRunner *) lfirst(lc);
		pid_t		pid;
		BgwHandleStatus status = GetBackgroundWorkerPid(r->handle, &pid);

		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (status != BGWH_STOPPED)
			continue;
		ep_bgw_release_unstarted(r->slot, r->generation);
		pfree(r->handle);
		proj_runners = foreach_delete_current(proj_runners, lc);
		pfree(r);
	}
}

static void
ep_delegate_projection(EpProj *p)
{
	EpBackoff  *b = ep_backoff(p->id, true);
	TimestampTz now = GetCurrentTimestamp();
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	EpBgwExtra	extra;
	EpProjRunner *r;
	MemoryContext oldcxt;
	ListCell   *lc;
	uint64		generation;
	int			slot;

	ep_reap_projection_runners();
	foreach(lc, proj_runners)
		if (((EpProjRunner *) lfirst(lc))->id == p->id)
			return;				/* one is starting or running */

	/* a runner counts against its owner's share (max_job_workers_per_role) */
	slot = ep_bgw_alloc_slot(EP_SLOT_RUNNER, MyDatabaseId, -(int64) p->id, p->owner,
							 &generation);
	if (slot >= 0)
	{
		memset(&extra, 0, sizeof(extra));
		extra.dbid = MyDatabaseId;
		extra.slot = slot;
		extra.generation = generation;
		extra.job_id = -(int64) p->id;
		ep_bgw_fill_worker(&bgw, "ep_projection_runner_main", EP_APPNAME_PROJ_RUNNER, &extra);
		snprintf(bgw.bgw_name, BGW_MAXLEN, "%s %d in database %u",
				 EP_APPNAME_PROJ_RUNNER, p->id, MyDatabaseId);
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		if (RegisterDynamicBackgroundWorker(&bgw, &handle))
		{
			r = palloc(sizeof(EpProjRunner));
			r->id = p->id;
			r->slot = slot;
			r->generation = generation;
			r->handle = handle;
			proj_runners = lappend(proj_runners, r);
			MemoryContextSwitchTo(oldcxt);
			b->delegated_at = now;
			ereport(LOG,
					(errmsg("event_patterns: projection \"%s\" is slow; a runner of its own applies it",
							p->name),
					 errdetail("Its handler calls took longer than event_patterns.projection_slow_call (%d ms).",
							   ep_guc_projection_slow_call_ms)));
			return;
		}
		MemoryContextSwitchTo(oldcxt);
		ep_bgw_release_unstarted(slot, generation);
	}
	/*
	 * No runner to be had (all taken, or its owner's share is): the
	 * projection waits and tries again in a second; the worker never
	 * applies a slow projection with its full limit, which would hold the
	 * others back.
	 */
	b->retry_at = TimestampTzPlusMilliseconds(now, 1000);
	ereport(LOG,
			(errmsg("event_patterns: no runner free for slow projection \"%s\"; it waits for one",
					p->name),
			 errhint("Raise event_patterns.max_job_workers or event_patterns.max_job_workers_per_role (and max_worker_processes).")));
}

/* One round of a runner: true while the projection still exists and runs. */
static bool
ep_runner_round(int32 id, int64 *applied, bool *more)
{
	const EpCatalog *cat;
	EpSavedUser saved;
	EpProj	   *projs;
	EpProj	   *p = NULL;
	int			nproj;
	int			i;
	int64		horizon;
	int64		left = ep_guc_projection_batch_size;
	EpDecodeRound round;
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "ep projection runner round",
											  ALLOCSET_DEFAULT_SIZES);
	bool		busy = false;
	bool		ok;

	*applied = 0;
	*more = false;
	ep_bgw_start_xact();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!ep_projections_installed())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextDelete(cxt);
		return false;
	}
	cat = ep_catalog();
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	nproj = ep_load_projections(&projs, cxt);
	for (i = 0; i < nproj; i++)
		if (projs[i].id == id && !projs[i].is_table)
			p = &projs[i];
	horizon = ep_position_horizon(cat->position_seq);
	if (p != NULL)
		ep_prepare_projection(p, cxt);
	SPI_finish();
	ep_restore_user(&saved);
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (p == NULL)
	{
		MemoryContextDelete(cxt);
		return false;
	}

	memset(&round, 0, sizeof(round));
	round.horizon = horizon;
	ok = ep_run_projection(p, &round, horizon, &left, more, cxt, &busy);
	*applied = ok ? p->applied : 0;
	if (!ok && p->retry_later)
	{
		EpBackoff  *b = ep_backoff(p->id, false);
		long		wait = b ? TimestampDifferenceMilliseconds(GetCurrentTimestamp(), b->retry_at) : 0;

		/* a runner may wait: it holds nobody back */
		if (wait > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		*more = true;
	}
	ok = p->usable && !p->stopped;
	MemoryContextDelete(cxt);
	return ok;
}

void
ep_projection_runner_main(Datum main_arg)
{
	EpBgwExtra	extra;
	EpWorkerSlot *slot;
	bool		paused;
	LOCKTAG		tag;
	int32		id;
	TimestampTz idle_since;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	slot = ep_bgw_attach(EP_SLOT_RUNNER, &paused);
	if (paused)
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(extra.dbid, InvalidOid, 0);
	pgstat_report_appname(EP_APPNAME_PROJ_RUNNER);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	id = (int32) -extra.job_id;
	in_runner = true;
	round_in_worker = true;

	/* the worker's transaction on this projection ends first */
	ep_projection_locktag(&tag, id);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);

	idle_since = GetCurrentTimestamp();
	for (;;)
	{
		int64		applied;
		bool		more;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (ep_bgw_stop_requested(slot))
			break;
		pgstat_report_activity(STATE_RUNNING, "applying a slow projection");
		if (!ep_runner_round(id, &applied, &more))
			break;
		pgstat_report_activity(STATE_IDLE, NULL);
		if (applied > 0 || more)
			idle_since = GetCurrentTimestamp();
		else if (TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), 10000))
			break;
		if (!more)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 200, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	LockRelease(&tag, ExclusiveLock, true);
	proc_exit(0);
}

/*
 * The worker step: one round, each projection in a transaction of its
 * own. Errors outside handlers are caught and logged; the next round
 * starts over from the stored state.
 */
bool
ep_projection_step(void)
{
	volatile bool more = false;
	volatile bool failed = false;
	volatile bool locked = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	LOCKTAG		tag;

	if (RecoveryInProgress() || proj_shared == NULL)
		return false;
	if (proj_runners != NIL)
		ep_reap_projection_runners();
	/* after failures, wait (1 s, 2 s, 4 s ... 5 min) instead of logging each round */
	if (step_failures > 0 && GetCurrentTimestamp() < step_retry_at)
		return false;

	ep_round_locktag(&tag);
	PG_TRY();
	{
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (ep_projections_installed() && ep_catalog()->version < EP_VERSION_0_2)
		{
			/* new library, old objects: wait for ALTER EXTENSION ... UPDATE */
			static bool logged = false;

			if (!logged)
				ereport(LOG,
						(errmsg("event_patterns: projections of database %u wait for ALTER EXTENSION event_patterns UPDATE",
								MyDatabaseId)));
			logged = true;
		}
		else if (ep_projections_installed())
		{
			/*
			 * Rounds of a database are serialized by an advisory lock; it is
			 * taken before the slot is looked at, so that the worker and an
			 * ep.apply_projections() call never both create the slot. The
			 * API does not take it: it never waits for a round.
			 */
			bool		need_slot;

			if (!ep_any_async_projection(&need_slot))
				ep_decoder_drop_slot(MyDatabaseId);
			else if (LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL)
			{
				bool		created = false;
				bool		m;

				locked = true;
				/* message handlers only: no slot (dropped if one is left) */
				round_without_slot = !need_slot;
				if (round_without_slot)
					ep_decoder_drop_slot(MyDatabaseId);
				else
					created = ep_decoder_ensure_slot();
				if (created)
				{
					/*
					 * Commit the reset before anything is decoded from the new
					 * slot: a round that failed after creating it must not
					 * leave the next round trusting the old slot's cover.
					 */
					EpSavedUser saved;

					ep_become_owner(&saved);
					if (SPI_connect() != SPI_OK_CONNECT)
						elog(ERROR, "SPI_connect failed");
					ep_forget_slot_state();
					SPI_finish();
					ep_restore_user(&saved);
					more = true;	/* the round itself comes next */
				}
				else
				{
					round_in_worker = true;
					(void) ep_round(ep_guc_projection_batch_size, created, true, true, &m);
					round_in_worker = false;
					more = m;
				}
			}
			/* else: an ep.apply_projections() call is applying right now */
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (locked)
			LockRelease(&tag, ExclusiveLock, true);
		locked = false;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		round_in_worker = false;
		round_without_slot = false;
		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		FlushErrorState();
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		AbortCurrentTransaction();
		if (locked)
			LockRelease(&tag, ExclusiveLock, true);
		locked = false;
		step_failures++;
		step_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													Min(1000L << Min(step_failures - 1, 9), 300000L));
		ereport(LOG,
				(errmsg("event_patterns: projection round failed: %s", ed->message),
				 errdetail("Projections of this database are retried in %d seconds.",
						   (int) Min(1L << Min(step_failures - 1, 9), 300L))));
		FreeErrorData(ed);
		failed = true;
	}
	PG_END_TRY();
	if (failed)
		more = false;
	else
		step_failures = 0;
	MemoryContextSwitchTo(oldcxt);
	return more;
}

/*
 * ep.apply_projections(max_events integer DEFAULT 10000) RETURNS bigint
 *
 * Runs apply rounds in this session's transaction: one decoding pass, then
 * event projections that read from ep.events go on until caught up or
 * max_events handler calls were made. The slot is confirmed by the next
 * round, once this transaction has committed.
 */
PG_FUNCTION_INFO_V1(ep_apply_projections);
Datum
ep_apply_projections(PG_FUNCTION_ARGS)
{
	int64		max_events = PG_ARGISNULL(0) ? 10000 : PG_GETARG_INT32(0);
	volatile bool created = false;
	bool		need_slot;
	bool		more;
	volatile int64 total = 0;

	ep_require_preload("applying projections");
	if (max_events <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be positive")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("projections cannot be applied during recovery")));
	if (ep_position_reserved_in_xact())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot apply projections in a transaction that appended events"),
				 errhint("Commit the appends first.")));

	if (!ep_any_async_projection(&need_slot))
		PG_RETURN_INT64(0);

	/* serialized with the worker's rounds before the slot is looked at */
	{
		LOCKTAG		rtag;

		ep_round_locktag(&rtag);
		(void) LockAcquire(&rtag, ExclusiveLock, false, false);
	}
	round_without_slot = !need_slot;
	if (round_without_slot)
		ep_decoder_drop_slot(MyDatabaseId);
	else
		created = ep_decoder_ensure_slot();

	/*
	 * One decoding pass per call. A second call in the same transaction
	 * must not confirm the slot: the state it would confirm is not yet
	 * committed.
	 */
	PG_TRY();
	{
		total = ep_round(max_events, created, false, !round_in_xact, &more);
	}
	PG_FINALLY();
	{
		round_without_slot = false;
	}
	PG_END_TRY();

	PG_RETURN_INT64(total);
}
