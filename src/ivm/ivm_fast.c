/*-------------------------------------------------------------------------
 *
 * ivm_fast.c
 *	  Immediate maintenance of simple aggregate views without SQL.
 *
 * The generated upsert of an immediate view (ivm_sql.c) is planned once,
 * but every statement still starts its executor: a CTE, an aggregate over
 * two transition-table scans, an INSERT ... ON CONFLICT, inside the
 * owner's context (a GUC nest level, a time limit). For a one-row change
 * that start-up costs more than the change itself. The commonest shape of
 * all,
 *
 *	  SELECT k1, ..., count(*), count(c), sum(c), min(c), max(c)
 *	  FROM one_table GROUP BY k1, ...
 *
 * (plain columns only, no WHERE, built-in types) is applied here directly:
 * the statement's transition rows are folded per group in C, each group's
 * storage row is found through the storage's unique key index and locked,
 * and updated in place.
 *
 * Only what the generated SQL would do without surprises is done here; the
 * first time anything else is needed the statement declines, before it has
 * written anything, and the caller runs the generated SQL (which finds the
 * rows already locked by this transaction):
 *	  - a group that does not exist yet, or whose count reaches zero;
 *	  - a min/max whose extreme may be gone (a deleted value at or beyond
 *		it, unless the statement inserts one at least as far);
 *	  - a NULL group key, more than IVM_FAST_MAX_ROWS transition rows;
 *	  - REPEATABLE READ or SERIALIZABLE (the SQL reports serialization
 *		failures the way PostgreSQL does);
 *	  - a base table with row-level security enabled, or whose owner lacks
 *		SELECT on it as a whole (the SQL runs as the owner and reports it);
 *	  - storage with triggers other than the view's guard (views over this
 *		view, a user's trigger), rules, CHECK constraints, generated
 *		columns, or an index that is not plain columns of built-in operator
 *		families (an expression index could run code).
 *
 * Trust (DESIGN §1): no user code runs here. Every function called is
 * built in: the group keys' and min/max columns' btree support (types of
 * pg_catalog whose comparison functions are built in, checked when the
 * view is created and again when the descriptor is loaded), int8 and
 * numeric addition, and the index access method of the storage's plain
 * indexes. Neither the writer's nor the owner's settings change anything
 * computed here, so the owner primitive is not entered at all; the
 * generated SQL it replaces still runs through it.
 *
 * The descriptor is computed when the view is created (ivm_define.c) and
 * stored in ep.ivm_views.fast_path as integers:
 *	  1 <count attno> <nkeys> {<base attno> <storage attno>}...
 *		<naggs> {<kind> <base attno> <storage attno> <sum attno> <n attno>}...
 * (kind: IvmFastKind; base attno 0 for count(*)).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

#include "event_patterns.h"
#include "ivm.h"
#include "ivm_def.h"

/* statements with more transition rows take the generated SQL */
#define IVM_FAST_MAX_ROWS	16

typedef enum IvmFastKind
{
	FAST_COUNT_STAR = 1,
	FAST_COUNT = 2,
	FAST_SUM_INT8 = 3,			/* sum(int2/int4): bigint accumulator */
	FAST_SUM_NUMERIC = 4,		/* sum(int8/numeric): numeric accumulator */
	FAST_MIN = 5,
	FAST_MAX = 6
} IvmFastKind;

/*
 * A column the descriptor names, resolved to its number when the view's
 * cache entry is loaded, and checked against the relation's current
 * descriptor (name, not dropped, type) by every statement.
 */
typedef struct IvmFastCol
{
	char	   *name;
	AttrNumber	att;
	Oid			type;			/* the type it had when resolved */
} IvmFastCol;

typedef struct IvmFastAgg
{
	IvmFastKind kind;
	IvmFastCol	base;			/* argument column; att 0 for count(*) */
	IvmFastCol	col;			/* storage column of the visible value */
	IvmFastCol	sum;			/* sum: __ep_s<i> */
	IvmFastCol	n;				/* sum: __ep_n<i> */
	FmgrInfo	cmp;			/* min/max: btree comparison */
	Oid			coll;
} IvmFastAgg;

struct IvmFast
{
	IvmFastCol	count;
	int			nkeys;
	IvmFastCol *base_key;
	IvmFastCol *store_key;
	FmgrInfo   *key_eq;			/* equality, for folding rows into groups */
	FmgrInfo   *key_cmp;		/* order, for locking groups in key order */
	Oid		   *key_coll;
	int16	   *key_len;
	bool	   *key_byval;
	int			naggs;
	IvmFastAgg *aggs;
	Oid			guard;			/* ep._ivm_guard */
};

/* One group of a statement's transition rows. */
typedef struct IvmFastGroup
{
	Datum	   *keys;
	int64		dcount;
	int64	   *dn;				/* per aggregate: signed non-NULL count */
	Datum	   *dsum;			/* sum: signed sum (int8 or numeric) */
	bool	   *has_ins;		/* min/max: extreme of inserted values */
	Datum	   *ins;
	bool	   *has_del;		/* min/max: extreme of deleted values */
	Datum	   *del;
	ItemPointerData tid;		/* the locked storage row */
	Datum	   *values;			/* its new values */
	bool	   *nulls;
} IvmFastGroup;

/* ----------------------------------------------------------------
 * Descriptor, at creation
 * ----------------------------------------------------------------
 */

/*
 * A type whose equality and ordering are the built-in functions of
 * pg_catalog: nothing a role defines runs when its values are compared.
 */
static bool
ivm_fast_type_ok(Oid type)
{
	TypeCacheEntry *tc;
	HeapTuple	tup;
	bool		ok;

	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type));
	if (!HeapTupleIsValid(tup))
		return false;
	ok = ((Form_pg_type) GETSTRUCT(tup))->typnamespace == PG_CATALOG_NAMESPACE &&
		((Form_pg_type) GETSTRUCT(tup))->typtype == TYPTYPE_BASE;
	ReleaseSysCache(tup);
	if (!ok)
		return false;
	tc = lookup_type_cache(type, TYPECACHE_EQ_OPR | TYPECACHE_CMP_PROC);
	return OidIsValid(tc->eq_opr) && OidIsValid(tc->cmp_proc) &&
		get_opcode(tc->eq_opr) < FirstNormalObjectId && tc->cmp_proc < FirstNormalObjectId;
}

static AttrNumber
ivm_fast_var(Expr *e, Index rti)
{
	if (e == NULL || !IsA(e, Var))
		return InvalidAttrNumber;
	if (((Var *) e)->varno != (int) rti || ((Var *) e)->varlevelsup != 0 ||
		((Var *) e)->varattno <= 0)
		return InvalidAttrNumber;
	return ((Var *) e)->varattno;
}

/* A column name of the descriptor: quoted as an identifier when needed. */
static void
ivm_fast_name(StringInfo buf, const char *name)
{
	appendStringInfo(buf, " %s", name ? quote_identifier(name) : "-");
}

/*
 * The fast-path descriptor of a view about to be recorded, or NULL when its
 * shape is not one ivm_fast.c applies. Columns are named, not numbered:
 * numbers change with pg_dump (dropped columns are not dumped) and with
 * ALTER TABLE; names are what the generated SQL uses too.
 */
char *
ep_ivm_fast_descriptor(IvmDef *d, Oid storage)
{
	StringInfoData buf;
	IvmOcc	   *occ;
	ListCell   *lc;
	Query	   *q = d->query;

	if (d->refresh != IVM_IMMEDIATE || strcmp(d->kind, "aggregate") != 0 ||
		list_length(d->occs) != 1 || d->outer || d->keys == NIL ||
		list_length(q->rtable) != 1 || q->jointree->quals != NULL ||
		q->hasSubLinks || q->groupingSets != NIL || q->hasTargetSRFs ||
		q->hasWindowFuncs || q->distinctClause != NIL)
		return NULL;
	occ = linitial(d->occs);
	if (occ->relid == ep_catalog()->events || get_rel_relkind(occ->relid) != RELKIND_RELATION)
		return NULL;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "2");
	ivm_fast_name(&buf, "__ep_count");
	appendStringInfo(&buf, " %d", list_length(d->keys));
	foreach(lc, d->keys)
	{
		IvmKey	   *key = lfirst(lc);
		AttrNumber	att = ivm_fast_var(key->expr, occ->rti);

		if (att == InvalidAttrNumber || !ivm_fast_type_ok(key->type))
			return NULL;
		ivm_fast_name(&buf, get_attname(occ->relid, att, false));
		ivm_fast_name(&buf, key->col);
	}
	appendStringInfo(&buf, " %d", list_length(d->aggs));
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		AttrNumber	att = InvalidAttrNumber;
		IvmFastKind kind;
		char	   *s = NULL;
		char	   *n = NULL;

		if (agg->kind != AGG_COUNT_STAR)
		{
			att = ivm_fast_var(agg->arg, occ->rti);
			if (att == InvalidAttrNumber)
				return NULL;
		}
		switch (agg->kind)
		{
			case AGG_COUNT_STAR:
				kind = FAST_COUNT_STAR;
				break;
			case AGG_COUNT:
				kind = FAST_COUNT;
				break;
			case AGG_SUM:
				if (agg->hidtype == INT8OID && agg->restype == INT8OID)
					kind = FAST_SUM_INT8;
				else if (agg->hidtype == NUMERICOID && agg->restype == NUMERICOID)
					kind = FAST_SUM_NUMERIC;
				else
					return NULL;
				s = psprintf("__ep_s%d", agg->idx);
				n = psprintf("__ep_n%d", agg->idx);
				break;
			case AGG_MIN:
			case AGG_MAX:
				if (!ivm_fast_type_ok(exprType((Node *) agg->arg)) ||
					exprType((Node *) agg->arg) != agg->restype)
					return NULL;
				kind = agg->kind == AGG_MIN ? FAST_MIN : FAST_MAX;
				break;
			default:
				return NULL;
		}
		appendStringInfo(&buf, " %d", (int) kind);
		ivm_fast_name(&buf, att == InvalidAttrNumber ? NULL : get_attname(occ->relid, att, false));
		ivm_fast_name(&buf, agg->col);
		ivm_fast_name(&buf, s);
		ivm_fast_name(&buf, n);
	}
	return buf.data;
}

/* ----------------------------------------------------------------
 * Descriptor, when a view's cache entry is loaded
 * ----------------------------------------------------------------
 */

static void
ivm_fast_malformed(void)
{
	elog(ERROR, "malformed fast_path descriptor of an incremental view");
}

static int
ivm_fast_next(char **p)
{
	char	   *end;
	long		v;

	while (**p == ' ')
		(*p)++;
	v = strtol(*p, &end, 10);
	if (end == *p || v < 0 || v > INT16_MAX)
		ivm_fast_malformed();
	*p = end;
	return (int) v;
}

/* The next name: "-" (none), a plain identifier or a double-quoted one. */
static char *
ivm_fast_next_name(char **p)
{
	StringInfoData buf;

	while (**p == ' ')
		(*p)++;
	if (**p == '\0')
		ivm_fast_malformed();
	if (**p == '-' && ((*p)[1] == ' ' || (*p)[1] == '\0'))
	{
		(*p)++;
		return NULL;
	}
	initStringInfo(&buf);
	if (**p == '"')
	{
		for ((*p)++;; (*p)++)
		{
			if (**p == '\0')
				ivm_fast_malformed();
			if (**p == '"')
			{
				if ((*p)[1] != '"')
					break;
				(*p)++;
			}
			appendStringInfoChar(&buf, **p);
		}
		(*p)++;
	}
	else
	{
		while (**p != ' ' && **p != '\0')
			appendStringInfoChar(&buf, *(*p)++);
	}
	return buf.data;
}

/*
 * Resolve a named column of rel; false when it is missing. Its type is
 * remembered: each statement checks the column still has it.
 */
static bool
ivm_fast_resolve(IvmFastCol *c, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	c->att = InvalidAttrNumber;
	if (c->name == NULL)
		return true;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), c->name) == 0)
		{
			c->att = a->attnum;
			c->type = a->atttypid;
			return true;
		}
	}
	return false;
}

/* Equality and order of a type, built in or nothing. */
static bool
ivm_fast_support(Oid type, FmgrInfo *eq, FmgrInfo *cmp, MemoryContext cxt)
{
	TypeCacheEntry *tc;

	if (!ivm_fast_type_ok(type))
		return false;
	tc = lookup_type_cache(type, TYPECACHE_EQ_OPR | TYPECACHE_CMP_PROC);
	if (eq)
		fmgr_info_cxt(get_opcode(tc->eq_opr), eq, cxt);
	fmgr_info_cxt(tc->cmp_proc, cmp, cxt);
	return true;
}

/*
 * Parse a view's descriptor and resolve its columns in the base table and
 * the storage; NULL (no fast path) when they no longer fit together. The
 * result is only a snapshot: every statement checks it again against both
 * relations as they are then (ivm_fast_columns_ok).
 */
IvmFast *
ep_ivm_fast_load(const char *text, Oid base, Oid storage, MemoryContext cxt)
{
	IvmFast    *f;
	char	   *p = (char *) text;
	Relation	brel;
	Relation	srel;
	bool		ok;
	int			i;
	MemoryContext old;

	if (text == NULL || ivm_fast_next(&p) != 2)
		return NULL;
	old = MemoryContextSwitchTo(cxt);
	f = palloc0(sizeof(IvmFast));
	f->count.name = ivm_fast_next_name(&p);
	f->nkeys = ivm_fast_next(&p);
	if (f->nkeys <= 0 || f->nkeys > INDEX_MAX_KEYS)
		ivm_fast_malformed();
	f->base_key = palloc0(sizeof(IvmFastCol) * f->nkeys);
	f->store_key = palloc0(sizeof(IvmFastCol) * f->nkeys);
	f->key_eq = palloc0(sizeof(FmgrInfo) * f->nkeys);
	f->key_cmp = palloc0(sizeof(FmgrInfo) * f->nkeys);
	f->key_coll = palloc(sizeof(Oid) * f->nkeys);
	f->key_len = palloc(sizeof(int16) * f->nkeys);
	f->key_byval = palloc(sizeof(bool) * f->nkeys);
	for (i = 0; i < f->nkeys; i++)
	{
		f->base_key[i].name = ivm_fast_next_name(&p);
		f->store_key[i].name = ivm_fast_next_name(&p);
	}
	f->naggs = ivm_fast_next(&p);
	f->aggs = palloc0(sizeof(IvmFastAgg) * Max(f->naggs, 1));
	for (i = 0; i < f->naggs; i++)
	{
		f->aggs[i].kind = (IvmFastKind) ivm_fast_next(&p);
		f->aggs[i].base.name = ivm_fast_next_name(&p);
		f->aggs[i].col.name = ivm_fast_next_name(&p);
		f->aggs[i].sum.name = ivm_fast_next_name(&p);
		f->aggs[i].n.name = ivm_fast_next_name(&p);
	}

	brel = table_open(base, AccessShareLock);
	srel = table_open(storage, AccessShareLock);
	ok = f->count.name != NULL && ivm_fast_resolve(&f->count, srel);
	for (i = 0; ok && i < f->nkeys; i++)
	{
		Form_pg_attribute a;

		ok = f->base_key[i].name && f->store_key[i].name &&
			ivm_fast_resolve(&f->base_key[i], brel) && ivm_fast_resolve(&f->store_key[i], srel) &&
			f->base_key[i].type == f->store_key[i].type;
		if (!ok)
			break;
		a = TupleDescAttr(RelationGetDescr(srel), f->store_key[i].att - 1);
		f->key_coll[i] = a->attcollation;
		f->key_len[i] = a->attlen;
		f->key_byval[i] = a->attbyval;
		ok = ivm_fast_support(a->atttypid, &f->key_eq[i], &f->key_cmp[i], cxt);
	}
	for (i = 0; ok && i < f->naggs; i++)
	{
		IvmFastAgg *agg = &f->aggs[i];

		ok = ivm_fast_resolve(&agg->base, brel) && ivm_fast_resolve(&agg->col, srel) &&
			ivm_fast_resolve(&agg->sum, srel) && ivm_fast_resolve(&agg->n, srel) &&
			agg->col.att != InvalidAttrNumber &&
			(agg->kind == FAST_COUNT_STAR) == (agg->base.att == InvalidAttrNumber);
		if (!ok)
			break;
		switch (agg->kind)
		{
			case FAST_COUNT_STAR:
			case FAST_COUNT:
				ok = agg->col.type == INT8OID;
				break;
			case FAST_SUM_INT8:
				ok = (agg->base.type == INT2OID || agg->base.type == INT4OID) &&
					agg->col.type == INT8OID && agg->sum.type == INT8OID &&
					agg->n.att != InvalidAttrNumber && agg->n.type == INT8OID;
				break;
			case FAST_SUM_NUMERIC:
				ok = (agg->base.type == INT8OID || agg->base.type == NUMERICOID) &&
					agg->col.type == NUMERICOID && agg->sum.type == NUMERICOID &&
					agg->n.att != InvalidAttrNumber && agg->n.type == INT8OID;
				break;
			case FAST_MIN:
			case FAST_MAX:
				ok = agg->col.type == agg->base.type;
				if (ok)
				{
					agg->coll = TupleDescAttr(RelationGetDescr(srel), agg->col.att - 1)->attcollation;
					ok = ivm_fast_support(agg->col.type, NULL, &agg->cmp, cxt);
				}
				break;
			default:
				ok = false;
		}
	}
	ok = ok && f->count.type == INT8OID;
	table_close(srel, NoLock);
	table_close(brel, NoLock);
	f->guard = LookupFuncName(list_make2(makeString("ep"), makeString("_ivm_guard")), 0, NULL, true);
	MemoryContextSwitchTo(old);
	return ok ? f : NULL;
}

/* The column is still there, under its name, with its type. */
static bool
ivm_fast_col_ok(const IvmFastCol *c, TupleDesc desc)
{
	Form_pg_attribute a;

	if (c->name == NULL)
		return true;
	if (c->att <= 0 || c->att > desc->natts)
		return false;
	a = TupleDescAttr(desc, c->att - 1);
	return !a->attisdropped && a->atttypid == c->type && strcmp(NameStr(a->attname), c->name) == 0;
}

/*
 * Every column of the descriptor is as it was when the entry was loaded,
 * in the base table and in the (locked) storage: ALTER TABLE or a dump and
 * restore since then make the statement decline, and the entry reload.
 */
static bool
ivm_fast_columns_ok(IvmFast *f, TupleDesc base, TupleDesc storage)
{
	int			i;

	if (!ivm_fast_col_ok(&f->count, storage))
		return false;
	for (i = 0; i < f->nkeys; i++)
	{
		if (!ivm_fast_col_ok(&f->base_key[i], base) || !ivm_fast_col_ok(&f->store_key[i], storage) ||
			TupleDescAttr(storage, f->store_key[i].att - 1)->attcollation != f->key_coll[i])
			return false;
	}
	for (i = 0; i < f->naggs; i++)
	{
		IvmFastAgg *agg = &f->aggs[i];

		if (!ivm_fast_col_ok(&agg->base, base) || !ivm_fast_col_ok(&agg->col, storage) ||
			!ivm_fast_col_ok(&agg->sum, storage) || !ivm_fast_col_ok(&agg->n, storage))
			return false;
		if ((agg->kind == FAST_MIN || agg->kind == FAST_MAX) &&
			TupleDescAttr(storage, agg->col.att - 1)->attcollation != agg->coll)
			return false;
	}
	return true;
}

/* ----------------------------------------------------------------
 * Applying a statement
 * ----------------------------------------------------------------
 */

static int
ivm_fast_cmp(FmgrInfo *fn, Oid coll, Datum a, Datum b)
{
	return DatumGetInt32(FunctionCall2Coll(fn, coll, a, b));
}

/* qsort_arg comparator: groups in key order */
static int
ivm_fast_group_order(const void *a, const void *b, void *arg)
{
	IvmFast    *f = arg;
	const IvmFastGroup *ga = *(IvmFastGroup *const *) a;
	const IvmFastGroup *gb = *(IvmFastGroup *const *) b;
	int			i;

	for (i = 0; i < f->nkeys; i++)
	{
		int			c = ivm_fast_cmp(&f->key_cmp[i], f->key_coll[i], ga->keys[i], gb->keys[i]);

		if (c != 0)
			return c;
	}
	return 0;
}

static Datum
ivm_fast_add(IvmFastKind kind, Datum acc, Datum v, bool negate)
{
	if (kind == FAST_SUM_INT8)
	{
		int64		r;

		if (negate ? pg_sub_s64_overflow(DatumGetInt64(acc), DatumGetInt64(v), &r) :
			pg_add_s64_overflow(DatumGetInt64(acc), DatumGetInt64(v), &r))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("bigint out of range")));
		return Int64GetDatum(r);
	}
	return DirectFunctionCall2(negate ? numeric_sub : numeric_add, acc, v);
}

/* The accumulator's value of one base column value. */
static Datum
ivm_fast_sum_input(IvmFastKind kind, Oid type, Datum v)
{
	switch (type)
	{
		case INT2OID:
			return Int64GetDatum((int64) DatumGetInt16(v));
		case INT4OID:
			return Int64GetDatum((int64) DatumGetInt32(v));
		case INT8OID:
			if (kind == FAST_SUM_INT8)
				return v;
			return DirectFunctionCall1(int8_numeric, v);
		default:
			return v;
	}
}

/* Fold one transition row into its group. */
static void
ivm_fast_fold(IvmFast *f, TupleTableSlot *slot, int sign, IvmFastGroup **groups,
			  int *ngroups, bool *declined)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	IvmFastGroup *g = NULL;
	Datum		keys[INDEX_MAX_KEYS];
	int			i;
	int			j;

	slot_getallattrs(slot);
	for (i = 0; i < f->nkeys; i++)
	{
		if (slot->tts_isnull[f->base_key[i].att - 1])
		{
			*declined = true;
			return;
		}
		keys[i] = slot->tts_values[f->base_key[i].att - 1];
	}
	for (j = 0; j < *ngroups && g == NULL; j++)
	{
		for (i = 0; i < f->nkeys; i++)
		{
			if (!DatumGetBool(FunctionCall2Coll(&f->key_eq[i], f->key_coll[i],
												groups[j]->keys[i], keys[i])))
				break;
		}
		if (i == f->nkeys)
			g = groups[j];
	}
	if (g == NULL)
	{
		g = palloc0(sizeof(IvmFastGroup));
		g->keys = palloc(sizeof(Datum) * f->nkeys);
		for (i = 0; i < f->nkeys; i++)
			g->keys[i] = datumCopy(keys[i], f->key_byval[i], f->key_len[i]);
		g->dn = palloc0(sizeof(int64) * Max(f->naggs, 1));
		g->dsum = palloc0(sizeof(Datum) * Max(f->naggs, 1));
		g->has_ins = palloc0(sizeof(bool) * Max(f->naggs, 1));
		g->ins = palloc0(sizeof(Datum) * Max(f->naggs, 1));
		g->has_del = palloc0(sizeof(bool) * Max(f->naggs, 1));
		g->del = palloc0(sizeof(Datum) * Max(f->naggs, 1));
		for (i = 0; i < f->naggs; i++)
		{
			if (f->aggs[i].kind == FAST_SUM_INT8)
				g->dsum[i] = Int64GetDatum(0);
			else if (f->aggs[i].kind == FAST_SUM_NUMERIC)
				g->dsum[i] = DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
		}
		groups[(*ngroups)++] = g;
	}
	g->dcount += sign;
	for (i = 0; i < f->naggs; i++)
	{
		IvmFastAgg *agg = &f->aggs[i];
		Datum		v;
		Form_pg_attribute a;

		if (agg->kind == FAST_COUNT_STAR || slot->tts_isnull[agg->base.att - 1])
			continue;
		a = TupleDescAttr(desc, agg->base.att - 1);
		v = slot->tts_values[agg->base.att - 1];
		g->dn[i] += sign;
		switch (agg->kind)
		{
			case FAST_SUM_INT8:
			case FAST_SUM_NUMERIC:
				g->dsum[i] = ivm_fast_add(agg->kind, g->dsum[i],
										  ivm_fast_sum_input(agg->kind, a->atttypid, v), sign < 0);
				break;
			case FAST_MIN:
			case FAST_MAX:
				{
					bool	   *has = sign > 0 ? g->has_ins : g->has_del;
					Datum	   *ext = sign > 0 ? g->ins : g->del;
					int			c;

					if (has[i])
					{
						c = ivm_fast_cmp(&agg->cmp, agg->coll, v, ext[i]);
						if ((agg->kind == FAST_MAX && c <= 0) || (agg->kind == FAST_MIN && c >= 0))
							break;
					}
					ext[i] = datumCopy(v, a->attbyval, a->attlen);
					has[i] = true;
				}
				break;
			default:
				break;
		}
	}
}

/*
 * Read one transition table (sign +1 new rows, -1 old rows) into groups,
 * through a read pointer of our own (the generated SQL, if the statement
 * declines, reads the table again from its start).
 */
static void
ivm_fast_read(IvmFast *f, Tuplestorestate *ts, TupleDesc desc, int sign,
			  IvmFastGroup **groups, int *ngroups, bool *declined)
{
	TupleTableSlot *slot;
	int			ptr;

	if (ts == NULL)
		return;
	slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	ptr = tuplestore_alloc_read_pointer(ts, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(ts, ptr);
	tuplestore_rescan(ts);
	while (!*declined && tuplestore_gettupleslot(ts, true, false, slot))
		ivm_fast_fold(f, slot, sign, groups, ngroups, declined);
	tuplestore_select_read_pointer(ts, 0);
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * The storage may be written directly: no trigger but the view's guard, no
 * rule, CHECK constraint or generated column, only plain indexes of
 * built-in operator families. Opens the indexes (RowExclusiveLock) into
 * *indexes and returns the unique key index's position, or -1.
 */
static int
ivm_fast_storage(IvmFast *f, Relation storage, List **indexes)
{
	TriggerDesc *td = storage->trigdesc;
	TupleConstr *constr = RelationGetDescr(storage)->constr;
	List	   *oids;
	ListCell   *lc;
	int			key = -1;
	int			pos = 0;
	int			i;

	*indexes = NIL;
	if (storage->rd_rel->relkind != RELKIND_RELATION || storage->rd_rel->relispartition ||
		storage->rd_rel->relam != HEAP_TABLE_AM_OID || storage->rd_rel->relrowsecurity ||
		storage->rd_rules != NULL ||
		(constr && (constr->num_check > 0 || constr->has_generated_stored)))
		return -1;
	for (i = 0; td && i < td->numtriggers; i++)
	{
		if (td->triggers[i].tgfoid != f->guard || !OidIsValid(f->guard))
			return -1;
	}
	oids = RelationGetIndexList(storage);
	foreach(lc, oids)
	{
		Relation	idx = index_open(lfirst_oid(lc), RowExclusiveLock);
		Form_pg_index form = idx->rd_index;
		bool		plain = form->indimmediate && !form->indisexclusion &&
			RelationGetIndexExpressions(idx) == NIL && RelationGetIndexPredicate(idx) == NIL &&
			form->indisvalid && form->indisready;

		*indexes = lappend(*indexes, idx);

		/*
		 * btree over columns of types whose comparison is built in: a
		 * built-in operator family may still call a function of the
		 * column's type (a range type's subtype_diff in GiST), as the writer.
		 */
		plain = plain && idx->rd_rel->relam == BTREE_AM_OID;
		for (i = 0; plain && i < IndexRelationGetNumberOfKeyAttributes(idx); i++)
		{
			AttrNumber	att = form->indkey.values[i];

			plain = att > 0 && idx->rd_opfamily[i] < FirstNormalObjectId &&
				ivm_fast_type_ok(TupleDescAttr(RelationGetDescr(storage), att - 1)->atttypid);
		}
		if (!plain)
			return -1;
		if (form->indisunique && form->indnkeyatts == f->nkeys && key < 0)
		{
			for (i = 0; i < f->nkeys; i++)
			{
				if (form->indkey.values[i] != f->store_key[i].att)
					break;
			}
			if (i == f->nkeys)
				key = pos;
		}
		pos++;
	}
	list_free(oids);
	return key;
}

/*
 * Find the storage row of a group through the key index and lock it
 * (exclusively, waiting for other writers as the upsert's ON CONFLICT
 * would). False when the group has no row.
 */
static bool
ivm_fast_lock(IvmFast *f, Relation storage, Relation idx, IvmFastGroup *g,
			  TupleTableSlot *slot)
{
	ScanKeyData skey[INDEX_MAX_KEYS];
	SnapshotData dirty;
	IndexScanDesc scan;
	bool		found;
	int			i;

	for (i = 0; i < f->nkeys; i++)
	{
		Oid			opfamily = idx->rd_opfamily[i];
		Oid			intype = idx->rd_opcintype[i];
		Oid			op = get_opfamily_member(opfamily, intype, intype, BTEqualStrategyNumber);

		if (!OidIsValid(op))
			elog(ERROR, "missing equality operator for the key of an incremental view");
		ScanKeyEntryInitialize(&skey[i], 0, i + 1, BTEqualStrategyNumber, intype,
							   idx->rd_indcollation[i], get_opcode(op), g->keys[i]);
	}
	InitDirtySnapshot(dirty);
	scan = index_beginscan(storage, idx, &dirty, f->nkeys, 0);
	for (;;)
	{
		TransactionId xwait;
		TM_FailureData tmfd;
		TM_Result	res;

		index_rescan(scan, skey, f->nkeys, NULL, 0);
		found = index_getnext_slot(scan, ForwardScanDirection, slot);
		if (!found)
			break;
		xwait = TransactionIdIsValid(dirty.xmin) ? dirty.xmin : dirty.xmax;
		if (TransactionIdIsValid(xwait))
		{
			/* another writer's row version in progress: wait, look again */
			XactLockTableWait(xwait, NULL, NULL, XLTW_None);
			continue;
		}
		PushActiveSnapshot(GetLatestSnapshot());
		res = table_tuple_lock(storage, &slot->tts_tid, GetActiveSnapshot(), slot,
							   GetCurrentCommandId(false), LockTupleExclusive,
							   LockWaitBlock, 0, &tmfd);
		PopActiveSnapshot();
		if (res == TM_Ok)
			break;
		if (res == TM_Updated || res == TM_Deleted)
			continue;			/* changed meanwhile: find it again */
		elog(ERROR, "unexpected result %d locking a row of an incremental view", (int) res);
	}
	index_endscan(scan);
	if (found)
		g->tid = slot->tts_tid;
	return found;
}

/*
 * Compute a locked group's new row from its stored one into g->values and
 * g->nulls; false when the change needs the generated SQL.
 */
static bool
ivm_fast_new_row(IvmFast *f, TupleTableSlot *slot, IvmFastGroup *g)
{
	int			natts = slot->tts_tupleDescriptor->natts;
	int64		count;
	int			i;

	/* a copy: the slot moves on to the next group's row */
	g->values = palloc(sizeof(Datum) * natts);
	g->nulls = palloc(sizeof(bool) * natts);
	heap_deform_tuple(ExecCopySlotHeapTuple(slot), slot->tts_tupleDescriptor, g->values, g->nulls);
	if (g->nulls[f->count.att - 1])
		return false;
	count = DatumGetInt64(g->values[f->count.att - 1]) + g->dcount;
	if (count <= 0)
		return false;			/* the group goes away */
	g->values[f->count.att - 1] = Int64GetDatum(count);
	for (i = 0; i < f->naggs; i++)
	{
		IvmFastAgg *agg = &f->aggs[i];
		AttrNumber	c = agg->col.att - 1;

		switch (agg->kind)
		{
			case FAST_COUNT_STAR:
			case FAST_COUNT:
				if (g->nulls[c])
					return false;
				g->values[c] = Int64GetDatum(DatumGetInt64(g->values[c]) +
											 (agg->kind == FAST_COUNT_STAR ? g->dcount : g->dn[i]));
				break;
			case FAST_SUM_INT8:
			case FAST_SUM_NUMERIC:
				{
					AttrNumber	s = agg->sum.att - 1;
					AttrNumber	n = agg->n.att - 1;
					int64		nn;

					if (g->nulls[n])
						return false;
					nn = DatumGetInt64(g->values[n]) + g->dn[i];
					if (g->nulls[s])
					{
						g->values[s] = agg->kind == FAST_SUM_INT8 ? Int64GetDatum(0) :
							DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
						g->nulls[s] = false;
					}
					g->values[s] = ivm_fast_add(agg->kind, g->values[s], g->dsum[i], false);
					g->values[n] = Int64GetDatum(nn);
					g->values[c] = g->values[s];
					g->nulls[c] = nn <= 0;
				}
				break;
			case FAST_MIN:
			case FAST_MAX:
				{
					int			dir = agg->kind == FAST_MAX ? 1 : -1;

					bool		take = false;

					if (g->has_del[i])
					{
						/*
						 * A deleted value at or beyond the stored extreme may
						 * have been its last holder; unless an inserted value
						 * reaches as far (then it is the new extreme: every
						 * remaining value is within the old one, and an equal
						 * one, 1.00 for 1.0, is the one left), recompute.
						 */
						if (g->nulls[c] ||
							dir * ivm_fast_cmp(&agg->cmp, agg->coll, g->del[i], g->values[c]) >= 0)
						{
							if (!g->has_ins[i] ||
								dir * ivm_fast_cmp(&agg->cmp, agg->coll, g->ins[i], g->del[i]) < 0)
								return false;
							take = true;
						}
					}
					if (g->has_ins[i] &&
						(take || g->nulls[c] ||
						 dir * ivm_fast_cmp(&agg->cmp, agg->coll, g->ins[i], g->values[c]) > 0))
					{
						g->values[c] = g->ins[i];
						g->nulls[c] = false;
					}
				}
				break;
		}
	}
	/* NOT NULL constraints (an owner may add some): the SQL reports them */
	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(slot->tts_tupleDescriptor, i);

		if (a->attnotnull && !a->attisdropped && g->nulls[i])
			return false;
	}
	return true;
}

/* Write a group's new row over its locked one, with its index entries. */
static void
ivm_fast_write(Relation storage, List *indexes, TupleTableSlot *slot, IvmFastGroup *g)
{
	bool		update_indexes;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, g->values, sizeof(Datum) * slot->tts_tupleDescriptor->natts);
	memcpy(slot->tts_isnull, g->nulls, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	ExecStoreVirtualTuple(slot);
	simple_table_tuple_update(storage, &g->tid, slot, GetActiveSnapshot(), &update_indexes);
	if (!update_indexes)
		return;
	/* not a HOT update: every index gets an entry for the new version */
	ep_insert_index_entries(storage, indexes, slot, true);
}

/*
 * Apply an immediate view's statement directly; false, having written
 * nothing, when it needs the generated SQL (see the top of the file).
 */
bool
ep_ivm_fast_apply(IvmViewCache *vc, TriggerData *td, int64 nold, int64 nnew)
{
	IvmFast    *f = vc->fast;
	Relation	base = td->tg_relation;
	Relation	storage;
	List	   *indexes;
	int			key;
	IvmFastGroup **groups;
	int			ngroups = 0;
	bool		declined = false;
	bool		done = false;
	MemoryContext cxt;
	MemoryContext old;
	TupleTableSlot *slot;
	ListCell   *lc;
	int			i;

	if (f == NULL || nold + nnew > IVM_FAST_MAX_ROWS || nold + nnew == 0 ||
		IsolationUsesXactSnapshot() || base->rd_rel->relrowsecurity ||
		pg_class_aclcheck(RelationGetRelid(base), vc->owner, ACL_SELECT) != ACLCHECK_OK)
		return false;

	storage = table_open(vc->storage, RowExclusiveLock);
	key = -1;
	indexes = NIL;
	if (!ivm_fast_columns_ok(f, RelationGetDescr(base), RelationGetDescr(storage)))
	{
		/* ALTER TABLE or a restore since the entry was loaded: reload it */
		vc->valid = false;
	}
	else
		key = ivm_fast_storage(f, storage, &indexes);
	if (key < 0)
	{
		foreach(lc, indexes)
			index_close(lfirst(lc), NoLock);
		table_close(storage, NoLock);
		return false;
	}

	cxt = AllocSetContextCreate(CurrentMemoryContext, "event_patterns ivm fast path",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	groups = palloc(sizeof(IvmFastGroup *) * (nold + nnew));
	ivm_fast_read(f, td->tg_oldtable, RelationGetDescr(base), -1, groups, &ngroups, &declined);
	ivm_fast_read(f, td->tg_newtable, RelationGetDescr(base), 1, groups, &ngroups, &declined);
	if (!declined && ngroups > 0)
	{
		/* a published storage without replica identity: refused like the SQL */
		CheckCmdReplicaIdentity(storage, CMD_UPDATE);
		/* see the storage as the statement's earlier maintenance left it */
		CommandCounterIncrement();
		PushActiveSnapshot(GetLatestSnapshot());
		slot = table_slot_create(storage, NULL);
		/* lock in key order, as the generated upsert does */
		if (ngroups > 1)
			qsort_arg(groups, ngroups, sizeof(IvmFastGroup *), ivm_fast_group_order, f);
		done = true;
		for (i = 0; i < ngroups && done; i++)
		{
			done = ivm_fast_lock(f, storage, list_nth(indexes, key), groups[i], slot) &&
				ivm_fast_new_row(f, slot, groups[i]);
		}
		if (done)
		{
			TupleTableSlot *newslot = MakeSingleTupleTableSlot(RelationGetDescr(storage),
															   &TTSOpsVirtual);

			for (i = 0; i < ngroups; i++)
				ivm_fast_write(storage, indexes, newslot, groups[i]);
			ExecDropSingleTupleTableSlot(newslot);
		}
		ExecDropSingleTupleTableSlot(slot);
		PopActiveSnapshot();
		if (done)
			CommandCounterIncrement();
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	foreach(lc, indexes)
		index_close(lfirst(lc), NoLock);
	table_close(storage, NoLock);
	return done;
}
