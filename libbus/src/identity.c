/*  =========================================================================
    identity.c - roles and names of enrolled keys, and the caller frame

    One place decides what a well-formed identity is, so that busd (which
    reads certificates and writes caller frames), libbus services (which read
    caller frames) and posctl (which writes certificates) cannot disagree.
    Names are restricted to characters that need no quoting in a frame, a
    file name or a log line.
    =========================================================================
*/
#include <errno.h>
#include "bus/identity.h"

static const struct {
    bus_role_t role;
    const char *name;
} s_roles[] = {{BUS_ROLE_SERVICE, "service"},
               {BUS_ROLE_REGISTER, "register"},
               {BUS_ROLE_OPERATOR, "operator"},
               {BUS_ROLE_CONSUMER, "consumer"},
               {BUS_ROLE_UNCHECKED, "unchecked"}};

#define S_ROLES_ENROLLABLE 4 /* the first four: UNCHECKED is never in a certificate */

const char *bus_role_name(bus_role_t role)
{
    for (size_t i = 0; i < sizeof(s_roles) / sizeof(s_roles[0]); i++)
        if (s_roles[i].role == role)
            return s_roles[i].name;
    return "none";
}

static bus_role_t s_role_parse(const char *text, size_t count)
{
    for (size_t i = 0; text && i < count; i++)
        if (strcmp(s_roles[i].name, text) == 0)
            return s_roles[i].role;
    return BUS_ROLE_NONE;
}

bus_role_t bus_role_parse(const char *text)
{
    return s_role_parse(text, S_ROLES_ENROLLABLE);
}

bool bus_identity_id_ok(const char *text)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n > BUS_ID_PART_MAX)
        return false;
    for (const char *p = text; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_'))
            return false;
    return true;
}

bool bus_identity_name_ok(const char *text)
{
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n > BUS_ID_NAME_MAX || text[0] == '.')
        return false;
    for (const char *p = text; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.'))
            return false;
    return true;
}

int bus_identity_set(bus_identity_t *id, bus_role_t role, const char *name, const char *store,
                     const char *reg)
{
    memset(id, 0, sizeof(*id));
    if (role == BUS_ROLE_REGISTER) {
        if (!bus_identity_id_ok(store) || !bus_identity_id_ok(reg))
            goto out_invalid;
        snprintf(id->store, sizeof(id->store), "%s", store);
        snprintf(id->reg, sizeof(id->reg), "%s", reg);
        snprintf(id->name, sizeof(id->name), "%s.%s", store, reg);
    } else if (role == BUS_ROLE_SERVICE || role == BUS_ROLE_OPERATOR || role == BUS_ROLE_CONSUMER ||
               role == BUS_ROLE_UNCHECKED) {
        if (!bus_identity_name_ok(name))
            goto out_invalid;
        snprintf(id->name, sizeof(id->name), "%s", name);
    } else
        goto out_invalid;
    id->role = role;
    return 0;

out_invalid:
    memset(id, 0, sizeof(*id));
    errno = EINVAL;
    return -1;
}

int bus_identity_from_cert(zcert_t *cert, bus_identity_t *id, const char **err)
{
    memset(id, 0, sizeof(*id));
    const char *role_text = cert ? zcert_meta(cert, "role") : NULL;
    bus_role_t role = bus_role_parse(role_text);
    if (role == BUS_ROLE_NONE) {
        *err = role_text ? "unknown role" : "no role in the certificate";
        return -1;
    }
    const char *name = zcert_meta(cert, "name");
    const char *store = zcert_meta(cert, "store");
    const char *reg = zcert_meta(cert, "register");
    if (bus_identity_set(id, role, name, store, reg) != 0) {
        *err = role == BUS_ROLE_REGISTER ? "store or register missing or malformed"
                                         : "name missing or malformed";
        return -1;
    }
    if (role == BUS_ROLE_REGISTER && name && strcmp(name, id->name) != 0) {
        memset(id, 0, sizeof(*id));
        *err = "register name is not <store>.<register>";
        return -1;
    }
    return 0;
}

void bus_identity_to_cert(const bus_identity_t *id, zcert_t *cert)
{
    zcert_set_meta(cert, "role", "%s", bus_role_name(id->role));
    zcert_set_meta(cert, "name", "%s", id->name);
    if (id->role == BUS_ROLE_REGISTER) {
        zcert_set_meta(cert, "store", "%s", id->store);
        zcert_set_meta(cert, "register", "%s", id->reg);
    }
}

size_t bus_identity_encode(const bus_identity_t *id, char *out, size_t size)
{
    int n;
    if (id->role == BUS_ROLE_REGISTER)
        n = snprintf(out, size, "register %s %s %s", id->name, id->store, id->reg);
    else
        n = snprintf(out, size, "%s %s", bus_role_name(id->role), id->name);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

int bus_identity_decode(const void *data, size_t len, bus_identity_t *id)
{
    char text[BUS_ID_FRAME_MAX + 1];
    char *part[5] = {NULL};
    int n = 0;
    memset(id, 0, sizeof(*id));
    if (len == 0 || len > BUS_ID_FRAME_MAX || memchr(data, '\0', len))
        return -1;
    memcpy(text, data, len);
    text[len] = '\0';
    char *save = NULL;
    for (char *p = strtok_r(text, " ", &save); p && n < 5; p = strtok_r(NULL, " ", &save))
        part[n++] = p;
    bus_role_t role = s_role_parse(part[0], sizeof(s_roles) / sizeof(s_roles[0]));
    int rc = -1;
    if (role == BUS_ROLE_REGISTER && n == 4)
        rc = bus_identity_set(id, role, NULL, part[2], part[3]);
    else if (role != BUS_ROLE_NONE && role != BUS_ROLE_REGISTER && n == 2)
        rc = bus_identity_set(id, role, part[1], NULL, NULL);
    if (rc == 0 && strcmp(id->name, part[1]) != 0)
        rc = -1;
    if (rc != 0)
        memset(id, 0, sizeof(*id));
    return rc;
}

void bus_identity_file(const bus_identity_t *id, char *out, size_t size)
{
    if (id->role == BUS_ROLE_REGISTER)
        snprintf(out, size, "register-%s-%s", id->store, id->reg);
    else
        snprintf(out, size, "%s-%s", bus_role_name(id->role), id->name);
}

bool bus_identity_may(const bus_identity_t *id, unsigned mask)
{
    return id && (id->role == BUS_ROLE_UNCHECKED || (id->role & mask) != 0);
}
