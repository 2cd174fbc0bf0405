/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory for event_patterns.
 *
 * Shared memory exists only when the library is in shared_preload_libraries.
 * The request is made from shmem_request_hook (PostgreSQL 15: MaxBackends is
 * known by then), the segments are created from shmem_startup_hook, both
 * chaining the previous hooks. Module inits run under AddinShmemInitLock and
 * find their structures with ShmemInitStruct, so a restarted backend after a
 * crash re-initializes them.
 *
 * Features that need shared memory call ep_require_preload() first, which
 * fails with a hint naming the setting when the library was not preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "event_patterns.h"
#include "shmem.h"
#include "ivm/ivm_async.h"

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool shmem_initialized = false;

static Size
ep_shmem_total_size(void)
{
	Size		size = 0;

	size = add_size(size, ep_position_shmem_size());
	size = add_size(size, ep_notify_shmem_size());
	size = add_size(size, ep_bgw_shmem_size());
	size = add_size(size, ep_projection_shmem_size());
	size = add_size(size, ep_saga_shmem_size());
	size = add_size(size, ep_owner_shmem_size());
	size = add_size(size, ep_ivm_async_shmem_size());
	return size;
}

static void
ep_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ep_shmem_total_size());
}

static void
ep_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ep_position_shmem_init();
	ep_notify_shmem_init();
	ep_bgw_shmem_init();
	ep_projection_shmem_init();
	ep_saga_shmem_init();
	ep_owner_shmem_init();
	ep_ivm_async_shmem_init();
	LWLockRelease(AddinShmemInitLock);
	shmem_initialized = true;
}

void
ep_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ep_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ep_shmem_startup;
}

bool
ep_shmem_ready(void)
{
	return shmem_initialized;
}

void
ep_require_preload(const char *feature)
{
	if (!shmem_initialized)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s requires event_patterns to be loaded at server start", feature),
				 errhint("Add event_patterns to shared_preload_libraries and restart the server.")));
}
