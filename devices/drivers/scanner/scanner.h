/*  =========================================================================
    scanner.h - barcode scanners on a serial line (RS-232, USB-CDC) or TCP

    serial_scanner_driver is the node_driver_t (node/device.h) of a
    scanner that sends each code as printable ASCII followed by CR, LF or
    CR LF (docs/protocols.md section 5). It has no jobs (every verb is
    refused); each code the scanner sends is published as the event
    "scan" {code, symbology ("ean13", "ean8", "upca" or "other"), valid}
    where valid says whether an EAN-13, EAN-8 or UPC-A check digit is
    right (always true for other symbologies: Code 128 SKUs carry no
    check digit the register could verify). A code with a wrong check
    digit is published too, valid false: the till refuses it aloud
    rather than the scan vanishing. A line that is not a code (longer
    than DRV_SCANNER_CODE_MAX, or holding bytes that are not printable
    ASCII) is discarded and published as "bad_read" {reason, length,
    bad_reads}.

    Options (the device line's OPTIONS): suffix=any|cr|lf|crlf, the
    terminator the scanner is set up to send (default any: CR, LF or
    CR LF each end a code).
    =========================================================================
*/
#ifndef SCANNER_H_INCLUDED
#define SCANNER_H_INCLUDED

#include <node/device.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DRV_SCANNER_CODE_MAX 64 /* bytes of one code */

extern const node_driver_t serial_scanner_driver;

#ifdef __cplusplus
}
#endif
#endif
