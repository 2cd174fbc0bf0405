/*-------------------------------------------------------------------------
 *
 * position.c
 *	  Global positions of events, and the horizon below which global reads
 *	  can never miss an event.
 *
 * Positions come from the sequence ep.events_global_position_seq (CACHE 1,
 * so values are handed out in increasing order across all backends). A
 * sequence alone is not enough: a transaction that drew position 10 may
 * commit after one that drew 11, and a reader that saw 11 and moves on
 * would skip 10. Serializing appenders behind one lock would fix that at
 * the price of all concurrency; a transaction-id horizon would let any long
 * unrelated transaction stall every reader. Instead:
 *
 *	- Every backend owns one slot in shared memory (indexed by pgprocno).
 *	  Before an appending transaction draws its first position it publishes
 *	  in its slot a lower bound of every position it may draw (the largest
 *	  position known to have been issued in this database, plus one); once
 *	  it has its first position, it tightens the slot to that position. The
 *	  slot is cleared by the transaction callback at commit or abort, after
 *	  the commit is visible to new snapshots.
 *	- After drawing a position the appender raises the per-database
 *	  "high water" mark (largest position issued) with a CAS loop.
 *	- A reader computes the horizon H = min(high water + 1, every published
 *	  slot of its database), reading the high water mark first, then the
 *	  slots, then taking a fresh snapshot. Every position below H is either
 *	  visible in that snapshot or belongs to a transaction that aborted.
 *
 * Why it is safe: take a position q < H drawn by transaction T that is not
 * visible to the reader. If T drew q before the reader read the high water
 * mark W (q <= W), T had published its slot before drawing q, and q's
 * draw happened before the draw of whatever value the reader saw in W
 * (the sequence buffer lock orders draws); so the reader's slot scan, which
 * follows its read of W, sees T's slot unless T had already committed or
 * aborted, and a committed T is visible to the snapshot taken afterwards.
 * If T drew q after the reader read W, then q > W, so q >= H. The slot's
 * value is at most q, hence H <= q in the first case: contradiction.
 *
 * Costs: appenders touch only their own slot and one atomic per database;
 * readers scan MaxBackends slots (a few hundred atomic reads). Only
 * transactions that appended and are still open hold readers back.
 *
 * A transaction that appended cannot be prepared (two-phase commit): its
 * slot would have to outlive the backend. PREPARE TRANSACTION fails with a
 * clear error instead.
 *
 * Locking: the high-water table (one entry per database, keyed by its
 * current sequence) is changed under a spinlock; values are atomics. With
 * more databases than entries, appenders publish the most conservative
 * bound (1) and readers read the sequence itself: correct, only slower. Slots are written only by their
 * owning backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/sequence.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "event_patterns.h"
#include "owner.h"
#include "position.h"
#include "replica/replica.h"
#include "shmem.h"

#define EP_MAX_HIGHWATER 256

typedef struct EpPositionSlot
{
	pg_atomic_uint64 reserved;	/* lower bound of uncommitted positions; 0 =
								 * none */
	Oid			dbid;			/* database of the owning backend */
} EpPositionSlot;

typedef struct EpHighWater
{
	Oid			dbid;
	Oid			seqid;
	pg_atomic_uint64 max_issued;	/* 0 = not yet known */
} EpHighWater;

typedef struct EpPositionShared
{
	slock_t		mutex;			/* protects nhighwater and the keys */
	int			nhighwater;
	int			nslots;
	EpHighWater highwater[EP_MAX_HIGHWATER];
	EpPositionSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EpPositionShared;

static EpPositionShared *pos_shared = NULL;

/* backend-local state */
static EpHighWater *my_highwater = NULL;
static bool reserved_in_xact = false;
static int64 last_in_xact = 0;	/* last position drawn by this transaction */
static bool exit_hook_registered = false;

static int
ep_position_nslots(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS;
}

Size
ep_position_shmem_size(void)
{
	return add_size(offsetof(EpPositionShared, slots),
					mul_size(ep_position_nslots(), sizeof(EpPositionSlot)));
}

void
ep_position_shmem_init(void)
{
	bool		found;

	pos_shared = ShmemInitStruct("event_patterns positions",
								 ep_position_shmem_size(), &found);
	if (!found)
	{
		int			i;

		SpinLockInit(&pos_shared->mutex);
		pos_shared->nhighwater = 0;
		pos_shared->nslots = ep_position_nslots();
		for (i = 0; i < EP_MAX_HIGHWATER; i++)
		{
			pg_atomic_init_u64(&pos_shared->highwater[i].max_issued, 0);
		}
		for (i = 0; i < pos_shared->nslots; i++)
		{
			pg_atomic_init_u64(&pos_shared->slots[i].reserved, 0);
			pos_shared->slots[i].dbid = InvalidOid;
		}
	}
}

/*
 * Find (or create) the high-water entry of this database. One entry per
 * database: when the extension is dropped and created again the sequence
 * is new, and the entry is reset for it (DROP EXTENSION cannot run while a
 * transaction of this database appends or reads, as both hold locks on
 * ep.events).
 */
static EpHighWater *
ep_highwater_for(Oid seqid)
{
	int			i;
	EpHighWater *hw = NULL;

	if (my_highwater != NULL && my_highwater->dbid == MyDatabaseId &&
		my_highwater->seqid == seqid)
		return my_highwater;

	SpinLockAcquire(&pos_shared->mutex);
	for (i = 0; i < pos_shared->nhighwater; i++)
	{
		if (pos_shared->highwater[i].dbid == MyDatabaseId)
		{
			hw = &pos_shared->highwater[i];
			break;
		}
	}
	if (hw == NULL && pos_shared->nhighwater < EP_MAX_HIGHWATER)
	{
		hw = &pos_shared->highwater[pos_shared->nhighwater++];
		hw->dbid = MyDatabaseId;
		hw->seqid = InvalidOid;
	}
	if (hw != NULL && hw->seqid != seqid)
	{
		hw->seqid = seqid;
		pg_atomic_write_u64(&hw->max_issued, 0);
	}
	SpinLockRelease(&pos_shared->mutex);

	/* NULL (table full: more than EP_MAX_HIGHWATER databases) is handled */
	my_highwater = hw;
	return hw;
}

static void
ep_highwater_raise(EpHighWater *hw, uint64 value)
{
	uint64		cur = pg_atomic_read_u64(&hw->max_issued);

	while (cur < value)
	{
		if (pg_atomic_compare_exchange_u64(&hw->max_issued, &cur, value))
			break;
	}
}

/* Largest position issued so far, read from the sequence itself. */
static uint64
ep_sequence_last_issued(Oid seqid)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		d;

	EpSavedUser saved;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seqid);
	fcinfo->args[0].isnull = false;
	/* readers need no privilege on the sequence: read it as its owner */
	ep_become_owner(&saved);
	d = pg_sequence_last_value(fcinfo);
	ep_restore_user(&saved);
	if (fcinfo->isnull)
		return 0;
	return (uint64) DatumGetInt64(d);
}

static EpPositionSlot *
my_slot(void)
{
	int			idx = MyProc->pgprocno;

	if (idx < 0 || idx >= pos_shared->nslots)
		elog(ERROR, "event_patterns: process number %d out of range", idx);
	return &pos_shared->slots[idx];
}

static void
ep_position_on_exit(int code, Datum arg)
{
	ep_position_xact_end();
}

/*
 * Draw the next global position for an event appended by this transaction.
 */
int64
ep_position_next(Oid seqid)
{
	EpHighWater *hw;
	EpPositionSlot *slot;
	int64		pos;

	ep_require_preload("appending events");
	hw = ep_highwater_for(seqid);
	slot = my_slot();

	if (!reserved_in_xact)
	{
		uint64		lower = 1;

		if (!exit_hook_registered)
		{
			before_shmem_exit(ep_position_on_exit, (Datum) 0);
			exit_hook_registered = true;
		}
		if (hw != NULL)
			lower = pg_atomic_read_u64(&hw->max_issued) + 1;
		slot->dbid = MyDatabaseId;
		pg_write_barrier();
		pg_atomic_write_u64(&slot->reserved, lower);
		reserved_in_xact = true;
		/* the slot must be visible before the sequence is advanced */
		pg_memory_barrier();

		pos = nextval_internal(seqid, false);
		/* tighten to the first position this transaction holds */
		pg_atomic_write_u64(&slot->reserved, (uint64) pos);
	}
	else
		pos = nextval_internal(seqid, false);

	last_in_xact = pos;
	if (hw != NULL)
		ep_highwater_raise(hw, (uint64) pos);
	return pos;
}

/*
 * The exclusive upper bound of positions a global reader may return now:
 * every position below it is visible to a snapshot taken after this call,
 * or will never be.
 */
int64
ep_position_horizon(Oid seqid)
{
	EpHighWater *hw;
	uint64		water = 0;
	uint64		horizon;
	int64		reader_horizon;
	int			i;

	/* a read node reads up to the horizon its writer published */
	if (ep_replica_reader_horizon(&reader_horizon))
		return reader_horizon;

	ep_require_preload("reading events in global order");
	hw = ep_highwater_for(seqid);
	if (hw != NULL)
		water = pg_atomic_read_u64(&hw->max_issued);
	if (water == 0)
	{
		/* first use since start: learn it from the sequence */
		water = ep_sequence_last_issued(seqid);
		if (hw != NULL)
			ep_highwater_raise(hw, water);
	}
	pg_memory_barrier();

	horizon = water + 1;
	for (i = 0; i < pos_shared->nslots; i++)
	{
		uint64		v = pg_atomic_read_u64(&pos_shared->slots[i].reserved);

		if (v == 0 || v >= horizon)
			continue;
		pg_read_barrier();
		if (pos_shared->slots[i].dbid == MyDatabaseId)
			horizon = v;
	}
	pg_memory_barrier();
	return (int64) horizon;
}

/* Largest position issued so far in this database (0: none). */
int64
ep_position_issued(Oid seqid)
{
	EpHighWater *hw = ep_highwater_for(seqid);
	uint64		water = 0;

	if (hw != NULL)
		water = pg_atomic_read_u64(&hw->max_issued);
	if (water == 0)
		water = ep_sequence_last_issued(seqid);
	return (int64) water;
}

/* Last position this transaction drew (0: it has not appended). */
int64
ep_position_last_in_xact(void)
{
	return last_in_xact;
}

bool
ep_position_reserved_in_xact(void)
{
	return reserved_in_xact;
}

void
ep_position_xact_end(void)
{
	if (reserved_in_xact && pos_shared != NULL)
	{
		pg_memory_barrier();
		pg_atomic_write_u64(&my_slot()->reserved, 0);
	}
	reserved_in_xact = false;
	last_in_xact = 0;
}
