/*  fuzz_csv - libFuzzer target for posctl's catalog CSV record parser.

    fuzz-sources: services/posctl/src/csv.c
    fuzz-libs:

    Build and run with scripts/fuzz.sh [--time SECONDS] fuzz_csv (clang, libclang-rt-14-dev).

    The input is a whole catalog file. Properties, for every record in it:
    - splitting never crashes or reads or writes out of bounds (ASan, UBSan);
    - a record's fields, quoted again with posctl_csv_quote and read back, are the same fields
      (same count, same bytes) and the re-quoted record is consumed whole;
    - the same bytes offered as an incomplete read (not final, cut anywhere) give either "read
      more" or exactly the same record, never a different split: the importer reads in chunks.
    */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "csv.h"

#define F_OUT_MAX    1024 /* small, so records longer than the buffer are reached too */
#define F_FIELDS_MAX 32

typedef struct {
    int n;
    size_t used;
    int lines;
    char *fields[F_FIELDS_MAX];
} f_rec_t;

static void f_parse(f_rec_t *r, const char *in, size_t len, bool final, char *out)
{
    memset(r, 0, sizeof(*r));
    r->n = posctl_csv_record(in, len, final, &r->used, out, F_OUT_MAX, r->fields, F_FIELDS_MAX,
                             &r->lines);
}

/*  Whether two parses gave the same record. */
static bool f_same(const f_rec_t *a, const f_rec_t *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->fields[i], b->fields[i]) != 0)
            return false;
    return true;
}

/*  Re-quote the fields of r into one record ending in a newline; re-parse it; abort if it
    differs. */
static void f_check_requote(const f_rec_t *r)
{
    size_t cap = 2;
    for (int i = 0; i < r->n; i++)
        cap += 2 * strlen(r->fields[i]) + 3;
    char *line = malloc(cap);
    char *out = malloc(F_OUT_MAX);
    if (!line || !out)
        abort();
    size_t len = 0;
    for (int i = 0; i < r->n; i++) {
        len += posctl_csv_quote(r->fields[i], line + len, cap - len);
        line[len++] = i + 1 < r->n ? ',' : '\n';
    }
    f_rec_t again;
    f_parse(&again, line, len, true, out);
    if (!f_same(r, &again) || again.used != len)
        abort();
    free(out);
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char *out = malloc(F_OUT_MAX), *part_out = malloc(F_OUT_MAX);
    if (!out || !part_out)
        abort();
    size_t pos = 0;
    while (pos < size) {
        f_rec_t r;
        f_parse(&r, in + pos, size - pos, true, out);
        if (r.n == 0 || (r.n > 0 && (r.used == 0 || r.used > size - pos)))
            abort(); /* final input left over must be a record or an error */
        /* a read cut short anywhere: "read more" or the very same record */
        size_t cuts[] = {r.used > 0 ? r.used - 1 : 0, r.used, (size_t)data[pos] % (size - pos + 1)};
        for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
            f_rec_t part;
            f_parse(&part, in + pos, cuts[c], false, part_out);
            if (part.n != 0 && (!f_same(&r, &part) || part.used != r.used))
                abort();
        }
        if (r.n < 0)
            break; /* where the next record starts is unknown */
        for (int i = 0; i < r.n; i++)
            if (r.fields[i] < out || r.fields[i] >= out + F_OUT_MAX)
                abort();
        f_check_requote(&r);
        pos += r.used;
    }
    free(part_out);
    free(out);
    return 0;
}
