/*
 * stream_read.h
 *	  Reading events: by stream, in global order, by category, and the
 *	  shared global scan used by subscriptions.
 */
#ifndef EP_STREAM_READ_H
#define EP_STREAM_READ_H

#include "postgres.h"
#include "fmgr.h"
#include "datatype/timestamp.h"

/* attribute numbers of ep.events */
#define Anum_ep_events_global_position	1
#define Anum_ep_events_stream_id		2
#define Anum_ep_events_stream_version	3
#define Anum_ep_events_event_id			4
#define Anum_ep_events_event_type		5
#define Anum_ep_events_data				6
#define Anum_ep_events_metadata			7
#define Anum_ep_events_schema_version	8
#define Anum_ep_events_recorded_at		9
#define Anum_ep_events_category			10

typedef struct EpGlobalFilter
{
	text	   *category;		/* NULL: every category */
	int			ntypes;			/* 0: every event type */
	text	  **types;
	int			consumer_member;	/* used when consumer_size > 0 */
	int			consumer_size;
} EpGlobalFilter;

/* Visibility of one stream's events (see ep_read_stream_limits). */
typedef struct EpStreamLimits
{
	bool		exists;			/* the stream has a row in ep.streams */
	bool		tombstoned;		/* hard-deleted */
	int64		version;		/* current version */
	bool		limited;		/* some limit or a soft delete hides events */
	int64		min_version;	/* lowest visible version */
	bool		has_max_age;
	TimestampTz cutoff;			/* with max_age: older events are hidden */
} EpStreamLimits;

extern void ep_read_stream_limits(text *stream, EpStreamLimits *out);

extern void ep_read_global(FunctionCallInfo fcinfo, int64 after, int64 max_count,
						   const EpGlobalFilter *filter);
extern void ep_read_filter_types(EpGlobalFilter *filter, ArrayType *types);
extern void ep_read_check_consumer(bool member_null, int member, bool size_null, int size,
								   EpGlobalFilter *filter);
extern int64 ep_read_max_count(FunctionCallInfo fcinfo, int argno);
extern uint32 ep_text_key_hash(const void *key, Size keysize);
extern int	ep_text_key_match(const void *key1, const void *key2, Size keysize);

#endif							/* EP_STREAM_READ_H */
