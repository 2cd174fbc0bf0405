/*-------------------------------------------------------------------------
 *
 * aggregate.c
 *	  Folding a stream into a state: ep.aggregate, its snapshots
 *	  (ep.snapshots) and the snapshot policy (ep.set_snapshot_policy).
 *
 * ep.aggregate(stream_id, reducer, initial, as_of_version, as_of_time)
 * calls reducer(state jsonb, event ep.events) RETURNS jsonb once per
 * visible event of the stream, in version order: the reducer is looked up
 * once (fmgr_info) and one FunctionCallInfo is reused; each event's
 * composite datum comes from an index scan of (stream_id, stream_version)
 * with the statement's snapshot, after upcasting (upcast.c). A reducer in
 * LANGUAGE sql is instead planned once as the expression reducer($1, $2),
 * so that its body can be inlined, as it is in a plpgsql loop; in the
 * inlined body each field selection e.col becomes a parameter of its own,
 * set from the scanned row, and the composite event is formed only when the
 * body uses the event whole. Per event the fold deforms only the columns
 * it needs (none for a reducer that is called through fmgr, unless a
 * filter, a snapshot or an upcaster needs them). Visibility
 * is read_stream's: truncate_before, max_count, max_age and soft deletes
 * hide events. as_of_version stops at that version; as_of_time skips
 * events recorded after it (recorded_at <= as_of_time; recorded_at is the
 * appending transaction's start time, which need not grow with the
 * version).
 *
 * Strictness: a STRICT reducer is not called while the state is NULL (the
 * state stays NULL, as SQL would have it); a non-strict one receives the
 * NULL. A reducer may return NULL; the fold goes on with a NULL state.
 *
 * Memory: the state lives in one of two contexts, swapped when the reducer
 * returns a new state (the old one is freed); each event and everything a
 * call leaves behind live in a per-row context reset after the call.
 *
 * Snapshots: a row of ep.snapshots (stream_id, reducer, initial_hash,
 * version) holds the state after folding versions 1..version from an
 * initial state, with a fingerprint of what the state depends on besides
 * the events: the reducer's OID and pg_proc row version (CREATE OR
 * REPLACE FUNCTION or ALTER FUNCTION make a new row version) and the
 * upcaster set. A fold starts from the newest snapshot whose fingerprint
 * and initial state match, whose version is at or below the requested one
 * and (with as_of_time) whose events all were recorded by then
 * (max_recorded_at); otherwise from the start. Snapshots are neither used
 * nor written for a stream with limits or a soft delete (its visible
 * window moves) or a hard-deleted one. Redaction and scavenging of a
 * stream delete its snapshots, so a snapshot always equals a fold from the
 * beginning.
 *
 * With a policy (ep.snapshot_policies: reducer -> every N events) the fold
 * itself writes the state at the highest multiple of N it passed beyond
 * its starting point, as the extension owner, unless the transaction is
 * read-only or not READ COMMITTED, or as_of_time filtered the events.
 * Stale snapshots of the same (stream, reducer) (another fingerprint) are
 * deleted when a new one is written; concurrent writers of the same
 * snapshot meet in ON CONFLICT.
 *
 * Locking: before writing, the fold key-share locks the stream's row in
 * ep.streams and checks that the row version is the one it read: a
 * redaction (which updates that row under FOR UPDATE before it deletes the
 * stream's snapshots) either committed before, and the write is skipped,
 * or waits for the fold's transaction and then deletes the snapshot.
 * Key-share does not conflict with appends (their upsert is a no-key
 * update); an append committed during the fold only skips the write.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "catalog/pg_language.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/params.h"
#include "optimizer/optimizer.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "event_patterns.h"
#include "category.h"
#include "owner.h"
#include "stream_read.h"
#include "upcast.h"

/* What the fold starts from. */
typedef struct EpFoldStart
{
	int64		version;		/* last version folded into state (0: none) */
	Datum		state;
	bool		state_null;
	TimestampTz max_recorded_at;	/* latest recorded_at folded so far */
	bool		any_recorded;
} EpFoldStart;

/*
 * A SQL reducer, planned as an expression (see ep_agg_inline). $1 is the
 * state, $2 the event as a composite; $(2 + n) is column n of ep.events,
 * which replaces each field selection e.col, so that the event is formed
 * as a composite only when the expression uses it whole.
 */
typedef struct EpInlineReducer
{
	ParamListInfo params;
	ExprState  *expr;
	ExprContext *econtext;
	bool		whole_row;		/* $2 is still referenced */
	int			nfields;		/* columns read through $(2 + n) */
	AttrNumber *fields;
	AttrNumber	max_field;		/* highest of them (0: none) */
} EpInlineReducer;

/* State of ep_agg_fields_mutator. */
typedef struct EpFieldsContext
{
	TupleDesc	desc;
	Bitmapset  *used;
	bool		whole_row;
} EpFieldsContext;

static SPIPlanPtr plan_find_snapshot = NULL;
static SPIPlanPtr plan_policy = NULL;
static SPIPlanPtr plan_write_snapshot = NULL;
static SPIPlanPtr plan_purge_snapshots = NULL;

/*
 * Check the reducer's signature and the caller's right to run it; returns
 * the xmin of its pg_proc row (changes with CREATE OR REPLACE).
 */
static TransactionId
ep_agg_check_reducer(Oid fn, Oid events_type, Oid *lang)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	TransactionId xmin;
	AclResult	acl;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("reducer function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->prokind != PROKIND_FUNCTION || proc->proretset || proc->pronargs != 2 ||
		proc->proargtypes.values[0] != JSONBOID ||
		proc->proargtypes.values[1] != events_type)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("reducer %s must take arguments (state jsonb, event ep.events)",
						format_procedure(fn)),
				 errhint("Declare it as reducer(state jsonb, event ep.events) RETURNS jsonb.")));
	if (proc->prorettype != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("reducer %s must return jsonb", format_procedure(fn)),
				 errhint("Declare it as reducer(state jsonb, event ep.events) RETURNS jsonb.")));
	xmin = HeapTupleHeaderGetRawXmin(tup->t_data);
	if (lang != NULL)
		*lang = proc->prolang;
	ReleaseSysCache(tup);

	acl = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_FUNCTION, get_func_name(fn));
	return xmin;
}

/*
 * Fingerprint of the reducer's definition and of the upcaster set, and a
 * hash of the initial state: what a snapshot depends on besides the events.
 */
static int64
ep_agg_fingerprint(Oid fn, TransactionId xmin)
{
	uint64		h;
	uint64		up = ep_upcast_fingerprint();

	h = hash_bytes_uint32_extended((uint32) fn, UINT64CONST(0x45503230));
	h = hash_bytes_uint32_extended((uint32) xmin, h);
	h = hash_bytes_extended((const unsigned char *) &up, sizeof(up), h);
	return (int64) h;
}

static int64
ep_agg_initial_hash(Jsonb *initial)
{
	if (initial == NULL)
		return 0;
	return (int64) hash_bytes_extended((const unsigned char *) VARDATA(initial),
									   VARSIZE(initial) - VARHDRSZ, UINT64CONST(0x45503231));
}

/* Newest usable snapshot; fills start and returns true when one is found. */
static bool
ep_agg_find_snapshot(text *stream, Oid fn, int64 fp, int64 ih, int64 max_version,
					 bool has_time, TimestampTz as_of_time, MemoryContext outcxt,
					 EpFoldStart *start)
{
	Oid			argt[6] = {TEXTOID, OIDOID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	args[0] = PointerGetDatum(stream);
	args[1] = ObjectIdGetDatum(fn);
	args[2] = Int64GetDatum(fp);
	args[3] = Int64GetDatum(max_version);
	args[4] = has_time ? TimestampTzGetDatum(as_of_time) : (Datum) 0;
	if (!has_time)
		nulls[4] = 'n';
	args[5] = Int64GetDatum(ih);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_find_snapshot,
										"SELECT version, state, max_recorded_at FROM ep.snapshots "
										"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
										"AND reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
										"AND initial_hash OPERATOR(pg_catalog.=) $6 "
										"AND fingerprint OPERATOR(pg_catalog.=) $3 "
										"AND version OPERATOR(pg_catalog.<=) $4 "
										"AND ($5 IS NULL OR max_recorded_at OPERATOR(pg_catalog.<=) $5) "
										"ORDER BY version DESC LIMIT 1",
										6, argt),
						 args, nulls, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "snapshot lookup failed");
	if (SPI_processed == 0)
		return false;

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	start->version = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	d = SPI_getbinval(tup, desc, 2, &isnull);
	start->state_null = isnull;
	start->state = (Datum) 0;
	if (!isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(outcxt);

		start->state = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		MemoryContextSwitchTo(old);
	}
	start->max_recorded_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	start->any_recorded = true;
	return true;
}

/* Owner of the reducer function */
static Oid
ep_agg_reducer_owner(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Snapshot interval of the reducer's policy, 0 without one; *search_path
 * gets the path recorded with the policy (allocated in cxt).
 */
static int64
ep_agg_policy(Oid fn, MemoryContext cxt, char **search_path)
{
	Oid			argt[1] = {OIDOID};
	Datum		args[1];
	bool		isnull;
	char	   *path;

	args[0] = ObjectIdGetDatum(fn);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_policy,
										ep_catalog()->version < EP_VERSION_0_2 ?
										"SELECT every, NULL::pg_catalog.text FROM ep.snapshot_policies "
										"WHERE reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $1" :
										"SELECT every, search_path FROM ep.snapshot_policies "
										"WHERE reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
										1, argt),
						 args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "snapshot policy lookup failed");
	if (SPI_processed == 0)
		return 0;
	path = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	*search_path = path ? MemoryContextStrdup(cxt, path) : NULL;
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Version (xmin) of the stream's row in ep.streams; every append,
 * redaction and limit change makes a new one. With lock, the newest
 * version is key-share locked first (READ COMMITTED follows the update
 * chain), so that a redaction cannot slip between the check and the write.
 */
static int64
ep_agg_stream_xmin(text *stream, bool lock)
{
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];
	bool		isnull;

	args[0] = PointerGetDatum(stream);
	if (SPI_execute_with_args(lock ?
							  "SELECT xmin::pg_catalog.text::pg_catalog.int8 FROM ep.streams "
							  "WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR KEY SHARE" :
							  "SELECT xmin::pg_catalog.text::pg_catalog.int8 FROM ep.streams "
							  "WHERE stream_id OPERATOR(pg_catalog.=) $1",
							  1, argt, args, NULL, !lock, 1) != SPI_OK_SELECT)
		elog(ERROR, "stream lookup failed");
	if (SPI_processed == 0)
		return -1;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Write one snapshot (as the extension owner) and purge stale ones, unless
 * the stream's row changed since the fold read the stream (an append or a
 * redaction committed meanwhile): then the next fold writes it.
 */
static void
ep_agg_write_snapshot(text *stream, int64 row_xmin, Oid fn, int64 fp, int64 ih, Jsonb *initial,
					  int64 version, Datum state, bool state_null, TimestampTz max_recorded_at)
{
	EpSavedUser saved;
	Oid			argt[8] = {TEXTOID, OIDOID, INT8OID, INT8OID, JSONBOID, TIMESTAMPTZOID, INT8OID, JSONBOID};
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (ep_agg_stream_xmin(stream, true) != row_xmin)
	{
		SPI_finish();
		ep_restore_user(&saved);
		return;
	}
	args[0] = PointerGetDatum(stream);
	args[1] = ObjectIdGetDatum(fn);
	args[2] = Int64GetDatum(fp);
	args[3] = Int64GetDatum(version);
	args[4] = state;
	if (state_null)
		nulls[4] = 'n';
	args[5] = TimestampTzGetDatum(max_recorded_at);
	args[6] = Int64GetDatum(ih);
	args[7] = initial ? JsonbPGetDatum(initial) : (Datum) 0;
	if (initial == NULL)
		nulls[7] = 'n';
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_write_snapshot,
										"INSERT INTO ep.snapshots AS s (stream_id, reducer, initial_hash, version, "
										"state, fingerprint, max_recorded_at, initial) "
										"VALUES ($1, $2::pg_catalog.regprocedure, $7, $4, $5, $3, $6, $8) "
										"ON CONFLICT (stream_id, reducer, initial_hash, version) DO UPDATE "
										"SET state = excluded.state, fingerprint = excluded.fingerprint, "
										"max_recorded_at = excluded.max_recorded_at, "
										"created_at = pg_catalog.now()",
										8, argt),
						 args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "snapshot insert failed");
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_purge_snapshots,
										"DELETE FROM ep.snapshots "
										"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
										"AND reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $2 "
										"AND fingerprint OPERATOR(pg_catalog.<>) $3",
										3, argt),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "snapshot purge failed");
	SPI_finish();
	ep_restore_user(&saved);
}

/*
 * Replace each field selection ($2).col of the planned reducer expression
 * by the parameter $(2 + col), which the fold sets from the deformed row;
 * note whether $2 is still used whole (or might be: anything the walk does
 * not look into counts as a use).
 */
static Node *
ep_agg_fields_mutator(Node *node, EpFieldsContext *cxt)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, FieldSelect))
	{
		FieldSelect *fs = (FieldSelect *) node;
		Param	   *arg = (Param *) fs->arg;

		if (arg != NULL && IsA(arg, Param) && arg->paramkind == PARAM_EXTERN &&
			arg->paramid == 2 && fs->fieldnum > 0 && fs->fieldnum <= cxt->desc->natts)
		{
			Form_pg_attribute att = TupleDescAttr(cxt->desc, fs->fieldnum - 1);

			if (!att->attisdropped && att->atttypid == fs->resulttype)
			{
				Param	   *p = makeNode(Param);

				p->paramkind = PARAM_EXTERN;
				p->paramid = 2 + fs->fieldnum;
				p->paramtype = fs->resulttype;
				p->paramtypmod = fs->resulttypmod;
				p->paramcollid = fs->resultcollid;
				p->location = -1;
				cxt->used = bms_add_member(cxt->used, fs->fieldnum);
				return (Node *) p;
			}
		}
	}
	else if (IsA(node, Param))
	{
		Param	   *p = (Param *) node;

		if (p->paramkind == PARAM_EXTERN && p->paramid == 2)
			cxt->whole_row = true;
	}
	else if (IsA(node, Query) || IsA(node, SubLink) || IsA(node, SubPlan) ||
			 IsA(node, AlternativeSubPlan))
		cxt->whole_row = true;
	return expression_tree_mutator(node, ep_agg_fields_mutator, (void *) cxt);
}

/*
 * A reducer written in SQL is called as the expression reducer($1, $2),
 * planned once per fold, so that the planner can inline its body (as it
 * does in a plpgsql loop); through fmgr each call would set up a SQL
 * function executor. Field selections of the event become parameters of
 * their own (ep_agg_fields_mutator). Other reducers are called through
 * the function manager directly.
 */
static EpInlineReducer *
ep_agg_inline(Oid fn, Oid events_type, TupleDesc desc)
{
	EpInlineReducer *inl = palloc0(sizeof(EpInlineReducer));
	Param	   *p1 = makeNode(Param);
	Param	   *p2 = makeNode(Param);
	FuncExpr   *fe;
	Expr	   *planned;
	EpFieldsContext fcxt;
	int			n = 2 + desc->natts;
	int			i;
	int			att;

	p1->paramkind = PARAM_EXTERN;
	p1->paramid = 1;
	p1->paramtype = JSONBOID;
	p1->paramtypmod = -1;
	p1->location = -1;
	p2->paramkind = PARAM_EXTERN;
	p2->paramid = 2;
	p2->paramtype = events_type;
	p2->paramtypmod = -1;
	p2->location = -1;
	fe = makeFuncExpr(fn, JSONBOID, list_make2(p1, p2), InvalidOid, InvalidOid,
					  COERCE_EXPLICIT_CALL);
	planned = expression_planner((Expr *) fe);

	fcxt.desc = desc;
	fcxt.used = NULL;
	fcxt.whole_row = false;
	planned = (Expr *) ep_agg_fields_mutator((Node *) planned, &fcxt);
	inl->whole_row = fcxt.whole_row;
	inl->nfields = bms_num_members(fcxt.used);
	inl->fields = palloc(sizeof(AttrNumber) * Max(inl->nfields, 1));
	i = 0;
	att = -1;
	while ((att = bms_next_member(fcxt.used, att)) >= 0)
	{
		inl->fields[i++] = (AttrNumber) att;
		inl->max_field = (AttrNumber) att;
	}

	inl->params = makeParamList(n);
	inl->params->numParams = n;
	for (i = 0; i < n; i++)
	{
		inl->params->params[i].isnull = true;
		inl->params->params[i].pflags = PARAM_FLAG_CONST;
	}
	inl->params->params[0].ptype = JSONBOID;
	inl->params->params[1].ptype = events_type;
	for (i = 0; i < inl->nfields; i++)
		inl->params->params[1 + inl->fields[i]].ptype =
			TupleDescAttr(desc, inl->fields[i] - 1)->atttypid;
	inl->expr = ExecInitExprWithParams(planned, inl->params);
	inl->econtext = CreateStandaloneExprContext();
	inl->econtext->ecxt_param_list_info = inl->params;
	return inl;
}

/*
 * Byte equality of two text values: texteq under a deterministic collation
 * (see the scan keys in ep_aggregate). Called through a FmgrInfo of its
 * own, not from SQL.
 */
static Datum
ep_agg_stream_eq(PG_FUNCTION_ARGS)
{
	text	   *a = PG_GETARG_TEXT_PP(0);
	text	   *b = PG_GETARG_TEXT_PP(1);
	Size		len = VARSIZE_ANY_EXHDR(a);
	bool		eq;

	eq = (len == VARSIZE_ANY_EXHDR(b) && memcmp(VARDATA_ANY(a), VARDATA_ANY(b), len) == 0);
	PG_FREE_IF_COPY(a, 0);
	PG_FREE_IF_COPY(b, 1);
	PG_RETURN_BOOL(eq);
}

/*
 * ep.aggregate(stream_id, reducer, initial, as_of_version, as_of_time)
 */
PG_FUNCTION_INFO_V1(ep_aggregate);
Datum
ep_aggregate(PG_FUNCTION_ARGS)
{
	const EpCatalog *cat;
	text	   *stream;
	Oid			fn;
	Jsonb	   *initial;
	bool		has_version = !PG_ARGISNULL(3);
	int64		as_of_version = has_version ? PG_GETARG_INT64(3) : PG_INT64_MAX;
	bool		has_time = !PG_ARGISNULL(4);
	TimestampTz as_of_time = has_time ? PG_GETARG_TIMESTAMPTZ(4) : 0;
	TransactionId xmin;
	int64		fp;
	int64		ih;
	int64		every = 0;
	bool		use_snapshots;
	EpStreamLimits limits;
	EpFoldStart start;
	MemoryContext fold_cxt = CurrentMemoryContext;
	MemoryContext rowcxt;
	MemoryContext statecxt[2];
	int			cur = 0;
	FmgrInfo	flinfo;
	FunctionCallInfo fc;
	EpUpcastState *up;
	Relation	rel;
	Relation	idx;
	TupleDesc	desc;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	ScanKeyData keys[3];
	int			nkeys = 0;
	Datum	   *values;
	bool	   *isnull;
	Datum		state;
	bool		state_null;
	int64		boundary = 0;
	Datum		bstate = (Datum) 0;
	bool		bstate_null = true;
	TimestampTz bmax = 0;
	TimestampTz max_rec;
	bool		any_rec;
	bool		strict;
	EpInlineReducer *inl = NULL;
	Oid			lang = InvalidOid;
	int64		row_xmin = -1;
	bool		need_time;
	bool		need_row;
	bool		shared = false;
	char	   *policy_path = NULL;
	EpOwnerCall call;
	int			need_natts;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer must not be null")));
	if (has_version && as_of_version < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of_version must not be negative")));
	stream = PG_GETARG_TEXT_PP(0);
	fn = PG_GETARG_OID(1);
	initial = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	cat = ep_catalog();
	ep_category_check_stream(stream, EP_CAT_READ, "read");

	xmin = ep_agg_check_reducer(fn, get_rel_type_id(cat->events), &lang);
	fp = ep_agg_fingerprint(fn, xmin);
	ih = ep_agg_initial_hash(initial);

	memset(&start, 0, sizeof(start));
	start.state = initial ? JsonbPGetDatum(initial) : (Datum) 0;
	start.state_null = (initial == NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ep_read_stream_limits(stream, &limits);
	use_snapshots = limits.exists && !limits.limited && !limits.tombstoned;

	/*
	 * Shared snapshots hold what the reducer computed as its owner, which
	 * may read what the caller cannot: only a caller with the owner's
	 * privileges uses them (and has the reducer run as the owner); anyone
	 * else folds as itself, from the start, and writes no snapshot.
	 */
	if (use_snapshots && !has_privs_of_role(GetUserId(), ep_agg_reducer_owner(fn)))
		use_snapshots = false;
	if (use_snapshots)
	{
		every = ep_agg_policy(fn, fold_cxt, &policy_path);
		shared = (every > 0);
		if (every > 0)
			row_xmin = ep_agg_stream_xmin(stream, false);
		ep_agg_find_snapshot(stream, fn, fp, ih, as_of_version, has_time, as_of_time,
							 fold_cxt, &start);
	}
	SPI_finish();
	if (limits.tombstoned || as_of_version == 0)
	{
		if (start.state_null)
			PG_RETURN_NULL();
		PG_RETURN_DATUM(start.state);
	}

	/* snapshots are written only for an unfiltered fold in a writable transaction */
	if (every <= 0 || has_time || XactReadOnly || RecoveryInProgress() ||
		IsolationUsesXactSnapshot())
		every = 0;

	/*
	 * Snapshots are shared by every caller: with a policy the reducer runs
	 * as its owner, with the search_path recorded with the policy, so that
	 * no caller's session (its search_path, its operators, its pg_temp)
	 * decides what the stored state is.
	 */
	if (shared)
	{
		memset(&call, 0, sizeof(call));
		call.owner = ep_agg_reducer_owner(fn);
		call.search_path = policy_path;
		call.timeout_ms = -1;
		call.what = "reducer with a snapshot policy";
		call.name = format_procedure(fn);
		ep_owner_enter(&call);
	}

	fmgr_info(fn, &flinfo);
	strict = flinfo.fn_strict;
	fc = palloc0(SizeForFunctionCallInfo(2));
	InitFunctionCallInfoData(*fc, &flinfo, 2, InvalidOid, NULL, NULL);

	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "event_patterns fold row",
								   ALLOCSET_DEFAULT_SIZES);
	statecxt[0] = AllocSetContextCreate(CurrentMemoryContext, "event_patterns fold state",
										ALLOCSET_DEFAULT_SIZES);
	statecxt[1] = AllocSetContextCreate(CurrentMemoryContext, "event_patterns fold state",
										ALLOCSET_DEFAULT_SIZES);
	state = start.state;
	state_null = start.state_null;
	max_rec = start.max_recorded_at;
	any_rec = start.any_recorded;

	up = ep_upcast_begin();
	rel = table_open(cat->events, AccessShareLock);
	idx = index_open(cat->events_stream_idx, AccessShareLock);
	desc = RelationGetDescr(rel);
	values = palloc(sizeof(Datum) * desc->natts);
	isnull = palloc(sizeof(bool) * desc->natts);
	if (lang == SQLlanguageId)
		inl = ep_agg_inline(fn, get_rel_type_id(cat->events), desc);

	/*
	 * Per event the fold reads only what it needs: recorded_at and the
	 * version for the filters and the snapshot, the columns an inlined
	 * reducer selects, everything for the upcasters; and it forms the
	 * composite event only for a reducer that takes it whole.
	 */
	need_time = limits.has_max_age || has_time || every > 0;
	need_row = (inl == NULL || inl->whole_row);
	need_natts = need_time ? Anum_ep_events_recorded_at : 0;
	if (inl != NULL)
		need_natts = Max(need_natts, inl->max_field);
	if (up != NULL)
		need_natts = desc->natts;

	/*
	 * The scan keys: stream_id, and the versions to fold. Under a
	 * deterministic collation (a database's default always is one) equal
	 * stream ids are equal bytes, which ep_agg_stream_eq compares without
	 * texteq's per-call collation lookup; the btree positions the scan with
	 * the opclass's own comparison either way. The lower bound on the
	 * version is left out when it is 1 (versions start at 1), as each key
	 * is checked again on every index entry.
	 */
	if (get_collation_isdeterministic(idx->rd_indcollation[0]))
	{
		FmgrInfo	eq;

		MemSet(&eq, 0, sizeof(eq));
		eq.fn_addr = ep_agg_stream_eq;
		eq.fn_nargs = 2;
		eq.fn_strict = true;
		eq.fn_mcxt = CurrentMemoryContext;
		ScanKeyEntryInitializeWithInfo(&keys[nkeys++], 0, 1, BTEqualStrategyNumber, InvalidOid,
									   idx->rd_indcollation[0], &eq, PointerGetDatum(stream));
	}
	else
		ScanKeyEntryInitialize(&keys[nkeys++], 0, 1, BTEqualStrategyNumber, InvalidOid,
							   idx->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(stream));
	if (Max(start.version + 1, limits.min_version) > 1)
		ScanKeyInit(&keys[nkeys++], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(Max(start.version + 1, limits.min_version)));
	if (has_version)
		ScanKeyInit(&keys[nkeys++], 2, BTLessEqualStrategyNumber, F_INT8LE,
					Int64GetDatum(as_of_version));
	scan = index_beginscan(rel, idx, GetActiveSnapshot(), nkeys, 0);
	index_rescan(scan, keys, nkeys, NULL, 0);
	slot = table_slot_create(rel, NULL);

	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		TimestampTz recorded = 0;
		int64		version = 0;
		Datum		event = (Datum) 0;
		Datum		result;
		Datum	   *vals;
		bool	   *nulls;
		bool		upcast = false;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (need_natts > 0)
			slot_getsomeattrs(slot, need_natts);
		if (need_time)
		{
			recorded = DatumGetTimestampTz(slot->tts_values[Anum_ep_events_recorded_at - 1]);
			version = DatumGetInt64(slot->tts_values[Anum_ep_events_stream_version - 1]);
			if (limits.has_max_age && recorded < limits.cutoff)
				continue;
			if (has_time && recorded > as_of_time)
				continue;
		}

		old = MemoryContextSwitchTo(rowcxt);
		vals = slot->tts_values;
		nulls = slot->tts_isnull;
		if (up != NULL)
		{
			memcpy(values, slot->tts_values, sizeof(Datum) * desc->natts);
			memcpy(isnull, slot->tts_isnull, sizeof(bool) * desc->natts);
			upcast = ep_upcast_values(up, values, isnull);
			vals = values;
			nulls = isnull;
		}
		if (need_row && upcast)
			event = HeapTupleGetDatum(heap_form_tuple(desc, values, isnull));
		else if (need_row)
		{
			/* as stored: one copy of the heap tuple, as a composite datum */
			bool		should_free;
			HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);

			event = heap_copy_tuple_as_datum(tup, desc);
		}

		if (!(strict && state_null))
		{
			bool		result_null;

			if (inl != NULL)
			{
				ParamExternData *prm = inl->params->params;
				int			i;

				prm[0].value = state;
				prm[0].isnull = state_null;
				prm[1].value = event;
				prm[1].isnull = !need_row;
				for (i = 0; i < inl->nfields; i++)
				{
					AttrNumber	a = inl->fields[i];

					prm[1 + a].value = vals[a - 1];
					prm[1 + a].isnull = nulls[a - 1];
				}
				result = ExecEvalExprSwitchContext(inl->expr, inl->econtext, &result_null);
			}
			else
			{
				fc->args[0].value = state;
				fc->args[0].isnull = state_null;
				fc->args[1].value = event;
				fc->args[1].isnull = false;
				fc->isnull = false;
				result = FunctionCallInvoke(fc);
				result_null = fc->isnull;
			}

			/* keep the new state; free the one before */
			if (result_null)
			{
				state_null = true;
				state = (Datum) 0;
			}
			else if (state_null || result != state)
			{
				cur ^= 1;
				MemoryContextReset(statecxt[cur]);
				MemoryContextSwitchTo(statecxt[cur]);
				state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
				state_null = false;
			}
			/* else: the reducer handed back the state it was given */
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		if (inl != NULL)
			ResetExprContext(inl->econtext);

		if (!need_time)
			continue;
		if (!any_rec || recorded > max_rec)
			max_rec = recorded;
		any_rec = true;

		if (every > 0 && version % every == 0 && version > start.version)
		{
			boundary = version;
			bstate_null = state_null;
			bstate = state_null ? (Datum) 0 : datumCopy(state, false, -1);
			bmax = max_rec;
		}
	}

	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	if (inl != NULL)
		FreeExprContext(inl->econtext, true);
	if (shared)
		ep_owner_leave(&call);

	if (boundary > 0)
		ep_agg_write_snapshot(stream, row_xmin, fn, fp, ih, initial, boundary, bstate, bstate_null, bmax);

	if (state_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(datumCopy(state, false, -1));
}

/*
 * ep.set_snapshot_policy(reducer, every, refresh): the fold writes a
 * snapshot every `every` events of a stream; NULL or 0 removes the policy
 * (and the reducer's snapshots). With refresh, a background job
 * ('snapshot', owned by the caller) runs ep.refresh_snapshots(reducer) at
 * that interval, so the streams already snapshotted stay up to date
 * without a reader paying for it. Only the reducer's owner (or the
 * extension owner) may set it.
 */
PG_FUNCTION_INFO_V1(ep_set_snapshot_policy);
Datum
ep_set_snapshot_policy(PG_FUNCTION_ARGS)
{
	const EpCatalog *cat = ep_catalog();
	Oid			fn;
	int32		every = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	bool		has_refresh = PG_NARGS() > 2 && !PG_ARGISNULL(2);
	EpSavedUser saved;
	Oid			argt[5] = {OIDOID, INT4OID, NAMEOID, INTERVALOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	char	   *target;
	char	   *search_path = ep_owner_current_search_path();

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer must not be null")));
	if (every < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("every must be a positive number of events"),
				 errhint("Use NULL or 0 to remove the policy.")));
	fn = PG_GETARG_OID(0);
	ep_agg_check_reducer(fn, get_rel_type_id(cat->events), NULL);
	if (!pg_proc_ownercheck(fn, GetUserId()) && !has_privs_of_role(GetUserId(), cat->owner))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_FUNCTION, get_func_name(fn));

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = ObjectIdGetDatum(fn);
	args[1] = Int32GetDatum(every);
	args[2] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(saved.userid, false)));
	args[3] = has_refresh ? PG_GETARG_DATUM(2) : (Datum) 0;
	if (!has_refresh)
		nulls[3] = 'n';
	args[4] = CStringGetTextDatum(search_path);
	if (every == 0)
	{
		if (SPI_execute_with_args("DELETE FROM ep.snapshot_policies "
								  "WHERE reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
								  1, argt, args, NULL, false, 0) != SPI_OK_DELETE ||
			SPI_execute_with_args("DELETE FROM ep.snapshots "
								  "WHERE reducer::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
								  1, argt, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "snapshot policy delete failed");
	}
	else if (SPI_execute_with_args(ep_catalog()->version < EP_VERSION_0_2 ?
								   "INSERT INTO ep.snapshot_policies (reducer, every, owner, refresh) "
								   "VALUES ($1::pg_catalog.regprocedure, $2, $3, $4) "
								   "ON CONFLICT (reducer) DO UPDATE SET every = excluded.every, "
								   "owner = excluded.owner, refresh = excluded.refresh, "
								   "updated_at = pg_catalog.now()" :
								   "INSERT INTO ep.snapshot_policies (reducer, every, owner, refresh, search_path) "
								   "VALUES ($1::pg_catalog.regprocedure, $2, $3, $4, $5) "
								   "ON CONFLICT (reducer) DO UPDATE SET every = excluded.every, "
								   "owner = excluded.owner, refresh = excluded.refresh, "
								   "updated_at = pg_catalog.now(), search_path = excluded.search_path",
								   ep_catalog()->version < EP_VERSION_0_2 ? 4 : 5,
								   argt, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "snapshot policy insert failed");
	SPI_finish();
	ep_restore_user(&saved);

	/* the refresh job belongs to the caller, who runs it */
	target = format_procedure_qualified(fn);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			jargt[3] = {TEXTOID, INTERVALOID, TEXTOID};
		Datum		jargs[3];

		jargs[0] = CStringGetTextDatum(target);
		jargs[1] = args[3];
		jargs[2] = CStringGetTextDatum(psprintf("SELECT ep.refresh_snapshots(%s::pg_catalog.regprocedure)",
												quote_literal_cstr(target)));
		if (every > 0 && has_refresh)
		{
			if (SPI_execute_with_args("SELECT ep._schedule_job('snapshot', $1, $2, $3)",
									  3, jargt, jargs, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "snapshot job scheduling failed");
		}
		else if (SPI_execute_with_args("SELECT ep._unschedule_job('snapshot', $1)",
									   1, jargt, jargs, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "snapshot job removal failed");
	}
	SPI_finish();
	PG_RETURN_VOID();
}
