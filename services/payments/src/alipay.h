/*  =========================================================================
    alipay.h - Alipay face-to-face barcode pay (当面付), part of payments

    The client side of section 2 of protocols.md: alipay.trade.pay with the
    customer's code, alipay.trade.query, alipay.trade.cancel. Every request
    is signed RSA2 (SHA256withRSA over the parameters sorted by name, joined
    k=v&..., without sign) with the app's key; every answer is verified with
    Alipay's public key over the exact bytes of its <method>_response object.
    An answer that does not verify is never trusted: it counts as no answer.

    What the answers mean (provider.h): 10000 is success (for this trade and
    amount); 10003 the customer is confirming; 40004 with a sub_code that
    means nothing was charged (a bad or expired code, not enough balance, a
    limit, risk control) is failed; 20000 and anything else decides nothing.
    Amounts go to Alipay as yuan with two decimals, made from the fen with
    integer arithmetic, and come back the same way.

    out_trade_no is posbus's intent id everywhere in this interface; on the
    wire it is its Alipay form (pos/tradeno.h: Alipay takes only letters,
    digits and '_', and intent ids have '-'), and answers are checked against
    that form. out_request_no (the refund number) goes as it is: Alipay
    documents only its length (64) for it.

    pay_alipay_cfg_t is shared by every worker (read-only after load);
    pay_alipay_t is one worker's client (its own HTTPS connection).
    =========================================================================
*/
#ifndef PAY_ALIPAY_H_INCLUDED
#define PAY_ALIPAY_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "provider.h"

typedef struct pay_alipay_cfg pay_alipay_cfg_t;
typedef struct pay_alipay pay_alipay_t;

/*  gateway (https://openapi.alipay.com/gateway.do), app id, the app's private key file (PEM),
    Alipay's public key file (PEM key or certificate), ca_file (NULL: the system's CAs). NULL with
    why (which file or setting, never its content). */
pay_alipay_cfg_t *pay_alipay_cfg_load(const char *gateway, const char *app_id,
                                      const char *key_file, const char *public_key_file,
                                      const char *ca_file, int timeout_ms, char *why,
                                      size_t size);
void pay_alipay_cfg_destroy(pay_alipay_cfg_t **self_p);

pay_alipay_t *pay_alipay_new(const pay_alipay_cfg_t *cfg);
void pay_alipay_destroy(pay_alipay_t **self_p);

/*  alipay.trade.pay (scene bar_code) of amount fen with the customer's auth code. */
void pay_alipay_pay(pay_alipay_t *self, const char *out_trade_no, const char *auth_code,
                    int64_t amount, const char *subject, const char *store, const char *device,
                    pay_outcome_t *out);
/*  alipay.trade.query; amount is what it must be to count as PAY_SUCCESS. */
void pay_alipay_query(pay_alipay_t *self, const char *out_trade_no, int64_t amount,
                      pay_outcome_t *out);
/*  alipay.trade.cancel: PAY_REVERSED (closed, or paid and refunded), PAY_NOT_FOUND, PAY_UNKNOWN. */
void pay_alipay_cancel(pay_alipay_t *self, const char *out_trade_no, pay_outcome_t *out);

/*  alipay.trade.refund (idempotent by out_request_no) and
    alipay.trade.fastpay.refund.query (provider.h). */
void pay_alipay_refund(pay_alipay_t *self, const char *out_trade_no, const char *out_request_no,
                       int64_t amount, pay_outcome_t *out);
void pay_alipay_refund_query(pay_alipay_t *self, const char *out_trade_no,
                             const char *out_request_no, int64_t amount, pay_outcome_t *out);

/*  The calls as a pay_provider_t for payments.c (client: self). */
pay_provider_t pay_alipay_provider(pay_alipay_t *self);

/*  "12.34" from 1234 fen; the fen of a yuan text with at most two decimals, -1 if it is not
    one (for tests too). */
void pay_alipay_yuan(int64_t fen, char *out, size_t size);
int64_t pay_alipay_fen(const char *yuan);

#endif
