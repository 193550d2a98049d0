/*  =========================================================================
    notify.h - the HTTPS endpoint a provider posts its notifications to
    (libmicrohttpd with GnuTLS), part of payments

    WeChat Pay tells a refund's end (REFUND.SUCCESS, REFUND.ABNORMAL,
    REFUND.CLOSED) by POSTing to the refund's notify_url, and sends it again
    until it is answered 2xx. This module only takes such requests in: TLS
    with the certificate and key given by file, one path, POST only, a body
    of at most PAY_NOTIFY_BODY_MAX bytes, connections that are idle longer
    than PAY_NOTIFY_TIMEOUT_S closed, at most PAY_NOTIFY_CONNS at once. What
    a notification means is the caller's business: one callback, called on
    the endpoint's own thread (one thread: the callback may hold its own
    Redis connection without a lock), answers with the HTTP status.
    =========================================================================
*/
#ifndef PAY_NOTIFY_H_INCLUDED
#define PAY_NOTIFY_H_INCLUDED

#include <stddef.h>

#define PAY_NOTIFY_BODY_MAX  (64 * 1024)
#define PAY_NOTIFY_TIMEOUT_S 10
#define PAY_NOTIFY_CONNS     64

typedef struct pay_notify pay_notify_t;

/*  One POST as it arrived: the Wechatpay-* headers (NULL when missing) and the body. */
typedef struct {
    const char *timestamp, *nonce, *serial, *signature;
    const char *body; /* NUL-terminated; len without the NUL */
    size_t len;
} pay_notify_req_t;

/*  The callback: the HTTP status to answer (2xx: taken; else the provider sends it again). */
typedef int(pay_notify_fn)(void *arg, const pay_notify_req_t *req);

/*  Listen on listen ("HOST:PORT", an IPv4 address; port 0: any free one) with TLS from cert_file
    and key_file (PEM) for POSTs to path. NULL with why (which file or setting, never a key). */
pay_notify_t *pay_notify_new(const char *listen, const char *path, const char *cert_file,
                             const char *key_file, pay_notify_fn *fn, void *arg, char *why,
                             size_t size);
/*  Stop listening, finish or drop the requests in progress (NULL-safe). */
void pay_notify_destroy(pay_notify_t **self_p);
/*  The port it listens on. */
int pay_notify_port(pay_notify_t *self);

#endif
