/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internals shared by block/crypto-*.c: the algorithm tables (QEMU's
 * names mapped to nettle's implementations), the anti-forensic splitter
 * and random bytes.  Not for the rest of the block layer: it uses the
 * public include/block/crypto.h.
 */
#ifndef STRATA_BLOCK_CRYPTO_INT_H
#define STRATA_BLOCK_CRYPTO_INT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include <nettle/nettle-meta.h>

#include "block/crypto.h"

/* the largest digest of the hashes in the table (SHA-512) */
#define CRYPTO_MAX_DIGEST 64

/* A block cipher by QEMU's name ("aes-256"); luks_name is what the LUKS
 * header's cipher_name says ("aes") */
typedef struct CryptoCipherAlg {
    const char *name;
    const char *luks_name;
    const struct nettle_cipher *impl;
} CryptoCipherAlg;

/* A hash by QEMU's name ("sha256"), also the PBKDF2 HMAC */
typedef struct CryptoHashAlg {
    const char *name;
    const struct nettle_hash *impl;
    int gnutls_mac;             /* gnutls_mac_algorithm_t */
} CryptoHashAlg;

typedef enum {
    CRYPTO_MODE_ECB,
    CRYPTO_MODE_CBC,
    CRYPTO_MODE_XTS,
    CRYPTO_MODE_CTR,
} CryptoMode;

typedef enum {
    CRYPTO_IVGEN_PLAIN,
    CRYPTO_IVGEN_PLAIN64,
    CRYPTO_IVGEN_ESSIV,
} CryptoIvgen;

const CryptoCipherAlg *crypto_cipher_alg_by_name(const char *name);
/* LUKS header name plus the key size of one cipher key (XTS: half the
 * header's key_bytes) */
const CryptoCipherAlg *crypto_cipher_alg_by_luks(const char *luks_name,
                                                 size_t key_len);
const CryptoHashAlg *crypto_hash_alg_by_name(const char *name);
/* -1 if unknown */
int crypto_mode_by_name(const char *name);
int crypto_ivgen_by_name(const char *name);
const char *crypto_mode_name(CryptoMode mode);
const char *crypto_ivgen_name(CryptoIvgen ivgen);

/* The key length of a cipher in a mode: XTS takes two keys */
size_t crypto_key_len(const CryptoCipherAlg *alg, CryptoMode mode);

/* ESSIV encrypts the sector number with a key that is the hash of the
 * master key, under the cipher of the same family whose key size is the
 * digest size (dm-crypt's rule, which QEMU follows) */
const CryptoCipherAlg *crypto_essiv_alg(const CryptoCipherAlg *alg,
                                        const CryptoHashAlg *hash,
                                        GError **errp);

/* A sector cipher from a raw key; the checks of the combination are the
 * caller's (QEMU's texts live in crypto-luks.c) except that XTS needs a
 * 16-byte block */
BlockCrypto *block_crypto_new(const CryptoCipherAlg *alg, CryptoMode mode,
                              CryptoIvgen ivgen, const CryptoHashAlg *ivhash,
                              const uint8_t *key, size_t key_len,
                              GError **errp);

bool crypto_random_bytes(void *buf, size_t len, GError **errp);

/* The LUKS anti-forensic split: `in` (block_len bytes) becomes `stripes`
 * blocks in `out` such that all of them are needed to get it back */
bool crypto_afsplit_encode(const CryptoHashAlg *hash, size_t block_len,
                           uint32_t stripes, const uint8_t *in,
                           uint8_t *out, GError **errp);
void crypto_afsplit_decode(const CryptoHashAlg *hash, size_t block_len,
                           uint32_t stripes, const uint8_t *in,
                           uint8_t *out);

#endif
