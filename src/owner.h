/*
 * owner.h
 *	  The one way the extension runs code on somebody's behalf (owner.c).
 *
 * Two kinds of switches exist:
 *	- ep_owner_enter/ep_owner_leave run *user code* (handlers, upcasters,
 *	  reducers behind shared snapshots, view queries and their
 *	  maintenance, refreshes) as the role that owns it, inside a
 *	  security-restricted operation, in a GUC nest level of its own with
 *	  the owner's recorded search_path (pg_temp always last), under the
 *	  time limit event_patterns.handler_timeout;
 *	- ep_become_owner/ep_restore_user run the *extension's own* statements
 *	  (every name in them schema-qualified) as the extension owner, so that
 *	  users need no privileges on the extension's tables.
 */
#ifndef EP_OWNER_H
#define EP_OWNER_H

#include "postgres.h"

/* Run the extension's own SPI statements as the extension owner. */
typedef struct EpSavedUser
{
	Oid			userid;
	int			sec_context;
} EpSavedUser;

extern void ep_become_owner(EpSavedUser *saved);
extern void ep_restore_user(const EpSavedUser *saved);

/* What is about to run, for messages ("projection handler", "incremental view") */
typedef struct EpOwnerCall
{
	/* set by the caller */
	Oid			owner;			/* role to run as */
	const char *search_path;	/* recorded at creation; NULL = "pg_catalog" */
	int			timeout_ms;		/* < 0: event_patterns.handler_timeout; 0: none */
	const char *what;			/* e.g. "projection handler" */
	const char *name;			/* e.g. the projection's name, may be NULL */

	/* private */
	Oid			saved_userid;
	int			saved_sec_context;
	int			guc_nestlevel;
	bool		armed;			/* this call armed the time limit */
	int			depth;
	ErrorContextCallback errcb;
} EpOwnerCall;

extern int	ep_guc_handler_timeout_ms;

extern void ep_owner_enter(EpOwnerCall *call);
extern void ep_owner_leave(EpOwnerCall *call);

/*
 * The time limit a stored per-object setting (a projection's or a view's
 * handler_timeout) gives a call of owner's code: "none" (0) and values above
 * event_patterns.handler_timeout are a superuser's to choose; for any other
 * owner they are capped at the setting. ms < 0 stands for the setting.
 */
extern int	ep_owner_capped_timeout(Oid owner, int ms);

/* True (once) when the last error came from the time limit. */
extern bool ep_owner_timed_out(void);

/* The caller's search_path as it would be recorded for a new object. */
extern char *ep_owner_current_search_path(void);

/* GUC and callbacks, from _PG_init */
extern void ep_owner_init(void);

#endif							/* EP_OWNER_H */
