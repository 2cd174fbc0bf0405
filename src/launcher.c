/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The event_patterns launcher: one background worker per cluster that
 *	  starts a worker in every database where the extension is installed,
 *	  restarts those that die (with backoff) and keeps them out of the way
 *	  of DROP DATABASE and the other commands that need a database to
 *	  themselves. Also the shared registry of the runtime's processes.
 *
 * Finding the databases. A process that is connected to no database can
 * read pg_database (a shared catalog) but not pg_extension (which lives in
 * each database). The launcher therefore scans pg_database and starts a
 * worker for every connectable, non-template database whose state it does
 * not know; the worker connects, looks the extension up and, when it is
 * missing, leaves at once with a reason the launcher remembers ("absent"),
 * so each database is probed once, not on every scan. A committed
 * CREATE EXTENSION event_patterns tells the launcher directly (a note in
 * shared memory plus its latch), which starts the worker well within a
 * second; CREATE DATABASE asks for an immediate rescan, and a slow periodic
 * rescan catches anything else. Connecting to every database briefly at
 * server start costs one short-lived process per database, which is cheaper
 * and simpler than keeping a second, persistent list of databases that
 * could drift from the catalogs. Template databases get no worker: one
 * connected session would make every CREATE DATABASE from them fail.
 *
 * Commands that need no other session in a database (DROP DATABASE,
 * ALTER DATABASE RENAME / SET TABLESPACE, CREATE DATABASE ... TEMPLATE,
 * DROP EXTENSION event_patterns) pass through a ProcessUtility hook that
 * "pauses" the database first: it records the pause in shared memory, asks
 * every runtime process connected there to stop (stop flag, SIGTERM), waits
 * (bounded) until they are gone and lets the command run. The launcher
 * starts nothing in a paused database; the pause ends when the pausing
 * transaction ends (commit or abort), after which the launcher starts the
 * worker again if the database and the extension still exist.
 *
 * Restarts. Per-database workers are dynamic workers that are never
 * restarted by the postmaster (BGW_NEVER_RESTART) and notify the launcher
 * (bgw_notify_pid) when they stop. A worker that left unexpectedly (error,
 * crash, pg_terminate_backend) is started again after 1 s, 2 s, 4 s, ...
 * up to 60 s; a worker that ran for a minute or more starts a new series.
 *
 * Locking. bgw_shared is guarded by its spinlock; every critical section
 * only reads or writes a few fields (no allocation, no ereport, no system
 * call). The launcher's own bookkeeping (launcher_dbs) is process-local.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "launcher.h"
#include "notify.h"
#include "shmem.h"

#define EP_MAX_PAUSES			64
#define EP_MAX_NOTES			64
#define EP_RESCAN_INTERVAL_MS	30000	/* periodic pg_database rescan */
#define EP_PAUSE_WAIT_MS		10000	/* longest wait for workers to leave */
#define EP_BACKOFF_MAX_MS		60000
#define EP_HEALTHY_RUN_MS		60000	/* a run this long resets the backoff */
#define EP_RUNNER_START_MS		60000	/* unstarted runner slots are freed after */

typedef struct EpPause
{
	Oid			dbid;
	int			backend_pid;	/* the backend whose transaction holds it */
} EpPause;

typedef struct EpBgwShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	uint64		next_generation;
	bool		rescan;			/* scan pg_database at once */
	bool		notes_overflow; /* too many notes: probe every database */
	int			nnotes;
	Oid			notes[EP_MAX_NOTES];	/* databases that created the extension */
	EpPause		pauses[EP_MAX_PAUSES];
	int			nslots;
	EpWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EpBgwShared;

static EpBgwShared *bgw_shared = NULL;

/* this process's slot, when it is a worker or a runner */
static EpWorkerSlot *my_slot = NULL;
static uint64 my_generation = 0;

/* per-transaction state of an ordinary backend */
static bool paused_in_xact = false;
static bool created_in_xact = false;
static bool createdb_in_xact = false;
static bool jobs_changed_in_xact = false;

static ProcessUtility_hook_type prev_process_utility = NULL;

PGDLLEXPORT void ep_launcher_main(Datum main_arg);

/* ------------------------------------------------------------------------
 * Shared memory
 * ------------------------------------------------------------------------
 */
static int
ep_bgw_nslots(void)
{
	return ep_guc_max_workers + ep_guc_max_job_workers;
}

Size
ep_bgw_shmem_size(void)
{
	return add_size(offsetof(EpBgwShared, slots),
					mul_size(ep_bgw_nslots(), sizeof(EpWorkerSlot)));
}

void
ep_bgw_shmem_init(void)
{
	bool		found;

	bgw_shared = ShmemInitStruct("event_patterns workers",
								 ep_bgw_shmem_size(), &found);
	if (!found)
	{
		memset(bgw_shared, 0, ep_bgw_shmem_size());
		SpinLockInit(&bgw_shared->mutex);
		bgw_shared->next_generation = 1;
		bgw_shared->nslots = ep_bgw_nslots();
	}
}

bool
ep_bgw_shmem_available(void)
{
	return bgw_shared != NULL;
}

static bool
db_paused_locked(Oid dbid)
{
	int			i;

	for (i = 0; i < EP_MAX_PAUSES; i++)
		if (bgw_shared->pauses[i].dbid == dbid)
			return true;
	return false;
}

static bool
db_paused(Oid dbid)
{
	bool		paused;

	SpinLockAcquire(&bgw_shared->mutex);
	paused = db_paused_locked(dbid);
	SpinLockRelease(&bgw_shared->mutex);
	return paused;
}

static bool
slot_alive(const EpWorkerSlot *slot)
{
	return slot->state != EP_SLOT_FREE && slot->state != EP_SLOT_EXITED;
}

static void
set_launcher_latch(void)
{
	Latch	   *latch;

	SpinLockAcquire(&bgw_shared->mutex);
	latch = bgw_shared->launcher_latch;
	SpinLockRelease(&bgw_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* ------------------------------------------------------------------------
 * The registry, as seen by the processes in it
 * ------------------------------------------------------------------------
 */

/* on_shmem_exit: the process is leaving; let its starter know */
static void
ep_bgw_detach(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&bgw_shared->mutex);
	if (my_slot->generation == my_generation)
	{
		my_slot->pid = 0;
		my_slot->latch = NULL;
		/* interrupted because someone asked it to stop: not a failure */
		if (my_slot->stop_requested && my_slot->exit_reason == EP_EXIT_UNEXPECTED)
			my_slot->exit_reason = EP_EXIT_STOPPED;
		/* runners free their own slot; the launcher reaps workers */
		my_slot->state = (my_slot->kind == EP_SLOT_RUNNER) ?
			EP_SLOT_FREE : EP_SLOT_EXITED;
	}
	SpinLockRelease(&bgw_shared->mutex);
	my_slot = NULL;
	set_launcher_latch();
}

/*
 * Called first thing by a worker or runner: claim the slot the starter
 * reserved. Leaves (exit 0) when the slot was given up meanwhile. *paused
 * tells whether the database must be left alone right away.
 */
EpWorkerSlot *
ep_bgw_attach(EpSlotKind kind, bool *paused)
{
	EpBgwExtra	extra;
	EpWorkerSlot *slot;
	TimestampTz now = GetCurrentTimestamp();
	bool		ok;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	if (bgw_shared == NULL || extra.slot < 0 || extra.slot >= bgw_shared->nslots)
		proc_exit(0);
	slot = &bgw_shared->slots[extra.slot];

	SpinLockAcquire(&bgw_shared->mutex);
	ok = (slot->generation == extra.generation &&
		  slot->state == EP_SLOT_STARTING && slot->kind == kind);
	if (ok)
	{
		slot->pid = MyProcPid;
		slot->latch = MyLatch;
		slot->started_at = now;
		slot->state = (kind == EP_SLOT_WORKER) ? EP_SLOT_IDLE : EP_SLOT_BUSY;
		*paused = slot->stop_requested || db_paused_locked(slot->dbid);
	}
	SpinLockRelease(&bgw_shared->mutex);
	if (!ok)
		proc_exit(0);

	my_slot = slot;
	my_generation = extra.generation;
	on_shmem_exit(ep_bgw_detach, (Datum) 0);
	return slot;
}

void
ep_bgw_set_state(EpWorkerSlot *slot, EpSlotState state)
{
	SpinLockAcquire(&bgw_shared->mutex);
	if (slot->generation == my_generation && slot->state != EP_SLOT_STOPPING &&
		slot->state != EP_SLOT_FREE)
		slot->state = state;
	SpinLockRelease(&bgw_shared->mutex);
}

void
ep_bgw_set_exit_reason(EpWorkerSlot *slot, EpExitReason reason)
{
	SpinLockAcquire(&bgw_shared->mutex);
	if (slot->generation == my_generation)
	{
		slot->exit_reason = reason;
		slot->state = EP_SLOT_STOPPING;
	}
	SpinLockRelease(&bgw_shared->mutex);
}

bool
ep_bgw_stop_requested(EpWorkerSlot *slot)
{
	bool		stop;

	SpinLockAcquire(&bgw_shared->mutex);
	stop = slot->stop_requested || slot->generation != my_generation ||
		db_paused_locked(slot->dbid);
	SpinLockRelease(&bgw_shared->mutex);
	return stop;
}

bool
ep_bgw_take_jobs_dirty(EpWorkerSlot *slot)
{
	bool		dirty;

	SpinLockAcquire(&bgw_shared->mutex);
	dirty = slot->jobs_dirty;
	slot->jobs_dirty = false;
	SpinLockRelease(&bgw_shared->mutex);
	return dirty;
}

/* Set the latch of the worker of a database (and note a job change). */
void
ep_bgw_wake_db(Oid dbid, bool jobs)
{
	Latch	   *latch = NULL;
	int			i;

	if (bgw_shared == NULL)
		return;
	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots; i++)
	{
		EpWorkerSlot *slot = &bgw_shared->slots[i];

		if (slot->kind == EP_SLOT_WORKER && slot->dbid == dbid && slot_alive(slot))
		{
			if (jobs)
				slot->jobs_dirty = true;
			if (slot->latch)
				latch = slot->latch;
		}
	}
	SpinLockRelease(&bgw_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Copy the live worker slots of a database (for ep.workers). */
int
ep_bgw_snapshot_workers(Oid dbid, EpWorkerSlot *out, int max)
{
	int			n = 0;
	int			i;

	if (bgw_shared == NULL)
		return 0;
	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots && n < max; i++)
	{
		EpWorkerSlot *slot = &bgw_shared->slots[i];

		if (slot->kind == EP_SLOT_WORKER && slot->dbid == dbid && slot_alive(slot))
			out[n++] = *slot;
	}
	SpinLockRelease(&bgw_shared->mutex);
	return n;
}

int
ep_bgw_free_runner_slots(void)
{
	int			used = 0;
	int			i;

	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots; i++)
		if (bgw_shared->slots[i].kind == EP_SLOT_RUNNER &&
			bgw_shared->slots[i].state != EP_SLOT_FREE)
			used++;
	SpinLockRelease(&bgw_shared->mutex);
	return Max(ep_guc_max_job_workers - used, 0);
}

/* How many job runners of a role run (or start) now, across all databases. */
int
ep_bgw_runners_of(Oid owner)
{
	int			n = 0;
	int			i;

	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots; i++)
		if (bgw_shared->slots[i].kind == EP_SLOT_RUNNER &&
			bgw_shared->slots[i].state != EP_SLOT_FREE &&
			bgw_shared->slots[i].owner == owner)
			n++;
	SpinLockRelease(&bgw_shared->mutex);
	return n;
}

/*
 * Reserve a slot for a process about to be registered. Returns -1 when the
 * limit for that kind of process is reached, or for a job runner when its
 * owner already runs event_patterns.max_job_workers_per_role jobs.
 */
int
ep_bgw_alloc_slot(EpSlotKind kind, Oid dbid, int64 job_id, Oid owner,
				  uint64 *generation)
{
	int			limit = (kind == EP_SLOT_WORKER) ? ep_guc_max_workers : ep_guc_max_job_workers;
	TimestampTz now = GetCurrentTimestamp();
	int			used = 0;
	int			owned = 0;
	int			free_slot = -1;
	int			i;

	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots; i++)
	{
		EpWorkerSlot *slot = &bgw_shared->slots[i];

		if (slot->state == EP_SLOT_FREE)
		{
			if (free_slot < 0)
				free_slot = i;
		}
		else if (slot->kind == kind)
		{
			used++;
			if (OidIsValid(owner) && slot->owner == owner)
				owned++;
		}
	}
	if (OidIsValid(owner) && owned >= ep_guc_max_job_workers_per_role)
		free_slot = -1;
	else if (used < limit && free_slot >= 0)
	{
		EpWorkerSlot *slot = &bgw_shared->slots[free_slot];

		slot->kind = kind;
		slot->state = EP_SLOT_STARTING;
		slot->dbid = dbid;
		slot->generation = bgw_shared->next_generation++;
		slot->pid = 0;
		slot->latch = NULL;
		slot->allocated_at = now;
		slot->started_at = 0;
		slot->exit_reason = EP_EXIT_UNEXPECTED;
		slot->stop_requested = false;
		slot->jobs_dirty = true;
		slot->job_id = job_id;
		slot->owner = owner;
		*generation = slot->generation;
	}
	else
		free_slot = -1;
	SpinLockRelease(&bgw_shared->mutex);
	return free_slot;
}

/* Free a slot whose process never attached (registration failed, or gone). */
void
ep_bgw_release_unstarted(int slotno, uint64 generation)
{
	EpWorkerSlot *slot = &bgw_shared->slots[slotno];

	SpinLockAcquire(&bgw_shared->mutex);
	if (slot->generation == generation && slot->state == EP_SLOT_STARTING)
		slot->state = EP_SLOT_FREE;
	SpinLockRelease(&bgw_shared->mutex);
}

void
ep_bgw_fill_worker(BackgroundWorker *bgw, const char *function,
				   const char *type, const EpBgwExtra *extra)
{
	StaticAssertStmt(sizeof(EpBgwExtra) <= BGW_EXTRALEN, "bgw_extra too small");

	memset(bgw, 0, sizeof(BackgroundWorker));
	bgw->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw->bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(bgw->bgw_library_name, "event_patterns", BGW_MAXLEN);
	strlcpy(bgw->bgw_function_name, function, BGW_MAXLEN);
	if (extra->job_id > 0)
		snprintf(bgw->bgw_name, BGW_MAXLEN, "%s " INT64_FORMAT " in database %u",
				 type, extra->job_id, extra->dbid);
	else
		snprintf(bgw->bgw_name, BGW_MAXLEN, "%s for database %u", type, extra->dbid);
	strlcpy(bgw->bgw_type, type, BGW_MAXLEN);
	bgw->bgw_main_arg = Int32GetDatum(extra->slot);
	memcpy(bgw->bgw_extra, extra, sizeof(EpBgwExtra));
	bgw->bgw_notify_pid = MyProcPid;
}

/* ------------------------------------------------------------------------
 * Pausing a database for commands that need it to themselves
 * ------------------------------------------------------------------------
 */
static void
ep_bgw_pause_database(Oid dbid)
{
	pid_t		pids[520];	/* one worker and up to 2 * 256 runners */
	int			npids = 0;
	bool		added = false;
	TimestampTz deadline;
	int			i;

	if (bgw_shared == NULL || !OidIsValid(dbid))
		return;

	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < EP_MAX_PAUSES; i++)
	{
		if (!OidIsValid(bgw_shared->pauses[i].dbid))
		{
			bgw_shared->pauses[i].dbid = dbid;
			bgw_shared->pauses[i].backend_pid = MyProcPid;
			added = true;
			break;
		}
	}
	if (added)
	{
		for (i = 0; i < bgw_shared->nslots; i++)
		{
			EpWorkerSlot *slot = &bgw_shared->slots[i];

			if (slot->dbid != dbid || !slot_alive(slot))
				continue;
			slot->stop_requested = true;
			if (slot->state != EP_SLOT_STARTING)
				slot->state = EP_SLOT_STOPPING;
			if (slot->pid != 0 && npids < lengthof(pids))
				pids[npids++] = slot->pid;
		}
	}
	SpinLockRelease(&bgw_shared->mutex);

	if (!added)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many concurrent database-level commands for event_patterns"),
				 errhint("Retry the command when other CREATE, ALTER or DROP DATABASE commands have finished.")));
	paused_in_xact = true;

	/* processes of ours only; the same as what the postmaster would send */
	for (i = 0; i < npids; i++)
		(void) kill(pids[i], SIGTERM);
	set_launcher_latch();

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EP_PAUSE_WAIT_MS);
	for (;;)
	{
		bool		busy = false;

		SpinLockAcquire(&bgw_shared->mutex);
		for (i = 0; i < bgw_shared->nslots; i++)
			if (bgw_shared->slots[i].dbid == dbid && slot_alive(&bgw_shared->slots[i]))
				busy = true;
		SpinLockRelease(&bgw_shared->mutex);
		if (!busy)
			break;
		if (GetCurrentTimestamp() >= deadline)
		{
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("event_patterns background workers of database %u did not stop in time", dbid),
					 errdetail("The command goes ahead and may find the database in use.")));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
ep_bgw_release_pauses(void)
{
	int			i;

	if (!paused_in_xact || bgw_shared == NULL)
		return;
	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < EP_MAX_PAUSES; i++)
		if (bgw_shared->pauses[i].backend_pid == MyProcPid)
		{
			bgw_shared->pauses[i].dbid = InvalidOid;
			bgw_shared->pauses[i].backend_pid = 0;
		}
	/* the database may be gone or renamed: look before starting anything */
	bgw_shared->rescan = true;
	SpinLockRelease(&bgw_shared->mutex);
	paused_in_xact = false;
	set_launcher_latch();
}

static void
pause_if_owner(const char *dbname)
{
	Oid			dbid = get_database_oid(dbname, true);

	if (OidIsValid(dbid) && pg_database_ownercheck(dbid, GetUserId()))
		ep_bgw_pause_database(dbid);
}

static void
ep_bgw_process_utility(PlannedStmt *pstmt, const char *queryString,
					   bool readOnlyTree, ProcessUtilityContext context,
					   ParamListInfo params, QueryEnvironment *queryEnv,
					   DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		creates_extension = false;
	ListCell   *lc;

	/*
	 * DROP DATABASE, CREATE DATABASE and ALTER DATABASE SET TABLESPACE refuse
	 * to run in a transaction block; don't stop a worker for nothing.
	 */
	bool		own_xact = (context == PROCESS_UTILITY_TOPLEVEL && !IsTransactionBlock());

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			if (own_xact)
				pause_if_owner(((DropdbStmt *) parsetree)->dbname);
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				pause_if_owner(((RenameStmt *) parsetree)->subname);
			break;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			{
				if (own_xact && strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
					pause_if_owner(((AlterDatabaseStmt *) parsetree)->dbname);
			}
			break;
		case T_CreatedbStmt:
			{
				const char *template = "template1";

				foreach(lc, ((CreatedbStmt *) parsetree)->options)
				{
					DefElem    *defel = (DefElem *) lfirst(lc);

					if (strcmp(defel->defname, "template") == 0 && defel->arg != NULL)
						template = defGetString(defel);
				}
				if (own_xact && have_createdb_privilege())
					ep_bgw_pause_database(get_database_oid(template, true));
				createdb_in_xact = true;
			}
			break;
		case T_DropStmt:
			if (((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION)
			{
				foreach(lc, ((DropStmt *) parsetree)->objects)
				{
					Oid			extoid;

					if (strcmp(strVal(lfirst(lc)), "event_patterns") != 0)
						continue;
					extoid = get_extension_oid("event_patterns", true);
					if (OidIsValid(extoid) && pg_extension_ownercheck(extoid, GetUserId()))
						ep_bgw_pause_database(MyDatabaseId);
				}
			}
			break;
		case T_CreateExtensionStmt:
			if (strcmp(((CreateExtensionStmt *) parsetree)->extname, "event_patterns") == 0)
				creates_extension = true;
			break;
		case T_ListenStmt:
			/* the worker's notifications need to know someone listens */
			ep_notify_listen(((ListenStmt *) parsetree)->conditionname);
			break;
		default:
			break;
	}

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (creates_extension)
		created_in_xact = true;
}

void
ep_bgw_note_jobs_changed(void)
{
	jobs_changed_in_xact = true;
}

/*
 * Called from the extension's transaction callback (event_patterns.c) at
 * the end of every transaction, before the position state is reset. After
 * a commit it wakes this database's worker when the transaction appended
 * events or changed jobs, and tells the launcher about a new extension or
 * database. Any pause this backend holds ends here.
 */
void
ep_bgw_at_xact_end(XactEvent event, bool appended)
{
	if (event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		return;

	if (event == XACT_EVENT_COMMIT && bgw_shared != NULL)
	{
		if (appended || jobs_changed_in_xact)
			ep_bgw_wake_db(MyDatabaseId, jobs_changed_in_xact);
		if (created_in_xact || createdb_in_xact)
		{
			SpinLockAcquire(&bgw_shared->mutex);
			if (createdb_in_xact)
				bgw_shared->rescan = true;
			if (created_in_xact)
			{
				if (bgw_shared->nnotes < EP_MAX_NOTES)
					bgw_shared->notes[bgw_shared->nnotes++] = MyDatabaseId;
				else
					bgw_shared->notes_overflow = true;
			}
			SpinLockRelease(&bgw_shared->mutex);
			set_launcher_latch();
		}
	}
	ep_bgw_release_pauses();
	created_in_xact = false;
	createdb_in_xact = false;
	jobs_changed_in_xact = false;
}

/* ------------------------------------------------------------------------
 * The launcher
 * ------------------------------------------------------------------------
 */
typedef enum EpDbStatus
{
	EP_DB_UNKNOWN,				/* not probed yet */
	EP_DB_PRESENT,				/* the extension is installed */
	EP_DB_ABSENT				/* probed: not installed */
} EpDbStatus;

typedef struct LauncherDb
{
	Oid			dbid;			/* hash key */
	EpDbStatus	status;
	bool		seen;			/* in the last pg_database scan */
	bool		recheck;		/* CREATE EXTENSION noted while a probe ran */
	bool		warned;
	int			slot;
	uint64		generation;
	BackgroundWorkerHandle *handle;
	int			failures;
	TimestampTz restart_at;
	TimestampTz started_at;
	TimestampTz waiting_since;	/* first failed attempt to get a slot */
} LauncherDb;

static HTAB *launcher_dbs = NULL;

static void
launcher_on_exit(int code, Datum arg)
{
	SpinLockAcquire(&bgw_shared->mutex);
	if (bgw_shared->launcher_pid == MyProcPid)
	{
		bgw_shared->launcher_pid = 0;
		bgw_shared->launcher_latch = NULL;
	}
	SpinLockRelease(&bgw_shared->mutex);
}

/*
 * A launcher that starts while workers from an earlier launcher are still
 * running (the earlier one was terminated) has no handles for them: ask
 * them to leave and take over with fresh ones.
 */
static void
launcher_take_over(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   EP_PAUSE_WAIT_MS);
	int			i;

	for (;;)
	{
		Latch	   *latches[256];
		int			nlatches = 0;
		bool		busy = false;
		bool		expired = GetCurrentTimestamp() >= deadline;

		SpinLockAcquire(&bgw_shared->mutex);
		for (i = 0; i < bgw_shared->nslots; i++)
		{
			EpWorkerSlot *slot = &bgw_shared->slots[i];

			if (slot->kind != EP_SLOT_WORKER || slot->state == EP_SLOT_FREE)
				continue;
			if (slot->state == EP_SLOT_EXITED || expired)
			{
				/* a new generation: a straggler can no longer touch the slot */
				slot->state = EP_SLOT_FREE;
				slot->generation = bgw_shared->next_generation++;
				continue;
			}
			busy = true;
			slot->stop_requested = true;
			if (slot->latch && nlatches < lengthof(latches))
				latches[nlatches++] = slot->latch;
		}
		SpinLockRelease(&bgw_shared->mutex);
		if (!busy)
			break;
		for (i = 0; i < nlatches; i++)
			SetLatch(latches[i]);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 50L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static LauncherDb *
launcher_db(Oid dbid)
{
	LauncherDb *entry;
	bool		found;

	entry = hash_search(launcher_dbs, &dbid, HASH_ENTER, &found);
	if (!found)
	{
		entry->status = EP_DB_UNKNOWN;
		entry->seen = false;
		entry->recheck = false;
		entry->warned = false;
		entry->slot = -1;
		entry->generation = 0;
		entry->handle = NULL;
		entry->failures = 0;
		entry->restart_at = 0;
		entry->started_at = 0;
		entry->waiting_since = 0;
	}
	return entry;
}

/* Take the notes left by committed CREATE EXTENSION / CREATE DATABASE. */
static bool
launcher_take_notes(void)
{
	Oid			notes[EP_MAX_NOTES];
	int			nnotes;
	bool		overflow;
	bool		rescan;
	int			i;

	SpinLockAcquire(&bgw_shared->mutex);
	nnotes = bgw_shared->nnotes;
	memcpy(notes, bgw_shared->notes, nnotes * sizeof(Oid));
	overflow = bgw_shared->notes_overflow;
	rescan = bgw_shared->rescan;
	bgw_shared->nnotes = 0;
	bgw_shared->notes_overflow = false;
	bgw_shared->rescan = false;
	SpinLockRelease(&bgw_shared->mutex);

	if (overflow)
	{
		HASH_SEQ_STATUS seq;
		LauncherDb *entry;

		hash_seq_init(&seq, launcher_dbs);
		while ((entry = hash_seq_search(&seq)) != NULL)
		{
			if (entry->status == EP_DB_ABSENT)
				entry->status = EP_DB_UNKNOWN;
			entry->recheck = true;
		}
	}
	for (i = 0; i < nnotes; i++)
	{
		LauncherDb *entry = launcher_db(notes[i]);

		/* a probe that is running may have looked before the commit */
		entry->recheck = true;
		if (entry->status == EP_DB_ABSENT)
			entry->status = EP_DB_UNKNOWN;
		entry->failures = 0;
		entry->restart_at = 0;
		rescan = true;			/* a database we have not scanned yet? */
	}
	return rescan;
}

static void
launcher_scan_databases(void)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *entry;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	hash_seq_init(&seq, launcher_dbs);
	while ((entry = hash_seq_search(&seq)) != NULL)
		entry->seen = false;

	ep_bgw_start_xact();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (!db->datallowconn || db->datistemplate || database_is_invalid_form(db))
			continue;
		launcher_db(db->oid)->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	/* forget databases that are gone; stop workers in ones that turned template */
	hash_seq_init(&seq, launcher_dbs);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->seen)
			continue;
		if (entry->handle == NULL)
			hash_search(launcher_dbs, &entry->dbid, HASH_REMOVE, NULL);
		else
		{
			Latch	   *latch = NULL;
			EpWorkerSlot *slot = &bgw_shared->slots[entry->slot];

			SpinLockAcquire(&bgw_shared->mutex);
			if (slot->generation == entry->generation)
			{
				slot->stop_requested = true;
				latch = slot->latch;
			}
			SpinLockRelease(&bgw_shared->mutex);
			if (latch)
				SetLatch(latch);
		}
	}
}

static long
backoff_ms(int failures)
{
	long		ms = 1000;

	while (--failures > 0 && ms < EP_BACKOFF_MAX_MS)
		ms *= 2;
	return Min(ms, EP_BACKOFF_MAX_MS);
}

/* Collect workers that stopped and decide what to do about each. */
static bool
launcher_reap(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *entry;
	bool		rescan = false;

	hash_seq_init(&seq, launcher_dbs);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		EpWorkerSlot *slot;
		EpExitReason reason = EP_EXIT_UNEXPECTED;
		BgwHandleStatus status;
		pid_t		pid;

		if (entry->handle == NULL)
			continue;
		status = GetBackgroundWorkerPid(entry->handle, &pid);
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		slot = &bgw_shared->slots[entry->slot];
		if (status != BGWH_STOPPED)
		{
			if (entry->status == EP_DB_UNKNOWN)
			{
				SpinLockAcquire(&bgw_shared->mutex);
				if (slot->generation == entry->generation &&
					(slot->state == EP_SLOT_IDLE || slot->state == EP_SLOT_BUSY))
					entry->status = EP_DB_PRESENT;
				SpinLockRelease(&bgw_shared->mutex);
			}
			continue;
		}

		SpinLockAcquire(&bgw_shared->mutex);
		if (slot->generation == entry->generation)
		{
			if (slot->state != EP_SLOT_STARTING)
				reason = slot->exit_reason;
			slot->state = EP_SLOT_FREE;
			slot->pid = 0;
		}
		SpinLockRelease(&bgw_shared->mutex);
		pfree(entry->handle);
		entry->handle = NULL;
		entry->slot = -1;

		switch (reason)
		{
			case EP_EXIT_NO_EXTENSION:
				entry->status = entry->recheck ? EP_DB_UNKNOWN : EP_DB_ABSENT;
				entry->failures = 0;
				entry->restart_at = 0;
				break;
			case EP_EXIT_STOPPED:
				/* started again once the pause ends (if still wanted) */
				entry->restart_at = 0;
				break;
			case EP_EXIT_UNEXPECTED:
				if (TimestampDifferenceExceeds(entry->started_at, now, EP_HEALTHY_RUN_MS))
					entry->failures = 0;
				entry->failures++;
				entry->restart_at = TimestampTzPlusMilliseconds(now, backoff_ms(entry->failures));
				rescan = true;	/* the database may be gone */
				break;
		}
		entry->recheck = false;
	}
	return rescan;
}

/* Free runner slots whose process never came and whose starter is gone. */
static void
launcher_gc_runner_slots(TimestampTz now)
{
	int			i;

	SpinLockAcquire(&bgw_shared->mutex);
	for (i = 0; i < bgw_shared->nslots; i++)
	{
		EpWorkerSlot *slot = &bgw_shared->slots[i];

		if (slot->kind == EP_SLOT_RUNNER && slot->state == EP_SLOT_STARTING &&
			now - slot->allocated_at > (TimestampTz) EP_RUNNER_START_MS * 1000)
			slot->state = EP_SLOT_FREE;
	}
	SpinLockRelease(&bgw_shared->mutex);
}

static void
launcher_start_worker(LauncherDb *entry, TimestampTz now)
{
	BackgroundWorker bgw;
	EpBgwExtra	extra;
	MemoryContext oldcxt;
	uint64		generation;
	int			slot;
	bool		ok;

	slot = ep_bgw_alloc_slot(EP_SLOT_WORKER, entry->dbid, 0, InvalidOid, &generation);
	if (slot < 0)
	{
		/*
		 * Probes usually wait only a moment for a slot; a database known to
		 * need a worker, or one kept waiting, is reported (once).
		 */
		if (entry->waiting_since == 0)
			entry->waiting_since = now;
		if (!entry->warned &&
			(entry->status == EP_DB_PRESENT || entry->recheck ||
			 TimestampDifferenceExceeds(entry->waiting_since, now, 10000)))
			{
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("event_patterns cannot start a worker for database %u", entry->dbid),
					 errdetail("All %d slots of event_patterns.max_workers are in use.",
							   ep_guc_max_workers),
					 errhint("Increase event_patterns.max_workers and restart the server.")));
			entry->warned = true;
		}
		return;
	}

	memset(&extra, 0, sizeof(extra));
	extra.dbid = entry->dbid;
	extra.slot = slot;
	extra.generation = generation;
	ep_bgw_fill_worker(&bgw, "ep_worker_main", EP_APPNAME_WORKER, &extra);

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	ok = RegisterDynamicBackgroundWorker(&bgw, &entry->handle);
	MemoryContextSwitchTo(oldcxt);
	if (!ok)
	{
		ep_bgw_release_unstarted(slot, generation);
		entry->handle = NULL;
		entry->failures++;
		entry->restart_at = TimestampTzPlusMilliseconds(now, backoff_ms(entry->failures));
		if (!entry->warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("event_patterns could not register a worker for database %u", entry->dbid),
					 errhint("Increase max_worker_processes.")));
		entry->warned = true;
		return;
	}
	entry->warned = false;
	entry->waiting_since = 0;
	entry->slot = slot;
	entry->generation = generation;
	entry->started_at = now;
	entry->recheck = false;
}

/* Start the workers that are due; returns how long to sleep (ms). */
static long
launcher_start_workers(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	LauncherDb *entry;
	long		timeout = ep_guc_naptime_ms;

	hash_seq_init(&seq, launcher_dbs);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->handle != NULL || entry->status == EP_DB_ABSENT ||
			!entry->seen || !ep_guc_enabled || db_paused(entry->dbid))
			continue;
		if (entry->restart_at > now)
		{
			long		ms = (long) ((entry->restart_at - now) / 1000) + 1;

			timeout = Min(timeout, ms);
			continue;
		}
		launcher_start_worker(entry, now);
	}
	return Max(timeout, 1);
}

void
ep_launcher_main(Datum main_arg)
{
	HASHCTL		ctl;
	TimestampTz last_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname(EP_APPNAME_LAUNCHER);

	SpinLockAcquire(&bgw_shared->mutex);
	bgw_shared->launcher_pid = MyProcPid;
	bgw_shared->launcher_latch = MyLatch;
	SpinLockRelease(&bgw_shared->mutex);
	on_shmem_exit(launcher_on_exit, (Datum) 0);
	launcher_take_over();

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(LauncherDb);
	launcher_dbs = hash_create("event_patterns launcher databases", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS);

	for (;;)
	{
		TimestampTz now;
		bool		rescan;
		long		timeout;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		rescan = launcher_take_notes();
		rescan |= launcher_reap(now);
		if (rescan || last_scan == 0 ||
			TimestampDifferenceExceeds(last_scan, now, EP_RESCAN_INTERVAL_MS))
		{
			launcher_scan_databases();
			last_scan = now;
		}
		launcher_gc_runner_slots(now);
		timeout = launcher_start_workers(now);

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	}

	/* exit code 1: the postmaster starts the launcher again unless shutting down */
	proc_exit(1);
}

/*
 * Called from _PG_init while the library is preloaded: register the
 * launcher and install the utility hook.
 */
void
ep_launcher_init(void)
{
	BackgroundWorker bgw;

	/* pg_upgrade's servers must not run anything on their own */
	if (IsBinaryUpgrade)
		return;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	strlcpy(bgw.bgw_library_name, "event_patterns", BGW_MAXLEN);
	strlcpy(bgw.bgw_function_name, "ep_launcher_main", BGW_MAXLEN);
	strlcpy(bgw.bgw_name, EP_APPNAME_LAUNCHER, BGW_MAXLEN);
	strlcpy(bgw.bgw_type, EP_APPNAME_LAUNCHER, BGW_MAXLEN);
	RegisterBackgroundWorker(&bgw);

	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = ep_bgw_process_utility;
}
