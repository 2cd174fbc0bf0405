/*
 * shmem.h
 *	  Shared-memory registration of the event_patterns modules.
 *
 * Each module that needs shared memory exposes a size function and an
 * init function and is listed in shmem.c; shmem.c requests the total while
 * the library is preloaded and calls every init under AddinShmemInitLock.
 */
#ifndef EP_SHMEM_H
#define EP_SHMEM_H

#include "postgres.h"

/* position.c */
extern Size ep_position_shmem_size(void);
extern void ep_position_shmem_init(void);

/* notify.c */
extern Size ep_notify_shmem_size(void);
extern void ep_notify_shmem_init(void);

/* launcher.c: registry of the background workers */
extern Size ep_bgw_shmem_size(void);
extern void ep_bgw_shmem_init(void);
/* projection.c */
extern Size ep_projection_shmem_size(void);
extern void ep_projection_shmem_init(void);

/* saga.c */
extern Size ep_owner_shmem_size(void);
extern void ep_owner_shmem_init(void);
extern Size ep_saga_shmem_size(void);
extern void ep_saga_shmem_init(void);

#endif							/* EP_SHMEM_H */
