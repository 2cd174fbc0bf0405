/*-------------------------------------------------------------------------
 *
 * ivm_refresh.c
 *	  ep.refresh_view and the full recompute of an incremental view.
 *
 * A full recompute computes the storage rows from scratch and writes only
 * the difference: rows of the storage that are not in the new result are
 * deleted by tid, new rows are inserted (NULLs compare equal through
 * GROUP BY and EXCEPT). Readers keep seeing the previous contents until the
 * transaction commits, never an empty view. It takes an EXCLUSIVE lock on
 * the storage (readers are not blocked; immediate-mode writers wait).
 *
 * A deferred refresh first locks the view's change logs in EXCLUSIVE mode:
 * that waits for writers that logged changes and have not committed, and
 * holds off new ones until the refresh commits, so the next statement's
 * snapshot sees exactly the logged changes whose base-table effects it also
 * sees. The batch is applied with the same upsert as immediate maintenance
 * (sources: the logs), unless it is larger than IVM_FULL_FRACTION of the
 * base tables' estimated size or a TRUNCATE happened, in which case the
 * view is recomputed. Then the logs are emptied.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "owner.h"
#include "ivm.h"
#include "ivm_async.h"

/*
 * SPI must be connected, inside the view owner's context
 * (ep_ivm_owner_enter).
 */
void
ep_ivm_full_recompute(IvmViewCache *vc, bool latest)
{
	const char *sql[2] = {vc->sql_full_delete, vc->sql_full_insert};
	int			expect[2] = {SPI_OK_DELETE, SPI_OK_INSERT};
	Snapshot	snap = InvalidSnapshot;

	LockRelationOid(vc->storage, ExclusiveLock);
	/* the latest snapshot, taken after the lock (both statements use it) */
	if (latest)
		snap = RegisterSnapshot(GetLatestSnapshot());
	if (vc->recompute)
		ep_ivm_recompute_settings();
	for (int i = 0; i < 2; i++)
	{
		int			rc;

		/* recompute views: sql_full_insert writes the whole difference */
		if (i == 0 && vc->recompute)
			continue;

		if (snap == InvalidSnapshot)
			rc = SPI_execute(sql[i], false, 0);
		else
		{
			SPIPlanPtr	plan = SPI_prepare(sql[i], 0, NULL);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			rc = SPI_execute_snapshot(plan, NULL, NULL, snap, InvalidSnapshot, false, true, 0);
			SPI_freeplan(plan);
		}
		if (rc != expect[i])
			elog(ERROR, "full recompute of incremental view failed (%s)", i == 0 ? "delete" : "insert");
	}
	if (snap != InvalidSnapshot)
		UnregisterSnapshot(snap);
}

static int64
ivm_count(const char *sql)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute(sql, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not run \"%s\"", sql);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}


static void ivm_refresh_id(int64 view_id, const char *name, bool full, int depth);

/*
 * Incremental views this one reads (views over views) whose contents wait
 * for a refresh (deferred and full ones): refreshed first, innermost first,
 * when the current user may refresh them; their own schedules refresh
 * the others.
 */
static void
ivm_refresh_inputs(int64 view_id, int depth)
{
	Oid			t[1] = {INT8OID};
	Datum		a[1] = {Int64GetDatum(view_id)};
	EpSavedUser saved;
	int64	   *ids;
	char	  **names;
	int			n = 0;
	uint64		i;

	if (depth > 32)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("incremental views nested more than 32 deep")));
	ep_become_owner(&saved);
	if (SPI_execute_with_args("SELECT i.view_id, i.name, i.owner::pg_catalog.oid"
							  "  FROM ep.ivm_views o JOIN ep.ivm_views i"
							  "    ON i.storage_rel OPERATOR(pg_catalog.=) ANY (o.base_rels)"
							  " WHERE o.view_id OPERATOR(pg_catalog.=) $1"
							  "   AND i.refresh OPERATOR(pg_catalog.<>) 'immediate'"
							  " ORDER BY i.view_id",
							  1, t, a, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.ivm_views");
	ep_restore_user(&saved);
	ids = palloc(sizeof(int64) * (SPI_processed + 1));
	names = palloc(sizeof(char *) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));

		if (!has_privs_of_role(GetUserId(), owner))
			continue;
		ids[n] = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		names[n++] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
	}
	for (i = 0; i < n; i++)
		ivm_refresh_id(ids[i], names[i], false, depth + 1);
}

PG_FUNCTION_INFO_V1(ep_refresh_view);
Datum
ep_refresh_view(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		full;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	int64		view_id;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	full = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);

	SPI_connect();
	args[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT view_id, needs_full FROM ep._ivm_lookup($1)",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not look up incremental view \"%s\"", name);
	view_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ivm_refresh_id(view_id, name, full, 0);
	SPI_finish();
	PG_RETURN_VOID();
}

/* Refresh one view (SPI connected), after the views it reads. */
static void
ivm_refresh_id(int64 view_id, const char *name, bool full, int depth)
{
	IvmViewCache *vc;
	EpOwnerCall call;

	vc = ep_ivm_view_cache(view_id, false);
	if (!has_privs_of_role(GetUserId(), vc->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of incremental view \"%s\"", name)));
	ivm_refresh_inputs(view_id, depth);
	/* async views are applied by the worker, in its order (ivm_async.c) */
	if (vc->async)
	{
		ep_ivm_async_refresh(view_id, full);
		return;
	}
	/* unpinned below, or at the end of the transaction if an error escapes */
	ep_ivm_view_pin(vc);

	/*
	 * The view's SQL (and any function it calls) runs as the view's owner,
	 * whoever refreshes: a superuser's refresh or job must not run another
	 * role's code with superuser rights (as REFRESH MATERIALIZED VIEW does).
	 * It runs with the search_path recorded at creation (pg_temp last), in a
	 * GUC nest level that is rolled back afterwards, under the time limit.
	 */
	ep_ivm_owner_enter(vc, &call);
	ep_ivm_writing++;
	PG_TRY();
	{
		ep_ivm_refresh_body(vc, name, view_id, full);
	}
	PG_FINALLY();
	{
		ep_ivm_writing--;
	}
	PG_END_TRY();
	ep_owner_leave(&call);
	ep_ivm_view_unpin(vc);
}

/*
 * The body of ep_refresh_view, in the owner's context (also the batch of an
 * async view, ivm_async.c, whose logs the worker fills).
 */
void
ep_ivm_refresh_body(IvmViewCache *vc, const char *name, int64 view_id, bool full)
{
	bool		needs_full;
	bool		isnull;
	TimestampTz start = GetCurrentTimestamp();
	int			i;

	/* lock the logs, then re-read needs_full under the lock */
	for (i = 0; vc->log_rels && i < (vc->recompute ? (vc->refresh == IVM_DEFERRED ? 1 : 0) :
									 vc->refresh == IVM_DEFERRED ? vc->nbase : (vc->refresh == IVM_FULL ? 1 : 0)); i++)
	{
		if (vc->log_rels[i] == NULL)
			continue;
		if (SPI_execute(psprintf("LOCK TABLE %s IN EXCLUSIVE MODE", vc->log_rels[i]), false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not lock change log");
	}
	{
		Oid			t[1] = {INT8OID};
		Datum		a[1] = {Int64GetDatum(view_id)};

		if (SPI_execute_with_args("SELECT needs_full FROM ep.ivm_views WHERE view_id OPERATOR(pg_catalog.=) $1",
								  1, t, a, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "incremental view \"%s\" disappeared", name);
		needs_full = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}

	if (vc->refresh == IVM_IMMEDIATE)
	{
		if (full)
			ep_ivm_full_recompute(vc, false);
	}
	else if (vc->refresh == IVM_FULL || vc->recompute)
	{
		/*
		 * A deferred recompute view: nothing to do without counted changes;
		 * otherwise the latest rows, after the lock.
		 */
		if (!vc->recompute || full || needs_full ||
			(vc->log_rels && vc->log_rels[0] &&
			 ivm_count(psprintf("SELECT pg_catalog.count(*) FROM %s", vc->log_rels[0])) > 0))
			ep_ivm_full_recompute(vc, vc->recompute && IsolationUsesXactSnapshot());
		if (vc->nbase > 0 && vc->log_rels && vc->log_rels[0])
			SPI_execute(psprintf("DELETE FROM %s", vc->log_rels[0]), false, 0);
	}
	else
	{
		int64		pending = 0;
		double		basesize = 0;

		for (i = 0; i < vc->nbase; i++)
		{
			pending += ivm_count(psprintf("SELECT pg_catalog.count(*) FROM %s", vc->log_rels[i]));
		}
		if (!full && !needs_full && pending > 0)
		{
			Oid			t[1] = {INT8OID};
			Datum		a[1] = {Int64GetDatum(view_id)};

			if (SPI_execute_with_args("SELECT pg_catalog.sum(GREATEST(c.reltuples, 0))::pg_catalog.float8"
									  " FROM ep.ivm_views v, pg_catalog.unnest(v.base_rels) b, pg_catalog.pg_class c"
									  " WHERE v.view_id OPERATOR(pg_catalog.=) $1 AND c.oid OPERATOR(pg_catalog.=) b",
									  1, t, a, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			{
				Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

				basesize = isnull ? 0 : DatumGetFloat8(d);
			}
			/* the logged rows touch at most pending rows of the bases */
			if (basesize > 0 && (double) pending > IVM_FULL_FRACTION * basesize)
				full = true;
		}
		if (full || needs_full)
			ep_ivm_full_recompute(vc, false);
		else if (pending > 0)
		{
			int			rc;

			if (vc->multi_occurrence)
				ep_ivm_lock_view(vc);
			rc = SPI_execute(vc->sql_deferred, false, 0);
			if (rc != SPI_OK_SELECT)
				elog(ERROR, "deferred maintenance failed: %s", SPI_result_code_string(rc));
			ep_ivm_apply_result(vc, SPI_tuptable, SPI_processed, InvalidSnapshot);
		}
		for (i = 0; i < vc->nbase; i++)
			SPI_execute(psprintf("DELETE FROM %s", vc->log_rels[i]), false, 0);
	}

	{
		Oid			t[2] = {INT8OID, FLOAT8OID};
		Datum		a[2];
		long		secs;
		int			usecs;
		EpSavedUser saved;

		TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
		a[0] = Int64GetDatum(view_id);
		a[1] = Float8GetDatum(secs * 1000.0 + usecs / 1000.0);
		ep_become_owner(&saved);
		if (SPI_execute_with_args("UPDATE ep.ivm_views SET needs_full = false, last_refreshed_at = pg_catalog.now(),"
								  " last_refresh_ms = $2 WHERE view_id OPERATOR(pg_catalog.=) $1",
								  2, t, a, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the refresh of \"%s\"", name);
		ep_restore_user(&saved);
	}
}
