/*  posctl internals shared by its command files. */
#ifndef POSCTL_H_INCLUDED
#define POSCTL_H_INCLUDED

#include <bus/bus.h>

#define POSCTL_EXIT_OK    0
#define POSCTL_EXIT_FAIL  1
#define POSCTL_EXIT_USAGE 2

/* A client from the loaded configuration (timeout-ms, retries); NULL after printing why. */
bus_client_t *posctl_client(bus_config_t *config, const bus_conn_cfg_t *cfg);
/* Send a request and print the error on failure; the reply or NULL. */
bus_msg_t *posctl_call(bus_client_t *client, const char *service, const char *method,
                       bus_val_t **body_p);
/* A listing paged by count and by bytes (stock.history, dead.list), want items of it: send req
   (not consumed) with count = what is still missing (at most page_max), then next_key = the
   previous page's "last" while it says "more". Returns the first page's body with list_key
   holding every page's items in order, and "last" and "more" of the last page asked: the reply
   one page would be if it could hold them all. The caller destroys it; NULL after printing why. */
bus_val_t *posctl_call_pages(bus_client_t *client, const char *service, const char *method,
                             const bus_val_t *req, const char *list_key, const char *next_key,
                             int64_t page_max, int64_t want);
/* Print a reply body as JSON, or as table/csv when flat enough. */
void posctl_print(const bus_val_t *body, const char *format);
/*  Whether a field (dotted path or column name) holds money in fen: shown as yuan in tables. */
bool posctl_money_key(const char *path);
/* Print one CSV cell to stdout, quoted when needed, then a comma or (last) a newline. */
void posctl_print_csv_cell(const char *text, bool last);

int posctl_store(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_catalog(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_stock(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_report(bus_config_t *config, const bus_conn_cfg_t *cfg);
/* review list --store S | review done --store S SALE_ID: sales flagged for review (retail.c) */
int posctl_review(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_sim(bus_config_t *config, const bus_conn_cfg_t *cfg);
int posctl_dead(bus_config_t *config, const bus_conn_cfg_t *cfg);
/* Key management on the keys directory (--keys-dir), without busd: keygen [ROLE NAME...],
   node enroll|revoke STORE REGISTER, keys list|enrol|revoke. Exit codes. */
int posctl_keygen(bus_config_t *config);
int posctl_node(bus_config_t *config);
/* node list [--store S] [--format table|csv|json]: the registers the devices service knows
   (nodes.c); connects to busd with the configuration's connection options. Exit code. */
int posctl_node_list(bus_config_t *config);
int posctl_keys(bus_config_t *config);
/* journal verify FILE [--journal-key PUB.pem]: a register's journal checked offline (journal.c,
   docs/journal.md). Exit code. */
int posctl_journal(bus_config_t *config);
int posctl_tail_from(bus_config_t *config, const bus_conn_cfg_t *cfg, const char *prefix,
                     const char *from);

/* promo add|list|end, cashier add|disable|list, config set|show --store S ...: the registers'
   configuration in the devices service (config.c). Exit code. */
int posctl_promo(bus_config_t *config);
int posctl_cashier(bus_config_t *config);
int posctl_config(bus_config_t *config);
/* node config [--store S]: each node's configuration version against its store's latest. */
int posctl_node_config(bus_config_t *config);

/* device command --store S --register R --device D --command C [NAME=VALUE ...] [--key K]
   [--wait-ms N]: a command for a register's device through the devices service, polled until
   the register answers (device.c). Exit code. */
int posctl_device(bus_config_t *config);

/* card create|topup|get|block|unblock CARD ..., card list-blocked: stored-value cards in the
   payments service, amounts in yuan (card.c). Exit code. */
int posctl_card(bus_config_t *config);
int posctl_payments(bus_config_t *config);
/*  posctl top: the live screen (top.c). */
extern const bus_opt_t posctl_top_opts[];
int posctl_top(bus_config_t *config, const bus_conn_cfg_t *cfg);

/* Options of these commands, added to posctl's table. */
extern const bus_opt_t posctl_retail_opts[];
extern const bus_opt_t posctl_journal_opts[];
extern const bus_opt_t posctl_config_opts[];
extern const bus_opt_t posctl_device_opts[];
extern const bus_opt_t posctl_card_opts[];
extern const bus_opt_t posctl_payments_opts[];

#endif
