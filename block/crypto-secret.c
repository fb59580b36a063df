/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The --object secret registry: QEMU's "secret" object, parsed from its
 * command-line form (secret,id=ID,data=D|file=PATH[,format=raw|base64])
 * and kept by id for key-secret= options to name.  The error texts are
 * qemu-img 7.2's for the same arguments.  A secret given encrypted
 * (keyid=MASTER,iv=IV: AES-256-CBC under the 32-byte secret MASTER, as
 * libvirt passes every secret) is decrypted when it is added.
 */
#include <string.h>
#include <nettle/aes.h>
#include <nettle/cbc.h>

#include "block/block.h"
#include "block/crypto.h"

G_LOCK_DEFINE_STATIC(secrets);
static GHashTable *secrets;     /* id -> GBytes */

typedef struct SecretSpec {
    char *type, *id, *data, *file, *format, *keyid, *iv;
} SecretSpec;

static void secret_spec_clear(SecretSpec *s)
{
    g_free(s->type);
    g_free(s->id);
    g_free(s->data);
    g_free(s->file);
    g_free(s->format);
    g_free(s->keyid);
    g_free(s->iv);
}

/* Splits "a=b,c=d" where ",," stands for a literal comma */
static GPtrArray *split_items(const char *spec)
{
    GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);

    for (const char *p = spec; ; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || !*p) {
            g_ptr_array_add(items, g_string_free(cur, false));
            if (!*p) {
                break;
            }
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    return items;
}

static bool set_field(SecretSpec *s, const char *key, const char *value,
                      GError **errp)
{
    char **field = !strcmp(key, "qom-type") ? &s->type :
                   !strcmp(key, "id") ? &s->id :
                   !strcmp(key, "data") ? &s->data :
                   !strcmp(key, "file") ? &s->file :
                   !strcmp(key, "format") ? &s->format :
                   !strcmp(key, "keyid") ? &s->keyid :
                   !strcmp(key, "iv") ? &s->iv : NULL;

    if (!strcmp(key, "loaded")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Property 'secret.loaded' is not writable");
        return false;
    }
    if (!field) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' is unexpected", key);
        return false;
    }
    /* a repeated key: the last one counts, as in QEMU */
    g_free(*field);
    *field = g_strdup(value);
    return true;
}

static bool parse_spec(const char *spec, SecretSpec *s, GError **errp)
{
    g_autoptr(GPtrArray) items = split_items(spec);

    for (guint i = 0; i < items->len; i++) {
        const char *item = items->pdata[i];
        const char *eq = strchr(item, '=');
        g_autofree char *key = NULL;

        if (!eq && i == 0) {
            /* the first item may be the bare type */
            s->type = g_strdup(item);
            continue;
        }
        if (!eq) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Expected '=' after parameter '%s'", item);
            return false;
        }
        key = g_strndup(item, eq - item);
        if (!set_field(s, key, eq + 1, errp)) {
            return false;
        }
    }
    return true;
}

static bool valid_id(const char *id)
{
    if (!g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

static bool check_spec(const SecretSpec *s, GError **errp)
{
    const char *msg = NULL;
    g_autofree char *text = NULL;

    if (!s->type || !*s->type) {
        msg = "Parameter 'qom-type' is missing";
    } else if (strcmp(s->type, "secret")) {
        text = g_strdup_printf("Parameter 'qom-type' does not accept value "
                               "'%s'", s->type);
    } else if (!s->id) {
        msg = "Parameter 'id' is missing";
    } else if (!valid_id(s->id)) {
        msg = "Parameter 'id' expects an identifier";
    } else if (s->format && strcmp(s->format, "raw") &&
               strcmp(s->format, "base64")) {
        text = g_strdup_printf("Parameter 'format' does not accept value "
                               "'%s'", s->format);
    } else if (s->file && s->data) {
        msg = "'file' and 'data' are mutually exclusive";
    } else if (!s->file && !s->data) {
        msg = "Either 'file' or 'data' must be provided";
    }
    if (msg || text) {
        g_set_error_literal(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            text ? text : msg);
        return false;
    }
    return true;
}

static GBytes *load_bytes(const SecretSpec *s, GError **errp)
{
    char *contents;
    gsize len;
    g_autoptr(GError) err = NULL;

    if (!s->file) {
        return g_bytes_new(s->data, strlen(s->data));
    }
    /* the file's bytes as they are: a trailing newline is part of it */
    if (!g_file_get_contents(s->file, &contents, &len, &err)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unable to read %s: %s", s->file, err->message);
        return NULL;
    }
    return g_bytes_new_take(contents, len);
}

static GBytes *decode_base64(GBytes *in, GError **errp)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";
    gsize len;
    const char *data = g_bytes_get_data(in, &len);
    g_autofree char *text = NULL;
    guchar *out;
    gsize out_len;

    if (len && memchr(data, '\0', len)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Base64 data contains embedded NUL characters");
        return NULL;
    }
    text = g_strndup(data, len);
    if (strspn(text, alphabet) != len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Base64 data contains invalid characters");
        return NULL;
    }
    out = g_base64_decode(text, &out_len);
    return g_bytes_new_take(out, out_len);
}

static bool register_secret(const char *id, GBytes *bytes, GError **errp)
{
    bool ok = true;

    G_LOCK(secrets);
    if (!secrets) {
        secrets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        (GDestroyNotify)g_bytes_unref);
    }
    if (g_hash_table_contains(secrets, id)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "attempt to add duplicate property '%s' to object "
                    "(type 'container')", id);
        ok = false;
    } else {
        g_hash_table_insert(secrets, g_strdup(id), g_bytes_ref(bytes));
    }
    G_UNLOCK(secrets);
    return ok;
}

static GBytes *base64_text(const char *text, GError **errp)
{
    g_autoptr(GBytes) in = g_bytes_new(text, strlen(text));

    return decode_base64(in, errp);
}

/* The plaintext of an encrypted secret: AES-256-CBC under the secret
 * keyid names, the IV base64 encoded, the trailing padding byte count
 * removed (QEMU checks only that it is at most 16 and the length). */
static GBytes *decrypt_secret(const SecretSpec *s, GBytes *in, GError **errp)
{
    g_autoptr(GBytes) key = crypto_secret_lookup(s->keyid, errp);
    g_autoptr(GBytes) iv = NULL;
    g_autoptr(GBytes) cipher = NULL;
    g_autofree uint8_t *plain = NULL;
    uint8_t ivbuf[AES_BLOCK_SIZE];
    struct aes256_ctx ctx;
    gsize len;
    uint8_t pad;

    if (!key) {
        return NULL;
    }
    if (g_bytes_get_size(key) != AES256_KEY_SIZE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Key should be 32 bytes in length");
        return NULL;
    }
    if (!s->iv) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "IV is required to decrypt secret");
        return NULL;
    }
    iv = base64_text(s->iv, errp);
    if (!iv) {
        return NULL;
    }
    if (g_bytes_get_size(iv) != AES_BLOCK_SIZE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "IV should be 16 bytes in length not %zu",
                    (size_t)g_bytes_get_size(iv));
        return NULL;
    }
    cipher = s->format && !strcmp(s->format, "base64")
             ? decode_base64(in, errp) : g_bytes_ref(in);
    if (!cipher) {
        return NULL;
    }
    len = g_bytes_get_size(cipher);
    if (len % AES_BLOCK_SIZE || !len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Length %zu must be a multiple of block size %d",
                    (size_t)len, AES_BLOCK_SIZE);
        return NULL;
    }
    memcpy(ivbuf, g_bytes_get_data(iv, NULL), AES_BLOCK_SIZE);
    aes256_set_decrypt_key(&ctx, g_bytes_get_data(key, NULL));
    plain = g_malloc(len);
    cbc_decrypt(&ctx, (nettle_cipher_func *)aes256_decrypt, AES_BLOCK_SIZE,
                ivbuf, len, plain, g_bytes_get_data(cipher, NULL));
    memset(&ctx, 0, sizeof(ctx));
    pad = plain[len - 1];
    if (pad > AES_BLOCK_SIZE || pad > len) {
        memset(plain, 0, len);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Incorrect number of padding bytes (%d) found on "
                    "decrypted data", pad);
        return NULL;
    }
    return g_bytes_new_take(g_steal_pointer(&plain), len - pad);
}

/* Checks a parsed spec, loads and decodes its bytes, registers them. */
static bool add_spec(const SecretSpec *s, GError **errp)
{
    g_autoptr(GBytes) raw = NULL;
    g_autoptr(GBytes) bytes = NULL;

    if (!check_spec(s, errp)) {
        return false;
    }
    raw = load_bytes(s, errp);
    if (!raw) {
        return false;
    }
    if (s->keyid) {
        bytes = decrypt_secret(s, raw, errp);
    } else if (s->format && !strcmp(s->format, "base64")) {
        bytes = decode_base64(raw, errp);
    } else {
        bytes = g_bytes_ref(raw);
    }
    return bytes && register_secret(s->id, bytes, errp);
}

bool crypto_secret_add(const char *spec, GError **errp)
{
    SecretSpec s = { 0 };
    bool ok = parse_spec(spec, &s, errp) && add_spec(&s, errp);

    secret_spec_clear(&s);
    return ok;
}

bool crypto_secret_add_fields(const char *id, const char *data,
                              const char *file, const char *format,
                              const char *keyid, const char *iv,
                              GError **errp)
{
    SecretSpec s = {
        .type = g_strdup("secret"), .id = g_strdup(id),
        .data = g_strdup(data), .file = g_strdup(file),
        .format = g_strdup(format), .keyid = g_strdup(keyid),
        .iv = g_strdup(iv),
    };
    bool ok = add_spec(&s, errp);

    secret_spec_clear(&s);
    return ok;
}

GBytes *crypto_secret_lookup(const char *id, GError **errp)
{
    GBytes *b = NULL;

    /* a reference of the caller's own: object-del may drop the
     * registry's while an open still reads the bytes */
    G_LOCK(secrets);
    if (secrets && id) {
        b = g_hash_table_lookup(secrets, id);
        if (b) {
            g_bytes_ref(b);
        }
    }
    G_UNLOCK(secrets);
    if (!b) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "No secret with id '%s'", id ? id : "");
    }
    return b;
}

bool crypto_secret_remove(const char *id)
{
    bool found;

    G_LOCK(secrets);
    found = secrets && g_hash_table_remove(secrets, id);
    G_UNLOCK(secrets);
    return found;
}

bool crypto_secret_exists(const char *id)
{
    bool found;

    G_LOCK(secrets);
    found = secrets && g_hash_table_contains(secrets, id);
    G_UNLOCK(secrets);
    return found;
}

void crypto_secret_clear(void)
{
    G_LOCK(secrets);
    g_clear_pointer(&secrets, g_hash_table_unref);
    G_UNLOCK(secrets);
}
