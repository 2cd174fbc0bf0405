/*
 * notify.h
 *	  NOTIFY ep_events after appending commits (notify.c).
 */
#ifndef EP_NOTIFY_H
#define EP_NOTIFY_H

#include "postgres.h"

#define EP_NOTIFY_CHANNEL	"ep_events"

/* appending backends */
extern void ep_notify_appended(void);
extern void ep_notify_pre_commit(void);
extern bool ep_notify_xact_end(bool committed);

/* LISTEN ep_events (utility hook) */
extern void ep_notify_listen(const char *channel);

/* the per-database worker */
extern void ep_notify_worker_start(void);
extern long ep_notify_step(void);
extern bool ep_notify_wants_wakeups(void);
extern void ep_notify_worker_leave(void);

#endif							/* EP_NOTIFY_H */
