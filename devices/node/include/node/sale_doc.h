/*  =========================================================================
    node/sale_doc.h - a completed sale as the MessagePack sale document

    The register builds a libpos sale (pos_sale_from_ticket) and turns it
    into the sale document of docs/protocol.md ("The sale document") here:
    the map it journals and uploads to sales' sale.upload. The sales service
    reads the same document back with its own decoder and checks it with
    the same libpos rules. Thread-safe: no shared state.
    =========================================================================
*/
#ifndef NODE_SALE_DOC_H_INCLUDED
#define NODE_SALE_DOC_H_INCLUDED

#include <bus/val.h>
#include <pos/sale.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  The sale document of sale: sale_id, store, register, seq, cashier, ts, kind, lines
    (voided, return_of and promo_id only when set), tenders, total, change, cash_rounding.
    NULL on allocation failure. */
bus_val_t *node_sale_doc(const pos_sale_t *sale);

#ifdef __cplusplus
}
#endif
#endif
