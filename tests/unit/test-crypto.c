/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of block/crypto-*.c: the --object secret registry, the
 * sector cipher, LUKS1 headers and qcow2's legacy AES, with the real
 * qemu-img and qemu-io (QEMU 7.2) as the oracle: images QEMU made are
 * opened and decrypted here, images made here are read by QEMU, and both
 * sides' descriptions of the header must agree.  Without the QEMU tools
 * the interop tests say so and pass.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "block/crypto.h"

#define MIB (1024 * 1024)

/* ---- helpers ---- */

static char *tmpdir;

static void setup(void)
{
    tmpdir = g_dir_make_tmp("test-crypto-XXXXXX", NULL);
    ck_assert(tmpdir);
    crypto_secret_clear();
}

static void teardown(void)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmpdir);

    ck_assert_int_eq(system(cmd), 0);
    g_clear_pointer(&tmpdir, g_free);
    crypto_secret_clear();
}

static char *path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static bool have_qemu(void)
{
    g_autofree char *img = g_find_program_in_path("qemu-img");
    g_autofree char *io = g_find_program_in_path("qemu-io");

    if (!img || !io) {
        fprintf(stderr, "SKIP: qemu-img/qemu-io not installed, interop "
                "test not run\n");
        return false;
    }
    return true;
}

/* Runs a shell command line; returns its exit status, its output (stdout
 * and stderr together) in *out if out is not NULL */
static int run(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/*
 * QEMU's LUKS code times a first round of PBKDF2 by the thread's CPU
 * time and gives up ("Unable to get accurate CPU usage") when that reads
 * 0, which happens often (11 of 60 creates on an idle machine here, and
 * five in a row failed under the sanitized suite's load); an oracle that
 * fails so is asked again, up to QEMU_FLAKE_TRIES times in all (each
 * failed try costs a few milliseconds).  Any other failure is the
 * command's answer.
 */
#define QEMU_CPU_FLAKE "Unable to get accurate CPU usage"
#define QEMU_FLAKE_TRIES 30

static int run(char **out, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *cmd = NULL;
    g_autofree char *full = NULL;
    g_autofree char *quoted = NULL;
    g_autofree char *sout = NULL;
    g_autofree char *serr = NULL;
    int status = 0;

    va_start(ap, fmt);
    cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    quoted = g_shell_quote(cmd);
    full = g_strdup_printf("sh -c %s", quoted);
    for (int attempt = 0; attempt < QEMU_FLAKE_TRIES; attempt++) {
        g_autoptr(GError) err = NULL;

        g_clear_pointer(&sout, g_free);
        g_clear_pointer(&serr, g_free);
        ck_assert_msg(g_spawn_command_line_sync(full, &sout, &serr, &status,
                                                &err), "%s", err->message);
        if (status == 0 || !(strstr(serr, QEMU_CPU_FLAKE) ||
                             strstr(sout, QEMU_CPU_FLAKE))) {
            break;
        }
    }
    fputs(serr, stderr);
    if (out) {
        *out = g_steal_pointer(&sout);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define SEC_OBJ(id, pw) "--object secret,id=" id ",data=" pw

static void qemu_create_luks(const char *file, const char *extra)
{
    g_autofree char *out = NULL;
    int rc = run(&out, "qemu-img create -q -f luks " SEC_OBJ("sec0", "hunter0")
                 " -o key-secret=sec0,iter-time=10%s%s '%s' 1M 2>&1",
                 *extra ? "," : "", extra, file);

    ck_assert_msg(rc == 0, "qemu-img create: %s", out);
}

/* qemu-io on a raw LUKS image; returns its output */
static char *qemu_io_luks(const char *file, const char *pw, const char *cmd)
{
    char *out = NULL;

    run(&out, "qemu-io --object secret,id=s,data=%s --image-opts "
        "driver=luks,key-secret=s,file.filename='%s' -c '%s' 2>&1", pw, file,
        cmd);
    return out;
}

static void qemu_io_ok(const char *file, const char *pw, const char *cmd,
                       const char *expect)
{
    g_autofree char *out = qemu_io_luks(file, pw, cmd);

    ck_assert_msg(strstr(out, expect) && !strstr(out, "failed"),
                  "qemu-io -c '%s': %s", cmd, out);
}

typedef struct FileIO {
    int fd;
} FileIO;

static bool file_read(void *opaque, uint64_t offset, void *buf, size_t len,
                      GError **errp)
{
    FileIO *f = opaque;

    if (pread(f->fd, buf, len, offset) != (ssize_t)len) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "short read");
        return false;
    }
    return true;
}

static bool file_write(void *opaque, uint64_t offset, const void *buf,
                       size_t len, GError **errp)
{
    FileIO *f = opaque;

    if (pwrite(f->fd, buf, len, offset) != (ssize_t)len) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_IO, "short write");
        return false;
    }
    return true;
}

static FileIO file_open(const char *file)
{
    FileIO f = { open(file, O_RDWR | O_CREAT, 0644) };

    ck_assert_int_ge(f.fd, 0);
    return f;
}

static GBytes *pw(const char *s)
{
    return g_bytes_new(s, strlen(s));
}

static BlockCrypto *open_ok(FileIO *f, const char *password)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) secret = pw(password);
    BlockCrypto *c = luks_open(secret, file_read, f, &err);

    ck_assert_msg(c, "luks_open: %s", err ? err->message : "");
    return c;
}

static void open_fails(FileIO *f, const char *password, const char *msg)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) secret = pw(password);

    ck_assert(!luks_open(secret, file_read, f, &err));
    ck_assert_msg(err && strstr(err->message, msg), "got '%s'",
                  err ? err->message : "(no error)");
}

/* Decrypts len bytes of payload at guest offset off and checks that every
 * byte is val */
static void check_payload(BlockCrypto *c, FileIO *f, uint64_t payload,
                          uint64_t off, size_t len, uint8_t val)
{
    g_autofree uint8_t *buf = g_malloc(len);
    g_autoptr(GError) err = NULL;

    ck_assert_int_eq(pread(f->fd, buf, len, payload + off), len);
    ck_assert(block_crypto_decrypt(c, off / 512, buf, len, &err));
    for (size_t i = 0; i < len; i++) {
        ck_assert_msg(buf[i] == val, "byte %zu: 0x%02x, expected 0x%02x",
                      off + i, buf[i], val);
    }
}

static LuksInfo info_of(FileIO *f)
{
    LuksInfo info;
    g_autoptr(GError) err = NULL;

    ck_assert_msg(luks_info(file_read, f, &info, &err), "%s",
                  err ? err->message : "");
    return info;
}

/* qemu-img info --output=json's "format-specific" "data" */
static JsonParser *qemu_info(const char *file, JsonObject **data)
{
    g_autofree char *out = NULL;
    JsonParser *p = json_parser_new();
    JsonObject *root;

    ck_assert_int_eq(run(&out, "qemu-img info --output=json '%s'", file), 0);
    ck_assert_msg(json_parser_load_from_data(p, out, -1, NULL), "%s", out);
    root = json_node_get_object(json_parser_get_root(p));
    *data = json_object_get_object_member(
        json_object_get_object_member(root, "format-specific"), "data");
    ck_assert(*data);
    return p;
}

static void check_same_info(const char *file, const LuksInfo *info)
{
    JsonObject *d;
    g_autoptr(JsonParser) p = qemu_info(file, &d);
    JsonArray *slots = json_object_get_array_member(d, "slots");

    ck_assert_str_eq(json_object_get_string_member(d, "cipher-alg"),
                     info->cipher_alg);
    ck_assert_str_eq(json_object_get_string_member(d, "cipher-mode"),
                     info->cipher_mode);
    ck_assert_str_eq(json_object_get_string_member(d, "ivgen-alg"),
                     info->ivgen_alg);
    ck_assert_str_eq(json_object_get_string_member(d, "hash-alg"),
                     info->hash_alg);
    if (info->ivgen_hash_alg) {
        ck_assert_str_eq(json_object_get_string_member(d, "ivgen-hash-alg"),
                         info->ivgen_hash_alg);
    } else {
        ck_assert(!json_object_has_member(d, "ivgen-hash-alg"));
    }
    ck_assert_str_eq(json_object_get_string_member(d, "uuid"), info->uuid);
    ck_assert_int_eq(json_object_get_int_member(d, "payload-offset"),
                     info->payload_offset);
    ck_assert_int_eq(json_object_get_int_member(d, "master-key-iters"),
                     info->master_key_iters);
    ck_assert_int_eq(json_array_get_length(slots), 8);
    for (int i = 0; i < 8; i++) {
        JsonObject *s = json_array_get_object_element(slots, i);
        const LuksSlotInfo *si = &info->slots[i];
        ck_assert_int_eq(json_object_get_boolean_member(s, "active"),
                         si->active);
        ck_assert_int_eq(json_object_get_int_member(s, "key-offset"),
                         si->key_offset);
        if (si->active) {
            ck_assert_int_eq(json_object_get_int_member(s, "iters"),
                             si->iters);
            ck_assert_int_eq(json_object_get_int_member(s, "stripes"),
                             si->stripes);
        } else {
            ck_assert(!json_object_has_member(s, "iters"));
        }
    }
}

/* "cipher-alg=aes-128,cipher-mode=cbc" as LuksCreateOptions (the strings
 * point into *store) */
static LuksCreateOptions parse_opts(const char *text, char ***store)
{
    LuksCreateOptions o = { .iter_time_ms = 10 };
    char **kv = g_strsplit(text, ",", -1);

    *store = kv;
    for (char **p = kv; *p && **p; p++) {
        char *v = strchr(*p, '=');
        *v++ = '\0';
        if (!strcmp(*p, "cipher-alg")) {
            o.cipher_alg = v;
        } else if (!strcmp(*p, "cipher-mode")) {
            o.cipher_mode = v;
        } else if (!strcmp(*p, "ivgen-alg")) {
            o.ivgen_alg = v;
        } else if (!strcmp(*p, "ivgen-hash-alg")) {
            o.ivgen_hash_alg = v;
        } else if (!strcmp(*p, "hash-alg")) {
            o.hash_alg = v;
        } else {
            ck_abort_msg("unknown option %s", *p);
        }
    }
    return o;
}

/* the cipher set-ups QEMU 7.2 can create (aes-192 in CBC makes it abort:
 * 24 * 4000 bytes of key material are not whole sectors) */
static const char *const luks_variants[] = {
    "",
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1",
    "cipher-alg=aes-256,cipher-mode=ecb",
    "cipher-alg=twofish-128,cipher-mode=xts,hash-alg=sha512",
    "cipher-alg=serpent-256,cipher-mode=cbc,ivgen-alg=essiv",
    "cipher-mode=ctr,ivgen-alg=plain",
    "cipher-alg=cast5-128,cipher-mode=cbc",
    "cipher-alg=aes-192,cipher-mode=xts",
};

/* ---- secrets ---- */

static void secret_is(const char *id, const void *data, size_t len)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GBytes) b = crypto_secret_lookup(id, &err);
    gsize blen;
    const void *bdata;

    ck_assert_msg(b, "%s", err ? err->message : "");
    bdata = g_bytes_get_data(b, &blen);
    ck_assert_uint_eq(blen, len);
    ck_assert(len == 0 || memcmp(bdata, data, len) == 0);
}

static void secret_fails(const char *spec, const char *msg)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(!crypto_secret_add(spec, &err), "%s accepted", spec);
    ck_assert_msg(!strcmp(err->message, msg), "%s: got '%s', want '%s'",
                  spec, err->message, msg);
}

static void secret_ok(const char *spec)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(crypto_secret_add(spec, &err), "%s: %s", spec,
                  err ? err->message : "");
}

START_TEST(secrets_data_base64_file)
{
    g_autofree char *file = path("pw");
    g_autofree char *spec = NULL;
    g_autoptr(GError) err = NULL;

    secret_ok("secret,id=a,data=hunter0");
    secret_is("a", "hunter0", 7);
    secret_ok("secret,id=b,data=aGVsbG8=,format=base64");
    secret_is("b", "hello", 5);
    secret_ok("secret,id=c,data=x,,y,format=raw");
    secret_is("c", "x,y", 3);
    secret_ok("qom-type=secret,id=d,data=1,data=2");
    secret_is("d", "2", 1);
    /* a file's bytes are taken as they are, newline included */
    ck_assert(g_file_set_contents(file, "sec\n", -1, NULL));
    spec = g_strdup_printf("secret,id=e,file=%s", file);
    secret_ok(spec);
    secret_is("e", "sec\n", 4);
    g_free(spec);
    ck_assert(g_file_set_contents(file, "aGk=", -1, NULL));
    spec = g_strdup_printf("secret,id=f,file=%s,format=base64", file);
    secret_ok(spec);
    secret_is("f", "hi", 2);
    secret_ok("secret,id=g,data=");
    secret_is("g", "", 0);
    ck_assert(!crypto_secret_lookup("nope", &err));
    ck_assert_str_eq(err->message, "No secret with id 'nope'");
    crypto_secret_clear();
    g_clear_error(&err);
    ck_assert(!crypto_secret_lookup("a", &err));
}
END_TEST

START_TEST(secrets_errors_are_qemus)
{
    secret_fails("foo,id=x", "Parameter 'qom-type' does not accept value "
                 "'foo'");
    secret_fails("id=x,data=y", "Parameter 'qom-type' is missing");
    secret_fails("secret,data=x", "Parameter 'id' is missing");
    secret_fails("secret,id=1x,data=x",
                 "Parameter 'id' expects an identifier");
    secret_fails("secret,id=s", "Either 'file' or 'data' must be provided");
    secret_fails("secret,id=s,data=x,file=/etc/hostname",
                 "'file' and 'data' are mutually exclusive");
    secret_fails("secret,id=s,data=x,bogus=1",
                 "Parameter 'bogus' is unexpected");
    secret_fails("secret,id=s,data=x,format=hex",
                 "Parameter 'format' does not accept value 'hex'");
    secret_fails("secret,id=s,data=x!,format=base64",
                 "Base64 data contains invalid characters");
    secret_fails("secret,id=s,data=x,loaded=on",
                 "Property 'secret.loaded' is not writable");
    secret_fails("secret,id=s,file=/nonexistent/pw",
                 "Unable to read /nonexistent/pw: Failed to open file "
                 "“/nonexistent/pw”: No such file or directory");
    secret_fails("secret,id=s,data=x,keyid=k", "No secret with id 'k'");
    secret_ok("secret,id=s,data=x");
    secret_fails("secret,id=s,data=y", "attempt to add duplicate property "
                 "'s' to object (type 'container')");
    secret_is("s", "x", 1);
}
END_TEST

/* Encrypted secrets: AES-256-CBC under a 32-byte master secret.  The
 * ciphertexts were made once with `openssl enc -aes-256-cbc` (key bytes
 * 0..31, IV bytes 0xa0..0xaf); the test below has qemu-img accept the
 * same objects. */
#define MASTER "secret,id=m,format=base64," \
               "data=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define IV "iv=oKGio6SlpqeoqaqrrK2urw=="
#define CT_SHORT "J72nCQpnE4fUl6jlhNY4tA=="
#define CT_LONG "H+GYedeWeZwJoGFyEYiwJ00Bz3nvjg+1Q3Li29/OQpf3Dzo96Gs3K00jjPJ5v1M8"

static const struct {
    const char *spec, *msg;
} encrypted_bad[] = {
    { "secret,id=s,keyid=m,data=" CT_SHORT ",format=base64",
      "IV is required to decrypt secret" },
    { "secret,id=s,keyid=m,iv=oKGi,data=" CT_SHORT ",format=base64",
      "IV should be 16 bytes in length not 3" },
    { "secret,id=s,keyid=m," IV ",data=abc",
      "Length 3 must be a multiple of block size 16" },
    { "secret,id=s,keyid=short," IV ",data=" CT_SHORT ",format=base64",
      "Key should be 32 bytes in length" },
    { "secret,id=s,keyid=nope," IV ",data=" CT_SHORT ",format=base64",
      "No secret with id 'nope'" },
    /* the wrong key: the last byte is no valid padding count */
    { "secret,id=s,keyid=other," IV ",data=" CT_LONG ",format=base64",
      NULL },
};

START_TEST(secrets_encrypted_with_keyid)
{
    g_autoptr(GError) err = NULL;

    secret_ok(MASTER);
    secret_ok("secret,id=short,data=0123456789");
    secret_ok("secret,id=other,data=0123456789abcdef0123456789abcdef");
    secret_ok("secret,id=a,keyid=m," IV ",format=base64,data=" CT_SHORT);
    secret_is("a", "astrochicken", 12);
    secret_ok("secret,id=b,keyid=m," IV ",format=base64,data=" CT_LONG);
    secret_is("b", "a-longer-secret-of-more-than-16-bytes", 37);
    for (size_t i = 0; i < G_N_ELEMENTS(encrypted_bad); i++) {
        if (encrypted_bad[i].msg) {
            secret_fails(encrypted_bad[i].spec, encrypted_bad[i].msg);
        } else {
            g_clear_error(&err);
            ck_assert(!crypto_secret_add(encrypted_bad[i].spec, &err));
            ck_assert_msg(g_str_has_prefix(err->message, "Incorrect number "
                                           "of padding bytes ("),
                          "%s", err->message);
        }
    }
    crypto_secret_clear();
}
END_TEST

/* ... and qemu-img takes the same objects, and refuses the same ones
 * with the same words */
START_TEST(secrets_encrypted_match_qemu_img)
{
    g_autofree char *img = path("k.qcow2");

    if (!have_qemu()) {
        return;
    }
    ck_assert_int_eq(run(NULL, "qemu-img create -q -f qcow2 --object '%s' "
                         "--object 'secret,id=a,keyid=m,%s,format=base64,"
                         "data=%s' -o encrypt.format=luks,"
                         "encrypt.key-secret=a,encrypt.iter-time=10 '%s' 1M",
                         MASTER, IV, CT_SHORT, img), 0);
    /* the image opens with the plain password */
    ck_assert_int_eq(run(NULL, "qemu-io --object secret,id=p,"
                         "data=astrochicken --image-opts 'driver=qcow2,"
                         "file.filename=%s,encrypt.key-secret=p' -c 'read 0 "
                         "512'", img), 0);
    for (size_t i = 0; i < G_N_ELEMENTS(encrypted_bad); i++) {
        g_autofree char *out = NULL;
        g_autoptr(GError) err = NULL;

        secret_ok(MASTER);
        secret_ok("secret,id=short,data=0123456789");
        secret_ok("secret,id=other,data=0123456789abcdef0123456789abcdef");
        ck_assert(!crypto_secret_add(encrypted_bad[i].spec, &err));
        crypto_secret_clear();
        ck_assert_int_ne(run(&out, "qemu-img info --object '%s' --object "
                             "secret,id=short,data=0123456789 --object "
                             "secret,id=other,data=0123456789abcdef01234567"
                             "89abcdef --object '%s' '%s' 2>&1", MASTER,
                             encrypted_bad[i].spec, img), 0);
        g_strchomp(out);
        ck_assert_msg(g_str_has_suffix(out, err->message),
                      "%s: qemu-img says '%s', we say '%s'",
                      encrypted_bad[i].spec, out, err->message);
    }
}
END_TEST

/* the QEMU texts above, checked against the installed qemu-img */
START_TEST(secrets_errors_match_qemu_img)
{
    static const char *const specs[] = {
        "foo,id=x", "secret,data=x", "secret,id=s", "secret,id=s,data=x,"
        "bogus=1", "secret,id=s,data=x,format=hex",
        "secret,id=s,data=x!,format=base64",
    };
    g_autofree char *img = path("x.qcow2");

    if (!have_qemu()) {
        return;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(specs); i++) {
        g_autofree char *out = NULL;
        g_autoptr(GError) err = NULL;
        ck_assert(!crypto_secret_add(specs[i], &err));
        ck_assert_int_ne(run(&out, "qemu-img create -q -f qcow2 --object "
                             "'%s' '%s' 1M 2>&1", specs[i], img), 0);
        g_strchomp(out);
        ck_assert_msg(g_str_has_suffix(out, err->message),
                      "%s: qemu-img says '%s', we say '%s'", specs[i], out,
                      err->message);
    }
}
END_TEST

/* ---- the cipher ---- */

START_TEST(cipher_round_trips_and_hot_path)
{
    static const char *const modes[] = {
        "cipher-mode=xts", "cipher-mode=cbc,ivgen-alg=essiv",
        "cipher-mode=ecb", "cipher-mode=ctr,ivgen-alg=plain",
        "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain64",
    };
    g_autofree char *file = path("h.luks");

    for (size_t m = 0; m < G_N_ELEMENTS(modes); m++) {
        g_auto(GStrv) store = NULL;
        LuksCreateOptions o = parse_opts(modes[m], &store);
        g_autoptr(GBytes) secret = pw("k");
        g_autoptr(GError) err = NULL;
        g_autofree uint8_t *plain = g_malloc(65536);
        g_autofree uint8_t *buf = g_malloc(65536);
        FileIO f = file_open(file);
        g_autoptr(BlockCrypto) c = luks_create(&o, secret, file_write, &f,
                                               &err);

        ck_assert_msg(c, "%s: %s", modes[m], err ? err->message : "");
        for (int i = 0; i < 65536; i++) {
            plain[i] = i * 7 + (i >> 9);
        }
        memcpy(buf, plain, 65536);
        ck_assert(block_crypto_encrypt(c, 1000, buf, 65536, &err));
        ck_assert(memcmp(buf, plain, 512));
        /* each sector's IV differs: equal plaintext sectors differ (ECB
         * has no IV) */
        memset(buf, 0, 1024);
        ck_assert(block_crypto_encrypt(c, 7, buf, 1024, &err));
        ck_assert_msg(!memcmp(buf, buf + 512, 512) == !!strstr(modes[m],
                                                              "ecb"),
                      "%s", modes[m]);
        memcpy(buf, plain, 65536);
        ck_assert(block_crypto_encrypt(c, 1000, buf, 65536, &err));
        /* sector n alone encrypts as it does inside a run */
        {
            uint8_t one[512];
            memcpy(one, plain + 512 * 5, 512);
            ck_assert(block_crypto_encrypt(c, 1005, one, 512, &err));
            ck_assert(!memcmp(one, buf + 512 * 5, 512));
        }
        ck_assert(block_crypto_decrypt(c, 1000, buf, 65536, &err));
        ck_assert(!memcmp(buf, plain, 65536));
        /* a wrong sector number does not decrypt */
        ck_assert(block_crypto_encrypt(c, 1000, buf, 512, &err));
        ck_assert(block_crypto_decrypt(c, 1001, buf, 512, &err));
        ck_assert(!memcmp(buf, plain, 512) == !!strstr(modes[m], "ecb"));
        ck_assert(!block_crypto_encrypt(c, 0, buf, 100, &err));
        ck_assert(err);
        close(f.fd);
        unlink(file);
    }
}
END_TEST

START_TEST(header_sizes)
{
    static const struct { const char *opts; uint64_t size; } cases[] = {
        { "", 2068480 },
        { "cipher-alg=aes-128,cipher-mode=cbc", 528384 },
        { "cipher-alg=aes-256,cipher-mode=cbc", 1052672 },
        { "cipher-alg=aes-192,cipher-mode=xts", 1544192 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_auto(GStrv) store = NULL;
        LuksCreateOptions o = parse_opts(cases[i].opts, &store);
        g_autoptr(GError) err = NULL;
        uint64_t size = 0;

        ck_assert(luks_header_size(&o, &size, &err));
        ck_assert_uint_eq(size, cases[i].size);
    }
}
END_TEST

START_TEST(create_option_errors)
{
    static const struct { const char *opts, *msg; } cases[] = {
        { "cipher-alg=foo", "Parameter 'cipher-alg' does not accept value "
          "'foo'" },
        { "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,"
          "ivgen-hash-alg=sha1", "No AES cipher with key size 20 available" },
        { "cipher-mode=gcm", "Parameter 'cipher-mode' does not accept value "
          "'gcm'" },
        { "hash-alg=sha3", "Parameter 'hash-alg' does not accept value "
          "'sha3'" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_auto(GStrv) store = NULL;
        LuksCreateOptions o = parse_opts(cases[i].opts, &store);
        g_autoptr(GError) err = NULL;
        uint64_t size;

        ck_assert(!luks_header_size(&o, &size, &err));
        ck_assert_str_eq(err->message, cases[i].msg);
    }
}
END_TEST

/* ---- LUKS made by QEMU, read here ---- */

START_TEST(qemu_luks_is_read)
{
    const char *variant = luks_variants[_i];
    g_autofree char *file = path("q.luks");
    g_auto(GStrv) store = NULL;
    LuksCreateOptions o = parse_opts(variant, &store);
    g_autoptr(BlockCrypto) c = NULL;
    LuksInfo info;
    uint64_t size = 0;
    FileIO f;

    if (!have_qemu()) {
        return;
    }
    qemu_create_luks(file, variant);
    qemu_io_ok(file, "hunter0", "write -P 0x5a 0 64k", "wrote 65536/65536");
    qemu_io_ok(file, "hunter0", "write -P 0x33 512k 4k", "wrote 4096/4096");
    f = file_open(file);
    info = info_of(&f);
    check_same_info(file, &info);
    ck_assert(luks_header_size(&o, &size, NULL));
    ck_assert_uint_eq(size, info.payload_offset);

    c = open_ok(&f, "hunter0");
    check_payload(c, &f, info.payload_offset, 0, 65536, 0x5a);
    check_payload(c, &f, info.payload_offset, 512 * 1024, 4096, 0x33);
    /* the negative control: an unwritten region (zeros in the file) does
     * not decrypt to the pattern */
    {
        g_autofree uint8_t *buf = g_malloc(4096);
        ck_assert_int_eq(pread(f.fd, buf, 4096,
                               info.payload_offset + 128 * 1024), 4096);
        ck_assert(block_crypto_decrypt(c, 256, buf, 4096, NULL));
        ck_assert(buf[0] != 0x5a || buf[1] != 0x5a || buf[2] != 0x5a);
    }
    open_fails(&f, "hunter1", "Invalid password, cannot unlock any keyslot");
    /* no secret: header checks only */
    ck_assert(!luks_open(NULL, file_read, &f, NULL));
    luks_info_clear(&info);
    close(f.fd);
}
END_TEST

START_TEST(corrupt_headers_are_refused)
{
    g_autofree char *file = path("q.luks");
    g_autoptr(GError) err = NULL;
    LuksInfo info;
    FileIO f;

    if (!have_qemu()) {
        return;
    }
    qemu_create_luks(file, "");
    f = file_open(file);
    ck_assert_int_eq(pwrite(f.fd, "XUKS", 4, 0), 4);
    ck_assert(!luks_info(file_read, &f, &info, &err));
    ck_assert_str_eq(err->message, "Volume is not in LUKS format");
    g_clear_error(&err);
    ck_assert_int_eq(pwrite(f.fd, "LUKS", 4, 0), 4);
    /* slot 3's stripes */
    ck_assert_int_eq(pwrite(f.fd, "\0\0\0\1", 4, 208 + 3 * 48 + 44), 4);
    ck_assert(!luks_open(NULL, file_read, &f, &err));
    ck_assert_str_eq(err->message,
                     "Keyslot 3 is corrupted (stripes 1 != 4000)");
    close(f.fd);
}
END_TEST

/* ---- LUKS made here, read by QEMU ---- */

static uint64_t create_here(const char *file, const char *variant,
                            const char *password, BlockCrypto **cp)
{
    g_auto(GStrv) store = NULL;
    LuksCreateOptions o = parse_opts(variant, &store);
    g_autoptr(GBytes) secret = pw(password);
    g_autoptr(GError) err = NULL;
    FileIO f = file_open(file);
    uint64_t size = 0;
    BlockCrypto *c;

    ck_assert(luks_header_size(&o, &size, &err));
    c = luks_create(&o, secret, file_write, &f, &err);
    ck_assert_msg(c, "%s", err ? err->message : "");
    ck_assert_int_eq(ftruncate(f.fd, size + MIB), 0);
    close(f.fd);
    *cp = c;
    return size;
}

static void write_payload(BlockCrypto *c, const char *file, uint64_t payload,
                          uint64_t off, size_t len, uint8_t val)
{
    g_autofree uint8_t *buf = g_malloc(len);
    FileIO f = file_open(file);

    memset(buf, val, len);
    ck_assert(block_crypto_encrypt(c, off / 512, buf, len, NULL));
    ck_assert_int_eq(pwrite(f.fd, buf, len, payload + off), len);
    close(f.fd);
}

START_TEST(luks_made_here_is_read_by_qemu)
{
    const char *variant = luks_variants[_i];
    g_autofree char *file = path("h.luks");
    g_autoptr(BlockCrypto) c = NULL;
    g_autofree char *out = NULL;
    uint64_t payload;
    LuksInfo info;
    FileIO f;

    if (!have_qemu()) {
        return;
    }
    payload = create_here(file, variant, "hunter0", &c);
    write_payload(c, file, payload, 0, 65536, 0x5a);
    write_payload(c, file, payload, 768 * 1024, 8192, 0x77);
    qemu_io_ok(file, "hunter0", "read -P 0x5a 0 64k", "read 65536/65536");
    qemu_io_ok(file, "hunter0", "read -P 0x77 768k 8k", "read 8192/8192");
    /* the negative control: QEMU does compare */
    out = qemu_io_luks(file, "hunter0", "read -P 0x5b 0 64k");
    ck_assert_msg(strstr(out, "Pattern verification failed"), "%s", out);
    g_free(out);
    out = qemu_io_luks(file, "hunter1", "read 0 512");
    ck_assert_msg(strstr(out, "Invalid password, cannot unlock any keyslot"),
                  "%s", out);
    f = file_open(file);
    info = info_of(&f);
    ck_assert_uint_eq(info.payload_offset, payload);
    ck_assert(info.slots[0].active && !info.slots[1].active);
    ck_assert_uint_ge(info.slots[0].iters, 1000);
    ck_assert_uint_ge(info.master_key_iters, 1000);
    check_same_info(file, &info);
    luks_info_clear(&info);
    close(f.fd);
}
END_TEST

/* ---- amend ---- */

static void amend(const LuksAmendOptions *o, GBytes *unlock, FileIO *f,
                  const char *msg)
{
    g_autoptr(GError) err = NULL;
    bool ok = luks_amend(o, unlock, file_read, file_write, f, &err);

    if (!msg) {
        ck_assert_msg(ok, "%s", err ? err->message : "");
    } else {
        ck_assert_msg(!ok, "amend succeeded, expected '%s'", msg);
        ck_assert_str_eq(err->message, msg);
    }
}

START_TEST(amend_adds_and_erases_keyslots)
{
    g_autofree char *file = path("a.luks");
    g_autoptr(BlockCrypto) c = NULL;
    g_autoptr(BlockCrypto) c2 = NULL;
    g_autoptr(GBytes) s0 = pw("hunter0");
    g_autoptr(GBytes) s1 = pw("hunter1");
    g_autoptr(GBytes) s9 = pw("nomatch");
    LuksAmendOptions add = { .state_active = true, .keyslot = -1,
                             .new_secret = s1, .iter_time_ms = 10 };
    LuksAmendOptions del = { .keyslot = 0 };
    uint64_t payload;
    LuksInfo info;
    FileIO f;

    payload = create_here(file, "", "hunter0", &c);
    write_payload(c, file, payload, 0, 65536, 0x5a);
    f = file_open(file);

    amend(&add, s0, &f, NULL);
    info = info_of(&f);
    ck_assert(info.slots[0].active && info.slots[1].active);
    luks_info_clear(&info);
    c2 = open_ok(&f, "hunter1");
    check_payload(c2, &f, payload, 0, 65536, 0x5a);

    /* QEMU's refusals (iotests 293) */
    add.keyslot = 1;
    amend(&add, s0, &f, "Refusing to overwrite active keyslot 1 - please "
          "erase it first");
    add.keyslot = -1;
    add.old_secret = s0;
    amend(&add, s0, &f, "'old-secret' must not be given when activating "
          "keyslots");
    add.old_secret = NULL;
    add.new_secret = NULL;
    amend(&add, s0, &f, "'new-secret' is required to activate a keyslot");
    add.new_secret = s1;
    add.keyslot = 9;
    amend(&add, s0, &f, "Invalid keyslot 9 specified, must be between 0 "
          "and 7");

    del.keyslot = -1;
    amend(&del, NULL, &f, "To erase keyslot(s), either explicit keyslot "
          "index or the password currently contained in them must be given");
    del.old_secret = s9;
    amend(&del, NULL, &f, "No keyslots match given (old) password for erase "
          "operation");
    del.old_secret = s1;
    del.keyslot = 0;
    amend(&del, NULL, &f, "Given keyslot 0 doesn't contain the given old "
          "password for erase operation");
    del.old_secret = NULL;
    del.keyslot = 0;
    amend(&del, NULL, &f, NULL);
    amend(&del, NULL, &f, "Given keyslot 0 is already erased (inactive) ");
    del.keyslot = 1;
    amend(&del, NULL, &f, "Attempt to erase the only active keyslot 1 which "
          "will erase all the data in the image irreversibly - refusing "
          "operation");
    del.keyslot = -1;
    del.old_secret = s1;
    amend(&del, NULL, &f, "All the active keyslots match the (old) password "
          "that was given and erasing them will erase all the data in the "
          "image irreversibly - refusing operation");

    info = info_of(&f);
    ck_assert(!info.slots[0].active && info.slots[1].active);
    ck_assert_uint_eq(info.slots[0].key_offset, 4096);
    luks_info_clear(&info);
    open_fails(&f, "hunter0", "Invalid password, cannot unlock any keyslot");
    g_clear_pointer(&c2, block_crypto_free);
    c2 = open_ok(&f, "hunter1");
    check_payload(c2, &f, payload, 0, 65536, 0x5a);
    if (have_qemu()) {
        g_autofree char *out = qemu_io_luks(file, "hunter0", "read 0 512");
        ck_assert_msg(strstr(out, "Invalid password"), "%s", out);
        qemu_io_ok(file, "hunter1", "read -P 0x5a 0 64k", "read 65536/65536");
        info = info_of(&f);
        check_same_info(file, &info);
        luks_info_clear(&info);
    }
    close(f.fd);
}
END_TEST

/* a slot QEMU's amend added opens here, and one added here opens there */
START_TEST(amend_interop)
{
    g_autofree char *file = path("a.luks");
    g_autofree char *out = NULL;
    g_autoptr(BlockCrypto) c = NULL;
    g_autoptr(GBytes) s0 = pw("hunter0");
    g_autoptr(GBytes) s2 = pw("hunter2");
    LuksAmendOptions add = { .state_active = true, .keyslot = 5,
                             .new_secret = s2, .iter_time_ms = 10 };
    FileIO f;

    if (!have_qemu()) {
        return;
    }
    qemu_create_luks(file, "");
    qemu_io_ok(file, "hunter0", "write -P 0x5a 0 64k", "wrote 65536/65536");
    ck_assert_msg(run(&out, "qemu-img amend " SEC_OBJ("sec0", "hunter0")
                      " " SEC_OBJ("sec1", "hunter1") " --image-opts "
                      "driver=luks,key-secret=sec0,file.filename='%s' "
                      "-o state=active,new-secret=sec1,iter-time=10 2>&1",
                      file) == 0, "%s", out);
    f = file_open(file);
    c = open_ok(&f, "hunter1");
    check_payload(c, &f, 2068480, 0, 65536, 0x5a);
    amend(&add, s0, &f, NULL);
    qemu_io_ok(file, "hunter2", "read -P 0x5a 0 64k", "read 65536/65536");
    close(f.fd);
}
END_TEST

/* QEMU takes an empty secret as a password */
START_TEST(empty_password_interop)
{
    g_autofree char *file = path("e.luks");
    g_autofree char *mine = path("m.luks");
    g_autofree char *out = NULL;
    g_autoptr(BlockCrypto) c = NULL;
    g_autoptr(BlockCrypto) c2 = NULL;
    uint64_t payload;
    FileIO f;

    if (!have_qemu()) {
        return;
    }
    ck_assert_msg(run(&out, "qemu-img create -q -f luks --object secret,"
                      "id=s,data= -o key-secret=s,iter-time=10 '%s' 1M 2>&1",
                      file) == 0, "%s", out);
    qemu_io_ok(file, "", "write -P 0x5a 0 4k", "wrote 4096/4096");
    f = file_open(file);
    c = open_ok(&f, "");
    check_payload(c, &f, 2068480, 0, 4096, 0x5a);
    open_fails(&f, "x", "Invalid password, cannot unlock any keyslot");
    close(f.fd);

    payload = create_here(mine, "", "", &c2);
    write_payload(c2, mine, payload, 0, 4096, 0x42);
    qemu_io_ok(mine, "", "read -P 0x42 0 4k", "read 4096/4096");
}
END_TEST

/* ---- qcow2's legacy AES ---- */

/* The host offset of guest cluster `index` of a qcow2 image (64 KiB
 * clusters, one L2 table suffices for these small images) */
static uint64_t qcow2_host_offset(int fd, uint64_t guest)
{
    uint8_t hdr[48];
    uint64_t l1_off, l1, l2e, mask = 0x00fffffffffffe00ULL;
    uint64_t cluster;
    int bits;

    ck_assert_int_eq(pread(fd, hdr, sizeof(hdr), 0), sizeof(hdr));
    bits = hdr[23];
    cluster = guest >> bits;
    ck_assert_uint_lt(cluster, 1u << (bits - 3));
    memcpy(&l1_off, hdr + 40, 8);
    ck_assert_int_eq(pread(fd, &l1, 8, GUINT64_FROM_BE(l1_off)), 8);
    l1 = GUINT64_FROM_BE(l1) & mask;
    ck_assert_uint_ne(l1, 0);
    ck_assert_int_eq(pread(fd, &l2e, 8, l1 + cluster * 8), 8);
    l2e = GUINT64_FROM_BE(l2e) & mask;
    ck_assert_uint_ne(l2e, 0);
    return l2e + (guest & ((1u << bits) - 1));
}

START_TEST(legacy_aes_reads_qemus_data)
{
    g_autofree char *file = path("aes.qcow2");
    g_autofree char *out = NULL;
    g_autoptr(GBytes) secret = pw("hunter0");
    g_autoptr(GBytes) wrong = pw("hunter1");
    g_autoptr(BlockCrypto) c = NULL;
    g_autoptr(BlockCrypto) bad = NULL;
    g_autofree uint8_t *buf = g_malloc(65536);
    uint64_t host;
    int fd;

    if (!have_qemu()) {
        return;
    }
    ck_assert_msg(run(&out, "qemu-img create -q -f qcow2 "
                      SEC_OBJ("sec0", "hunter0") " -o encrypt.format=aes,"
                      "encrypt.key-secret=sec0 '%s' 1M 2>&1", file) == 0,
                  "%s", out);
    g_free(out);
    ck_assert_msg(run(&out, "qemu-io " SEC_OBJ("sec0", "hunter0")
                      " --image-opts driver=qcow2,encrypt.key-secret=sec0,"
                      "file.filename='%s' -c 'write -P 0x5a 64k 64k' "
                      "-c 'write -P 0x66 200k 1k' 2>&1", file) == 0,
                  "%s", out);
    fd = open(file, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    c = block_crypto_qcow_aes_new(secret, NULL);
    bad = block_crypto_qcow_aes_new(wrong, NULL);
    ck_assert(c && bad);

    host = qcow2_host_offset(fd, 65536);
    ck_assert_int_eq(pread(fd, buf, 65536, host), 65536);
    ck_assert(block_crypto_decrypt(bad, 128, buf, 512, NULL));
    ck_assert(buf[0] != 0x5a || buf[1] != 0x5a);
    ck_assert_int_eq(pread(fd, buf, 65536, host), 65536);
    ck_assert(block_crypto_decrypt(c, 65536 / 512, buf, 65536, NULL));
    for (int i = 0; i < 65536; i++) {
        ck_assert_msg(buf[i] == 0x5a, "byte %d is 0x%02x", i, buf[i]);
    }
    host = qcow2_host_offset(fd, 200 * 1024);
    ck_assert_int_eq(pread(fd, buf, 1024, host), 1024);
    ck_assert(block_crypto_decrypt(c, 200 * 2, buf, 1024, NULL));
    for (int i = 0; i < 1024; i++) {
        ck_assert_int_eq(buf[i], 0x66);
    }
    close(fd);

    /* the other way: data encrypted here is what QEMU reads */
    fd = open(file, O_RDWR);
    ck_assert_int_ge(fd, 0);
    host = qcow2_host_offset(fd, 65536 + 4096);
    memset(buf, 0x3c, 8192);
    ck_assert(block_crypto_encrypt(c, (65536 + 4096) / 512, buf, 8192, NULL));
    ck_assert_int_eq(pwrite(fd, buf, 8192, host), 8192);
    close(fd);
    g_free(out);
    run(&out, "qemu-io " SEC_OBJ("sec0", "hunter0") " --image-opts "
        "driver=qcow2,encrypt.key-secret=sec0,file.filename='%s' "
        "-c 'read -P 0x5a 64k 4k' -c 'read -P 0x3c 68k 8k' "
        "-c 'read -P 0x5a 76k 52k' 2>&1", file);
    ck_assert_msg(strstr(out, "read 53248/53248") &&
                  !strstr(out, "failed"), "%s", out);
}
END_TEST

static Suite *crypto_suite(void)
{
    Suite *s = suite_create("crypto");
    TCase *tc = tcase_create("core");
    int n = G_N_ELEMENTS(luks_variants);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, secrets_data_base64_file);
    tcase_add_test(tc, secrets_errors_are_qemus);
    tcase_add_test(tc, secrets_errors_match_qemu_img);
    tcase_add_test(tc, secrets_encrypted_with_keyid);
    tcase_add_test(tc, secrets_encrypted_match_qemu_img);
    tcase_add_test(tc, cipher_round_trips_and_hot_path);
    tcase_add_test(tc, header_sizes);
    tcase_add_test(tc, create_option_errors);
    tcase_add_loop_test(tc, qemu_luks_is_read, 0, n);
    tcase_add_test(tc, corrupt_headers_are_refused);
    tcase_add_loop_test(tc, luks_made_here_is_read_by_qemu, 0, n);
    tcase_add_test(tc, amend_adds_and_erases_keyslots);
    tcase_add_test(tc, amend_interop);
    tcase_add_test(tc, empty_password_interop);
    tcase_add_test(tc, legacy_aes_reads_qemus_data);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(crypto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
