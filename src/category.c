/*-------------------------------------------------------------------------
 *
 * category.c
 *	  Category ownership: several services share one event store, each
 *	  owning the streams of its categories (DESIGN.md §2, "Category
 *	  ownership"). ep.set_category_owner, ep.grant_category,
 *	  ep.revoke_category, the checks every read and write path makes, and
 *	  the function behind the row-level security policies of ep.events,
 *	  ep.streams and ep.snapshots.
 *
 * A category without a row in ep.category_owners is open to every role,
 * as before. An owned category may be used by its owner, by the roles
 * granted privileges on it (read, append, admin = delete, metadata,
 * redact) and by the roles that have the privileges of either
 * (has_privs_of_role: members with INHERIT, superusers); the extension
 * owner may always.
 *
 * Cache: every backend keeps both tables in a hash table by category,
 * loaded on first use. The statement trigger ep._category_changed on both
 * tables sends a relcache invalidation of ep.category_owners, which the
 * callback below turns into "reload on next use"; a transaction that
 * changes the tables sees its change at the next command, every other
 * backend at its next command after the commit. The tables are read with
 * a fresh snapshot (the catalog snapshot), not the transaction's (a REPEATABLE READ
 * transaction would otherwise cache rows that later invalidations never
 * correct). Memory of the previous load is freed only by the next load,
 * which only starts at the entry of a function of this file; callers
 * that keep results get palloc'd copies.
 *
 * A database whose objects are still at 0.1 has no category tables:
 * every check passes there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "event_patterns.h"
#include "category.h"
#include "owner.h"
#include "stream_read.h"

typedef struct EpCategoryEntry
{
	text	   *key;			/* hash key: pointer to the category */
	Oid			owner;
	int			ngrants;
	Oid		   *grantees;
	uint8	   *privs;
} EpCategoryEntry;

static MemoryContext cache_cxt = NULL;
static HTAB *cache = NULL;
static long cache_count = 0;
static bool cache_valid = false;
static Oid	owners_relid = InvalidOid;
static Oid	grants_relid = InvalidOid;
static bool callback_registered = false;

static void
ep_category_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == owners_relid || relid == grants_relid)
		cache_valid = false;
}

static EpCategoryEntry *
ep_category_entry(text *category, bool create)
{
	bool		found;
	EpCategoryEntry *e = hash_search(cache, &category, create ? HASH_ENTER : HASH_FIND, &found);

	if (create && !found)
	{
		e->key = DatumGetTextPCopy(PointerGetDatum(category));
		e->owner = InvalidOid;
		e->ngrants = 0;
		e->grantees = NULL;
		e->privs = NULL;
	}
	return e;
}

/* (Re)load both tables; false on a 0.1 database (nothing owned there). */
static bool
ep_category_load(void)
{
	const EpCatalog *cat = ep_catalog();
	HASHCTL		ctl;
	Snapshot	snap;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;

	if (cat->version < EP_VERSION_0_2)
		return false;
	if (cache_valid)
		return true;

	if (!callback_registered)
	{
		ep_register_relcache_callback(ep_category_relcache_cb);
		callback_registered = true;
	}
	owners_relid = get_relname_relid("category_owners", cat->schema);
	grants_relid = get_relname_relid("category_grants", cat->schema);
	if (!OidIsValid(owners_relid) || !OidIsValid(grants_relid))
		return false;

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(CacheMemoryContext, "event_patterns categories",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(cache_cxt);
	cache = NULL;
	cache_count = 0;

	/* an invalidation arriving while loading makes the next use load again */
	cache_valid = true;

	old = MemoryContextSwitchTo(cache_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(text *);
	ctl.entrysize = sizeof(EpCategoryEntry);
	ctl.hash = ep_text_key_hash;
	ctl.match = ep_text_key_match;
	ctl.hcxt = cache_cxt;
	cache = hash_create("event_patterns categories", 16, &ctl,
						HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	MemoryContextSwitchTo(old);

	/*
	 * A fresh snapshot (for a relation without a syscache, the catalog
	 * snapshot is taken anew); unlike GetLatestSnapshot it may be taken in
	 * parallel mode too (the policies' function is parallel safe).
	 */
	snap = RegisterSnapshot(GetCatalogSnapshot(owners_relid));

	rel = table_open(owners_relid, AccessShareLock);
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		c = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);
		Datum		o = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);
		EpCategoryEntry *e;

		old = MemoryContextSwitchTo(cache_cxt);
		e = ep_category_entry(DatumGetTextPP(c), true);
		e->owner = DatumGetObjectId(o);
		MemoryContextSwitchTo(old);
		cache_count++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	rel = table_open(grants_relid, AccessShareLock);
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		TupleDesc	desc = RelationGetDescr(rel);
		bool		isnull;
		text	   *c = DatumGetTextPP(heap_getattr(tup, 1, desc, &isnull));
		EpCategoryEntry *e = ep_category_entry(c, false);
		uint8		p = 0;

		if (e == NULL)
			continue;			/* grants of a category that has no owner */
		if (DatumGetBool(heap_getattr(tup, 3, desc, &isnull)))
			p |= EP_CAT_READ;
		if (DatumGetBool(heap_getattr(tup, 4, desc, &isnull)))
			p |= EP_CAT_APPEND;
		if (DatumGetBool(heap_getattr(tup, 5, desc, &isnull)))
			p |= EP_CAT_ADMIN;
		old = MemoryContextSwitchTo(cache_cxt);
		if (e->ngrants == 0)
		{
			e->grantees = palloc(sizeof(Oid) * 4);
			e->privs = palloc(sizeof(uint8) * 4);
		}
		else if ((e->ngrants & (e->ngrants - 1)) == 0 && e->ngrants >= 4)
		{
			e->grantees = repalloc(e->grantees, sizeof(Oid) * e->ngrants * 2);
			e->privs = repalloc(e->privs, sizeof(uint8) * e->ngrants * 2);
		}
		e->grantees[e->ngrants] = DatumGetObjectId(heap_getattr(tup, 2, desc, &isnull));
		e->privs[e->ngrants] = p;
		e->ngrants++;
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);
	return true;
}

bool
ep_category_any(void)
{
	if (cache_valid)
		return cache_count > 0;
	return ep_category_load() && cache_count > 0;
}

static bool
ep_category_entry_allows(EpCategoryEntry *e, Oid role, int priv)
{
	int			i;

	if (role == e->owner || has_privs_of_role(role, e->owner) ||
		has_privs_of_role(role, ep_catalog()->owner))
		return true;
	for (i = 0; i < e->ngrants; i++)
		if ((e->privs[i] & priv) == priv && has_privs_of_role(role, e->grantees[i]))
			return true;
	return false;
}

/* The entry of an owned category, or NULL. */
static EpCategoryEntry *
ep_category_lookup(const char *cat, int len)
{
	text	   *key;
	EpCategoryEntry *e;

	if (!ep_category_any())
		return NULL;
	key = cstring_to_text_with_len(cat, len);
	e = ep_category_entry(key, false);
	pfree(key);
	return e;
}

bool
ep_category_allowed(Oid role, const char *cat, int len, int priv)
{
	EpCategoryEntry *e = ep_category_lookup(cat, len);

	return e == NULL || ep_category_entry_allows(e, role, priv);
}

static const char *
ep_category_priv_name(int priv)
{
	switch (priv)
	{
		case EP_CAT_READ:
			return "read";
		case EP_CAT_APPEND:
			return "append";
		default:
			return "admin";
	}
}

void
ep_category_check(Oid role, const char *cat, int len, int priv, const char *action)
{
	EpCategoryEntry *e = ep_category_lookup(cat, len);

	if (e != NULL && !ep_category_entry_allows(e, role, priv))
	{
		char	   *c = pnstrdup(cat, len);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s category \"%s\"", action, c),
				 errdetail("Category \"%s\" is owned by role \"%s\"; role \"%s\" has no \"%s\" privilege on it.",
						   c, GetUserNameFromId(e->owner, true) ? GetUserNameFromId(e->owner, true) : "?",
						   GetUserNameFromId(role, false), ep_category_priv_name(priv)),
				 errhint("The category's owner can grant it: SELECT ep.grant_category('%s', '%s', '{%s}');",
						 c, GetUserNameFromId(role, false), ep_category_priv_name(priv))));
	}
}

void
ep_category_check_stream(text *stream, int priv, const char *action)
{
	const char *s;
	int			len;
	const char *dash;

	if (!ep_category_any())
		return;
	s = VARDATA_ANY(stream);
	len = VARSIZE_ANY_EXHDR(stream);
	dash = memchr(s, '-', len);
	ep_category_check(GetUserId(), s, dash ? (int) (dash - s) : len, priv, action);
}

text	  **
ep_category_hidden(Oid role, int *n)
{
	HASH_SEQ_STATUS st;
	EpCategoryEntry *e;
	text	  **out;
	int			k = 0;

	*n = 0;
	if (!ep_category_any())
		return NULL;
	out = palloc(sizeof(text *) * cache_count);
	hash_seq_init(&st, cache);
	while ((e = hash_seq_search(&st)) != NULL)
	{
		if (!ep_category_entry_allows(e, role, EP_CAT_READ))
			out[k++] = DatumGetTextPCopy(PointerGetDatum(e->key));
	}
	if (k == 0)
	{
		pfree(out);
		return NULL;
	}
	*n = k;
	return out;
}

bool
ep_category_in(text **hidden, int n, text *category)
{
	int			len = VARSIZE_ANY_EXHDR(category);
	int			i;

	for (i = 0; i < n; i++)
		if (VARSIZE_ANY_EXHDR(hidden[i]) == len &&
			memcmp(VARDATA_ANY(hidden[i]), VARDATA_ANY(category), len) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------------
 * SQL functions
 * ---------------------------------------------------------------------
 */

/*
 * ep._unreadable_categories(): the owned categories the current user may
 * not read. The row-level security policies call it in a scalar subquery,
 * evaluated once per query.
 */
PG_FUNCTION_INFO_V1(ep_unreadable_categories);
Datum
ep_unreadable_categories(PG_FUNCTION_ARGS)
{
	int			n;
	text	  **hidden = ep_category_hidden(GetUserId(), &n);
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		d[i] = PointerGetDatum(hidden[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * ep._category_check_read(category, role): raises 42501 unless role may
 * read the category (NULL category: nothing to check).
 */
PG_FUNCTION_INFO_V1(ep_category_check_read);
Datum
ep_category_check_read(PG_FUNCTION_ARGS)
{
	text	   *c;

	if (PG_ARGISNULL(0))
		PG_RETURN_VOID();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));
	c = PG_GETARG_TEXT_PP(0);
	ep_category_check(PG_GETARG_OID(1), VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c), EP_CAT_READ,
					  "read");
	PG_RETURN_VOID();
}

/* ep._category_may_read(category, role): may the role read the category? */
PG_FUNCTION_INFO_V1(ep_category_may_read);
Datum
ep_category_may_read(PG_FUNCTION_ARGS)
{
	text	   *c;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	c = PG_GETARG_TEXT_PP(0);
	PG_RETURN_BOOL(ep_category_allowed(PG_GETARG_OID(1), VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c),
									   EP_CAT_READ));
}

/* Trigger on both tables: every backend reloads its cache. */
PG_FUNCTION_INFO_V1(ep_category_changed);
Datum
ep_category_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			nsp;
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._category_changed() must be called as a trigger")));
	nsp = RelationGetNamespace(trigdata->tg_relation);
	relid = get_relname_relid("category_owners", nsp);
	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	cache_valid = false;
	return PointerGetDatum(NULL);
}

static text *
ep_category_arg(FunctionCallInfo fcinfo)
{
	text	   *c;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("category must not be null")));
	c = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(c) == 0 || memchr(VARDATA_ANY(c), '-', VARSIZE_ANY_EXHDR(c)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid category \"%s\"", text_to_cstring(c)),
				 errdetail("A category is the part of a stream id before its first \"-\": it is not empty and contains no \"-\".")));
	return c;
}

static void
ep_category_require_02(void)
{
	if (ep_catalog()->version < EP_VERSION_0_2)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("category ownership needs version 0.2 of extension \"event_patterns\""),
				 errhint("Run ALTER EXTENSION event_patterns UPDATE.")));
}

/*
 * The current user may manage the category: the extension owner (or a
 * role with its privileges, superusers included), or the current owner.
 * Returns the current owner (InvalidOid when none).
 */
static Oid
ep_category_check_manage(text *category, const char *what)
{
	Oid			user = GetUserId();
	char	   *c = text_to_cstring(category);
	EpCategoryEntry *e = ep_category_lookup(VARDATA_ANY(category), VARSIZE_ANY_EXHDR(category));
	Oid			owner = e ? e->owner : InvalidOid;

	if (has_privs_of_role(user, ep_catalog()->owner))
		return owner;
	if (OidIsValid(owner) && has_privs_of_role(user, owner))
		return owner;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s of category \"%s\"", what, c),
			 OidIsValid(owner) ?
			 errdetail("Only the category's owner (role \"%s\") or the owner of extension \"event_patterns\" may do that.",
					   GetUserNameFromId(owner, true) ? GetUserNameFromId(owner, true) : "?") :
			 errdetail("The category has no owner yet: only the owner of extension \"event_patterns\" may give it one.")));
	return InvalidOid;
}

static void
ep_category_exec(const char *sql, int nargs, Oid *argtypes, Datum *args, const char *nulls)
{
	EpSavedUser saved;
	int			ret;

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args(sql, nargs, argtypes, args, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "statement failed (%s): %s", SPI_result_code_string(ret), sql);
	SPI_finish();
	ep_restore_user(&saved);
	CommandCounterIncrement();
}

/*
 * ep.set_category_owner(category, owner): give the category an owner, or
 * another one; NULL makes it open to every role again (its grants go).
 */
PG_FUNCTION_INFO_V1(ep_set_category_owner);
Datum
ep_set_category_owner(PG_FUNCTION_ARGS)
{
	text	   *category;
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	Datum		args[2];

	ep_category_require_02();
	category = ep_category_arg(fcinfo);
	ep_category_check_manage(category, "change the owner");
	args[0] = PointerGetDatum(category);
	if (PG_ARGISNULL(1))
	{
		ep_category_exec("DELETE FROM ep.category_grants g WHERE g.category OPERATOR(pg_catalog.=) $1",
						 1, argtypes, args, NULL);
		ep_category_exec("DELETE FROM ep.category_owners o WHERE o.category OPERATOR(pg_catalog.=) $1",
						 1, argtypes, args, NULL);
		PG_RETURN_VOID();
	}
	args[1] = PG_GETARG_DATUM(1);
	ep_category_exec("INSERT INTO ep.category_owners AS o (category, owner) "
					 "VALUES ($1, $2::pg_catalog.regrole) "
					 "ON CONFLICT (category) DO UPDATE SET owner = excluded.owner, "
					 "updated_at = pg_catalog.now()",
					 2, argtypes, args, NULL);
	PG_RETURN_VOID();
}

/* Parse privileges text[] into a mask; 22023 for an unknown one. */
static int
ep_category_privs_arg(FunctionCallInfo fcinfo, int argno)
{
	ArrayType  *a;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			mask = 0;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("privileges must not be null")));
	a = PG_GETARG_ARRAYTYPE_P(argno);
	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		char	   *p;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("privileges must not contain NULL")));
		p = TextDatumGetCString(elems[i]);
		if (pg_strcasecmp(p, "read") == 0)
			mask |= EP_CAT_READ;
		else if (pg_strcasecmp(p, "append") == 0)
			mask |= EP_CAT_APPEND;
		else if (pg_strcasecmp(p, "admin") == 0)
			mask |= EP_CAT_ADMIN;
		else if (pg_strcasecmp(p, "all") == 0)
			mask |= EP_CAT_READ | EP_CAT_APPEND | EP_CAT_ADMIN;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown category privilege \"%s\"", p),
					 errhint("The privileges are \"read\", \"append\" and \"admin\" (delete, metadata, redact), or \"all\".")));
	}
	if (mask == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("privileges must name at least one privilege")));
	return mask;
}

static void
ep_category_grant_revoke(FunctionCallInfo fcinfo, bool grant)
{
	text	   *category;
	int			mask;
	Oid			argtypes[5] = {TEXTOID, OIDOID, BOOLOID, BOOLOID, BOOLOID};
	Datum		args[5];

	ep_category_require_02();
	category = ep_category_arg(fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("grantee must not be null")));
	mask = ep_category_privs_arg(fcinfo, 2);
	if (!OidIsValid(ep_category_check_manage(category, grant ? "grant privileges" : "revoke privileges")))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("category \"%s\" has no owner", text_to_cstring(category)),
				 errdetail("Every role may use a category without an owner."),
				 errhint("Give it one first with ep.set_category_owner().")));
	args[0] = PointerGetDatum(category);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = BoolGetDatum((mask & EP_CAT_READ) != 0);
	args[3] = BoolGetDatum((mask & EP_CAT_APPEND) != 0);
	args[4] = BoolGetDatum((mask & EP_CAT_ADMIN) != 0);
	if (grant)
		ep_category_exec("INSERT INTO ep.category_grants AS g (category, grantee, may_read, may_append, may_admin) "
						 "VALUES ($1, $2::pg_catalog.regrole, $3, $4, $5) "
						 "ON CONFLICT (category, grantee) DO UPDATE "
						 "SET may_read = g.may_read OR $3, may_append = g.may_append OR $4, "
						 "may_admin = g.may_admin OR $5, updated_at = pg_catalog.now()",
						 5, argtypes, args, NULL);
	else
	{
		ep_category_exec("UPDATE ep.category_grants g "
						 "SET may_read = g.may_read AND NOT $3, may_append = g.may_append AND NOT $4, "
						 "may_admin = g.may_admin AND NOT $5, updated_at = pg_catalog.now() "
						 "WHERE g.category OPERATOR(pg_catalog.=) $1 "
						 "AND g.grantee OPERATOR(pg_catalog.=) $2::pg_catalog.regrole",
						 5, argtypes, args, NULL);
		ep_category_exec("DELETE FROM ep.category_grants g "
						 "WHERE g.category OPERATOR(pg_catalog.=) $1 "
						 "AND NOT (g.may_read OR g.may_append OR g.may_admin)",
						 1, argtypes, args, NULL);
	}
}

/* ep.grant_category(category, grantee, privileges) */
PG_FUNCTION_INFO_V1(ep_grant_category);
Datum
ep_grant_category(PG_FUNCTION_ARGS)
{
	ep_category_grant_revoke(fcinfo, true);
	PG_RETURN_VOID();
}

/* ep.revoke_category(category, grantee, privileges) */
PG_FUNCTION_INFO_V1(ep_revoke_category);
Datum
ep_revoke_category(PG_FUNCTION_ARGS)
{
	ep_category_grant_revoke(fcinfo, false);
	PG_RETURN_VOID();
}
