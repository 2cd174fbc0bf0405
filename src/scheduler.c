/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The job scheduler of the per-database worker, and the job runner:
 *	  the short-lived background worker that runs one run of one job.
 *
 * Jobs live in ep.job_registry (src/sql/30_jobs.sql). Each scheduler round
 * (a single transaction in the worker) picks the due jobs, marks each
 * 'running', records a 'running' row in ep.job_run_log and, after commit,
 * starts a job runner for each. The runner connects to the database *as the
 * job's owner* (a role without LOGIN: the runner connects as the bootstrap
 * superuser and makes the owner its session user before it reads anything),
 * runs the job's command in its own transaction through the owner primitive
 * (owner.c: security-restricted, the search_path recorded when the job was
 * scheduled, the job's time limit) and commits as the owner: nothing of the
 * job, deferred triggers included, ever runs with more than its owner's
 * rights. The extension's own bookkeeping runs as the extension owner with
 * every name qualified. It catches any error and records the outcome:
 * ep.job_run_log gets status and message,
 * ep.job_registry gets last_status/last_error/failures and the next run
 * time from ep._job_next_run() (exponential backoff after failures; a job
 * that is late, say after the clock jumped forward, runs once and is then
 * rescheduled from now).
 *
 * Why every job runs in its own process: jobs run user-defined SQL of any
 * length (a full view recompute, a scavenge of a large store). Run in the
 * worker, a long job would stall the decoder and every other job, and
 * whatever a job leaves in its session (SET, temporary tables, advisory
 * locks, LISTEN) would leak into the worker and into later jobs. A process
 * per run costs a few milliseconds, which is nothing next to schedules of
 * a second or more, and it makes the rules simple: the scheduler never
 * runs user code, and a job that hangs or crashes affects only itself.
 * At most event_patterns.max_job_workers runners run at once (cluster-wide),
 * and at most event_patterns.max_job_workers_per_role of one role, so one
 * role's slow jobs cannot take every runner; due jobs wait for a free one.
 * Every run has a time limit: the job's own (ep.schedule_job's time_limit),
 * else event_patterns.handler_timeout for custom jobs and at least an hour
 * for the extension's own kinds (refreshes of large views, scavenging).
 *
 * One run of a job at a time: a job marked 'running' is never picked; the
 * runner also holds a session-level advisory lock on the job (lock class
 * "EP", field4 0x4550) for its whole life. A run whose runner disappeared
 * (crash, SIGTERM, worker restart) is found by the scheduler: the job is
 * 'running', no runner of this worker is running it and the lock is free;
 * the run is then recorded as failed and the job backs off. The scheduler
 * takes that lock as a transaction lock, so a late runner waits and then
 * sees that its run is no longer 'running' and leaves.
 *
 * ep.job_run_log is pruned once a minute through ep._prune_job_runs()
 * (the last 1000 runs per job, at most 7 days).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "launcher.h"
#include "owner.h"

#define EP_JOB_LOCK_FIELD4		0x4550	/* "EP" */
#define EP_PRUNE_INTERVAL_MS	60000
#define EP_INTERNAL_JOB_MIN_LIMIT_MS	(3600 * 1000)

typedef struct EpRunner
{
	int64		job_id;
	int			slot;
	uint64		generation;
	BackgroundWorkerHandle *handle;
} EpRunner;

/* runners started by this worker (TopMemoryContext) */
static List *runners = NIL;
static bool recovered = false;
static TimestampTz last_prune = 0;

static const char *finish_sql =
"WITH r AS ("
"  UPDATE ep.job_run_log"
"     SET finished_at = pg_catalog.clock_timestamp(), status = $2, message = $3"
"   WHERE job_id OPERATOR(pg_catalog.=) $1"
"     AND status OPERATOR(pg_catalog.=) 'running'"
"     AND ($4 OPERATOR(pg_catalog.=) 0 OR run_id OPERATOR(pg_catalog.=) $4)"
"  RETURNING run_id)"
" UPDATE ep.job_registry j"
"    SET last_status = $2,"
"        last_error = CASE WHEN $2 OPERATOR(pg_catalog.=) 'failed' THEN $3 END,"
"        failures = CASE WHEN $2 OPERATOR(pg_catalog.=) 'failed'"
"                        THEN j.failures OPERATOR(pg_catalog.+) 1 ELSE 0 END,"
"        next_run_at = ep._job_next_run(j.schedule,"
"                        CASE WHEN $2 OPERATOR(pg_catalog.=) 'failed'"
"                             THEN j.failures OPERATOR(pg_catalog.+) 1 ELSE 0 END,"
"                        j.next_run_at)"
"  WHERE j.job_id OPERATOR(pg_catalog.=) $1";

static void
job_locktag(LOCKTAG *tag, int64 job_id)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (job_id >> 32),
						 (uint32) job_id, EP_JOB_LOCK_FIELD4);
}

/* Record the outcome of a run (run_id 0: whatever run is 'running'). */
static void
record_result(int64 job_id, int64 run_id, bool ok, const char *message)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			ret;

	values[0] = Int64GetDatum(job_id);
	values[1] = CStringGetTextDatum(ok ? "succeeded" : "failed");
	if (message)
		values[2] = CStringGetTextDatum(message);
	else
	{
		values[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	values[3] = Int64GetDatum(run_id);
	ret = SPI_execute_with_args(finish_sql, 4, types, values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "could not record the run of job " INT64_FORMAT ": %s",
			 job_id, SPI_result_code_string(ret));
}

static bool
runner_is_mine(int64 job_id)
{
	ListCell   *lc;

	foreach(lc, runners)
		if (((EpRunner *) lfirst(lc))->job_id == job_id)
			return true;
	return false;
}

/* Forget runners that stopped; true when any did. */
static bool
reap_runners(void)
{
	bool		reaped = false;
	ListCell   *lc;

	foreach(lc, runners)
	{
		EpRunner   *r = (EpRunner *) lfirst(lc);
		BgwHandleStatus status;
		pid_t		pid;

		status = GetBackgroundWorkerPid(r->handle, &pid);
		if (status == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		if (status != BGWH_STOPPED)
			continue;
		ep_bgw_release_unstarted(r->slot, r->generation);
		pfree(r->handle);
		runners = foreach_delete_current(runners, lc);
		pfree(r);
		reaped = true;
	}
	return reaped;
}

/*
 * Runs marked 'running' that nobody is running any more (the runner was
 * killed, or the worker that started it is gone) are recorded as failed.
 */
static void
recover_interrupted_runs(void)
{
	int64	   *ids;
	int			n;
	int			i;

	if (SPI_execute("SELECT job_id FROM ep.job_registry"
					" WHERE last_status OPERATOR(pg_catalog.=) 'running'",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.job_registry");
	n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (i = 0; i < n; i++)
	{
		LOCKTAG		tag;

		if (runner_is_mine(ids[i]))
			continue;
		job_locktag(&tag, ids[i]);
		if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
			continue;			/* a runner holds it: still running */
		record_result(ids[i], 0, false,
					  "the job run was interrupted before it finished");
	}
	pfree(ids);
}

/* Start a runner for a run; false when none could be started. */
static bool
start_runner(int64 job_id, int64 run_id, Oid owner, bool owner_login)
{
	BackgroundWorker bgw;
	BackgroundWorkerHandle *handle;
	EpBgwExtra	extra;
	MemoryContext oldcxt;
	EpRunner   *r;
	uint64		generation;
	int			slot;

	slot = ep_bgw_alloc_slot(EP_SLOT_RUNNER, MyDatabaseId, job_id, owner, &generation);
	if (slot < 0)
		return false;
	memset(&extra, 0, sizeof(extra));
	extra.dbid = MyDatabaseId;
	extra.slot = slot;
	extra.generation = generation;
	extra.job_id = job_id;
	extra.run_id = run_id;
	extra.owner = owner;
	extra.owner_login = owner_login;
	ep_bgw_fill_worker(&bgw, "ep_job_runner_main", EP_APPNAME_RUNNER, &extra);

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&bgw, &handle))
	{
		MemoryContextSwitchTo(oldcxt);
		ep_bgw_release_unstarted(slot, generation);
		return false;
	}
	r = palloc(sizeof(EpRunner));
	r->job_id = job_id;
	r->slot = slot;
	r->generation = generation;
	r->handle = handle;
	runners = lappend(runners, r);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/*
 * One round of the scheduler. Without "forced", the round does nothing
 * unless a runner stopped or a job is due by *next_due, which it updates.
 * Returns false: due jobs that found no free runner wait for a runner to
 * finish (its exit sets the worker's latch) or for the next naptime, never
 * in a busy loop.
 */
bool
ep_scheduler_round(TimestampTz *next_due, bool forced)
{
	TimestampTz now = GetCurrentTimestamp();
	int64	   *jobs;
	int64	   *runs;
	Oid		   *owners;
	bool	   *logins;
	int			ndue = 0;
	int			capacity;
	bool		reaped;
	bool		isnull;
	Datum		d;
	int			i;

	reaped = reap_runners();
	if (!forced && !reaped && recovered && now < *next_due)
		return false;

	/* the ids must outlive the transaction: allocate them in the caller's context */
	capacity = ep_bgw_free_runner_slots();
	jobs = palloc(sizeof(int64) * Max(capacity, 1));
	runs = palloc(sizeof(int64) * Max(capacity, 1));
	owners = palloc(sizeof(Oid) * Max(capacity, 1));
	logins = palloc(sizeof(bool) * Max(capacity, 1));

	ep_bgw_start_xact();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());

	if (!recovered || reaped || forced)
	{
		recover_interrupted_runs();
		recovered = true;
	}

	if (TimestampDifferenceExceeds(last_prune, now, EP_PRUNE_INTERVAL_MS))
	{
		/* a next run far in the future means the clock went back: run sooner */
		if (SPI_execute("SELECT ep._reschedule_far_jobs()", false, 0) < 0)
			elog(ERROR, "could not reschedule jobs after a clock change");
		if (SPI_execute("SELECT ep._prune_job_runs()", false, 0) < 0)
			elog(ERROR, "could not prune ep.job_run_log");
		last_prune = now;
	}

	if (capacity > 0)
	{
		Oid			roles[64];
		int			counts[64];
		int			nroles = 0;
		uint64		nrows;
		uint64		row;

		/*
		 * Due jobs in order; a job whose owner already runs its share of
		 * runners waits (it stays due), and so does everything after it of
		 * that owner. The rows skipped stay unlocked for other workers.
		 */
		Oid			perrole_type[1] = {INT4OID};
		Datum		perrole[1] = {Int32GetDatum(ep_guc_max_job_workers_per_role)};

		/*
		 * At most a role's share of its oldest due jobs: a role with
		 * thousands of due jobs cannot push the others' out of the window.
		 */
		if (SPI_execute_with_args("SELECT d.job_id, d.owner, d.role_exists, d.login FROM ("
								  "SELECT j.job_id, j.next_run_at, j.owner::pg_catalog.oid AS owner,"
								  "       r.oid IS NOT NULL AS role_exists,"
								  "       COALESCE(r.rolcanlogin, false) AS login,"
								  "       pg_catalog.row_number() OVER (PARTITION BY j.owner"
								  "           ORDER BY j.next_run_at, j.job_id) AS n"
								  "  FROM ep.job_registry j"
								  "  LEFT JOIN pg_catalog.pg_roles r"
								  "    ON r.oid OPERATOR(pg_catalog.=) j.owner::pg_catalog.oid"
								  " WHERE j.next_run_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
								  "   AND j.last_status IS DISTINCT FROM 'running') d"
								  " WHERE d.n OPERATOR(pg_catalog.<=) $1"
								  " ORDER BY d.next_run_at, d.job_id LIMIT 1000",
								  1, perrole_type, perrole, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the due jobs");
		nrows = SPI_processed;
		for (row = 0; row < nrows && ndue < capacity; row++)
		{
			HeapTuple	tup = SPI_tuptable->vals[row];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			int64		job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			Oid			owner = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
			bool		exists = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
			bool		login = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
			int			k;

			if (exists)
			{
				for (k = 0; k < nroles; k++)
					if (roles[k] == owner)
						break;
				if (k == nroles)
				{
					if (nroles == lengthof(roles))
						continue;	/* enough owners for one round */
					roles[nroles] = owner;
					counts[nroles++] = ep_bgw_runners_of(owner);
				}
				if (counts[k] >= ep_guc_max_job_workers_per_role)
					continue;
				counts[k]++;
			}
			jobs[ndue] = job_id;
			owners[ndue] = exists ? owner : InvalidOid;
			logins[ndue] = login;
			ndue++;
		}
		SPI_freetuptable(SPI_tuptable);

		for (i = 0; i < ndue; i++)
		{
			Oid			t[1] = {INT8OID};
			Datum		v[1] = {Int64GetDatum(jobs[i])};

			/*
			 * Another worker of this database may have taken it meanwhile,
			 * and its owner may hold a lock on the row: skip it then (it
			 * stays due) rather than wait.
			 */
			if (SPI_execute_with_args("UPDATE ep.job_registry j"
									  "   SET last_status = 'running', last_run_at = pg_catalog.now()"
									  "  FROM (SELECT job_id FROM ep.job_registry"
									  "         WHERE job_id OPERATOR(pg_catalog.=) $1"
									  "           AND last_status IS DISTINCT FROM 'running'"
									  "           FOR NO KEY UPDATE SKIP LOCKED) free"
									  " WHERE j.job_id OPERATOR(pg_catalog.=) free.job_id",
									  1, t, v, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not mark job " INT64_FORMAT " running", jobs[i]);
			if (SPI_processed != 1)
			{
				runs[i] = 0;
				continue;
			}
			if (SPI_execute_with_args("INSERT INTO ep.job_run_log (job_id, started_at, status)"
									  " VALUES ($1, pg_catalog.now(), 'running') RETURNING run_id",
									  1, t, v, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
				SPI_processed != 1)
				elog(ERROR, "could not log the run of job " INT64_FORMAT, jobs[i]);
			runs[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1, &isnull));
			/* a job whose owner was dropped fails at once, no process needed */
			if (!OidIsValid(owners[i]))
			{
				record_result(jobs[i], runs[i], false,
							  "the role that owns the job does not exist any more");
				runs[i] = 0;
			}
		}
	}

	if (SPI_execute("SELECT pg_catalog.min(next_run_at) FROM ep.job_registry"
					" WHERE last_status IS DISTINCT FROM 'running'",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the next due job");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	*next_due = isnull ? DT_NOEND : DatumGetTimestampTz(d);

	/*
	 * With every runner busy, due jobs wait for one of ours to finish (that
	 * wakes us) or for the next naptime, not for every wake-up in between.
	 */
	if (capacity == 0)
		*next_due = Max(*next_due,
						TimestampTzPlusMilliseconds(now, ep_guc_naptime_ms));

	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();

	/* start the runners now that their runs are visible */
	for (i = 0; i < ndue; i++)
	{
		if (runs[i] == 0 || start_runner(jobs[i], runs[i], owners[i], logins[i]))
			continue;
		/* lost the race for the last free slot: record it, back off */
		ep_bgw_start_xact();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		record_result(jobs[i], runs[i], false,
					  "no background worker was free to run the job (see event_patterns.max_job_workers, event_patterns.max_job_workers_per_role and max_worker_processes)");
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	pfree(jobs);
	pfree(runs);
	pfree(owners);
	pfree(logins);
	return false;
}

/*
 * Run a job's command in its own transaction through the owner primitive
 * (the owner, security-restricted, its recorded search_path, its time
 * limit), catching any error; *message gets the error message (allocated
 * in cxt). The process is the owner's own session, so the commit, with
 * whatever deferred triggers it fires, runs with the owner's rights.
 */
static bool
run_command(Oid owner_id, const char *command, const char *search_path,
			int timeout_ms, const char *target, MemoryContext cxt, char **message)
{
	volatile bool ok = false;

	pgstat_report_activity(STATE_RUNNING, command);
	ep_bgw_start_xact();
	PG_TRY();
	{
		EpOwnerCall call;
		int			ret;

		memset(&call, 0, sizeof(call));
		call.owner = owner_id;
		call.search_path = search_path ? search_path : "pg_catalog";
		call.timeout_ms = timeout_ms;
		call.what = "job";
		call.name = target;
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		ep_owner_enter(&call);
		ret = SPI_execute(command, false, 0);
		if (ret < 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("the job command cannot run in a background job: %s",
							SPI_result_code_string(ret)),
					 errhint("Transaction control and COPY to or from the client are not available in jobs.")));
		ep_owner_leave(&call);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (ep_owner_timed_out())
			*message = psprintf("%s (the job's time limit of %d ms was reached)",
								edata->message ? edata->message : "canceled",
								timeout_ms < 0 ? ep_guc_handler_timeout_ms : timeout_ms);
		else
			*message = edata->message ? edata->message : pstrdup("unknown error");
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* ------------------------------------------------------------------------
 * The job runner
 * ------------------------------------------------------------------------
 */
void
ep_job_runner_main(Datum main_arg)
{
	EpBgwExtra	extra;
	LOCKTAG		tag;
	MemoryContext run_cxt;
	char	   *owner = NULL;
	char	   *command = NULL;
	char	   *target = NULL;
	char	   *search_path = NULL;
	int			timeout_ms = -1;
	bool		ok = false;
	char	   *message = NULL;
	TimestampTz started;
	bool		paused;
	Oid			types[2] = {INT8OID, INT8OID};
	Datum		values[2];
	EpSavedUser saved;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	(void) ep_bgw_attach(EP_SLOT_RUNNER, &paused);
	if (paused || !OidIsValid(extra.owner))
		proc_exit(0);

	/*
	 * Connect as the job's owner. A role without LOGIN cannot be connected
	 * as (PostgreSQL 15 checks that for background workers too): then
	 * connect as the bootstrap superuser and make the owner the session
	 * user before anything else runs, as SET SESSION AUTHORIZATION does.
	 */
	BackgroundWorkerInitializeConnectionByOid(extra.dbid,
											  extra.owner_login ? extra.owner : InvalidOid,
											  0);
	pgstat_report_appname(EP_APPNAME_RUNNER);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	run_cxt = AllocSetContextCreate(TopMemoryContext, "event_patterns job run",
									ALLOCSET_DEFAULT_SIZES);

	/* claim the job (session lock, kept until exit), then load it */
	ep_bgw_start_xact();
	if (!extra.owner_login)
	{
		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(extra.owner)))
			proc_exit(0);		/* dropped meanwhile: the scheduler records it */
		SetSessionAuthorization(extra.owner, superuser_arg(extra.owner));
	}
	job_locktag(&tag, extra.job_id);
	(void) LockAcquire(&tag, ExclusiveLock, true, false);
	ep_become_owner(&saved);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	values[0] = Int64GetDatum(extra.job_id);
	values[1] = Int64GetDatum(extra.run_id);
	if (SPI_execute_with_args("SELECT j.owner::pg_catalog.oid, j.command, j.target, j.search_path,"
							  "       (pg_catalog.date_part('epoch', j.time_limit)"
							  "          OPERATOR(pg_catalog.*) 1000)::pg_catalog.float8,"
							  "       j.kind OPERATOR(pg_catalog.=) 'custom',"
							  "       pg_catalog.pg_get_userbyid(j.owner::pg_catalog.oid)::pg_catalog.text"
							  "  FROM ep.job_registry j"
							  "  JOIN ep.job_run_log r ON r.job_id OPERATOR(pg_catalog.=) j.job_id"
							  " WHERE j.job_id OPERATOR(pg_catalog.=) $1"
							  "   AND r.run_id OPERATOR(pg_catalog.=) $2"
							  "   AND r.status OPERATOR(pg_catalog.=) 'running'",
							  2, types, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read job " INT64_FORMAT, extra.job_id);
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			roleid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		Datum		limit = SPI_getbinval(tup, desc, 5, &isnull);
		bool		custom = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		char	   *path = SPI_getvalue(tup, desc, 4);

		command = MemoryContextStrdup(run_cxt, SPI_getvalue(tup, desc, 2));
		target = MemoryContextStrdup(run_cxt, SPI_getvalue(tup, desc, 3));
		search_path = path ? MemoryContextStrdup(run_cxt, path) : NULL;
		owner = MemoryContextStrdup(run_cxt, SPI_getvalue(tup, desc, 7));
		if (!isnull)
			timeout_ms = (int) Min(DatumGetFloat8(limit), (double) INT_MAX);
		else if (custom)
			timeout_ms = ep_guc_handler_timeout_ms;
		else if (ep_guc_handler_timeout_ms == 0)
			timeout_ms = 0;
		else
			timeout_ms = Max(ep_guc_handler_timeout_ms, EP_INTERNAL_JOB_MIN_LIMIT_MS);
		/* the job changed hands after it was picked: run nothing */
		if (roleid != extra.owner)
			message = pstrdup("the job's owner changed before it ran; it runs next time");
	}
	PopActiveSnapshot();
	SPI_finish();
	ep_restore_user(&saved);
	CommitTransactionCommand();
	if (command == NULL)
		proc_exit(0);			/* the run was given up (or the job removed) */

	started = GetCurrentTimestamp();
	if (message == NULL)
		ok = run_command(extra.owner, command, search_path, timeout_ms, target,
						 run_cxt, &message);
	if (!ok)
		ereport(LOG,
				(errmsg("event_patterns job " INT64_FORMAT " of role \"%s\" failed: %s",
						extra.job_id, owner, message),
				 errhint("See ep.job_runs; the job is retried with backoff.")));
	else
	{
		long		secs;
		int			usecs;

		TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
		message = psprintf("completed in %ld ms", secs * 1000 + usecs / 1000);
	}

	ep_bgw_start_xact();
	ep_become_owner(&saved);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	record_result(extra.job_id, extra.run_id, ok, message);
	PopActiveSnapshot();
	SPI_finish();
	ep_restore_user(&saved);
	CommitTransactionCommand();
	proc_exit(0);
}

/*
 * ep._jobs_changed(): AFTER statement trigger on ep.job_registry; the
 * commit callback then wakes the worker so that new and changed jobs are
 * seen at once. The worker's own changes need no wake-up.
 */
PG_FUNCTION_INFO_V1(ep_jobs_changed);
Datum
ep_jobs_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._jobs_changed() must be called as a trigger")));
	if (!ep_worker_am_worker)
		ep_bgw_note_jobs_changed();
	return PointerGetDatum(NULL);
}
