/*  wechat.c - WeChat Pay API v3 payment codes (part of payments; wechat.h) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "http.h"
#include "rsa.h"
#include "wechat.h"

#define S_SKEW_S   300 /* an answer's timestamp may be this far from ours */
#define S_URL_MAX  512
#define S_SIG_MAX  1024
#define S_AUTH_MAX 1600

struct pay_wechat_cfg {
    char base_url[256], mchid[33], appid[33], serial[65];
    EVP_PKEY *key;
    struct {
        char serial[80];
        EVP_PKEY *key;
    } platform[PAY_WX_PLATFORM_MAX];
    int nplatform;
    unsigned char apiv3[32];
    bool has_apiv3;
    char *ca_file;
    int timeout_ms;
    char notify_url[256]; /* sent with every refund; "" none */
};

struct pay_wechat {
    const pay_wechat_cfg_t *cfg;
    pay_http_t *http;
    pay_http_answer_t answer;
};

/* ---- keys ---------------------------------------------------------------------------- */

pay_wechat_cfg_t *pay_wechat_cfg_load(const char *base_url, const char *mchid, const char *appid,
                                      const char *serial, const char *key_file,
                                      const char *platform, const char *apiv3_file,
                                      const char *ca_file, int timeout_ms, char *why,
                                      size_t size)
{
    pay_wechat_cfg_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    if (!base_url || !mchid || !appid || !serial || !key_file || !platform ||
        strlen(base_url) >= sizeof(self->base_url) || !*mchid ||
        strlen(mchid) >= sizeof(self->mchid) || !*appid || strlen(appid) >= sizeof(self->appid) ||
        !*serial || strlen(serial) >= sizeof(self->serial)) {
        snprintf(why, size,
                 "wechat: base url, mchid (<= 32), appid (<= 32), merchant serial (<= 64), key "
                 "file and platform keys are all needed");
        goto fail;
    }
    snprintf(self->base_url, sizeof(self->base_url), "%s", base_url);
    size_t bl = strlen(self->base_url);
    while (bl > 0 && self->base_url[bl - 1] == '/')
        self->base_url[--bl] = '\0';
    snprintf(self->mchid, sizeof(self->mchid), "%s", mchid);
    snprintf(self->appid, sizeof(self->appid), "%s", appid);
    snprintf(self->serial, sizeof(self->serial), "%s", serial);
    self->key = pay_rsa_private(key_file);
    if (!self->key) {
        snprintf(why, size, "wechat: the merchant key file %s is not an RSA private key (PEM)",
                 pay_path_shown(key_file));
        goto fail;
    }
    /* "SERIAL=FILE[,SERIAL=FILE]" */
    char spec[1024];
    snprintf(spec, sizeof(spec), "%s", platform);
    char *save = NULL;
    for (char *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1] || self->nplatform == PAY_WX_PLATFORM_MAX ||
            (size_t)(eq - item) >= sizeof(self->platform[0].serial)) {
            snprintf(why, size, "wechat: platform keys: SERIAL=FILE, at most %d, comma-separated",
                     PAY_WX_PLATFORM_MAX);
            goto fail;
        }
        *eq = '\0';
        int i = self->nplatform;
        snprintf(self->platform[i].serial, sizeof(self->platform[i].serial), "%s", item);
        self->platform[i].key = pay_rsa_public(eq + 1);
        if (!self->platform[i].key) {
            snprintf(why, size, "wechat: platform key %s: %s holds no RSA public key", item,
                     pay_path_shown(eq + 1));
            goto fail;
        }
        self->nplatform++;
    }
    if (self->nplatform == 0) {
        snprintf(why, size, "wechat: no platform key");
        goto fail;
    }
    if (apiv3_file && *apiv3_file) {
        FILE *f = fopen(apiv3_file, "r");
        char buf[64] = "";
        size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
        if (f)
            fclose(f);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        if (n != 32) {
            OPENSSL_cleanse(buf, sizeof(buf));
            snprintf(why, size, "wechat: the API v3 key file %s must hold 32 bytes",
                     pay_path_shown(apiv3_file));
            goto fail;
        }
        memcpy(self->apiv3, buf, 32);
        OPENSSL_cleanse(buf, sizeof(buf));
        self->has_apiv3 = true;
    }
    if (ca_file && *ca_file && !(self->ca_file = strdup(ca_file))) {
        snprintf(why, size, "out of memory");
        goto fail;
    }
    return self;
fail:
    pay_wechat_cfg_destroy(&self);
    return NULL;
}

void pay_wechat_cfg_destroy(pay_wechat_cfg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_wechat_cfg_t *self = *self_p;
    EVP_PKEY_free(self->key);
    for (int i = 0; i < self->nplatform; i++)
        EVP_PKEY_free(self->platform[i].key);
    OPENSSL_cleanse(self->apiv3, sizeof(self->apiv3));
    free(self->ca_file);
    free(self);
    *self_p = NULL;
}


pay_wechat_t *pay_wechat_new(const pay_wechat_cfg_t *cfg)
{
    pay_wechat_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->http = pay_http_new(cfg->ca_file, cfg->timeout_ms);
    if (!self->http) {
        free(self);
        return NULL;
    }
    return self;
}

void pay_wechat_destroy(pay_wechat_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_wechat_t *self = *self_p;
    pay_http_destroy(&self->http);
    pay_http_answer_free(&self->answer);
    free(self);
    *self_p = NULL;
}

/* ---- signing and verifying ----------------------------------------------------------- */

bool pay_wechat_verify(const pay_wechat_cfg_t *cfg, const char *ts, const char *nonce,
                       const char *serial, const char *sig64, const void *body, size_t len,
                       const char *what, char *why, size_t size)
{
    if (!ts || !nonce || !serial || !sig64) {
        snprintf(why, size, "the %s has no Wechatpay signature headers", what);
        return false;
    }
    char *end;
    long long t = strtoll(ts, &end, 10);
    long long now = (long long)time(NULL);
    if (*end || end == ts || t < now - S_SKEW_S || t > now + S_SKEW_S) {
        snprintf(why, size, "the %s's timestamp is more than %d s from ours", what, S_SKEW_S);
        return false;
    }
    EVP_PKEY *key = NULL;
    for (int i = 0; i < cfg->nplatform && !key; i++)
        if (strcmp(cfg->platform[i].serial, serial) == 0)
            key = cfg->platform[i].key;
    if (!key) {
        snprintf(why, size, "the %s is signed with platform key %.80s, which we do not hold",
                 what, serial);
        return false;
    }
    bus_buf_t msg = {0};
    int ok = bus_buf_append(&msg, ts, strlen(ts)) == 0 && bus_buf_append(&msg, "\n", 1) == 0 &&
             bus_buf_append(&msg, nonce, strlen(nonce)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 && bus_buf_append(&msg, body, len) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0;
    ok = ok && pay_rsa_verify(key, msg.data, msg.len, sig64);
    bus_buf_free(&msg);
    if (!ok)
        snprintf(why, size, "the %s's signature does not verify with platform key %.80s", what,
                 serial);
    return ok;
}

/*  Check the answer's Wechatpay-* headers against its body. true when it verifies; else why. */
static bool s_verify(pay_wechat_t *self, char *why, size_t size)
{
    const pay_http_answer_t *a = &self->answer;
    return pay_wechat_verify(self->cfg, pay_http_header(a, "Wechatpay-Timestamp"),
                             pay_http_header(a, "Wechatpay-Nonce"),
                             pay_http_header(a, "Wechatpay-Serial"),
                             pay_http_header(a, "Wechatpay-Signature"), a->body.data, a->body.len,
                             "answer", why, size);
}

/*  One signed call: method path (with its query) and body (NULL: none). Fills self->answer;
    out->status, out->verified, and out->why when there was no verified answer. */
static void s_call(pay_wechat_t *self, const char *method, const char *path, const char *body,
                   bool once, pay_outcome_t *out)
{
    const pay_wechat_cfg_t *cfg = self->cfg;
    unsigned char rnd[16];
    char nonce[33], ts[24], sig[S_SIG_MAX], auth[S_AUTH_MAX], url[S_URL_MAX];
    RAND_bytes(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(nonce + 2 * i, 3, "%02X", rnd[i]);
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    bus_buf_t msg = {0};
    const char *b = body ? body : "";
    int ok = bus_buf_append(&msg, method, strlen(method)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 && bus_buf_append(&msg, path, strlen(path)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 && bus_buf_append(&msg, ts, strlen(ts)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 &&
             bus_buf_append(&msg, nonce, strlen(nonce)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 && bus_buf_append(&msg, b, strlen(b)) == 0 &&
             bus_buf_append(&msg, "\n", 1) == 0 &&
             pay_rsa_sign(cfg->key, msg.data, msg.len, sig, sizeof(sig)) == 0;
    bus_buf_free(&msg);
    out->status = 0;
    out->verified = false;
    if (!ok) {
        snprintf(out->why, sizeof(out->why), "cannot sign the request");
        return;
    }
    snprintf(auth, sizeof(auth),
             "Authorization: WECHATPAY2-SHA256-RSA2048 mchid=\"%s\",nonce_str=\"%s\","
             "timestamp=\"%s\",serial_no=\"%s\",signature=\"%s\"",
             cfg->mchid, nonce, ts, cfg->serial, sig);
    snprintf(url, sizeof(url), "%s%s", cfg->base_url, path);
    const char *headers[] = {auth, "Accept: application/json",
                             "Content-Type: application/json", "User-Agent: posbus-payments/0.1",
                             NULL};
    if (pay_http_request(self->http, method, url, headers, body, body ? strlen(body) : 0, once,
                         &self->answer) != 0) {
        snprintf(out->why, sizeof(out->why), "no answer: %s", self->answer.error);
        return;
    }
    out->status = self->answer.status;
    char why[PAY_WHY_MAX];
    out->verified = s_verify(self, why, sizeof(why));
    if (!out->verified) {
        snprintf(out->why, sizeof(out->why), "HTTP %ld not trusted: %s", out->status, why);
    }
}

/*  The verified answer's JSON body (caller decrefs), NULL when it is not an object. */
static json_t *s_json(pay_wechat_t *self)
{
    json_t *j = json_loadb((const char *)self->answer.body.data, self->answer.body.len, 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static void s_copy(char *dst, size_t size, json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));
    snprintf(dst, size, "%s", v ? v : "");
}

/*  Error codes of a refused pay call that mean nothing was charged. Every other code (a
    system error, a bank error, a frequency limit, "order paid"...) decides nothing. */
static bool s_definite_refusal(const char *code)
{
    static const char *const codes[] = {
        "PARAM_ERROR",   "NOT_ENOUGH",           "NOAUTH",
        "NO_AUTH",       "RULE_LIMIT",           "TRADE_ERROR",     "AUTHCODEEXPIRE",
        "AUTH_CODE_INVALID", "BUYER_MISMATCH",   "APPID_MCHID_NOT_MATCH", "MCH_NOT_EXISTS",
        "SIGN_ERROR",    "ACCOUNT_ERROR",        "PAYER_ACCOUNT_ABNORMAL", NULL};
    for (int i = 0; codes[i]; i++)
        if (strcmp(code, codes[i]) == 0)
            return true;
    return false;
}

/*  ms since the epoch of a time as WeChat writes it (RFC 3339 with its offset:
    2026-11-26T01:30:00+08:00); 0 when it is not one. */
static int64_t s_time_ms(const char *text)
{
    int y, mo, d, h, mi, sec, oh, om, n = 0;
    char sign;
    if (!text || sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%c%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec,
                        &sign, &oh, &om, &n) != 9 || text[n] != '\0' ||
        (sign != '+' && sign != '-') || y < 2000 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
        d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 14 || om > 59)
        return 0;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm) - (sign == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    return t > 0 ? t * 1000 : 0;
}

/*  A verified trade object (a pay answer or a query): its state for this trade and amount. */
static void s_trade(json_t *j, const char *out_trade_no, int64_t amount, pay_outcome_t *out)
{
    s_copy(out->trade_state, sizeof(out->trade_state), j, "trade_state");
    s_copy(out->transaction_id, sizeof(out->transaction_id), j, "transaction_id");
    const char *st = out->trade_state;
    const char *no = json_string_value(json_object_get(j, "out_trade_no"));
    json_t *total = json_object_get(json_object_get(j, "amount"), "total");
    if (strcmp(st, "USERPAYING") == 0) {
        out->result = PAY_PAYING;
        snprintf(out->why, sizeof(out->why), "the customer is confirming the payment");
    } else if (strcmp(st, "SUCCESS") == 0 || strcmp(st, "REFUND") == 0) {
        if (!no || strcmp(no, out_trade_no) != 0 || !json_is_integer(total) ||
            json_integer_value(total) != amount || !out->transaction_id[0]) {
            out->result = PAY_UNKNOWN; /* paid, but not what we asked: never taken as ours */
            snprintf(out->why, sizeof(out->why),
                     "SUCCESS for another trade or amount (%s, %" PRId64 " fen expected)",
                     no ? no : "?", amount);
        } else {
            out->result = PAY_SUCCESS;
            out->paid_ms = s_time_ms(json_string_value(json_object_get(j, "success_time")));
            snprintf(out->why, sizeof(out->why), "paid: %s", out->transaction_id);
        }
    } else if (strcmp(st, "NOTPAY") == 0) {
        out->result = PAY_NOTPAY;
        snprintf(out->why, sizeof(out->why), "not paid yet");
    } else if (strcmp(st, "CLOSED") == 0 || strcmp(st, "REVOKED") == 0 ||
               strcmp(st, "PAYERROR") == 0) {
        out->result = PAY_CLOSED;
        snprintf(out->why, sizeof(out->why), "the trade is %s: not charged", st);
    } else {
        out->result = PAY_UNKNOWN;
        snprintf(out->why, sizeof(out->why), "trade state %.20s", st[0] ? st : "(none)");
    }
}

/*  A verified error answer: its code and message into out. */
static void s_error(json_t *j, pay_outcome_t *out)
{
    s_copy(out->code, sizeof(out->code), j, "code");
    const char *msg = json_string_value(json_object_get(j, "message"));
    snprintf(out->why, sizeof(out->why), "HTTP %ld %s: %.120s", out->status,
             out->code[0] ? out->code : "(no code)", msg ? msg : "");
}

static void s_reset(pay_outcome_t *out)
{
    memset(out, 0, sizeof(*out));
    out->result = PAY_UNKNOWN;
}

void pay_wechat_codepay(pay_wechat_t *self, const char *out_trade_no, const char *auth_code,
                        int64_t amount, const char *description, const char *store,
                        const char *device, pay_outcome_t *out)
{
    s_reset(out);
    const pay_wechat_cfg_t *cfg = self->cfg;
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:{s:s}, s:{s:I, s:s}, s:{s:s, s:{s:s}}}",
                            "appid", cfg->appid, "mchid", cfg->mchid, "description",
                            description, "out_trade_no", out_trade_no, "payer", "auth_code",
                            auth_code, "amount", "total", (json_int_t)amount, "currency", "CNY",
                            "scene_info", "device_id", device, "store_info", "id", store);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        snprintf(out->why, sizeof(out->why), "out of memory");
        out->result = PAY_FAILED; /* nothing was sent */
        return;
    }
    s_call(self, "POST", "/v3/pay/transactions/codepay", body, true, out);
    OPENSSL_cleanse(body, strlen(body)); /* the auth code */
    free(body);
    if (!out->verified)
        return; /* UNKNOWN */
    json_t *j = s_json(self);
    if (out->status >= 200 && out->status < 300 && j) {
        s_trade(j, out_trade_no, amount, out);
    } else if (out->status >= 400 && out->status < 500 && j) {
        s_error(j, out);
        if (s_definite_refusal(out->code))
            out->result = PAY_FAILED;
        else if (strcmp(out->code, "USERPAYING") == 0)
            out->result = PAY_PAYING;
    } else {
        snprintf(out->why, sizeof(out->why), "HTTP %ld", out->status);
        if (j)
            s_error(j, out);
    }
    json_decref(j);
}

void pay_wechat_query(pay_wechat_t *self, const char *out_trade_no, int64_t amount,
                      pay_outcome_t *out)
{
    s_reset(out);
    char path[256];
    snprintf(path, sizeof(path), "/v3/pay/transactions/out-trade-no/%s?mchid=%s", out_trade_no,
             self->cfg->mchid);
    s_call(self, "GET", path, NULL, false, out);
    if (!out->verified)
        return;
    json_t *j = s_json(self);
    if (out->status == 200 && j) {
        s_trade(j, out_trade_no, amount, out);
    } else if (j) {
        s_error(j, out);
        if (out->status == 404 && strcmp(out->code, "ORDER_NOT_EXIST") == 0)
            out->result = PAY_NOT_FOUND;
    } else {
        snprintf(out->why, sizeof(out->why), "HTTP %ld", out->status);
    }
    json_decref(j);
}

void pay_wechat_reverse(pay_wechat_t *self, const char *out_trade_no, pay_outcome_t *out)
{
    s_reset(out);
    const pay_wechat_cfg_t *cfg = self->cfg;
    char path[256];
    snprintf(path, sizeof(path), "/v3/pay/transactions/out-trade-no/%s/reverse", out_trade_no);
    json_t *req = json_pack("{s:s, s:s}", "appid", cfg->appid, "mchid", cfg->mchid);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        snprintf(out->why, sizeof(out->why), "out of memory");
        return;
    }
    s_call(self, "POST", path, body, false, out);
    free(body);
    if (!out->verified)
        return;
    if (out->status == 200 || out->status == 204) {
        out->result = PAY_REVERSED;
        snprintf(out->why, sizeof(out->why), "reversed");
        return;
    }
    json_t *j = s_json(self);
    if (j)
        s_error(j, out);
    else
        snprintf(out->why, sizeof(out->why), "HTTP %ld", out->status);
    if (j && strcmp(out->code, "USERPAYING") == 0)
        out->result = PAY_PAYING;
    else if (j && out->status == 404 && strcmp(out->code, "ORDER_NOT_EXIST") == 0)
        out->result = PAY_NOT_FOUND;
    json_decref(j);
}

/*  A verified refund object: its state, when it is this trade's refund of this amount (a refund
    number another store of the same merchant used is never taken as this one). */
static void s_refund_state(json_t *j, const char *status_field, const char *out_trade_no,
                           int64_t amount, pay_outcome_t *out)
{
    const char *no = json_string_value(json_object_get(j, "out_trade_no"));
    json_t *refund = json_object_get(json_object_get(j, "amount"), "refund");
    if (!no || strcmp(no, out_trade_no) != 0 || !json_is_integer(refund) ||
        json_integer_value(refund) != amount) {
        snprintf(out->why, sizeof(out->why), "a refund of another trade or amount (%.40s)",
                 no ? no : "?");
        return; /* PAY_UNKNOWN */
    }
    s_copy(out->trade_state, sizeof(out->trade_state), j, status_field);
    s_copy(out->transaction_id, sizeof(out->transaction_id), j, "refund_id");
    const char *st = out->trade_state;
    if (strcmp(st, "SUCCESS") == 0) {
        out->result = PAY_SUCCESS;
        snprintf(out->why, sizeof(out->why), "refunded: %s", out->transaction_id);
    } else if (strcmp(st, "PROCESSING") == 0) {
        out->result = PAY_PAYING;
        snprintf(out->why, sizeof(out->why), "the refund is being processed");
    } else if (strcmp(st, "CLOSED") == 0) {
        out->result = PAY_FAILED;
        snprintf(out->why, sizeof(out->why), "the refund is %s", st);
    } else if (strcmp(st, "ABNORMAL") == 0) {
        /* the money left the merchant but did not reach the customer's account: finished by
           hand in the merchant platform, never refunded again (not failed, not released) */
        snprintf(out->why, sizeof(out->why), "the refund is ABNORMAL: finish it in the merchant "
                 "platform");
    } else {
        snprintf(out->why, sizeof(out->why), "refund status %.20s", st[0] ? st : "(none)");
    }
}

void pay_wechat_refund(pay_wechat_t *self, const char *out_trade_no, const char *out_refund_no,
                       int64_t amount, int64_t total, pay_outcome_t *out)
{
    s_reset(out);
    json_t *req = json_pack("{s:s, s:s, s:{s:I, s:I, s:s}}", "out_trade_no", out_trade_no,
                            "out_refund_no", out_refund_no, "amount", "refund",
                            (json_int_t)amount, "total", (json_int_t)total, "currency", "CNY");
    if (req && self->cfg->notify_url[0] &&
        json_object_set_new(req, "notify_url", json_string(self->cfg->notify_url)) != 0) {
        json_decref(req);
        req = NULL;
    }
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        snprintf(out->why, sizeof(out->why), "out of memory");
        return;
    }
    s_call(self, "POST", "/v3/refund/domestic/refunds", body, false, out);
    free(body);
    if (!out->verified)
        return;
    json_t *j = s_json(self);
    if (out->status == 200 && j) {
        s_refund_state(j, "status", out_trade_no, amount, out);
    } else if (j) {
        s_error(j, out);
        /* refused: more than was paid, a trade not paid, bad parameters: nothing refunded */
        if (out->status >= 400 && out->status < 500 &&
            (strcmp(out->code, "NOT_ENOUGH") == 0 || strcmp(out->code, "PARAM_ERROR") == 0 ||
             strcmp(out->code, "ORDER_NOT_EXIST") == 0))
            out->result = PAY_FAILED;
        /* any other 4xx but "too often" or a system error refuses this call; whether a refund
           exists is the query's to say */
        else if (out->status >= 400 && out->status < 500 && out->status != 429 &&
                 out->code[0] && strcmp(out->code, "SYSTEM_ERROR") != 0 &&
                 strcmp(out->code, "FREQUENCY_LIMITED") != 0)
            out->refused = true;
    }
    json_decref(j);
}

void pay_wechat_refund_query(pay_wechat_t *self, const char *out_trade_no,
                             const char *out_refund_no, int64_t amount, pay_outcome_t *out)
{
    s_reset(out);
    char path[160];
    snprintf(path, sizeof(path), "/v3/refund/domestic/refunds/%s", out_refund_no);
    s_call(self, "GET", path, NULL, false, out);
    if (!out->verified)
        return;
    json_t *j = s_json(self);
    if (out->status == 200 && j) {
        s_refund_state(j, "status", out_trade_no, amount, out);
    } else if (j) {
        s_error(j, out);
        if (out->status == 404 && strcmp(out->code, "RESOURCE_NOT_EXISTS") == 0)
            out->result = PAY_NOT_FOUND;
    }
    json_decref(j);
}

/* ---- refund notifications ------------------------------------------------------------ */

bool pay_wechat_has_apiv3(const pay_wechat_cfg_t *cfg)
{
    return cfg && cfg->has_apiv3;
}

int pay_wechat_cfg_set_notify_url(pay_wechat_cfg_t *cfg, const char *url)
{
    if (!url || strncmp(url, "https://", 8) != 0 || strlen(url) >= sizeof(cfg->notify_url) ||
        strpbrk(url, "?# \t\r\n\"\\"))
        return -1;
    snprintf(cfg->notify_url, sizeof(cfg->notify_url), "%s", url);
    return 0;
}

/*  AEAD_AES_256_GCM: ciphertext (base64, the tag its last 16 bytes) under the API v3 key, with
    nonce and associated data ad, as a JSON object (caller decrefs). NULL when it does not open;
    the plaintext is wiped once parsed. */
static json_t *s_open_resource(const pay_wechat_cfg_t *cfg, const char *ct64, const char *nonce,
                               const char *ad)
{
    size_t cap = ct64 ? strlen(ct64) / 4 * 3 : 0;
    size_t nlen = nonce ? strlen(nonce) : 0;
    if (cap < 17 || nlen < 1 || nlen > 64)
        return NULL;
    unsigned char *ct = malloc(cap), *plain = malloc(cap);
    json_t *j = NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = ct && plain ? pay_base64_decode(ct64, ct, cap) : -1, len = 0, fin = 0;
    if (!ctx || n < 17)
        goto out;
    n -= 16;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)nlen, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, cfg->apiv3, (const unsigned char *)nonce) != 1)
        goto out;
    if (ad && *ad &&
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)ad, (int)strlen(ad)) != 1)
        goto out;
    if (EVP_DecryptUpdate(ctx, plain, &len, ct, n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, ct + n) != 1 ||
        EVP_DecryptFinal_ex(ctx, plain + len, &fin) != 1)
        goto out; /* another key, altered bytes or data: the tag does not match */
    j = json_loadb((const char *)plain, (size_t)(len + fin), 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
out:
    EVP_CIPHER_CTX_free(ctx);
    if (plain)
        OPENSSL_cleanse(plain, cap);
    free(plain);
    free(ct);
    return j;
}

int pay_wechat_notice_open(const pay_wechat_cfg_t *cfg, const char *ts, const char *nonce,
                           const char *serial, const char *sig64, const void *body, size_t len,
                           pay_wechat_notice_t *n, char *why, size_t size)
{
    memset(n, 0, sizeof(*n));
    if (!pay_wechat_verify(cfg, ts, nonce, serial, sig64, body, len, "notification", why, size))
        return PAY_WX_NOTICE_UNVERIFIED;
    if (!cfg->has_apiv3) {
        snprintf(why, size, "no API v3 key to decrypt the notification with");
        return PAY_WX_NOTICE_UNREADABLE;
    }
    json_t *env = json_loadb(body, len, 0, NULL);
    json_t *res = json_object_get(env, "resource");
    const char *type = json_string_value(json_object_get(env, "event_type"));
    const char *alg = json_string_value(json_object_get(res, "algorithm"));
    if (!json_is_object(env) || !type || !json_is_object(res) || !alg ||
        strcmp(alg, "AEAD_AES_256_GCM") != 0) {
        json_decref(env);
        snprintf(why, size, "not a notification with an AEAD_AES_256_GCM resource");
        return PAY_WX_NOTICE_UNREADABLE;
    }
    snprintf(n->event_type, sizeof(n->event_type), "%s", type);
    json_t *plain = s_open_resource(
        cfg, json_string_value(json_object_get(res, "ciphertext")),
        json_string_value(json_object_get(res, "nonce")),
        json_string_value(json_object_get(res, "associated_data")));
    json_decref(env);
    if (!plain) {
        snprintf(why, size, "the %.40s notification's resource does not decrypt with our API "
                 "v3 key", n->event_type);
        return PAY_WX_NOTICE_UNREADABLE;
    }
    const char *mchid = json_string_value(json_object_get(plain, "mchid"));
    if (mchid && strcmp(mchid, cfg->mchid) != 0) {
        json_decref(plain);
        snprintf(why, size, "the notification is for merchant %.32s", mchid);
        return PAY_WX_NOTICE_UNREADABLE;
    }
    s_copy(n->out_refund_no, sizeof(n->out_refund_no), plain, "out_refund_no");
    s_copy(n->out_trade_no, sizeof(n->out_trade_no), plain, "out_trade_no");
    n->resource = plain;
    return 0;
}

void pay_wechat_notice_outcome(const pay_wechat_notice_t *n, const char *out_trade_no,
                               int64_t amount, pay_outcome_t *out)
{
    s_reset(out);
    out->verified = true;
    s_refund_state(n->resource, "refund_status", out_trade_no, amount, out);
}

void pay_wechat_notice_close(pay_wechat_notice_t *n)
{
    json_decref(n->resource);
    n->resource = NULL;
}

/* ---- as a provider ------------------------------------------------------------------- */

static void s_refund_op(void *client, const char *out_trade_no, const char *out_refund_no,
                        int64_t amount, int64_t total, pay_outcome_t *out)
{
    pay_wechat_refund(client, out_trade_no, out_refund_no, amount, total, out);
}

static void s_refund_query_op(void *client, const char *out_trade_no, const char *out_refund_no,
                              int64_t amount, pay_outcome_t *out)
{
    pay_wechat_refund_query(client, out_trade_no, out_refund_no, amount, out);
}

static void s_pay_op(void *client, const char *out_trade_no, const char *code, int64_t amount,
                     const char *description, const char *store, const char *device,
                     pay_outcome_t *out)
{
    pay_wechat_codepay(client, out_trade_no, code, amount, description, store, device, out);
}

static void s_query_op(void *client, const char *out_trade_no, int64_t amount,
                       pay_outcome_t *out)
{
    pay_wechat_query(client, out_trade_no, amount, out);
}

static void s_reverse_op(void *client, const char *out_trade_no, pay_outcome_t *out)
{
    pay_wechat_reverse(client, out_trade_no, out);
}

pay_provider_t pay_wechat_provider(pay_wechat_t *self)
{
    return (pay_provider_t){.name = "wechat",
                            .client = self,
                            .pay = s_pay_op,
                            .query = s_query_op,
                            .reverse = s_reverse_op,
                            .refund = s_refund_op,
                            .refund_query = s_refund_query_op};
}
