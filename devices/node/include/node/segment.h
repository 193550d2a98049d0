/*  =========================================================================
    node/segment.h - a register's journal in segments: rotation and retention

    A journal file only grows, so posnode closes it after a Z report once
    every sale in it is acknowledged: the file is renamed to
    PATH.<first sale>-<last sale> (an archive) and a new journal starts at
    PATH whose first record is a `continue` mark: the archive's name, its
    record count, the SHA-256 of its last record and the last sale number,
    so sale numbers run on without a gap and the hash chain runs on across
    files (docs/posnode.md "Journal segments"). Archives are deleted after
    the retention period, never before every sale in them is acknowledged
    and a Z report covers them. A crash anywhere in a rotation is repaired
    when the journal is opened next (a new journal without its mark gets
    the mark of the newest archive). Never prints. Thread-safe: no shared
    state (the file system is the state).
    =========================================================================
*/
#ifndef NODE_SEGMENT_H_INCLUDED
#define NODE_SEGMENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bus/val.h>

#include "node/journal.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Rename the journal at path to its archive name for sales first..last and sync the
    directory. 0, or -1 with why. */
int node_segment_archive(const char *path, int64_t first, int64_t last, char *why, size_t size);

/*  The newest archive of the journal at path (the highest last sale) into file (size bytes), with
    its sale range. 1 found, 0 none, -1 on error (why). */
int node_segment_newest(const char *path, char *file, size_t size, int64_t *first, int64_t *last,
                        char *why, size_t wsize);

/*  The continue mark for a new journal after archive (verified through with key): {type:
    "continue", from_file (the archive's base name), from_records, from_hash (hex), first_sale,
    last_sale, z_count}. NULL with why. */
bus_val_t *node_segment_continue(const char *archive, const node_key_t *key, int64_t first,
                                 int64_t last, int64_t z_count, char *why, size_t size);

/*  Whether doc is a continue mark; its last_sale and z_count (may be NULL). */
bool node_segment_is_continue(const bus_val_t *doc, int64_t *last_sale, int64_t *z_count);

/*  Read sale number k from the archive of path that holds it. 0, or -1 with why (ENOENT: no
    archive holds it, deleted by retention or never made). */
int node_segment_read_sale(const char *path, const node_key_t *key, int64_t k,
                           node_journal_entry_t *entry, char *why, size_t size);

/*  Delete the archives of path whose last sale is at most acked and that were archived more than
    days ago (days 0: keep everything). The number deleted, or -1 with why. */
int node_segment_prune(const char *path, int64_t acked, int days, char *why, size_t size);

#ifdef __cplusplus
}
#endif
#endif
