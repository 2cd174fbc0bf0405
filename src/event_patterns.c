/*-------------------------------------------------------------------------
 *
 * event_patterns.c
 *	  Entry point of the event_patterns library: _PG_init, the per-backend
 *	  cache of the extension's catalog objects, the transaction callback
 *	  that ends per-transaction state (and hands appending commits to the
 *	  notifier, notify.c), and the immutability trigger of
 *	  ep.events.
 *
 * _PG_init always defines the GUCs (so they can be SET in any session);
 * shared memory and background workers are registered only while the
 * library is being preloaded.
 *
 * The catalog cache (EpCatalog) holds OIDs looked up by name in schema
 * "ep"; any relcache invalidation of a relation it names, or a global
 * invalidation, forgets it, so DROP/CREATE EXTENSION in a session is safe.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/origin.h"
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/index.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "event_patterns.h"
#include "ivm/ivm_async.h"
#include "notify.h"
#include "position.h"
#include "channel/channel.h"
#include "launcher.h"
#include "worker.h"
#include "projection.h"
#include "owner.h"
#include "saga.h"
#include "replica/replica.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			ep_internal_writes = 0;

static EpCatalog catalog;
static bool catalog_valid = false;
static bool callbacks_registered = false;

static void
ep_relcache_callback(Datum arg, Oid relid)
{
	if (!catalog_valid)
		return;
	if (relid == InvalidOid || relid == catalog.events ||
		relid == catalog.events_pkey || relid == catalog.events_stream_idx ||
		relid == catalog.events_category_idx || relid == catalog.position_seq)
		catalog_valid = false;
}

static Oid
ep_relid(const char *name)
{
	Oid			relid = get_relname_relid(name, catalog.schema);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("relation \"%s.%s\" does not exist", EP_SCHEMA_NAME, name),
				 errhint("Is the event_patterns extension installed in this database?")));
	return relid;
}

static Oid
ep_extension_owner(int *version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("event_patterns"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		v;

		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
		*version = (!isnull && strcmp(TextDatumGetCString(v), "0.1") == 0) ? 1 : EP_VERSION_0_2;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"event_patterns\" is not installed in this database")));
	return owner;
}

/*
 * One relcache callback for the whole library, which hands each
 * invalidation to the modules' callbacks: PostgreSQL keeps only a few
 * slots for them in every backend (ten on 15), shared with every other
 * loaded library.
 */
#define EP_MAX_RELCACHE_CALLBACKS 16
static RelcacheCallbackFunction ep_relcache_fns[EP_MAX_RELCACHE_CALLBACKS];
static int	ep_relcache_nfns = 0;

static void
ep_relcache_dispatch(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < ep_relcache_nfns; i++)
		ep_relcache_fns[i] ((Datum) 0, relid);
}

void
ep_register_relcache_callback(RelcacheCallbackFunction fn)
{
	if (ep_relcache_nfns == 0)
		CacheRegisterRelcacheCallback(ep_relcache_dispatch, (Datum) 0);
	if (ep_relcache_nfns >= EP_MAX_RELCACHE_CALLBACKS)
		elog(FATAL, "out of event_patterns relcache callback slots");
	ep_relcache_fns[ep_relcache_nfns++] = fn;
}

/*
 * The index entries of the heap tuple just written from slot, as the
 * executor makes them, for indexes the caller has checked run no user code
 * (plain btrees over columns with built-in operator families, immediate,
 * no exclusion): unique ones checked at once. unchanged: the tuple is a
 * non-HOT update whose key columns did not change (a hint to the index).
 */
void
ep_insert_index_entries(Relation heap, List *indexes, TupleTableSlot *slot, bool unchanged)
{
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	idx = lfirst(lc);
		IndexInfo  *ii = BuildIndexInfo(idx);
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		FormIndexDatum(ii, slot, NULL, values, isnull);
		index_insert(idx, values, isnull, &slot->tts_tid, heap,
					 idx->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 unchanged, ii);
	}
}

const EpCatalog *
ep_catalog(void)
{
	if (catalog_valid)
		return &catalog;

	if (!callbacks_registered)
	{
		ep_register_relcache_callback(ep_relcache_callback);
		callbacks_registered = true;
	}

	catalog.schema = get_namespace_oid(EP_SCHEMA_NAME, true);
	if (!OidIsValid(catalog.schema))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_SCHEMA),
				 errmsg("schema \"%s\" does not exist", EP_SCHEMA_NAME),
				 errhint("Run CREATE EXTENSION event_patterns in this database.")));
	catalog.events = ep_relid("events");
	catalog.events_pkey = ep_relid("events_pkey");
	catalog.events_stream_idx = ep_relid("events_stream_version_key");
	catalog.events_category_idx = ep_relid("events_category_idx");
	catalog.position_seq = ep_relid("events_global_position_seq");
	catalog.owner = ep_extension_owner(&catalog.version);
	catalog_valid = true;
	return &catalog;
}

/*
 * Prepare a statement once per backend and keep it (SPI must be connected);
 * the plan cache revalidates it after DROP/CREATE EXTENSION.
 */
SPIPlanPtr
ep_spi_keep_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	if (*cache == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		*cache = plan;
	}
	return *cache;
}

/*
 * Run a prepared statement that writes ep.events (append, hard delete,
 * scavenge, redaction), with the immutability trigger standing aside for
 * its duration only, also when it fails.
 *
 * Writes to ep.events never carry the origin DoNotReplicateId that
 * projection handlers' writes carry (projection.c): decoding filters those
 * out before they reach the reorder buffer (decoder.c), but events a
 * handler appends must be decoded like any other.
 */
int
ep_spi_execute_internal(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	int			ret = 0;
	RepOriginId saved_origin = replorigin_session_origin;

	ep_internal_writes++;
	if (saved_origin == DoNotReplicateId)
		replorigin_session_origin = InvalidRepOriginId;
	PG_TRY();
	{
		ret = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		ep_internal_writes--;
		replorigin_session_origin = saved_origin;
	}
	PG_END_TRY();
	return ret;
}

static void
ep_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (ep_position_reserved_in_xact())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that appended events"),
						 errdetail("Global positions of an appending transaction are tracked by its backend until commit."),
						 errhint("Commit the transaction instead of using two-phase commit.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			ep_notify_pre_commit();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			{
				/* count the commit for the notifier before waking it */
				bool		notify_wake = ep_notify_xact_end(event == XACT_EVENT_COMMIT);
				/* a read node's apply worker brought the writer's horizon */
				bool		horizon_wake = ep_replica_take_wake() && event == XACT_EVENT_COMMIT;

				if (event == XACT_EVENT_COMMIT)
					ep_replica_note_commit(ep_position_last_in_xact());
				ep_bgw_at_xact_end(event, ep_position_reserved_in_xact() || notify_wake ||
								   horizon_wake);
				ep_position_xact_end();
				ep_internal_writes = 0;
			}
			break;
		default:
			break;
	}
}

void
_PG_init(void)
{
	ep_replica_init();			/* the horizon step runs before projections */
	ep_projection_init();		/* its GUCs before the prefix is reserved */
	ep_saga_init();
	ep_ivm_async_init();
	ep_channel_init();
	ep_owner_init();
	ep_guc_define();
	RegisterXactCallback(ep_xact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	ep_shmem_install_hooks();
	ep_launcher_init();
}

/*
 * ep.events_immutable(): BEFORE UPDATE OR DELETE (row) and BEFORE TRUNCATE
 * (statement) trigger on ep.events. Events are immutable: only the
 * extension's own functions (hard delete, scavenge, redaction) may change
 * them, which they signal through ep_internal_writes.
 */
PG_FUNCTION_INFO_V1(ep_events_immutable);
Datum
ep_events_immutable(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *what;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep.events_immutable() must be called as a trigger")));

	if (ep_internal_writes > 0)
	{
		if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
			return PointerGetDatum(trigdata->tg_newtuple);
		return PointerGetDatum(trigdata->tg_trigtuple);
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		what = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		what = "DELETE";
	else if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		what = "TRUNCATE";
	else
		what = "INSERT";

	ereport(ERROR,
			(errcode(ERRCODE_EP_EVENTS_IMMUTABLE),
			 errmsg("events are immutable: %s on \"%s\" is not allowed", what,
					RelationGetRelationName(trigdata->tg_relation)),
			 errhint("Append new events with ep.append(); remove streams with ep.delete_stream().")));
	PG_RETURN_NULL();
}

/*
 * ep._objects_changed(): every backend forgets its catalog cache (the
 * relcache invalidation of ep.events reaches all of them at commit).
 */
PG_FUNCTION_INFO_V1(ep_objects_changed);
Datum
ep_objects_changed(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid(EP_SCHEMA_NAME, false);
	Oid			events = get_relname_relid("events", nsp);

	if (OidIsValid(events))
		CacheInvalidateRelcacheByRelid(events);
	catalog_valid = false;
	PG_RETURN_VOID();
}
