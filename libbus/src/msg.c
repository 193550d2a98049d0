/*  =========================================================================
    msg.c - the envelope: building, encoding, strict decoding

    Decoding goes through the strict value decoder, then checks the seven
    required keys by name and type. Unknown keys are skipped so producers
    can add keys without breaking older consumers.
    =========================================================================
*/
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "bus/msg.h"
#include "val_internal.h"

#define S_NS_PER_MS 1000000LL
#define S_MS_PER_S  1000LL

struct bus_msg {
    int64_t v;
    char *type;
    char id[BUS_MSG_ID_LEN + 1];
    char *src;
    int64_t seq;
    int64_t ts;
    bus_val_t *body;
};

int64_t bus_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * S_MS_PER_S + ts.tv_nsec / S_NS_PER_MS;
}

int64_t bus_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * S_MS_PER_S + ts.tv_nsec / S_NS_PER_MS;
}

void bus_new_id(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[BUS_MSG_ID_LEN / 2];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        /* the CSPRNG failing is near impossible; fall back to time and a counter, still unique */
        static uint64_t counter;
        uint64_t a = (uint64_t)bus_now_ms(), b = ++counter ^ (uint64_t)getpid() << 32;
        memcpy(raw, &a, sizeof(a));
        memcpy(raw + sizeof(a), &b, sizeof(b));
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 0xf];
    }
    out[BUS_MSG_ID_LEN] = '\0';
}

bus_msg_t *bus_msg_new(const char *type, const char *src, int64_t seq)
{
    if (!type || !*type)
        return NULL;
    bus_msg_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->v = BUS_MSG_VERSION;
    self->type = strdup(type);
    self->src = strdup(src ? src : "");
    self->body = bus_val_new_map();
    self->seq = seq < 0 ? 0 : seq;
    self->ts = bus_now_ms();
    bus_new_id(self->id);
    if (!self->type || !self->src || !self->body)
        bus_msg_destroy(&self);
    return self;
}

void bus_msg_destroy(bus_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_msg_t *self = *self_p;
    free(self->type);
    free(self->src);
    bus_val_destroy(&self->body);
    free(self);
    *self_p = NULL;
}

int64_t bus_msg_version(const bus_msg_t *self)
{
    return self->v;
}

const char *bus_msg_type(const bus_msg_t *self)
{
    return self->type;
}

const char *bus_msg_id(const bus_msg_t *self)
{
    return self->id;
}

const char *bus_msg_src(const bus_msg_t *self)
{
    return self->src;
}

int64_t bus_msg_seq(const bus_msg_t *self)
{
    return self->seq;
}

int64_t bus_msg_ts(const bus_msg_t *self)
{
    return self->ts;
}

bus_val_t *bus_msg_body(const bus_msg_t *self)
{
    return self->body;
}

int bus_msg_set_id(bus_msg_t *self, const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > BUS_MSG_ID_LEN)
        return -1;
    memcpy(self->id, id, len + 1);
    return 0;
}

void bus_msg_set_seq(bus_msg_t *self, int64_t seq)
{
    self->seq = seq < 0 ? 0 : seq;
}

void bus_msg_set_ts(bus_msg_t *self, int64_t ts_ms)
{
    self->ts = ts_ms < 0 ? 0 : ts_ms;
}

int bus_msg_set_body(bus_msg_t *self, bus_val_t **body_p)
{
    if (!body_p || !*body_p || bus_val_type(*body_p) != BUS_VAL_MAP) {
        bus_val_destroy(body_p);
        return -1;
    }
    bus_val_destroy(&self->body);
    self->body = *body_p;
    *body_p = NULL;
    return 0;
}

bus_val_t *bus_msg_take_body(bus_msg_t *self)
{
    bus_val_t *fresh = bus_val_new_map();
    if (!fresh)
        return NULL;
    bus_val_t *body = self->body;
    self->body = fresh;
    return body;
}

/*  The envelope keys are written by hand around the body so that encoding a message does not
    build a temporary map of seven entries for every event published. */
static int s_str(bus_buf_t *buf, const char *s)
{
    size_t len = strlen(s);
    uint8_t head[5];
    size_t n;
    if (len < 32) {
        head[0] = (uint8_t)(0xa0 | len);
        n = 1;
    } else if (len <= UINT8_MAX) {
        head[0] = 0xd9;
        head[1] = (uint8_t)len;
        n = 2;
    } else if (len <= UINT16_MAX) {
        head[0] = 0xda;
        head[1] = (uint8_t)(len >> 8);
        head[2] = (uint8_t)len;
        n = 3;
    } else {
        head[0] = 0xdb;
        head[1] = (uint8_t)(len >> 24);
        head[2] = (uint8_t)(len >> 16);
        head[3] = (uint8_t)(len >> 8);
        head[4] = (uint8_t)len;
        n = 5;
    }
    if (bus_buf_append(buf, head, n) != 0)
        return -1;
    return bus_buf_append(buf, s, len);
}

/*  Envelope integers are never negative: positive fixint, or uint8/16/32/64, big-endian. */
static int s_int(bus_buf_t *buf, int64_t i)
{
    uint8_t out[9];
    uint64_t u = (uint64_t)i;
    if (u <= 0x7f) {
        out[0] = (uint8_t)u;
        return bus_buf_append(buf, out, 1);
    }
    int bytes = u <= UINT8_MAX ? 1 : u <= UINT16_MAX ? 2 : u <= UINT32_MAX ? 4 : 8;
    out[0] = bytes == 1 ? 0xcc : bytes == 2 ? 0xcd : bytes == 4 ? 0xce : 0xcf;
    for (int k = 0; k < bytes; k++)
        out[1 + k] = (uint8_t)(u >> (8 * (bytes - 1 - k)));
    return bus_buf_append(buf, out, (size_t)bytes + 1);
}

int bus_msg_encode(const bus_msg_t *self, bus_buf_t *buf)
{
    static const uint8_t map7 = 0x87;
    if (bus_buf_append(buf, &map7, 1) != 0 || s_str(buf, "v") != 0 || s_int(buf, self->v) != 0 ||
        s_str(buf, "type") != 0 || s_str(buf, self->type) != 0 || s_str(buf, "id") != 0 ||
        s_str(buf, self->id) != 0 || s_str(buf, "src") != 0 || s_str(buf, self->src) != 0 ||
        s_str(buf, "seq") != 0 || s_int(buf, self->seq) != 0 || s_str(buf, "ts") != 0 ||
        s_int(buf, self->ts) != 0 || s_str(buf, "body") != 0 ||
        bus_val_encode(self->body, buf) != 0)
        return -1;
    return 0;
}

/*  Read one MessagePack string header at *p (fixstr, str8, str16): its bytes in *s, *n. */
static bool s_peek_str(const uint8_t **p, const uint8_t *end, const char **s, size_t *n)
{
    if (*p >= end)
        return false;
    size_t len, head;
    uint8_t b = **p;
    if ((b & 0xe0) == 0xa0)
        len = b & 0x1f, head = 1;
    else if (b == 0xd9 && end - *p >= 2)
        len = (*p)[1], head = 2;
    else if (b == 0xda && end - *p >= 3)
        len = ((size_t)(*p)[1] << 8) | (*p)[2], head = 3;
    else
        return false;
    if ((size_t)(end - *p) < head + len)
        return false;
    *s = (const char *)*p + head;
    *n = len;
    *p += head + len;
    return true;
}

/*  Skip one envelope integer at *p (positive fixint or uint8/16/32/64). */
static bool s_peek_uint(const uint8_t **p, const uint8_t *end)
{
    if (*p >= end)
        return false;
    uint8_t b = **p;
    size_t size = b <= 0x7f ? 1 : b == 0xcc ? 2 : b == 0xcd ? 3 : b == 0xce ? 5 : b == 0xcf ? 9 : 0;
    if (size == 0 || (size_t)(end - *p) < size)
        return false;
    *p += size;
    return true;
}

static bool s_peek_key(const uint8_t **p, const uint8_t *end, const char *want)
{
    const char *s;
    size_t n;
    return s_peek_str(p, end, &s, &n) && n == strlen(want) && memcmp(s, want, n) == 0;
}

int bus_msg_peek_src(const void *data, size_t len, const char **src, size_t *src_len)
{
    const uint8_t *p = data, *end = p + len;
    const char *s;
    size_t n;
    if (len < 1 || *p++ != 0x87)
        return -1;
    if (!s_peek_key(&p, end, "v") || !s_peek_uint(&p, end) || !s_peek_key(&p, end, "type") ||
        !s_peek_str(&p, end, &s, &n) || !s_peek_key(&p, end, "id") ||
        !s_peek_str(&p, end, &s, &n) || !s_peek_key(&p, end, "src") ||
        !s_peek_str(&p, end, src, src_len) || !s_peek_key(&p, end, "seq") ||
        !s_peek_uint(&p, end) || !s_peek_key(&p, end, "ts") || !s_peek_uint(&p, end) ||
        !s_peek_key(&p, end, "body"))
        return -1;
    return 0;
}

/*  Look up a required key: BUS_REJ_MISSING if absent, BUS_REJ_WRONG_TYPE if of another type. */
static bus_reject_t s_require(const bus_val_t *map, const char *key, bus_val_type_t type,
                              bus_val_t **out)
{
    *out = bus_val_map_get(map, key);
    if (!*out)
        return BUS_REJ_MISSING;
    if (bus_val_type(*out) != type)
        return BUS_REJ_WRONG_TYPE;
    return BUS_REJ_NONE;
}

static bus_msg_t *s_reject(bus_val_t **tree, bus_codec_stats_t *stats, bus_reject_t *reason,
                           bus_reject_t why)
{
    bus_val_destroy(tree);
    if (stats)
        stats->rejected[why]++;
    if (reason)
        *reason = why;
    return NULL;
}

bus_msg_t *bus_msg_decode(const void *data, size_t len, const bus_limits_t *limits,
                          bus_codec_stats_t *stats, bus_reject_t *reason)
{
    bus_reject_t why;
    bus_val_t *tree = bus_val_decode(data, len, limits, &why);
    if (!tree)
        return s_reject(&tree, stats, reason, why);
    if (bus_val_type(tree) != BUS_VAL_MAP)
        return s_reject(&tree, stats, reason, BUS_REJ_NOT_MAP);
    static const struct {
        const char *key;
        bus_val_type_t type;
    } required[] = {{"v", BUS_VAL_INT},   {"type", BUS_VAL_STR}, {"id", BUS_VAL_STR},
                    {"src", BUS_VAL_STR}, {"seq", BUS_VAL_INT},  {"ts", BUS_VAL_INT},
                    {"body", BUS_VAL_MAP}};
    bus_val_t *field[sizeof(required) / sizeof(required[0])];
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        why = s_require(tree, required[i].key, required[i].type, &field[i]);
        if (why != BUS_REJ_NONE)
            return s_reject(&tree, stats, reason, why);
    }
    int64_t v, seq, ts;
    size_t type_len, id_len;
    bus_val_get_int(field[0], &v);
    const char *type = bus_val_get_str(field[1], &type_len);
    const char *id = bus_val_get_str(field[2], &id_len);
    size_t src_len;
    const char *src = bus_val_get_str(field[3], &src_len);
    bus_val_get_int(field[4], &seq);
    bus_val_get_int(field[5], &ts);
    if (v < 1 || v > BUS_MSG_VERSION || type_len == 0 || id_len == 0 || id_len > BUS_MSG_ID_LEN ||
        seq < 0 || ts < 0 || strlen(type) != type_len || strlen(id) != id_len ||
        strlen(src) != src_len) /* a NUL inside would cut the text C code sees */
        return s_reject(&tree, stats, reason, BUS_REJ_BAD_VALUE);

    bus_msg_t *self = calloc(1, sizeof(*self));
    if (!self)
        return s_reject(&tree, stats, reason, BUS_REJ_OVERSIZE);
    self->v = v;
    self->type = strdup(type);
    self->src = strdup(src);
    memcpy(self->id, id, id_len + 1);
    self->seq = seq;
    self->ts = ts;
    self->body = bus__val_map_take(tree, "body"); /* moved, not copied */
    bus_val_destroy(&tree);
    if (!self->type || !self->src || !self->body) {
        bus_msg_destroy(&self);
        if (stats)
            stats->rejected[BUS_REJ_OVERSIZE]++;
        if (reason)
            *reason = BUS_REJ_OVERSIZE;
        return NULL;
    }
    if (stats)
        stats->accepted++;
    if (reason)
        *reason = BUS_REJ_NONE;
    return self;
}

int bus_msg_to_json(const bus_msg_t *self, bus_buf_t *buf)
{
    char head[96];
    bus_val_t *t = bus_val_new_str(self->type);
    bus_val_t *s = bus_val_new_str(self->src);
    int rc = -1;
    if (!t || !s)
        goto out_free;
    int n = snprintf(head, sizeof(head), "{\"v\":%lld,\"type\":", (long long)self->v);
    if (bus_buf_append(buf, head, (size_t)n) != 0 || bus_val_to_json(t, buf) != 0)
        goto out_free;
    n = snprintf(head, sizeof(head), ",\"id\":\"%s\",\"src\":", self->id);
    if (bus_buf_append(buf, head, (size_t)n) != 0 || bus_val_to_json(s, buf) != 0)
        goto out_free;
    n = snprintf(head, sizeof(head), ",\"seq\":%lld,\"ts\":%lld,\"body\":", (long long)self->seq,
                 (long long)self->ts);
    if (bus_buf_append(buf, head, (size_t)n) != 0 || bus_val_to_json(self->body, buf) != 0 ||
        bus_buf_append(buf, "}", 1) != 0)
        goto out_free;
    rc = 0;
out_free:
    bus_val_destroy(&t);
    bus_val_destroy(&s);
    return rc;
}
