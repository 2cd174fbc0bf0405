/*-------------------------------------------------------------------------
 *
 * replica.h
 *	  Read nodes (DESIGN.md section 6): a writer publishes its store with
 *	  native logical replication (publish.c), readers follow it
 *	  (follow.c) and read it up to the writer's published horizon
 *	  (reader.c).  Module prefix ep_replica_*.
 *
 * The horizon.  Positions commit out of order on the writer (position.c);
 * its worker therefore publishes, after appending commits, its own read
 * horizon H (every position below H committed or never will) into the
 * one-row table ep.store_horizon, which is published with the events.
 * Replication applies transactions in the writer's commit order, so on a
 * reader the row saying H arrives only after every event below H: on a
 * reader ep_position_horizon() returns that replicated H, and every
 * global read path (read_all, read_category, poll, projections, waits)
 * stops there.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EP_REPLICA_H
#define EP_REPLICA_H

#include "postgres.h"

/* _PG_init: the writer's horizon step of the worker */
extern void ep_replica_init(void);

/* reader.c */
extern bool ep_replica_is_reader(void);
extern void ep_replica_check_writable(const char *what);
extern bool ep_replica_reader_horizon(int64 *horizon);
extern bool ep_replica_round_bounds(int64 *water, int64 *horizon);
extern bool ep_replica_take_wake(void);
extern void ep_replica_note_commit(int64 last_position);
extern void ep_replica_forget(void);

#endif							/* EP_REPLICA_H */
