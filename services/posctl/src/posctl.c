/*  =========================================================================
    posctl - the operator's command line

    posctl ping                 health of busd and every registered service instance;
                                exit 1 if any is unhealthy, silent, or --expect'ed but missing
    posctl stats TARGET         counters of busd, a service, or one "service@instance"
    posctl tail [PREFIX]        decoded events as JSON lines (one per event)
    posctl keygen [ROLE NAME..] busd's certificate (if missing) and an enrolled key of ROLE
                                (service, operator, consumer) for each NAME, in --keys-dir
    posctl node enroll|revoke STORE REGISTER   a register's key: create or enrol it again
                                (prints the files to carry to the register), or revoke it
    posctl node list [--store S]   registers known to the devices service: online, last
                                heartbeat, unsynced sales, config version, device health
    posctl keys list|enrol|revoke   enrolled keys with role and name (--format table|csv|json);
                                enrol ROLE NAME again, revoke ROLE NAME (the key files stay)
    posctl store add STORE [NAME]
    posctl catalog import FILE.csv | catalog get BARCODE|SKU
    posctl stock get|history|reorder|receive|count|adjust|transfer --store S ...
    posctl report x|z|day|items|hours|baskets --store S [--date D] [--format table|csv|json]
    posctl review list|done --store S [SALE_ID]   sales flagged for review (catalog
                                differences, returns beyond their original); done: looked at
    posctl sim --store S [--registers N] [--sales N] [--seed N]   (a register simulator;
                                resends each sale until acknowledged; exit 1 if any was not)
    posctl dead SERVICE [--after ID] [--count N]   dead letters of inventory or reporting
    posctl journal verify FILE [--journal-key PUB.pem]   a register's journal, offline: exit 1
                                naming the first bad record
    posctl promo add|list|end, cashier add|disable|list, config set|show --store S ...
                                the registers' configuration (config.c); node config: each
                                node's configuration version, current or behind
    posctl device command --store S --register R --device D --command C [NAME=VALUE ...]
                                a command for a register's device (device.c): exit 0 when
                                the register answered ok, 1 not ok or still pending
    posctl card create|topup|get|block|unblock|list-blocked   stored-value cards in the
                                payments service, amounts in yuan (card.c)

    Output goes to stdout; diagnostics to stderr; exit 0 ok, 1 failure, 2 usage.
    The key commands (keys.c) work on the keys directory alone and journal
    verify (journal.c) on a file alone; neither connects to busd; every
    other command is a client of busd.
    =========================================================================
*/
#include <bus/bus.h>
#include "posctl.h"

#define S_PROGRAM    "posctl"
#define S_TOPIC_MAX  (BUS_TOPIC_MAX + 1)
#define S_EXIT_OK    0
#define S_EXIT_FAIL  1
#define S_EXIT_USAGE 2

static const bus_opt_t s_options[] = {
    {"timeout-ms", BUS_OPT_INT, "2000", 10, 600000, "per-request timeout"},
    {"retries", BUS_OPT_INT, "1", 0, 100, "resends after a request times out"},
    {"expect", BUS_OPT_STR, "", 0, 0,
     "ping: comma-separated services that must have at least one healthy instance"},
    {"instance-prefix", BUS_OPT_STR, "", 0, 0,
     "ping: ask only the instances whose id starts with this (e.g. sales-HOSTNAME-: one "
     "container's own instance, for its healthcheck); busd is always asked"},
    {"count", BUS_OPT_INT, "0", 0, INT64_MAX,
     "tail: stop after this many events (0 = never); dead: entries to list (0 = 100); "
     "stock history: moves to show, newest first (0 = 100)"},
    {"idle-ms", BUS_OPT_INT, "0", 0, INT64_MAX,
     "tail: stop after this long without an event (0 = never)"},
    {"keys-dir", BUS_OPT_STR, "keys", 0, 0,
     "keygen, node, keys: the keys directory (busd's certificates; enrolled ones in clients/)"},
    {NULL, 0, NULL, 0, 0, NULL}};

static void s_usage(bus_config_t *config)
{
    printf(
        "usage: posctl [options] COMMAND [ARGS]\n"
        "  ping                     health of busd and every service instance\n"
        "  stats TARGET             counters of busd, a service or service@instance\n"
        "  top [--store S] [--expect LIST] [--interval-ms N] [--once]   one live screen of\n"
        "                           the system: instances, rates, registers, alerts\n"
        "  tail [PREFIX]            print events as JSON lines\n"
        "  keygen                   create busd's certificate in --keys-dir (if missing)\n"
        "  keygen ROLE NAME...      and an enrolled key per NAME; ROLE: service (named after\n"
        "                           its service), operator or consumer\n"
        "  node enroll STORE REG    a register's key (or its existing key enrolled again)\n"
        "  node revoke STORE REG    refuse a register (its key files stay)\n"
        "  node list [--store S]    registers: online, heartbeat, unsynced, devices\n"
        "  node devices [--store S] their peripherals: health, bytes, jobs, errors, reconnects;\n"
        "                           their serial ports: transport, USB VID:PID, used by\n"
        "  keys list                enrolled keys: role, name, store, register, created, key\n"
        "                           (--format table|csv|json)\n"
        "  keys enrol|revoke ROLE NAME   enrol an existing key again, or refuse it\n"
        "  store add STORE [NAME]   register a store\n"
        "  catalog import FILE.csv  import items (sku,barcode,name,price,tax_rate,unit,category)\n"
        "  catalog get CODE         one item by SKU or barcode\n"
        "  stock SUB --store S ...  get [SKU], history SKU [--count N], reorder,\n"
        "                           receive SKU QTY --ref R,\n"
        "                           count SKU QTY, adjust SKU DELTA --reason R,\n"
        "                           transfer SKU QTY --to STORE\n"
        "  report KIND --store S    x (--register R), z, day, items, hours, baskets\n"
        "  review list --store S    sales flagged for review, with their flags;\n"
        "                           review done --store S SALE_ID takes one off the list\n"
        "  sim --store S            ring up simulated tickets (--registers, --sales, --seed);\n"
        "                           resends each sale until acknowledged (--deadline-ms)\n"
        "  dead SERVICE             dead letters of inventory or reporting: entries that can\n"
        "                           never apply (--after ID, --count N, --format)\n"
        "  tail PREFIX --from ID    replay committed sales after ID, then follow live\n"
        "  journal verify FILE      check a register's journal offline; names the first bad\n"
        "                           record (--journal-key PUB.pem, --format json)\n"
        "  promo add --store S --id ID --kind K (--sku X | --category C)   a promotion; K:\n"
        "                           percent --percent 12.5, amount --amount 1.50 (yuan off),\n"
        "                           qty_break --qty N --amount 10.00, buy_x_get_y --qty X\n"
        "                           --free Y, member_price --price 9.90; [--from/--to\n"
        "                           'YYYY-MM-DD HH:MM' local time]\n"
        "  promo list --store S [--all]   promotions (--all: ended ones too; --format)\n"
        "  promo end --store S --id ID    end a promotion now\n"
        "  cashier add --store S --id ID --name NAME --role ROLE [--permissions a,b]\n"
        "                           reads the PIN from stdin; only its hash is sent\n"
        "  cashier disable --store S --id ID | cashier list --store S\n"
        "  config set --store S     [--header 'l1|l2'] [--footer ..] [--cash-rounding on|off]\n"
        "                           [--tax-id X] [--discount-cap PERCENT]\n"
        "  config show --store S    the registers' configuration (--format json)\n"
        "  node config [--store S]  each node's config version: current or behind\n"
        "  device command --store S --register R --device D --command C [NAME=VALUE ...]\n"
        "                           a command for a register's device (args NAME=VALUE text);\n"
        "                           waits --wait-ms for the answer; --key K polls it again\n"
        "  card create CARD --holder NAME [--daily-limit Y] [--meal-limit Y] [--offline-cap Y]\n"
        "                           a stored-value card (limits in yuan, 0: none)\n"
        "  card topup CARD YUAN [--op-id ID]   add money; the same op id tops up once\n"
        "  card get CARD            balance, limits, spent today and this meal, status\n"
        "  card block|unblock CARD --reason R   refuse the card at every register, or not\n"
        "  card list-blocked [--since V]   the cards blocked now, or the changes after list\n"
        "                           version V (--format table|csv|json: fen in json)\n"
        "  payments reconcile --store S --date D [--provider wechat|alipay] FILE   compare a\n"
        "                           provider's statement of day D (WeChat's trade bill,\n"
        "                           Alipay's 业务明细) with its intents; exit 1 on differences;\n"
        "                           kept for the Z\n"
        "  payments list --store S --date D   the intents created on the provider's day D\n"
        "  payments refund-resolve --store S REFUND_NO succeeded|failed --reason TEXT\n"
        "                           how a refund left to an operator (manual) ended\n"
        "options:\n");
    bus_config_usage(config, stdout);
}

/*  Print one health line; returns whether the instance is healthy. */
static bool s_print_health(const char *service, const char *instance, bus_msg_t *reply,
                           const char *error)
{
    if (!reply) {
        printf("%-12s %-48s %-9s %s\n", service, instance, "DOWN", error);
        return false;
    }
    bus_val_t *body = bus_msg_body(reply);
    bool healthy = false;
    int64_t uptime = 0;
    bus_val_map_get_bool(body, "healthy", &healthy);
    bus_val_map_get_int(body, "uptime_ms", &uptime);
    const char *version = bus_val_map_get_str(body, "version");
    bus_buf_t extra = {0};
    bus_val_to_json(body, &extra);
    printf("%-12s %-48s %-9s version=%s uptime=%" PRId64 "s %s\n", service, instance,
           healthy ? "OK" : "UNHEALTHY", version ? version : "?", uptime / 1000,
           extra.data ? (const char *)extra.data : "");
    bus_buf_free(&extra);
    return healthy;
}

static int s_ping(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return S_EXIT_FAIL;
    int rc = S_EXIT_OK;
    bus_msg_t *reply = bus_client_request(client, BUS_BROKER_SERVICE, "health", NULL);
    if (!s_print_health(BUS_BROKER_SERVICE,
                        reply ? bus_val_map_get_str(bus_msg_body(reply), "instance") : "-", reply,
                        bus_client_errstr(client))) {
        bus_msg_destroy(&reply);
        bus_client_destroy(&client);
        return S_EXIT_FAIL;
    }
    bus_msg_destroy(&reply);
    bus_msg_t *list = bus_client_request(client, BUS_BROKER_SERVICE, "services", NULL);
    bus_val_t *instances = list ? bus_val_map_get(bus_msg_body(list), "instances") : NULL;
    zhashx_t *healthy = zhashx_new();
    const char *prefix = bus_config_str(config, "instance-prefix");
    size_t plen = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; i < bus_val_size(instances); i++) {
        bus_val_t *item = bus_val_arr_get(instances, i);
        const char *service = bus_val_map_get_str(item, "service");
        const char *instance = bus_val_map_get_str(item, "instance");
        if (!service || !instance || (plen && strncmp(instance, prefix, plen) != 0))
            continue;
        char target[BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX + 2];
        snprintf(target, sizeof(target), "%s@%s", service, instance);
        bus_msg_t *health = bus_client_request(client, target, "health", NULL);
        if (s_print_health(service, instance, health, bus_client_errstr(client)))
            zhashx_update(healthy, service, (void *)1);
        else
            rc = S_EXIT_FAIL;
        bus_msg_destroy(&health);
    }
    char *expect = strdup(bus_config_str(config, "expect"));
    char *save = NULL;
    for (char *name = strtok_r(expect, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if (!zhashx_lookup(healthy, name)) {
            printf("%-12s %-48s %-9s %s\n", name, "-", "MISSING", "no healthy instance");
            rc = S_EXIT_FAIL;
        }
    }
    free(expect);
    zhashx_destroy(&healthy);
    if (!list) {
        fprintf(stderr, "posctl: cannot list services: %s\n", bus_client_errstr(client));
        rc = S_EXIT_FAIL;
    }
    bus_msg_destroy(&list);
    bus_client_destroy(&client);
    return rc;
}

static int s_stats(bus_config_t *config, const bus_conn_cfg_t *cfg, const char *target)
{
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return S_EXIT_FAIL;
    bus_msg_t *reply = bus_client_request(client, target, "stats", NULL);
    int rc = S_EXIT_FAIL;
    if (reply) {
        bus_buf_t out = {0};
        if (bus_val_to_json(bus_msg_body(reply), &out) == 0) {
            printf("%s\n", (const char *)out.data);
            rc = S_EXIT_OK;
        }
        bus_buf_free(&out);
    } else
        fprintf(stderr, "posctl: %s\n", bus_client_errstr(client));
    bus_msg_destroy(&reply);
    bus_client_destroy(&client);
    return rc;
}

static int s_tail(bus_config_t *config, const bus_conn_cfg_t *cfg, const char *prefix)
{
    const char *err = NULL;
    bus_sub_t *sub = bus_sub_new(cfg, &err);
    if (!sub) {
        fprintf(stderr, "posctl: cannot subscribe: %s\n", err);
        return S_EXIT_FAIL;
    }
    bus_sub_subscribe(sub, prefix);
    int64_t count = bus_config_int(config, "count");
    int64_t idle = bus_config_int(config, "idle-ms");
    int64_t seen = 0;
    char topic[S_TOPIC_MAX];
    bus_buf_t out = {0};
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (!bus_program_stopping() && (count == 0 || seen < count)) {
        bus_msg_t *msg = bus_sub_recv(sub, idle > 0 ? (int)idle : 500, topic, sizeof(topic));
        if (!msg) {
            if (idle > 0)
                break;
            continue;
        }
        bus_buf_reset(&out);
        bus_val_t *t = bus_val_new_str(topic);
        bus_buf_t tj = {0};
        if (bus_val_to_json(t, &tj) == 0 && bus_msg_to_json(msg, &out) == 0)
            printf("{\"topic\":%s,\"msg\":%s}\n", (const char *)tj.data, (const char *)out.data);
        bus_buf_free(&tj);
        bus_val_destroy(&t);
        bus_msg_destroy(&msg);
        seen++;
    }
    if (bus_sub_gaps(sub) > 0)
        fprintf(stderr, "posctl: %" PRIu64 " events were missed (sequence gaps)\n",
                bus_sub_gaps(sub));
    bus_buf_free(&out);
    bus_sub_destroy(&sub);
    return S_EXIT_OK;
}

int main(int argc, char **argv)
{
    bus_config_t *config = bus_config_new(S_PROGRAM, s_options);
    if (!config || bus_config_add(config, bus_conn_opts) != 0 ||
        bus_config_add(config, posctl_retail_opts) != 0 ||
        bus_config_add(config, posctl_journal_opts) != 0 ||
        bus_config_add(config, posctl_config_opts) != 0 ||
        bus_config_add(config, posctl_device_opts) != 0 ||
        bus_config_add(config, posctl_card_opts) != 0 ||
        bus_config_add(config, posctl_payments_opts) != 0 ||
        bus_config_add(config, posctl_top_opts) != 0 ||
        bus_config_add(config, bus_program_opts) != 0)
        return S_EXIT_USAGE;
    int rc = bus_config_load(config, argc, argv);
    if (rc == 0 && bus_config_bool(config, "example-config")) {
        bus_config_write_example(config, stdout);
        bus_config_destroy(&config);
        return S_EXIT_OK;
    }
    if (rc == 1 || (rc == 0 && bus_config_argc(config) == 0)) {
        s_usage(config);
        bus_config_destroy(&config);
        return rc == 1 ? S_EXIT_OK : S_EXIT_USAGE;
    }
    if (rc != 0 || bus_program_log_init(config, S_PROGRAM) != 0) {
        fprintf(stderr, "posctl: %s\n", rc != 0 ? bus_config_error(config) : "bad --log-level");
        bus_config_destroy(&config);
        return S_EXIT_USAGE;
    }
    bus_program_signals();
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    const char *cmd = bus_config_arg(config, 0);
    if (streq(cmd, "ping"))
        rc = s_ping(config, &cfg);
    else if (streq(cmd, "top"))
        rc = posctl_top(config, &cfg);
    else if (streq(cmd, "stats") && bus_config_argc(config) == 2)
        rc = s_stats(config, &cfg, bus_config_arg(config, 1));
    else if (streq(cmd, "tail") && bus_config_str(config, "from"))
        rc = posctl_tail_from(config, &cfg,
                              bus_config_argc(config) > 1 ? bus_config_arg(config, 1) : "sale.",
                              bus_config_str(config, "from"));
    else if (streq(cmd, "tail"))
        rc = s_tail(config, &cfg, bus_config_argc(config) > 1 ? bus_config_arg(config, 1) : "");
    else if (streq(cmd, "store"))
        rc = posctl_store(config, &cfg);
    else if (streq(cmd, "catalog"))
        rc = posctl_catalog(config, &cfg);
    else if (streq(cmd, "stock"))
        rc = posctl_stock(config, &cfg);
    else if (streq(cmd, "report"))
        rc = posctl_report(config, &cfg);
    else if (streq(cmd, "review"))
        rc = posctl_review(config, &cfg);
    else if (streq(cmd, "sim"))
        rc = posctl_sim(config, &cfg);
    else if (streq(cmd, "dead"))
        rc = posctl_dead(config, &cfg);
    else if (streq(cmd, "keygen"))
        rc = posctl_keygen(config);
    else if (streq(cmd, "node") && bus_config_argc(config) > 1 &&
             streq(bus_config_arg(config, 1), "config"))
        rc = posctl_node_config(config);
    else if (streq(cmd, "node"))
        rc = posctl_node(config);
    else if (streq(cmd, "promo"))
        rc = posctl_promo(config);
    else if (streq(cmd, "cashier"))
        rc = posctl_cashier(config);
    else if (streq(cmd, "config"))
        rc = posctl_config(config);
    else if (streq(cmd, "keys"))
        rc = posctl_keys(config);
    else if (streq(cmd, "journal"))
        rc = posctl_journal(config);
    else if (streq(cmd, "device"))
        rc = posctl_device(config);
    else if (streq(cmd, "card"))
        rc = posctl_card(config);
    else if (streq(cmd, "payments"))
        rc = posctl_payments(config);
    else {
        fprintf(stderr, "posctl: unknown command '%s'\n", cmd);
        s_usage(config);
        rc = S_EXIT_USAGE;
    }
    bus_config_destroy(&config);
    return rc;
}
