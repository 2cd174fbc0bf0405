/*-------------------------------------------------------------------------
 *
 * saga.c
 *	  Sagas: definitions (ep.define_saga, ep.drop_saga), instances
 *	  (ep.start_saga, ep.complete_step, ep.fail_step) and the runner of
 *	  their steps (the worker step "sagas" and ep.run_sagas).
 *
 * The state machine itself is SQL (src/sql/50_saga.sql, ep._saga_advance):
 * this file runs the user code and hands the outcome over. Its rules:
 *
 *	- One step at a time per saga: a step runs with the saga's row of
 *	  ep.saga_instances locked (FOR UPDATE SKIP LOCKED: the worker and
 *	  ep.run_sagas skip a saga somebody else is running); ep.complete_step
 *	  and ep.fail_step lock the same row. Different sagas run independently.
 *	- Exactly once: the action (or compensation) runs in a subtransaction of
 *	  the transaction that records its outcome (new state, history event,
 *	  and whatever the action wrote or sent). The worker commits steps in
 *	  groups (EP_SAGA_GROUP steps or EP_SAGA_GROUP_MS, each step in a
 *	  subtransaction of its own): a crash before the commit leaves the
 *	  group's steps due, with nothing of them committed; after the commit
 *	  their sagas have moved on. A failing call is rolled back alone and
 *	  counted as an attempt.
 *	- Trust: the call goes through the owner primitive (owner.c) as the
 *	  saga type's owner, with the search_path recorded by ep.define_saga and
 *	  the time limit of the step (its timeout, at most
 *	  event_patterns.handler_timeout). Deferrable constraints are made
 *	  immediate for the call, so its triggers fire as the owner; a call
 *	  that defers them itself fails (PostgreSQL refuses to fire deferred
 *	  triggers inside a security-restricted operation), so nothing of it
 *	  runs later, at commit, with the rights of whoever commits. The owner must still exist and still
 *	  have EXECUTE on the function. The extension's own statements run as
 *	  the extension owner (ep_become_owner) and qualify every name.
 *	- Rights: starting a saga, finishing its steps and driving it with
 *	  ep.run_sagas need the privileges of the saga type's owner (membership
 *	  of that role); a saga a role has no rights on looks like one that
 *	  does not exist. Only the owner may redefine or drop a saga type.
 *	- A call that ends the worker (code that swallows the cancel of its
 *	  time limit is terminated, owner.c) must not end it again and again:
 *	  the worker notes in shared memory which step it is calling (per
 *	  database: a hash of the saga id, the step, running or compensating);
 *	  a worker that finds the note of its predecessor records that call as
 *	  a failed attempt ("the call did not finish") before anything else, so
 *	  the step is retried, then fails for good like any other.
 *	- Fairness: an owner whose call in the worker took longer than
 *	  event_patterns.projection_slow_call is set aside for as long again,
 *	  so slow owners get at most about half of the worker.
 *	- Timeouts: a step's deadline is set when it becomes due; the worker
 *	  fails a step still due or waiting at its deadline. The worker sleeps
 *	  no longer than the next retry or deadline (ep_worker_due_at).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "event_patterns.h"
#include "launcher.h"
#include "owner.h"
#include "saga.h"
#include "shmem.h"
#include "worker.h"

#define EP_SAGA_ROUND_MS		200		/* longest round of the worker step */
#define EP_SAGA_BATCH			200		/* due sagas read per round */
#define EP_SAGA_RECHECK_MS		20		/* skipped sagas are looked at again after */
#define EP_SAGA_GROUP			32		/* steps per worker transaction ... */
#define EP_SAGA_GROUP_MS		20		/* ... or this long */

/* ---------------------------------------------------------------------
 * SPI helpers (as the extension owner, every name qualified)
 * ---------------------------------------------------------------------
 */
static void
saga_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
		  int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "saga statement failed (%s): %s", SPI_result_code_string(ret), sql);
}

static bool
saga_tables_installed(void)
{
	const EpCatalog *cat = ep_catalog();

	return cat->version >= EP_VERSION_0_2 &&
		OidIsValid(get_relname_relid("saga_instances", cat->schema));
}

static void
saga_require_tables(void)
{
	if (!saga_tables_installed())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("sagas need version 0.2 of event_patterns"),
				 errhint("Run ALTER EXTENSION event_patterns UPDATE.")));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n, const char *what)
{
	char	   *s;

	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", what)));
	s = text_to_cstring(PG_GETARG_TEXT_PP(n));
	if (s[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	return s;
}

/* ---------------------------------------------------------------------
 * Shared memory: the call each database's worker is in
 * ---------------------------------------------------------------------
 */
#define EP_SAGA_MAX_DB		64

typedef struct EpSagaCall
{
	Oid			dbid;			/* InvalidOid: free entry */
	bool		in_call;
	int32		id_hash;		/* hashtext(saga_id) */
	int32		id_chars;		/* characters of the id in id_head */
	char		id_head[NAMEDATALEN];	/* the id's first bytes (whole characters) */
	int32		step_no;
	bool		compensating;
} EpSagaCall;

typedef struct EpSagaShared
{
	slock_t		mutex;
	EpSagaCall	calls[EP_SAGA_MAX_DB];
	pg_atomic_uint64 changes;	/* commits that started or answered sagas */
} EpSagaShared;

static EpSagaShared *saga_shared = NULL;

Size
ep_saga_shmem_size(void)
{
	return sizeof(EpSagaShared);
}

void
ep_saga_shmem_init(void)
{
	bool		found;

	saga_shared = ShmemInitStruct("event_patterns sagas", sizeof(EpSagaShared), &found);
	if (!found)
	{
		memset(saga_shared, 0, sizeof(EpSagaShared));
		SpinLockInit(&saga_shared->mutex);
		pg_atomic_init_u64(&saga_shared->changes, 1);
	}
}

/*
 * Commits that start, answer, define or drop sagas (or run steps in a
 * session) bump a shared counter; a worker that found nothing due skips
 * its saga query until the counter moves, a saga falls due or
 * EP_SAGA_IDLE_RECHECK_MS passes. The bump happens at commit, so a worker
 * that read the counter before it sees the commit's rows, or reads again.
 */
#define EP_SAGA_IDLE_RECHECK_MS	10000

static bool saga_change_pending = false;
static bool saga_callback_registered = false;

static void
saga_xact_callback(XactEvent event, void *arg)
{
	if (!saga_change_pending)
		return;
	if (event == XACT_EVENT_COMMIT && saga_shared != NULL)
		pg_atomic_fetch_add_u64(&saga_shared->changes, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		saga_change_pending = false;
}

static void
saga_changed(void)
{
	if (!saga_callback_registered)
	{
		RegisterXactCallback(saga_xact_callback, NULL);
		saga_callback_registered = true;
	}
	saga_change_pending = true;
}

/* Note (in_call) or clear the current call of this database's worker. */
static void
saga_note_call(bool in_call, text *saga_id, int32 step_no, bool compensating)
{
	int32		id_hash = 0;
	int			head_len = 0;
	int			id_chars = 0;
	const char *id = NULL;
	int			i;
	int			free_slot = -1;

	if (saga_shared == NULL)
		return;
	if (in_call)
	{
		/* the hash and the head of the id: a collision of both is not for finding */
		id_hash = DatumGetInt32(DirectFunctionCall1Coll(hashtext, C_COLLATION_OID,
														PointerGetDatum(saga_id)));
		id = VARDATA_ANY(saga_id);
		head_len = pg_mbcliplen(id, VARSIZE_ANY_EXHDR(saga_id), NAMEDATALEN - 1);
		id_chars = pg_mbstrlen_with_len(id, head_len);
	}
	SpinLockAcquire(&saga_shared->mutex);
	for (i = 0; i < EP_SAGA_MAX_DB; i++)
	{
		if (saga_shared->calls[i].dbid == MyDatabaseId)
			break;
		if (free_slot < 0 && saga_shared->calls[i].dbid == InvalidOid)
			free_slot = i;
	}
	if (i == EP_SAGA_MAX_DB)
		i = free_slot;
	if (i >= 0)
	{
		saga_shared->calls[i].dbid = in_call ? MyDatabaseId : InvalidOid;
		saga_shared->calls[i].in_call = in_call;
		saga_shared->calls[i].id_hash = id_hash;
		saga_shared->calls[i].id_chars = id_chars;
		memset(saga_shared->calls[i].id_head, 0, NAMEDATALEN);
		if (head_len > 0)
			memcpy(saga_shared->calls[i].id_head, id, head_len);
		saga_shared->calls[i].step_no = step_no;
		saga_shared->calls[i].compensating = compensating;
	}
	SpinLockRelease(&saga_shared->mutex);
}

/* The call a previous worker of this database did not finish, if any. */
static bool
saga_take_unfinished(EpSagaCall *out)
{
	int			i;
	bool		found = false;

	if (saga_shared == NULL)
		return false;
	SpinLockAcquire(&saga_shared->mutex);
	for (i = 0; i < EP_SAGA_MAX_DB; i++)
		if (saga_shared->calls[i].dbid == MyDatabaseId && saga_shared->calls[i].in_call)
		{
			*out = saga_shared->calls[i];
			saga_shared->calls[i].dbid = InvalidOid;
			saga_shared->calls[i].in_call = false;
			found = true;
			break;
		}
	SpinLockRelease(&saga_shared->mutex);
	return found;
}

/* ---------------------------------------------------------------------
 * Definitions
 * ---------------------------------------------------------------------
 */

/*
 * The function a step names, looked up with the caller's search_path:
 * "name" or "schema.name" means name(text, jsonb); a full signature
 * "name(text, jsonb)" is also accepted. It must return jsonb (not a set),
 * be a plain function outside any temporary schema, and the caller must
 * be allowed to execute it.
 */
static Oid
saga_resolve_function(const char *spec, const char *step, const char *what)
{
	Oid			argtypes[2] = {TEXTOID, JSONBOID};
	Oid			fn;
	HeapTuple	tup;
	Form_pg_proc proc;
	AclResult	acl;

	if (strchr(spec, '(') != NULL)
	{
		Datum		d = DirectFunctionCall1(to_regprocedure, CStringGetTextDatum(spec));

		fn = d == (Datum) 0 ? InvalidOid : DatumGetObjectId(d);
	}
	else
	{
		List	   *names = stringToQualifiedNameList(spec);

		fn = LookupFuncName(names, 2, argtypes, true);
	}
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("%s function %s(saga_id text, data jsonb) of saga step \"%s\" does not exist",
						what, spec, step),
				 errhint("Actions and compensations are functions fn(saga_id text, data jsonb) RETURNS jsonb, found with the current search_path.")));

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->pronargs != 2 ||
		proc->proargtypes.values[0] != TEXTOID || proc->proargtypes.values[1] != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s %s of saga step \"%s\" must be a function (saga_id text, data jsonb)",
						what, format_procedure(fn), step)));
	if (proc->prorettype != JSONBOID || proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s %s of saga step \"%s\" must return jsonb",
						what, format_procedure(fn), step)));
	if (isAnyTempNamespace(proc->pronamespace))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s of saga step \"%s\" must not be a temporary function",
						what, format_procedure(fn), step)));
	ReleaseSysCache(tup);

	acl = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));
	return fn;
}

/* Owner of a saga type (InvalidOid: none); needs SPI, as the extension owner. */
static Oid
saga_type_owner(const char *saga_type)
{
	Oid			t[1] = {TEXTOID};
	Datum		v[1] = {CStringGetTextDatum(saga_type)};
	bool		isnull;

	saga_exec("SELECT owner::pg_catalog.oid FROM ep.saga_types"
			  " WHERE saga_type OPERATOR(pg_catalog.=) $1 FOR SHARE",
			  1, t, v, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return InvalidOid;
	return DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static int64
saga_active_count(const char *saga_type)
{
	Oid			t[1] = {TEXTOID};
	Datum		v[1] = {CStringGetTextDatum(saga_type)};
	bool		isnull;

	saga_exec("SELECT pg_catalog.count(*) FROM ep.saga_instances"
			  " WHERE saga_type OPERATOR(pg_catalog.=) $1"
			  "   AND status OPERATOR(pg_catalog.=) ANY ('{running,compensating}'::pg_catalog.text[])",
			  1, t, v, NULL, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
saga_check_type_name(const char *saga_type)
{
	const char *p;

	if (!((saga_type[0] >= 'a' && saga_type[0] <= 'z') ||
		  (saga_type[0] >= 'A' && saga_type[0] <= 'Z') || saga_type[0] == '_') ||
		strlen(saga_type) >= NAMEDATALEN)
		goto bad;
	for (p = saga_type; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '_'))
			goto bad;
	return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid saga type \"%s\"", saga_type),
			 errdetail("A saga type is a letter or underscore followed by letters, digits or underscores (at most 63): its history is the category \"saga_<type>\" of the event store, and a category cannot contain \"-\".")));
}

/*
 * ep.define_saga(saga_type text, steps jsonb) RETURNS void
 */
PG_FUNCTION_INFO_V1(ep_define_saga);
Datum
ep_define_saga(PG_FUNCTION_ARGS)
{
	char	   *saga_type = text_arg(fcinfo, 0, "saga_type");
	Jsonb	   *steps = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	Oid			caller = GetUserId();
	char	   *search_path = ep_owner_current_search_path();
	EpSavedUser saved;
	int			nsteps;
	int			i;
	char	  **names;
	char	  **actions;
	char	  **comps;
	Datum	   *timeouts;
	bool	   *timeout_null;
	int32	   *retries;
	Datum	   *delays;
	Oid		   *action_fn;
	Oid		   *comp_fn;
	Oid			owner;
	Oid			cat_owner = InvalidOid;
	char	   *category;
	bool		isnull;

	saga_changed();
	saga_check_type_name(saga_type);
	if (steps == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("saga steps must not be NULL")));

	SPI_connect();
	ep_become_owner(&saved);
	saga_require_tables();

	/* the shape of the steps (names, intervals, ranges) */
	{
		Oid			t[1] = {JSONBOID};
		Datum		v[1] = {JsonbPGetDatum(steps)};
		MemoryContext cxt = CurrentMemoryContext;

		saga_exec("SELECT step_no, name, action, compensation, timeout, retries, retry_delay"
				  "  FROM ep._saga_parse_steps($1)", 1, t, v, NULL, SPI_OK_SELECT);
		nsteps = (int) SPI_processed;
		names = palloc(sizeof(char *) * nsteps);
		actions = palloc(sizeof(char *) * nsteps);
		comps = palloc(sizeof(char *) * nsteps);
		timeouts = palloc(sizeof(Datum) * nsteps);
		timeout_null = palloc(sizeof(bool) * nsteps);
		retries = palloc(sizeof(int32) * nsteps);
		delays = palloc(sizeof(Datum) * nsteps);
		action_fn = palloc(sizeof(Oid) * nsteps);
		comp_fn = palloc(sizeof(Oid) * nsteps);
		for (i = 0; i < nsteps; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			MemoryContext old = MemoryContextSwitchTo(cxt);
			Datum		d;

			names[i] = SPI_getvalue(tup, desc, 2);
			actions[i] = SPI_getvalue(tup, desc, 3);
			comps[i] = SPI_getvalue(tup, desc, 4);
			d = SPI_getbinval(tup, desc, 5, &timeout_null[i]);
			timeouts[i] = timeout_null[i] ? (Datum) 0 : datumCopy(d, false, 16);
			retries[i] = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
			d = SPI_getbinval(tup, desc, 7, &isnull);
			delays[i] = datumCopy(d, false, 16);
			MemoryContextSwitchTo(old);
		}
	}

	/* the functions, as the caller, with the caller's search_path */
	ep_restore_user(&saved);
	for (i = 0; i < nsteps; i++)
	{
		action_fn[i] = saga_resolve_function(actions[i], names[i], "action");
		comp_fn[i] = comps[i] ? saga_resolve_function(comps[i], names[i], "compensation") : InvalidOid;
	}
	ep_become_owner(&saved);

	/* a type is redefined only by its owner, and only while no saga is active */
	owner = saga_type_owner(saga_type);
	if (OidIsValid(owner) && owner != caller)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("saga type \"%s\" belongs to role \"%s\"", saga_type,
						GetUserNameFromId(owner, true) ? GetUserNameFromId(owner, true) : "?"),
				 errhint("Only the owner of a saga type may redefine it.")));
	if (OidIsValid(owner) && saga_active_count(saga_type) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("saga type \"%s\" has sagas running or compensating", saga_type),
				 errhint("Redefine it once they have finished (see ep.sagas), or define a new saga type.")));

	/* the history category: the owner's, or nobody's yet */
	category = psprintf("saga_%s", saga_type);
	{
		Oid			t[1] = {TEXTOID};
		Datum		v[1] = {CStringGetTextDatum(category)};

		saga_exec("SELECT owner::pg_catalog.oid FROM ep.category_owners"
				  " WHERE category OPERATOR(pg_catalog.=) $1", 1, t, v, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			cat_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 1, &isnull));
	}
	if (OidIsValid(cat_owner) && cat_owner != caller)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("category \"%s\" of the event store belongs to another role", category),
				 errdetail("The history of saga type \"%s\" is kept in category \"%s\", owned by its owner.",
						   saga_type, category)));

	/* write it */
	{
		Oid			t[4] = {TEXTOID, OIDOID, TEXTOID, JSONBOID};
		Datum		v[4];

		v[0] = CStringGetTextDatum(saga_type);
		v[1] = ObjectIdGetDatum(caller);
		v[2] = CStringGetTextDatum(search_path);
		v[3] = JsonbPGetDatum(steps);
		saga_exec("INSERT INTO ep.saga_types AS t (saga_type, owner, search_path, definition)"
				  " VALUES ($1, $2::pg_catalog.regrole, $3, $4)"
				  " ON CONFLICT (saga_type) DO UPDATE"
				  "   SET search_path = excluded.search_path, definition = excluded.definition,"
				  "       updated_at = pg_catalog.now()",
				  4, t, v, NULL, SPI_OK_INSERT);
		saga_exec("DELETE FROM ep.saga_steps WHERE saga_type OPERATOR(pg_catalog.=) $1",
				  1, t, v, NULL, SPI_OK_DELETE);
	}
	for (i = 0; i < nsteps; i++)
	{
		Oid			t[8] = {TEXTOID, INT4OID, TEXTOID, OIDOID, OIDOID, INTERVALOID, INT4OID, INTERVALOID};
		Datum		v[8];
		char		n[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

		v[0] = CStringGetTextDatum(saga_type);
		v[1] = Int32GetDatum(i + 1);
		v[2] = CStringGetTextDatum(names[i]);
		v[3] = ObjectIdGetDatum(action_fn[i]);
		v[4] = ObjectIdGetDatum(comp_fn[i]);
		if (!OidIsValid(comp_fn[i]))
			n[4] = 'n';
		v[5] = timeouts[i];
		if (timeout_null[i])
			n[5] = 'n';
		v[6] = Int32GetDatum(retries[i]);
		v[7] = delays[i];
		saga_exec("INSERT INTO ep.saga_steps (saga_type, step_no, name, action, compensation,"
				  "                           timeout, retries, retry_delay)"
				  " VALUES ($1, $2, $3, $4::pg_catalog.regprocedure, $5::pg_catalog.regprocedure,"
				  "         $6, $7, $8)",
				  8, t, v, n, SPI_OK_INSERT);
	}
	if (!OidIsValid(cat_owner))
	{
		Oid			t[2] = {TEXTOID, OIDOID};
		Datum		v[2] = {CStringGetTextDatum(category), ObjectIdGetDatum(caller)};

		saga_exec("SELECT ep.set_category_owner($1, $2::pg_catalog.regrole)",
				  2, t, v, NULL, SPI_OK_SELECT);
	}
	ep_restore_user(&saved);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * ep.drop_saga(saga_type text) RETURNS void
 */
PG_FUNCTION_INFO_V1(ep_drop_saga);
Datum
ep_drop_saga(PG_FUNCTION_ARGS)
{
	char	   *saga_type = text_arg(fcinfo, 0, "saga_type");
	Oid			caller = GetUserId();
	EpSavedUser saved;
	Oid			owner;
	Oid			t[1] = {TEXTOID};
	Datum		v[1] = {CStringGetTextDatum(saga_type)};

	saga_changed();
	SPI_connect();
	ep_become_owner(&saved);
	saga_require_tables();
	owner = saga_type_owner(saga_type);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga type \"%s\" does not exist", saga_type)));
	if (owner != caller && !superuser_arg(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be the owner of saga type \"%s\" to drop it", saga_type)));
	if (saga_active_count(saga_type) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("saga type \"%s\" has sagas running or compensating", saga_type)));
	saga_exec("DELETE FROM ep.saga_instances WHERE saga_type OPERATOR(pg_catalog.=) $1",
			  1, t, v, NULL, SPI_OK_DELETE);
	saga_exec("DELETE FROM ep.saga_types WHERE saga_type OPERATOR(pg_catalog.=) $1",
			  1, t, v, NULL, SPI_OK_DELETE);
	ep_restore_user(&saved);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Instances
 * ---------------------------------------------------------------------
 */

/*
 * ep.start_saga(saga_type text, saga_id text, input jsonb) RETURNS void
 */
PG_FUNCTION_INFO_V1(ep_start_saga);
Datum
ep_start_saga(PG_FUNCTION_ARGS)
{
	char	   *saga_type = text_arg(fcinfo, 0, "saga_type");
	char	   *saga_id = text_arg(fcinfo, 1, "saga_id");
	Jsonb	   *input = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	Oid			caller = GetUserId();
	EpSavedUser saved;
	Oid			owner;

	saga_changed();
	if (input != NULL && !JB_ROOT_IS_OBJECT(input))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("saga input must be a JSON object")));

	SPI_connect();
	ep_become_owner(&saved);
	saga_require_tables();
	owner = saga_type_owner(saga_type);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga type \"%s\" does not exist", saga_type),
				 errhint("Define it with ep.define_saga().")));
	if (!has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to start a saga of type \"%s\"", saga_type),
				 errdetail("Its steps run as role \"%s\".", GetUserNameFromId(owner, true)),
				 errhint("Starting a saga needs the privileges of the saga type's owner (membership in that role).")));
	{
		Oid			t[4] = {TEXTOID, TEXTOID, JSONBOID, OIDOID};
		Datum		v[4];
		char		n[4] = {' ', ' ', ' ', ' '};

		v[0] = CStringGetTextDatum(saga_type);
		v[1] = CStringGetTextDatum(saga_id);
		v[2] = input ? JsonbPGetDatum(input) : (Datum) 0;
		if (input == NULL)
			n[2] = 'n';
		v[3] = ObjectIdGetDatum(owner);
		saga_exec("SELECT ep._saga_start($1, $2, $3, $4::pg_catalog.regrole)",
				  4, t, v, n, SPI_OK_SELECT);
	}
	ep_restore_user(&saved);
	SPI_finish();
	PG_RETURN_VOID();
}

/* complete_step / fail_step */
static void
saga_reply(FunctionCallInfo fcinfo, bool ok)
{
	char	   *saga_id = text_arg(fcinfo, 0, "saga_id");
	char	   *step = text_arg(fcinfo, 1, "step");
	Oid			caller = GetUserId();
	EpSavedUser saved;
	Oid			owner = InvalidOid;
	bool		isnull;
	Oid			t[5] = {TEXTOID, TEXTOID, BOOLOID, JSONBOID, TEXTOID};
	Datum		v[5];
	char		n[5] = {' ', ' ', ' ', ' ', ' '};

	if (!ok && PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("error must not be NULL"),
				 errhint("Say why the step failed.")));

	SPI_connect();
	ep_become_owner(&saved);
	saga_require_tables();
	v[0] = CStringGetTextDatum(saga_id);
	saga_exec("SELECT owner::pg_catalog.oid FROM ep.saga_instances"
			  " WHERE saga_id OPERATOR(pg_catalog.=) $1", 1, t, v, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	/* a saga one has no rights on looks like one that does not exist */
	if (!OidIsValid(owner) || !has_privs_of_role(caller, owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("saga \"%s\" does not exist", saga_id),
				 errhint("Finishing a step needs the privileges of the saga type's owner.")));

	v[1] = CStringGetTextDatum(step);
	v[2] = BoolGetDatum(ok);
	if (ok)
	{
		if (PG_ARGISNULL(2))
			n[3] = 'n';
		else
			v[3] = JsonbPGetDatum(PG_GETARG_JSONB_P(2));
		n[4] = 'n';
	}
	else
	{
		n[3] = 'n';
		v[4] = PointerGetDatum(PG_GETARG_TEXT_PP(2));
	}
	saga_exec("SELECT ep._saga_reply($1, $2, $3, $4, $5)", 5, t, v, n, SPI_OK_SELECT);
	ep_restore_user(&saved);
	SPI_finish();
}

PG_FUNCTION_INFO_V1(ep_complete_step);
Datum
ep_complete_step(PG_FUNCTION_ARGS)
{
	saga_changed();
	saga_reply(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ep_fail_step);
Datum
ep_fail_step(PG_FUNCTION_ARGS)
{
	saga_changed();
	saga_reply(fcinfo, false);
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * Running steps
 * ---------------------------------------------------------------------
 */

/*
 * Call fn(saga_id, data) as owner, in a subtransaction. Returns true with
 * *result (NULL when the function returned NULL) on success; false with
 * *error on failure, everything the call did rolled back.
 */
static bool
saga_call(Oid fn, Oid owner, const char *search_path, int timeout_ms,
		  const char *what, const char *name, text *saga_id, Jsonb *data,
		  Jsonb **result, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	volatile bool ok = false;
	HeapTuple	tup;
	AclResult	acl;

	*result = NULL;
	*error = NULL;

	/* checked at every call: the owner or its rights may have gone */
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
	{
		*error = pstrdup("the role that owns the saga type does not exist any more");
		return false;
	}
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
	{
		*error = psprintf("the %s function (OID %u) does not exist any more", what, fn);
		return false;
	}
	ReleaseSysCache(tup);
	acl = pg_proc_aclcheck(fn, owner, ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
	{
		*error = psprintf("permission denied for function %s", format_procedure(fn));
		return false;
	}

	/*
	 * Deferrable constraints and triggers act as immediate during the call:
	 * they fire at the end of each statement of the owner's code, as the
	 * owner. (Whatever the transaction had queued fires now, as the caller.)
	 */
	if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not make the constraints immediate");

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		EpOwnerCall call;
		FmgrInfo	flinfo;
		LOCAL_FCINFO(fcinfo, 2);
		Datum		r;

		memset(&call, 0, sizeof(call));
		call.owner = owner;
		call.search_path = search_path;
		call.timeout_ms = timeout_ms;
		call.what = what;
		call.name = name;
		ep_owner_enter(&call);

		fmgr_info(fn, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(saga_id);
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = JsonbPGetDatum(data);
		fcinfo->args[1].isnull = false;
		r = FunctionCallInvoke(fcinfo);
		if (!fcinfo->isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			*result = DatumGetJsonbPCopy(r);
			MemoryContextSwitchTo(old);
		}

		/*
		 * Triggers the code deferred anyway (SET CONSTRAINTS ... DEFERRED)
		 * must not fire at commit with the rights of whoever commits; inside
		 * the security-restricted call PostgreSQL refuses to fire them, so
		 * the call fails.
		 */
		if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not fire the deferred triggers of the %s", what);

		ep_owner_leave(&call);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
		if (ep_owner_timed_out())
			*error = psprintf("%s exceeded its time limit of %d ms",
							  what, timeout_ms > 0 ? timeout_ms : ep_guc_handler_timeout_ms);
		else
			*error = pstrdup(ed->message);
		FreeErrorData(ed);
	}
	PG_END_TRY();
	return ok;
}

/*
 * Fairness in the worker: an owner whose call took longer than
 * event_patterns.projection_slow_call is set aside for as long as the call
 * took, so that the other owners' steps get at least as much of the
 * worker as the slow ones (the time limit still bounds each call).
 */
extern int	ep_guc_projection_slow_call_ms;

#define EP_SAGA_MAX_SLOW	64

static struct
{
	Oid			owner;
	TimestampTz until;
}			slow_owners[EP_SAGA_MAX_SLOW];

static bool
saga_owner_set_aside(Oid owner)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	for (i = 0; i < EP_SAGA_MAX_SLOW; i++)
		if (slow_owners[i].owner == owner && slow_owners[i].until > now)
			return true;
	return false;
}

static void
saga_set_owner_aside(Oid owner, TimestampTz until)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;
	int			use = -1;

	for (i = 0; i < EP_SAGA_MAX_SLOW; i++)
	{
		if (slow_owners[i].owner == owner)
		{
			use = i;
			break;
		}
		if (use < 0 && slow_owners[i].until <= now)
			use = i;
	}
	if (use < 0)
		return;
	slow_owners[use].owner = owner;
	slow_owners[use].until = until;
}

/*
 * Run the current step of one saga if it is due (or fail it if its
 * deadline passed). Needs a transaction; connects to SPI itself (so that
 * what a step allocates is freed with it); runs as whoever calls it and
 * switches itself. Returns true when a step ran.
 */
static const char *select_sql =
"SELECT i.status OPERATOR(pg_catalog.=) 'compensating',"
"       i.deadline OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp(),"
"       i.phase OPERATOR(pg_catalog.=) 'due'"
"         AND i.next_run_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp(),"
"       i.owner::pg_catalog.oid, t.search_path, s.name,"
"       CASE WHEN i.status OPERATOR(pg_catalog.=) 'compensating'"
"            THEN s.compensation ELSE s.action END::pg_catalog.oid,"
"       (pg_catalog.date_part('epoch', s.timeout) OPERATOR(pg_catalog.*) 1000)::pg_catalog.int8,"
"       i.data, i.step_no"
"  FROM ep.saga_instances i"
"  JOIN ep.saga_types t ON t.saga_type OPERATOR(pg_catalog.=) i.saga_type"
"  JOIN ep.saga_steps s ON s.saga_type OPERATOR(pg_catalog.=) i.saga_type"
"                      AND s.step_no OPERATOR(pg_catalog.=) i.step_no"
" WHERE i.saga_id OPERATOR(pg_catalog.=) $1"
"   AND i.status OPERATOR(pg_catalog.=) ANY ('{running,compensating}'::pg_catalog.text[])"
"   AND ($2 OPERATOR(pg_catalog.=) 0"
"        OR pg_catalog.pg_has_role($2, i.owner::pg_catalog.oid, 'USAGE'))"
"   FOR UPDATE OF i SKIP LOCKED";
static SPIPlanPtr select_plan = NULL;
static const char *advance_sql = "SELECT ep._saga_advance($1, $2, $3, $4)";
static SPIPlanPtr advance_plan = NULL;

static bool
saga_run_one(text *saga_id, Oid only_for, bool note)
{
	EpSavedUser saved;
	Oid			t[2] = {TEXTOID, OIDOID};
	Datum		v[2] = {PointerGetDatum(saga_id), ObjectIdGetDatum(only_for)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	bool		timed_out;
	bool		due;
	bool		compensating;
	Oid			owner;
	char	   *search_path;
	char	   *step;
	Oid			fn;
	int64		timeout_ms;
	Jsonb	   *data;
	Jsonb	   *result = NULL;
	char	   *error = NULL;
	const char *outcome;
	bool		ok;
	char	   *what;
	int			ret;
	int32		step_no;
	TimestampTz call_start;

	SPI_connect();
	ep_become_owner(&saved);
	ret = SPI_execute_plan(ep_spi_keep_plan(&select_plan, select_sql, 2, t), v, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read saga \"%s\": %s", text_to_cstring(saga_id),
			 SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		ep_restore_user(&saved);
		SPI_finish();
		return false;			/* finished, or somebody else runs it */
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	compensating = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull));
	timed_out = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
	if (isnull || compensating)
		timed_out = false;
	due = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	if (isnull)
		due = false;
	owner = DatumGetObjectId(SPI_getbinval(tup, desc, 4, &isnull));
	search_path = SPI_getvalue(tup, desc, 5);
	step = SPI_getvalue(tup, desc, 6);
	fn = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	timeout_ms = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	if (isnull)
		timeout_ms = -1;
	data = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	step_no = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));

	if ((!timed_out && !due) || (note && saga_owner_set_aside(owner)))
	{
		ep_restore_user(&saved);
		SPI_finish();
		return false;
	}

	if (timed_out)
	{
		outcome = "timeout";
		ok = true;
	}
	else
	{
		int			limit_ms;

		/* the step's timeout bounds each call, within handler_timeout */
		if (timeout_ms > 0 && (ep_guc_handler_timeout_ms == 0 ||
							   timeout_ms < ep_guc_handler_timeout_ms))
			limit_ms = (int) Max(timeout_ms, 1);
		else
			limit_ms = -1;
		what = psprintf("saga %s", compensating ? "compensation" : "action");
		ep_restore_user(&saved);
		pgstat_report_activity(STATE_RUNNING, what);
		if (note)
		{
			saga_note_call(true, saga_id, step_no, compensating);
		}
		call_start = GetCurrentTimestamp();
		ok = saga_call(fn, owner, search_path, limit_ms, what, step,
					   saga_id, data, &result, &error);
		if (note)
		{
			TimestampTz call_end = GetCurrentTimestamp();

			saga_note_call(false, NULL, 0, false);
			if (ep_guc_projection_slow_call_ms > 0 &&
				TimestampDifferenceExceeds(call_start, call_end, ep_guc_projection_slow_call_ms))
				saga_set_owner_aside(owner, call_end + (call_end - call_start));
		}
		ep_become_owner(&saved);
		if (!ok)
			outcome = "error";
		else if (result == NULL && !compensating)
			outcome = "wait";
		else
			outcome = "ok";
	}

	{
		Oid			at[4] = {TEXTOID, TEXTOID, JSONBOID, TEXTOID};
		Datum		av[4];
		char		an[4] = {' ', ' ', ' ', ' '};

		av[0] = PointerGetDatum(saga_id);
		av[1] = CStringGetTextDatum(outcome);
		av[2] = result ? JsonbPGetDatum(result) : (Datum) 0;
		if (result == NULL)
			an[2] = 'n';
		av[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
		if (error == NULL)
			an[3] = 'n';
		ret = SPI_execute_plan(ep_spi_keep_plan(&advance_plan, advance_sql, 4, at), av, an, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not record the step of saga \"%s\": %s", text_to_cstring(saga_id),
				 SPI_result_code_string(ret));
	}
	ep_restore_user(&saved);
	SPI_finish();
	return true;
}

/*
 * Due sagas (ids, allocated in cxt) and the time the next one
 * falls due (DT_NOEND: none). Needs a transaction and SPI.
 */
static List *
saga_due(int limit, Oid only_for, TimestampTz *next_due, MemoryContext cxt)
{
	EpSavedUser saved;
	List	   *ids = NIL;
	Oid			t[2] = {INT4OID, OIDOID};
	Datum		v[2] = {Int32GetDatum(limit), ObjectIdGetDatum(only_for)};
	bool		isnull;
	uint64		i;
	Datum		d;

	ep_become_owner(&saved);
	saga_exec("SELECT saga_id FROM ("
			  "  SELECT saga_id, owner, next_run_at AS at FROM ep.saga_instances"
			  "   WHERE phase OPERATOR(pg_catalog.=) 'due'"
			  "     AND next_run_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
			  "  UNION ALL"
			  "  SELECT saga_id, owner, deadline FROM ep.saga_instances"
			  "   WHERE deadline OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()"
			  "     AND status OPERATOR(pg_catalog.=) 'running') d"
			  " WHERE $2 OPERATOR(pg_catalog.=) 0"
			  "    OR pg_catalog.pg_has_role($2, d.owner::pg_catalog.oid, 'USAGE')"
			  " GROUP BY saga_id ORDER BY pg_catalog.min(at) LIMIT $1",
			  2, t, v, NULL, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		ids = lappend(ids, DatumGetTextPCopy(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 1, &isnull)));
		MemoryContextSwitchTo(old);
	}
	if (next_due)
	{
		saga_exec("SELECT LEAST("
				  "  (SELECT pg_catalog.min(next_run_at) FROM ep.saga_instances"
				  "    WHERE phase OPERATOR(pg_catalog.=) 'due'),"
				  "  (SELECT pg_catalog.min(deadline) FROM ep.saga_instances"
				  "    WHERE deadline IS NOT NULL AND status OPERATOR(pg_catalog.=) 'running'))",
				  0, NULL, NULL, NULL, SPI_OK_SELECT);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		*next_due = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	}
	ep_restore_user(&saved);
	return ids;
}

/*
 * ep.run_sagas(max_steps integer DEFAULT 1000) RETURNS integer
 *
 * Runs due steps in the caller's transaction (each step's call in its own
 * subtransaction), for the sagas whose owner's privileges the caller has.
 */
PG_FUNCTION_INFO_V1(ep_run_sagas);
Datum
ep_run_sagas(PG_FUNCTION_ARGS)
{
	int32		max_steps = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	Oid			caller = GetUserId();
	/* the sagas of other owners are neither run nor locked */
	Oid			only_for = superuser_arg(caller) ? InvalidOid : caller;
	int32		ran = 0;

	saga_changed();
	if (max_steps <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_steps must be positive")));
	SPI_connect();
	{
		EpSavedUser saved;

		ep_become_owner(&saved);
		saga_require_tables();
		ep_restore_user(&saved);
	}
	while (ran < max_steps)
	{
		List	   *ids = saga_due(EP_SAGA_BATCH, only_for, NULL, CurrentMemoryContext);
		ListCell   *lc;
		int32		before = ran;

		foreach(lc, ids)
		{
			CHECK_FOR_INTERRUPTS();
			if (saga_run_one((text *) lfirst(lc), only_for, false))
				ran++;
			if (ran >= max_steps)
				break;
		}
		if (ran == before)
			break;
	}
	SPI_finish();
	PG_RETURN_INT32(ran);
}

/*
 * A previous worker of this database died in the middle of a call (it was
 * terminated: the code ignored its time limit, or somebody stopped the
 * worker): that call counts as a failed attempt of its step, recorded in
 * the worker's first transaction, so that the same call cannot end the
 * worker for ever. Needs a transaction and SPI.
 */
static void
saga_fail_unfinished(const EpSagaCall *c)
{
	EpSavedUser saved;
	Oid			t[5] = {INT4OID, INT4OID, TEXTOID, INT4OID, TEXTOID};
	Datum		v[5];

	v[0] = Int32GetDatum(c->id_hash);
	v[1] = Int32GetDatum(c->step_no);
	v[2] = CStringGetTextDatum(c->compensating ? "compensating" : "running");
	v[3] = Int32GetDatum(c->id_chars);
	v[4] = CStringGetTextDatum(c->id_head);
	ep_become_owner(&saved);
	saga_exec("SELECT i.saga_id, ep._saga_advance(i.saga_id, 'error', NULL,"
			  "       'the call did not finish: the worker running it was terminated"
			  " (code that ignores its time limit is stopped; see event_patterns.handler_timeout)')"
			  "  FROM ep.saga_instances i"
			  " WHERE pg_catalog.hashtext(i.saga_id COLLATE \"C\") OPERATOR(pg_catalog.=) $1"
			  "   AND pg_catalog.left(i.saga_id, $4) OPERATOR(pg_catalog.=) $5"
			  "   AND i.step_no OPERATOR(pg_catalog.=) $2"
			  "   AND i.status OPERATOR(pg_catalog.=) $3"
			  "   AND i.phase OPERATOR(pg_catalog.=) 'due'",
			  5, t, v, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("event_patterns: the step of saga \"%s\" that was running when the worker was terminated counts as a failed attempt",
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))));
	ep_restore_user(&saved);
}

static int	step_failures = 0;

/* the worker's last saga query found nothing due (see saga_changed) */
static bool idle_valid = false;
static uint64 idle_changes = 0;
static TimestampTz idle_next_due = 0;
static TimestampTz idle_since = 0;

/*
 * One step in a subtransaction of the worker's transaction: an error of the
 * extension's own bookkeeping (the call itself is guarded in saga_call)
 * rolls back that step alone and is logged; the step stays due. True when
 * a step ran.
 */
static bool
saga_run_guarded(text *saga_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	volatile bool ran = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		ran = saga_run_one(saga_id, InvalidOid, true);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = resowner;
		step_failures++;
		ereport(LOG,
				(errmsg("event_patterns: a step of saga \"%s\" could not be recorded: %s",
						text_to_cstring(saga_id), ed->message),
				 errdetail("The step is tried again later.")));
		FreeErrorData(ed);
	}
	PG_END_TRY();
	return ran;
}

/*
 * The worker step: the due sagas, for at most EP_SAGA_ROUND_MS, in
 * transactions of up to EP_SAGA_GROUP steps or EP_SAGA_GROUP_MS (one
 * commit, one WAL flush for the group; each step in a subtransaction, its
 * saga's row locked until the commit); true when more are due. A crash
 * loses a group whole: its steps are due again, none half done.
 */

bool
ep_saga_step(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool more = false;
	List	   *volatile ids = NIL;
	TimestampTz next_due = DT_NOEND;
	TimestampTz started = GetCurrentTimestamp();
	ListCell   *volatile lc;
	volatile bool ran_any = false;

	uint64		changes;

	step_failures = 0;

	if (RecoveryInProgress() || saga_shared == NULL)
		return false;
	/* nothing was due last time and nothing changed since: no query */
	changes = pg_atomic_read_u64(&saga_shared->changes);
	if (idle_valid && changes == idle_changes &&
		(idle_next_due == DT_NOEND || started < idle_next_due) &&
		!TimestampDifferenceExceeds(idle_since, started, EP_SAGA_IDLE_RECHECK_MS))
		return false;
	idle_valid = false;

	PG_TRY();
	{
		EpSagaCall unfinished;

		ep_bgw_start_xact();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (saga_take_unfinished(&unfinished) && saga_tables_installed())
			saga_fail_unfinished(&unfinished);
		if (saga_tables_installed())
			ids = saga_due(EP_SAGA_BATCH, InvalidOid, &next_due, cxt);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
		if (ids == NIL)
		{
			idle_valid = true;
			idle_changes = changes;
			idle_next_due = next_due;
			idle_since = started;
		}
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(cxt);
		ed = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("event_patterns: could not read the due sagas: %s", ed->message)));
		FreeErrorData(ed);
		return false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	lc = list_head(ids);
	while (lc != NULL && !more)
	{
		TimestampTz group_start = GetCurrentTimestamp();

		PG_TRY();
		{
			int			in_group = 0;

			ep_bgw_start_xact();
			PushActiveSnapshot(GetTransactionSnapshot());
			while (lc != NULL && in_group < EP_SAGA_GROUP &&
				   !TimestampDifferenceExceeds(group_start, GetCurrentTimestamp(), EP_SAGA_GROUP_MS))
			{
				text	   *saga_id = (text *) lfirst(lc);

				if (TimestampDifferenceExceeds(started, GetCurrentTimestamp(), EP_SAGA_ROUND_MS))
				{
					more = true;
					break;
				}
				lc = lnext(ids, lc);
				if (saga_run_guarded(saga_id))
				{
					in_group++;
					ran_any = true;
				}
			}
			PopActiveSnapshot();
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			ErrorData  *ed;

			MemoryContextSwitchTo(cxt);
			ed = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			step_failures++;
			ereport(LOG,
					(errmsg("event_patterns: saga steps could not be committed: %s", ed->message),
					 errdetail("They are tried again later.")));
			FreeErrorData(ed);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}
	if (step_failures > 0)
	{
		/* after failures that are not the steps' own, do not spin */
		ep_worker_due_at(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 Min(1000L << Min(step_failures - 1, 8), 60000L)));
		return false;
	}
	if (!more && list_length(ids) == EP_SAGA_BATCH && ran_any)
		more = true;
	if (!more && next_due != DT_NOEND)
	{
		/*
		 * What is still due was skipped (another session runs it) or fell
		 * due just now: look again shortly, without spinning.
		 */
		ep_worker_due_at(Max(next_due,
							 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), EP_SAGA_RECHECK_MS)));
	}
	return more;
}

void
ep_saga_init(void)
{
	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("sagas", ep_saga_step);
}
