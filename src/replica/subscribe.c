/*-------------------------------------------------------------------------
 *
 * subscribe.c
 *	  Native subscriptions with a publisher-side slot created beforehand,
 *	  usable between databases of the same cluster.
 *
 * Why: CREATE SUBSCRIPTION with create_slot = true asks the publisher's
 * walsender to create a logical slot, which waits for every transaction
 * that has an xid, including the one running CREATE SUBSCRIPTION when the
 * publisher is a database of the same cluster: it hangs.  Here the slot
 * is created first, through a separate replication connection
 * (libpqwalreceiver, as PostgreSQL's own subscription code does), while
 * the calling transaction has no xid yet; then CREATE SUBSCRIPTION ...
 * WITH (create_slot = false, slot_name = ...) runs in the caller's
 * transaction.  Dropping does ALTER SUBSCRIPTION ... DISABLE, SET
 * (slot_name = NONE), DROP SUBSCRIPTION (which then needs no connection
 * and may run in a transaction block), and drops the slot itself.
 *
 * Transactions.  Both functions may run inside a transaction block and
 * follow its fate:
 *	- ep_native_subscribe creates the slot at once (it is not
 *	  transactional); if the transaction (or the subtransaction that
 *	  called it) aborts, the slot is dropped again at abort.  With a
 *	  publisher in the same cluster the transaction must not have written
 *	  anything before the call (it has no xid yet), or the call is refused
 *	  with a hint: slot creation would wait for this very transaction.
 *	  Slot creation also waits for other transactions of the publisher's
 *	  cluster that have written and are still open.
 *	- ep_native_unsubscribe drops the subscription in the transaction; the
 *	  slot is dropped just before commit (XACT_EVENT_PRE_COMMIT), so an
 *	  aborted transaction keeps both.  An unreachable publisher or a slot
 *	  that cannot be dropped gives a WARNING naming it, not an error: a
 *	  dead publisher must not keep a subscriber from letting go.
 *	- PREPARE TRANSACTION is refused after either call.
 *
 * Who may call: the current user must be a superuser (see subscribe.h);
 * never from inside a security-restricted operation.  The slot functions
 * alone (ep_native_create_slot, ep_native_drop_slot_at_commit) check
 * nothing: their callers do (service channels create the subscription
 * themselves, after copying what the producer has).
 *
 * State: two backend-local lists in TopMemoryContext (slots created, slots
 * to drop), each entry tagged with the subtransaction that made it;
 * emptied at every top-level transaction end.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#include <sys/xattr.h>
#endif

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_subscription.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "replication/slot.h"
#include "replication/walreceiver.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "replica/subscribe.h"

#define EP_SUB_APPNAME "event_patterns"

typedef struct EpPendingSlot
{
	char	   *conninfo;
	char	   *slot;
	SubTransactionId subxid;	/* subtransaction that created/dropped it */
} EpPendingSlot;

static List *ep_created_slots = NIL;	/* drop these on abort */
static List *ep_dropped_slots = NIL;	/* drop these at pre-commit */
static bool ep_callbacks_registered = false;

static void ep_native_xact_callback(XactEvent event, void *arg);
static void ep_native_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
									   SubTransactionId parentSubid, void *arg);

static void
ep_native_check_caller(void)
{
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot manage a subscription inside a security-restricted operation")));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to create or drop a subscription"),
				 errdetail("A subscription is owned by its creator and connects wherever its connection string says.")));
}

static void
ep_native_load(void)
{
	load_file("libpqwalreceiver", false);
	if (WalReceiverFunctions == NULL)
		elog(ERROR, "libpqwalreceiver did not initialize");
}

static void
ep_native_register(void)
{
	if (ep_callbacks_registered)
		return;
	RegisterXactCallback(ep_native_xact_callback, NULL);
	RegisterSubXactCallback(ep_native_subxact_callback, NULL);
	ep_callbacks_registered = true;
}

static void
ep_native_remember(List **list, const char *conninfo, const char *slot)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	EpPendingSlot *p = palloc(sizeof(EpPendingSlot));

	p->conninfo = pstrdup(conninfo);
	p->slot = pstrdup(slot);
	p->subxid = GetCurrentSubTransactionId();
	*list = lappend(*list, p);
	MemoryContextSwitchTo(old);
	ep_native_register();
}

static void
ep_native_forget_all(List **list)
{
	ListCell   *lc;

	foreach(lc, *list)
	{
		EpPendingSlot *p = lfirst(lc);

		pfree(p->conninfo);
		pfree(p->slot);
		pfree(p);
	}
	list_free(*list);
	*list = NIL;
}

char *
ep_native_slot_name(const char *subname)
{
	struct
	{
		uint64		sysid;
		Oid			dbid;
	}			key;
	uint32		h;

	/*
	 * The slot lives on the publisher, where other subscriber databases
	 * (of this cluster or of others) may use the same subscription name:
	 * suffix a hash of this cluster and database.
	 */
	memset(&key, 0, sizeof(key));
	key.sysid = GetSystemIdentifier();
	key.dbid = MyDatabaseId;
	h = hash_bytes((const unsigned char *) &key, sizeof(key));
	return psprintf("%.*s_%08x", NAMEDATALEN - 1 - 9, subname, h);
}

/*
 * Drop a slot on the publisher through a replication connection.  Never
 * raises for remote trouble: returns false with *err set.  A slot that
 * does not exist counts as dropped.
 */
static bool
ep_native_drop_remote_slot(const char *conninfo, const char *slot, char **err)
{
	WalReceiverConn *conn;
	WalRcvExecResult *res;
	char	   *cmd;
	bool		ok;

	*err = NULL;
	conn = walrcv_connect(conninfo, true, EP_SUB_APPNAME, err);
	if (conn == NULL)
		return false;
	cmd = psprintf("DROP_REPLICATION_SLOT %s WAIT", quote_identifier(slot));
	res = walrcv_exec(conn, cmd, 0, NULL);
	ok = (res->status == WALRCV_OK_COMMAND ||
		  (res->status == WALRCV_ERROR && res->sqlstate == ERRCODE_UNDEFINED_OBJECT));
	if (!ok)
		*err = pstrdup(res->err ? res->err : "unknown error");
	walrcv_clear_result(res);
	walrcv_disconnect(conn);
	return ok;
}

/* ep_native_drop_remote_slot that turns local errors into a message too. */
static bool
ep_native_try_drop(const char *conninfo, const char *slot, char **err)
{
	volatile bool ok = false;
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		ep_native_load();
		ok = ep_native_drop_remote_slot(conninfo, slot, err);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		*err = edata->message;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Drop the slots of a list (or of one subtransaction); WARNING on failure. */
static void
ep_native_drop_list(List **list, bool only_subxid, SubTransactionId subxid,
					const char *why)
{
	ListCell   *lc;
	List	   *keep = NIL;

	foreach(lc, *list)
	{
		EpPendingSlot *p = lfirst(lc);
		char	   *err = NULL;
		bool		ok = false;

		if (only_subxid && p->subxid != subxid)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			keep = lappend(keep, p);
			MemoryContextSwitchTo(old);
			continue;
		}
		ok = ep_native_try_drop(p->conninfo, p->slot, &err);
		if (!ok)
			ereport(WARNING,
					(errmsg("could not drop replication slot \"%s\" on the publisher %s: %s",
							p->slot, why, err ? err : "unknown error"),
					 errhint("Drop it there with pg_drop_replication_slot('%s'), or it keeps WAL.",
							 p->slot)));
		pfree(p->conninfo);
		pfree(p->slot);
		pfree(p);
	}
	list_free(*list);
	*list = keep;
}

static void
ep_native_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (ep_dropped_slots != NIL)
				ep_native_drop_list(&ep_dropped_slots, false, InvalidSubTransactionId,
									"after dropping its subscription");
			break;
		case XACT_EVENT_COMMIT:
			ep_native_forget_all(&ep_created_slots);
			ep_native_forget_all(&ep_dropped_slots);
			break;
		case XACT_EVENT_ABORT:
			ep_native_forget_all(&ep_dropped_slots);
			if (ep_created_slots != NIL)
				ep_native_drop_list(&ep_created_slots, false, InvalidSubTransactionId,
									"after the transaction that created it aborted");
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (ep_created_slots != NIL || ep_dropped_slots != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that created or dropped a subscription with its slot")));
			break;
		default:
			break;
	}
}

static void
ep_native_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case SUBXACT_EVENT_COMMIT_SUB:
			foreach(lc, ep_created_slots)
			{
				EpPendingSlot *p = lfirst(lc);

				if (p->subxid == mySubid)
					p->subxid = parentSubid;
			}
			foreach(lc, ep_dropped_slots)
			{
				EpPendingSlot *p = lfirst(lc);

				if (p->subxid == mySubid)
					p->subxid = parentSubid;
			}
			break;
		case SUBXACT_EVENT_ABORT_SUB:
			{
				List	   *keep = NIL;

				foreach(lc, ep_dropped_slots)
				{
					EpPendingSlot *p = lfirst(lc);

					if (p->subxid == mySubid)
					{
						pfree(p->conninfo);
						pfree(p->slot);
						pfree(p);
					}
					else
					{
						MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

						keep = lappend(keep, p);
						MemoryContextSwitchTo(old);
					}
				}
				list_free(ep_dropped_slots);
				ep_dropped_slots = keep;
				if (ep_created_slots != NIL)
					ep_native_drop_list(&ep_created_slots, true, mySubid,
										"after the subtransaction that created it aborted");
			}
			break;
		default:
			break;
	}
}

static void
ep_native_spi(const char *sql)
{
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute(sql, false, 0);
	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "unexpected SPI result %d for \"%s\"", rc, sql);
	SPI_finish();
}

void
ep_native_create_slot(const char *conninfo, const char *slot)
{
	WalReceiverConn *conn;
	char	   *err = NULL;

	ep_native_load();
	walrcv_check_conninfo(conninfo);
	conn = walrcv_connect(conninfo, true, EP_SUB_APPNAME, &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to the publisher: %s", err)));
	PG_TRY();
	{
		TimeLineID	tli;
		char	   *sysid = walrcv_identify_system(conn, &tli);
		bool		same_cluster;

		same_cluster = (strtou64(sysid, NULL, 10) == GetSystemIdentifier());
		if (same_cluster && GetTopTransactionIdIfAny() != InvalidTransactionId)
			ereport(ERROR,
					(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
					 errmsg("cannot subscribe to a database of the same cluster in a transaction that has already written"),
					 errdetail("The replication slot is created first, and creating it waits for every transaction that has written, this one included."),
					 errhint("Call it at the start of its own transaction.")));
		walrcv_create_slot(conn, slot, false, false, CRS_NOEXPORT_SNAPSHOT, NULL);
	}
	PG_FINALLY();
	{
		walrcv_disconnect(conn);
	}
	PG_END_TRY();

	/* From here on an abort drops the slot again. */
	ep_native_remember(&ep_created_slots, conninfo, slot);
}

/* The options of conninfo as libpq parses them (ERROR on bad syntax) */
static PQconninfoOption *
ep_native_parse_conninfo(const char *conninfo)
{
	PQconninfoOption *opts;
	char	   *err = NULL;

	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL)
	{
		char	   *msg = pchomp(err ? err : "out of memory");

		PQfreemem(err);
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid connection string syntax: %s", msg)));
	}
	return opts;
}

/* Append keyword='value' to buf, quoted as libpq reads it */
static void
ep_native_append_option(StringInfo buf, const char *keyword, const char *value)
{
	const char *p;

	if (buf->len > 0)
		appendStringInfoChar(buf, ' ');
	appendStringInfo(buf, "%s='", keyword);
	for (p = value; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '\'');
}

/* Does this libpq know the keyword (some exist only with GSSAPI, SSL)? */
static bool
ep_native_libpq_knows(const char *keyword)
{
	PQconninfoOption *defs = PQconndefaults();
	PQconninfoOption *o;
	bool		known = false;

	for (o = defs; o != NULL && o->keyword != NULL; o++)
		if (strcmp(o->keyword, keyword) == 0)
			known = true;
	if (defs)
		PQconninfoFree(defs);
	return known;
}

/* One value, not a list (host, hostaddr and port take lists) */
static bool
ep_native_single(const char *value)
{
	return value == NULL || strchr(value, ',') == NULL;
}

/* A numeric IPv4 or IPv6 address: nothing for a name service to resolve */
static bool
ep_native_numeric_address(const char *value)
{
	const char *p;

	if (value == NULL || value[0] == '\0')
		return false;
	for (p = value; *p; p++)
		if (!(isxdigit((unsigned char) *p) || *p == '.' || *p == ':'))
			return false;
	return true;
}

/*
 * Connect with conninfo and wait for the connection while serving
 * interrupts (a cancel or a terminate ends the attempt). NULL with *err
 * set when it failed; the caller PQfinish()es a connection.
 */
static PGconn *
ep_native_test_connect(const char *conninfo, char **err)
{
	const char *keys[3] = {"dbname", "fallback_application_name", NULL};
	const char *vals[3] = {conninfo, EP_SUB_APPNAME, NULL};
	PGconn	   *volatile conn;
	volatile PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	*err = NULL;
	conn = PQconnectStartParams(keys, vals, true);
	if (conn == NULL)
	{
		*err = pstrdup("out of memory");
		return NULL;
	}
	PG_TRY();
	{
		while (PQstatus(conn) != CONNECTION_BAD &&
			   status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
		{
			int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
			int			rc;

			events |= (status == PGRES_POLLING_READING) ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
			rc = WaitLatchOrSocket(MyLatch, events, PQsocket(conn), -1L, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			status = PQconnectPoll(conn);
		}
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (PQstatus(conn) != CONNECTION_OK)
	{
		*err = pchomp(PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

#ifdef __linux__

/* lgetxattr found no such attribute, or the file system has none */
#define EP_NO_XATTR(e) ((e) == ENODATA || (e) == ENOTSUP || (e) == EOPNOTSUPP)

/*
 * Does the directory path carry a POSIX ACL that may let others write to
 * it, now (an access ACL: with one, the group permission bits are the
 * ACL's mask, and without a write bit in it no entry can write) or in a
 * directory made in it later (a default ACL with any entry but the
 * owner's that grants writing)?
 */
static bool
ep_native_acl_may_write(const char *path, const struct stat *st)
{
	/* the extended attribute: a 4-byte header, then 8-byte entries */
	unsigned char buf[4 + 8 * 64];
	ssize_t		n = lgetxattr(path, "system.posix_acl_access", NULL, 0);
	ssize_t		off;

	if (n >= 0 ? (st->st_mode & S_IWGRP) != 0 : !EP_NO_XATTR(errno))
		return true;
	n = lgetxattr(path, "system.posix_acl_default", buf, sizeof(buf));
	if (n < 0)
		return !EP_NO_XATTR(errno);
	if (n < 4 || (n - 4) % 8 != 0)
		return true;
	for (off = 4; off < n; off += 8)
	{
		uint16		tag = (uint16) (buf[off] | (buf[off + 1] << 8));
		uint16		perm = (uint16) (buf[off + 2] | (buf[off + 3] << 8));

		/* ACL_USER_OBJ is 0x01, the write permission 0x02 */
		if (tag != 0x01 && (perm & 0x02))
			return true;
	}
	return false;
}

/*
 * Is the path on a file system whose owners and modes a user can make up
 * (FUSE) or that another machine serves (NFS, SMB, CIFS, Ceph, AFS, 9P,
 * Coda, NCP)?
 */
static bool
ep_native_foreign_fs(const char *path)
{
	static const unsigned long foreign[] = {
		0x65735546,				/* FUSE */
		0x6969,					/* NFS */
		0xFF534D42,				/* CIFS */
		0xFE534D42,				/* SMB2 */
		0x517B,					/* SMB */
		0x00C36400,				/* Ceph */
		0x5346414F,				/* AFS */
		0x6B414653,				/* kAFS */
		0x01021997,				/* 9P */
		0x73757245,				/* Coda */
		0x564C,					/* NCP */
	};
	struct statfs fs;
	int			i;

	if (statfs(path, &fs) != 0)
		return true;
	for (i = 0; i < lengthof(foreign); i++)
		if ((unsigned long) fs.f_type == foreign[i])
			return true;
	return false;
}

#else							/* no ACLs or file system types to ask for */
#define ep_native_acl_may_write(path, st) false
#define ep_native_foreign_fs(path) false
#endif

/*
 * Is the directory path owned by root or the server's OS user and writable
 * by nobody else: not by other users (sticky or not: a directory under /tmp
 * that goes away can be made again by anyone), not by a group other than
 * root's or the server's, not through an ACL, on a local file system?
 */
static bool
ep_native_dir_safe(const char *path)
{
	struct stat st;

	if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) ||
		(st.st_uid != 0 && st.st_uid != geteuid()))
		return false;
	if ((st.st_mode & S_IWGRP) && st.st_gid != 0 && st.st_gid != getegid())
		return false;
	if (st.st_mode & S_IWOTH)
		return false;
	if (ep_native_foreign_fs(path))
		return false;
	return !ep_native_acl_may_write(path, &st);
}

/*
 * May a later connection to the socket directory dir reach only a server
 * that the server's own OS user (or root) put there? Every directory on
 * the resolved path, from the root down, is safe. Returns the resolved
 * path, or NULL.
 */
static char *
ep_native_trusted_socket_dir(const char *dir)
{
	char		resolved[MAXPGPATH];
	char		prefix[MAXPGPATH];
	char	   *real;
	char	   *slash;

	if (dir[0] != '/')
		return NULL;
	real = realpath(dir, NULL);
	if (real == NULL)
		return NULL;
	if (strlen(real) >= MAXPGPATH)
	{
		free(real);
		return NULL;
	}
	strcpy(resolved, real);
	free(real);
	if (!ep_native_dir_safe("/"))
		return NULL;
	for (slash = strchr(resolved + 1, '/');; slash = strchr(slash + 1, '/'))
	{
		size_t		len = slash ? (size_t) (slash - resolved) : strlen(resolved);

		if (len <= 1)
			break;				/* the root, checked above */
		memcpy(prefix, resolved, len);
		prefix[len] = '\0';
		if (!ep_native_dir_safe(prefix))
			return NULL;
		if (slash == NULL)
			break;
	}
	return pstrdup(resolved);
}

char *
ep_native_caller_conninfo(Oid caller, const char *conninfo)
{
	/*
	 * What a caller may give: nothing that names a file, a service or a
	 * credential of the server's OS user (options this libpq does not
	 * list are refused too, whatever a newer one may add), and no
	 * application_name: the subscription is named after itself, so that
	 * it cannot pose as a synchronous standby the producer waits for.
	 */
	static const char *const allowed[] = {
		"host", "hostaddr", "port", "dbname", "user", "password",
		"options", "connect_timeout", "client_encoding",
		"sslmode", "sslcompression", "sslsni", "ssl_min_protocol_version",
		"ssl_max_protocol_version", "channel_binding", "require_auth", "requirepeer",
		"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "target_session_attrs", "load_balance_hosts", NULL
	};
	PQconninfoOption *opts;
	PQconninfoOption *o;
	const char *password = NULL;
	const char *host = NULL;
	const char *hostaddr = NULL;
	const char *port = NULL;
	char	   *socket_dir = NULL;
	bool		has_timeout = false;
	StringInfoData buf;
	PGconn	   *conn;
	char	   *err;
	bool		used;
	int			i;

	opts = ep_native_parse_conninfo(conninfo);
	if (superuser_arg(caller))
	{
		PQconninfoFree(opts);
		return pstrdup(conninfo);
	}

	for (o = opts; o->keyword != NULL; o++)
	{
		if (o->val == NULL)
			continue;
		for (i = 0; allowed[i] != NULL; i++)
			if (strcmp(o->keyword, allowed[i]) == 0)
				break;
		if (allowed[i] == NULL)
		{
			char	   *keyword = pstrdup(o->keyword);

			PQconninfoFree(opts);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("connection option \"%s\" may be given only by a superuser", keyword),
					 errdetail("A role that is not a superuser may give no option that names a file, service or credential of the server's operating system user, nor application_name (the subscription's name stays its own).")));
		}
		if (strcmp(o->keyword, "password") == 0)
			password = o->val;
		else if (strcmp(o->keyword, "host") == 0 && o->val[0] != '\0')
			host = o->val;
		else if (strcmp(o->keyword, "hostaddr") == 0 && o->val[0] != '\0')
			hostaddr = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "connect_timeout") == 0)
			has_timeout = true;
	}

	if (password == NULL || password[0] == '\0')
	{
		PQconninfoFree(opts);
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("A role that is not a superuser must give a password in the connection string."),
				 errhint("Add password=... for a role of the producer, or ask a superuser to subscribe.")));
	}

	/*
	 * Every later connection (the subscription's, the extension's) must
	 * reach the server that asked for the password: one server, named
	 * here (not by the server's environment), by a numeric address or a
	 * socket directory nobody else can write to, not a name to resolve
	 * again.
	 */
	if (hostaddr == NULL && host != NULL && host[0] == '/' && ep_native_single(host))
		socket_dir = ep_native_trusted_socket_dir(host);
	if ((host == NULL && hostaddr == NULL) ||
		!ep_native_single(host) || !ep_native_single(hostaddr) || !ep_native_single(port) ||
		(hostaddr == NULL && socket_dir == NULL) ||
		(hostaddr != NULL && !ep_native_numeric_address(hostaddr)))
	{
		PQconninfoFree(opts);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a role that is not a superuser must name one producer server by numeric address or trusted socket directory"),
				 errdetail("A host name, a list of hosts or ports, a default from the server's environment or a socket directory others can write to could lead a later connection to another server than the one that checked the password."),
				 errhint("Use hostaddr=<IP address> (host= may stay for TLS verification), or host=<socket directory> owned by root or the server's user and writable by nobody else.")));
	}

	/* the options as given, the socket directory as resolved */
	initStringInfo(&buf);
	for (o = opts; o->keyword != NULL; o++)
		if (o->val != NULL)
			ep_native_append_option(&buf, o->keyword,
									(socket_dir != NULL && strcmp(o->keyword, "host") == 0) ? socket_dir : o->val);
	PQconninfoFree(opts);

	/* and lend no credential of the server's OS user on the way */
	ep_native_append_option(&buf, "passfile", "/nonexistent/event_patterns");
	if (ep_native_libpq_knows("sslcert"))
	{
		ep_native_append_option(&buf, "sslcert", "/nonexistent/event_patterns");
		ep_native_append_option(&buf, "sslkey", "/nonexistent/event_patterns");
	}
	if (ep_native_libpq_knows("gssencmode"))
		ep_native_append_option(&buf, "gssencmode", "disable");
	if (ep_native_libpq_knows("krbsrvname"))
		ep_native_append_option(&buf, "krbsrvname", "event_patterns_no_kerberos");
	if (!has_timeout)
		ep_native_append_option(&buf, "connect_timeout", "30");

	/* the producer must ask for the password: a test connection finds out */
	conn = ep_native_test_connect(buf.data, &err);
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
				 errmsg("could not connect to the producer: %s", err)));
	used = PQconnectionUsedPassword(conn);
	PQfinish(conn);
	if (!used)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("The producer did not ask for the password: a role that is not a superuser may connect only with a password that is checked."),
				 errhint("The producer's pg_hba.conf must require password authentication for this connection.")));
	return buf.data;
}

char *
ep_native_conninfo_shown(const char *conninfo)
{
	PQconninfoOption *opts;
	PQconninfoOption *o;
	StringInfoData buf;

	opts = ep_native_parse_conninfo(conninfo);
	initStringInfo(&buf);
	for (o = opts; o->keyword != NULL; o++)
		if (o->val != NULL && strcmp(o->keyword, "password") != 0 &&
			strcmp(o->keyword, "sslpassword") != 0)
			ep_native_append_option(&buf, o->keyword, o->val);
	PQconninfoFree(opts);
	return buf.data;
}

void
ep_native_drop_slot_at_commit(const char *conninfo, const char *slot)
{
	ep_native_remember(&ep_dropped_slots, conninfo, slot);
}

void
ep_native_subscribe(const char *subname, const char *conninfo,
					const char *publication, bool copy_data,
					bool binary, const char *origin_option)
{
	char	   *slot;
	StringInfoData cmd;
	const char *p;

	ep_native_check_caller();

	if (subname == NULL || subname[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("subscription name must not be empty")));
	for (p = subname; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid subscription name \"%s\"", subname),
					 errdetail("The name also names a replication slot: only lower-case letters, digits and underscores.")));
	if (strlen(subname) > NAMEDATALEN - 1 - 9)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("subscription name \"%s\" is too long", subname),
				 errdetail("At most %d characters.", NAMEDATALEN - 1 - 9)));
	if (conninfo == NULL || publication == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("connection string and publication must not be NULL")));
	if (origin_option != NULL && pg_strcasecmp(origin_option, "any") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("subscription origin \"%s\" is not supported on PostgreSQL 15", origin_option),
				 errdetail("PostgreSQL 15 applies changes of every origin (origin = any).")));
	if (OidIsValid(get_subscription_oid(subname, true)))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("subscription \"%s\" already exists", subname)));

	slot = ep_native_slot_name(subname);
	ep_native_create_slot(conninfo, slot);

	initStringInfo(&cmd);
	appendStringInfo(&cmd,
					 "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s "
					 "WITH (create_slot = false, slot_name = %s, copy_data = %s, binary = %s, enabled = true)",
					 quote_identifier(subname), quote_literal_cstr(conninfo),
					 quote_identifier(publication), quote_literal_cstr(slot),
					 copy_data ? "true" : "false", binary ? "true" : "false");
	ep_native_spi(cmd.data);
}

bool
ep_native_unsubscribe(const char *subname, bool missing_ok)
{
	Oid			subid;
	Subscription *sub;
	char	   *conninfo;
	char	   *slot = NULL;
	const char *qname;

	ep_native_check_caller();

	subid = get_subscription_oid(subname, missing_ok);
	if (!OidIsValid(subid))
		return false;
	sub = GetSubscription(subid, false);
	conninfo = pstrdup(sub->conninfo);
	if (sub->slotname)
		slot = pstrdup(sub->slotname);

	qname = quote_identifier(subname);
	if (slot != NULL)
	{
		ep_native_spi(psprintf("ALTER SUBSCRIPTION %s DISABLE", qname));
		ep_native_spi(psprintf("ALTER SUBSCRIPTION %s SET (slot_name = NONE)", qname));
	}
	ep_native_spi(psprintf("DROP SUBSCRIPTION %s", qname));
	if (slot != NULL)
		ep_native_drop_slot_at_commit(conninfo, slot);
	return true;
}
