/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * LUKS1's anti-forensic information splitter.  A key slot does not
 * store the (encrypted) master key but `stripes` blocks of the key's
 * size: stripes - 1 random blocks and one last block that is the key
 * XORed with a hash-diffused chain of all the random ones.  Losing (or
 * securely overwriting) any one block loses the key, which is the point:
 * erasing a slot only has to destroy part of 4000 * key_len bytes.
 *
 * The diffusion, as the LUKS1 spec defines it: the block is cut into
 * digest-sized pieces (the last one may be shorter); piece i becomes
 * H(big-endian 32-bit i || piece), cut to the piece's length.
 */
#include <string.h>

#include "block/block.h"
#include "crypto-int.h"

static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        dst[i] ^= src[i];
    }
}

static void diffuse(const CryptoHashAlg *hash, void *hctx, uint8_t *block,
                    size_t len)
{
    const struct nettle_hash *h = hash->impl;
    uint8_t digest[CRYPTO_MAX_DIGEST];

    for (size_t off = 0, i = 0; off < len; off += h->digest_size, i++) {
        size_t piece = MIN(h->digest_size, len - off);
        uint8_t index[4] = { i >> 24, i >> 16, i >> 8, i };

        h->init(hctx);
        h->update(hctx, sizeof(index), index);
        h->update(hctx, piece, block + off);
        h->digest(hctx, h->digest_size, digest);
        memcpy(block + off, digest, piece);
    }
}

/* The running value after folding in blocks 0 .. stripes - 2 */
static void fold(const CryptoHashAlg *hash, size_t block_len,
                 uint32_t stripes, const uint8_t *blocks, uint8_t *acc)
{
    g_autofree void *hctx = g_malloc(hash->impl->context_size);

    memset(acc, 0, block_len);
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(acc, blocks + (size_t)i * block_len, block_len);
        diffuse(hash, hctx, acc, block_len);
    }
}

bool crypto_afsplit_encode(const CryptoHashAlg *hash, size_t block_len,
                           uint32_t stripes, const uint8_t *in,
                           uint8_t *out, GError **errp)
{
    g_autofree uint8_t *acc = g_malloc(block_len);
    uint8_t *last = out + (size_t)(stripes - 1) * block_len;

    g_assert(stripes >= 1);
    if (!crypto_random_bytes(out, (size_t)(stripes - 1) * block_len,
                             errp)) {
        return false;
    }
    fold(hash, block_len, stripes, out, acc);
    memcpy(last, in, block_len);
    xor_into(last, acc, block_len);
    memset(acc, 0, block_len);
    return true;
}

void crypto_afsplit_decode(const CryptoHashAlg *hash, size_t block_len,
                           uint32_t stripes, const uint8_t *in,
                           uint8_t *out)
{
    g_autofree uint8_t *acc = g_malloc(block_len);

    g_assert(stripes >= 1);
    fold(hash, block_len, stripes, in, acc);
    memcpy(out, in + (size_t)(stripes - 1) * block_len, block_len);
    xor_into(out, acc, block_len);
    memset(acc, 0, block_len);
}
