/*
 * worker_stub.c
 *	  TEMPORARY stand-ins for the background-worker runtime (launcher.c,
 *	  worker.c) so that the projections branch links and can be tested
 *	  through ep.apply_projections(). Delete this file (and its line in
 *	  OBJS) when the runtime is merged: it defines the two functions of
 *	  worker.h and does nothing else.
 */
#include "postgres.h"

#include "worker.h"

void
ep_worker_register_step(const char *name, EpWorkerStep step)
{
}

void
ep_worker_wake(Oid dbid)
{
}
