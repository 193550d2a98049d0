/*  test_cashier - PINs are stored only as salted scrypt hashes; a cashier without a permission
    gets nowhere without a supervisor's PIN, and the audit record names both

    - hash format, right and wrong PIN, two hashes of one PIN differ, malformed stored strings
      (truncated, bad base64, absurd parameters) are refused without a crash, the PIN rules;
    - login, lockout after 5 wrong PINs, unlock after 60 s (an injected clock, no sleeping),
      disabled cashiers, one cashier at a time;
    - every role x action default;
    - approvals: by a supervisor (both names in the audit and its MessagePack map), by oneself,
      by a cashier, with a wrong PIN (counted toward the approver's lockout), by a disabled
      supervisor, a per-cashier permission mask;
    - prints the cost of one hash as "node.pin_hash_ms: N". */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "node/cashier.h"
#include "testutil.h"

static int64_t t_clock_ms = 1000000;

static int64_t t_clock(void *arg)
{
    (void)arg;
    return t_clock_ms;
}

static double t_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static node_cashier_t t_rec(const char *id, const char *name, node_role_t role, const char *pin)
{
    node_cashier_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.id, sizeof(c.id), "%s", id);
    snprintf(c.name, sizeof(c.name), "%s", name);
    c.role = role;
    c.permissions = NODE_PERM_ROLE;
    c.active = true;
    if (node_pin_hash(pin, c.pin_hash, sizeof(c.pin_hash)) != 0)
        abort();
    return c;
}

static void t_pins(void)
{
    char a[NODE_PIN_HASH_MAX], b[NODE_PIN_HASH_MAX];
    double start = t_wall_ms();
    CHECK(node_pin_hash("1234", a, sizeof(a)) == 0, "hash a PIN");
    printf("node.pin_hash_ms: %.0f\n", t_wall_ms() - start);
    CHECK(strncmp(a, "scrypt$8192$8$1$", 16) == 0, "format scrypt$N$r$p$salt$hash: %s", a);
    const char *salt = a + 16, *hash = strchr(salt, '$');
    CHECK(hash && hash - salt == 24 && strlen(hash + 1) == 44,
          "16-byte salt and 32-byte hash in base64");
    CHECK(!strstr(a, "1234"), "the PIN is not in the hash string");
    CHECK(node_pin_hash_valid(a), "the hash is valid");
    CHECK(node_pin_verify("1234", a), "right PIN verifies");
    CHECK(!node_pin_verify("1235", a), "wrong PIN does not");
    CHECK(!node_pin_verify("12345", a), "a longer PIN does not");
    CHECK(node_pin_hash("1234", b, sizeof(b)) == 0 && strcmp(a, b) != 0,
          "two hashes of one PIN differ (salt)");
    CHECK(node_pin_verify("1234", b), "and both verify");

    char small[40];
    errno = 0;
    CHECK(node_pin_hash("1234", small, sizeof(small)) == -1 && errno == ENOSPC,
          "too small a buffer: ENOSPC");

    /* PIN rules */
    CHECK(node_pin_check("0000") == NULL && node_pin_check("12345678") == NULL,
          "4 and 8 digits are PINs");
    const char *bad[] = {"", "123", "123456789", "12a4", " 1234", "1234 ", "-123", "１２３４"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        const char *why = node_pin_check(bad[i]);
        errno = 0;
        CHECK(why && node_pin_hash(bad[i], b, sizeof(b)) == -1 && errno == EINVAL,
              "PIN \"%s\" refused: %s", bad[i], why ? why : "(accepted)");
    }
    CHECK(node_pin_check(NULL) != NULL, "no PIN refused");
    CHECK(!node_pin_verify(NULL, a), "verify of no PIN is false");

    /* malformed stored strings: refused, not a crash (ASan watches) */
    char cut[NODE_PIN_HASH_MAX];
    for (size_t len = 0; len < strlen(a); len++) {
        memcpy(cut, a, len);
        cut[len] = '\0';
        if (node_pin_hash_valid(cut) || node_pin_verify("1234", cut)) {
            CHECK(false, "truncated hash of %zu bytes refused", len);
            return;
        }
    }
    CHECK(true, "every truncation of the hash refused");
    char edit[NODE_PIN_HASH_MAX];
    snprintf(edit, sizeof(edit), "%s", a);
    edit[strlen(edit) - 3] = '!';
    CHECK(!node_pin_verify("1234", edit), "bad base64 refused");
    snprintf(edit, sizeof(edit), "%s", a);
    edit[strlen(edit) - 10] = edit[strlen(edit) - 10] == 'A' ? 'B' : 'A';
    CHECK(node_pin_hash_valid(edit) && !node_pin_verify("1234", edit),
          "one changed hash character: well-formed, does not verify");
    snprintf(edit, sizeof(edit), "%s", a);
    char *last = edit + strlen(edit) - 2; /* its low 2 bits are padding */
    *last = (char)(*last == 'A' ? 'B' : *last == 'B' ? 'A' : *last == 'z' ? 'y' : *last ^ 1);
    CHECK(!node_pin_hash_valid(edit), "base64 with padding bits set refused (one spelling only)");
    snprintf(edit, sizeof(edit), "%.41s    %s", a, a + 41);
    CHECK(!node_pin_hash_valid(edit), "spaces inside the base64 refused: %s", edit);
    const char *malformed[] = {
        NULL,
        "",
        "bcrypt$8192$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$8191$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$"
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$99999999999999999999999$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAA",
        "scrypt$8192$0$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$8192$8$99$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$-8192$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$8192$8$1$$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "scrypt$8192$8$1$AAAAAAAAAAAAAAAAAAAAAA==$",
        "scrypt$8192$8$1$AAAAAAAAAAAAAAAAAAAAAA==$A=AA",
        "scrypt$8192$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=$",
        "scrypt$8192$8$1",
        "scrypt$$$$$",
    };
    for (size_t i = 0; i < sizeof(malformed) / sizeof(*malformed); i++)
        CHECK(!node_pin_hash_valid(malformed[i]) && !node_pin_verify("1234", malformed[i]),
              "malformed hash #%zu refused", i);
    char longer[600];
    memset(longer, 'A', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    memcpy(longer, "scrypt$8192$8$1$", 16);
    CHECK(!node_pin_verify("1234", longer), "an overlong hash string refused");
}

static void t_defaults(void)
{
    /* cashier none; supervisor everything but z_report; manager all */
    static const bool expect[NODE_ROLE__COUNT][NODE_ACTION__COUNT] = {
        {false, false, false, false, false, false, false, false},
        {true, true, true, true, true, true, false, true},
        {true, true, true, true, true, true, true, true},
    };
    for (int r = 0; r < NODE_ROLE__COUNT; r++)
        for (int a = 0; a < NODE_ACTION__COUNT; a++)
            CHECK(((node_role_permissions(r) & NODE_PERM(a)) != 0) == expect[r][a],
                  "default: %s %s %s", node_role_name(r), expect[r][a] ? "may" : "may not",
                  node_action_name(a));
    CHECK(node_role_from_name("supervisor") == NODE_ROLE_SUPERVISOR &&
              node_role_from_name("boss") == -1,
          "roles by name");
    CHECK(node_action_from_name("no_sale") == NODE_ACTION_NO_SALE &&
              node_action_from_name("void") == -1 && node_action_name(NODE_ACTION__COUNT) == NULL,
          "actions by name");
}

/*  The test table: alice cashier, bob supervisor, carol manager, dave disabled supervisor,
    erin cashier with her own mask (void_line only). PINs 1111, 2222, 3333, 4444, 5555. */
static node_cashier_t t_table[5];

static void t_load(node_session_t *session)
{
    t_table[0] = t_rec("alice", "Alice Li", NODE_ROLE_CASHIER, "1111");
    t_table[1] = t_rec("bob", "Bob Wang", NODE_ROLE_SUPERVISOR, "2222");
    t_table[2] = t_rec("carol", "Carol Zhang", NODE_ROLE_MANAGER, "3333");
    t_table[3] = t_rec("dave", "Dave Chen", NODE_ROLE_SUPERVISOR, "4444");
    t_table[3].active = false;
    t_table[4] = t_rec("erin", "Erin Liu", NODE_ROLE_CASHIER, "5555");
    t_table[4].permissions = NODE_PERM(NODE_ACTION_VOID_LINE);
    CHECK(node_session_load(session, t_table, 5) == 0, "load 5 cashiers");
}

static void t_table_checks(node_session_t *session)
{
    node_cashier_t bad[2] = {t_table[0], t_table[0]};
    CHECK(node_session_load(session, bad, 2) == -1 && errno == EINVAL, "a duplicate id refused: %s",
          node_session_errstr(session));
    bad[1] = t_table[1];
    snprintf(bad[1].pin_hash, sizeof(bad[1].pin_hash), "scrypt$1$1$1$x$y");
    CHECK(node_session_load(session, bad, 2) == -1 && strstr(node_session_errstr(session), "bob"),
          "a malformed hash refused, naming the cashier: %s", node_session_errstr(session));
    bad[1] = t_table[1];
    snprintf(bad[1].id, sizeof(bad[1].id), "bo b");
    CHECK(node_session_load(session, bad, 2) == -1, "a bad id refused: %s",
          node_session_errstr(session));
    bad[1] = t_table[1];
    bad[1].permissions = 1u << 20;
    CHECK(node_session_load(session, bad, 2) == -1, "unknown permission bits refused");
    CHECK(node_session_login(session, "alice", "1111") == 0,
          "the table is unchanged after refused loads");
    node_session_logout(session);
}

static void t_login(node_session_t *session)
{
    CHECK(node_session_cashier(session) == NULL, "nobody logged in at first");
    CHECK(node_session_login(session, "nobody", "1111") == -1 && errno == ENOENT,
          "unknown id refused: %s", node_session_errstr(session));
    CHECK(node_session_login(session, "dave", "4444") == -1 && errno == EPERM,
          "disabled cashier cannot log in: %s", node_session_errstr(session));
    CHECK(node_session_login(session, "alice", "1111") == 0, "alice logs in");
    const node_cashier_t *c = node_session_cashier(session);
    CHECK(c && strcmp(c->name, "Alice Li") == 0, "alice is the cashier");
    CHECK(node_session_login(session, "bob", "2222") == -1 && errno == EBUSY,
          "one cashier at a time: %s", node_session_errstr(session));
    CHECK(node_session_logout(session) == 0 && node_session_cashier(session) == NULL, "logout");
    CHECK(node_session_logout(session) == -1 && errno == ENOENT, "logout twice refused");

    /* lockout */
    for (int i = 1; i <= 4; i++)
        CHECK(node_session_login(session, "alice", "9999") == -1 && errno == EACCES &&
                  !node_session_locked(session, "alice", NULL),
              "wrong PIN %d: refused, not locked yet", i);
    CHECK(node_session_login(session, "alice", "9999") == -1 && errno == EACCES,
          "wrong PIN 5 refused");
    int64_t until = 0;
    CHECK(node_session_locked(session, "alice", &until) && until == t_clock_ms + 60000,
          "alice locked for 60 s");
    CHECK(node_session_login(session, "alice", "1111") == -1 && errno == EAGAIN,
          "even the right PIN is refused while locked: %s", node_session_errstr(session));
    t_clock_ms += 59999;
    CHECK(node_session_login(session, "alice", "1111") == -1 && errno == EAGAIN,
          "still locked after 59.999 s");
    CHECK(node_session_login(session, "bob", "2222") == 0 && node_session_logout(session) == 0,
          "other ids are not locked");
    t_clock_ms += 1;
    CHECK(!node_session_locked(session, "alice", NULL), "unlocked after 60 s");
    for (int i = 1; i <= 4; i++)
        node_session_login(session, "alice", "9999");
    CHECK(node_session_login(session, "alice", "1111") == 0, "a fresh count after the lock");
    node_session_logout(session);
    for (int i = 1; i <= 4; i++)
        node_session_login(session, "alice", "9999");
    CHECK(node_session_login(session, "alice", "1111") == 0 && node_session_logout(session) == 0,
          "a success resets the count");
    CHECK(node_session_login(session, "alice", "9999") == -1 &&
              !node_session_locked(session, "alice", NULL),
          "one wrong PIN after a success does not lock");
    node_session_login(session, "alice", "1111");
    node_session_logout(session);
}

static void t_approvals(node_session_t *session)
{
    node_audit_t audit;
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, NULL, NULL, &audit) == -1 &&
              errno == ENOENT && !audit.approved,
          "nobody logged in: refused");
    CHECK(node_session_login(session, "alice", "1111") == 0, "alice logs in");

    const node_action_t guarded[] = {NODE_ACTION_VOID_LINE, NODE_ACTION_RETURN,
                                     NODE_ACTION_PRICE_OVERRIDE, NODE_ACTION_NO_SALE};
    for (size_t i = 0; i < sizeof(guarded) / sizeof(*guarded); i++) {
        const char *name = node_action_name(guarded[i]);
        CHECK(node_session_authorize(session, guarded[i], NULL, NULL, &audit) == -1 &&
                  errno == EACCES && !audit.approved && strcmp(audit.cashier_id, "alice") == 0 &&
                  audit.approver_id[0] == '\0',
              "alice alone cannot %s: %s", name, audit.reason);
        CHECK(node_session_authorize(session, guarded[i], "bob", "2222", &audit) == 0 &&
                  audit.approved && audit.action == guarded[i] &&
                  strcmp(audit.cashier_name, "Alice Li") == 0 &&
                  strcmp(audit.approver_name, "Bob Wang") == 0,
              "alice may %s with bob's approval (%s)", name, audit.reason);
    }

    bus_val_t *val = node_audit_val(&audit);
    bus_buf_t buf = {0};
    CHECK(val && bus_val_encode(val, &buf) == 0, "the audit record encodes");
    bus_val_t *back = buf.data ? bus_val_decode(buf.data, buf.len, NULL, NULL) : NULL;
    bool approved = false;
    CHECK(back && bus_val_equal(val, back), "and decodes to the same map");
    const char *action = bus_val_map_get_str(back, "action");
    const char *cashier = bus_val_map_get_str(back, "cashier_name");
    const char *approver = bus_val_map_get_str(back, "approver_name");
    CHECK(action && strcmp(action, "no_sale") == 0 && cashier && strcmp(cashier, "Alice Li") == 0 &&
              approver && strcmp(approver, "Bob Wang") == 0 &&
              bus_val_map_get_bool(back, "approved", &approved) && approved,
          "the map names the action, both people, approved");
    bus_val_destroy(&back);
    bus_val_destroy(&val);
    bus_buf_free(&buf);

    CHECK(node_session_authorize(session, NODE_ACTION_Z_REPORT, "bob", "2222", &audit) == -1 &&
              errno == EACCES && strcmp(audit.approver_id, "bob") == 0 && !audit.approved,
          "a supervisor cannot approve a Z report: %s", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_Z_REPORT, "carol", "3333", &audit) == 0 &&
              strcmp(audit.approver_name, "Carol Zhang") == 0,
          "a manager can (%s)", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, "alice", "1111", &audit) == -1 &&
              errno == EACCES,
          "approval by oneself refused: %s", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, "erin", "5555", &audit) == -1 &&
              errno == EACCES,
          "approval by a cashier refused, even one who may void: %s", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, "dave", "4444", &audit) == -1 &&
              errno == EACCES && strstr(audit.reason, "disabled"),
          "approval by a disabled supervisor refused: %s", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, "nobody", "2222", &audit) == -1 &&
              audit.approver_id[0] == '\0',
          "approval by an unknown id refused: %s", audit.reason);
    CHECK(node_session_authorize(session, NODE_ACTION_RETURN, "bob", "12", &audit) == -1,
          "a malformed approver PIN refused: %s", audit.reason);

    /* wrong approver PINs count toward the approver's lockout (one is counted above) */
    for (int i = 2; i <= 5; i++)
        CHECK(node_session_authorize(session, NODE_ACTION_RETURN, "bob", "0000", &audit) == -1 &&
                  errno == EACCES && !audit.approved,
              "wrong approver PIN %d refused: %s", i, audit.reason);
    CHECK(node_session_locked(session, "bob", NULL), "bob is locked out after 5 wrong PINs");
    CHECK(node_session_authorize(session, NODE_ACTION_RETURN, "bob", "2222", &audit) == -1 &&
              errno == EAGAIN,
          "a locked approver is refused even with the right PIN: %s", audit.reason);
    node_session_logout(session);
    CHECK(node_session_login(session, "bob", "2222") == -1 && errno == EAGAIN,
          "and cannot log in either");
    t_clock_ms += 60000;
    CHECK(node_session_login(session, "bob", "2222") == 0, "bob logs in after 60 s");

    /* bob's own permissions need no approver; the Z report does */
    for (int a = 0; a < NODE_ACTION__COUNT; a++) {
        int rc = node_session_authorize(session, a, NULL, NULL, &audit);
        bool expect = a != NODE_ACTION_Z_REPORT;
        CHECK((rc == 0) == expect && audit.approved == expect &&
                  (!expect || strcmp(audit.reason, "permitted") == 0),
              "supervisor alone: %s %s", node_action_name(a), expect ? "permitted" : "refused");
    }
    CHECK(node_session_authorize(session, NODE_ACTION_Z_REPORT, "carol", "3333", &audit) == 0,
          "a manager approves a supervisor's Z report");
    node_session_logout(session);

    /* a per-cashier mask */
    CHECK(node_session_login(session, "erin", "5555") == 0, "erin logs in");
    CHECK(node_session_authorize(session, NODE_ACTION_VOID_LINE, NULL, NULL, &audit) == 0,
          "erin's own mask lets her void a line");
    CHECK(node_session_authorize(session, NODE_ACTION_NO_SALE, NULL, NULL, &audit) == -1,
          "but not open the drawer");

    /* a reload that disables the logged-in cashier logs her out; lockouts survive a reload */
    for (int i = 0; i < 5; i++)
        node_session_authorize(session, NODE_ACTION_NO_SALE, "carol", "0000", NULL);
    CHECK(node_session_locked(session, "carol", NULL), "carol locked");
    t_table[4].active = false;
    CHECK(node_session_load(session, t_table, 5) == 0 && node_session_cashier(session) == NULL,
          "disabling erin by a reload logs her out");
    CHECK(node_session_locked(session, "carol", NULL), "carol is still locked after the reload");
    CHECK(node_session_authorize(session, 99, NULL, NULL, &audit) == -1 && errno == EINVAL,
          "an unknown action refused");
}

int main(void)
{
    t_pins();
    t_defaults();
    node_session_t *session = node_session_new(t_clock, NULL);
    CHECK(session != NULL, "new session");
    if (!session)
        return FINISH("test_cashier");
    t_load(session);
    t_table_checks(session);
    t_login(session);
    t_approvals(session);
    node_session_destroy(&session);
    node_session_destroy(&session);
    CHECK(session == NULL, "destroy is NULL-safe and nulls the pointer");
    return FINISH("test_cashier");
}
