/*  =========================================================================
    sim.c - posctl sim: registers ringing up tickets, and tail --from

    The simulator prices every ticket with libpos exactly as a register
    does (member prices, discounts, voids, returns against earlier sales,
    cash rounding, tenders and change) from the catalog served by
    inventory, and uploads each completed sale to the sales service until it
    is acknowledged. It prints a JSON summary of what was acknowledged
    (totals, net quantity per SKU), which tests compare with stock and
    reports.

    Like a register, it never drops a sale silently. A failure that may
    pass (no reply, no sales instance registered, "unavailable" while Redis
    is down or refusing writes) is retried with the same sale document, so
    the sales service's idempotency on sale_id makes a resend after a lost
    reply harmless (it answers "duplicate"). Retries back off up to a cap
    and go on until the sale is acknowledged, --deadline-ms has passed for
    it, or the program is told to stop. Any other error is the sales
    service refusing the sale for good. Either way the sale is listed in
    the summary's "unacknowledged" and the exit code is 1.
    =========================================================================
*/
#include <node/sale_doc.h>
#include <pos/sale.h>
#include <pos/ticket.h>
#include "posctl.h"

#define S_CASHIER_MAX    24
#define S_RETURNABLE_MAX 100000
#define S_SNAPSHOT_PAGE  1000
#define S_LINES_MAX      5
#define S_CASH_NOTE      1000 /* customers pay cash in 10-yuan notes */
#define S_REPLAY_PAGE    500
#define S_LINES_LIMIT    100
#define S_BACKOFF_MIN_MS 100  /* first pause before resending a sale */
#define S_BACKOFF_MAX_MS 2000 /* pauses double up to this */
#define S_SLEEP_SLICE_MS 50   /* a pause checks this often whether to stop */

typedef struct {
    char sale_id[POS_SALE_ID_MAX + 1];
    int item;
    int64_t unit_price;
    int64_t left;
} s_returnable_t;

/*  How the uploads went, for the summary. */
typedef struct {
    int64_t acknowledged; /* sales acknowledged at least once */
    int64_t uploaded;     /* upload replies, repeats included */
    int64_t duplicates;   /* replies saying the sale was committed already */
    int64_t refused;      /* sales the sales service refused for good */
    int64_t retries;      /* resends after a failure that may pass */
    bus_val_t *unacked;   /* [{sale_id, code, error, attempts}] never acknowledged */
} s_uploads_t;

static uint64_t s_rng;
static uint64_t s_jitter_rng; /* backoff jitter: must not disturb the tickets' random sequence */

static uint32_t s_rand(void)
{
    s_rng = s_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(s_rng >> 33);
}

/*  Whether the failed request may succeed when sent again: no reply, no instance registered, a
    socket failure, or the service saying "unavailable" (Redis down or refusing writes). Decided
    on the error code of the reply too, so it holds whichever client errcode carries it. */
static bool s_transient(bus_client_t *client)
{
    const char *code = bus_client_remote_code(client);
    if (strcmp(code, BUS_ERR_UNAVAILABLE) == 0 || strcmp(code, BUS_ERR_NO_SERVICE) == 0)
        return true;
    switch (bus_client_errcode(client)) {
    case BUS_CLIENT_TIMEOUT:
    case BUS_CLIENT_NO_SERVICE:
    case BUS_CLIENT_IO:
        return true;
    default:
        return false;
    }
}

/*  A short name for the client's last error: the service's error code when it answered, else
    timeout, no_service, invalid or io. */
static const char *s_error_code(bus_client_t *client)
{
    const char *code = bus_client_remote_code(client);
    if (*code)
        return code;
    switch (bus_client_errcode(client)) {
    case BUS_CLIENT_TIMEOUT:
        return "timeout";
    case BUS_CLIENT_NO_SERVICE:
        return BUS_ERR_NO_SERVICE;
    case BUS_CLIENT_INVALID:
        return "invalid";
    default:
        return "io";
    }
}

/*  Sleep ms, in slices, returning early (false) when the program is told to stop. */
static bool s_pause(int64_t ms)
{
    int64_t until = bus_mono_ms() + ms;
    while (!bus_program_stopping()) {
        int64_t left = until - bus_mono_ms();
        if (left <= 0)
            return true;
        zclock_sleep((int)(left < S_SLEEP_SLICE_MS ? left : S_SLEEP_SLICE_MS));
    }
    return false;
}

/*  Upload doc until the sales service acknowledges it: resend the same document after a failure
    that may pass, backing off, for up to deadline_ms from the first attempt (0 = no limit) or
    until the program is told to stop. Returns the reply (caller destroys) or NULL with the
    client's error set; *refused tells a refusal for good from giving up. *attempts counts sends,
    *latency_us the time from the first send to the reply. */
static bus_msg_t *s_upload(bus_client_t *client, const bus_val_t *doc, int64_t deadline_ms,
                           s_uploads_t *up, int *attempts, bool *refused, int64_t *latency_us)
{
    int64_t first = bus_mono_ms(), first_us = zclock_usecs();
    int64_t backoff = S_BACKOFF_MIN_MS;
    const char *sale_id = bus_val_map_get_str(doc, "sale_id");
    *attempts = 0;
    *refused = false;
    while (true) {
        bus_val_t *body = bus_val_dup(doc);
        (*attempts)++;
        bus_msg_t *reply = bus_client_request(client, "sales", "sale.upload", &body);
        if (reply) {
            *latency_us = zclock_usecs() - first_us;
            if (*attempts > 1)
                fprintf(stderr, "posctl: sim: %s acknowledged after %d attempts\n", sale_id,
                        *attempts);
            return reply;
        }
        if (!s_transient(client)) {
            *refused = true;
            fprintf(stderr, "posctl: sim: %s refused: %s\n", sale_id, bus_client_errstr(client));
            return NULL;
        }
        if (*attempts == 1)
            fprintf(stderr, "posctl: sim: %s: %s; resending until acknowledged\n", sale_id,
                    bus_client_errstr(client));
        /* half to all of the backoff, so registers that failed together spread out again */
        s_jitter_rng = s_jitter_rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t pause = backoff / 2 + (int64_t)((s_jitter_rng >> 33) % (uint64_t)(backoff / 2 + 1));
        if (deadline_ms > 0) {
            int64_t left = first + deadline_ms - bus_mono_ms();
            if (left <= 0)
                return NULL;
            pause = pause < left ? pause : left; /* one last try at the deadline */
        }
        if (!s_pause(pause))
            return NULL;
        backoff = backoff * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : backoff * 2;
        up->retries++;
    }
}

/*  Upload a sale repeat times (each one until acknowledged); whether it was acknowledged. A sale
    never acknowledged is added to up->unacked with the last error. */
static bool s_upload_sale(bus_client_t *client, const bus_val_t *doc, int repeat,
                          int64_t deadline_ms, s_uploads_t *up, int64_t *lat_us, int64_t *nlat)
{
    bool acked = false, refused = false;
    int attempts = 0, total_attempts = 0;
    for (int rep = 0; rep < repeat && !refused; rep++) {
        int64_t latency = 0;
        bus_msg_t *reply = s_upload(client, doc, deadline_ms, up, &attempts, &refused, &latency);
        total_attempts += attempts;
        if (!reply) {
            up->refused += refused;
            if (!refused)
                break; /* gave up, or stopping */
            continue;
        }
        lat_us[(*nlat)++] = latency;
        bool dup = false;
        bus_val_map_get_bool(bus_msg_body(reply), "duplicate", &dup);
        up->duplicates += dup;
        up->uploaded++;
        acked = true;
        bus_msg_destroy(&reply);
    }
    if (acked) {
        up->acknowledged++;
        return true;
    }
    bus_val_t *miss = bus_val_new_map();
    bus_val_map_set_str(miss, "sale_id", bus_val_map_get_str(doc, "sale_id"));
    bus_val_map_set_str(miss, "code", s_error_code(client));
    bus_val_map_set_str(miss, "error", bus_client_errstr(client));
    bus_val_map_set_int(miss, "attempts", total_attempts);
    bus_val_arr_push(up->unacked, &miss);
    return false;
}

/*  The active catalog, from inventory's snapshot pages. */
static pos_item_t *s_load_catalog(bus_client_t *client, int *count)
{
    pos_item_t *items = NULL;
    int n = 0;
    char after[POS_SKU_MAX + 1] = "";
    bool more = true;
    while (more) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "after", after);
        bus_val_map_set_int(body, "count", S_SNAPSHOT_PAGE);
        bus_msg_t *rep = posctl_call(client, "inventory", "catalog.snapshot", &body);
        if (!rep) {
            free(items);
            return NULL;
        }
        bus_val_t *list = bus_val_map_get(bus_msg_body(rep), "items");
        more = false;
        bus_val_map_get_bool(bus_msg_body(rep), "more", &more);
        snprintf(after, sizeof(after), "%s", bus_val_map_get_str(bus_msg_body(rep), "last"));
        items = realloc(items, (size_t)(n + (int)bus_val_size(list) + 1) * sizeof(*items));
        for (size_t i = 0; i < bus_val_size(list); i++) {
            bus_val_t *v = bus_val_arr_get(list, i);
            bool active = true;
            bus_val_map_get_bool(v, "active", &active);
            if (!active)
                continue;
            pos_item_t *it = &items[n++];
            memset(it, 0, sizeof(*it));
            snprintf(it->sku, sizeof(it->sku), "%s", bus_val_map_get_str(v, "sku"));
            snprintf(it->name, sizeof(it->name), "%s", bus_val_map_get_str(v, "name"));
            snprintf(it->category, sizeof(it->category), "%s", bus_val_map_get_str(v, "category"));
            int64_t rate = 0;
            bus_val_map_get_int(v, "price", &it->price);
            bus_val_map_get_int(v, "member_price", &it->member_price);
            bus_val_map_get_int(v, "tax_rate_bp", &rate);
            it->tax_rate_bp = (int)rate;
            const char *unit = bus_val_map_get_str(v, "unit");
            it->unit = unit && strcmp(unit, "kg") == 0 ? POS_UNIT_KG : POS_UNIT_PCS;
        }
        bus_msg_destroy(&rep);
    }
    *count = n;
    return items;
}

/*  The sale document a register uploads, from a priced and paid ticket. */
/*  The sale document of a paid ticket, built the way a register builds it (libpos's sale, then
    node_sale_doc): NULL if the ticket does not make a valid sale. */
static bus_val_t *s_sale_doc(pos_ticket_t *t, const char *store, const char *reg, int64_t seq)
{
    char cashier[S_CASHIER_MAX];
    snprintf(cashier, sizeof(cashier), "C-%s", reg);
    pos_sale_t sale;
    pos_sale_init(&sale);
    bus_val_t *doc = NULL;
    if (pos_sale_from_ticket(&sale, t, store, reg, seq, cashier, bus_now_ms()) == POS_OK)
        doc = node_sale_doc(&sale);
    pos_sale_clear(&sale);
    return doc;
}

static int s_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/*  Pay a computed ticket like a customer would. */
static void s_pay(pos_ticket_t *t)
{
    int64_t due = pos_ticket_remaining(t);
    if (pos_ticket_totals(t)->total < 0) {
        pos_ticket_add_tender(t, POS_TENDER_CASH, pos_ticket_totals(t)->due);
        return;
    }
    if (due == 0)
        return;
    uint32_t r = s_rand() % 100;
    if (r < 50) {
        int64_t notes = (due + S_CASH_NOTE - 1) / S_CASH_NOTE * S_CASH_NOTE;
        pos_ticket_add_tender(t, POS_TENDER_CASH, notes);
    } else
        pos_ticket_add_tender(t,
                              r < 70   ? POS_TENDER_CARD
                              : r < 85 ? POS_TENDER_WECHAT
                                       : POS_TENDER_ALIPAY,
                              pos_ticket_totals(t)->total);
}

int posctl_sim(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *store = bus_config_str(config, "store");
    if (!store) {
        fprintf(stderr, "posctl: sim needs --store\n");
        return POSCTL_EXIT_USAGE;
    }
    int registers = (int)bus_config_int(config, "registers");
    int64_t sales = bus_config_int(config, "sales");
    int returns_pct = (int)bus_config_int(config, "returns-pct");
    int64_t first_seq = bus_config_int(config, "first-seq");
    int repeat = (int)bus_config_int(config, "repeat");
    int base = (int)bus_config_int(config, "register-base");
    int fixed_lines = (int)bus_config_int(config, "lines");
    int64_t deadline_ms = bus_config_int(config, "deadline-ms");
    s_rng = (uint64_t)bus_config_int(config, "seed") * 2654435761ULL + 1;
    s_jitter_rng = (uint64_t)zclock_usecs() ^ (uint64_t)getpid();
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    int nitems = 0;
    pos_item_t *items = s_load_catalog(client, &nitems);
    if (!items || nitems == 0) {
        fprintf(stderr, "posctl: sim: the catalog is empty (import one first)\n");
        free(items);
        bus_client_destroy(&client);
        return POSCTL_EXIT_FAIL;
    }
    int64_t *lat_us = calloc((size_t)(sales * repeat + 1), sizeof(*lat_us));
    int64_t nlat = 0;
    s_returnable_t *returnable = calloc(S_RETURNABLE_MAX, sizeof(*returnable));
    int nret = 0;
    int64_t *net_qty = calloc((size_t)nitems, sizeof(*net_qty));
    int64_t total = 0, n_tickets = 0, n_sales = 0, n_returns = 0;
    int64_t cash_expected = 0;
    s_uploads_t up = {.unacked = bus_val_new_arr()};
    int64_t t0 = bus_mono_ms();
    for (int64_t n = 0; n < sales && !bus_program_stopping(); n++) {
        char reg[8], sale_id[POS_SALE_ID_MAX + 1];
        snprintf(reg, sizeof(reg), "R%02d", base + (int)(n % registers) + 1);
        int64_t seq = first_seq + n / registers;
        snprintf(sale_id, sizeof(sale_id), "%s-%s-%06" PRId64, store, reg, seq);
        pos_ticket_t *t = pos_ticket_new();
        pos_ticket_set_time(t, bus_now_ms());
        pos_ticket_set_cash_rounding(t, true);
        bool is_return = nret > 0 && (int)(s_rand() % 100) < returns_pct;
        int picked[S_LINES_LIMIT], npicked = 0;
        s_returnable_t *original = NULL;
        if (is_return) {
            original = &returnable[s_rand() % (uint32_t)nret];
            if (original->left == 0) {
                is_return = false;
                original = NULL;
            } else {
                pos_ticket_add_return(t, &items[original->item], 1, original->unit_price,
                                      original->sale_id, NULL);
                original->left--;
            }
        }
        if (!is_return) {
            pos_ticket_set_member(t, s_rand() % 4 == 0);
            int lines = fixed_lines > 0 ? fixed_lines : 1 + (int)(s_rand() % S_LINES_MAX);
            for (int i = 0; i < lines; i++) {
                int k = (int)(s_rand() % (uint32_t)nitems);
                int64_t qty =
                    items[k].unit == POS_UNIT_KG ? 100 + s_rand() % 1900 : 1 + s_rand() % 3;
                pos_ticket_add_line(t, &items[k], qty, NULL);
                picked[npicked++] = k;
            }
            if (s_rand() % 20 == 0 && lines > 1)
                pos_ticket_void_line(t, 0);
            if (s_rand() % 10 == 0)
                pos_ticket_set_discount_percent(t, 500);
        }
        pos_ticket_compute(t);
        s_pay(t);
        n_tickets++;
        bus_val_t *doc = s_sale_doc(t, store, reg, seq);
        bool acked = doc && s_upload_sale(client, doc, repeat, deadline_ms, &up, lat_us, &nlat);
        bus_val_destroy(&doc);
        if (!acked) {
            /* never committed: not in the totals, and its original can be returned again */
            if (original)
                original->left++;
            pos_ticket_destroy(&t);
            continue;
        }
        if (is_return)
            net_qty[original->item] -= 1;
        else
            for (int i = 0; i < pos_ticket_line_count(t); i++) {
                const pos_line_t *l = pos_ticket_line(t, i);
                if (l->voided)
                    continue;
                net_qty[picked[i]] += l->qty;
                if (l->item.unit == POS_UNIT_PCS && l->promo_discount == 0 &&
                    l->ticket_discount == 0 && nret < S_RETURNABLE_MAX) {
                    s_returnable_t *r = &returnable[nret++];
                    snprintf(r->sale_id, sizeof(r->sale_id), "%s", sale_id);
                    r->item = picked[i];
                    r->unit_price = l->unit_price;
                    r->left = l->qty;
                }
            }
        const pos_totals_t *tot = pos_ticket_totals(t);
        total += tot->total;
        for (int i = 0; i < pos_ticket_tender_count(t); i++)
            if (pos_ticket_tender(t, i)->kind == POS_TENDER_CASH)
                cash_expected += pos_ticket_tender(t, i)->amount;
        cash_expected -= tot->change;
        n_sales += !is_return;
        n_returns += is_return;
        pos_ticket_destroy(&t);
    }
    int64_t took = bus_mono_ms() - t0;
    int64_t missing = (int64_t)bus_val_size(up.unacked);
    bus_val_t *summary = bus_val_new_map();
    bus_val_map_set_str(summary, "store", store);
    bus_val_map_set_int(summary, "tickets", n_tickets);
    bus_val_map_set_int(summary, "acknowledged", up.acknowledged);
    bus_val_map_set_int(summary, "sales", n_sales);
    bus_val_map_set_int(summary, "returns", n_returns);
    bus_val_map_set_int(summary, "uploaded", up.uploaded);
    bus_val_map_set_int(summary, "duplicates", up.duplicates);
    bus_val_map_set_int(summary, "refused", up.refused);
    bus_val_map_set_int(summary, "retries", up.retries);
    bus_val_map_set(summary, "unacknowledged", &up.unacked);
    bus_val_map_set_int(summary, "total_fen", total);
    bus_val_map_set_int(summary, "cash_expected_fen", cash_expected);
    bus_val_map_set_int(summary, "elapsed_ms", took);
    qsort(lat_us, (size_t)nlat, sizeof(*lat_us), s_cmp_i64);
    bus_val_map_set_int(summary, "ack_p50_us", nlat ? lat_us[nlat / 2] : 0);
    bus_val_map_set_int(summary, "ack_p99_us", nlat ? lat_us[nlat * 99 / 100] : 0);
    free(lat_us);
    bus_val_t *qty = bus_val_new_map();
    for (int k = 0; k < nitems; k++)
        if (net_qty[k])
            bus_val_map_set_int(qty, items[k].sku, net_qty[k]);
    bus_val_map_set(summary, "net_qty", &qty);
    posctl_print(summary, "json");
    bus_val_destroy(&summary);
    free(net_qty);
    free(returnable);
    free(items);
    bus_client_destroy(&client);
    if (missing > 0)
        fprintf(stderr,
                "posctl: sim: %" PRId64 " of %" PRId64 " sales were never acknowledged "
                "(listed under \"unacknowledged\")\n",
                missing, n_tickets);
    return missing > 0 || up.refused > 0 || n_tickets < sales ? POSCTL_EXIT_FAIL : POSCTL_EXIT_OK;
}

/*  Print every committed sale after *last (one JSON line each), advancing *last. 0 or -1. */
static int s_replay(bus_client_t *client, char *last, size_t size, const char *upto)
{
    bool more = true;
    while (more) {
        bus_val_t *body = bus_val_new_map();
        bus_val_map_set_str(body, "after", last);
        bus_val_map_set_int(body, "count", S_REPLAY_PAGE);
        bus_msg_t *rep = posctl_call(client, "sales", "sale.replay", &body);
        if (!rep)
            return -1;
        bus_val_t *list = bus_val_map_get(bus_msg_body(rep), "sales");
        more = false;
        bus_val_map_get_bool(bus_msg_body(rep), "more", &more);
        for (size_t i = 0; i < bus_val_size(list); i++) {
            bus_val_t *sale = bus_val_arr_get(list, i);
            const char *sid = bus_val_map_get_str(sale, "stream_id");
            if (upto && bus_stream_id_cmp(sid, upto) > 0) {
                more = false;
                break;
            }
            bus_buf_t out = {0};
            bus_val_to_json(sale, &out);
            printf("%s\n", (const char *)out.data);
            bus_buf_free(&out);
            snprintf(last, size, "%s", sid);
        }
        bus_msg_destroy(&rep);
    }
    return 0;
}

int posctl_tail_from(bus_config_t *config, const bus_conn_cfg_t *cfg, const char *prefix,
                     const char *from)
{
    const char *err = NULL;
    bus_sub_t *sub = bus_sub_new(cfg, &err);
    bus_client_t *client = sub ? posctl_client(config, cfg) : NULL;
    if (!client) {
        fprintf(stderr, "posctl: cannot subscribe: %s\n", err ? err : "no client");
        bus_sub_destroy(&sub);
        return POSCTL_EXIT_FAIL;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* subscribe first, so nothing committed during the replay is missed live */
    bus_sub_subscribe(sub, prefix);
    char last[BUS_STREAM_ID_MAX];
    snprintf(last, sizeof(last), "%s", from);
    int rc = s_replay(client, last, sizeof(last), NULL) == 0 ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    int64_t count = bus_config_int(config, "count"), idle = bus_config_int(config, "idle-ms");
    int64_t seen = 0;
    uint64_t gaps = 0;
    while (rc == POSCTL_EXIT_OK && !bus_program_stopping() && (count == 0 || seen < count)) {
        char topic[BUS_TOPIC_MAX + 1];
        bus_msg_t *msg = bus_sub_recv(sub, idle > 0 ? (int)idle : 1000, topic, sizeof(topic));
        if (!msg) {
            if (idle > 0)
                break;
            /* quiet: catch up anything an event lost on the way would have carried */
            rc = s_replay(client, last, sizeof(last), NULL) ? POSCTL_EXIT_FAIL : rc;
            continue;
        }
        const char *sid = bus_val_map_get_str(bus_msg_body(msg), "stream_id");
        if (strcmp(bus_msg_type(msg), "sale.completed") == 0 && sid) {
            if (bus_stream_id_cmp(sid, last) > 0) {
                /* fill the seam or a loss: everything between last and this one, then it */
                if (bus_sub_gaps(sub) != gaps || seen == 0)
                    rc = s_replay(client, last, sizeof(last), sid) ? POSCTL_EXIT_FAIL : rc;
                gaps = bus_sub_gaps(sub);
                if (bus_stream_id_cmp(sid, last) > 0) {
                    bus_buf_t out = {0};
                    bus_val_to_json(bus_msg_body(msg), &out);
                    printf("%s\n", (const char *)out.data);
                    bus_buf_free(&out);
                    snprintf(last, sizeof(last), "%s", sid);
                }
                seen++;
            }
        }
        bus_msg_destroy(&msg);
    }
    bus_client_destroy(&client);
    bus_sub_destroy(&sub);
    return rc;
}
