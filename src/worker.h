/*
 * worker.h
 *	  Interface of the background-worker runtime (launcher.c, worker.c,
 *	  scheduler.c) to the features that plug work into it.
 *
 * A feature registers a step from _PG_init (while preloading). The
 * per-database worker calls every registered step on each round of its
 * loop, outside any transaction, with CurrentMemoryContext reset after
 * each round; a step starts and commits its own transactions, runs user
 * code as the owning role, catches its own errors, and returns true when
 * it has more work ready (the worker then loops without sleeping).
 *
 * ep_worker_wake(dbid) sets the latch of that database's worker; commit
 * callbacks use it so that new events and jobs are handled at once.
 */
#ifndef EP_WORKER_H
#define EP_WORKER_H

#include "postgres.h"

#include "datatype/timestamp.h"

typedef bool (*EpWorkerStep) (void);

extern void ep_worker_register_step(const char *name, EpWorkerStep step);
extern void ep_worker_wake(Oid dbid);
extern void ep_worker_request_round(long ms);

/*
 * A step that has work falling due later (a retry, a timeout) asks the
 * worker to wake no later than at; the request lasts for one round.
 */
extern void ep_worker_due_at(TimestampTz at);

#endif							/* EP_WORKER_H */
