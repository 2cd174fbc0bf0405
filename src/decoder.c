/*-------------------------------------------------------------------------
 *
 * decoder.c
 *	  The extension's own logical decoding output plugin, and the
 *	  replication slot of each database's projections.
 *
 * The plugin (_PG_output_plugin_init) writes nothing to any client: while
 * projection.c runs a decoding round it points ep_decode_round at an
 * EpDecodeRound, and the callbacks copy what the round wants into the
 * round's memory context:
 *	- inserts into ep.events with collect_after < position < horizon, as
 *	  self-contained composite datums (external and compressed values
 *	  flattened), ready to be passed to a handler;
 *	- INSERT/UPDATE/DELETE/TRUNCATE of the watched tables, as jsonb rows.
 * An event at or above the horizon marks its transaction as deferred: the
 * slot is confirmed only up to the end of the last transaction before the
 * first deferred one (see projection.c for why). Relations of no interest
 * are dismissed by OID before anything is copied.
 *
 * Callbacks run inside a (sub)transaction that decoding always aborts:
 * they never write, and everything they keep is copied into round->cxt.
 * Without a round (someone else decoding the slot through the SQL
 * functions) the plugin emits nothing.
 *
 * The slot, ep_<database oid>, is created lazily by the apply round inside
 * a transaction that has not written (never in the CREATE EXTENSION script),
 * so the process is never left flagged PROC_IN_LOGICAL_DECODING. An
 * invalidated slot (max_slot_wal_keep_size exceeded) is dropped and
 * created again; projection.c then recovers from the event table.
 * Decoding always runs inside the round's transaction, like the SQL
 * decoding functions, and the slot is held only while decoding.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"

#include "catalog/pg_type.h"

#include "access/transam.h"

#include "utils/lsyscache.h"

#include "access/detoast.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/origin.h"
#include "replication/output_plugin.h"
#include "replication/slot.h"
#include "storage/standby.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "event_patterns.h"
#include "projection.h"
#include "stream_read.h"

extern void _PG_output_plugin_init(OutputPluginCallbacks *cb);

/* slot restart position lag that makes a round log xl_running_xacts */
#define EP_RESTART_LAG	(4 * 1024 * 1024)

/* the round being decoded by this backend, if any */
static EpDecodeRound *ep_decode_round = NULL;

void
ep_decoder_slot_name(char *buf, Size len, Oid dbid)
{
	snprintf(buf, len, "ep_%u", dbid);
}

/* ---------------------------------------------------------------------
 * Output plugin callbacks
 * ---------------------------------------------------------------------
 */
static void
ep_decode_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	opt->output_type = OUTPUT_PLUGIN_BINARY_OUTPUT;
	opt->receive_rewrites = false;
}

static void
ep_decode_shutdown(LogicalDecodingContext *ctx)
{
}

static void
ep_decode_begin(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	if (ep_decode_round)
	{
		ep_decode_round->txn_deferred = false;
		ep_decode_round->txn_watched = false;
		ep_decode_round->txn_start = ep_decode_round->tail;
		ep_decode_round->txn_nchanges = ep_decode_round->nchanges;
	}
}

static void
ep_decode_commit(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr commit_lsn)
{
	EpDecodeRound *r = ep_decode_round;

	if (r == NULL)
		return;
	if (r->raw_rows && r->snap != NULL && r->txn_watched)
	{
		/*
		 * Async views apply exactly what the round's snapshot sees: the
		 * changes of a transaction it does not see (committed after it was
		 * taken) are dropped again and left to the next round.
		 */
		if (XidInMVCCSnapshot(txn->xid, r->snap))
		{
			if (r->txn_start)
				r->txn_start->next = NULL;
			else
				r->head = NULL;
			r->tail = r->txn_start;
			r->nchanges = r->txn_nchanges;
			/*
			 * Its commit record's start: a slot confirmed beyond it would
			 * skip the transaction.
			 */
			if (r->first_invisible == InvalidXLogRecPtr)
				r->first_invisible = txn->final_lsn;
		}
		else if (r->first_invisible != InvalidXLogRecPtr)
			r->visible_after = true;
	}
	if (r->txn_deferred)
		r->seen_deferred = true;
	if (!r->seen_deferred)
		r->safe_confirm = txn->end_lsn;
	/* (async views decode to the end: past the budget only touched[] grows) */
	if (!r->raw_rows && (r->nchanges > r->max_changes || r->bytes > r->max_bytes))
		r->stop = true;
}

static bool
ep_watched(EpDecodeRound *r, Oid relid)
{
	int			i;

	for (i = 0; i < r->nwatch; i++)
		if (r->watch[i] == relid)
		{
			if (r->touched)
				r->touched[i] = true;
			r->txn_watched = true;
			return true;
		}
	return false;
}

/*
 * The descriptor a raw row was written with, copied once per round and
 * table (again when the table's definition changed meanwhile).
 */
static TupleDesc
ep_round_desc(EpDecodeRound *r, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i;

	for (i = 0; i < r->ndescs; i++)
	{
		TupleDesc	d = r->descs[i];
		int			a;
		bool		same;

		if (r->desc_relids[i] != RelationGetRelid(rel) || d->natts != desc->natts)
			continue;
		same = true;
		for (a = 0; a < d->natts && same; a++)
		{
			Form_pg_attribute x = TupleDescAttr(d, a);
			Form_pg_attribute y = TupleDescAttr(desc, a);

			same = x->atttypid == y->atttypid && x->atttypmod == y->atttypmod &&
				x->attisdropped == y->attisdropped;
		}
		if (same)
			return d;
	}
	if (r->ndescs == r->maxdescs)
	{
		r->maxdescs = Max(8, r->maxdescs * 2);
		r->descs = r->descs ? repalloc(r->descs, sizeof(TupleDesc) * r->maxdescs) :
			palloc(sizeof(TupleDesc) * r->maxdescs);
		r->desc_relids = r->desc_relids ? repalloc(r->desc_relids, sizeof(Oid) * r->maxdescs) :
			palloc(sizeof(Oid) * r->maxdescs);
	}
	r->descs[r->ndescs] = CreateTupleDescCopy(desc);
	r->desc_relids[r->ndescs] = RelationGetRelid(rel);
	return r->descs[r->ndescs++];
}

/*
 * A self-contained copy of a decoded row, in the current memory context:
 * values the reorder buffer reassembled from TOAST chunks are copied, and
 * unchanged TOASTed values of an UPDATE (pointers that cannot be read
 * here) are taken from the old row, which REPLICA IDENTITY FULL logs
 * whole. NULL when such a value cannot be had (the view is recomputed).
 */
static HeapTuple
ep_row_copy(Relation rel, HeapTuple tup, HeapTuple oldtup, MemoryContext tmp)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = desc->natts;
	Datum	   *values;
	bool	   *nulls;
	Datum	   *oldvalues = NULL;
	bool	   *oldnulls = NULL;
	MemoryContext target = CurrentMemoryContext;
	HeapTuple	res;
	int			i;

	if (!HeapTupleHasExternal(tup))
		return heap_copytuple(tup);
	MemoryContextSwitchTo(tmp);
	values = palloc(natts * sizeof(Datum));
	nulls = palloc(natts * sizeof(bool));
	heap_deform_tuple(tup, desc, values, nulls);
	if (oldtup)
	{
		oldvalues = palloc(natts * sizeof(Datum));
		oldnulls = palloc(natts * sizeof(bool));
		heap_deform_tuple(oldtup, desc, oldvalues, oldnulls);
	}
	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || nulls[i] || att->attlen != -1 ||
			!VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
			continue;
		if (VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[i])))
		{
			if (oldtup == NULL || oldnulls[i] ||
				VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(oldvalues[i])))
			{
				MemoryContextSwitchTo(target);
				return NULL;
			}
			values[i] = oldvalues[i];
			if (!VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
				continue;
		}
		values[i] = PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(values[i])));
	}
	MemoryContextSwitchTo(target);
	res = heap_form_tuple(desc, values, nulls);
	return res;
}

static EpChange *
ep_new_change(EpDecodeRound *r, ReorderBufferTXN *txn, EpChangeKind kind)
{
	EpChange   *c = palloc0(sizeof(EpChange));

	c->kind = kind;
	c->lsn = txn->end_lsn;
	if (r->tail)
		r->tail->next = c;
	else
		r->head = c;
	r->tail = c;
	r->nchanges++;
	r->bytes += sizeof(EpChange);
	return c;
}

/*
 * A row of a watched table as jsonb. Unchanged TOASTed values of an UPDATE
 * arrive as pointers that cannot be read here: they are taken from the old
 * row when the table has REPLICA IDENTITY FULL, else left out of the
 * object. With key_only only the replica identity columns are kept.
 */
static Jsonb *
ep_row_jsonb(Relation rel, HeapTuple tup, HeapTuple oldtup, bool key_only)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			natts = desc->natts;
	Datum	   *values = palloc(natts * sizeof(Datum));
	bool	   *nulls = palloc(natts * sizeof(bool));
	Datum	   *oldvalues = NULL;
	bool	   *oldnulls = NULL;
	bool	   *omit = palloc0(natts * sizeof(bool));
	Bitmapset  *key = NULL;
	HeapTuple	flat;
	TupleDesc	jdesc = NULL;
	Datum		json;
	Datum		jb;
	int			i;

	heap_deform_tuple(tup, desc, values, nulls);
	if (oldtup)
	{
		oldvalues = palloc(natts * sizeof(Datum));
		oldnulls = palloc(natts * sizeof(bool));
		heap_deform_tuple(oldtup, desc, oldvalues, oldnulls);
	}
	if (key_only)
		key = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);

	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		if (key_only &&
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, key))
		{
			omit[i] = true;
			nulls[i] = true;
			continue;
		}
		if (!nulls[i] && att->attlen == -1 &&
			VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(values[i])))
		{
			if (oldtup && !oldnulls[i] &&
				!VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(oldvalues[i])))
				values[i] = oldvalues[i];
			else
			{
				omit[i] = true;
				nulls[i] = true;
			}
		}
	}

	/*
	 * row_to_json calls a cast to json when a column's type (after domains)
	 * is not built in and has one: user code, which must never run here (in
	 * the worker, as the bootstrap superuser, outside the owner primitive).
	 * Such columns are handed over as their text form (the type's output
	 * function: built-in for enums, composites and arrays, C for base
	 * types, which only a superuser can create), so they become JSON
	 * strings; built-in types keep row_to_json's representation.
	 */
	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		/* built-in types (the common case) need no catalog lookup per row */
		if (att->attisdropped || att->atttypid < FirstNormalObjectId ||
			getBaseType(att->atttypid) < FirstNormalObjectId)
			continue;
		if (jdesc == NULL)
			jdesc = CreateTupleDescCopy(desc);
		if (!nulls[i])
		{
			Oid			out;
			bool		varlena;

			getTypeOutputInfo(att->atttypid, &out, &varlena);
			values[i] = CStringGetTextDatum(OidOutputFunctionCall(out, values[i]));
		}
		TupleDescInitEntry(jdesc, (AttrNumber) (i + 1), NameStr(att->attname), TEXTOID, -1, 0);
	}
	if (jdesc == NULL)
		jdesc = desc;
	else
	{
		/* an anonymous record type, so row_to_json reads the text columns as text */
		jdesc->tdtypeid = RECORDOID;
		jdesc->tdtypmod = -1;
		jdesc = BlessTupleDesc(jdesc);
	}
	flat = heap_form_tuple(jdesc, values, nulls);
	json = DirectFunctionCall1(row_to_json,
							   heap_copy_tuple_as_datum(flat, jdesc));
	jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(text_to_cstring(DatumGetTextPP(json))));
	for (i = 0; i < natts; i++)
	{
		if (omit[i])
			jb = DirectFunctionCall2(jsonb_delete, jb,
									 CStringGetTextDatum(NameStr(TupleDescAttr(desc, i)->attname)));
	}
	return DatumGetJsonbP(jb);
}

static void
ep_decode_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				 Relation relation, ReorderBufferChange *change)
{
	EpDecodeRound *r = ep_decode_round;
	Oid			relid = RelationGetRelid(relation);
	MemoryContext old;

	if (r == NULL)
		return;

	if (relid == r->events_relid)
	{
		HeapTuple	tup;
		bool		isnull;
		int64		pos;
		EpChange   *c;

		if (change->action != REORDER_BUFFER_CHANGE_INSERT ||
			change->data.tp.newtuple == NULL)
			return;
		tup = &change->data.tp.newtuple->tuple;
		pos = DatumGetInt64(heap_getattr(tup, Anum_ep_events_global_position,
										 RelationGetDescr(relation), &isnull));
		if (isnull)
			return;
		if (pos >= r->horizon)
		{
			r->txn_deferred = true;
			return;
		}
		if (pos <= r->collect_after)
			return;
		old = MemoryContextSwitchTo(r->cxt);
		c = ep_new_change(r, txn, EP_CHANGE_EVENT);
		c->position = pos;
		c->event = heap_copy_tuple_as_datum(tup, RelationGetDescr(relation));
		r->bytes += VARSIZE(DatumGetPointer(c->event));
		MemoryContextSwitchTo(old);
		return;
	}

	if (!ep_watched(r, relid))
		return;

	/*
	 * Rows written by projection handlers in the apply rounds carry the
	 * origin DoNotReplicateId: a handler writing its own source table
	 * must not feed itself (ep_decode_filter_origin drops them already;
	 * events a handler appends are not tagged).
	 */
	if (change->origin_id == DoNotReplicateId && !r->raw_rows)
		return;

	if (r->raw_rows)
	{
		HeapTuple	newtup = change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : NULL;
		HeapTuple	oldtup = change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : NULL;
		const char *op;
		EpChange   *c;
		MemoryContext tmp;

		switch (change->action)
		{
			case REORDER_BUFFER_CHANGE_INSERT:
				op = "INSERT";
				break;
			case REORDER_BUFFER_CHANGE_UPDATE:
				op = "UPDATE";
				break;
			case REORDER_BUFFER_CHANGE_DELETE:
				op = "DELETE";
				break;
			default:
				return;
		}
		if (r->overflow || r->bytes > r->max_bytes)
		{
			/* past the memory budget: the views over it are recomputed */
			r->overflow = true;
			return;
		}
		tmp = AllocSetContextCreate(CurrentMemoryContext, "ep decode row",
									ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(r->cxt);
		c = ep_new_change(r, txn, EP_CHANGE_ROW);
		c->relid = relid;
		c->xid = txn->xid;
		c->desc = ep_round_desc(r, relation);
		c->op = op;
		if (oldtup && change->action != REORDER_BUFFER_CHANGE_INSERT)
		{
			c->old_tup = ep_row_copy(relation, oldtup, NULL, tmp);
			if (c->old_tup == NULL)
				c->op = "RECOMPUTE";
		}
		if (newtup && change->action != REORDER_BUFFER_CHANGE_DELETE)
		{
			c->new_tup = ep_row_copy(relation, newtup, oldtup, tmp);
			if (c->new_tup == NULL)
				c->op = "RECOMPUTE";
		}
		/* without the old row (no REPLICA IDENTITY FULL) no delta exists */
		if (change->action != REORDER_BUFFER_CHANGE_INSERT &&
			(oldtup == NULL || relation->rd_rel->relreplident != REPLICA_IDENTITY_FULL))
			c->op = "RECOMPUTE";
		if (c->old_tup)
			r->bytes += c->old_tup->t_len + HEAPTUPLESIZE;
		if (c->new_tup)
			r->bytes += c->new_tup->t_len + HEAPTUPLESIZE;
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
		return;
	}

	{
		HeapTuple	newtup = change->data.tp.newtuple ? &change->data.tp.newtuple->tuple : NULL;
		HeapTuple	oldtup = change->data.tp.oldtuple ? &change->data.tp.oldtuple->tuple : NULL;
		bool		full = relation->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
		EpChange   *c;
		MemoryContext tmp;

		tmp = AllocSetContextCreate(CurrentMemoryContext, "ep decode row",
									ALLOCSET_DEFAULT_SIZES);
		old = MemoryContextSwitchTo(tmp);
		{
			Jsonb	   *oldj = NULL;
			Jsonb	   *newj = NULL;
			const char *op;

			switch (change->action)
			{
				case REORDER_BUFFER_CHANGE_INSERT:
					op = "INSERT";
					if (newtup)
						newj = ep_row_jsonb(relation, newtup, NULL, false);
					break;
				case REORDER_BUFFER_CHANGE_UPDATE:
					op = "UPDATE";
					if (newtup)
						newj = ep_row_jsonb(relation, newtup, full ? oldtup : NULL, false);
					if (oldtup)
						oldj = ep_row_jsonb(relation, oldtup, NULL, !full);
					else if (newtup && relation->rd_rel->relreplident != REPLICA_IDENTITY_NOTHING)
						/* key unchanged: the old key is the new one */
						oldj = ep_row_jsonb(relation, newtup, NULL, true);
					break;
				case REORDER_BUFFER_CHANGE_DELETE:
					op = "DELETE";
					if (oldtup)
						oldj = ep_row_jsonb(relation, oldtup, NULL, !full);
					break;
				default:
					MemoryContextSwitchTo(old);
					MemoryContextDelete(tmp);
					return;
			}
			MemoryContextSwitchTo(r->cxt);
			c = ep_new_change(r, txn, EP_CHANGE_ROW);
			c->relid = relid;
			c->op = op;
			if (oldj)
			{
				c->old_row = palloc(VARSIZE(oldj));
				memcpy(c->old_row, oldj, VARSIZE(oldj));
				r->bytes += VARSIZE(oldj);
			}
			if (newj)
			{
				c->new_row = palloc(VARSIZE(newj));
				memcpy(c->new_row, newj, VARSIZE(newj));
				r->bytes += VARSIZE(newj);
			}
		}
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
	}
}

static void
ep_decode_truncate(LogicalDecodingContext *ctx, ReorderBufferTXN *txn,
				   int nrelations, Relation relations[], ReorderBufferChange *change)
{
	EpDecodeRound *r = ep_decode_round;
	int			i;

	if (r == NULL || (change->origin_id == DoNotReplicateId && !r->raw_rows))
		return;
	for (i = 0; i < nrelations; i++)
	{
		Oid			relid = RelationGetRelid(relations[i]);

		if (ep_watched(r, relid))
		{
			MemoryContext old = MemoryContextSwitchTo(r->cxt);
			EpChange   *c = ep_new_change(r, txn, EP_CHANGE_ROW);

			c->relid = relid;
			c->xid = txn->xid;
			c->op = "TRUNCATE";
			MemoryContextSwitchTo(old);
		}
	}
}

/*
 * Writes of projection handlers carry the origin DoNotReplicateId
 * (projection.c); nothing here wants them (events, which a handler may
 * append, never carry it: ep_spi_execute_internal), so they are dropped
 * before they are queued in the reorder buffer. This saves a catch-up most
 * of the cost of decoding its own writes.
 */
static bool
ep_decode_filter_origin(LogicalDecodingContext *ctx, RepOriginId origin_id)
{
	/* async views see every change, a projection handler's writes too */
	if (ep_decode_round && ep_decode_round->raw_rows)
		return false;
	return origin_id == DoNotReplicateId;
}

void
_PG_output_plugin_init(OutputPluginCallbacks *cb)
{
	cb->filter_by_origin_cb = ep_decode_filter_origin;
	cb->startup_cb = ep_decode_startup;
	cb->begin_cb = ep_decode_begin;
	cb->change_cb = ep_decode_change;
	cb->truncate_cb = ep_decode_truncate;
	cb->commit_cb = ep_decode_commit;
	cb->shutdown_cb = ep_decode_shutdown;
}

/* ---------------------------------------------------------------------
 * The slot
 * ---------------------------------------------------------------------
 */

/*
 * Make sure this database's slot exists and is usable; returns true when
 * it had to be created (first use, dropped, or invalidated). Must run in a
 * transaction that has not written.
 */
bool
ep_decoder_ensure_slot(void)
{
	char		name[NAMEDATALEN];

	ep_decoder_slot_name(name, sizeof(name), MyDatabaseId);
	return ep_decoder_ensure_named_slot(name);
}

bool
ep_decoder_ensure_named_slot(const char *name)
{
	ReplicationSlot *slot;
	bool		exists = false;
	bool		invalid = false;
	LogicalDecodingContext *ctx;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot)
	{
		exists = true;
		SpinLockAcquire(&slot->mutex);
		invalid = (slot->data.restart_lsn == InvalidXLogRecPtr &&
				   slot->data.invalidated_at != InvalidXLogRecPtr);
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (exists && !invalid)
		return false;

	CheckLogicalDecodingRequirements();
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot create the replication slot \"%s\" in a transaction that has written", name),
				 errhint("Call ep.apply_projections() or ep.apply_async_views() in a transaction of its own.")));

	if (invalid)
	{
		ereport(LOG,
				(errmsg("event_patterns: replication slot \"%s\" was invalidated; creating it again", name),
				 errdetail("Async projections catch up from ep.events; table projections reload their source tables; async incremental views are recomputed.")));
		ReplicationSlotDrop(name, true);
	}

	ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
	PG_TRY();
	{
		ctx = CreateInitDecodingContext("event_patterns", NIL, false, InvalidXLogRecPtr,
										XL_ROUTINE(.page_read = read_local_xlog_page,
												   .segment_open = wal_segment_open,
												   .segment_close = wal_segment_close),
										NULL, NULL, NULL);
		DecodingContextFindStartpoint(ctx);
		FreeDecodingContext(ctx);
		ReplicationSlotPersist();
	}
	PG_CATCH();
	{
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();	/* drops the ephemeral slot */
		PG_RE_THROW();
	}
	PG_END_TRY();
	ReplicationSlotRelease();
	return true;
}

XLogRecPtr
ep_decoder_slot_confirmed(void)
{
	char		name[NAMEDATALEN];
	ReplicationSlot *slot;
	XLogRecPtr	lsn = InvalidXLogRecPtr;

	ep_decoder_slot_name(name, sizeof(name), MyDatabaseId);
	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot)
	{
		SpinLockAcquire(&slot->mutex);
		lsn = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return lsn;
}

/*
 * Decode the slot up to upto (or until the round's limits stop it at a
 * commit), after confirming confirm: the position an earlier round applied
 * and committed. Fills round->decoded_to and round->complete. Runs inside
 * the caller's transaction; holds the slot only meanwhile.
 */
void
ep_decoder_run(EpDecodeRound *round, XLogRecPtr confirm, XLogRecPtr upto)
{
	char		name[NAMEDATALEN];

	ep_decoder_slot_name(name, sizeof(name), MyDatabaseId);
	ep_decoder_run_named(name, round, confirm, upto);
}

void
ep_decoder_run_named(const char *name, EpDecodeRound *round, XLogRecPtr confirm, XLogRecPtr upto)
{
	LogicalDecodingContext *volatile ctx = NULL;
	ResourceOwner old_owner = CurrentResourceOwner;

	ReplicationSlotAcquire(name, true);

	PG_TRY();
	{
		XLogRecPtr	start;

		if (confirm != InvalidXLogRecPtr &&
			confirm > MyReplicationSlot->data.confirmed_flush)
		{
			LogicalConfirmReceivedLocation(confirm);
			ReplicationSlotMarkDirty();
		}

		start = MyReplicationSlot->data.confirmed_flush;
		round->decoded_to = start;
		round->safe_confirm = start;
		round->complete = (start >= upto);

		if (!round->complete)
		{
			ctx = CreateDecodingContext(InvalidXLogRecPtr, NIL, false,
										XL_ROUTINE(.page_read = read_local_xlog_page,
												   .segment_open = wal_segment_open,
												   .segment_close = wal_segment_close),
										NULL, NULL, NULL);
			XLogBeginRead(ctx->reader, MyReplicationSlot->data.restart_lsn);
			ep_decode_round = round;

			while (ctx->reader->EndRecPtr < upto && !round->stop)
			{
				XLogRecord *record;
				char	   *errm = NULL;

				record = XLogReadRecord(ctx->reader, &errm);
				if (errm)
					elog(ERROR, "could not read WAL for decoding: %s", errm);
				if (record != NULL)
					LogicalDecodingProcessRecord(ctx, ctx->reader);
				CHECK_FOR_INTERRUPTS();
			}
			ep_decode_round = NULL;
			round->decoded_to = ctx->reader->EndRecPtr;
			round->complete = !round->stop || round->decoded_to >= upto;
			if (!round->seen_deferred)
				round->safe_confirm = Max(start, round->decoded_to);
			FreeDecodingContext(ctx);
			ctx = NULL;
		}
		CurrentResourceOwner = old_owner;
		ReplicationSlotRelease();
	}
	PG_CATCH();
	{
		ep_decode_round = NULL;
		CurrentResourceOwner = old_owner;
		if (MyReplicationSlot != NULL)
			ReplicationSlotRelease();
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* Drop the slot of a database (DROP DATABASE, DROP EXTENSION), if any. */
void
ep_decoder_drop_slot(Oid dbid)
{
	char		name[NAMEDATALEN];

	ep_decoder_slot_name(name, sizeof(name), dbid);
	ep_decoder_drop_named_slot(name);
}

void
ep_decoder_drop_named_slot(const char *name)
{
	bool		exists;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	exists = SearchNamedReplicationSlot(name, false) != NULL;
	LWLockRelease(ReplicationSlotControlLock);
	if (exists && MyReplicationSlot == NULL)
		ReplicationSlotDrop(name, false);
}

/* Confirm a position to the slot outside a decoding pass. */
void
ep_decoder_confirm(XLogRecPtr lsn)
{
	char		name[NAMEDATALEN];

	ep_decoder_slot_name(name, sizeof(name), MyDatabaseId);
	ReplicationSlotAcquire(name, true);
	if (lsn > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(lsn);
		ReplicationSlotMarkDirty();
	}
	ReplicationSlotRelease();
}

/*
 * Each decoding pass starts reading at the slot's restart_lsn, which only
 * moves forward at xl_running_xacts records (logged every 15 seconds by
 * the background writer). When the slot has fallen more than a few
 * megabytes behind its confirmed position, log one now, so that the next
 * pass does not re-read ever more WAL. An idle database logs nothing: the
 * gap only grows when WAL is written.
 */
void
ep_decoder_help_restart(void)
{
	char		name[NAMEDATALEN];

	ep_decoder_slot_name(name, sizeof(name), MyDatabaseId);
	ep_decoder_help_restart_named(name, EP_RESTART_LAG);
}

void
ep_decoder_help_restart_named(const char *name, XLogRecPtr lag)
{
	ReplicationSlot *slot;
	XLogRecPtr	restart = InvalidXLogRecPtr;
	XLogRecPtr	confirmed = InvalidXLogRecPtr;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	slot = SearchNamedReplicationSlot(name, false);
	if (slot)
	{
		SpinLockAcquire(&slot->mutex);
		restart = slot->data.restart_lsn;
		confirmed = slot->data.confirmed_flush;
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (restart != InvalidXLogRecPtr && confirmed > restart &&
		confirmed - restart > lag)
		(void) LogStandbySnapshot();
}
