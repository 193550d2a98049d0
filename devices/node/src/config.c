/*  =========================================================================
    config.c - the register's configuration from the devices service

    The document comes from the back office, but posnode still checks every
    field it relies on (a broken document must not take a till down): the
    cashier rows go through node_session_load's own checks later, and here
    through the same field rules, so a refusal names the row.
    =========================================================================
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pos/sale.h>
#include <pos/text.h>

#include "node/config.h"
#include "node/file.h"

static int s_fail(char *why, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_fail(char *why, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, size, fmt, ap);
    va_end(ap);
    return -1;
}
#define S_FAIL(...) s_fail(why, size, __VA_ARGS__)

void node_config_init(node_config_t *self)
{
    memset(self, 0, sizeof(*self));
    self->discount_cap_bp = NODE_CONFIG_DISCOUNT_CAP;
}

void node_config_clear(node_config_t *self)
{
    free(self->cashiers);
    node_config_init(self);
}

static int s_lines(const bus_val_t *doc, const char *key, char (*out)[POS_TEXT_BYTES(48) + 1],
                   int *n, char *why, size_t size)
{
    bus_val_t *arr = bus_val_map_get(doc, key);
    *n = 0;
    if (!arr)
        return 0;
    if (bus_val_type(arr) != BUS_VAL_ARR || bus_val_size(arr) > NODE_CONFIG_LINES_MAX)
        return S_FAIL("%s: an array of at most %d lines", key, NODE_CONFIG_LINES_MAX);
    for (size_t i = 0; i < bus_val_size(arr); i++) {
        const char *s = bus_val_get_str(bus_val_arr_get(arr, i), NULL);
        if (!s || !pos_text_ok(s, NODE_CONFIG_LINE_CHARS, false))
            return S_FAIL("%s[%zu]: text of at most %d characters", key, i, NODE_CONFIG_LINE_CHARS);
        snprintf(out[i], sizeof(out[i]), "%s", s);
        (*n)++;
    }
    return 0;
}

static int s_cashier(const bus_val_t *row, size_t i, node_cashier_t *c, char *why, size_t size)
{
    const char *id = bus_val_map_get_str(row, "id");
    const char *name = bus_val_map_get_str(row, "name");
    const char *role = bus_val_map_get_str(row, "role");
    const char *hash = bus_val_map_get_str(row, "pin_hash");
    bool active = true;
    bus_val_t *act = bus_val_map_get(row, "active");
    if (act && !bus_val_get_bool(act, &active))
        return S_FAIL("cashiers[%zu]: active must be a bool", i);
    if (!id || !pos_sale_id_ok(id, NODE_CASHIER_ID_MAX, ""))
        return S_FAIL("cashiers[%zu]: id must be 1-%d letters, digits or _", i,
                      NODE_CASHIER_ID_MAX);
    if (!name || !*name || strlen(name) > NODE_CASHIER_NAME_MAX || !pos_text_ok(name, 64, true))
        return S_FAIL("cashier %s: name must be 1-%d bytes of text", id, NODE_CASHIER_NAME_MAX);
    int r = role ? node_role_from_name(role) : -1;
    if (r < 0)
        return S_FAIL("cashier %s: role must be cashier, supervisor or manager", id);
    if (!hash || strlen(hash) >= NODE_PIN_HASH_MAX || !node_pin_hash_valid(hash))
        return S_FAIL("cashier %s: pin_hash is not a PIN hash this register can check", id);
    memset(c, 0, sizeof(*c));
    snprintf(c->id, sizeof(c->id), "%s", id);
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->pin_hash, sizeof(c->pin_hash), "%s", hash);
    c->role = (node_role_t)r;
    c->active = active;
    c->permissions = NODE_PERM_ROLE;
    bus_val_t *perms = bus_val_map_get(row, "permissions");
    if (perms && bus_val_type(perms) != BUS_VAL_NIL) {
        if (bus_val_type(perms) != BUS_VAL_ARR)
            return S_FAIL("cashier %s: permissions must be an array of action names", id);
        c->permissions = 0;
        for (size_t k = 0; k < bus_val_size(perms); k++) {
            const char *a = bus_val_get_str(bus_val_arr_get(perms, k), NULL);
            int action = a ? node_action_from_name(a) : -1;
            if (action < 0)
                return S_FAIL("cashier %s: unknown permission '%s'", id, a ? a : "?");
            c->permissions |= NODE_PERM(action);
        }
    }
    return 0;
}

static int s_int(const bus_val_t *row, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    *out = 0;
    bus_val_t *v = bus_val_map_get(row, key);
    if (!v)
        return 0;
    return bus_val_get_int(v, out) && *out >= lo && *out <= hi ? 0 : -1;
}

static int s_promo(const bus_val_t *row, size_t i, node_config_t *cfg, char *why, size_t size)
{
    static const char *const kinds[] = {"percent", "amount", "qty_break", "buy_x_get_y",
                                        "member_price"};
    const char *id = bus_val_map_get_str(row, "id");
    const char *kind = bus_val_map_get_str(row, "kind");
    const char *sku = bus_val_map_get_str(row, "sku");
    const char *cat = bus_val_map_get_str(row, "category");
    if (!id || !pos_sale_id_ok(id, POS_PROMO_ID_MAX, "-"))
        return S_FAIL("promotions[%zu]: bad id", i);
    int k = -1;
    for (int j = 0; kind && j < 5; j++)
        if (strcmp(kind, kinds[j]) == 0)
            k = j;
    if (k < 0)
        return S_FAIL("promotion %s: unknown kind", id);
    sku = sku ? sku : "";
    cat = cat ? cat : "";
    if ((*sku != '\0') == (*cat != '\0') || strlen(sku) > POS_SKU_MAX ||
        strlen(cat) > POS_CATEGORY_MAX || (*sku && !pos_sale_id_ok(sku, POS_SKU_MAX, "-.")))
        return S_FAIL("promotion %s: exactly one of sku and category", id);
    int64_t pct, amount, qty, free_qty, price, start, end;
    if (s_int(row, "percent_bp", 0, 10000, &pct) ||
        s_int(row, "amount", 0, POS_AMOUNT_MAX, &amount) ||
        s_int(row, "qty", 0, POS_QTY_MAX, &qty) ||
        s_int(row, "free_qty", 0, POS_QTY_MAX, &free_qty) ||
        s_int(row, "price", 0, POS_AMOUNT_MAX, &price) ||
        s_int(row, "start_ms", 0, INT64_MAX / 2, &start) ||
        s_int(row, "end_ms", 0, INT64_MAX / 2, &end) || (end != 0 && end <= start))
        return S_FAIL("promotion %s: a number out of range", id);
    if (k == 4) {
        if (!*sku || price <= 0 || cfg->nmember_prices >= POS_PROMOS_MAX)
            return S_FAIL("promotion %s: member_price needs a sku and a price", id);
        node_member_price_t *m = &cfg->member_prices[cfg->nmember_prices++];
        snprintf(m->id, sizeof(m->id), "%s", id);
        snprintf(m->sku, sizeof(m->sku), "%s", sku);
        m->price = price;
        m->start_ms = start;
        m->end_ms = end;
        return 0;
    }
    if ((k == 0 && pct < 1) || (k == 1 && amount < 1) || (k == 2 && (qty < 2 || amount < 1)) ||
        (k == 3 && (qty < 1 || free_qty < 1)))
        return S_FAIL("promotion %s: its %s amounts are missing", id, kind);
    if (cfg->npromos >= POS_PROMOS_MAX)
        return S_FAIL("more than %d promotions", POS_PROMOS_MAX);
    pos_promo_t *p = &cfg->promos[cfg->npromos++];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    snprintf(p->sku, sizeof(p->sku), "%s", sku);
    snprintf(p->category, sizeof(p->category), "%s", cat);
    p->kind = (pos_promo_kind_t)k;
    p->percent_bp = (int)pct;
    p->amount = amount;
    p->qty = (int)qty;
    p->free_qty = (int)free_qty;
    p->start_ms = start;
    p->end_ms = end;
    return 0;
}

int node_config_parse(const bus_val_t *doc, node_config_t *out, char *why, size_t size)
{
    if (bus_val_type(doc) != BUS_VAL_MAP)
        return S_FAIL("the configuration is not a map");
    node_config_t *cfg = malloc(sizeof(*cfg));
    if (!cfg)
        return S_FAIL("out of memory");
    node_config_init(cfg);
    int64_t v = 0;
    bool b = false;
    int rc = -1;
    if (!bus_val_map_get_int(doc, "version", &v) || v < 0) {
        S_FAIL("version: an int >= 0");
        goto out;
    }
    cfg->version = v;
    if (s_lines(doc, "receipt_header", cfg->header, &cfg->nheader, why, size) ||
        s_lines(doc, "receipt_footer", cfg->footer, &cfg->nfooter, why, size))
        goto out;
    if (bus_val_map_get(doc, "cash_rounding") && !bus_val_map_get_bool(doc, "cash_rounding", &b)) {
        S_FAIL("cash_rounding: a bool");
        goto out;
    }
    cfg->cash_rounding = b;
    const char *tax_id = bus_val_map_get_str(doc, "tax_id");
    if (tax_id && !pos_text_ok(tax_id, NODE_CONFIG_TAX_ID_CHARS, false)) {
        S_FAIL("tax_id: at most %d characters", NODE_CONFIG_TAX_ID_CHARS);
        goto out;
    }
    snprintf(cfg->tax_id, sizeof(cfg->tax_id), "%s", tax_id ? tax_id : "");
    if (bus_val_map_get(doc, "discount_cap_bp")) {
        if (!bus_val_map_get_int(doc, "discount_cap_bp", &v) || v < 0 || v > 10000) {
            S_FAIL("discount_cap_bp: 0..10000");
            goto out;
        }
        cfg->discount_cap_bp = (int)v;
    }
    bus_val_t *rows = bus_val_map_get(doc, "cashiers");
    if (rows &&
        (bus_val_type(rows) != BUS_VAL_ARR || bus_val_size(rows) > NODE_CASHIER_TABLE_MAX)) {
        S_FAIL("cashiers: an array of at most %d", NODE_CASHIER_TABLE_MAX);
        goto out;
    }
    size_t n = rows ? bus_val_size(rows) : 0;
    cfg->cashiers = calloc(n ? n : 1, sizeof(*cfg->cashiers));
    if (!cfg->cashiers) {
        S_FAIL("out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++, cfg->ncashiers++)
        if (s_cashier(bus_val_arr_get(rows, i), i, &cfg->cashiers[i], why, size) != 0)
            goto out;
    rows = bus_val_map_get(doc, "promotions");
    if (rows && bus_val_type(rows) != BUS_VAL_ARR) {
        S_FAIL("promotions: an array");
        goto out;
    }
    for (size_t i = 0; rows && i < bus_val_size(rows); i++)
        if (s_promo(bus_val_arr_get(rows, i), i, cfg, why, size) != 0)
            goto out;
    rows = bus_val_map_get(doc, "devices");
    if (rows &&
        (bus_val_type(rows) != BUS_VAL_ARR || bus_val_size(rows) > NODE_CONFIG_DEVICES_MAX)) {
        S_FAIL("devices: an array of at most %d", NODE_CONFIG_DEVICES_MAX);
        goto out;
    }
    for (size_t i = 0; rows && i < bus_val_size(rows); i++) {
        const bus_val_t *d = bus_val_arr_get(rows, i);
        const char *f[4] = {bus_val_map_get_str(d, "name"), bus_val_map_get_str(d, "driver"),
                            bus_val_map_get_str(d, "transport"), bus_val_map_get_str(d, "options")};
        node_device_cfg_t *dc = &cfg->devices[cfg->ndevices++];
        if (!f[0] || !f[1] || !f[2] || strlen(f[0]) >= sizeof(dc->name) ||
            strlen(f[1]) >= sizeof(dc->driver) || strlen(f[2]) >= sizeof(dc->transport) ||
            (f[3] && strlen(f[3]) >= sizeof(dc->options))) {
            S_FAIL("devices[%zu]: name, driver, transport (and options) of bounded length", i);
            goto out;
        }
        snprintf(dc->name, sizeof(dc->name), "%s", f[0]);
        snprintf(dc->driver, sizeof(dc->driver), "%s", f[1]);
        snprintf(dc->transport, sizeof(dc->transport), "%s", f[2]);
        snprintf(dc->options, sizeof(dc->options), "%s", f[3] ? f[3] : "");
    }
    node_config_clear(out);
    *out = *cfg;
    cfg->cashiers = NULL;
    rc = 0;
out:
    node_config_clear(cfg);
    free(cfg);
    return rc;
}

int node_config_save(const bus_val_t *doc, const char *path, char *why, size_t size)
{
    bus_buf_t buf = {0};
    if (bus_val_encode(doc, &buf) != 0) {
        bus_buf_free(&buf);
        return S_FAIL("cannot encode the configuration");
    }
    int rc = node_file_write(path, buf.data, buf.len, 1, why, size);
    bus_buf_free(&buf);
    return rc;
}

bus_val_t *node_config_load(const char *path, char *why, size_t size)
{
    uint8_t *data;
    size_t len;
    if (node_file_read(path, NODE_CONFIG_FILE_MAX, &data, &len, why, size) != 0)
        return NULL;
    bus_limits_t limits = {.max_size = NODE_CONFIG_FILE_MAX};
    bus_reject_t reason;
    bus_val_t *doc = bus_val_decode(data, len, &limits, &reason);
    free(data);
    if (!doc || bus_val_type(doc) != BUS_VAL_MAP) {
        snprintf(why, size, "%s: not a configuration (%s)", path,
                 doc ? "not a map" : bus_reject_name(reason));
        bus_val_destroy(&doc);
    }
    return doc;
}

int64_t node_config_member_price(const node_config_t *self, const char *sku, int64_t now_ms)
{
    for (int i = 0; i < self->nmember_prices; i++) {
        const node_member_price_t *m = &self->member_prices[i];
        /* the window rule of libpos's promotions: from start_ms on, until before end_ms
           (0: no end), so a member price and the promotions it runs beside agree */
        if (strcmp(m->sku, sku) == 0 && now_ms >= m->start_ms &&
            (m->end_ms == 0 || now_ms < m->end_ms))
            return m->price;
    }
    return 0;
}
