/*-------------------------------------------------------------------------
 *
 * ivm_recompute.c
 *	  Maintenance by recompute-and-diff: the strategy of immediate and
 *	  deferred views whose query the delta machinery (ivm_sql.c,
 *	  ivm_outer.c) cannot decompose, but whose shape is one of a fixed list
 *	  (ep_ivm_recompute_check): non-recursive WITH, simple subqueries in
 *	  FROM, EXISTS / NOT EXISTS / [NOT] IN (subquery) ANDed in WHERE, any tree of
 *	  inner and outer joins, functions in FROM, no FROM at all, UNION ALL,
 *	  columns of any type (json, user-defined types), aggregates with FILTER,
 *	  DISTINCT or ORDER BY, string_agg, array_agg, bool_and, bool_or,
 *	  jsonb_agg. Everything else stays refused (0A000, hint 'full').
 *
 * Such a view is stored like a full view (kind 'full' in ep.ivm_views): the
 * result rows with a multiplicity __ep_count, no key. On each maintenance
 * (immediate: every statement changing a base table, TRUNCATE included;
 * deferred: ep.refresh_view) the view's query runs through the owner
 * primitive and one statement (ep_ivm_rediff_sql) writes only the
 * difference: rows are compared by their text image (record output of the
 * row), so types without an equality operator (json, point, user-defined
 * types) compare exactly, and a row that occurs n times is one storage row
 * of count n. Rows whose (image, count) is unchanged are not touched.
 *
 * Groups only: an immediate view that groups one table by plain columns,
 * all visible, recomputes only the groups whose keys the statement's old
 * and new rows carry (ep_ivm_rediff_groups_sql). Its catalog row keeps that
 * statement in sql_recompute and the select list collecting the keys from a
 * transition table in sql_remove (both unused otherwise by views of kind
 * 'full'); TRUNCATE recomputes the whole view.
 *
 * Locking: every maintenance takes an EXCLUSIVE lock on the storage
 * (ep_ivm_full_recompute) and holds it to the end of the transaction:
 * writers of a recompute view serialize their maintenance, and the next
 * one, once the previous committed, recomputes from a snapshot that sees
 * that commit (READ COMMITTED: a fresh statement snapshot; REPEATABLE READ
 * and SERIALIZABLE: the latest snapshot, as foreign-key checks do).
 * Statements nested in other statements (user triggers, writable CTEs,
 * cascading foreign keys) need no care: each maintenance computes the
 * whole result from the current state, and the last one runs after the
 * last change. Deferred views only count changes (like full views, in
 * name__ivm_log); a refresh locks that counter exclusively, which waits for
 * writers that counted and have not committed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace_d.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "storage/lmgr.h"
#include "utils/snapmgr.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "ivm_def.h"

/* ----------------------------------------------------------------
 * Which queries are maintained by recompute
 * ----------------------------------------------------------------
 */

static void rc_check_query(Query *q, bool top);

/* Aggregates a recompute view may use (all in pg_catalog). */
static const char *const rc_aggregates[] = {
	"count", "sum", "avg", "min", "max",
	"string_agg", "array_agg", "bool_and", "bool_or", "jsonb_agg",
	NULL
};

typedef struct RcWalk
{
	bool		sublinks_ok;	/* a SubLink here is an ANDed WHERE condition */
	bool		aggs_ok;		/* this query level may aggregate */
} RcWalk;

static bool
rc_expr_walker(Node *node, RcWalk *w)
{
	if (node == NULL)
		return false;
	if (IsA(node, SubLink))
	{
		SubLink    *sl = (SubLink *) node;

		/* x NOT IN (subquery) is x <> ALL (subquery) */
		if (sl->subLinkType != EXISTS_SUBLINK && sl->subLinkType != ANY_SUBLINK &&
			sl->subLinkType != ALL_SUBLINK)
			ep_ivm_unsupported("a scalar or ARRAY subquery (EXISTS, NOT EXISTS, IN and NOT IN are maintained)");
		if (!w->sublinks_ok)
			ep_ivm_unsupported("a subquery outside the ANDed conditions of WHERE");
		rc_check_query((Query *) sl->subselect, false);
		/* the tested expression of IN may not hold another subquery */
		{
			RcWalk		inner = {false, w->aggs_ok};

			return rc_expr_walker(sl->testexpr, &inner);
		}
	}
	if (IsA(node, Aggref))
	{
		Aggref	   *a = (Aggref *) node;
		char	   *fname = get_func_name(a->aggfnoid);
		bool		known = false;

		if (!w->aggs_ok)
			ep_ivm_unsupported("an aggregate inside a subquery");
		if (get_func_namespace(a->aggfnoid) == PG_CATALOG_NAMESPACE)
		{
			for (int i = 0; rc_aggregates[i] != NULL; i++)
			{
				if (strcmp(fname, rc_aggregates[i]) == 0)
					known = true;
			}
		}
		if (!known || a->aggkind != AGGKIND_NORMAL || a->agglevelsup != 0)
			ep_ivm_unsupported(psprintf("aggregate %s", fname));
		/* arguments, ORDER BY and FILTER hold no subquery */
		{
			RcWalk		inner = {false, false};

			return expression_tree_walker(node, rc_expr_walker, (void *) &inner);
		}
	}
	if (IsA(node, GroupingFunc))
		ep_ivm_unsupported("GROUPING");
	if (IsA(node, WindowFunc))
		ep_ivm_unsupported("window functions");
	if (IsA(node, Var) && ((Var *) node)->varattno < 0)
	{
		/* named as the delta check names them (ivm_define.c) */
		static const char *const sysnames[] = {"ctid", "xmin", "cmin", "xmax", "cmax", "tableoid"};
		int			attno = -((Var *) node)->varattno;

		ep_ivm_unsupported(psprintf("system column \"%s\"",
									attno <= lengthof(sysnames) ? sysnames[attno - 1] : "?"));
	}
	if (IsA(node, Query))
		return false;
	if (IsA(node, BoolExpr) && ((BoolExpr *) node)->boolop == NOT_EXPR && w->sublinks_ok)
	{
		/* NOT EXISTS, NOT (x IN ...) */
		return rc_expr_walker(linitial(((BoolExpr *) node)->args), w);
	}
	{
		RcWalk		inner = {false, w->aggs_ok};

		return expression_tree_walker(node, rc_expr_walker, (void *) &inner);
	}
}

/* WHERE: subqueries only as ANDed conditions (or negated ones). */
static void
rc_check_where(Node *quals, bool aggs_ok)
{
	ListCell   *lc;

	if (quals == NULL)
		return;
	foreach(lc, make_ands_implicit((Expr *) quals))
	{
		RcWalk		w = {true, aggs_ok};

		(void) rc_expr_walker(lfirst(lc), &w);
	}
}

static void
rc_check_expr(Node *node, bool aggs_ok)
{
	RcWalk		w = {false, aggs_ok};

	(void) rc_expr_walker(node, &w);
}

static void
rc_check_jointree(Query *q, Node *node, bool aggs_ok)
{
	if (node == NULL)
		return;
	if (IsA(node, FromExpr))
	{
		ListCell   *lc;

		foreach(lc, ((FromExpr *) node)->fromlist)
			rc_check_jointree(q, lfirst(lc), aggs_ok);
		rc_check_where(((FromExpr *) node)->quals, aggs_ok);
	}
	else if (IsA(node, JoinExpr))
	{
		JoinExpr   *j = (JoinExpr *) node;

		rc_check_jointree(q, j->larg, aggs_ok);
		rc_check_jointree(q, j->rarg, aggs_ok);
		rc_check_expr(j->quals, false);
	}
}

/* A base table of a recompute view: the same rules as for deltas. */
static void
rc_check_relation(RangeTblEntry *rte)
{
	char		relkind = get_rel_relkind(rte->relid);

	/* another incremental view: maintained from its storage */
	if (relkind == RELKIND_VIEW && OidIsValid(ep_ivm_storage_of_view(rte->relid)))
		return;
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ep_ivm_unsupported(psprintf("relation \"%s\", which is not a table (views other than incremental views, materialized views and foreign tables cannot be base relations)",
									get_rel_name(rte->relid)));
	if (IsCatalogNamespace(get_rel_namespace(rte->relid)))
		ep_ivm_unsupported("a system catalog");
	if (rte->tablesample)
		ep_ivm_unsupported("TABLESAMPLE");
	if (relkind == RELKIND_RELATION && has_subclass(rte->relid))
		ep_ivm_unsupported(psprintf("table \"%s\", which has inheritance children",
									get_rel_name(rte->relid)));
	if (relkind == RELKIND_PARTITIONED_TABLE)
		ep_ivm_unsupported(psprintf("partitioned table \"%s\" (writes to its partitions would bypass maintenance)",
									get_rel_name(rte->relid)));
	if (get_rel_relispartition(rte->relid))
		ep_ivm_unsupported(psprintf("partition \"%s\" (rows written through its partitioned table would bypass maintenance)",
									get_rel_name(rte->relid)));
}

static void
rc_check_setop(Node *node)
{
	SetOperationStmt *op;

	if (node == NULL || IsA(node, RangeTblRef))
		return;
	op = (SetOperationStmt *) node;
	if (op->op != SETOP_UNION || !op->all)
		ep_ivm_unsupported("UNION, INTERSECT or EXCEPT (of the set operations only UNION ALL is maintained)");
	rc_check_setop(op->larg);
	rc_check_setop(op->rarg);
}

/*
 * One query level. Only the top level (and the branches of a UNION ALL at
 * the top) may aggregate; subqueries and WITH queries are simple.
 */
static void
rc_check_query(Query *q, bool top)
{
	ListCell   *lc;
	bool		aggregates = q->hasAggs || q->groupClause != NIL || q->havingQual != NULL;

	if (q->commandType != CMD_SELECT || q->hasModifyingCTE)
		ep_ivm_unsupported("a data-modifying statement");
	if (q->hasRecursive)
		ep_ivm_unsupported("WITH RECURSIVE");
	if (q->hasWindowFuncs)
		ep_ivm_unsupported("window functions");
	ep_ivm_check_clauses(q);
	if (!top && (aggregates || q->distinctClause != NIL))
		ep_ivm_unsupported("aggregates, GROUP BY or DISTINCT inside a subquery or WITH query");
	if (aggregates && q->distinctClause != NIL)
		ep_ivm_unsupported("DISTINCT together with GROUP BY or aggregates");
	if (q->setOperations != NULL)
	{
		rc_check_setop(q->setOperations);
		/* the branches are subqueries of this level, aggregating or not */
		foreach(lc, q->rtable)
		{
			RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

			if (rte->rtekind == RTE_SUBQUERY)
				rc_check_query(rte->subquery, top);
		}
		foreach(lc, q->cteList)
		{
			CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

			if (cte->cterecursive)
				ep_ivm_unsupported("WITH RECURSIVE");
			rc_check_query((Query *) cte->ctequery, false);
		}
		return;
	}

	foreach(lc, q->cteList)
	{
		CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

		if (cte->cterecursive)
			ep_ivm_unsupported("WITH RECURSIVE");
		rc_check_query((Query *) cte->ctequery, false);
	}
	foreach(lc, q->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		switch (rte->rtekind)
		{
			case RTE_RELATION:
				rc_check_relation(rte);
				break;
			case RTE_JOIN:
				break;
			case RTE_SUBQUERY:
				rc_check_query(rte->subquery, false);
				break;
			case RTE_CTE:
				if (rte->self_reference)
					ep_ivm_unsupported("WITH RECURSIVE");
				break;
			case RTE_FUNCTION:
				rc_check_expr((Node *) rte->functions, false);
				break;
			case RTE_VALUES:
				ep_ivm_unsupported("VALUES");
				break;
			case RTE_TABLEFUNC:
				ep_ivm_unsupported("a table function (XMLTABLE)");
				break;
			default:
				ep_ivm_unsupported("this kind of FROM item");
		}
	}
	rc_check_jointree(q, (Node *) q->jointree, aggregates);
	rc_check_expr(q->havingQual, aggregates);
	foreach(lc, q->targetList)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		rc_check_expr((Node *) tle->expr, aggregates);
		/* as for deltas: the visible columns are group keys or aggregates */
		if (aggregates && !tle->resjunk && !IsA(tle->expr, Aggref) &&
			(tle->ressortgroupref == 0 ||
			 get_sortgroupref_clause_noerr(tle->ressortgroupref, q->groupClause) == NULL))
			ep_ivm_unsupported("an expression over aggregates or group keys in the select list");
	}
}

static bool
rc_mutable_checker(Oid func_id, void *context)
{
	return func_volatile(func_id) != PROVOLATILE_IMMUTABLE;
}

/*
 * contain_mutable_functions, except that jsonb_agg (stable only because
 * some types' conversion to jsonb reads settings) is allowed.
 */
static bool
rc_mutable_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Aggref) &&
		get_func_namespace(((Aggref *) node)->aggfnoid) == PG_CATALOG_NAMESPACE &&
		strcmp(get_func_name(((Aggref *) node)->aggfnoid), "jsonb_agg") == 0)
		return expression_tree_walker(node, rc_mutable_walker, context);
	if (check_functions_in_node(node, rc_mutable_checker, context))
		return true;
	if (IsA(node, SQLValueFunction) || IsA(node, NextValueExpr))
		return true;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, rc_mutable_walker, context, 0);
	return expression_tree_walker(node, rc_mutable_walker, context);
}

/*
 * Accept the query of an immediate or deferred view for recompute-and-diff,
 * or refuse it (0A000, naming the construct, hint 'full').
 */
void
ep_ivm_recompute_check(Query *q)
{
	rc_check_query(q, true);
	if (rc_mutable_walker((Node *) q, NULL))
		ep_ivm_unsupported("a function that is not immutable");
}

/* ----------------------------------------------------------------
 * The difference statement
 * ----------------------------------------------------------------
 */

/*
 * One statement that makes the storage equal to the query's result:
 * __ep_n holds each distinct row of the result once (by its text image)
 * with its number of occurrences; storage rows whose (image, count) is not
 * in __ep_n are deleted, rows of __ep_n whose (image, count) is not in the
 * storage are inserted. Both compare with the storage as it was before the
 * statement, which is right: a storage row that matches is kept, and its
 * image is then not inserted again. Populates an empty storage as well.
 */
static char *
rc_rediff(IvmDef *d, const char *source, const char *storage_filter)
{
	StringInfoData buf;
	StringInfoData outcols;		/* __ep_o1, ... */
	StringInfoData stcols;		/* quoted storage columns */
	StringInfoData simg;		/* image of a storage row __ep_s */
	StringInfoData vcols;		/* __ep_v.__ep_o1, ... */
	StringInfoData ncols;		/* __ep_n.__ep_o1, ..., */
	ListCell   *lc;
	int			n = 0;

	initStringInfo(&outcols);
	initStringInfo(&stcols);
	initStringInfo(&simg);
	initStringInfo(&vcols);
	initStringInfo(&ncols);
	foreach(lc, d->outcols)
	{
		n++;
		appendStringInfo(&vcols, "%s__ep_v.__ep_o%d", n > 1 ? ", " : "", n);
		appendStringInfo(&ncols, "__ep_n.__ep_o%d, ", n);
		appendStringInfo(&outcols, "%s__ep_o%d", n > 1 ? ", " : "", n);
		appendStringInfo(&stcols, "%s%s", n > 1 ? ", " : "", quote_identifier(lfirst(lc)));
		appendStringInfo(&simg, "%s__ep_s.%s", n > 1 ? ", " : "", quote_identifier(lfirst(lc)));
	}

	initStringInfo(&buf);
	appendStringInfo(&buf,
					 "WITH __ep_n AS MATERIALIZED ("
					 "SELECT __ep_w.* FROM ("
					 "SELECT __ep_q.*, pg_catalog.count(*) OVER __ep_g AS __ep_c,"
					 " pg_catalog.row_number() OVER __ep_g AS __ep_rn FROM ("
					 "SELECT __ep_v.*, (ROW(%s)::pg_catalog.text) COLLATE pg_catalog.\"C\" AS __ep_i"
					 " FROM (%s) __ep_v%s%s%s) __ep_q"
					 " WINDOW __ep_g AS (PARTITION BY __ep_q.__ep_i)) __ep_w"
					 " WHERE __ep_w.__ep_rn OPERATOR(pg_catalog.=) 1), ",
					 vcols.data,
					 source, n > 0 ? "(" : "", outcols.data, n > 0 ? ")" : "");
	appendStringInfo(&buf,
					 "__ep_d AS (DELETE FROM %s __ep_s WHERE %s%sNOT EXISTS (SELECT FROM __ep_n"
					 " WHERE __ep_n.__ep_i OPERATOR(pg_catalog.=) (ROW(%s)::pg_catalog.text) COLLATE pg_catalog.\"C\""
					 " AND __ep_n.__ep_c OPERATOR(pg_catalog.=) __ep_s.__ep_count)) ",
					 d->storage, storage_filter ? storage_filter : "", storage_filter ? " AND " : "",
					 simg.data);
	appendStringInfo(&buf,
					 "INSERT INTO %s (%s%s__ep_count) SELECT %s__ep_n.__ep_c FROM __ep_n"
					 " WHERE NOT EXISTS (SELECT FROM %s __ep_s"
					 " WHERE __ep_n.__ep_i OPERATOR(pg_catalog.=) (ROW(%s)::pg_catalog.text) COLLATE pg_catalog.\"C\""
					 " AND __ep_n.__ep_c OPERATOR(pg_catalog.=) __ep_s.__ep_count)",
					 d->storage, stcols.data, n > 0 ? ", " : "",
					 ncols.data, d->storage, simg.data);
	return buf.data;
}

char *
ep_ivm_rediff_sql(IvmDef *d)
{
	return rc_rediff(d, d->ptext, NULL);
}

/*
 * Groups only: for a query that groups one table by plain columns that are
 * all visible, a statement can change only the groups of the keys its old
 * and new rows carry. Returns the difference statement restricted to a set
 * of groups, and in *keys_sql the select list that computes that set from a
 * transition table (per key: the distinct non-null values, an array, and
 * whether NULL occurs); parameters $2i-1, $2i of the statement are those of
 * key i. The same restriction applies to the query (pushed down by the
 * planner below the GROUP BY) and to the storage rows compared, so the
 * difference of those groups is exact. NULL when the query has another
 * shape.
 */
char *
ep_ivm_rediff_groups_sql(IvmDef *d, char **keys_sql)
{
	Query	   *q = d->query;
	RangeTblEntry *rte;
	StringInfoData keys;
	StringInfoData qf;			/* restriction over __ep_f.__ep_o<p> */
	StringInfoData sf;			/* restriction over the storage __ep_s */
	StringInfoData outcols;
	ListCell   *lc;
	int			k = 0;
	int			n;

	*keys_sql = NULL;
	if (q->groupClause == NIL || q->groupingSets != NIL || q->cteList != NIL ||
		q->setOperations != NULL || q->hasSubLinks || list_length(q->rtable) != 1)
		return NULL;
	rte = linitial_node(RangeTblEntry, q->rtable);
	/* (over another incremental view: its storage rows are not the view's) */
	if (rte->rtekind != RTE_RELATION || get_rel_relkind(rte->relid) == RELKIND_VIEW)
		return NULL;
	initStringInfo(&keys);
	initStringInfo(&qf);
	initStringInfo(&sf);
	foreach(lc, q->groupClause)
	{
		SortGroupClause *sgc = lfirst_node(SortGroupClause, lc);
		TargetEntry *tle = get_sortgroupclause_tle(sgc, q->targetList);
		Var		   *v = (Var *) tle->expr;
		int			pos = 0;
		ListCell   *lt;
		const char *col;
		const char *out;

		if (tle->resjunk || !IsA(v, Var) || v->varattno <= 0 || v->varlevelsup != 0 ||
			!ep_ivm_type_comparable(v->vartype) || !OidIsValid(get_array_type(v->vartype)))
			return NULL;
		/* position among the visible columns */
		foreach(lt, q->targetList)
		{
			TargetEntry *t = lfirst_node(TargetEntry, lt);

			if (t->resjunk)
				continue;
			pos++;
			if (t == tle)
				break;
		}
		k++;
		col = quote_identifier(get_attname(rte->relid, v->varattno, false));
		out = quote_identifier(list_nth(d->outcols, pos - 1));
		appendStringInfo(&keys, "%spg_catalog.array_agg(DISTINCT __ep_t.%s) FILTER (WHERE __ep_t.%s IS NOT NULL),"
						 " pg_catalog.bool_or(__ep_t.%s IS NULL)",
						 k > 1 ? ", " : "", col, col, col);
		appendStringInfo(&qf, "%s(__ep_f.__ep_o%d OPERATOR(pg_catalog.=) ANY ($%d) OR (__ep_f.__ep_o%d IS NULL AND $%d))",
						 k > 1 ? " AND " : "", pos, 2 * k - 1, pos, 2 * k);
		appendStringInfo(&sf, "%s(__ep_s.%s OPERATOR(pg_catalog.=) ANY ($%d) OR (__ep_s.%s IS NULL AND $%d))",
						 k > 1 ? " AND " : "", out, 2 * k - 1, out, 2 * k);
	}
	initStringInfo(&outcols);
	for (n = 1; n <= list_length(d->outcols); n++)
		appendStringInfo(&outcols, "%s__ep_o%d", n > 1 ? ", " : "", n);
	*keys_sql = psprintf("SELECT %s", keys.data);
	return rc_rediff(d, psprintf("SELECT __ep_f.* FROM (%s) __ep_f(%s) WHERE %s",
								 d->ptext, outcols.data, qf.data),
					 sf.data);
}

/*
 * Immediate maintenance of the groups a statement touched (see
 * ep_ivm_rediff_groups_sql): SPI connected with the trigger's transition
 * tables, inside the owner's context. Same lock and snapshot as
 * ep_ivm_full_recompute.
 */
static void
rc_recompute_groups(IvmViewCache *vc, TriggerEvent ev)
{
	const char *src;
	Snapshot	snap = InvalidSnapshot;
	SPIPlanPtr	plan;
	Oid		   *types;
	Datum	   *values;
	char	   *nulls;
	int			nargs;
	int			rc;

	LockRelationOid(vc->storage, ExclusiveLock);
	ep_ivm_recompute_settings();
	if (TRIGGER_FIRED_BY_INSERT(ev))
		src = IVM_NEW_TABLE;
	else if (TRIGGER_FIRED_BY_DELETE(ev))
		src = IVM_OLD_TABLE;
	else
		src = "(SELECT * FROM " IVM_NEW_TABLE " UNION ALL SELECT * FROM " IVM_OLD_TABLE ")";
	if (SPI_execute(psprintf("%s FROM %s __ep_t", vc->sql_remove, src), true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not collect the changed groups of an incremental view");
	nargs = SPI_tuptable->tupdesc->natts;
	types = palloc(sizeof(Oid) * nargs);
	values = palloc(sizeof(Datum) * nargs);
	nulls = palloc(sizeof(char) * nargs);
	for (int i = 0; i < nargs; i++)
	{
		bool		isnull;

		types[i] = SPI_gettypeid(SPI_tuptable->tupdesc, i + 1);
		values[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
		nulls[i] = isnull ? 'n' : ' ';
	}
	/* the latest snapshot, taken after the lock (REPEATABLE READ) */
	if (IsolationUsesXactSnapshot())
		snap = RegisterSnapshot(GetLatestSnapshot());
	plan = SPI_prepare(vc->sql_recompute, nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	rc = SPI_execute_snapshot(plan, values, nulls, snap, InvalidSnapshot, false, true, 0);
	SPI_freeplan(plan);
	if (snap != InvalidSnapshot)
		UnregisterSnapshot(snap);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "recompute of the changed groups of an incremental view failed (%s)",
			 SPI_result_code_string(rc));
}

/*
 * ep_ivm_full_recompute runs only sql_full_insert for these views (the
 * whole difference in one statement); output of floating-point values is
 * made exact for the comparison of images, whatever the writer's setting.
 */
void
ep_ivm_recompute_settings(void)
{
	(void) set_config_option("extra_float_digits", "1", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * A statement changed a base table of a recompute view (SPI connected,
 * inside the owner's context): immediate views are recomputed now,
 * deferred views count the change.
 */
void
ep_ivm_recompute_statement(IvmViewCache *vc, int b, TriggerEvent ev, int64 nold, int64 nnew)
{
	if (vc->refresh == IVM_IMMEDIATE)
	{
		/* only the groups the statement touched, when the shape allows */
		if (vc->sql_remove != NULL && vc->sql_recompute != NULL &&
			!TRIGGER_FIRED_BY_TRUNCATE(ev))
			rc_recompute_groups(vc, ev);
		else
			/* under REPEATABLE READ the latest snapshot, taken after the lock */
			ep_ivm_full_recompute(vc, IsolationUsesXactSnapshot());
		return;
	}
	else
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1];
		int64		n;

		if (TRIGGER_FIRED_BY_TRUNCATE(ev))
			n = 1;
		else if (TRIGGER_FIRED_BY_UPDATE(ev))
			n = 2 * nnew;
		else
			n = nold + nnew;
		args[0] = Int64GetDatum(n);
		if (vc->plan_log_insert[b] == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare(vc->sql_log_insert[b], 1, argtypes);

			if (plan == NULL)
				elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
			SPI_keepplan(plan);
			vc->plan_log_insert[b] = plan;
		}
		if (SPI_execute_plan(vc->plan_log_insert[b], args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not count changes of an incremental view");
	}
}
