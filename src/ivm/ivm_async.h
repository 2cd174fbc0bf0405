/*
 * ivm_async.h
 *	  Async incremental views (ivm_async.c, ivm_async_define.c): refresh =>
 *	  'async', maintained by the per-database worker from the WAL.
 */
#ifndef EP_IVM_ASYNC_H
#define EP_IVM_ASYNC_H

#include "postgres.h"

#include "nodes/pg_list.h"

/* _PG_init: GUCs, worker step, hooks */
extern void ep_ivm_async_init(void);

/* shmem.c */
extern Size ep_ivm_async_shmem_size(void);
extern void ep_ivm_async_shmem_init(void);

/* ivm_async_define.c, for ivm_define.c: checks of the base tables, the progress row */
extern void ep_ivm_async_check_bases(List *bases);
extern void ep_ivm_async_refuse_subscribed(List *bases, const char *mode);
extern void ep_ivm_async_define(int64 view_id);

/* ivm_async_define.c, for ivm_refresh.c: ep.refresh_view of an async view */
extern void ep_ivm_async_refresh(int64 view_id, bool full);

#endif							/* EP_IVM_ASYNC_H */
