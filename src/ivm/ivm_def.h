/*-------------------------------------------------------------------------
 *
 * ivm_def.h
 *	  Internal to the incremental view definition: the analysed shape of a
 *	  view's query (ivm_define.c) and the generators of its maintenance SQL
 *	  (ivm_sql.c, ivm_outer.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EP_IVM_DEF_H
#define EP_IVM_DEF_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"
#include "nodes/primnodes.h"

#include "ivm.h"

typedef enum IvmAggKind
{
	AGG_COUNT_STAR,
	AGG_COUNT,
	AGG_SUM,
	AGG_AVG,
	AGG_MIN,
	AGG_MAX
} IvmAggKind;

typedef struct IvmAgg
{
	IvmAggKind	kind;
	Aggref	   *aggref;
	Expr	   *arg;			/* NULL for count(*) */
	char	   *col;			/* storage column of the visible value */
	Oid			restype;
	int32		restypmod;
	Oid			hidtype;		/* sum/avg accumulator type */
	int			idx;			/* 1-based, names __ep_a<idx> etc. */
} IvmAgg;

typedef struct IvmKey
{
	Expr	   *expr;
	char	   *col;
	Oid			type;
	int32		typmod;
	Oid			coll;
	Index		sortgroupref;
} IvmKey;

typedef struct IvmOcc
{
	Index		rti;
	Oid			relid;
	int			base;			/* 0-based index into bases */
	char	   *fromitem;		/* "<relation> __ep_r<n>" as deparsed */
	char	   *keycol;			/* outer join: quoted join key column */
	AttrNumber	keyattno;		/* outer join: its attribute number */
} IvmOcc;

typedef struct IvmDef
{
	IvmRefresh	refresh;
	const char *kind;			/* project, distinct, aggregate, full */
	Query	   *query;
	List	   *keys;			/* IvmKey */
	List	   *aggs;			/* IvmAgg */
	List	   *occs;			/* IvmOcc */
	List	   *bases;			/* distinct base relation OIDs */
	List	   *outcols;		/* visible column names in query order */
	List	   *outtypes;		/* for kind full: output column types */
	bool		keep_empty_group;	/* aggregate without GROUP BY */
	bool		groupable;		/* kind full: columns have btree equality */
	bool		outer;			/* one outer equi-join of two references */
	char	   *ptext;			/* P (or the whole query for full) */
	char	   *storage;		/* qualified storage name */
	char	  **logs;			/* qualified log names per base */
} IvmDef;

extern char *ep_ivm_type_sql(Oid type, int32 typmod);
extern char *ep_ivm_relation_text(Oid relid);
extern int	ep_ivm_count_substr(const char *text, const char *pat);
extern char *ep_ivm_replace_once(const char *text, const char *from, const char *to);
extern void ep_ivm_build_p(IvmDef *d);
extern void ep_ivm_storage_columns(IvmDef *d, StringInfo cols, StringInfo ddl);
extern char *ep_ivm_avg_expr(IvmAgg *agg, const char *s, const char *n);
extern char *ep_ivm_pop_sql(IvmDef *d);
extern void ep_ivm_branches(IvmDef *d, int *changed, int nchanged, const char **oldsrc,
							const char **newsrc, StringInfo out);
extern char *ep_ivm_apply_sql(IvmDef *d, const char *branches);
extern char *ep_ivm_recompute_sql(IvmDef *d);
/* ivm_fast.c */
extern char *ep_ivm_fast_descriptor(IvmDef *d, Oid storage);

/* ivm_outer.c */
extern char *ep_ivm_column_list(Oid relid);
extern void ep_ivm_outer_check(IvmDef *d);
extern void ep_ivm_outer_branches(IvmDef *d, const char **oldsrc, const char **newsrc,
								  StringInfo out);

/* ivm_recompute.c */
extern void ep_ivm_recompute_check(Query *q);
extern char *ep_ivm_rediff_sql(IvmDef *d);
extern char *ep_ivm_rediff_groups_sql(IvmDef *d, char **keys_sql);

extern void ep_ivm_unsupported(const char *construct) pg_attribute_noreturn();
extern void ep_ivm_check_clauses(Query *q);

/*
 * The storage table of the incremental view whose (plain) view is viewrel,
 * or InvalidOid: views over incremental views are maintained from their
 * storage (recompute-and-diff, in dependency order).
 */
extern Oid	ep_ivm_storage_of_view(Oid viewrel);
extern bool ep_ivm_type_comparable(Oid type);

#endif							/* EP_IVM_DEF_H */
