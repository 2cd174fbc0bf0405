/*-------------------------------------------------------------------------
 *
 * ivm_outer.c
 *	  Incremental maintenance of views over outer equi-joins: a tree of
 *	  LEFT, RIGHT, FULL (and inner) joins of table references in which
 *	  every join equates the key columns of the tables on its two sides
 *	  (a LEFT JOIN b ON a.x = b.y [AND ...] FULL JOIN c ON c.z = b.y ...).
 *
 * An outer join is not linear in its inputs (a row's NULL-extended partner
 * appears or disappears when matches come and go), so the inclusion-
 * exclusion rule of ivm_sql.c does not apply. But when all joins equate one
 * shared key, the result is partitioned by it: rows of key k depend only on
 * base rows of key k (NULL keys never match, each such row is on its own;
 * further ANDed conditions only filter within a key). So the delta of P
 * is P over the affected partitions after the change, minus P over the
 * same partitions before it:
 *
 *	 K	 = join keys of the changed rows (old and new, every reference)
 *	 post_i = reference i restricted to K
 *	 pre_i	= post_i - (new - old) + (old - new)	(multiset, changed tables)
 *	 delta(P) = +P(post_1, post_2) - P(pre_1, pre_2)
 *
 * The pre-state is rebuilt with EXCEPT ALL, so every column of both tables
 * must have a built-in equality; ep_ivm_outer_check refuses other tables.
 * The signed rows feed the same upsert as every other shape.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/pg_operator.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "ivm_def.h"

static Var *
ivm_strip_var(Node *node)
{
	while (node && IsA(node, RelabelType))
		node = (Node *) ((RelabelType *) node)->arg;
	if (node && IsA(node, Var) && ((Var *) node)->varlevelsup == 0 &&
		((Var *) node)->varattno > 0)
		return (Var *) node;
	return NULL;
}

static IvmOcc *
ivm_occ_of(IvmDef *d, Index rti)
{
	ListCell   *lc;

	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);

		if (occ->rti == rti)
			return occ;
	}
	return NULL;
}

/*
 * A column reference of the join condition, resolved to a Var of a table
 * occurrence (join alias columns of LEFT/RIGHT/INNER USING joins stand for
 * one side's column; a FULL JOIN's merged column does not).
 */
static Var *
ivm_key_var(IvmDef *d, Node *node)
{
	Var		   *v = ivm_strip_var(node);

	while (v != NULL && ivm_occ_of(d, v->varno) == NULL)
	{
		RangeTblEntry *rte = rt_fetch(v->varno, d->query->rtable);

		if (rte->rtekind != RTE_JOIN || v->varattno > list_length(rte->joinaliasvars))
			return NULL;
		v = ivm_strip_var(list_nth(rte->joinaliasvars, v->varattno - 1));
	}
	return v;
}

/* Is range table index rti a table occurrence below node? */
static bool
ivm_tree_has(Node *node, Index rti)
{
	if (IsA(node, RangeTblRef))
		return ((RangeTblRef *) node)->rtindex == rti;
	if (IsA(node, JoinExpr))
		return ivm_tree_has(((JoinExpr *) node)->larg, rti) ||
			ivm_tree_has(((JoinExpr *) node)->rarg, rti);
	return false;
}

/* The occurrence's key column is unset or is this column. */
static bool
ivm_key_fits(IvmOcc *occ, Var *v)
{
	return occ->keyattno == 0 || occ->keyattno == v->varattno;
}

/*
 * Walk the join tree bottom-up. Each join must equate a column of a table
 * on its left with a column of a table on its right (more conditions may
 * follow, ANDed); the equated columns become the key columns of their
 * tables, one per table, so all tables end up partitioned by one key.
 */
static void
ivm_outer_walk(IvmDef *d, Node *node)
{
	JoinExpr   *j;
	List	   *conds;
	ListCell   *lc;
	bool		found = false;

	if (IsA(node, RangeTblRef))
		return;
	if (!IsA(node, JoinExpr))
		ep_ivm_unsupported("an outer join over something other than tables");
	j = (JoinExpr *) node;
	ivm_outer_walk(d, j->larg);
	ivm_outer_walk(d, j->rarg);
	if (j->quals == NULL)
		ep_ivm_unsupported("an outer join together with a cross join");
	conds = make_ands_implicit((Expr *) j->quals);
	foreach(lc, conds)
	{
		OpExpr	   *op = lfirst(lc);
		Var		   *l;
		Var		   *r;
		IvmOcc	   *lo;
		IvmOcc	   *ro;

		if (!IsA(op, OpExpr) || list_length(op->args) != 2 ||
			strcmp(get_opname(op->opno), "=") != 0)
			continue;
		l = ivm_key_var(d, linitial(op->args));
		r = ivm_key_var(d, lsecond(op->args));
		if (l == NULL || r == NULL)
			continue;

		/*
		 * The key must mean one thing everywhere: columns of one type and
		 * collation, compared with that type's own equality (the affected
		 * keys are later matched with it), not any operator named =.
		 */
		if (l->vartype != r->vartype || l->varcollid != r->varcollid ||
			op->opno != lookup_type_cache(l->vartype, TYPECACHE_EQ_OPR)->eq_opr)
			continue;
		if (ivm_tree_has(j->rarg, l->varno) && ivm_tree_has(j->larg, r->varno))
		{
			Var		   *t = l;

			l = r;
			r = t;
		}
		if (!ivm_tree_has(j->larg, l->varno) || !ivm_tree_has(j->rarg, r->varno))
			continue;
		lo = ivm_occ_of(d, l->varno);
		ro = ivm_occ_of(d, r->varno);
		if (!ivm_key_fits(lo, l) || !ivm_key_fits(ro, r))
			continue;
		lo->keyattno = l->varattno;
		ro->keyattno = r->varattno;
		found = true;
		break;
	}
	if (!found)
		ep_ivm_unsupported("an outer join whose condition does not equate one key column shared by all its tables");
}

/*
 * Accept a tree of joins (outer and inner) of table references in which
 * every join equates the key columns of the tables on its two sides: then
 * every result row is built from base rows of one key value (or from one
 * row with a NULL key), which is what the partition recompute needs.
 */
void
ep_ivm_outer_check(IvmDef *d)
{
	Query	   *q = d->query;
	ListCell   *lc;

	if (list_length(q->jointree->fromlist) != 1 ||
		!IsA(linitial(q->jointree->fromlist), JoinExpr))
		ep_ivm_unsupported("an outer join together with a comma join");
	ivm_outer_walk(d, linitial(q->jointree->fromlist));
	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);

		if (occ->keyattno == 0)
			ep_ivm_unsupported("an outer join whose condition does not equate one key column shared by all its tables");
		occ->keycol = pstrdup(quote_identifier(get_attname(occ->relid, occ->keyattno, false)));
	}

	/* the pre-state is rebuilt with EXCEPT ALL */
	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);
		Relation	rel = table_open(occ->relid, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(rel);
		int			i;

		for (i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped && !ep_ivm_type_comparable(att->atttypid))
				ep_ivm_unsupported(psprintf("an outer join over table \"%s\", whose column \"%s\" of type %s has no built-in btree equality",
											RelationGetRelationName(rel), NameStr(att->attname),
											format_type_be(att->atttypid)));
		}
		table_close(rel, AccessShareLock);
	}
}

/* "c1, c2, ..." of the live columns of a relation */
char *
ep_ivm_column_list(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", quote_identifier(NameStr(att->attname)));
	}
	table_close(rel, AccessShareLock);
	return buf.data;
}

void
ep_ivm_outer_branches(IvmDef *d, const char **oldsrc, const char **newsrc, StringInfo out)
{
	StringInfoData k;
	ListCell   *lc;
	char	   *post_text = d->ptext;
	char	   *pre_text = d->ptext;
	int			i = 0;

	/* K: join keys of every changed row, for every reference to its table */
	initStringInfo(&k);
	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);

		if (oldsrc[occ->base])
			appendStringInfo(&k, "%sSELECT __ep_x.%s FROM %s __ep_x", k.len ? " UNION " : "",
							 occ->keycol, oldsrc[occ->base]);
		if (newsrc[occ->base])
			appendStringInfo(&k, "%sSELECT __ep_x.%s FROM %s __ep_x", k.len ? " UNION " : "",
							 occ->keycol, newsrc[occ->base]);
	}

	foreach(lc, d->occs)
	{
		IvmOcc	   *occ = lfirst(lc);
		char	   *cols = ep_ivm_column_list(occ->relid);
		char	   *post;
		char	   *pre;
		const char *o = oldsrc[occ->base];
		const char *n = newsrc[occ->base];

		i++;
		post = psprintf("(SELECT %s FROM %s __ep_y WHERE __ep_y.%s OPERATOR(pg_catalog.=) ANY (%s)"
						" OR (__ep_y.%s IS NULL AND EXISTS (SELECT 1 FROM (%s) __ep_z(k) WHERE __ep_z.k IS NULL)))",
						cols, ep_ivm_relation_text(occ->relid), occ->keycol, k.data,
						occ->keycol, k.data);
		if (o || n)
		{
			char	   *netnew = NULL;
			char	   *netold = NULL;

			if (n)
				netnew = o ? psprintf("SELECT %s FROM %s __ep_n EXCEPT ALL SELECT %s FROM %s __ep_o", cols, n, cols, o)
					: psprintf("SELECT %s FROM %s __ep_n", cols, n);
			if (o)
				netold = n ? psprintf("SELECT %s FROM %s __ep_o EXCEPT ALL SELECT %s FROM %s __ep_n", cols, o, cols, n)
					: psprintf("SELECT %s FROM %s __ep_o", cols, o);
			pre = psprintf("((SELECT * FROM %s __ep_a%s%s%s)%s%s%s)", post,
						   netnew ? " EXCEPT ALL (" : "", netnew ? netnew : "", netnew ? ")" : "",
						   netold ? " UNION ALL (" : "", netold ? netold : "", netold ? ")" : "");
		}
		else
			pre = post;
		post_text = ep_ivm_replace_once(post_text, occ->fromitem,
										psprintf("%s __ep_r%d", post, i));
		pre_text = ep_ivm_replace_once(pre_text, occ->fromitem,
									   psprintf("%s __ep_r%d", pre, i));
	}
	appendStringInfo(out, "SELECT 1 AS __ep_m, __ep_b.* FROM (%s) __ep_b UNION ALL "
					 "SELECT -1 AS __ep_m, __ep_b.* FROM (%s) __ep_b", post_text, pre_text);
}
