/*  =========================================================================
    journal.c - a register's append-only, hash-chained, signed journal

    Why it looks like this. A register sells a few thousand tickets a day
    and must never lose or double one, whatever happens to its power, its
    disk or its process. So a record is appended with one pwrite() and made
    durable with fdatasync() before append returns: there is no buffering to
    lose, and the cost (about a millisecond on an ordinary SSD) is paid once
    per ticket, far below a cashier's pace. Sequence numbers are gap-free so
    that the back office can tell from a number alone that something is
    missing; the SHA-256 chain and the Ed25519 signature make every removal,
    insertion, reordering or edit visible to anyone holding the register's
    public key, without trusting the register's disk or the back office.

    Records are self-delimiting (a fixed 60-byte head with the payload
    length, the payload, a 64-byte signature; docs/journal.md has the bytes),
    so the file is read front to back without an index, and an in-memory
    array of record offsets (8 bytes a record) serves reads for resends.

    A crash can interrupt only the last append, because each append is
    durable before the next begins: whatever is wrong with the LAST record
    (the file ends inside it; it is whole but does not verify; garbage or
    zeros after the last good record) is a torn tail, and nothing good can
    follow it. That is the test open() applies: it looks for any record that
    verifies after the bad one (scanning for the magic), and only if there is
    none does it cut the tail off, after copying the bytes to PATH.torn so
    that even then nothing is destroyed. A damaged length field in the
    middle of the file would otherwise look like a torn tail and take good
    records with it; this way it is refused and named instead.

    Bounds: a payload is at most NODE_JOURNAL_PAYLOAD_MAX bytes, checked
    before anything is allocated, so no length read from disk can make the
    reader allocate more than one maximal record.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "node/file.h"
#include "node/journal.h"

#define S_MAGIC       "PBJR" /* posbus journal record */
#define S_MAGIC_SIZE  4
#define S_VERSION     1
#define S_HEAD_SIZE   60 /* magic, version, kind, flags, length, seq, ts, previous hash */
#define S_SIG_SIZE    NODE_KEY_SIGNATURE_SIZE
#define S_KEY_ED25519 1     /* key type byte of the header record */
#define S_CHUNK       65536 /* bytes read at a time when copying or scanning a tail */
#define S_OFFSETS_MIN 1024  /* first size of the offsets array */
#define S_TORN_SUFFIX ".torn"
#define S_NEW_SUFFIX  ".new"

/* Offsets of the head's fields. */
#define S_AT_VERSION 4
#define S_AT_KIND    5
#define S_AT_FLAGS   6
#define S_AT_LENGTH  8
#define S_AT_SEQ     12
#define S_AT_TS      20
#define S_AT_PREV    28

typedef struct {
    uint8_t *data;
    size_t cap;
} s_buf_t;

/* A record loaded into a buffer; the pointers point into it. */
typedef struct {
    uint8_t kind;
    uint32_t len;
    uint64_t seq;
    int64_t ts;
    const uint8_t *prev;
    const uint8_t *payload;
    const uint8_t *sig;
    size_t size; /* of the whole record */
} s_rec_t;

typedef enum { S_LOAD_OK, S_LOAD_BAD, S_LOAD_SHORT, S_LOAD_ERROR } s_load_t;

/* What a scan of a whole file found besides the status. */
typedef struct {
    node_key_t *key; /* from the header, owned */
    bool key_mismatch;
    uint8_t last_hash[NODE_JOURNAL_HASH_SIZE];
    uint64_t *offsets; /* offsets[seq], when collect */
    size_t noffsets, capoffsets;
    bool collect;
} s_scan_t;

struct node_journal_t {
    char *path;
    int fd;
    const node_key_t *key; /* borrowed */
    uint64_t size;         /* bytes of whole records: where the next one goes */
    uint64_t last_seq;
    uint8_t last_hash[NODE_JOURNAL_HASH_SIZE];
    uint64_t *offsets; /* offsets[seq] for 0..last_seq */
    size_t capoffsets;
    bool broken; /* a failed fdatasync or cut: the disk's state is unknown */
    s_buf_t buf;
    char err[NODE_JOURNAL_REASON_MAX];
};

static void s_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void s_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void s_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint16_t s_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t s_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t s_get64(const uint8_t *p)
{
    return ((uint64_t)s_get32(p) << 32) | s_get32(p + 4);
}

static bool s_valid_id(const char *id, size_t len)
{
    if (len < 1 || len > NODE_JOURNAL_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

static int s_buf_reserve(s_buf_t *buf, size_t size)
{
    if (size <= buf->cap)
        return 0;
    uint8_t *data = realloc(buf->data, size);
    if (!data) {
        errno = ENOMEM;
        return -1;
    }
    buf->data = data;
    buf->cap = size;
    return 0;
}

static void s_buf_free(s_buf_t *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->cap = 0;
}

/*  Read exactly len bytes at off. 0, or -1 with errno (EIO when the file is shorter). */
static int s_pread_all(int fd, void *dest, size_t len, uint64_t off)
{
    uint8_t *p = dest;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/*  Write exactly len bytes at off. 0, or -1 with errno. */
static int s_pwrite_all(int fd, const void *src, size_t len, uint64_t off)
{
    const uint8_t *p = src;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/*  Load the record at off of a file of file_size bytes into buf. S_LOAD_SHORT when the file
    ends inside it, S_LOAD_BAD when no well-formed record starts there (why says which),
    S_LOAD_ERROR with errno on a read error. */
static s_load_t s_load(int fd, uint64_t off, uint64_t file_size, s_buf_t *buf, s_rec_t *rec,
                       char *why, size_t why_size)
{
    uint64_t left = file_size - off;
    if (left < S_HEAD_SIZE) {
        snprintf(why, why_size, "file ends %" PRIu64 " bytes into a record head of %d bytes", left,
                 S_HEAD_SIZE);
        return S_LOAD_SHORT;
    }
    if (s_buf_reserve(buf, S_HEAD_SIZE) != 0 || s_pread_all(fd, buf->data, S_HEAD_SIZE, off) != 0)
        return S_LOAD_ERROR;
    const uint8_t *h = buf->data;
    if (memcmp(h, S_MAGIC, S_MAGIC_SIZE) != 0) {
        snprintf(why, why_size, "no record starts here (bad magic)");
        return S_LOAD_BAD;
    }
    if (h[S_AT_VERSION] != S_VERSION) {
        snprintf(why, why_size, "format version %u, expected %d", h[S_AT_VERSION], S_VERSION);
        return S_LOAD_BAD;
    }
    if (s_get16(h + S_AT_FLAGS) != 0) {
        snprintf(why, why_size, "reserved flags 0x%04x are not zero", s_get16(h + S_AT_FLAGS));
        return S_LOAD_BAD;
    }
    rec->kind = h[S_AT_KIND];
    rec->len = s_get32(h + S_AT_LENGTH);
    rec->seq = s_get64(h + S_AT_SEQ);
    rec->ts = (int64_t)s_get64(h + S_AT_TS);
    if (rec->len > NODE_JOURNAL_PAYLOAD_MAX) {
        snprintf(why, why_size, "payload length %" PRIu32 " exceeds the maximum %d", rec->len,
                 NODE_JOURNAL_PAYLOAD_MAX);
        return S_LOAD_BAD;
    }
    rec->size = S_HEAD_SIZE + (size_t)rec->len + S_SIG_SIZE;
    if (rec->size > left) {
        snprintf(why, why_size, "file ends %" PRIu64 " bytes into a record of %zu bytes", left,
                 rec->size);
        return S_LOAD_SHORT;
    }
    if (s_buf_reserve(buf, rec->size) != 0 ||
        s_pread_all(fd, buf->data + S_HEAD_SIZE, rec->size - S_HEAD_SIZE, off + S_HEAD_SIZE) != 0)
        return S_LOAD_ERROR;
    rec->prev = buf->data + S_AT_PREV;
    rec->payload = buf->data + S_HEAD_SIZE;
    rec->sig = buf->data + S_HEAD_SIZE + rec->len;
    return S_LOAD_OK;
}

/*  Whether a record that verifies with key starts anywhere in [from, file_size). A read error
    counts as yes: a tail is cut only when it is certain that nothing good is in it. */
static bool s_later_record(int fd, uint64_t from, uint64_t file_size, const node_key_t *key)
{
    s_buf_t chunk = {0}, rbuf = {0};
    bool found = false;
    if (s_buf_reserve(&chunk, S_CHUNK) != 0)
        return true;
    for (uint64_t pos = from; !found && pos + S_HEAD_SIZE <= file_size;) {
        size_t n = file_size - pos < S_CHUNK ? (size_t)(file_size - pos) : S_CHUNK;
        if (s_pread_all(fd, chunk.data, n, pos) != 0) {
            found = true;
            break;
        }
        for (size_t i = 0; !found && i + S_MAGIC_SIZE <= n;) {
            uint8_t *hit = memmem(chunk.data + i, n - i, S_MAGIC, S_MAGIC_SIZE);
            if (!hit)
                break;
            i = (size_t)(hit - chunk.data);
            s_rec_t rec;
            char why[NODE_JOURNAL_REASON_MAX];
            s_load_t r = s_load(fd, pos + i, file_size, &rbuf, &rec, why, sizeof(why));
            found =
                r == S_LOAD_ERROR ||
                (r == S_LOAD_OK && node_key_verify(key, rbuf.data, rec.size - S_SIG_SIZE, rec.sig));
            i++;
        }
        if (pos + n >= file_size)
            break;
        pos += n - (S_MAGIC_SIZE - 1);
    }
    s_buf_free(&chunk);
    s_buf_free(&rbuf);
    return found;
}

static int s_fail(node_journal_status_t *status, uint64_t seq, uint64_t off, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(status->reason, sizeof(status->reason), fmt, args);
    va_end(args);
    status->bad = true;
    status->bad_seq = seq;
    status->bad_offset = off;
    return -1;
}

/*  Check the header record's payload and take the register and the key from it. */
static int s_parse_header(const s_rec_t *rec, uint8_t pub[NODE_KEY_PUBLIC_SIZE],
                          node_journal_status_t *status, char *why, size_t why_size)
{
    const uint8_t *p = rec->payload, *end = rec->payload + rec->len;
    if (rec->kind != NODE_JOURNAL_HEADER) {
        snprintf(why, why_size, "the first record is not a header (kind %u)", rec->kind);
        return -1;
    }
    if (end - p < 1 + NODE_KEY_PUBLIC_SIZE + 1 || *p != S_KEY_ED25519) {
        snprintf(why, why_size, "header: no Ed25519 key");
        return -1;
    }
    memcpy(pub, p + 1, NODE_KEY_PUBLIC_SIZE);
    p += 1 + NODE_KEY_PUBLIC_SIZE;
    char *ids[2] = {status->store, status->reg};
    for (int i = 0; i < 2; i++) {
        size_t len = p < end ? *p++ : 0;
        if (len > (size_t)(end - p) || !s_valid_id((const char *)p, len)) {
            snprintf(why, why_size, "header: bad %s id", i == 0 ? "store" : "register");
            status->store[0] = status->reg[0] = '\0';
            return -1;
        }
        memcpy(ids[i], p, len);
        ids[i][len] = '\0';
        p += len;
    }
    if (p != end) {
        snprintf(why, why_size, "header: %td bytes after the register id", end - p);
        status->store[0] = status->reg[0] = '\0';
        return -1;
    }
    return 0;
}

static int s_scan_push(s_scan_t *scan, uint64_t off)
{
    if (!scan->collect)
        return 0;
    if (scan->noffsets == scan->capoffsets) {
        size_t cap = scan->capoffsets ? scan->capoffsets * 2 : S_OFFSETS_MIN;
        uint64_t *offsets = realloc(scan->offsets, cap * sizeof(*offsets));
        if (!offsets)
            return -1;
        scan->offsets = offsets;
        scan->capoffsets = cap;
    }
    scan->offsets[scan->noffsets++] = off;
    return 0;
}

static void s_scan_free(s_scan_t *scan)
{
    node_key_destroy(&scan->key);
    free(scan->offsets);
    scan->offsets = NULL;
}

/*  Check the first file_size bytes of fd record by record; with expect (may be NULL), the
    header must carry that key. 0 if all are good; -1 with status naming the first bad record
    (status->error set on a read error), and status->torn when nothing good follows it. */
static int s_scan(int fd, uint64_t file_size, const node_key_t *expect, s_scan_t *scan,
                  node_journal_status_t *status)
{
    s_buf_t buf = {0};
    uint64_t off = 0, seq = 0;
    int rc = 0;
    memset(scan->last_hash, 0, sizeof(scan->last_hash));
    if (file_size == 0)
        return s_fail(status, 0, 0, "empty file: no header record");
    while (off < file_size && rc == 0) {
        s_rec_t rec;
        char why[NODE_JOURNAL_REASON_MAX];
        s_load_t r = s_load(fd, off, file_size, &buf, &rec, why, sizeof(why));
        if (r == S_LOAD_ERROR) {
            status->error = errno;
            rc = s_fail(status, seq, off, "cannot read: %s", strerror(errno));
        } else if (r != S_LOAD_OK)
            rc = s_fail(status, seq, off, "%s", why);
        else if (rec.seq != seq)
            rc = s_fail(status, seq, off,
                        "seq %" PRIu64 " found where %" PRIu64
                        " belongs (a record missing, repeated or out of place)",
                        rec.seq, seq);
        else if (memcmp(rec.prev, scan->last_hash, NODE_JOURNAL_HASH_SIZE) != 0)
            rc = s_fail(status, seq, off, "previous-record hash does not match record %" PRIu64,
                        seq - 1);
        else if (seq > 0 && rec.kind == NODE_JOURNAL_HEADER)
            rc = s_fail(status, seq, off, "a header record (kind 0) after the start");
        else if (seq == 0) {
            uint8_t pub[NODE_KEY_PUBLIC_SIZE];
            if (s_parse_header(&rec, pub, status, why, sizeof(why)) != 0)
                rc = s_fail(status, 0, off, "%s", why);
            else if (!(scan->key = node_key_from_public(pub))) {
                status->error = errno;
                rc = s_fail(status, 0, off, "header: unusable key");
            } else {
                snprintf(status->fingerprint, sizeof(status->fingerprint), "%s",
                         node_key_fingerprint(scan->key));
                if (expect && memcmp(pub, node_key_public(expect), sizeof(pub)) != 0) {
                    scan->key_mismatch = true;
                    rc = s_fail(status, 0, off, "the journal's key %s is not the expected key %s",
                                node_key_fingerprint(scan->key), node_key_fingerprint(expect));
                }
            }
        }
        if (rc == 0 && !node_key_verify(scan->key, buf.data, rec.size - S_SIG_SIZE, rec.sig))
            rc = s_fail(status, seq, off, "signature does not verify");
        if (rc == 0 && s_scan_push(scan, off) != 0) {
            status->error = ENOMEM;
            rc = s_fail(status, seq, off, "out of memory");
        }
        if (rc == 0) {
            SHA256(buf.data, rec.size, scan->last_hash);
            status->last_seq = seq++;
            off += rec.size;
            status->good_bytes = off;
        }
    }
    s_buf_free(&buf);
    /* A bad header is never a torn tail: creation is atomic, so it is damage. */
    if (rc != 0 && status->error == 0 && status->bad_seq > 0)
        status->torn = !s_later_record(fd, off + 1, file_size, scan->key);
    return rc;
}

/*  Build the record (seq, kind, ts, prev, payload) signed by key into buf; its size or 0
    with errno. */
static size_t s_build(s_buf_t *buf, const node_key_t *key, uint64_t seq, uint8_t kind, int64_t ts,
                      const uint8_t *prev, const void *payload, size_t len)
{
    size_t size = S_HEAD_SIZE + len + S_SIG_SIZE;
    if (s_buf_reserve(buf, size) != 0)
        return 0;
    uint8_t *h = buf->data;
    memcpy(h, S_MAGIC, S_MAGIC_SIZE);
    h[S_AT_VERSION] = S_VERSION;
    h[S_AT_KIND] = kind;
    s_put16(h + S_AT_FLAGS, 0);
    s_put32(h + S_AT_LENGTH, (uint32_t)len);
    s_put64(h + S_AT_SEQ, seq);
    s_put64(h + S_AT_TS, (uint64_t)ts);
    memcpy(h + S_AT_PREV, prev, NODE_JOURNAL_HASH_SIZE);
    if (len > 0)
        memcpy(h + S_HEAD_SIZE, payload, len);
    if (node_key_sign(key, h, S_HEAD_SIZE + len, h + S_HEAD_SIZE + len) != 0)
        return 0;
    return size;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  Create the journal at path holding only its header record: written to PATH.new, synced,
    renamed into place, so a journal exists whole or not at all. 0 or -1 with errno. */
static int s_create(const char *path, const node_key_t *key, const char *store, const char *reg)
{
    uint8_t payload[1 + NODE_KEY_PUBLIC_SIZE + 2 + 2 * NODE_JOURNAL_ID_MAX];
    size_t len = 0;
    payload[len++] = S_KEY_ED25519;
    memcpy(payload + len, node_key_public(key), NODE_KEY_PUBLIC_SIZE);
    len += NODE_KEY_PUBLIC_SIZE;
    const char *ids[2] = {store, reg};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(ids[i]);
        payload[len++] = (uint8_t)n;
        memcpy(payload + len, ids[i], n);
        len += n;
    }
    uint8_t zeros[NODE_JOURNAL_HASH_SIZE] = {0};
    s_buf_t buf = {0};
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s" S_NEW_SUFFIX, path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    size_t size = s_build(&buf, key, 0, NODE_JOURNAL_HEADER, s_now_ms(), zeros, payload, len);
    int rc = -1, saved;
    if (size == 0)
        goto out_free_buf;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out_free_buf;
    rc = s_pwrite_all(fd, buf.data, size, 0) == 0 && fsync(fd) == 0 ? 0 : -1;
    saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0)
        unlink(tmp);
    else if (node_file_sync_dir(path) != 0) {
        rc = -1;
        saved = errno;
    }
    errno = saved;
out_free_buf:
    s_buf_free(&buf);
    return rc;
}

/*  Copy bytes [off, size) of fd to the end of PATH.torn (synced), then cut fd back to off and
    sync it. 0 or -1 with errno. */
static int s_cut_tail(int fd, const char *path, uint64_t off, uint64_t size)
{
    char torn[PATH_MAX];
    if (snprintf(torn, sizeof(torn), "%s" S_TORN_SUFFIX, path) >= (int)sizeof(torn)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int out = open(torn, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (out < 0)
        return -1;
    s_buf_t chunk = {0};
    struct stat st;
    int rc = fstat(out, &st) == 0 ? s_buf_reserve(&chunk, S_CHUNK) : -1;
    uint64_t end = rc == 0 ? (uint64_t)st.st_size : 0;
    for (uint64_t pos = off; rc == 0 && pos < size;) {
        size_t n = size - pos < S_CHUNK ? (size_t)(size - pos) : S_CHUNK;
        rc = s_pread_all(fd, chunk.data, n, pos) == 0 &&
                     s_pwrite_all(out, chunk.data, n, end + (pos - off)) == 0
                 ? 0
                 : -1;
        pos += n;
    }
    s_buf_free(&chunk);
    if (rc == 0)
        rc = fsync(out);
    int saved = errno;
    if (close(out) != 0 && rc == 0)
        return -1;
    errno = saved;
    if (rc == 0)
        rc = node_file_sync_dir(path);
    if (rc == 0)
        rc = ftruncate(fd, (off_t)off) == 0 && fsync(fd) == 0 ? 0 : -1;
    return rc;
}

node_journal_t *node_journal_open(const char *path, const node_key_t *key, const char *store,
                                  const char *reg, node_journal_status_t *status)
{
    node_journal_status_t local;
    if (!status)
        status = &local;
    memset(status, 0, sizeof(*status));
    if (!node_key_has_private(key) || (store && !s_valid_id(store, strlen(store))) ||
        (reg && !s_valid_id(reg, strlen(reg)))) {
        snprintf(status->reason, sizeof(status->reason), "%s",
                 node_key_has_private(key) ? "bad store or register id" : "no private key");
        errno = EINVAL;
        return NULL;
    }
    node_journal_t *self = calloc(1, sizeof(*self));
    if (!self || !(self->path = strdup(path))) {
        free(self);
        errno = ENOMEM;
        return NULL;
    }
    self->key = key;
    s_scan_t scan = {.collect = true};
    struct stat st;
    int saved;
    self->fd = open(path, O_RDWR | O_CLOEXEC);
    if (self->fd >= 0 && fstat(self->fd, &st) != 0) {
        saved = errno;
        close(self->fd);
        self->fd = -1;
        errno = saved;
    } else if (self->fd >= 0 && st.st_size == 0) {
        /* an empty file is no journal yet (nothing was ever acknowledged from it) */
        close(self->fd);
        self->fd = -1;
        errno = ENOENT;
    }
    if (self->fd < 0 && errno == ENOENT) {
        if (!store || !reg) {
            snprintf(status->reason, sizeof(status->reason),
                     "no journal yet, and no store and register to create it for");
            errno = EINVAL;
            goto out_destroy;
        }
        if (s_create(path, key, store, reg) == 0)
            self->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (self->fd < 0) {
        snprintf(status->reason, sizeof(status->reason), "cannot open or create: %s",
                 strerror(errno));
        goto out_destroy;
    }
    if (flock(self->fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(status->reason, sizeof(status->reason), "%s",
                 errno == EWOULDBLOCK ? "open in another process" : strerror(errno));
        goto out_destroy;
    }
    if (fstat(self->fd, &st) != 0)
        goto out_destroy;
    uint64_t file_size = (uint64_t)st.st_size;
    if (s_scan(self->fd, file_size, key, &scan, status) != 0) {
        if (scan.key_mismatch || status->error || !status->torn) {
            errno = scan.key_mismatch ? EPERM : status->error ? status->error : EBADMSG;
            goto out_destroy;
        }
        if (s_cut_tail(self->fd, path, status->bad_offset, file_size) != 0) {
            status->error = errno;
            goto out_destroy;
        }
        status->torn_bytes = file_size - status->bad_offset;
    }
    if ((store && strcmp(store, status->store) != 0) || (reg && strcmp(reg, status->reg) != 0)) {
        snprintf(status->reason, sizeof(status->reason),
                 "the journal is register %s.%s's, not %s.%s's", status->store, status->reg,
                 store ? store : status->store, reg ? reg : status->reg);
        errno = EPERM;
        goto out_destroy;
    }
    self->size = status->good_bytes;
    self->last_seq = status->last_seq;
    memcpy(self->last_hash, scan.last_hash, sizeof(self->last_hash));
    self->offsets = scan.offsets;
    self->capoffsets = scan.capoffsets;
    scan.offsets = NULL;
    s_scan_free(&scan);
    return self;

out_destroy:
    saved = errno;
    s_scan_free(&scan);
    node_journal_destroy(&self);
    errno = saved;
    return NULL;
}

void node_journal_destroy(node_journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_journal_t *self = *self_p;
    if (self->fd >= 0)
        close(self->fd);
    free(self->offsets);
    s_buf_free(&self->buf);
    free(self->path);
    free(self);
    *self_p = NULL;
}

/*  Undo a failed append: cut the file back to the last whole record. Keeps errno. */
static void s_undo_append(node_journal_t *self, const char *what)
{
    int saved = errno;
    if (ftruncate(self->fd, (off_t)self->size) != 0 || fdatasync(self->fd) != 0)
        self->broken = true;
    snprintf(self->err, sizeof(self->err), "journal %s of record %" PRIu64 " failed: %s%s", what,
             self->last_seq + 1, strerror(saved),
             self->broken ? " (the journal must be opened again)" : "");
    errno = saved;
}

int64_t node_journal_append(node_journal_t *self, uint8_t kind, const void *payload, size_t len,
                            int64_t ts_ms)
{
    if (self->broken) {
        snprintf(self->err, sizeof(self->err),
                 "journal refuses appends after a failed sync (open it again)");
        errno = EIO;
        return -1;
    }
    if (kind == NODE_JOURNAL_HEADER || len > NODE_JOURNAL_PAYLOAD_MAX || (len > 0 && !payload)) {
        snprintf(self->err, sizeof(self->err), "bad kind or payload size");
        errno = EINVAL;
        return -1;
    }
    uint64_t seq = self->last_seq + 1;
    if (seq >= self->capoffsets) {
        size_t cap = self->capoffsets ? self->capoffsets * 2 : S_OFFSETS_MIN;
        uint64_t *offsets = realloc(self->offsets, cap * sizeof(*offsets));
        if (!offsets) {
            snprintf(self->err, sizeof(self->err), "out of memory");
            errno = ENOMEM;
            return -1;
        }
        self->offsets = offsets;
        self->capoffsets = cap;
    }
    size_t size = s_build(&self->buf, self->key, seq, kind, ts_ms, self->last_hash, payload, len);
    if (size == 0) {
        snprintf(self->err, sizeof(self->err), "cannot build record %" PRIu64 ": %s", seq,
                 strerror(errno));
        return -1;
    }
    if (s_pwrite_all(self->fd, self->buf.data, size, self->size) != 0) {
        s_undo_append(self, "write");
        return -1;
    }
    if (fdatasync(self->fd) != 0) {
        /* After a failed sync the kernel may have dropped the dirty pages: nothing written
           since the last good sync can be trusted until the file is read again. */
        self->broken = true;
        s_undo_append(self, "sync");
        return -1;
    }
    SHA256(self->buf.data, size, self->last_hash);
    self->offsets[seq] = self->size;
    self->size += size;
    self->last_seq = seq;
    return (int64_t)seq;
}

/*  Copy a loaded record into an entry the caller owns. 0, or -1 with ENOMEM. */
static int s_entry_fill(node_journal_entry_t *entry, const s_rec_t *rec)
{
    entry->payload = malloc(rec->len ? rec->len : 1);
    if (!entry->payload) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(entry->payload, rec->payload, rec->len);
    entry->size = rec->len;
    entry->seq = rec->seq;
    entry->ts_ms = rec->ts;
    entry->kind = rec->kind;
    return 0;
}

int node_journal_read(node_journal_t *self, uint64_t seq, node_journal_entry_t *entry)
{
    memset(entry, 0, sizeof(*entry));
    if (seq < 1 || seq > self->last_seq) {
        snprintf(self->err, sizeof(self->err), "no record %" PRIu64, seq);
        errno = ERANGE;
        return -1;
    }
    s_rec_t rec;
    char why[NODE_JOURNAL_REASON_MAX];
    s_load_t r =
        s_load(self->fd, self->offsets[seq], self->size, &self->buf, &rec, why, sizeof(why));
    if (r == S_LOAD_ERROR) {
        snprintf(self->err, sizeof(self->err), "cannot read record %" PRIu64 ": %s", seq,
                 strerror(errno));
        return -1;
    }
    if (r != S_LOAD_OK || rec.seq != seq ||
        !node_key_verify(self->key, self->buf.data, rec.size - S_SIG_SIZE, rec.sig)) {
        snprintf(self->err, sizeof(self->err), "record %" PRIu64 " no longer verifies", seq);
        errno = EBADMSG;
        return -1;
    }
    return s_entry_fill(entry, &rec);
}

void node_journal_entry_clear(node_journal_entry_t *entry)
{
    free(entry->payload);
    memset(entry, 0, sizeof(*entry));
}

uint64_t node_journal_last_seq(const node_journal_t *self)
{
    return self->last_seq;
}

const uint8_t *node_journal_last_hash(const node_journal_t *self)
{
    return self->last_hash;
}

uint64_t node_journal_size(const node_journal_t *self)
{
    return self->size;
}

bool node_journal_broken(const node_journal_t *self)
{
    return self->broken;
}

const char *node_journal_errstr(const node_journal_t *self)
{
    return self->err;
}

int node_journal_verify(const char *path, const node_key_t *key, node_journal_status_t *status)
{
    memset(status, 0, sizeof(*status));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        status->error = errno;
        s_fail(status, 0, 0, "cannot read: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    s_scan_t scan = {.collect = false};
    int rc = s_scan(fd, (uint64_t)st.st_size, key, &scan, status);
    s_scan_free(&scan);
    close(fd);
    return rc;
}

/* ---- a second, read-only handle for another thread ---------------------- */

struct node_journal_reader_t {
    int fd;
    const node_key_t *key; /* borrowed */
    uint64_t *offsets;     /* offsets[seq] for 0..known */
    size_t capoffsets;
    uint64_t known; /* records indexed and checked */
    uint64_t next;  /* offset of record known + 1 */
    uint8_t last_hash[NODE_JOURNAL_HASH_SIZE];
    s_buf_t buf;
    char err[NODE_JOURNAL_REASON_MAX];
};

node_journal_reader_t *node_journal_reader_open(const char *path, const node_key_t *key)
{
    node_journal_reader_t *self = calloc(1, sizeof(*self));
    if (!self) {
        errno = ENOMEM;
        return NULL;
    }
    self->key = key;
    self->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (self->fd < 0) {
        int saved = errno;
        free(self);
        errno = saved;
        return NULL;
    }
    self->known = UINT64_MAX; /* not even the header yet */
    return self;
}

void node_journal_reader_destroy(node_journal_reader_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_journal_reader_t *self = *self_p;
    close(self->fd);
    free(self->offsets);
    s_buf_free(&self->buf);
    free(self);
    *self_p = NULL;
}

/*  Index and check records up to seq, reading forward from the last one indexed. */
static int s_reader_extend(node_journal_reader_t *self, uint64_t seq)
{
    struct stat st;
    if (fstat(self->fd, &st) != 0) {
        snprintf(self->err, sizeof(self->err), "cannot stat the journal: %s", strerror(errno));
        return -1;
    }
    while (self->known == UINT64_MAX || self->known < seq) {
        uint64_t want = self->known == UINT64_MAX ? 0 : self->known + 1;
        if (want >= self->capoffsets) {
            size_t cap = self->capoffsets ? self->capoffsets * 2 : S_OFFSETS_MIN;
            uint64_t *offsets = realloc(self->offsets, cap * sizeof(*offsets));
            if (!offsets) {
                errno = ENOMEM;
                return -1;
            }
            self->offsets = offsets;
            self->capoffsets = cap;
        }
        s_rec_t rec;
        char why[NODE_JOURNAL_REASON_MAX];
        s_load_t r =
            s_load(self->fd, self->next, (uint64_t)st.st_size, &self->buf, &rec, why, sizeof(why));
        if (r == S_LOAD_SHORT && self->next == (uint64_t)st.st_size) {
            snprintf(self->err, sizeof(self->err), "no record %" PRIu64 " yet", want);
            errno = ERANGE;
            return -1;
        }
        if (r == S_LOAD_ERROR) {
            snprintf(self->err, sizeof(self->err), "cannot read record %" PRIu64 ": %s", want,
                     strerror(errno));
            return -1;
        }
        static const uint8_t zero[NODE_JOURNAL_HASH_SIZE];
        if (r != S_LOAD_OK || rec.seq != want ||
            memcmp(rec.prev, want ? self->last_hash : zero, NODE_JOURNAL_HASH_SIZE) != 0 ||
            (want == 0) != (rec.kind == NODE_JOURNAL_HEADER) ||
            (want == 0 &&
             (rec.len < 1 + NODE_KEY_PUBLIC_SIZE ||
              memcmp(rec.payload + 1, node_key_public(self->key), NODE_KEY_PUBLIC_SIZE) != 0)) ||
            !node_key_verify(self->key, self->buf.data, rec.size - S_SIG_SIZE, rec.sig)) {
            snprintf(self->err, sizeof(self->err), "record %" PRIu64 " at byte %" PRIu64 ": %s",
                     want, self->next, r != S_LOAD_OK ? why : "does not verify");
            errno = EBADMSG;
            return -1;
        }
        SHA256(self->buf.data, rec.size, self->last_hash);
        self->offsets[want] = self->next;
        self->next += rec.size;
        self->known = want;
    }
    return 0;
}

int node_journal_reader_read(node_journal_reader_t *self, uint64_t seq, node_journal_entry_t *entry)
{
    memset(entry, 0, sizeof(*entry));
    if (seq < 1) {
        snprintf(self->err, sizeof(self->err), "no record 0");
        errno = ERANGE;
        return -1;
    }
    if ((self->known == UINT64_MAX || seq > self->known) && s_reader_extend(self, seq) != 0)
        return -1;
    s_rec_t rec;
    char why[NODE_JOURNAL_REASON_MAX];
    uint64_t end = self->offsets[seq] + S_HEAD_SIZE + NODE_JOURNAL_PAYLOAD_MAX + S_SIG_SIZE;
    /* the signature was checked when the record was indexed (s_reader_extend): once is enough
       for a file only this register appends to, and it halves the uplink's CPU per sale */
    if (s_load(self->fd, self->offsets[seq], end, &self->buf, &rec, why, sizeof(why)) !=
            S_LOAD_OK ||
        rec.seq != seq) {
        snprintf(self->err, sizeof(self->err), "record %" PRIu64 " no longer verifies", seq);
        errno = EBADMSG;
        return -1;
    }
    return s_entry_fill(entry, &rec);
}

const uint8_t *node_journal_reader_hash(const node_journal_reader_t *self)
{
    return self->last_hash;
}

uint64_t node_journal_reader_known(const node_journal_reader_t *self)
{
    return self->known == UINT64_MAX ? 0 : self->known;
}

const char *node_journal_reader_errstr(const node_journal_reader_t *self)
{
    return self->err;
}

const char *node_journal_kind_name(uint8_t kind)
{
    switch (kind) {
    case NODE_JOURNAL_HEADER:
        return "header";
    case NODE_JOURNAL_SALE:
        return "sale";
    case NODE_JOURNAL_AUDIT:
        return "audit";
    case NODE_JOURNAL_MARK:
        return "mark";
    default:
        return NULL;
    }
}
