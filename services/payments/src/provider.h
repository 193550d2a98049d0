/*  =========================================================================
    provider.h - what a payment provider's client tells the intents (payments)

    Each provider client (wechat.h, alipay.h) turns its provider's answers
    into one of these outcomes, saying what it learnt and never more: SUCCESS
    only from a verified answer for this trade and amount, FAILED only from
    a verified refusal that means nothing was charged, UNKNOWN for anything
    that decides nothing. payments.c moves an intent on them the same way
    for every provider, through pay_provider_t.
    =========================================================================
*/
#ifndef PAY_PROVIDER_H_INCLUDED
#define PAY_PROVIDER_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#define PAY_WHY_MAX 200

typedef enum {
    PAY_SUCCESS,   /* charged (a verified success for this trade and amount) */
    PAY_PAYING,    /* the customer is confirming: ask again later */
    PAY_NOTPAY,    /* the trade exists, not paid (yet) */
    PAY_FAILED,    /* a verified refusal: nothing was charged */
    PAY_CLOSED,    /* the trade is closed, revoked or failed at the provider: not charged */
    PAY_NOT_FOUND, /* the provider has no such trade */
    PAY_REVERSED,  /* reversed: not charged, or the money went back */
    PAY_UNKNOWN    /* no usable answer (none, unverifiable, an error that decides nothing) */
} pay_result_t;

typedef struct {
    pay_result_t result;
    long status;             /* HTTP status, 0 none */
    bool verified;           /* the answer's signature checked out */
    char transaction_id[72]; /* the provider's id, when charged */
    char trade_state[24];    /* as the provider said it, "" none */
    int64_t paid_ms;         /* when it was paid, as the provider's answer says; 0 not said */
    char code[64];           /* the provider's error code, "" none */
    bool refused;            /* a refund call refused by a verified answer that did not say
                                nothing was refunded (an unmapped code): the refund query then
                                decides (its refund not found: failed) */
    char why[PAY_WHY_MAX];   /* for the intent's history: what happened, no secrets */
} pay_outcome_t;

/*  One worker's client of one provider: the three calls an intent needs. */
typedef struct {
    const char *name; /* "wechat", "alipay" */
    void *client;
    void (*pay)(void *client, const char *out_trade_no, const char *code, int64_t amount,
                const char *description, const char *store, const char *device,
                pay_outcome_t *out);
    void (*query)(void *client, const char *out_trade_no, int64_t amount, pay_outcome_t *out);
    void (*reverse)(void *client, const char *out_trade_no, pay_outcome_t *out);
    /*  Refund amount fen of the paid trade (total fen) under out_refund_no. The providers take
        the same out_refund_no once, so a refund whose answer was lost may be asked again.
        PAY_SUCCESS refunded, PAY_PAYING in progress, PAY_FAILED refused (nothing refunded),
        PAY_UNKNOWN (with refused set: a verified refusal with a code not known to mean
        nothing was refunded). */
    void (*refund)(void *client, const char *out_trade_no, const char *out_refund_no,
                   int64_t amount, int64_t total, pay_outcome_t *out);
    /*  The refund's state: PAY_SUCCESS, PAY_PAYING, PAY_FAILED (closed or abnormal),
        PAY_NOT_FOUND (never arrived: it may be asked again), PAY_UNKNOWN. */
    void (*refund_query)(void *client, const char *out_trade_no, const char *out_refund_no,
                         int64_t amount, pay_outcome_t *out);
} pay_provider_t;

#endif
