/*-------------------------------------------------------------------------
 *
 * channel.c
 *	  Service channels (DESIGN.md section 7): the outbox (ep.send), the
 *	  consumer's receive trigger, the connection to the producer used to
 *	  create and drop a consumer's slot, the producer's pruning marks, the
 *	  clean-up step of the worker, and the message row handed to message
 *	  handlers (projection.c runs them as table projections of the
 *	  channel's table, kind 'message').
 *
 * Invariants:
 *	- A message's position comes from the event store's position sequence
 *	  (position.c), so the store's read horizon H also holds for messages:
 *	  every message with a position below H has committed or never will.
 *	  ep_channel_mark_point() pairs H with the WAL insert position L read
 *	  after it: each such commit record lies below L, so a consumer slot
 *	  whose confirmed position reached L has received all of them. The
 *	  producer prunes below such marks only (50_channel.sql).
 *	- On a consumer, messages arrive only through the subscription's apply
 *	  and table-sync workers (one transaction at a time, in the producer's
 *	  commit order); received_seq records that order and is what message
 *	  handlers store as their progress (projection_defs.last_position), in
 *	  the transaction of their writes.
 *	- A message received again (the initial copy after a lost slot brings
 *	  what the producer still has) is dropped by the receive trigger when
 *	  its id is present, or, during that copy, when it was sent before what
 *	  the consumer has already pruned.
 *
 * Every statement here runs as the extension owner with schema-qualified
 * names; no user code runs in this file (handlers run in projection.c
 * through owner.c).
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
#include "access/xlog.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/walreceiver.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"

#include "../event_patterns.h"
#include "../launcher.h"
#include "../owner.h"
#include "../position.h"
#include "../replica/subscribe.h"
#include "../worker.h"
#include "channel.h"

int			ep_guc_channel_retention_s = 3600;

#define EP_CHANNEL_MAINTAIN_MS	1000

static SPIPlanPtr plan_insert = NULL;
static Oid	plan_insert_partition = InvalidOid;	/* the table plan_insert writes */
static SPIPlanPtr plan_seen = NULL;
static bool wake_at_commit = false;
static bool callback_registered = false;
static Oid	channels_nsp = InvalidOid;	/* schema ep_channels, reset by invalidation */
static TimestampTz next_maintain = 0;

/* ---------------------------------------------------------------------
 * ep.send(channel, message_type, payload, key, headers) RETURNS uuid
 * ---------------------------------------------------------------------
 */

static Datum
ep_new_uuid(void)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(u->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random message id")));
	u->data[6] = (u->data[6] & 0x0f) | 0x40;	/* version 4 */
	u->data[8] = (u->data[8] & 0x3f) | 0x80;	/* RFC 4122 variant */
	return UUIDPGetDatum(u);
}

/* The columns ep.send writes, in the order of its arguments array */
#define EP_SEND_COLUMNS 8
static const char *const send_columns[EP_SEND_COLUMNS] = {
	"channel", "message_id", "position", "message_type", "key", "payload", "headers", "sent_at"
};
static const Oid send_types[EP_SEND_COLUMNS] = {
	TEXTOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID
};

/*
 * May ep.send write this index itself? A live btree over plain columns of
 * built-in operator families, immediate if unique, no exclusion
 * constraint: inserting into it runs no user code.
 */
static bool
ep_send_index_ok(Relation idx)
{
	Form_pg_index ind = idx->rd_index;
	int			i;

	if (idx->rd_rel->relam != BTREE_AM_OID || !ind->indislive || !ind->indisready ||
		!ind->indimmediate || ind->indisexclusion ||
		RelationGetIndexExpressions(idx) != NIL || RelationGetIndexPredicate(idx) != NIL)
		return false;
	for (i = 0; i < ind->indnkeyatts; i++)
		if (ind->indkey.values[i] <= 0 || idx->rd_opfamily[i] >= FirstNormalObjectId)
			return false;
	return true;
}

/*
 * Schema ep_channels, looked up once per backend (reset when any schema
 * changes)
 */
static void
ep_channel_nsp_invalidate(Datum arg, int cacheid, uint32 hashvalue)
{
	channels_nsp = InvalidOid;
}

static Oid
ep_channels_namespace(void)
{
	static bool registered = false;

	if (!OidIsValid(channels_nsp))
	{
		if (!registered)
		{
			CacheRegisterSyscacheCallback(NAMESPACEOID, ep_channel_nsp_invalidate, (Datum) 0);
			registered = true;
		}
		channels_nsp = get_namespace_oid("ep_channels", false);
	}
	return channels_nsp;
}

/*
 * What ep.send found out about the last channel table it wrote, kept until
 * that table's relcache entry is invalidated (every ALTER TABLE, CREATE
 * INDEX or TRIGGER or POLICY or RULE on it sends one): whether it may
 * write it directly, and which argument goes into which column.
 */
typedef struct EpSendShape
{
	Oid			relid;			/* InvalidOid: nothing known */
	bool		direct;			/* the table is as ep_send_direct needs it */
	int			natts;
	int		   *arg_of;			/* column i gets argument arg_of[i], -1: NULL */
	bool	   *notnull;		/* column i is NOT NULL */
} EpSendShape;

static EpSendShape send_shape = {InvalidOid};

static void
ep_send_shape_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == send_shape.relid)
		send_shape.relid = InvalidOid;
}

/* Work out send_shape for rel (open, locked) */
static void
ep_send_shape_build(Relation rel)
{
	static bool registered = false;
	TupleDesc	desc = RelationGetDescr(rel);
	bool		direct = true;
	int			found = 0;
	int			i;
	int			c;
	List	   *index_oids;
	ListCell   *lc;

	if (!registered)
	{
		ep_register_relcache_callback(ep_send_shape_invalidate);
		registered = true;
	}
	send_shape.relid = InvalidOid;
	if (send_shape.arg_of != NULL)
	{
		pfree(send_shape.arg_of);
		pfree(send_shape.notnull);
	}
	send_shape.natts = desc->natts;
	send_shape.arg_of = MemoryContextAlloc(TopMemoryContext, sizeof(int) * Max(desc->natts, 1));
	send_shape.notnull = MemoryContextAlloc(TopMemoryContext, sizeof(bool) * Max(desc->natts, 1));

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		!rel->rd_rel->relispartition || rel->rd_rel->relrowsecurity ||
		rel->trigdesc != NULL || rel->rd_rules != NULL ||
		RelationGetNamespace(rel) != ep_channels_namespace() ||
		(desc->constr != NULL && (desc->constr->num_check > 0 || desc->constr->num_defval > 0 ||
								  desc->constr->has_generated_stored)))
		direct = false;
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		send_shape.arg_of[i] = -1;
		send_shape.notnull[i] = att->attnotnull;
		if (att->attisdropped)
			continue;
		for (c = 0; c < EP_SEND_COLUMNS; c++)
			if (strcmp(NameStr(att->attname), send_columns[c]) == 0)
				break;
		if (c == EP_SEND_COLUMNS)
		{
			/* another column (received_seq): NULL must do for it */
			if (att->attnotnull || att->atthasdef || att->attgenerated)
				direct = false;
			continue;
		}
		if (att->atttypid != send_types[c])
			direct = false;
		send_shape.arg_of[i] = c;
		found++;
	}
	if (found != EP_SEND_COLUMNS)
		direct = false;

	index_oids = direct ? RelationGetIndexList(rel) : NIL;
	foreach(lc, index_oids)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);

		if (!ep_send_index_ok(idx))
			direct = false;
		index_close(idx, AccessShareLock);
	}
	list_free(index_oids);

	send_shape.direct = direct;
	send_shape.relid = RelationGetRelid(rel);
}

/*
 * Write a message into the channel's table without the executor: heap
 * insert and index entries, as the executor would make them. Only while
 * the table is what ep._channel_create_partition made (a heap partition
 * in ep_channels named after the channel, the columns ep.send writes plus
 * nullable columns without defaults, no triggers, rules, row-level
 * security or CHECK constraints, indexes as ep_send_index_ok wants):
 * then nothing else would have run for an INSERT, and no user code runs
 * here. False, having written nothing, otherwise: the caller runs the
 * INSERT, which does whatever the table asks for (and raises its errors).
 */
static bool
ep_send_direct(Oid partition, Datum *args, const char *nulls)
{
	Relation	rel;
	List	   *index_oids;
	List	   *indexes = NIL;
	ListCell   *lc;
	TupleTableSlot *slot;
	const char *name;
	int			i;

	if (XactReadOnly || IsInParallelMode())
		return false;
	rel = try_table_open(partition, RowExclusiveLock);
	if (rel == NULL)
		return false;
	if (send_shape.relid != partition)
		ep_send_shape_build(rel);
	name = RelationGetRelationName(rel);
	if (!send_shape.direct || send_shape.natts != RelationGetDescr(rel)->natts ||
		strlen(name) != VARSIZE_ANY_EXHDR(DatumGetPointer(args[0])) ||
		memcmp(name, VARDATA_ANY(DatumGetPointer(args[0])), strlen(name)) != 0)
	{
		table_close(rel, NoLock);
		return false;
	}
	for (i = 0; i < send_shape.natts; i++)
		if (send_shape.arg_of[i] >= 0 && send_shape.notnull[i] && nulls[send_shape.arg_of[i]] == 'n')
		{
			table_close(rel, NoLock);
			return false;
		}

	slot = table_slot_create(rel, NULL);
	ExecClearTuple(slot);
	for (i = 0; i < send_shape.natts; i++)
	{
		int			c = send_shape.arg_of[i];

		slot->tts_values[i] = (c >= 0 && nulls[c] != 'n') ? args[c] : (Datum) 0;
		slot->tts_isnull[i] = (c < 0 || nulls[c] == 'n');
	}
	ExecStoreVirtualTuple(slot);
	simple_table_tuple_insert(rel, slot);
	index_oids = RelationGetIndexList(rel);
	foreach(lc, index_oids)
		indexes = lappend(indexes, index_open(lfirst_oid(lc), RowExclusiveLock));
	ep_insert_index_entries(rel, indexes, slot, false);
	foreach(lc, indexes)
		index_close(lfirst(lc), NoLock);
	list_free(index_oids);
	list_free(indexes);
	ExecDropSingleTupleTableSlot(slot);
	table_close(rel, NoLock);
	return true;
}

PG_FUNCTION_INFO_V1(ep_send);
Datum
ep_send(PG_FUNCTION_ARGS)
{
	const EpCatalog *cat = ep_catalog();
	Oid			caller = GetUserId();
	EpSavedUser saved;
	Datum		args[EP_SEND_COLUMNS];
	char		nulls[EP_SEND_COLUMNS] = "        ";
	text	   *channel;
	const EpChannelDef *d;
	Oid			partition;
	char	   *insert_sql = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("channel must not be NULL")));
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("message_type must be a non-empty string")));
	if (!PG_ARGISNULL(4))
	{
		Jsonb	   *h = PG_GETARG_JSONB_P(4);

		if (!JB_ROOT_IS_OBJECT(h) || JB_ROOT_IS_SCALAR(h))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("headers must be a JSON object"),
					 errhint("Use e.g. {\"reply_to\": \"orders.replies\", \"correlation_id\": \"42\"}.")));
	}

	/*
	 * the channel's definition from the cache of ep.channel_defs (defs.c),
	 * with every committed change (a revoke in this transaction's time)
	 */
	channel = PG_GETARG_TEXT_PP(0);
	ep_channel_defs_refresh();
	d = ep_channel_def(VARDATA_ANY(channel), VARSIZE_ANY_EXHDR(channel));
	if (d == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("channel \"%s\" does not exist", text_to_cstring(channel)),
				 errhint("Create it with ep.create_channel() on the producing database.")));
	if (!d->producer)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot send on channel \"%s\"", d->name),
				 errdetail("This database consumes the channel; only its producer sends on it.")));
	if (!ep_channel_def_allows(d, caller, true))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to send on channel \"%s\"", d->name),
				 errhint("The channel's owner can run ep.grant_channel(channel, role, '{send}').")));
	partition = d->partition;

	args[0] = PointerGetDatum(channel);
	args[1] = ep_new_uuid();
	args[2] = Int64GetDatum(ep_position_next(cat->position_seq));
	args[3] = PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(3))
		nulls[4] = 'n';
	else
		args[4] = PG_GETARG_DATUM(3);
	if (PG_ARGISNULL(2))
		nulls[5] = 'n';
	else
		args[5] = PG_GETARG_DATUM(2);
	if (PG_ARGISNULL(4))
		nulls[6] = 'n';
	else
		args[6] = PG_GETARG_DATUM(4);
	args[7] = TimestampTzGetDatum(GetCurrentTimestamp());

	if (ep_send_direct(partition, args, nulls))
		PG_RETURN_DATUM(args[1]);

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * Into the channel's partition itself: no tuple routing to set up for
	 * every message. The plan is kept for the last partition written.
	 */
	if (partition != plan_insert_partition && plan_insert != NULL)
	{
		SPI_freeplan(plan_insert);
		plan_insert = NULL;
	}
	if (plan_insert == NULL)
	{
		char	   *nsp = get_namespace_name(get_rel_namespace(partition));
		char	   *rel = get_rel_name(partition);

		if (nsp == NULL || rel == NULL)
			elog(ERROR, "table of channel \"%s\" not found", text_to_cstring(channel));
		insert_sql = psprintf("INSERT INTO %s (channel, message_id, position, message_type, key,"
							  " payload, headers, sent_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
							  quote_qualified_identifier(nsp, rel));
		plan_insert_partition = partition;
	}
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_insert, insert_sql, EP_SEND_COLUMNS,
										  (Oid *) send_types),
						 args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into ep.messages");
	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_DATUM(args[1]);
}

/* ---------------------------------------------------------------------
 * The consumer's receive trigger
 * ---------------------------------------------------------------------
 */
static void
ep_channel_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && wake_at_commit)
		ep_worker_wake(MyDatabaseId);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		wake_at_commit = false;
}

PG_FUNCTION_INFO_V1(ep_message_receive);
Datum
ep_message_receive(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	desc;
	Oid			types[2] = {TEXTOID, UUIDOID};
	Datum		args[2];
	bool		isnull;
	bool		seen;
	EpSavedUser saved;
	Trigger    *trigger;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._message_receive() must be called as a BEFORE INSERT row trigger")));
	/* it looks messages up as the extension owner: channel tables only */
	if (RelationGetNamespace(trigdata->tg_relation) != ep_channels_namespace())
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._message_receive() fires only on the tables of schema ep_channels")));
	row = trigdata->tg_trigtuple;
	desc = RelationGetDescr(trigdata->tg_relation);
	trigger = trigdata->tg_trigger;

	/*
	 * Arrival order is this database's own: a producer that publishes
	 * received_seq (it is NULL there) must not choose it, so whatever the
	 * row carries is replaced by the next number.
	 */
	{
		int			att = SPI_fnumber(desc, "received_seq");
		Oid			seq = get_relname_relid("message_received_seq", ep_catalog()->schema);
		Datum		val;
		bool		null = false;

		if (att <= 0 || !OidIsValid(seq))
			elog(ERROR, "channel table \"%s\" has no arrival order",
				 RelationGetRelationName(trigdata->tg_relation));
		val = Int64GetDatum(nextval_internal(seq, false));
		row = heap_modify_tuple_by_cols(row, desc, 1, &att, &val, &null);
	}

	if (!callback_registered)
	{
		RegisterXactCallback(ep_channel_xact_callback, NULL);
		callback_registered = true;
	}
	wake_at_commit = true;

	/* only while messages fetched at subscription may arrive again */
	if (trigger->tgnargs < 1 || strcmp(trigger->tgargs[0], "dedup") != 0)
		return PointerGetDatum(row);
	args[0] = heap_getattr(row, SPI_fnumber(desc, "channel"), desc, &isnull);
	if (isnull)
		return PointerGetDatum(row);
	args[1] = heap_getattr(row, SPI_fnumber(desc, "message_id"), desc, &isnull);
	if (isnull)
		return PointerGetDatum(row);

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_seen,
										  "SELECT EXISTS (SELECT 1 FROM ep.messages m"
										  "                WHERE m.channel OPERATOR(pg_catalog.=) $1"
										  "                  AND m.message_id OPERATOR(pg_catalog.=) $2)",
										  2, types),
						 args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not look up a received message");
	seen = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	ep_restore_user(&saved);
	if (seen)
		return PointerGetDatum(NULL);
	return PointerGetDatum(row);
}

/* ---------------------------------------------------------------------
 * The connection to the producer (consumer side)
 * ---------------------------------------------------------------------
 */
static WalReceiverConn *
ep_channel_connect(const char *conninfo)
{
	WalReceiverConn *conn;
	char	   *err = NULL;

	load_file("libpqwalreceiver", false);
	conn = walrcv_connect(conninfo, true, "event_patterns channel", &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the producer: %s", err ? err : "unknown error")));
	return conn;
}

/*
 * ep._channel_check_conninfo(caller, conninfo) -> text: the connection
 * string the extension owner uses on the caller's behalf; for a caller
 * that is not a superuser it lends none of the server's own credentials
 * (ep_native_caller_conninfo, replica/subscribe.h).
 */
PG_FUNCTION_INFO_V1(ep_channel_check_conninfo);
Datum
ep_channel_check_conninfo(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("caller and conninfo must not be NULL")));
	PG_RETURN_TEXT_P(cstring_to_text(ep_native_caller_conninfo(PG_GETARG_OID(0),
																text_to_cstring(PG_GETARG_TEXT_PP(1)))));
}

/* ep._channel_conninfo_shown(conninfo) -> text: without its passwords */
PG_FUNCTION_INFO_V1(ep_channel_conninfo_shown);
Datum
ep_channel_conninfo_shown(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ep_native_conninfo_shown(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/*
 * ep._channel_remote_slot(conninfo, slot_name, create_it): the slot part of
 * the native-subscription primitive (replica/subscribe.c). Creating it is
 * refused in a transaction that has written when the producer is a
 * database of this cluster (the slot would wait for that transaction), and
 * an abort of the (sub)transaction drops the slot again; dropping happens
 * just before the transaction commits.
 */
PG_FUNCTION_INFO_V1(ep_channel_remote_slot);
Datum
ep_channel_remote_slot(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *slot = NameStr(*PG_GETARG_NAME(1));

	if (PG_GETARG_BOOL(2))
		ep_native_create_slot(conninfo, slot);
	else
		ep_native_drop_slot_at_commit(conninfo, slot);
	PG_RETURN_BOOL(true);
}

/*
 * ep._channel_remote_state(conninfo, channel, slot_name): does the channel
 * exist on the producer, does the slot, and what did retention remove.
 */
PG_FUNCTION_INFO_V1(ep_channel_remote_state);
Datum
ep_channel_remote_state(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *channel = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *slot = PG_ARGISNULL(2) ? NULL : NameStr(*PG_GETARG_NAME(2));
	WalReceiverConn *conn;
	WalRcvExecResult *res;
	Oid			rtypes[5] = {BOOLOID, BOOLOID, INT8OID, INT8OID, INT8OID};
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5];
	TupleTableSlot *tslot;
	char	   *sql;
	int			i;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	sql = psprintf("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname OPERATOR(pg_catalog.=) %s),"
				   " EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) %s),"
				   " i.pruned_below, i.pruned_count, i.min_position FROM ep.channel_info(%s) i",
				   quote_literal_cstr(psprintf("ep_channel:%s", channel)),
				   slot ? quote_literal_cstr(slot) : "NULL",
				   quote_literal_cstr(channel));
	conn = ep_channel_connect(conninfo);
	PG_TRY();
	{
		res = walrcv_exec(conn, sql, 5, rtypes);
		if (res->status != WALRCV_OK_TUPLES)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not ask the producer about channel \"%s\": %s", channel,
							res->err ? res->err : "no result"),
					 errhint("The producing database needs event_patterns 0.2 or later.")));
		tslot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
		if (!tuplestore_gettupleslot(res->tuplestore, true, false, tslot))
			elog(ERROR, "no row from the producer");
		for (i = 0; i < 5; i++)
			values[i] = slot_getattr(tslot, i + 1, &nulls[i]);
		ExecDropSingleTupleTableSlot(tslot);
		walrcv_clear_result(res);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * ep._channel_fetch(conninfo, channel): the producer's messages on the
 * channel (ep.channel_messages there, which checks that the connected role
 * may read them), as rows of the consumer's types.
 */
PG_FUNCTION_INFO_V1(ep_channel_fetch);
Datum
ep_channel_fetch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *channel = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			rtypes[8] = {TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	WalReceiverConn *conn;
	WalRcvExecResult *res;
	TupleTableSlot *tslot;
	char	   *sql;

	InitMaterializedSRF(fcinfo, 0);
	sql = psprintf("SELECT m.channel, m.message_id, m.position, m.message_type, m.key, m.payload, m.headers, m.sent_at"
				   "  FROM ep.channel_messages(%s) m", quote_literal_cstr(channel));
	conn = ep_channel_connect(conninfo);
	PG_TRY();
	{
		res = walrcv_exec(conn, sql, 8, rtypes);
		if (res->status != WALRCV_OK_TUPLES)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not fetch the messages of channel \"%s\" from the producer: %s", channel,
							res->err ? res->err : "no result")));
		tslot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
		while (tuplestore_gettupleslot(res->tuplestore, true, false, tslot))
		{
			Datum		values[8];
			bool		nulls[8];
			Datum		in[8];
			int			i;

			for (i = 0; i < 8; i++)
				in[i] = slot_getattr(tslot, i + 1, &nulls[i]);
			values[0] = in[0];
			values[1] = nulls[1] ? (Datum) 0 :
				DirectFunctionCall1(uuid_in, CStringGetDatum(TextDatumGetCString(in[1])));
			values[2] = in[2];
			values[3] = in[3];
			values[4] = in[4];
			values[5] = nulls[5] ? (Datum) 0 :
				DirectFunctionCall1(jsonb_in, CStringGetDatum(TextDatumGetCString(in[5])));
			values[6] = nulls[6] ? (Datum) 0 :
				DirectFunctionCall1(jsonb_in, CStringGetDatum(TextDatumGetCString(in[6])));
			values[7] = nulls[7] ? (Datum) 0 :
				DirectFunctionCall3(timestamptz_in, CStringGetDatum(TextDatumGetCString(in[7])),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		ExecDropSingleTupleTableSlot(tslot);
		/* its rows may be in a temporary file: closed now, not at commit */
		walrcv_clear_result(res);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
	return (Datum) 0;
}

/* ep._channel_remote_lsn(conninfo): the producer's WAL insert position */
PG_FUNCTION_INFO_V1(ep_channel_remote_lsn);
Datum
ep_channel_remote_lsn(PG_FUNCTION_ARGS)
{
	char	   *conninfo = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			rtypes[1] = {TEXTOID};
	WalReceiverConn *conn;
	WalRcvExecResult *res;
	TupleTableSlot *tslot;
	Datum		lsn = (Datum) 0;
	bool		isnull = true;

	conn = ep_channel_connect(conninfo);
	PG_TRY();
	{
		res = walrcv_exec(conn, "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text", 1, rtypes);
		if (res->status != WALRCV_OK_TUPLES)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not read the producer's WAL position: %s", res->err ? res->err : "no result")));
		tslot = MakeSingleTupleTableSlot(res->tupledesc, &TTSOpsMinimalTuple);
		if (tuplestore_gettupleslot(res->tuplestore, true, false, tslot))
		{
			Datum		v = slot_getattr(tslot, 1, &isnull);

			if (!isnull)
				lsn = DirectFunctionCall1(pg_lsn_in, CStringGetDatum(TextDatumGetCString(v)));
		}
		ExecDropSingleTupleTableSlot(tslot);
		walrcv_clear_result(res);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(lsn);
}

/* ---------------------------------------------------------------------
 * Producer: pruning marks
 * ---------------------------------------------------------------------
 */
PG_FUNCTION_INFO_V1(ep_channel_mark_point);
Datum
ep_channel_mark_point(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int64		horizon;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* H first, then L: see the header comment */
	horizon = ep_position_horizon(ep_catalog()->position_seq);
	values[0] = Int64GetDatum(horizon);
	values[1] = LSNGetDatum(GetXLogInsertRecPtr());
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ---------------------------------------------------------------------
 * Clean-up: ep.maintain_channels() and the worker step
 * ---------------------------------------------------------------------
 */
static int64
ep_channel_maintain(void)
{
	EpSavedUser saved;
	Oid			types[1] = {INTERVALOID};
	Datum		args[1];
	int64		removed = 0;
	bool		isnull;

	args[0] = DirectFunctionCall3(interval_in,
								  CStringGetDatum(psprintf("%d seconds", ep_guc_channel_retention_s)),
								  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT ep._channel_maintain($1)", 1, types, args, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		removed = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	ep_restore_user(&saved);
	return removed;
}

PG_FUNCTION_INFO_V1(ep_maintain_channels);
Datum
ep_maintain_channels(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(ep_channel_maintain());
}

static bool
ep_channels_present(void)
{
	Oid			nsp = get_namespace_oid(EP_SCHEMA_NAME, true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("channel_defs", nsp)) &&
		OidIsValid(get_extension_oid("event_patterns", true));
}

static bool
ep_channel_step(void)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();

	if (RecoveryInProgress() || now < next_maintain)
		return false;
	next_maintain = TimestampTzPlusMilliseconds(now, EP_CHANNEL_MAINTAIN_MS);
	PG_TRY();
	{
		ep_bgw_start_xact();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (ep_channels_present())
			(void) ep_channel_maintain();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		MemoryContextSwitchTo(oldcxt);
		ed = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("event_patterns: channel clean-up failed: %s", ed->message)));
		FreeErrorData(ed);
		/* not in a loop: wait a minute after a failure */
		next_maintain = TimestampTzPlusMilliseconds(now, 60000);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return false;
}

/* ---------------------------------------------------------------------
 * The row a message handler receives
 * ---------------------------------------------------------------------
 */

/*
 * Build an ep.messages row from its JSON form (a parked message's
 * ep.parked.new_row): every column is of a built-in type, so the input
 * functions used here are built in and no user code runs.
 */
Datum
ep_channel_message_datum(Jsonb *row)
{
	Oid			nsp = get_namespace_oid(EP_SCHEMA_NAME, false);
	Oid			typid = get_rel_type_id(get_relname_relid("messages", nsp));
	TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);
	Datum	   *values = palloc0(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc0(sizeof(bool) * desc->natts);
	HeapTuple	tup;
	Datum		result;
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		JsonbValue	k;
		JsonbValue *v;

		nulls[i] = true;
		if (att->attisdropped)
			continue;
		k.type = jbvString;
		k.val.string.val = NameStr(att->attname);
		k.val.string.len = strlen(NameStr(att->attname));
		v = findJsonbValueFromContainer(&row->root, JB_FOBJECT, &k);
		if (v == NULL || v->type == jbvNull)
			continue;
		if (att->atttypid == JSONBOID)
			values[i] = JsonbPGetDatum(JsonbValueToJsonb(v));
		else
		{
			Oid			infunc;
			Oid			ioparam;
			char	   *str;

			if (v->type == jbvString)
				str = pnstrdup(v->val.string.val, v->val.string.len);
			else if (v->type == jbvNumeric)
				str = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			else if (v->type == jbvBool)
				str = v->val.boolean ? "true" : "false";
			else
				str = JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
			getTypeInputInfo(att->atttypid, &infunc, &ioparam);
			values[i] = OidInputFunctionCall(infunc, str, ioparam, att->atttypmod);
		}
		nulls[i] = false;
	}
	tup = heap_form_tuple(desc, values, nulls);
	result = heap_copy_tuple_as_datum(tup, desc);
	ReleaseTupleDesc(desc);
	return result;
}

/*
 * May role still read the consumer's channel whose table is source (and so
 * handle its messages)? NULL if so, else why not. The check of
 * ep._check_message_source (40_projection.sql), made from the cache of
 * ep.channel_defs after processing pending invalidations, so as of the
 * latest committed grants: it runs for every batch of a message handler.
 */
char *
ep_channel_reader_denied(Oid source, Oid role)
{
	const EpChannelDef *d;

	ep_channel_defs_refresh();
	d = ep_channel_def_by_partition(source);
	if (d == NULL || d->producer)
		return psprintf("relation %s is not the table of a subscribed channel",
						DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(source))));
	if (!ep_channel_def_allows(d, role, false))
		return psprintf("permission denied to read channel \"%s\"", d->name);
	return NULL;
}

/* An ep.messages row as JSON (the form parked messages are kept in) */
Jsonb *
ep_channel_message_jsonb(Datum message)
{
	Datum		json = DirectFunctionCall1(row_to_json, message);

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(text_to_cstring(DatumGetTextPP(json)))));
}

/* ---------------------------------------------------------------------
 * Reading a consumer's channel table in arrival order
 * ---------------------------------------------------------------------
 *
 * Message handlers take the received messages from the channel's table
 * itself, not from decoding: on a consumer a channel table has a single
 * writer at a time (its subscription's apply worker, or the copy made by
 * ep.subscribe_channel before the subscription starts), which applies one
 * producer transaction after the other, so received_seq grows in commit
 * order and the messages visible to any snapshot are exactly those below
 * the lowest received_seq still uncommitted: a handler that handled every
 * visible message above its stored progress and stores the largest
 * received_seq it saw (in the transaction of its writes) skips nothing and
 * repeats nothing.
 */
struct EpMessageScan
{
	Relation	rel;
	Relation	idx;
	Snapshot	snap;
	IndexScanDesc iscan;
	TupleTableSlot *slot;
	TupleDesc	msgdesc;		/* the row type ep.messages */
	AttrNumber *map;			/* column i of ep.messages is column map[i] of the table (0: none) */
	AttrNumber	seq_att;
	AttrNumber	type_att;
	Datum	   *values;
	bool	   *nulls;
};

static AttrNumber
ep_channel_attnum(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

EpMessageScan *
ep_channel_scan_begin(Oid source, int64 after)
{
	EpMessageScan *s = palloc0(sizeof(EpMessageScan));
	TupleDesc	reldesc;
	List	   *indexes;
	ListCell   *lc;
	ScanKeyData key;
	int			i;

	s->rel = table_open(source, AccessShareLock);
	reldesc = RelationGetDescr(s->rel);
	s->seq_att = ep_channel_attnum(reldesc, "received_seq");
	s->type_att = ep_channel_attnum(reldesc, "message_type");
	if (s->seq_att == InvalidAttrNumber || s->type_att == InvalidAttrNumber)
		elog(ERROR, "\"%s\" is not a channel table", RelationGetRelationName(s->rel));

	/*
	 * the index on received_seq made with the table
	 * (ep._channel_create_partition): plain, ascending, built-in operators
	 */
	indexes = RelationGetIndexList(s->rel);
	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);

		if (idx->rd_rel->relam == BTREE_AM_OID && idx->rd_index->indnatts == 1 &&
			idx->rd_index->indkey.values[0] == s->seq_att &&
			idx->rd_indoption[0] == 0 && idx->rd_opfamily[0] < FirstNormalObjectId &&
			RelationGetIndexExpressions(idx) == NIL && RelationGetIndexPredicate(idx) == NIL)
		{
			s->idx = idx;
			break;
		}
		index_close(idx, AccessShareLock);
	}
	list_free(indexes);
	if (s->idx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("channel table \"%s\" has no index on received_seq",
						RelationGetRelationName(s->rel))));

	s->msgdesc = lookup_rowtype_tupdesc_copy(get_rel_type_id(get_relname_relid("messages",
																				ep_catalog()->schema)), -1);
	s->map = palloc0(sizeof(AttrNumber) * s->msgdesc->natts);
	for (i = 0; i < s->msgdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(s->msgdesc, i);
		AttrNumber	a;

		if (att->attisdropped)
			continue;
		a = ep_channel_attnum(reldesc, NameStr(att->attname));
		if (a != InvalidAttrNumber && TupleDescAttr(reldesc, a - 1)->atttypid == att->atttypid)
			s->map[i] = a;
	}
	s->values = palloc(sizeof(Datum) * s->msgdesc->natts);
	s->nulls = palloc(sizeof(bool) * s->msgdesc->natts);

	s->snap = RegisterSnapshot(GetLatestSnapshot());
	ScanKeyInit(&key, 1, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
	s->iscan = index_beginscan(s->rel, s->idx, s->snap, 1, 0);
	index_rescan(s->iscan, &key, 1, NULL, 0);
	s->slot = table_slot_create(s->rel, NULL);
	return s;
}

int
ep_channel_scan_next(EpMessageScan *s, EpMessage *out, int max)
{
	int			n = 0;

	while (n < max && index_getnext_slot(s->iscan, ForwardScanDirection, s->slot))
	{
		HeapTuple	tup;
		int			i;

		CHECK_FOR_INTERRUPTS();
		slot_getallattrs(s->slot);
		for (i = 0; i < s->msgdesc->natts; i++)
		{
			AttrNumber	a = s->map[i];

			s->nulls[i] = (a == InvalidAttrNumber) || s->slot->tts_isnull[a - 1];
			s->values[i] = s->nulls[i] ? (Datum) 0 : s->slot->tts_values[a - 1];
		}
		/* a self-contained datum: TOASTed values are fetched here */
		tup = heap_form_tuple(s->msgdesc, s->values, s->nulls);
		out[n].row = heap_copy_tuple_as_datum(tup, s->msgdesc);
		heap_freetuple(tup);
		out[n].seq = DatumGetInt64(s->slot->tts_values[s->seq_att - 1]);
		out[n].message_type = s->slot->tts_isnull[s->type_att - 1] ? NULL :
			TextDatumGetCString(s->slot->tts_values[s->type_att - 1]);
		n++;
	}
	return n;
}

void
ep_channel_scan_end(EpMessageScan *s)
{
	ExecDropSingleTupleTableSlot(s->slot);
	index_endscan(s->iscan);
	UnregisterSnapshot(s->snap);
	index_close(s->idx, AccessShareLock);
	table_close(s->rel, AccessShareLock);
}

/* ---------------------------------------------------------------------
 * Initialization (from _PG_init)
 * ---------------------------------------------------------------------
 */
void
ep_channel_init(void)
{
	DefineCustomIntVariable("event_patterns.channel_retention",
							"How long messages of service channels are kept once every consumer has them.",
							"The producer removes a message this long after it was sent once every consumer's slot "
							"has confirmed it; a consumer removes a message this long after it was sent once every "
							"message handler of its channel has handled it. Parked messages are kept in ep.parked.",
							&ep_guc_channel_retention_s,
							3600, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	if (process_shared_preload_libraries_in_progress)
		ep_worker_register_step("channels", ep_channel_step);
}

/* ---------------------------------------------------------------------
 * The administrative API
 * ---------------------------------------------------------------------
 */

/*
 * ep.create_channel, grant_channel, revoke_channel, forward_events,
 * unforward_events, subscribe_channel, unsubscribe_channel, drop_channel:
 * each calls ep._<name>(caller, args...) as the extension owner, caller
 * being the role calling it (a SECURITY DEFINER function would see the
 * extension owner as CURRENT_USER). The internal functions decide what the
 * caller may do and are not executable by PUBLIC.
 */
PG_FUNCTION_INFO_V1(ep_channel_api);
Datum
ep_channel_api(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	HeapTuple	tup;
	Form_pg_proc proc;
	StringInfoData sql;
	Oid		   *types;
	Datum	   *args;
	char	   *nulls;
	int			nargs;
	int			i;
	EpSavedUser saved;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	if (proc->pronamespace != ep_catalog()->schema)
		elog(ERROR, "ep_channel_api() called from a function outside schema ep");
	nargs = proc->pronargs;
	types = palloc(sizeof(Oid) * (nargs + 1));
	args = palloc(sizeof(Datum) * (nargs + 1));
	nulls = palloc(nargs + 2);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT ep.%s($1",
					 quote_identifier(psprintf("_%s", NameStr(proc->proname))));
	types[0] = REGROLEOID;
	args[0] = ObjectIdGetDatum(caller);
	nulls[0] = ' ';
	for (i = 0; i < nargs; i++)
	{
		types[i + 1] = proc->proargtypes.values[i];
		args[i + 1] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i + 1] = PG_ARGISNULL(i) ? 'n' : ' ';
		appendStringInfo(&sql, ", $%d", i + 2);
	}
	nulls[nargs + 1] = '\0';
	appendStringInfoChar(&sql, ')');
	ReleaseSysCache(tup);

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(sql.data, nargs + 1, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed for \"%s\"", sql.data);
	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_VOID();
}
