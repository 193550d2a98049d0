/*  =========================================================================
    node/svcard.h - the register's local copy of what it knows of stored-value cards

    A till that cannot reach the payments service may still take a
    stored-value card, within limits it must know on its own: the blocklist
    (pulled with card.blocklist {since} while online, applied change by
    change) and, per card seen online, its offline cap and its last known
    balance (from card.get and card.pay answers). A card never seen online
    is unknown here: its offline cap counts as 0, so it cannot be taken
    offline.

    What the register took offline and has not uploaded yet is not kept
    here: it is in the journal (sv_offline audit records), the only place
    that must survive a crash. This store is a cache that may be behind: it
    is written atomically (node/file.h) but not synced; a crash puts an
    older file back, whose older blocklist version makes the next pull fetch
    the changes again (applying a change twice is harmless).

    Not thread-safe: the till's thread only. Never prints.
    =========================================================================
*/
#ifndef NODE_SVCARD_H_INCLUDED
#define NODE_SVCARD_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_SVCARD_ID_MAX 32 /* bytes of a card id: letters, digits, _ and - */

typedef struct node_svcard_t node_svcard_t;

typedef struct {
    bool known;      /* seen online (card.get or card.pay answered for it) */
    bool blocked;    /* on the blocklist as the register last pulled it */
    int64_t cap;     /* the most the register may take offline, fen (0: no offline use) */
    int64_t balance; /* the balance payments last told (fen) */
    int64_t seen_ms; /* when payments last told about it */
} node_svcard_info_t;

/*  True for a card id: 1-32 letters, digits, `_` or `-`. */
bool node_svcard_id_ok(const char *card);

/*  The store kept at path, read when the file exists. A missing file is an empty store; a
    damaged one is set aside (the store starts empty and why says so; the next blocklist pull
    starts from version 0). NULL only when memory runs out. */
node_svcard_t *node_svcard_open(const char *path, char *why, size_t size);
void node_svcard_destroy(node_svcard_t **self_p);

/*  What the store knows of card (all zero when nothing). */
void node_svcard_get(const node_svcard_t *self, const char *card, node_svcard_info_t *out);

/*  payments told about card at ms: a card.get answer (cap >= 0) or a deduction's (cap < 0:
    the cap is kept). blocked < 0 leaves the status as the store has it. 0 or -1 (memory). */
int node_svcard_seen(node_svcard_t *self, const char *card, int64_t cap, int64_t balance,
                     int blocked, int64_t ms);

/*  One blocklist change (card blocked or unblocked), and the list version pulled up to. */
int node_svcard_block(node_svcard_t *self, const char *card, bool blocked);
int64_t node_svcard_since(const node_svcard_t *self);
void node_svcard_set_since(node_svcard_t *self, int64_t version);
/*  The blocked cards one by one (borrowed ids, valid until the store changes): start with
    *pos = 0; NULL when there are no more. */
const char *node_svcard_next_blocked(const node_svcard_t *self, size_t *pos);
/*  Cards known, and of those blocked. */
size_t node_svcard_count(const node_svcard_t *self, size_t *blocked);

/*  Write the store to its file when it changed since the last save. 0, or -1 with why. */
int node_svcard_save(node_svcard_t *self, char *why, size_t size);

#ifdef __cplusplus
}
#endif
#endif
