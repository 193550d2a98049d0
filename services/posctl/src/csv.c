/*  =========================================================================
    csv.c - CSV records (RFC 4180) for posctl: split and quote, no I/O

    One pass over the bytes with one bit of state (inside quotes or not).
    The only look-ahead is after a quote inside quotes: a second quote is a
    literal quote, anything else closes the field. When that quote is the
    last byte of input that is not final, the answer is not known yet, so
    the record is reported incomplete and the caller reads more; this keeps
    a record split across two reads identical to the same record read whole.
    =========================================================================
*/
#include <string.h>
#include "csv.h"

int posctl_csv_record(const char *in, size_t len, bool final, size_t *used, char *out, size_t size,
                      char **fields, int max, int *lines)
{
    size_t i = 0, o = 0;
    int n = 0, newlines = 0;
    bool quoted = false;
    *used = 0;
    if (len == 0)
        return 0;
    if (max < 1 || size < 1)
        return POSCTL_CSV_ETOOMANY;
    fields[n++] = out;
    while (i < len) {
        char c = in[i++];
        if (c == '\0')
            return POSCTL_CSV_ENUL;
        if (quoted) {
            if (c == '"') {
                if (i == len && !final)
                    return 0; /* closing quote or the first of a doubled one: read more */
                if (i < len && in[i] == '"')
                    i++;
                else {
                    quoted = false;
                    continue;
                }
            } else if (c == '\n')
                newlines++;
        } else if (c == '"') {
            quoted = true;
            continue;
        } else if (c == ',') {
            if (n == max)
                return POSCTL_CSV_ETOOMANY;
            if (o + 1 >= size)
                return POSCTL_CSV_ETOOLONG;
            out[o++] = '\0';
            fields[n++] = out + o;
            continue;
        } else if (c == '\n') {
            newlines++;
            goto out_complete;
        } else if (c == '\r')
            continue;
        if (o + 1 >= size)
            return POSCTL_CSV_ETOOLONG;
        out[o++] = c;
    }
    if (!final)
        return 0;
    if (quoted)
        return POSCTL_CSV_EQUOTE;
out_complete:
    out[o] = '\0';
    *used = i;
    if (lines)
        *lines += newlines;
    return n;
}

const char *posctl_csv_strerror(int code)
{
    switch (code) {
    case POSCTL_CSV_EQUOTE:
        return "unterminated quote";
    case POSCTL_CSV_ETOOLONG:
        return "record too long";
    case POSCTL_CSV_ETOOMANY:
        return "too many fields";
    case POSCTL_CSV_ENUL:
        return "NUL byte (binary data, not CSV text)";
    default:
        return "no error";
    }
}

/*  Whether field must be quoted to read back as itself (and survive a spreadsheet's trimming). */
static bool s_needs_quotes(const char *field, size_t len)
{
    if (len > 0 && (field[0] == ' ' || field[len - 1] == ' '))
        return true;
    return strpbrk(field, ",\"\r\n") != NULL;
}

size_t posctl_csv_quote(const char *field, char *out, size_t size)
{
    size_t len = strlen(field);
    size_t need = 0;
    bool quote = s_needs_quotes(field, len);
#define S_PUT(ch)                                                                                  \
    do {                                                                                           \
        if (need + 1 < size)                                                                       \
            out[need] = (ch);                                                                      \
        need++;                                                                                    \
    } while (0)
    if (quote)
        S_PUT('"');
    for (size_t i = 0; i < len; i++) {
        if (field[i] == '"')
            S_PUT('"');
        S_PUT(field[i]);
    }
    if (quote)
        S_PUT('"');
#undef S_PUT
    if (size > 0)
        out[need < size ? need : size - 1] = '\0';
    return need;
}
