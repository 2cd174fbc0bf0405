/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The event_patterns.* configuration parameters.
 *
 * Defined in _PG_init whether or not the library is preloaded, so that
 * SHOW and SET work in every session (the postmaster-context ones only while
 * preloading, as PostgreSQL requires); the prefix is then reserved so that
 * a misspelt event_patterns.* setting is reported instead of silently kept.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "event_patterns.h"

bool		ep_guc_enabled = true;
int			ep_guc_max_workers = 8;
int			ep_guc_naptime_ms = 1000;
int			ep_guc_notify = EP_NOTIFY_WORKER;

static const struct config_enum_entry ep_notify_options[] = {
	{"commit", EP_NOTIFY_COMMIT, false},
	{"worker", EP_NOTIFY_WORKER, false},
	{"off", EP_NOTIFY_OFF, false},
	{NULL, 0, false}
};
int			ep_guc_max_job_workers = 4;
int			ep_guc_max_job_workers_per_role = 2;

void
ep_guc_define(void)
{
	DefineCustomBoolVariable("event_patterns.enabled",
							 "Enables the event_patterns background workers.",
							 "When off, the launcher starts no per-database workers and stops running ones.",
							 &ep_guc_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	/* a postmaster setting can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("event_patterns.max_workers",
								"Maximum number of per-database event_patterns workers.",
								"Each needs a slot of max_worker_processes.",
								&ep_guc_max_workers,
								8, 1, 256,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

	if (process_shared_preload_libraries_in_progress)
		DefineCustomIntVariable("event_patterns.max_job_workers",
								"Maximum number of event_patterns job runs at once, across all databases.",
								"Every job run is a short-lived background worker; each needs a slot of max_worker_processes.",
								&ep_guc_max_job_workers,
								4, 1, 256,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);

	DefineCustomIntVariable("event_patterns.max_job_workers_per_role",
							"Maximum number of job runs of one role at once, across all databases.",
							"Due jobs of a role that has this many running wait, so that one role's slow "
							"jobs cannot take every job worker.",
							&ep_guc_max_job_workers_per_role,
							2, 1, 256,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("event_patterns.naptime",
							"Longest time a worker sleeps when nothing wakes it.",
							"Workers are woken at commit of new events and jobs; this bounds the sleep otherwise.",
							&ep_guc_naptime_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("event_patterns.notify",
							 "How appending transactions announce new events on channel ep_events.",
							 "worker: right after appending transactions commit, the database's "
							 "background worker sends one NOTIFY ep_events for all of them (a "
							 "transaction notifies by itself when no worker runs). commit: each "
							 "appending transaction sends NOTIFY ep_events at commit; PostgreSQL "
							 "serializes the commits of notifying transactions, so this costs "
							 "append throughput under concurrency. off: no notification.",
							 &ep_guc_notify,
							 EP_NOTIFY_WORKER,
							 ep_notify_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("event_patterns");
}
