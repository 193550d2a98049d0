/*  =========================================================================
    toledo8217.h - the Mettler Toledo 8217 scale driver

    toledo8217_driver is the node_driver_t (node/device.h) of a scale that
    speaks the 8217 protocol (section 5 of docs/protocols.md) on a serial
    line, 9600 baud 7E1 (the transport spec carries the line settings:
    serial:PATH,baud=9600,data=7,parity=even,stop=1).

    Verbs (the job's data is ignored):
        weigh       poll W about every 0.5 s until the scale reports a
                    stable positive weight (at most about 5 s), then
                    publish the event "weight" {grams, stable: true} and
                    succeed; a moving scale is polled again; overload, a
                    negative weight or the time running out publish
                    "weight" {stable: false, reason: "overload" | "negative"
                    | "moving" | "no stable weight" | "no answer"} and fail.
                    A moving or overloaded scale never yields a weight.
        zero        Z: zero the scale
        tare        T: tare the load on it
        clear_tare  C: clear the tare

    Options (the device's options text, comma-separated, all optional):
        weigh_ms=N  how long weigh waits for a stable weight (default 5000)
        poll_ms=N   how often it asks (default 500)

    Health: ok (the detail counts malformed replies, if any), warn "over
    capacity", offline "no answer".
    =========================================================================
*/
#ifndef TOLEDO8217_H_INCLUDED
#define TOLEDO8217_H_INCLUDED

#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

extern const node_driver_t toledo8217_driver;

#ifdef __cplusplus
}
#endif
#endif
