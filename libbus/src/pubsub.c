/*  =========================================================================
    pubsub.c - publishers and subscribers

    The hot path is publish: encode into a reused buffer, send two frames
    with plain zmq_send (no czmq message objects), so that a libbus
    publisher costs little more than a raw ZeroMQ one (bench/ compares).
    =========================================================================
*/
#include "bus/pubsub.h"

#define S_GAP_SOURCES_MAX 10000 /* distinct sources tracked for gap detection */

struct bus_pub {
    zsock_t *sock;
    char *src;
    zhashx_t *seqs; /* topic -> int64 last seq used on that topic */
    bus_buf_t buf;
};

struct bus_sub {
    zsock_t *sock;
    bus_limits_t limits;
    bus_codec_stats_t codec;
    uint64_t bad_frames;
    uint64_t gaps;
    zhashx_t *last_seq; /* src -> last seq seen (int64 stored in a malloc'd cell) */
};

static bool s_topic_ok(const char *topic)
{
    size_t len = topic ? strlen(topic) : 0;
    return len > 0 && len <= BUS_TOPIC_MAX;
}

bus_pub_t *bus_pub_new(const bus_conn_cfg_t *cfg, const char *src, const char **err)
{
    const char *dummy;
    if (!err)
        err = &dummy;
    bus_pub_t *self = calloc(1, sizeof(*self));
    if (!self) {
        *err = "out of memory";
        return NULL;
    }
    self->src = strdup(src ? src : "");
    self->sock = zsock_new(ZMQ_PUB);
    self->seqs = zhashx_new();
    if (!self->src || !self->sock || !self->seqs) {
        *err = "cannot create socket";
        goto out_destroy;
    }
    zhashx_set_destructor(self->seqs, (zhashx_destructor_fn *)zstr_free);
    if (bus_conn_connect(self->sock, cfg->pub_endpoint, cfg, err) != 0)
        goto out_destroy;
    return self;

out_destroy:
    bus_pub_destroy(&self);
    return NULL;
}

void bus_pub_destroy(bus_pub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_pub_t *self = *self_p;
    zsock_destroy(&self->sock);
    zhashx_destroy(&self->seqs);
    bus_buf_free(&self->buf);
    free(self->src);
    free(self);
    *self_p = NULL;
}

int bus_pub_send_raw(bus_pub_t *self, const char *topic, const void *payload, size_t len)
{
    if (!s_topic_ok(topic))
        return -1;
    void *handle = zsock_resolve(self->sock);
    if (zmq_send(handle, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    if (zmq_send(handle, payload, len, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

int bus_pub_send(bus_pub_t *self, const char *topic, const bus_msg_t *msg)
{
    bus_buf_reset(&self->buf);
    if (bus_msg_encode(msg, &self->buf) != 0)
        return -1;
    return bus_pub_send_raw(self, topic, self->buf.data, self->buf.len);
}

int64_t bus_pub_publish(bus_pub_t *self, const char *topic, const char *type, bus_val_t **body_p)
{
    if (!s_topic_ok(topic)) {
        bus_val_destroy(body_p);
        return -1;
    }
    int64_t *last = zhashx_lookup(self->seqs, topic);
    if (!last) {
        last = calloc(1, sizeof(*last));
        if (!last || zhashx_insert(self->seqs, topic, last) != 0) {
            free(last);
            bus_val_destroy(body_p);
            return -1;
        }
    }
    int64_t seq = *last + 1;
    bus_msg_t *msg = bus_msg_new(type, self->src, seq);
    if (!msg) {
        bus_val_destroy(body_p);
        return -1;
    }
    if (body_p && *body_p && bus_msg_set_body(msg, body_p) != 0) {
        bus_msg_destroy(&msg);
        return -1;
    }
    int rc = bus_pub_send(self, topic, msg);
    bus_msg_destroy(&msg);
    if (rc != 0)
        return -1;
    *last = seq;
    return seq;
}

const char *bus_pub_src(bus_pub_t *self)
{
    return self->src;
}

bus_sub_t *bus_sub_new(const bus_conn_cfg_t *cfg, const char **err)
{
    const char *dummy;
    if (!err)
        err = &dummy;
    bus_sub_t *self = calloc(1, sizeof(*self));
    if (!self) {
        *err = "out of memory";
        return NULL;
    }
    self->sock = zsock_new(ZMQ_SUB);
    self->last_seq = zhashx_new();
    if (!self->sock || !self->last_seq) {
        *err = "cannot create socket";
        goto out_destroy;
    }
    zhashx_set_destructor(self->last_seq, (zhashx_destructor_fn *)zstr_free);
    if (bus_conn_connect(self->sock, cfg->sub_endpoint, cfg, err) != 0)
        goto out_destroy;
    return self;

out_destroy:
    bus_sub_destroy(&self);
    return NULL;
}

void bus_sub_destroy(bus_sub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_sub_t *self = *self_p;
    zsock_destroy(&self->sock);
    zhashx_destroy(&self->last_seq);
    free(self);
    *self_p = NULL;
}

int bus_sub_subscribe(bus_sub_t *self, const char *prefix)
{
    return zmq_setsockopt(zsock_resolve(self->sock), ZMQ_SUBSCRIBE, prefix, strlen(prefix));
}

int bus_sub_unsubscribe(bus_sub_t *self, const char *prefix)
{
    return zmq_setsockopt(zsock_resolve(self->sock), ZMQ_UNSUBSCRIBE, prefix, strlen(prefix));
}

void bus_sub_set_limits(bus_sub_t *self, const bus_limits_t *limits)
{
    self->limits = *limits;
}

/*  Count events missing between two consecutive events of one source on one topic. A seq that
    goes backwards means the source restarted (new numbering): start again from it. */
static void s_track_gap(bus_sub_t *self, const char *topic, const bus_msg_t *msg)
{
    char src[BUS_TOPIC_MAX * 2 + 2];
    snprintf(src, sizeof(src), "%s|%s", bus_msg_src(msg), topic);
    int64_t seq = bus_msg_seq(msg);
    int64_t *last = zhashx_lookup(self->last_seq, src);
    if (!last) {
        if (zhashx_size(self->last_seq) >= S_GAP_SOURCES_MAX)
            zhashx_purge(self->last_seq);
        last = malloc(sizeof(*last));
        if (!last)
            return;
        *last = seq;
        zhashx_insert(self->last_seq, src, last);
        /* zhashx_insert with no duplicator keeps our pointer */
        return;
    }
    if (seq > *last + 1)
        self->gaps += (uint64_t)(seq - *last - 1);
    *last = seq;
}

/*  Read one whole multipart message into msgs[]; returns the part count (more than max counts as
    max + 1, the excess discarded), 0 if nothing was waiting, -1 on interruption. */
static int s_recv_parts(void *handle, zmq_msg_t *parts, int max, int flags)
{
    int count = 0;
    int more = 1;
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *part = count < max ? &parts[count] : &scratch;
        zmq_msg_init(part);
        if (zmq_msg_recv(part, handle, count == 0 ? flags : 0) < 0) {
            int err = errno;
            zmq_msg_close(part);
            for (int i = 0; i < count && i < max; i++)
                zmq_msg_close(&parts[i]);
            return count == 0 && err == EAGAIN ? 0 : -1;
        }
        more = zmq_msg_more(part);
        if (part == &scratch)
            zmq_msg_close(part);
        if (count <= max)
            count++;
    }
    return count;
}

bus_msg_t *bus_sub_recv(bus_sub_t *self, int timeout_ms, char *topic, size_t topic_size)
{
    void *handle = zsock_resolve(self->sock);
    int64_t deadline = timeout_ms >= 0 ? bus_mono_ms() + timeout_ms : -1;
    while (true) {
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - bus_mono_ms();
            wait = left > 0 ? (int)left : 0;
        }
        zmq_pollitem_t item = {handle, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, wait);
        if (rc < 0)
            return NULL;
        if (rc == 0)
            return NULL;
        zmq_msg_t parts[2];
        int n = s_recv_parts(handle, parts, 2, ZMQ_DONTWAIT);
        if (n <= 0)
            return NULL;
        bus_msg_t *msg = NULL;
        char got_topic[BUS_TOPIC_MAX + 1];
        if (n == 2 && zmq_msg_size(&parts[0]) <= BUS_TOPIC_MAX) {
            bus_reject_t reason;
            msg = bus_msg_decode(zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]), &self->limits,
                                 &self->codec, &reason);
            size_t len = zmq_msg_size(&parts[0]);
            memcpy(got_topic, zmq_msg_data(&parts[0]), len);
            got_topic[len] = '\0';
            if (msg && topic && topic_size > 0)
                snprintf(topic, topic_size, "%s", got_topic);
        } else
            self->bad_frames++;
        for (int i = 0; i < n && i < 2; i++)
            zmq_msg_close(&parts[i]);
        if (msg) {
            s_track_gap(self, got_topic, msg);
            return msg;
        }
        if (deadline >= 0 && bus_mono_ms() >= deadline)
            return NULL;
    }
}

zsock_t *bus_sub_sock(bus_sub_t *self)
{
    return self->sock;
}

const bus_codec_stats_t *bus_sub_codec_stats(bus_sub_t *self)
{
    return &self->codec;
}

uint64_t bus_sub_bad_frames(bus_sub_t *self)
{
    return self->bad_frames;
}

uint64_t bus_sub_gaps(bus_sub_t *self)
{
    return self->gaps;
}
