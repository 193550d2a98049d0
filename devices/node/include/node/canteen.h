/*  =========================================================================
    node/canteen.h - canteen terminals on a register: taps sold, offline
    transactions collected, the card blocklist pushed

    A register may drive canteen consumption terminals (消费机) through the
    `canteen` driver (docs/canteen-protocol.md). This module turns that
    line's events into the till's work and the till's answers into jobs for
    the line:

      - a card tap (event `tap`) is sold by node_till_tap while the terminal
        still waits (its online wait, 3 s by default): approved or declined
        with a text (`answer` job). A tap older than S_FRESH_MS here, or one
        the till cannot take now (busy), is left to the terminal's own rule,
        which approves it offline within its offline_max or declines it;
      - offline transactions (`offline_tx`) are collected (`collect`) when a
        terminal says it has some and sold in sequence order; the terminal is
        acknowledged only up to the last one the journal holds (the next
        `collect` carries it), so a crash costs a second delivery, never a
        sale, and a delivery twice is sold once;
      - the stored-value blocklist the register pulls from payments is pushed
        to each canteen line as versioned updates (a full list at first and
        when a terminal is too far behind, then differences).

    The till's thread only. Never blocks: jobs go to the device's queue.
    =========================================================================
*/
#ifndef NODE_CANTEEN_H_INCLUDED
#define NODE_CANTEEN_H_INCLUDED

#include <stdint.h>

#include <bus/val.h>

#include "node/svcard.h"
#include "node/till.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct node_canteen_t node_canteen_t;

/*  Queue job verb with text data on the named device under key. 0 or 1 queued (or already),
    -1 not (no such device, queue full). */
typedef int (*node_canteen_submit_fn)(void *arg, const char *device, const char *key,
                                      const char *verb, const char *data);

/*  till and svcards (may be NULL: no blocklist) borrowed; sku: the catalog item a tap sells
    (NULL: "CANTEEN"); fees (copied; NULL or "": none): the terminals' online wait, offline
    limit, meal periods and fee rules in the driver's `fees` job text (docs/canteen-protocol.md),
    sent to each line when it first reports, and kept and pushed by the driver to every terminal
    that (re)starts. NULL when memory runs out. */
node_canteen_t *node_canteen_new(node_till_t *till, node_svcard_t *svcards, const char *sku,
                                 const char *fees, node_canteen_submit_fn submit, void *arg);
void node_canteen_destroy(node_canteen_t **self_p);

/*  An event of the canteen device named device, published by its driver at at_ms (monotonic
    ms; now_ms likewise). The till's reply for a tap or an offline transaction it sold or
    refused (caller destroys), or NULL. */
bus_val_t *node_canteen_event(node_canteen_t *self, const char *device, const char *event,
                              const bus_val_t *body, int64_t at_ms, int64_t now_ms);

/*  Call often: taps the till was busy for, collects due, blocklist updates. Replies as
    node_canteen_event's, one per call at most (call again while it returns one). */
bus_val_t *node_canteen_tick(node_canteen_t *self, int64_t now_ms);

/*  {taps, approved, declined, left_to_terminal, offline_sold, duplicates, conflicts,
    blocklist_pushes} (caller destroys). */
bus_val_t *node_canteen_stats(const node_canteen_t *self);

#ifdef __cplusplus
}
#endif
#endif
