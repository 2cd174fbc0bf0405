/*-------------------------------------------------------------------------
 *
 * ivm.h
 *	  Incremental materialized views: declarations shared by ivm_define.c
 *	  (analysis of the query and generation of the maintenance SQL),
 *	  ivm_delta.c (statement triggers on the base tables) and ivm_refresh.c
 *	  (refresh_view, full recompute, deferred batches).
 *
 * Module prefix: ep_ivm_*.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EP_IVM_H
#define EP_IVM_H

#include "postgres.h"

#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/snapshot.h"

#include "owner.h"

/* Names of the transition tables of every base-table trigger. */
#define IVM_OLD_TABLE	"__ep_old"
#define IVM_NEW_TABLE	"__ep_new"

/* Statements changing more rows than this are planned for their size. */
#define IVM_REPLAN_ROWS		1000

/* Deferred batches larger than this fraction of the base tables recompute. */
#define IVM_FULL_FRACTION	0.25

typedef enum IvmRefresh
{
	IVM_IMMEDIATE,
	IVM_DEFERRED,
	IVM_FULL
} IvmRefresh;

/*
 * One view's maintenance state, cached per backend (ivm_delta.c) and keyed
 * by view_id. Plans are prepared lazily and kept (SPI_keepplan); they are
 * revalidated by the plan cache when a base table or the storage changes.
 * Every plan is prepared and executed only inside the view owner's context
 * (ep_ivm_owner_enter): the owner's role and recorded search_path, so a
 * revalidation re-parses the SQL under that path, never a writer's.
 * When the entry is reloaded its plans and memory are freed, unless a call
 * still running further up the stack has it pinned.
 */
/* ivm_fast.c: a view maintained without SQL */
typedef struct IvmFast IvmFast;

typedef struct IvmViewCache
{
	int64		view_id;		/* hash key */
	bool		valid;
	IvmRefresh	refresh;
	Oid			owner;
	char	   *name;			/* as given at creation, for messages */
	char	   *search_path;	/* recorded at creation (owner.h) */
	int			timeout_ms;		/* handler_timeout; -1: the GUC's */
	Oid			storage;
	bool		multi_occurrence;
	bool		keep_empty_group;
	bool		recompute;		/* immediate/deferred by recompute-and-diff */
	int			nbase;
	char	  **sql_insert;		/* per base table (1 per event) */
	char	  **sql_delete;
	char	  **sql_update;
	char	  **sql_log_insert;	/* deferred/full: log the transition rows */
	char	  **sql_log_delete;
	char	  **sql_log_update;
	char	   *sql_remove;		/* delete storage rows by tid whose count is 0
								 * (recompute: select list of changed keys) */
	char	   *sql_recompute;	/* recompute min/max of rows by tid
								 * (recompute: difference of those groups) */
	char	   *sql_full_delete;
	char	   *sql_full_insert;
	char	   *sql_deferred;
	char	  **log_rels;		/* qualified names of the logs */
	Oid		   *base_oids;		/* the base tables, by trigger argument */
	SPIPlanPtr *plan_insert;
	SPIPlanPtr *plan_delete;
	SPIPlanPtr *plan_update;
	SPIPlanPtr *plan_log_insert;
	SPIPlanPtr *plan_log_delete;
	SPIPlanPtr *plan_log_update;
	SPIPlanPtr	plan_remove;
	SPIPlanPtr	plan_recompute;
	MemoryContext cxt;			/* the strings and arrays above */
	int			busy;			/* maintenance or refresh calls using it */
	bool		async;			/* refresh 'async' (ivm_async.c): refresh is
								 * IVM_DEFERRED, no triggers */
	IvmFast    *fast;			/* ivm_fast.c, or NULL */
} IvmViewCache;

/* ivm_delta.c */
extern int	ep_ivm_writing;		/* > 0: maintenance may write storage */
extern IvmViewCache *ep_ivm_view_cache(int64 view_id, bool missing_ok);
extern void ep_ivm_apply_result(IvmViewCache *vc, SPITupleTable *tuptable,
								uint64 ntuples, Snapshot snap);
extern void ep_ivm_lock_view(IvmViewCache *vc);
extern void ep_ivm_view_pin(IvmViewCache *vc);
extern void ep_ivm_view_unpin(IvmViewCache *vc);
extern void ep_ivm_owner_enter(IvmViewCache *vc, EpOwnerCall *call);
extern bool ep_ivm_catalog_current(void);

/* ivm_fast.c */
extern IvmFast *ep_ivm_fast_load(const char *text, Oid base, Oid storage, MemoryContext cxt);
extern bool ep_ivm_fast_apply(IvmViewCache *vc, TriggerData *td, int64 nold, int64 nnew);

/* ivm_refresh.c */
extern void ep_ivm_full_recompute(IvmViewCache *vc, bool latest);
extern void ep_ivm_refresh_body(IvmViewCache *vc, const char *name, int64 view_id, bool full);

/* ivm_recompute.c */
extern void ep_ivm_recompute_statement(IvmViewCache *vc, int b, TriggerEvent ev,
									   int64 nold, int64 nnew);
extern void ep_ivm_recompute_settings(void);

#endif							/* EP_IVM_H */
