/*  =========================================================================
    payments.c - posctl payments: reconciliation (对账) and a day's intents
    (docs/payments.md "Reconciliation")

    posctl payments reconcile --store S --date YYYY-MM-DD [--provider P] FILE
    posctl payments list --store S --date YYYY-MM-DD

    FILE is one provider's statement for the day, told by its header unless
    --provider says: WeChat Pay's trade bill (ALL), as GET /v3/bill/tradebill
    gives it (comma-separated, every data field prefixed with a backtick,
    payments and refunds as separate rows, then a summary header and a
    summary row), or Alipay's 业务明细 as the merchant's 账单 download gives
    it (GBK, `#` lines above and below, fields padded with a tab, one 交易
    row per payment and one 退款 row per refund, negative, carrying the
    refund's out_request_no). Columns are found by their names, never by
    position (neither provider promises the order). The file is read as
    UTF-8 when it is valid UTF-8, else as GBK (GB18030, its superset): a
    download opened and saved again by a spreadsheet may be either.

    The statement is compared with the intents of its provider that the
    payments service holds: the day's and its neighbours' (a trade created
    before midnight may be paid after it), each counted on the day it was
    paid. Every row and intent ends in exactly one class: matched,
    missing_here (the provider has a payment posbus does not hold as paid,
    or holds as another provider's), missing_at_provider (posbus holds a
    payment of that day the statement lacks), amount_mismatch,
    refund_mismatch (a refund row posbus holds no succeeded refund of that
    payment and amount for: its refund number is posbus's refund_no), or
    summary_mismatch (the statement's own summary does not add up to its
    rows). The result is printed, kept in the payments service for the day
    and provider (the Z report shows one line per provider) and the exit
    code is 1 when there is any difference.

    Alipay's 商户订单号 is the intent id in Alipay's alphabet (pos/tradeno.h:
    '-' is "__", '_' is "_u"); it is turned back into the intent id when the
    statement is read, so the differences name intents as posbus does.

    A statement may be large (64 MiB, some 300000 rows) and made to hurt:
    rows and intents are found through sorted indexes (bsearch), never by
    scanning, so the comparison is O((rows + intents) log); the refunds under
    the statement's refund numbers are asked for 200 at a time. The kept result
    holds every count and the first differences that fit S_KEEP_MAX
    ("truncated", "listed"), so the day's result is always kept.

    Amounts are read with libpos's decimal parser into fen; no floating
    point.
    =========================================================================
*/
#include <errno.h>
#include <iconv.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pos/money.h>
#include <pos/tradeno.h>

#include "csv.h"
#include "posctl.h"

#define S_SERVICE     "payments"
#define S_FILE_MAX    (64 * 1024 * 1024) /* bytes of a statement */
#define S_FIELDS_MAX  64
#define S_RECORD_MAX  8192
#define S_DIFFS_MAX   10000              /* differences listed (all are counted) */
#define S_PAGE        200
#define S_KEEP_MAX    (256 * 1024)       /* bytes of the result kept (two fit one bus reply) */

const bus_opt_t posctl_payments_opts[] = {
    {"provider", BUS_OPT_STR, NULL, 0, 0,
     "payments reconcile: whose statement FILE is: wechat (the trade bill, ALL) or alipay "
     "(业务明细); left out: told by the file's header"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* The columns of the WeChat trade bill that matter here. */
enum { C_TIME, C_TXN, C_OTN, C_STATE, C_TOTAL, C_REFUND_NO, C_REFUND, C__COUNT };
static const char *const s_columns[C__COUNT] = {"交易时间", "微信订单号", "商户订单号",
                                                "交易状态", "订单金额", "商户退款单号",
                                                "退款金额"};

/* The columns of Alipay's 业务明细 that matter here. */
enum { A_TXN, A_OTN, A_TYPE, A_TOTAL, A_NET, A_REQUEST_NO, A__COUNT };
static const char *const s_alipay_columns[A__COUNT] = {"支付宝交易号",   "商户订单号",
                                                       "业务类型",       "订单金额（元）",
                                                       "商家实收（元）", "退款批次号/请求号"};

/* One payment row of the statement. */
typedef struct {
    char otn[72], txn[72], state[24];
    int64_t total;
    bool seen; /* matched against an intent */
} s_row_t;

/* A sorted index entry: a key and where its owner is (a row, an intent), ordered by key and
   then position, so the first of equal keys is the earliest. */
typedef struct {
    const char *key;
    size_t at;
} s_ix_t;

typedef struct {
    const char *provider; /* "wechat" or "alipay" */
    s_row_t *rows;
    s_ix_t *ix; /* rows by out_trade_no (after parsing) */
    size_t n, cap;
    int64_t refunds, refund_total; /* refund rows */
    bool summary_ok;
    char summary_why[200];
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

/*  An Alipay field without the spaces and tabs around it (Alipay pads with a tab). */
static char *s_trim(char *f)
{
    while (*f == ' ' || *f == '\t')
        f++;
    size_t n = strlen(f);
    while (n > 0 && (f[n - 1] == ' ' || f[n - 1] == '\t'))
        f[--n] = '\0';
    return f;
}

static bool s_fen(const char *text, int64_t *fen)
{
    return *text && pos_money_parse(text, true, fen) == POS_OK;
}

static int s_ix_cmp(const void *a, const void *b)
{
    const s_ix_t *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->at > y->at) - (x->at < y->at);
}

/*  The first entry of ix[0..n) (sorted) with key, or NULL. */
static const s_ix_t *s_ix_find(const s_ix_t *ix, size_t n, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ix[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return key && lo < n && strcmp(ix[lo].key, key) == 0 ? &ix[lo] : NULL;
}

/*  An Alipay statement's 商户订单号 as posbus's intent id, into buf; a number that is no
    intent's wire form (another system's trade) as it stands. */
static const char *s_alipay_intent(const char *otn, char *buf, size_t size)
{
    return pos_tradeno_from_alipay(otn, buf, size) == POS_OK ? buf : otn;
}

/*  Whether data[0..len) is well-formed UTF-8 (no overlong forms, no surrogates). */
static bool s_utf8_ok(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n = c < 0x80                 ? 0
                   : c >= 0xC2 && c <= 0xDF ? 1
                   : c >= 0xE0 && c <= 0xEF ? 2
                   : c >= 0xF0 && c <= 0xF4 ? 3
                                            : 9;
        if (n == 9 || i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && p[i + 1] < 0xA0) || (c == 0xED && p[i + 1] >= 0xA0) ||
            (c == 0xF0 && p[i + 1] < 0x90) || (c == 0xF4 && p[i + 1] >= 0x90))
            return false;
        i += n + 1;
    }
    return true;
}

/*  data[0..len) from GB18030 (GBK's superset: what Alipay's downloads are in) to UTF-8, in a
    new buffer the caller frees; NULL (after printing why) when it is not GBK text either. */
static char *s_from_gbk(const char *path, char *data, size_t len, size_t *out_len)
{
    iconv_t cd = iconv_open("UTF-8", "GB18030");
    if (cd == (iconv_t)-1) {
        fprintf(stderr, "posctl: %s: not UTF-8, and GBK cannot be read here: %s\n", path,
                strerror(errno));
        return NULL;
    }
    size_t cap = len * 2 + 1; /* a GBK character (2 bytes) is 3 in UTF-8; ASCII stays 1 */
    char *out = malloc(cap);
    char *in = data, *o = out;
    size_t in_left = len, out_left = cap - 1;
    size_t r = out ? iconv(cd, &in, &in_left, &o, &out_left) : (size_t)-1;
    int err = errno;
    iconv_close(cd);
    if (!out || r == (size_t)-1) {
        fprintf(stderr, "posctl: %s: neither UTF-8 nor GBK text (byte %zu: %s)\n", path,
                len - in_left, out ? strerror(err) : "out of memory");
        free(out);
        return NULL;
    }
    *o = '\0';
    *out_len = (size_t)(o - out);
    return out;
}

/*  The statement as UTF-8 without a byte order mark, NUL-terminated, in a buffer the caller
    frees; NULL after printing why. */
static char *s_load(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "posctl: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char *data = malloc(S_FILE_MAX + 1);
    size_t len = data ? fread(data, 1, S_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!data || len > S_FILE_MAX) {
        fprintf(stderr, "posctl: %s: %s\n", path, data ? "larger than 64 MiB" : "out of memory");
        free(data);
        return NULL;
    }
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
        memmove(data, data + 3, len - 3); /* a byte order mark */
        len -= 3;
    }
    data[len] = '\0';
    if (!s_utf8_ok((const unsigned char *)data, len)) {
        char *utf8 = s_from_gbk(path, data, len, &len);
        free(data);
        data = utf8;
    }
    *len_out = len;
    return data;
}

/*  Whose statement data is, told by its header row (the first line that is neither blank nor
    a `#` comment): "alipay" when it names 支付宝交易号, "wechat" when it names 交易时间 (WeChat's
    first column, wherever it stands); else NULL. */
static const char *s_detect(const char *data)
{
    const char *p = data;
    while (*p) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *q = p;
        while (q < p + n && (*q == ' ' || *q == '\t' || *q == '\r'))
            q++;
        if (q < p + n && *q != '#') {
            char line[S_RECORD_MAX];
            snprintf(line, sizeof(line), "%.*s", (int)n, p);
            if (strstr(line, "支付宝交易号"))
                return "alipay";
            return strstr(line, "交易时间") ? "wechat" : NULL;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return NULL;
}

/*  A payment row to bill: 0, or -1 (out of memory, printed). */
static int s_add_row(s_bill_t *bill, const char *otn, const char *txn, const char *state,
                     int64_t total)
{
    if (bill->n == bill->cap) {
        size_t cap = bill->cap ? bill->cap * 2 : 256;
        s_row_t *p = realloc(bill->rows, cap * sizeof(*p));
        if (!p) {
            fprintf(stderr, "posctl: out of memory\n");
            return -1;
        }
        bill->rows = p;
        bill->cap = cap;
    }
    s_row_t *row = &bill->rows[bill->n++];
    memset(row, 0, sizeof(*row));
    snprintf(row->otn, sizeof(row->otn), "%s", otn);
    snprintf(row->txn, sizeof(row->txn), "%s", txn);
    snprintf(row->state, sizeof(row->state), "%s", state);
    row->total = total;
    return 0;
}

static void s_add_refund(s_bill_t *bill, const char *otn, const char *no, int64_t amount)
{
    bill->refunds++;
    bill->refund_total += amount;
    bus_val_t *r = bus_val_new_map();
    bus_val_map_set_str(r, "out_trade_no", otn);
    bus_val_map_set_str(r, "out_refund_no", no);
    bus_val_map_set_int(r, "amount", amount);
    bus_val_arr_push(bill->refund_rows, &r);
}

/*  Parse WeChat's trade bill. 0, or -1 after printing why. */
static int s_parse_wechat(const char *path, const char *data, size_t len, s_bill_t *bill)
{
    size_t off = 0;
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
            s_add_refund(bill, s_cell(fields[col[C_OTN]]), s_cell(fields[col[C_REFUND_NO]]),
                         amount);
            continue;
        }
        int64_t total = 0;
        if (!s_fen(s_cell(fields[col[C_TOTAL]]), &total)) {
            fprintf(stderr, "posctl: %s line %d: amount %s\n", path, line,
                    s_cell(fields[col[C_TOTAL]]));
            rc = -1;
            break;
        }
        rc = s_add_row(bill, s_cell(fields[col[C_OTN]]), s_cell(fields[col[C_TXN]]), state, total);
    }
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

/*  Alipay's own totals, from its `#` lines below the rows. */
typedef struct {
    int64_t count, net;
    bool found;
} s_alipay_total_t;

/*  "#<label>：N笔，<net_label>X元，..." into *t; a line that is not that label: unchanged. A line
    with the label that does not read: found, with count -1 (so it cannot add up). */
static void s_alipay_total(const char *line, const char *label, const char *net_label,
                           s_alipay_total_t *t)
{
    const char *p = strstr(line, label);
    if (!p)
        return;
    t->found = true;
    t->count = -1;
    char *end = NULL;
    p += strlen(label);
    long long count = strtoll(p, &end, 10);
    if (end == p || strncmp(end, "笔", strlen("笔")) != 0)
        return;
    const char *q = strstr(end, net_label);
    const char *yuan_end = q ? strstr(q + strlen(net_label), "元") : NULL;
    char text[32];
    if (!yuan_end || yuan_end - (q + strlen(net_label)) >= (ptrdiff_t)sizeof(text))
        return;
    q += strlen(net_label);
    snprintf(text, sizeof(text), "%.*s", (int)(yuan_end - q), q);
    if (s_fen(text, &t->net))
        t->count = count;
}

/*  Parse Alipay's 业务明细. 0, or -1 after printing why. */
static int s_parse_alipay(const char *path, const char *data, size_t len, s_bill_t *bill)
{
    size_t off = 0;
    char out[S_RECORD_MAX];
    char *fields[S_FIELDS_MAX];
    int col[A__COUNT];
    bool header = false;
    int line = 0, rc = 0;
    int64_t trade_net = 0, refund_net = 0;
    s_alipay_total_t trades = {0}, refunds = {0};
    for (int i = 0; i < A__COUNT; i++)
        col[i] = -1;
    while (rc == 0 && off < len) {
        if (data[off] == '#') { /* a comment: the account, the period, the totals */
            const char *end = memchr(data + off, '\n', len - off);
            size_t n = end ? (size_t)(end - (data + off)) : len - off;
            char text[1024];
            snprintf(text, sizeof(text), "%.*s", (int)(n < sizeof(text) ? n : sizeof(text) - 1),
                     data + off);
            s_alipay_total(text, "交易合计：", "商家实收共", &trades);
            s_alipay_total(text, "退款合计：", "商家实收退款共", &refunds);
            off += end ? n + 1 : n;
            line++;
            continue;
        }
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
        for (int k = 0; k < n; k++)
            fields[k] = s_trim(fields[k]);
        if (n == 1 && !*fields[0])
            continue; /* a blank line */
        if (!header) {
            for (int k = 0; k < n; k++)
                for (int c = 0; c < A__COUNT; c++)
                    if (strcmp(fields[k], s_alipay_columns[c]) == 0)
                        col[c] = k;
            for (int c = 0; c < A__COUNT; c++)
                if (col[c] < 0) {
                    fprintf(stderr,
                            "posctl: %s: no column %s in the header (not Alipay's "
                            "业务明细?)\n",
                            path, s_alipay_columns[c]);
                    rc = -1;
                }
            header = true;
            continue;
        }
        int need = 0;
        for (int c = 0; c < A__COUNT; c++)
            need = col[c] > need ? col[c] : need;
        if (n <= need) {
            fprintf(stderr, "posctl: %s line %d: %d fields, the header has more\n", path, line, n);
            rc = -1;
            break;
        }
        const char *type = fields[col[A_TYPE]];
        bool refund = strcmp(type, "退款") == 0;
        int64_t total = 0, net = 0;
        if (!refund && strcmp(type, "交易") != 0) {
            fprintf(stderr, "posctl: %s line %d: 业务类型 %s: neither 交易 nor 退款\n", path, line,
                    type);
            rc = -1;
        } else if (!s_fen(fields[col[A_TOTAL]], &total) || !s_fen(fields[col[A_NET]], &net) ||
                   (refund ? total > 0 : total < 0)) {
            fprintf(stderr,
                    "posctl: %s line %d: amount %s (%s): yuan with up to 2 decimals, "
                    "negative on a refund\n",
                    path, line, fields[col[A_TOTAL]], type);
            rc = -1;
        } else if (refund) {
            char id[72];
            refund_net += net;
            s_add_refund(bill, s_alipay_intent(fields[col[A_OTN]], id, sizeof(id)),
                         fields[col[A_REQUEST_NO]], -total);
        } else {
            char id[72];
            trade_net += net;
            rc = s_add_row(bill, s_alipay_intent(fields[col[A_OTN]], id, sizeof(id)),
                           fields[col[A_TXN]], "SUCCESS", total);
        }
    }
    if (rc == 0 && !header) {
        fprintf(stderr, "posctl: %s: empty\n", path);
        rc = -1;
    }
    if (rc != 0)
        return -1;
    bill->summary_ok = trades.found && refunds.found && trades.count == (int64_t)bill->n &&
                       trades.net == trade_net && refunds.count == bill->refunds &&
                       refunds.net == refund_net;
    if (!trades.found || !refunds.found)
        snprintf(bill->summary_why, sizeof(bill->summary_why),
                 "the statement has no 交易合计 or 退款合计 line");
    else if (!bill->summary_ok)
        snprintf(bill->summary_why, sizeof(bill->summary_why),
                 "the summary says %" PRId64 " payments and %" PRId64 " refunds (fen net %" PRId64
                 " and %" PRId64 "); the rows are %zu and %" PRId64 " (%" PRId64 " and %" PRId64
                 ")",
                 trades.count, refunds.count, trades.net, refunds.net, bill->n, bill->refunds,
                 trade_net, refund_net);
    return 0;
}

/*  A payment cancelled (撤销) after it was paid is refunded without a request number in
    Alipay's statement: that pair is the trade reversed, as WeChat lists REVOKED. */
static void s_alipay_revoked(s_bill_t *bill)
{
    for (size_t i = 0; i < bus_val_size(bill->refund_rows); i++) {
        const bus_val_t *r = bus_val_arr_get(bill->refund_rows, i);
        const char *no = bus_val_map_get_str(r, "out_refund_no");
        const char *otn = bus_val_map_get_str(r, "out_trade_no");
        int64_t amount = 0;
        bus_val_map_get_int(r, "amount", &amount);
        if (!no || *no || !otn)
            continue;
        const s_ix_t *e = s_ix_find(bill->ix, bill->n, otn);
        for (; e && e < bill->ix + bill->n && strcmp(e->key, otn) == 0; e++) {
            s_row_t *row = &bill->rows[e->at];
            if (row->total == amount && strcmp(row->state, "REVOKED") != 0) {
                snprintf(row->state, sizeof(row->state), "REVOKED");
                break;
            }
        }
    }
}

/*  Index bill's payment rows by out_trade_no. 0, or -1 (out of memory, printed). */
static int s_index_bill(s_bill_t *bill)
{
    bill->ix = malloc((bill->n ? bill->n : 1) * sizeof(*bill->ix));
    if (!bill->ix) {
        fprintf(stderr, "posctl: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < bill->n; i++)
        bill->ix[i] = (s_ix_t){.key = bill->rows[i].otn, .at = i};
    qsort(bill->ix, bill->n, sizeof(*bill->ix), s_ix_cmp);
    return 0;
}

/*  Read the statement and parse it as provider's (NULL: told by its header). 0, or -1 after
    printing why. */
static int s_read_bill(const char *path, const char *provider, s_bill_t *bill)
{
    size_t len = 0;
    char *data = s_load(path, &len);
    if (!data)
        return -1;
    if (!provider)
        provider = s_detect(data);
    int rc = -1;
    if (!provider)
        fprintf(stderr,
                "posctl: %s: no column 交易时间 (WeChat's trade bill) or 支付宝交易号 "
                "(Alipay's 业务明细) in the header: whose statement is it? "
                "(--provider)\n",
                path);
    else if (strcmp(provider, "alipay") == 0)
        rc = s_parse_alipay(path, data, len, bill);
    else
        rc = s_parse_wechat(path, data, len, bill);
    bill->provider = provider;
    free(data);
    if (rc == 0)
        rc = s_index_bill(bill);
    if (rc == 0 && strcmp(provider, "alipay") == 0)
        s_alipay_revoked(bill);
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

/*  The statement's first payment row of otn, or NULL. */
static s_row_t *s_find(s_bill_t *bill, const char *otn)
{
    const s_ix_t *e = s_ix_find(bill->ix, bill->n, otn);
    return e ? &bill->rows[e->at] : NULL;
}

/*  The intents by id: a sorted index (caller frees) of *n entries; NULL when out of memory. */
static s_ix_t *s_index_intents(const bus_val_t *intents, size_t *n)
{
    s_ix_t *ix = malloc((bus_val_size(intents) + 1) * sizeof(*ix));
    *n = 0;
    for (size_t i = 0; ix && i < bus_val_size(intents); i++) {
        const char *id = bus_val_map_get_str(bus_val_arr_get(intents, i), "intent");
        if (id)
            ix[(*n)++] = (s_ix_t){.key = id, .at = i};
    }
    if (ix)
        qsort(ix, *n, sizeof(*ix), s_ix_cmp);
    return ix;
}

/*  The intent id among intents (indexed by ix[0..n)), or NULL. */
static const bus_val_t *s_intent(const bus_val_t *intents, const s_ix_t *ix, size_t n,
                                 const char *id)
{
    const s_ix_t *e = id ? s_ix_find(ix, n, id) : NULL;
    return e ? bus_val_arr_get(intents, e->at) : NULL;
}

/*  Whether an intent in state was paid: succeeded, or refunded in full since (the payment row
    is still in the statement of the day it was paid). */
static bool s_paid_state(const char *state)
{
    return state && (strcmp(state, "succeeded") == 0 || strcmp(state, "refunded") == 0);
}

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

/*  posbus's refunds under the statement's refund numbers, asked for S_PAGE at a time
    (payment.recon.refunds): a map refund_no -> {intent, amount, provider, state} (caller
    destroys); NULL when the payments service does not answer that (one older than the method:
    each refund is then asked for alone, s_refund_of). */
static bus_val_t *s_refunds(bus_client_t *client, const char *store, const bus_val_t *rows)
{
    bus_val_t *all = bus_val_new_map(), *batch = NULL;
    size_t n = bus_val_size(rows);
    for (size_t i = 0; all && i <= n; i++) {
        const bus_val_t *row = i < n ? bus_val_arr_get(rows, i) : NULL;
        const char *no = row ? bus_val_map_get_str(row, "out_refund_no") : NULL;
        if (no && *no && !bus_val_map_get(all, no)) {
            bus_val_t *v = bus_val_new_str(no);
            if (!batch)
                batch = bus_val_new_arr();
            bus_val_arr_push(batch, &v);
        }
        if (!batch || (bus_val_size(batch) < S_PAGE && i < n))
            continue;
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set(body, "refund_nos", &batch);
        bus_msg_t *rep = bus_client_request(client, S_SERVICE, "payment.recon.refunds", &body);
        const bus_val_t *got = rep ? bus_val_map_get(bus_msg_body(rep), "refunds") : NULL;
        if (!got || bus_val_type(got) != BUS_VAL_MAP)
            bus_val_destroy(&all);
        for (size_t k = 0; all && k < bus_val_size(got); k++) {
            bus_val_t *v = bus_val_dup(bus_val_map_value(got, k));
            bus_val_map_set(all, bus_val_map_key(got, k), &v);
        }
        bus_msg_destroy(&rep);
    }
    bus_val_destroy(&batch);
    return all;
}

/*  Compare bill with the intents of its provider: the result map {store, day, provider, file,
    rows, matched, differences, provider_paid, here_paid, checked_ms, diffs[]}. Another
    provider's intents are not this statement's business, unless a row names one. */
static bus_val_t *s_compare(bus_client_t *client, s_bill_t *bill, const bus_val_t *intents,
                            const char *store, const char *day, const char *path)
{
    size_t nix = 0;
    s_ix_t *ix = s_index_intents(intents, &nix);
    if (!ix) {
        fprintf(stderr, "posctl: out of memory\n");
        return NULL;
    }
    bus_val_t *diffs = bus_val_new_arr();
    bus_val_t *refunds = s_refunds(client, store, bill->refund_rows);
    int64_t ndiff = 0, matched = 0, here_paid = 0;
    for (size_t i = 0; i < bus_val_size(intents); i++) {
        const bus_val_t *in = bus_val_arr_get(intents, i);
        const char *id = bus_val_map_get_str(in, "intent");
        const char *state = bus_val_map_get_str(in, "state");
        const char *provider = bus_val_map_get_str(in, "provider");
        int64_t amount = 0, when = 0;
        bus_val_map_get_int(in, "amount", &amount);
        /* the day it was paid: paid_ms; updated_ms moves on (a refund the next day) and is
           only the fallback for intents written before paid_ms was */
        if (!bus_val_map_get_int(in, "paid_ms", &when) || when <= 0)
            bus_val_map_get_int(in, "updated_ms", &when);
        if (!id || !state || !provider || strcmp(provider, bill->provider) != 0)
            continue;
        char paid_day[16];
        s_day_of(when, paid_day, sizeof(paid_day));
        s_row_t *row = s_find(bill, id);
        bool paid = s_paid_state(state);
        if (row) {
            row->seen = true;
            bool row_paid = strcmp(row->state, "SUCCESS") == 0;
            if (row_paid && !paid) {
                char why[120];
                snprintf(why, sizeof(why), "paid at the provider, %s here", state);
                s_diff(diffs, &ndiff, "missing_here", id, 0, row->total, why);
            } else if (!row_paid && paid) {
                char why[120];
                snprintf(why, sizeof(why), "%s at the provider, %s here", row->state, state);
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
    for (size_t i = 0; i < bill->n; i++) {
        const s_row_t *row = &bill->rows[i];
        const bus_val_t *other = row->seen ? NULL : s_intent(intents, ix, nix, row->otn);
        const char *other_provider = other ? bus_val_map_get_str(other, "provider") : NULL;
        char why[120];
        if (other_provider)
            snprintf(why, sizeof(why), "in the %s statement, a %s payment here", bill->provider,
                     other_provider);
        if (!row->seen)
            s_diff(diffs, &ndiff, "missing_here", row->otn, 0, row->total,
                   other_provider ? why
                   : strcmp(row->state, "SUCCESS") == 0
                       ? "in the statement, no such payment here"
                       : "in the statement (not paid), no such intent here");
    }
    for (size_t i = 0; i < bus_val_size(bill->refund_rows); i++) {
        const bus_val_t *r = bus_val_arr_get(bill->refund_rows, i);
        int64_t amount = 0, here = 0;
        bus_val_map_get_int(r, "amount", &amount);
        const char *otn = bus_val_map_get_str(r, "out_trade_no");
        const char *no = bus_val_map_get_str(r, "out_refund_no");
        if (no && !*no) { /* Alipay's refund of a payment cancelled (撤销) after it was paid */
            const bus_val_t *in = s_intent(intents, ix, nix, otn);
            const char *state = in ? bus_val_map_get_str(in, "state") : NULL;
            const char *provider = in ? bus_val_map_get_str(in, "provider") : NULL;
            int64_t paid = -1;
            if (in)
                bus_val_map_get_int(in, "amount", &paid);
            if (state && provider && strcmp(state, "reversed") == 0 &&
                strcmp(provider, bill->provider) == 0 && paid == amount)
                matched++;
            else
                s_diff(diffs, &ndiff, "refund_mismatch", otn ? otn : "", 0, amount,
                       "cancelled (撤销) at the provider, not reversed here");
            continue;
        }
        const bus_val_t *known = refunds && no ? bus_val_map_get(refunds, no) : NULL;
        bus_val_t *mine = !refunds ? s_refund_of(client, store, no)
                          : known  ? bus_val_dup(known)
                                   : NULL;
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
    free(ix);
    bus_val_destroy(&refunds);
    bus_val_t *res = bus_val_new_map();
    bus_val_map_set_str(res, "store", store);
    bus_val_map_set_str(res, "day", day);
    bus_val_map_set_str(res, "provider", bill->provider);
    bus_val_map_set_str(res, "file", path);
    bus_val_map_set_int(res, "rows", (int64_t)bill->n + bill->refunds);
    bus_val_map_set_int(res, "matched", matched);
    bus_val_map_set_int(res, "differences", ndiff);
    int64_t provider_paid = 0; /* what stayed paid there: not a trade reversed (REVOKED) */
    for (size_t i = 0; i < bill->n; i++)
        if (strcmp(bill->rows[i].state, "SUCCESS") == 0)
            provider_paid += bill->rows[i].total;
    bus_val_map_set_int(res, "provider_paid", provider_paid);
    bus_val_map_set_int(res, "here_paid", here_paid);
    bus_val_map_set_int(res, "checked_ms", bus_now_ms());
    bus_val_map_set_bool(res, "truncated", (int64_t)bus_val_size(diffs) < ndiff);
    bus_val_map_set_int(res, "listed", (int64_t)bus_val_size(diffs));
    bus_val_map_set(res, "diffs", &diffs);
    return res;
}

/*  The result as kept: res itself when it encodes in limit bytes, else a copy (caller destroys)
    with the first differences that fit, truncated true and listed their number (every count
    stays). NULL when out of memory. */
static bus_val_t *s_fit(const bus_val_t *res, size_t limit)
{
    bus_buf_t buf = {0};
    if (bus_val_encode(res, &buf) != 0) {
        bus_buf_free(&buf);
        return NULL;
    }
    size_t total = buf.len;
    bus_buf_reset(&buf);
    bus_val_t *out = bus_val_dup(res);
    bus_val_t *kept = bus_val_new_arr();
    if (total <= limit || !out || !kept) {
        bus_buf_free(&buf);
        bus_val_destroy(&kept);
        bus_val_destroy(&out);
        return total <= limit ? (bus_val_t *)res : NULL;
    }
    const bus_val_t *diffs = bus_val_map_get(res, "diffs");
    bus_val_t *empty = bus_val_new_arr();
    bus_val_map_set(out, "diffs", &empty);
    bus_val_map_set_bool(out, "truncated", true);
    bus_val_map_set_int(out, "listed", INT64_MAX); /* the largest it can take */
    size_t used = bus_val_encode(out, &buf) == 0 ? buf.len + 8 : limit; /* 8: the array's head */
    for (size_t i = 0; i < bus_val_size(diffs) && used < limit; i++) {
        bus_buf_reset(&buf);
        if (bus_val_encode(bus_val_arr_get(diffs, i), &buf) != 0 || used + buf.len > limit)
            break;
        used += buf.len;
        bus_val_t *d = bus_val_dup(bus_val_arr_get(diffs, i));
        bus_val_arr_push(kept, &d);
    }
    bus_buf_free(&buf);
    bus_val_map_set_int(out, "listed", (int64_t)bus_val_size(kept));
    bus_val_map_set(out, "diffs", &kept);
    return out;
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
        char a[POS_MONEY_YUAN_MAX], b[POS_MONEY_YUAN_MAX]; /* csv: plain decimals */
        if (csv) {
            pos_money_format(here, a, sizeof(a));
            pos_money_format(there, b, sizeof(b));
        } else {
            pos_money_format_yuan(here, a, sizeof(a));
            pos_money_format_yuan(there, b, sizeof(b));
        }
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
    char a[POS_MONEY_YUAN_MAX], b[POS_MONEY_YUAN_MAX], listed[64] = "";
    if ((int64_t)bus_val_size(diffs) < ndiff)
        snprintf(listed, sizeof(listed), " (the first %zu listed)", bus_val_size(diffs));
    if (!csv)
        printf("%s %s: %" PRId64 " statement rows, %" PRId64 " matched, %" PRId64
               " differences%s; paid %s at the provider, %s here\n",
               bus_val_map_get_str(res, "provider"), bus_val_map_get_str(res, "day"), rows,
               matched, ndiff, listed, pos_money_format_yuan(paid, a, sizeof(a)),
               pos_money_format_yuan(here, b, sizeof(b)));
}

static int s_reconcile(bus_config_t *config, const char *store, const char *day,
                       const char *path, const char *format)
{
    const char *provider = bus_config_str(config, "provider");
    if (provider && strcmp(provider, "wechat") != 0 && strcmp(provider, "alipay") != 0) {
        fprintf(stderr, "posctl: payments reconcile: --provider wechat or alipay\n");
        return POSCTL_EXIT_USAGE;
    }
    s_bill_t bill = {.refund_rows = bus_val_new_arr()};
    if (s_read_bill(path, provider, &bill) != 0) {
        free(bill.ix);
        free(bill.rows);
        bus_val_destroy(&bill.refund_rows);
        return POSCTL_EXIT_FAIL;
    }
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    bus_val_t *intents = client ? s_intents(client, store, day) : NULL;
    int rc = POSCTL_EXIT_FAIL;
    bus_val_t *res = intents ? s_compare(client, &bill, intents, store, day, path) : NULL;
    bus_val_t *fit = res ? s_fit(res, S_KEEP_MAX) : NULL;
    if (res && !fit)
        fprintf(stderr, "posctl: out of memory\n");
    if (fit) {
        s_print_result(res, format);
        int64_t ndiff = 0;
        bus_val_map_get_int(res, "differences", &ndiff);
        if (fit == res)
            res = NULL; /* given to the request */
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "day", day);
        bus_val_map_set_str(body, "provider", bill.provider);
        bus_val_map_set(body, "result", &fit);
        bus_msg_t *kept = posctl_call(client, S_SERVICE, "payment.recon.put", &body);
        rc = !kept ? POSCTL_EXIT_FAIL : ndiff ? POSCTL_EXIT_FAIL : POSCTL_EXIT_OK;
        bus_msg_destroy(&kept);
    }
    bus_val_destroy(&res);
    bus_val_destroy(&intents);
    bus_client_destroy(&client);
    free(bill.ix);
    free(bill.rows);
    bus_val_destroy(&bill.refund_rows);
    return rc;
}

/*  Ask payments method with body (taken) and print the answer; the exit code. */
static int s_ask_print(bus_config_t *config, const char *method, bus_val_t *body,
                       const char *format)
{
    bus_conn_cfg_t cfg;
    bus_conn_cfg_from_config(&cfg, config);
    bus_client_t *client = posctl_client(config, &cfg);
    if (!client) {
        bus_val_destroy(&body);
        return POSCTL_EXIT_FAIL;
    }
    bus_msg_t *rep = posctl_call(client, S_SERVICE, method, &body);
    if (rep)
        posctl_print(bus_msg_body(rep), format);
    int rc = rep ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    bus_msg_destroy(&rep);
    bus_client_destroy(&client);
    return rc;
}

/*  payments refund-resolve: how a refund left to an operator (manual) ended, found out at the
    provider; exit 0 when payments recorded it. */
static int s_refund_resolve(bus_config_t *config, const char *store, const char *no,
                            const char *state, const char *format)
{
    const char *reason = bus_config_str(config, "reason");
    if (!reason || !*reason) {
        fprintf(stderr, "posctl: payments refund-resolve needs --reason (what the provider "
                        "says)\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_str(body, "store", store);
    bus_val_map_set_str(body, "refund_no", no);
    bus_val_map_set_str(body, "state", state);
    bus_val_map_set_str(body, "reason", reason);
    return s_ask_print(config, "payment.refund_resolve", body, format);
}

static int s_usage(void)
{
    fprintf(stderr, "posctl: usage: payments reconcile --store S --date YYYY-MM-DD "
                    "[--provider wechat|alipay] FILE\n"
                    "       payments list --store S --date YYYY-MM-DD\n"
                    "       payments refund-resolve --store S REFUND_NO succeeded|failed "
                    "--reason TEXT\n");
    return POSCTL_EXIT_USAGE;
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
    if (!strcmp(sub, "refund-resolve") && argc == 4 && store && ok_format)
        return s_refund_resolve(config, store, bus_config_arg(config, 2),
                                bus_config_arg(config, 3), format);
    if (!store || !day || !ok_format) {
        return s_usage();
    }
    if (!strcmp(sub, "reconcile") && argc == 3)
        return s_reconcile(config, store, day, bus_config_arg(config, 2), format);
    if (!strcmp(sub, "list") && argc == 2) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "store", store);
        bus_val_map_set_str(body, "day", day);
        return s_ask_print(config, "payment.list", body, format);
    }
    return s_usage();
}
