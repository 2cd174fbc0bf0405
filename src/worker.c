/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The per-database event_patterns worker: the loop that runs the steps
 *	  features register (worker.h) and the job scheduler, and ep.workers.
 *
 * One worker runs per database where the extension is installed; the
 * launcher starts it (launcher.c). Each round of its loop calls every
 * registered step, then the scheduler, outside any transaction, in a
 * memory context that is reset after the round; when no step reports more
 * work it sleeps on its latch, which commits that append events or change
 * jobs set (ep_worker_wake), for at most event_patterns.naptime, or less
 * when a job falls due sooner. Rounds that no step asked for start at
 * least 5 ms apart, so a burst of commits costs one round, not one each.
 * The worker is also the database's notifier (notify.c): the first thing
 * after every wake-up, and before every step, it sends one NOTIFY ep_events
 * for the appending commits counted since the last one.
 *
 * Signals: SIGHUP reloads the configuration between rounds. SIGTERM asks
 * the worker to leave: between rounds it exits at once (exit code 0);
 * during a round it interrupts the work in progress the way a backend's
 * die() does, so a long step or job cannot hold up DROP DATABASE or a
 * shutdown. Postmaster death ends the wait (WL_EXIT_ON_PM_DEATH).
 *
 * An error that escapes a step ends the process (steps catch their own
 * errors); the launcher starts a new worker with backoff.
 *
 * The worker leaves by itself when the extension is no longer installed,
 * when event_patterns.enabled is turned off, when its database is paused
 * (DROP DATABASE and friends, see launcher.c) and on a standby (the
 * launcher runs only once recovery has finished, so this is a guard).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "launcher.h"
#include "notify.h"
#include "worker.h"

#define EP_MAX_STEPS				16
#define EP_EXTENSION_CHECK_MS		10000
#define EP_SCHEDULER_FORCE_MS		60000
#define EP_MIN_ROUND_GAP_MS			5	/* coalesce wake-ups from busy commits */

typedef struct EpStep
{
	char		name[NAMEDATALEN];
	EpWorkerStep step;
} EpStep;

/* registered in the postmaster while preloading; inherited by fork */
static EpStep steps[EP_MAX_STEPS];
static int	nsteps = 0;

/* true in the per-database worker process */
bool		ep_worker_am_worker = false;

static volatile sig_atomic_t got_sigterm = false;
static volatile sig_atomic_t in_work = false;

void
ep_worker_register_step(const char *name, EpWorkerStep step)
{
	if (!process_shared_preload_libraries_in_progress)
		elog(ERROR, "event_patterns worker steps must be registered while the library is preloaded");
	if (nsteps >= EP_MAX_STEPS)
		elog(ERROR, "too many event_patterns worker steps");
	strlcpy(steps[nsteps].name, name, NAMEDATALEN);
	steps[nsteps].step = step;
	nsteps++;
}

/* earliest wake-up the steps of the current round asked for (0: none) */
static TimestampTz steps_due = 0;

/*
 * Called by a step with work due later (a saga's retry or deadline): the
 * worker starts its next round no later than at. Valid for the current
 * round only.
 */
void
ep_worker_due_at(TimestampTz at)
{
	if (steps_due == 0 || at < steps_due)
		steps_due = at;
}

/*
 * Called by a step that polls (async views follow the WAL, which commits of
 * other sessions do not announce): the next round starts within ms
 * milliseconds.
 */
void
ep_worker_request_round(long ms)
{
	ep_worker_due_at(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Max(ms, 1)));
}

void
ep_worker_wake(Oid dbid)
{
	ep_bgw_wake_db(dbid, false);
}

static void
ep_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	if (in_work && !proc_exit_inprogress)
	{
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
worker_leave(EpWorkerSlot *slot, EpExitReason reason)
{
	ep_notify_worker_leave();
	ep_bgw_set_exit_reason(slot, reason);
	if (reason == EP_EXIT_NO_EXTENSION)
		ereport(DEBUG1,
				(errmsg("event_patterns is not installed in database %u; worker leaves",
						MyDatabaseId)));
	proc_exit(0);
}

static bool
extension_installed(void)
{
	bool		installed;

	ep_bgw_start_xact();
	installed = OidIsValid(get_extension_oid("event_patterns", true));
	CommitTransactionCommand();
	return installed;
}

void
ep_worker_main(Datum main_arg)
{
	EpWorkerSlot *slot;
	MemoryContext round_cxt;
	TimestampTz last_check;
	TimestampTz last_forced = 0;
	TimestampTz last_round = 0;
	bool		more = false;
	TimestampTz next_due = 0;
	bool		paused;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, ep_worker_sigterm);
	BackgroundWorkerUnblockSignals();

	slot = ep_bgw_attach(EP_SLOT_WORKER, &paused);
	if (paused || !ep_guc_enabled)
		worker_leave(slot, EP_EXIT_STOPPED);

	BackgroundWorkerInitializeConnectionByOid(slot->dbid, InvalidOid, 0);
	ep_worker_am_worker = true;
	pgstat_report_appname(EP_APPNAME_WORKER);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);

	if (RecoveryInProgress())
		worker_leave(slot, EP_EXIT_STOPPED);
	if (!extension_installed())
		worker_leave(slot, EP_EXIT_NO_EXTENSION);
	last_check = GetCurrentTimestamp();
	ep_notify_worker_start();

	round_cxt = AllocSetContextCreate(TopMemoryContext,
									  "event_patterns worker round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		bool		forced;
		long		timeout;
		long		notify_ms;
		long		wait_ms;
		int			i;

		/*
		 * A busy database sets the latch at every commit; rounds that were
		 * not asked for by a step are at least EP_MIN_ROUND_GAP_MS apart, so
		 * a burst of commits costs one round, not one per commit.
		 */
		if (!more && last_round != 0 && !got_sigterm)
		{
			long		secs;
			int			usecs;
			long		gap_ms;

			/* commits still get their notification at once (notify.c) */
			for (;;)
			{
				TimestampDifference(last_round, GetCurrentTimestamp(), &secs, &usecs);
				gap_ms = secs * 1000 + usecs / 1000;
				if (gap_ms >= EP_MIN_ROUND_GAP_MS || got_sigterm)
					break;
				ResetLatch(MyLatch);
				notify_ms = ep_notify_step();
				wait_ms = EP_MIN_ROUND_GAP_MS - gap_ms;
				/*
				 * A deferred notification covers every commit until it is
				 * sent: no need to wake for them meanwhile.
				 */
				if (notify_ms >= 0)
					(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 Min(wait_ms, Max(notify_ms, 1)), PG_WAIT_EXTENSION);
				else if (!ep_notify_wants_wakeups())
					(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 wait_ms, PG_WAIT_EXTENSION);
				else
					(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
									 wait_ms, PG_WAIT_EXTENSION);
			}
		}
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (got_sigterm)
			worker_leave(slot, ep_bgw_stop_requested(slot) ?
						 EP_EXIT_STOPPED : EP_EXIT_UNEXPECTED);
		if (!ep_guc_enabled || ep_bgw_stop_requested(slot))
			worker_leave(slot, EP_EXIT_STOPPED);

		now = GetCurrentTimestamp();
		if (TimestampDifferenceExceeds(last_check, now, EP_EXTENSION_CHECK_MS))
		{
			if (!extension_installed())
				worker_leave(slot, EP_EXIT_NO_EXTENSION);
			last_check = now;
		}

		last_round = now;
		more = false;
		in_work = true;
		/* a SIGTERM that came before in_work was set is honoured now */
		if (got_sigterm)
			worker_leave(slot, ep_bgw_stop_requested(slot) ?
						 EP_EXIT_STOPPED : EP_EXIT_UNEXPECTED);
		ep_bgw_set_state(slot, EP_SLOT_BUSY);
		steps_due = 0;
		for (i = 0; i < nsteps; i++)
		{
			MemoryContextSwitchTo(round_cxt);
			/* listeners first: before every step, which may take a while */
			(void) ep_notify_step();
			pgstat_report_activity(STATE_RUNNING, steps[i].name);
			if (steps[i].step())
				more = true;
		}
		notify_ms = ep_notify_step();

		MemoryContextSwitchTo(round_cxt);
		forced = ep_bgw_take_jobs_dirty(slot) ||
			TimestampDifferenceExceeds(last_forced, now, EP_SCHEDULER_FORCE_MS);
		if (forced)
			last_forced = now;
		pgstat_report_activity(STATE_RUNNING, "scheduler");
		if (ep_scheduler_round(&next_due, forced))
			more = true;
		in_work = false;

		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);
		ep_bgw_set_state(slot, EP_SLOT_IDLE);
		pgstat_report_activity(STATE_IDLE, NULL);
		pgstat_report_stat(false);

		if (more)
			continue;

		timeout = ep_guc_naptime_ms;
		if (notify_ms >= 0)
			timeout = Min(timeout, notify_ms);
		now = GetCurrentTimestamp();
		if (next_due > now)
		{
			long		ms = (long) ((next_due - now) / 1000) + 1;

			timeout = Min(timeout, ms);
		}
		if (steps_due != 0)
		{
			long		ms = steps_due > now ? (long) ((steps_due - now) / 1000) + 1 : 1;

			timeout = Min(timeout, ms);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(timeout, 1), PG_WAIT_EXTENSION);
	}
}

/* ------------------------------------------------------------------------
 * ep.workers
 * ------------------------------------------------------------------------
 */
static const char *
slot_state_name(EpSlotState state)
{
	switch (state)
	{
		case EP_SLOT_STARTING:
			return "starting";
		case EP_SLOT_IDLE:
			return "idle";
		case EP_SLOT_BUSY:
			return "running";
		case EP_SLOT_STOPPING:
			return "stopping";
		default:
			return "stopped";
	}
}

PG_FUNCTION_INFO_V1(ep_workers);
Datum
ep_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EpWorkerSlot slots[16];
	char	   *dbname;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	n = ep_bgw_snapshot_workers(MyDatabaseId, slots, lengthof(slots));
	if (n == 0)
		return (Datum) 0;
	dbname = get_database_name(MyDatabaseId);

	for (i = 0; i < n; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		values[0] = DirectFunctionCall1(namein, CStringGetDatum(dbname ? dbname : ""));
		if (slots[i].pid != 0)
			values[1] = Int32GetDatum((int32) slots[i].pid);
		else
			nulls[1] = true;
		if (slots[i].started_at != 0)
			values[2] = TimestampTzGetDatum(slots[i].started_at);
		else
			nulls[2] = true;
		values[3] = CStringGetTextDatum(slot_state_name(slots[i].state));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* ep._worker_runtime_loaded(): is there a launcher to run jobs at all? */
PG_FUNCTION_INFO_V1(ep_worker_runtime_loaded);
Datum
ep_worker_runtime_loaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ep_bgw_shmem_available());
}
