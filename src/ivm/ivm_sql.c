/*-------------------------------------------------------------------------
 *
 * ivm_sql.c
 *	  Generators of the maintenance SQL of an incremental view, from its
 *	  analysed shape (ivm_def.h): the pre-aggregation query P, the storage
 *	  columns, the from-scratch population query, the signed delta branches
 *	  (inclusion-exclusion over the table references) and the upsert that
 *	  applies a delta to the storage. See ivm_define.c for the model.
 *
 * Everything is generated while search_path is empty, so the deparsed
 * view query names every user object schema-qualified (and user operators
 * as OPERATOR(schema.op)); the SQL written here qualifies every type,
 * function and operator of its own: types through FORMAT_TYPE_FORCE_QUALIFY,
 * functions as pg_catalog.f, operators as OPERATOR(pg_catalog.op), IN as
 * OPERATOR(pg_catalog.=) ANY. (GROUP BY, DISTINCT, EXCEPT, ON CONFLICT and
 * ORDER BY use the types' default operator classes, found without a path.)
 * It runs only in the view owner's context (ivm_delta.c), whose search_path
 * puts pg_temp last.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"

#include "ivm_def.h"

char *
ep_ivm_type_sql(Oid type, int32 typmod)
{
	return format_type_extended(type, typmod,
								FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
}

/* ----------------------------------------------------------------
 * SQL generation
 * ----------------------------------------------------------------
 */

char *
ep_ivm_relation_text(Oid relid)
{
	char	   *relname = get_rel_name(relid);

	if (RelationIsVisible(relid))
		return pstrdup(quote_identifier(relname));
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), relname);
}

int
ep_ivm_count_substr(const char *text, const char *pat)
{
	int			n = 0;
	const char *p = text;
	size_t		len = strlen(pat);

	while ((p = strstr(p, pat)) != NULL)
	{
		n++;
		p += len;
	}
	return n;
}

char *
ep_ivm_replace_once(const char *text, const char *from, const char *to)
{
	const char *p = strstr(text, from);
	StringInfoData buf;

	if (p == NULL)
		elog(ERROR, "table reference \"%s\" not found in generated query", from);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, text, p - text);
	appendStringInfoString(&buf, to);
	appendStringInfoString(&buf, p + strlen(from));
	return buf.data;
}

/* Build P: the view's FROM/WHERE with keys and aggregate arguments. */
void
ep_ivm_build_p(IvmDef *d)
{
	Query	   *p = copyObject(d->query);
	List	   *tl = NIL;
	AttrNumber	resno = 1;
	ListCell   *lc;
	int			i = 0;

	foreach(lc, d->keys)
	{
		IvmKey	   *key = lfirst(lc);

		tl = lappend(tl, makeTargetEntry(copyObject(key->expr), resno++,
										 psprintf("__ep_k%d", ++i), false));
	}
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);

		if (agg->arg)
			tl = lappend(tl, makeTargetEntry(copyObject(agg->arg), resno++,
											 psprintf("__ep_a%d", agg->idx), false));
	}
	p->targetList = tl;
	p->groupClause = NIL;
	p->havingQual = NULL;
	p->hasAggs = false;
	p->distinctClause = NIL;
	p->sortClause = NIL;

	i = 0;
	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);
		RangeTblEntry *rte = rt_fetch(occ->rti, p->rtable);
		char	   *alias = psprintf("__ep_r%d", ++i);

		rte->alias = makeAlias(alias, NIL);
		rte->eref->aliasname = alias;
		rte->inh = true;
		occ->fromitem = psprintf("%s %s", ep_ivm_relation_text(occ->relid), alias);
	}
	d->ptext = pg_get_querydef(p, false);
	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);

		if (ep_ivm_count_substr(d->ptext, occ->fromitem) != 1)
			ep_ivm_unsupported("a table reference that cannot be isolated in the deparsed query");
	}
}

/* The storage columns compared and rewritten by a full recompute. */
void
ep_ivm_storage_columns(IvmDef *d, StringInfo cols, StringInfo ddl)
{
	ListCell   *lc;
	bool		first = true;

#define COL(name, typesql, extra) \
	do { \
		if (!first) appendStringInfoString(cols, ", "); \
		appendStringInfoString(cols, quote_identifier(name)); \
		if (ddl) appendStringInfo(ddl, "%s%s %s%s", first ? "" : ", ", quote_identifier(name), typesql, extra); \
		first = false; \
	} while (0)

	foreach(lc, d->keys)
	{
		IvmKey	   *key = lfirst(lc);
		char	   *extra = "";

		if (OidIsValid(key->coll) && key->coll != get_typcollation(key->type))
			extra = psprintf(" COLLATE %s", generate_collation_name(key->coll));
		COL(key->col, ep_ivm_type_sql(key->type, key->typmod), extra);
	}
	COL("__ep_count", "bigint", " NOT NULL");
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		char	   *rt = ep_ivm_type_sql(agg->restype, agg->restypmod);

		switch (agg->kind)
		{
			case AGG_COUNT_STAR:
			case AGG_COUNT:
				COL(agg->col, "bigint", " NOT NULL");
				break;
			case AGG_SUM:
			case AGG_AVG:
				COL(agg->col, rt, "");
				COL(psprintf("__ep_s%d", agg->idx), ep_ivm_type_sql(agg->hidtype, -1), "");
				COL(psprintf("__ep_n%d", agg->idx), "bigint", " NOT NULL");
				break;
			case AGG_MIN:
			case AGG_MAX:
				COL(agg->col, rt, "");
				break;
		}
	}
	if (strcmp(d->kind, "full") != 0)
		COL("__ep_dirty", "boolean", " NOT NULL DEFAULT false");
	/* transport of deleted extremes: not compared, not in cols */
	if (ddl)
	{
		foreach(lc, d->aggs)
		{
			IvmAgg	   *agg = lfirst(lc);

			if (agg->kind == AGG_MIN || agg->kind == AGG_MAX)
				appendStringInfo(ddl, ", __ep_d%d %s", agg->idx,
								 ep_ivm_type_sql(agg->restype, agg->restypmod));
		}
	}
#undef COL
}

char *
ep_ivm_avg_expr(IvmAgg *agg, const char *s, const char *n)
{
	const char *t = (agg->restype == FLOAT8OID) ? "pg_catalog.float8" : "pg_catalog.numeric";

	return psprintf("((%s)::%s OPERATOR(pg_catalog./) (%s)::%s)", s, t, n, t);
}

/* Q_pop: the storage rows computed from scratch, columns as in cols. */
char *
ep_ivm_pop_sql(IvmDef *d)
{
	StringInfoData buf;
	ListCell   *lc;
	int			i = 0;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "SELECT ");
	foreach(lc, d->keys)
	{
		if (d->keep_empty_group)
			appendStringInfoString(&buf, "true, ");
		else
			appendStringInfo(&buf, "__ep_p.__ep_k%d, ", ++i);
	}
	if (strcmp(d->kind, "full") == 0 && !d->groupable)
		appendStringInfoString(&buf, "1::pg_catalog.int8");
	else
		appendStringInfoString(&buf, "pg_catalog.count(*)");
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		char	   *a = psprintf("__ep_p.__ep_a%d", agg->idx);
		char	   *h = OidIsValid(agg->hidtype) ? ep_ivm_type_sql(agg->hidtype, -1) : NULL;

		switch (agg->kind)
		{
			case AGG_COUNT_STAR:
				appendStringInfoString(&buf, ", pg_catalog.count(*)");
				break;
			case AGG_COUNT:
				appendStringInfo(&buf, ", pg_catalog.count(%s)", a);
				break;
			case AGG_SUM:
			case AGG_AVG:
				appendStringInfo(&buf, ", pg_catalog.%s(%s), COALESCE(pg_catalog.sum((%s)::%s), 0), pg_catalog.count(%s)",
								 agg->kind == AGG_SUM ? "sum" : "avg", a, a, h, a);
				break;
			case AGG_MIN:
			case AGG_MAX:
				appendStringInfo(&buf, ", pg_catalog.%s(%s)", agg->kind == AGG_MIN ? "min" : "max", a);
				break;
		}
	}
	if (strcmp(d->kind, "full") != 0)
		appendStringInfoString(&buf, ", false");
	if (strcmp(d->kind, "full") == 0)
	{
		appendStringInfo(&buf, " FROM (%s) __ep_p(", d->ptext);
		for (i = 1; i <= list_length(d->keys); i++)
			appendStringInfo(&buf, "%s__ep_k%d", i > 1 ? ", " : "", i);
		appendStringInfoChar(&buf, ')');
	}
	else
		appendStringInfo(&buf, " FROM (%s) __ep_p", d->ptext);
	if (!d->keep_empty_group && !(strcmp(d->kind, "full") == 0 && !d->groupable))
	{
		appendStringInfoString(&buf, " GROUP BY ");
		for (i = 1; i <= list_length(d->keys); i++)
			appendStringInfo(&buf, "%s%d", i > 1 ? ", " : "", i);
	}
	return buf.data;
}

/*
 * Branches of delta(P): every assignment of {post, old, new} to the changed
 * occurrences except all-post; sign (-1)^(|S|+1) times (-1)^(#old).
 */
void
ep_ivm_branches(IvmDef *d, int *changed, int nchanged, const char **oldsrc,
			 const char **newsrc, StringInfo out)
{
	int			nocc = list_length(d->occs);
	int			total = 1;
	int			combo;
	int			i;

	for (i = 0; i < nchanged; i++)
		total *= 3;
	for (combo = 1; combo < total; combo++)
	{
		int			c = combo;
		int			nsub = 0;
		int			nold = 0;
		bool		possible = true;
		char	   *text = d->ptext;
		char	  **src = palloc0(sizeof(char *) * nocc);

		for (i = 0; i < nchanged; i++)
		{
			int			state = c % 3;	/* 0 post, 1 old, 2 new */
			IvmOcc	   *occ = list_nth(d->occs, changed[i]);

			c /= 3;
			if (state == 0)
				continue;
			nsub++;
			if (state == 1)
			{
				nold++;
				if (oldsrc[occ->base] == NULL)
					possible = false;
				else
					src[changed[i]] = psprintf("%s __ep_r%d", oldsrc[occ->base], changed[i] + 1);
			}
			else
			{
				if (newsrc[occ->base] == NULL)
					possible = false;
				else
					src[changed[i]] = psprintf("%s __ep_r%d", newsrc[occ->base], changed[i] + 1);
			}
		}
		if (!possible)
			continue;
		for (i = 0; i < nocc; i++)
		{
			if (src[i])
				text = ep_ivm_replace_once(text, ((IvmOcc *) list_nth(d->occs, i))->fromitem, src[i]);
		}
		appendStringInfo(out, "%sSELECT %d AS __ep_m, __ep_b.* FROM (%s) __ep_b",
						 out->len > 0 ? " UNION ALL " : "",
						 ((nsub % 2 == 1) ? 1 : -1) * ((nold % 2 == 1) ? -1 : 1), text);
	}
}

/* The upsert applying delta(P) to the storage; returns (tid, c, dirty). */
char *
ep_ivm_apply_sql(IvmDef *d, const char *branches)
{
	StringInfoData buf;
	StringInfoData cols;
	StringInfoData vals;
	StringInfoData sets;
	StringInfoData dirty_ins;
	StringInfoData dirty_upd;
	ListCell   *lc;
	int			i;
	int			nkeys = list_length(d->keys);

	initStringInfo(&buf);
	initStringInfo(&cols);
	initStringInfo(&vals);
	initStringInfo(&sets);
	initStringInfo(&dirty_ins);
	initStringInfo(&dirty_upd);
	appendStringInfoString(&dirty_ins, "false");
	appendStringInfoString(&dirty_upd, "false");

	appendStringInfoString(&buf, "WITH __ep_d AS (SELECT ");
	for (i = 1; i <= nkeys; i++)
		appendStringInfo(&buf, "__ep_k%d, ", i);
	appendStringInfoString(&buf, "pg_catalog.sum(__ep_m) AS __ep_count");
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		int			j = agg->idx;
		char	   *h = OidIsValid(agg->hidtype) ? ep_ivm_type_sql(agg->hidtype, -1) : NULL;
		const char *f = agg->kind == AGG_MIN ? "min" : "max";

		switch (agg->kind)
		{
			case AGG_COUNT_STAR:
				break;
			case AGG_COUNT:
				appendStringInfo(&buf, ", pg_catalog.sum(CASE WHEN __ep_a%d IS NULL THEN 0 ELSE __ep_m END) AS __ep_c%d", j, j);
				break;
			case AGG_SUM:
			case AGG_AVG:
				appendStringInfo(&buf, ", pg_catalog.sum(CASE WHEN __ep_m OPERATOR(pg_catalog.>) 0 THEN (__ep_a%d)::%s ELSE OPERATOR(pg_catalog.-) (__ep_a%d)::%s END) AS __ep_s%d", j, h, j, h, j);
				appendStringInfo(&buf, ", pg_catalog.sum(CASE WHEN __ep_a%d IS NULL THEN 0 ELSE __ep_m END) AS __ep_n%d", j, j);
				break;
			case AGG_MIN:
			case AGG_MAX:
				appendStringInfo(&buf, ", pg_catalog.%s(__ep_a%d) FILTER (WHERE __ep_m OPERATOR(pg_catalog.>) 0) AS __ep_i%d", f, j, j);
				appendStringInfo(&buf, ", pg_catalog.%s(__ep_a%d) FILTER (WHERE __ep_m OPERATOR(pg_catalog.<) 0) AS __ep_d%d", f, j, j);
				break;
		}
	}
	appendStringInfo(&buf, " FROM (%s) __ep_x GROUP BY ", branches);
	for (i = 1; i <= nkeys; i++)
		appendStringInfo(&buf, "%s__ep_k%d", i > 1 ? ", " : "", i);
	appendStringInfoString(&buf, "), __ep_u AS (INSERT INTO ");
	appendStringInfoString(&buf, d->storage);
	appendStringInfoString(&buf, " AS __ep_s (");

	i = 0;
	foreach(lc, d->keys)
	{
		IvmKey	   *key = lfirst(lc);

		appendStringInfo(&cols, "%s, ", quote_identifier(key->col));
		appendStringInfo(&vals, "__ep_k%d, ", ++i);
	}
	appendStringInfoString(&cols, "__ep_count");
	appendStringInfoString(&vals, "__ep_count");
	appendStringInfoString(&sets, "__ep_count = __ep_s.__ep_count OPERATOR(pg_catalog.+) excluded.__ep_count");
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		int			j = agg->idx;
		const char *c = quote_identifier(agg->col);
		char	   *newn;
		char	   *news;

		switch (agg->kind)
		{
			case AGG_COUNT_STAR:
			case AGG_COUNT:
				appendStringInfo(&cols, ", %s", c);
				if (agg->kind == AGG_COUNT_STAR)
					appendStringInfoString(&vals, ", __ep_count");
				else
					appendStringInfo(&vals, ", __ep_c%d", j);
				appendStringInfo(&sets, ", %s = __ep_s.%s OPERATOR(pg_catalog.+) excluded.%s", c, c, c);
				break;
			case AGG_SUM:
			case AGG_AVG:
				appendStringInfo(&cols, ", %s, __ep_s%d, __ep_n%d", c, j, j);
				if (agg->kind == AGG_SUM)
					appendStringInfo(&vals, ", CASE WHEN __ep_n%d OPERATOR(pg_catalog.>) 0 THEN __ep_s%d END", j, j);
				else
					appendStringInfo(&vals, ", CASE WHEN __ep_n%d OPERATOR(pg_catalog.>) 0 THEN %s END", j,
									 ep_ivm_avg_expr(agg, psprintf("__ep_s%d", j), psprintf("__ep_n%d", j)));
				appendStringInfo(&vals, ", COALESCE(__ep_s%d, 0), __ep_n%d", j, j);
				newn = psprintf("(__ep_s.__ep_n%d OPERATOR(pg_catalog.+) excluded.__ep_n%d)", j, j);
				news = psprintf("(COALESCE(__ep_s.__ep_s%d, 0) OPERATOR(pg_catalog.+) COALESCE(excluded.__ep_s%d, 0))", j, j);
				appendStringInfo(&sets, ", __ep_n%d = %s, __ep_s%d = %s", j, newn, j, news);
				appendStringInfo(&sets, ", %s = CASE WHEN %s OPERATOR(pg_catalog.>) 0 THEN %s END", c, newn,
								 agg->kind == AGG_SUM ? news : ep_ivm_avg_expr(agg, news, newn));
				break;
			case AGG_MIN:
			case AGG_MAX:
				{
					const char *op = agg->kind == AGG_MIN ? "<=" : ">=";

					/*
					 * A deleted value at or beyond the stored extreme makes
					 * the group recompute it. A NULL stored extreme (no
					 * non-NULL value was seen, e.g. a deferred batch that
					 * inserted and deleted values of an empty group) is
					 * beaten by any deleted value: the batch's inserted
					 * extreme may be one of the deleted rows.
					 */
					char	   *lost = psprintf("COALESCE(excluded.__ep_d%d OPERATOR(pg_catalog.%s) __ep_s.%s, excluded.__ep_d%d IS NOT NULL)",
												j, op, c, j);

					appendStringInfo(&cols, ", %s, __ep_d%d", c, j);
					appendStringInfo(&vals, ", __ep_i%d, __ep_d%d", j, j);
					appendStringInfo(&sets, ", %s = CASE WHEN %s THEN __ep_s.%s ELSE %s(__ep_s.%s, excluded.%s) END, __ep_d%d = NULL",
									 c, lost, c, agg->kind == AGG_MIN ? "LEAST" : "GREATEST", c, c, j);
					appendStringInfo(&dirty_ins, " OR __ep_d%d IS NOT NULL", j);
					appendStringInfo(&dirty_upd, " OR %s", lost);
				}
				break;
		}
	}
	appendStringInfo(&buf, "%s, __ep_dirty) SELECT %s, %s FROM __ep_d",
					 cols.data, vals.data, dirty_ins.data);
	/* groups in key order: concurrent writers lock storage rows alike */
	for (i = 1; i <= nkeys; i++)
		appendStringInfo(&buf, "%s__ep_k%d", i == 1 ? " ORDER BY " : ", ", i);
	appendStringInfoString(&buf, " ON CONFLICT (");
	i = 0;
	foreach(lc, d->keys)
	{
		IvmKey	   *key = lfirst(lc);

		appendStringInfo(&buf, "%s%s", i++ > 0 ? ", " : "", quote_identifier(key->col));
	}
	appendStringInfo(&buf, ") DO UPDATE SET %s, __ep_dirty = %s"
					 " RETURNING __ep_s.ctid AS tid, __ep_s.__ep_count AS c, __ep_s.__ep_dirty AS dirty)"
					 " SELECT tid, c, dirty FROM __ep_u WHERE c OPERATOR(pg_catalog.<=) 0 OR dirty",
					 sets.data, dirty_upd.data);
	return buf.data;
}

char *
ep_ivm_recompute_sql(IvmDef *d)
{
	StringInfoData buf;
	ListCell   *lc;
	bool		any = false;

	initStringInfo(&buf);
	appendStringInfo(&buf, "UPDATE %s AS __ep_s SET __ep_dirty = false", d->storage);
	foreach(lc, d->aggs)
	{
		IvmAgg	   *agg = lfirst(lc);
		ListCell   *lk;
		int			i = 0;
		StringInfoData notnull;
		StringInfoData eq;
		StringInfoData eqnull;
		char	   *sub;

		if (agg->kind != AGG_MIN && agg->kind != AGG_MAX)
			continue;
		any = true;

		/*
		 * Groups whose keys are all non-NULL (the usual case) are found by
		 * plain equalities, which let the planner answer min/max with one
		 * probe of an index on (key, column); NULL keys need the OR form.
		 */
		initStringInfo(&notnull);
		initStringInfo(&eq);
		initStringInfo(&eqnull);
		foreach(lk, d->keys)
		{
			IvmKey	   *key = lfirst(lk);
			const char *c = quote_identifier(key->col);

			i++;
			appendStringInfo(&notnull, " AND __ep_s.%s IS NOT NULL", c);
			appendStringInfo(&eq, " AND __ep_p.__ep_k%d OPERATOR(pg_catalog.=) __ep_s.%s", i, c);
			appendStringInfo(&eqnull, " AND (__ep_p.__ep_k%d OPERATOR(pg_catalog.=) __ep_s.%s OR (__ep_p.__ep_k%d IS NULL AND __ep_s.%s IS NULL))",
							 i, c, i, c);
		}
		sub = psprintf("(SELECT pg_catalog.%s(__ep_p.__ep_a%d) FROM (%s) __ep_p WHERE true",
					   agg->kind == AGG_MIN ? "min" : "max", agg->idx, d->ptext);
		if (i == 0)
			appendStringInfo(&buf, ", %s = %s)", quote_identifier(agg->col), sub);
		else
			appendStringInfo(&buf, ", %s = CASE WHEN true%s THEN %s%s) ELSE %s%s) END",
							 quote_identifier(agg->col), notnull.data, sub, eq.data, sub, eqnull.data);
		appendStringInfo(&buf, ", __ep_d%d = NULL", agg->idx);
	}
	appendStringInfoString(&buf, " WHERE __ep_s.ctid OPERATOR(pg_catalog.=) ANY ($1)");
	return any ? buf.data : NULL;
}

