/*  =========================================================================
    http.h - one HTTPS exchange with a payment provider (libcurl), part of payments

    A provider call is one request and one answer within a deadline; what
    the answer means is the provider module's business (wechat.h). This
    module only moves bytes: it keeps one connection per handle alive
    between calls (providers answer faster on a warm TLS session), verifies
    the server's certificate (the system's CAs, or ca_file), and hands back
    the status, the headers and the raw body, bounded. A call that got no
    complete answer (refused, timed out, the connection dropped) has status
    0 and says why: to a payment that is "unknown", never "failed".

    Not thread-safe: one handle per thread.
    =========================================================================
*/
#ifndef PAY_HTTP_H_INCLUDED
#define PAY_HTTP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include <bus/val.h>

#define PAY_HTTP_BODY_MAX    (1024 * 1024) /* bytes of an answer's body kept; more: no answer */
#define PAY_HTTP_HEADERS_MAX 48
#define PAY_HTTP_HEADER_MAX  1024 /* bytes of one header line kept */

typedef struct {
    long status;      /* HTTP status; 0: no complete answer */
    char error[200];  /* why, when status is 0 */
    bus_buf_t body;   /* the raw body (NUL-terminated, len without the NUL) */
    int nheaders;
    char headers[PAY_HTTP_HEADERS_MAX][PAY_HTTP_HEADER_MAX]; /* "Name: value", as received */
} pay_http_answer_t;

typedef struct pay_http pay_http_t;

/*  A handle with timeout_ms for a whole exchange, the CA file to trust (NULL: the system's).
    NULL when libcurl cannot start. */
pay_http_t *pay_http_new(const char *ca_file, int timeout_ms);
void pay_http_destroy(pay_http_t **self_p);

/*  method ("GET", "POST") url with headers (NULL-terminated "Name: value" lines) and body (may be
    NULL for none). Fills out (reset first; free with pay_http_answer_free). 0 when an answer came
    (any status), -1 when none did (out->status 0, out->error). once: the request must never be
    sent twice, so it goes on a new connection (libcurl sends a request again by itself when a
    reused connection turns out dead before any answer, which is right for a query and wrong
    for a charge). */
int pay_http_request(pay_http_t *self, const char *method, const char *url,
                     const char *const *headers, const char *body, size_t len, bool once,
                     pay_http_answer_t *out);

/*  The value of header name (case-insensitive) in an answer, or NULL. */
const char *pay_http_header(const pay_http_answer_t *answer, const char *name);
void pay_http_answer_free(pay_http_answer_t *answer);

/*  libcurl's global start and end: once per process, before any thread makes a handle. */
int pay_http_global_init(void);
void pay_http_global_cleanup(void);

#endif
