/*-------------------------------------------------------------------------
 *
 * event_patterns.h
 *	  Declarations shared by every module of the event_patterns extension:
 *	  the extension's own SQLSTATE class "EP", the GUC variables, and the
 *	  per-backend cache of the extension's catalog objects.
 *
 * Module prefixes: ep_guc_* (guc.c), ep_shmem_* (shmem.c), ep_position_*
 * (position.c), ep_store_* (event_store.c), ep_read_* (stream_read.c),
 * ep_sub_* (subscription.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef EVENT_PATTERNS_H
#define EVENT_PATTERNS_H

#include "postgres.h"

#include "executor/spi.h"
#include "executor/tuptable.h"
#include "utils/inval.h"
#include "utils/relcache.h"

/* The extension's SQLSTATE class "EP" (TimescaleDB uses "TS" the same way). */
#define ERRCODE_EP_WRONG_EXPECTED_VERSION	MAKE_SQLSTATE('E','P','0','0','1')
#define ERRCODE_EP_STREAM_DELETED			MAKE_SQLSTATE('E','P','0','0','2')
#define ERRCODE_EP_EVENT_ID_CONFLICT		MAKE_SQLSTATE('E','P','0','0','3')
#define ERRCODE_EP_EVENTS_IMMUTABLE			MAKE_SQLSTATE('E','P','0','0','4')
#define ERRCODE_EP_READ_ONLY_COPY			MAKE_SQLSTATE('E','P','0','0','5')

#define EP_SCHEMA_NAME		"ep"

/* guc.c */
extern bool ep_guc_enabled;
extern int	ep_guc_max_workers;
extern int	ep_guc_naptime_ms;
extern int	ep_guc_notify;

typedef enum EpNotifyMode
{
	EP_NOTIFY_COMMIT,			/* NOTIFY ep_events from the appending transaction */
	EP_NOTIFY_WORKER,			/* the database's worker notifies right after
								 * commit (the transaction itself when no
								 * worker serves) */
	EP_NOTIFY_OFF
} EpNotifyMode;
extern int	ep_guc_max_job_workers;
extern int	ep_guc_max_job_workers_per_role;
extern void ep_guc_define(void);

/* shmem.c */
extern void ep_shmem_install_hooks(void);
extern bool ep_shmem_ready(void);
extern void ep_require_preload(const char *feature);

/*
 * Catalog cache (event_patterns.c): OIDs of the extension's own objects,
 * looked up once per backend and forgotten on any relcache invalidation.
 */
typedef struct EpCatalog
{
	Oid			schema;
	Oid			events;			/* ep.events */
	Oid			events_pkey;	/* (global_position) */
	Oid			events_stream_idx;	/* (stream_id, stream_version) */
	Oid			events_category_idx;	/* (category, global_position) */
	Oid			position_seq;	/* ep.events_global_position_seq */
	Oid			owner;			/* role that owns the extension */
	int			version;		/* installed SQL objects: 1 = 0.1, 2 = 0.2 */
} EpCatalog;

/*
 * SQL objects of an older version (a database not yet updated with ALTER
 * EXTENSION event_patterns UPDATE) lack what newer C code may use: such
 * code checks ep_catalog()->version first.
 */
#define EP_VERSION_0_2	2

extern const EpCatalog *ep_catalog(void);

/* Index entries for a tuple just written from slot (see event_patterns.c) */
extern void ep_insert_index_entries(Relation heap, List *indexes, TupleTableSlot *slot,
									bool unchanged);

/* Have fn called for every relcache invalidation (one slot for the library) */
extern void ep_register_relcache_callback(RelcacheCallbackFunction fn);

/*
 * Internal writes to ep.events (hard delete, scavenge, redaction) are
 * allowed only while this counter is positive; the immutability trigger
 * checks it. It is reset at transaction end.
 */
extern int	ep_internal_writes;

/* SPI helpers shared by the modules (event_patterns.c) */
extern SPIPlanPtr ep_spi_keep_plan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes);
extern int	ep_spi_execute_internal(SPIPlanPtr plan, Datum *args, const char *nulls);

/* stream_read.c: category of a stream id (part before the first '-') */
extern text *ep_category_of(const char *stream_id, int len);

#endif							/* EVENT_PATTERNS_H */
