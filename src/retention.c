/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Physical removal and rewriting of stored events: ep.scavenge (events
 *	  hidden by max_count, max_age, truncate_before and soft deletes) and
 *	  ep.redact_stream (payloads replaced for data-protection requests).
 *	  Besides hard delete these are the only writers of existing rows of
 *	  ep.events; each raises ep_internal_writes around its own statement
 *	  only, so the immutability trigger lets exactly that statement through.
 *
 * Scavenging removes only what every reader already hides: the lowest
 * visible version of a stream is computed exactly as stream_read.c does
 * (greatest of truncate_before, deleted_before, version - max_count + 1),
 * and max_age hides events recorded before now() - max_age. It deletes by
 * TID in statements of at most batch_size rows, stream by stream (each
 * batch starting after the highest version the previous one removed, so
 * removed rows are not scanned again), taking row locks only: appends
 * insert new rows and never wait for it; readers never wait. One call is one transaction; max_rows bounds its work, and
 * the procedure ep.scavenge_in_batches commits between batches.
 * Snapshots of a scavenged stream are deleted (they folded events that a
 * fold from the beginning would no longer see).
 *
 * Redaction locks the stream's row (FOR UPDATE, as appends do) and gives
 * it a new version (so that a concurrent fold does not write a snapshot of
 * the old payloads, see aggregate.c), records who, when and why in
 * ep.redactions, replaces data by {"redacted": true}
 * and metadata by {"redacted": true, "redaction_id": n, "redacted_at": t},
 * keeping every envelope column (positions, versions, ids, types, times),
 * and deletes the stream's snapshots. Events appended later are not
 * redacted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "event_patterns.h"
#include "category.h"
#include "owner.h"
#include "replica/replica.h"

static SPIPlanPtr plan_scavenge_streams = NULL;
static SPIPlanPtr plan_scavenge_delete = NULL;
static SPIPlanPtr plan_drop_snapshots = NULL;
static SPIPlanPtr plan_redact = NULL;

static void
ep_ret_drop_snapshots(text *stream)
{
	Oid			argt[1] = {TEXTOID};
	Datum		args[1];

	args[0] = PointerGetDatum(stream);
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_drop_snapshots,
										"DELETE FROM ep.snapshots WHERE stream_id OPERATOR(pg_catalog.=) $1",
										1, argt),
						 args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "snapshot delete failed");
}

/*
 * ep.scavenge(batch_size, max_rows): remove hidden events; returns how many.
 */
PG_FUNCTION_INFO_V1(ep_scavenge);
Datum
ep_scavenge(PG_FUNCTION_ARGS)
{
	int32		batch = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
	int64		max_rows = PG_ARGISNULL(1) ? -1 : PG_GETARG_INT64(1);
	EpSavedUser saved;
	SPITupleTable *streams;
	uint64		nstreams;
	uint64		i;
	int64		removed = 0;

	ep_replica_check_writable("ep.scavenge");

	if (batch < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be at least 1")));
	if (!PG_ARGISNULL(1) && max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1"),
				 errhint("Use NULL to remove everything that is hidden.")));

	ep_catalog();
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* streams whose reads hide something (partial index streams_limited_idx) */
	if (SPI_execute_plan(ep_spi_keep_plan(&plan_scavenge_streams,
										"SELECT stream_id, "
										"pg_catalog.int8larger(1, GREATEST(truncate_before, deleted_before, "
										"version OPERATOR(pg_catalog.-) max_count OPERATOR(pg_catalog.+) 1)), "
										"pg_catalog.now() OPERATOR(pg_catalog.-) max_age "
										"FROM ep.streams "
										"WHERE (truncate_before IS NOT NULL OR deleted_before IS NOT NULL "
										"OR max_count IS NOT NULL OR max_age IS NOT NULL) AND NOT tombstoned "
										"ORDER BY stream_id",
										0, NULL),
						 NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "stream limits lookup failed");
	streams = SPI_tuptable;
	nstreams = SPI_processed;

	for (i = 0; i < nstreams && (max_rows < 0 || removed < max_rows); i++)
	{
		HeapTuple	tup = streams->vals[i];
		bool		isnull;
		Oid			argt[5] = {TEXTOID, INT8OID, TIMESTAMPTZOID, INT4OID, INT8OID};
		Datum		args[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
		int64		stream_removed = 0;
		int64		after = 0;		/* highest version removed so far */
		uint64		k;
		int64		min_version;

		args[0] = SPI_getbinval(tup, streams->tupdesc, 1, &isnull);
		min_version = DatumGetInt64(SPI_getbinval(tup, streams->tupdesc, 2, &isnull));
		args[1] = Int64GetDatum(min_version);
		args[2] = SPI_getbinval(tup, streams->tupdesc, 3, &isnull);
		if (isnull)
		{
			nulls[2] = 'n';
			if (min_version <= 1)
				continue;
		}

		for (;;)
		{
			int			ret;
			int32		n = batch;

			CHECK_FOR_INTERRUPTS();
			if (max_rows >= 0 && max_rows - removed < n)
				n = (int32) (max_rows - removed);
			if (n <= 0)
				break;
			args[3] = Int32GetDatum(n);
			args[4] = Int64GetDatum(after);
			ret = ep_spi_execute_internal(
										  ep_spi_keep_plan(&plan_scavenge_delete,
														 "DELETE FROM ep.events WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
														 "SELECT ctid FROM ep.events "
														 "WHERE stream_id OPERATOR(pg_catalog.=) $1 "
														 "AND stream_version OPERATOR(pg_catalog.>) $5 "
														 "AND (stream_version OPERATOR(pg_catalog.<) $2 "
														 "OR recorded_at OPERATOR(pg_catalog.<) $3) "
														 "ORDER BY stream_version LIMIT $4)) "
														 "RETURNING stream_version",
														 5, argt),
										  args, nulls);
			if (ret != SPI_OK_DELETE_RETURNING)
				elog(ERROR, "scavenge delete failed: %s", SPI_result_code_string(ret));
			/* the next batch starts after this one: no rescan of removed rows */
			for (k = 0; k < SPI_processed; k++)
			{
				int64		v = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
														   SPI_tuptable->tupdesc, 1, &isnull));

				if (v > after)
					after = v;
			}
			stream_removed += SPI_processed;
			removed += SPI_processed;
			if ((int32) SPI_processed < n)
				break;
		}
		if (stream_removed > 0)
			ep_ret_drop_snapshots(DatumGetTextPP(args[0]));
	}

	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_INT64(removed);
}

/*
 * ep.redact_stream(stream_id, reason): returns the number of events whose
 * payload was replaced.
 */
PG_FUNCTION_INFO_V1(ep_redact_stream);
Datum
ep_redact_stream(PG_FUNCTION_ARGS)
{
	text	   *stream;
	text	   *reason;
	EpSavedUser saved;
	Oid			argt[3] = {TEXTOID, TEXTOID, NAMEOID};
	Datum		args[3];
	bool		isnull;
	int64		redaction_id;
	uint64		n;
	int			ret;

	ep_replica_check_writable("ep.redact_stream");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be null")));
	if (PG_ARGISNULL(1) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(1)) == 0)
		ereport(ERROR,
				(errcode(PG_ARGISNULL(1) ? ERRCODE_NULL_VALUE_NOT_ALLOWED : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a redaction needs a reason"),
				 errhint("Give the reason, e.g. the reference of the data-protection request.")));
	stream = PG_GETARG_TEXT_PP(0);
	reason = PG_GETARG_TEXT_PP(1);
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("ep.redact_stream must run in a READ COMMITTED transaction"),
				 errdetail("It must see and delete every snapshot committed before it."),
				 errhint("Run it outside a REPEATABLE READ or SERIALIZABLE transaction.")));

	ep_catalog();
	ep_category_check_stream(stream, EP_CAT_ADMIN, "redact streams of");
	ep_become_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	args[0] = PointerGetDatum(stream);
	args[1] = PointerGetDatum(reason);
	args[2] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(saved.userid, false)));

	/*
	 * Serialize with appends, and give the stream's row a new version: a
	 * fold that read the stream before will not write a snapshot of the
	 * old payloads (see aggregate.c).
	 */
	if (SPI_execute_with_args("SELECT 1 FROM ep.streams WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							  1, argt, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "stream lookup failed");
	if (SPI_processed > 0 &&
		SPI_execute_with_args("UPDATE ep.streams SET updated_at = pg_catalog.now() "
							  "WHERE stream_id OPERATOR(pg_catalog.=) $1",
							  1, argt, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "stream update failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream \"%s\" does not exist", text_to_cstring(stream))));

	if (SPI_execute_with_args("INSERT INTO ep.redactions (stream_id, reason, redacted_by) "
							  "VALUES ($1, $2, $3) RETURNING redaction_id",
							  3, argt, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "redaction insert failed");
	redaction_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	{
		Oid			uargt[2] = {TEXTOID, INT8OID};
		Datum		uargs[2];

		uargs[0] = PointerGetDatum(stream);
		uargs[1] = Int64GetDatum(redaction_id);
		ret = ep_spi_execute_internal(ep_spi_keep_plan(&plan_redact,
													   "UPDATE ep.events SET data = '{\"redacted\": true}'::pg_catalog.jsonb, "
													   "metadata = pg_catalog.jsonb_build_object('redacted', true, "
													   "'redaction_id', $2, 'redacted_at', pg_catalog.now()) "
													   "WHERE stream_id OPERATOR(pg_catalog.=) $1",
													   2, uargt),
									  uargs, NULL);
		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "redaction update failed: %s", SPI_result_code_string(ret));
		n = SPI_processed;
		uargs[1] = Int64GetDatum(redaction_id);
		{
			Oid			cargt[2] = {INT8OID, INT8OID};
			Datum		cargs[2];

			cargs[0] = Int64GetDatum(redaction_id);
			cargs[1] = Int64GetDatum((int64) n);
			if (SPI_execute_with_args("UPDATE ep.redactions SET events = $2 "
									  "WHERE redaction_id OPERATOR(pg_catalog.=) $1",
									  2, cargt, cargs, NULL, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "redaction update failed");
		}
	}
	ep_ret_drop_snapshots(stream);

	SPI_finish();
	ep_restore_user(&saved);
	PG_RETURN_INT32((int32) n);
}
