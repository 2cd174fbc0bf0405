/*
 * category.h
 *	  Category ownership (category.c): services sharing one event store,
 *	  each owning the streams of its categories.
 */
#ifndef EP_CATEGORY_H
#define EP_CATEGORY_H

#include "postgres.h"

/* privileges on an owned category */
#define EP_CAT_READ		0x01
#define EP_CAT_APPEND	0x02
#define EP_CAT_ADMIN	0x04		/* delete, metadata, redact */

/* True when some category has an owner (false on a 0.1 database). */
extern bool ep_category_any(void);

/* May role use the category (bytes cat[0..len)) with priv? */
extern bool ep_category_allowed(Oid role, const char *cat, int len, int priv);

/*
 * Raise 42501 unless the current user may use the stream's category with
 * priv; action names the operation in the message ("append to").
 */
extern void ep_category_check_stream(text *stream, int priv, const char *action);

/* Raise 42501 unless role may use the category with priv. */
extern void ep_category_check(Oid role, const char *cat, int len, int priv,
							  const char *action);

/*
 * The owned categories role may not read, palloc'd in the current memory
 * context (*n of them); NULL when there are none.
 */
extern text **ep_category_hidden(Oid role, int *n);

/* Is the category (a text datum) among hidden[0..n)? */
extern bool ep_category_in(text **hidden, int n, text *category);

#endif							/* EP_CATEGORY_H */
