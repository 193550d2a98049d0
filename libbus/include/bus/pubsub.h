/*  =========================================================================
    bus/pubsub.h - events through busd

    An event is two frames: the topic (UTF-8, dot-separated, e.g.
    "sale.completed") and one envelope (bus/msg.h). Subscribers filter by
    topic prefix; busd forwards subscriptions upstream so publishers only
    send what somebody wants.

    Pub/sub is lossy by design and nothing in posbus depends on an event
    arriving: Redis and the register journals are the truth; events are for
    dashboards, registers' replicas and analytics, which catch up by replay.
    High-water-mark policy: every socket holds at most `hwm` messages per
    peer (default 100,000). A publisher never blocks: past the mark its
    messages to that peer are dropped. busd's XPUB drops for a subscriber
    that falls behind by more than its mark, so one slow consumer cannot
    stall the bus or grow busd's memory without bound. Each publisher stamps
    `seq` counting its events on each topic (from 1), so a subscriber, which
    sees whole topics, notices a drop as a gap (counted here).

    Publishers and subscribers reconnect by themselves after busd restarts;
    ZMTP heartbeats detect a dead busd even without a TCP reset, and libzmq
    re-sends a subscriber's subscriptions on every new connection.
    =========================================================================
*/
#ifndef BUS_PUBSUB_H_INCLUDED
#define BUS_PUBSUB_H_INCLUDED

#include "bus/conn.h"
#include "bus/msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_TOPIC_MAX 255

typedef struct bus_pub bus_pub_t;
typedef struct bus_sub bus_sub_t;

/* A publisher connected to cfg->pub_endpoint, stamping src and a seq per topic (from 1).
   NULL on failure with *err set to a reason (err may be NULL). */
bus_pub_t *bus_pub_new(const bus_conn_cfg_t *cfg, const char *src, const char **err);
void bus_pub_destroy(bus_pub_t **self_p);

/* Publish an event of the given type with *body_p (a map, taken and nulled; NULL = empty body).
   Returns the seq used, or -1 on a bad topic, bad body or send failure. Never blocks. */
int64_t bus_pub_publish(bus_pub_t *self, const char *topic, const char *type, bus_val_t **body_p);
/* Publish a prebuilt envelope as it is (src and seq untouched). 0 or -1. */
int bus_pub_send(bus_pub_t *self, const char *topic, const bus_msg_t *msg);
/* Publish an already encoded payload as it is. 0 or -1. */
int bus_pub_send_raw(bus_pub_t *self, const char *topic, const void *payload, size_t len);
const char *bus_pub_src(bus_pub_t *self);

/* A subscriber connected to cfg->sub_endpoint, subscribed to nothing yet. */
bus_sub_t *bus_sub_new(const bus_conn_cfg_t *cfg, const char **err);
void bus_sub_destroy(bus_sub_t **self_p);
int bus_sub_subscribe(bus_sub_t *self, const char *prefix); /* "" = every topic */
int bus_sub_unsubscribe(bus_sub_t *self, const char *prefix);
void bus_sub_set_limits(bus_sub_t *self, const bus_limits_t *limits);

/* Wait up to timeout_ms (-1 forever) for the next valid event. Malformed events are counted and
   skipped. Returns a new message (caller destroys) and copies its topic into topic (when given,
   NUL-terminated, truncated to topic_size); NULL on timeout or interruption. */
bus_msg_t *bus_sub_recv(bus_sub_t *self, int timeout_ms, char *topic, size_t topic_size);

/* The socket, to poll together with others (then call bus_sub_recv with timeout 0). */
zsock_t *bus_sub_sock(bus_sub_t *self);
const bus_codec_stats_t *bus_sub_codec_stats(bus_sub_t *self);
uint64_t bus_sub_bad_frames(bus_sub_t *self); /* wrong frame count or oversize topic */
uint64_t bus_sub_gaps(bus_sub_t *self);       /* events missing between two of one source+topic */

#ifdef __cplusplus
}
#endif
#endif
