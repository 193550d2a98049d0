/*  =========================================================================
    tui.c - posnode's screen for a person at the till (posnode --tui)

    Why it looks like this. The screen is a view of the till's answers and
    nothing else: it keeps a copy of the last answer and redraws the whole
    screen from it (ncurses sends only what changed), so what a cashier sees
    is always what the till said, never a second model of the ticket that
    could drift from it. posnode asks the till for "state" every second, so
    ONLINE/OFFLINE, the unsynced count and a configuration that arrived show
    up without a key being pressed.

    A till answer to `pay` closes the ticket; the ticket that was on the
    screen just before is kept and shown as the completed sale, with its id
    and the change, until the next ticket starts (the customer is still
    counting the change).

    Input is read without blocking, one key at a time (wget_wch: UTF-8 and
    function keys). A keyboard-wedge barcode scanner types digits and Enter,
    which becomes "scan DIGITS". The line being typed is drawn with every
    word from a PIN on as '*' and wiped when it is sent or cleared.

    Fits 80x24 and more; on a smaller terminal the lines area shrinks and
    wide text is cut at a character boundary (names are Chinese UTF-8: two
    columns per character).
    =========================================================================
*/
#define NCURSES_WIDECHAR 1
#include <ctype.h>
#include <curses.h>
#include <inttypes.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#include <openssl/crypto.h>

#include <node/till.h>
#include <pos/money.h>

#include "tui.h"

#define S_LINE_MAX     NODE_TILL_LINE_MAX /* bytes of the line being typed */
#define S_TEXT_MAX     512                /* bytes of a message, a name, a reason shown */
#define S_ID_MAX       64                 /* bytes of a store, register or sale id */
#define S_ESC_DELAY_MS 50 /* how long ncurses waits after ESC for the rest of a key */
#define S_WORDS_MAX    32 /* words of a typed line looked at for a PIN */
#define S_BOTTOM_ROWS  7  /* totals, payment, tenders, last sale, message, keys, input */
#define S_STOPPED_ROWS 3  /* rows the STOPPED reason may wrap over */
#define S_MONEY        24 /* pos_money_format's buffer */

/* column widths of the ticket lines; the name takes what is left */
#define S_COL_N      3
#define S_COL_QTY    10
#define S_COL_PRICE  9
#define S_COL_AMOUNT 10

enum { S_PAIR_RED = 1, S_PAIR_GREEN, S_PAIR_YELLOW };

static const char s_keys_help[] =
    "F2 cash exact  F3 card exact  F4 void  F5 cancel  F6 member  F8 park  Esc clear";

struct node_tui_t {
    SCREEN *screen;
    char store[S_ID_MAX], reg[S_ID_MAX];
    char line[S_LINE_MAX + 1]; /* what is being typed (may hold a PIN) */
    size_t len;
    bus_val_t *last; /* the last answer shown */
    bus_val_t *done; /* the ticket of the sale just completed, until the next starts */
    char sale_id[S_ID_MAX];
    int64_t change;
    bool has_change;
    char message[S_TEXT_MAX]; /* the result of the cashier's last line */
    bool message_error;
    bool color;
};

/* ---- drawing helpers ---------------------------------------------------------- */

static void s_attr(node_tui_t *self, int pair, attr_t attr, bool on)
{
    attr_t a = attr | (self->color && pair ? COLOR_PAIR(pair) : 0);
    if (on)
        attron(a);
    else
        attroff(a);
}

static void s_spaces(int n)
{
    while (n-- > 0)
        addch(' ');
}

/*  Put UTF-8 text at row y, column x, in exactly width columns: cut at a character boundary
    (bytes that are not UTF-8 show as '?'), padded with spaces, right-aligned if right.
    Returns the bytes of text that fitted, so that the caller can wrap the rest. */
static size_t s_put(int y, int x, int width, const char *text, bool right)
{
    if (y < 0 || y >= LINES || x < 0 || x >= COLS || width <= 0)
        return 0;
    if (width > COLS - x)
        width = COLS - x;
    wchar_t w[S_TEXT_MAX];
    int n = 0, cols = 0;
    mbstate_t ps;
    memset(&ps, 0, sizeof(ps));
    const char *p = text;
    size_t left = strlen(text);
    while (left > 0 && n < S_TEXT_MAX - 1) {
        wchar_t wc;
        size_t k = mbrtowc(&wc, p, left, &ps);
        if (k == (size_t)-1 || k == (size_t)-2) {
            wc = L'?';
            k = 1;
            memset(&ps, 0, sizeof(ps));
        } else if (k == 0) {
            break;
        }
        int cw = wcwidth(wc);
        if (cw < 0) {
            wc = L'?';
            cw = 1;
        }
        if (cols + cw > width)
            break;
        w[n++] = wc;
        cols += cw;
        p += k;
        left -= k;
    }
    w[n] = L'\0';
    move(y, x);
    if (right)
        s_spaces(width - cols);
    addnwstr(w, n);
    if (!right)
        s_spaces(width - cols);
    return (size_t)(p - text);
}

/*  Like s_put from column x to the end of the row, formatted. */
static void s_row(int y, int x, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void s_row(int y, int x, const char *fmt, ...)
{
    char text[S_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    s_put(y, x, COLS - x, text, false);
}

/*  Text wrapped over at most rows rows from row y; the rows used. */
static int s_wrap(int y, int rows, const char *text)
{
    int used = 0;
    while (*text && used < rows) {
        size_t n = s_put(y + used, 0, COLS, text, false);
        if (n == 0)
            break;
        text += n;
        used++;
    }
    return used;
}

static const char *s_money(const bus_val_t *map, const char *key, char *buf)
{
    int64_t v = 0;
    bus_val_map_get_int(map, key, &v);
    return pos_money_format(v, buf, S_MONEY);
}

static int64_t s_int(const bus_val_t *map, const char *key)
{
    int64_t v = 0;
    bus_val_map_get_int(map, key, &v);
    return v;
}

static bool s_bool(const bus_val_t *map, const char *key)
{
    bool v = false;
    bus_val_map_get_bool(map, key, &v);
    return v;
}

static const char *s_str(const bus_val_t *map, const char *key)
{
    const char *s = bus_val_map_get_str(map, key);
    return s ? s : "";
}

/* ---- the screen's parts --------------------------------------------------------- */

static void s_draw_header(node_tui_t *self)
{
    const bus_val_t *r = self->last;
    const bus_val_t *who = bus_val_map_get(r, "cashier");
    char left[S_TEXT_MAX], tail[96];
    if (bus_val_type(who) == BUS_VAL_MAP)
        snprintf(left, sizeof(left), " %s.%s  cashier %s (%s, %s)", self->store, self->reg,
                 s_str(who, "name"), s_str(who, "id"), s_str(who, "role"));
    else
        snprintf(left, sizeof(left), " %s.%s  not logged in", self->store, self->reg);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char clock[16];
    strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
    snprintf(tail, sizeof(tail), " unsynced %" PRId64 "  %s ", s_int(r, "unsynced"), clock);
    bool online = s_bool(r, "online");
    const char *link = online ? "ONLINE" : "OFFLINE";
    int tail_x = COLS - (int)strlen(tail), link_x = tail_x - (int)strlen(link);
    attron(A_REVERSE);
    s_put(0, 0, COLS, left, false);
    s_put(0, tail_x, (int)strlen(tail), tail, false);
    attroff(A_REVERSE);
    s_attr(self, online ? S_PAIR_GREEN : S_PAIR_RED, A_BOLD | A_REVERSE, true);
    s_put(0, link_x, (int)strlen(link), link, false);
    s_attr(self, online ? S_PAIR_GREEN : S_PAIR_RED, A_BOLD | A_REVERSE, false);
}

/*  STOPPED, upload blocked, devices and versions, from row y; the next free row. */
static int s_draw_status(node_tui_t *self, int y)
{
    const bus_val_t *r = self->last;
    char text[S_TEXT_MAX];
    if (s_bool(r, "stopped")) {
        snprintf(text, sizeof(text), "STOPPED: %s", s_str(r, "stopped_why"));
        s_attr(self, S_PAIR_RED, A_BOLD, true);
        y += s_wrap(y, S_STOPPED_ROWS, text);
        s_attr(self, S_PAIR_RED, A_BOLD, false);
    }
    const char *blocked = bus_val_map_get_str(r, "upload_blocked");
    if (blocked) {
        snprintf(text, sizeof(text), "UPLOAD BLOCKED: %s", blocked);
        s_attr(self, S_PAIR_YELLOW, A_BOLD, true);
        y += s_wrap(y, 2, text);
        s_attr(self, S_PAIR_YELLOW, A_BOLD, false);
    }
    const char *office = bus_val_map_get_str(bus_val_map_get(r, "office_message"), "text");
    if (office) { /* a text the back office sent to this till (a device command) */
        snprintf(text, sizeof(text), "OFFICE: %s", office);
        s_attr(self, S_PAIR_YELLOW, A_BOLD, true);
        y += s_wrap(y, 2, text);
        s_attr(self, S_PAIR_YELLOW, A_BOLD, false);
    }
    s_row(y++, 0, " devices: no devices    config v%" PRId64 "    catalog v%" PRId64,
          s_int(r, "config_version"), s_int(r, "catalog_version"));
    return y;
}

static void s_draw_line(node_tui_t *self, int y, int name_w, const bus_val_t *l)
{
    char n[16], qty[32], name[S_TEXT_MAX], price[S_MONEY], amount[S_MONEY];
    int64_t q = s_int(l, "qty");
    bool voided = s_bool(l, "voided");
    const char *ret = bus_val_map_get_str(l, "return_of");
    snprintf(n, sizeof(n), "%" PRId64, s_int(l, "n"));
    if (strcmp(s_str(l, "unit"), "kg") == 0) /* qty in grams */
        snprintf(qty, sizeof(qty), "%" PRId64 ".%03" PRId64 " kg", q / 1000, q % 1000);
    else
        snprintf(qty, sizeof(qty), "%" PRId64, q);
    int len = snprintf(name, sizeof(name), "%s%s", ret ? "RETURN " : "", s_str(l, "name"));
    int64_t promo = s_int(l, "promo_discount");
    if (promo && len > 0 && (size_t)len < sizeof(name)) {
        char m[S_MONEY];
        snprintf(name + len, sizeof(name) - (size_t)len, "  (%s -%s)", s_str(l, "promo_id"),
                 pos_money_format(promo, m, sizeof(m)));
    }
    if (voided)
        s_attr(self, 0, A_DIM, true);
    int x = 0;
    s_put(y, x, S_COL_N, n, true);
    x += S_COL_N + 1;
    s_put(y, x, name_w, name, false);
    x += name_w + 1;
    s_put(y, x, S_COL_QTY, qty, true);
    x += S_COL_QTY + 1;
    s_put(y, x, S_COL_PRICE, s_money(l, "unit_price", price), true);
    x += S_COL_PRICE + 1;
    s_put(y, x, S_COL_AMOUNT, voided ? "VOID" : s_money(l, "amount", amount), true);
    if (voided)
        s_attr(self, 0, A_DIM, false);
}

/*  The ticket's lines between rows top and bottom (exclusive); the newest stay in view. */
static void s_draw_lines(node_tui_t *self, const bus_val_t *ticket, int top, int bottom)
{
    int name_w = COLS - (S_COL_N + S_COL_QTY + S_COL_PRICE + S_COL_AMOUNT + 4);
    if (name_w < 8)
        name_w = 8;
    if (top >= bottom)
        return;
    attron(A_UNDERLINE);
    int x = 0;
    s_put(top, x, S_COL_N, "#", true);
    x += S_COL_N + 1;
    s_put(top, x, name_w, "Item", false);
    x += name_w + 1;
    s_put(top, x, S_COL_QTY, "Qty", true);
    x += S_COL_QTY + 1;
    s_put(top, x, S_COL_PRICE, "Price", true);
    x += S_COL_PRICE + 1;
    s_put(top, x, S_COL_AMOUNT, "Amount", true);
    attroff(A_UNDERLINE);
    top++;
    const bus_val_t *lines = bus_val_map_get(ticket, "lines");
    int count = (int)bus_val_size(lines), rows = bottom - top, first = 0;
    if (!ticket) {
        s_attr(self, 0, A_DIM, true);
        s_row(top, 1, "No ticket open: scan an item, or type a command (login ID PIN).");
        s_attr(self, 0, A_DIM, false);
        return;
    }
    if (rows <= 0)
        return;
    if (count > rows) { /* the first row says how many are out of view */
        first = count - (rows - 1);
        s_attr(self, 0, A_DIM, true);
        s_row(top++, 1, "... %d earlier line%s", first, first == 1 ? "" : "s");
        s_attr(self, 0, A_DIM, false);
    }
    for (int i = first; i < count && top < bottom; i++)
        s_draw_line(self, top++, name_w, bus_val_arr_get(lines, (size_t)i));
}

/*  Totals, payment and tenders of ticket (open, or done when completed) from row y. */
static void s_draw_totals(node_tui_t *self, const bus_val_t *ticket, bool done, int y)
{
    char a[S_MONEY], b[S_MONEY], c[S_MONEY], d[S_MONEY], text[S_TEXT_MAX];
    mvhline(y, 0, ACS_HLINE, COLS);
    if (!ticket)
        return;
    int64_t discounts = s_int(ticket, "promo_discounts") + s_int(ticket, "ticket_discount");
    int len = snprintf(text, sizeof(text), " Items %" PRId64 "   Gross %s   Discounts %s   Tax %s",
                       s_int(ticket, "items"), s_money(ticket, "gross", a),
                       pos_money_format(-discounts, b, sizeof(b)), s_money(ticket, "tax", c));
    if (s_int(ticket, "returns") && len > 0 && (size_t)len < sizeof(text))
        len += snprintf(text + len, sizeof(text) - (size_t)len, "   Returns %s",
                        s_money(ticket, "returns", d));
    if (s_bool(ticket, "member") && len > 0 && (size_t)len < sizeof(text))
        snprintf(text + len, sizeof(text) - (size_t)len, "   MEMBER");
    s_put(y + 1, 0, COLS, text, false);

    attron(A_BOLD);
    snprintf(text, sizeof(text), " TOTAL %s", s_money(ticket, "total", a));
    s_put(y + 2, 0, 20, text, false);
    attroff(A_BOLD);
    if (done) {
        s_attr(self, S_PAIR_GREEN, A_BOLD, true);
        if (self->has_change)
            snprintf(text, sizeof(text), "SALE %s COMPLETE   Change %s", self->sale_id,
                     pos_money_format(self->change, a, sizeof(a)));
        else
            snprintf(text, sizeof(text), "SALE %s COMPLETE", self->sale_id);
        s_put(y + 2, 20, COLS - 20, text, false);
        s_attr(self, S_PAIR_GREEN, A_BOLD, false);
        return;
    }
    int64_t remaining = s_int(ticket, "remaining"), change = s_int(ticket, "change");
    len = snprintf(text, sizeof(text), "Due %s   Paid %s", s_money(ticket, "due", a),
                   s_money(ticket, "paid", b));
    if (s_int(ticket, "cash_rounding") && len > 0 && (size_t)len < sizeof(text))
        len += snprintf(text + len, sizeof(text) - (size_t)len, "   Rounding %s",
                        s_money(ticket, "cash_rounding", c));
    if (len > 0 && (size_t)len < sizeof(text))
        snprintf(text + len, sizeof(text) - (size_t)len, "   %s %s",
                 change ? "Change" : "Remaining",
                 pos_money_format(change ? change : remaining, d, sizeof(d)));
    s_put(y + 2, 20, COLS - 20, text, false);

    const bus_val_t *tenders = bus_val_map_get(ticket, "tenders");
    len = snprintf(text, sizeof(text), " Tenders:%s", bus_val_size(tenders) ? "" : " none");
    for (size_t i = 0; i < bus_val_size(tenders) && len > 0 && (size_t)len < sizeof(text); i++) {
        const bus_val_t *t = bus_val_arr_get(tenders, i);
        len += snprintf(text + len, sizeof(text) - (size_t)len, "  %s %s", s_str(t, "kind"),
                        s_money(t, "amount", a));
    }
    s_put(y + 3, 0, COLS, text, false);
}

/*  The line being typed, with every word from a PIN on drawn as '*': after `login ID` and
    after `approve ID` anywhere in the line. */
static void s_masked(const char *in, char *out, size_t size)
{
    const char *word[S_WORDS_MAX];
    size_t wlen[S_WORDS_MAX];
    int nwords = 0, mask_from = S_WORDS_MAX + 1;
    for (const char *p = in; *p && nwords < S_WORDS_MAX;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        word[nwords] = p;
        while (*p && *p != ' ')
            p++;
        wlen[nwords] = (size_t)(p - word[nwords]);
        nwords++;
    }
    for (int i = 0; i < nwords; i++) {
        bool login = i == 0 && wlen[i] == 5 && strncasecmp(word[i], "login", 5) == 0;
        bool approve = wlen[i] == 7 && strncasecmp(word[i], "approve", 7) == 0;
        if ((login || approve) && i + 2 < mask_from)
            mask_from = i + 2;
    }
    size_t o = 0;
    int w = -1;
    bool in_word = false;
    for (const char *p = in; *p && o + 1 < size; p++) {
        bool space = *p == ' ';
        if (!space && !in_word)
            w++;
        in_word = !space;
        if (space || w < mask_from)
            out[o++] = *p;
        else if (((unsigned char)*p & 0xC0) != 0x80) /* one '*' per character */
            out[o++] = '*';
    }
    out[o] = '\0';
}

static void s_draw_input(node_tui_t *self)
{
    char shown[S_LINE_MAX + 1];
    s_masked(self->line, shown, sizeof(shown));
    int y = LINES - 1, width = COLS - 3;
    const char *p = shown;
    /* keep the end of a long line in view (cut at a UTF-8 character start) */
    size_t len = strlen(p);
    if (width > 0 && len > (size_t)width) {
        p += len - (size_t)width;
        while (((unsigned char)*p & 0xC0) == 0x80)
            p++;
    }
    attron(A_BOLD);
    s_put(y, 0, 2, ">", false);
    attroff(A_BOLD);
    s_put(y, 2, COLS - 2, p, false);
    /* the cursor after the text */
    wchar_t w[S_LINE_MAX + 1];
    size_t n = mbstowcs(w, p, S_LINE_MAX);
    int cols = n == (size_t)-1 ? (int)strlen(p) : wcswidth(w, n);
    int x = 2 + (cols < 0 ? 0 : cols);
    move(y, x < COLS ? x : COLS - 1);
}

static void s_draw(node_tui_t *self)
{
    erase();
    s_draw_header(self);
    int y = s_draw_status(self, 1);
    const bus_val_t *ticket = bus_val_map_get(self->last, "ticket");
    bool done = false;
    if (bus_val_type(ticket) != BUS_VAL_MAP) {
        ticket = self->done;
        done = ticket != NULL;
    }
    int bottom = LINES - S_BOTTOM_ROWS;
    s_draw_lines(self, ticket, y, bottom);
    s_draw_totals(self, ticket, done, bottom);

    char text[S_TEXT_MAX], m[S_MONEY];
    if (self->sale_id[0] && self->has_change)
        snprintf(text, sizeof(text), " Last sale %s   change %s", self->sale_id,
                 pos_money_format(self->change, m, sizeof(m)));
    else if (self->sale_id[0])
        snprintf(text, sizeof(text), " Last sale %s", self->sale_id);
    else
        snprintf(text, sizeof(text), " Last sale: none on this screen yet");
    s_put(LINES - 4, 0, COLS, text, false);

    if (self->message[0]) {
        s_attr(self, self->message_error ? S_PAIR_RED : S_PAIR_GREEN, A_BOLD, true);
        s_put(LINES - 3, 0, COLS, self->message, false);
        s_attr(self, self->message_error ? S_PAIR_RED : S_PAIR_GREEN, A_BOLD, false);
    }
    s_attr(self, 0, A_DIM, true);
    s_put(LINES - 2, 0, COLS, s_keys_help, false);
    s_attr(self, 0, A_DIM, false);
    s_draw_input(self);
    refresh();
}

/* ---- answers ------------------------------------------------------------------------ */

static void s_message(node_tui_t *self, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_message(node_tui_t *self, bool error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->message, sizeof(self->message), fmt, ap);
    va_end(ap);
    self->message_error = error;
}

/*  The message line for the answer to the cashier's own line. */
static void s_result(node_tui_t *self, const bus_val_t *reply)
{
    const char *cmd = s_str(reply, "cmd");
    char a[S_MONEY], b[S_MONEY];
    if (!s_bool(reply, "ok")) {
        s_message(self, true, " %s refused (%s): %s", cmd, s_str(reply, "error"),
                  s_str(reply, "message"));
        return;
    }
    const bus_val_t *report = bus_val_map_get(reply, "report");
    if (bus_val_map_get_str(reply, "sale_id") && self->has_change)
        s_message(self, false, " %s: sale %s complete, change %s", cmd, self->sale_id,
                  pos_money_format(self->change, a, sizeof(a)));
    else if (bus_val_map_get_str(reply, "sale_id"))
        s_message(self, false, " %s: sale %s complete", cmd, self->sale_id);
    else if (bus_val_map_get_str(reply, "park_id"))
        s_message(self, false, " parked as %s", s_str(reply, "park_id"));
    else if (report)
        s_message(self, false, " %s report: %" PRId64 " sales, total %s, expected cash %s", cmd,
                  s_int(report, "sales"), s_money(report, "total", a),
                  s_money(report, "expected_cash", b));
    else
        s_message(self, false, " %s: ok", cmd);
}

static void s_take(node_tui_t *self, const bus_val_t *reply, bool answer)
{
    bus_val_t *copy = bus_val_dup(reply);
    if (!copy)
        return; /* out of memory: keep showing the last answer */
    const bus_val_t *ticket = bus_val_map_get(reply, "ticket");
    bool open = bus_val_type(ticket) == BUS_VAL_MAP;
    const char *sale_id = bus_val_map_get_str(reply, "sale_id");
    if (sale_id) {
        snprintf(self->sale_id, sizeof(self->sale_id), "%s", sale_id);
        self->has_change = bus_val_map_get_int(reply, "change", &self->change);
        /* the ticket just paid is the one on the screen before this answer */
        bus_val_destroy(&self->done);
        const bus_val_t *before = bus_val_map_get(self->last, "ticket");
        if (!open && bus_val_type(before) == BUS_VAL_MAP)
            self->done = bus_val_dup(before);
    } else if (open || bus_val_type(bus_val_map_get(reply, "cashier")) != BUS_VAL_MAP) {
        bus_val_destroy(&self->done); /* a new ticket, or nobody at the till */
    }
    bus_val_destroy(&self->last);
    self->last = copy;
    if (answer)
        s_result(self, reply);
    s_draw(self);
}

void node_tui_show(node_tui_t *self, const bus_val_t *reply)
{
    s_take(self, reply, true);
}

void node_tui_status(node_tui_t *self, const bus_val_t *reply)
{
    s_take(self, reply, false);
}

/* ---- input ----------------------------------------------------------------------------- */

static void s_clear_line(node_tui_t *self)
{
    OPENSSL_cleanse(self->line, sizeof(self->line));
    self->len = 0;
}

/*  Enter: the typed line as a command in line. 1, or 0 when there is nothing to run. */
static int s_enter(node_tui_t *self, char *line, size_t size)
{
    char *p = self->line;
    while (*p == ' ')
        p++;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == ' ')
        p[--n] = '\0';
    int rc = 0, len = 0;
    if (n == 0) {
        rc = 0;
    } else if (strspn(p, "0123456789") == n) { /* a barcode, typed by a scanner */
        len = snprintf(line, size, "scan %s", p);
        rc = 1;
    } else if (isalpha((unsigned char)*p)) {
        len = snprintf(line, size, "%s", p);
        rc = 1;
    } else {
        s_message(self, true, " not a command: start with a letter, or scan a barcode");
    }
    if (rc && (len < 0 || (size_t)len >= size)) {
        OPENSSL_cleanse(line, size);
        s_message(self, true, " the line is too long");
        rc = 0;
    }
    s_clear_line(self);
    return rc;
}

/*  The open ticket's last line that is not voided; 0 if none. */
static int64_t s_last_line(const node_tui_t *self)
{
    const bus_val_t *lines = bus_val_map_get(bus_val_map_get(self->last, "ticket"), "lines");
    for (size_t i = bus_val_size(lines); i > 0; i--) {
        const bus_val_t *l = bus_val_arr_get(lines, i - 1);
        if (!s_bool(l, "voided"))
            return s_int(l, "n");
    }
    return 0;
}

static void s_prefill(node_tui_t *self, const char *text)
{
    s_clear_line(self);
    snprintf(self->line, sizeof(self->line), "%s", text);
    self->len = strlen(self->line);
}

/*  A function key: 1 with a command in line, 0 otherwise (the line being typed may change). */
static int s_function_key(node_tui_t *self, wint_t key, char *line, size_t size)
{
    const bus_val_t *ticket = bus_val_map_get(self->last, "ticket");
    char text[64];
    switch (key) {
    case KEY_F(2):
        snprintf(line, size, "pay cash");
        return 1;
    case KEY_F(3):
        snprintf(line, size, "pay card");
        return 1;
    case KEY_F(4):
        if (s_last_line(self) == 0) {
            s_message(self, true, " no line to void");
            return 0;
        }
        snprintf(text, sizeof(text), "void %" PRId64, s_last_line(self));
        s_prefill(self, text);
        return 0;
    case KEY_F(5):
        s_prefill(self, "cancel");
        return 0;
    case KEY_F(6):
        snprintf(line, size, "member %s", s_bool(ticket, "member") ? "off" : "on");
        return 1;
    case KEY_F(8):
        snprintf(line, size, "park");
        return 1;
    case KEY_ENTER:
        return s_enter(self, line, size);
    case KEY_BACKSPACE:
    case KEY_DC:
        while (self->len > 0 && ((unsigned char)self->line[self->len - 1] & 0xC0) == 0x80)
            self->line[--self->len] = '\0';
        if (self->len > 0)
            self->line[--self->len] = '\0';
        return 0;
    default:
        return 0; /* KEY_RESIZE and anything else: a redraw */
    }
}

static void s_type(node_tui_t *self, wint_t ch)
{
    char mb[MB_LEN_MAX];
    mbstate_t ps;
    memset(&ps, 0, sizeof(ps));
    if (ch == L'\t')
        ch = L' ';
    if (!iswprint(ch))
        return;
    size_t n = wcrtomb(mb, (wchar_t)ch, &ps);
    if (n == (size_t)-1 || self->len + n > S_LINE_MAX) {
        beep();
        return;
    }
    memcpy(self->line + self->len, mb, n);
    self->len += n;
    self->line[self->len] = '\0';
}

int node_tui_input(node_tui_t *self, char *line, size_t size)
{
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)))
        return -1;
    wint_t ch;
    int kind, rc = 0;
    bool changed = false;
    while (rc == 0 && (kind = wget_wch(stdscr, &ch)) != ERR) {
        changed = true;
        if (kind == KEY_CODE_YES)
            rc = s_function_key(self, ch, line, size);
        else if (ch == L'\n' || ch == L'\r')
            rc = s_enter(self, line, size);
        else if (ch == 127 || ch == 8) /* DEL or ^H: backspace */
            rc = s_function_key(self, KEY_BACKSPACE, line, size);
        else if (ch == 21 || ch == 27) /* ^U or Esc: clear the line */
            s_clear_line(self);
        else
            s_type(self, ch);
    }
    if (changed)
        s_draw(self);
    return rc;
}

/* ---- life cycle -------------------------------------------------------------------------- */

void node_tui_locale(void)
{
    setlocale(LC_ALL, "");
    setlocale(LC_NUMERIC, "C"); /* numbers are written one way, whatever the terminal's */
    if (strcmp(nl_langinfo(CODESET), "UTF-8") != 0)
        setlocale(LC_CTYPE, "C.UTF-8");
}

node_tui_t *node_tui_new(const char *store, const char *reg, char *why, size_t size)
{
    why[0] = '\0';
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        snprintf(why, size, "stdin and stdout must be a terminal");
        return NULL;
    }
    node_tui_t *self = calloc(1, sizeof(*self));
    if (!self) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    snprintf(self->store, sizeof(self->store), "%s", store);
    snprintf(self->reg, sizeof(self->reg), "%s", reg);
    self->screen = newterm(NULL, stdout, stdin);
    if (!self->screen) {
        const char *term = getenv("TERM");
        snprintf(why, size, "ncurses cannot drive terminal type %s", term ? term : "(no TERM)");
        free(self);
        return NULL;
    }
    set_term(self->screen);
    cbreak(); /* keys one at a time; ^C still sends SIGINT */
    noecho();
    nonl();
    intrflush(stdscr, FALSE);
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(S_ESC_DELAY_MS);
    if (has_colors() && start_color() == OK) {
        use_default_colors();
        init_pair(S_PAIR_RED, COLOR_RED, -1);
        init_pair(S_PAIR_GREEN, COLOR_GREEN, -1);
        init_pair(S_PAIR_YELLOW, COLOR_YELLOW, -1);
        self->color = true;
    }
    s_draw(self);
    return self;
}

void node_tui_destroy(node_tui_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_tui_t *self = *self_p;
    endwin();
    delscreen(self->screen);
    s_clear_line(self);
    bus_val_destroy(&self->last);
    bus_val_destroy(&self->done);
    free(self);
    *self_p = NULL;
}

int node_tui_fd(const node_tui_t *self)
{
    (void)self;
    return STDIN_FILENO;
}
