/*
 * worker_stub.c
 *	  TEMPORARY stand-ins for the background-worker runtime (launcher.c,
 *	  worker.c) so that the projections branch links and can be tested
 *	  through ep.apply_projections(). Delete this file (and its line in
 *	  OBJS) when the runtime is merged.
 *
 * For manual testing only: when the server is started with the environment
 * variable EP_STUB_WORKER_DB=<database>, one static background worker
 * connects to that database and calls the registered steps in a loop.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "worker.h"

PGDLLEXPORT void ep_stub_worker_main(Datum arg);

static EpWorkerStep stub_steps[8];
static int	stub_nsteps = 0;

void
ep_worker_register_step(const char *name, EpWorkerStep step)
{
	BackgroundWorker worker;

	if (stub_nsteps < 8)
		stub_steps[stub_nsteps++] = step;
	if (getenv("EP_STUB_WORKER_DB") == NULL || stub_nsteps > 1)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "event_patterns");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "ep_stub_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "event_patterns stub worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "event_patterns stub worker");
	RegisterBackgroundWorker(&worker);
}

void
ep_worker_wake(Oid dbid)
{
}

void
ep_stub_worker_main(Datum arg)
{
	MemoryContext cxt;

	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(getenv("EP_STUB_WORKER_DB"), NULL, 0);
	cxt = AllocSetContextCreate(TopMemoryContext, "stub worker", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		bool		more = false;
		int			i;

		MemoryContextSwitchTo(cxt);
		for (i = 0; i < stub_nsteps; i++)
			more |= stub_steps[i] ();
		MemoryContextReset(cxt);
		if (!more)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 200, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
