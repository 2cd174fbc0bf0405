/*
 * upcast.h
 *	  Upcasting: every read path delivers events at the latest schema
 *	  version of their type, through the chain of upcasters registered in
 *	  ep.upcasters. Stored rows never change.
 *
 * Usage from a read loop (values/isnull are the ten columns of ep.events,
 * in attribute order, see stream_read.h):
 *
 *		EpUpcastState *up = ep_upcast_begin();
 *		... per row ...
 *		if (up != NULL)
 *			ep_upcast_values(up, values, isnull);
 *
 * ep_upcast_begin returns NULL when no upcaster is registered, so the
 * common case costs one flag test per call. ep_upcast_values replaces
 * values[data] and values[schema_version] in place when the event's
 * schema version is below the latest of its type; the new jsonb is
 * allocated in CurrentMemoryContext (callers reset a per-row context).
 */
#ifndef EP_UPCAST_H
#define EP_UPCAST_H

#include "postgres.h"

typedef struct EpUpcastState EpUpcastState;

extern EpUpcastState *ep_upcast_begin(void);
extern bool ep_upcast_values(EpUpcastState *state, Datum *values, bool *isnull);

/*
 * The same for a batch of rows, in order: upcasters of one owner run in one
 * call of the owner primitive (owner.c) for the whole batch, which makes a
 * light upcaster several times cheaper than a switch per row.
 */
extern void ep_upcast_rows(EpUpcastState *state, int nrows, Datum **values, bool **isnull);

/* Fingerprint of the whole upcaster set (0 when empty); changes with it. */
extern uint64 ep_upcast_fingerprint(void);

/* Is this jsonb the payload that ep.redact_stream leaves behind? */
extern bool ep_is_redacted_payload(Datum data);

#endif							/* EP_UPCAST_H */
