/*  =========================================================================
    client.c - request/reply client

    A DEALER socket, so that late replies never wedge the socket the way a
    REQ socket's strict send/recv alternation would; correlation ids replace
    REQ's envelope. Between attempts after "no_service" the client backs
    off (a restarting service re-registers within a heartbeat).
    =========================================================================
*/
#include <sys/random.h>
#include "bus/client.h"
#include "bus/proto.h"

#define S_BACKOFF_MIN_MS    100
#define S_BACKOFF_MAX_MS    2000
#define S_ERRSTR_MAX        256
#define S_REPLY_PARTS       4     /* BUS1C REP corr payload */
#define S_RETRY_HINT_MAX_MS 60000 /* a service's retry hint beyond this is not believed */

struct bus_client {
    zsock_t *sock;
    char *src;
    int timeout_ms;
    int retries;
    uint64_t next_corr;
    int64_t seq;
    bus_client_err_t errcode;
    char errstr[S_ERRSTR_MAX];
    char remote_code[BUS_SERVICE_NAME_MAX];
    uint64_t stale;
    bus_buf_t buf;
    bus_codec_stats_t codec;
};

bus_client_t *bus_client_new(const bus_conn_cfg_t *cfg, const char *src, const char **err)
{
    const char *dummy;
    if (!err)
        err = &dummy;
    bus_client_t *self = calloc(1, sizeof(*self));
    if (!self) {
        *err = "out of memory";
        return NULL;
    }
    self->src = strdup(src ? src : "");
    self->sock = zsock_new(ZMQ_DEALER);
    self->timeout_ms = BUS_CLIENT_DEFAULT_TIMEOUT_MS;
    self->retries = BUS_CLIENT_DEFAULT_RETRIES;
    if (!self->src || !self->sock) {
        *err = "cannot create socket";
        goto out_destroy;
    }
    if (bus_conn_connect(self->sock, cfg->req_endpoint, cfg, err) != 0)
        goto out_destroy;
    return self;

out_destroy:
    bus_client_destroy(&self);
    return NULL;
}

void bus_client_destroy(bus_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_client_t *self = *self_p;
    zsock_destroy(&self->sock);
    bus_buf_free(&self->buf);
    free(self->src);
    free(self);
    *self_p = NULL;
}

void bus_client_set_timeout(bus_client_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms > 0 ? timeout_ms : BUS_CLIENT_DEFAULT_TIMEOUT_MS;
}

void bus_client_set_retries(bus_client_t *self, int retries)
{
    self->retries = retries >= 0 ? retries : 0;
}

static void s_fail(bus_client_t *self, bus_client_err_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->errstr, sizeof(self->errstr), fmt, ap);
    va_end(ap);
    self->errcode = code;
}

/*  A correlation id nobody can guess: busd forwards a reply from any service's key to the client
    and correlation id it names, so a predictable id would let one service answer requests meant
    for another before it does. 64 bits from the kernel's CSPRNG per request; the counter is a
    fallback that still never repeats within the client. */
static uint64_t s_new_corr(bus_client_t *self)
{
    uint64_t corr;
    if (getrandom(&corr, sizeof(corr), GRND_NONBLOCK) != (ssize_t)sizeof(corr))
        corr = (uint64_t)bus_mono_ms() << 20 ^ ++self->next_corr;
    return corr;
}

static int s_send(bus_client_t *self, const char *service, uint64_t corr)
{
    void *h = zsock_resolve(self->sock);
    if (zmq_send(h, BUS_PROTO_CLIENT, strlen(BUS_PROTO_CLIENT), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(h, BUS_CMD_REQ, strlen(BUS_CMD_REQ), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(h, service, strlen(service), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(h, &corr, sizeof(corr), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(h, self->buf.data, self->buf.len, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

/*  Wait until deadline for the reply to one of corrs (n ids); *which gets its index. Returns the
    decoded reply, or NULL on timeout (errcode TIMEOUT) or a socket failure (errcode IO).
    Malformed replies and replies to other ids (stale) are dropped. */
static bus_msg_t *s_wait_any(bus_client_t *self, const uint64_t *corrs, int n, int64_t deadline,
                             int *which)
{
    void *h = zsock_resolve(self->sock);
    while (true) {
        int64_t left = deadline - bus_mono_ms();
        if (left <= 0)
            break;
        zmq_pollitem_t item = {h, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)left);
        if (rc < 0) {
            s_fail(self, BUS_CLIENT_IO, "interrupted");
            return NULL;
        }
        if (rc == 0)
            break;
        zmsg_t *reply = zmsg_recv(self->sock);
        if (!reply) {
            s_fail(self, BUS_CLIENT_IO, "interrupted");
            return NULL;
        }
        zframe_t *proto = zmsg_first(reply);
        zframe_t *cmd = zmsg_next(reply);
        zframe_t *corr_f = zmsg_next(reply);
        zframe_t *payload = zmsg_next(reply);
        bus_msg_t *msg = NULL;
        if (zmsg_size(reply) == S_REPLY_PARTS && zframe_streq(proto, BUS_PROTO_CLIENT) &&
            zframe_streq(cmd, BUS_CMD_REP) && zframe_size(corr_f) == sizeof(uint64_t)) {
            uint64_t got;
            memcpy(&got, zframe_data(corr_f), sizeof(got));
            int i = 0;
            while (i < n && corrs[i] != got)
                i++;
            if (i < n) {
                msg = bus_msg_decode(zframe_data(payload), zframe_size(payload), NULL, &self->codec,
                                     NULL);
                if (msg)
                    *which = i;
            } else
                self->stale++;
        }
        zmsg_destroy(&reply);
        if (msg)
            return msg;
    }
    s_fail(self, BUS_CLIENT_TIMEOUT, "no reply");
    return NULL;
}

/*  Turn an "error" reply into the client's error state; NULL then. A "reply" passes through.
    *retry_ms is set (> 0) when the error says the request may succeed later: no_service, or
    unavailable with the service's hint (or the current backoff when it gave none). */
static bus_msg_t *s_check_reply(bus_client_t *self, const char *service, bus_msg_t *msg,
                                int *retry_ms, int backoff)
{
    *retry_ms = 0;
    if (strcmp(bus_msg_type(msg), "error") != 0)
        return msg;
    const char *code = bus_val_map_get_str(bus_msg_body(msg), "code");
    const char *text = bus_val_map_get_str(bus_msg_body(msg), "message");
    snprintf(self->remote_code, sizeof(self->remote_code), "%s", code ? code : BUS_ERR_INTERNAL);
    bool no_service = strcmp(self->remote_code, BUS_ERR_NO_SERVICE) == 0;
    bool unavailable = strcmp(self->remote_code, BUS_ERR_UNAVAILABLE) == 0;
    int64_t hint = 0;
    bus_val_map_get_int(bus_msg_body(msg), "retry_ms", &hint);
    if (no_service)
        *retry_ms = backoff;
    else if (unavailable)
        *retry_ms = hint > 0 && hint < S_RETRY_HINT_MAX_MS ? (int)hint : backoff;
    s_fail(self,
           no_service    ? BUS_CLIENT_NO_SERVICE
           : unavailable ? BUS_CLIENT_UNAVAILABLE
                         : BUS_CLIENT_REMOTE,
           "%s: %s: %s", service, self->remote_code, text ? text : "");
    bus_msg_destroy(&msg);
    return NULL;
}

static int s_next_backoff(int backoff)
{
    return backoff * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : backoff * 2;
}

/*  The request envelope of method with *body_p (taken) into self->buf. 0, or -1 with errcode. */
static int s_encode_request(bus_client_t *self, const char *method, bus_val_t **body_p)
{
    bus_msg_t *req = bus_msg_new(method, self->src, ++self->seq);
    if (!req || (body_p && *body_p && bus_msg_set_body(req, body_p) != 0)) {
        bus_val_destroy(body_p);
        bus_msg_destroy(&req);
        s_fail(self, BUS_CLIENT_INVALID, "invalid method or body");
        return -1;
    }
    bus_buf_reset(&self->buf);
    int rc = bus_msg_encode(req, &self->buf);
    bus_msg_destroy(&req);
    if (rc != 0) {
        s_fail(self, BUS_CLIENT_IO, "out of memory");
        return -1;
    }
    return 0;
}

static bool s_service_ok(bus_client_t *self, const char *service, bus_val_t **body_p)
{
    size_t service_len = service ? strlen(service) : 0;
    if (service_len == 0 || service_len > BUS_SERVICE_NAME_MAX + BUS_INSTANCE_MAX) {
        bus_val_destroy(body_p);
        s_fail(self, BUS_CLIENT_INVALID, "invalid service name");
        return false;
    }
    return true;
}

int bus_client_send(bus_client_t *self, const char *service, const char *method, bus_val_t **body_p,
                    uint64_t *corr)
{
    self->errcode = BUS_CLIENT_OK;
    self->errstr[0] = '\0';
    self->remote_code[0] = '\0';
    if (!s_service_ok(self, service, body_p) || s_encode_request(self, method, body_p) != 0)
        return -1;
    *corr = s_new_corr(self);
    if (s_send(self, service, *corr) != 0) {
        s_fail(self, BUS_CLIENT_IO, "cannot send: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

bus_msg_t *bus_client_recv(bus_client_t *self, const char *service, const uint64_t *corrs, int n,
                           int timeout_ms, int *which)
{
    self->errcode = BUS_CLIENT_OK;
    self->errstr[0] = '\0';
    self->remote_code[0] = '\0';
    *which = -1;
    bus_msg_t *reply = s_wait_any(self, corrs, n, bus_mono_ms() + timeout_ms, which);
    if (!reply)
        return NULL;
    int retry_ms;
    return s_check_reply(self, service, reply, &retry_ms, S_BACKOFF_MIN_MS);
}

bus_msg_t *bus_client_request(bus_client_t *self, const char *service, const char *method,
                              bus_val_t **body_p)
{
    self->errcode = BUS_CLIENT_OK;
    self->errstr[0] = '\0';
    self->remote_code[0] = '\0';
    if (!s_service_ok(self, service, body_p))
        return NULL;
    if (s_encode_request(self, method, body_p) != 0)
        return NULL;
    /* every attempt sends the same bytes: same envelope id, same correlation id */
    uint64_t corr = s_new_corr(self);
    int backoff = S_BACKOFF_MIN_MS;
    for (int attempt = 0; attempt <= self->retries; attempt++) {
        if (s_send(self, service, corr) != 0) {
            s_fail(self, BUS_CLIENT_IO, "cannot send: %s", zmq_strerror(errno));
            zclock_sleep(backoff);
            backoff = s_next_backoff(backoff);
            continue;
        }
        int which;
        bus_msg_t *reply = s_wait_any(self, &corr, 1, bus_mono_ms() + self->timeout_ms, &which);
        if (reply) {
            int retry_ms;
            reply = s_check_reply(self, service, reply, &retry_ms, backoff);
            if (reply || retry_ms == 0 || attempt == self->retries)
                return reply;
            zclock_sleep(retry_ms);
            backoff = s_next_backoff(backoff);
        } else if (self->errcode == BUS_CLIENT_IO)
            return NULL;
    }
    if (self->errcode == BUS_CLIENT_TIMEOUT)
        s_fail(self, BUS_CLIENT_TIMEOUT, "%s: no reply after %d attempts of %d ms", service,
               self->retries + 1, self->timeout_ms);
    return NULL;
}

bus_client_err_t bus_client_errcode(bus_client_t *self)
{
    return self->errcode;
}

const char *bus_client_errstr(bus_client_t *self)
{
    return self->errstr;
}

const char *bus_client_remote_code(bus_client_t *self)
{
    return self->remote_code;
}

uint64_t bus_client_stale_replies(bus_client_t *self)
{
    return self->stale;
}

zsock_t *bus_client_sock(bus_client_t *self)
{
    return self->sock;
}
