/*  test_till - the till without a network: selling, numbering, permissions, shift reports,
    and journal segments (rotation after a Z report, retention, a crash inside a rotation).

    A real journal in a temporary directory, a real catalog and real scrypt PIN hashes; the
    back office is absent (the request hook is NULL: park, recall and online returns answer
    offline). The acknowledged mark the uplink would report is a variable of the test. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <node/journal.h>
#include <node/segment.h>
#include <node/till.h>

#include "testutil.h"

static char s_dir[] = "/tmp/posbus-till-XXXXXX";
static char s_path[PATH_MAX];
static int64_t s_acked;
static int s_published;

static int64_t s_acked_hook(void *arg)
{
    (void)arg;
    return s_acked;
}

static bus_val_t *s_last_audit; /* the last node.audit event published */

static void s_publish_hook(void *arg, const char *what, const char *type, bus_val_t **body)
{
    (void)arg;
    (void)what;
    if (strcmp(type, "node.audit") == 0) {
        bus_val_destroy(&s_last_audit);
        s_last_audit = *body;
        *body = NULL;
    }
    bus_val_destroy(body);
    s_published++;
}

/* The clock of the till of s_keyed_in (promotion and member price windows). */
static int64_t s_clock_ms;

static int64_t s_clock_hook(void *arg)
{
    (void)arg;
    return s_clock_ms;
}

/* Run line; the answer's ok, and its string key (or "") into out. */
static bool s_run(node_till_t *till, const char *line, const char *key, char *out, size_t size)
{
    bus_val_t *r = node_till_command(till, line);
    bool ok = false;
    bus_val_map_get_bool(r, "ok", &ok);
    if (out) {
        const char *v = key ? bus_val_map_get_str(r, key) : NULL;
        snprintf(out, size, "%s", v ? v : "");
    }
    if (!ok) {
        const char *m = bus_val_map_get_str(r, "message");
        printf("     (%s: %s)\n", line, m ? m : "?");
    }
    bus_val_destroy(&r);
    return ok;
}

static int64_t s_int(node_till_t *till, const char *line, const char *key)
{
    bus_val_t *r = node_till_command(till, line);
    int64_t v = -1;
    bus_val_map_get_int(r, key, &v);
    bus_val_destroy(&r);
    return v;
}

static node_till_t *s_open(node_key_t *key, node_session_t *session, node_catalog_t *cat,
                           node_config_t *cfg)
{
    node_till_hooks_t hooks = {.publish = s_publish_hook, .acked = s_acked_hook};
    char why[256];
    node_till_t *till = node_till_open(s_path, key, "S1", "R01", session, &hooks, why, sizeof(why));
    if (!till) {
        printf("     (open: %s)\n", why);
        return NULL;
    }
    node_till_set_catalog(till, cat);
    node_till_set_config(till, cfg, why, sizeof(why));
    node_till_set_retention(till, 1);
    return till;
}

/* A payments service that accepts every payment code at once: it records the amount asked. */
static int64_t s_code_amount = -1;

static bus_val_t *s_payments_hook(void *arg, const char *service, const char *method,
                                  bus_val_t **body, bool *offline, char *err, size_t size)
{
    (void)arg;
    if (strcmp(service, "payments") != 0 || strcmp(method, "payment.pay") != 0) {
        *offline = true;
        snprintf(err, size, "the back office cannot be reached (test)");
        return NULL;
    }
    *offline = false;
    bus_val_map_get_int(*body, "amount", &s_code_amount);
    bus_val_t *r = bus_val_new_map();
    bus_val_map_set_str(r, "intent", "S1-R02-000001-01");
    bus_val_map_set_str(r, "state", "succeeded");
    bus_val_map_set_bool(r, "final", true);
    return r;
}

/* A card terminal that takes every job: the last verb, key and data it was given. */
static char s_card_verb[16], s_card_key[64], s_card_data[48];

static int s_card_hook(void *arg, const char *verb, const char *key, const char *data, char *err,
                       size_t size)
{
    (void)arg;
    (void)err;
    (void)size;
    if (verb) {
        snprintf(s_card_verb, sizeof(s_card_verb), "%s", verb);
        snprintf(s_card_key, sizeof(s_card_key), "%s", key);
        snprintf(s_card_data, sizeof(s_card_data), "%s", data ? data : "");
    }
    return 1;
}

/* The terminal's final answer to the job at it: approved for `amount` with receipt number
   `receipt`. The till's answer's error code (or "") into out; its ticket's remaining due. */
static int64_t s_card_answer(node_till_t *till, int64_t amount, int64_t receipt, char *out,
                             size_t size)
{
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_str(b, "verb", s_card_verb);
    bus_val_map_set_str(b, "key", s_card_key);
    bus_val_map_set_bool(b, "ok", true);
    bus_val_map_set_int(b, "amount", amount);
    bus_val_map_set_int(b, "receipt", receipt);
    bus_val_map_set_int(b, "trace", receipt);
    bus_val_t *r = node_till_card_event(till, "result", b);
    bus_val_destroy(&b);
    const char *e = bus_val_map_get_str(r, "error");
    snprintf(out, size, "%s", e ? e : "");
    int64_t remaining = -1;
    bus_val_map_get_int(bus_val_map_get(r, "ticket"), "remaining", &remaining);
    bus_val_destroy(&r);
    return remaining;
}

/* A number from the X report: report.KEY, or report.tenders.KEY with tenders true. */
static int64_t s_x(node_till_t *till, const char *key, bool tenders)
{
    bus_val_t *r = node_till_command(till, "x approve max 9999");
    const bus_val_t *m = bus_val_map_get(r, "report");
    if (tenders)
        m = bus_val_map_get(m, "tenders");
    int64_t v = -1;
    bus_val_map_get_int(m, key, &v);
    bus_val_destroy(&r);
    return v;
}

static int s_sales_in(const char *file)
{
    node_journal_status_t st;
    if (node_journal_verify(file, NULL, &st) != 0)
        return -1;
    return (int)st.last_seq;
}

/* The ticket's (or with line > 0 that line's) integer key after running cmd; -1 if absent. */
static int64_t s_tk(node_till_t *till, const char *cmd, int line, const char *key)
{
    bus_val_t *r = node_till_command(till, cmd);
    const bus_val_t *t = bus_val_map_get(r, "ticket");
    if (line > 0)
        t = bus_val_arr_get(bus_val_map_get(t, "lines"), (size_t)line - 1);
    int64_t v = -1;
    bus_val_map_get_int(t, key, &v);
    bool b;
    if (v == -1 && bus_val_map_get_bool(t, key, &b))
        v = b;
    bus_val_destroy(&r);
    return v;
}

/* Line n's string key in the till's state, into out ("" if absent). */
static const char *s_tks(node_till_t *till, int n, const char *key, char *out, size_t size)
{
    bus_val_t *r = node_till_command(till, "state");
    const bus_val_t *l =
        bus_val_arr_get(bus_val_map_get(bus_val_map_get(r, "ticket"), "lines"), (size_t)n - 1);
    const char *v = bus_val_map_get_str(l, key);
    snprintf(out, size, "%s", v ? v : "");
    bus_val_destroy(&r);
    return out;
}

/* line is refused with error code want, and the ticket's total stays total. */
static bool s_refused(node_till_t *till, const char *line, const char *want, int64_t total)
{
    bus_val_t *r = node_till_command(till, line);
    bool ok = true;
    bus_val_map_get_bool(r, "ok", &ok);
    const char *e = bus_val_map_get_str(r, "error");
    const char *m = bus_val_map_get_str(r, "message");
    int64_t got = -1;
    bus_val_map_get_int(bus_val_map_get(r, "ticket"), "total", &got);
    bool pass = !ok && e && !strcmp(e, want) && m && *m && got == total;
    CHECK(pass, "'%s' refused: %s (expected %s, total stays %lld; got %s, total %lld)", line,
          m ? m : "?", want, (long long)total, e ? e : "ok", (long long)got);
    bus_val_destroy(&r);
    return pass;
}

static void s_promo_row(bus_val_t *arr, const char *id, const char *kind, const char *sku,
                        const char *category, const char *k1, int64_t v1, const char *k2,
                        int64_t v2, int64_t start_ms, int64_t end_ms)
{
    bus_val_t *p = bus_val_new_map();
    bus_val_map_set_str(p, "id", id);
    bus_val_map_set_str(p, "kind", kind);
    bus_val_map_set_str(p, "sku", sku);
    bus_val_map_set_str(p, "category", category);
    if (k1)
        bus_val_map_set_int(p, k1, v1);
    if (k2)
        bus_val_map_set_int(p, k2, v2);
    bus_val_map_set_int(p, "start_ms", start_ms);
    bus_val_map_set_int(p, "end_ms", end_ms);
    bus_val_arr_push(arr, &p);
}

#define T0   1800000000000LL /* 2027-01-15: the window of the timed promotions */
#define HOUR 3600000LL

/*  qty, discount and member at a till whose configuration comes through node_config_parse with
    a promotion of every kind: each changes the ticket as documented, bad input is refused with
    a message and changes nothing. cashiers: Ann (cashier) and Max (manager), PINs 1111/9999. */
static void s_keyed_in(node_key_t *key, node_session_t *session, node_catalog_t *cat,
                       const node_config_t *base)
{
    /* --- the configuration document, as config.get serves it --- */
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_int(doc, "version", 7);
    bus_val_map_set_int(doc, "discount_cap_bp", 1000);
    bus_val_t *rows = bus_val_new_arr();
    for (size_t i = 0; i < base->ncashiers; i++) {
        const node_cashier_t *c = &base->cashiers[i];
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "id", c->id);
        bus_val_map_set_str(row, "name", c->name);
        bus_val_map_set_str(row, "role", node_role_name(c->role));
        bus_val_map_set_str(row, "pin_hash", c->pin_hash);
        bus_val_arr_push(rows, &row);
    }
    bus_val_map_set(doc, "cashiers", &rows);
    rows = bus_val_new_arr();
    s_promo_row(rows, "MILK3", "qty_break", "MILK", "", "qty", 3, "amount", 900, 0, 0);
    s_promo_row(rows, "SNACK1", "amount", "", "snacks", "amount", 100, NULL, 0, T0, T0 + HOUR);
    s_promo_row(rows, "WATER21", "buy_x_get_y", "WATER", "", "qty", 2, "free_qty", 1, 0, 0);
    s_promo_row(rows, "COLA-M", "member_price", "COLA", "", "price", 250, NULL, 0, T0, T0 + HOUR);
    s_promo_row(rows, "OIL-M", "member_price", "OIL", "", "price", 6000, NULL, 0, T0, 0);
    bus_val_map_set(doc, "promotions", &rows);
    node_config_t cfg;
    node_config_init(&cfg);
    char why[256] = "", out[64];
    CHECK(node_config_parse(doc, &cfg, why, sizeof(why)) == 0, "the document parses (%s)", why);
    const pos_promo_t *p = cfg.promos;
    CHECK(cfg.npromos == 3 && cfg.nmember_prices == 2 && p[0].kind == POS_PROMO_QTY_BREAK &&
              p[0].qty == 3 && p[0].amount == 900 && !strcmp(p[0].sku, "MILK") &&
              p[1].kind == POS_PROMO_AMOUNT && p[1].amount == 100 &&
              !strcmp(p[1].category, "snacks") && p[1].start_ms == T0 && p[1].end_ms == T0 + HOUR &&
              p[2].kind == POS_PROMO_BUY_X_GET_Y && p[2].qty == 2 && p[2].free_qty == 1 &&
              cfg.member_prices[0].price == 250 && !strcmp(cfg.member_prices[0].sku, "COLA"),
          "qty_break, amount (category, window), buy_x_get_y and member_price parsed "
          "(%d item promotions, %d member prices)",
          cfg.npromos, cfg.nmember_prices);
    CHECK(node_config_member_price(&cfg, "COLA", T0 - 1) == 0 &&
              node_config_member_price(&cfg, "COLA", T0) == 250 &&
              node_config_member_price(&cfg, "COLA", T0 + HOUR) == 0 &&
              node_config_member_price(&cfg, "OIL", T0 + 1000 * HOUR) == 6000 &&
              node_config_member_price(&cfg, "OIL", T0 - 1) == 0,
          "member prices run from start_ms until before end_ms; no end_ms: from start_ms on "
          "(as libpos runs promotions)");
    /* a broken row refuses the whole document and keeps the old one */
    rows = bus_val_new_arr();
    s_promo_row(rows, "BAD", "qty_break", "MILK", "", "qty", 1, "amount", 900, 0, 0);
    bus_val_map_set(doc, "promotions", &rows);
    bus_val_map_set_int(doc, "version", 8);
    CHECK(node_config_parse(doc, &cfg, why, sizeof(why)) == -1 && strstr(why, "BAD") &&
              cfg.version == 7 && cfg.npromos == 3,
          "a qty_break of 1 piece is refused, naming the row, the old configuration kept (%s)",
          why);
    bus_val_destroy(&doc);

    node_catalog_item_t items[] = {
        {.sku = "MILK",
         .barcode = "",
         .name = "牛奶",
         .unit = "pcs",
         .category = "dairy",
         .price = 350,
         .tax_rate_bp = 900,
         .active = true},
        {.sku = "CHIPS",
         .barcode = "",
         .name = "薯片",
         .unit = "pcs",
         .category = "snacks",
         .price = 750,
         .tax_rate_bp = 1300,
         .active = true},
        {.sku = "WATER",
         .barcode = "",
         .name = "水",
         .unit = "pcs",
         .category = "drinks",
         .price = 200,
         .tax_rate_bp = 1300,
         .active = true},
        {.sku = "OIL",
         .barcode = "",
         .name = "花生油",
         .unit = "pcs",
         .category = "grain",
         .price = 6990,
         .member_price = 6500,
         .tax_rate_bp = 900,
         .active = true},
    };
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
        node_catalog_put(cat, &items[i]);

    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/journal-r04", s_dir);
    node_till_hooks_t hooks = {
        .publish = s_publish_hook, .acked = s_acked_hook, .now_ms = s_clock_hook};
    s_clock_ms = T0 + HOUR / 2;
    node_till_t *till = node_till_open(path, key, "S1", "R04", session, &hooks, why, sizeof(why));
    CHECK(till != NULL, "a till with a clock of its own (%s)", why);
    if (!till) {
        node_config_clear(&cfg);
        return;
    }
    node_till_set_catalog(till, cat);
    CHECK(node_till_set_config(till, &cfg, why, sizeof(why)) == 0, "configuration 7 (%s)", why);
    bus_val_t *r = node_till_command(till, "logout"); /* Ann, from the tills before */
    bus_val_destroy(&r);
    CHECK(s_run(till, "login ann 1111", NULL, NULL, 0), "Ann, a cashier, logs in");

    /* --- qty: the quantity of the next scan --- */
    CHECK(s_int(till, "qty 3", "next_qty") == 3, "qty 3 is taken for the next scan");
    CHECK(s_tk(till, "scan COLA", 1, "qty") == 3 && s_tk(till, "state", 1, "gross") == 900 &&
              s_tk(till, "state", 0, "total") == 900,
          "scan COLA after qty 3: one line of 3 at 3.00, total 9.00 (%lld)",
          (long long)s_tk(till, "state", 0, "total"));
    CHECK(s_tk(till, "scan COLA", 2, "qty") == 1 && s_tk(till, "state", 0, "total") == 1200,
          "the next scan is 1 again: total 12.00");
    CHECK(s_int(till, "qty 5", "next_qty") == 5 && s_tk(till, "scan COLA 2", 3, "qty") == 2,
          "a quantity typed with the scan wins over qty");
    int64_t total = s_tk(till, "state", 0, "total");
    CHECK_EQ(total, 1800, "COLA 3 + 1 + 2 = 18.00");
    const char *bad_qty[] = {
        "qty 0",   "qty -1",   "qty -0",  "qty 1000001", "qty 99999999999999999999",
        "qty abc", "qty 2.5",  "qty +3",  "qty 3x",      "qty",
        "qty 1 2", "qty 0x10", "qty 1e3", "qty ３"};
    for (size_t i = 0; i < sizeof(bad_qty) / sizeof(bad_qty[0]); i++)
        s_refused(till, bad_qty[i], "usage", total);
    CHECK(s_tk(till, "scan COLA", 4, "qty") == 1,
          "after the refused qty commands the next scan is 1 (no quantity was left behind)");
    CHECK(s_int(till, "qty 1000000", "next_qty") == 1000000 &&
              s_tk(till, "scan COLA", 5, "qty") == 1000000 &&
              s_tk(till, "state", 0, "total") == 2100 + 300000000LL,
          "qty 1000000 (the most) sells a million COLA: 3,000,021.00");
    CHECK(s_run(till, "cancel approve max 9999", NULL, NULL, 0), "the ticket is cancelled");

    /* --- discount: percent or amount, capped at 10% for a cashier --- */
    s_refused(till, "discount 5%", "no_ticket", -1);
    CHECK(s_tk(till, "scan COLA 10", 0, "total") == 3000, "COLA x10: 30.00");
    CHECK(s_tk(till, "discount 5%", 0, "ticket_discount") == 150 &&
              s_tk(till, "state", 0, "total") == 2850,
          "discount 5%%: 1.50 off, total 28.50");
    CHECK(s_tk(till, "discount 2.00", 0, "ticket_discount") == 200 &&
              s_tk(till, "state", 0, "total") == 2800,
          "discount 2.00 replaces it: total 28.00");
    CHECK(s_tk(till, "discount 0", 0, "total") == 3000, "discount 0 removes it: 30.00");
    CHECK(s_tk(till, "discount 12.5%", 0, "total") == 3000 &&
              s_tk(till, "discount 10%", 0, "total") == 2700,
          "12.5%% is over the cap for Ann alone, 10%% (the cap) is not: 27.00");
    uint64_t records = node_till_last_record(till);
    s_refused(till, "discount 10.01%", "not_permitted", 2700);
    const char *action = bus_val_map_get_str(s_last_audit, "action");
    const char *cashier = bus_val_map_get_str(s_last_audit, "cashier");
    bool approved = true;
    bus_val_map_get_bool(s_last_audit, "approved", &approved);
    CHECK(node_till_last_record(till) == records + 1 && action &&
              !strcmp(action, "discount_over_cap") && cashier && !strcmp(cashier, "ann") &&
              !approved,
          "the refusal is journaled and published: discount_over_cap, ann, not approved");
    s_refused(till, "discount 3.01", "not_permitted", 2700);
    CHECK(s_tk(till, "discount 20% approve max 9999", 0, "total") == 2400,
          "20%% with the manager's approval: 24.00");
    const char *approver = bus_val_map_get_str(s_last_audit, "approver");
    action = bus_val_map_get_str(s_last_audit, "action");
    approved = false;
    bus_val_map_get_bool(s_last_audit, "approved", &approved);
    CHECK(approved && approver && !strcmp(approver, "max") && action &&
              !strcmp(action, "discount_over_cap"),
          "its audit event names the action and the approver max");
    const char *bad_discount[] = {
        "discount -5%",    "discount -2.00", "discount 100.01%",
        "discount 101%",   "discount 30.01", "discount 99999999999999999999",
        "discount abc",    "discount %",     "discount 5%%",
        "discount 5.001%", "discount 1e3",   "discount 0x10",
        "discount 2.001",  "discount 5%x",   "discount ５%"};
    for (size_t i = 0; i < sizeof(bad_discount) / sizeof(bad_discount[0]); i++)
        s_refused(till, bad_discount[i], "bad_discount", 2400);
    r = node_till_command(till, "discount 30.01");
    const char *m = bus_val_map_get_str(r, "message");
    CHECK(m && strstr(m, "0.00 to 30.00 yuan"), "the refusal says the most it may be: %s",
          m ? m : "?");
    bus_val_destroy(&r);
    s_refused(till, "discount", "usage", 2400);
    s_refused(till, "discount 5 %", "usage", 2400);
    CHECK(s_tk(till, "discount 100% approve max 9999", 0, "total") == 0 &&
              s_tk(till, "discount 30.00 approve max 9999", 0, "total") == 0,
          "100%% and the whole 30.00 with approval: total 0.00");
    CHECK(s_tk(till, "discount 0%", 0, "total") == 3000, "discount 0%% removes it");
    CHECK(s_run(till, "pay cash", "sale_id", NULL, 0), "paid");

    /* --- member: member prices of the configuration (in their window) and the catalog --- */
    CHECK(s_tk(till, "scan COLA 2", 0, "total") == 600 &&
              s_tk(till, "scan OIL", 0, "total") == 7590,
          "COLA x2 and OIL: 75.90");
    CHECK(s_tk(till, "member", 1, "unit_price") == 250 &&
              s_tk(till, "state", 2, "unit_price") == 6000 &&
              s_tk(till, "state", 0, "total") == 6500 && s_tk(till, "state", 0, "member") == 1,
          "member: COLA at the configuration's 2.50, OIL at its 60.00 (below the catalog's "
          "65.00): total 65.00");
    CHECK(s_tk(till, "member off", 0, "total") == 7590 && s_tk(till, "state", 0, "member") == 0,
          "member off: back to 75.90");
    s_refused(till, "member maybe", "usage", 7590);
    s_refused(till, "member 123456", "usage", 7590);
    s_refused(till, "member on off", "usage", 7590);
    CHECK(s_tk(till, "member on", 0, "total") == 6500, "member on: 65.00");
    CHECK(s_run(till, "pay cash 100", "sale_id", NULL, 0), "paid");
    /* a discount amount within the cap, then member prices under it: over the cap now */
    CHECK(s_tk(till, "scan OIL", 0, "total") == 6990 &&
              s_tk(till, "discount 6.99", 0, "total") == 6291,
          "OIL 69.90 with 6.99 off (10%%, the cap): 62.91, Ann alone");
    s_refused(till, "member on", "not_permitted", 6291);
    CHECK(s_tk(till, "state", 0, "member") == 0,
          "member prices stay off: 6.99 of the member price 60.00 would be 11.65%%");
    CHECK(s_tk(till, "member on approve max 9999", 0, "total") == 5301 &&
              s_tk(till, "state", 0, "member") == 1,
          "with the manager's approval: 60.00 - 6.99 = 53.01");
    CHECK(s_tk(till, "member off", 0, "total") == 6291 && s_tk(till, "member", 0, "total") == 5301,
          "approved once, member prices go off and on again");
    CHECK(s_run(till, "pay cash 60", "sale_id", NULL, 0), "paid");
    CHECK(s_tk(till, "scan OIL", 0, "total") == 6990 &&
              s_tk(till, "discount 10%", 0, "total") == 6291 &&
              s_tk(till, "member on", 0, "total") == 5400,
          "a percent stays a percent: 10%% off the member price 60.00 needs nobody (54.00)");
    CHECK(s_run(till, "cancel approve max 9999", NULL, NULL, 0), "cancelled");
    s_clock_ms = T0 + HOUR; /* COLA's member price has ended; OIL's runs on */
    CHECK(s_tk(till, "member on", 0, "member") == -1 &&
              s_tk(till, "scan COLA", 1, "unit_price") == 300 &&
              s_tk(till, "scan OIL", 2, "unit_price") == 6000,
          "member on before the first scan; an hour later COLA's member price has ended (3.00), "
          "OIL's (no end) has not (60.00)");
    CHECK(s_run(till, "cancel approve max 9999", NULL, NULL, 0), "cancelled");
    CHECK(s_tk(till, "scan COLA", 0, "member") == 0, "a new ticket starts without member prices");
    s_clock_ms = T0 - 1;
    CHECK(s_tk(till, "scan OIL", 2, "unit_price") == 6990 &&
              s_tk(till, "member on", 2, "unit_price") == 6500,
          "before OIL's member price starts the catalog's member price applies (65.00)");
    CHECK(s_run(till, "cancel approve max 9999", NULL, NULL, 0), "cancelled");

    /* --- every promotion kind, priced from the configuration --- */
    s_clock_ms = T0 + HOUR / 2;
    CHECK(s_tk(till, "scan MILK 4", 1, "promo_discount") == 150 &&
              s_tk(till, "state", 0, "total") == 1250,
          "MILK x4 at 3.50 with 3 for 9.00: 1.50 off (one set), total 12.50");
    CHECK(s_tk(till, "scan MILK 2", 0, "total") == 1800 &&
              s_tk(till, "state", 0, "promo_discounts") == 300,
          "MILK x2 more (6 over two lines): two sets, 3.00 off, total 18.00");
    CHECK(s_tk(till, "scan CHIPS 2", 3, "promo_discount") == 200 &&
              !strcmp(s_tks(till, 3, "promo_id", out, sizeof(out)), "SNACK1"),
          "CHIPS x2 (snacks, 1.00 off per piece in the window): 2.00 off by %s", out);
    CHECK(s_tk(till, "scan WATER 3", 4, "promo_discount") == 200 &&
              s_tk(till, "state", 0, "total") == 1800 + 1300 + 400,
          "WATER x3 with buy 2 get 1: one free (2.00), total 35.00");
    CHECK(s_run(till, "pay cash 50", "sale_id", NULL, 0), "paid");
    s_clock_ms = T0 + HOUR;
    CHECK(s_tk(till, "scan CHIPS 2", 1, "promo_discount") == 0 &&
              s_tk(till, "scan WATER 2", 2, "promo_discount") == 0,
          "after the window CHIPS pay full price; WATER x2 is no full set of 3");
    CHECK(s_run(till, "pay cash 50", "sale_id", NULL, 0), "paid");
    node_till_destroy(&till);
    node_config_clear(&cfg);
}

int main(void)
{
    if (!mkdtemp(s_dir))
        return 1;
    snprintf(s_path, sizeof(s_path), "%s/journal", s_dir);
    char keypath[PATH_MAX];
    snprintf(keypath, sizeof(keypath), "%s/journal.key", s_dir);
    CHECK(node_key_generate(keypath) == 0, "a journal key");
    node_key_t *key = node_key_load(keypath);

    node_catalog_t *cat = node_catalog_new();
    node_catalog_item_t cola = {.sku = "COLA",
                                .barcode = "6901234500097",
                                .name = "可口可乐",
                                .unit = "pcs",
                                .category = "drinks",
                                .price = 300,
                                .tax_rate_bp = 1300,
                                .active = true};
    node_catalog_item_t apple = {.sku = "APPLE",
                                 .barcode = "",
                                 .name = "苹果",
                                 .unit = "kg",
                                 .category = "fruit",
                                 .price = 1280,
                                 .tax_rate_bp = 900,
                                 .active = true};
    node_catalog_put(cat, &cola);
    node_catalog_put(cat, &apple);

    node_config_t cfg;
    node_config_init(&cfg);
    cfg.version = 1;
    cfg.ncashiers = 2;
    cfg.cashiers = calloc(2, sizeof(*cfg.cashiers));
    node_cashier_t *c = &cfg.cashiers[0];
    snprintf(c->id, sizeof(c->id), "ann");
    snprintf(c->name, sizeof(c->name), "Ann");
    c->role = NODE_ROLE_CASHIER;
    c->permissions = NODE_PERM_ROLE;
    c->active = true;
    node_pin_hash("1111", c->pin_hash, sizeof(c->pin_hash));
    c = &cfg.cashiers[1];
    snprintf(c->id, sizeof(c->id), "max");
    snprintf(c->name, sizeof(c->name), "Max");
    c->role = NODE_ROLE_MANAGER;
    c->permissions = NODE_PERM_ROLE;
    c->active = true;
    node_pin_hash("9999", c->pin_hash, sizeof(c->pin_hash));

    node_session_t *session = node_session_new(NULL, NULL);
    node_till_t *till = s_open(key, session, cat, &cfg);
    CHECK(till != NULL, "a till on a new journal");
    char out[256];

    /* --- selling -------------------------------------------------------------------------- */
    CHECK(!s_run(till, "scan COLA", "error", out, sizeof(out)) && !strcmp(out, "login_required"),
          "nothing sells before a login");
    CHECK(s_run(till, "login ann 1111", NULL, NULL, 0), "Ann logs in");
    CHECK(s_run(till, "scan 6901234500097 2", NULL, NULL, 0), "COLA x2 by barcode");
    CHECK(!s_run(till, "scan APPLE", "error", out, sizeof(out)) && !strcmp(out, "weigh_required"),
          "a weighed item needs a weight");
    CHECK(s_run(till, "weigh APPLE 500", NULL, NULL, 0), "500 g of apples");
    CHECK_EQ(s_int(till, "state", "last_sale"), 0, "nothing journaled before payment");
    CHECK(!s_run(till, "pay card 100", "error", out, sizeof(out)) && !strcmp(out, "bad_amount"),
          "a card tender above what is due is refused");
    CHECK(s_run(till, "pay cash 20", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000001"),
          "paid: sale S1-R01-000001 (%s)", out);
    CHECK(!s_run(till, "void 1", "error", out, sizeof(out)) && !strcmp(out, "bad_line"),
          "the ticket is closed after payment");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && !s_run(till, "void 1", NULL, NULL, 0),
          "a cashier cannot void alone");
    CHECK(s_run(till, "void 1 approve max 9999", NULL, NULL, 0), "a manager approves the void");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && s_run(till, "pay cash", NULL, NULL, 0),
          "sale 2 (a voided line and a live one)");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              !s_run(till, "park", "error", out, sizeof(out)) && !strcmp(out, "offline"),
          "park answers offline without a back office (%s)", out);
    CHECK(s_run(till, "pay cash", NULL, NULL, 0), "sale 3");
    CHECK(!s_run(till, "cash-in 50 float", NULL, NULL, 0),
          "cash in opens the drawer: refused alone");
    CHECK(s_run(till, "cash-in 50 float approve max 9999", NULL, NULL, 0),
          "cash in 50.00 approved");
    int64_t expected = s_int(till, "x approve max 9999", "last_sale");
    CHECK_EQ(expected, 3, "the X report at sale 3");

    /* --- a Z report with sales not yet acknowledged keeps the journal ------------------- */
    s_acked = 2;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) &&
              strstr(out, "kept open"),
          "Z with sale 3 unacknowledged keeps the journal open (%s)", out);
    CHECK(access(s_path, F_OK) == 0 && node_till_segment(till) == 0, "no archive yet");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && s_run(till, "pay cash", NULL, NULL, 0),
          "sale 4");
    s_acked = 4;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) && strstr(out, "archived"),
          "Z with every sale acknowledged archives the journal (%s)", out);
    char archive[PATH_MAX];
    snprintf(archive, sizeof(archive), "%s.000001-000004", s_path);
    CHECK(access(archive, F_OK) == 0 && node_till_segment(till) == 1,
          "the archive is journal.000001-000004");
    CHECK(s_sales_in(archive) > 4, "the archive verifies on its own (%d records)",
          s_sales_in(archive));
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000005"),
          "the next sale is S1-R01-000005 in the new segment (%s)", out);
    node_journal_entry_t e;
    char why[256];
    CHECK(node_segment_read_sale(s_path, key, 3, &e, why, sizeof(why)) == 0 &&
              e.kind == NODE_JOURNAL_SALE,
          "sale 3 is read back from the archive (%s)", why);
    bus_val_t *doc = bus_val_decode(e.payload, e.size, NULL, NULL);
    int64_t seq = 0;
    bus_val_map_get_int(doc, "seq", &seq);
    CHECK_EQ(seq, 3, "and it is sale 3");
    bus_val_destroy(&doc);
    node_journal_entry_clear(&e);

    /* the new segment starts with the continue mark naming the archive's last hash */
    node_journal_reader_t *r = node_journal_reader_open(s_path, key);
    CHECK(r && node_journal_reader_read(r, 1, &e) == 0 && e.kind == NODE_JOURNAL_MARK,
          "record 1 of the new segment is a mark");
    doc = bus_val_decode(e.payload, e.size, NULL, NULL);
    node_journal_entry_clear(&e);
    int64_t last = 0;
    CHECK(node_segment_is_continue(doc, &last, NULL) && last == 4, "a continue mark after sale 4");
    node_journal_reader_t *ar = node_journal_reader_open(archive, key);
    for (uint64_t k = 1; ar && node_journal_reader_read(ar, k, &e) == 0; k++)
        node_journal_entry_clear(&e);
    char hex[65];
    for (int i = 0; ar && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", node_journal_reader_hash(ar)[i]);
    const char *from_hash = bus_val_map_get_str(doc, "from_hash");
    CHECK(from_hash && !strcmp(from_hash, hex), "its from_hash is the archive's last record's");
    node_journal_reader_destroy(&ar);
    node_journal_reader_destroy(&r);
    bus_val_destroy(&doc);

    /* --- reopen: numbering runs on across the segment ------------------------------------ */
    node_till_destroy(&till);
    till = s_open(key, session, cat, &cfg);
    CHECK(till && node_till_last_sale(till) == 5, "reopened: last sale 5");
    s_run(till, "login ann 1111", NULL, NULL, 0);
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000006"),
          "then S1-R01-000006 (%s)", out);

    /* --- a device command from the back office: carried out once per key --------------------- */
    bus_val_t *cmd = bus_val_new_map();
    bus_val_map_set_str(cmd, "key", "k-1");
    bus_val_map_set_str(cmd, "device", "till");
    bus_val_map_set_str(cmd, "command", "display");
    bus_val_t *args = bus_val_new_map();
    bus_val_map_set_str(args, "text", "盘点 at 18:00");
    bus_val_map_set(cmd, "args", &args);
    uint64_t records = node_till_last_record(till);
    bus_val_t *res = node_till_device_command(till, cmd);
    bool ok = false, again = false;
    bus_val_map_get_bool(res, "ok", &ok);
    CHECK(ok && node_till_last_record(till) == records + 1, "display: shown and journaled");
    bus_val_destroy(&res);
    res = node_till_device_command(till, cmd);
    bus_val_map_get_bool(bus_val_map_get(res, "result"), "already_done", &again);
    CHECK(again && node_till_last_record(till) == records + 1,
          "the same key again: answered already_done, nothing journaled");
    bus_val_destroy(&res);
    s_acked = 6;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) && strstr(out, "archived"),
          "a Z archives the segment that journaled the command (%s)", out);
    node_till_destroy(&till);
    till = s_open(key, session, cat, &cfg);
    res = node_till_device_command(till, cmd);
    again = false;
    bus_val_map_get_bool(bus_val_map_get(res, "result"), "already_done", &again);
    CHECK(again, "and after the archive and a restart (the continue mark carries the key)");
    bus_val_destroy(&res);
    bus_val_map_set_str(cmd, "key", "k-2");
    bus_val_map_set_str(cmd, "device", "printer");
    res = node_till_device_command(till, cmd);
    ok = true;
    bus_val_map_get_bool(res, "ok", &ok);
    const char *err = bus_val_map_get_str(res, "error");
    CHECK(!ok && err && strstr(err, "no_device"), "a device the register lacks: %s", err);
    bus_val_destroy(&res);
    bus_val_destroy(&cmd);

    /* --- a crash inside a rotation: archived, but no new journal yet ----------------------- */
    s_acked = 6;
    s_run(till, "z approve max 9999", NULL, NULL, 0);
    node_till_destroy(&till);
    CHECK(unlink(s_path) == 0, "simulate a crash before the new segment was written");
    till = s_open(key, session, cat, &cfg);
    CHECK(till && node_till_last_sale(till) == 6,
          "opened again: the newest archive's continue mark is written (last sale %lld)",
          till ? (long long)node_till_last_sale(till) : -1LL);
    s_run(till, "login ann 1111", NULL, NULL, 0);
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000007"),
          "no sale number is used twice (%s)", out);

    /* --- retention --------------------------------------------------------------------------- */
    struct timeval old[2] = {{time(NULL) - 3 * 24 * 3600, 0}, {time(NULL) - 3 * 24 * 3600, 0}};
    utimes(archive, old);
    CHECK_EQ(node_segment_prune(s_path, 3, 1, why, sizeof(why)), 0,
             "an old archive with unacknowledged sales is kept");
    CHECK_EQ(node_segment_prune(s_path, 7, 1, why, sizeof(why)), 1,
             "acknowledged and past retention: deleted");
    CHECK(access(archive, F_OK) != 0, "journal.000001-000004 is gone");
    CHECK(node_segment_read_sale(s_path, key, 2, &e, why, sizeof(why)) == -1 && errno == ENOENT,
          "sale 2 can no longer be read: %s", why);
    CHECK(s_published > 0, "audit records were published (%d)", s_published);

    node_till_destroy(&till);

    /* --- cash rounding is for cash only: a code and a card pay the exact total -------------- */
    char path2[PATH_MAX];
    snprintf(path2, sizeof(path2), "%s/journal-r02", s_dir);
    node_till_hooks_t hooks = {
        .publish = s_publish_hook, .acked = s_acked_hook, .request = s_payments_hook};
    till = node_till_open(path2, key, "S1", "R02", session, &hooks, why, sizeof(why));
    CHECK(till != NULL, "a till with a payments service (%s)", why);
    node_till_set_catalog(till, cat);
    cfg.cash_rounding = true;
    cfg.version = 2;
    CHECK(node_till_set_config(till, &cfg, why, sizeof(why)) == 0, "cash rounding on (%s)", why);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0), "965 g of apples (Ann still logged in)");
    bus_val_t *st = node_till_command(till, "state");
    int64_t total = -1, remaining = -1;
    bus_val_map_get_int(bus_val_map_get(st, "ticket"), "total", &total);
    bus_val_map_get_int(bus_val_map_get(st, "ticket"), "remaining", &remaining);
    bus_val_destroy(&st);
    CHECK(total == 1235 && remaining == 1240,
          "12.35, which cash settles with 12.40 (total %lld, remaining %lld)", (long long)total,
          (long long)remaining);
    CHECK(s_run(till, "pay code 134567890123456789", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000001"),
          "paid by a WeChat code: S1-R02-000001 (%s)", out);
    CHECK_EQ(s_code_amount, 1235, "the code was charged 12.35, not the cash-rounded 12.40");
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              s_run(till, "pay card", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R02-000002"),
          "pay card without an amount takes the exact 12.35 (%s)", out);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              s_run(till, "pay cash 20", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000003"),
          "in cash it is 12.40 (%s)", out);
    CHECK(s_x(till, "wechat", true) == 1235 && s_x(till, "card", true) == 1235 &&
              s_x(till, "cash", true) == 2000 && s_x(till, "cash_rounding", false) == 5 &&
              s_x(till, "total", false) == 3 * 1235,
          "the X report: wechat 12.35, card 12.35, cash rounding 0.05 from the cash sale only");
    s_code_amount = -1;
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              !s_run(till, "pay code 134567890123456789 12.31", "error", out, sizeof(out)) &&
              !strcmp(out, "bad_amount") && s_code_amount == -1,
          "a code for 12.31 of 12.35 (0.04 left, which cash would round away): refused before "
          "payments is asked");
    CHECK(!s_run(till, "pay card 12.31", "error", out, sizeof(out)) && !strcmp(out, "bad_amount"),
          "so is a card for 12.31");
    CHECK(s_run(till, "pay cash 10", NULL, NULL, 0) &&
              s_run(till, "pay card 2.31", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000004"),
          "with cash tendered first the card takes 2.31 and the sale is written (%s)", out);
    node_till_destroy(&till);

    /* --- the terminal approves another amount than asked: what it approved is booked ------- */
    snprintf(path2, sizeof(path2), "%s/journal-r03", s_dir);
    hooks.card = s_card_hook;
    till = node_till_open(path2, key, "S1", "R03", session, &hooks, why, sizeof(why));
    CHECK(till != NULL, "a till with a card terminal (%s)", why);
    node_till_set_catalog(till, cat);
    CHECK(node_till_set_config(till, &cfg, why, sizeof(why)) == 0, "cash rounding on (%s)", why);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) && s_run(till, "pay card", NULL, NULL, 0) &&
              !strcmp(s_card_verb, "authorize") && !strncmp(s_card_data, "1235", 4),
          "12.35 asked at the terminal (%s %s)", s_card_verb, s_card_data);
    int64_t rest = s_card_answer(till, 1000, 11, out, sizeof(out));
    CHECK(!out[0] && rest == 240,
          "approved only 10.00 (a partial approval): booked 10.00, 2.40 still due in cash "
          "(error '%s', remaining %lld)", out, (long long)rest);
    CHECK(s_run(till, "pay cash 2.40", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R03-000001"),
          "and the sale is written with cash for the rest (%s)", out);
    CHECK_EQ(s_x(till, "card", true), 1000, "the X report's card is the 10.00 approved");
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) && s_run(till, "pay card", NULL, NULL, 0),
          "12.35 asked again");
    rest = s_card_answer(till, 1232, 12, out, sizeof(out));
    CHECK(!strcmp(out, "card_amount") && !strcmp(s_card_verb, "reversal") &&
              !strcmp(s_card_data, "12") && rest == 1240,
          "approved 12.32, which would leave 0.03 for cash to round away: reversed at once "
          "(receipt %s, %s), nothing booked (remaining %lld)", s_card_data, out, (long long)rest);
    CHECK(s_run(till, "pay card", NULL, NULL, 0), "asked again");
    rest = s_card_answer(till, 1300, 13, out, sizeof(out));
    CHECK(!strcmp(out, "card_amount") && !strcmp(s_card_verb, "reversal") &&
              !strcmp(s_card_data, "13") && rest == 1240,
          "approved 13.00 of 12.35 asked: reversed, nothing booked (%s, remaining %lld)", out,
          (long long)rest);
    CHECK(s_run(till, "pay card", NULL, NULL, 0) && s_card_answer(till, 1235, 14, out,
                                                                  sizeof(out)) <= 0 &&
              !out[0] && node_till_last_sale(till) == 2,
          "approved as asked: the sale is written (%s)", out);
    CHECK_EQ(s_x(till, "card", true), 2235, "the X report's card: 10.00 + 12.35");
    node_till_destroy(&till);

    s_keyed_in(key, session, cat, &cfg);

    node_session_destroy(&session);
    bus_val_destroy(&s_last_audit);
    node_config_clear(&cfg);
    node_catalog_destroy(&cat);
    node_key_destroy(&key);
    t_remove_dir(s_dir);
    return FINISH("test_till");
}
