/*  =========================================================================
    config.c - posctl promo, cashier, config and node config: the registers'
    configuration, kept by the devices service

    Thin requests again: the service checks every field. What posctl adds
    is typing: money in yuan and percentages ("12.5") become fen and basis
    points exactly through libpos's decimal parser (no floating point), times
    are local "YYYY-MM-DD HH:MM", and a cashier's PIN is read from stdin
    (without echo on a terminal), hashed here with node_pin_hash and wiped:
    only the hash goes on the bus, so a PIN never leaves posctl in clear.
    =========================================================================
*/
#include <errno.h>
#include <node/cashier.h>
#include <pos/money.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "posctl.h"

#define S_SERVICE   "devices"
#define S_PIN_LINE  64
#define S_CELL      256
#define S_LINES_MAX 8
#define S_NODE_PAGE 1000 /* the most rows node.list returns in one page */

const bus_opt_t posctl_config_opts[] = {
    {"id", BUS_OPT_STR, NULL, 0, 0, "promo, cashier: the promotion's or cashier's id"},
    {"kind", BUS_OPT_STR, NULL, 0, 0,
     "promo add: percent, amount, qty_break, buy_x_get_y or member_price"},
    {"sku", BUS_OPT_STR, NULL, 0, 0, "promo add: the SKU it applies to (or --category)"},
    {"category", BUS_OPT_STR, NULL, 0, 0, "promo add: the category it applies to (or --sku)"},
    {"percent", BUS_OPT_STR, NULL, 0, 0, "promo add percent: percent off, e.g. 12.5"},
    {"amount", BUS_OPT_STR, NULL, 0, 0,
     "promo add amount: yuan off per unit; qty_break: the price of --qty pieces"},
    {"qty", BUS_OPT_INT, "0", 0, 1000000, "promo add qty_break: pieces; buy_x_get_y: X bought"},
    {"free", BUS_OPT_INT, "0", 0, 1000000, "promo add buy_x_get_y: Y free"},
    {"price", BUS_OPT_STR, NULL, 0, 0, "promo add member_price: the member price in yuan"},
    {"all", BUS_OPT_BOOL, "false", 0, 0, "promo list: ended promotions too"},
    {"name", BUS_OPT_STR, NULL, 0, 0, "cashier add: display name"},
    {"role", BUS_OPT_STR, NULL, 0, 0, "cashier add: cashier, supervisor or manager"},
    {"permissions", BUS_OPT_STR, NULL, 0, 0,
     "cashier add: comma-separated actions instead of the role's defaults"},
    {"header", BUS_OPT_STR, NULL, 0, 0, "config set: receipt header lines, separated by '|'"},
    {"footer", BUS_OPT_STR, NULL, 0, 0, "config set: receipt footer lines, separated by '|'"},
    {"cash-rounding", BUS_OPT_STR, NULL, 0, 0, "config set: on or off"},
    {"tax-id", BUS_OPT_STR, NULL, 0, 0, "config set: the store's tax id on receipts"},
    {"discount-cap", BUS_OPT_STR, NULL, 0, 0,
     "config set: ticket discount in percent above which discount_over_cap is needed"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* ---- helpers ------------------------------------------------------------------------------ */

static const char *s_opt(bus_config_t *config, const char *name)
{
    return bus_config_str(config, name);
}

static bool s_format_ok(const char *format)
{
    return !strcmp(format, "table") || !strcmp(format, "csv") || !strcmp(format, "json");
}

/*  Call devices; the reply (caller destroys) or NULL after printing why. */
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

/*  Send a change and print "what: version N"; exit code. */
static int s_change(bus_config_t *config, const char *method, bus_val_t **body_p, const char *what)
{
    bus_msg_t *reply = s_call(config, method, body_p);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    int64_t version = 0;
    bool unchanged = false;
    bus_val_map_get_int(bus_msg_body(reply), "version", &version);
    bus_val_map_get_bool(bus_msg_body(reply), "unchanged", &unchanged);
    printf("%s%s: configuration version %" PRId64 "\n", what, unchanged ? " already" : "", version);
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

/*  Decimal text with at most 2 decimals into hundredths, exactly: yuan to fen, percent to basis
    points. false (after saying why) when it is not one. */
static bool s_hundredths(const char *option, const char *text, int64_t *out)
{
    pos_err_t err = pos_money_parse(text, false, out);
    if (err != POS_OK)
        fprintf(stderr, "posctl: --%s %s: %s\n", option, text, pos_strerror(err));
    return err == POS_OK;
}

/*  Local time "YYYY-MM-DD HH:MM" (or "YYYY-MM-DD", midnight) into ms since the epoch. */
static bool s_time_ms(const char *option, const char *text, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(text, "%Y-%m-%d %H:%M", &tm);
    if (!end) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(text, "%Y-%m-%d", &tm);
    }
    tm.tm_isdst = -1;
    time_t t = end && *end == '\0' ? mktime(&tm) : (time_t)-1;
    if (t == (time_t)-1) {
        fprintf(stderr, "posctl: --%s %s: a local time YYYY-MM-DD HH:MM required\n", option, text);
        return false;
    }
    *out = (int64_t)t * 1000;
    return true;
}

/*  Split "a|b|c" into an array of strings ("" is no lines). */
static bus_val_t *s_split(const char *text, char sep)
{
    bus_val_t *out = bus_val_new_arr();
    for (const char *p = text; out && *text;) {
        const char *q = strchr(p, sep);
        size_t len = q ? (size_t)(q - p) : strlen(p);
        bus_val_t *s = bus_val_new_strn(p, len);
        if (bus_val_arr_push(out, &s) != 0)
            bus_val_destroy(&out);
        if (!q)
            break;
        p = q + 1;
    }
    return out;
}

static const char *s_store(bus_config_t *config)
{
    const char *store = s_opt(config, "store");
    if (!store)
        fprintf(stderr, "posctl: --store is required\n");
    return store;
}

/* ---- promo -------------------------------------------------------------------------------- */

/*  The body of promo add from the options; NULL after saying why. */
static bus_val_t *s_promo_body(bus_config_t *config, const char *store)
{
    const char *id = s_opt(config, "id"), *kind = s_opt(config, "kind");
    const char *sku = s_opt(config, "sku"), *category = s_opt(config, "category");
    if (!id || !kind || (!sku == !category)) {
        fprintf(stderr, "posctl: promo add needs --id, --kind and one of --sku, --category\n");
        return NULL;
    }
    int64_t percent = 0, amount = 0, price = 0, from = 0, to = 0;
    const char *p = s_opt(config, "percent"), *a = s_opt(config, "amount");
    const char *pr = s_opt(config, "price"), *f = s_opt(config, "from"), *t = s_opt(config, "to");
    if ((p && !s_hundredths("percent", p, &percent)) ||
        (a && !s_hundredths("amount", a, &amount)) || (pr && !s_hundredths("price", pr, &price)) ||
        (f && !s_time_ms("from", f, &from)) || (t && !s_time_ms("to", t, &to)))
        return NULL;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "id", id);
    bus_val_map_set_str(body, "kind", kind);
    bus_val_map_set_str(body, "sku", sku ? sku : "");
    bus_val_map_set_str(body, "category", category ? category : "");
    bus_val_map_set_int(body, "percent_bp", percent);
    bus_val_map_set_int(body, "amount", amount);
    bus_val_map_set_int(body, "qty", bus_config_int(config, "qty"));
    bus_val_map_set_int(body, "free_qty", bus_config_int(config, "free"));
    bus_val_map_set_int(body, "price", price);
    bus_val_map_set_int(body, "start_ms", from);
    bus_val_map_set_int(body, "end_ms", to);
    return body;
}

/*  What a promotion does, for people: "12.50% off", "3 for 10.00", "buy 2 get 1". */
static void s_promo_value(const bus_val_t *p, char *out, size_t size)
{
    const char *kind = bus_val_map_get_str(p, "kind");
    int64_t bp = 0, amount = 0, qty = 0, free_qty = 0, price = 0;
    bus_val_map_get_int(p, "percent_bp", &bp);
    bus_val_map_get_int(p, "amount", &amount);
    bus_val_map_get_int(p, "qty", &qty);
    bus_val_map_get_int(p, "free_qty", &free_qty);
    bus_val_map_get_int(p, "price", &price);
    char money[POS_MONEY_YUAN_MAX];
    kind = kind ? kind : "";
    if (!strcmp(kind, "percent"))
        snprintf(out, size, "%s%% off", pos_money_format(bp, money, sizeof(money)));
    else if (!strcmp(kind, "amount"))
        snprintf(out, size, "%s off", pos_money_format_yuan(amount, money, sizeof(money)));
    else if (!strcmp(kind, "qty_break"))
        snprintf(out, size, "%" PRId64 " for %s", qty,
                 pos_money_format_yuan(amount, money, sizeof(money)));
    else if (!strcmp(kind, "buy_x_get_y"))
        snprintf(out, size, "buy %" PRId64 " get %" PRId64, qty, free_qty);
    else
        snprintf(out, size, "member %s", pos_money_format_yuan(price, money, sizeof(money)));
}

/*  ms since the epoch as local "YYYY-MM-DD HH:MM", "" for 0. */
static void s_time_text(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    out[0] = '\0';
    if (ms > 0 && localtime_r(&t, &tm))
        strftime(out, size, "%Y-%m-%d %H:%M", &tm);
}

static int s_promo_list(bus_config_t *config, const char *store, const char *format)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_bool(body, "all", bus_config_bool(config, "all"));
    bus_msg_t *reply = s_call(config, "promo.list", &body);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    const bus_val_t *promos = bus_val_map_get(bus_msg_body(reply), "promotions");
    if (!strcmp(format, "json"))
        posctl_print(bus_msg_body(reply), format);
    else if (bus_val_size(promos) == 0 && !strcmp(format, "table"))
        printf("no promotions in store %s\n", store);
    else {
        bus_val_t *out = bus_val_new_map(), *rows = bus_val_new_arr();
        for (size_t i = 0; rows && i < bus_val_size(promos); i++) {
            const bus_val_t *p = bus_val_arr_get(promos, i);
            const char *sku = bus_val_map_get_str(p, "sku");
            const char *cat = bus_val_map_get_str(p, "category");
            int64_t start = 0, end = 0;
            bool ended = false;
            bus_val_map_get_int(p, "start_ms", &start);
            bus_val_map_get_int(p, "end_ms", &end);
            bus_val_map_get_bool(p, "ended", &ended);
            char value[S_CELL], target[S_CELL], from[32], to[32];
            s_promo_value(p, value, sizeof(value));
            snprintf(target, sizeof(target), "%s%s", sku && *sku ? "sku " : "category ",
                     sku && *sku ? sku
                     : cat       ? cat
                                 : "");
            s_time_text(start, from, sizeof(from));
            s_time_text(end, to, sizeof(to));
            bus_val_t *row = bus_val_new_map();
            const char *id = bus_val_map_get_str(p, "id"), *kind = bus_val_map_get_str(p, "kind");
            bus_val_map_set_str(row, "id", id ? id : "");
            bus_val_map_set_str(row, "kind", kind ? kind : "");
            bus_val_map_set_str(row, "applies_to", target);
            bus_val_map_set_str(row, "deal", value);
            bus_val_map_set_str(row, "from", from);
            bus_val_map_set_str(row, "to", to);
            bus_val_map_set_str(row, "state", ended ? "ended" : "live");
            bus_val_arr_push(rows, &row);
        }
        bus_val_map_set(out, "rows", &rows);
        posctl_print(out, format);
        bus_val_destroy(&out);
    }
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

int posctl_promo(bus_config_t *config)
{
    const char *sub = bus_config_argc(config) == 2 ? bus_config_arg(config, 1) : "";
    const char *format = s_opt(config, "format"), *store = NULL;
    if ((strcmp(sub, "add") && strcmp(sub, "list") && strcmp(sub, "end")) || !s_format_ok(format)) {
        fprintf(stderr, "posctl: usage: promo add|list|end --store S ... (posctl --help)\n");
        return POSCTL_EXIT_USAGE;
    }
    if (!(store = s_store(config)))
        return POSCTL_EXIT_USAGE;
    if (!strcmp(sub, "list"))
        return s_promo_list(config, store, format);
    char what[S_CELL];
    bus_val_t *body = NULL;
    if (!strcmp(sub, "add"))
        body = s_promo_body(config, store);
    else if (s_opt(config, "id")) {
        body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "id", s_opt(config, "id"));
    } else
        fprintf(stderr, "posctl: promo end needs --id\n");
    if (!body)
        return POSCTL_EXIT_USAGE;
    snprintf(what, sizeof(what), "promotion %s %s in store %s", s_opt(config, "id"),
             strcmp(sub, "add") ? "ended" : "added", store);
    return s_change(config, strcmp(sub, "add") ? "promo.end" : "promo.add", &body, what);
}

/* ---- cashier ------------------------------------------------------------------------------ */

/*  Read a PIN as one line from stdin, without echo when stdin is a terminal. 0, or -1 after
    saying why. pin is wiped on failure. */
static int s_read_pin(char *pin, size_t size)
{
    struct termios saved, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (tty) {
        fprintf(stderr, "PIN (%d-%d digits): ", NODE_PIN_MIN_DIGITS, NODE_PIN_MAX_DIGITS);
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    bool ok = fgets(pin, (int)size, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stderr);
    }
    pin[ok ? strcspn(pin, "\r\n") : 0] = '\0';
    const char *why = ok ? node_pin_check(pin) : "no PIN on standard input";
    if (why) {
        explicit_bzero(pin, size);
        fprintf(stderr, "posctl: PIN: %s\n", why);
        return -1;
    }
    return 0;
}

static int s_cashier_add(bus_config_t *config, const char *store)
{
    const char *id = s_opt(config, "id"), *name = s_opt(config, "name");
    const char *role = s_opt(config, "role"), *perms = s_opt(config, "permissions");
    if (!id || !name || !role) {
        fprintf(stderr, "posctl: cashier add needs --id, --name and --role (PIN on stdin)\n");
        return POSCTL_EXIT_USAGE;
    }
    char pin[S_PIN_LINE], hash[NODE_PIN_HASH_MAX];
    if (s_read_pin(pin, sizeof(pin)) != 0)
        return POSCTL_EXIT_FAIL;
    int rc = node_pin_hash(pin, hash, sizeof(hash));
    explicit_bzero(pin, sizeof(pin));
    if (rc != 0) {
        fprintf(stderr, "posctl: cannot hash the PIN: %s\n", strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "id", id);
    bus_val_map_set_str(body, "name", name);
    bus_val_map_set_str(body, "role", role);
    bus_val_map_set_str(body, "pin_hash", hash);
    if (perms) {
        bus_val_t *list = s_split(perms, ',');
        bus_val_map_set(body, "permissions", &list);
    }
    char what[S_CELL];
    snprintf(what, sizeof(what), "cashier %s added to store %s", id, store);
    return s_change(config, "cashier.add", &body, what);
}

/*  The store's configuration (config.get); NULL after saying why. */
static bus_msg_t *s_get(bus_config_t *config, const char *store)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    return s_call(config, "config.get", &body);
}

static int s_cashier_list(bus_config_t *config, const char *store, const char *format)
{
    bus_msg_t *reply = s_get(config, store);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    const bus_val_t *cashiers = bus_val_map_get(bus_msg_body(reply), "cashiers");
    bus_val_t *out = bus_val_new_map(), *rows = bus_val_new_arr();
    for (size_t i = 0; rows && i < bus_val_size(cashiers); i++) {
        const bus_val_t *c = bus_val_arr_get(cashiers, i);
        const bus_val_t *perms = bus_val_map_get(c, "permissions");
        char cell[S_CELL] = "";
        size_t used = 0;
        for (size_t k = 0; k < bus_val_size(perms) && used < sizeof(cell); k++) {
            const char *a = bus_val_get_str(bus_val_arr_get(perms, k), NULL);
            int n = snprintf(cell + used, sizeof(cell) - used, "%s%s", k ? "," : "", a ? a : "?");
            used += n > 0 ? (size_t)n : 0;
        }
        if (!perms)
            snprintf(cell, sizeof(cell), "(role defaults)");
        bool active = false;
        bus_val_map_get_bool(c, "active", &active);
        const char *id = bus_val_map_get_str(c, "id"), *name = bus_val_map_get_str(c, "name");
        const char *role = bus_val_map_get_str(c, "role");
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "id", id ? id : "");
        bus_val_map_set_str(row, "name", name ? name : "");
        bus_val_map_set_str(row, "role", role ? role : "");
        bus_val_map_set_str(row, "permissions", cell);
        bus_val_map_set_str(row, "state", active ? "active" : "disabled");
        bus_val_arr_push(rows, &row);
    }
    if (bus_val_size(rows) == 0 && !strcmp(format, "table"))
        printf("no cashiers in store %s\n", store);
    else {
        bus_val_map_set(out, strcmp(format, "json") ? "rows" : "cashiers", &rows);
        posctl_print(out, format);
    }
    bus_val_destroy(&rows);
    bus_val_destroy(&out);
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

int posctl_cashier(bus_config_t *config)
{
    const char *sub = bus_config_argc(config) == 2 ? bus_config_arg(config, 1) : "";
    const char *format = s_opt(config, "format"), *store = NULL;
    if ((strcmp(sub, "add") && strcmp(sub, "list") && strcmp(sub, "disable")) ||
        !s_format_ok(format)) {
        fprintf(stderr, "posctl: usage: cashier add|disable|list --store S ... (posctl --help)\n");
        return POSCTL_EXIT_USAGE;
    }
    if (!(store = s_store(config)))
        return POSCTL_EXIT_USAGE;
    if (!strcmp(sub, "list"))
        return s_cashier_list(config, store, format);
    if (!strcmp(sub, "add"))
        return s_cashier_add(config, store);
    const char *id = s_opt(config, "id");
    if (!id) {
        fprintf(stderr, "posctl: cashier disable needs --id\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "id", id);
    char what[S_CELL];
    snprintf(what, sizeof(what), "cashier %s disabled in store %s", id, store);
    return s_change(config, "cashier.disable", &body, what);
}

/* ---- config ------------------------------------------------------------------------------- */

/*  The body of config set from the options; NULL after saying why. */
static bus_val_t *s_set_body(bus_config_t *config, const char *store)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    static const char *const lines[][2] = {{"header", "receipt_header"},
                                           {"footer", "receipt_footer"}};
    for (int i = 0; i < 2; i++)
        if (s_opt(config, lines[i][0])) {
            bus_val_t *list = s_split(s_opt(config, lines[i][0]), '|');
            bus_val_map_set(body, lines[i][1], &list);
        }
    const char *rounding = s_opt(config, "cash-rounding"), *cap = s_opt(config, "discount-cap");
    int64_t bp = 0;
    bool ok = true;
    if (rounding && strcmp(rounding, "on") && strcmp(rounding, "off")) {
        fprintf(stderr, "posctl: --cash-rounding on or off\n");
        ok = false;
    } else if (rounding)
        bus_val_map_set_bool(body, "cash_rounding", !strcmp(rounding, "on"));
    if (s_opt(config, "tax-id"))
        bus_val_map_set_str(body, "tax_id", s_opt(config, "tax-id"));
    if (cap && !s_hundredths("discount-cap", cap, &bp))
        ok = false;
    else if (cap)
        bus_val_map_set_int(body, "discount_cap_bp", bp);
    if (ok && bus_val_size(body) == 1) {
        fprintf(stderr, "posctl: config set needs at least one of --header, --footer, "
                        "--cash-rounding, --tax-id, --discount-cap\n");
        ok = false;
    }
    if (!ok)
        bus_val_destroy(&body);
    return body;
}

/*  "a|b" from an array of lines. */
static void s_join(const bus_val_t *lines, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < bus_val_size(lines) && used < size; i++) {
        const char *s = bus_val_get_str(bus_val_arr_get(lines, i), NULL);
        int n = snprintf(out + used, size - used, "%s%s", i ? "|" : "", s ? s : "");
        used += n > 0 ? (size_t)n : 0;
    }
}

static int s_config_show(bus_config_t *config, const char *store, const char *format)
{
    bus_msg_t *reply = s_get(config, store);
    if (!reply)
        return POSCTL_EXIT_FAIL;
    bus_val_t *doc = bus_msg_body(reply);
    const bus_val_t *cashiers = bus_val_map_get(doc, "cashiers");
    for (size_t i = 0; i < bus_val_size(cashiers); i++) /* PIN hashes stay on the registers */
        bus_val_map_set_str(bus_val_arr_get(cashiers, i), "pin_hash", "(hidden)");
    if (!strcmp(format, "json"))
        posctl_print(doc, format);
    else {
        char header[S_LINES_MAX * S_CELL], footer[S_LINES_MAX * S_CELL], cap[32];
        int64_t version = 0, bp = 0;
        bool rounding = false;
        const char *tax = bus_val_map_get_str(doc, "tax_id");
        bus_val_map_get_int(doc, "version", &version);
        bus_val_map_get_int(doc, "discount_cap_bp", &bp);
        bus_val_map_get_bool(doc, "cash_rounding", &rounding);
        s_join(bus_val_map_get(doc, "receipt_header"), header, sizeof(header));
        s_join(bus_val_map_get(doc, "receipt_footer"), footer, sizeof(footer));
        pos_money_format(bp, cap, sizeof(cap));
        bus_val_t *out = bus_val_new_map();
        bus_val_map_set_str(out, "store", store);
        bus_val_map_set_int(out, "version", version);
        bus_val_map_set_str(out, "receipt_header", header);
        bus_val_map_set_str(out, "receipt_footer", footer);
        bus_val_map_set_str(out, "cash_rounding", rounding ? "on" : "off");
        bus_val_map_set_str(out, "tax_id", tax ? tax : "");
        bus_val_map_set_str(out, "discount_cap_percent", cap);
        bus_val_map_set_int(out, "cashiers", (int64_t)bus_val_size(cashiers));
        bus_val_map_set_int(out, "promotions",
                            (int64_t)bus_val_size(bus_val_map_get(doc, "promotions")));
        posctl_print(out, format);
        bus_val_destroy(&out);
    }
    bus_msg_destroy(&reply);
    return POSCTL_EXIT_OK;
}

int posctl_config(bus_config_t *config)
{
    const char *sub = bus_config_argc(config) == 2 ? bus_config_arg(config, 1) : "";
    const char *format = s_opt(config, "format"), *store = NULL;
    if ((strcmp(sub, "set") && strcmp(sub, "show")) || !s_format_ok(format)) {
        fprintf(stderr, "posctl: usage: config set|show --store S ... (posctl --help)\n");
        return POSCTL_EXIT_USAGE;
    }
    if (!(store = s_store(config)))
        return POSCTL_EXIT_USAGE;
    if (!strcmp(sub, "show"))
        return s_config_show(config, store, format);
    bus_val_t *body = s_set_body(config, store);
    if (!body)
        return POSCTL_EXIT_USAGE;
    char what[S_CELL];
    snprintf(what, sizeof(what), "store %s configured", store);
    return s_change(config, "config.set", &body, what);
}

/* ---- node config -------------------------------------------------------------------------- */

/*  The latest configuration version of store, -1 after saying why. */
static int64_t s_latest(bus_client_t *client, const char *store)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_msg_t *reply = posctl_call(client, S_SERVICE, "config.get", &body);
    int64_t version = -1;
    if (reply)
        bus_val_map_get_int(bus_msg_body(reply), "version", &version);
    bus_msg_destroy(&reply);
    return version;
}

int posctl_node_config(bus_config_t *config)
{
    const char *format = s_opt(config, "format"), *store = s_opt(config, "store");
    if (bus_config_argc(config) != 2 || !s_format_ok(format)) {
        fprintf(stderr, "posctl: usage: node config [--store S] [--format table|csv|json]\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    bus_val_t *req = bus_val_new_map();
    if (store)
        bus_val_map_set_str(req, "store", store);
    bus_val_t *all = posctl_call_pages(client, S_SERVICE, "node.list", req, "nodes", "after",
                                       S_NODE_PAGE, INT64_MAX);
    bus_val_destroy(&req);
    const bus_val_t *nodes = bus_val_map_get(all, "nodes");
    bus_val_t *out = bus_val_new_map(), *rows = bus_val_new_arr();
    char last_store[BUS_ID_PART_MAX + 1] = "";
    int64_t latest = -1;
    int rc = all ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    /* the listing is sorted by store: one config.get per store */
    for (size_t i = 0; rc == POSCTL_EXIT_OK && rows && i < bus_val_size(nodes); i++) {
        const bus_val_t *n = bus_val_arr_get(nodes, i);
        const char *s = bus_val_map_get_str(n, "store"), *r = bus_val_map_get_str(n, "register");
        int64_t has = 0;
        bus_val_map_get_int(n, "config_version", &has);
        if (!s || !r)
            continue;
        if (strcmp(s, last_store)) {
            snprintf(last_store, sizeof(last_store), "%s", s);
            latest = s_latest(client, s);
            if (latest < 0)
                rc = POSCTL_EXIT_FAIL;
        }
        bus_val_t *row = bus_val_new_map();
        bus_val_map_set_str(row, "store", s);
        bus_val_map_set_str(row, "register", r);
        bus_val_map_set_int(row, "config_version", has);
        bus_val_map_set_int(row, "latest", latest);
        bus_val_map_set_str(row, "state",
                            has == latest  ? "current"
                            : has < latest ? "behind"
                                           : "ahead");
        bus_val_arr_push(rows, &row);
    }
    if (rc == POSCTL_EXIT_OK) {
        if (bus_val_size(rows) == 0 && !strcmp(format, "table"))
            printf("no nodes%s%s\n", store ? " in store " : "", store ? store : "");
        else {
            bus_val_map_set(out, strcmp(format, "json") ? "rows" : "nodes", &rows);
            posctl_print(out, format);
        }
    }
    bus_val_destroy(&rows);
    bus_val_destroy(&out);
    bus_val_destroy(&all);
    bus_client_destroy(&client);
    return rc;
}
