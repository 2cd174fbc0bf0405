/*
 * projection.h
 *	  CQRS projections: the decoding round shared by decoder.c (output
 *	  plugin and slot), projection.c (apply rounds, waiting, the worker
 *	  step) and projection_api.c (handler checks and calls, inline
 *	  projections).
 */
#ifndef EP_PROJECTION_H
#define EP_PROJECTION_H

#include "postgres.h"

#include "access/xlogdefs.h"
#include "fmgr.h"
#include "storage/condition_variable.h"
#include "access/htup.h"
#include "access/tupdesc.h"
#include "utils/jsonb.h"
#include "utils/snapshot.h"

/* advisory lock key of the apply rounds ('EPPROJEC') */
#define EP_PROJECTION_LOCK_KEY	INT64CONST(4559461716873445458)

typedef enum EpChangeKind
{
	EP_CHANGE_EVENT,			/* insert into ep.events */
	EP_CHANGE_ROW				/* change of a watched table */
} EpChangeKind;

/* One decoded change, copied out of the decoding callbacks. */
typedef struct EpChange
{
	struct EpChange *next;
	XLogRecPtr	lsn;			/* end LSN of the committing transaction */
	EpChangeKind kind;
	int64		position;		/* events: global_position */
	Datum		event;			/* events: self-contained ep.events row */
	Oid			relid;			/* rows: the table */
	const char *op;				/* rows: INSERT, UPDATE, DELETE, TRUNCATE */
	Jsonb	   *old_row;		/* rows, may be NULL */
	Jsonb	   *new_row;		/* rows, may be NULL */
	/* raw_rows rounds (async views, ivm_async.c) */
	TransactionId xid;			/* the committing transaction */
	HeapTuple	old_tup;		/* self-contained copies, may be NULL */
	HeapTuple	new_tup;
	TupleDesc	desc;			/* the table's descriptor when written */
} EpChange;

/*
 * What one decoding round collects. Set up by projection.c, filled by the
 * output plugin callbacks of decoder.c. Everything lives in cxt.
 */
typedef struct EpDecodeRound
{
	MemoryContext cxt;
	Oid			events_relid;
	int64		collect_after;	/* collect events with position > this ... */
	int64		horizon;		/* ... and < this; events >= it are deferred */
	int			nwatch;
	Oid		   *watch;			/* sources of running table projections */
	int64		max_changes;	/* stop after the transaction that reaches it */
	Size		max_bytes;

	/*
	 * Async views (ivm_async.c): watched rows as heap tuples rather than
	 * jsonb; changes of any origin (also DoNotReplicateId); with snap set,
	 * the changes of transactions that snap does not see are dropped again
	 * at their commit (first_invisible: the start of the commit record of the
	 * first such, and
	 * visible_after: a transaction snap sees committed after it). Past
	 * max_bytes only touched[] is kept (overflow).
	 */
	bool		raw_rows;
	Snapshot	snap;
	bool	   *touched;		/* per watch[] entry */
	bool		overflow;
	bool		txn_watched;	/* current transaction changed a watched table */
	struct EpChange *txn_start; /* tail before the current transaction */
	int64		txn_nchanges;
	int			ndescs;			/* descriptors of raw rows, per table */
	int			maxdescs;
	TupleDesc  *descs;
	Oid		   *desc_relids;
	XLogRecPtr	first_invisible;
	bool		visible_after;

	/* results */
	EpChange   *head;
	EpChange   *tail;
	int64		nchanges;
	Size		bytes;
	bool		stop;			/* limits reached: stop at this commit */
	bool		txn_deferred;	/* current transaction holds a deferred event */
	bool		seen_deferred;	/* some transaction did */
	XLogRecPtr	safe_confirm;	/* end of the last transaction before it */
	XLogRecPtr	decoded_to;		/* every commit before this was seen */
	bool		complete;		/* decoded all the way to the target */
} EpDecodeRound;

/* decoder.c */
extern void ep_decoder_slot_name(char *buf, Size len, Oid dbid);
extern bool ep_decoder_ensure_slot(void);
extern void ep_decoder_run(EpDecodeRound *round, XLogRecPtr confirm, XLogRecPtr upto);
extern XLogRecPtr ep_decoder_slot_confirmed(void);
extern void ep_decoder_confirm(XLogRecPtr lsn);
extern void ep_decoder_help_restart(void);
extern void ep_decoder_drop_slot(Oid dbid);
/* the same for a slot of another name (async views: ep_ivm_<database oid>) */
extern bool ep_decoder_ensure_named_slot(const char *name);
extern void ep_decoder_run_named(const char *name, EpDecodeRound *round,
								 XLogRecPtr confirm, XLogRecPtr upto);
extern void ep_decoder_drop_named_slot(const char *name);
extern void ep_decoder_help_restart_named(const char *name, XLogRecPtr lag);

/* projection.c */
extern void ep_projection_init(void);
extern bool ep_projection_step(void);
extern Size ep_projection_shmem_size(void);
extern void ep_projection_shmem_init(void);
extern XLogRecPtr ep_projection_decoded_to(void);
extern ConditionVariable *ep_projection_cv(void);

/* projection_api.c: checks and calls of handlers (run through owner.h) */
extern void ep_handler_check_privileges(Oid handler, Oid owner, Oid source);
extern void ep_check_rls_bypass(Oid relid, Oid role);
extern void ep_call_handler(FmgrInfo *flinfo, int nargs, Datum *args, bool *nulls);

#endif							/* EP_PROJECTION_H */
