/*-------------------------------------------------------------------------
 *
 * publish.c
 *	  The writer side of read nodes: publishing the read horizon.
 *
 * The store is published by ep.publish_store (SQL, 50_read_nodes.sql);
 * what readers need besides the rows is the writer's read horizon H
 * (position.c), which only the writer can compute.  ep_replica_publish
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
#include "utils/snapmgr.h"

#include "event_patterns.h"
#include "launcher.h"
#include "owner.h"
#include "position.h"
#include "replica/replica.h"
#include "worker.h"

/* in the worker: the position it last published (after commit) */
static int64 worker_published = -1;

/*
 * Publish the horizon if the store is published and the horizon is above
 * "known"; returns the horizon position (H - 1), or -1 on a reader (or
 * with the objects of 0.1); *published tells whether the store is
 * published.  Needs a transaction and an active snapshot.
 */
static int64
ep_replica_publish(int64 known, bool *published_out)
{
	const EpCatalog *cat = ep_catalog();
	EpSavedUser saved;
	int64		position;
	int64		issued;
	bool		published = false;

	*published_out = false;
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
	if (SPI_execute("SELECT FROM ep.store_publications LIMIT 1", true, 1) == SPI_OK_SELECT)
		published = SPI_processed > 0;
	if (published)
	{
		Oid			types[2] = {INT8OID, INT8OID};
		Datum		args[2];

		args[0] = Int64GetDatum(position);
		args[1] = Int64GetDatum(Max(issued, position));
		if (SPI_execute_with_args("UPDATE ep.store_horizon SET \"position\" = $1, issued = $2,"
								  " published_at = pg_catalog.clock_timestamp()"
								  " WHERE \"position\" OPERATOR(pg_catalog.<) $1",
								  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not publish the read horizon");
	}
	SPI_finish();
	ep_restore_user(&saved);
	*published_out = published;
	return position;
}

/* Worker step: publish the horizon after appending commits. */
static bool
ep_replica_horizon_step(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int64 position = -1;
	bool		published;

	if (RecoveryInProgress())
		return false;
	PG_TRY();
	{
		ep_bgw_start_xact();
		PushActiveSnapshot(GetTransactionSnapshot());
		position = ep_replica_publish(worker_published, &published);
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
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	/*
	 * Published or not, look again only when the horizon moves (an
	 * ep.publish_store writes the row itself); after an error, next round.
	 */
	worker_published = position;
	return false;
}

void
ep_replica_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("read horizon", ep_replica_horizon_step);
}

PG_FUNCTION_INFO_V1(ep_publish_horizon);
Datum
ep_publish_horizon(PG_FUNCTION_ARGS)
{
	int64		position;
	bool		published;

	ep_require_preload("publishing the read horizon");
	position = ep_replica_publish(-1, &published);
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
