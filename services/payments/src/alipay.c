/*  alipay.c - Alipay face-to-face barcode pay (part of payments; alipay.h) */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <pos/tradeno.h>

#include "alipay.h"
#include "http.h"
#include "rsa.h"

#define S_SIG_MAX    1024
#define S_METHOD_MAX 48

struct pay_alipay_cfg {
    char gateway[256], app_id[33];
    EVP_PKEY *key, *alipay;
    char *ca_file;
    int timeout_ms;
};

struct pay_alipay {
    const pay_alipay_cfg_t *cfg;
    pay_http_t *http;
    pay_http_answer_t answer;
};

pay_alipay_cfg_t *pay_alipay_cfg_load(const char *gateway, const char *app_id,
                                      const char *key_file, const char *public_key_file,
                                      const char *ca_file, int timeout_ms, char *why,
                                      size_t size)
{
    pay_alipay_cfg_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    if (!gateway || !app_id || !*app_id || strlen(gateway) >= sizeof(self->gateway) ||
        strlen(app_id) >= sizeof(self->app_id)) {
        snprintf(why, size, "alipay: gateway and app id (<= 32) are needed");
        goto fail;
    }
    snprintf(self->gateway, sizeof(self->gateway), "%s", gateway);
    snprintf(self->app_id, sizeof(self->app_id), "%s", app_id);
    if (!(self->key = pay_rsa_private(key_file))) {
        snprintf(why, size, "alipay: the app key file %s is not an RSA private key (PEM)",
                 pay_path_shown(key_file));
        goto fail;
    }
    if (!(self->alipay = pay_rsa_public(public_key_file))) {
        snprintf(why, size, "alipay: %s holds no RSA public key of Alipay's",
                 pay_path_shown(public_key_file));
        goto fail;
    }
    if (ca_file && *ca_file && !(self->ca_file = strdup(ca_file))) {
        snprintf(why, size, "out of memory");
        goto fail;
    }
    return self;
fail:
    pay_alipay_cfg_destroy(&self);
    return NULL;
}

void pay_alipay_cfg_destroy(pay_alipay_cfg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_alipay_cfg_t *self = *self_p;
    EVP_PKEY_free(self->key);
    EVP_PKEY_free(self->alipay);
    free(self->ca_file);
    free(self);
    *self_p = NULL;
}

pay_alipay_t *pay_alipay_new(const pay_alipay_cfg_t *cfg)
{
    pay_alipay_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->cfg = cfg;
    if (!(self->http = pay_http_new(cfg->ca_file, cfg->timeout_ms))) {
        free(self);
        return NULL;
    }
    return self;
}

void pay_alipay_destroy(pay_alipay_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_alipay_t *self = *self_p;
    pay_http_destroy(&self->http);
    pay_http_answer_free(&self->answer);
    free(self);
    *self_p = NULL;
}

void pay_alipay_yuan(int64_t fen, char *out, size_t size)
{
    snprintf(out, size, "%s%" PRId64 ".%02" PRId64, fen < 0 ? "-" : "",
             (fen < 0 ? -fen : fen) / 100, (fen < 0 ? -fen : fen) % 100);
}

int64_t pay_alipay_fen(const char *yuan)
{
    if (!yuan || !isdigit((unsigned char)*yuan))
        return -1;
    int64_t whole = 0, cents = 0;
    const char *p = yuan;
    for (; isdigit((unsigned char)*p); p++) {
        if (whole > 100000000000LL)
            return -1;
        whole = whole * 10 + (*p - '0');
    }
    if (*p == '.') {
        p++;
        int n = 0;
        for (; isdigit((unsigned char)*p) && n < 2; p++, n++)
            cents = cents * 10 + (*p - '0');
        if (n == 0)
            return -1;
        if (n == 1)
            cents *= 10;
    }
    return *p ? -1 : whole * 100 + cents;
}

/* ---- a call ---------------------------------------------------------------------- */

/*  Percent-encode text for a form body. */
static int s_form_append(bus_buf_t *buf, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        char enc[3];
        if (isalnum(*p) || *p == '-' || *p == '_' || *p == '.' || *p == '~') {
            if (bus_buf_append(buf, p, 1) != 0)
                return -1;
            continue;
        }
        enc[0] = '%';
        enc[1] = hex[*p >> 4];
        enc[2] = hex[*p & 15];
        if (bus_buf_append(buf, enc, 3) != 0)
            return -1;
    }
    return 0;
}

/*  The raw bytes of the value of "<key>" (an object) in a JSON text: what Alipay signed. */
static const char *s_raw_object(const char *json, size_t len, const char *key, size_t *out_len)
{
    char quoted[S_METHOD_MAX + 16];
    snprintf(quoted, sizeof(quoted), "\"%s\"", key);
    const char *p = strstr(json, quoted);
    if (!p)
        return NULL;
    p += strlen(quoted);
    const char *end = json + len;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p >= end || *p++ != ':')
        return NULL;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    if (p >= end || *p != '{')
        return NULL;
    const char *start = p;
    int depth = 0;
    bool in_string = false;
    for (; p < end; p++) {
        if (in_string) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
        } else if (*p == '{') {
            depth++;
        } else if (*p == '}' && --depth == 0) {
            *out_len = (size_t)(p + 1 - start);
            return start;
        }
    }
    return NULL;
}

/*  Call method with biz (taken). The verified <method>_response object (caller decrefs), or
    NULL with out->why (no answer, or one not to be trusted). */
static json_t *s_call(pay_alipay_t *self, const char *method, json_t *biz, bool once,
                      pay_outcome_t *out)
{
    const pay_alipay_cfg_t *cfg = self->cfg;
    char *content = biz ? json_dumps(biz, JSON_COMPACT) : NULL;
    json_decref(biz);
    if (!content) {
        snprintf(out->why, sizeof(out->why), "out of memory");
        return NULL;
    }
    char ts[32];
    time_t now = time(NULL) + 8 * 3600; /* Alipay's timestamps are Beijing time */
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    /* the parameters in name order (as signed) */
    const char *names[] = {"app_id",    "biz_content", "charset",   "format",
                           "method",    "sign_type",   "timestamp", "version"};
    const char *values[] = {cfg->app_id, content, "utf-8", "JSON", method, "RSA2", ts, "1.0"};
    bus_buf_t msg = {0}, body = {0};
    int ok = 1;
    for (int i = 0; i < 8 && ok; i++)
        ok = (i == 0 || bus_buf_append(&msg, "&", 1) == 0) &&
             bus_buf_append(&msg, names[i], strlen(names[i])) == 0 &&
             bus_buf_append(&msg, "=", 1) == 0 &&
             bus_buf_append(&msg, values[i], strlen(values[i])) == 0;
    char sig[S_SIG_MAX];
    ok = ok && pay_rsa_sign(cfg->key, msg.data, msg.len, sig, sizeof(sig)) == 0;
    for (int i = 0; i < 9 && ok; i++)
        ok = (i == 0 || bus_buf_append(&body, "&", 1) == 0) &&
             bus_buf_append(&body, i < 8 ? names[i] : "sign", strlen(i < 8 ? names[i] : "sign")) ==
                 0 &&
             bus_buf_append(&body, "=", 1) == 0 && s_form_append(&body, i < 8 ? values[i] : sig) == 0;
    ok = ok && bus_buf_append(&body, "", 1) == 0;
    OPENSSL_cleanse(msg.data, msg.len); /* the auth code */
    bus_buf_free(&msg);
    OPENSSL_cleanse(content, strlen(content));
    free(content);
    if (!ok) {
        if (body.data)
            OPENSSL_cleanse(body.data, body.len);
        bus_buf_free(&body);
        snprintf(out->why, sizeof(out->why), "cannot sign the request");
        return NULL;
    }
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded;charset=utf-8",
                             "Accept: application/json", "User-Agent: posbus-payments/0.1", NULL};
    int rc = pay_http_request(self->http, "POST", cfg->gateway, headers, (const char *)body.data,
                              body.len - 1, once, &self->answer);
    OPENSSL_cleanse(body.data, body.len);
    bus_buf_free(&body);
    out->status = self->answer.status;
    if (rc != 0) {
        snprintf(out->why, sizeof(out->why), "no answer: %s", self->answer.error);
        return NULL;
    }
    char key[S_METHOD_MAX + 16];
    snprintf(key, sizeof(key), "%s_response", method);
    for (char *k = key; *k; k++)
        if (*k == '.')
            *k = '_';
    const char *raw = (const char *)self->answer.body.data;
    size_t raw_len = 0;
    const char *obj = raw ? s_raw_object(raw, self->answer.body.len, key, &raw_len) : NULL;
    json_t *all = raw ? json_loadb(raw, self->answer.body.len, 0, NULL) : NULL;
    const char *sign = json_string_value(json_object_get(all, "sign"));
    out->verified = obj && sign && pay_rsa_verify(cfg->alipay, obj, raw_len, sign);
    json_t *resp = out->verified ? json_loadb(obj, raw_len, 0, NULL) : NULL;
    json_decref(all);
    if (!out->verified || !json_is_object(resp)) {
        snprintf(out->why, sizeof(out->why), "HTTP %ld not trusted: %s", out->status,
                 !obj    ? "no response object"
                 : !sign ? "no signature"
                         : "the signature does not verify with Alipay's key");
        out->verified = false;
        json_decref(resp);
        return NULL;
    }
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *sub = json_string_value(json_object_get(resp, "sub_code"));
    const char *msgtext = json_string_value(json_object_get(resp, "sub_msg"));
    if (!msgtext)
        msgtext = json_string_value(json_object_get(resp, "msg"));
    snprintf(out->code, sizeof(out->code), "%s%s%s", code ? code : "", sub ? " " : "",
             sub ? sub : "");
    snprintf(out->why, sizeof(out->why), "%s: %.120s", out->code, msgtext ? msgtext : "");
    return resp;
}

/*  A 40004 sub_code that means nothing was charged. */
static bool s_definite_refusal(const char *sub)
{
    static const char *const subs[] = {"ACQ.PAYMENT_AUTH_CODE_INVALID",
                                       "ACQ.BUYER_BALANCE_NOT_ENOUGH",
                                       "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH",
                                       "ACQ.ERROR_BALANCE_PAYMENT_DISABLE",
                                       "ACQ.BUYER_SELLER_EQUAL",
                                       "ACQ.TRADE_BUYER_NOT_MATCH",
                                       "ACQ.BUYER_ENABLE_STATUS_FORBID",
                                       "ACQ.PAYMENT_FAIL",
                                       "ACQ.INVALID_PARAMETER",
                                       "ACQ.TOTAL_FEE_EXCEED",
                                       "ACQ.BEYOND_PAY_RESTRICTION",
                                       "ACQ.BEYOND_PER_RECEIPT_RESTRICTION",
                                       "ACQ.BUYER_PAYMENT_AMOUNT_DAY_LIMIT_ERROR",
                                       "ACQ.BUYER_PAYMENT_AMOUNT_MONTH_LIMIT_ERROR",
                                       "ACQ.PAYMENT_REQUEST_HAS_RISK",
                                       "ACQ.ACCESS_FORBIDDEN",
                                       NULL};
    for (int i = 0; sub && subs[i]; i++)
        if (strcmp(sub, subs[i]) == 0)
            return true;
    return false;
}

/*  A verified 10000 answer naming a trade: ours only for this out_trade_no (the wire form sent)
    and amount. */
/*  Alipay's "yyyy-MM-dd HH:mm:ss" in Beijing time (UTC+8, no daylight saving) as Unix ms;
    0 when absent or malformed. */
static int64_t s_beijing_ms(const char *text)
{
    int y, mo, d, h, mi, sec, n = 0;
    if (!text || sscanf(text, "%4d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
        text[n] != '\0' || y < 2000 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
        h > 23 || mi > 59 || sec > 60)
        return 0;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm) - 8 * 3600;
    return t > 0 ? t * 1000 : 0;
}

static bool s_ours(json_t *resp, const char *out_trade_no, int64_t amount, pay_outcome_t *out)
{
    const char *no = json_string_value(json_object_get(resp, "out_trade_no"));
    const char *total = json_string_value(json_object_get(resp, "total_amount"));
    const char *trade_no = json_string_value(json_object_get(resp, "trade_no"));
    if (!no || strcmp(no, out_trade_no) != 0 || pay_alipay_fen(total) != amount || !trade_no) {
        snprintf(out->why, sizeof(out->why),
                 "paid, but for another trade or amount (%s, %" PRId64 " fen expected)",
                 no ? no : "?", amount);
        return false;
    }
    snprintf(out->transaction_id, sizeof(out->transaction_id), "%s", trade_no);
    /* when it was paid: trade.pay says gmt_payment, trade.query send_pay_date */
    const char *paid = json_string_value(json_object_get(resp, "gmt_payment"));
    out->paid_ms = s_beijing_ms(paid ? paid : json_string_value(json_object_get(resp,
                                                                                "send_pay_date")));
    return true;
}

/*  The intent id's wire form (pos/tradeno.h: Alipay takes only letters, digits and '_'); false
    with out->why when it has none (intent ids always have one: nothing is sent then). */
static bool s_wire(const char *intent, char wire[POS_ALIPAY_NO_MAX + 1], pay_outcome_t *out)
{
    if (pos_tradeno_alipay(intent, wire, POS_ALIPAY_NO_MAX + 1) == POS_OK)
        return true;
    snprintf(out->why, sizeof(out->why), "%.64s cannot be an Alipay out_trade_no: not sent",
             intent ? intent : "(none)");
    return false;
}

static void s_copy_str(char *dst, size_t size, json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    snprintf(dst, size, "%s", v ? v : "");
}

static void s_reset(pay_outcome_t *out)
{
    memset(out, 0, sizeof(*out));
    out->result = PAY_UNKNOWN;
}

void pay_alipay_pay(pay_alipay_t *self, const char *out_trade_no, const char *auth_code,
                    int64_t amount, const char *subject, const char *store, const char *device,
                    pay_outcome_t *out)
{
    s_reset(out);
    char yuan[32], wire[POS_ALIPAY_NO_MAX + 1];
    if (!s_wire(out_trade_no, wire, out)) {
        out->result = PAY_FAILED; /* never sent: nothing charged */
        return;
    }
    pay_alipay_yuan(amount, yuan, sizeof(yuan));
    json_t *biz = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "out_trade_no",
                            wire, "scene", "bar_code", "auth_code", auth_code, "subject",
                            subject, "total_amount", yuan, "product_code", "FACE_TO_FACE_PAYMENT",
                            "store_id", store, "terminal_id", device);
    json_t *resp = s_call(self, "alipay.trade.pay", biz, true, out);
    if (!resp)
        return;
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *sub = json_string_value(json_object_get(resp, "sub_code"));
    if (code && strcmp(code, "10000") == 0) {
        if (s_ours(resp, wire, amount, out))
            out->result = PAY_SUCCESS;
    } else if (code && strcmp(code, "10003") == 0) {
        out->result = PAY_PAYING;
        snprintf(out->why, sizeof(out->why), "the customer is confirming the payment");
    } else if (code && (strcmp(code, "40002") == 0 ||
                        (strcmp(code, "40004") == 0 && s_definite_refusal(sub)))) {
        out->result = PAY_FAILED;
    }
    json_decref(resp);
}

void pay_alipay_query(pay_alipay_t *self, const char *out_trade_no, int64_t amount,
                      pay_outcome_t *out)
{
    s_reset(out);
    char wire[POS_ALIPAY_NO_MAX + 1];
    if (!s_wire(out_trade_no, wire, out))
        return;
    json_t *resp = s_call(self, "alipay.trade.query", json_pack("{s:s}", "out_trade_no", wire),
                          false, out);
    if (!resp)
        return;
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *sub = json_string_value(json_object_get(resp, "sub_code"));
    const char *status = json_string_value(json_object_get(resp, "trade_status"));
    snprintf(out->trade_state, sizeof(out->trade_state), "%s", status ? status : "");
    if (code && strcmp(code, "10000") == 0 && status) {
        if (strcmp(status, "TRADE_SUCCESS") == 0 || strcmp(status, "TRADE_FINISHED") == 0) {
            if (s_ours(resp, wire, amount, out)) {
                out->result = PAY_SUCCESS;
                snprintf(out->why, sizeof(out->why), "paid: %s", out->transaction_id);
            }
        } else if (strcmp(status, "WAIT_BUYER_PAY") == 0) {
            out->result = PAY_PAYING;
            snprintf(out->why, sizeof(out->why), "the customer is confirming the payment");
        } else if (strcmp(status, "TRADE_CLOSED") == 0) {
            out->result = PAY_CLOSED;
            snprintf(out->why, sizeof(out->why), "the trade is closed: not charged");
        }
    } else if (code && strcmp(code, "40004") == 0 && sub &&
               strcmp(sub, "ACQ.TRADE_NOT_EXIST") == 0) {
        out->result = PAY_NOT_FOUND;
    }
    json_decref(resp);
}

void pay_alipay_cancel(pay_alipay_t *self, const char *out_trade_no, pay_outcome_t *out)
{
    s_reset(out);
    char wire[POS_ALIPAY_NO_MAX + 1];
    if (!s_wire(out_trade_no, wire, out))
        return;
    json_t *resp = s_call(self, "alipay.trade.cancel", json_pack("{s:s}", "out_trade_no", wire),
                          false, out);
    if (!resp)
        return;
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *sub = json_string_value(json_object_get(resp, "sub_code"));
    const char *action = json_string_value(json_object_get(resp, "action"));
    if (code && strcmp(code, "10000") == 0) {
        out->result = PAY_REVERSED;
        snprintf(out->why, sizeof(out->why), "cancelled (%s)", action ? action : "close");
    } else if (code && strcmp(code, "40004") == 0 && sub &&
               strcmp(sub, "ACQ.TRADE_NOT_EXIST") == 0) {
        out->result = PAY_NOT_FOUND;
    }
    json_decref(resp);
}

void pay_alipay_refund(pay_alipay_t *self, const char *out_trade_no, const char *out_request_no,
                       int64_t amount, pay_outcome_t *out)
{
    s_reset(out);
    char yuan[32], wire[POS_ALIPAY_NO_MAX + 1];
    if (!s_wire(out_trade_no, wire, out))
        return;
    pay_alipay_yuan(amount, yuan, sizeof(yuan));
    json_t *resp = s_call(self, "alipay.trade.refund",
                          json_pack("{s:s, s:s, s:s}", "out_trade_no", wire,
                                    "refund_amount", yuan, "out_request_no", out_request_no),
                          false, out);
    if (!resp)
        return;
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *sub = json_string_value(json_object_get(resp, "sub_code"));
    const char *change = json_string_value(json_object_get(resp, "fund_change"));
    if (code && strcmp(code, "10000") == 0 && change && strcmp(change, "Y") == 0) {
        out->result = PAY_SUCCESS; /* the money moved with this call */
        s_copy_str(out->transaction_id, sizeof(out->transaction_id), resp, "trade_no");
        snprintf(out->why, sizeof(out->why), "refunded");
    } else if (code && strcmp(code, "10000") == 0) {
        out->result = PAY_PAYING; /* fund_change N: Alipay says a query must confirm it */
        snprintf(out->why, sizeof(out->why), "refund taken before: confirming");
    } else if (code && strcmp(code, "40004") == 0 && sub &&
               (strcmp(sub, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL") == 0 ||
                strcmp(sub, "ACQ.TRADE_NOT_EXIST") == 0 ||
                strcmp(sub, "ACQ.TRADE_STATUS_ERROR") == 0 ||
                strcmp(sub, "ACQ.TRADE_HAS_CLOSE") == 0 ||
                strcmp(sub, "ACQ.TRADE_HAS_FINISHED") == 0 ||
                strcmp(sub, "ACQ.INVALID_PARAMETER") == 0 ||
                strcmp(sub, "ACQ.SELLER_BALANCE_NOT_ENOUGH") == 0)) {
        out->result = PAY_FAILED; /* refused: nothing was refunded */
    } else if (code && (strcmp(code, "40002") == 0 || strcmp(code, "40004") == 0) &&
               !(sub && strcmp(sub, "ACQ.SYSTEM_ERROR") == 0)) {
        out->refused = true; /* another refusal: the refund query says whether one exists */
    } /* anything else (ACQ.SYSTEM_ERROR: "call again") decides nothing: queried */
    json_decref(resp);
}

void pay_alipay_refund_query(pay_alipay_t *self, const char *out_trade_no,
                             const char *out_request_no, int64_t amount, pay_outcome_t *out)
{
    s_reset(out);
    char wire[POS_ALIPAY_NO_MAX + 1];
    if (!s_wire(out_trade_no, wire, out))
        return;
    json_t *resp = s_call(self, "alipay.trade.fastpay.refund.query",
                          json_pack("{s:s, s:s}", "out_trade_no", wire,
                                    "out_request_no", out_request_no),
                          false, out);
    if (!resp)
        return;
    const char *code = json_string_value(json_object_get(resp, "code"));
    const char *status = json_string_value(json_object_get(resp, "refund_status"));
    const char *refunded = json_string_value(json_object_get(resp, "refund_amount"));
    if (code && strcmp(code, "10000") == 0) {
        if (refunded && pay_alipay_fen(refunded) == amount &&
            (!status || strcmp(status, "REFUND_SUCCESS") == 0)) {
            out->result = PAY_SUCCESS;
            snprintf(out->why, sizeof(out->why), "refunded");
        } else if (!refunded) {
            out->result = PAY_NOT_FOUND; /* Alipay answers 10000 without it for none */
            snprintf(out->why, sizeof(out->why), "no such refund");
        }
    }
    json_decref(resp);
}

/* ---- as a provider ------------------------------------------------------------------- */

static void s_refund_op(void *client, const char *out_trade_no, const char *out_refund_no,
                        int64_t amount, int64_t total, pay_outcome_t *out)
{
    (void)total;
    pay_alipay_refund(client, out_trade_no, out_refund_no, amount, out);
}

static void s_refund_query_op(void *client, const char *out_trade_no, const char *out_refund_no,
                              int64_t amount, pay_outcome_t *out)
{
    pay_alipay_refund_query(client, out_trade_no, out_refund_no, amount, out);
}

static void s_pay_op(void *client, const char *out_trade_no, const char *code, int64_t amount,
                     const char *description, const char *store, const char *device,
                     pay_outcome_t *out)
{
    pay_alipay_pay(client, out_trade_no, code, amount, description, store, device, out);
}

static void s_query_op(void *client, const char *out_trade_no, int64_t amount,
                       pay_outcome_t *out)
{
    pay_alipay_query(client, out_trade_no, amount, out);
}

static void s_cancel_op(void *client, const char *out_trade_no, pay_outcome_t *out)
{
    pay_alipay_cancel(client, out_trade_no, out);
}

pay_provider_t pay_alipay_provider(pay_alipay_t *self)
{
    return (pay_provider_t){.name = "alipay",
                            .client = self,
                            .pay = s_pay_op,
                            .query = s_query_op,
                            .reverse = s_cancel_op,
                            .refund = s_refund_op,
                            .refund_query = s_refund_query_op};
}
