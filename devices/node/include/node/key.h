/*  =========================================================================
    node/key.h - a register's Ed25519 signing key (OpenSSL)

    Each register signs every journal record with its own Ed25519 key, so a
    journal proves which register wrote it and that nobody changed it since.
    The private key lives on the register in a PEM file of mode 0600
    (PKCS#8, unencrypted: the register must sign unattended after a power
    cut); the public key goes into the journal's header record and, as a
    PEM file, to whoever audits the journal (posctl journal verify
    --journal-key). This key is not the register's CURVE key for the bus:
    the two have different lifetimes (a bus key is revoked and re-enrolled,
    a journal key must keep verifying old journals).

    Constructors return NULL with errno set (ENOENT, EACCES, ... from the
    file; EINVAL when the file holds no Ed25519 key). Never prints.
    Thread-safe for distinct keys; one key may sign from one thread at a time.
    =========================================================================
*/
#ifndef NODE_KEY_H_INCLUDED
#define NODE_KEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_KEY_PUBLIC_SIZE      32 /* raw Ed25519 public key, bytes */
#define NODE_KEY_SIGNATURE_SIZE   64 /* Ed25519 signature, bytes */
#define NODE_KEY_FINGERPRINT_SIZE 17 /* 16 hex digits (first 8 bytes of SHA-256) + NUL */

typedef struct node_key_t node_key_t;

/*  Create a new Ed25519 private key in the PEM file path (mode 0600, fsynced). Never replaces
    an existing file: -1 with errno EEXIST then. 0 or -1 with errno. */
int node_key_generate(const char *path);

/*  Load a key from a PEM file holding either an Ed25519 private key (can sign and verify) or an
    Ed25519 public key (can verify only). NULL with errno on failure. */
node_key_t *node_key_load(const char *path);

/*  A verify-only key from its raw 32 bytes. NULL with errno (EINVAL, ENOMEM) on failure. */
node_key_t *node_key_from_public(const uint8_t raw[NODE_KEY_PUBLIC_SIZE]);

/*  Destroy *self_p (NULL-safe) and set it to NULL. */
void node_key_destroy(node_key_t **self_p);

/*  Write the public half as a PEM file (mode 0644, replaced if present). 0 or -1 with errno. */
int node_key_write_public(const node_key_t *self, const char *path);

/*  Whether the key can sign (was loaded from a private key). */
bool node_key_has_private(const node_key_t *self);

/*  The raw public key. */
const uint8_t *node_key_public(const node_key_t *self);

/*  The short public fingerprint operators compare: 16 lowercase hex digits. */
const char *node_key_fingerprint(const node_key_t *self);

/*  Sign len bytes of data into sig. 0, or -1 (no private key: EPERM; OpenSSL failure: EIO). */
int node_key_sign(const node_key_t *self, const void *data, size_t len,
                  uint8_t sig[NODE_KEY_SIGNATURE_SIZE]);

/*  Whether sig is this key's signature of data. */
bool node_key_verify(const node_key_t *self, const void *data, size_t len,
                     const uint8_t sig[NODE_KEY_SIGNATURE_SIZE]);

#ifdef __cplusplus
}
#endif
#endif
