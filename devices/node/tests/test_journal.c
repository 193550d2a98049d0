/*  test_journal - the register journal keeps every acknowledged record and names any damage

    - records are numbered 1, 2, ... across reopen; read gives back what was appended;
    - verify passes on a real journal and, when one byte of a record's head, previous hash,
      payload or signature is changed, a record is removed or two are swapped, names that
      record (the first of the two swapped); a wrong key is refused by verify and by open;
    - open refuses damage in the middle (naming it, changing nothing) but cuts a torn tail
      (truncated at any offset, zeros after the end, a whole last record that does not verify)
      into PATH.torn, keeps every earlier record and continues at the right sequence number;
    - a full disk (RLIMIT_FSIZE: EFBIG, no root needed) fails the append cleanly: only whole
      records stay, the next append gets the same number;
    - a process killed while appending in a loop (SIGKILL at a random moment, or SIGXFSZ in the
      middle of a write) loses no record it had acknowledged; its torn record is cut at open. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node/journal.h"
#include "testutil.h"

#define T_RECORDS       10           /* records in the journal the tampering tests start from */
#define T_OVERHEAD      124          /* bytes of a record besides its payload (docs/journal.md) */
#define T_CRASH_ROUNDS  12           /* SIGKILLed writers in the crash test */
#define T_CRASH_MAX_MS  60           /* a writer is killed within this many ms */
#define T_CRASH_BIG     (256 * 1024) /* the largest payload the writer appends */
#define T_CRASH_LIMIT   20000        /* a limited writer may grow the file this much at most */
#define T_CRASH_WAIT_MS 20000        /* time a limited writer has to reach its limit */

static char t_dir[] = "/tmp/test_journal.XXXXXX";
static char t_path[512], t_work[512];

static void t_file(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", t_dir, name);
}

/*  Payload of record seq: its size and bytes are a function of seq, so reads can be checked. */
static size_t t_payload(uint64_t seq, uint8_t *buf)
{
    size_t size = 50 + (seq * 37) % 300;
    for (size_t i = 0; i < size; i++)
        buf[i] = (uint8_t)(seq * 31 + i);
    return size;
}

static long t_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static uint8_t *t_slurp(const char *path, long *size)
{
    *size = t_size(path);
    uint8_t *data = malloc(*size > 0 ? (size_t)*size : 1);
    FILE *f = fopen(path, "rb");
    if (!f || !data || fread(data, 1, (size_t)*size, f) != (size_t)*size)
        abort();
    fclose(f);
    return data;
}

static void t_spit(const char *path, const uint8_t *data, long size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, (size_t)size, f) != (size_t)size || fclose(f) != 0)
        abort();
}

/*  Offsets of the records of data (offsets[0] is the header's), walking the length fields; the
    number of records found, the header included. */
static int t_offsets(const uint8_t *data, long size, long *offsets, int max)
{
    int n = 0;
    for (long off = 0; off + 60 <= size && n < max; n++) {
        offsets[n] = off;
        uint32_t len = ((uint32_t)data[off + 8] << 24) | ((uint32_t)data[off + 9] << 16) |
                       ((uint32_t)data[off + 10] << 8) | data[off + 11];
        off += T_OVERHEAD + len;
    }
    return n;
}

/*  Append records until last_seq is upto; false on the first failure. */
static bool t_fill(node_journal_t *journal, uint64_t upto)
{
    uint8_t buf[400];
    while (node_journal_last_seq(journal) < upto) {
        uint64_t seq = node_journal_last_seq(journal) + 1;
        size_t size = t_payload(seq, buf);
        if (node_journal_append(journal, NODE_JOURNAL_SALE, buf, size, 1700000000000LL + seq) !=
            (int64_t)seq)
            return false;
    }
    return true;
}

/*  Verify t_work (with key, may be NULL) expecting the first bad record to be seq. */
static void t_expect_bad(const node_key_t *key, uint64_t seq, const char *what)
{
    node_journal_status_t status;
    int rc = node_journal_verify(t_work, key, &status);
    CHECK(rc == -1 && status.bad && status.bad_seq == seq,
          "%s: verify names record %" PRIu64 " (rc %d, seq %" PRIu64 " at %" PRIu64 ": %s)", what,
          seq, rc, status.bad_seq, status.bad_offset, status.reason);
}

static void t_keys(node_key_t **a, node_key_t **b, node_key_t **a_pub)
{
    char path[512], pub[512];
    t_file(path, "a.pem");
    CHECK(node_key_generate(path) == 0, "generate key a");
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "private key file is mode 0600");
    CHECK(node_key_generate(path) == -1 && errno == EEXIST, "generate never replaces a key");
    *a = node_key_load(path);
    CHECK(*a && node_key_has_private(*a), "load key a");
    t_file(pub, "a.pub");
    CHECK(node_key_write_public(*a, pub) == 0, "write a's public key");
    *a_pub = node_key_load(pub);
    CHECK(*a_pub && !node_key_has_private(*a_pub) &&
              memcmp(node_key_public(*a_pub), node_key_public(*a), NODE_KEY_PUBLIC_SIZE) == 0 &&
              strcmp(node_key_fingerprint(*a_pub), node_key_fingerprint(*a)) == 0,
          "public key loads, cannot sign, same fingerprint %s", node_key_fingerprint(*a));
    t_file(path, "b.pem");
    CHECK(node_key_generate(path) == 0 && (*b = node_key_load(path)) != NULL, "key b");
    t_file(path, "nokey.pem");
    t_spit(path, (const uint8_t *)"not a key\n", 10);
    errno = 0;
    CHECK(node_key_load(path) == NULL && errno == EINVAL, "a file without a key: EINVAL");
    uint8_t sig[NODE_KEY_SIGNATURE_SIZE];
    CHECK(node_key_sign(*a, "abc", 3, sig) == 0 && node_key_verify(*a_pub, "abc", 3, sig) &&
              !node_key_verify(*a_pub, "abd", 3, sig) && !node_key_verify(*b, "abc", 3, sig),
          "sign and verify");
    CHECK(node_key_sign(*a_pub, "abc", 3, sig) == -1 && errno == EPERM, "a public key cannot sign");
}

static void t_basics(node_key_t *a, node_key_t *b, node_key_t *a_pub)
{
    node_journal_status_t status;
    CHECK(!node_journal_open(t_path, a, NULL, NULL, &status) && errno == EINVAL,
          "no journal and no register to create it for: EINVAL");
    CHECK(!node_journal_open(t_path, a, "S-1", "R01", &status) && errno == EINVAL,
          "bad store id refused");
    CHECK(!node_journal_open(t_path, a_pub, "S1", "R01", &status) && errno == EINVAL,
          "a public key cannot open for appending");
    node_journal_t *journal = node_journal_open(t_path, a, "S1", "R01", &status);
    CHECK(journal && node_journal_last_seq(journal) == 0 && !status.bad,
          "create a journal: only the header");
    CHECK(!node_journal_open(t_path, a, "S1", "R01", NULL) && errno == EWOULDBLOCK,
          "a second open while it is open: EWOULDBLOCK");
    CHECK(node_journal_append(journal, NODE_JOURNAL_HEADER, "x", 1, 0) == -1 && errno == EINVAL,
          "kind 0 is refused");
    CHECK(node_journal_append(journal, NODE_JOURNAL_SALE, "x", NODE_JOURNAL_PAYLOAD_MAX + 1, 0) ==
                  -1 &&
              errno == EINVAL,
          "a payload over the maximum is refused");
    CHECK(t_fill(journal, 6), "append 1..6 in order");
    node_journal_destroy(&journal);
    CHECK(!journal, "destroy nulls the pointer");
    journal = node_journal_open(t_path, a, "S1", "R01", &status);
    CHECK(journal && node_journal_last_seq(journal) == 6 && status.torn_bytes == 0,
          "reopen: last seq 6, nothing cut");
    CHECK(node_journal_append(journal, NODE_JOURNAL_AUDIT, "", 0, 5) == 7,
          "reopened journal continues at 7 (an empty audit record)");
    CHECK(t_fill(journal, T_RECORDS), "append up to %d", T_RECORDS);
    uint8_t expect[400];
    node_journal_entry_t entry;
    bool same = true;
    for (uint64_t seq = 1; seq <= T_RECORDS; seq++) {
        if (node_journal_read(journal, seq, &entry) != 0)
            same = false;
        else if (seq != 7) {
            size_t size = t_payload(seq, expect);
            same = same && entry.seq == seq && entry.kind == NODE_JOURNAL_SALE &&
                   entry.size == size && memcmp(entry.payload, expect, size) == 0 &&
                   entry.ts_ms == 1700000000000LL + (int64_t)seq;
        } else
            same = same && entry.kind == NODE_JOURNAL_AUDIT && entry.size == 0 && entry.ts_ms == 5;
        node_journal_entry_clear(&entry);
    }
    CHECK(same, "read gives back every record as appended");
    CHECK(node_journal_read(journal, 0, &entry) == -1 && errno == ERANGE &&
              node_journal_read(journal, T_RECORDS + 1, &entry) == -1 && errno == ERANGE,
          "read outside 1..last: ERANGE");
    node_journal_destroy(&journal);

    CHECK(node_journal_verify(t_path, NULL, &status) == 0 && status.last_seq == T_RECORDS &&
              strcmp(status.store, "S1") == 0 && strcmp(status.reg, "R01") == 0 &&
              strcmp(status.fingerprint, node_key_fingerprint(a)) == 0 &&
              status.good_bytes == (uint64_t)t_size(t_path),
          "verify: ok, %d records, register S1.R01, a's key", T_RECORDS);
    CHECK(node_journal_verify(t_path, a_pub, &status) == 0, "verify with a's public key: ok");
    CHECK(node_journal_verify(t_path, b, &status) == -1 && status.bad_seq == 0 &&
              strstr(status.reason, "key"),
          "verify with another key: refused at the header (%s)", status.reason);
    CHECK(!node_journal_open(t_path, b, "S1", "R01", &status) && errno == EPERM,
          "another register's key cannot continue the journal: EPERM");
    CHECK(!node_journal_open(t_path, a, "S1", "R02", &status) && errno == EPERM,
          "the journal cannot be opened as another register: EPERM (%s)", status.reason);
    CHECK(node_journal_verify("/nonexistent/journal", NULL, &status) == -1 &&
              status.error == ENOENT,
          "verify of a missing file: the read error");
}

/*  Change one byte at offset off of the pristine journal and verify it. */
static void t_flip(const uint8_t *data, long size, long off, uint64_t seq, const char *what)
{
    uint8_t *copy = malloc((size_t)size);
    memcpy(copy, data, (size_t)size);
    copy[off] ^= 0x01;
    t_spit(t_work, copy, size);
    free(copy);
    char label[128];
    snprintf(label, sizeof(label), "record %" PRIu64 " %s byte changed", seq, what);
    t_expect_bad(NULL, seq, label);
}

static void t_tamper(node_key_t *a)
{
    long size;
    uint8_t *data = t_slurp(t_path, &size);
    long offsets[T_RECORDS + 2];
    int n = t_offsets(data, size, offsets, T_RECORDS + 2);
    CHECK_EQ(n, T_RECORDS + 1, "records in the file, the header included");
    offsets[n] = size;
    uint64_t picks[] = {0, 1, 5, T_RECORDS};
    for (size_t i = 0; i < sizeof(picks) / sizeof(picks[0]); i++) {
        uint64_t k = picks[i];
        long at = offsets[k], end = offsets[k + 1];
        t_flip(data, size, at + 0, k, "magic");
        t_flip(data, size, at + 5, k, "kind");
        t_flip(data, size, at + 11, k, "length");
        t_flip(data, size, at + 19, k, "seq");
        t_flip(data, size, at + 27, k, "timestamp");
        t_flip(data, size, at + 40, k, "previous-hash");
        t_flip(data, size, at + 60, k, "payload");
        t_flip(data, size, end - 1, k, "signature");
    }
    /* open refuses a changed middle record, names it and leaves the file alone */
    uint8_t *copy = malloc((size_t)size);
    memcpy(copy, data, (size_t)size);
    copy[offsets[4] + 70] ^= 0x80;
    t_spit(t_work, copy, size);
    node_journal_status_t status;
    CHECK(!node_journal_open(t_work, a, "S1", "R01", &status) && errno == EBADMSG &&
              status.bad_seq == 4 && !status.torn && t_size(t_work) == size,
          "open refuses a changed middle record, names 4, changes nothing (%s)", status.reason);
    /* a length field of a middle record pointing past the end is damage, not a torn tail */
    memcpy(copy, data, (size_t)size);
    copy[offsets[3] + 9] = 0x0f;
    t_spit(t_work, copy, size);
    CHECK(!node_journal_open(t_work, a, "S1", "R01", &status) && errno == EBADMSG &&
              status.bad_seq == 3 && t_size(t_work) == size,
          "open refuses a middle length field pointing past the end (%s)", status.reason);

    /* remove record k */
    for (uint64_t k = 1; k < T_RECORDS; k += 4) {
        long cut = offsets[k + 1] - offsets[k];
        memcpy(copy, data, (size_t)offsets[k]);
        memcpy(copy + offsets[k], data + offsets[k + 1], (size_t)(size - offsets[k + 1]));
        t_spit(t_work, copy, size - cut);
        char label[64];
        snprintf(label, sizeof(label), "record %" PRIu64 " removed", k);
        t_expect_bad(NULL, k, label);
    }
    /* swap records k and k+1 */
    for (uint64_t k = 1; k < T_RECORDS; k += 3) {
        long len1 = offsets[k + 1] - offsets[k], len2 = offsets[k + 2] - offsets[k + 1];
        memcpy(copy, data, (size_t)size);
        memcpy(copy + offsets[k], data + offsets[k + 1], (size_t)len2);
        memcpy(copy + offsets[k] + len2, data + offsets[k], (size_t)len1);
        t_spit(t_work, copy, size);
        char label[64];
        snprintf(label, sizeof(label), "records %" PRIu64 " and %" PRIu64 " swapped", k, k + 1);
        t_expect_bad(NULL, k, label);
    }
    /* the last record removed whole: the chain alone cannot tell (the back office can) */
    t_spit(t_work, data, offsets[T_RECORDS]);
    CHECK(node_journal_verify(t_work, NULL, &status) == 0 && status.last_seq == T_RECORDS - 1,
          "the last record removed whole verifies as a shorter journal (documented limit)");
    free(copy);
    free(data);
}

/*  Open t_work (a pristine copy with a torn tail made by the caller) and check that exactly
    the tail after record keep was cut and the journal continues at keep + 1. */
static void t_expect_cut(node_key_t *a, long whole, uint64_t keep, const char *what)
{
    long before = t_size(t_work);
    char torn[600];
    snprintf(torn, sizeof(torn), "%s.torn", t_work);
    long torn_before = t_size(torn) > 0 ? t_size(torn) : 0;
    node_journal_status_t status;
    node_journal_t *journal = node_journal_open(t_work, a, "S1", "R01", &status);
    CHECK(journal && node_journal_last_seq(journal) == keep &&
              status.torn_bytes == (uint64_t)(before - whole) && t_size(t_work) == whole &&
              t_size(torn) - torn_before == before - whole,
          "%s: open cuts %ld bytes into .torn, keeps 1..%" PRIu64 " (%s)", what, before - whole,
          keep, status.reason);
    uint8_t buf[400];
    size_t size = t_payload(keep + 1, buf);
    CHECK(journal &&
              node_journal_append(journal, NODE_JOURNAL_SALE, buf, size, 0) == (int64_t)keep + 1,
          "%s: the next append gets %" PRIu64, what, keep + 1);
    node_journal_destroy(&journal);
    CHECK(node_journal_verify(t_work, NULL, &status) == 0 && status.last_seq == keep + 1,
          "%s: verifies afterwards", what);
}

static void t_torn(node_key_t *a)
{
    long size;
    uint8_t *data = t_slurp(t_path, &size);
    long offsets[T_RECORDS + 2];
    t_offsets(data, size, offsets, T_RECORDS + 2);
    long last = offsets[T_RECORDS], len = size - last;
    long cuts[] = {1, 4, 30, 59, 60, 61, 100, len - 64, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        t_spit(t_work, data, last + cuts[i]);
        char label[64];
        snprintf(label, sizeof(label), "last record torn after %ld of %ld bytes", cuts[i], len);
        t_expect_cut(a, last, T_RECORDS - 1, label);
    }
    /* a power cut after the size grew but before the data landed: zeros after the end */
    uint8_t *copy = calloc(1, (size_t)size + 4096);
    memcpy(copy, data, (size_t)size);
    t_spit(t_work, copy, size + 4096);
    t_expect_cut(a, size, T_RECORDS, "4096 zero bytes after the last record");
    /* a whole last record whose signature does not verify */
    memcpy(copy, data, (size_t)size);
    copy[size - 10] ^= 0xff;
    t_spit(t_work, copy, size);
    t_expect_cut(a, last, T_RECORDS - 1, "whole last record with a bad signature");
    /* the header alone is never cut */
    t_spit(t_work, data, 100);
    node_journal_status_t status;
    CHECK(!node_journal_open(t_work, a, "S1", "R01", &status) && errno == EBADMSG &&
              status.bad_seq == 0 && t_size(t_work) == 100,
          "a torn header is refused, not cut (%s)", status.reason);
    free(copy);
    free(data);
}

static void t_disk_full(node_key_t *a)
{
    char path[512];
    t_file(path, "full");
    node_journal_t *journal = node_journal_open(path, a, "S1", "R01", NULL);
    CHECK(journal && t_fill(journal, 3), "a journal of 3 records");
    uint8_t payload[1000] = {0};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = node_journal_size(journal) + (T_OVERHEAD + sizeof(payload)) * 3 / 2;
    setrlimit(RLIMIT_FSIZE, &lim);
    int64_t first = node_journal_append(journal, NODE_JOURNAL_SALE, payload, sizeof(payload), 0);
    uint64_t size = node_journal_size(journal);
    errno = 0;
    int64_t second = node_journal_append(journal, NODE_JOURNAL_SALE, payload, sizeof(payload), 0);
    int err = errno;
    CHECK(first == 4 && second == -1 && err == EFBIG,
          "file size limit: record 4 fits, record 5 fails with EFBIG (%s)",
          node_journal_errstr(journal));
    CHECK(t_size(path) == (long)size && node_journal_last_seq(journal) == 4,
          "the failed append left no partial record (size %ld)", t_size(path));
    CHECK(node_journal_append(journal, NODE_JOURNAL_SALE, payload, sizeof(payload), 0) == -1,
          "still full: still refused");
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(node_journal_append(journal, NODE_JOURNAL_SALE, payload, sizeof(payload), 0) == 5,
          "space again: the next append gets 5");
    node_journal_destroy(&journal);
    node_journal_status_t status;
    journal = node_journal_open(path, a, "S1", "R01", &status);
    CHECK(journal && node_journal_last_seq(journal) == 5 && status.torn_bytes == 0,
          "reopen: 5 records, nothing torn");
    node_journal_destroy(&journal);
    signal(SIGXFSZ, SIG_DFL);
}

/*  A child appends in a loop and writes each acknowledged seq to the pipe until it is killed:
    by SIGKILL from the parent, or, with a file size limit (limit > 0 bytes past the current
    end), by SIGXFSZ in the middle of the write that crosses it, leaving a torn record. */
static void t_writer(const char *path, node_key_t *a, int out, unsigned seed, long limit)
{
    if (limit > 0) {
        struct rlimit lim;
        getrlimit(RLIMIT_FSIZE, &lim);
        lim.rlim_cur = (rlim_t)(t_size(path) + limit);
        setrlimit(RLIMIT_FSIZE, &lim);
    }
    node_journal_t *journal = node_journal_open(path, a, "S1", "R01", NULL);
    if (!journal)
        _exit(3);
    uint8_t *payload = calloc(1, T_CRASH_BIG);
    srand(seed);
    while (payload) {
        size_t size = (size_t)rand() % 4 == 0 ? (size_t)rand() % T_CRASH_BIG : 200;
        int64_t seq = node_journal_append(journal, NODE_JOURNAL_SALE, payload, size, 0);
        if (seq < 0 || write(out, &seq, sizeof(seq)) != sizeof(seq))
            _exit(4);
    }
    _exit(5);
}

static void t_crash(node_key_t *a)
{
    char path[512];
    t_file(path, "crash");
    srand((unsigned)time(NULL));
    int64_t expect_next = 1;
    int torn = 0, lost = 0, rounds_ok = 0, xfsz = 0;
    for (int round = 0; round < T_CRASH_ROUNDS; round++) {
        bool limited = round % 2 == 1;
        int fds[2];
        if (pipe(fds) != 0)
            abort();
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            t_writer(path, a, fds[1], (unsigned)rand(), limited ? 1 + rand() % T_CRASH_LIMIT : 0);
        }
        close(fds[1]);
        int wstatus, waited = 0;
        if (limited) /* it dies of SIGXFSZ by itself; SIGKILL only if it does not */
            while (waitpid(pid, &wstatus, WNOHANG) == 0 && waited < T_CRASH_WAIT_MS) {
                t_sleep_ms(10);
                waited += 10;
            }
        else
            t_sleep_ms(5 + rand() % T_CRASH_MAX_MS);
        if (!limited || waited >= T_CRASH_WAIT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &wstatus, 0);
        }
        if (limited && WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGXFSZ)
            xfsz++;
        int64_t seq, acked = 0, first = 0;
        bool ordered = true;
        while (read(fds[0], &seq, sizeof(seq)) == sizeof(seq)) {
            if (!first)
                first = seq;
            ordered = ordered && (acked == 0 || seq == acked + 1);
            acked = seq;
        }
        close(fds[0]);
        node_journal_status_t status;
        node_journal_t *journal = node_journal_open(path, a, "S1", "R01", &status);
        bool ok = journal && WIFSIGNALED(wstatus) && ordered &&
                  (first == 0 || first == expect_next) &&
                  node_journal_last_seq(journal) >= (uint64_t)acked;
        node_journal_entry_t entry;
        for (int64_t s = 1; journal && s <= acked; s++) {
            if (node_journal_read(journal, (uint64_t)s, &entry) != 0)
                lost++;
            node_journal_entry_clear(&entry);
        }
        if (status.torn_bytes > 0)
            torn++;
        if (journal)
            expect_next = (int64_t)node_journal_last_seq(journal) + 1;
        node_journal_destroy(&journal);
        if (ok && node_journal_verify(path, NULL, &status) == 0)
            rounds_ok++;
        else
            printf("round %d: acked up to %" PRId64 ", first %" PRId64 ": %s\n", round, acked,
                   first, status.reason);
    }
    CHECK_EQ(rounds_ok, T_CRASH_ROUNDS,
             "SIGKILLed writers: reopen works, every acked record is there, numbers continue, "
             "verify ok");
    CHECK_EQ(lost, 0, "acknowledged records lost");
    CHECK(xfsz == T_CRASH_ROUNDS / 2 && torn > 0,
          "%d writers killed by SIGXFSZ inside a write left %d torn tails, all cut at open", xfsz,
          torn);
    printf("     (%d of %d kills left a torn tail, cut at open; %" PRId64 " records written)\n",
           torn, T_CRASH_ROUNDS, expect_next - 1);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!mkdtemp(t_dir))
        return 1;
    t_file(t_path, "journal");
    t_file(t_work, "work");
    node_key_t *a = NULL, *b = NULL, *a_pub = NULL;
    t_keys(&a, &b, &a_pub);
    if (a && b && a_pub) {
        t_basics(a, b, a_pub);
        t_tamper(a);
        t_torn(a);
        t_disk_full(a);
        t_crash(a);
    }
    node_key_destroy(&a);
    node_key_destroy(&b);
    node_key_destroy(&a_pub);
    CHECK(!a && !b, "key destroy nulls the pointer");
    t_remove_dir(t_dir);
    return FINISH("test_journal");
}
