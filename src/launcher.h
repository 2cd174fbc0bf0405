/*
 * launcher.h
 *	  Internal interface of the background-worker runtime: the shared
 *	  registry of worker processes (launcher.c), the per-database worker
 *	  (worker.c) and the job scheduler with its job-runner processes
 *	  (scheduler.c). Features use worker.h instead.
 *
 * The registry is an array of slots in shared memory guarded by one
 * spinlock (every critical section copies or sets a few fields, nothing
 * more). A slot describes one process the runtime started: a per-database
 * worker (started by the launcher) or a job runner (started by a worker).
 * Slots carry a generation number so that a process whose slot was given
 * up and reused by someone else notices and leaves.
 */
#ifndef EP_LAUNCHER_H
#define EP_LAUNCHER_H

#include "postgres.h"

#include "access/xact.h"
#include "datatype/timestamp.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/spin.h"

typedef enum EpSlotKind
{
	EP_SLOT_WORKER = 1,			/* one per database, started by the launcher */
	EP_SLOT_RUNNER				/* one per job run, started by a worker */
} EpSlotKind;

typedef enum EpSlotState
{
	EP_SLOT_FREE = 0,
	EP_SLOT_STARTING,			/* registered with the postmaster, not attached */
	EP_SLOT_IDLE,				/* attached, waiting on its latch */
	EP_SLOT_BUSY,				/* attached, doing work */
	EP_SLOT_STOPPING,			/* asked to stop */
	EP_SLOT_EXITED				/* process gone; its starter frees the slot */
} EpSlotState;

typedef enum EpExitReason
{
	EP_EXIT_UNEXPECTED = 0,		/* error, crash, pg_terminate_backend */
	EP_EXIT_NO_EXTENSION,		/* the extension is not installed there */
	EP_EXIT_STOPPED				/* asked to stop: paused database, disabled */
} EpExitReason;

typedef struct EpWorkerSlot
{
	EpSlotKind	kind;
	EpSlotState state;
	Oid			dbid;
	uint64		generation;
	pid_t		pid;			/* 0 until attached and after exit */
	Latch	   *latch;
	TimestampTz allocated_at;
	TimestampTz started_at;
	EpExitReason exit_reason;
	bool		stop_requested;
	bool		jobs_dirty;		/* job registry changed since the last look */
	int64		job_id;			/* runners: the job being run */
	Oid			owner;			/* job runners: the role the job runs as */
} EpWorkerSlot;

/* What the launcher passes to the processes it starts (bgw_extra). */
typedef struct EpBgwExtra
{
	Oid			dbid;
	int			slot;
	uint64		generation;
	int64		job_id;			/* runners only */
	int64		run_id;			/* runners only */
	Oid			owner;			/* job runners: the role to connect as */
	bool		owner_login;	/* job runners: the owner has LOGIN */
} EpBgwExtra;

/* launcher.c: the registry */
extern EpWorkerSlot *ep_bgw_attach(EpSlotKind kind, bool *paused);
extern void ep_bgw_set_state(EpWorkerSlot *slot, EpSlotState state);
extern void ep_bgw_set_exit_reason(EpWorkerSlot *slot, EpExitReason reason);
extern bool ep_bgw_stop_requested(EpWorkerSlot *slot);
extern bool ep_bgw_take_jobs_dirty(EpWorkerSlot *slot);
extern bool ep_bgw_shmem_available(void);
extern void ep_bgw_wake_db(Oid dbid, bool jobs);
extern int	ep_bgw_snapshot_workers(Oid dbid, EpWorkerSlot *out, int max);
extern int	ep_bgw_free_runner_slots(void);
extern int	ep_bgw_alloc_slot(EpSlotKind kind, Oid dbid, int64 job_id,
							  Oid owner, uint64 *generation);
extern int	ep_bgw_runners_of(Oid owner);
extern void ep_bgw_release_unstarted(int slot, uint64 generation);
extern void ep_bgw_fill_worker(BackgroundWorker *bgw, const char *function,
							   const char *type, const EpBgwExtra *extra);

/* launcher.c: hooks */
extern void ep_launcher_init(void);
extern void ep_bgw_at_xact_end(XactEvent event, bool appended);
extern void ep_bgw_note_jobs_changed(void);

/* worker.c */
extern PGDLLEXPORT void ep_worker_main(Datum main_arg);
extern bool ep_worker_am_worker;

/* scheduler.c */
extern bool ep_scheduler_round(TimestampTz *next_due, bool forced);
extern PGDLLEXPORT void ep_job_runner_main(Datum main_arg);

/* projection.c */
extern PGDLLEXPORT void ep_projection_runner_main(Datum main_arg);

/*
 * Background workers start their own transactions: set the statement start
 * time first, or now() would stay at the time the process started.
 */
static inline void
ep_bgw_start_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
}

#define EP_APPNAME_LAUNCHER	"event_patterns launcher"
#define EP_APPNAME_WORKER	"event_patterns worker"
#define EP_APPNAME_RUNNER	"event_patterns job"
#define EP_APPNAME_PROJ_RUNNER	"event_patterns projection runner"

#endif							/* EP_LAUNCHER_H */
