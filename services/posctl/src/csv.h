/*  =========================================================================
    csv.h - CSV records (RFC 4180) for posctl: split and quote, no I/O

    Catalog files come from spreadsheets and supplier systems, so the
    parser is lenient where that is harmless (CRLF or LF line ends, a quote
    may start anywhere in a field) and strict where a wrong guess would
    import wrong data: an unterminated quote, a NUL byte, a record longer
    than the caller's buffer or with more fields than it expects is an
    error, never a silently shortened row. Input is a byte range, so the
    caller decides how to read the file and the parser can be fuzzed alone.

    Thread-safe: no state outside the caller's arguments.
    =========================================================================
*/
#ifndef POSCTL_CSV_H_INCLUDED
#define POSCTL_CSV_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define POSCTL_CSV_EQUOTE   -1 /* a quoted field is not closed at the end of the input */
#define POSCTL_CSV_ETOOLONG -2 /* the record does not fit the caller's output buffer */
#define POSCTL_CSV_ETOOMANY -3 /* more fields than the caller allows */
#define POSCTL_CSV_ENUL     -4 /* a NUL byte: binary data, not text */

/* Split the record at the start of in[0..len) into fields. The unquoted bytes of each field are
   copied to out (size bytes), each NUL-terminated, and fields[i] points at field i. Doubled quotes
   inside quotes become one quote; commas, CR and LF inside quotes are data; a CR outside quotes is
   dropped. Returns the number of fields (>= 1; a blank line is one empty field) and sets *used to
   the bytes consumed including the line end; *lines (if not NULL) grows by the line ends consumed.
   Returns 0 with *used 0 when in holds no whole record: at the end of the input when final (len
   0), else "read more and call again" (a record ends at a newline outside quotes, or at the end of
   final input). A negative POSCTL_CSV_E* code on a bad record (*used is then 0). */
int posctl_csv_record(const char *in, size_t len, bool final, size_t *used, char *out, size_t size,
                      char **fields, int max, int *lines);

/* The message for a POSCTL_CSV_E* code (a static string). */
const char *posctl_csv_strerror(int code);

/* Write field to out (size bytes, NUL-terminated, truncated if short) as one CSV field: as is
   when it holds no comma, quote, CR or LF and does not start or end with a space, else in quotes
   with inner quotes doubled. Returns the length the quoted field needs (without the NUL), like
   snprintf, so a result >= size means out was too small. */
size_t posctl_csv_quote(const char *field, char *out, size_t size);

#endif
