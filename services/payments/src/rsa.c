/*  rsa.c - SHA256withRSA keys, signatures and base64 (part of payments; rsa.h) */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "rsa.h"

#define S_SIG_MAX 1024 /* bytes of a decoded signature (RSA up to 8192 bits) */

const char *pay_path_shown(const char *path)
{
    struct stat st;
    if (!path || !*path)
        return "(none)";
    if (strlen(path) > 255 || strpbrk(path, "\n\r") || stat(path, &st) != 0)
        return "(no such file; the value is not shown)";
    return path;
}

EVP_PKEY *pay_rsa_private(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    EVP_PKEY *key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (key && EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

EVP_PKEY *pay_rsa_public(const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return NULL;
    EVP_PKEY *key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!key) { /* a certificate instead of a bare key */
        rewind(f);
        X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
        key = cert ? X509_get_pubkey(cert) : NULL;
        X509_free(cert);
    }
    fclose(f);
    if (key && EVP_PKEY_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

int pay_rsa_sign(EVP_PKEY *key, const void *msg, size_t len, char *out, size_t size)
{
    unsigned char sig[S_SIG_MAX];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_PKEY_size(key) <= S_SIG_MAX &&
             EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &siglen, msg, len) == 1;
    EVP_MD_CTX_free(md);
    if (!ok || 4 * ((siglen + 2) / 3) + 1 > size)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, sig, (int)siglen);
    return 0;
}

int pay_base64_decode(const char *in, unsigned char *out, size_t size)
{
    size_t len = in ? strlen(in) : 0;
    if (len < 4 || len % 4 != 0 || 3 * (len / 4) > size || len > INT32_MAX)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    return n - (in[len - 1] == '=') - (in[len - 2] == '='); /* DecodeBlock counts padding */
}

bool pay_rsa_verify(EVP_PKEY *key, const void *msg, size_t len, const char *sig64)
{
    unsigned char sig[S_SIG_MAX];
    int n = pay_base64_decode(sig64, sig, sizeof(sig));
    if (n < 0)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestVerify(md, sig, (size_t)n, msg, len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}
