/*-------------------------------------------------------------------------
 *
 * ivm_async_define.c
 *	  Async incremental views (ivm_async.c), at creation and refresh: the
 *	  checks of the base tables (REPLICA IDENTITY FULL, plain tables, and
 *	  the refusal of immediate/deferred views over tables a subscription
 *	  replicates), the view's progress row, and ep.refresh_view of an async
 *	  view. Called from ivm_define.c and ivm_refresh.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "event_patterns.h"
#include "ivm_async.h"
#include "owner.h"
#include "worker.h"


/* Is the table replicated into this database by a subscription? */
static bool
ivm_async_subscribed(Oid relid)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	bool		found;

	/* pg_subscription_rel: (srrelid, srsubid) unique; scan by relid */
	rel = table_open(SubscriptionRelRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_subscription_rel_srrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

void
ep_ivm_async_refuse_subscribed(List *bases, const char *mode)
{
	ListCell   *lc;

	foreach(lc, bases)
	{
		Oid			relid = lfirst_oid(lc);

		if (ivm_async_subscribed(relid))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("an incremental view with refresh \"%s\" over table \"%s\" would go stale: the table is replicated by a subscription",
							mode, get_rel_name(relid)),
					 errdetail("The logical replication apply worker fires no statement triggers, so the view's maintenance would never run for replicated changes."),
					 errhint("Create the view with refresh => 'async': the worker maintains it from this database's WAL.")));
	}
}

/*
 * Async views need the old rows of updates and deletes from the WAL:
 * REPLICA IDENTITY FULL on every base table. ep.events only ever gets
 * rows inserted (hard deletes and scavenging recompute the view), and the
 * storage of another incremental view is set to FULL here (the extension
 * maintains that table).
 */
void
ep_ivm_async_check_bases(List *bases)
{
	ListCell   *lc;

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("async incremental views need wal_level = logical"),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));
	foreach(lc, bases)
	{
		Oid			relid = lfirst_oid(lc);
		char		ident;
		bool		storage = false;

		if (relid == ep_catalog()->events)
			continue;
		ident = get_rel_relkind(relid) == RELKIND_RELATION ? '\0' : 'x';
		if (ident == 'x')
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("async incremental views can only read plain tables; \"%s\" is not one",
							get_rel_name(relid)),
					 errdetail("Changes of partitioned tables are decoded per partition."),
					 errhint("Create the view with refresh => 'immediate', 'deferred' or 'full'.")));
		{
			HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));

			if (!HeapTupleIsValid(tup))
				elog(ERROR, "cache lookup failed for relation %u", relid);
			ident = ((Form_pg_class) GETSTRUCT(tup))->relreplident;
			ReleaseSysCache(tup);
		}
		if (ident == REPLICA_IDENTITY_FULL)
			continue;
		/* the storage of another incremental view? */
		{
			Oid			types[1] = {OIDOID};
			Datum		args[1] = {ObjectIdGetDatum(relid)};
			EpSavedUser saved;

			ep_become_owner(&saved);
			SPI_connect();
			/* (only a storage of the creator's own: no change to others' tables) */
			if (SPI_execute_with_args("SELECT 1 FROM ep.ivm_views WHERE storage_rel OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
									  1, types, args, NULL, true, 1) == SPI_OK_SELECT)
				storage = SPI_processed > 0 && pg_class_ownercheck(relid, saved.userid);
			if (storage &&
				SPI_execute(psprintf("ALTER TABLE %s REPLICA IDENTITY FULL",
									 quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
																get_rel_name(relid))),
							false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not set the replica identity of \"%s\"", get_rel_name(relid));
			SPI_finish();
			ep_restore_user(&saved);
		}
		if (storage)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" does not log whole old rows", get_rel_name(relid)),
				 errdetail("An async view computes the effect of updates and deletes from the old rows in the WAL, which only REPLICA IDENTITY FULL logs."),
				 errhint("Run ALTER TABLE %s REPLICA IDENTITY FULL; then create the view again.",
						 quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													get_rel_name(relid)))));
	}
}

/* The progress row of a new async view: the worker computes it first. */
void
ep_ivm_async_define(int64 view_id)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(view_id)};
	EpSavedUser saved;

	ep_become_owner(&saved);
	if (SPI_execute_with_args("INSERT INTO ep.ivm_async (view_id) VALUES ($1)",
							  1, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record async view " INT64_FORMAT, view_id);
	ep_restore_user(&saved);
	ep_worker_wake(MyDatabaseId);
}

/* ep.refresh_view of an async view: full asks the worker to recompute. */
void
ep_ivm_async_refresh(int64 view_id, bool full)
{
	if (full)
	{
		Oid			types[1] = {INT8OID};
		Datum		args[1] = {Int64GetDatum(view_id)};
		EpSavedUser saved;

		ep_become_owner(&saved);
		SPI_connect();
		if (SPI_execute_with_args("INSERT INTO ep.ivm_async AS a (view_id) VALUES ($1)"
								  " ON CONFLICT (view_id) DO UPDATE SET needs_full = true",
								  1, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not request the recompute of async view " INT64_FORMAT, view_id);
		SPI_finish();
		ep_restore_user(&saved);
	}
	ep_worker_wake(MyDatabaseId);
}
