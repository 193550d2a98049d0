/*  rsa.h - SHA256withRSA keys, signatures and base64 for the provider clients (payments).
    Both WeChat Pay v3 and Alipay's RSA2 sign with PKCS#1 v1.5 over SHA-256, base64 encoded. */
#ifndef PAY_RSA_H_INCLUDED
#define PAY_RSA_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

/*  An RSA private key from a PEM file; NULL when the file holds none. */
EVP_PKEY *pay_rsa_private(const char *path);
/*  An RSA public key from a PEM file holding a public key or a certificate; NULL otherwise. */
EVP_PKEY *pay_rsa_public(const char *path);
/*  path as it may appear in a log or an error: itself when it names an existing file, else a
    placeholder. A key's text given where its file belongs must never be printed. */
const char *pay_path_shown(const char *path);
/*  base64(SHA256withRSA(msg)) into out. 0, or -1 (too small, a key that cannot sign). */
int pay_rsa_sign(EVP_PKEY *key, const void *msg, size_t len, char *out, size_t size);
/*  Does sig64 (standard base64) verify msg under key? */
bool pay_rsa_verify(EVP_PKEY *key, const void *msg, size_t len, const char *sig64);
/*  Decode standard base64 (padded) into out. Its length, or -1 (not base64, out too small). */
int pay_base64_decode(const char *in, unsigned char *out, size_t size);

#endif
