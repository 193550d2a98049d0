/*  =========================================================================
    node/device.h - one peripheral of the register, on a thread of its own

    Modelled on UnifiedPOS: a device is opened (its transport), claimed
    (its thread owns it exclusively), enabled (it takes jobs), and released
    and closed when posnode stops. Each device runs on its own thread so
    that a printer out of paper, a scale that stopped answering or a card
    terminal in a long dialogue never blocks the till or another device.

    A driver (devices/drivers/<driver>/) knows the byte protocol; this
    module does the rest the same way for every driver: opening the
    transport and reopening it with backoff when the device disappears,
    the job queue with idempotency keys (a job whose key was carried out
    already is not carried out again: a retried command never prints
    twice), health (ok, warn, error, offline, with a detail text),
    statistics (bytes, jobs, errors, reconnects) and events, published by
    the caller's hook as device.<store>.<register>.<device>.<event>.

    Functions taking a node_device_t * are for the device's own thread (the
    driver's callbacks) unless they say thread-safe.
    =========================================================================
*/
#ifndef NODE_DEVICE_H_INCLUDED
#define NODE_DEVICE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/val.h>

#include "node/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_DEVICE_NAME_MAX   32
#define NODE_DEVICE_DETAIL_MAX 120
#define NODE_DEVICE_KEY_MAX    64
#define NODE_DEVICE_QUEUE_MAX  256 /* jobs waiting for one device */

typedef enum {
    NODE_HEALTH_OK = 0,
    NODE_HEALTH_WARN,    /* works, needs attention soon (paper near end) */
    NODE_HEALTH_ERROR,   /* cannot work until someone acts (paper out, cover open) */
    NODE_HEALTH_OFFLINE, /* not reachable */
} node_health_t;

const char *node_health_name(node_health_t health);

typedef struct node_device node_device_t;

/*  A job for a device: what to do (a driver's verb: "print", "drawer", "display", ...), its
    data (bytes), and an idempotency key ("" = none). */
typedef struct {
    char key[NODE_DEVICE_KEY_MAX + 1];
    char verb[NODE_DEVICE_NAME_MAX + 1];
    uint8_t *data;
    size_t len;
} node_job_t;

/*  What a driver provides. Every callback runs on the device's thread, may block on its
    transport with timeouts, and must return within a few seconds. */
typedef struct {
    const char *name; /* "escpos" */
    const char *kind; /* "printer" */
    /*  Driver state from the device's options text (may be ""). NULL with why. */
    void *(*create)(const char *options, char *why, size_t size);
    void (*destroy)(void *state);
    /*  The transport was just opened: find out the device's state (and set its health). 0, or -1
        (the transport is closed and opened again later). */
    int (*attach)(void *state, node_device_t *dev);
    /*  Carry out job. 1 done, 0 not now (the device cannot yet: it stays first in the queue and
        is tried again after a pause; the driver keeps its own progress), -1 refused (dropped,
        counted, reported). */
    int (*run)(void *state, node_device_t *dev, const node_job_t *job);
    /*  Nothing to do: look at the device (status, health) every idle interval. */
    void (*idle)(void *state, node_device_t *dev);
    /*  May be NULL. The device sent something unasked (a scanner's code, a terminal's
        message) while no job runs: read it from the transport and publish what it means
        (node_device_event). Return -1 when the transport should be closed and reopened. */
    int (*input)(void *state, node_device_t *dev);
} node_driver_t;

/*  Publishes an event of a device: topic suffix "<device>.<event>", type, body (taken). */
typedef void (*node_device_event_fn)(void *arg, const char *device, const char *event,
                                     bus_val_t **body);

/*  A device named name (1-32 letters, digits, '_', '-') driven by driver over the transport
    spec, with driver options; started on its own thread (open, claim, enable). NULL with why. */
node_device_t *node_device_start(const char *name, const node_driver_t *driver,
                                 const char *transport, const char *options,
                                 node_device_event_fn event, void *event_arg, char *why,
                                 size_t size);

/*  Disable, release and close it, stop its thread (waiting for a running job to end). */
void node_device_stop(node_device_t **self_p);

/*  Queue a job (data copied). 0, 1 when key was carried out or queued already (nothing
    queued), -1 when the queue is full. Thread-safe. */
int node_device_submit(node_device_t *self, const char *key, const char *verb, const void *data,
                       size_t len);

/*  As node_device_submit, but ahead of every waiting job (not of one already running): the
    cash drawer must not wait behind a receipt held up by paper. Thread-safe. */
int node_device_submit_first(node_device_t *self, const char *key, const char *verb,
                             const void *data, size_t len);

/*  {name, kind, health, detail} (the devices service's row) and the statistics {bytes_in,
    bytes_out, jobs, jobs_failed, errors, reconnects, opens, queued, transport}. Thread-safe. */
bus_val_t *node_device_health(node_device_t *self);
bus_val_t *node_device_stats(node_device_t *self);

const char *node_device_name(const node_device_t *self);

/* ---- for drivers (the device's thread) ------------------------------------------------- */

/*  One item "name=N" (len bytes at item, from a driver's comma-separated options text) as an
    integer within [min, max] into *out. 0, or -1 with why. */
int node_device_option_int(const char *item, size_t len, const char *name, int min, int max,
                           int *out, char *why, size_t size);

node_transport_t *node_device_transport(node_device_t *self);
/*  Set health and detail; a change is published as the event "status". */
void node_device_set_health(node_device_t *self, node_health_t health, const char *detail);
/*  Publish an event of this device (body taken). */
void node_device_event(node_device_t *self, const char *event, bus_val_t **body);
/*  Whether the device is being stopped (a driver waiting for paper gives up then). */
bool node_device_stopping(node_device_t *self);

#ifdef __cplusplus
}
#endif
#endif
