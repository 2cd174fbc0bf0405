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

/*
 * The cached definition of a channel (defs.c): valid until the next
 * lookup or the end of the transaction, whichever comes first.
 */
typedef struct EpChannelDef
{
	char		name[NAMEDATALEN];	/* hash key */
	bool		producer;		/* this database sends on it (else consumes) */
	Oid			owner;
	Oid			partition;		/* its table in schema ep_channels */
	int			nsenders;
	Oid		   *senders;
	int			nreaders;
	Oid		   *readers;
} EpChannelDef;

extern const EpChannelDef *ep_channel_def(const char *name, int len);
extern const EpChannelDef *ep_channel_def_by_partition(Oid partition);
extern bool ep_channel_def_allows(const EpChannelDef *d, Oid role, bool send);
extern void ep_channel_defs_refresh(void);

/*
 * NULL when role may read (handle) the channel whose table is source, else
 * why not: as of the latest committed grants.
 */
extern char *ep_channel_reader_denied(Oid source, Oid role);

/* A parked message (its JSON form in ep.parked.new_row) as an ep.messages row */
extern Datum ep_channel_message_datum(Jsonb *row);
/* An ep.messages row as JSON, for ep.parked.new_row */
extern Jsonb *ep_channel_message_jsonb(Datum message);

/*
 * Reading a consumer's channel table in arrival order (message handlers):
 * the messages with received_seq above "after", as ep.messages rows, by an
 * index scan of the table's received_seq index under a snapshot taken at
 * begin. Everything is allocated in the caller's memory context; begin,
 * next and end run in one transaction.
 */
typedef struct EpMessageScan EpMessageScan;

typedef struct EpMessage
{
	Datum		row;			/* ep.messages composite datum */
	int64		seq;			/* received_seq */
	char	   *message_type;
} EpMessage;

extern EpMessageScan *ep_channel_scan_begin(Oid source, int64 after);
/* Up to max next messages into out[] (row in the current memory context); returns how many */
extern int	ep_channel_scan_next(EpMessageScan *scan, EpMessage *out, int max);
extern void ep_channel_scan_end(EpMessageScan *scan);

#endif							/* EP_CHANNEL_H */
