/*
 * channel.h
 *	  Service channels (channel.c): what projection.c needs to run message
 *	  handlers, and the initialization called from _PG_init.
 */
#ifndef EP_CHANNEL_H
#define EP_CHANNEL_H

#include "postgres.h"

#include "utils/jsonb.h"

extern int	ep_guc_channel_retention_s;

extern void ep_channel_init(void);
extern Datum ep_channel_message_datum(Jsonb *row);
extern int64 ep_channel_received_seq(Jsonb *row);
extern char *ep_channel_message_type(Jsonb *row);

#endif							/* EP_CHANNEL_H */
