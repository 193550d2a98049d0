/*  =========================================================================
    dead.c - posctl dead: the dead letters of a stream consumer

    A stream entry that inventory or reporting can never apply (malformed,
    or refused by its script's validation) is parked in the consumer's
    dead-letter stream instead of being retried forever. This command shows
    them to the operator through the service's read-only "dead.list"
    method, --count entries at a time (the service cuts its pages at 1000
    entries or 512 KiB, posctl joins them), so that every parked sale is
    visible and can be followed up by its sale_id.
    =========================================================================
*/
#include <time.h>
#include "posctl.h"

#define S_PAGE_DEFAULT 100 /* entries per page when --count is 0 */
#define S_TIME_MAX     32

/*  The text of a field value: a string or binary value as is when it is printable text (a sale
    payload is MessagePack, so it is shown as JSON, base64), anything else as JSON. Appends to
    out, which the caller frees. */
static void s_value_text(const bus_val_t *v, bus_buf_t *out)
{
    size_t len = 0;
    const char *text = bus_val_get_str(v, &len);
    if (!text)
        text = bus_val_get_bin(v, &len);
    bool printable = text != NULL;
    for (size_t i = 0; printable && i < len; i++)
        printable = (unsigned char)text[i] >= ' ' && text[i] != '\x7f';
    if (printable)
        bus_buf_append(out, text, len);
    else
        bus_val_to_json(v, out);
    if (!out->data)
        bus_buf_append(out, "", 0); /* an empty value is still a C string */
}

/*  ms since the epoch as local "YYYY-MM-DD HH:MM:SS", or "-" when absent. */
static void s_time_text(int64_t ms, char *buf, size_t size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !localtime_r(&secs, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, size, "-");
}

/*  Print one page as a table (or CSV): id, original entry, sale_id, time, reason. */
static void s_print_rows(const bus_val_t *body, bool csv)
{
    bus_val_t *entries = bus_val_map_get(body, "entries");
    if (csv)
        printf("id,entry,sale_id,time,reason\n");
    else
        printf("%-22s %-22s %-24s %-19s %s\n", "ID", "ENTRY", "SALE_ID", "TIME", "REASON");
    for (size_t i = 0; i < bus_val_size(entries); i++) {
        bus_val_t *e = bus_val_arr_get(entries, i);
        bus_val_t *sale_id = bus_val_map_get(bus_val_map_get(e, "fields"), "sale_id");
        bus_buf_t sid = {0};
        if (sale_id)
            s_value_text(sale_id, &sid);
        int64_t ts = 0;
        bus_val_map_get_int(e, "ts", &ts);
        char when[S_TIME_MAX];
        s_time_text(ts, when, sizeof(when));
        const char *id = bus_val_map_get_str(e, "id");
        const char *entry = bus_val_map_get_str(e, "entry");
        const char *reason = bus_val_map_get_str(e, "reason");
        const char *cells[] = {id ? id : "", entry ? entry : "",
                               sid.data ? (const char *)sid.data : "-", when, reason ? reason : ""};
        if (csv)
            for (size_t c = 0; c < sizeof(cells) / sizeof(cells[0]); c++)
                posctl_print_csv_cell(cells[c], c + 1 == sizeof(cells) / sizeof(cells[0]));
        else
            printf("%-22s %-22s %-24s %-19s %s\n", cells[0], cells[1], cells[2], cells[3],
                   cells[4]);
        bus_buf_free(&sid);
    }
}

int posctl_dead(bus_config_t *config, const bus_conn_cfg_t *cfg)
{
    const char *format = bus_config_str(config, "format");
    if (bus_config_argc(config) != 2 ||
        (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))) {
        fprintf(stderr, "posctl: usage: dead SERVICE [--after ID] [--count N] "
                        "[--format table|csv|json]   (SERVICE: inventory or reporting)\n");
        return POSCTL_EXIT_USAGE;
    }
    const char *service = bus_config_arg(config, 1);
    int64_t count = bus_config_int(config, "count");
    bus_client_t *client = posctl_client(config, cfg);
    if (!client)
        return POSCTL_EXIT_FAIL;
    bus_val_t *body = bus_val_new_map();
    if (bus_config_str(config, "after"))
        bus_val_map_set_str(body, "after", bus_config_str(config, "after"));
    bus_val_t *page =
        posctl_call_pages(client, service, "dead.list", body, "entries", "after",
                          BUS_STREAM_DEAD_LIST_MAX, count > 0 ? count : S_PAGE_DEFAULT);
    bus_val_destroy(&body);
    bus_client_destroy(&client);
    if (!page)
        return POSCTL_EXIT_FAIL;
    if (strcmp(format, "json") == 0)
        posctl_print(page, format);
    else
        s_print_rows(page, strcmp(format, "csv") == 0);
    int64_t total = 0;
    bool more = false;
    bus_val_map_get_int(page, "total", &total);
    bus_val_map_get_bool(page, "more", &more);
    const char *group = bus_val_map_get_str(page, "group");
    const char *last = bus_val_map_get_str(page, "last");
    /* the summary goes to stderr so json and csv output stay machine-readable */
    fprintf(stderr, "%zu shown, %" PRId64 " dead letters in all in group %s%s%s\n",
            bus_val_size(bus_val_map_get(page, "entries")), total, group ? group : service,
            more ? "; next page: --after " : "", more && last ? last : "");
    bus_val_destroy(&page);
    return POSCTL_EXIT_OK;
}
