/*-------------------------------------------------------------------------
 *
 * upcast.c
 *	  Upcasting of event payloads: ep.register_upcaster,
 *	  ep.unregister_upcaster, and the step that every read path
 *	  (read_stream, read_all, read_category, poll, aggregate) runs on each
 *	  row before handing it out.
 *
 * An upcaster fn(data jsonb) RETURNS jsonb lifts the data of an event type
 * from schema version k to k + 1. The chain of an event type is contiguous
 * from schema version 1: registering from version k > 1 requires the link
 * from k - 1. An event stored at version s < latest is delivered with
 * data = fn_{latest-1}(... fn_s(data)) and schema_version = latest; events
 * at or above the latest are delivered as stored. Stored rows never change.
 * Payloads left by ep.redact_stream are not upcast (they carry no data of
 * the old shape); only their schema_version is raised. Only the last link
 * of a chain can be unregistered. A link whose function was dropped makes
 * reads that need it fail (never a silent older shape).
 *
 * Registration and unregistration of one event type serialize on an
 * advisory transaction lock, so the contiguity check holds; only the
 * extension owner's role may do either, since every reader runs upcasters.
 *
 * Cache: each backend keeps the upcaster set in a hash table (event type ->
 * FmgrInfo of each link), in its own memory context. A relcache callback on
 * ep.upcasters (register_upcaster sends the invalidation explicitly, as a
 * plain INSERT would not) and a syscache callback on pg_proc (CREATE OR
 * REPLACE of an upcaster) mark it stale; the next read rebuilds it. A stale
 * cache is never freed while a read may still use it: its context is freed
 * at the end of the transaction. With no upcaster registered a read pays
 * one flag test.
 *
 * The fingerprint of the set (hash of every link and of its function's
 * pg_proc row version) lets snapshots notice that upcasting changed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "event_patterns.h"
#include "owner.h"
#include "stream_read.h"
#include "upcast.h"

typedef struct EpUpcastLink
{
	FmgrInfo	fn;				/* fn.fn_oid invalid: the function was dropped */
	Oid			owner;			/* the function's owner runs it */
	char	   *search_path;	/* recorded at registration */
} EpUpcastLink;

typedef struct EpUpcastEntry
{
	text	   *key;			/* event type (hash key: the pointer) */
	int			latest;			/* schema version delivered */
	EpUpcastLink *links;		/* links[k-1] lifts version k to k+1 */
} EpUpcastEntry;

struct EpUpcastState
{
	MemoryContext cxt;
	HTAB	   *hash;
	uint64		fingerprint;
};

static EpUpcastState cache;
static bool cache_valid = false;
static uint64 inval_count = 0;	/* bumped by every invalidation */
static Oid	upcasters_relid = InvalidOid;
static bool callbacks_registered = false;
static List *stale_contexts = NIL;	/* freed at transaction end */

static void
ep_up_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == upcasters_relid)
	{
		cache_valid = false;
		inval_count++;
	}
}

static void
ep_up_syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	cache_valid = false;
	inval_count++;
}

static void
ep_up_xact_cb(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	if (stale_contexts == NIL)
		return;
	foreach(lc, stale_contexts)
		MemoryContextDelete((MemoryContext) lfirst(lc));
	list_free(stale_contexts);
	stale_contexts = NIL;
}

static void
ep_up_register_callbacks(void)
{
	if (callbacks_registered)
		return;
	ep_register_relcache_callback(ep_up_relcache_cb);
	CacheRegisterSyscacheCallback(PROCOID, ep_up_syscache_cb, (Datum) 0);
	RegisterXactCallback(ep_up_xact_cb, NULL);
	callbacks_registered = true;
}

static Oid
ep_up_relid(void)
{
	const EpCatalog *cat = ep_catalog();
	Oid			relid = get_relname_relid("upcasters", cat->schema);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("relation \"ep.upcasters\" does not exist"),
				 errhint("Update the event_patterns extension.")));
	return relid;
}

/* (Re)build the backend's upcaster cache from ep.upcasters. */
static void
ep_up_load(void)
{
	MemoryContext cxt;
	MemoryContext old;
	HASHCTL		ctl;
	uint64		fp = 0;
	uint64		i;
	EpUpcastEntry *cur = NULL;
	uint64		start_count;

	ep_up_register_callbacks();
	upcasters_relid = ep_up_relid();

	/* a cache some read may still be using is freed at transaction end */
	if (cache.cxt != NULL)
	{
		old = MemoryContextSwitchTo(TopMemoryContext);
		stale_contexts = lappend(stale_contexts, cache.cxt);
		MemoryContextSwitchTo(old);
		cache.cxt = NULL;
	}
	cache.hash = NULL;
	cache.fingerprint = 0;

	/* an invalidation arriving during the load leaves the cache stale */
	start_count = inval_count;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(ep_catalog()->version >= EP_VERSION_0_2 ?
					"SELECT u.event_type, u.from_schema_version, u.upcaster::pg_catalog.oid, "
					"p.xmin::pg_catalog.text::pg_catalog.int8, p.proowner, u.search_path "
					"FROM ep.upcasters u LEFT JOIN pg_catalog.pg_proc p "
					"ON p.oid OPERATOR(pg_catalog.=) u.upcaster::pg_catalog.oid "
					"ORDER BY 1, 2" :
					"SELECT u.event_type, u.from_schema_version, u.upcaster::pg_catalog.oid, "
					"p.xmin::pg_catalog.text::pg_catalog.int8, p.proowner, NULL::pg_catalog.text "
					"FROM ep.upcasters u LEFT JOIN pg_catalog.pg_proc p "
					"ON p.oid OPERATOR(pg_catalog.=) u.upcaster::pg_catalog.oid "
					"ORDER BY 1, 2", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "upcaster lookup failed");
	if (SPI_processed == 0)
	{
		SPI_finish();
		cache_valid = (inval_count == start_count);
		return;
	}

	cxt = AllocSetContextCreate(CacheMemoryContext, "event_patterns upcasters",
								ALLOCSET_SMALL_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(text *);
	ctl.entrysize = sizeof(EpUpcastEntry);
	ctl.hash = ep_text_key_hash;
	ctl.match = ep_text_key_match;
	ctl.hcxt = cxt;
	cache.hash = hash_create("event_patterns upcasters", 64, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	cache.cxt = cxt;

	old = MemoryContextSwitchTo(cxt);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		text	   *type = DatumGetTextPCopy(SPI_getbinval(tup, desc, 1, &isnull));
		int32		from = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		Oid			fn = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		int64		xmin = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		uint64		h;

		if (cur == NULL || ep_text_key_match(&cur->key, &type, 0) != 0)
		{
			bool		found;

			cur = hash_search(cache.hash, &type, HASH_ENTER, &found);
			cur->key = type;
			cur->latest = 1;
			cur->links = NULL;
		}
		/* only a chain contiguous from version 1 is used */
		if (from != cur->latest)
			continue;
		if (cur->links == NULL)
			cur->links = palloc0(sizeof(EpUpcastLink) * 8);
		else if ((cur->latest & (cur->latest - 1)) == 0 && cur->latest >= 8)
			cur->links = repalloc(cur->links, sizeof(EpUpcastLink) * cur->latest * 2);
		/* a dropped upcaster function breaks the chain loudly, at read time */
		(void) SPI_getbinval(tup, desc, 4, &isnull);
		if (isnull)
		{
			memset(&cur->links[from - 1], 0, sizeof(EpUpcastLink));
			cur->links[from - 1].fn.fn_oid = InvalidOid;
		}
		else
		{
			char	   *path = SPI_getvalue(tup, desc, 6);

			fmgr_info_cxt(fn, &cur->links[from - 1].fn, cxt);
			cur->links[from - 1].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
			cur->links[from - 1].search_path = path ? pstrdup(path) : NULL;
		}
		cur->latest = from + 1;

		h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(type),
								VARSIZE_ANY_EXHDR(type), (uint64) from);
		h = hash_bytes_uint32_extended((uint32) fn, h);
		h = hash_bytes_uint32_extended((uint32) xmin, h);
		fp = fp * UINT64CONST(1099511628211) + h;
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	cache.fingerprint = fp == 0 ? 1 : fp;
	cache_valid = (inval_count == start_count);
}

EpUpcastState *
ep_upcast_begin(void)
{
	if (!cache_valid)
		ep_up_load();
	return cache.hash != NULL ? &cache : NULL;
}

uint64
ep_upcast_fingerprint(void)
{
	if (!cache_valid)
		ep_up_load();
	return cache.fingerprint;
}

bool
ep_is_redacted_payload(Datum data)
{
	Jsonb	   *jb = DatumGetJsonbP(data);
	JsonbValue	k;
	JsonbValue *v;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_COUNT(jb) != 1)
		return false;
	k.type = jbvString;
	k.val.string.val = "redacted";
	k.val.string.len = 8;
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	return v != NULL && v->type == jbvBool && v->val.boolean;
}

/*
 * Lift one row (the columns of ep.events) to the latest schema version of
 * its type. Returns true when it changed something.
 *
 * Every reader (and the worker) runs an upcaster as its function's owner,
 * with the search_path recorded at registration, through the owner
 * primitive: the owner can change the body, but gains nothing by it.
 * *held is the owner call in progress, if *entered: consecutive rows lifted
 * by functions of the same owner and path stay inside one call (the switch
 * costs more than a light upcaster); the caller leaves it when its batch is
 * done, and nothing but upcasters runs while it is held.
 */
static bool
ep_upcast_row(EpUpcastState *state, Datum *values, bool *isnull,
			  EpOwnerCall *held, bool *entered)
{
	text	   *type;
	EpUpcastEntry *e;
	int32		version;
	Datum		data;
	int			k;

	if (state == NULL || state->hash == NULL)
		return false;
	type = DatumGetTextPP(values[Anum_ep_events_event_type - 1]);
	e = hash_search(state->hash, &type, HASH_FIND, NULL);
	if (e == NULL)
		return false;
	version = DatumGetInt32(values[Anum_ep_events_schema_version - 1]);
	if (version >= e->latest)
		return false;

	data = values[Anum_ep_events_data - 1];
	if (!ep_is_redacted_payload(data))
	{
		for (k = Max(version, 1); k < e->latest; k++)
		{
			LOCAL_FCINFO(fcinfo, 1);
			EpUpcastLink *link = &e->links[k - 1];
			Datum		result;

			if (!OidIsValid(link->fn.fn_oid))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_FUNCTION),
						 errmsg("upcaster of event type \"%s\" from schema version %d no longer exists",
								text_to_cstring(type), k),
						 errdetail("Its function was dropped after it was registered."),
						 errhint("Register an upcaster again with ep.register_upcaster().")));
			InitFunctionCallInfoData(*fcinfo, &link->fn, 1, InvalidOid, NULL, NULL);
			fcinfo->args[0].value = data;
			fcinfo->args[0].isnull = false;

			if (*entered &&
				(held->owner != link->owner ||
				 !(held->search_path == link->search_path ||
				   (held->search_path != NULL && link->search_path != NULL &&
					strcmp(held->search_path, link->search_path) == 0))))
			{
				ep_owner_leave(held);
				*entered = false;
			}
			if (!*entered)
			{
				memset(held, 0, sizeof(*held));
				held->owner = link->owner;
				held->search_path = link->search_path;
				held->timeout_ms = -1;
				held->what = "upcaster of event type";
				held->name = e->key ? text_to_cstring(e->key) : NULL;
				ep_owner_enter(held);
				*entered = true;
			}
			result = FunctionCallInvoke(fcinfo);
			if (fcinfo->isnull)
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("upcaster %s of event type \"%s\" returned null",
								format_procedure(link->fn.fn_oid),
								text_to_cstring(type)),
						 errdetail("The upcaster lifts schema version %d to %d.", k, k + 1),
						 errhint("An upcaster must return the event's data at the next schema version.")));
			data = result;
		}
	}
	values[Anum_ep_events_data - 1] = data;
	values[Anum_ep_events_schema_version - 1] = Int32GetDatum(e->latest);
	return true;
}

bool
ep_upcast_values(EpUpcastState *state, Datum *values, bool *isnull)
{
	EpOwnerCall held;
	bool		entered = false;
	bool		changed;

	changed = ep_upcast_row(state, values, isnull, &held, &entered);
	if (entered)
		ep_owner_leave(&held);
	return changed;
}

void
ep_upcast_rows(EpUpcastState *state, int nrows, Datum **values, bool **isnull)
{
	EpOwnerCall held;
	bool		entered = false;
	int			i;

	for (i = 0; i < nrows; i++)
		(void) ep_upcast_row(state, values[i], isnull[i], &held, &entered);
	if (entered)
		ep_owner_leave(&held);
}

/*
 * ep.register_upcaster(event_type, from_schema_version, upcaster)
 *
 * Registers (or replaces) the link from from_schema_version to the next.
 * Only the extension owner (or a member of its role) may register: every
 * reader runs the upcasters.
 */
PG_FUNCTION_INFO_V1(ep_register_upcaster);
Datum
ep_register_upcaster(PG_FUNCTION_ARGS)
{
	const EpCatalog *cat = ep_catalog();
	text	   *type;
	int32		from;
	Oid			fn;
	HeapTuple	proctup;
	Form_pg_proc proc;
	EpSavedUser saved;
	Oid			argt[5] = {TEXTOID, INT4OID, OIDOID, NAMEOID, TEXTOID};
	Datum		args[5];
	AclResult	acl;
	char	   *search_path = ep_owner_current_search_path();

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_type, from_schema_version and upcaster must not be null")));
	type = PG_GETARG_TEXT_PP(0);
	from = PG_GETARG_INT32(1);
	fn = PG_GETARG_OID(2);
	if (VARSIZE_ANY_EXHDR(type) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event_type must be a non-empty string")));
	if (from < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_schema_version must be at least 1")));
	if (!has_privs_of_role(GetUserId(), cat->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to register an upcaster"),
				 errdetail("Every reader of the event store runs the upcasters."),
				 errhint("Register upcasters as the owner of the event_patterns extension.")));

	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(proctup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(proctup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset ||
		proc->pronargs != 1 || proc->proargtypes.values[0] != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("upcaster %s must take one jsonb argument", format_procedure(fn)),
				 errhint("Declare it as fn(data jsonb) RETURNS jsonb.")));
	if (proc->prorettype != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("upcaster %s must return jsonb", format_procedure(fn)),
				 errhint("Declare it as fn(data jsonb) RETURNS jsonb.")));
	ReleaseSysCache(proctup);
	acl = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));

	upcasters_relid = ep_up_relid();
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	args[0] = PointerGetDatum(type);
	args[1] = Int32GetDatum(from);
	args[2] = ObjectIdGetDatum(fn);
	args[3] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(saved.userid, false)));
	args[4] = CStringGetTextDatum(search_path);
	/* serialize registrations of one type: the chain check must hold */
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock("
							  "'ep.upcasters'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, "
							  "pg_catalog.hashtext($1))",
							  1, argt, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "upcaster lock failed");
	/*
	 * The chain must be contiguous from version 1. The check sees this
	 * transaction's own writes up to now (not read-only: a new command id),
	 * so a chain can be registered in one statement, e.g.
	 * SELECT ep.register_upcaster(t, 1, f1), ep.register_upcaster(t, 2, f2).
	 */
	if (from > 1)
	{
		if (SPI_execute_with_args("SELECT 1 FROM ep.upcasters WHERE event_type OPERATOR(pg_catalog.=) $1 "
								  "AND from_schema_version OPERATOR(pg_catalog.=) ($2 OPERATOR(pg_catalog.-) 1)",
								  2, argt, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "upcaster lookup failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("missing upcaster of event type \"%s\" from schema version %d",
							text_to_cstring(type), from - 1),
					 errdetail("A chain of upcasters must be contiguous from schema version 1."),
					 errhint("Register the upcaster from schema version %d first.", from - 1)));
	}
	if (SPI_execute_with_args(ep_catalog()->version < EP_VERSION_0_2 ?
							  "INSERT INTO ep.upcasters AS u (event_type, from_schema_version, upcaster, registered_by) "
							  "VALUES ($1, $2, $3::pg_catalog.regprocedure, $4) "
							  "ON CONFLICT (event_type, from_schema_version) DO UPDATE "
							  "SET upcaster = excluded.upcaster, registered_by = excluded.registered_by, "
							  "registered_at = pg_catalog.now()" :
							  "INSERT INTO ep.upcasters AS u (event_type, from_schema_version, upcaster, registered_by, "
							  "search_path) "
							  "VALUES ($1, $2, $3::pg_catalog.regprocedure, $4, $5) "
							  "ON CONFLICT (event_type, from_schema_version) DO UPDATE "
							  "SET upcaster = excluded.upcaster, registered_by = excluded.registered_by, "
							  "registered_at = pg_catalog.now(), search_path = excluded.search_path",
							  ep_catalog()->version < EP_VERSION_0_2 ? 4 : 5,
							  argt, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "upcaster insert failed");
	SPI_finish();
	ep_restore_user(&saved);

	/* tell every backend (and this one, at command end) to reload */
	CacheInvalidateRelcacheByRelid(upcasters_relid);
	PG_RETURN_VOID();
}

/*
 * ep.unregister_upcaster(event_type, from_schema_version): removes the last
 * link of a chain (removing any other would break its contiguity).
 */
PG_FUNCTION_INFO_V1(ep_unregister_upcaster);
Datum
ep_unregister_upcaster(PG_FUNCTION_ARGS)
{
	const EpCatalog *cat = ep_catalog();
	text	   *type;
	int32		from;
	EpSavedUser saved;
	Oid			argt[2] = {TEXTOID, INT4OID};
	Datum		args[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event_type and from_schema_version must not be null")));
	type = PG_GETARG_TEXT_PP(0);
	from = PG_GETARG_INT32(1);
	if (!has_privs_of_role(GetUserId(), cat->owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to unregister an upcaster"),
				 errhint("Unregister upcasters as the owner of the event_patterns extension.")));

	upcasters_relid = ep_up_relid();
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = PointerGetDatum(type);
	args[1] = Int32GetDatum(from);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock("
							  "'ep.upcasters'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, "
							  "pg_catalog.hashtext($1))",
							  1, argt, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "upcaster lock failed");
	if (SPI_execute_with_args("SELECT 1 FROM ep.upcasters WHERE event_type OPERATOR(pg_catalog.=) $1 "
							  "AND from_schema_version OPERATOR(pg_catalog.>) $2",
							  2, argt, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "upcaster lookup failed");
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("upcaster of event type \"%s\" from schema version %d is not the last of its chain",
						text_to_cstring(type), from),
				 errhint("Unregister the later links first.")));
	if (SPI_execute_with_args("DELETE FROM ep.upcasters WHERE event_type OPERATOR(pg_catalog.=) $1 "
							  "AND from_schema_version OPERATOR(pg_catalog.=) $2",
							  2, argt, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "upcaster delete failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no upcaster of event type \"%s\" from schema version %d",
						text_to_cstring(type), from)));
	SPI_finish();
	ep_restore_user(&saved);
	CacheInvalidateRelcacheByRelid(upcasters_relid);
	PG_RETURN_VOID();
}
