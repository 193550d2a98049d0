/*  =========================================================================
    node/config.h - the register's configuration from the devices service

    The devices service keeps one versioned configuration per store
    (config.get, docs/protocol.md): receipt header and footer, cash
    rounding, tax id, the discount cap, the cashiers with their PIN hashes
    and permissions, and the promotions. posnode fetches it when the
    version it runs is older than the one announced (config.<store>.changed
    or a heartbeat), keeps the document in a local file so that a register
    started offline runs the last configuration it had, and reports the
    version it runs in every heartbeat.

    The document is parsed whole into node_config_t and checked before it
    replaces the one in use: a bad document is refused with a reason and
    the register keeps running the old one. Never prints. Thread-safe: no
    shared state.
    =========================================================================
*/
#ifndef NODE_CONFIG_H_INCLUDED
#define NODE_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/val.h>
#include <pos/ticket.h>

#include "node/cashier.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_CONFIG_LINES_MAX    8  /* receipt header or footer lines */
#define NODE_CONFIG_LINE_CHARS   48 /* characters of one receipt line */
#define NODE_CONFIG_TAX_ID_CHARS 32
#define NODE_CONFIG_FILE_MAX     (4 * 1024 * 1024) /* bytes of a saved document */
#define NODE_CONFIG_DISCOUNT_CAP 1000              /* default cap: 10% */

#define NODE_CONFIG_DEVICES_MAX 16 /* peripherals of one register */

/*  One of the register's peripherals, as the --devices file and the configuration name it. */
typedef struct {
    char name[33];
    char driver[33];
    char transport[256];
    char options[256];
} node_device_cfg_t;

/*  A member-price promotion: while active, the item's member price is price. */
typedef struct {
    char id[POS_PROMO_ID_MAX + 1];
    char sku[POS_SKU_MAX + 1];
    int64_t price;
    int64_t start_ms, end_ms; /* both 0 = always */
} node_member_price_t;

typedef struct {
    int64_t version; /* 0: never configured (all defaults) */
    char header[NODE_CONFIG_LINES_MAX][POS_TEXT_BYTES(NODE_CONFIG_LINE_CHARS) + 1];
    int nheader;
    char footer[NODE_CONFIG_LINES_MAX][POS_TEXT_BYTES(NODE_CONFIG_LINE_CHARS) + 1];
    int nfooter;
    bool cash_rounding;
    char tax_id[POS_TEXT_BYTES(NODE_CONFIG_TAX_ID_CHARS) + 1];
    int discount_cap_bp;      /* a ticket discount above this needs discount_over_cap */
    node_cashier_t *cashiers; /* owned */
    size_t ncashiers;
    pos_promo_t promos[POS_PROMOS_MAX]; /* item promotions for libpos */
    int npromos;
    node_member_price_t member_prices[POS_PROMOS_MAX];
    int nmember_prices;
    node_device_cfg_t devices[NODE_CONFIG_DEVICES_MAX]; /* this register's, from the back office */
    int ndevices;
} node_config_t;

/*  Defaults (version 0, no cashiers, no promotions, cap 10%). */
void node_config_init(node_config_t *self);
/*  Free the cashiers and go back to the defaults. */
void node_config_clear(node_config_t *self);

/*  Parse the config.get document doc into out (initialised; replaced only on success). 0, or
    -1 with a one-line reason in why naming the key, cashier or promotion. */
int node_config_parse(const bus_val_t *doc, node_config_t *out, char *why, size_t size);

/*  Keep doc in path (MessagePack, replaced atomically and synced) / read it back (NULL with
    why when missing, unreadable or not a map). */
int node_config_save(const bus_val_t *doc, const char *path, char *why, size_t size);
bus_val_t *node_config_load(const char *path, char *why, size_t size);

/*  The member price of sku active at now_ms from the configuration, or 0. */
int64_t node_config_member_price(const node_config_t *self, const char *sku, int64_t now_ms);

#ifdef __cplusplus
}
#endif
#endif
