/*  =========================================================================
    card.c - posctl card: stored-value cards in the payments service
    (docs/payments.md "Stored-value cards")

    posctl card create CARD --holder NAME [--daily-limit Y] [--meal-limit Y]
                            [--offline-cap Y]
    posctl card topup CARD AMOUNT [--op-id ID]
    posctl card get CARD
    posctl card block|unblock CARD --reason R
    posctl card list-blocked [--since VERSION]

    Amounts are typed in yuan and become fen exactly through libpos's
    decimal parser (no floating point); JSON output keeps the service's fen,
    tables show yuan. A top-up without --op-id gets a fresh one, printed, so
    that the operator can repeat exactly that top-up (the same op id tops
    up once) after an answer that never came.
    =========================================================================
*/
#include <pos/money.h>
#include "posctl.h"

#define S_SERVICE "payments"
#define S_CELL    64

const bus_opt_t posctl_card_opts[] = {
    {"holder", BUS_OPT_STR, NULL, 0, 0, "card create: the holder's name"},
    {"daily-limit", BUS_OPT_STR, NULL, 0, 0, "card create: yuan a day at most (0: no limit)"},
    {"meal-limit", BUS_OPT_STR, NULL, 0, 0, "card create: yuan a meal at most (0: no limit)"},
    {"offline-cap", BUS_OPT_STR, NULL, 0, 0,
     "card create: yuan a register may take offline at once (0: no cap)"},
    {"op-id", BUS_OPT_STR, NULL, 0, 0,
     "card topup: the top-up's id; the same id tops up once (default: a new one)"},
    {"since", BUS_OPT_INT, "0", 0, INT64_MAX,
     "card list-blocked: changes after this list version (0: the cards blocked now)"},
    {NULL, 0, NULL, 0, 0, NULL}};

static bool s_yuan(const char *option, const char *text, int64_t *fen)
{
    pos_err_t err = pos_money_parse(text, false, fen);
    if (err != POS_OK)
        fprintf(stderr, "posctl: %s %s: %s (yuan, e.g. 12.50)\n", option, text, pos_strerror(err));
    return err == POS_OK;
}

static bus_msg_t *s_call(bus_config_t *config, const char *method, bus_val_t **body_p)
{
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    if (!client) {
        bus_val_destroy(body_p);
        return NULL;
    }
    bus_msg_t *reply = posctl_call(client, S_SERVICE, method, body_p);
    bus_client_destroy(&client);
    return reply;
}

static const char *s_str(const bus_val_t *v, const char *key)
{
    const char *s = bus_val_map_get_str(v, key);
    return s ? s : "";
}

static int64_t s_int(const bus_val_t *v, const char *key)
{
    int64_t i = 0;
    bus_val_map_get_int(v, key, &i);
    return i;
}

/*  A card (card.get's reply) for people: one "name value" line each, money in yuan. */
static void s_print_card(const bus_val_t *card, const char *format)
{
    if (!strcmp(format, "json")) {
        posctl_print(card, format);
        return;
    }
    static const char *const money[] = {"balance",     "daily_limit", "meal_limit", "offline_cap",
                                        "spent_today", "spent_meal",  NULL};
    bus_val_t *out = bus_val_new_map();
    bus_val_map_set_str(out, "card", s_str(card, "card"));
    bus_val_map_set_str(out, "holder", s_str(card, "holder"));
    bus_val_map_set_str(out, "status", s_str(card, "status"));
    if (*s_str(card, "reason"))
        bus_val_map_set_str(out, "reason", s_str(card, "reason"));
    bus_val_map_set_str(out, "meal", *s_str(card, "meal") ? s_str(card, "meal") : "(none now)");
    bool csv = !strcmp(format, "csv");
    for (int i = 0; money[i]; i++) { /* yuan for people; csv keeps plain decimals */
        char yuan[POS_MONEY_YUAN_MAX];
        int64_t fen = s_int(card, money[i]);
        bus_val_map_set_str(out, money[i],
                            csv ? pos_money_format(fen, yuan, sizeof(yuan))
                                : pos_money_format_yuan(fen, yuan, sizeof(yuan)));
    }
    bus_val_map_set_int(out, "version", s_int(card, "version"));
    posctl_print(out, format);
    bus_val_destroy(&out);
}

static int s_create(bus_config_t *config, const char *card, const char *format)
{
    const char *holder = bus_config_str(config, "holder");
    if (!holder) {
        fprintf(stderr, "posctl: card create needs --holder\n");
        return POSCTL_EXIT_USAGE;
    }
    static const char *const limits[][2] = {{"daily-limit", "daily_limit"},
                                            {"meal-limit", "meal_limit"},
                                            {"offline-cap", "offline_cap"}};
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", card);
    bus_val_map_set_str(body, "holder", holder);
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        const char *text = bus_config_str(config, limits[i][0]);
        int64_t fen = 0;
        char option[32];
        snprintf(option, sizeof(option), "--%s", limits[i][0]);
        if (text && !s_yuan(option, text, &fen)) {
            bus_val_destroy(&body);
            return POSCTL_EXIT_USAGE;
        }
        if (text)
            bus_val_map_set_int(body, limits[i][1], fen);
    }
    bus_msg_t *reply = s_call(config, "card.create", &body);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    s_print_card(bus_msg_body(reply), format);
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

static int s_topup(bus_config_t *config, const char *card, const char *amount_text,
                   const char *format)
{
    int64_t fen = 0;
    if (!s_yuan("amount", amount_text, &fen))
        return POSCTL_EXIT_USAGE;
    const char *op_id = bus_config_str(config, "op-id");
    zuuid_t *uuid = op_id ? NULL : zuuid_new();
    if (!op_id && !uuid)
        return POSCTL_EXIT_FAIL;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", card);
    bus_val_map_set_int(body, "amount", fen);
    bus_val_map_set_str(body, "op_id", op_id ? op_id : zuuid_str(uuid)); /* 32 hex digits */
    bus_msg_t *reply = s_call(config, "card.topup", &body);
    zuuid_destroy(&uuid);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    const bus_val_t *b = bus_msg_body(reply);
    if (!strcmp(format, "json"))
        posctl_print(b, format);
    else {
        bool dup = false;
        char amount[POS_MONEY_YUAN_MAX], balance[POS_MONEY_YUAN_MAX];
        bus_val_map_get_bool(b, "duplicate", &dup);
        printf("card %s %stopped up %s by op id %s: balance %s\n", card, dup ? "already " : "",
               pos_money_format_yuan(s_int(b, "amount"), amount, sizeof(amount)),
               s_str(b, "op_id"),
               pos_money_format_yuan(s_int(b, "balance"), balance, sizeof(balance)));
    }
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

static int s_status(bus_config_t *config, const char *method, const char *card, const char *format)
{
    const char *reason = bus_config_str(config, "reason");
    if (!reason) {
        fprintf(stderr, "posctl: card block and unblock need --reason\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "card", card);
    bus_val_map_set_str(body, "reason", reason);
    bus_msg_t *reply = s_call(config, method, &body);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    const bus_val_t *b = bus_msg_body(reply);
    bool changed = false;
    bus_val_map_get_bool(b, "changed", &changed);
    if (!strcmp(format, "json"))
        posctl_print(b, format);
    else
        printf("card %s %s%s\n", card, changed ? "" : "already ", s_str(b, "status"));
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

/*  Every page of card.blocklist after since, as one reply {version, changes, last}. */
static bus_val_t *s_blocklist(bus_config_t *config, int64_t since)
{
    bus_val_t *all = bus_val_new_map(), *changes = bus_val_new_arr();
    bool more = true;
    int64_t version = 0, last = since;
    while (more && all && changes) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_int(body, "since", last);
        bus_msg_t *reply = s_call(config, "card.blocklist", &body);
        if (!reply) {
            bus_val_destroy(&changes);
            bus_val_destroy(&all);
            return NULL;
        }
        const bus_val_t *b = bus_msg_body(reply);
        const bus_val_t *page = bus_val_map_get(b, "changes");
        for (size_t i = 0; i < bus_val_size(page); i++) {
            bus_val_t *c = bus_val_dup(bus_val_arr_get(page, i));
            bus_val_arr_push(changes, &c);
        }
        more = false;
        bus_val_map_get_bool(b, "more", &more);
        version = s_int(b, "version");
        int64_t next = s_int(b, "last");
        more = more && next > last;
        last = next;
        bus_msg_destroy(&reply);
    }
    bus_val_map_set_int(all, "version", version);
    bus_val_map_set_int(all, "last", last);
    bus_val_map_set(all, "changes", &changes);
    return all;
}

/*  The table: with since 0 the cards blocked now (each card's last change), else every
    change after since. */
static int s_list_blocked(bus_config_t *config, const char *format)
{
    int64_t since = bus_config_int(config, "since");
    bus_val_t *all = s_blocklist(config, since);
    if (!all)
        return POSCTL_EXIT_FAIL;
    if (!strcmp(format, "json")) {
        posctl_print(all, format);
        bus_val_destroy(&all);
        return POSCTL_EXIT_OK;
    }
    const bus_val_t *changes = bus_val_map_get(all, "changes");
    bus_val_t *out = bus_val_new_map(), *rows = bus_val_new_arr();
    size_t n = bus_val_size(changes);
    for (size_t i = 0; rows && i < n; i++) {
        const bus_val_t *c = bus_val_arr_get(changes, i);
        bool blocked = false, later = false;
        bus_val_map_get_bool(c, "blocked", &blocked);
        for (size_t k = i + 1; since == 0 && k < n && !later; k++)
            later = !strcmp(s_str(bus_val_arr_get(changes, k), "card"), s_str(c, "card"));
        if (since == 0 && (later || !blocked))
            continue;
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "card", s_str(c, "card"));
        bus_val_map_set_str(row, "status", blocked ? "blocked" : "unblocked");
        bus_val_map_set_int(row, "list_version", s_int(c, "version"));
        bus_val_arr_push(rows, &row);
    }
    if (bus_val_size(rows) == 0 && !strcmp(format, "table"))
        printf("%s (list version %" PRId64 ")\n", since ? "no changes" : "no card is blocked",
               s_int(all, "version"));
    else {
        bus_val_map_set(out, "rows", &rows);
        posctl_print(out, format);
    }
    bus_val_destroy(&rows);
    bus_val_destroy(&out);
    bus_val_destroy(&all);
    return POSCTL_EXIT_OK;
}

int posctl_card(bus_config_t *config)
{
    int argc = bus_config_argc(config);
    const char *sub = argc > 1 ? bus_config_arg(config, 1) : "";
    const char *card = argc > 2 ? bus_config_arg(config, 2) : NULL;
    const char *format = bus_config_str(config, "format");
    if (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))
        sub = "";
    if (!strcmp(sub, "list-blocked") && argc == 2)
        return s_list_blocked(config, format);
    if (!strcmp(sub, "create") && argc == 3)
        return s_create(config, card, format);
    if (!strcmp(sub, "topup") && argc == 4)
        return s_topup(config, card, bus_config_arg(config, 3), format);
    if ((!strcmp(sub, "block") || !strcmp(sub, "unblock")) && argc == 3)
        return s_status(config, strcmp(sub, "block") ? "card.unblock" : "card.block", card, format);
    if (!strcmp(sub, "get") && argc == 3) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "card", card);
        bus_msg_t *reply = s_call(config, "card.get", &body);
        if (!reply)
            return POSCTL_EXIT_FAIL;
        s_print_card(bus_msg_body(reply), format);
        bus_msg_destroy(&reply);
        return POSCTL_EXIT_OK;
    }
    fprintf(stderr, "posctl: usage: card create|topup|get|block|unblock CARD ..., card "
                    "list-blocked (posctl --help)\n");
    return POSCTL_EXIT_USAGE;
}
