/*  =========================================================================
    keys.c - posctl keygen, node enroll|revoke, keys list|enrol|revoke

    Every key busd lets in carries a role and a name in its certificate
    (bus/identity.h), so keys are made here and only here, with the identity
    checked before anything is written: an operator never types metadata.
    These commands work on the keys directory (--keys-dir, busd's) and never
    talk to busd: busd's ZAP handler notices files added to or removed from
    clients/ within about a second, so nothing needs restarting, and keys can
    be managed while busd is down.

    A register's key is made by `node enroll` (its identity is a store and a
    register id, not a name) and the command says which two files go to the
    register. Revoking removes only the enrolled copy, so the same key can be
    enrolled again (a register back from repair) without touching the
    register; deleting the key files retires it for good.
    =========================================================================
*/
#include <errno.h>
#include "posctl.h"

#define S_KEY_SHOWN   8 /* characters of a public key that keys list shows */
#define S_REASON_MAX  (64 + PATH_MAX)
#define S_ROLES_USAGE "ROLE: service, operator or consumer"

static const char *s_dir(bus_config_t *config)
{
    return bus_config_str(config, "keys-dir");
}

/*  busd's key pair, created when missing (announced then, or always when loud). 0 or -1. */
static int s_server_key(const char *dir, bool loud)
{
    char secret[PATH_MAX];
    snprintf(secret, sizeof(secret), "%s/busd.cert_secret", dir);
    if (access(secret, F_OK) == 0) {
        if (loud)
            printf("%s/busd.cert exists (busd's public certificate: every client needs it; "
                   "busd runs with --cert %s)\n",
                   dir, secret);
        return 0;
    }
    if (bus_keygen(dir, NULL, false) != 0) {
        fprintf(stderr, "posctl: cannot create busd's certificate %s: %s\n", secret,
                errno == EEXIST ? "busd.cert exists without its secret" : strerror(errno));
        return -1;
    }
    printf("created %s/busd.cert (busd's public certificate: every client needs it; "
           "busd runs with --cert %s)\n",
           dir, secret);
    return 0;
}

/*  The identity for ROLE NAME of a keygen or keys command; exit code (usage after saying why). */
static int s_identity(const char *role_text, const char *name, bus_identity_t *id)
{
    bus_role_t role = bus_role_parse(role_text);
    if (role == BUS_ROLE_REGISTER) {
        fprintf(stderr, "posctl: a register's key is made with 'posctl node enroll STORE "
                        "REGISTER' (and revoked with 'node revoke')\n");
        return POSCTL_EXIT_USAGE;
    }
    if (role == BUS_ROLE_NONE) {
        fprintf(stderr, "posctl: unknown role '%s' (" S_ROLES_USAGE ")\n", role_text);
        return POSCTL_EXIT_USAGE;
    }
    if (bus_identity_set(id, role, name, NULL, NULL) != 0) {
        fprintf(stderr,
                "posctl: bad name '%s': 1 to %d letters, digits, '_', '-' or '.', not "
                "starting with '.'\n",
                name, BUS_ID_NAME_MAX);
        return POSCTL_EXIT_USAGE;
    }
    return POSCTL_EXIT_OK;
}

/*  The identity of register STORE REGISTER; exit code (usage after saying why). */
static int s_register(const char *store, const char *reg, bus_identity_t *id)
{
    if (bus_identity_set(id, BUS_ROLE_REGISTER, NULL, store, reg) != 0) {
        fprintf(stderr,
                "posctl: bad store or register id '%s' '%s': 1 to %d letters, digits or "
                "'_'\n",
                store, reg, BUS_ID_PART_MAX);
        return POSCTL_EXIT_USAGE;
    }
    return POSCTL_EXIT_OK;
}

static const char *s_who(const bus_identity_t *id, char *out, size_t size)
{
    snprintf(out, size, "%s %s", bus_role_name(id->role), id->name);
    return out;
}

/*  Create and enrol id's key. Exit code. */
static int s_create(const char *dir, const bus_identity_t *id)
{
    char file[BUS_ID_FILE_MAX], who[BUS_ID_FRAME_MAX];
    bus_identity_file(id, file, sizeof(file));
    if (bus_keygen(dir, id, true) != 0) {
        if (errno == EEXIST)
            fprintf(stderr, "posctl: %s/%s.cert_secret exists already; not replaced (%s)\n", dir,
                    file,
                    id->role == BUS_ROLE_REGISTER ? "node enroll enrols an existing key again"
                                                  : "keys enrol enrols it again");
        else
            fprintf(stderr, "posctl: cannot create %s/%s.cert_secret: %s\n", dir, file,
                    strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    printf("created %s/%s.cert_secret and enrolled %s/clients/%s.cert (%s)\n", dir, file, dir, file,
           s_who(id, who, sizeof(who)));
    return POSCTL_EXIT_OK;
}

/*  Enrol id's existing key again. Exit code. */
static int s_enrol(const char *dir, const bus_identity_t *id)
{
    char file[BUS_ID_FILE_MAX], who[BUS_ID_FRAME_MAX];
    bus_identity_file(id, file, sizeof(file));
    s_who(id, who, sizeof(who));
    if (bus_enrol(dir, id) != 0) {
        if (errno == ENOENT)
            fprintf(stderr, "posctl: no key %s/%s.cert to enrol (%s)\n", dir, file, who);
        else if (errno == EINVAL)
            fprintf(stderr, "posctl: %s/%s.cert does not carry the identity %s; not enrolled\n",
                    dir, file, who);
        else
            fprintf(stderr, "posctl: cannot enrol %s/%s.cert: %s\n", dir, file, strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    printf("enrolled the existing key %s/%s.cert again as %s/clients/%s.cert (%s)\n", dir, file,
           dir, file, who);
    return POSCTL_EXIT_OK;
}

/*  Revoke id. Exit code. */
static int s_revoke(const char *dir, const bus_identity_t *id, const char *again)
{
    char file[BUS_ID_FILE_MAX], who[BUS_ID_FRAME_MAX];
    bus_identity_file(id, file, sizeof(file));
    s_who(id, who, sizeof(who));
    if (bus_revoke(dir, id) != 0) {
        if (errno == ENOENT)
            fprintf(stderr, "posctl: %s is not enrolled (no %s/clients/%s.cert)\n", who, dir, file);
        else
            fprintf(stderr, "posctl: cannot revoke %s: %s\n", who, strerror(errno));
        return POSCTL_EXIT_FAIL;
    }
    printf("revoked %s: removed %s/clients/%s.cert; busd refuses its new connections within "
           "about a second (a connection already up stays until it reconnects)\n",
           who, dir, file);
    printf("the key files %s/%s.cert and .cert_secret stay: '%s' enrols the same key again; "
           "delete them to retire the key for good\n",
           dir, file, again);
    return POSCTL_EXIT_OK;
}

int posctl_keygen(bus_config_t *config)
{
    int argc = bus_config_argc(config);
    const char *dir = s_dir(config);
    if (argc == 1)
        return s_server_key(dir, true) == 0 ? POSCTL_EXIT_OK : POSCTL_EXIT_FAIL;
    if (argc == 2) {
        fprintf(stderr, "posctl: usage: keygen [ROLE NAME...]   (" S_ROLES_USAGE ")\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_identity_t id;
    for (int i = 2; i < argc; i++) { /* every name is checked before any key is made */
        int rc = s_identity(bus_config_arg(config, 1), bus_config_arg(config, i), &id);
        if (rc != POSCTL_EXIT_OK)
            return rc;
    }
    if (s_server_key(dir, false) != 0)
        return POSCTL_EXIT_FAIL;
    int rc = POSCTL_EXIT_OK;
    for (int i = 2; i < argc; i++) {
        s_identity(bus_config_arg(config, 1), bus_config_arg(config, i), &id);
        if (s_create(dir, &id) != POSCTL_EXIT_OK)
            rc = POSCTL_EXIT_FAIL;
    }
    return rc;
}

/*  node enroll: a new key, or the existing one enrolled again; then what to carry. */
static int s_node_enroll(const char *dir, const bus_identity_t *id)
{
    char file[BUS_ID_FILE_MAX], pub[PATH_MAX], secret[PATH_MAX];
    bus_identity_file(id, file, sizeof(file));
    snprintf(pub, sizeof(pub), "%s/%s.cert", dir, file);
    snprintf(secret, sizeof(secret), "%s/%s.cert_secret", dir, file);
    if (s_server_key(dir, false) != 0)
        return POSCTL_EXIT_FAIL;
    bool exists = access(pub, F_OK) == 0 || access(secret, F_OK) == 0;
    int rc = exists ? s_enrol(dir, id) : s_create(dir, id);
    if (rc != POSCTL_EXIT_OK)
        return rc;
    printf("carry these two files to register %s (the secret one over a trusted channel; keep "
           "it mode 0600 there):\n",
           id->name);
    printf("  %s\n  %s/busd.cert\n", secret, dir);
    return POSCTL_EXIT_OK;
}

int posctl_node(bus_config_t *config)
{
    const char *sub = bus_config_argc(config) > 1 ? bus_config_arg(config, 1) : "";
    if (streq(sub, "list") || streq(sub, "devices")) /* the node commands that ask busd */
        return posctl_node_list(config);
    bool enroll = streq(sub, "enroll"), revoke = streq(sub, "revoke");
    if (bus_config_argc(config) != 4 || (!enroll && !revoke)) {
        fprintf(stderr, "posctl: usage: node enroll|revoke STORE REGISTER | node list\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_identity_t id;
    int rc = s_register(bus_config_arg(config, 2), bus_config_arg(config, 3), &id);
    if (rc != POSCTL_EXIT_OK)
        return rc;
    if (enroll)
        return s_node_enroll(s_dir(config), &id);
    char again[64 + 2 * BUS_ID_PART_MAX];
    snprintf(again, sizeof(again), "posctl node enroll %s %s", id.store, id.reg);
    return s_revoke(s_dir(config), &id, again);
}

/*  ---------------------------------------------------------------------------------------------
    keys list: what busd's ZAP handler sees in clients/ (czmq zcertstore: every regular file,
    subdirectories included, except hidden ones and names ending in "_secret"). A file whose
    metadata holds no valid identity is listed with role "invalid" and the reason: busd refuses
    it. */

typedef struct {
    char *file; /* relative to clients/ */
    char role[16], name[BUS_ID_NAME_MAX + 1], store[BUS_ID_PART_MAX + 1];
    char reg[BUS_ID_PART_MAX + 1], created[32], key[S_KEY_SHOWN + 1], public_key[41];
    char reason[S_REASON_MAX]; /* "" when busd will take it */
} s_row_t;

static int s_cmp_rows(const void *a, const void *b)
{
    return strcmp(((const s_row_t *)a)->file, ((const s_row_t *)b)->file);
}

static void s_copy_meta(zcert_t *cert, const char *key, char *out, size_t size)
{
    const char *value = zcert_meta(cert, key);
    snprintf(out, size, "%s", value ? value : "");
}

/*  One row for the certificate at path. */
static void s_read_row(const char *path, s_row_t *row)
{
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        snprintf(row->role, sizeof(row->role), "invalid");
        snprintf(row->reason, sizeof(row->reason), "not a certificate (no CURVE public key)");
        return;
    }
    bus_identity_t id;
    const char *err = NULL;
    if (bus_identity_from_cert(cert, &id, &err) == 0) {
        snprintf(row->role, sizeof(row->role), "%s", bus_role_name(id.role));
        snprintf(row->name, sizeof(row->name), "%s", id.name);
        snprintf(row->store, sizeof(row->store), "%s", id.store);
        snprintf(row->reg, sizeof(row->reg), "%s", id.reg);
    } else {
        snprintf(row->role, sizeof(row->role), "invalid");
        s_copy_meta(cert, "name", row->name, sizeof(row->name));
        snprintf(row->reason, sizeof(row->reason), "%s", err);
    }
    s_copy_meta(cert, "created", row->created, sizeof(row->created));
    snprintf(row->public_key, sizeof(row->public_key), "%s", zcert_public_txt(cert));
    snprintf(row->key, sizeof(row->key), "%s", row->public_key);
    zcert_destroy(&cert);
}

/*  The rows of every certificate in clients, sorted by file; NULL after saying why. */
static s_row_t *s_read_rows(const char *clients, size_t *count)
{
    zdir_t *dir = zdir_new(clients, NULL);
    if (!dir) {
        fprintf(stderr, "posctl: cannot read %s: no such directory (see --keys-dir)\n", clients);
        return NULL;
    }
    zfile_t **files = zdir_flatten(dir);
    size_t n = 0;
    while (files[n])
        n++;
    s_row_t *rows = calloc(n + 1, sizeof(*rows));
    size_t prefix = strlen(clients) + 1;
    *count = 0;
    for (size_t i = 0; rows && i < n; i++) {
        const char *path = zfile_filename(files[i], NULL);
        size_t len = strlen(path);
        if (!zfile_is_regular(files[i]) || (len >= 7 && streq(path + len - 7, "_secret")))
            continue;
        s_row_t *row = &rows[(*count)++];
        row->file = strdup(strlen(path) > prefix ? path + prefix : path);
        s_read_row(path, row);
    }
    zdir_flatten_free(&files);
    zdir_destroy(&dir);
    if (!rows) {
        fprintf(stderr, "posctl: out of memory\n");
        return NULL;
    }
    qsort(rows, *count, sizeof(*rows), s_cmp_rows);
    /* zauth's certificate store asserts that each key is in one file only (czmq 4.2) */
    for (size_t i = 0; i < *count; i++)
        for (size_t j = 0; j < i && !*rows[i].reason; j++)
            if (*rows[i].public_key && streq(rows[i].public_key, rows[j].public_key))
                snprintf(rows[i].reason, sizeof(rows[i].reason),
                         "the same public key as %s (czmq's ZAP handler aborts busd on a "
                         "duplicate key)",
                         rows[j].file);
    return rows;
}

static bus_val_t *s_str_or_nil(const char *text)
{
    return text && *text ? bus_val_new_str(text) : bus_val_new_nil();
}

static void s_print_json(const s_row_t *rows, size_t count)
{
    bus_val_t *list = bus_val_new_arr();
    for (size_t i = 0; i < count; i++) {
        const s_row_t *r = &rows[i];
        bus_val_t *item = bus_val_new_map();
        const char *keys[] = {"file",     "role",    "name", "store",
                              "register", "created", "key",  "reason"};
        const char *values[] = {r->file, r->role,    r->name, r->store,
                                r->reg,  r->created, r->key,  r->reason};
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            bus_val_t *v = s_str_or_nil(values[k]);
            bus_val_map_set(item, keys[k], &v);
        }
        bus_val_arr_push(list, &item);
    }
    bus_buf_t out = {0};
    bus_val_to_json(list, &out);
    printf("%s\n", (const char *)out.data);
    bus_buf_free(&out);
    bus_val_destroy(&list);
}

static void s_print_table(const s_row_t *rows, size_t count, bool csv)
{
    if (csv)
        printf("file,role,name,store,register,created,key,reason\n");
    else
        printf("%-32s %-9s %-20s %-8s %-8s %-20s %-8s %s\n", "FILE", "ROLE", "NAME", "STORE",
               "REGISTER", "CREATED", "KEY", "REASON");
    for (size_t i = 0; i < count; i++) {
        const s_row_t *r = &rows[i];
        const char *cells[] = {r->file, r->role,    r->name, r->store,
                               r->reg,  r->created, r->key,  r->reason};
        size_t n = sizeof(cells) / sizeof(cells[0]);
        if (csv) {
            for (size_t c = 0; c < n; c++)
                posctl_print_csv_cell(cells[c], c + 1 == n);
            continue;
        }
        for (size_t c = 0; c + 1 < n; c++)
            if (!*cells[c])
                cells[c] = "-";
        printf("%-32s %-9s %-20s %-8s %-8s %-20s %-8s %s\n", cells[0], cells[1], cells[2], cells[3],
               cells[4], cells[5], cells[6], cells[7]);
    }
}

static int s_keys_list(bus_config_t *config)
{
    const char *format = bus_config_str(config, "format");
    if (bus_config_argc(config) != 2 ||
        (strcmp(format, "table") && strcmp(format, "csv") && strcmp(format, "json"))) {
        fprintf(stderr, "posctl: usage: keys list [--format table|csv|json]\n");
        return POSCTL_EXIT_USAGE;
    }
    char clients[PATH_MAX];
    snprintf(clients, sizeof(clients), "%s/clients", s_dir(config));
    size_t count = 0;
    s_row_t *rows = s_read_rows(clients, &count);
    if (!rows)
        return POSCTL_EXIT_FAIL;
    if (streq(format, "json"))
        s_print_json(rows, count);
    else
        s_print_table(rows, count, streq(format, "csv"));
    size_t refused = 0;
    for (size_t i = 0; i < count; i++) {
        refused += *rows[i].reason != '\0';
        free(rows[i].file);
    }
    free(rows);
    /* the summary goes to stderr so json and csv output stay machine-readable */
    fprintf(stderr, "%zu certificates in %s", count, clients);
    if (refused)
        fprintf(stderr, "; %zu of them with a problem (see REASON)", refused);
    fprintf(stderr, "\n");
    return POSCTL_EXIT_OK;
}

int posctl_keys(bus_config_t *config)
{
    const char *sub = bus_config_argc(config) > 1 ? bus_config_arg(config, 1) : "";
    if (streq(sub, "list"))
        return s_keys_list(config);
    bool enrol = streq(sub, "enrol"), revoke = streq(sub, "revoke");
    if (bus_config_argc(config) != 4 || (!enrol && !revoke)) {
        fprintf(stderr, "posctl: usage: keys list [--format table|csv|json] | keys enrol|revoke "
                        "ROLE NAME   (" S_ROLES_USAGE ")\n");
        return POSCTL_EXIT_USAGE;
    }
    bus_identity_t id;
    int rc = s_identity(bus_config_arg(config, 2), bus_config_arg(config, 3), &id);
    if (rc != POSCTL_EXIT_OK)
        return rc;
    if (enrol)
        return s_enrol(s_dir(config), &id);
    char again[64 + BUS_ID_NAME_MAX];
    snprintf(again, sizeof(again), "posctl keys enrol %s %s", bus_role_name(id.role), id.name);
    return s_revoke(s_dir(config), &id, again);
}
