/*  http.c - one HTTPS exchange with a payment provider (part of payments; http.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "http.h"

struct pay_http {
    CURL *curl;
    char *ca_file;
    int timeout_ms;
};

int pay_http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void pay_http_global_cleanup(void)
{
    curl_global_cleanup();
}

pay_http_t *pay_http_new(const char *ca_file, int timeout_ms)
{
    pay_http_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    self->curl = curl_easy_init();
    self->ca_file = ca_file && *ca_file ? strdup(ca_file) : NULL;
    self->timeout_ms = timeout_ms;
    if (!self->curl || (ca_file && *ca_file && !self->ca_file)) {
        pay_http_destroy(&self);
        return NULL;
    }
    return self;
}

void pay_http_destroy(pay_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pay_http_t *self = *self_p;
    if (self->curl)
        curl_easy_cleanup(self->curl);
    free(self->ca_file);
    free(self);
    *self_p = NULL;
}

static size_t s_on_body(char *data, size_t size, size_t n, void *arg)
{
    pay_http_answer_t *out = arg;
    size_t len = size * n;
    if (out->body.len + len > PAY_HTTP_BODY_MAX || bus_buf_append(&out->body, data, len) != 0)
        return 0; /* too big: libcurl ends the exchange with an error */
    return len;
}

static size_t s_on_header(char *data, size_t size, size_t n, void *arg)
{
    pay_http_answer_t *out = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
        out->nheaders = 0; /* a new status line (after a 100 Continue): its headers count */
    else if (out->nheaders < PAY_HTTP_HEADERS_MAX && len > 2) {
        size_t keep = len < PAY_HTTP_HEADER_MAX - 1 ? len : PAY_HTTP_HEADER_MAX - 1;
        char *h = out->headers[out->nheaders++];
        memcpy(h, data, keep);
        h[keep] = '\0';
        h[strcspn(h, "\r\n")] = '\0';
    }
    return len;
}

void pay_http_answer_free(pay_http_answer_t *answer)
{
    bus_buf_free(&answer->body);
    answer->nheaders = 0;
    answer->status = 0;
}

int pay_http_request(pay_http_t *self, const char *method, const char *url,
                     const char *const *headers, const char *body, size_t len, bool once,
                     pay_http_answer_t *out)
{
    bus_buf_reset(&out->body);
    out->status = 0;
    out->nheaders = 0;
    out->error[0] = '\0';
    struct curl_slist *list = NULL;
    for (int i = 0; headers && headers[i]; i++) {
        struct curl_slist *next = curl_slist_append(list, headers[i]);
        if (!next) {
            curl_slist_free_all(list);
            snprintf(out->error, sizeof(out->error), "out of memory");
            return -1;
        }
        list = next;
    }
    CURL *c = self->curl;
    curl_easy_reset(c); /* options from the last call go; the connection stays */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(self->timeout_ms < 3000 ? self->timeout_ms : 3000));
    if (once)
        curl_easy_setopt(c, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (self->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, self->ca_file);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)(body ? len : 0));
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(list);
    if (rc != CURLE_OK) {
        snprintf(out->error, sizeof(out->error), "%s", curl_easy_strerror(rc));
        out->status = 0;
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    if (bus_buf_append(&out->body, "", 1) != 0) { /* NUL-terminate for the JSON parser */
        snprintf(out->error, sizeof(out->error), "out of memory");
        out->status = 0;
        return -1;
    }
    out->body.len--;
    return 0;
}

const char *pay_http_header(const pay_http_answer_t *answer, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < answer->nheaders; i++) {
        const char *h = answer->headers[i];
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ' || *h == '\t')
                h++;
            return h;
        }
    }
    return NULL;
}
