/*  =========================================================================
    canteen.h - the canteen consumption terminal (消费机) driver

    canteen_driver is the node_driver_t (node/device.h) of a line of
    canteen terminals (addresses 1-32) on RS-485 or a serial server, in
    posbus's own framed protocol (docs/canteen-protocol.md): the host
    polls every terminal, a card tap is reported to the poll and answered
    by the host, offline transactions are collected by sequence.

    Events: tap {terminal, card, amount, seq} (an online tap: answer it),
    answered {terminal, seq, result: approved | declined |
    offline_approved | offline_declined | not_pending | no_answer},
    offline_tx {terminal, card, amount, seq, ts}, collected {terminal,
    after, count, last}, terminal {terminal, up, blocklist_version,
    last_seq, offline} (a change), blocklist {terminal, version},
    blocklist_stale {terminal, version}, configured {terminal, ok},
    stats {...}.

    Verbs (job data as text):
        answer      TERMINAL SEQ approve|decline [TEXT]
        blocklist   BASE VERSION OP... (OP: +CARD, -CARD, clear; BASE 0:
                    applies on any version, as a full list after clear)
        collect     TERMINAL AFTER_SEQ
        fees        ITEM;ITEM...  (params WAIT_MS OFFLINE_MAX_FEN |
                    meal ID HH:MM-HH:MM | fee MEAL CLASS FEN)
        stats       (no data) publish the counters

    Options: terminals=1,2 (default 1), poll_ms=N (default 200),
    reply_ms=N (default 300).

    Health: ok, warn "terminal N not answering", offline "no terminal
    answers".
    =========================================================================
*/
#ifndef CANTEEN_H_INCLUDED
#define CANTEEN_H_INCLUDED

#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

extern const node_driver_t canteen_driver;

#ifdef __cplusplus
}
#endif
#endif
