/*  =========================================================================
    node/till.h - the register's till: the open ticket, the cashier, the journal

    The till is what a cashier works with. It holds the open ticket and
    prices it with libpos from the catalog replica and the configuration's
    promotions, without asking the back office; it asks the logged-in
    cashier's permissions (node/cashier.h) before a void, a return, a price
    override, a discount over the cap, a no-sale drawer open or an X or Z
    report, and takes a supervisor's approval on the spot. When a ticket is
    paid, the sale is appended to the journal and fdatasync()ed before the
    till answers: a sale the till reports as complete is on the disk.

    Sales are numbered gap-free per register (the sale id is
    <store>-<register>-<seq>, seq counting only sale records, so audit and
    mark records between them leave no hole in what the back office sees).
    Audit records (every permission decision, login, logout, cash in and
    out) go to the journal as NODE_JOURNAL_AUDIT and to the bus through the
    publish hook; a Z report is a NODE_JOURNAL_MARK record that closes the
    shift the X report shows.

    Commands are text lines (docs/posnode.md lists them all), answered with
    one map: ok, the command, an error code and message when refused, and
    the ticket as it stands. If the journal refuses a write (disk full, an
    I/O error), the sale stays paid on the till, the answer says selling is
    stopped and why, and `pay` with no argument retries the write.

    Not thread-safe: one till, one thread. Never prints.
    =========================================================================
*/
#ifndef NODE_TILL_H_INCLUDED
#define NODE_TILL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/val.h>

#include "node/cashier.h"
#include "node/catalog.h"
#include "node/config.h"
#include "node/key.h"
#include "node/svcard.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_TILL_LINE_MAX 512 /* bytes of one command line */
#define NODE_TILL_WHY_MAX  240

/*  What the till needs from around it. Every hook may be NULL. */
typedef struct {
    void *arg;
    /*  A request to a back-office service (park, recall, the original of a return). The reply
        body (caller destroys), or NULL with *offline set when the back office could not be
        reached and err saying why (for a refusal: "<code>: <message>"). */
    bus_val_t *(*request)(void *arg, const char *service, const char *method, bus_val_t **body,
                          bool *offline, char *err, size_t size);
    /*  An event for the bus under node.<store>.<register>.<what> (taken). */
    void (*publish)(void *arg, const char *what, const char *type, bus_val_t **body);
    /*  Wall-clock ms since the epoch (NULL: the real clock). */
    int64_t (*now_ms)(void *arg);
    /*  The last sale number sales acknowledged with every one before it (NULL: unknown, the
        journal is never archived). */
    int64_t (*acked)(void *arg);
    /*  A device command for a peripheral (device is not "till"). With err NULL only ask: 1 it
        would take it, 0 no such device, -1 not that verb or args; nothing is done. With err:
        do it (queue it on the device): 1, or -1 with err. The till asks, journals the
        command, then does it. */
    int (*device)(void *arg, const char *device, const char *command, const bus_val_t *args,
                  char *err, size_t size);
    /*  The register's card terminal (a ZVT device: devices/drivers/zvt/zvt.h names the verbs
        and the data). With verb NULL only ask: 1 there is one, 0 none. Else queue the job
        (key, verb, data text) on it: 1, or -1 with err. Its events come back through
        node_till_card_event. Without a terminal, `pay card` records a card tender taken on a
        standalone terminal. */
    int (*card)(void *arg, const char *verb, const char *key, const char *data, char *err,
                size_t size);
} node_till_hooks_t;

typedef struct node_till_t node_till_t;

/*  Open the register's journal at journal_path with key (borrowed, private; created for store
    and register when missing), read it through for the sale number and the current shift,
    and return a till with no ticket open. session (borrowed) holds the cashiers. NULL with
    a reason in why (the journal's own: a damaged record, another register's journal, ...).
    A torn last record is cut off by the journal and reported in why with a non-NULL result. */
node_till_t *node_till_open(const char *journal_path, const node_key_t *key, const char *store,
                            const char *reg, node_session_t *session,
                            const node_till_hooks_t *hooks, char *why, size_t size);
void node_till_destroy(node_till_t **self_p);

/*  The catalog to price from (borrowed; swap it only between commands). */
void node_till_set_catalog(node_till_t *self, const node_catalog_t *catalog);

/*  Run configuration cfg from the next ticket on: promotions, member prices, cash rounding,
    the discount cap, receipt lines; its cashiers replace the session's table. 0, or -1 with
    why (the cashier table refused: nothing changes). */
int node_till_set_config(node_till_t *self, const node_config_t *cfg, char *why, size_t size);
int64_t node_till_config_version(const node_till_t *self);

/*  After a Z report whose sales are all acknowledged, the journal is archived and a new
    segment starts (node/segment.h); archives older than days (0: never) and acknowledged are
    deleted then. node_till_segment counts the rotations (the uplink reopens on a change). */
void node_till_set_retention(node_till_t *self, int days);
uint64_t node_till_segment(const node_till_t *self);

/*  The sale journaled last in this process (its sale document, borrowed until the next sale)
    and the SHA-256 of its journal record in hex (for the receipt's QR code); NULL and "" before
    the first. The configuration the till runs (receipt lines). */
const bus_val_t *node_till_last_sale_doc(const node_till_t *self);
/*  Sale number k's document read back from the journal (or its archive), for a reprint or a
    receipt not printed before a restart (caller destroys); NULL when there is no such sale or
    it cannot be read. Reads the journal through: for a reprint, not for every sale. */
bus_val_t *node_till_sale_doc(node_till_t *self, int64_t k);
const char *node_till_last_sale_hash(const node_till_t *self);
const node_config_t *node_till_config(const node_till_t *self);

/*  Run one command line; the answer map (caller destroys), NULL only when memory runs out. */
bus_val_t *node_till_command(node_till_t *self, const char *line);

/*  Carry out a device command from the back office (devices' device.pending or the
    command.<store>.<register> event: {key, device, command, args}) and return the answer for
    device.result: {key, ok, result map, error text when not ok}. A command is carried out once
    per key: it is journaled (an audit record of type device_command) before it takes effect, and
    a key seen again, also after a restart, is answered ok with result.already_done. Until the
    the till itself is one device: `till` / `display` {text} shows a text to the cashier
    (office_message in every answer); the others go to the device hook (the register's
    peripherals), after the record is journaled; a device the hook does not know is no_device.
    NULL when cmd has no usable key (nothing to answer to) or the journal refused the record
    (the command stays pending at devices and comes again). */
bus_val_t *node_till_device_command(node_till_t *self, const bus_val_t *cmd);

/*  A card payment at the terminal. `pay card [AMOUNT]` with a terminal journals a card_request
    audit record (key card-<sale>-<ms>, amount, the last trace number known), then hands the
    terminal the job; the ticket is locked until the answer. The terminal's events for it
    ("intermediate" {text}, "result" {verb, key, ok, amount, trace, receipt, unknown,
    resolved}) come here on the till's thread: a result is journaled (card_result) before it
    counts; approved, it becomes the card tender (and the sale completes when paid); declined,
    the cashier takes another tender; unknown, the till asks the terminal (verb status) every
    few seconds from node_till_card_tick until it says, and never sends the payment again. A
    request without a result in the journal at start (the till stopped meanwhile) has lost its
    ticket: it is asked about the same way and reversed if it was charged. The answer to show
    the cashier (caller destroys), or NULL when the event is not the till's. */
bus_val_t *node_till_card_event(node_till_t *self, const char *event, const bus_val_t *body);
/*  Call often (every loop): asks about an unresolved card payment when it is due. */
void node_till_card_tick(node_till_t *self);

/*  A wallet payment code (WeChat, Alipay) through the payments service (docs/payments.md).
    `pay code CODE [AMOUNT]` journals a wallet_request (sale number, attempt, amount, provider,
    the code cut to its first and last four digits), then asks payment.pay; the ticket is locked
    until the intent is final. node_till_wallet_tick asks payment.get every second (payment.pay
    again while payments never answered: the same request is the same payment) and returns the
    answer to show when something changed (caller destroys; NULL otherwise): a final state is
    journaled (wallet_result) before it counts; succeeded becomes the tender (and the sale), failed
    or reversed leaves the ticket to another tender (scanning a code again is the next attempt).
    A request without a result at start lost its ticket: paid, it is cancelled (reversed).
    `pay-status` asks now, `pay-cancel` gives the payment up. */
bus_val_t *node_till_wallet_tick(node_till_t *self);
/*  "wechat" or "alipay" for a payment code by its digits, NULL for anything else. */
const char *node_till_code_provider(const char *code);

/*  Stored-value cards (canteen, campus, member cards) through the payments service
    (docs/posnode.md "Stored-value cards"). `pay sv CARD [AMOUNT]` journals an sv_request (sale
    number, attempt, amount, card), asks card.pay and journals the sv_result: taken, it is the
    stored_value tender (and the sale when paid); refused, the cashier takes another tender. When
    payments cannot be reached, the card is taken only as the store (borrowed; NULL: never
    offline) allows: not on its blocklist, within its offline cap and last known balance,
    counting what this register took offline and has not uploaded. That deduction is journaled
    (sv_offline) and uploaded with card.offline by node_till_sv_tick until payments takes it
    (sv_uploaded), also after a restart. The tick also pulls the blocklist every blocklist_ms
    (0: never) while payments answers. */
void node_till_set_svcards(node_till_t *self, node_svcard_t *store, int64_t blocklist_ms);
/*  Call often (every loop): the blocklist pull and the uploads, when due. */
void node_till_sv_tick(node_till_t *self);
/*  Offline deductions not uploaded yet. */
size_t node_till_sv_pending(const node_till_t *self);

/*  Returns refunded to the tenders they were paid with (docs/posnode.md "Returns"): `pay
    refund` on a return ticket sends what is owed back to the WeChat and Alipay payments of the
    returned sales (payment.refundable says what each may still give back), as (negative)
    wechat/alipay tenders; they are journaled (refund_plan) with the sale and sent to payments
    (payment.refund) by node_till_sv_tick once it is written, until payments answers
    (refund_done), also after a restart. Cash paid out beyond the cash the returned sales took
    needs refund_cash (a supervisor). Refunds journaled and not yet taken by payments: */
size_t node_till_refunds_pending(const node_till_t *self);

/*  A canteen terminal's card tap (docs/posnode.md "Canteen terminals"): asked online, or an
    offline transaction the terminal took itself and the register collected. */
typedef struct {
    const char *device; /* the canteen line's device name */
    int terminal;       /* its address, 1-32 */
    int64_t seq;        /* the terminal's transaction number */
    const char *card;   /* the card's number, in decimal */
    int64_t amount;     /* fen */
    int64_t ts_ms;      /* offline: when the card was tapped */
    bool offline;       /* the terminal took it (recorded, never refused) */
    const char *sku;    /* the catalog item a tap sells (NULL: "CANTEEN") */
} node_till_tap_t;

/*  Sell a tap: a sale of its own (one line at the tap's amount, paid by the card as stored
    value), beside the cashier's ticket and never taking the sale number that ticket holds.
    Online, card.pay as `pay sv` does (offline within the card's cap when payments cannot be
    reached); an offline transaction is journaled as an sv_offline deduction (flagged when the
    register's copy would have refused it) and uploaded. Each tap ("tap:DEVICE:TERMINAL:SEQ")
    is sold once, also after a restart or a Z. The reply (caller destroys) has verdict
    "approve" (text: the balance; duplicate when sold before), "decline" (text for the
    terminal, reason) or "busy" (not now: the cashier's ticket holds the next sale number, or
    the journal refuses; an online tap is left to the terminal, an offline one stays in it). */
bus_val_t *node_till_tap(node_till_t *self, const node_till_tap_t *tap);
/*  The terminal's last offline transaction sold: everything up to it is held here. */
int64_t node_till_tap_held(node_till_t *self, const char *device, int terminal);

/*  The last journal record, the last sale number written, and whether selling is stopped
    (the journal refused a write; node_till_stopped_why says why). */
uint64_t node_till_last_record(const node_till_t *self);
int64_t node_till_last_sale(const node_till_t *self);
bool node_till_stopped(const node_till_t *self);
const char *node_till_stopped_why(const node_till_t *self);

#ifdef __cplusplus
}
#endif
#endif
