/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  The writer side of read nodes: publishing the read horizon.
 *
 * The store is published by ep.publish_store (SQL, 50_read_nodes.sql);
 * what readers need besides the rows is the writer's read horizon H
 * (position.c), which only the writer can compute.  ep_replica_write_horizon
 * computes H and, when it has moved, writes H - 1 into ep.store_horizon in
 * a transaction of its own: every position below H was then committed or
 * aborted, so each of those commits precedes this one in the writer's
 * commit order, which is the order readers apply in.
 *
 * Who writes: the database's worker, in a step that runs first in every
 * round (appending commits wake the worker, see launcher.c), and anybody
 * allowed to call ep.publish_horizon().  The row only moves forward
 * (WHERE position < new), so concurrent publishers cannot move it back.
 * Nothing is written while the store is not published or H has not moved:
 * an idle writer produces no WAL from here.
 *
 * Cost.  Every horizon the worker publishes is a transaction of its own on
 * the writer, decoded by each follower's walsender, applied by each
 * follower's apply worker and waking each follower's worker: on a busy
 * writer that is a fixed price per publication, paid by every follower.
 * The worker therefore publishes at most once per
 * event_patterns.horizon_interval (a commit that comes after a quiet spell
 * is published at once; under a steady stream of appends the horizon moves
 * in steps of that interval, the bound it adds to what readers wait), with
 * one saved plan that also checks that the store is published (no parsing
 * or planning per round, no extra statement).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "launcher.h"
#include "owner.h"
#include "position.h"
#include "replica/replica.h"
#include "worker.h"

int			ep_guc_horizon_interval_ms = 10;

/* in the worker: the position it last published (after commit) */
static int64 worker_published = -1;
/* in the worker: when it last wrote a horizon (0: not yet) */
static TimestampTz worker_published_at = 0;
/* the publishing UPDATE, planned once per process */
static SPIPlanPtr horizon_plan = NULL;

/*
 * Publish the read horizon: one statement, planned once per process, that
 * writes it only while the store is published and only forward. Returns the
 * horizon position (-1 on a reader or with the objects of 0.1); *wrote
 * tells whether the row was updated, *published (when asked) whether the
 * store is published at all. Needs a transaction and an active snapshot.
 */
static int64
ep_replica_write_horizon(int64 known, bool *wrote, bool *published)
{
	const EpCatalog *cat = ep_catalog();
	EpSavedUser saved;
	int64		position;
	int64		issued;
	Datum		args[2];

	*wrote = false;
	if (published)
		*published = false;
	if (cat->version < EP_VERSION_0_2 || ep_replica_is_reader())
		return -1;
	/* issued before H: H <= issued + 1 */
	issued = ep_position_issued(cat->position_seq);
	position = ep_position_horizon(cat->position_seq) - 1;
	if (position <= known)
		return position;

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (horizon_plan == NULL)
	{
		Oid			types[2] = {INT8OID, INT8OID};
		SPIPlanPtr	plan;

		/*
		 * Saved plans are re-planned by the plan cache when the tables
		 * change (DROP/CREATE EXTENSION included).
		 */
		plan = SPI_prepare("UPDATE ep.store_horizon SET \"position\" = $1, issued = $2,"
						   " published_at = pg_catalog.clock_timestamp()"
						   " WHERE \"position\" OPERATOR(pg_catalog.<) $1"
						   " AND EXISTS (SELECT FROM ep.store_publications)",
						   2, types);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the publication of the read horizon");
		horizon_plan = plan;
	}
	args[0] = Int64GetDatum(position);
	args[1] = Int64GetDatum(Max(issued, position));
	if (SPI_execute_plan(horizon_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not publish the read horizon");
	*wrote = SPI_processed > 0;
	if (published &&
		SPI_execute("SELECT FROM ep.store_publications LIMIT 1", true, 1) == SPI_OK_SELECT)
		*published = SPI_processed > 0;
	SPI_finish();
	ep_restore_user(&saved);
	return position;
}

/*
 * Worker step: publish the horizon after appending commits, at most once
 * per event_patterns.horizon_interval.
 */
static bool
ep_replica_horizon_step(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int64 position = -1;
	volatile bool wrote = false;
	TimestampTz now;

	if (RecoveryInProgress())
		return false;
	now = GetCurrentTimestamp();
	if (worker_published_at != 0 && ep_guc_horizon_interval_ms > 0 &&
		!TimestampDifferenceExceeds(worker_published_at, now, ep_guc_horizon_interval_ms))
	{
		/*
		 * Too soon after the last one: come back when the interval is over
		 * (a round that then finds nothing new writes nothing).
		 */
		ep_worker_due_at(TimestampTzPlusMilliseconds(worker_published_at,
													 ep_guc_horizon_interval_ms));
		return false;
	}
	PG_TRY();
	{
		bool		w;

		ep_bgw_start_xact();
		PushActiveSnapshot(GetTransactionSnapshot());
		position = ep_replica_write_horizon(worker_published, &w, NULL);
		wrote = w;
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		position = -1;
		wrote = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	/*
	 * Published or not, look again only when the horizon moves (an
	 * ep.publish_store writes the row itself); after an error, next round.
	 */
	worker_published = position;
	if (wrote)
		worker_published_at = now;
	return false;
}

void
ep_replica_init(void)
{
	DefineCustomIntVariable("event_patterns.horizon_interval",
							"Shortest time between two read horizons the worker of a published store writes.",
							"Each horizon is a transaction that every follower decodes and applies; under a "
							"steady stream of appends readers see new events in steps of this interval. "
							"0 publishes after every round.",
							&ep_guc_horizon_interval_ms,
							10, 0, 10000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("read horizon", ep_replica_horizon_step);
}

PG_FUNCTION_INFO_V1(ep_publish_horizon);
Datum
ep_publish_horizon(PG_FUNCTION_ARGS)
{
	int64		position;
	bool		wrote;
	bool		published;

	ep_require_preload("publishing the read horizon");
	position = ep_replica_write_horizon(-1, &wrote, &published);
	if (!published)
		PG_RETURN_NULL();
	PG_RETURN_INT64(position);
}

PG_FUNCTION_INFO_V1(ep_is_reader);
Datum
ep_is_reader(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ep_replica_is_reader());
}

PG_FUNCTION_INFO_V1(ep_readable_position);
Datum
ep_readable_position(PG_FUNCTION_ARGS)
{
	ep_require_preload("reading events in global order");
	PG_RETURN_INT64(ep_position_horizon(ep_catalog()->position_seq) - 1);
}
