/*-------------------------------------------------------------------------
 *
 * owner.c
 *	  The trust boundary: every call into code that somebody other than the
 *	  current user owns goes through ep_owner_enter/ep_owner_leave.
 *
 * A call into owner code
 *	- switches to the owner with SECURITY_LOCAL_USERID_CHANGE |
 *	  SECURITY_RESTRICTED_OPERATION: the code cannot SET ROLE, create
 *	  temporary objects, or leave anything behind that outlives the call
 *	  (PostgreSQL's own rule for index expressions and REFRESH);
 *	- opens a GUC nest level with search_path set to the path recorded when
 *	  the object was created, stripped of pg_temp and with pg_temp appended
 *	  last, so that nothing in the caller's temporary schema shadows a name
 *	  the owner wrote; on leaving, AtEOXact_GUC(false) rolls back every
 *	  setting the code made (SET, SET LOCAL, set_config(..., false));
 *	- arms the time limit event_patterns.handler_timeout (or the object's
 *	  own) unless an enclosing call already did; when it expires the code is
 *	  cancelled like a statement (SQLSTATE 57014) and the error says which
 *	  limit was reached.
 * On an error the enclosing (sub)transaction abort restores the user id and
 * the GUC level (xact.c and guc.c do that for every nest level above the
 * aborted one); the abort callbacks below disarm the time limit.
 *
 * The extension's own statements (ep_become_owner) run as the extension
 * owner in a security-restricted operation too; they contain no user code
 * and qualify every name, so the caller's search_path cannot change what
 * they mean.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "event_patterns.h"
#include "launcher.h"
#include "owner.h"
#include "shmem.h"

int			ep_guc_handler_timeout_ms = 30000;

static TimeoutId timeout_id = MAX_TIMEOUTS;
static TimeoutId escalate_id = MAX_TIMEOUTS;
static bool timeout_registered = false;
static volatile sig_atomic_t timeout_fired = false;
static bool timed_out = false;	/* the last cancel came from our limit */
static bool timer_armed = false;
static SubTransactionId armed_subxid = InvalidSubTransactionId;
static int	armed_ms = 0;
static int	call_depth = 0;
static volatile sig_atomic_t escalated = false;

/* ---------------------------------------------------------------------
 * Strikes: owner code that ignored its time limit in a database's worker
 * ends that worker (see EP_OWNER_GRACE_MS). The worker's successor would
 * run the same call again and be ended again, for ever, holding back
 * every other role's projections, views and sagas. So the dying worker
 * records a strike against the call (database, owner, what, name) in
 * shared memory; after EP_OWNER_MAX_STRIKES strikes the worker refuses
 * that call (an error its caller handles as any failure: the event is
 * parked, the view records last_error, the step fails) until
 * EP_OWNER_STRIKE_TTL has passed since the last strike, or the server
 * restarts. Sessions are not concerned: there the code ends only its own
 * connection.
 * ---------------------------------------------------------------------
 */
#define EP_OWNER_STRIKE_SLOTS	64
#define EP_OWNER_MAX_STRIKES	2
#define EP_OWNER_STRIKE_TTL_MS	(10 * 60 * 1000)

typedef struct EpStrike
{
	Oid			dbid;			/* InvalidOid: free */
	Oid			owner;
	int			strikes;
	TimestampTz last;
	char		what[NAMEDATALEN];
	char		name[2 * NAMEDATALEN];
} EpStrike;

typedef struct EpStrikes
{
	slock_t		mutex;
	pg_atomic_uint32 used;		/* slots ever taken: 0 = nothing to check */
	EpStrike	slot[EP_OWNER_STRIKE_SLOTS];
} EpStrikes;

static EpStrikes *strikes = NULL;

/* the worker's outermost timed call, for the exit callback */
static bool cur_active = false;
static Oid	cur_owner = InvalidOid;
static char cur_what[NAMEDATALEN];
static char cur_name[2 * NAMEDATALEN];
static bool exit_registered = false;

Size
ep_owner_shmem_size(void)
{
	return sizeof(EpStrikes);
}

void
ep_owner_shmem_init(void)
{
	bool		found;

	strikes = ShmemInitStruct("event_patterns owner strikes", sizeof(EpStrikes), &found);
	if (!found)
	{
		memset(strikes, 0, sizeof(EpStrikes));
		SpinLockInit(&strikes->mutex);
		pg_atomic_init_u32(&strikes->used, 0);
	}
}

static bool
ep_strike_matches(const EpStrike *st, Oid owner, const char *what, const char *name)
{
	return st->dbid == MyDatabaseId && st->owner == owner &&
		strcmp(st->what, what) == 0 && strcmp(st->name, name) == 0;
}

/* Exit callback of a worker: it is dying in the middle of a timed call. */
static void
ep_owner_exit_callback(int code, Datum arg)
{
	TimestampTz now = GetCurrentTimestamp();
	EpStrike   *free_slot = NULL;
	EpStrike   *oldest = NULL;
	int			i;

	if (!escalated || !cur_active || strikes == NULL)
		return;
	SpinLockAcquire(&strikes->mutex);
	for (i = 0; i < EP_OWNER_STRIKE_SLOTS; i++)
	{
		EpStrike   *st = &strikes->slot[i];

		if (OidIsValid(st->dbid) && ep_strike_matches(st, cur_owner, cur_what, cur_name))
		{
			if (TimestampDifferenceExceeds(st->last, now, EP_OWNER_STRIKE_TTL_MS))
				st->strikes = 0;
			st->strikes++;
			st->last = now;
			SpinLockRelease(&strikes->mutex);
			return;
		}
		if (!OidIsValid(st->dbid) && free_slot == NULL)
			free_slot = st;
		if (oldest == NULL || st->last < oldest->last)
			oldest = st;
	}
	if (free_slot == NULL)
		free_slot = oldest;
	free_slot->dbid = MyDatabaseId;
	free_slot->owner = cur_owner;
	free_slot->strikes = 1;
	free_slot->last = now;
	strlcpy(free_slot->what, cur_what, sizeof(free_slot->what));
	strlcpy(free_slot->name, cur_name, sizeof(free_slot->name));
	SpinLockRelease(&strikes->mutex);
	pg_atomic_write_u32(&strikes->used, 1);
}

/* In the worker: refuse a call that ended the worker too often lately. */
static void
ep_owner_check_strikes(Oid owner, const char *what, const char *name)
{
	TimestampTz now;
	int			count = 0;
	int			i;

	if (strikes == NULL || pg_atomic_read_u32(&strikes->used) == 0)
		return;
	now = GetCurrentTimestamp();
	SpinLockAcquire(&strikes->mutex);
	for (i = 0; i < EP_OWNER_STRIKE_SLOTS; i++)
	{
		EpStrike   *st = &strikes->slot[i];

		if (OidIsValid(st->dbid) && ep_strike_matches(st, owner, what, name) &&
			!TimestampDifferenceExceeds(st->last, now, EP_OWNER_STRIKE_TTL_MS))
		{
			count = st->strikes;
			break;
		}
	}
	SpinLockRelease(&strikes->mutex);
	if (count >= EP_OWNER_MAX_STRIKES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the %s%s%s%s is not run by the worker for now: its code ignored its time limit and ended the worker %d times",
						what, *name ? " \"" : "", name, *name ? "\"" : "", count),
				 errdetail("Code that catches the cancel of its time limit is ended with the process running it; the database's other projections, views and sagas waited meanwhile."),
				 errhint("Fix the code; the worker tries it again %d minutes after the last time it was ended, or after a server restart.",
						 EP_OWNER_STRIKE_TTL_MS / 60000)));
}

/* ---------------------------------------------------------------------
 * The extension's own statements
 * ---------------------------------------------------------------------
 */
void
ep_become_owner(EpSavedUser *saved)
{
	const EpCatalog *cat = ep_catalog();

	GetUserIdAndSecContext(&saved->userid, &saved->sec_context);
	SetUserIdAndSecContext(cat->owner,
						   saved->sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

void
ep_restore_user(const EpSavedUser *saved)
{
	SetUserIdAndSecContext(saved->userid, saved->sec_context);
}

/* ---------------------------------------------------------------------
 * Time limit
 * ---------------------------------------------------------------------
 */
static void
ep_owner_timeout_handler(void)
{
	timeout_fired = true;
	/* cancel the running code as a statement timeout would */
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Owner code that catches the cancel (an EXCEPTION WHEN query_canceled
 * block in a loop) would run on for ever: EP_OWNER_GRACE_MS after its time
 * limit, the process is terminated as by pg_terminate_backend. In the
 * worker that costs a restart; in a session, its connection.
 */
#define EP_OWNER_GRACE_MS	2000

static void
ep_owner_escalate_handler(void)
{
	escalated = true;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

static void
ep_owner_disarm(void)
{
	if (timer_armed)
	{
		DisableTimeoutParams p[2];

		p[0].id = timeout_id;
		p[0].keep_indicator = false;
		p[1].id = escalate_id;
		p[1].keep_indicator = false;
		disable_timeouts(p, 2);
		timer_armed = false;
		armed_subxid = InvalidSubTransactionId;
		cur_active = false;
	}
}

static void
ep_owner_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			ep_owner_disarm();
			call_depth = 0;
			break;
		default:
			break;
	}
}

static void
ep_owner_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && timer_armed && armed_subxid == mySubid)
	{
		ep_owner_disarm();
		call_depth = 0;
	}
}

bool
ep_owner_timed_out(void)
{
	bool		r = timed_out || timeout_fired;

	timed_out = false;
	timeout_fired = false;
	return r;
}

/* ---------------------------------------------------------------------
 * Calls into owner code
 * ---------------------------------------------------------------------
 */

/* Error context: which owner code was running, and why it was cancelled. */
static void
ep_owner_error_context(void *arg)
{
	EpOwnerCall *call = (EpOwnerCall *) arg;

	if (timeout_fired)
	{
		timed_out = true;
		errcontext("%s%s%s%s exceeded its time limit of %d ms (event_patterns.handler_timeout)",
				   call->what ? call->what : "owner code",
				   call->name ? " \"" : "", call->name ? call->name : "",
				   call->name ? "\"" : "", armed_ms);
	}
}

/*
 * The search_path owner code runs with: the recorded path without any
 * temporary schema, then pg_temp, so the caller's temporary objects come
 * after everything the owner named (they are never searched for functions
 * and operators).
 */
static char *
ep_owner_sanitize_path_uncached(const char *path)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	StringInfoData buf;

	if (path == NULL || path[0] == '\0')
		return pstrdup("pg_catalog, pg_temp");
	copy = pstrdup(path);
	if (!SplitIdentifierString(copy, ',', &names))
		return pstrdup("pg_catalog, pg_temp");
	initStringInfo(&buf);
	foreach(lc, names)
	{
		const char *n = (const char *) lfirst(lc);

		if (strcmp(n, "pg_temp") == 0 || strncmp(n, "pg_temp_", 8) == 0)
			continue;
		appendStringInfo(&buf, "%s, ", quote_identifier(n));
	}
	appendStringInfoString(&buf, "pg_temp");
	return buf.data;
}

/* The same, remembering the last answer (calls come in runs of one object). */
static const char *
ep_owner_sanitize_path(const char *path)
{
	static char *last_in = NULL;
	static char *last_out = NULL;
	char	   *out;

	if (path == NULL)
		path = "";
	if (last_in != NULL && strcmp(last_in, path) == 0)
		return last_out;
	out = ep_owner_sanitize_path_uncached(path);
	if (last_in != NULL)
	{
		pfree(last_in);
		pfree(last_out);
	}
	last_in = MemoryContextStrdup(TopMemoryContext, path);
	last_out = MemoryContextStrdup(TopMemoryContext, out);
	return last_out;
}

int
ep_owner_capped_timeout(Oid owner, int ms)
{
	if (ms < 0 || ep_guc_handler_timeout_ms <= 0)
		return ms;
	if ((ms == 0 || ms > ep_guc_handler_timeout_ms) && !superuser_arg(owner))
		return ep_guc_handler_timeout_ms;
	return ms;
}

char *
ep_owner_current_search_path(void)
{
	const char *p = GetConfigOption("search_path", false, false);

	return pstrdup(p ? p : "");
}

/*
 * Settings that change what SQL means or how values are read and written,
 * and that any session may set: owner code runs with their standard values,
 * never with the caller's (a caller's extra_float_digits = -15 would round
 * what a shared snapshot stores; standard_conforming_strings = off would
 * change the literals of a view's maintenance). Only those that differ are
 * set, inside the call's own nest level, so they are rolled back with it.
 */
static const struct
{
	const char *name;
	const char *value;
}			ep_pinned_settings[] =
{
	{"DateStyle", "ISO, MDY"},
	{"IntervalStyle", "postgres"},
	{"extra_float_digits", "1"},
	{"standard_conforming_strings", "on"},
	{"backslash_quote", "safe_encoding"},
	{"bytea_output", "hex"},
	{"xmloption", "content"},
	{"array_nulls", "on"},
	{"transform_null_equals", "off"},
};

static void
ep_owner_pin_settings(void)
{
	int			i;

	for (i = 0; i < lengthof(ep_pinned_settings); i++)
	{
		const char *cur = GetConfigOption(ep_pinned_settings[i].name, true, false);

		if (cur == NULL || strcmp(cur, ep_pinned_settings[i].value) == 0)
			continue;
		(void) set_config_option(ep_pinned_settings[i].name, ep_pinned_settings[i].value,
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	}
}

void
ep_owner_enter(EpOwnerCall *call)
{
	int			ms = call->timeout_ms < 0 ? ep_guc_handler_timeout_ms : call->timeout_ms;

	if (ep_worker_am_worker && ms > 0 && !timer_armed)
		ep_owner_check_strikes(call->owner, call->what ? call->what : "", call->name ? call->name : "");
	GetUserIdAndSecContext(&call->saved_userid, &call->saved_sec_context);
	SetUserIdAndSecContext(call->owner, call->saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	call->guc_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ep_owner_sanitize_path(call->search_path),
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	ep_owner_pin_settings();

	/*
	 * Timeouts are registered per process once it is set up (not while the
	 * postmaster preloads the library): on first use.
	 */
	if (!timeout_registered)
	{
		timeout_id = RegisterTimeout(USER_TIMEOUT, ep_owner_timeout_handler);
		escalate_id = RegisterTimeout(USER_TIMEOUT, ep_owner_escalate_handler);
		timeout_registered = true;
	}
	call->armed = false;
	if (ms > 0 && !timer_armed)
	{
		timeout_fired = false;
		timed_out = false;
		armed_ms = ms;
		armed_subxid = GetCurrentSubTransactionId();
		enable_timeout_after(timeout_id, ms);
		enable_timeout_after(escalate_id, ms > INT_MAX - EP_OWNER_GRACE_MS ? INT_MAX : ms + EP_OWNER_GRACE_MS);
		timer_armed = true;
		call->armed = true;
		if (ep_worker_am_worker)
		{
			if (!exit_registered)
			{
				before_shmem_exit(ep_owner_exit_callback, (Datum) 0);
				exit_registered = true;
			}
			cur_owner = call->owner;
			strlcpy(cur_what, call->what ? call->what : "", sizeof(cur_what));
			strlcpy(cur_name, call->name ? call->name : "", sizeof(cur_name));
			cur_active = true;
		}
	}
	call->depth = ++call_depth;
	call->errcb.callback = ep_owner_error_context;
	call->errcb.arg = call;
	call->errcb.previous = error_context_stack;
	error_context_stack = &call->errcb;
}

void
ep_owner_leave(EpOwnerCall *call)
{
	error_context_stack = call->errcb.previous;
	if (call->armed)
	{
		ep_owner_disarm();
		/* the limit expired just as the code returned: it finished in time */
		if (timeout_fired)
		{
			timeout_fired = false;
			QueryCancelPending = false;
		}
	}
	call_depth = call->depth - 1;
	AtEOXact_GUC(false, call->guc_nestlevel);
	SetUserIdAndSecContext(call->saved_userid, call->saved_sec_context);
}

void
ep_owner_init(void)
{
	DefineCustomIntVariable("event_patterns.handler_timeout",
							"Time limit of each call into user code made by the extension.",
							"Applies to projection handlers, upcasters, reducers, incremental-view "
							"maintenance and refreshes; 0 disables it. Projections and views "
							"may set their own.",
							&ep_guc_handler_timeout_ms,
							30000, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	RegisterXactCallback(ep_owner_xact_callback, NULL);
	RegisterSubXactCallback(ep_owner_subxact_callback, NULL);
}
