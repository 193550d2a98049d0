/*  =========================================================================
    node/journal.h - a register's append-only, hash-chained, signed journal

    The journal is the register's truth: a sale is a sale once its record is
    in the journal and fdatasync()ed, before the receipt prints. Records are
    numbered gap-free from 1 (record 0 is the header naming the register and
    its public key); each carries the SHA-256 of the record before it and an
    Ed25519 signature by the register's key (node/key.h). The file format,
    byte by byte, is in docs/journal.md.

    Opening a journal reads and checks all of it. A bad LAST record (the
    file ends inside it, or it is whole but does not verify, and no good
    record follows it) is what a crash in the middle of an append leaves:
    open cuts it off (keeping its bytes in PATH.torn) and says so in the
    status; earlier records are never touched. A bad record with a good one
    after it is damage, not a crash: open refuses the journal and names the
    record. One process at a time has a journal open (an exclusive flock).

    The journal never interprets payloads (posnode stores a MessagePack sale
    document there) and never prints. Not thread-safe: one journal, one thread.
    =========================================================================
*/
#ifndef NODE_JOURNAL_H_INCLUDED
#define NODE_JOURNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/key.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_JOURNAL_PAYLOAD_MAX (1024 * 1024) /* bytes of one record's payload */
#define NODE_JOURNAL_ID_MAX      16            /* store and register ids: 1-16 [A-Za-z0-9_] */
#define NODE_JOURNAL_HASH_SIZE   32            /* SHA-256 */
#define NODE_JOURNAL_REASON_MAX  200           /* a reason fits in this many bytes */

/* Record kinds. 0 is the header record only; 1-255 are the caller's, these are named. */
#define NODE_JOURNAL_HEADER 0
#define NODE_JOURNAL_SALE   1 /* a completed sale (payload: the sale document) */
#define NODE_JOURNAL_AUDIT  2 /* an audit event: void, refund, override, no-sale, login... */
#define NODE_JOURNAL_MARK   3 /* bookkeeping about earlier records, e.g. "uploaded up to" */

typedef struct node_journal_t node_journal_t;

/*  What open and verify found. On success: the register, the key, the last good record.
    On failure: bad is set, with the sequence number that belongs at the bad position (the
    record that is damaged, missing or out of place), its byte offset and why. When open
    succeeds after cutting a torn tail, torn_bytes > 0 and bad, bad_seq, bad_offset and reason
    describe what was cut (for the caller's log). When open fails before reading (EINVAL,
    EWOULDBLOCK, a system call), reason says why. */
typedef struct {
    char store[NODE_JOURNAL_ID_MAX + 1];
    char reg[NODE_JOURNAL_ID_MAX + 1];
    char fingerprint[NODE_KEY_FINGERPRINT_SIZE]; /* of the key in the header */
    uint64_t last_seq;                           /* last good record; 0: the header only */
    uint64_t good_bytes;                         /* length of the good prefix of the file */
    bool bad;                                    /* a bad record, or the file cannot be read */
    int error;                                   /* errno when the file could not be read */
    uint64_t bad_seq;
    uint64_t bad_offset;
    bool torn;           /* nothing good follows the bad record: what a crash leaves */
    uint64_t torn_bytes; /* open: bytes cut off the tail (appended to PATH.torn) */
    char reason[NODE_JOURNAL_REASON_MAX];
} node_journal_status_t;

/*  One record read back. payload is owned (node_journal_entry_clear). */
typedef struct {
    uint64_t seq;
    int64_t ts_ms;
    uint8_t kind;
    uint8_t *payload;
    size_t size;
} node_journal_entry_t;

/*  Open the journal at path for appending with key (borrowed; must outlive the journal and
    hold a private key), creating it with a header record for store and register if path does
    not exist or is empty (creation is atomic: a temporary file renamed into place).
    An existing journal must have been made with the same key and, when store / reg are not
    NULL, for the same register. Checks every record; cuts off a torn tail (see above).
    status (may be NULL) says what was found. NULL on failure with errno: EBADMSG (a bad
    record with a good one after it, or a bad header: status names it), EPERM (another
    register's journal or key), EWOULDBLOCK (open in another process), EINVAL (bad ids, no
    private key), or the error of a failed system call. */
node_journal_t *node_journal_open(const char *path, const node_key_t *key, const char *store,
                                  const char *reg, node_journal_status_t *status);

/*  Close the journal (NULL-safe), set *self_p to NULL. Appends are already durable. */
void node_journal_destroy(node_journal_t **self_p);

/*  Append a record of kind (1-255) with len bytes of payload (at most NODE_JOURNAL_PAYLOAD_MAX)
    and time ts_ms; returns once it is written and fdatasync()ed, with its sequence number (the
    last one plus 1). -1 on failure, errno kept: EINVAL (bad kind or size), ENOSPC / EFBIG /
    EDQUOT (disk or quota full), EIO, ... Then the file is cut back to its previous end, so no
    part of the record stays and the next append gets the same sequence number; after a failed
    fdatasync or a failed cut the journal refuses further appends (EIO) until it is opened again,
    because what is on disk is then unknown. The caller stops selling and says why. */
int64_t node_journal_append(node_journal_t *self, uint8_t kind, const void *payload, size_t len,
                            int64_t ts_ms);

/*  Read record seq (1..last) back from the file, checking its signature and sequence number.
    0, or -1 with errno: ERANGE (no such record), EBADMSG (it no longer verifies), EIO, ENOMEM. */
int node_journal_read(node_journal_t *self, uint64_t seq, node_journal_entry_t *entry);

/*  Free an entry's payload and zero it (NULL-safe on the payload). */
void node_journal_entry_clear(node_journal_entry_t *entry);

/*  The last sequence number (0: no record yet), the hash of the last record (the header's when
    there is none), the length of the file. */
uint64_t node_journal_last_seq(const node_journal_t *self);
const uint8_t *node_journal_last_hash(const node_journal_t *self);
uint64_t node_journal_size(const node_journal_t *self);

/*  Whether the journal refuses appends until it is opened again (a failed sync or cut). */
bool node_journal_broken(const node_journal_t *self);

/*  Why the last append or read failed, for the caller's log. */
const char *node_journal_errstr(const node_journal_t *self);

/*  Check the journal at path offline without changing it: the header, then every record's
    format, sequence number, previous-record hash and signature. With key (may be NULL), the
    header's key must be that one; without, the journal is only checked against itself (a
    journal rewritten whole with another key passes: compare the fingerprint). 0 if every
    record is good; -1 with status naming the first bad record (or the read error). */
int node_journal_verify(const char *path, const node_key_t *key, node_journal_status_t *status);

/*  A read-only handle on a journal that a node_journal_t (in another thread, or process) is
    appending to, for the thread that uploads records: it takes no lock and never writes.
    Records are read front to back once and indexed (8 bytes each); each is checked then
    (sequence, previous-record hash, signature by key, which must be the header's), and a
    later read of it checks its place and sequence number again but not the signature.
    Read only records the writer has announced as appended: a record still being written is
    reported as not there yet (ERANGE) or bad (EBADMSG). Not thread-safe: one reader, one
    thread; any number of readers may share a file. NULL with errno on failure. */
typedef struct node_journal_reader_t node_journal_reader_t;
node_journal_reader_t *node_journal_reader_open(const char *path, const node_key_t *key);
void node_journal_reader_destroy(node_journal_reader_t **self_p);
/*  Read record seq (>= 1). 0, or -1 with errno: ERANGE (not in the file yet), EBADMSG (a
    record up to it does not verify), EIO, ENOMEM; errstr says which. */
int node_journal_reader_read(node_journal_reader_t *self, uint64_t seq,
                             node_journal_entry_t *entry);
/*  The highest record indexed so far (0: none, or the header only). */
uint64_t node_journal_reader_known(const node_journal_reader_t *self);
/*  The SHA-256 of the highest record indexed (of the header when none). */
const uint8_t *node_journal_reader_hash(const node_journal_reader_t *self);
const char *node_journal_reader_errstr(const node_journal_reader_t *self);

/*  "sale", "audit", "mark", "header", or NULL for a kind without a name. */
const char *node_journal_kind_name(uint8_t kind);

#ifdef __cplusplus
}
#endif
#endif
