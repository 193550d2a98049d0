/*  =========================================================================
    node/file.h - whole small files written atomically and read bounded

    The register's state files (the catalog replica, the configuration it
    last received, how far uploads got) are replaced whole: written to
    PATH.tmp, fsync()ed, renamed over PATH and the directory fsync()ed, so
    a crash leaves the old file or the new one, never a mix. Reads take the
    whole file, refusing one larger than the caller's bound before
    allocating. Thread-safe: no shared state.
    =========================================================================
*/
#ifndef NODE_FILE_H_INCLUDED
#define NODE_FILE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Replace path with len bytes of data atomically (mode 0644). With durable false the data and
    the rename are not synced (for state that may be behind after a crash, e.g. upload
    progress: a rename never leaves a torn file). 0, or -1 with errno and, in why (may be
    NULL), the step that failed. */
int node_file_write(const char *path, const void *data, size_t len, int durable, char *why,
                    size_t why_size);

/*  Read the whole file at path into *data (malloc'd, caller frees; NUL-terminated one byte
    past *size), refusing a file above max bytes with EFBIG. 0, or -1 with errno and why. */
int node_file_read(const char *path, size_t max, uint8_t **data, size_t *size, char *why,
                   size_t why_size);

/*  fsync the directory holding path, so that an entry created or renamed there survives a
    crash. 0, or -1 with errno. */
int node_file_sync_dir(const char *path);

#ifdef __cplusplus
}
#endif
#endif
