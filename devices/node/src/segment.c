/*  =========================================================================
    segment.c - a register's journal in segments: rotation and retention

    Archives are found by name, not by an index file that could disagree
    with the directory: PATH.<first>-<last>, both sale numbers in decimal.
    =========================================================================
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node/file.h"
#include "node/segment.h"

#define S_DAY_S (24 * 3600)

typedef struct {
    char dir[PATH_MAX];
    char base[NAME_MAX + 1];
} s_parts_t;

static void s_split(const char *path, s_parts_t *p)
{
    char a[PATH_MAX], b[PATH_MAX];
    snprintf(a, sizeof(a), "%s", path);
    snprintf(b, sizeof(b), "%s", path);
    snprintf(p->dir, sizeof(p->dir), "%s", dirname(a));
    snprintf(p->base, sizeof(p->base), "%s", basename(b));
}

/* Whether name is an archive of base; its range. */
static bool s_parse(const char *name, const char *base, int64_t *first, int64_t *last)
{
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || name[n] != '.')
        return false;
    const char *p = name + n + 1;
    char *end;
    errno = 0;
    long long a = strtoll(p, &end, 10);
    if (end == p || *end != '-' || errno)
        return false;
    p = end + 1;
    long long b = strtoll(p, &end, 10);
    if (end == p || *end != '\0' || errno || a < 1 || b < a)
        return false;
    *first = a;
    *last = b;
    return true;
}

int node_segment_archive(const char *path, int64_t first, int64_t last, char *why, size_t size)
{
    char to[PATH_MAX];
    if (snprintf(to, sizeof(to), "%s.%06" PRId64 "-%06" PRId64, path, first, last) >=
        (int)sizeof(to)) {
        snprintf(why, size, "archive name too long");
        return -1;
    }
    if (access(to, F_OK) == 0) {
        snprintf(why, size, "%s exists already", to);
        errno = EEXIST;
        return -1;
    }
    if (rename(path, to) != 0 || node_file_sync_dir(to) != 0) {
        snprintf(why, size, "cannot archive %s as %s: %s", path, to, strerror(errno));
        return -1;
    }
    return 0;
}

/*  Call fn for every archive of path; stops at the first non-zero return. */
static int s_each(const char *path,
                  int (*fn)(void *arg, const char *file, int64_t first, int64_t last), void *arg,
                  char *why, size_t size)
{
    s_parts_t p;
    s_split(path, &p);
    DIR *d = opendir(p.dir);
    if (!d) {
        snprintf(why, size, "cannot list %s: %s", p.dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        int64_t first, last;
        if (!s_parse(e->d_name, p.base, &first, &last))
            continue;
        char file[PATH_MAX];
        if (snprintf(file, sizeof(file), "%s/%s", p.dir, e->d_name) >= (int)sizeof(file))
            continue;
        rc = fn(arg, file, first, last);
    }
    closedir(d);
    return rc < 0 ? -1 : rc;
}

typedef struct {
    char file[PATH_MAX];
    int64_t first, last;
    int64_t want; /* read_sale: the sale looked for */
    bool found;
} s_find_t;

static int s_newest(void *arg, const char *file, int64_t first, int64_t last)
{
    s_find_t *f = arg;
    if (!f->found || last > f->last) {
        snprintf(f->file, sizeof(f->file), "%s", file);
        f->first = first;
        f->last = last;
        f->found = true;
    }
    return 0;
}

int node_segment_newest(const char *path, char *file, size_t size, int64_t *first, int64_t *last,
                        char *why, size_t wsize)
{
    s_find_t f = {.found = false};
    if (s_each(path, s_newest, &f, why, wsize) != 0)
        return -1;
    if (!f.found)
        return 0;
    snprintf(file, size, "%s", f.file);
    *first = f.first;
    *last = f.last;
    return 1;
}

bus_val_t *node_segment_continue(const char *archive, const node_key_t *key, int64_t first,
                                 int64_t last, int64_t z_count, char *why, size_t size)
{
    node_journal_reader_t *r = node_journal_reader_open(archive, key);
    if (!r) {
        snprintf(why, size, "cannot open %s: %s", archive, strerror(errno));
        return NULL;
    }
    uint64_t seq = 1;
    node_journal_entry_t e;
    while (node_journal_reader_read(r, seq, &e) == 0) {
        node_journal_entry_clear(&e);
        seq++;
    }
    if (errno != ERANGE) {
        snprintf(why, size, "archive %s: %s", archive, node_journal_reader_errstr(r));
        node_journal_reader_destroy(&r);
        return NULL;
    }
    char hex[2 * NODE_JOURNAL_HASH_SIZE + 1];
    const uint8_t *h = node_journal_reader_hash(r);
    for (int i = 0; i < NODE_JOURNAL_HASH_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    char name[PATH_MAX];
    snprintf(name, sizeof(name), "%s", archive);
    bus_val_t *doc = bus_val_new_map();
    bus_val_map_set_str(doc, "type", "continue");
    bus_val_map_set_str(doc, "from_file", basename(name));
    bus_val_map_set_int(doc, "from_records", (int64_t)node_journal_reader_known(r));
    bus_val_map_set_str(doc, "from_hash", hex);
    bus_val_map_set_int(doc, "first_sale", first);
    bus_val_map_set_int(doc, "last_sale", last);
    bus_val_map_set_int(doc, "z_count", z_count);
    node_journal_reader_destroy(&r);
    return doc;
}

bool node_segment_is_continue(const bus_val_t *doc, int64_t *last_sale, int64_t *z_count)
{
    const char *type = bus_val_map_get_str(doc, "type");
    int64_t last = 0, z = 0;
    if (!type || strcmp(type, "continue") != 0 || !bus_val_map_get_int(doc, "last_sale", &last))
        return false;
    bus_val_map_get_int(doc, "z_count", &z);
    if (last_sale)
        *last_sale = last;
    if (z_count)
        *z_count = z;
    return true;
}

static int s_holder(void *arg, const char *file, int64_t first, int64_t last)
{
    s_find_t *f = arg;
    if (f->want >= first && f->want <= last) {
        snprintf(f->file, sizeof(f->file), "%s", file);
        f->first = first;
        f->last = last;
        f->found = true;
        return 1;
    }
    return 0;
}

int node_segment_read_sale(const char *path, const node_key_t *key, int64_t k,
                           node_journal_entry_t *entry, char *why, size_t size)
{
    s_find_t f = {.want = k};
    if (s_each(path, s_holder, &f, why, size) < 0)
        return -1;
    if (!f.found) {
        snprintf(why, size, "no archive holds sale %" PRId64, k);
        errno = ENOENT;
        return -1;
    }
    node_journal_reader_t *r = node_journal_reader_open(f.file, key);
    if (!r) {
        snprintf(why, size, "cannot open %s: %s", f.file, strerror(errno));
        return -1;
    }
    int64_t n = f.first - 1;
    for (uint64_t seq = 1;; seq++) {
        if (node_journal_reader_read(r, seq, entry) != 0) {
            snprintf(why, size, "%s: sale %" PRId64 " not found: %s", f.file, k,
                     node_journal_reader_errstr(r));
            node_journal_reader_destroy(&r);
            return -1;
        }
        if (entry->kind == NODE_JOURNAL_SALE && ++n == k)
            break;
        node_journal_entry_clear(entry);
    }
    node_journal_reader_destroy(&r);
    return 0;
}

typedef struct {
    int64_t acked;
    time_t before;
    int deleted;
} s_prune_t;

static int s_prune(void *arg, const char *file, int64_t first, int64_t last)
{
    (void)first;
    s_prune_t *p = arg;
    struct stat st;
    if (last <= p->acked && stat(file, &st) == 0 && st.st_mtime < p->before && unlink(file) == 0)
        p->deleted++;
    return 0;
}

int node_segment_prune(const char *path, int64_t acked, int days, char *why, size_t size)
{
    if (days <= 0)
        return 0;
    s_prune_t p = {.acked = acked, .before = time(NULL) - (time_t)days * S_DAY_S};
    if (s_each(path, s_prune, &p, why, size) != 0)
        return -1;
    return p.deleted;
}
