/*  =========================================================================
    bus/keys.h - the one place that names posbus's Redis keys

    Every key a posbus program reads or writes is built here and nowhere
    else (C code and Lua scripts alike: scripts get their keys as arguments).
    docs/data.md documents each key in its table; bus_keys_test() checks
    that every pattern below appears there, so the two cannot drift apart.

    Store-scoped keys carry the store id in a hash tag ({S}) so that one
    store's state shares a hash slot and can move to Redis Cluster later.
    Ids passed in must already be validated (letters, digits, '_', '-',
    '.'): a key never contains a separator taken from input.

    Every builder writes into buf (BUS_KEY_MAX bytes) and returns buf, or
    NULL if the key would not fit (never with validated ids). Thread-safe:
    no shared state.
    =========================================================================
*/
#ifndef BUS_KEYS_H_INCLUDED
#define BUS_KEYS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_KEY_MAX 256

/* Keys without parameters. */
#define BUS_KEY_STORES          "stores"
#define BUS_KEY_SALES_STREAM    "sales:stream"
#define BUS_KEY_CATALOG_VERSION "catalog:version"
#define BUS_KEY_CATALOG_BARCODE "catalog:barcode"
#define BUS_KEY_CATALOG_INDEX   "catalog:index"

/* inventory */
char *bus_key_store(char *buf, const char *store);                    /* store:{S} */
char *bus_key_catalog_item(char *buf, const char *sku);               /* catalog:item:<sku> */
char *bus_key_stock(char *buf, const char *store);                    /* stock:{S} */
char *bus_key_moves(char *buf, const char *store, const char *sku);   /* moves:{S}:<sku> */
char *bus_key_move_id(char *buf, const char *store, const char *move_id,
                      const char *kind);                              /* mv:{S}:<id>:<kind> */
char *bus_key_sold(char *buf, const char *store, const char *sku);    /* sold:{S}:<sku> */

/* sales */
char *bus_key_sale(char *buf, const char *store, const char *sale_id);     /* sale:{S}:<id> */
char *bus_key_regseq(char *buf, const char *store);                        /* regseq:{S} */
char *bus_key_regpend(char *buf, const char *store, const char *reg);      /* regpend:{S}:<r> */
char *bus_key_bday(char *buf, const char *store);                          /* bday:{S} */
char *bus_key_dayclose(char *buf, const char *store);                      /* dayclose:{S} */
char *bus_key_review(char *buf, const char *store);                        /* review:{S} */
char *bus_key_returned(char *buf, const char *store, const char *sale_id); /* returned:{S}:<id> */
char *bus_key_parked(char *buf, const char *store);                        /* parked:{S} */

/* devices */
char *bus_key_node(char *buf, const char *store, const char *reg); /* node:{S}:<register> */
char *bus_key_nodes(char *buf, const char *store);                 /* nodes:{S} */
/* the store's register configuration cfg:{S} and its parts cfg:{S}<suffix>, suffix one of
   "", ":cashiers", ":promos", ":live", ":req:<request_id>" */
char *bus_key_cfg(char *buf, const char *store, const char *suffix);
char *bus_key_devcmd(char *buf, const char *store, const char *key);   /* devcmd:{S}:<key> */
char *bus_key_devcmds(char *buf, const char *store, const char *reg);  /* devcmds:{S}:<r> */

/* payments */
char *bus_key_pay(char *buf, const char *store, const char *intent);     /* pay:{S}:<intent> */
char *bus_key_payhist(char *buf, const char *store, const char *intent); /* payhist:{S}:<intent> */
char *bus_key_paydue(char *buf, const char *store);                      /* paydue:{S} */
char *bus_key_payday(char *buf, const char *store, const char *day);     /* payday:{S}:<day> */
char *bus_key_payrec(char *buf, const char *store, const char *day);     /* payrec:{S}:<day> */
char *bus_key_payref(char *buf, const char *store, const char *no);      /* payref:{S}:<no> */
/* the stored-value deductions of a sale, by card and attempt (so a return finds them) */
char *bus_key_svsale(char *buf, const char *store, const char *sale_id); /* svsale:{S}:<sale> */
/* a stored-value card svc:{<card>} and its parts svc:{<card>}<suffix>, suffix one of "",
   ":ops", ":spent", ":log" (one hash tag per card: a script touches one card only) */
char *bus_key_svc(char *buf, const char *card, const char *suffix);
/* the card blocklist registers pull, in its own hash tag: the sorted set, its version counter,
   each listed card's state and the status changes begun (to finish those a crash cut) */
#define BUS_KEY_SVCBLOCK         "{svcblock}"
#define BUS_KEY_SVCBLOCK_VERSION "{svcblock}:version"
#define BUS_KEY_SVCBLOCK_STATE   "{svcblock}:state"
#define BUS_KEY_SVCBLOCK_PENDING "{svcblock}:pending"

/* reporting: the day hash rep:{S}:<day> and its parts rep:{S}:<day><suffix>, suffix one of
   "", ":hours", ":items", ":cats", ":regs", ":cashiers", ":tenders", ":tax", ":pairs" */
char *bus_key_rep(char *buf, const char *store, const char *day, const char *suffix);
char *bus_key_rep_days(char *buf, const char *store); /* rep:{S}:days */

/* libbus itself */
char *bus_key_dead(char *buf, const char *group); /* dead:{<group>} dead-letter stream */
/* reply:{<service>}:<caller>:<id> reply cache; caller is the identity's file name
   (bus_identity_file, e.g. "register-S1-R01") */
char *bus_key_reply(char *buf, const char *service, const char *caller, const char *request_id);

/* The documented patterns, NULL-terminated, e.g. "sale:{S}:<sale_id>" (for tests and docs). */
extern const char *const bus_key_patterns[];

/* Selftest: builders produce the documented patterns; with data_md (path of docs/data.md, may be
   NULL) every pattern is checked to appear there. Returns the number of failures. */
int bus_keys_test(const char *data_md, bool verbose);

#ifdef __cplusplus
}
#endif
#endif
