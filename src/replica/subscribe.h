/*-------------------------------------------------------------------------
 *
 * subscribe.h
 *	  Native logical-replication subscriptions managed by the extension
 *	  (src/replica/subscribe.c): one call creates a subscription together
 *	  with its replication slot on the publisher, one call drops both.
 *	  Works also when publisher and subscriber are databases of the same
 *	  cluster, where CREATE SUBSCRIPTION with create_slot = true hangs.
 *
 * Generic: knows nothing about the event store; read nodes (follow_store)
 * and service channels (subscribe_channel) build on it.
 *
 * Who may call: the *current user* must be a superuser (PostgreSQL 15
 * has no pg_create_subscription role, and a subscription is owned by its
 * creator and connects wherever its conninfo says).  Call these functions
 * before switching to the extension owner (ep_become_owner), so that the
 * check sees the real caller, and expose them in SQL only through
 * functions that are not granted to PUBLIC.  Refused inside a
 * security-restricted operation (owner code must not create
 * subscriptions).
 *
 * Transactions: see the comment at the top of subscribe.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef EP_REPLICA_SUBSCRIBE_H
#define EP_REPLICA_SUBSCRIBE_H

#include "postgres.h"

/*
 * Create subscription "subname" in the current database, connected with
 * "conninfo" to publication "publication", its slot created beforehand
 * on the publisher (name: ep_native_slot_name(subname)).  copy_data as
 * in CREATE SUBSCRIPTION; binary as there too (changes travel in the
 * types' binary send/receive format, cheaper to produce and apply than
 * text, when both sides have the same types).  origin_option: NULL, or
 * "any" (the only behaviour PostgreSQL 15 has; "none" needs 16 and is
 * refused here).
 * The subscription starts enabled, streaming once the transaction
 * commits.
 */
extern void ep_native_subscribe(const char *subname, const char *conninfo,
								const char *publication, bool copy_data,
								bool binary, const char *origin_option);

/*
 * Drop subscription "subname" of the current database and its slot on
 * the publisher.  Returns false when it does not exist and missing_ok.
 * If the publisher cannot be reached the subscription is still dropped
 * and a WARNING names the slot left behind there.
 */
extern bool ep_native_unsubscribe(const char *subname, bool missing_ok);

/*
 * The slot part alone, for callers that create or drop the subscription
 * themselves (service channels: the slot must exist before the messages
 * are copied, and its name is the channel's).  No privilege check: the
 * caller must have made the one above, or run as a role that passed it.
 *
 * ep_native_create_slot creates a pgoutput slot on the publisher now,
 * refused (with a hint) in a transaction that has written when the
 * publisher is a database of this cluster; if the transaction or the
 * subtransaction that called it aborts, the slot is dropped again.
 * ep_native_drop_slot_at_commit drops the slot just before this
 * transaction commits (a slot that does not exist counts as dropped; an
 * unreachable publisher gives a WARNING naming the slot).
 */
extern void ep_native_create_slot(const char *conninfo, const char *slot);
extern void ep_native_drop_slot_at_commit(const char *conninfo, const char *slot);

/*
 * The connection string the extension owner uses on caller's behalf
 * (ep.subscribe_channel). For a superuser: conninfo. For any other role
 * the server's own identity (peer, trust, a .pgpass, client certificate
 * or Kerberos credentials of the OS user) must never be lent: conninfo
 * must carry a password, name one server by numeric address or by a
 * socket directory nobody else can write to (a later connection cannot
 * land elsewhere), and only allowed options; the result adds options that present no credential of the OS
 * user, and a test connection (interruptible) checks that the producer
 * asked for the password.
 */
extern char *ep_native_caller_conninfo(Oid caller, const char *conninfo);

/* conninfo as keyword='value' pairs without its passwords, to show */
extern char *ep_native_conninfo_shown(const char *conninfo);

/* Name of the publisher-side slot ep_native_subscribe uses for subname. */
extern char *ep_native_slot_name(const char *subname);

#endif							/* EP_REPLICA_SUBSCRIBE_H */
