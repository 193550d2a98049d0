/*  =========================================================================
    node/uplink.h - the register's link to the back office (its own thread)

    Everything posnode says to or hears from the back office goes through
    the uplink, on a thread of its own, so that the till never waits for
    the network:

      - store and forward: every sale record of the journal is uploaded to
        sales (sale.upload) in sale order, one at a time, resent with
        backoff until it is acknowledged; sales answers a sale it already
        has as a duplicate, so a resend never doubles one. How far uploads
        got is kept in a small file beside the journal (behind after a
        crash at worst, which costs only duplicates). The journal is read
        through its own read-only handle (node_journal_reader);
      - node.hello at start, node.heartbeat every interval with the last
        sale number, the unsynced count and the configuration version (and
        the machine's serial ports, node_transport_ports, when they changed:
        listed at start and every minute, each marked with the device that
        uses it, found from the devices' transports); a
        heartbeat's committed_seq moves the upload mark forward, its resend
        (and the register.<S>.<R>.resend event) sends that range again;
      - the catalog replica: synced at start and on catalog.changed into a
        new catalog, saved, then handed to the till's thread;
      - the configuration: fetched (config.get) at start and on
        config.<store>.changed, saved, then handed over;
      - events the till publishes (audit records, Z reports) under
        node.<store>.<register>.*: queued, published when connected;
      - device commands (command.<store>.<register>, and device.pending when a
        heartbeat says some wait) handed to the till, its answers sent back with
        device.result.

    Thread-safe where it says so: the functions below may be called from
    the till's thread while the uplink runs.
    =========================================================================
*/
#ifndef NODE_UPLINK_H_INCLUDED
#define NODE_UPLINK_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include <bus/conn.h>
#include <bus/val.h>

#include "node/catalog.h"
#include "node/key.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    bus_conn_cfg_t conn; /* endpoints and the register's CURVE certificate */
    const char *store, *reg;
    const char *version;      /* posnode's version, for node.hello */
    const char *journal_path; /* read through a node_journal_reader */
    const node_key_t *key;    /* the journal's key (borrowed) */
    const char *state_dir;    /* uploaded mark, catalog and configuration files */
    int heartbeat_ms;         /* node.heartbeat interval */
    int timeout_ms;           /* per request */
    int backoff_max_ms;       /* longest wait between resends */
    uint64_t last_record;     /* what the journal holds at start */
    int64_t last_sale;
    int64_t config_version; /* the configuration the till starts with */
} node_uplink_cfg_t;

typedef struct {
    bool online;        /* the last request to the back office was answered */
    bool silent;        /* the last heartbeat had no answer at all (busd or the network away):
                           the till's own requests fail at once instead of waiting it out */
    int64_t last_sale;  /* what the till has journaled */
    int64_t acked;      /* every sale up to this one is acknowledged */
    int64_t unsynced;   /* last_sale - acked */
    int64_t uploaded;   /* sale.upload answered ok (duplicates included), since start */
    int64_t duplicates; /* of which sales had already */
    int64_t resends;    /* resend ranges asked for */
    int64_t upload_errors;
    char blocked[200];    /* a sale sales refuses (bad_sale...): uploads wait on it; "" if none */
    char last_error[200]; /* the last failure, for the cashier's screen and the log */
} node_uplink_status_t;

typedef struct node_uplink_t node_uplink_t;

/*  Start the uplink thread (cfg's strings are copied). NULL with a reason in why. */
node_uplink_t *node_uplink_start(const node_uplink_cfg_t *cfg, char *why, size_t size);

/*  Stop the thread (saving the upload mark) and free everything. NULL-safe. */
void node_uplink_stop(node_uplink_t **self_p);

/*  The till journaled up to record last_record and sale last_sale (thread-safe). Call
    node_uplink_segment first when node_till_segment changed (the journal was archived and a new
    segment started: record numbers start again). */
void node_uplink_journaled(node_uplink_t *self, uint64_t last_record, int64_t last_sale);
void node_uplink_segment(node_uplink_t *self, uint64_t segment);

/*  The configuration version the till runs, for heartbeats (thread-safe). */
void node_uplink_running_config(node_uplink_t *self, int64_t version);

/*  The devices' health rows ({name, kind, health, detail, stats}, taken) sent with hello and
    every heartbeat from now on (thread-safe). A serial port is marked as used by the device
    whose stats.transport ("serial:PATH,...") names it. */
void node_uplink_set_devices(node_uplink_t *self, bus_val_t **rows_p);

/*  Queue an event for node.<store>.<register>.<what>, or device.<store>.<register>.<rest> when
    what is "device:<rest>" (body taken; thread-safe). */
void node_uplink_publish(node_uplink_t *self, const char *what, const char *type,
                         bus_val_t **body_p);

/*  A newly synced catalog or configuration document, once (caller owns it), else NULL
    (thread-safe). */
node_catalog_t *node_uplink_take_catalog(node_uplink_t *self);
bus_val_t *node_uplink_take_config(node_uplink_t *self);

/*  Device commands for the till (an array of {key, device, command, args}; caller owns it), or
    NULL (thread-safe). The till's answer goes back with node_uplink_command_result (taken),
    sent with device.result until devices has it. A command seen twice (event and
    device.pending) is answered twice: the till carries it out once per key. */
bus_val_t *node_uplink_take_commands(node_uplink_t *self);
void node_uplink_command_result(node_uplink_t *self, bus_val_t **result_p);

/*  A file descriptor that becomes readable when there is something to take; read it with
    node_uplink_clear_signal. */
int node_uplink_signal_fd(node_uplink_t *self);
void node_uplink_clear_signal(node_uplink_t *self);

void node_uplink_status(node_uplink_t *self, node_uplink_status_t *out);

#ifdef __cplusplus
}
#endif
#endif
