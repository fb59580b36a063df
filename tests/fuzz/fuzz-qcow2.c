/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 fuzz target: LLVMFuzzerTestOneInput() turns one byte buffer
 * into an image file plus an operation script, opens the image with the
 * qcow2 driver through the block API and runs the script (reads, writes,
 * zero writes, discards, check, repair of a copy, snapshot list / create /
 * delete / apply, reopen, resize), then closes everything.
 *
 * Input layout (see README.md):
 *   [image section][script][script length: 1 byte]
 * The image section is either a raw image (it starts with the qcow2 magic
 * "QFI\xfb") or a list of sparse extents {u32le offset, u16le length,
 * bytes} written into a zero file, so that images with 64 KiB clusters
 * stay a few hundred bytes long in the corpus.
 *
 * Host files: the image is opened with driver=qcow2 (no probing) and
 * BDRV_O_NO_BACKING, so a backing file name in the header is recorded but
 * never opened; the only files touched are the two under this process's
 * private temp directory.
 *
 * Oracles (each aborts, so libFuzzer/AFL++ record the input):
 *  - sanitizers (ASan, UBSan, LeakSanitizer) in the fuzz and check builds;
 *  - "metadata": when the image checked free of corruption before the
 *    script, it must open and check free of corruption afterwards (a write
 *    that lands on metadata, or an allocation that hands out a metadata
 *    cluster, shows up here);
 *  - "data": on such an image, every byte read back equals the last byte
 *    successfully written there (shadow of the first SHADOW_SIZE bytes);
 *  - "repair": after `check -r all` on a copy, a second check finds no
 *    corruption.
 * STRATA_FUZZ_ORACLES=metadata,data,repair (default: all) chooses them;
 * STRATA_FUZZ_VERBOSE=1 sends the library's log and a trace of the ops
 * to stderr; STRATA_FUZZ_EXTRACT=FILE writes the decoded image there and
 * runs nothing (for triage with qemu-img); STRATA_FUZZ_SKIP=op,... skips
 * those operations (names as in op_names[]).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "block/block.h"
#include "block/log.h"
#include "block/snapshot.h"
#include "fuzz-qcow2.h"

#define MAX_FILE_SIZE   (4 << 20)   /* sparse extents land below this */
#define MAX_IO          (128 << 10)
#define SHADOW_SIZE     (1 << 20)
#define MAX_OPS         64

enum {
    ORACLE_METADATA = 1,
    ORACLE_DATA = 2,
    ORACLE_REPAIR = 4,
};

typedef struct {
    const uint8_t *p;
    size_t len;
} Script;

typedef struct {
    BlockDriverState *bs;
    int64_t vsize;
    bool oracle_data;         /* the image checked clean before the script */
} Run;

static char *fuzz_dir;
static char *img_path;
static char *copy_path;
static int oracles = ORACLE_METADATA | ORACLE_DATA | ORACLE_REPAIR;
static uint8_t *io_buf;
static uint8_t *shadow;
static uint8_t *known;
static int64_t known_end;       /* known[] is all zero from here on */
static bool trace;
static const char *extract_path;
static unsigned disabled_ops;   /* bit per entry of ops[] */

/* ---- process set-up: a private temp dir, reused by every input ---- */

static void parse_disabled_ops(void);

static void remove_fuzz_dir(void)
{
    if (fuzz_dir) {
        g_unlink(img_path);
        g_unlink(copy_path);
        g_rmdir(fuzz_dir);
    }
}

/* A crashed process (abort, sanitizer report) leaves its dir behind;
 * remove those of processes that no longer exist. */
static void sweep_stale_dirs(const char *base)
{
    DIR *d = opendir(base);
    struct dirent *e;

    if (!d) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        long pid;
        char *end;
        if (strncmp(e->d_name, "strata-fuzz-", 12) != 0) {
            continue;
        }
        pid = strtol(e->d_name + 12, &end, 10);
        if (*end == '\0' && pid > 0 && kill(pid, 0) < 0 && errno == ESRCH) {
            g_autofree char *dir = g_build_filename(base, e->d_name, NULL);
            g_autofree char *a = g_build_filename(dir, "img.qcow2", NULL);
            g_autofree char *b = g_build_filename(dir, "copy.qcow2", NULL);
            g_unlink(a);
            g_unlink(b);
            g_rmdir(dir);
        }
    }
    closedir(d);
}

static void parse_oracles(void)
{
    const char *env = getenv("STRATA_FUZZ_ORACLES");
    g_auto(GStrv) words = NULL;

    if (!env) {
        return;
    }
    oracles = 0;
    words = g_strsplit(env, ",", -1);
    for (int i = 0; words[i]; i++) {
        if (!strcmp(words[i], "metadata")) {
            oracles |= ORACLE_METADATA;
        } else if (!strcmp(words[i], "data")) {
            oracles |= ORACLE_DATA;
        } else if (!strcmp(words[i], "repair")) {
            oracles |= ORACLE_REPAIR;
        } else if (*words[i] && strcmp(words[i], "none") != 0) {
            fprintf(stderr, "fuzz: unknown oracle '%s'\n", words[i]);
            exit(2);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* tmpfs when there is one: the image never touches a disk */
    const char *base = getenv("STRATA_FUZZ_TMPDIR");
    if (!base) {
        base = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm"
                                                     : g_get_tmp_dir();
    }
    g_autofree char *name = g_strdup_printf("strata-fuzz-%d", (int)getpid());

    sweep_stale_dirs(base);
    fuzz_dir = g_build_filename(base, name, NULL);
    if (g_mkdir(fuzz_dir, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", fuzz_dir,
                g_strerror(errno));
        exit(2);
    }
    img_path = g_build_filename(fuzz_dir, "img.qcow2", NULL);
    copy_path = g_build_filename(fuzz_dir, "copy.qcow2", NULL);
    atexit(remove_fuzz_dir);
    parse_oracles();
    if (getenv("STRATA_FUZZ_VERBOSE")) {
        strata_log_set_sink(strata_log_to_stderr, NULL);
        trace = true;
    }
    extract_path = getenv("STRATA_FUZZ_EXTRACT");
    parse_disabled_ops();
    /* allocated once: per-input buffers would only churn the allocator */
    io_buf = g_malloc(MAX_IO);
    shadow = g_malloc(SHADOW_SIZE);
    known = g_malloc0(SHADOW_SIZE);
    return 0;
}

G_GNUC_NORETURN G_GNUC_PRINTF(2, 3)
static void oracle_fail(const char *oracle, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "==strata-fuzz== ORACLE %s: ", oracle);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

/* ---- input decoding ---- */

static uint8_t get8(Script *s)
{
    uint8_t v = 0;

    if (s->len) {
        v = *s->p++;
        s->len--;
    }
    return v;
}

static uint16_t get16(Script *s)
{
    uint16_t lo = get8(s);

    return lo | (uint16_t)get8(s) << 8;
}

static bool write_all(int fd, const uint8_t *p, size_t len, off_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= n;
        off += n;
    }
    return true;
}

static bool write_image(const uint8_t *p, size_t len)
{
    int fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = true;

    if (fd < 0) {
        return false;
    }
    if (len >= 4 && memcmp(p, "QFI\xfb", 4) == 0) {
        ok = write_all(fd, p, len, 0);
    } else {
        while (ok && len >= 6) {
            uint32_t off = (p[0] | p[1] << 8 | p[2] << 16 |
                            (uint32_t)p[3] << 24) % MAX_FILE_SIZE;
            size_t n = MIN((size_t)(p[4] | p[5] << 8), len - 6);
            p += 6;
            len -= 6;
            if (n == 0) {
                /* an empty extent only sets the file size */
                struct stat st;
                ok = fstat(fd, &st) == 0 &&
                     (st.st_size >= off || ftruncate(fd, off) == 0);
                continue;
            }
            ok = write_all(fd, p, MIN(n, MAX_FILE_SIZE - off), off);
            p += n;
            len -= n;
        }
    }
    close(fd);
    return ok;
}

/* A guest write through a corrupt L2 entry may have grown the image to
 * petabytes (sparse); such a file is not copied. */
#define MAX_COPY_SIZE (64 << 20)

/* No g_file_set_contents(): its fsync and rename cost more than the
 * check that follows. */
static bool copy_file(const char *from, const char *to)
{
    g_autofree uint8_t *data = NULL;
    struct stat st;
    int in, out;
    bool ok;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return false;
    }
    if (fstat(in, &st) < 0 || st.st_size > MAX_COPY_SIZE) {
        close(in);
        return false;
    }
    data = g_malloc(st.st_size + 1);
    ok = pread(in, data, st.st_size, 0) == st.st_size;
    close(in);
    out = open(to, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (!ok || out < 0) {
        if (out >= 0) {
            close(out);
        }
        return false;
    }
    ok = write_all(out, data, st.st_size, 0);
    close(out);
    return ok;
}

/* ---- opening and checking ---- */

static BlockDriverState *open_image(const char *path, int flags)
{
    BlockOpts *o = bdrv_opts_new();
    g_autoptr(GError) err = NULL;

    /* driver given: no probing; NO_BACKING: the header's backing file
     * name (a host path chosen by the input) is never opened */
    bdrv_opts_set(o, "driver", "qcow2");
    return bdrv_open(path, o, flags | BDRV_O_NO_BACKING, &err);
}

/* Runs check on path; returns false if it could not open or run. */
static bool check_file(const char *path, BdrvCheckMode fix,
                       BdrvCheckResult *res)
{
    int flags = BDRV_O_CHECK | (fix ? BDRV_O_RDWR : 0);
    g_autoptr(BlockDriverState) bs = open_image(path, flags);

    memset(res, 0, sizeof(*res));
    return bs && bdrv_check(bs, res, fix) == 0;
}

static bool check_clean(const char *path)
{
    BdrvCheckResult res;

    return check_file(path, BDRV_FIX_NONE, &res) && res.corruptions == 0 &&
           res.check_errors == 0;
}

static void run_open(Run *r)
{
    r->bs = open_image(img_path, BDRV_O_RDWR);
    if (!r->bs) {
        r->bs = open_image(img_path, 0);
    }
    r->vsize = r->bs ? MAX(bdrv_getlength(r->bs), 0) : 0;
}

static void run_close(Run *r)
{
    g_clear_pointer(&r->bs, bdrv_unref);
}

/* ---- the shadow of guest data for the data oracle ---- */

/* Clearing only what was used: a 1 MiB memset per input was the largest
 * single cost of an execution. */
static void shadow_reset(void)
{
    memset(known, 0, known_end);
    known_end = 0;
}

static void shadow_forget(int64_t off, int64_t len)
{
    if (off < SHADOW_SIZE) {
        memset(known + off, 0, MIN(len, SHADOW_SIZE - off));
    }
}

static void shadow_store(int64_t off, int64_t len, const uint8_t *buf)
{
    if (off < SHADOW_SIZE) {
        int64_t n = MIN(len, SHADOW_SIZE - off);
        memcpy(shadow + off, buf, n);
        memset(known + off, 1, n);
        known_end = MAX(known_end, off + n);
    }
}

static void shadow_verify(int64_t off, int64_t len, const uint8_t *buf)
{
    for (int64_t i = 0; off + i < SHADOW_SIZE && i < len; i++) {
        if (known[off + i] && shadow[off + i] != buf[i]) {
            oracle_fail("data", "byte at guest offset %" G_GINT64_FORMAT
                        " reads %#x, last written %#x", off + i, buf[i],
                        shadow[off + i]);
        }
    }
}

/* ---- the operations ---- */

/* An offset and length inside the image, mostly; sometimes unaligned,
 * sometimes running past the end (the API must refuse that). */
static void pick_range(Script *s, const Run *r, int64_t *off, int64_t *len)
{
    uint16_t a = get16(s);
    uint8_t b = get8(s);
    uint16_t l = get16(s);
    int64_t o = (int64_t)a * 512 + (b & 0x80 ? (b & 0x7f) * 7 : 0);

    if (r->vsize > 0) {
        o %= r->vsize;
    }
    *off = a == 0xffff ? r->vsize : o;
    *len = b == 0xff ? MAX_IO : MIN((int64_t)l * 2 + 1, (int64_t)MAX_IO);
    if (b != 0xff && *off + *len > r->vsize) {
        *len = MAX(r->vsize - *off, 0);
    }
}

static void op_read(Script *s, Run *r)
{
    int64_t off, len;

    pick_range(s, r, &off, &len);
    if (bdrv_pread(r->bs, off, len, io_buf) == 0 && r->oracle_data) {
        shadow_verify(off, len, io_buf);
    }
}

static void op_write(Script *s, Run *r)
{
    int64_t off, len;
    uint8_t pat = get8(s);

    pick_range(s, r, &off, &len);
    for (int64_t i = 0; i < len; i++) {
        io_buf[i] = pat + (uint8_t)(i / 512);
    }
    if (bdrv_pwrite(r->bs, off, len, io_buf) == 0) {
        shadow_store(off, len, io_buf);
    } else {
        shadow_forget(off, len);
    }
}

static void op_zero(Script *s, Run *r)
{
    int64_t off, len;
    int flags = get8(s) & 1 ? BDRV_REQ_MAY_UNMAP : 0;

    pick_range(s, r, &off, &len);
    if (bdrv_pwrite_zeroes(r->bs, off, len, flags) == 0) {
        memset(io_buf, 0, MIN(len, MAX_IO));
        shadow_store(off, MIN(len, MAX_IO), io_buf);
    } else {
        shadow_forget(off, len);
    }
}

static void op_discard(Script *s, Run *r)
{
    int64_t off, len;

    pick_range(s, r, &off, &len);
    bdrv_pdiscard(r->bs, off, len);
    /* discarded data reads back as anything (zeroes or the backing) */
    shadow_forget(off, len);
}

static void op_block_status(Script *s, Run *r)
{
    int64_t off, len, pnum = 0, map = 0;
    BlockDriverState *file = NULL;

    pick_range(s, r, &off, &len);
    if (len > 0) {
        bdrv_block_status(r->bs, off, len, &pnum, &map, &file);
    }
}

/* check without repair: what qemu-img check does, on a fresh open */
static void op_check(Script *s, Run *r)
{
    BdrvCheckResult res;

    bdrv_flush(r->bs);
    run_close(r);
    check_file(img_path, BDRV_FIX_NONE, &res);
    run_open(r);
}

/* check -r all on a copy, then check the copy again */
static void op_repair_copy(Script *s, Run *r)
{
    BdrvCheckResult res, after;

    bdrv_flush(r->bs);
    if (!copy_file(img_path, copy_path)) {
        return;
    }
    if (check_file(copy_path, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS, &res) &&
        (oracles & ORACLE_REPAIR) &&
        res.corruptions == 0 && res.check_errors == 0 &&
        check_file(copy_path, BDRV_FIX_NONE, &after) &&
        after.corruptions != 0) {
        oracle_fail("repair", "check -r all reported no remaining "
                    "corruption, a second check finds %d", after.corruptions);
    }
}

static void snap_name(Script *s, char *buf, size_t size)
{
    snprintf(buf, size, "s%d", get8(s) % 8);
}

static void op_snap_list(Script *s, Run *r)
{
    BdrvSnapshotInfo *list = NULL;
    int n = bdrv_snapshot_list(r->bs, &list, NULL);

    /* an empty list is allocated too */
    bdrv_snapshot_list_free(list, MAX(n, 0));
}

static void op_snap_create(Script *s, Run *r)
{
    char name[16];
    BdrvSnapshotInfo tmpl = { 0 };

    snap_name(s, name, sizeof(name));
    tmpl.name = name;
    tmpl.date_sec = 1;          /* not "now": runs must be reproducible */
    tmpl.icount = BDRV_SNAPSHOT_NO_ICOUNT;
    bdrv_snapshot_create(r->bs, &tmpl, get8(s) & 1 ?
                         BDRV_SNAPSHOT_ALLOW_DUPLICATE : 0, NULL, NULL);
}

static void op_snap_delete(Script *s, Run *r)
{
    uint8_t sel = get8(s);
    char key[16];

    if (sel & 0x80) {
        snprintf(key, sizeof(key), "%d", sel & 0xf);
        bdrv_snapshot_delete(r->bs, key, NULL, NULL, NULL);
    } else {
        snprintf(key, sizeof(key), "s%d", sel % 8);
        bdrv_snapshot_delete(r->bs, NULL, key, NULL, NULL);
    }
}

static void op_snap_goto(Script *s, Run *r)
{
    uint8_t sel = get8(s);
    char key[16];

    snprintf(key, sizeof(key), sel & 0x80 ? "%d" : "s%d",
             sel & 0x80 ? sel & 0xf : sel % 8);
    if (bdrv_snapshot_goto(r->bs, key, NULL) == 0) {
        shadow_reset();
        r->vsize = MAX(bdrv_getlength(r->bs), 0);
    }
}

static void op_reopen(Script *s, Run *r)
{
    run_close(r);
    run_open(r);
}

static void op_flush(Script *s, Run *r)
{
    bdrv_flush(r->bs);
}

static void op_truncate(Script *s, Run *r)
{
    int64_t grow = (int64_t)get16(s) * 512;

    if (bdrv_truncate(r->bs, r->vsize + grow, NULL) == 0) {
        r->vsize = MAX(bdrv_getlength(r->bs), 0);
    }
}

/* Read-only temporary load of a snapshot (qemu-img convert -l) on a
 * read-only open, a few reads of it, then back to the active image. */
static void op_snap_load_tmp(Script *s, Run *r)
{
    char name[16];
    int nreads = get8(s) % 4;

    snap_name(s, name, sizeof(name));
    run_close(r);
    r->bs = open_image(img_path, 0);
    if (r->bs && bdrv_snapshot_load_tmp_by_id_or_name(r->bs, name,
                                                      NULL) == 0) {
        int64_t vsize = r->vsize;
        r->vsize = MAX(bdrv_getlength(r->bs), 0);
        for (int i = 0; i < nreads; i++) {
            int64_t off, len;
            pick_range(s, r, &off, &len);
            /* the snapshot's content: not in the shadow */
            bdrv_pread(r->bs, off, len, io_buf);
        }
        r->vsize = vsize;
    }
    run_close(r);
    run_open(r);
}

/* Read-only and back, as a block job's target or a snapshot's base is. */
static void op_reopen_ro_rw(Script *s, Run *r)
{
    int64_t off, len;

    if (bdrv_is_read_only(r->bs) ||
        !bdrv_reopen_set_read_only(r->bs, true, NULL)) {
        return;
    }
    pick_range(s, r, &off, &len);
    if (bdrv_pread(r->bs, off, len, io_buf) == 0 && r->oracle_data) {
        shadow_verify(off, len, io_buf);
    }
    bdrv_reopen_set_read_only(r->bs, false, NULL);
}

/* What `info` and `map` ask. */
static void op_info(Script *s, Run *r)
{
    BlockDriverInfo bdi;
    BlockSpecificInfo si;
    BdrvSnapshotInfo sn = { 0 };
    char name[16];

    bdrv_get_info(r->bs, &bdi);
    bdrv_get_specific_info(r->bs, &si);
    bdrv_get_allocated_file_size(r->bs);
    snap_name(s, name, sizeof(name));
    if (bdrv_snapshot_find(r->bs, name, &sn, NULL)) {
        bdrv_snapshot_info_clear(&sn);
    }
}

static void op_block_status_above(Script *s, Run *r)
{
    int64_t off, len, pnum = 0, map = 0;
    BlockDriverState *file = NULL;
    int depth = 0;

    pick_range(s, r, &off, &len);
    if (len > 0) {
        bdrv_block_status_above(r->bs, off, len, &pnum, &map, &file, &depth);
    }
}

typedef void OpFunc(Script *s, Run *r);

static OpFunc *const ops[] = {
    op_read, op_write, op_read, op_write, op_zero, op_discard,
    op_block_status, op_flush, op_check, op_repair_copy, op_snap_list,
    op_snap_create, op_snap_delete, op_snap_goto, op_reopen, op_truncate,
    /* appended: scripts using opcodes 0..15 keep their meaning */
    op_snap_load_tmp, op_reopen_ro_rw, op_info, op_block_status_above,
};
static const char *const op_names[] = {
    "read", "write", "read", "write", "zero", "discard",
    "block_status", "flush", "check", "repair_copy", "snap_list",
    "snap_create", "snap_delete", "snap_goto", "reopen", "truncate",
    "snap_load_tmp", "reopen_ro_rw", "info", "block_status_above",
};
G_STATIC_ASSERT(G_N_ELEMENTS(ops) == G_N_ELEMENTS(op_names));

/* STRATA_FUZZ_SKIP=op,op...: keeps a run from spending its time on a
 * known defect (e.g. a repair that hangs) while looking for others. */
static void parse_disabled_ops(void)
{
    const char *env = getenv("STRATA_FUZZ_SKIP");
    g_auto(GStrv) words = env ? g_strsplit(env, ",", -1) : NULL;

    for (int i = 0; words && words[i]; i++) {
        bool found = false;
        for (unsigned op = 0; op < G_N_ELEMENTS(op_names); op++) {
            if (!strcmp(words[i], op_names[op])) {
                disabled_ops |= 1u << op;
                found = true;
            }
        }
        if (!found && *words[i]) {
            fprintf(stderr, "fuzz: unknown op '%s'\n", words[i]);
            exit(2);
        }
    }
}

/* ---- one input ---- */

static void run_script(Script *s, Run *r)
{
    for (int n = 0; n < MAX_OPS && s->len && r->bs; n++) {
        unsigned op = get8(s) % G_N_ELEMENTS(ops);
        if (disabled_ops & (1u << op)) {
            continue;
        }
        if (trace) {
            fprintf(stderr, "fuzz: op %d: %s\n", n, op_names[op]);
        }
        ops[op](s, r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Run r = { 0 };
    Script s;
    size_t slen;
    bool clean_before;

    if (!fuzz_dir) {
        LLVMFuzzerInitialize(NULL, NULL);
    }
    if (size < 1) {
        return 0;
    }
    slen = MIN((size_t)data[size - 1], size - 1);
    s.p = data + size - 1 - slen;
    s.len = slen;
    if (!write_image(data, size - 1 - slen)) {
        return 0;
    }
    if (extract_path) {
        /* triage: keep the decoded image (e.g. for qemu-img check) */
        if (!copy_file(img_path, extract_path)) {
            fprintf(stderr, "fuzz: cannot write %s\n", extract_path);
        }
        return 0;
    }

    clean_before = check_clean(img_path);
    shadow_reset();
    run_open(&r);
    r.oracle_data = clean_before && (oracles & ORACLE_DATA);
    if (trace) {
        fprintf(stderr, "fuzz: image %zu bytes, script %zu bytes, checks %s, "
                "opens %s\n", size - 1 - slen, slen,
                clean_before ? "clean" : "unclean or not at all",
                !r.bs ? "not at all" : bdrv_is_read_only(r.bs) ? "read-only"
                                                               : "read-write");
    }
    run_script(&s, &r);
    run_close(&r);

    if (clean_before && (oracles & ORACLE_METADATA)) {
        BdrvCheckResult res;
        if (!check_file(img_path, BDRV_FIX_NONE, &res)) {
            oracle_fail("metadata", "the image checked clean before the "
                        "script and cannot be opened or checked after it");
        }
        if (res.corruptions || res.check_errors) {
            oracle_fail("metadata", "the image checked clean before the "
                        "script; after it check finds %d corruptions, %d "
                        "check errors", res.corruptions, res.check_errors);
        }
    }
    return 0;
}
