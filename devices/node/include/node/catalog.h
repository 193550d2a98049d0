/*  =========================================================================
    node/catalog.h - the register's catalog replica

    posnode prices from this replica and never asks the back office while
    a cashier scans: a lookup by SKU, barcode or in-store scale label is a
    hash probe in memory. The replica is filled from inventory's
    catalog.snapshot (node_catalog_sync), saved to a local file after every
    sync (node_catalog_save) and read back at start (node_catalog_load), so
    a register started while the back office is down sells at the last
    prices it knew. inventory bumps the catalog version on every change and
    publishes catalog.changed {version}; the caller resyncs when
    node_catalog_stale says the event is newer than the replica.

    Sync and load build a complete new table and swap it in only when it is
    whole: a failed sync or a refused file leaves the catalog as it was.
    The file format and the sync rules are in docs/catalog-replica.md.

    Items returned by lookups point into the current table: they stay valid
    until the next successful sync, load or put, or destroy. Not
    thread-safe: one catalog, one thread. Never prints.
    =========================================================================
*/
#ifndef NODE_CATALOG_H_INCLUDED
#define NODE_CATALOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/client.h>
#include <pos/barcode.h>
#include <pos/ticket.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_CATALOG_CODE_MAX   32      /* bytes of a SKU or barcode (inventory's limit) */
#define NODE_CATALOG_UNIT_MAX   16      /* bytes of a unit ("pcs", "kg") */
#define NODE_CATALOG_ITEMS_MAX  2000000 /* items a replica holds; more is refused */
#define NODE_CATALOG_FORMAT     1       /* the file format this code writes and reads */
#define NODE_CATALOG_REASON_MAX 240     /* an errstr fits in this many bytes */

typedef struct node_catalog_t node_catalog_t;

/*  One catalog item, as inventory's catalog.snapshot serves it (supplier and threshold are
    the back office's business and are not kept). Strings are NUL-terminated UTF-8; when the
    item comes from the catalog they point into it (see the lifetime rule above). */
typedef struct {
    const char *sku;      /* 1-32 letters, digits, '_', '-', '.' */
    const char *barcode;  /* "" when the item has none (weighed items usually) */
    const char *name;     /* at most POS_NAME_MAX bytes */
    const char *unit;     /* "pcs", "kg": "kg" items are sold by weight */
    const char *category; /* at most POS_CATEGORY_MAX bytes */
    int64_t price;        /* fen per piece, or per kg; >= 0 */
    int64_t member_price; /* fen; 0 = no member price */
    int tax_rate_bp;      /* 0..10000; 1300 = 13% */
    bool active;          /* false: delisted; still found, posnode refuses to sell it */
} node_catalog_item_t;

/*  What a lookup decoded from an in-store scale label (pos/barcode.h), when the code was one. */
typedef enum {
    NODE_CATALOG_PLAIN = 0,
    NODE_CATALOG_LABEL_PRICE,
    NODE_CATALOG_LABEL_WEIGHT
} node_catalog_code_kind_t;

typedef struct {
    node_catalog_code_kind_t kind; /* PLAIN: a SKU or a barcode of the catalog */
    int64_t value;                 /* LABEL_PRICE: fen printed; LABEL_WEIGHT: grams; else 0 */
} node_catalog_code_t;

/*  A new empty catalog (version 0) reading scale labels with the default layout
    "PPIIIIIVVVVVC", prefixes 20-29, price labels. NULL on allocation failure. */
node_catalog_t *node_catalog_new(void);

/*  Free the catalog (NULL-safe) and set *self_p to NULL. */
void node_catalog_destroy(node_catalog_t **self_p);

/*  Set the store's scale-label layout (copied). Lookups after this read labels with it. */
void node_catalog_set_label_layout(node_catalog_t *self, const pos_label_layout_t *layout);

/*  The item for code, or NULL. code is tried, in order, as a SKU, as a barcode, then as an
    in-store label of the layout (EAN-13, check digit right, prefix matching): the label's item
    digits name the SKU, as printed ("01234") or without leading zeros ("1234"). *what (may be
    NULL) says which and carries the label's price or weight. Constant expected time; never
    allocates. */
const node_catalog_item_t *node_catalog_lookup(const node_catalog_t *self, const char *code,
                                               node_catalog_code_t *what);

/*  Add item (copied), or replace the item with its SKU. 0, or -1 (errstr says why): an invalid
    field, ENOMEM, or NODE_CATALOG_ITEMS_MAX reached. For tests and tools; the register's
    catalog comes from sync and load. */
int node_catalog_put(node_catalog_t *self, const node_catalog_item_t *item);

/*  The version of the catalog held: the back office's catalog version it was copied from
    (0: never synced, and nothing loaded). set_version is for tests and tools. */
int64_t node_catalog_version(const node_catalog_t *self);
void node_catalog_set_version(node_catalog_t *self, int64_t version);

/*  Number of items, and item index (0..count-1; in SKU byte order after a sync or load), or
    NULL out of range. */
size_t node_catalog_count(const node_catalog_t *self);
const node_catalog_item_t *node_catalog_item(const node_catalog_t *self, size_t index);

/*  True when the back office announced a version newer than the replica's (catalog.changed
    carries it): the caller should sync. */
bool node_catalog_stale(const node_catalog_t *self, int64_t version);

/*  Copy the whole catalog from inventory through client: catalog.snapshot page by page into a
    new table, swapped in only when the last page has arrived and every item is valid. The
    version becomes the snapshot's (of its first page: if the catalog changed during the walk,
    every item is at least that new and the next catalog.changed is above it, so the caller
    syncs again). *changed (may be NULL) gets the number of items added or different from
    before. 0, or -1 with errstr (the request that failed, or the item that was refused) and
    the catalog unchanged. Takes as long as the pages take: about 1 s per 100k items. */
int node_catalog_sync(node_catalog_t *self, bus_client_t *client, int64_t *changed);

/*  Write the catalog to path atomically: PATH.tmp written, fsync()ed, renamed over path, the
    directory fsync()ed; a crash leaves the old file or the new one, never a mix. 0, or -1 with
    errno and errstr. */
int node_catalog_save(node_catalog_t *self, const char *path);

/*  Replace the catalog with the one saved at path. The file is checked whole (format,
    lengths, SHA-256, every item) before anything is replaced; a refused file (empty,
    truncated, damaged, another format, invalid items) leaves the catalog as it was and
    returns -1 with errstr saying why (errno: ENOENT and the like when it cannot be read,
    EBADMSG when its content is refused). No length read from the file is trusted for an
    allocation: the file is read whole, bounded by its size on disk. */
int node_catalog_load(node_catalog_t *self, const char *path);

/*  Why the last put, sync, save or load failed ("" after a success). */
const char *node_catalog_errstr(const node_catalog_t *self);

/*  Fill a libpos item for the ticket from a catalog item (unit "kg" is POS_UNIT_KG). */
void node_catalog_to_pos(const node_catalog_item_t *item, pos_item_t *out);

#ifdef __cplusplus
}
#endif
#endif
