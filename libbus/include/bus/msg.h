/*  =========================================================================
    bus/msg.h - the posbus message envelope

    Every event and every request/reply payload is one MessagePack map:
        v     int    schema version (BUS_MSG_VERSION; decoders accept 1..BUS_MSG_VERSION)
        type  str    what it is, e.g. "sale.completed", "health", "reply", "error"
        id    str    unique message id (32 lowercase hex chars from a CSPRNG by default)
        src   str    node or service instance that produced it
        seq   int    per-source sequence, >= 0
        ts    int    milliseconds since the Unix epoch, UTC, >= 0
        body  map    the payload
    Unknown keys are ignored (forward compatibility); a missing or mistyped required key rejects
    the whole message with a reason, which the caller counts.
    =========================================================================
*/
#ifndef BUS_MSG_H_INCLUDED
#define BUS_MSG_H_INCLUDED

#include "bus/val.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_MSG_VERSION 1
#define BUS_MSG_ID_LEN  32

typedef struct bus_msg bus_msg_t;

/* Counters a decoder keeps: accepted messages and rejections by reason. Zero-initialise. */
typedef struct bus_codec_stats {
    uint64_t accepted;
    uint64_t rejected[BUS_REJ__COUNT];
} bus_codec_stats_t;

/* New message with v = BUS_MSG_VERSION, a fresh random id, ts = now, an empty body map.
   type and src are copied. NULL on allocation failure or empty type. */
bus_msg_t *bus_msg_new(const char *type, const char *src, int64_t seq);
void bus_msg_destroy(bus_msg_t **self_p);

int64_t bus_msg_version(const bus_msg_t *self);
const char *bus_msg_type(const bus_msg_t *self);
const char *bus_msg_id(const bus_msg_t *self);
const char *bus_msg_src(const bus_msg_t *self);
int64_t bus_msg_seq(const bus_msg_t *self);
int64_t bus_msg_ts(const bus_msg_t *self);
/* The body map: borrowed and mutable; never NULL. */
bus_val_t *bus_msg_body(const bus_msg_t *self);

int bus_msg_set_id(bus_msg_t *self, const char *id);
void bus_msg_set_seq(bus_msg_t *self, int64_t seq);
void bus_msg_set_ts(bus_msg_t *self, int64_t ts_ms);
/* Replace the body; takes ownership of *body_p (must be a map, else -1 and it is destroyed). */
int bus_msg_set_body(bus_msg_t *self, bus_val_t **body_p);
/* Take the body out (caller owns it); the message gets a fresh empty body. */
bus_val_t *bus_msg_take_body(bus_msg_t *self);

/* Append the encoded envelope to buf. 0 ok, -1 on allocation failure. */
int bus_msg_encode(const bus_msg_t *self, bus_buf_t *buf);

/* Decode and validate an envelope. NULL on rejection with *reason set; when stats is given it
   counts the outcome (accepted or rejected[reason]). limits may be NULL for defaults. */
bus_msg_t *bus_msg_decode(const void *data, size_t len, const bus_limits_t *limits,
                          bus_codec_stats_t *stats, bus_reject_t *reason);

/* Find src in an envelope laid out as bus_msg_encode writes it (a map of exactly the seven keys
   v, type, id, src, seq, ts, body in that order), without decoding it: busd checks the src of
   every event a service publishes this way. 0 with *src (not NUL-terminated) and *src_len, or -1
   when the envelope is laid out any other way. The layout rules out a second "src". */
int bus_msg_peek_src(const void *data, size_t len, const char **src, size_t *src_len);

/* One JSON line: {"v":1,"type":...,"id":...,"src":...,"seq":...,"ts":...,"body":{...}}. */
int bus_msg_to_json(const bus_msg_t *self, bus_buf_t *buf);

/* Milliseconds since the epoch (CLOCK_REALTIME) and a monotonic clock for timeouts. */
int64_t bus_now_ms(void);
int64_t bus_mono_ms(void);
/* Fill out with BUS_MSG_ID_LEN random lowercase hex chars plus NUL (out holds 33 bytes). */
void bus_new_id(char *out);

#ifdef __cplusplus
}
#endif
#endif
