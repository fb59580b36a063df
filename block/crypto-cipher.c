/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sector cipher (BlockCrypto): a block cipher in ECB, CBC, XTS or CTR
 * mode, with a fresh IV per 512-byte sector from the plain, plain64 or
 * ESSIV generator; and the algorithm tables behind it.
 *
 * Why nettle and not GnuTLS's cipher API: GnuTLS has no ECB (ESSIV needs
 * it), no XTS with 192-bit AES, and no Serpent, Twofish or CAST5, while
 * nettle has all of them behind one generic interface (struct
 * nettle_cipher), so every cipher/mode pair is the same few lines.
 * nettle's mode functions also work on caller-owned contexts and IVs, so
 * the per-sector path needs no allocation: the key schedules are made
 * once in block_crypto_new and the IV lives on the stack.  GnuTLS (which
 * is built on nettle) is still used for PBKDF2 and random bytes.
 */
#include <string.h>

#include <gnutls/crypto.h>
#include <nettle/cbc.h>
#include <nettle/ctr.h>
#include <nettle/xts.h>

#include "block/block.h"
#include "block/crypto.h"
#include "crypto-int.h"

/* the largest cipher block (AES, Serpent, Twofish: 16; CAST5: 8) */
#define CRYPTO_MAX_BLOCK 16

static const CryptoCipherAlg cipher_algs[] = {
    { "aes-128", "aes", &nettle_aes128 },
    { "aes-192", "aes", &nettle_aes192 },
    { "aes-256", "aes", &nettle_aes256 },
    { "cast5-128", "cast5", &nettle_cast128 },
    { "serpent-128", "serpent", &nettle_serpent128 },
    { "serpent-192", "serpent", &nettle_serpent192 },
    { "serpent-256", "serpent", &nettle_serpent256 },
    { "twofish-128", "twofish", &nettle_twofish128 },
    { "twofish-192", "twofish", &nettle_twofish192 },
    { "twofish-256", "twofish", &nettle_twofish256 },
};

static const CryptoHashAlg hash_algs[] = {
    { "md5", &nettle_md5, GNUTLS_MAC_MD5 },
    { "sha1", &nettle_sha1, GNUTLS_MAC_SHA1 },
    { "sha224", &nettle_sha224, GNUTLS_MAC_SHA224 },
    { "sha256", &nettle_sha256, GNUTLS_MAC_SHA256 },
    { "sha384", &nettle_sha384, GNUTLS_MAC_SHA384 },
    { "sha512", &nettle_sha512, GNUTLS_MAC_SHA512 },
    { "ripemd160", &nettle_ripemd160, GNUTLS_MAC_RMD160 },
};

/* indexed by CryptoMode and CryptoIvgen */
static const char *const mode_names[] = { "ecb", "cbc", "xts", "ctr" };
static const char *const ivgen_names[] = { "plain", "plain64", "essiv" };

struct BlockCrypto {
    const struct nettle_cipher *impl;
    CryptoMode mode;
    CryptoIvgen ivgen;
    size_t iv_len;              /* 0 in ECB: no IV at all */
    void *enc;                  /* encryption key schedule */
    void *dec;                  /* decryption key schedule */
    void *tweak;                /* XTS: the second key (encrypt only) */
    const struct nettle_cipher *essiv_impl;
    void *essiv;                /* ESSIV: the hashed key (encrypt only) */
};

const CryptoCipherAlg *crypto_cipher_alg_by_name(const char *name)
{
    for (size_t i = 0; name && i < G_N_ELEMENTS(cipher_algs); i++) {
        if (!strcmp(cipher_algs[i].name, name)) {
            return &cipher_algs[i];
        }
    }
    return NULL;
}

const CryptoCipherAlg *crypto_cipher_alg_by_luks(const char *luks_name,
                                                 size_t key_len)
{
    for (size_t i = 0; i < G_N_ELEMENTS(cipher_algs); i++) {
        if (!strcmp(cipher_algs[i].luks_name, luks_name) &&
            cipher_algs[i].impl->key_size == key_len) {
            return &cipher_algs[i];
        }
    }
    return NULL;
}

const CryptoHashAlg *crypto_hash_alg_by_name(const char *name)
{
    for (size_t i = 0; name && i < G_N_ELEMENTS(hash_algs); i++) {
        if (!strcmp(hash_algs[i].name, name)) {
            return &hash_algs[i];
        }
    }
    return NULL;
}

static int index_of(const char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; name && i < n; i++) {
        if (!strcmp(names[i], name)) {
            return (int)i;
        }
    }
    return -1;
}

int crypto_mode_by_name(const char *name)
{
    return index_of(mode_names, G_N_ELEMENTS(mode_names), name);
}

int crypto_ivgen_by_name(const char *name)
{
    return index_of(ivgen_names, G_N_ELEMENTS(ivgen_names), name);
}

const char *crypto_mode_name(CryptoMode mode)
{
    return mode_names[mode];
}

const char *crypto_ivgen_name(CryptoIvgen ivgen)
{
    return ivgen_names[ivgen];
}

size_t crypto_key_len(const CryptoCipherAlg *alg, CryptoMode mode)
{
    return alg->impl->key_size * (mode == CRYPTO_MODE_XTS ? 2 : 1);
}

const CryptoCipherAlg *crypto_essiv_alg(const CryptoCipherAlg *alg,
                                        const CryptoHashAlg *hash,
                                        GError **errp)
{
    size_t digest = hash->impl->digest_size;
    const CryptoCipherAlg *found;

    if (alg->impl->key_size == digest) {
        return alg;
    }
    found = crypto_cipher_alg_by_luks(alg->luks_name, digest);
    if (!found) {
        if (!strcmp(alg->luks_name, "cast5")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Cipher %s not supported with essiv", alg->name);
        } else {
            /* "AES", "Serpent", "Twofish" as QEMU spells them */
            const char *family = !strcmp(alg->luks_name, "aes") ? "AES" :
                !strcmp(alg->luks_name, "serpent") ? "Serpent" : "Twofish";
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "No %s cipher with key size %zu available", family,
                        digest);
        }
        return NULL;
    }
    return found;
}

bool crypto_random_bytes(void *buf, size_t len, GError **errp)
{
    int r = gnutls_rnd(GNUTLS_RND_KEY, buf, len);

    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unable to read random bytes: %s", gnutls_strerror(r));
        return false;
    }
    return true;
}

/* ---- construction ---- */

static void *key_schedule(const struct nettle_cipher *impl,
                          nettle_set_key_func *set_key, const uint8_t *key)
{
    void *ctx = g_malloc0(impl->context_size);

    set_key(ctx, key);
    return ctx;
}

static bool essiv_setup(BlockCrypto *c, const CryptoCipherAlg *alg,
                        const CryptoHashAlg *hash, const uint8_t *key,
                        size_t key_len, GError **errp)
{
    const CryptoCipherAlg *ealg = crypto_essiv_alg(alg, hash, errp);
    g_autofree void *hctx = NULL;
    uint8_t salt[CRYPTO_MAX_DIGEST] = { 0 };

    if (!ealg) {
        return false;
    }
    hctx = g_malloc(hash->impl->context_size);
    hash->impl->init(hctx);
    hash->impl->update(hctx, key_len, key);
    hash->impl->digest(hctx, hash->impl->digest_size, salt);
    /* the ESSIV key is the digest, its size is the ESSIV cipher's key */
    c->essiv_impl = ealg->impl;
    c->essiv = key_schedule(ealg->impl, ealg->impl->set_encrypt_key, salt);
    memset(salt, 0, sizeof(salt));
    return true;
}

BlockCrypto *block_crypto_new(const CryptoCipherAlg *alg, CryptoMode mode,
                              CryptoIvgen ivgen, const CryptoHashAlg *ivhash,
                              const uint8_t *key, size_t key_len,
                              GError **errp)
{
    const struct nettle_cipher *impl = alg->impl;
    g_autoptr(BlockCrypto) c = g_new0(BlockCrypto, 1);

    c->impl = impl;         /* first: block_crypto_free needs it */
    g_assert(key_len == crypto_key_len(alg, mode));
    if (mode == CRYPTO_MODE_XTS && impl->block_size != 16) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cipher %s cannot be used in XTS mode (it needs a "
                    "16-byte block)", alg->name);
        return NULL;
    }
    c->mode = mode;
    c->ivgen = ivgen;
    c->iv_len = mode == CRYPTO_MODE_ECB ? 0 : impl->block_size;
    c->enc = key_schedule(impl, impl->set_encrypt_key, key);
    c->dec = key_schedule(impl, impl->set_decrypt_key, key);
    if (mode == CRYPTO_MODE_XTS) {
        /* the second half of an XTS key encrypts the tweak */
        c->tweak = key_schedule(impl, impl->set_encrypt_key,
                                key + impl->key_size);
    }
    if (ivgen == CRYPTO_IVGEN_ESSIV &&
        !essiv_setup(c, alg, ivhash, key, key_len, errp)) {
        return NULL;
    }
    return g_steal_pointer(&c);
}

BlockCrypto *block_crypto_qcow_aes_new(GBytes *secret, GError **errp)
{
    uint8_t key[16] = { 0 };
    gsize len;
    const uint8_t *data = g_bytes_get_data(secret, &len);
    const uint8_t *nul = len ? memchr(data, 0, len) : NULL;
    BlockCrypto *c;

    /* QEMU takes the secret as a C string: up to its first NUL */
    if (nul) {
        len = nul - data;
    }
    if (len) {
        memcpy(key, data, MIN(len, sizeof(key)));
    }
    c = block_crypto_new(crypto_cipher_alg_by_name("aes-128"),
                         CRYPTO_MODE_CBC, CRYPTO_IVGEN_PLAIN64, NULL, key,
                         sizeof(key), errp);
    memset(key, 0, sizeof(key));
    return c;
}

static void wipe_free(void *ctx, size_t size)
{
    if (ctx) {
        memset(ctx, 0, size);
        g_free(ctx);
    }
}

void block_crypto_free(BlockCrypto *c)
{
    if (!c) {
        return;
    }
    wipe_free(c->enc, c->impl->context_size);
    wipe_free(c->dec, c->impl->context_size);
    wipe_free(c->tweak, c->impl->context_size);
    if (c->essiv) {
        wipe_free(c->essiv, c->essiv_impl->context_size);
    }
    g_free(c);
}

/* ---- the per-sector path ---- */

/* The IV of one sector: the sector number little-endian (truncated to
 * 32 bits for "plain"), zero padded; ESSIV encrypts that block */
static void make_iv(const BlockCrypto *c, uint64_t sector, uint8_t *iv)
{
    uint8_t block[CRYPTO_MAX_BLOCK] = { 0 };
    uint64_t le = GUINT64_TO_LE(c->ivgen == CRYPTO_IVGEN_PLAIN ?
                                (uint32_t)sector : sector);

    memcpy(block, &le, sizeof(le));
    if (c->ivgen == CRYPTO_IVGEN_ESSIV) {
        size_t bs = c->essiv_impl->block_size;
        c->essiv_impl->encrypt(c->essiv, bs, block, block);
        if (bs < c->iv_len) {
            memset(block + bs, 0, c->iv_len - bs);
        }
    }
    memcpy(iv, block, c->iv_len);
}

static void sector_encrypt(const BlockCrypto *c, uint8_t *iv, uint8_t *buf)
{
    const struct nettle_cipher *impl = c->impl;
    size_t n = BLOCK_CRYPTO_SECTOR_SIZE;

    switch (c->mode) {
    case CRYPTO_MODE_ECB:
        impl->encrypt(c->enc, n, buf, buf);
        break;
    case CRYPTO_MODE_CBC:
        cbc_encrypt(c->enc, impl->encrypt, impl->block_size, iv, n, buf, buf);
        break;
    case CRYPTO_MODE_XTS:
        xts_encrypt_message(c->enc, c->tweak, impl->encrypt, iv, n, buf, buf);
        break;
    case CRYPTO_MODE_CTR:
        ctr_crypt(c->enc, impl->encrypt, impl->block_size, iv, n, buf, buf);
        break;
    }
}

static void sector_decrypt(const BlockCrypto *c, uint8_t *iv, uint8_t *buf)
{
    const struct nettle_cipher *impl = c->impl;
    size_t n = BLOCK_CRYPTO_SECTOR_SIZE;

    switch (c->mode) {
    case CRYPTO_MODE_ECB:
        impl->decrypt(c->dec, n, buf, buf);
        break;
    case CRYPTO_MODE_CBC:
        cbc_decrypt(c->dec, impl->decrypt, impl->block_size, iv, n, buf, buf);
        break;
    case CRYPTO_MODE_XTS:
        xts_decrypt_message(c->dec, c->tweak, impl->decrypt, impl->encrypt,
                            iv, n, buf, buf);
        break;
    case CRYPTO_MODE_CTR:
        /* CTR is its own inverse, always with the encryption schedule */
        ctr_crypt(c->enc, impl->encrypt, impl->block_size, iv, n, buf, buf);
        break;
    }
}

static bool check_len(size_t len, GError **errp)
{
    if (len % BLOCK_CRYPTO_SECTOR_SIZE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Length %zu is not a multiple of the %d-byte sector",
                    len, BLOCK_CRYPTO_SECTOR_SIZE);
        return false;
    }
    return true;
}

bool block_crypto_encrypt(BlockCrypto *c, uint64_t sector, uint8_t *buf,
                          size_t len, GError **errp)
{
    uint8_t iv[CRYPTO_MAX_BLOCK];

    if (!check_len(len, errp)) {
        return false;
    }
    for (size_t off = 0; off < len; off += BLOCK_CRYPTO_SECTOR_SIZE) {
        make_iv(c, sector++, iv);
        sector_encrypt(c, iv, buf + off);
    }
    return true;
}

bool block_crypto_decrypt(BlockCrypto *c, uint64_t sector, uint8_t *buf,
                          size_t len, GError **errp)
{
    uint8_t iv[CRYPTO_MAX_BLOCK];

    if (!check_len(len, errp)) {
        return false;
    }
    for (size_t off = 0; off < len; off += BLOCK_CRYPTO_SECTOR_SIZE) {
        make_iv(c, sector++, iv);
        sector_decrypt(c, iv, buf + off);
    }
    return true;
}
