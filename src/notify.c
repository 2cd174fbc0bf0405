/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  NOTIFY ep_events after every appending commit, without serializing
 *	  the commits (event_patterns.notify).
 *
 * PostgreSQL serializes the commits of all transactions that queued a
 * NOTIFY (PreCommit_Notify takes a database-wide lock held until the commit
 * record is flushed), so a NOTIFY sent by every appending transaction costs
 * a large share of append throughput under concurrency. The modes:
 *	- worker (default): the appending transaction does not notify when the
 *	  database's worker serves as its notifier; after its commit it counts
 *	  itself in shared memory and wakes the worker, which sends one NOTIFY
 *	  ep_events per wake-up covering every commit counted so far. When no
 *	  worker serves (event_patterns.enabled off, the worker not running
 *	  yet, or leaving) the transaction notifies by itself, as in commit
 *	  mode, so a listener is woken after every appending commit either way.
 *	- commit: every appending transaction sends NOTIFY ep_events itself.
 *	- off: nobody is told.
 *
 * The hand-over protocol, per database (one EpNotifyDb entry):
 *	- notifier: pid of the worker serving as notifier, 0 when none. Only
 *	  that worker sets and clears it.
 *	- inflight: transactions that decided, before commit, to rely on the
 *	  worker and have not yet been counted (or aborted).
 *	- commits: appending commits that relied on the worker.
 * A committing backend (XACT_EVENT_PRE_COMMIT, before PreCommit_Notify)
 * increments inflight, then reads notifier: if it is 0 it takes the
 * increment back and queues its own NOTIFY. Otherwise, after its commit is
 * visible (XACT_EVENT_COMMIT) it increments commits, then decrements
 * inflight, then sets the worker's latch (launcher.c, ep_bgw_at_xact_end).
 * A worker that leaves first clears notifier, then waits for inflight to
 * drain, then sends a last NOTIFY if commits moved since its last one: every
 * transaction either saw notifier = 0 and notified itself, or was counted
 * before that last check (both sides write, then a full barrier, then read
 * the other's variable). A worker ended by an error clears notifier from
 * its exit callback without the last NOTIFY; its successor sends one at its
 * first round.
 *
 * Nobody listening, nothing to send: backends count themselves in
 * listeners when they run LISTEN ep_events (utility hook, before the LISTEN
 * commits) and uncount at exit; the worker reads commits, then listeners,
 * and skips the NOTIFY when there are none, so a database whose events
 * nobody listens for costs the worker no transactions. A listener counted
 * after that read commits its LISTEN, and then reads, after those commits
 * were visible; every later commit finds it counted. (Each NOTIFY of the
 * worker is a transaction with an xid; with listeners, at most one per
 * millisecond and never more than the appending transactions themselves.)
 *
 * Locking: the entry table's keys are set under a spinlock; the values are
 * atomics. With more databases than entries, appenders notify by
 * themselves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "notify.h"
#include "shmem.h"

#define EP_NOTIFY_MAX_DBS		256
#define EP_NOTIFY_DRAIN_MS		5000	/* longest wait for in-flight commits */
#define EP_NOTIFY_MIN_GAP_US	1000	/* between two NOTIFYs of the worker */

typedef struct EpNotifyDb
{
	Oid			dbid;			/* InvalidOid: unused */
	pg_atomic_uint32 notifier;	/* pid of the serving worker, 0 = none */
	pg_atomic_uint32 inflight;	/* committing transactions relying on it */
	pg_atomic_uint64 commits;	/* appending commits that relied on it */
	pg_atomic_uint32 listeners; /* backends that ran LISTEN ep_events */
} EpNotifyDb;

typedef struct EpNotifyShared
{
	slock_t		mutex;			/* protects ndbs and the dbid keys */
	int			ndbs;
	EpNotifyDb	dbs[EP_NOTIFY_MAX_DBS];
} EpNotifyShared;

static EpNotifyShared *notify_shared = NULL;

/* backend-local state */
static EpNotifyDb *my_entry = NULL;
static bool appended_in_xact = false;	/* worker mode: notify at pre-commit */
static bool relying_on_worker = false;	/* counted in inflight */
static bool counted_listener = false;	/* counted in listeners */

/* worker-local state */
static bool serving = false;
static uint64 notified_commits = 0;
static TimestampTz last_sent = 0;

Size
ep_notify_shmem_size(void)
{
	return sizeof(EpNotifyShared);
}

void
ep_notify_shmem_init(void)
{
	bool		found;

	notify_shared = ShmemInitStruct("event_patterns notify",
									ep_notify_shmem_size(), &found);
	if (!found)
	{
		int			i;

		SpinLockInit(&notify_shared->mutex);
		notify_shared->ndbs = 0;
		for (i = 0; i < EP_NOTIFY_MAX_DBS; i++)
		{
			notify_shared->dbs[i].dbid = InvalidOid;
			pg_atomic_init_u32(&notify_shared->dbs[i].notifier, 0);
			pg_atomic_init_u32(&notify_shared->dbs[i].inflight, 0);
			pg_atomic_init_u64(&notify_shared->dbs[i].commits, 0);
			pg_atomic_init_u32(&notify_shared->dbs[i].listeners, 0);
		}
	}
}

/* This database's entry, created on first use; NULL when the table is full. */
static EpNotifyDb *
ep_notify_entry(void)
{
	int			i;

	if (my_entry != NULL || notify_shared == NULL)
		return my_entry;
	SpinLockAcquire(&notify_shared->mutex);
	for (i = 0; i < notify_shared->ndbs; i++)
	{
		if (notify_shared->dbs[i].dbid == MyDatabaseId)
		{
			my_entry = &notify_shared->dbs[i];
			break;
		}
	}
	if (my_entry == NULL && notify_shared->ndbs < EP_NOTIFY_MAX_DBS)
	{
		my_entry = &notify_shared->dbs[notify_shared->ndbs++];
		my_entry->dbid = MyDatabaseId;
	}
	SpinLockRelease(&notify_shared->mutex);
	return my_entry;
}

/* ---------------------------------------------------------------------
 * Appending transactions
 * ---------------------------------------------------------------------
 */

/*
 * An append wrote events. In commit mode the NOTIFY is queued at once
 * (Async_Notify folds duplicates, and a rolled-back subtransaction takes
 * its queued notification with it); in worker mode the decision waits for
 * the pre-commit step.
 */
void
ep_notify_appended(void)
{
	if (ep_guc_notify == EP_NOTIFY_COMMIT)
		Async_Notify(EP_NOTIFY_CHANNEL, NULL);
	else if (ep_guc_notify == EP_NOTIFY_WORKER)
		appended_in_xact = true;
}

/*
 * XACT_EVENT_PRE_COMMIT (before PreCommit_Notify): rely on the worker if
 * one serves this database, otherwise queue the NOTIFY ourselves.
 */
void
ep_notify_pre_commit(void)
{
	EpNotifyDb *e;

	if (!appended_in_xact)
		return;
	appended_in_xact = false;
	e = ep_notify_entry();
	if (e != NULL && pg_atomic_read_u32(&e->notifier) != 0)
	{
		pg_atomic_fetch_add_u32(&e->inflight, 1);	/* a full barrier */
		if (pg_atomic_read_u32(&e->notifier) != 0)
		{
			relying_on_worker = true;
			return;
		}
		pg_atomic_fetch_sub_u32(&e->inflight, 1);
	}
	Async_Notify(EP_NOTIFY_CHANNEL, NULL);
}

/*
 * Transaction end: count a commit that relied on the worker, before the
 * caller wakes it. Returns true when the worker must be woken.
 */
bool
ep_notify_xact_end(bool committed)
{
	bool		wake = false;

	appended_in_xact = false;
	if (relying_on_worker)
	{
		if (committed)
		{
			pg_atomic_fetch_add_u64(&my_entry->commits, 1);
			wake = true;
		}
		pg_atomic_fetch_sub_u32(&my_entry->inflight, 1);
		relying_on_worker = false;
	}
	return wake;
}

/* ---------------------------------------------------------------------
 * Listeners
 * ---------------------------------------------------------------------
 */
static void
ep_notify_listener_exit(int code, Datum arg)
{
	if (counted_listener && my_entry != NULL)
		pg_atomic_fetch_sub_u32(&my_entry->listeners, 1);
	counted_listener = false;
}

/*
 * LISTEN (from the utility hook, before the statement runs): count this
 * backend as a listener of ep_events in its database until it exits
 * (UNLISTEN does not uncount it: counting too many only costs a NOTIFY).
 */
void
ep_notify_listen(const char *channel)
{
	EpNotifyDb *e;

	if (counted_listener || channel == NULL ||
		strcmp(channel, EP_NOTIFY_CHANNEL) != 0)
		return;
	e = ep_notify_entry();
	if (e == NULL)
		return;
	before_shmem_exit(ep_notify_listener_exit, (Datum) 0);
	pg_atomic_fetch_add_u32(&e->listeners, 1);	/* a full barrier */
	counted_listener = true;
}

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

/*
 * One NOTIFY in a transaction of its own. PreCommit_Notify assigns it an
 * xid, so it writes a commit record: it need not wait for that record to
 * be flushed (nothing is lost in a crash but a wake-up of listeners whose
 * connections die with the server), which keeps the worker's
 * notifications from queueing behind the appenders' WAL flushes.
 */
static void
ep_notify_send(void)
{
	StartTransactionCommand();
	(void) set_config_option("synchronous_commit", "off",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
	Async_Notify(EP_NOTIFY_CHANNEL, NULL);
	CommitTransactionCommand();
}

static void
ep_notify_stop_serving(void)
{
	uint32		me = (uint32) MyProcPid;

	if (!serving)
		return;
	serving = false;
	(void) pg_atomic_compare_exchange_u32(&my_entry->notifier, &me, 0);
	pg_memory_barrier();
}

static void
ep_notify_on_exit(int code, Datum arg)
{
	ep_notify_stop_serving();
}

/*
 * The worker serves as this database's notifier from now on. Commits
 * counted before (by a predecessor that ended without its last NOTIFY) are
 * announced at the first step.
 */
void
ep_notify_worker_start(void)
{
	EpNotifyDb *e = ep_notify_entry();

	if (e == NULL || serving)
		return;
	notified_commits = 0;
	before_shmem_exit(ep_notify_on_exit, (Datum) 0);
	pg_atomic_write_u32(&e->notifier, (uint32) MyProcPid);
	pg_memory_barrier();
	serving = true;
}

/*
 * Called by the worker outside any transaction, first thing after each
 * wake-up and between the steps of a round: one NOTIFY for every commit
 * counted since the last one. Cheap when nothing happened (one atomic
 * read). NOTIFYs are at least EP_NOTIFY_MIN_GAP_US apart, so a busy
 * database costs the worker at most a few hundred small transactions a
 * second; returns the milliseconds the worker may sleep before it must
 * call again (-1: nothing pending).
 */
long
ep_notify_step(void)
{
	uint64		now;
	TimestampTz ts;

	if (!serving)
		return -1;
	now = pg_atomic_read_u64(&my_entry->commits);
	if (now == notified_commits)
		return -1;
	/* nobody listens: nobody to wake (see the header comment) */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&my_entry->listeners) == 0)
	{
		notified_commits = now;
		return -1;
	}
	ts = GetCurrentTimestamp();
	if (last_sent != 0 && ts - last_sent < EP_NOTIFY_MIN_GAP_US)
		return (long) ((EP_NOTIFY_MIN_GAP_US - (ts - last_sent) + 999) / 1000);
	notified_commits = now;
	last_sent = ts;
	ep_notify_send();
	return -1;
}

/*
 * Does the worker need to be woken by each commit for the notifications?
 * Only while it serves and somebody listens; otherwise its rounds may
 * coalesce commits as they always did.
 */
bool
ep_notify_wants_wakeups(void)
{
	return serving && pg_atomic_read_u32(&my_entry->listeners) != 0;
}

/*
 * The worker leaves (outside any transaction): hand the duty back to the
 * appending transactions, wait for the ones that already relied on us, and
 * announce what they committed.
 */
void
ep_notify_worker_leave(void)
{
	TimestampTz start;

	if (!serving)
		return;
	ep_notify_stop_serving();
	start = GetCurrentTimestamp();
	while (pg_atomic_read_u32(&my_entry->inflight) != 0 &&
		   !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), EP_NOTIFY_DRAIN_MS))
		pg_usleep(1000L);
	pg_memory_barrier();
	if (pg_atomic_read_u64(&my_entry->commits) != notified_commits &&
		pg_atomic_read_u32(&my_entry->listeners) != 0)
	{
		notified_commits = pg_atomic_read_u64(&my_entry->commits);
		ep_notify_send();
	}
}
