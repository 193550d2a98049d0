/*  =========================================================================
    bus/val.h - typed values and their MessagePack codec

    Message bodies are small trees of maps, arrays, strings, binary blobs,
    int64 and bool. Services build and read them through this API and never
    touch msgpack-c. The decoder is strict on purpose: input comes from the
    network, so every length is checked against the bytes that remain before
    anything is allocated, nesting depth and total size are bounded, floats
    and extension types are refused (no floating point near money), map keys
    must be strings and may not repeat. A rejection says why (bus_reject_t),
    so callers can count rejections by reason.

    Unsigned integers above INT64_MAX are refused: every integer in posbus
    fits int64 (money in fen, sequences, milliseconds).

    Threads: values are not thread-safe; a tree has one owner at a time,
    and a thread that hands a tree to another stops using it. Reading a
    tree that no thread is changing (getters, lookups, iteration, equal,
    encode, to_json) is safe from several threads at once, because reading
    never modifies a value. Creating, decoding and destroying separate trees
    is safe from any thread.
    =========================================================================
*/
#ifndef BUS_VAL_H_INCLUDED
#define BUS_VAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BUS_VAL_NIL = 0,
    BUS_VAL_BOOL,
    BUS_VAL_INT,
    BUS_VAL_STR,
    BUS_VAL_BIN,
    BUS_VAL_ARR,
    BUS_VAL_MAP
} bus_val_type_t;

/* Why a payload was refused. Stable names (bus_reject_name) are used as counter names. */
typedef enum {
    BUS_REJ_NONE = 0,
    BUS_REJ_OVERSIZE,    /* "oversize": payload larger than the limit */
    BUS_REJ_TRUNCATED,   /* "truncated": ends inside a value */
    BUS_REJ_MALFORMED,   /* "malformed": reserved byte 0xc1, bad lengths */
    BUS_REJ_TOO_DEEP,    /* "too_deep": nesting beyond the limit */
    BUS_REJ_UNSUPPORTED, /* "unsupported": float, ext or uint64 > INT64_MAX */
    BUS_REJ_BAD_KEY,     /* "bad_key": map key not a string, or repeated */
    BUS_REJ_TRAILING,    /* "trailing": bytes after the top-level value */
    BUS_REJ_NOT_MAP,     /* "not_map": envelope is not a map */
    BUS_REJ_MISSING,     /* "missing_key": a required envelope key is absent */
    BUS_REJ_WRONG_TYPE,  /* "wrong_type": a required envelope key has the wrong type */
    BUS_REJ_BAD_VALUE,   /* "bad_value": right type, value out of range (v, empty type...) */
    BUS_REJ__COUNT
} bus_reject_t;

const char *bus_reject_name(bus_reject_t reason);

/* Limits on decoding. Zero fields take the defaults. */
typedef struct bus_limits {
    size_t max_size; /* bytes; default BUS_DEFAULT_MAX_SIZE */
    int max_depth;   /* nesting levels, top-level container = 1; default BUS_DEFAULT_MAX_DEPTH */
} bus_limits_t;

#define BUS_DEFAULT_MAX_SIZE  (1024 * 1024)
#define BUS_DEFAULT_MAX_DEPTH 16

/* A growable byte buffer that encoders append to. Zero-initialise, reuse, free with bus_buf_free.
 */
typedef struct bus_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} bus_buf_t;

int bus_buf_append(bus_buf_t *buf, const void *data, size_t len); /* -1 on allocation failure */
void bus_buf_reset(bus_buf_t *buf);                               /* len = 0, keeps memory */
void bus_buf_free(bus_buf_t *buf);

typedef struct bus_val bus_val_t;

/* Constructors return NULL only on allocation failure. Strings are copied; they may hold any
   bytes (length given) but bus_val_new_str takes a NUL-terminated C string. */
bus_val_t *bus_val_new_nil(void);
bus_val_t *bus_val_new_bool(bool b);
bus_val_t *bus_val_new_int(int64_t i);
bus_val_t *bus_val_new_str(const char *s);
bus_val_t *bus_val_new_strn(const char *s, size_t len);
bus_val_t *bus_val_new_bin(const void *data, size_t len);
bus_val_t *bus_val_new_arr(void);
bus_val_t *bus_val_new_map(void);
bus_val_t *bus_val_dup(const bus_val_t *self);
void bus_val_destroy(bus_val_t **self_p);

bus_val_type_t bus_val_type(const bus_val_t *self);
/* Elements of an array or map, bytes of a string or bin, 0 otherwise. */
size_t bus_val_size(const bus_val_t *self);

/* Scalar getters: false if self is NULL or of another type. */
bool bus_val_get_bool(const bus_val_t *self, bool *out);
bool bus_val_get_int(const bus_val_t *self, int64_t *out);
/* String/bin bytes (always NUL-terminated for convenience); NULL if not a str (resp. bin). */
const char *bus_val_get_str(const bus_val_t *self, size_t *len);
const void *bus_val_get_bin(const bus_val_t *self, size_t *len);

/* Arrays. push takes ownership of *item_p and nulls it (also on failure, where it is destroyed). */
int bus_val_arr_push(bus_val_t *self, bus_val_t **item_p);
bus_val_t *bus_val_arr_get(const bus_val_t *self, size_t index); /* borrowed; NULL out of range */

/* Maps keep insertion order. set takes ownership of *val_p (destroyed on failure) and replaces an
   existing key in place. get returns a borrowed pointer or NULL when absent or self is no map.
   set and get take constant expected time at any size (maps of 32 keys or more are hash-indexed),
   so building or reading a map of n keys is linear in n. */
int bus_val_map_set(bus_val_t *self, const char *key, bus_val_t **val_p);
int bus_val_map_set_int(bus_val_t *self, const char *key, int64_t i);
int bus_val_map_set_str(bus_val_t *self, const char *key, const char *s);
int bus_val_map_set_bool(bus_val_t *self, const char *key, bool b);
bus_val_t *bus_val_map_get(const bus_val_t *self, const char *key);
bool bus_val_map_get_int(const bus_val_t *self, const char *key, int64_t *out);
bool bus_val_map_get_bool(const bus_val_t *self, const char *key, bool *out);
const char *bus_val_map_get_str(const bus_val_t *self,
                                const char *key); /* NULL if absent/not str */
/* Iteration by position: key and value of entry index (borrowed), NULL out of range. */
const char *bus_val_map_key(const bus_val_t *self, size_t index);
bus_val_t *bus_val_map_value(const bus_val_t *self, size_t index);
/* The values under names[0..n) (borrowed; NULL when absent or self is not a map), in one pass
   over self: cheaper than n lookups when a small map is read field by field. */
void bus_val_map_pick(const bus_val_t *self, const char *const *names, int n,
                      const bus_val_t **out);

/* Deep equality (map order ignored). */
bool bus_val_equal(const bus_val_t *a, const bus_val_t *b);

/* Append the MessagePack encoding of self to buf. 0 ok, -1 on allocation failure. */
int bus_val_encode(const bus_val_t *self, bus_buf_t *buf);

/* Decode exactly one MessagePack value filling [data, data+len). Returns a new tree or NULL with
 *reason set (reason may be NULL). limits may be NULL for defaults. Never reads past len. */
bus_val_t *bus_val_decode(const void *data, size_t len, const bus_limits_t *limits,
                          bus_reject_t *reason);

/* Render as one line of JSON into buf (NUL-terminated; bin as base64 string "base64:..."),
   strings escaped; invalid UTF-8 bytes as \ufffd. For posctl tail and logs. -1 on alloc failure. */
int bus_val_to_json(const bus_val_t *self, bus_buf_t *buf);

#ifdef __cplusplus
}
#endif
#endif
