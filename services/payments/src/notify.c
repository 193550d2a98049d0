/*  notify.c - the HTTPS endpoint for provider notifications (part of payments; notify.h) */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>
#include <openssl/crypto.h>

#include <bus/val.h>

#include "notify.h"

#define S_PEM_MAX (64 * 1024) /* bytes of a certificate chain or key file */

struct pay_notify {
    struct MHD_Daemon *daemon;
    char path[256];
    char *cert, *key; /* PEM, kept while the daemon runs */
    size_t key_len;
    pay_notify_fn *fn;
    void *arg;
};

/* One request in progress. */
typedef struct {
    bus_buf_t body;
    bool too_big;
} s_req_t;

/*  A whole small file, NUL-terminated (caller frees); NULL when it cannot be read or is too big. */
static char *s_slurp(const char *path, size_t *len)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f)
        return NULL;
    char *buf = malloc(S_PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, S_PEM_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > S_PEM_MAX) {
        if (buf)
            OPENSSL_cleanse(buf, S_PEM_MAX + 1);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static enum MHD_Result s_respond(struct MHD_Connection *conn, int status)
{
    char text[96] = "";
    if (status >= 300)
        snprintf(text, sizeof(text), "{\"code\":\"FAIL\",\"message\":\"HTTP %d\"}", status);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (text[0])
        MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *data,
                                size_t *data_size, void **con_cls)
{
    (void)version;
    pay_notify_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req) { /* the headers: nothing of the body yet */
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        *con_cls = req;
        return MHD_YES;
    }
    if (*data_size > 0) {
        if (!req->too_big && req->body.len + *data_size <= PAY_NOTIFY_BODY_MAX &&
            bus_buf_append(&req->body, data, *data_size) != 0)
            req->too_big = true; /* out of memory: answered as too big, sent again later */
        else if (req->body.len + *data_size > PAY_NOTIFY_BODY_MAX)
            req->too_big = true;
        *data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return s_respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED);
    if (strcmp(url, self->path) != 0)
        return s_respond(conn, MHD_HTTP_NOT_FOUND);
    if (req->too_big)
        return s_respond(conn, 413);
    if (bus_buf_append(&req->body, "", 1) != 0) /* the NUL */
        return s_respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE);
    pay_notify_req_t r = {
        .timestamp = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Wechatpay-Timestamp"),
        .nonce = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Wechatpay-Nonce"),
        .serial = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Wechatpay-Serial"),
        .signature = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Wechatpay-Signature"),
        .body = (const char *)req->body.data,
        .len = req->body.len - 1};
    return s_respond(conn, self->fn(self->arg, &r));
}

static void s_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn, (void)toe;
    s_req_t *req = *con_cls;
    if (req) {
        bus_buf_free(&req->body);
        free(req);
        *con_cls = NULL;
    }
}

pay_notify_t *pay_notify_new(const char *listen, const char *path, const char *cert_file,
                             const char *key_file, pay_notify_fn *fn, void *arg, char *why,
                             size_t size)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || (size_t)(colon - listen) >= sizeof(host) || !end || *end || end == colon + 1 ||
        port < 0 || port > 65535) {
        snprintf(why, size, "notify-listen: HOST:PORT (an IPv4 address)");
        return NULL;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(why, size, "notify-listen: %s is not an IPv4 address", host);
        return NULL;
    }
    sa.sin_port = htons((uint16_t)port);
    if (!path || path[0] != '/' || strlen(path) >= 256) {
        snprintf(why, size, "notify: the path must start with / (at most 255 bytes)");
        return NULL;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(why, size, "notify: this libmicrohttpd is built without TLS");
        return NULL;
    }
    pay_notify_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    snprintf(self->path, sizeof(self->path), "%s", path);
    self->fn = fn;
    self->arg = arg;
    size_t cert_len = 0;
    self->cert = s_slurp(cert_file, &cert_len);
    self->key = s_slurp(key_file, &self->key_len);
    if (!self->cert || !self->key) {
        snprintf(why, size, "notify: cannot read the %s file %s",
                 self->cert ? "key" : "certificate", self->cert ? key_file : cert_file);
        goto fail;
    }
    self->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, (uint16_t)port, NULL, NULL, s_access, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_HTTPS_MEM_CERT, self->cert,
        MHD_OPTION_HTTPS_MEM_KEY, self->key, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)PAY_NOTIFY_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)PAY_NOTIFY_CONNS, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, NULL, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf(why, size,
                 "notify: cannot listen on %s with TLS (port taken, or the "
                 "certificate %s and key %s do not load)",
                 listen, cert_file, key_file);
        goto fail;
    }
    return self;
fail:
    pay_notify_destroy(&self);
    return NULL;
}

void pay_notify_destroy(pay_notify_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_notify_t *self = *self_p;
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    if (self->key)
        OPENSSL_cleanse(self->key, self->key_len);
    free(self->key);
    free(self->cert);
    free(self);
    *self_p = NULL;
}

int pay_notify_port(pay_notify_t *self)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}
