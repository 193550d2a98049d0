/*  =========================================================================
    tui.h - posnode's screen for a person at the till (posnode --tui)

    A full-screen ncurses view of the till for the terminal posnode runs
    on: the ticket, its totals and tenders, the cashier, the register, the
    link to the back office, the last sale, the last refused command's
    message, and an input line at the bottom. What the cashier types there
    becomes a till command line (a line of digits, as a keyboard-wedge
    scanner types it, becomes "scan DIGITS"); function keys are shortcuts.
    PINs (login ID PIN, ... approve ID PIN) are never shown while typed.

    The screen only shows answers: it never runs a command itself. The
    caller feeds it every answer of the till (node_tui_show for what the
    cashier typed, node_tui_status for anything else, e.g. a periodic
    "state"), with posnode's status fields added (online, unsynced,
    upload_blocked). Layout and keys: docs/posnode-tui.md.

    Not part of the `node` library: only posnode links ncurses. One screen
    per process; not thread-safe.
    =========================================================================
*/
#ifndef NODE_TUI_H_INCLUDED
#define NODE_TUI_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include <bus/val.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct node_tui_t node_tui_t;

/*  Set the process's locale for the screen: the environment's (setlocale(LC_ALL, "")), with
    C.UTF-8 characters if the environment's are not UTF-8 (item names are), and numbers always
    in the C locale. setlocale is not thread-safe: call this before the program starts any
    thread, and before node_tui_new. */
void node_tui_locale(void);

/*  Take over the terminal on stdin/stdout for register store.reg (copied). NULL with a
    reason in why when stdin or stdout is not a terminal or ncurses cannot drive it (the
    terminal is left as it was). Call it after the program's own SIGINT/SIGTERM handlers are
    installed: ncurses then keeps them. */
node_tui_t *node_tui_new(const char *store, const char *reg, char *why, size_t size);

/*  Give the terminal back as it was (the normal screen, echo, line editing). NULL-safe. */
void node_tui_destroy(node_tui_t **self_p);

/*  The descriptor to poll for keys. */
int node_tui_fd(const node_tui_t *self);

/*  Read what was typed, without blocking. 1: a complete command line is in line (size
    bytes; the caller wipes it after use: it may hold a PIN); 0: nothing to run yet (call
    again after the next poll, and at least every 200 ms so that a resize is seen); -1: the
    terminal is gone (hung up), the program should stop. Call it until it returns 0 or -1:
    ncurses may hold several lines read ahead. */
int node_tui_input(node_tui_t *self, char *line, size_t size);

/*  Show the till's answer to the line node_tui_input gave last: the screen, and the
    command's result on the message line (the error and its message when refused). */
void node_tui_show(node_tui_t *self, const bus_val_t *reply);

/*  Show an answer to no line of this screen (the periodic "state", a command from the local
    socket): the screen, but the message line keeps the result of the cashier's last line. */
void node_tui_status(node_tui_t *self, const bus_val_t *reply);

#ifdef __cplusplus
}
#endif
#endif
