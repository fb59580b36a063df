/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * LUKS1 headers as QEMU 7.2 writes and reads them (raw "luks" images and
 * qcow2's encrypt.format=luks): create, unlock, describe, and add or
 * erase key slots.  Facts (layout, iteration rules, error texts) follow
 * QEMU's crypto/block-luks.c and the LUKS1 on-disk specification.
 *
 * The area starts with a 592-byte big-endian header; 8 key slots of
 * stripes * key_bytes bytes of anti-forensically split, encrypted master
 * key follow from byte 4096, each starting on a 4 KiB boundary; the
 * payload begins after the last slot.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>

#include "block/block.h"
#include "block/byteorder.h"
#include "block/crypto.h"
#include "crypto-int.h"

#define LUKS_HEADER_LEN      592
#define LUKS_VERSION         1
#define LUKS_NAME_LEN        32
#define LUKS_DIGEST_LEN      20
#define LUKS_SALT_LEN        32
#define LUKS_UUID_LEN        40
#define LUKS_NUM_SLOTS       8
#define LUKS_STRIPES         4000
#define LUKS_SLOT_ACTIVE     0x00AC71F3u
#define LUKS_SLOT_INACTIVE   0x0000DEADu
#define LUKS_SECTOR          512
/* the key material starts after the header's first 4 KiB, and each
 * slot's material is aligned to that size (as cryptsetup does) */
#define LUKS_ALIGN_SECTORS   (4096 / LUKS_SECTOR)
#define LUKS_MIN_SLOT_ITERS  1000
#define LUKS_MIN_MK_ITERS    1000
#define LUKS_DEFAULT_ITER_MS 2000
/* how often an erased slot's material is overwritten with noise */
#define LUKS_ERASE_PASSES    40

/* byte offsets in the on-disk header */
enum {
    OFF_MAGIC = 0, OFF_VERSION = 6, OFF_CIPHER_NAME = 8,
    OFF_CIPHER_MODE = 40, OFF_HASH_SPEC = 72, OFF_PAYLOAD = 104,
    OFF_KEY_BYTES = 108, OFF_MK_DIGEST = 112, OFF_MK_SALT = 132,
    OFF_MK_ITERS = 164, OFF_UUID = 168, OFF_SLOTS = 208,
    SLOT_LEN = 48,
};

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

typedef struct LuksSlot {
    uint32_t active;
    uint32_t iters;
    uint8_t salt[LUKS_SALT_LEN];
    uint32_t key_sector;
    uint32_t stripes;
} LuksSlot;

typedef struct Luks {
    /* the header fields, host endian */
    char cipher_name[LUKS_NAME_LEN];
    char cipher_mode[LUKS_NAME_LEN];
    char hash_spec[LUKS_NAME_LEN];
    uint32_t payload_sector;
    uint32_t key_bytes;
    uint8_t mk_digest[LUKS_DIGEST_LEN];
    uint8_t mk_salt[LUKS_SALT_LEN];
    uint32_t mk_iters;
    char uuid[LUKS_UUID_LEN];
    LuksSlot slots[LUKS_NUM_SLOTS];
    /* what the names mean */
    const CryptoCipherAlg *cipher;
    CryptoMode mode;
    CryptoIvgen ivgen;
    const CryptoHashAlg *ivhash;    /* NULL unless named in the header */
    const CryptoHashAlg *hash;
} Luks;

static void set_err(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void set_err(GError **errp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_propagate_error(errp, g_error_new_valist(BDRV_ERROR,
                                               BDRV_ERROR_GENERIC, fmt, ap));
    va_end(ap);
}

/* ---- header encoding ---- */

static void encode_header(const Luks *l, uint8_t *buf)
{
    memset(buf, 0, LUKS_HEADER_LEN);
    memcpy(buf + OFF_MAGIC, luks_magic, sizeof(luks_magic));
    be16_write(buf + OFF_VERSION, LUKS_VERSION);
    memcpy(buf + OFF_CIPHER_NAME, l->cipher_name, LUKS_NAME_LEN);
    memcpy(buf + OFF_CIPHER_MODE, l->cipher_mode, LUKS_NAME_LEN);
    memcpy(buf + OFF_HASH_SPEC, l->hash_spec, LUKS_NAME_LEN);
    be32_write(buf + OFF_PAYLOAD, l->payload_sector);
    be32_write(buf + OFF_KEY_BYTES, l->key_bytes);
    memcpy(buf + OFF_MK_DIGEST, l->mk_digest, LUKS_DIGEST_LEN);
    memcpy(buf + OFF_MK_SALT, l->mk_salt, LUKS_SALT_LEN);
    be32_write(buf + OFF_MK_ITERS, l->mk_iters);
    memcpy(buf + OFF_UUID, l->uuid, LUKS_UUID_LEN);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        uint8_t *s = buf + OFF_SLOTS + i * SLOT_LEN;
        be32_write(s, l->slots[i].active);
        be32_write(s + 4, l->slots[i].iters);
        memcpy(s + 8, l->slots[i].salt, LUKS_SALT_LEN);
        be32_write(s + 40, l->slots[i].key_sector);
        be32_write(s + 44, l->slots[i].stripes);
    }
}

static bool decode_header(const uint8_t *buf, Luks *l, GError **errp)
{
    if (memcmp(buf + OFF_MAGIC, luks_magic, sizeof(luks_magic))) {
        set_err(errp, "Volume is not in LUKS format");
        return false;
    }
    if (be16_read(buf + OFF_VERSION) != LUKS_VERSION) {
        set_err(errp, "LUKS version %u is not supported",
                be16_read(buf + OFF_VERSION));
        return false;
    }
    memcpy(l->cipher_name, buf + OFF_CIPHER_NAME, LUKS_NAME_LEN);
    memcpy(l->cipher_mode, buf + OFF_CIPHER_MODE, LUKS_NAME_LEN);
    memcpy(l->hash_spec, buf + OFF_HASH_SPEC, LUKS_NAME_LEN);
    l->payload_sector = be32_read(buf + OFF_PAYLOAD);
    l->key_bytes = be32_read(buf + OFF_KEY_BYTES);
    memcpy(l->mk_digest, buf + OFF_MK_DIGEST, LUKS_DIGEST_LEN);
    memcpy(l->mk_salt, buf + OFF_MK_SALT, LUKS_SALT_LEN);
    l->mk_iters = be32_read(buf + OFF_MK_ITERS);
    memcpy(l->uuid, buf + OFF_UUID, LUKS_UUID_LEN);
    l->uuid[LUKS_UUID_LEN - 1] = '\0';
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        const uint8_t *s = buf + OFF_SLOTS + i * SLOT_LEN;
        l->slots[i].active = be32_read(s);
        l->slots[i].iters = be32_read(s + 4);
        memcpy(l->slots[i].salt, s + 8, LUKS_SALT_LEN);
        l->slots[i].key_sector = be32_read(s + 40);
        l->slots[i].stripes = be32_read(s + 44);
    }
    return true;
}

/* Sectors of one slot's key material, rounded up to the 4 KiB alignment */
static uint32_t slot_sectors(uint32_t key_bytes, uint32_t stripes)
{
    uint64_t sectors = ((uint64_t)key_bytes * stripes + LUKS_SECTOR - 1) /
                       LUKS_SECTOR;

    sectors = (sectors + LUKS_ALIGN_SECTORS - 1) / LUKS_ALIGN_SECTORS *
              LUKS_ALIGN_SECTORS;
    return sectors > UINT32_MAX ? UINT32_MAX : (uint32_t)sectors;
}

static bool check_strings(const Luks *l, GError **errp)
{
    if (!memchr(l->cipher_name, '\0', LUKS_NAME_LEN)) {
        set_err(errp, "LUKS header cipher name is not NUL terminated");
    } else if (!memchr(l->cipher_mode, '\0', LUKS_NAME_LEN)) {
        set_err(errp, "LUKS header cipher mode is not NUL terminated");
    } else if (!memchr(l->hash_spec, '\0', LUKS_NAME_LEN)) {
        set_err(errp, "LUKS header hash spec is not NUL terminated");
    } else {
        return true;
    }
    return false;
}

static bool check_slot(const Luks *l, int i, GError **errp)
{
    const LuksSlot *s = &l->slots[i];
    uint64_t end = (uint64_t)s->key_sector +
                   slot_sectors(l->key_bytes, s->stripes);

    if (s->stripes != LUKS_STRIPES) {
        set_err(errp, "Keyslot %d is corrupted (stripes %u != %d)", i,
                s->stripes, LUKS_STRIPES);
    } else if (s->active != LUKS_SLOT_ACTIVE &&
               s->active != LUKS_SLOT_INACTIVE) {
        set_err(errp, "Keyslot %d state (active/disable) is corrupted", i);
    } else if (s->active == LUKS_SLOT_ACTIVE && s->iters == 0) {
        set_err(errp, "Keyslot %d iteration count is zero", i);
    } else if (s->key_sector < LUKS_ALIGN_SECTORS) {
        set_err(errp, "Keyslot %d is overlapping with the LUKS header", i);
    } else if (end > l->payload_sector) {
        set_err(errp, "Keyslot %d is overlapping with the encrypted payload",
                i);
    } else {
        return true;
    }
    return false;
}

static bool slots_overlap(const Luks *l, int i, int j)
{
    uint64_t a = l->slots[i].key_sector, b = l->slots[j].key_sector;
    uint64_t alen = slot_sectors(l->key_bytes, l->slots[i].stripes);
    uint64_t blen = slot_sectors(l->key_bytes, l->slots[j].stripes);

    return a + alen > b && b + blen > a;
}

/* The structural checks QEMU makes before trusting any offset */
static bool check_header(const Luks *l, GError **errp)
{
    if (!check_strings(l, errp)) {
        return false;
    }
    if (l->payload_sector < LUKS_ALIGN_SECTORS) {
        set_err(errp, "LUKS payload is overlapping with the header");
        return false;
    }
    if (l->mk_iters == 0) {
        set_err(errp, "LUKS key iteration count is zero");
        return false;
    }
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (!check_slot(l, i, errp)) {
            return false;
        }
        for (int j = i + 1; j < LUKS_NUM_SLOTS; j++) {
            if (slots_overlap(l, i, j)) {
                set_err(errp, "Keyslots %d and %d are overlapping in the "
                        "header", i, j);
                return false;
            }
        }
    }
    return true;
}

/* ---- algorithm names ---- */

static const CryptoHashAlg *hash_named(const char *name, GError **errp)
{
    const CryptoHashAlg *h = crypto_hash_alg_by_name(name);

    if (!h) {
        set_err(errp, "Hash algorithm '%s' not supported", name);
    }
    return h;
}

/* "xts-plain64", "cbc-essiv:sha256": mode, IV generator, IV hash */
static bool parse_mode_spec(Luks *l, GError **errp)
{
    g_autofree char *spec = g_strdup(l->cipher_mode);
    char *ivgen = strchr(spec, '-');
    char *ivhash;
    int mode, gen;

    if (!ivgen) {
        set_err(errp, "Unexpected cipher mode string format '%s'",
                l->cipher_mode);
        return false;
    }
    *ivgen++ = '\0';
    ivhash = strchr(ivgen, ':');
    if (ivhash) {
        *ivhash++ = '\0';
        l->ivhash = hash_named(ivhash, errp);
        if (!l->ivhash) {
            return false;
        }
    }
    mode = crypto_mode_by_name(spec);
    if (mode < 0) {
        set_err(errp, "Cipher mode '%s' not supported", spec);
        return false;
    }
    l->mode = mode;
    gen = crypto_ivgen_by_name(ivgen);
    if (gen < 0) {
        set_err(errp, "IV generator '%s' not supported", ivgen);
        return false;
    }
    l->ivgen = gen;
    return true;
}

static bool parse_algs(Luks *l, GError **errp)
{
    uint32_t one_key;

    if (!parse_mode_spec(l, errp)) {
        return false;
    }
    one_key = l->mode == CRYPTO_MODE_XTS ? l->key_bytes / 2 : l->key_bytes;
    l->cipher = crypto_cipher_alg_by_luks(l->cipher_name, one_key);
    if (!l->cipher ||
        crypto_key_len(l->cipher, l->mode) != l->key_bytes) {
        set_err(errp, "Algorithm '%s' with key size %u bytes not supported",
                l->cipher_name, one_key);
        return false;
    }
    l->hash = hash_named(l->hash_spec, errp);
    if (!l->hash) {
        return false;
    }
    if (l->ivgen == CRYPTO_IVGEN_ESSIV) {
        if (!l->ivhash) {
            set_err(errp, "Missing IV generator hash specification");
            return false;
        }
        return crypto_essiv_alg(l->cipher, l->ivhash, errp) != NULL;
    }
    return true;
}

static bool read_header(LuksReadFn read_fn, void *opaque, Luks *l,
                        GError **errp)
{
    uint8_t buf[LUKS_HEADER_LEN];

    memset(l, 0, sizeof(*l));
    return read_fn(opaque, 0, buf, sizeof(buf), errp) &&
           decode_header(buf, l, errp) && check_header(l, errp) &&
           parse_algs(l, errp);
}

static bool write_header(const Luks *l, LuksWriteFn write_fn, void *opaque,
                         GError **errp)
{
    uint8_t buf[LUKS_HEADER_LEN];

    encode_header(l, buf);
    return write_fn(opaque, 0, buf, sizeof(buf), errp);
}

/* ---- key derivation ---- */

/* The password is used as QEMU does, as a C string */
static size_t password_len(GBytes *secret)
{
    gsize len;
    const char *data = g_bytes_get_data(secret, &len);

    return len ? strnlen(data, len) : 0;
}

static bool pbkdf2(const CryptoHashAlg *hash, const void *key, size_t key_len,
                   const uint8_t *salt, uint32_t iters, uint8_t *out,
                   size_t out_len, GError **errp)
{
    /* GnuTLS wants non-const datums; it only reads them */
    gnutls_datum_t k = { (unsigned char *)key, key_len };
    gnutls_datum_t s = { (unsigned char *)salt, LUKS_SALT_LEN };
    int r = gnutls_pbkdf2(hash->gnutls_mac, &k, &s, iters, out, out_len);

    if (r < 0) {
        set_err(errp, "PBKDF2 with %s failed: %s", hash->name,
                gnutls_strerror(r));
        return false;
    }
    return true;
}

static bool thread_cpu_ms(uint64_t *ms, GError **errp)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0) {
        set_err(errp, "Unable to get thread CPU usage: %s",
                g_strerror(errno));
        return false;
    }
    *ms = (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return true;
}

/*
 * How many PBKDF2 iterations this thread runs in one second of CPU time,
 * measured as QEMU does: start at 2^15 and grow the count until one run
 * takes over half a second (x10 below 100 ms, proportionally above), so
 * the figure is not dominated by the clock's granularity.
 */
static bool count_iters_per_sec(const CryptoHashAlg *hash, const void *key,
                                size_t key_len, const uint8_t *salt,
                                size_t out_len, uint64_t *per_sec,
                                GError **errp)
{
    g_autofree uint8_t *out = g_malloc(out_len);
    uint64_t iters = 1 << 15, start, end, delta;

    for (;;) {
        if (!thread_cpu_ms(&start, errp) ||
            !pbkdf2(hash, key, key_len, salt, iters, out, out_len, errp) ||
            !thread_cpu_ms(&end, errp)) {
            return false;
        }
        delta = end - start;
        if (delta == 0) {
            set_err(errp, "Unable to get accurate CPU usage");
            return false;
        }
        if (delta > 500) {
            break;
        }
        iters = delta < 100 ? iters * 10 : iters * 1000 / delta;
    }
    *per_sec = iters * 1000 / delta;
    return true;
}

/* per_sec scaled to iter_time_ms, divided by div, at least min */
static bool scale_iters(uint64_t per_sec, int64_t iter_time_ms, int div,
                        uint32_t min, uint32_t *out, GError **errp)
{
    uint64_t iters;

    if (per_sec > UINT64_MAX / (uint64_t)iter_time_ms) {
        set_err(errp, "PBKDF iterations %llu too large to scale: %s",
                (unsigned long long)per_sec, g_strerror(ERANGE));
        return false;
    }
    iters = per_sec * iter_time_ms / 1000 / div;
    if (iters > UINT32_MAX) {
        set_err(errp, "PBKDF iterations %llu larger than %u: %s",
                (unsigned long long)iters, UINT32_MAX, g_strerror(ERANGE));
        return false;
    }
    *out = MAX((uint32_t)iters, min);
    return true;
}

/* ---- key slots ---- */

/* The material's size rounded up to whole sectors: the cipher works on
 * sectors, and a short last one (e.g. 24-byte keys) encrypts the same
 * bytes in all modes whether or not zeros follow it */
static size_t material_buf_len(size_t len)
{
    return (len + LUKS_SECTOR - 1) / LUKS_SECTOR * LUKS_SECTOR;
}

static BlockCrypto *cipher_for_key(const Luks *l, const uint8_t *key,
                                   GError **errp)
{
    return block_crypto_new(l->cipher, l->mode, l->ivgen, l->ivhash, key,
                            l->key_bytes, errp);
}

/* 1: the password opens slot i and mk is the master key; 0: it does not
 * (or the slot is inactive); -1: error */
static int load_key(const Luks *l, int i, GBytes *secret, uint8_t *mk,
                    LuksReadFn read_fn, void *opaque, GError **errp)
{
    const LuksSlot *s = &l->slots[i];
    size_t len = (size_t)l->key_bytes * s->stripes;
    g_autofree uint8_t *material = NULL;
    g_autofree uint8_t *slot_key = g_malloc0(l->key_bytes);
    g_autoptr(BlockCrypto) c = NULL;
    uint8_t digest[LUKS_DIGEST_LEN];
    int ret = -1;

    if (s->active != LUKS_SLOT_ACTIVE) {
        return 0;
    }
    material = g_malloc0(material_buf_len(len));
    if (!pbkdf2(l->hash, g_bytes_get_data(secret, NULL),
                password_len(secret), s->salt, s->iters, slot_key,
                l->key_bytes, errp) ||
        !read_fn(opaque, (uint64_t)s->key_sector * LUKS_SECTOR, material,
                 len, errp) ||
        !(c = cipher_for_key(l, slot_key, errp)) ||
        !block_crypto_decrypt(c, 0, material, material_buf_len(len), errp)) {
        goto out;
    }
    crypto_afsplit_decode(l->hash, l->key_bytes, s->stripes, material, mk);
    /* only the digest tells a right password from a wrong one */
    if (!pbkdf2(l->hash, mk, l->key_bytes, l->mk_salt, l->mk_iters, digest,
                sizeof(digest), errp)) {
        goto out;
    }
    ret = memcmp(digest, l->mk_digest, sizeof(digest)) == 0;
out:
    memset(slot_key, 0, l->key_bytes);
    memset(material, 0, material ? material_buf_len(len) : 0);
    return ret;
}

static int find_key(const Luks *l, GBytes *secret, uint8_t *mk,
                    LuksReadFn read_fn, void *opaque, GError **errp)
{
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        int r = load_key(l, i, secret, mk, read_fn, opaque, errp);
        if (r != 0) {
            return r < 0 ? -1 : i;
        }
    }
    set_err(errp, "Invalid password, cannot unlock any keyslot");
    return -1;
}

/* Splits, encrypts and writes the master key into slot i under the
 * password, then writes the header that marks the slot active */
static bool store_key(Luks *l, int i, GBytes *secret, const uint8_t *mk,
                      int64_t iter_time_ms, LuksWriteFn write_fn,
                      void *opaque, GError **errp)
{
    LuksSlot *s = &l->slots[i];
    size_t len = (size_t)l->key_bytes * s->stripes;
    g_autofree uint8_t *material = g_malloc0(material_buf_len(len));
    g_autofree uint8_t *slot_key = g_malloc0(l->key_bytes);
    const void *pw = g_bytes_get_data(secret, NULL);
    size_t pw_len = password_len(secret);
    g_autoptr(BlockCrypto) c = NULL;
    uint64_t per_sec;
    bool ok = false;

    if (!crypto_random_bytes(s->salt, LUKS_SALT_LEN, errp) ||
        !count_iters_per_sec(l->hash, pw, pw_len, s->salt, l->key_bytes,
                             &per_sec, errp) ||
        !scale_iters(per_sec, iter_time_ms, 1, LUKS_MIN_SLOT_ITERS,
                     &s->iters, errp) ||
        !pbkdf2(l->hash, pw, pw_len, s->salt, s->iters, slot_key,
                l->key_bytes, errp) ||
        !(c = cipher_for_key(l, slot_key, errp)) ||
        !crypto_afsplit_encode(l->hash, l->key_bytes, s->stripes, mk,
                               material, errp) ||
        !block_crypto_encrypt(c, 0, material, material_buf_len(len), errp) ||
        !write_fn(opaque, (uint64_t)s->key_sector * LUKS_SECTOR, material,
                  len, errp)) {
        goto out;
    }
    s->active = LUKS_SLOT_ACTIVE;
    ok = write_header(l, write_fn, opaque, errp);
out:
    memset(slot_key, 0, l->key_bytes);
    memset(material, 0, material_buf_len(len));
    return ok;
}

/* Marks slot i inactive in the header first (so a crash leaves no half
 * slot that looks usable), then overwrites its material with noise */
static bool erase_key(Luks *l, int i, LuksWriteFn write_fn, void *opaque,
                      GError **errp)
{
    LuksSlot *s = &l->slots[i];
    size_t len = (size_t)l->key_bytes * s->stripes;
    g_autofree uint8_t *noise = g_malloc0(len);
    bool ok, noisy = true;

    memset(s->salt, 0, LUKS_SALT_LEN);
    s->iters = 0;
    s->active = LUKS_SLOT_INACTIVE;
    ok = write_header(l, write_fn, opaque, errp);
    for (int pass = 0; pass < LUKS_ERASE_PASSES; pass++) {
        if (!crypto_random_bytes(noise, len, NULL)) {
            /* without noise, zeros once are still better than nothing */
            noisy = false;
            if (pass > 0) {
                break;
            }
        }
        if (!write_fn(opaque, (uint64_t)s->key_sector * LUKS_SECTOR, noise,
                      len, ok ? errp : NULL)) {
            return false;
        }
    }
    if (ok && !noisy) {
        set_err(errp, "Unable to read random bytes to erase keyslot %d", i);
        return false;
    }
    return ok;
}

static int count_active(const Luks *l)
{
    int n = 0;

    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        n += l->slots[i].active == LUKS_SLOT_ACTIVE;
    }
    return n;
}

/* ---- creation ---- */

static bool bad_value(GError **errp, const char *param, const char *value)
{
    set_err(errp, "Parameter '%s' does not accept value '%s'", param, value);
    return false;
}

/* The options (with QEMU's defaults) as algorithms in l */
static bool resolve_algs(const LuksCreateOptions *o, Luks *l, GError **errp)
{
    const char *cipher = o->cipher_alg ? o->cipher_alg : "aes-256";
    const char *mode = o->cipher_mode ? o->cipher_mode : "xts";
    const char *ivgen = o->ivgen_alg ? o->ivgen_alg : "plain64";
    const char *hash = o->hash_alg ? o->hash_alg : "sha256";
    const char *ivhash = o->ivgen_hash_alg;
    int m = crypto_mode_by_name(mode), g = crypto_ivgen_by_name(ivgen);

    if (!(l->cipher = crypto_cipher_alg_by_name(cipher))) {
        return bad_value(errp, "cipher-alg", cipher);
    }
    if (m < 0) {
        return bad_value(errp, "cipher-mode", mode);
    }
    if (g < 0) {
        return bad_value(errp, "ivgen-alg", ivgen);
    }
    l->mode = m;
    l->ivgen = g;
    if (!ivhash && l->ivgen == CRYPTO_IVGEN_ESSIV) {
        ivhash = "sha256";
    }
    /* an IV hash with plain/plain64 is kept in the header and ignored,
     * as dm-crypt and QEMU do */
    if (ivhash && !(l->ivhash = crypto_hash_alg_by_name(ivhash))) {
        return bad_value(errp, "ivgen-hash-alg", ivhash);
    }
    if (!(l->hash = crypto_hash_alg_by_name(hash))) {
        return bad_value(errp, "hash-alg", hash);
    }
    if (l->ivgen == CRYPTO_IVGEN_ESSIV &&
        !crypto_essiv_alg(l->cipher, l->ivhash, errp)) {
        return false;
    }
    if (l->mode == CRYPTO_MODE_XTS && l->cipher->impl->block_size != 16) {
        set_err(errp, "Cipher %s cannot be used in XTS mode", cipher);
        return false;
    }
    return true;
}

/* The header's names and the slot layout for the algorithms in l */
static bool lay_out(Luks *l, GError **errp)
{
    g_autofree char *spec = l->ivhash ?
        g_strdup_printf("%s-%s:%s", crypto_mode_name(l->mode),
                        crypto_ivgen_name(l->ivgen), l->ivhash->name) :
        g_strdup_printf("%s-%s", crypto_mode_name(l->mode),
                        crypto_ivgen_name(l->ivgen));
    uint32_t split;

    if (strlen(spec) >= LUKS_NAME_LEN) {
        set_err(errp, "Cipher mode '%s' is too long for LUKS header", spec);
        return false;
    }
    g_strlcpy(l->cipher_name, l->cipher->luks_name, LUKS_NAME_LEN);
    g_strlcpy(l->cipher_mode, spec, LUKS_NAME_LEN);
    g_strlcpy(l->hash_spec, l->hash->name, LUKS_NAME_LEN);
    l->key_bytes = crypto_key_len(l->cipher, l->mode);
    split = slot_sectors(l->key_bytes, LUKS_STRIPES);
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        l->slots[i].active = LUKS_SLOT_INACTIVE;
        l->slots[i].key_sector = LUKS_ALIGN_SECTORS + i * split;
        l->slots[i].stripes = LUKS_STRIPES;
    }
    l->payload_sector = LUKS_ALIGN_SECTORS + LUKS_NUM_SLOTS * split;
    return true;
}

bool luks_header_size(const LuksCreateOptions *o, uint64_t *size,
                      GError **errp)
{
    g_autofree Luks *l = g_new0(Luks, 1);

    if (!resolve_algs(o, l, errp) || !lay_out(l, errp)) {
        return false;
    }
    *size = (uint64_t)l->payload_sector * LUKS_SECTOR;
    return true;
}

static int64_t iter_time_or_default(int64_t ms)
{
    return ms > 0 ? ms : LUKS_DEFAULT_ITER_MS;
}

/* The master key's salt, iteration count (an eighth of a slot's, as
 * cryptsetup does, so that trying all 8 slots costs about iter_time)
 * and digest */
static bool make_mk_digest(Luks *l, const uint8_t *mk, int64_t iter_time_ms,
                           GError **errp)
{
    uint64_t per_sec;

    return crypto_random_bytes(l->mk_salt, LUKS_SALT_LEN, errp) &&
           count_iters_per_sec(l->hash, mk, l->key_bytes, l->mk_salt,
                               LUKS_DIGEST_LEN, &per_sec, errp) &&
           scale_iters(per_sec, iter_time_ms, 8, LUKS_MIN_MK_ITERS,
                       &l->mk_iters, errp) &&
           pbkdf2(l->hash, mk, l->key_bytes, l->mk_salt, l->mk_iters,
                  l->mk_digest, LUKS_DIGEST_LEN, errp);
}

/* Zeros over the whole header area, so unused slots read as zeros */
static bool zero_area(uint64_t size, LuksWriteFn write_fn, void *opaque,
                      GError **errp)
{
    const size_t chunk = 256 * 1024;
    g_autofree uint8_t *zeros = g_malloc0(chunk);

    for (uint64_t off = 0; off < size; off += chunk) {
        if (!write_fn(opaque, off, zeros, MIN(chunk, size - off), errp)) {
            return false;
        }
    }
    return true;
}

BlockCrypto *luks_create(const LuksCreateOptions *o, GBytes *secret,
                         LuksWriteFn write_fn, void *opaque, GError **errp)
{
    g_autofree Luks *l = g_new0(Luks, 1);
    g_autofree uint8_t *mk = NULL;
    g_autofree char *uuid = g_uuid_string_random();
    int64_t iter_time = iter_time_or_default(o->iter_time_ms);
    BlockCrypto *c = NULL;

    if (!resolve_algs(o, l, errp) || !lay_out(l, errp)) {
        return NULL;
    }
    g_strlcpy(l->uuid, uuid, LUKS_UUID_LEN);
    mk = g_malloc0(l->key_bytes);
    if (crypto_random_bytes(mk, l->key_bytes, errp) &&
        make_mk_digest(l, mk, iter_time, errp) &&
        zero_area((uint64_t)l->payload_sector * LUKS_SECTOR, write_fn,
                  opaque, errp) &&
        store_key(l, 0, secret, mk, iter_time, write_fn, opaque, errp)) {
        c = cipher_for_key(l, mk, errp);
    }
    memset(mk, 0, l->key_bytes);
    return c;
}

/* ---- opening and information ---- */

BlockCrypto *luks_open(GBytes *secret, LuksReadFn read_fn, void *opaque,
                       GError **errp)
{
    g_autofree Luks *l = g_new0(Luks, 1);
    g_autofree uint8_t *mk = NULL;
    BlockCrypto *c = NULL;

    if (!read_header(read_fn, opaque, l, errp) || !secret) {
        return NULL;
    }
    mk = g_malloc0(l->key_bytes);
    if (find_key(l, secret, mk, read_fn, opaque, errp) >= 0) {
        c = cipher_for_key(l, mk, errp);
    }
    memset(mk, 0, l->key_bytes);
    return c;
}

bool luks_info(LuksReadFn read_fn, void *opaque, LuksInfo *info,
               GError **errp)
{
    g_autofree Luks *l = g_new0(Luks, 1);

    memset(info, 0, sizeof(*info));
    if (!read_header(read_fn, opaque, l, errp)) {
        return false;
    }
    info->cipher_alg = g_strdup(l->cipher->name);
    info->cipher_mode = g_strdup(crypto_mode_name(l->mode));
    info->ivgen_alg = g_strdup(crypto_ivgen_name(l->ivgen));
    if (l->ivgen == CRYPTO_IVGEN_ESSIV) {
        info->ivgen_hash_alg = g_strdup(l->ivhash->name);
    }
    info->hash_alg = g_strdup(l->hash->name);
    memcpy(info->uuid, l->uuid, sizeof(info->uuid));
    info->payload_offset = (uint64_t)l->payload_sector * LUKS_SECTOR;
    info->master_key_iters = l->mk_iters;
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        bool active = l->slots[i].active == LUKS_SLOT_ACTIVE;
        info->slots[i].active = active;
        info->slots[i].iters = active ? l->slots[i].iters : 0;
        info->slots[i].stripes = active ? l->slots[i].stripes : 0;
        info->slots[i].key_offset =
            (uint64_t)l->slots[i].key_sector * LUKS_SECTOR;
    }
    return true;
}

void luks_info_clear(LuksInfo *info)
{
    g_free(info->cipher_alg);
    g_free(info->cipher_mode);
    g_free(info->ivgen_alg);
    g_free(info->ivgen_hash_alg);
    g_free(info->hash_alg);
    memset(info, 0, sizeof(*info));
}

/* ---- amend ---- */

static int free_slot(const Luks *l)
{
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (l->slots[i].active != LUKS_SLOT_ACTIVE) {
            return i;
        }
    }
    return -1;
}

/* Which slot an activation writes, by QEMU's rules */
static int pick_slot_to_add(const LuksAmendOptions *o, const Luks *l,
                            GError **errp)
{
    int slot = o->keyslot;

    if (slot >= LUKS_NUM_SLOTS || (slot < 0 && slot != -1)) {
        set_err(errp, "Invalid keyslot %u specified, must be between 0 "
                "and %u", (unsigned)slot, LUKS_NUM_SLOTS - 1);
        return -1;
    }
    if (slot == -1 && (slot = free_slot(l)) < 0) {
        set_err(errp, "Can't add a keyslot - all keyslots are in use");
        return -1;
    }
    if (!o->force && l->slots[slot].active == LUKS_SLOT_ACTIVE) {
        set_err(errp, "Refusing to overwrite active keyslot %i - please "
                "erase it first", slot);
        return -1;
    }
    return slot;
}

static bool add_keyslot(const LuksAmendOptions *o, GBytes *unlock, Luks *l,
                        LuksReadFn read_fn, LuksWriteFn write_fn,
                        void *opaque, GError **errp)
{
    g_autofree uint8_t *mk = NULL;
    int slot;
    bool ok;

    if (!o->new_secret) {
        set_err(errp, "'new-secret' is required to activate a keyslot");
        return false;
    }
    if (o->old_secret) {
        set_err(errp, "'old-secret' must not be given when activating "
                "keyslots");
        return false;
    }
    if ((slot = pick_slot_to_add(o, l, errp)) < 0) {
        return false;
    }
    if (!unlock) {
        set_err(errp, "Parameter 'key-secret' is required for cipher");
        return false;
    }
    mk = g_malloc0(l->key_bytes);
    ok = find_key(l, unlock, mk, read_fn, opaque, errp) >= 0 &&
         store_key(l, slot, o->new_secret, mk,
                   iter_time_or_default(o->iter_time_ms), write_fn, opaque,
                   errp);
    memset(mk, 0, l->key_bytes);
    return ok;
}

static bool erase_given_slot(const LuksAmendOptions *o, Luks *l,
                             LuksReadFn read_fn, LuksWriteFn write_fn,
                             void *opaque, GError **errp)
{
    int slot = o->keyslot;
    g_autofree uint8_t *mk = g_malloc0(l->key_bytes);

    if (slot < 0 || slot >= LUKS_NUM_SLOTS) {
        set_err(errp, "Invalid keyslot %i specified, must be between 0 "
                "and %i", slot, LUKS_NUM_SLOTS - 1);
        return false;
    }
    if (o->old_secret) {
        int r = load_key(l, slot, o->old_secret, mk, read_fn, opaque, errp);
        memset(mk, 0, l->key_bytes);
        if (r < 0) {
            return false;
        }
        if (r == 0) {
            set_err(errp, "Given keyslot %i doesn't contain the given old "
                    "password for erase operation", slot);
            return false;
        }
    }
    if (!o->force && l->slots[slot].active != LUKS_SLOT_ACTIVE) {
        /* sic: QEMU's text ends in a space */
        set_err(errp, "Given keyslot %i is already erased (inactive) ", slot);
        return false;
    }
    if (!o->force && count_active(l) == 1) {
        set_err(errp, "Attempt to erase the only active keyslot %i which "
                "will erase all the data in the image irreversibly - "
                "refusing operation", slot);
        return false;
    }
    return erase_key(l, slot, write_fn, opaque, errp);
}

static bool erase_matching_slots(const LuksAmendOptions *o, Luks *l,
                                 LuksReadFn read_fn, LuksWriteFn write_fn,
                                 void *opaque, GError **errp)
{
    g_autofree uint8_t *mk = g_malloc0(l->key_bytes);
    bool match[LUKS_NUM_SLOTS];
    int n = 0;

    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        int r = load_key(l, i, o->old_secret, mk, read_fn, opaque, errp);
        if (r < 0) {
            memset(mk, 0, l->key_bytes);
            return false;
        }
        match[i] = r == 1;
        n += match[i];
    }
    memset(mk, 0, l->key_bytes);
    if (n == 0) {
        set_err(errp, "No keyslots match given (old) password for erase "
                "operation");
        return false;
    }
    if (!o->force && n == count_active(l)) {
        set_err(errp, "All the active keyslots match the (old) password "
                "that was given and erasing them will erase all the data "
                "in the image irreversibly - refusing operation");
        return false;
    }
    for (int i = 0; i < LUKS_NUM_SLOTS; i++) {
        if (match[i] && !erase_key(l, i, write_fn, opaque, errp)) {
            return false;
        }
    }
    return true;
}

static bool erase_keyslots(const LuksAmendOptions *o, Luks *l,
                           LuksReadFn read_fn, LuksWriteFn write_fn,
                           void *opaque, GError **errp)
{
    if (o->new_secret) {
        set_err(errp, "'new-secret' must not be given when erasing keyslots");
        return false;
    }
    if (o->iter_time_ms > 0) {
        set_err(errp, "'iter-time' must not be given when erasing keyslots");
        return false;
    }
    if (o->keyslot != -1) {
        return erase_given_slot(o, l, read_fn, write_fn, opaque, errp);
    }
    if (o->old_secret) {
        return erase_matching_slots(o, l, read_fn, write_fn, opaque, errp);
    }
    set_err(errp, "To erase keyslot(s), either explicit keyslot index or the "
            "password currently contained in them must be given");
    return false;
}

bool luks_amend(const LuksAmendOptions *o, GBytes *unlock_secret,
                LuksReadFn read_fn, LuksWriteFn write_fn, void *opaque,
                GError **errp)
{
    g_autofree Luks *l = g_new0(Luks, 1);

    if (!read_header(read_fn, opaque, l, errp)) {
        return false;
    }
    if (o->state_active) {
        return add_keyslot(o, unlock_secret, l, read_fn, write_fn, opaque,
                           errp);
    }
    return erase_keyslots(o, l, read_fn, write_fn, opaque, errp);
}
