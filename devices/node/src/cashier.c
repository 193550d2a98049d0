/*  =========================================================================
    cashier.c - PIN hashes (scrypt, OpenSSL), permissions and the till session

    A PIN has 4-8 digits: at most 10^8 candidates, so a stolen table of
    hashes falls to brute force whatever the hash. What a slow, salted,
    memory-hard hash buys is cost per guess and per table (no precomputed
    tables, every cashier attacked separately); what protects the live
    register is the lockout. scrypt with N = 2^13, r = 8, p = 1 takes 8 MiB
    and about 45 ms on the build host (docs/cashier.md): slow enough
    to make a brute force of one cashier cost ~50 core-days at 8 digits,
    fast enough that a login or an approval at the till is not felt.

    The parameters are written into every hash, so they can be raised later
    without invalidating the PINs already issued; verify bounds them, since
    a hash string arrives in configuration and must not make the register
    allocate gigabytes.

    The cashier table is small (a store's staff), so it is an array searched
    linearly; lockout counters live beside each row and survive a reload.
    =========================================================================
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "node/cashier.h"

#define S_SCRYPT_LOG2_N  13 /* N = 8192: with r = 8, 8 MiB and ~45 ms per hash */
#define S_SCRYPT_R       8
#define S_SCRYPT_P       1
#define S_SALT_BYTES     16
#define S_HASH_BYTES     32
#define S_MAX_LOG2_N     20 /* bounds for hashes read from configuration */
#define S_MAX_R          32
#define S_MAX_P          4
#define S_MAX_MEM        (64ull << 20)            /* 128 * N * r at most this */
#define S_MAXMEM_OPENSSL (S_MAX_MEM + (1u << 20)) /* headroom for OpenSSL's own accounting */
#define S_MIN_SALT       8
#define S_MAX_BYTES      64 /* salt and hash at most */
#define S_PREFIX         "scrypt$"
#define S_DUMMY_PIN      "00000000"

typedef struct {
    uint64_t n, r, p;
    uint8_t salt[S_MAX_BYTES];
    size_t salt_len;
    uint8_t hash[S_MAX_BYTES];
    size_t hash_len;
} s_params_t;

typedef struct {
    node_cashier_t rec;
    uint32_t perms;       /* effective: the mask or the role's defaults */
    int fails;            /* wrong PINs since the last success or lock */
    int64_t locked_until; /* clock ms; 0: not locked */
} s_entry_t;

struct node_session_t {
    s_entry_t *table;
    size_t count;
    long current; /* index of the logged-in cashier, -1: nobody */
    node_clock_fn clock;
    void *clock_arg;
    char dummy[NODE_PIN_HASH_MAX]; /* unknown ids are checked against this */
    char errstr[NODE_CASHIER_REASON_MAX];
};

static const char *const s_role_names[NODE_ROLE__COUNT] = {"cashier", "supervisor", "manager"};

static const char *const s_action_names[NODE_ACTION__COUNT] = {
    "void_line", "return",   "price_override", "discount_over_cap",
    "no_sale",   "x_report", "z_report",       "refund_cash"};

/*  Defaults: a cashier sells and asks; a supervisor runs the floor but does not close the day;
    a manager does everything. Configuration may give any cashier its own mask. */
static const uint32_t s_role_perms[NODE_ROLE__COUNT] = {
    0,
    NODE_PERM(NODE_ACTION_VOID_LINE) | NODE_PERM(NODE_ACTION_RETURN) |
        NODE_PERM(NODE_ACTION_PRICE_OVERRIDE) | NODE_PERM(NODE_ACTION_DISCOUNT_OVER_CAP) |
        NODE_PERM(NODE_ACTION_NO_SALE) | NODE_PERM(NODE_ACTION_X_REPORT) |
        NODE_PERM(NODE_ACTION_REFUND_CASH),
    NODE_PERM_ALL,
};

const char *node_pin_check(const char *pin)
{
    if (!pin)
        return "no PIN given";
    size_t len = 0;
    for (; pin[len]; len++) {
        if (pin[len] < '0' || pin[len] > '9')
            return "a PIN has digits only";
        if (len >= NODE_PIN_MAX_DIGITS)
            return "a PIN has at most 8 digits";
    }
    if (len < NODE_PIN_MIN_DIGITS)
        return "a PIN has at least 4 digits";
    return NULL;
}

/*  scrypt of pin with p's parameters and salt into key (key_len bytes). 0 or -1. */
static int s_derive(const char *pin, const s_params_t *p, uint8_t *key, size_t key_len)
{
    int ok = EVP_PBE_scrypt(pin, strlen(pin), p->salt, p->salt_len, p->n, p->r, p->p,
                            S_MAXMEM_OPENSSL, key, key_len);
    ERR_clear_error();
    return ok == 1 ? 0 : -1;
}

/*  Read decimal digits up to the next '$' at *s (no sign, no spaces, no leading zero) into
 *out, at most max; move *s past the '$'. false if malformed. */
static bool s_parse_uint(const char **s, uint64_t max, uint64_t *out)
{
    const char *c = *s;
    uint64_t v = 0;
    if (*c < '1' || *c > '9')
        return false;
    for (; *c >= '0' && *c <= '9'; c++) {
        v = v * 10 + (uint64_t)(*c - '0');
        if (v > max)
            return false;
    }
    if (*c != '$')
        return false;
    *out = v;
    *s = c + 1;
    return true;
}

/*  Decode len characters of padded base64 at src into out (cap bytes, at most S_MAX_BYTES).
    The byte count, or -1 if malformed, too long or not in canonical form (EVP_DecodeBlock
    skips spaces and ignores the unused low bits of the last character: one hash would have
    many spellings). */
static long s_b64_decode(const char *src, size_t len, uint8_t *out, size_t cap)
{
    char again[S_MAX_BYTES / 3 * 4 + 8];
    if (len < 4 || len % 4 != 0 || len / 4 * 3 > cap || cap > S_MAX_BYTES)
        return -1;
    size_t pad = (src[len - 1] == '=') + (src[len - 2] == '=');
    int n = EVP_DecodeBlock(out, (const unsigned char *)src, (int)len);
    if (n < (int)pad)
        return -1;
    n -= (int)pad;
    if (EVP_EncodeBlock((unsigned char *)again, out, n) != (int)len || memcmp(again, src, len) != 0)
        return -1;
    return n;
}

/*  Parse a stored hash string into p. false if it is not one this library can check. */
static bool s_parse(const char *stored, s_params_t *p)
{
    if (!stored || strncmp(stored, S_PREFIX, strlen(S_PREFIX)) != 0 ||
        strnlen(stored, NODE_PIN_HASH_MAX) >= NODE_PIN_HASH_MAX)
        return false;
    const char *s = stored + strlen(S_PREFIX);
    if (!s_parse_uint(&s, 1ull << S_MAX_LOG2_N, &p->n) || !s_parse_uint(&s, S_MAX_R, &p->r) ||
        !s_parse_uint(&s, S_MAX_P, &p->p))
        return false;
    if (p->n < 2 || (p->n & (p->n - 1)) != 0 || 128 * p->n * p->r > S_MAX_MEM)
        return false;
    const char *dollar = strchr(s, '$');
    if (!dollar)
        return false;
    long salt_len = s_b64_decode(s, (size_t)(dollar - s), p->salt, sizeof(p->salt));
    long hash_len = s_b64_decode(dollar + 1, strlen(dollar + 1), p->hash, sizeof(p->hash));
    /* The hash length is fixed: scrypt's output is a prefix of its longer output, so a
       truncated hash would still verify, with fewer bits to guess. */
    if (salt_len < S_MIN_SALT || hash_len != S_HASH_BYTES)
        return false;
    p->salt_len = (size_t)salt_len;
    p->hash_len = (size_t)hash_len;
    return true;
}

int node_pin_hash(const char *pin, char *out, size_t size)
{
    if (node_pin_check(pin)) {
        errno = EINVAL;
        return -1;
    }
    s_params_t p = {.n = 1ull << S_SCRYPT_LOG2_N, .r = S_SCRYPT_R, .p = S_SCRYPT_P};
    p.salt_len = S_SALT_BYTES;
    uint8_t key[S_HASH_BYTES];
    char salt64[S_MAX_BYTES], key64[S_MAX_BYTES];
    if (RAND_bytes(p.salt, S_SALT_BYTES) != 1 || s_derive(pin, &p, key, sizeof(key)) != 0) {
        ERR_clear_error();
        OPENSSL_cleanse(key, sizeof(key));
        errno = EIO;
        return -1;
    }
    EVP_EncodeBlock((unsigned char *)salt64, p.salt, S_SALT_BYTES);
    EVP_EncodeBlock((unsigned char *)key64, key, sizeof(key));
    OPENSSL_cleanse(key, sizeof(key));
    int len = snprintf(out, size, S_PREFIX "%llu$%llu$%llu$%s$%s", (unsigned long long)p.n,
                       (unsigned long long)p.r, (unsigned long long)p.p, salt64, key64);
    OPENSSL_cleanse(key64, sizeof(key64));
    if (len < 0 || (size_t)len >= size) {
        if (size)
            OPENSSL_cleanse(out, size);
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

bool node_pin_hash_valid(const char *stored)
{
    s_params_t p;
    return s_parse(stored, &p);
}

bool node_pin_verify(const char *pin, const char *stored)
{
    s_params_t p;
    if (node_pin_check(pin) || !s_parse(stored, &p))
        return false;
    uint8_t key[S_MAX_BYTES];
    bool ok =
        s_derive(pin, &p, key, p.hash_len) == 0 && CRYPTO_memcmp(key, p.hash, p.hash_len) == 0;
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(&p, sizeof(p));
    return ok;
}

const char *node_role_name(node_role_t role)
{
    return (unsigned)role < NODE_ROLE__COUNT ? s_role_names[role] : NULL;
}

int node_role_from_name(const char *name)
{
    for (int i = 0; name && i < NODE_ROLE__COUNT; i++)
        if (strcmp(name, s_role_names[i]) == 0)
            return i;
    return -1;
}

const char *node_action_name(node_action_t action)
{
    return (unsigned)action < NODE_ACTION__COUNT ? s_action_names[action] : NULL;
}

int node_action_from_name(const char *name)
{
    for (int i = 0; name && i < NODE_ACTION__COUNT; i++)
        if (strcmp(name, s_action_names[i]) == 0)
            return i;
    return -1;
}

uint32_t node_role_permissions(node_role_t role)
{
    return (unsigned)role < NODE_ROLE__COUNT ? s_role_perms[role] : 0;
}

uint32_t node_cashier_permissions(const node_cashier_t *cashier)
{
    return cashier->permissions == NODE_PERM_ROLE ? node_role_permissions(cashier->role)
                                                  : cashier->permissions & NODE_PERM_ALL;
}

static int64_t s_monotonic_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Set the reason and errno; -1 for the caller to return. */
static int s_error(node_session_t *self, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->errstr, sizeof(self->errstr), fmt, ap);
    va_end(ap);
    errno = err;
    return -1;
}

node_session_t *node_session_new(node_clock_fn clock, void *clock_arg)
{
    node_session_t *self = calloc(1, sizeof(*self));
    if (!self) {
        errno = ENOMEM;
        return NULL;
    }
    self->current = -1;
    self->clock = clock ? clock : s_monotonic_ms;
    self->clock_arg = clock_arg;
    if (node_pin_hash(S_DUMMY_PIN, self->dummy, sizeof(self->dummy)) != 0) {
        int saved = errno;
        free(self);
        errno = saved;
        return NULL;
    }
    return self;
}

void node_session_destroy(node_session_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_session_t *self = *self_p;
    if (self->table) {
        OPENSSL_cleanse(self->table, self->count * sizeof(*self->table));
        free(self->table);
    }
    free(self);
    *self_p = NULL;
}

static bool s_valid_id(const char *id)
{
    size_t len = strnlen(id, NODE_CASHIER_ID_MAX + 1);
    if (len == 0 || len > NODE_CASHIER_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

static bool s_valid_name(const char *name)
{
    size_t len = strnlen(name, NODE_CASHIER_NAME_MAX + 1);
    if (len == 0 || len > NODE_CASHIER_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return false;
    return true;
}

static long s_find(const s_entry_t *table, size_t count, const char *id)
{
    for (size_t i = 0; id && i < count; i++)
        if (strcmp(table[i].rec.id, id) == 0)
            return (long)i;
    return -1;
}

int node_session_load(node_session_t *self, const node_cashier_t *cashiers, size_t count)
{
    if (count > NODE_CASHIER_TABLE_MAX)
        return s_error(self, EINVAL, "more than %d cashiers", NODE_CASHIER_TABLE_MAX);
    for (size_t i = 0; i < count; i++) {
        const node_cashier_t *c = &cashiers[i];
        if (!s_valid_id(c->id))
            return s_error(self, EINVAL, "cashier #%zu: the id is not 1-16 [A-Za-z0-9_]", i + 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(cashiers[j].id, c->id) == 0)
                return s_error(self, EINVAL, "cashier %s is listed twice", c->id);
        if (!s_valid_name(c->name))
            return s_error(self, EINVAL, "cashier %s: bad name (1-64 bytes, no controls)", c->id);
        if ((unsigned)c->role >= NODE_ROLE__COUNT)
            return s_error(self, EINVAL, "cashier %s: no such role", c->id);
        if (c->permissions != NODE_PERM_ROLE && (c->permissions & ~NODE_PERM_ALL))
            return s_error(self, EINVAL, "cashier %s: unknown permission bits", c->id);
        if (!node_pin_hash_valid(c->pin_hash))
            return s_error(self, EINVAL, "cashier %s: the PIN hash is malformed", c->id);
    }
    s_entry_t *table = calloc(count ? count : 1, sizeof(*table));
    if (!table)
        return s_error(self, ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        table[i].rec = cashiers[i];
        table[i].perms = node_cashier_permissions(&cashiers[i]);
        long old = s_find(self->table, self->count, cashiers[i].id);
        if (old >= 0) {
            table[i].fails = self->table[old].fails;
            table[i].locked_until = self->table[old].locked_until;
        }
    }
    long current = -1;
    if (self->current >= 0) {
        current = s_find(table, count, self->table[self->current].rec.id);
        if (current >= 0 && !table[current].rec.active)
            current = -1;
    }
    if (self->table) {
        OPENSSL_cleanse(self->table, self->count * sizeof(*self->table));
        free(self->table);
    }
    self->table = table;
    self->count = count;
    self->current = current;
    return 0;
}

/*  Whether e is locked at now; a lock whose time is over is lifted. */
static bool s_locked(s_entry_t *e, int64_t now)
{
    if (e->locked_until && now >= e->locked_until)
        e->locked_until = 0;
    return e->locked_until != 0;
}

/*  Count a wrong PIN for e; the last allowed one locks it. */
static void s_count_failure(s_entry_t *e, int64_t now)
{
    if (++e->fails >= NODE_CASHIER_MAX_FAILS) {
        e->fails = 0;
        e->locked_until = now + NODE_CASHIER_LOCKOUT_MS;
        if (e->locked_until == 0)
            e->locked_until = 1;
    }
}

static int s_locked_error(node_session_t *self, const s_entry_t *e, int64_t now)
{
    return s_error(self, EAGAIN, "cashier %s is locked out for %lld more seconds", e->rec.id,
                   (long long)((e->locked_until - now + 999) / 1000));
}

int node_session_login(node_session_t *self, const char *id, const char *pin)
{
    if (self->current >= 0)
        return s_error(self, EBUSY, "cashier %s is logged in; log out first",
                       self->table[self->current].rec.id);
    int64_t now = self->clock(self->clock_arg);
    long i = s_find(self->table, self->count, id);
    if (i < 0) {
        node_pin_verify(pin, self->dummy);
        return s_error(self, ENOENT, "wrong id or PIN");
    }
    s_entry_t *e = &self->table[i];
    if (s_locked(e, now))
        return s_locked_error(self, e, now);
    if (!e->rec.active)
        return s_error(self, EPERM, "cashier %s is disabled", e->rec.id);
    if (!node_pin_verify(pin, e->rec.pin_hash)) {
        s_count_failure(e, now);
        return s_error(self, EACCES, "wrong id or PIN");
    }
    e->fails = 0;
    self->current = i;
    return 0;
}

int node_session_logout(node_session_t *self)
{
    if (self->current < 0)
        return s_error(self, ENOENT, "nobody is logged in");
    self->current = -1;
    return 0;
}

const node_cashier_t *node_session_cashier(const node_session_t *self)
{
    return self->current >= 0 ? &self->table[self->current].rec : NULL;
}

/*  Refuse: the reason goes to the audit record too. */
static int s_refuse(node_session_t *self, node_audit_t *audit, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->errstr, sizeof(self->errstr), fmt, ap);
    va_end(ap);
    snprintf(audit->reason, sizeof(audit->reason), "%s", self->errstr);
    audit->approved = false;
    errno = err;
    return -1;
}

int node_session_authorize(node_session_t *self, node_action_t action, const char *approver_id,
                           const char *approver_pin, node_audit_t *audit)
{
    node_audit_t scratch;
    if (!audit)
        audit = &scratch;
    memset(audit, 0, sizeof(*audit));
    audit->action = action;
    if ((unsigned)action >= NODE_ACTION__COUNT)
        return s_refuse(self, audit, EINVAL, "no such action");
    if (self->current < 0)
        return s_refuse(self, audit, ENOENT, "nobody is logged in");
    const char *name = s_action_names[action];
    const s_entry_t *cashier = &self->table[self->current];
    snprintf(audit->cashier_id, sizeof(audit->cashier_id), "%s", cashier->rec.id);
    snprintf(audit->cashier_name, sizeof(audit->cashier_name), "%s", cashier->rec.name);
    if (cashier->perms & NODE_PERM(action)) {
        snprintf(audit->reason, sizeof(audit->reason), "permitted");
        audit->approved = true;
        return 0;
    }
    if (!approver_id || !*approver_id)
        return s_refuse(self, audit, EACCES, "%s needs a supervisor's approval", name);
    int64_t now = self->clock(self->clock_arg);
    long i = s_find(self->table, self->count, approver_id);
    if (i < 0) {
        node_pin_verify(approver_pin, self->dummy);
        return s_refuse(self, audit, EACCES, "wrong approver id or PIN");
    }
    s_entry_t *approver = &self->table[i];
    snprintf(audit->approver_id, sizeof(audit->approver_id), "%s", approver->rec.id);
    snprintf(audit->approver_name, sizeof(audit->approver_name), "%s", approver->rec.name);
    if (i == self->current)
        return s_refuse(self, audit, EACCES, "a cashier cannot approve their own %s", name);
    if (s_locked(approver, now)) {
        s_locked_error(self, approver, now);
        return s_refuse(self, audit, EAGAIN, "%s", self->errstr);
    }
    if (!approver->rec.active)
        return s_refuse(self, audit, EACCES, "approver %s is disabled", approver->rec.id);
    if (approver->rec.role < NODE_ROLE_SUPERVISOR || approver->rec.role < cashier->rec.role ||
        !(approver->perms & NODE_PERM(action)))
        return s_refuse(self, audit, EACCES, "%s %s may not approve %s",
                        s_role_names[approver->rec.role], approver->rec.id, name);
    if (!node_pin_verify(approver_pin, approver->rec.pin_hash)) {
        s_count_failure(approver, now);
        return s_refuse(self, audit, EACCES, "wrong approver id or PIN");
    }
    approver->fails = 0;
    snprintf(audit->reason, sizeof(audit->reason), "approved by %s",
             s_role_names[approver->rec.role]);
    audit->approved = true;
    return 0;
}

bool node_session_locked(const node_session_t *self, const char *id, int64_t *until)
{
    long i = s_find(self->table, self->count, id);
    int64_t now = self->clock(self->clock_arg);
    bool locked = i >= 0 && self->table[i].locked_until && now < self->table[i].locked_until;
    if (until)
        *until = locked ? self->table[i].locked_until : 0;
    return locked;
}

const char *node_session_errstr(const node_session_t *self)
{
    return self->errstr;
}

bus_val_t *node_audit_val(const node_audit_t *audit)
{
    bus_val_t *map = bus_val_new_map();
    const char *action = node_action_name(audit->action);
    if (!map)
        return NULL;
    bool approver = audit->approver_id[0] != '\0';
    if (bus_val_map_set_str(map, "type", "audit") != 0 ||
        bus_val_map_set_str(map, "action", action ? action : "unknown") != 0 ||
        bus_val_map_set_str(map, "cashier", audit->cashier_id) != 0 ||
        bus_val_map_set_str(map, "cashier_name", audit->cashier_name) != 0 ||
        (approver && (bus_val_map_set_str(map, "approver", audit->approver_id) != 0 ||
                      bus_val_map_set_str(map, "approver_name", audit->approver_name) != 0)) ||
        bus_val_map_set_bool(map, "approved", audit->approved) != 0 ||
        bus_val_map_set_str(map, "reason", audit->reason) != 0)
        bus_val_destroy(&map);
    return map;
}
