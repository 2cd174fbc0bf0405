/*-------------------------------------------------------------------------
 *
 * defs.c
 *	  A per-backend cache of ep.channel_defs: which side of a channel this
 *	  database is, its owner, the roles granted send and read, and its
 *	  table. ep.send reads it for every message and a message handler for
 *	  every batch, so neither runs a query for it.
 *
 * Invariants:
 *	- The cache is the whole table (a database has few channels), read
 *	  under a fresh catalog snapshot: it shows what has committed, and
 *	  this transaction's own changes.
 *	- Every change to ep.channel_defs fires the statement trigger
 *	  ep._channel_defs_changed(), which sends a relcache invalidation of
 *	  the table: each backend drops its copy when it processes it (at
 *	  the next transaction, lock taken or ep_channel_defs_refresh()), and this
 *	  backend at its next command. An aborted change is undone the same
 *	  way (PostgreSQL replays the transaction's invalidations locally).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "../event_patterns.h"
#include "channel.h"

static MemoryContext defs_cxt = NULL;
static HTAB *defs = NULL;
static bool defs_valid = false;
static Oid	defs_relid = InvalidOid;
static bool defs_callback_registered = false;

static void
ep_channel_defs_relcache_cb(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == defs_relid)
		defs_valid = false;
}

/* A column of ep.channel_defs by name (columns may have moved in an upgrade) */
static AttrNumber
ep_channel_defs_att(TupleDesc desc, const char *name, Oid type)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
		{
			if (att->atttypid != type)
				break;
			return att->attnum;
		}
	}
	elog(ERROR, "ep.channel_defs has no column \"%s\" of type %s", name, format_type_be(type));
	return InvalidAttrNumber;	/* keep the compiler quiet */
}

/* The role OIDs of a regrole[] column, copied into the cache */
static Oid *
ep_channel_defs_roles(HeapTuple tup, TupleDesc desc, AttrNumber att, int *n)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, att, desc, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	int			count;
	Oid		   *roles;
	int			i;

	*n = 0;
	if (isnull)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(d), REGROLEOID, sizeof(Oid), true, TYPALIGN_INT,
					  &elems, &nulls, &count);
	roles = MemoryContextAlloc(defs_cxt, sizeof(Oid) * Max(count, 1));
	for (i = 0; i < count; i++)
		if (!nulls[i])
			roles[(*n)++] = DatumGetObjectId(elems[i]);
	return roles;
}

static void
ep_channel_defs_load(void)
{
	HASHCTL		ctl;
	HTAB	   *fresh;
	Snapshot	snap;
	Relation	rel;
	TupleDesc	desc;
	TableScanDesc scan;
	HeapTuple	tup;
	AttrNumber	a_channel,
				a_role,
				a_owner,
				a_partition,
				a_senders,
				a_readers;

	if (!defs_callback_registered)
	{
		ep_register_relcache_callback(ep_channel_defs_relcache_cb);
		defs_callback_registered = true;
	}
	defs_relid = get_relname_relid("channel_defs", ep_catalog()->schema);
	if (!OidIsValid(defs_relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("event_patterns has no channels in this database"),
				 errhint("Update the extension: ALTER EXTENSION event_patterns UPDATE.")));

	/*
	 * Built aside and published when complete: an error while loading
	 * leaves no cache, and the next use loads again.
	 */
	defs = NULL;
	if (defs_cxt == NULL)
		defs_cxt = AllocSetContextCreate(CacheMemoryContext, "event_patterns channels",
										 ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(defs_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(EpChannelDef);
	ctl.hcxt = defs_cxt;
	fresh = hash_create("event_patterns channels", 16, &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	/* an invalidation arriving while loading makes the next use load again */
	defs_valid = true;

	snap = RegisterSnapshot(GetCatalogSnapshot(defs_relid));
	rel = table_open(defs_relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	a_channel = ep_channel_defs_att(desc, "channel", TEXTOID);
	a_role = ep_channel_defs_att(desc, "role", TEXTOID);
	a_owner = ep_channel_defs_att(desc, "owner", REGROLEOID);
	a_partition = ep_channel_defs_att(desc, "partition", REGCLASSOID);
	a_senders = ep_channel_defs_att(desc, "senders", REGROLEARRAYOID);
	a_readers = ep_channel_defs_att(desc, "readers", REGROLEARRAYOID);
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		char	   *name = TextDatumGetCString(heap_getattr(tup, a_channel, desc, &isnull));
		char	   *role;
		EpChannelDef *d;
		bool		found;

		if (strlen(name) >= NAMEDATALEN)
			continue;			/* not a valid channel name: never looked up */
		d = hash_search(fresh, name, HASH_ENTER, &found);
		role = TextDatumGetCString(heap_getattr(tup, a_role, desc, &isnull));
		d->producer = (strcmp(role, "producer") == 0);
		pfree(name);
		pfree(role);
		d->owner = DatumGetObjectId(heap_getattr(tup, a_owner, desc, &isnull));
		d->partition = DatumGetObjectId(heap_getattr(tup, a_partition, desc, &isnull));
		d->senders = ep_channel_defs_roles(tup, desc, a_senders, &d->nsenders);
		d->readers = ep_channel_defs_roles(tup, desc, a_readers, &d->nreaders);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);
	defs = fresh;
}

static void
ep_channel_defs_ensure(void)
{
	if (!defs_valid || defs == NULL)
		ep_channel_defs_load();
}

/* The channel named so (len bytes, not terminated), or NULL */
const EpChannelDef *
ep_channel_def(const char *name, int len)
{
	char		key[NAMEDATALEN];

	if (len <= 0 || len >= NAMEDATALEN)
		return NULL;
	ep_channel_defs_ensure();
	memcpy(key, name, len);
	key[len] = '\0';
	return hash_search(defs, key, HASH_FIND, NULL);
}

/* The channel whose table is partition, or NULL */
const EpChannelDef *
ep_channel_def_by_partition(Oid partition)
{
	HASH_SEQ_STATUS seq;
	EpChannelDef *d;

	ep_channel_defs_ensure();
	hash_seq_init(&seq, defs);
	while ((d = hash_seq_search(&seq)) != NULL)
		if (d->partition == partition)
		{
			hash_seq_term(&seq);
			return d;
		}
	return NULL;
}

/* Process pending invalidations: the next lookup sees every committed change */
void
ep_channel_defs_refresh(void)
{
	AcceptInvalidationMessages();
}

/*
 * May role send on (send) or read and handle (!send) the channel: a member
 * of its owner or of the extension owner, or of a role granted that.
 */
bool
ep_channel_def_allows(const EpChannelDef *d, Oid role, bool send)
{
	const Oid  *grantees = send ? d->senders : d->readers;
	int			n = send ? d->nsenders : d->nreaders;
	int			i;

	if (is_member_of_role(role, d->owner) || is_member_of_role(role, ep_catalog()->owner))
		return true;
	for (i = 0; i < n; i++)
		if (is_member_of_role(role, grantees[i]))
			return true;
	return false;
}

/* ep._channel_defs_changed(): statement trigger on ep.channel_defs */
PG_FUNCTION_INFO_V1(ep_channel_defs_changed);
Datum
ep_channel_defs_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._channel_defs_changed() must be called as a trigger")));
	rel = trigdata->tg_relation;
	if (RelationGetNamespace(rel) != ep_catalog()->schema ||
		strcmp(RelationGetRelationName(rel), "channel_defs") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("ep._channel_defs_changed() fires only on ep.channel_defs")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(rel));
	defs_valid = false;
	return PointerGetDatum(NULL);
}
