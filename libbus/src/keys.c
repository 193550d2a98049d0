/*  =========================================================================
    keys.c - Redis key names (see bus/keys.h and docs/data.md)

    Builders are one snprintf each on purpose: a key's format is visible in
    one line, and the selftest rebuilds every key from placeholder ids to
    compare it with the table in docs/data.md.
    =========================================================================
*/
#include "bus/keys.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *s_key(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *s_key(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, BUS_KEY_MAX, fmt, ap);
    va_end(ap);
    return n >= 0 && n < BUS_KEY_MAX ? buf : NULL;
}

char *bus_key_store(char *buf, const char *store)
{
    return s_key(buf, "store:{%s}", store);
}

char *bus_key_catalog_item(char *buf, const char *sku)
{
    return s_key(buf, "catalog:item:%s", sku);
}

char *bus_key_stock(char *buf, const char *store)
{
    return s_key(buf, "stock:{%s}", store);
}

char *bus_key_moves(char *buf, const char *store, const char *sku)
{
    return s_key(buf, "moves:{%s}:%s", store, sku);
}

char *bus_key_move_id(char *buf, const char *store, const char *move_id, const char *kind)
{
    return s_key(buf, "mv:{%s}:%s:%s", store, move_id, kind);
}

char *bus_key_sold(char *buf, const char *store, const char *sku)
{
    return s_key(buf, "sold:{%s}:%s", store, sku);
}

char *bus_key_sale(char *buf, const char *store, const char *sale_id)
{
    return s_key(buf, "sale:{%s}:%s", store, sale_id);
}

char *bus_key_regseq(char *buf, const char *store)
{
    return s_key(buf, "regseq:{%s}", store);
}

char *bus_key_regpend(char *buf, const char *store, const char *reg)
{
    return s_key(buf, "regpend:{%s}:%s", store, reg);
}

char *bus_key_bday(char *buf, const char *store)
{
    return s_key(buf, "bday:{%s}", store);
}

char *bus_key_dayclose(char *buf, const char *store)
{
    return s_key(buf, "dayclose:{%s}", store);
}

char *bus_key_review(char *buf, const char *store)
{
    return s_key(buf, "review:{%s}", store);
}

char *bus_key_returned(char *buf, const char *store, const char *sale_id)
{
    return s_key(buf, "returned:{%s}:%s", store, sale_id);
}

char *bus_key_parked(char *buf, const char *store)
{
    return s_key(buf, "parked:{%s}", store);
}

char *bus_key_node(char *buf, const char *store, const char *reg)
{
    return s_key(buf, "node:{%s}:%s", store, reg);
}

char *bus_key_nodes(char *buf, const char *store)
{
    return s_key(buf, "nodes:{%s}", store);
}

char *bus_key_cfg(char *buf, const char *store, const char *suffix)
{
    return s_key(buf, "cfg:{%s}%s", store, suffix ? suffix : "");
}

char *bus_key_devcmd(char *buf, const char *store, const char *key)
{
    return s_key(buf, "devcmd:{%s}:%s", store, key);
}

char *bus_key_devcmds(char *buf, const char *store, const char *reg)
{
    return s_key(buf, "devcmds:{%s}:%s", store, reg);
}

char *bus_key_pay(char *buf, const char *store, const char *intent)
{
    return s_key(buf, "pay:{%s}:%s", store, intent);
}

char *bus_key_payhist(char *buf, const char *store, const char *intent)
{
    return s_key(buf, "payhist:{%s}:%s", store, intent);
}

char *bus_key_paydue(char *buf, const char *store)
{
    return s_key(buf, "paydue:{%s}", store);
}

char *bus_key_payday(char *buf, const char *store, const char *day)
{
    return s_key(buf, "payday:{%s}:%s", store, day);
}

char *bus_key_payrec(char *buf, const char *store, const char *day)
{
    return s_key(buf, "payrec:{%s}:%s", store, day);
}

char *bus_key_payref(char *buf, const char *store, const char *no)
{
    return s_key(buf, "payref:{%s}:%s", store, no);
}

char *bus_key_svsale(char *buf, const char *store, const char *sale_id)
{
    return s_key(buf, "svsale:{%s}:%s", store, sale_id);
}

char *bus_key_svc(char *buf, const char *card, const char *suffix)
{
    return s_key(buf, "svc:{%s}%s", card, suffix ? suffix : "");
}

char *bus_key_rep(char *buf, const char *store, const char *day, const char *suffix)
{
    return s_key(buf, "rep:{%s}:%s%s", store, day, suffix ? suffix : "");
}

char *bus_key_rep_days(char *buf, const char *store)
{
    return s_key(buf, "rep:{%s}:days", store);
}

char *bus_key_dead(char *buf, const char *group)
{
    return s_key(buf, "dead:{%s}", group);
}

char *bus_key_reply(char *buf, const char *service, const char *caller, const char *request_id)
{
    return s_key(buf, "reply:{%s}:%s:%s", service, caller, request_id);
}

const char *const bus_key_patterns[] = {BUS_KEY_STORES,
                                        "store:{S}",
                                        "catalog:item:<sku>",
                                        BUS_KEY_CATALOG_BARCODE,
                                        BUS_KEY_CATALOG_INDEX,
                                        BUS_KEY_CATALOG_VERSION,
                                        BUS_KEY_SALES_STREAM,
                                        "sale:{S}:<sale_id>",
                                        "regseq:{S}",
                                        "regpend:{S}:<register>",
                                        "bday:{S}",
                                        "dayclose:{S}",
                                        "review:{S}",
                                        "returned:{S}:<sale_id>",
                                        "parked:{S}",
                                        "stock:{S}",
                                        "moves:{S}:<sku>",
                                        "mv:{S}:<move_id>:<kind>",
                                        "sold:{S}:<sku>",
                                        "node:{S}:<register>",
                                        "nodes:{S}",
                                        "cfg:{S}",
                                        "cfg:{S}:cashiers",
                                        "cfg:{S}:promos",
                                        "cfg:{S}:live",
                                        "cfg:{S}:req:<request id>",
                                        "devcmd:{S}:<key>",
                                        "devcmds:{S}:<register>",
                                        "pay:{S}:<intent>",
                                        "payhist:{S}:<intent>",
                                        "paydue:{S}",
                                        "payday:{S}:<day>",
                                        "payrec:{S}:<day>",
                                        "payref:{S}:<refund_no>",
                                        "svc:{<card>}",
                                        "svc:{<card>}:ops",
                                        "svc:{<card>}:spent",
                                        "svc:{<card>}:log",
                                        BUS_KEY_SVCBLOCK,
                                        BUS_KEY_SVCBLOCK_VERSION,
                                        BUS_KEY_SVCBLOCK_STATE,
                                        BUS_KEY_SVCBLOCK_PENDING,
                                        "rep:{S}:<day>",
                                        "rep:{S}:<day>:hours",
                                        "rep:{S}:<day>:items",
                                        "rep:{S}:<day>:cats",
                                        "rep:{S}:<day>:regs",
                                        "rep:{S}:<day>:cashiers",
                                        "rep:{S}:<day>:tenders",
                                        "rep:{S}:<day>:tax",
                                        "rep:{S}:<day>:pairs",
                                        "rep:{S}:days",
                                        "dead:{<group>}",
                                        "reply:{<service>}:<caller>:<request_id>",
                                        NULL};

static int s_expect(const char *got, const char *want, bool verbose)
{
    bool ok = got && strcmp(got, want) == 0;
    if (!ok || verbose)
        printf("%s key %s (got %s)\n", ok ? "ok  " : "FAIL", want, got ? got : "NULL");
    return ok ? 0 : 1;
}

int bus_keys_test(const char *data_md, bool verbose)
{
    char b[BUS_KEY_MAX];
    int failed = 0;
    failed += s_expect(bus_key_store(b, "S"), "store:{S}", verbose);
    failed += s_expect(bus_key_catalog_item(b, "<sku>"), "catalog:item:<sku>", verbose);
    failed += s_expect(bus_key_sale(b, "S", "<sale_id>"), "sale:{S}:<sale_id>", verbose);
    failed += s_expect(bus_key_regseq(b, "S"), "regseq:{S}", verbose);
    failed += s_expect(bus_key_regpend(b, "S", "<register>"), "regpend:{S}:<register>", verbose);
    failed += s_expect(bus_key_bday(b, "S"), "bday:{S}", verbose);
    failed += s_expect(bus_key_dayclose(b, "S"), "dayclose:{S}", verbose);
    failed += s_expect(bus_key_review(b, "S"), "review:{S}", verbose);
    failed += s_expect(bus_key_returned(b, "S", "<sale_id>"), "returned:{S}:<sale_id>", verbose);
    failed += s_expect(bus_key_parked(b, "S"), "parked:{S}", verbose);
    failed += s_expect(bus_key_stock(b, "S"), "stock:{S}", verbose);
    failed += s_expect(bus_key_moves(b, "S", "<sku>"), "moves:{S}:<sku>", verbose);
    failed += s_expect(bus_key_move_id(b, "S", "<move_id>", "<kind>"), "mv:{S}:<move_id>:<kind>",
                       verbose);
    failed += s_expect(bus_key_sold(b, "S", "<sku>"), "sold:{S}:<sku>", verbose);
    failed += s_expect(bus_key_node(b, "S", "<register>"), "node:{S}:<register>", verbose);
    failed += s_expect(bus_key_nodes(b, "S"), "nodes:{S}", verbose);
    failed += s_expect(bus_key_cfg(b, "S", NULL), "cfg:{S}", verbose);
    failed += s_expect(bus_key_cfg(b, "S", ":promos"), "cfg:{S}:promos", verbose);
    failed += s_expect(bus_key_cfg(b, "S", ":req:<request id>"), "cfg:{S}:req:<request id>",
                       verbose);
    failed += s_expect(bus_key_devcmd(b, "S", "<key>"), "devcmd:{S}:<key>", verbose);
    failed += s_expect(bus_key_devcmds(b, "S", "<register>"), "devcmds:{S}:<register>", verbose);
    failed += s_expect(bus_key_pay(b, "S", "<intent>"), "pay:{S}:<intent>", verbose);
    failed += s_expect(bus_key_payhist(b, "S", "<intent>"), "payhist:{S}:<intent>", verbose);
    failed += s_expect(bus_key_paydue(b, "S"), "paydue:{S}", verbose);
    failed += s_expect(bus_key_payday(b, "S", "<day>"), "payday:{S}:<day>", verbose);
    failed += s_expect(bus_key_payrec(b, "S", "<day>"), "payrec:{S}:<day>", verbose);
    failed += s_expect(bus_key_payref(b, "S", "<refund_no>"), "payref:{S}:<refund_no>",
                       verbose);
    failed += s_expect(bus_key_svsale(b, "S", "<sale_id>"), "svsale:{S}:<sale_id>", verbose);
    failed += s_expect(bus_key_svc(b, "<card>", NULL), "svc:{<card>}", verbose);
    failed += s_expect(bus_key_svc(b, "<card>", ":ops"), "svc:{<card>}:ops", verbose);
    failed += s_expect(bus_key_rep(b, "S", "<day>", NULL), "rep:{S}:<day>", verbose);
    failed += s_expect(bus_key_rep(b, "S", "<day>", ":tax"), "rep:{S}:<day>:tax", verbose);
    failed += s_expect(bus_key_rep_days(b, "S"), "rep:{S}:days", verbose);
    failed += s_expect(bus_key_dead(b, "<group>"), "dead:{<group>}", verbose);
    failed += s_expect(bus_key_reply(b, "<service>", "<caller>", "<request_id>"),
                       "reply:{<service>}:<caller>:<request_id>", verbose);
    char big[BUS_KEY_MAX + 8];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    failed += bus_key_sale(b, "S", big) == NULL ? 0 : 1;
    if (!data_md)
        return failed;
    FILE *f = fopen(data_md, "r");
    if (!f) {
        printf("FAIL cannot read %s\n", data_md);
        return failed + 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc(1, (size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(text);
        return failed + 1;
    }
    fclose(f);
    for (int i = 0; bus_key_patterns[i]; i++) {
        char cell[BUS_KEY_MAX + 4];
        snprintf(cell, sizeof(cell), "`%s`", bus_key_patterns[i]);
        bool found = strstr(text, cell) != NULL;
        if (!found || verbose)
            printf("%s %s documented in docs/data.md\n", found ? "ok  " : "FAIL", cell);
        failed += found ? 0 : 1;
    }
    free(text);
    return failed;
}
