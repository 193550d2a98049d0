/*  test_till - the till without a network: selling, numbering, permissions, shift reports,
    and journal segments (rotation after a Z report, retention, a crash inside a rotation).

    A real journal in a temporary directory, a real catalog and real scrypt PIN hashes; the
    back office is absent (the request hook is NULL: park, recall and online returns answer
    offline). The acknowledged mark the uplink would report is a variable of the test. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <node/journal.h>
#include <node/segment.h>
#include <node/till.h>

#include "testutil.h"

static char s_dir[] = "/tmp/posbus-till-XXXXXX";
static char s_path[PATH_MAX];
static int64_t s_acked;
static int s_published;

static int64_t s_acked_hook(void *arg)
{
    (void)arg;
    return s_acked;
}

static void s_publish_hook(void *arg, const char *what, const char *type, bus_val_t **body)
{
    (void)arg;
    (void)what;
    (void)type;
    bus_val_destroy(body);
    s_published++;
}

/* Run line; the answer's ok, and its string key (or "") into out. */
static bool s_run(node_till_t *till, const char *line, const char *key, char *out, size_t size)
{
    bus_val_t *r = node_till_command(till, line);
    bool ok = false;
    bus_val_map_get_bool(r, "ok", &ok);
    if (out) {
        const char *v = key ? bus_val_map_get_str(r, key) : NULL;
        snprintf(out, size, "%s", v ? v : "");
    }
    if (!ok) {
        const char *m = bus_val_map_get_str(r, "message");
        printf("     (%s: %s)\n", line, m ? m : "?");
    }
    bus_val_destroy(&r);
    return ok;
}

static int64_t s_int(node_till_t *till, const char *line, const char *key)
{
    bus_val_t *r = node_till_command(till, line);
    int64_t v = -1;
    bus_val_map_get_int(r, key, &v);
    bus_val_destroy(&r);
    return v;
}

static node_till_t *s_open(node_key_t *key, node_session_t *session, node_catalog_t *cat,
                           node_config_t *cfg)
{
    node_till_hooks_t hooks = {.publish = s_publish_hook, .acked = s_acked_hook};
    char why[256];
    node_till_t *till = node_till_open(s_path, key, "S1", "R01", session, &hooks, why, sizeof(why));
    if (!till) {
        printf("     (open: %s)\n", why);
        return NULL;
    }
    node_till_set_catalog(till, cat);
    node_till_set_config(till, cfg, why, sizeof(why));
    node_till_set_retention(till, 1);
    return till;
}

/* A payments service that accepts every payment code at once: it records the amount asked. */
static int64_t s_code_amount = -1;

static bus_val_t *s_payments_hook(void *arg, const char *service, const char *method,
                                  bus_val_t **body, bool *offline, char *err, size_t size)
{
    (void)arg;
    if (strcmp(service, "payments") != 0 || strcmp(method, "payment.pay") != 0) {
        *offline = true;
        snprintf(err, size, "the back office cannot be reached (test)");
        return NULL;
    }
    *offline = false;
    bus_val_map_get_int(*body, "amount", &s_code_amount);
    bus_val_t *r = bus_val_new_map();
    bus_val_map_set_str(r, "intent", "S1-R02-000001-01");
    bus_val_map_set_str(r, "state", "succeeded");
    bus_val_map_set_bool(r, "final", true);
    return r;
}

/* A card terminal that takes every job: the last verb, key and data it was given. */
static char s_card_verb[16], s_card_key[64], s_card_data[48];

static int s_card_hook(void *arg, const char *verb, const char *key, const char *data, char *err,
                       size_t size)
{
    (void)arg;
    (void)err;
    (void)size;
    if (verb) {
        snprintf(s_card_verb, sizeof(s_card_verb), "%s", verb);
        snprintf(s_card_key, sizeof(s_card_key), "%s", key);
        snprintf(s_card_data, sizeof(s_card_data), "%s", data ? data : "");
    }
    return 1;
}

/* The terminal's final answer to the job at it: approved for `amount` with receipt number
   `receipt`. The till's answer's error code (or "") into out; its ticket's remaining due. */
static int64_t s_card_answer(node_till_t *till, int64_t amount, int64_t receipt, char *out,
                             size_t size)
{
    bus_val_t *b = bus_val_new_map();
    bus_val_map_set_str(b, "verb", s_card_verb);
    bus_val_map_set_str(b, "key", s_card_key);
    bus_val_map_set_bool(b, "ok", true);
    bus_val_map_set_int(b, "amount", amount);
    bus_val_map_set_int(b, "receipt", receipt);
    bus_val_map_set_int(b, "trace", receipt);
    bus_val_t *r = node_till_card_event(till, "result", b);
    bus_val_destroy(&b);
    const char *e = bus_val_map_get_str(r, "error");
    snprintf(out, size, "%s", e ? e : "");
    int64_t remaining = -1;
    bus_val_map_get_int(bus_val_map_get(r, "ticket"), "remaining", &remaining);
    bus_val_destroy(&r);
    return remaining;
}

/* A number from the X report: report.KEY, or report.tenders.KEY with tenders true. */
static int64_t s_x(node_till_t *till, const char *key, bool tenders)
{
    bus_val_t *r = node_till_command(till, "x approve max 9999");
    const bus_val_t *m = bus_val_map_get(r, "report");
    if (tenders)
        m = bus_val_map_get(m, "tenders");
    int64_t v = -1;
    bus_val_map_get_int(m, key, &v);
    bus_val_destroy(&r);
    return v;
}

static int s_sales_in(const char *file)
{
    node_journal_status_t st;
    if (node_journal_verify(file, NULL, &st) != 0)
        return -1;
    return (int)st.last_seq;
}

int main(void)
{
    if (!mkdtemp(s_dir))
        return 1;
    snprintf(s_path, sizeof(s_path), "%s/journal", s_dir);
    char keypath[PATH_MAX];
    snprintf(keypath, sizeof(keypath), "%s/journal.key", s_dir);
    CHECK(node_key_generate(keypath) == 0, "a journal key");
    node_key_t *key = node_key_load(keypath);

    node_catalog_t *cat = node_catalog_new();
    node_catalog_item_t cola = {.sku = "COLA",
                                .barcode = "6901234500097",
                                .name = "可口可乐",
                                .unit = "pcs",
                                .category = "drinks",
                                .price = 300,
                                .tax_rate_bp = 1300,
                                .active = true};
    node_catalog_item_t apple = {.sku = "APPLE",
                                 .barcode = "",
                                 .name = "苹果",
                                 .unit = "kg",
                                 .category = "fruit",
                                 .price = 1280,
                                 .tax_rate_bp = 900,
                                 .active = true};
    node_catalog_put(cat, &cola);
    node_catalog_put(cat, &apple);

    node_config_t cfg;
    node_config_init(&cfg);
    cfg.version = 1;
    cfg.ncashiers = 2;
    cfg.cashiers = calloc(2, sizeof(*cfg.cashiers));
    node_cashier_t *c = &cfg.cashiers[0];
    snprintf(c->id, sizeof(c->id), "ann");
    snprintf(c->name, sizeof(c->name), "Ann");
    c->role = NODE_ROLE_CASHIER;
    c->permissions = NODE_PERM_ROLE;
    c->active = true;
    node_pin_hash("1111", c->pin_hash, sizeof(c->pin_hash));
    c = &cfg.cashiers[1];
    snprintf(c->id, sizeof(c->id), "max");
    snprintf(c->name, sizeof(c->name), "Max");
    c->role = NODE_ROLE_MANAGER;
    c->permissions = NODE_PERM_ROLE;
    c->active = true;
    node_pin_hash("9999", c->pin_hash, sizeof(c->pin_hash));

    node_session_t *session = node_session_new(NULL, NULL);
    node_till_t *till = s_open(key, session, cat, &cfg);
    CHECK(till != NULL, "a till on a new journal");
    char out[256];

    /* --- selling -------------------------------------------------------------------------- */
    CHECK(!s_run(till, "scan COLA", "error", out, sizeof(out)) && !strcmp(out, "login_required"),
          "nothing sells before a login");
    CHECK(s_run(till, "login ann 1111", NULL, NULL, 0), "Ann logs in");
    CHECK(s_run(till, "scan 6901234500097 2", NULL, NULL, 0), "COLA x2 by barcode");
    CHECK(!s_run(till, "scan APPLE", "error", out, sizeof(out)) && !strcmp(out, "weigh_required"),
          "a weighed item needs a weight");
    CHECK(s_run(till, "weigh APPLE 500", NULL, NULL, 0), "500 g of apples");
    CHECK_EQ(s_int(till, "state", "last_sale"), 0, "nothing journaled before payment");
    CHECK(!s_run(till, "pay card 100", "error", out, sizeof(out)) && !strcmp(out, "bad_amount"),
          "a card tender above what is due is refused");
    CHECK(s_run(till, "pay cash 20", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000001"),
          "paid: sale S1-R01-000001 (%s)", out);
    CHECK(!s_run(till, "void 1", "error", out, sizeof(out)) && !strcmp(out, "bad_line"),
          "the ticket is closed after payment");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && !s_run(till, "void 1", NULL, NULL, 0),
          "a cashier cannot void alone");
    CHECK(s_run(till, "void 1 approve max 9999", NULL, NULL, 0), "a manager approves the void");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && s_run(till, "pay cash", NULL, NULL, 0),
          "sale 2 (a voided line and a live one)");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              !s_run(till, "park", "error", out, sizeof(out)) && !strcmp(out, "offline"),
          "park answers offline without a back office (%s)", out);
    CHECK(s_run(till, "pay cash", NULL, NULL, 0), "sale 3");
    CHECK(!s_run(till, "cash-in 50 float", NULL, NULL, 0),
          "cash in opens the drawer: refused alone");
    CHECK(s_run(till, "cash-in 50 float approve max 9999", NULL, NULL, 0),
          "cash in 50.00 approved");
    int64_t expected = s_int(till, "x approve max 9999", "last_sale");
    CHECK_EQ(expected, 3, "the X report at sale 3");

    /* --- a Z report with sales not yet acknowledged keeps the journal ------------------- */
    s_acked = 2;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) &&
              strstr(out, "kept open"),
          "Z with sale 3 unacknowledged keeps the journal open (%s)", out);
    CHECK(access(s_path, F_OK) == 0 && node_till_segment(till) == 0, "no archive yet");
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) && s_run(till, "pay cash", NULL, NULL, 0),
          "sale 4");
    s_acked = 4;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) && strstr(out, "archived"),
          "Z with every sale acknowledged archives the journal (%s)", out);
    char archive[PATH_MAX];
    snprintf(archive, sizeof(archive), "%s.000001-000004", s_path);
    CHECK(access(archive, F_OK) == 0 && node_till_segment(till) == 1,
          "the archive is journal.000001-000004");
    CHECK(s_sales_in(archive) > 4, "the archive verifies on its own (%d records)",
          s_sales_in(archive));
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000005"),
          "the next sale is S1-R01-000005 in the new segment (%s)", out);
    node_journal_entry_t e;
    char why[256];
    CHECK(node_segment_read_sale(s_path, key, 3, &e, why, sizeof(why)) == 0 &&
              e.kind == NODE_JOURNAL_SALE,
          "sale 3 is read back from the archive (%s)", why);
    bus_val_t *doc = bus_val_decode(e.payload, e.size, NULL, NULL);
    int64_t seq = 0;
    bus_val_map_get_int(doc, "seq", &seq);
    CHECK_EQ(seq, 3, "and it is sale 3");
    bus_val_destroy(&doc);
    node_journal_entry_clear(&e);

    /* the new segment starts with the continue mark naming the archive's last hash */
    node_journal_reader_t *r = node_journal_reader_open(s_path, key);
    CHECK(r && node_journal_reader_read(r, 1, &e) == 0 && e.kind == NODE_JOURNAL_MARK,
          "record 1 of the new segment is a mark");
    doc = bus_val_decode(e.payload, e.size, NULL, NULL);
    node_journal_entry_clear(&e);
    int64_t last = 0;
    CHECK(node_segment_is_continue(doc, &last, NULL) && last == 4, "a continue mark after sale 4");
    node_journal_reader_t *ar = node_journal_reader_open(archive, key);
    for (uint64_t k = 1; ar && node_journal_reader_read(ar, k, &e) == 0; k++)
        node_journal_entry_clear(&e);
    char hex[65];
    for (int i = 0; ar && i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", node_journal_reader_hash(ar)[i]);
    const char *from_hash = bus_val_map_get_str(doc, "from_hash");
    CHECK(from_hash && !strcmp(from_hash, hex), "its from_hash is the archive's last record's");
    node_journal_reader_destroy(&ar);
    node_journal_reader_destroy(&r);
    bus_val_destroy(&doc);

    /* --- reopen: numbering runs on across the segment ------------------------------------ */
    node_till_destroy(&till);
    till = s_open(key, session, cat, &cfg);
    CHECK(till && node_till_last_sale(till) == 5, "reopened: last sale 5");
    s_run(till, "login ann 1111", NULL, NULL, 0);
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000006"),
          "then S1-R01-000006 (%s)", out);

    /* --- a device command from the back office: carried out once per key --------------------- */
    bus_val_t *cmd = bus_val_new_map();
    bus_val_map_set_str(cmd, "key", "k-1");
    bus_val_map_set_str(cmd, "device", "till");
    bus_val_map_set_str(cmd, "command", "display");
    bus_val_t *args = bus_val_new_map();
    bus_val_map_set_str(args, "text", "盘点 at 18:00");
    bus_val_map_set(cmd, "args", &args);
    uint64_t records = node_till_last_record(till);
    bus_val_t *res = node_till_device_command(till, cmd);
    bool ok = false, again = false;
    bus_val_map_get_bool(res, "ok", &ok);
    CHECK(ok && node_till_last_record(till) == records + 1, "display: shown and journaled");
    bus_val_destroy(&res);
    res = node_till_device_command(till, cmd);
    bus_val_map_get_bool(bus_val_map_get(res, "result"), "already_done", &again);
    CHECK(again && node_till_last_record(till) == records + 1,
          "the same key again: answered already_done, nothing journaled");
    bus_val_destroy(&res);
    s_acked = 6;
    CHECK(s_run(till, "z approve max 9999", "journal", out, sizeof(out)) && strstr(out, "archived"),
          "a Z archives the segment that journaled the command (%s)", out);
    node_till_destroy(&till);
    till = s_open(key, session, cat, &cfg);
    res = node_till_device_command(till, cmd);
    again = false;
    bus_val_map_get_bool(bus_val_map_get(res, "result"), "already_done", &again);
    CHECK(again, "and after the archive and a restart (the continue mark carries the key)");
    bus_val_destroy(&res);
    bus_val_map_set_str(cmd, "key", "k-2");
    bus_val_map_set_str(cmd, "device", "printer");
    res = node_till_device_command(till, cmd);
    ok = true;
    bus_val_map_get_bool(res, "ok", &ok);
    const char *err = bus_val_map_get_str(res, "error");
    CHECK(!ok && err && strstr(err, "no_device"), "a device the register lacks: %s", err);
    bus_val_destroy(&res);
    bus_val_destroy(&cmd);

    /* --- a crash inside a rotation: archived, but no new journal yet ----------------------- */
    s_acked = 6;
    s_run(till, "z approve max 9999", NULL, NULL, 0);
    node_till_destroy(&till);
    CHECK(unlink(s_path) == 0, "simulate a crash before the new segment was written");
    till = s_open(key, session, cat, &cfg);
    CHECK(till && node_till_last_sale(till) == 6,
          "opened again: the newest archive's continue mark is written (last sale %lld)",
          till ? (long long)node_till_last_sale(till) : -1LL);
    s_run(till, "login ann 1111", NULL, NULL, 0);
    CHECK(s_run(till, "scan COLA", NULL, NULL, 0) &&
              s_run(till, "pay cash", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R01-000007"),
          "no sale number is used twice (%s)", out);

    /* --- retention --------------------------------------------------------------------------- */
    struct timeval old[2] = {{time(NULL) - 3 * 24 * 3600, 0}, {time(NULL) - 3 * 24 * 3600, 0}};
    utimes(archive, old);
    CHECK_EQ(node_segment_prune(s_path, 3, 1, why, sizeof(why)), 0,
             "an old archive with unacknowledged sales is kept");
    CHECK_EQ(node_segment_prune(s_path, 7, 1, why, sizeof(why)), 1,
             "acknowledged and past retention: deleted");
    CHECK(access(archive, F_OK) != 0, "journal.000001-000004 is gone");
    CHECK(node_segment_read_sale(s_path, key, 2, &e, why, sizeof(why)) == -1 && errno == ENOENT,
          "sale 2 can no longer be read: %s", why);
    CHECK(s_published > 0, "audit records were published (%d)", s_published);

    node_till_destroy(&till);

    /* --- cash rounding is for cash only: a code and a card pay the exact total -------------- */
    char path2[PATH_MAX];
    snprintf(path2, sizeof(path2), "%s/journal-r02", s_dir);
    node_till_hooks_t hooks = {
        .publish = s_publish_hook, .acked = s_acked_hook, .request = s_payments_hook};
    till = node_till_open(path2, key, "S1", "R02", session, &hooks, why, sizeof(why));
    CHECK(till != NULL, "a till with a payments service (%s)", why);
    node_till_set_catalog(till, cat);
    cfg.cash_rounding = true;
    cfg.version = 2;
    CHECK(node_till_set_config(till, &cfg, why, sizeof(why)) == 0, "cash rounding on (%s)", why);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0), "965 g of apples (Ann still logged in)");
    bus_val_t *st = node_till_command(till, "state");
    int64_t total = -1, remaining = -1;
    bus_val_map_get_int(bus_val_map_get(st, "ticket"), "total", &total);
    bus_val_map_get_int(bus_val_map_get(st, "ticket"), "remaining", &remaining);
    bus_val_destroy(&st);
    CHECK(total == 1235 && remaining == 1240,
          "12.35, which cash settles with 12.40 (total %lld, remaining %lld)", (long long)total,
          (long long)remaining);
    CHECK(s_run(till, "pay code 134567890123456789", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000001"),
          "paid by a WeChat code: S1-R02-000001 (%s)", out);
    CHECK_EQ(s_code_amount, 1235, "the code was charged 12.35, not the cash-rounded 12.40");
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              s_run(till, "pay card", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R02-000002"),
          "pay card without an amount takes the exact 12.35 (%s)", out);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              s_run(till, "pay cash 20", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000003"),
          "in cash it is 12.40 (%s)", out);
    CHECK(s_x(till, "wechat", true) == 1235 && s_x(till, "card", true) == 1235 &&
              s_x(till, "cash", true) == 2000 && s_x(till, "cash_rounding", false) == 5 &&
              s_x(till, "total", false) == 3 * 1235,
          "the X report: wechat 12.35, card 12.35, cash rounding 0.05 from the cash sale only");
    s_code_amount = -1;
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) &&
              !s_run(till, "pay code 134567890123456789 12.31", "error", out, sizeof(out)) &&
              !strcmp(out, "bad_amount") && s_code_amount == -1,
          "a code for 12.31 of 12.35 (0.04 left, which cash would round away): refused before "
          "payments is asked");
    CHECK(!s_run(till, "pay card 12.31", "error", out, sizeof(out)) && !strcmp(out, "bad_amount"),
          "so is a card for 12.31");
    CHECK(s_run(till, "pay cash 10", NULL, NULL, 0) &&
              s_run(till, "pay card 2.31", "sale_id", out, sizeof(out)) &&
              !strcmp(out, "S1-R02-000004"),
          "with cash tendered first the card takes 2.31 and the sale is written (%s)", out);
    node_till_destroy(&till);

    /* --- the terminal approves another amount than asked: what it approved is booked ------- */
    snprintf(path2, sizeof(path2), "%s/journal-r03", s_dir);
    hooks.card = s_card_hook;
    till = node_till_open(path2, key, "S1", "R03", session, &hooks, why, sizeof(why));
    CHECK(till != NULL, "a till with a card terminal (%s)", why);
    node_till_set_catalog(till, cat);
    CHECK(node_till_set_config(till, &cfg, why, sizeof(why)) == 0, "cash rounding on (%s)", why);
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) && s_run(till, "pay card", NULL, NULL, 0) &&
              !strcmp(s_card_verb, "authorize") && !strncmp(s_card_data, "1235", 4),
          "12.35 asked at the terminal (%s %s)", s_card_verb, s_card_data);
    int64_t rest = s_card_answer(till, 1000, 11, out, sizeof(out));
    CHECK(!out[0] && rest == 240,
          "approved only 10.00 (a partial approval): booked 10.00, 2.40 still due in cash "
          "(error '%s', remaining %lld)", out, (long long)rest);
    CHECK(s_run(till, "pay cash 2.40", "sale_id", out, sizeof(out)) && !strcmp(out, "S1-R03-000001"),
          "and the sale is written with cash for the rest (%s)", out);
    CHECK_EQ(s_x(till, "card", true), 1000, "the X report's card is the 10.00 approved");
    CHECK(s_run(till, "weigh APPLE 965", NULL, NULL, 0) && s_run(till, "pay card", NULL, NULL, 0),
          "12.35 asked again");
    rest = s_card_answer(till, 1232, 12, out, sizeof(out));
    CHECK(!strcmp(out, "card_amount") && !strcmp(s_card_verb, "reversal") &&
              !strcmp(s_card_data, "12") && rest == 1240,
          "approved 12.32, which would leave 0.03 for cash to round away: reversed at once "
          "(receipt %s, %s), nothing booked (remaining %lld)", s_card_data, out, (long long)rest);
    CHECK(s_run(till, "pay card", NULL, NULL, 0), "asked again");
    rest = s_card_answer(till, 1300, 13, out, sizeof(out));
    CHECK(!strcmp(out, "card_amount") && !strcmp(s_card_verb, "reversal") &&
              !strcmp(s_card_data, "13") && rest == 1240,
          "approved 13.00 of 12.35 asked: reversed, nothing booked (%s, remaining %lld)", out,
          (long long)rest);
    CHECK(s_run(till, "pay card", NULL, NULL, 0) && s_card_answer(till, 1235, 14, out,
                                                                  sizeof(out)) <= 0 &&
              !out[0] && node_till_last_sale(till) == 2,
          "approved as asked: the sale is written (%s)", out);
    CHECK_EQ(s_x(till, "card", true), 2235, "the X report's card: 10.00 + 12.35");
    node_till_destroy(&till);

    node_session_destroy(&session);
    node_config_clear(&cfg);
    node_catalog_destroy(&cat);
    node_key_destroy(&key);
    t_remove_dir(s_dir);
    return FINISH("test_till");
}
