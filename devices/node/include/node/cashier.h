/*  =========================================================================
    node/cashier.h - cashier PINs, roles, permissions and the till session

    A register has one cashier logged in at a time. Some actions (a line
    void, a return, a price override, a discount over the cap, a no-sale
    drawer open, the X and Z reports) need a permission; a cashier without
    it gets a supervisor to approve on the spot with their own PIN. Every
    decision, allowed or refused, comes back as an audit record that posnode
    writes to the journal (NODE_JOURNAL_AUDIT) and publishes on the bus.

    PINs are never stored: the cashier table holds scrypt hashes in a
    self-describing string (docs/cashier.md), made by node_pin_hash where
    cashiers are added (posctl cashier add) and checked here. The library
    keeps no copy of a PIN; the caller wipes its own buffer after the call.

    Lockout: 5 wrong PINs for one cashier id (at login or when approving)
    lock that id for 60 s; attempts during the lock are refused without
    looking at the PIN and are not counted. Time comes from a clock the
    caller may inject, so tests need not sleep.

    Commands return 0 or -1 with errno and a reason (node_session_errstr).
    Never prints. Not thread-safe: one session, one thread.
    =========================================================================
*/
#ifndef NODE_CASHIER_H_INCLUDED
#define NODE_CASHIER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/val.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_PIN_MIN_DIGITS 4
#define NODE_PIN_MAX_DIGITS 8
#define NODE_PIN_HASH_MAX   128 /* bytes of a stored hash string, NUL included */

#define NODE_CASHIER_ID_MAX     16 /* 1-16 [A-Za-z0-9_] */
#define NODE_CASHIER_NAME_MAX   64 /* bytes of a display name, any UTF-8 but no control bytes */
#define NODE_CASHIER_REASON_MAX 120
#define NODE_CASHIER_MAX_FAILS  5     /* wrong PINs in a row before an id is locked */
#define NODE_CASHIER_LOCKOUT_MS 60000 /* how long a locked id stays locked */
#define NODE_CASHIER_TABLE_MAX  1000  /* cashiers in one table */

typedef enum {
    NODE_ROLE_CASHIER = 0,
    NODE_ROLE_SUPERVISOR,
    NODE_ROLE_MANAGER,
    NODE_ROLE__COUNT
} node_role_t;

/* The actions that need a permission. Names (node_action_name) are the audit record's. */
typedef enum {
    NODE_ACTION_VOID_LINE = 0,     /* "void_line" */
    NODE_ACTION_RETURN,            /* "return" */
    NODE_ACTION_PRICE_OVERRIDE,    /* "price_override" */
    NODE_ACTION_DISCOUNT_OVER_CAP, /* "discount_over_cap" */
    NODE_ACTION_NO_SALE,           /* "no_sale" */
    NODE_ACTION_X_REPORT,          /* "x_report" */
    NODE_ACTION_Z_REPORT,          /* "z_report" */
    NODE_ACTION_REFUND_CASH,       /* "refund_cash": a return paid out in cash beyond the cash
                                      the returned sales took (instead of their tenders) */
    NODE_ACTION__COUNT
} node_action_t;

#define NODE_PERM(action) ((uint32_t)1 << (action))
#define NODE_PERM_ALL     (NODE_PERM(NODE_ACTION__COUNT) - 1)
#define NODE_PERM_ROLE    UINT32_MAX /* a cashier record's mask: take the role's defaults */

/*  One row of the cashier table, as the register's configuration carries it. */
typedef struct {
    char id[NODE_CASHIER_ID_MAX + 1];
    char name[NODE_CASHIER_NAME_MAX + 1];
    node_role_t role;
    char pin_hash[NODE_PIN_HASH_MAX]; /* node_pin_hash's string */
    uint32_t permissions;             /* NODE_PERM bits, or NODE_PERM_ROLE */
    bool active;                      /* false: disabled, cannot log in or approve */
} node_cashier_t;

/*  What authorize decided, for the journal and the bus. The approver fields name the approver
    asked for (a known id), refusals included; empty when the cashier's own permission sufficed
    or no known approver was named. */
typedef struct {
    node_action_t action;
    char cashier_id[NODE_CASHIER_ID_MAX + 1];
    char cashier_name[NODE_CASHIER_NAME_MAX + 1];
    char approver_id[NODE_CASHIER_ID_MAX + 1];
    char approver_name[NODE_CASHIER_NAME_MAX + 1];
    bool approved; /* the action may go ahead */
    char reason[NODE_CASHIER_REASON_MAX];
} node_audit_t;

/*  Milliseconds on a clock that never goes back; arg is the one given to node_session_new. */
typedef int64_t (*node_clock_fn)(void *arg);

typedef struct node_session_t node_session_t;

/*  NULL if pin is 4-8 ASCII digits, else why not (a constant string). */
const char *node_pin_check(const char *pin);

/*  Hash pin with scrypt and a fresh random 16-byte salt into out (size bytes, NUL-terminated):
    "scrypt$N$r$p$<salt base64>$<hash base64>". 0, or -1 with errno: EINVAL (pin breaks the
    rules: node_pin_check says why), ENOSPC (out too small; NODE_PIN_HASH_MAX is enough), EIO
    (OpenSSL failed). Costs one scrypt (tens of ms, docs/cashier.md). */
int node_pin_hash(const char *pin, char *out, size_t size);

/*  Whether stored is a hash string this library can check (format and parameter bounds). */
bool node_pin_hash_valid(const char *stored);

/*  Whether pin matches stored, comparing in constant time. False for a malformed stored string
    (never reads past it) and for a pin that breaks the rules. Costs one scrypt with stored's
    own parameters, so hashes made with other parameters keep working. */
bool node_pin_verify(const char *pin, const char *stored);

/*  "cashier", "supervisor", "manager"; NULL out of range. */
const char *node_role_name(node_role_t role);
/*  A role by name; -1 if no such role. */
int node_role_from_name(const char *name);

/*  "void_line", "return", ...; NULL out of range. */
const char *node_action_name(node_action_t action);
/*  An action by name; -1 if no such action. */
int node_action_from_name(const char *name);

/*  The default permissions of a role: cashier none; supervisor void_line, return,
    price_override, discount_over_cap, no_sale, x_report; manager all. */
uint32_t node_role_permissions(node_role_t role);

/*  The permissions cashier has: its mask, or its role's defaults for NODE_PERM_ROLE. */
uint32_t node_cashier_permissions(const node_cashier_t *cashier);

/*  A session with an empty cashier table. clock may be NULL (CLOCK_MONOTONIC). Computes one
    hash up front (a dummy that unknown ids are checked against, so that they take as long as
    known ones). NULL on failure with errno. */
node_session_t *node_session_new(node_clock_fn clock, void *clock_arg);

/*  Destroy *self_p (NULL-safe) and set it to NULL. */
void node_session_destroy(node_session_t **self_p);

/*  Replace the cashier table with count records (copied). Every record is checked first (id
    format, ids unique, name, role, permission bits, hash format); on any error nothing changes
    and -1 with EINVAL, the reason naming the record. Lockout counts stay with ids that remain;
    if the logged-in cashier is gone or disabled, the session logs out. */
int node_session_load(node_session_t *self, const node_cashier_t *cashiers, size_t count);

/*  Log cashier id in with pin. 0, or -1 with errno: EBUSY (someone is logged in), ENOENT (no
    such cashier) or EACCES (wrong PIN, counted) with the same reason "wrong id or PIN",
    EPERM (disabled), EAGAIN (locked out; the reason says for how many seconds). */
int node_session_login(node_session_t *self, const char *id, const char *pin);

/*  Log out; 0, or -1 with ENOENT when nobody is logged in. */
int node_session_logout(node_session_t *self);

/*  The logged-in cashier (borrowed until the next load/logout), or NULL. */
const node_cashier_t *node_session_cashier(const node_session_t *self);

/*  May the logged-in cashier do action? Yes if their permissions grant it; otherwise only with
    an approver (approver_id and approver_pin, both may be NULL) who is another active, unlocked
    person with role supervisor or above, at least the cashier's role, whose permissions grant
    the action, and whose PIN is right (a wrong one counts toward the approver's lockout).
    audit (may be NULL) is always filled, refusals included, for the journal. 0 if the action
    may go ahead; -1 with errno: ENOENT (nobody logged in), EACCES (needs an approver, or the
    approval was refused: the reason says why), EAGAIN (approver locked out), EINVAL (bad
    action). */
int node_session_authorize(node_session_t *self, node_action_t action, const char *approver_id,
                           const char *approver_pin, node_audit_t *audit);

/*  Whether id is locked out now, and until when (clock ms) in *until (may be NULL). */
bool node_session_locked(const node_session_t *self, const char *id, int64_t *until);

/*  Why the last command failed. */
const char *node_session_errstr(const node_session_t *self);

/*  The audit record as a MessagePack-ready map: {"type": "audit", "action", "cashier",
    "cashier_name", "approver", "approver_name" (these two only when someone approved),
    "approved", "reason"}. posnode may add the ticket's context before encoding. NULL on
    allocation failure. */
bus_val_t *node_audit_val(const node_audit_t *audit);

#ifdef __cplusplus
}
#endif
#endif
