/*  test_csv - posctl's CSV record parser: quoting rules, line ends, errors, split reads */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "csv.h"
#include "testutil.h"

#define T_OUT_MAX    256
#define T_FIELDS_MAX 8

typedef struct {
    int n;
    size_t used;
    int lines;
    char out[T_OUT_MAX];
    char *fields[T_FIELDS_MAX];
} t_rec_t;

static int t_parse(t_rec_t *r, const char *in, size_t len, bool final)
{
    memset(r, 0, sizeof(*r));
    r->n = posctl_csv_record(in, len, final, &r->used, r->out, sizeof(r->out), r->fields,
                             T_FIELDS_MAX, &r->lines);
    return r->n;
}

/*  Whether the record's fields are exactly want[0..n). Prints what differs. */
static bool t_fields(const t_rec_t *r, const char *const *want, int n)
{
    if (r->n != n) {
        printf("     expected %d fields, got %d\n", n, r->n);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (strcmp(r->fields[i], want[i]) != 0) {
            printf("     field %d: expected \"%s\", got \"%s\"\n", i, want[i], r->fields[i]);
            return false;
        }
    return true;
}

int main(void)
{
    t_rec_t r;
    const char *plain = "RICE5,6901234500011,Rice 5kg,39.90,9,pcs,grain\nNEXT";
    t_parse(&r, plain, strlen(plain), true);
    static const char *const rice[] = {"RICE5", "6901234500011", "Rice 5kg", "39.90",
                                       "9",     "pcs",           "grain"};
    CHECK(t_fields(&r, rice, 7) && r.used == strlen(plain) - 4 && r.lines == 1,
          "plain row: 7 fields, consumed up to the newline (used %zu, lines %d)", r.used, r.lines);

    const char *quoted = "A1,\"Quoted, with comma\",\"say \"\"hi\"\"\",\"two\nlines\"\r\nX";
    t_parse(&r, quoted, strlen(quoted), true);
    static const char *const q[] = {"A1", "Quoted, with comma", "say \"hi\"", "two\nlines"};
    CHECK(t_fields(&r, q, 4) && r.lines == 2 && r.used == strlen(quoted) - 1,
          "quotes: comma, doubled quote and newline inside quotes; CRLF end (lines %d)", r.lines);

    const char *chinese =
        "NIU1,,\xe7\x89\x9b\xe5\xa5\xb6 250ml,3.50,13,pcs,\xe4\xb9\xb3\xe5\x93\x81";
    t_parse(&r, chinese, strlen(chinese), true);
    CHECK(r.n == 7 && strcmp(r.fields[2], "\xe7\x89\x9b\xe5\xa5\xb6 250ml") == 0 &&
              r.fields[1][0] == '\0' && r.used == strlen(chinese),
          "UTF-8 name, empty field, last record without a newline (n %d)", r.n);

    t_parse(&r, "\r\n", 2, true);
    CHECK(r.n == 1 && r.fields[0][0] == '\0' && r.used == 2,
          "a blank CRLF line is one empty field");
    CHECK(t_parse(&r, "", 0, true) == 0 && r.used == 0, "end of input: 0");

    CHECK(t_parse(&r, "a,\"open", 7, true) == POSCTL_CSV_EQUOTE && r.used == 0,
          "unterminated quote refused: %d (%s)", r.n, posctl_csv_strerror(r.n));
    CHECK(t_parse(&r, "a,b\0c\n", 6, true) == POSCTL_CSV_ENUL, "NUL byte refused: %d", r.n);
    CHECK(t_parse(&r, "1,2,3,4,5,6,7,8,9\n", 18, true) == POSCTL_CSV_ETOOMANY,
          "9 fields with room for 8 refused: %d", r.n);
    char longrow[T_OUT_MAX + 16];
    memset(longrow, 'x', sizeof(longrow));
    CHECK(t_parse(&r, longrow, sizeof(longrow), true) == POSCTL_CSV_ETOOLONG,
          "a record longer than the output buffer refused: %d", r.n);

    /* a read boundary anywhere must not change the record: not final means "maybe more" */
    CHECK(t_parse(&r, "a,b", 3, false) == 0 && r.used == 0, "no newline yet: read more");
    CHECK(t_parse(&r, "a,\"x\"", 5, false) == 0,
          "a quote at the end of a partial read may be doubled: read more");
    bool same = true;
    size_t qlen = strlen(quoted);
    for (size_t cut = 0; cut < qlen; cut++) {
        t_parse(&r, quoted, cut, false);
        if (r.n != 0 && !t_fields(&r, q, 4)) {
            printf("     cut at %zu gave %d fields\n", cut, r.n);
            same = false;
        }
    }
    CHECK(same, "every prefix of a quoted record is incomplete or the same record");

    /* quoting: a quoted field reads back as itself */
    static const char *const round[] = {"plain",
                                        "with, comma",
                                        "a \"quote\"",
                                        "cr\rlf\n",
                                        " padded ",
                                        "",
                                        "\xe7\x89\x9b,\xe5\xa5\xb6"};
    bool back = true;
    for (size_t i = 0; i < sizeof(round) / sizeof(round[0]); i++) {
        char line[T_OUT_MAX];
        size_t need = posctl_csv_quote(round[i], line, sizeof(line) - 1);
        strcat(line, "\n");
        t_parse(&r, line, strlen(line), false);
        if (need >= sizeof(line) - 1 || r.n != 1 || strcmp(r.fields[0], round[i]) != 0) {
            printf("     \"%s\" quoted as %s read back as \"%s\"\n", round[i], line,
                   r.n == 1 ? r.fields[0] : "?");
            back = false;
        }
    }
    CHECK(back, "quoted fields read back unchanged");
    char tiny[6];
    size_t need = posctl_csv_quote("a,b,c", tiny, sizeof(tiny));
    CHECK(need == 7 && strcmp(tiny, "\"a,b,") == 0,
          "quote into a short buffer: truncated, returns the needed 7 (got %zu, \"%s\")", need,
          tiny);
    return FINISH("test_csv");
}
