/*  =========================================================================
    zvt.h - the ZVT card terminal driver

    zvt_driver is the node_driver_t (node/device.h) of a card terminal that
    speaks ZVT (section 4 of protocols.md): over a serial line, 9600 8N2
    (serial:PATH,baud=9600,data=8,parity=none,stop=2), every APDU in a DLE
    frame with a CRC-16/KERMIT and acknowledged with ACK 06 / NAK 15; over
    TCP (tcp:ADDRESS:PORT) the bare APDU.

    Verbs (the job's data is text):
        authorize   "AMOUNT_FEN [TRACE_BEFORE]": 06 01 with 04 + 6-byte BCD;
                    TRACE_BEFORE is the trace number of the last transaction
                    the caller knows (used to resolve a lost answer while the
                    driver has seen none itself, after a restart)
        reversal    "RECEIPT_NO" (the terminal's receipt number): 06 30
        refund      "AMOUNT_FEN [TRACE_BEFORE]": 06 31
        end_of_day  06 50
        status      "": resolve the authorization whose answer was lost
                    (below); with nothing to resolve, publish the terminal's
                    last transaction. "AMOUNT_FEN [TRACE_BEFORE]": resolve the
                    job's own key, one the caller journaled before a restart
                    (the driver's memory of it is gone): charged when the
                    terminal's last transaction is of that amount and newer
                    than TRACE_BEFORE; published as result {verb authorize,
                    key, ok, resolved true}
    Events: "intermediate" {code, text} as the terminal reports them
    ("insert card"...), "print" {lines} (the receipt lines 06 D1/06 D3),
    "result" {verb, key, ok, amount, receipt, trace, result_code, text}
    (plus unknown: true when the answer was lost, resolved: true when it
    comes from a status enquiry). An approved or done job succeeds (1);
    a declined, aborted or unanswered one fails.

    A lost answer is never charged twice: an authorization the terminal
    took but never answered is published with unknown true and kept as
    unresolved; it is resolved with the terminal's repeat receipt (06 20:
    the last transaction's 04 0F again) by the verb status, at the next
    attach, before any next command, and when the same key is submitted
    again (which then never sends a second 06 01).

    Options (comma-separated, all optional):
        password=NNNNNN  the terminal's password; given, attach registers
                         (06 00) and the commands carry it (else 000000)
        t3_ms=N          how long an ACK or the terminal's 80 00 00 may take
                         (default 5000)
        t4_ms=N          how long a whole dialogue may take (default 180000)
    =========================================================================
*/
#ifndef ZVT_H_INCLUDED
#define ZVT_H_INCLUDED

#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

extern const node_driver_t zvt_driver;

#ifdef __cplusplus
}
#endif
#endif
