/*-------------------------------------------------------------------------
 *
 * projection_api.c
 *	  Checks behind ep.create_projection / ep.create_table_projection,
 *	  running a handler as its projection's owner, and inline projections.
 *
 * Handlers always run as the role that created the projection, never as
 * the superuser that runs the worker or as the appending role, through the
 * owner primitive (owner.c): security-restricted, with the search_path
 * recorded at creation, settings rolled back after the call, under the
 * time limit event_patterns.handler_timeout (or the projection's own).
 *
 * Inline projections: while at least one exists, the trigger
 * events_inline_projections (AFTER INSERT, row level) on ep.events calls
 * them in the appending transaction; an error in a handler aborts the
 * append. Nothing is stored about their progress.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "event_patterns.h"
#include "category.h"
#include "owner.h"
#include "projection.h"
#include "upcast.h"
#include "stream_read.h"

/*
 * Call a handler, ignoring its (void) result; a strict handler is not
 * called with a NULL argument.
 */
void
ep_call_handler(FmgrInfo *flinfo, int nargs, Datum *args, bool *nulls)
{
	LOCAL_FCINFO(fcinfo, 3);
	int			i;

	Assert(nargs <= 3);
	InitFunctionCallInfoData(*fcinfo, flinfo, nargs, InvalidOid, NULL, NULL);
	for (i = 0; i < nargs; i++)
	{
		if (nulls[i] && flinfo->fn_strict)
			return;
		fcinfo->args[i].value = args[i];
		fcinfo->args[i].isnull = nulls[i];
	}
	(void) FunctionCallInvoke(fcinfo);
}

/*
 * Decoded changes carry every row: a role may capture a table with
 * row-level security only when the policies do not apply to it (it owns
 * the table and RLS is not forced, or it bypasses RLS).
 */
void
ep_check_rls_bypass(Oid relid, Oid role)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Form_pg_class form;
	bool		applies;

	if (!HeapTupleIsValid(tup))
		return;
	form = (Form_pg_class) GETSTRUCT(tup);
	applies = form->relrowsecurity &&
		!(form->relowner == role && !form->relforcerowsecurity) &&
		!superuser_arg(role) && !has_bypassrls_privilege(role);
	if (applies)
	{
		char	   *relname = pstrdup(NameStr(form->relname));

		ReleaseSysCache(tup);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("table \"%s\" has row-level security that applies to role \"%s\"",
						relname, GetUserNameFromId(role, false)),
				 errdetail("Changes captured from the WAL carry every row; the policies could not hide any of them."),
				 errhint("Capture the table as its owner, or as a role with BYPASSRLS.")));
	}
	ReleaseSysCache(tup);
}

/*
 * The owner must still be allowed to run the handler and, for a table
 * projection, to read the source table (row-level security included).
 */
void
ep_handler_check_privileges(Oid handler, Oid owner, Oid source)
{
	if (pg_proc_aclcheck(handler, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(handler)),
				 errdetail("Projection handlers run as the role that created the projection.")));
	if (OidIsValid(source) &&
		pg_class_aclcheck(source, owner, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(source)),
				 errdetail("A table projection's owner must be able to read its source table.")));
	if (OidIsValid(source))
		ep_check_rls_bypass(source, owner);
}

/*
 * ep._check_handler(handler regprocedure, kind text): the handler of an
 * event projection takes (ep.events), that of a table projection takes
 * (text, jsonb, jsonb); both return void.
 */
PG_FUNCTION_INFO_V1(ep_check_handler);
Datum
ep_check_handler(PG_FUNCTION_ARGS)
{
	Oid			handler = PG_GETARG_OID(0);
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(1));
	HeapTuple	tup;
	Form_pg_proc proc;
	bool		ok;
	Oid			events_type = get_rel_type_id(ep_catalog()->events);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tup);

	if (strcmp(kind, "events") == 0)
		ok = proc->pronargs == 1 && proc->proargtypes.values[0] == events_type;
	else if (strcmp(kind, "message") == 0)
	{
		Oid			messages = get_relname_relid("messages", ep_catalog()->schema);

		ok = OidIsValid(messages) && proc->pronargs == 1 &&
			proc->proargtypes.values[0] == get_rel_type_id(messages);
	}
	else
		ok = proc->pronargs == 3 && proc->proargtypes.values[0] == TEXTOID &&
			proc->proargtypes.values[1] == JSONBOID &&
			proc->proargtypes.values[2] == JSONBOID;
	if (!ok || proc->prorettype != VOIDOID || proc->proretset || proc->prokind != PROKIND_FUNCTION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s cannot be a projection handler", format_procedure(handler)),
				 errhint(strcmp(kind, "events") == 0 ?
						 "An event projection's handler is a function (event ep.events) RETURNS void." :
						 strcmp(kind, "message") == 0 ?
						 "A message handler is a function (message ep.messages) RETURNS void." :
						 "A table projection's handler is a function (op text, old_row jsonb, new_row jsonb) RETURNS void.")));
	ReleaseSysCache(tup);

	ep_handler_check_privileges(handler, GetUserId(), InvalidOid);
	PG_RETURN_VOID();
}

/*
 * ep._check_table_source(source regclass): an ordinary, WAL-logged table
 * the caller can read, whose replica identity gives at least the key of
 * old rows (FULL gives whole old rows; DEFAULT with a primary key or
 * USING INDEX gives the key columns only).
 */
PG_FUNCTION_INFO_V1(ep_check_table_source);
Datum
ep_check_table_source(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	char		relkind;
	char		persistence;
	char		ident;
	bool		has_key;
	char	   *relname;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	relkind = rel->rd_rel->relkind;
	persistence = rel->rd_rel->relpersistence;
	ident = rel->rd_rel->relreplident;
	relname = pstrdup(RelationGetRelationName(rel));
	has_key = OidIsValid(RelationGetReplicaIndex(rel));
	relation_close(rel, AccessShareLock);

	if (relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an ordinary table", relname),
				 errhint(relkind == RELKIND_PARTITIONED_TABLE ?
						 "Create one table projection per partition." :
						 "Table projections capture the changes of ordinary tables.")));
	if (persistence != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not WAL-logged", relname),
				 errdetail("Changes of temporary and unlogged tables cannot be decoded.")));
	if (relid == ep_catalog()->events)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot create a table projection of ep.events"),
				 errhint("Use ep.create_projection() to project events.")));
	if (ident == REPLICA_IDENTITY_NOTHING ||
		(ident != REPLICA_IDENTITY_FULL && !has_key))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no replica identity to identify old rows", relname),
				 errdetail("UPDATE and DELETE would reach the handler without an old row."),
				 errhint("Add a primary key (old rows then carry the key columns) or run ALTER TABLE %s REPLICA IDENTITY FULL (old rows then carry every column).",
						 quote_identifier(relname))));
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", relname),
				 errdetail("A table projection's owner must be able to read its source table.")));
	ep_check_rls_bypass(relid, GetUserId());
	PG_RETURN_VOID();
}

/*
 * ep._inline_projection_trigger(): AFTER INSERT row trigger on ep.events.
 */
PG_FUNCTION_INFO_V1(ep_inline_projection_trigger);
Datum
ep_inline_projection_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	static SPIPlanPtr plans[2] = {NULL, NULL};
	int			old_schema = ep_catalog()->version < EP_VERSION_0_2 ? 1 : 0;
	HeapTuple	row;
	TupleDesc	desc;
	Datum		event;
	char	   *type;
	char	   *category;
	uint64		i;
	uint64		n;
	Oid		   *handlers;
	EpOwnerCall *calls;
	MemoryContext outer = CurrentMemoryContext;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._inline_projection_trigger() must be called as an AFTER INSERT row trigger")));

	row = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	type = SPI_getvalue(row, desc, Anum_ep_events_event_type);
	category = SPI_getvalue(row, desc, Anum_ep_events_category);
	event = heap_copy_tuple_as_datum(row, desc);
	{
		/* handlers see the latest schema version, like every read path */
		EpUpcastState *up = ep_upcast_begin();

		if (up != NULL && desc->natts >= Anum_ep_events_category)
		{
			Datum	   *values = palloc(sizeof(Datum) * desc->natts);
			bool	   *nulls = palloc(sizeof(bool) * desc->natts);

			heap_deform_tuple(row, desc, values, nulls);
			if (ep_upcast_values(up, values, nulls))
				event = heap_copy_tuple_as_datum(heap_form_tuple(desc, values, nulls), desc);
		}
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plans[old_schema] == NULL)
	{
		Oid			argtypes[2] = {TEXTOID, TEXTOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare(psprintf("SELECT d.handler::pg_catalog.oid, d.owner::pg_catalog.oid, d.name,"
									"       %s"
									"  FROM ep.projection_defs d"
									" WHERE d.mode OPERATOR(pg_catalog.=) 'inline'"
									"   AND d.status OPERATOR(pg_catalog.=) 'running'"
									"   AND (d.event_types IS NULL OR $1 OPERATOR(pg_catalog.=) ANY (d.event_types))"
									"   AND (d.category IS NULL OR d.category OPERATOR(pg_catalog.=) $2)"
									" ORDER BY d.projection_id",
									old_schema ? "'pg_catalog, pg_temp', NULL::pg_catalog.float8" :
									"d.search_path, pg_catalog.date_part('epoch', d.handler_timeout)"),
						   2, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[old_schema] = plan;
	}
	{
		Datum		args[2] = {CStringGetTextDatum(type), CStringGetTextDatum(category)};
		EpSavedUser saved;

		/* the catalog is read as the extension owner: RLS must not hide rows */
		ep_become_owner(&saved);
		if (SPI_execute_plan(plans[old_schema], args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read inline projections");
		ep_restore_user(&saved);
	}
	n = SPI_processed;
	handlers = MemoryContextAlloc(outer, sizeof(Oid) * (n + 1));
	calls = MemoryContextAllocZero(outer, sizeof(EpOwnerCall) * (n + 1));
	for (i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		v;

		handlers[i] = DatumGetObjectId(SPI_getbinval(t, d, 1, &isnull));
		calls[i].owner = DatumGetObjectId(SPI_getbinval(t, d, 2, &isnull));
		calls[i].name = MemoryContextStrdup(outer, SPI_getvalue(t, d, 3));
		calls[i].search_path = MemoryContextStrdup(outer, SPI_getvalue(t, d, 4));
		v = SPI_getbinval(t, d, 5, &isnull);
		calls[i].timeout_ms = ep_owner_capped_timeout(calls[i].owner, isnull ? -1 :
													  (int) Min(DatumGetFloat8(v) * 1000.0, (double) INT_MAX));
		calls[i].what = "inline projection handler of";
	}
	SPI_finish();

	for (i = 0; i < n; i++)
	{
		FmgrInfo	flinfo;
		bool		isnull = false;

		/* an owned category the projection's owner may not read (category.c) */
		if (!ep_category_allowed(calls[i].owner, category, strlen(category), EP_CAT_READ))
			continue;
		ep_handler_check_privileges(handlers[i], calls[i].owner, InvalidOid);
		fmgr_info(handlers[i], &flinfo);
		ep_owner_enter(&calls[i]);
		ep_call_handler(&flinfo, 1, &event, &isnull);
		ep_owner_leave(&calls[i]);
	}
	return PointerGetDatum(NULL);
}
