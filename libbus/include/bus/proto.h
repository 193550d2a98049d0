/*  =========================================================================
    bus/proto.h - the request-routing wire protocol between busd, clients
    and service instances (documented for outsiders in docs/protocol.md)

    All three connect DEALER sockets to busd's ROUTER. Every message starts
    with a protocol frame naming the peer kind and version, then a command:

    client  -> busd   BUS1C REQ  <service>  <corr>  <payload>
    busd    -> client BUS1C REP  <corr>  <payload>
    worker  -> busd   BUS2W HB   <service>  <instance>     (registers and keeps alive)
    worker  -> busd   BUS2W REP  <client>  <corr>  <payload>
    worker  -> busd   BUS2W BYE  <service>  <instance>     (clean shutdown)
    busd    -> worker BUS2W REQ  <client>  <corr>  <caller>  <payload>
    busd    -> worker BUS2W HB

    <service> is a name ("sales") for any instance, or "name@instance" for one.
    <caller> is written by busd, never by a client: the identity of the key
    that sent the request (bus/identity.h frame text, e.g. "operator alice"
    or "register S1.R01 S1 R01"), read from the enrolled certificate of the
    CURVE key the request arrived with. Version 2 of the worker protocol
    added it; busd ignores version-1 workers (bad_frames).
    <corr> is an opaque correlation id chosen by the client (8 bytes from
    libbus); the reply carries it back unchanged. <payload> is one envelope
    (bus/msg.h): a request has the method as its type ("health", "stats",
    ...); a reply has type "reply", or "error" with body {code, message}.
    busd answers requests to the service "busd" itself ("health", "stats",
    "services") and sends an "error" reply with code "no_service" when no
    instance of the named service is registered.
    =========================================================================
*/
#ifndef BUS_PROTO_H_INCLUDED
#define BUS_PROTO_H_INCLUDED

#define BUS_PROTO_CLIENT "BUS1C"
#define BUS_PROTO_WORKER "BUS2W"
#define BUS_CMD_REQ      "REQ"
#define BUS_CMD_REP      "REP"
#define BUS_CMD_HB       "HB"
#define BUS_CMD_BYE      "BYE"

#define BUS_SERVICE_NAME_MAX 64
#define BUS_INSTANCE_MAX     128
#define BUS_BROKER_SERVICE   "busd"

/* Standard error codes carried in an "error" reply body. */
#define BUS_ERR_NO_SERVICE     "no_service"
#define BUS_ERR_UNKNOWN_METHOD "unknown_method"
#define BUS_ERR_BAD_REQUEST    "bad_request"
#define BUS_ERR_INTERNAL       "internal"
#define BUS_ERR_UNAVAILABLE    "unavailable"
#define BUS_ERR_FORBIDDEN      "forbidden" /* the caller's role may not do this */

#endif
