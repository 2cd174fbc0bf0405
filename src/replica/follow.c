/*-------------------------------------------------------------------------
 *
 * follow.c
 *	  ep.follow_store / ep.unfollow_store: a read node follows a writer's
 *	  published store through a native subscription (subscribe.c).
 *
 * follow_store, in this order (the slot must be created while the
 * transaction has no xid, see subscribe.c):
 *	1. checks, read-only: superuser (subscribe.c checks it too), not
 *	   following already, not publishing, an empty local store (the copy
 *	   arrives with the subscription's initial copy);
 *	2. the writer's connection string without its password, for messages
 *	   (a separate replication connection that also proves it reachable);
 *	3. ep_native_subscribe: slot on the writer, then CREATE SUBSCRIPTION
 *	   with copy_data and binary (writer and reader have the same types:
 *	   the send/receive formats cost the writer's walsender and the
 *	   reader's apply worker less than text, e.g. for timestamptz);
 *	4. the local horizon row is removed (the writer's arrives with the
 *	   copy), ep.store_follow gets its row, and every backend forgets its
 *	   reader cache at commit (relcache invalidation of ep.store_follow).
 * If anything fails afterwards the transaction aborts and the slot is
 * dropped again (subscribe.c).
 *
 * unfollow_store drops the subscription and its slot, removes the row and
 * moves the local position sequence past the copied events: the copy
 * stays, as a store of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_subscription.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "replication/walreceiver.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "event_patterns.h"
#include "owner.h"
#include "replica/replica.h"
#include "replica/subscribe.h"

static bool
ep_follow_exists(const char *sql)
{
	bool		found;

	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", sql);
	found = SPI_processed > 0;
	return found;
}

/*
 * Keep host, hostaddr, port, dbname and user of a connection string as
 * PostgreSQL shows it (never a password; values are not quoted there).
 */
static char *
ep_follow_short(const char *shown)
{
	static const char *const keep[] = {"host=", "hostaddr=", "port=", "dbname=", "user="};
	StringInfoData buf;
	char	   *copy;
	char	   *tok;
	char	   *save = NULL;

	if (shown == NULL)
		return pstrdup("(unknown)");
	initStringInfo(&buf);
	copy = pstrdup(shown);
	for (tok = strtok_r(copy, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save))
	{
		int			i;

		for (i = 0; i < lengthof(keep); i++)
			if (strncmp(tok, keep[i], strlen(keep[i])) == 0)
			{
				appendStringInfo(&buf, "%s%s", buf.len > 0 ? " " : "", tok);
				break;
			}
	}
	return buf.len > 0 ? buf.data : pstrdup("(unknown)");
}

/* The writer's connection string as PostgreSQL shows it: no password. */
static char *
ep_follow_source(const char *conninfo)
{
	WalReceiverConn *conn;
	char	   *err = NULL;
	char	   *shown;

	load_file("libpqwalreceiver", false);
	walrcv_check_conninfo(conninfo);
	conn = walrcv_connect(conninfo, true, "event_patterns", &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the writer: %s", err)));
	shown = walrcv_get_conninfo(conn);
	walrcv_disconnect(conn);
	return ep_follow_short(shown);
}

static void
ep_follow_invalidate(void)
{
	Oid			relid = get_relname_relid("store_follow", ep_catalog()->schema);

	if (OidIsValid(relid))
		CacheInvalidateRelcacheByRelid(relid);
	ep_replica_forget();
}

PG_FUNCTION_INFO_V1(ep_follow_store);
Datum
ep_follow_store(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *conninfo;
	char	   *publication;
	char	   *source;
	EpSavedUser saved;
	const EpCatalog *cat;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, conninfo and publication must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	conninfo = text_to_cstring(PG_GETARG_TEXT_PP(1));
	publication = pstrdup(NameStr(*PG_GETARG_NAME(2)));
	cat = ep_catalog();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to follow a store"),
				 errdetail("Following creates a subscription, which connects wherever its connection string says.")));

	/* 1. read-only checks (this transaction must not get an xid yet) */
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (ep_follow_exists("SELECT FROM ep.store_follow"))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("this database already follows a store"),
				 errhint("Call ep.unfollow_store() first.")));
	if (ep_follow_exists("SELECT FROM ep.store_publications"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this database publishes its store and cannot follow another one"),
				 errhint("Drop its publications with ep.unpublish_store() first.")));
	if (ep_follow_exists("SELECT FROM ep.events LIMIT 1") ||
		ep_follow_exists("SELECT FROM ep.streams LIMIT 1"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the store of this database is not empty"),
				 errdetail("A reader's store is a copy of the writer's; it starts empty."),
				 errhint("Follow from a database whose ep.events and ep.streams are empty.")));
	SPI_finish();
	ep_restore_user(&saved);

	/* 2. and 3. */
	source = ep_follow_source(conninfo);
	ep_native_subscribe(name, conninfo, publication, true, true, NULL);

	/* 4. */
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[4] = {TEXTOID, NAMEOID, NAMEOID, TEXTOID};
		Datum		args[4];

		args[0] = CStringGetTextDatum(name);
		args[1] = DirectFunctionCall1(namein, CStringGetDatum(name));
		args[2] = DirectFunctionCall1(namein, CStringGetDatum(publication));
		args[3] = CStringGetTextDatum(source);
		if (SPI_execute("DELETE FROM ep.store_horizon", false, 0) != SPI_OK_DELETE ||
			SPI_execute_with_args("INSERT INTO ep.store_follow (name, subscription, publication, source)"
								  " VALUES ($1, $2, $3, $4)", 4, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record the followed store");
	}
	SPI_finish();
	ep_restore_user(&saved);
	(void) cat;
	ep_follow_invalidate();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(ep_unfollow_store);
Datum
ep_unfollow_store(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *subscription = NULL;
	EpSavedUser saved;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	(void) ep_catalog();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to unfollow a store")));

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1];

		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT subscription::pg_catalog.text FROM ep.store_follow"
								  " WHERE name OPERATOR(pg_catalog.=) $1",
								  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("this database does not follow a store named \"%s\"", name)));
		subscription = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		subscription = MemoryContextStrdup(TopTransactionContext, subscription);
	}
	SPI_finish();
	ep_restore_user(&saved);

	/* as the caller: the primitive checks who may drop subscriptions */
	(void) ep_native_unsubscribe(subscription, true);

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1];

		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("DELETE FROM ep.store_follow WHERE name OPERATOR(pg_catalog.=) $1",
								  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not forget the followed store");
		/* the copy becomes a store of its own: positions continue after it */
		if (SPI_execute("SELECT pg_catalog.setval('ep.events_global_position_seq'::pg_catalog.regclass,"
						" m.p, true) FROM (SELECT pg_catalog.max(global_position) AS p FROM ep.events) m"
						" WHERE m.p IS NOT NULL", false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not move the position sequence");
	}
	SPI_finish();
	ep_restore_user(&saved);
	ep_follow_invalidate();
	PG_RETURN_VOID();
}

/*
 * ep.resync_store(name): start the copy again, after the writer lost or
 * dropped this reader's slot (wal_status "lost" under
 * max_slot_wal_keep_size, or dropped by hand).  A new subscription (named
 * name or name_resync, alternately) and its slot are created first, while
 * this transaction has no xid (subscribe.c), then the old one is dropped
 * and the local copy emptied; the writer's store arrives again with the new
 * subscription's initial copy.  Positions are the writer's, so projections
 * on this reader keep their progress: what they applied is not applied
 * again, and global reads return nothing new until the copy is complete.
 */
PG_FUNCTION_INFO_V1(ep_resync_store);
Datum
ep_resync_store(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *oldsub;
	char	   *newsub;
	char	   *publication;
	char	   *conninfo;
	Oid			subid;
	Subscription *sub;
	EpSavedUser saved;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	(void) ep_catalog();
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to re-sync a store")));

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[1] = {TEXTOID};
		Datum		args[1];

		args[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT subscription::pg_catalog.text, publication::pg_catalog.text"
								  " FROM ep.store_follow WHERE name OPERATOR(pg_catalog.=) $1",
								  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "SPI_execute failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("this database does not follow a store named \"%s\"", name)));
		oldsub = MemoryContextStrdup(TopTransactionContext,
									 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		publication = MemoryContextStrdup(TopTransactionContext,
										  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	}
	SPI_finish();
	ep_restore_user(&saved);

	subid = get_subscription_oid(oldsub, true);
	if (!OidIsValid(subid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" of the followed store does not exist", oldsub),
				 errhint("Call ep.unfollow_store() and ep.follow_store() again.")));
	sub = GetSubscription(subid, false);
	conninfo = pstrdup(sub->conninfo);
	newsub = strcmp(oldsub, name) == 0 ? psprintf("%s_resync", name) : pstrdup(name);

	/* the new slot first: this transaction has written nothing yet */
	ep_native_subscribe(newsub, conninfo, publication, true, true, NULL);
	(void) ep_native_unsubscribe(oldsub, true);

	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[2] = {NAMEOID, TEXTOID};
		Datum		args[2];

		args[0] = DirectFunctionCall1(namein, CStringGetDatum(newsub));
		args[1] = CStringGetTextDatum(name);
		/* the immutability trigger lets the extension's own writes through */
		ep_internal_writes++;
		if (SPI_execute("TRUNCATE ep.events, ep.streams, ep.redactions", false, 0) != SPI_OK_UTILITY ||
			SPI_execute("DELETE FROM ep.store_horizon", false, 0) != SPI_OK_DELETE ||
			SPI_execute_with_args("UPDATE ep.store_follow SET subscription = $1"
								  " WHERE name OPERATOR(pg_catalog.=) $2",
								  2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not empty the copy");
		ep_internal_writes--;
	}
	SPI_finish();
	ep_restore_user(&saved);
	ep_follow_invalidate();
	PG_RETURN_VOID();
}
