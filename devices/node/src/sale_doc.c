/*  =========================================================================
    sale_doc.c - a completed sale as the MessagePack sale document

    Key names and types are the wire contract of docs/protocol.md; the
    sales service's decoder (services/sales/src/sale_doc.c) is the other
    half and its tests feed it documents built here.
    =========================================================================
*/
#include "node/sale_doc.h"

static bus_val_t *s_line(const pos_line_t *l)
{
    bus_val_t *line = bus_val_new_map();
    if (!line)
        return NULL;
    int rc = bus_val_map_set_str(line, "sku", l->item.sku) |
             bus_val_map_set_str(line, "name", l->item.name) |
             bus_val_map_set_str(line, "category", l->item.category) |
             bus_val_map_set_int(line, "qty", l->qty) |
             bus_val_map_set_str(line, "unit", l->item.unit == POS_UNIT_KG ? "kg" : "pcs") |
             bus_val_map_set_int(line, "unit_price", l->unit_price) |
             bus_val_map_set_int(line, "gross", l->gross) |
             bus_val_map_set_int(line, "promo_discount", l->promo_discount) |
             bus_val_map_set_int(line, "ticket_discount", l->ticket_discount) |
             bus_val_map_set_int(line, "amount", l->amount) |
             bus_val_map_set_int(line, "tax", l->tax) |
             bus_val_map_set_int(line, "tax_rate_bp", l->item.tax_rate_bp);
    if (l->voided)
        rc |= bus_val_map_set_bool(line, "voided", true);
    if (l->is_return)
        rc |= bus_val_map_set_str(line, "return_of", l->return_of);
    if (l->promo_id[0])
        rc |= bus_val_map_set_str(line, "promo_id", l->promo_id);
    if (rc != 0)
        bus_val_destroy(&line);
    return line;
}

bus_val_t *node_sale_doc(const pos_sale_t *sale)
{
    bus_val_t *doc = bus_val_new_map();
    bus_val_t *lines = bus_val_new_arr();
    bus_val_t *tenders = bus_val_new_arr();
    if (!doc || !lines || !tenders)
        goto fail;
    int rc = bus_val_map_set_str(doc, "sale_id", sale->sale_id) |
             bus_val_map_set_str(doc, "store", sale->store) |
             bus_val_map_set_str(doc, "register", sale->reg) |
             bus_val_map_set_int(doc, "seq", sale->seq) |
             bus_val_map_set_str(doc, "cashier", sale->cashier) |
             bus_val_map_set_int(doc, "ts", sale->ts) |
             bus_val_map_set_str(doc, "kind", pos_sale_kind_name(sale->kind));
    for (int i = 0; i < sale->nlines && rc == 0; i++) {
        bus_val_t *line = s_line(&sale->lines[i]);
        rc = line ? bus_val_arr_push(lines, &line) : -1;
    }
    for (int i = 0; i < sale->ntenders && rc == 0; i++) {
        bus_val_t *t = bus_val_new_map();
        rc = !t || bus_val_map_set_str(t, "kind", pos_tender_name(sale->tenders[i].kind)) ||
             bus_val_map_set_int(t, "amount", sale->tenders[i].amount) ||
             bus_val_arr_push(tenders, &t);
        bus_val_destroy(&t);
    }
    if (rc != 0 || bus_val_map_set(doc, "lines", &lines) != 0 ||
        bus_val_map_set(doc, "tenders", &tenders) != 0 ||
        bus_val_map_set_int(doc, "total", sale->total) != 0 ||
        bus_val_map_set_int(doc, "change", sale->change) != 0 ||
        bus_val_map_set_int(doc, "cash_rounding", sale->cash_rounding) != 0)
        goto fail;
    return doc;
fail:
    bus_val_destroy(&doc);
    bus_val_destroy(&lines);
    bus_val_destroy(&tenders);
    return NULL;
}
