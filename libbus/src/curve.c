/*  =========================================================================
    curve.c - key generation and CURVE setup on czmq sockets

    czmq's zcert owns the file format and zauth the ZAP handler; this module
    only fixes posbus's layout and refuses to do anything silently insecure:
    a missing certificate is an error, never a fallback to plaintext.
    =========================================================================
*/
#include <errno.h>
#include <sys/stat.h>
#include "bus/curve.h"

#define S_DIR_MODE 0700

struct bus_auth {
    zactor_t *actor;
};

static int s_mkdir(const char *path)
{
    if (mkdir(path, S_DIR_MODE) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

static bool s_name_ok(const char *name)
{
    if (!name || !*name || strlen(name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.'))
            return false;
    return name[0] != '.';
}

int bus_keygen(const char *dir, const char *name, bool enrol)
{
    if (!dir || !s_name_ok(name)) {
        errno = EINVAL;
        return -1;
    }
    char path[PATH_MAX], secret[PATH_MAX], clients[PATH_MAX - 16];
    snprintf(path, sizeof(path), "%s/%s.cert", dir, name);
    snprintf(secret, sizeof(secret), "%s/%s.cert_secret", dir, name);
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
    zcert_set_meta(cert, "name", "%s", name);
    zcert_set_meta(cert, "created-by", "posbus");
    int rc = zcert_save(cert, path); /* writes path and path_secret (mode 0600 via zsys) */
    if (rc == 0)
        chmod(secret, S_IRUSR | S_IWUSR);
    if (rc == 0 && enrol) {
        char enrolled[PATH_MAX + 16];
        snprintf(enrolled, sizeof(enrolled), "%s/%s.cert", clients, name);
        rc = zcert_save_public(cert, enrolled);
    }
    zcert_destroy(&cert);
    if (rc != 0 && errno == 0)
        errno = EIO;
    return rc == 0 ? 0 : -1;
}

bool bus_endpoint_is_tcp(const char *endpoint)
{
    return endpoint && strncmp(endpoint, "tcp://", 6) == 0;
}

bus_auth_t *bus_auth_new(const char *clients_dir)
{
    if (!clients_dir || s_mkdir(clients_dir) != 0)
        return NULL;
    bus_auth_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->actor = zactor_new(zauth, NULL);
    if (!self->actor) {
        free(self);
        return NULL;
    }
    zstr_sendx(self->actor, "CURVE", clients_dir, NULL);
    zsock_wait(self->actor);
    return self;
}

void bus_auth_destroy(bus_auth_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zactor_destroy(&(*self_p)->actor);
    free(*self_p);
    *self_p = NULL;
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
