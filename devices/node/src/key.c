/*  =========================================================================
    key.c - a register's Ed25519 signing key on OpenSSL 3's EVP interface

    Ed25519 is used "pure" (EVP_DigestSign with no digest): the signature
    covers the message itself, there is no hash to choose and nothing to
    misconfigure. A signature costs tens of microseconds, small beside the
    fdatasync that every journal append pays anyway.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "node/key.h"

#define S_FINGERPRINT_BYTES ((NODE_KEY_FINGERPRINT_SIZE - 1) / 2)

struct node_key_t {
    EVP_PKEY *pkey;
    bool has_private;
    uint8_t pub[NODE_KEY_PUBLIC_SIZE];
    char fingerprint[NODE_KEY_FINGERPRINT_SIZE];
};

/*  Wrap pkey (taken) into a key; NULL with errno if it is not Ed25519. */
static node_key_t *s_wrap(EVP_PKEY *pkey, bool has_private)
{
    size_t len = NODE_KEY_PUBLIC_SIZE;
    if (!pkey || EVP_PKEY_id(pkey) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(pkey);
        errno = EINVAL;
        return NULL;
    }
    node_key_t *self = calloc(1, sizeof(*self));
    if (!self) {
        EVP_PKEY_free(pkey);
        errno = ENOMEM;
        return NULL;
    }
    self->pkey = pkey;
    self->has_private = has_private;
    if (EVP_PKEY_get_raw_public_key(pkey, self->pub, &len) != 1 || len != sizeof(self->pub)) {
        node_key_destroy(&self);
        errno = EINVAL;
        return NULL;
    }
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(self->pub, sizeof(self->pub), digest);
    for (int i = 0; i < S_FINGERPRINT_BYTES; i++)
        snprintf(self->fingerprint + 2 * i, 3, "%02x", digest[i]);
    return self;
}

int node_key_generate(const char *path)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pkey) {
        ERR_clear_error();
        errno = EIO;
        return -1;
    }
    int rc = -1, saved;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out_free_pkey;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        goto out_unlink;
    }
    errno = 0;
    bool written = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1 &&
                   fflush(f) == 0 && fsync(fileno(f)) == 0;
    saved = errno ? errno : EIO;
    if (fclose(f) != 0 && written) {
        written = false;
        saved = errno;
    }
    if (written)
        rc = 0;
    else
        errno = saved;
out_unlink:
    if (rc != 0) {
        saved = errno;
        unlink(path);
        errno = saved;
    }
out_free_pkey:
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    return rc;
}

node_key_t *node_key_load(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    bool has_private = true;
    EVP_PKEY *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (!pkey) {
        has_private = false;
        rewind(f);
        pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    }
    ERR_clear_error();
    fclose(f);
    return s_wrap(pkey, has_private);
}

node_key_t *node_key_from_public(const uint8_t raw[NODE_KEY_PUBLIC_SIZE])
{
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, NODE_KEY_PUBLIC_SIZE);
    ERR_clear_error();
    return s_wrap(pkey, false);
}

void node_key_destroy(node_key_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    EVP_PKEY_free((*self_p)->pkey);
    free(*self_p);
    *self_p = NULL;
}

int node_key_write_public(const node_key_t *self, const char *path)
{
    FILE *f = fopen(path, "we");
    if (!f)
        return -1;
    bool written = PEM_write_PUBKEY(f, self->pkey) == 1 && fflush(f) == 0;
    ERR_clear_error();
    if (fclose(f) != 0 || !written) {
        errno = errno ? errno : EIO;
        return -1;
    }
    return 0;
}

bool node_key_has_private(const node_key_t *self)
{
    return self->has_private;
}

const uint8_t *node_key_public(const node_key_t *self)
{
    return self->pub;
}

const char *node_key_fingerprint(const node_key_t *self)
{
    return self->fingerprint;
}

int node_key_sign(const node_key_t *self, const void *data, size_t len,
                  uint8_t sig[NODE_KEY_SIGNATURE_SIZE])
{
    if (!self->has_private) {
        errno = EPERM;
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = NODE_KEY_SIGNATURE_SIZE;
    int rc = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, self->pkey) == 1 &&
                     EVP_DigestSign(ctx, sig, &siglen, data, len) == 1 &&
                     siglen == NODE_KEY_SIGNATURE_SIZE
                 ? 0
                 : -1;
    EVP_MD_CTX_free(ctx);
    if (rc != 0) {
        ERR_clear_error();
        errno = EIO;
    }
    return rc;
}

bool node_key_verify(const node_key_t *self, const void *data, size_t len,
                     const uint8_t sig[NODE_KEY_SIGNATURE_SIZE])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, self->pkey) == 1 &&
              EVP_DigestVerify(ctx, sig, NODE_KEY_SIGNATURE_SIZE, data, len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}
