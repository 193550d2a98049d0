/*  =========================================================================
    journal.c - posctl journal verify FILE [--journal-key PUB.pem]

    An auditor's check of a register's journal (devices/node, docs/journal.md),
    offline: no busd, no Redis, no register. It reads the file and checks
    every record's format, sequence number, previous-record hash and
    signature, and says either that all of it is good or which record is the
    first bad one, where and why. With --journal-key the journal must also be
    signed by that register's key; without, only its consistency with the key
    in its own header is checked, so the fingerprint printed is what to
    compare against the register's.

    Output (stdout): "ok: N records, seq 1..N, register S.R, key FP", exit 0;
    or "bad record seq K at byte B: REASON", exit 1; --format json prints one
    JSON object instead. A file that cannot be read: stderr, exit 1.
    =========================================================================
*/
#include <errno.h>
#include <node/journal.h>
#include "posctl.h"

const bus_opt_t posctl_journal_opts[] = {
    {"journal-key", BUS_OPT_STR, NULL, 0, 0,
     "journal verify: the register's public key (PEM) the journal must be signed with"},
    {NULL, 0, NULL, 0, 0, NULL}};

static void s_print_json(const node_journal_status_t *status, bool ok)
{
    bus_val_t *body = bus_val_new_map();
    bus_val_map_set_bool(body, "ok", ok);
    if (ok) {
        bus_val_map_set_int(body, "records", (int64_t)status->last_seq);
        bus_val_map_set_int(body, "first_seq", status->last_seq > 0 ? 1 : 0);
    } else {
        bus_val_map_set_int(body, "seq", (int64_t)status->bad_seq);
        bus_val_map_set_int(body, "offset", (int64_t)status->bad_offset);
        bus_val_map_set_str(body, "reason", status->reason);
        bus_val_map_set_bool(body, "torn", status->torn);
    }
    bus_val_map_set_int(body, "last_seq", (int64_t)status->last_seq);
    bus_val_map_set_int(body, "good_bytes", (int64_t)status->good_bytes);
    if (*status->store) {
        bus_val_map_set_str(body, "store", status->store);
        bus_val_map_set_str(body, "register", status->reg);
        bus_val_map_set_str(body, "key", status->fingerprint);
    }
    posctl_print(body, "json");
    bus_val_destroy(&body);
}

static void s_print_text(const node_journal_status_t *status, bool ok)
{
    if (ok && status->last_seq == 0)
        printf("ok: 0 records (the header only), register %s.%s, key %s\n", status->store,
               status->reg, status->fingerprint);
    else if (ok)
        printf("ok: %" PRIu64 " records, seq 1..%" PRIu64 ", register %s.%s, key %s\n",
               status->last_seq, status->last_seq, status->store, status->reg, status->fingerprint);
    else {
        printf("bad record seq %" PRIu64 " at byte %" PRIu64 ": %s\n", status->bad_seq,
               status->bad_offset, status->reason);
        if (status->bad_seq > 1)
            printf("records 1..%" PRIu64 " before it verify (register %s.%s, key %s)\n",
                   status->last_seq, status->store, status->reg, status->fingerprint);
        if (status->torn)
            printf("no good record follows it: a torn tail, which posnode cuts off (into "
                   "FILE.torn) when it opens the journal\n");
    }
}

int posctl_journal(bus_config_t *config)
{
    if (bus_config_argc(config) != 3 || !streq(bus_config_arg(config, 1), "verify")) {
        fprintf(stderr, "usage: posctl journal verify FILE [--journal-key PUB.pem] "
                        "[--format json]\n");
        return POSCTL_EXIT_USAGE;
    }
    const char *path = bus_config_arg(config, 2);
    const char *key_path = bus_config_str(config, "journal-key");
    node_key_t *key = NULL;
    if (key_path && *key_path && !(key = node_key_load(key_path))) {
        fprintf(stderr, "posctl: cannot load the journal key %s: %s\n", key_path,
                errno == EINVAL ? "no Ed25519 key in it" : strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    node_journal_status_t status;
    bool ok = node_journal_verify(path, key, &status) == 0;
    node_key_destroy(&key);
    if (!ok && status.error != 0 && status.bad_offset == 0) {
        fprintf(stderr, "posctl: journal %s: %s\n", path, status.reason);
        return POSCTL_EXIT_FAIL;
    }
    const char *format = bus_config_str(config, "format");
    if (format && streq(format, "json"))
        s_print_json(&status, ok);
    else
        s_print_text(&status, ok);
    return ok ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
}
