/*  =========================================================================
    file.c - whole small files written atomically and read bounded
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node/file.h"

int node_file_sync_dir(const char *path)
{
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void s_why(char *why, size_t size, const char *step, const char *path, int e)
{
    if (why && size)
        snprintf(why, size, "%s %s: %s", step, path, strerror(e));
}

int node_file_write(const char *path, const void *data, size_t len, int durable, char *why,
                    size_t why_size)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        s_why(why, why_size, "path too long:", path, ENAMETOOLONG);
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        s_why(why, why_size, "cannot create", tmp, e);
        errno = e;
        return -1;
    }
    const char *step = "write";
    const char *name = tmp;
    const uint8_t *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        done += (size_t)n;
    }
    step = "fsync";
    if (durable && fsync(fd) != 0)
        goto fail;
    step = "close";
    int closing = close(fd);
    fd = -1;
    if (closing != 0)
        goto fail;
    step = "rename";
    if (rename(tmp, path) != 0)
        goto fail;
    step = "fsync the directory of";
    name = path;
    if (durable && node_file_sync_dir(path) != 0)
        goto fail;
    return 0;
fail:;
    int e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    if (name == tmp)
        unlink(tmp);
    s_why(why, why_size, step, name, e);
    errno = e;
    return -1;
}

int node_file_read(const char *path, size_t max, uint8_t **data, size_t *size, char *why,
                   size_t why_size)
{
    *data = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        s_why(why, why_size, "cannot read", path, e);
        errno = e;
        return -1;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        if (why && why_size)
            snprintf(why, why_size, "%s: %lld bytes, more than the %zu allowed", path,
                     (long long)st.st_size, max);
        errno = EFBIG;
        return -1;
    }
    size_t want = (size_t)st.st_size, done = 0;
    uint8_t *buf = malloc(want + 1);
    while (buf && done < want) {
        ssize_t n = read(fd, buf + done, want - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    int e = !buf ? ENOMEM : errno ? errno : EIO;
    close(fd);
    if (!buf || done != want) {
        free(buf);
        s_why(why, why_size, "cannot read", path, e);
        errno = e;
        return -1;
    }
    buf[want] = '\0';
    *data = buf;
    *size = want;
    return 0;
}
