/*  =========================================================================
    curve.c - key generation and CURVE setup on czmq sockets

    czmq's zcert owns the file format (busd is the ZAP handler); this module
    only fixes posbus's layout and refuses to do anything silently insecure:
    a missing certificate is an error, never a fallback to plaintext.

    busd's ZAP handler reloads clients/ whenever the directory changes, so a
    half-written certificate there could be read as garbage; enrolling writes
    the public certificate beside the key pair first and renames it into
    clients/, which is atomic within one file system.
    =========================================================================
*/
#include <errno.h>
#include <sys/stat.h>
#include <time.h>
#include "bus/curve.h"

#define S_DIR_MODE    0700
#define S_SERVER_FILE "busd"
#define S_CREATED_MAX 32 /* "2026-11-25T12:34:56Z" */

static int s_mkdir(const char *path)
{
    if (mkdir(path, S_DIR_MODE) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

/*  The base file name of id (busd's when id is NULL) into file. 0, or -1 (errno EINVAL) when id
    is not one an enrolled key may carry: malformed, or a role no certificate holds. */
static int s_file(const bus_identity_t *id, char *file, size_t size)
{
    if (!id) {
        snprintf(file, size, "%s", S_SERVER_FILE);
        return 0;
    }
    bus_identity_t check;
    if (bus_role_parse(bus_role_name(id->role)) != id->role ||
        bus_identity_set(&check, id->role, id->name, id->store, id->reg) != 0) {
        errno = EINVAL;
        return -1;
    }
    bus_identity_file(&check, file, size);
    return 0;
}

/*  Save cert's public part as DIR/clients/<file>.cert through a temporary file in DIR. */
static int s_enrol_cert(zcert_t *cert, const char *dir, const char *file)
{
    char tmp[PATH_MAX], enrolled[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s/.%s.enrol", dir, file);
    snprintf(enrolled, sizeof(enrolled), "%s/clients/%s.cert", dir, file);
    if (zcert_save_public(cert, tmp) != 0) {
        if (errno == 0)
            errno = EIO;
        goto out_unlink;
    }
    if (rename(tmp, enrolled) != 0)
        goto out_unlink;
    return 0;

out_unlink:;
    int saved = errno;
    unlink(tmp);
    errno = saved;
    return -1;
}

int bus_keygen(const char *dir, const bus_identity_t *id, bool enrol)
{
    char file[BUS_ID_FILE_MAX];
    if (!dir || s_file(id, file, sizeof(file)) != 0 || (enrol && !id)) {
        errno = EINVAL;
        return -1;
    }
    char path[PATH_MAX], secret[PATH_MAX], clients[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.cert", dir, file);
    snprintf(secret, sizeof(secret), "%s/%s.cert_secret", dir, file);
    snprintf(clients, sizeof(clients), "%s/clients", dir);
    if (s_mkdir(dir) != 0 || s_mkdir(clients) != 0)
        return -1;
    if (access(path, F_OK) == 0 || access(secret, F_OK) == 0) {
        errno = EEXIST;
        return -1;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        errno = ENOMEM;
        return -1;
    }
    if (id)
        bus_identity_to_cert(id, cert);
    char created[S_CREATED_MAX];
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(created, sizeof(created), "-");
    zcert_set_meta(cert, "created-by", "posbus");
    zcert_set_meta(cert, "created", "%s", created);
    errno = 0;
    int rc = zcert_save(cert, path); /* writes path and path_secret (mode 0600 via zsys) */
    if (rc == 0)
        rc = chmod(secret, S_IRUSR | S_IWUSR);
    if (rc == 0 && enrol)
        rc = s_enrol_cert(cert, dir, file);
    zcert_destroy(&cert);
    if (rc != 0 && errno == 0)
        errno = EIO;
    return rc == 0 ? 0 : -1;
}

int bus_enrol(const char *dir, const bus_identity_t *id)
{
    char file[BUS_ID_FILE_MAX];
    if (!dir || !id || s_file(id, file, sizeof(file)) != 0) {
        errno = EINVAL;
        return -1;
    }
    char path[PATH_MAX], clients[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s.cert", dir, file);
    snprintf(clients, sizeof(clients), "%s/clients", dir);
    if (access(path, F_OK) != 0) {
        errno = ENOENT;
        return -1;
    }
    zcert_t *cert = zcert_load(path);
    bus_identity_t found;
    const char *err = NULL;
    if (!cert || bus_identity_from_cert(cert, &found, &err) != 0 || found.role != id->role ||
        strcmp(found.name, id->name) != 0) {
        zcert_destroy(&cert);
        errno = EINVAL;
        return -1;
    }
    int rc = s_mkdir(clients) == 0 ? s_enrol_cert(cert, dir, file) : -1;
    zcert_destroy(&cert);
    return rc;
}

int bus_revoke(const char *dir, const bus_identity_t *id)
{
    char file[BUS_ID_FILE_MAX];
    if (!dir || !id || s_file(id, file, sizeof(file)) != 0) {
        errno = EINVAL;
        return -1;
    }
    char enrolled[PATH_MAX];
    snprintf(enrolled, sizeof(enrolled), "%s/clients/%s.cert", dir, file);
    return unlink(enrolled) == 0 ? 0 : -1;
}

bool bus_endpoint_is_tcp(const char *endpoint)
{
    return endpoint && strncmp(endpoint, "tcp://", 6) == 0;
}

int bus_curve_server(zsock_t *sock, const char *secret_cert_path)
{
    zcert_t *cert = secret_cert_path ? zcert_load(secret_cert_path) : NULL;
    if (!cert) {
        errno = ENOENT;
        return -1;
    }
    zcert_apply(cert, sock);
    zsock_set_curve_server(sock, 1);
    zsock_set_zap_domain(sock, BUS_ZAP_DOMAIN);
    zcert_destroy(&cert);
    return 0;
}

int bus_curve_client(zsock_t *sock, const char *secret_cert_path,
                     const char *server_public_cert_path)
{
    zcert_t *cert = secret_cert_path ? zcert_load(secret_cert_path) : NULL;
    zcert_t *server = server_public_cert_path ? zcert_load(server_public_cert_path) : NULL;
    int rc = -1;
    if (cert && server) {
        zcert_apply(cert, sock);
        zsock_set_curve_serverkey(sock, zcert_public_txt(server));
        rc = 0;
    } else
        errno = ENOENT;
    zcert_destroy(&cert);
    zcert_destroy(&server);
    return rc;
}
