/*
 * position.h
 *	  Global positions of events and the read horizon that makes global
 *	  reads gapless (see position.c for the protocol).
 */
#ifndef EP_POSITION_H
#define EP_POSITION_H

#include "postgres.h"

extern int64 ep_position_next(Oid seqid);
extern int64 ep_position_horizon(Oid seqid);
extern int64 ep_position_issued(Oid seqid);
extern int64 ep_position_last_in_xact(void);
extern bool ep_position_reserved_in_xact(void);
extern void ep_position_xact_end(void);

#endif							/* EP_POSITION_H */
