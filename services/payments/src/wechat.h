/*  =========================================================================
    wechat.h - WeChat Pay API v3 payment codes (付款码, codepay), part of payments

    The client side of section 1 of protocols.md: every request signed with
    the merchant's RSA key (SHA256withRSA, header WECHATPAY2-SHA256-RSA2048),
    every answer verified with the platform key its Wechatpay-Serial names
    (a platform certificate serial or a public key id; up to two held at
    once, for a key change) and a timestamp within 300 s. An answer that
    cannot be verified is never trusted: whatever it says, it counts as no
    answer (unknown), and the payment is found out by querying.

    The calls say what they learnt, never more: SUCCESS only from a
    verified answer that names this out_trade_no and its amount; FAILED
    only from a verified refusal that means nothing was charged; anything
    else is UNKNOWN (or PAYING while the customer confirms on the phone).
    The pay call is never repeated for an out_trade_no: the intent's state
    machine (payments.c) queries, and reverses after its deadline.

    Keys come from files (merchant key PEM, platform public keys PEM, the
    32-byte API v3 key) and never appear in a log, an error or a reply.
    pay_wechat_cfg_t is shared by every worker (read-only after load);
    pay_wechat_t is one worker's client (its own HTTPS connection).
    =========================================================================
*/
#ifndef PAY_WECHAT_H_INCLUDED
#define PAY_WECHAT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "provider.h"

#define PAY_WX_PLATFORM_MAX 2

typedef struct pay_wechat_cfg pay_wechat_cfg_t;
typedef struct pay_wechat pay_wechat_t;



/*  Load the merchant's settings: base_url (https://api.mch.weixin.qq.com), mchid, appid, the
    merchant certificate's serial, the private key file (PEM), platform keys "SERIAL=FILE[,...]"
    (public key or certificate PEM, at most two), the API v3 key file (32 bytes, may be NULL),
    ca_file (NULL: the system's CAs). NULL with why (which file or setting, never its content). */
pay_wechat_cfg_t *pay_wechat_cfg_load(const char *base_url, const char *mchid, const char *appid,
                                      const char *serial, const char *key_file,
                                      const char *platform, const char *apiv3_file,
                                      const char *ca_file, int timeout_ms, char *why,
                                      size_t size);
void pay_wechat_cfg_destroy(pay_wechat_cfg_t **self_p);

/*  One worker's client. NULL when out of memory. */
pay_wechat_t *pay_wechat_new(const pay_wechat_cfg_t *cfg);
void pay_wechat_destroy(pay_wechat_t **self_p);

/*  POST /v3/pay/transactions/codepay for out_trade_no: amount fen paid with auth_code, the
    description shown to the customer, the store and device (register) for scene_info. */
void pay_wechat_codepay(pay_wechat_t *self, const char *out_trade_no, const char *auth_code,
                        int64_t amount, const char *description, const char *store,
                        const char *device, pay_outcome_t *out);
/*  GET the trade by out_trade_no; amount is what it must be to count as PAY_SUCCESS. */
void pay_wechat_query(pay_wechat_t *self, const char *out_trade_no, int64_t amount,
                      pay_outcome_t *out);
/*  POST .../reverse: PAY_REVERSED, PAY_PAYING (still confirming: try later), PAY_NOT_FOUND or
    PAY_UNKNOWN. */
void pay_wechat_reverse(pay_wechat_t *self, const char *out_trade_no, pay_outcome_t *out);

/*  POST /v3/refund/domestic/refunds; GET .../refunds/{out_refund_no} (provider.h). */
void pay_wechat_refund(pay_wechat_t *self, const char *out_trade_no, const char *out_refund_no,
                       int64_t amount, int64_t total, pay_outcome_t *out);
void pay_wechat_refund_query(pay_wechat_t *self, const char *out_trade_no,
                             const char *out_refund_no, int64_t amount, pay_outcome_t *out);

/*  Does the answer or notification body (len bytes) verify with the platform key serial names,
    its timestamp ts within 300 s of ours? what ("answer", "notification") names it in why. */
bool pay_wechat_verify(const pay_wechat_cfg_t *cfg, const char *ts, const char *nonce,
                       const char *serial, const char *sig64, const void *body, size_t len,
                       const char *what, char *why, size_t size);

/*  A refund notification (REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED) as it was opened:
    verified like an answer, its resource decrypted with the API v3 key. The ids are copied;
    the rest of the plaintext stays inside and is never logged. */
#define PAY_WX_NOTICE_UNVERIFIED -1 /* no signature, a wrong one, an unknown key, a stale time */
#define PAY_WX_NOTICE_UNREADABLE -2 /* verified, but no resource that decrypts with our key */

typedef struct {
    char event_type[40];
    char out_refund_no[72]; /* "" when the plaintext has none (not a refund) */
    char out_trade_no[40];
    void *resource; /* the plaintext (json_t) */
} pay_wechat_notice_t;

bool pay_wechat_has_apiv3(const pay_wechat_cfg_t *cfg);
/*  The https:// URL WeChat sends refund notifications to (notify_url of every refund asked for
    from now on). 0, or -1 when it is not an https URL without query, at most 255 bytes. */
int pay_wechat_cfg_set_notify_url(pay_wechat_cfg_t *cfg, const char *url);
/*  Open a notification: the Wechatpay-* headers and the body. 0 (close n after), or
    PAY_WX_NOTICE_UNVERIFIED / PAY_WX_NOTICE_UNREADABLE with why (no key material, no plaintext). */
int pay_wechat_notice_open(const pay_wechat_cfg_t *cfg, const char *ts, const char *nonce,
                           const char *serial, const char *sig64, const void *body, size_t len,
                           pay_wechat_notice_t *n, char *why, size_t size);
/*  What an opened refund notification says of the refund of out_trade_no for amount fen, read
    exactly as a refund query's answer is: PAY_SUCCESS (refund_id in transaction_id), PAY_FAILED
    (CLOSED), PAY_UNKNOWN (ABNORMAL, another trade or amount). */
void pay_wechat_notice_outcome(const pay_wechat_notice_t *n, const char *out_trade_no,
                               int64_t amount, pay_outcome_t *out);
void pay_wechat_notice_close(pay_wechat_notice_t *n);

/*  The calls as a pay_provider_t for payments.c (client: self). */
pay_provider_t pay_wechat_provider(pay_wechat_t *self);

#endif
