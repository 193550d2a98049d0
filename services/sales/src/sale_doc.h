/*  =========================================================================
    sale_doc.h - a sale document off the wire, as a typed libpos sale

    The sale document (docs/protocol.md) arrives as a MessagePack map. It is
    read here exactly once into a pos_sale_t; from then on the service works
    on the typed sale (pos_sale_check, review flags, the commit script's
    keys and arguments) and never on the map again. libpos knows nothing of
    MessagePack, which is why this lives in the service.

    Every size is checked before anything is copied or allocated: at most
    POS_SALE_LINES_MAX lines and POS_SALE_TENDERS_MAX tenders, every string
    within its field (and free of NUL bytes), every integer within the range
    of the field it lands in. Thread-safe: no shared state.
    =========================================================================
*/
#ifndef SALES_SALE_DOC_H_INCLUDED
#define SALES_SALE_DOC_H_INCLUDED

#include <bus/keys.h>
#include <bus/val.h>
#include <pos/sale.h>

/* Keys of the commit script before the per-original pairs (see lua/commit.lua). */
#define SALES_KEY_SALE        0
#define SALES_KEY_STREAM      1
#define SALES_KEY_REGSEQ      2
#define SALES_KEY_REGPEND     3
#define SALES_KEY_BDAY        4
#define SALES_KEY_REVIEW      5
#define SALES_KEYS_FIXED      6
#define SALES_COMMIT_KEYS_MAX (SALES_KEYS_FIXED + 2 * POS_SALE_ORIGINALS_MAX)

/* What the commit script of one sale gets as KEYS, plus the original sales its live return
   lines name (borrowed from the sale, which must outlive this). */
typedef struct {
    char keys[SALES_COMMIT_KEYS_MAX][BUS_KEY_MAX];
    int nkeys;
    const char *originals[POS_SALE_ORIGINALS_MAX];
    int noriginals;
} sales_commit_keys_t;

/* Read the sale document doc into sale (initialised; its lines are replaced). 0, or -1 with a
   one-line reason in why when a key is missing, of the wrong type or too large. The values are
   not checked against each other here: that is pos_sale_check's job. */
int sales_doc_decode(const bus_val_t *doc, pos_sale_t *sale, char *why, size_t size);

/* Build the commit script's keys for a sale that passed pos_sale_check: the fixed keys above,
   then (original sale hash, returned hash) per distinct original of a live return line. 0, or
   -1 with a reason if the sale names too many originals or a key does not fit. */
int sales_doc_commit_keys(const pos_sale_t *sale, sales_commit_keys_t *out, char *why, size_t size);

/* Encode the live return lines for the commit script as a MessagePack array of
   [original index (1-based, into out->originals), sku, unit ("pcs"/"kg"), quantity returned
   (> 0), amount refunded (> 0 fen or 0), refunded per unit (unit_price)], appended to buf.
   0, or -1 on allocation failure or a line whose original is not among the keys. */
int sales_doc_returns(const pos_sale_t *sale, const sales_commit_keys_t *keys, bus_buf_t *buf);

#endif
