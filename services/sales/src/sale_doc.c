/*  =========================================================================
    sale_doc.c - decoding a sale document into a pos_sale_t (see sale_doc.h)

    The decoder is a table-free sequence of typed getters on purpose: each
    field names its key, its bound and whether it is required in one line,
    so the wire format of docs/protocol.md can be read off this file. A
    missing optional key keeps the zero that pos_sale_init left; a present
    key of the wrong type is refused rather than ignored, because a register
    that sends `voided: "yes"` has a bug that should not be committed as a
    live line.
    =========================================================================
*/
#include "sale_doc.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define S_PREFIX_MAX 32 /* "line 999: ", "tender 15: " */

/*  A string under key into field (max bytes + NUL). Absent: "" when optional, an error when
    required. Present: must be a string of at most max bytes with no NUL inside. */
static int s_get_str(const bus_val_t *map, const char *key, char *field, size_t max, bool required,
                     const char *where, char *why, size_t size)
{
    bus_val_t *v = bus_val_map_get(map, key);
    size_t len = 0;
    const char *s = v ? bus_val_get_str(v, &len) : NULL;
    if (!v && !required) {
        field[0] = '\0';
        return 0;
    }
    if (!s || len > max || strlen(s) != len) {
        snprintf(why, size, "%s%s must be a string of at most %zu bytes", where, key, max);
        return -1;
    }
    memcpy(field, s, len + 1);
    return 0;
}

/*  An integer under key into *out; absent leaves *out when optional. */
static int s_get_int(const bus_val_t *map, const char *key, int64_t *out, bool required,
                     const char *where, char *why, size_t size)
{
    bus_val_t *v = bus_val_map_get(map, key);
    if (!v && !required)
        return 0;
    if (!bus_val_get_int(v, out)) {
        snprintf(why, size, "%s%s must be an integer", where, key);
        return -1;
    }
    return 0;
}

static int s_get_bool(const bus_val_t *map, const char *key, bool *out, const char *where,
                      char *why, size_t size)
{
    bus_val_t *v = bus_val_map_get(map, key);
    if (v && !bus_val_get_bool(v, out)) {
        snprintf(why, size, "%s%s must be true or false", where, key);
        return -1;
    }
    return 0;
}

static int s_decode_line(const bus_val_t *m, pos_line_t *l, const char *where, char *why,
                         size_t size)
{
    char unit[4];
    int64_t rate = 0;
    if (bus_val_type(m) != BUS_VAL_MAP) {
        snprintf(why, size, "%sa line must be a map", where);
        return -1;
    }
    if (s_get_str(m, "sku", l->item.sku, POS_SKU_MAX, true, where, why, size) ||
        s_get_str(m, "name", l->item.name, POS_NAME_MAX, false, where, why, size) ||
        s_get_str(m, "category", l->item.category, POS_CATEGORY_MAX, false, where, why, size) ||
        s_get_str(m, "unit", unit, sizeof(unit) - 1, true, where, why, size) ||
        s_get_str(m, "return_of", l->return_of, POS_SALE_ID_MAX, false, where, why, size) ||
        s_get_str(m, "promo_id", l->promo_id, POS_PROMO_ID_MAX, false, where, why, size) ||
        s_get_int(m, "qty", &l->qty, true, where, why, size) ||
        s_get_int(m, "unit_price", &l->unit_price, true, where, why, size) ||
        s_get_int(m, "gross", &l->gross, true, where, why, size) ||
        s_get_int(m, "promo_discount", &l->promo_discount, true, where, why, size) ||
        s_get_int(m, "ticket_discount", &l->ticket_discount, true, where, why, size) ||
        s_get_int(m, "amount", &l->amount, true, where, why, size) ||
        s_get_int(m, "tax", &l->tax, true, where, why, size) ||
        s_get_int(m, "tax_rate_bp", &rate, true, where, why, size) ||
        s_get_bool(m, "voided", &l->voided, where, why, size))
        return -1;
    if (strcmp(unit, "pcs") != 0 && strcmp(unit, "kg") != 0) {
        snprintf(why, size, "%sunit must be pcs or kg", where);
        return -1;
    }
    /* consumers test these by presence: an empty one would make a sale line look like a return
       (or carry a promotion) to them while it is none here */
    if ((bus_val_map_get(m, "return_of") && !l->return_of[0]) ||
        (bus_val_map_get(m, "promo_id") && !l->promo_id[0])) {
        snprintf(why, size, "%sreturn_of and promo_id, when present, must not be empty", where);
        return -1;
    }
    if (rate < 0 || rate > POS_BP_100PCT) {
        snprintf(why, size, "%stax_rate_bp %" PRId64 " outside 0..%d", where, rate, POS_BP_100PCT);
        return -1;
    }
    l->item.unit = strcmp(unit, "kg") == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
    l->item.tax_rate_bp = (int)rate;
    l->is_return = l->return_of[0] != '\0';
    return 0;
}

static int s_decode_tender(const bus_val_t *m, pos_tender_t *t, const char *where, char *why,
                           size_t size)
{
    char kind[16];
    if (bus_val_type(m) != BUS_VAL_MAP) {
        snprintf(why, size, "%sa tender must be a map", where);
        return -1;
    }
    if (s_get_str(m, "kind", kind, sizeof(kind) - 1, true, where, why, size) ||
        s_get_int(m, "amount", &t->amount, true, where, why, size))
        return -1;
    int k = pos_tender_parse(kind);
    if (k < 0) {
        snprintf(why, size, "%skind must be cash, card, wechat, alipay, stored_value or other",
                 where);
        return -1;
    }
    t->kind = (pos_tender_kind_t)k;
    return 0;
}

/*  The header fields; the arrays' sizes are checked before anything is allocated. */
static int s_decode_header(const bus_val_t *doc, pos_sale_t *sale, char *why, size_t size)
{
    char kind[8];
    if (s_get_str(doc, "sale_id", sale->sale_id, POS_SALE_ID_MAX, true, "", why, size) ||
        s_get_str(doc, "store", sale->store, POS_STORE_ID_MAX, true, "", why, size) ||
        s_get_str(doc, "register", sale->reg, POS_STORE_ID_MAX, true, "", why, size) ||
        s_get_str(doc, "cashier", sale->cashier, sizeof(sale->cashier) - 1, true, "", why, size) ||
        s_get_str(doc, "kind", kind, sizeof(kind) - 1, true, "", why, size) ||
        s_get_int(doc, "seq", &sale->seq, true, "", why, size) ||
        s_get_int(doc, "ts", &sale->ts, true, "", why, size) ||
        s_get_int(doc, "total", &sale->total, true, "", why, size) ||
        s_get_int(doc, "change", &sale->change, false, "", why, size) ||
        s_get_int(doc, "cash_rounding", &sale->cash_rounding, false, "", why, size))
        return -1;
    int k = pos_sale_kind_parse(kind);
    if (k < 0) {
        snprintf(why, size, "kind must be sale, return or nosale");
        return -1;
    }
    sale->kind = (pos_sale_kind_t)k;
    return 0;
}

int sales_doc_decode(const bus_val_t *doc, pos_sale_t *sale, char *why, size_t size)
{
    pos_sale_clear(sale);
    if (bus_val_type(doc) != BUS_VAL_MAP) {
        snprintf(why, size, "a sale document is a map");
        return -1;
    }
    bus_val_t *lines = bus_val_map_get(doc, "lines");
    bus_val_t *tenders = bus_val_map_get(doc, "tenders");
    if (bus_val_type(lines) != BUS_VAL_ARR || bus_val_size(lines) > POS_SALE_LINES_MAX ||
        bus_val_type(tenders) != BUS_VAL_ARR || bus_val_size(tenders) > POS_SALE_TENDERS_MAX) {
        snprintf(why, size, "lines (an array of at most %d) and tenders (at most %d) required",
                 POS_SALE_LINES_MAX, POS_SALE_TENDERS_MAX);
        return -1;
    }
    if (s_decode_header(doc, sale, why, size) != 0)
        return -1;
    if (pos_sale_set_lines(sale, (int)bus_val_size(lines)) != POS_OK) {
        snprintf(why, size, "out of memory for %zu lines", bus_val_size(lines));
        return -1;
    }
    char where[S_PREFIX_MAX];
    for (int i = 0; i < sale->nlines; i++) {
        snprintf(where, sizeof(where), "line %d: ", i);
        if (s_decode_line(bus_val_arr_get(lines, (size_t)i), &sale->lines[i], where, why, size) !=
            0)
            return -1;
    }
    sale->ntenders = (int)bus_val_size(tenders);
    for (int i = 0; i < sale->ntenders; i++) {
        snprintf(where, sizeof(where), "tender %d: ", i);
        if (s_decode_tender(bus_val_arr_get(tenders, (size_t)i), &sale->tenders[i], where, why,
                            size) != 0)
            return -1;
    }
    return 0;
}

int sales_doc_commit_keys(const pos_sale_t *sale, sales_commit_keys_t *out, char *why, size_t size)
{
    char(*k)[BUS_KEY_MAX] = out->keys;
    out->nkeys = 0;
    out->noriginals = pos_sale_originals(sale, false, out->originals, POS_SALE_ORIGINALS_MAX);
    if (out->noriginals < 0) {
        snprintf(why, size, "a return may refer to at most %d original sales",
                 POS_SALE_ORIGINALS_MAX);
        return -1;
    }
    bool built = bus_key_sale(k[SALES_KEY_SALE], sale->store, sale->sale_id) &&
                 snprintf(k[SALES_KEY_STREAM], BUS_KEY_MAX, "%s", BUS_KEY_SALES_STREAM) > 0 &&
                 bus_key_regseq(k[SALES_KEY_REGSEQ], sale->store) &&
                 bus_key_regpend(k[SALES_KEY_REGPEND], sale->store, sale->reg) &&
                 bus_key_bday(k[SALES_KEY_BDAY], sale->store) &&
                 bus_key_review(k[SALES_KEY_REVIEW], sale->store);
    for (int i = 0; built && i < out->noriginals; i++)
        built = bus_key_sale(k[SALES_KEYS_FIXED + 2 * i], sale->store, out->originals[i]) &&
                bus_key_returned(k[SALES_KEYS_FIXED + 2 * i + 1], sale->store, out->originals[i]);
    if (!built) {
        snprintf(why, size, "a key of sale %.48s does not fit %d bytes", sale->sale_id,
                 BUS_KEY_MAX);
        return -1;
    }
    out->nkeys = SALES_KEYS_FIXED + 2 * out->noriginals;
    return 0;
}

/*  Index (1-based) of original id among the keys' originals, 0 if absent. */
static int s_original_index(const sales_commit_keys_t *keys, const char *id)
{
    for (int i = 0; i < keys->noriginals; i++)
        if (strcmp(keys->originals[i], id) == 0)
            return i + 1;
    return 0;
}

int sales_doc_returns(const pos_sale_t *sale, const sales_commit_keys_t *keys, bus_buf_t *buf)
{
    bus_val_t *list = bus_val_new_arr();
    int rc = list ? 0 : -1;
    for (int i = 0; rc == 0 && i < sale->nlines; i++) {
        const pos_line_t *l = &sale->lines[i];
        if (!l->is_return || l->voided)
            continue;
        int o = s_original_index(keys, l->return_of);
        bus_val_t *row = bus_val_new_arr();
        bus_val_t *items[] = {bus_val_new_int(o),
                              bus_val_new_str(l->item.sku),
                              bus_val_new_str(l->item.unit == POS_UNIT_KG ? "kg" : "pcs"),
                              bus_val_new_int(-l->qty),
                              bus_val_new_int(-l->amount),
                              bus_val_new_int(l->unit_price)};
        for (size_t k = 0; k < sizeof(items) / sizeof(items[0]); k++)
            if (!row || !items[k] || bus_val_arr_push(row, &items[k]) != 0)
                rc = -1;
        for (size_t k = 0; k < sizeof(items) / sizeof(items[0]); k++)
            bus_val_destroy(&items[k]);
        if (rc != 0 || o == 0 || bus_val_arr_push(list, &row) != 0)
            rc = -1;
        bus_val_destroy(&row);
    }
    if (rc == 0)
        rc = bus_val_encode(list, buf);
    bus_val_destroy(&list);
    return rc;
}
