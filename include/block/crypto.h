/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk encryption as QEMU's block layer does it: secrets given on the
 * command line (--object secret,...), the LUKS1 on-disk header (used by
 * qcow2's encrypt.format=luks and by the raw "luks" format) and qcow2's
 * legacy AES-CBC method (encrypt.format=aes).
 *
 * A BlockCrypto is an unlocked cipher: it encrypts and decrypts whole
 * 512-byte sectors in place; the caller says which sector number each
 * buffer starts at (qcow2 LUKS: the host offset / 512; qcow2 AES: the
 * guest offset / 512; raw LUKS: the offset in the payload / 512).
 *
 * Every function reports failure through GError in BDRV_ERROR with
 * QEMU's message text where QEMU has one.
 */
#ifndef STRATA_BLOCK_CRYPTO_H
#define STRATA_BLOCK_CRYPTO_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

G_BEGIN_DECLS

#define BLOCK_CRYPTO_SECTOR_SIZE 512

/* ---- secrets (--object secret,id=ID,data=D[,format=raw|base64]
 *      or ...,file=PATH[,format=...]) ---- */

/* Parses one --object argument and remembers the secret by its id.
 * Only the "secret" type is known: "Parameter 'qom-type' does not accept
 * value 'T'" otherwise (qemu-img 7.2's text for an unknown object type).
 * A file= secret is the file's bytes as they are (a trailing newline
 * included); with keyid=MASTER[,iv=IV] the data is AES-256-CBC
 * ciphertext under the 32-byte secret MASTER (added before it), the IV
 * base64 encoded, and the plaintext is what gets registered. */
bool crypto_secret_add(const char *spec, GError **errp);
/* The same from its members (QMP's and strata-daemon's --object as
 * JSON); NULL for a member not given. */
bool crypto_secret_add_fields(const char *id, const char *data,
                              const char *file, const char *format,
                              const char *keyid, const char *iv,
                              GError **errp);
/* The secret's bytes (decoded; a new reference, g_bytes_unref() it), or
 * NULL with "No secret with id 'ID'". */
GBytes *crypto_secret_lookup(const char *id, GError **errp);
/* Forgets one secret (QMP object-del); false if there is none by that id.
 * Images already open keep the keys they derived from it. */
bool crypto_secret_remove(const char *id);
bool crypto_secret_exists(const char *id);
/* Forgets all secrets (tests). */
void crypto_secret_clear(void);

/* ---- the sector cipher ---- */

typedef struct BlockCrypto BlockCrypto;

/* buf, len: whole sectors (len % 512 == 0, else an error); sector: the
 * IV number of buf's first sector.  No allocation; a BlockCrypto is not
 * changed by these calls, so threads may share one. */
bool block_crypto_encrypt(BlockCrypto *c, uint64_t sector, uint8_t *buf,
                          size_t len, GError **errp);
bool block_crypto_decrypt(BlockCrypto *c, uint64_t sector, uint8_t *buf,
                          size_t len, GError **errp);
void block_crypto_free(BlockCrypto *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlockCrypto, block_crypto_free)

/* qcow2's legacy method (crypt_method 1): AES-128-CBC, IV plain64; the
 * key is the secret's first 16 bytes, zero padded. */
BlockCrypto *block_crypto_qcow_aes_new(GBytes *secret, GError **errp);

/* ---- LUKS1 ---- */

typedef struct LuksCreateOptions {
    const char *cipher_alg;     /* NULL: "aes-256" (aes-128/192/256,
                                 * twofish-*, serpent-*, cast5-128 as far
                                 * as the library can; at least aes-*) */
    const char *cipher_mode;    /* NULL: "xts" (ecb, cbc, ctr, xts) */
    const char *ivgen_alg;      /* NULL: "plain64" (plain, plain64, essiv) */
    const char *ivgen_hash_alg; /* essiv only; NULL: sha256 */
    const char *hash_alg;       /* NULL: "sha256" (PBKDF2 and AF split) */
    int64_t iter_time_ms;       /* <= 0: 2000 (QEMU's default) */
} LuksCreateOptions;

/* Reads len bytes of the header area at offset (relative to the start of
 * the LUKS header). */
typedef bool (*LuksReadFn)(void *opaque, uint64_t offset, void *buf,
                           size_t len, GError **errp);
typedef bool (*LuksWriteFn)(void *opaque, uint64_t offset, const void *buf,
                            size_t len, GError **errp);

/* The header area's size for these options (the payload offset in bytes,
 * e.g. 2068480 for aes-256-xts: 592-byte header at 0, 8 key slots of
 * 4000 stripes from 4096, each 4 KiB aligned).  For measure and for
 * qcow2's allocation of the header clusters. */
bool luks_header_size(const LuksCreateOptions *o, uint64_t *size,
                      GError **errp);

/* Makes a new header: a random master key and UUID, key slot 0 holding
 * the master key under the secret, PBKDF2 iteration counts measured for
 * iter_time_ms the way QEMU does (with QEMU's minimums).  The payload
 * offset written in the header is the header area's size (QEMU 7.2 does
 * the same for qcow2 and raw LUKS).  Writes the whole header area
 * (luks_header_size bytes, unused parts zero) through write_fn and
 * returns the unlocked cipher for the payload. */
BlockCrypto *luks_create(const LuksCreateOptions *o, GBytes *secret,
                         LuksWriteFn write_fn, void *opaque, GError **errp);

/* Parses and checks the header; with a secret, finds the key slot that
 * it unlocks ("Invalid password, cannot unlock any keyslot") and returns
 * the cipher.  With secret == NULL only checks the header and returns
 * NULL without error (qemu-img info needs no key): use luks_info. */
BlockCrypto *luks_open(GBytes *secret, LuksReadFn read_fn, void *opaque,
                       GError **errp);

typedef struct LuksSlotInfo {
    bool active;
    uint32_t iters;         /* active slots only */
    uint32_t stripes;       /* active slots only */
    uint64_t key_offset;    /* bytes */
} LuksSlotInfo;

typedef struct LuksInfo {
    char *cipher_alg;       /* QEMU's names: "aes-256" */
    char *cipher_mode;      /* "xts" */
    char *ivgen_alg;        /* "plain64" */
    char *ivgen_hash_alg;   /* NULL unless essiv */
    char *hash_alg;         /* "sha256" */
    char uuid[40];
    uint64_t payload_offset;   /* bytes */
    uint32_t master_key_iters;
    LuksSlotInfo slots[8];
} LuksInfo;

/* What qemu-img info shows under "encrypt:".  No secret needed. */
bool luks_info(LuksReadFn read_fn, void *opaque, LuksInfo *info,
               GError **errp);
void luks_info_clear(LuksInfo *info);

/* qemu-img amend's encrypt.* options on a LUKS header (QEMU 7.2's rules
 * and error texts, iotests 293/295): state "active" adds new_secret to
 * one key slot (keyslot, or the first free one), unlocking the master key
 * with unlock_secret (the image's key-secret, or amend's encrypt.secret
 * when given); old_secret is refused there as QEMU does ("'old-secret'
 * must not be given when activating keyslots"); state
 * "inactive" erases the slots given by keyslot or by old_secret, and
 * refuses to erase the last active slot unless force. */
typedef struct LuksAmendOptions {
    bool state_active;          /* state=active vs inactive */
    int keyslot;                /* -1: not given */
    GBytes *old_secret;         /* NULL: not given */
    GBytes *new_secret;         /* NULL: not given */
    int64_t iter_time_ms;       /* <= 0: 2000 */
    bool force;
} LuksAmendOptions;

bool luks_amend(const LuksAmendOptions *o, GBytes *unlock_secret,
                LuksReadFn read_fn, LuksWriteFn write_fn, void *opaque,
                GError **errp);

G_END_DECLS

#endif
