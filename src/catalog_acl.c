/*-------------------------------------------------------------------------
 *
 * catalog_acl.c
 *	  Removing rows of the extension's catalog tables on behalf of their
 *	  owners, without granting DELETE on those tables to anybody.
 *
 * The API functions run as their caller (SECURITY INVOKER): row-level
 * security shows each role its own projections, jobs, views and
 * subscriptions. A table-level UPDATE or DELETE privilege, though, would
 * also let any role LOCK those tables in ACCESS EXCLUSIVE mode and stop the
 * background worker for every other role. Users therefore hold only SELECT,
 * INSERT and UPDATE of the columns the API changes (neither allows a lock
 * stronger than ROW EXCLUSIVE), and deletions go through
 * ep._catalog_delete(), which checks that the current user -- the role
 * whose code runs, the object's owner inside a handler or job -- has the
 * privileges of the row's owner, and then deletes as the extension owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "owner.h"

PG_FUNCTION_INFO_V1(ep_catalog_delete);

typedef struct EpCatalogKind
{
	const char *kind;
	const char *what;			/* for messages */
	const char *owner_sql;		/* $1 = key; returns the owner's oid */
	const char *delete_sql[3];	/* $1 = key, $2 = owner; NULL-terminated */
	const char *blocker_sql;	/* $1 = key; a row names what still needs it */
	const char *blocker_msg;	/* errmsg with %s (key) and %s (blocker) */
} EpCatalogKind;

static const EpCatalogKind ep_catalog_kinds[] =
{
	{"projection", "projection",
		"SELECT owner::pg_catalog.oid FROM ep.projection_defs"
		" WHERE projection_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		{"DELETE FROM ep.parked WHERE projection_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		 "DELETE FROM ep.projection_defs WHERE projection_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		NULL}},
	{"parked", "projection",
		"SELECT owner::pg_catalog.oid FROM ep.projection_defs"
		" WHERE projection_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		{"DELETE FROM ep.parked WHERE projection_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		NULL}},
	{"job", "job",
		"SELECT owner::pg_catalog.oid FROM ep.job_registry"
		" WHERE job_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		{"DELETE FROM ep.job_registry WHERE job_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		NULL}},
	/* a view's refresh schedule is the job of the same owner named after it */
	{"view", "incremental view",
		"SELECT owner::pg_catalog.oid FROM ep.ivm_views"
		" WHERE view_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		{"DELETE FROM ep.job_registry j USING ep.ivm_views v"
		 " WHERE v.view_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
		 "   AND j.kind OPERATOR(pg_catalog.=) 'view_refresh'"
		 "   AND j.target OPERATOR(pg_catalog.=) v.name"
		 "   AND j.owner::pg_catalog.oid OPERATOR(pg_catalog.=) $2",
		 "DELETE FROM ep.ivm_views WHERE view_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
		NULL},
		/* an incremental view (still there) that reads this one */
		"SELECT o.view_rel::pg_catalog.text FROM ep.ivm_views v, ep.ivm_views o"
		"  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) o.view_rel::pg_catalog.oid"
		" WHERE v.view_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8"
		"   AND o.view_id OPERATOR(pg_catalog.<>) v.view_id"
		"   AND v.storage_rel OPERATOR(pg_catalog.=) ANY (o.base_rels) LIMIT 1",
	"cannot drop incremental view \"%s\" because incremental view %s reads it"},
	{"subscription", "subscription",
		"SELECT owner::pg_catalog.oid FROM ep.subscriptions"
		" WHERE name OPERATOR(pg_catalog.=) $1",
		{"DELETE FROM ep.subscriptions WHERE name OPERATOR(pg_catalog.=) $1",
		NULL}},
};

/* The user-facing name of the object (the view's relation for views). */
static char *
ep_catalog_object_name(const EpCatalogKind *k, Datum key)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {key};

	if (strcmp(k->kind, "view") == 0 &&
		SPI_execute_with_args("SELECT name FROM ep.ivm_views"
							  " WHERE view_id OPERATOR(pg_catalog.=) $1::pg_catalog.int8",
							  1, types, args, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return text_to_cstring(DatumGetTextPP(key));
}

/*
 * ep._catalog_delete(kind text, key text) RETURNS boolean
 *
 * Removes the catalog rows of one object (false: there is none). Raises
 * 42501 when the current user lacks the privileges of its owner.
 */
Datum
ep_catalog_delete(PG_FUNCTION_ARGS)
{
	const EpCatalogKind *k = NULL;
	char	   *kind;
	Oid			caller = GetUserId();
	Oid			types[2] = {TEXTOID, OIDOID};
	Datum		args[2];
	Oid			owner;
	bool		isnull;
	bool		found = false;
	EpSavedUser saved;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (i = 0; i < lengthof(ep_catalog_kinds); i++)
		if (strcmp(ep_catalog_kinds[i].kind, kind) == 0)
			k = &ep_catalog_kinds[i];
	if (k == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown catalog object kind \"%s\"", kind)));
	args[0] = PointerGetDatum(PG_GETARG_TEXT_PP(1));

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(k->owner_sql, 1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the owner of a %s", k->what);
	if (SPI_processed == 1)
	{
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull || !has_privs_of_role(caller, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to drop %s \"%s\"", k->what,
							text_to_cstring(DatumGetTextPP(args[0]))),
					 errdetail("Only its owner, a member of the owner's role, or a superuser may drop it.")));
		args[1] = ObjectIdGetDatum(owner);
		if (k->blocker_sql)
		{
			if (SPI_execute_with_args(k->blocker_sql, 1, types, args, NULL, false, 1) != SPI_OK_SELECT)
				elog(ERROR, "could not look for objects that need a %s", k->what);
			if (SPI_processed == 1)
				ereport(ERROR,
						(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
						 errmsg(k->blocker_msg, ep_catalog_object_name(k, args[0]),
								SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
						 errhint("Drop the view that reads it first.")));
		}
		for (i = 0; k->delete_sql[i] != NULL; i++)
			if (SPI_execute_with_args(k->delete_sql[i], 2, types, args, NULL, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "could not drop a %s", k->what);
		found = true;
	}
	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_BOOL(found);
}
