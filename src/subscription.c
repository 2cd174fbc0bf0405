/*-------------------------------------------------------------------------
 *
 * subscription.c
 *	  ep.poll: the next events of a persistent subscription.
 *
 * A subscription (ep.subscriptions) names a category and/or event types
 * and a starting position; its checkpoints (ep.subscription_checkpoints)
 * are kept per consumer member (-1 when no consumer group is used) and are
 * moved by ep.ack. poll reads after the member's checkpoint with the same
 * gapless global scan as read_all (stream_read.c); it does not move the
 * checkpoint, so a consumer that crashes before ack sees the events again.
 * Creation, ack and drop are plain SQL (src/sql/).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "event_patterns.h"
#include "stream_read.h"

static SPIPlanPtr plan_subscription = NULL;

PG_FUNCTION_INFO_V1(ep_poll);
Datum
ep_poll(PG_FUNCTION_ARGS)
{
	EpGlobalFilter filter;
	int64		max_count;
	int64		after;
	int			member;
	Oid			argt[2] = {TEXTOID, INT4OID};
	Datum		args[2];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;
	MemoryContext outer = CurrentMemoryContext;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("subscription must not be null")));
	max_count = PG_ARGISNULL(1) ? 100 : ep_read_max_count(fcinfo, 1);
	memset(&filter, 0, sizeof(filter));
	ep_read_check_consumer(PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2),
						   PG_ARGISNULL(3), PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3),
						   &filter);
	member = filter.consumer_size > 0 ? filter.consumer_member : -1;
	ep_catalog();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan_subscription == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(
									"SELECT s.category, s.event_types, "
									"COALESCE(c.position, s.from_position) "
									"FROM ep.subscriptions s "
									"LEFT JOIN ep.subscription_checkpoints c "
									"ON c.subscription OPERATOR(pg_catalog.=) s.name "
									"AND c.consumer_member OPERATOR(pg_catalog.=) $2 "
									"WHERE s.name OPERATOR(pg_catalog.=) $1",
									2, argt);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed");
		SPI_keepplan(p);
		plan_subscription = p;
	}
	args[0] = PG_GETARG_DATUM(0);
	args[1] = Int32GetDatum(member);
	if (SPI_execute_plan(plan_subscription, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "subscription lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" does not exist", text_to_cstring(PG_GETARG_TEXT_PP(0))),
				 errhint("Create it with ep.create_subscription().")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	{
		Datum		d;
		MemoryContext spi = MemoryContextSwitchTo(outer);

		d = SPI_getbinval(tup, desc, 1, &isnull);
		filter.category = isnull ? NULL : DatumGetTextPCopy(d);
		d = SPI_getbinval(tup, desc, 2, &isnull);
		if (!isnull)
			ep_read_filter_types(&filter, DatumGetArrayTypePCopy(d));
		after = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();

	ep_read_global(fcinfo, after, max_count, &filter);
	PG_RETURN_NULL();
}
