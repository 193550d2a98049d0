/*  =========================================================================
    config.c - option tables from defaults, file, environment and flags

    Tables are small (tens of options), so options live in an array searched
    linearly; nothing here is on a hot path. Values are kept as text and
    validated on the way in, so getters never fail.
    =========================================================================
*/
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include "bus/config.h"

#define S_ERR_MAX    512
#define S_LINE_MAX   4096
#define S_ENV_PREFIX "POSBUS_"
#define S_ENV_MAX    128

typedef struct {
    const bus_opt_t *opt;
    char *value;
    const char *source;
} s_slot_t;

struct bus_config {
    char *program;
    s_slot_t *slots;
    size_t count, cap;
    char **args;
    int argc;
    char error[S_ERR_MAX];
};

static void s_error(bus_config_t *self, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_error(bus_config_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->error, sizeof(self->error), fmt, ap);
    va_end(ap);
}

static s_slot_t *s_slot(bus_config_t *self, const char *name, size_t len)
{
    for (size_t i = 0; i < self->count; i++)
        if (strlen(self->slots[i].opt->name) == len &&
            strncmp(self->slots[i].opt->name, name, len) == 0)
            return &self->slots[i];
    return NULL;
}

static bool s_parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool s_parse_int(const char *text, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || isspace((unsigned char)*text))
        return false;
    *out = v;
    return true;
}

/*  Check value against the option and store it. 0 ok, -1 with the error set (where names the
    place: "flag", "env POSBUS_X", "file:line"). */
static int s_store(bus_config_t *self, s_slot_t *slot, const char *value, const char *source,
                   const char *where)
{
    const bus_opt_t *opt = slot->opt;
    if (opt->type == BUS_OPT_INT) {
        int64_t v;
        if (!s_parse_int(value, &v)) {
            s_error(self, "%s: --%s needs an integer, not '%s'", where, opt->name, value);
            return -1;
        }
        if ((opt->min || opt->max) && (v < opt->min || v > opt->max)) {
            s_error(self, "%s: --%s must be between %lld and %lld, not %lld", where, opt->name,
                    (long long)opt->min, (long long)opt->max, (long long)v);
            return -1;
        }
    } else if (opt->type == BUS_OPT_BOOL) {
        bool b;
        if (!s_parse_bool(value, &b)) {
            s_error(self, "%s: --%s needs true or false, not '%s'", where, opt->name, value);
            return -1;
        }
        value = b ? "true" : "false";
    }
    char *copy = strdup(value);
    if (!copy) {
        s_error(self, "out of memory");
        return -1;
    }
    free(slot->value);
    slot->value = copy;
    slot->source = source;
    return 0;
}

bus_config_t *bus_config_new(const char *program, const bus_opt_t *table)
{
    bus_config_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->program = strdup(program ? program : "posbus");
    if (!self->program || bus_config_add(self, table) != 0)
        bus_config_destroy(&self);
    return self;
}

int bus_config_add(bus_config_t *self, const bus_opt_t *table)
{
    for (const bus_opt_t *opt = table; opt && opt->name; opt++) {
        if (s_slot(self, opt->name, strlen(opt->name))) {
            s_error(self, "option --%s defined twice", opt->name);
            return -1;
        }
        if (self->count == self->cap) {
            size_t cap = self->cap ? self->cap * 2 : 16;
            s_slot_t *grown = realloc(self->slots, cap * sizeof(*grown));
            if (!grown)
                return -1;
            self->slots = grown;
            self->cap = cap;
        }
        s_slot_t *slot = &self->slots[self->count++];
        slot->opt = opt;
        slot->value = opt->def ? strdup(opt->def) : NULL;
        slot->source = "default";
    }
    return 0;
}

void bus_config_destroy(bus_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    bus_config_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->slots[i].value);
    free(self->slots);
    for (int i = 0; i < self->argc; i++)
        free(self->args[i]);
    free(self->args);
    free(self->program);
    free(self);
    *self_p = NULL;
}

static char *s_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static int s_load_file(bus_config_t *self, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        s_error(self, "cannot read configuration file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[S_LINE_MAX];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        lineno++;
        char where[S_ERR_MAX / 2];
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        char *text = s_trim(line);
        if (*text == '\0' || *text == '#')
            continue;
        char *eq = strchr(text, '=');
        if (!eq) {
            s_error(self, "%s: expected 'name = value'", where);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *name = s_trim(text);
        char *value = s_trim(eq + 1);
        size_t vlen = strlen(value);
        if (vlen >= 2 && (value[0] == '"' || value[0] == '\'') && value[vlen - 1] == value[0]) {
            value[vlen - 1] = '\0';
            value++;
        }
        s_slot_t *slot = s_slot(self, name, strlen(name));
        if (!slot) {
            s_error(self, "%s: unknown option '%s'", where, name);
            rc = -1;
            break;
        }
        rc = s_store(self, slot, value, "file", where);
    }
    fclose(f);
    return rc;
}

static int s_load_env(bus_config_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        char var[S_ENV_MAX];
        const char *name = self->slots[i].opt->name;
        size_t n = (size_t)snprintf(var, sizeof(var), "%s", S_ENV_PREFIX);
        for (const char *p = name; *p && n + 1 < sizeof(var); p++)
            var[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[n] = '\0';
        const char *value = getenv(var);
        if (value) {
            char where[S_ENV_MAX + 8];
            snprintf(where, sizeof(where), "env %s", var);
            if (s_store(self, &self->slots[i], value, "env", where) != 0)
                return -1;
        }
    }
    return 0;
}

static int s_add_arg(bus_config_t *self, const char *arg)
{
    char **grown = realloc(self->args, (size_t)(self->argc + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    self->args = grown;
    self->args[self->argc] = strdup(arg);
    if (!self->args[self->argc])
        return -1;
    self->argc++;
    return 0;
}

/*  The --config file is read before the environment and other flags, whatever its position. */
static const char *s_find_config_file(int argc, char **argv)
{
    const char *path = getenv("POSBUS_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    return path;
}

static int s_load_flags(bus_config_t *self, int argc, char **argv)
{
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        /* "-2" is a negative number (posctl stock adjust SKU -2), not an option */
        bool negative = arg[0] == '-' && isdigit((unsigned char)arg[1]);
        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0 || negative) {
            if (s_add_arg(self, arg) != 0)
                return -1;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        if (strcmp(arg, "--config") == 0 || strcmp(arg, "-c") == 0) {
            i++;
            continue;
        }
        if (strncmp(arg, "--config=", 9) == 0)
            continue;
        if (strncmp(arg, "--", 2) != 0) {
            s_error(self, "unknown option '%s' (options are --name value)", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        s_slot_t *slot = s_slot(self, name, len);
        if (!slot && !eq && strncmp(name, "no-", 3) == 0) {
            s_slot_t *neg = s_slot(self, name + 3, len - 3);
            if (neg && neg->opt->type == BUS_OPT_BOOL) {
                if (s_store(self, neg, "false", "flag", "command line") != 0)
                    return -1;
                continue;
            }
        }
        if (!slot) {
            s_error(self, "unknown option '--%.*s' (see --help)", (int)len, name);
            return -1;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (slot->opt->type == BUS_OPT_BOOL)
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            s_error(self, "option --%s needs a value", slot->opt->name);
            return -1;
        }
        if (s_store(self, slot, value, "flag", "command line") != 0)
            return -1;
    }
    return 0;
}

int bus_config_load(bus_config_t *self, int argc, char **argv)
{
    self->error[0] = '\0';
    const char *file = s_find_config_file(argc, argv);
    if (file && s_load_file(self, file) != 0)
        return -1;
    if (s_load_env(self) != 0)
        return -1;
    return s_load_flags(self, argc, argv);
}

const char *bus_config_error(bus_config_t *self)
{
    return self->error;
}

static s_slot_t *s_need(bus_config_t *self, const char *name)
{
    s_slot_t *slot = s_slot(self, name, strlen(name));
    assert(slot && "option not in the program's table");
    return slot;
}

const char *bus_config_str(bus_config_t *self, const char *name)
{
    s_slot_t *slot = s_need(self, name);
    return slot ? slot->value : NULL;
}

int64_t bus_config_int(bus_config_t *self, const char *name)
{
    s_slot_t *slot = s_need(self, name);
    int64_t v = 0;
    if (slot && slot->value)
        s_parse_int(slot->value, &v);
    return v;
}

bool bus_config_bool(bus_config_t *self, const char *name)
{
    s_slot_t *slot = s_need(self, name);
    bool b = false;
    if (slot && slot->value)
        s_parse_bool(slot->value, &b);
    return b;
}

const char *bus_config_source(bus_config_t *self, const char *name)
{
    s_slot_t *slot = s_need(self, name);
    return slot ? slot->source : "default";
}

int bus_config_set(bus_config_t *self, const char *name, const char *value)
{
    s_slot_t *slot = s_slot(self, name, strlen(name));
    if (!slot) {
        s_error(self, "unknown option '%s'", name);
        return -1;
    }
    return s_store(self, slot, value, "set", "program");
}

int bus_config_argc(bus_config_t *self)
{
    return self->argc;
}

const char *bus_config_arg(bus_config_t *self, int index)
{
    return index >= 0 && index < self->argc ? self->args[index] : NULL;
}

static const char *s_type_name(bus_opt_type_t type)
{
    return type == BUS_OPT_INT ? "int" : type == BUS_OPT_BOOL ? "bool" : "text";
}

void bus_config_usage(bus_config_t *self, FILE *out)
{
    for (size_t i = 0; i < self->count; i++) {
        const bus_opt_t *opt = self->slots[i].opt;
        fprintf(out, "  --%-22s %-5s %s", opt->name, s_type_name(opt->type), opt->help);
        if (opt->def && *opt->def)
            fprintf(out, " (default %s)", opt->def);
        fprintf(out, "\n");
    }
    fprintf(out, "  --config FILE                  read options from FILE first\n"
                 "  every option can also be set as POSBUS_<NAME> in the environment\n");
}

void bus_config_write_example(bus_config_t *self, FILE *out)
{
    fprintf(out,
            "# %s configuration: `name = value`; '#' starts a comment.\n"
            "# Precedence: this file < environment (POSBUS_<NAME>) < command-line flags.\n",
            self->program);
    for (size_t i = 0; i < self->count; i++) {
        const bus_opt_t *opt = self->slots[i].opt;
        fprintf(out, "\n# %s (%s", opt->help, s_type_name(opt->type));
        if (opt->type == BUS_OPT_INT && (opt->min || opt->max))
            fprintf(out, ", %lld..%lld", (long long)opt->min, (long long)opt->max);
        fprintf(out, ")\n# %s = %s\n", opt->name, opt->def ? opt->def : "");
    }
}
