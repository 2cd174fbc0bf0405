/*-------------------------------------------------------------------------
 *
 * projection_wait.c
 *	  ep.wait_for_projection: read-your-writes for projections.
 *
 * The call records what was committed before it (the largest visible
 * global position, the WAL insert position for table projections, and
 * the last arrival number drawn on a consumer for message handlers: a
 * handler is done once no message of its channel numbered between its
 * progress and that one is visible),
 * then sleeps on the projections' condition variable, which every
 * committed apply round broadcasts (projection.c), re-reading the
 * projections' progress with a fresh snapshot after each wake-up. It works
 * whoever applies: the worker or any session running
 * ep.apply_projections(). No locks are held while waiting.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/fmgrprotos.h"
#include "utils/pg_lsn.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "event_patterns.h"
#include "owner.h"
#include "position.h"
#include "projection.h"
#include "worker.h"

static SPIPlanPtr
ep_wait_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * The last received_seq drawn on this consumer (0: none, or objects older
 * than 0.2): every message visible now has one at or below it. Read as the
 * extension owner, who owns the sequence.
 */
static int64
ep_wait_message_target(void)
{
	const EpCatalog *cat = ep_catalog();
	Oid			seq;
	EpSavedUser saved;
	Datum		d;
	bool		isnull;

	if (cat->version < EP_VERSION_0_2)
		return 0;
	seq = get_relname_relid("message_received_seq", cat->schema);
	if (!OidIsValid(seq))
		return 0;
	ep_become_owner(&saved);
	{
		LOCAL_FCINFO(fcinfo, 1);

		InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = ObjectIdGetDatum(seq);
		fcinfo->args[0].isnull = false;
		d = pg_sequence_last_value(fcinfo);
		isnull = fcinfo->isnull;
	}
	ep_restore_user(&saved);
	return isnull ? 0 : DatumGetInt64(d);
}

static bool
ep_wait_done(const char *name, int64 target_pos, XLogRecPtr target_lsn, int64 target_seq,
			 bool *found, char **blocked, MemoryContext cxt)
{
	Oid			types[5] = {TEXTOID, INT8OID, LSNOID, LSNOID, INT8OID};
	Datum		args[5];
	char		nulls[5] = "     ";
	SPIPlanPtr	plan;
	XLogRecPtr	decoded = ep_projection_decoded_to();
	bool		done;
	bool		isnull;

	if (name)
		args[0] = CStringGetTextDatum(name);
	else
		nulls[0] = 'n';
	args[1] = Int64GetDatum(target_pos);
	args[2] = LSNGetDatum(target_lsn);
	args[3] = LSNGetDatum(decoded);
	args[4] = Int64GetDatum(target_seq);
	plan = ep_wait_plan(psprintf("SELECT pg_catalog.count(*),"
				   "       pg_catalog.bool_and(d.mode OPERATOR(pg_catalog.=) 'inline' OR"
				   "         (d.status OPERATOR(pg_catalog.=) 'running' AND"
				   "          CASE WHEN d.kind OPERATOR(pg_catalog.=) 'events'"
				   "               THEN d.last_position OPERATOR(pg_catalog.>=) $2"
				   "%s"
				   "               ELSE COALESCE(d.last_lsn OPERATOR(pg_catalog.>=) $3, false)"
				   "                    OR $4 OPERATOR(pg_catalog.>=) $3 END)),"
				   "       (pg_catalog.array_agg(pg_catalog.format('projection \"%%s\" is %%s%%s', d.name, d.status,"
				   "                   COALESCE(': ' OPERATOR(pg_catalog.||) d.last_error, '')))"
				   "          FILTER (WHERE d.mode OPERATOR(pg_catalog.=) 'async'"
				   "                    AND d.status OPERATOR(pg_catalog.=) ANY ('{failed,paused}')))[1]"
				   "  FROM ep.projection_defs d"
				   " WHERE ($1 IS NULL AND d.status OPERATOR(pg_catalog.<>) 'paused'"
				   "        AND d.mode OPERATOR(pg_catalog.=) 'async')"
				   "    OR d.name OPERATOR(pg_catalog.=) $1",
				   /* message handlers read their channel's table (0.2 on) */
				   ep_catalog()->version >= EP_VERSION_0_2 ?
				   "               WHEN d.kind OPERATOR(pg_catalog.=) 'message'"
				   "               THEN NOT ep._messages_pending(d.source, d.last_position, $5)" : ""),
				   5, types);
	if (SPI_execute_snapshot(plan, args, nulls, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read ep.projection_defs");
	*found = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0;
	done = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (isnull)
		done = true;
	*blocked = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (*blocked)
		*blocked = MemoryContextStrdup(cxt, *blocked);
	SPI_freetuptable(SPI_tuptable);
	SPI_freeplan(plan);
	return done;
}

PG_FUNCTION_INFO_V1(ep_wait_for_projection);
Datum
ep_wait_for_projection(PG_FUNCTION_ARGS)
{
	char	   *name = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Interval   *timeout;
	int64		timeout_ms;
	int64		target_pos = 0;
	int64		target_seq;
	XLogRecPtr	target_lsn;
	TimestampTz deadline;
	bool		found;
	bool		done;
	char	   *blocked = NULL;
	MemoryContext cxt = CurrentMemoryContext;

	ep_require_preload("waiting for projections");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be NULL")));
	timeout = PG_GETARG_INTERVAL_P(1);
	timeout_ms = (int64) (DatumGetFloat8(DirectFunctionCall2(interval_part,
															 CStringGetTextDatum("epoch"),
															 IntervalPGetDatum(timeout))) * 1000.0);
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout must not be negative")));
	if (ep_position_reserved_in_xact())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for projections in a transaction that appended events"),
				 errdetail("Projections apply events only once their transaction has committed."),
				 errhint("Commit first, then call ep.wait_for_projection().")));

	/* what was committed before the call */
	target_lsn = GetXLogInsertRecPtr();
	target_seq = ep_wait_message_target();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_snapshot(ep_wait_plan("SELECT pg_catalog.max(global_position) FROM ep.events", 0, NULL),
							 NULL, NULL, GetLatestSnapshot(), InvalidSnapshot, true, false, 0) == SPI_OK_SELECT)
	{
		bool		isnull;
		Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		target_pos = isnull ? 0 : DatumGetInt64(v);
	}

	done = ep_wait_done(name, target_pos, target_lsn, target_seq, &found, &blocked, cxt);
	if (name && !found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", name)));
	ep_worker_wake(MyDatabaseId);

	/* a failed or paused projection will not catch up by waiting */
	if (!done && blocked != NULL)
	{
		ereport(NOTICE,
				(errmsg("%s", blocked),
				 errhint("Resume it with ep.resume_projection() once the cause is fixed.")));
		SPI_finish();
		PG_RETURN_BOOL(false);
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	ConditionVariablePrepareToSleep(ep_projection_cv());
	while (!done)
	{
		long		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);

		if (remaining <= 0)
			break;
		(void) ConditionVariableTimedSleep(ep_projection_cv(), Min(remaining, 1000L),
										   PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		done = ep_wait_done(name, target_pos, target_lsn, target_seq, &found, &blocked, cxt);
		if (!done && blocked != NULL)
		{
			ereport(NOTICE,
					(errmsg("%s", blocked),
					 errhint("Resume it with ep.resume_projection() once the cause is fixed.")));
			break;
		}
	}
	ConditionVariableCancelSleep();
	SPI_finish();
	PG_RETURN_BOOL(done);
}
