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
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/varlena.h"

#include "event_patterns.h"
#include "owner.h"

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
