/*  =========================================================================
    payments.c - posctl payments: reconciliation (对账) and a day's intents
    (docs/payments.md "Reconciliation")

    posctl payments reconcile --store S --date YYYY-MM-DD FILE
    posctl payments list --store S --date YYYY-MM-DD

    FILE is the provider's statement for the day: WeChat Pay's trade bill
    (ALL), as GET /v3/bill/tradebill gives it: comma-separated, every data
    field prefixed with a backtick, amounts in yuan, payments and refunds as
    separate rows, then a summary header and a summary row. Columns are
    found by their names, never by position (WeChat does not promise the
    order). The statement is compared with the intents the payments service
    holds: the day's and its neighbours' (a trade created before midnight
    may be paid after it), each counted on the day it was paid. Every row
    and intent ends in exactly one class: matched, missing_here (the
    provider has a payment posbus does not hold as paid), missing_at_provider
    (posbus holds a payment of that day the statement lacks),
    amount_mismatch, refund_mismatch (a refund row posbus holds no
    succeeded refund of that payment and amount for: its refund number is
    posbus's refund_no), or summary_mismatch (the statement's
    own summary does not add up to its rows). The result is printed, kept
    in the payments service for the day (the Z report shows it) and the
    exit code is 1 when there is any difference.

    Amounts are read with libpos's decimal parser into fen; no floating
    point.
    =========================================================================
*/
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pos/money.h>

#include "csv.h"
#include "posctl.h"

#define S_SERVICE     "payments"
#define S_FILE_MAX    (64 * 1024 * 1024) /* bytes of a statement */
#define S_FIELDS_MAX  64
#define S_RECORD_MAX  8192
#define S_DIFFS_MAX   10000              /* differences listed (all are counted) */
#define S_PAGE        200

const bus_opt_t posctl_payments_opts[] = {
    {"provider", BUS_OPT_STR, "wechat", 0, 0,
     "payments reconcile: whose statement FILE is (wechat: the trade bill, ALL)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* The columns of the WeChat trade bill that matter here. */
enum { C_TIME, C_TXN, C_OTN, C_STATE, C_TOTAL, C_REFUND_NO, C_REFUND, C__COUNT };
static const char *const s_columns[C__COUNT] = {"交易时间", "微信订单号", "商户订单号",
                                                "交易状态", "订单金额", "商户退款单号",
                                                "退款金额"};

/* One payment row of the statement. */
typedef struct {
    char otn[72], txn[72], state[24];
    int64_t total;
    bool seen; /* matched against an intent */
} s_row_t;

typedef struct {
    s_row_t *rows;
    size_t n, cap;
    int64_t refunds, refund_total; /* refund rows */
    int64_t sum_total;             /* of payment rows */
    bool summary_ok;
    char summary_why[160];
    bus_val_t *refund_rows; /* [{out_trade_no, out_refund_no, amount}] */
} s_bill_t;

static void s_day_of(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000) + 8 * 3600; /* the provider's day: Beijing time */
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
}

static void s_shift_day(const char *day, int delta, char *out, size_t size)
{
    struct tm tm = {0};
    sscanf(day, "%d-%d-%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_mday += delta;
    tm.tm_hour = 12;
    time_t t = timegm(&tm);
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%d", &tm);
}

/*  A field without its leading backtick and spaces. */
static const char *s_cell(const char *f)
{
    while (*f == ' ')
        f++;
    if (*f == '`')
        f++;
    return f;
}

static bool s_fen(const char *text, int64_t *fen)
{
    return *text && pos_money_parse(text, true, fen) == POS_OK;
}

/*  Read and parse the statement. 0, or -1 after printing why. */
static int s_read_bill(const char *path, s_bill_t *bill)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "posctl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *data = malloc(S_FILE_MAX + 1);
    size_t len = data ? fread(data, 1, S_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!data || len > S_FILE_MAX) {
        fprintf(stderr, "posctl: %s: %s\n", path, data ? "larger than 64 MiB" : "out of memory");
        free(data);
        return -1;
    }
    size_t off = 0;
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        off = 3; /* a byte order mark */
    char out[S_RECORD_MAX];
    char *fields[S_FIELDS_MAX];
    int col[C__COUNT], sum_count = -1, sum_refund = -1;
    bool header = false, in_summary = false, summary_row = false;
    int line = 0, rc = 0;
    for (int i = 0; i < C__COUNT; i++)
        col[i] = -1;
    while (rc == 0) {
        size_t used = 0;
        int n = posctl_csv_record(data + off, len - off, true, &used, out, sizeof(out), fields,
                                  S_FIELDS_MAX, &line);
        if (n < 0) {
            fprintf(stderr, "posctl: %s line %d: %s\n", path, line + 1, posctl_csv_strerror(n));
            rc = -1;
            break;
        }
        if (n == 0)
            break;
        off += used;
        if (n == 1 && !*s_cell(fields[0]))
            continue; /* a blank line */
        if (!header) {
            for (int k = 0; k < n; k++)
                for (int c = 0; c < C__COUNT; c++)
                    if (strcmp(s_cell(fields[k]), s_columns[c]) == 0)
                        col[c] = k;
            for (int c = 0; c < C__COUNT; c++)
                if (col[c] < 0) {
                    fprintf(stderr, "posctl: %s: no column %s in the header (not a WeChat trade "
                                    "bill, ALL?)\n", path, s_columns[c]);
                    rc = -1;
                }
            header = true;
            continue;
        }
        if (!in_summary) { /* the summary's header: found by its column names too */
            for (int k = 0; k < n; k++) {
                if (strcmp(s_cell(fields[k]), "总交易单数") == 0)
                    sum_count = k;
                else if (strcmp(s_cell(fields[k]), "退款总金额") == 0)
                    sum_refund = k;
            }
            if (sum_count >= 0) {
                in_summary = true;
                continue;
            }
        }
        if (in_summary) {
            /* the statement's own count of rows and its refund total */
            int64_t count = -1, refunded = 0;
            char *end = NULL;
            bool ok = sum_count < n && sum_refund >= 0 && sum_refund < n;
            if (ok) {
                count = strtoll(s_cell(fields[sum_count]), &end, 10);
                ok = *end == '\0' && s_fen(s_cell(fields[sum_refund]), &refunded);
            }
            bill->summary_ok = ok && count == (int64_t)bill->n + bill->refunds &&
                               refunded == bill->refund_total;
            if (!bill->summary_ok)
                snprintf(bill->summary_why, sizeof(bill->summary_why),
                         "the summary says %" PRId64 " rows and %s refunded; the rows are %zu "
                         "payments and %" PRId64 " refunds",
                         count, ok ? s_cell(fields[sum_refund]) : "?", bill->n, bill->refunds);
            summary_row = true;
            break;
        }
        int need = 0;
        for (int c = 0; c < C__COUNT; c++)
            need = col[c] > need ? col[c] : need;
        if (n <= need) {
            fprintf(stderr, "posctl: %s line %d: %d fields, the header has more\n", path, line,
                    n);
            rc = -1;
            break;
        }
        const char *state = s_cell(fields[col[C_STATE]]);
        if (strcmp(state, "REFUND") == 0) {
            int64_t amount = 0;
            if (!s_fen(s_cell(fields[col[C_REFUND]]), &amount)) {
                fprintf(stderr, "posctl: %s line %d: refund amount %s\n", path, line,
                        s_cell(fields[col[C_REFUND]]));
                rc = -1;
                break;
            }
            bill->refunds++;
            bill->refund_total += amount;
            bus_val_t *r = bus_val_new_map();
            bus_val_map_set_str(r, "out_trade_no", s_cell(fields[col[C_OTN]]));
            bus_val_map_set_str(r, "out_refund_no", s_cell(fields[col[C_REFUND_NO]]));
            bus_val_map_set_int(r, "amount", amount);
            bus_val_arr_push(bill->refund_rows, &r);
            continue;
        }
        if (bill->n == bill->cap) {
            size_t cap = bill->cap ? bill->cap * 2 : 256;
            s_row_t *p = realloc(bill->rows, cap * sizeof(*p));
            if (!p) {
                fprintf(stderr, "posctl: out of memory\n");
                rc = -1;
                break;
            }
            bill->rows = p;
            bill->cap = cap;
        }
        s_row_t *row = &bill->rows[bill->n];
        memset(row, 0, sizeof(*row));
        snprintf(row->otn, sizeof(row->otn), "%s", s_cell(fields[col[C_OTN]]));
        snprintf(row->txn, sizeof(row->txn), "%s", s_cell(fields[col[C_TXN]]));
        snprintf(row->state, sizeof(row->state), "%s", state);
        if (!s_fen(s_cell(fields[col[C_TOTAL]]), &row->total)) {
            fprintf(stderr, "posctl: %s line %d: amount %s\n", path, line,
                    s_cell(fields[col[C_TOTAL]]));
            rc = -1;
            break;
        }
        bill->sum_total += row->total;
        bill->n++;
    }
    free(data);
    if (rc == 0 && !header) {
        fprintf(stderr, "posctl: %s: empty\n", path);
        rc = -1;
    }
    if (rc == 0 && !summary_row) {
        bill->summary_ok = false;
        snprintf(bill->summary_why, sizeof(bill->summary_why), "the statement has no summary");
    }
    return rc;
}

/*  Every intent created on day - 1 .. day + 1 (payment.list, all pages): one array. */
static bus_val_t *s_intents(bus_client_t *client, const char *store, const char *day)
{
    bus_val_t *all = bus_val_new_arr();
    for (int d = -1; d <= 1; d++) {
        char when[16];
        s_shift_day(day, d, when, sizeof(when));
        for (int64_t after = 0; after >= 0;) {
            bus_val_t *body = bus_val_new_map();
            bus_val_map_set_str(body, "store", store);
            bus_val_map_set_str(body, "day", when);
            bus_val_map_set_int(body, "after", after);
            bus_val_map_set_int(body, "count", S_PAGE);
            bus_msg_t *rep = posctl_call(client, S_SERVICE, "payment.list", &body);
            if (!rep) {
                bus_val_destroy(&all);
                return NULL;
            }
            bus_val_t *list = bus_val_map_get(bus_msg_body(rep), "intents");
            for (size_t i = 0; i < bus_val_size(list); i++) {
                bus_val_t *copy = bus_val_dup(bus_val_arr_get(list, i));
                bus_val_arr_push(all, &copy);
            }
            if (!bus_val_map_get_int(bus_msg_body(rep), "next", &after))
                after = -1;
            bus_msg_destroy(&rep);
        }
    }
    return all;
}

static void s_diff(bus_val_t *diffs, int64_t *count, const char *kind, const char *otn,
                   int64_t here, int64_t there, const char *detail)
{
    (*count)++;
    if (bus_val_size(diffs) >= S_DIFFS_MAX)
        return;
    bus_val_t *d = bus_val_new_map();
    bus_val_map_set_str(d, "kind", kind);
    bus_val_map_set_str(d, "out_trade_no", otn);
    bus_val_map_set_int(d, "here", here);
    bus_val_map_set_int(d, "provider", there);
    bus_val_map_set_str(d, "detail", detail);
    bus_val_arr_push(diffs, &d);
}

static s_row_t *s_find(s_bill_t *bill, const char *otn)
{
    for (size_t i = 0; i < bill->n; i++)
        if (strcmp(bill->rows[i].otn, otn) == 0)
            return &bill->rows[i];
    return NULL;
}

/*  Compare: the result map {store, day, provider, file, rows, matched, differences, diffs[]}. */
/*  posbus's refund under a statement row's refund number: the refund's map (caller destroys),
    or NULL when posbus has none (or payments cannot say). */
static bus_val_t *s_refund_of(bus_client_t *client, const char *store, const char *no)
{
    if (!no || !*no)
        return NULL;
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "refund_no", no);
    bus_msg_t *rep = bus_client_request(client, S_SERVICE, "payment.refund_get", &body);
    bus_val_t *out = rep ? bus_val_dup(bus_msg_body(rep)) : NULL;
    bus_msg_destroy(&rep);
    return out;
}

static bus_val_t *s_compare(bus_client_t *client, s_bill_t *bill, const bus_val_t *intents,
                            const char *store, const char *day, const char *path)
{
    bus_val_t *diffs = bus_val_new_arr();
    int64_t ndiff = 0, matched = 0, here_paid = 0;
    for (size_t i = 0; i < bus_val_size(intents); i++) {
        const bus_val_t *in = bus_val_arr_get(intents, i);
        const char *id = bus_val_map_get_str(in, "intent");
        const char *state = bus_val_map_get_str(in, "state");
        const char *provider = bus_val_map_get_str(in, "provider");
        int64_t amount = 0, updated = 0;
        bus_val_map_get_int(in, "amount", &amount);
        bus_val_map_get_int(in, "updated_ms", &updated);
        if (!id || !state || !provider || strcmp(provider, "wechat") != 0)
            continue;
        char paid_day[16];
        s_day_of(updated, paid_day, sizeof(paid_day));
        s_row_t *row = s_find(bill, id);
        bool paid = strcmp(state, "succeeded") == 0;
        if (row) {
            row->seen = true;
            bool row_paid = strcmp(row->state, "SUCCESS") == 0;
            if (row_paid && !paid) {
                char why[120];
                snprintf(why, sizeof(why), "paid at the provider, %s here", state);
                s_diff(diffs, &ndiff, "missing_here", id, 0, row->total, why);
            } else if (!row_paid && paid) {
                char why[120];
                snprintf(why, sizeof(why), "%s at the provider, succeeded here", row->state);
                s_diff(diffs, &ndiff, "missing_at_provider", id, amount, 0, why);
            } else if (row_paid && row->total != amount) {
                s_diff(diffs, &ndiff, "amount_mismatch", id, amount, row->total,
                       "the amounts differ");
            } else {
                matched++;
            }
            if (paid)
                here_paid += amount;
        } else if (paid && strcmp(paid_day, day) == 0) {
            here_paid += amount;
            s_diff(diffs, &ndiff, "missing_at_provider", id, amount, 0,
                   "succeeded here, not in the statement");
        }
    }
    for (size_t i = 0; i < bill->n; i++)
        if (!bill->rows[i].seen)
            s_diff(diffs, &ndiff, "missing_here", bill->rows[i].otn, 0, bill->rows[i].total,
                   strcmp(bill->rows[i].state, "SUCCESS") == 0
                       ? "in the statement, no such payment here"
                       : "in the statement (not paid), no such intent here");
    for (size_t i = 0; i < bus_val_size(bill->refund_rows); i++) {
        const bus_val_t *r = bus_val_arr_get(bill->refund_rows, i);
        int64_t amount = 0, here = 0;
        bus_val_map_get_int(r, "amount", &amount);
        const char *otn = bus_val_map_get_str(r, "out_trade_no");
        const char *no = bus_val_map_get_str(r, "out_refund_no");
        bus_val_t *mine = s_refund_of(client, store, no);
        const char *of = mine ? bus_val_map_get_str(mine, "intent") : NULL;
        const char *state = mine ? bus_val_map_get_str(mine, "state") : NULL;
        if (mine)
            bus_val_map_get_int(mine, "amount", &here);
        if (!mine)
            s_diff(diffs, &ndiff, "refund_mismatch", otn ? otn : "", 0, amount,
                   "a refund at the provider, none recorded here");
        else if (!of || !otn || strcmp(of, otn) != 0 || here != amount)
            s_diff(diffs, &ndiff, "refund_mismatch", otn ? otn : "", here, amount,
                   "the refund here is of another payment or amount");
        else if (!state || strcmp(state, "succeeded") != 0)
            s_diff(diffs, &ndiff, "refund_mismatch", otn, here, amount,
                   "refunded at the provider, not succeeded here");
        else
            matched++;
        bus_val_destroy(&mine);
    }
    if (!bill->summary_ok)
        s_diff(diffs, &ndiff, "summary_mismatch", "", 0, 0, bill->summary_why);
    bus_val_t *res = bus_val_new_map();
    bus_val_map_set_str(res, "store", store);
    bus_val_map_set_str(res, "day", day);
    bus_val_map_set_str(res, "provider", "wechat");
    bus_val_map_set_str(res, "file", path);
    bus_val_map_set_int(res, "rows", (int64_t)bill->n + bill->refunds);
    bus_val_map_set_int(res, "matched", matched);
    bus_val_map_set_int(res, "differences", ndiff);
    bus_val_map_set_int(res, "provider_paid", bill->sum_total);
    bus_val_map_set_int(res, "here_paid", here_paid);
    bus_val_map_set_int(res, "checked_ms", bus_now_ms());
    bus_val_map_set(res, "diffs", &diffs);
    return res;
}

static void s_print_result(const bus_val_t *res, const char *format)
{
    if (!strcmp(format, "json")) {
        posctl_print(res, format);
        return;
    }
    const bus_val_t *diffs = bus_val_map_get(res, "diffs");
    bool csv = !strcmp(format, "csv");
    if (csv) {
        const char *h[] = {"kind", "out_trade_no", "here", "provider", "detail"};
        for (int i = 0; i < 5; i++)
            posctl_print_csv_cell(h[i], i == 4);
    } else {
        printf("%-20s %-34s %12s %12s  %s\n", "kind", "out_trade_no", "here", "provider",
               "detail");
    }
    for (size_t i = 0; i < bus_val_size(diffs); i++) {
        const bus_val_t *d = bus_val_arr_get(diffs, i);
        int64_t here = 0, there = 0;
        bus_val_map_get_int(d, "here", &here);
        bus_val_map_get_int(d, "provider", &there);
        char a[32], b[32];
        pos_money_format(here, a, sizeof(a));
        pos_money_format(there, b, sizeof(b));
        const char *kind = bus_val_map_get_str(d, "kind");
        const char *otn = bus_val_map_get_str(d, "out_trade_no");
        const char *detail = bus_val_map_get_str(d, "detail");
        if (csv) {
            posctl_print_csv_cell(kind, false);
            posctl_print_csv_cell(otn, false);
            posctl_print_csv_cell(a, false);
            posctl_print_csv_cell(b, false);
            posctl_print_csv_cell(detail, true);
        } else {
            printf("%-20s %-34s %12s %12s  %s\n", kind, otn, a, b, detail);
        }
    }
    int64_t rows = 0, matched = 0, ndiff = 0, paid = 0, here = 0;
    bus_val_map_get_int(res, "rows", &rows);
    bus_val_map_get_int(res, "matched", &matched);
    bus_val_map_get_int(res, "differences", &ndiff);
    bus_val_map_get_int(res, "provider_paid", &paid);
    bus_val_map_get_int(res, "here_paid", &here);
    char a[32], b[32];
    if (!csv)
        printf("%s %s: %" PRId64 " statement rows, %" PRId64 " matched, %" PRId64
               " differences; paid %s at the provider, %s here\n",
               bus_val_map_get_str(res, "provider"), bus_val_map_get_str(res, "day"), rows,
               matched, ndiff, pos_money_format(paid, a, sizeof(a)),
               pos_money_format(here, b, sizeof(b)));
}

static int s_reconcile(bus_config_t *config, const char *store, const char *day,
                       const char *path, const char *format)
{
    if (strcmp(bus_config_str(config, "provider"), "wechat") != 0) {
        fprintf(stderr, "posctl: payments reconcile: only WeChat Pay's trade bill is read "
                        "(--provider wechat)\n");
        return POSCTL_EXIT_USAGE;
    }
    s_bill_t bill = {.refund_rows = bus_val_new_arr()};
    if (s_read_bill(path, &bill) != 0) {
        free(bill.rows);
        bus_val_destroy(&bill.refund_rows);
        return POSCTL_EXIT_FAIL;
    }
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    bus_val_t *intents = client ? s_intents(client, store, day) : NULL;
    int rc = POSCTL_EXIT_FAIL;
    if (intents) {
        bus_val_t *res = s_compare(client, &bill, intents, store, day, path);
        s_print_result(res, format);
        int64_t ndiff = 0;
        bus_val_map_get_int(res, "differences", &ndiff);
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "day", day);
        bus_val_map_set_str(body, "provider", "wechat");
        bus_val_map_set(body, "result", &res);
        bus_msg_t *kept = posctl_call(client, S_SERVICE, "payment.recon.put", &body);
        rc = !kept ? POSCTL_EXIT_FAIL : ndiff ? POSCTL_EXIT_FAIL : POSCTL_EXIT_OK;
        bus_msg_destroy(&kept);
        bus_val_destroy(&res);
    }
    bus_val_destroy(&intents);
    bus_client_destroy(&client);
    free(bill.rows);
    bus_val_destroy(&bill.refund_rows);
    return rc;
}

int posctl_payments(bus_config_t *config)
{
    int argc = bus_config_argc(config);
    const char *sub = argc > 1 ? bus_config_arg(config, 1) : "";
    const char *store = bus_config_str(config, "store");
    const char *day = bus_config_str(config, "date");
    const char *format = bus_config_str(config, "format");
    bool ok_format = !strcmp(format, "table") || !strcmp(format, "csv") ||
                     !strcmp(format, "json");
    if (!store || !day || !ok_format) {
        fprintf(stderr, "posctl: usage: payments reconcile --store S --date YYYY-MM-DD FILE | "
                        "payments list --store S --date YYYY-MM-DD\n");
        return POSCTL_EXIT_USAGE;
    }
    if (!strcmp(sub, "reconcile") && argc == 3)
        return s_reconcile(config, store, day, bus_config_arg(config, 2), format);
    if (!strcmp(sub, "list") && argc == 2) {
        bus_conn_cfg_t cfg;
        bus_conn_cfg_from_config(&cfg, config);
        bus_client_t *client = posctl_client(config, &cfg);
        if (!client)
            return POSCTL_EXIT_FAIL;
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "day", day);
        bus_msg_t *rep = posctl_call(client, S_SERVICE, "payment.list", &body);
        if (rep)
            posctl_print(bus_msg_body(rep), format);
        bus_msg_destroy(&rep);
        bus_client_destroy(&client);
        return rep ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    }
    fprintf(stderr, "posctl: usage: payments reconcile --store S --date YYYY-MM-DD FILE | "
                    "payments list --store S --date YYYY-MM-DD\n");
    return POSCTL_EXIT_USAGE;
}
