/*
 * saga.h
 *	  Sagas (saga.c): the worker step that runs due saga steps.
 */
#ifndef EP_SAGA_H
#define EP_SAGA_H

#include "postgres.h"

extern void ep_saga_init(void);
extern bool ep_saga_step(void);

#endif							/* EP_SAGA_H */
