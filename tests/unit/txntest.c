/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the transaction tests share; see txntest.h.
 */
#include <dirent.h>

#include "txntest.h"

/* ---- devices ---- */

static void write_pattern(BlockDriverState *bs, GRand *r)
{
    fill_random(bs, r, 6);
}

static void take_snapshot(BlockDriverState *bs, const char *name)
{
    BdrvSnapshotInfo tmpl = { .name = (char *)name };
    GError *err = NULL;

    ck_assert_msg(bdrv_snapshot_create(bs, &tmpl, 0, NULL, &err) == 0,
                  "%s", err ? err->message : "");
}

TxnDevs *txn_devs_new(const char *tag, int n, unsigned seed)
{
    TxnDevs *d = g_new0(TxnDevs, 1);
    GRand *r = g_rand_new_with_seed(seed);

    d->n = n;
    d->dir = tmp_path(tag);
    ck_assert_int_eq(g_mkdir_with_parents(d->dir, 0700), 0);
    d->base = g_new0(char *, n + 1);
    d->blk = g_new0(BlockBackend *, n);
    for (int i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("d%d.qcow2", i);
        BlockDriverState *bs;

        d->base[i] = g_build_filename(d->dir, name, NULL);
        create_img(d->base[i], TXN_IMG_SIZE, NULL, NULL);
        bs = open_img(d->base[i], BDRV_O_RDWR);
        write_pattern(bs, r);
        take_snapshot(bs, "old1");
        write_pattern(bs, r);
        take_snapshot(bs, "old2");
        write_pattern(bs, r);
        bdrv_unref(bs);
    }
    g_rand_free(r);
    return d;
}

void txn_devs_open(TxnDevs *d, char **tops)
{
    for (int i = 0; i < d->n; i++) {
        g_autofree char *name = g_strdup_printf("d%d", i);
        const char *path = tops && tops[i] ? tops[i] : d->base[i];
        BlockDriverState *bs = open_img(path, BDRV_O_RDWR);
        GError *err = NULL;

        d->blk[i] = blk_new(name, bs);
        bdrv_unref(bs);
        ck_assert_msg(blockdev_add_device(d->blk[i], &err), "%s",
                      err ? err->message : "");
    }
}

void txn_devs_close(TxnDevs *d)
{
    blockdev_remove_all_devices();
    for (int i = 0; i < d->n; i++) {
        g_clear_pointer(&d->blk[i], blk_unref);
    }
}

void txn_devs_free(TxnDevs *d)
{
    txn_devs_close(d);
    g_strfreev(d->base);
    g_free(d->blk);
    g_free(d->dir);
    g_free(d);
}

/* ---- pictures ---- */

char *txn_snapshot_names(BlockDriverState *bs)
{
    BdrvSnapshotInfo *l = NULL;
    GString *s = g_string_new(NULL);
    int n = bdrv_snapshot_list(bs, &l, NULL);

    for (int i = 0; i < n; i++) {
        g_string_append_printf(s, "%s%s", i ? "," : "", l[i].name);
    }
    bdrv_snapshot_list_free(l, MAX(n, 0));
    return g_string_free(s, FALSE);
}

static char *snapshot_ids(BlockDriverState *bs)
{
    BdrvSnapshotInfo *l = NULL;
    GString *s = g_string_new(NULL);
    int n = bdrv_snapshot_list(bs, &l, NULL);

    for (int i = 0; i < n; i++) {
        g_string_append_printf(s, "%s%s:%s@%u", i ? "," : "", l[i].id_str,
                               l[i].name, l[i].date_sec);
    }
    bdrv_snapshot_list_free(l, MAX(n, 0));
    return g_string_free(s, FALSE);
}

static char *device_picture(BlockBackend *blk)
{
    GString *s = g_string_new(NULL);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *buf = blk_read_all(blk, len);
    g_autofree char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA1, buf,
                                                       len);

    for (BlockDriverState *p = blk_bs(blk); p; p = bdrv_get_backing(p)) {
        g_autofree char *base = g_path_get_basename(bdrv_get_filename(p));
        g_autofree char *ids = snapshot_ids(p);
        g_string_append_printf(s, "%s%s%s[%s]", p == blk_bs(blk) ? "" : " <- ",
                               base, bdrv_is_read_only(p) ? "(ro)" : "",
                               ids);
    }
    g_string_append_printf(s, " content %s", sum);
    return g_string_free(s, FALSE);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *dir_listing(const char *dir)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    DIR *dp = opendir(dir);
    struct dirent *e;

    ck_assert(dp);
    while ((e = readdir(dp))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            g_ptr_array_add(names, g_strdup(e->d_name));
        }
    }
    closedir(dp);
    g_ptr_array_sort(names, cmp_names);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(" ", (char **)names->pdata);
}

TxnPicture *txn_picture(TxnDevs *d)
{
    TxnPicture *p = g_new0(TxnPicture, 1);

    p->n = d->n;
    p->dev = g_new0(char *, d->n + 1);
    for (int i = 0; i < d->n; i++) {
        p->dev[i] = device_picture(d->blk[i]);
    }
    p->files = dir_listing(d->dir);
    return p;
}

void txn_picture_assert_same(const TxnPicture *a, const TxnPicture *b,
                             const char *what)
{
    for (int i = 0; i < a->n; i++) {
        ck_assert_msg(!strcmp(a->dev[i], b->dev[i]),
                      "%s: device d%d was\n  %s\nand is\n  %s", what, i,
                      a->dev[i], b->dev[i]);
    }
    ck_assert_msg(!strcmp(a->files, b->files),
                  "%s: files were\n  %s\nand are\n  %s", what, a->files,
                  b->files);
}

void txn_picture_free(TxnPicture *p)
{
    if (p) {
        g_strfreev(p->dev);
        g_free(p->files);
        g_free(p);
    }
}

void txn_check_dir_clean(const char *dir)
{
    DIR *dp = opendir(dir);
    struct dirent *e;

    ck_assert(dp);
    while ((e = readdir(dp))) {
        if (g_str_has_suffix(e->d_name, ".qcow2")) {
            g_autofree char *p = g_build_filename(dir, e->d_name, NULL);
            check_clean(p);
        }
    }
    closedir(dp);
}

/* ---- qemu-img ---- */

static char *qemu_img_out(const char *const *args, int *status)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    char *out = NULL;
    g_autofree char *err = NULL;

    if (!qemu_img) {
        return NULL;
    }
    g_ptr_array_add(argv, qemu_img);
    for (int i = 0; args[i]; i++) {
        g_ptr_array_add(argv, (char *)args[i]);
    }
    g_ptr_array_add(argv, NULL);
    ck_assert(g_spawn_sync(NULL, (char **)argv->pdata, NULL, 0, NULL, NULL,
                           &out, &err, status, NULL));
    return out;
}

char *qemu_snapshot_names(const char *path)
{
    const char *args[] = { "snapshot", "-l", path, NULL };
    int status = 0;
    g_autofree char *out = qemu_img_out(args, &status);
    g_auto(GStrv) lines = NULL;
    GString *s;

    if (!out) {
        return NULL;
    }
    ck_assert_msg(g_spawn_check_wait_status(status, NULL),
                  "qemu-img snapshot -l %s: %s", path, out);
    s = g_string_new(NULL);
    lines = g_strsplit(out, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        g_auto(GStrv) f = g_strsplit_set(g_strstrip(lines[i]), " ", -1);
        int k = 1;
        /* skip "Snapshot list:", the column header and blank lines */
        if (!f[0] || !*f[0] || !g_ascii_isdigit(f[0][0])) {
            continue;
        }
        while (f[k] && !*f[k]) {
            k++;
        }
        g_string_append_printf(s, "%s%s", s->len ? "," : "", f[k]);
    }
    return g_string_free(s, FALSE);
}

char *qemu_chain_files(const char *path)
{
    const char *args[] = { "info", "--backing-chain", path, NULL };
    int status = 0;
    g_autofree char *out = qemu_img_out(args, &status);
    g_auto(GStrv) lines = NULL;
    GString *s;

    if (!out) {
        return NULL;
    }
    ck_assert_msg(g_spawn_check_wait_status(status, NULL),
                  "qemu-img info %s: %s", path, out);
    s = g_string_new(NULL);
    lines = g_strsplit(out, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        if (g_str_has_prefix(lines[i], "image: ")) {
            g_autofree char *b = g_path_get_basename(lines[i] + 7);
            g_string_append_printf(s, "%s%s", s->len ? "," : "", b);
        }
    }
    return g_string_free(s, FALSE);
}

bool qemu_same_content(const char *qcow2, const char *raw)
{
    const char *args[] = { "compare", "-q", "-f", "qcow2", "-F", "raw",
                           qcow2, raw, NULL };
    int status = 0;
    g_autofree char *out = qemu_img_out(args, &status);

    return !out || g_spawn_check_wait_status(status, NULL);
}

/* ---- actions ---- */

BlkTransactionAction txn_internal(const char *dev, const char *name)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_INTERNAL };

    a.u.snapshot_internal.device = dev;
    a.u.snapshot_internal.name = name;
    return a;
}

BlkTransactionAction txn_delete(const char *dev, const char *id,
                                const char *name)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_DELETE_INTERNAL };

    a.u.snapshot_delete_internal.device = dev;
    a.u.snapshot_delete_internal.id = id;
    a.u.snapshot_delete_internal.name = name;
    return a;
}

BlkTransactionAction txn_apply(const char *dev, const char *id,
                               const char *name)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_APPLY_INTERNAL };

    a.u.apply_internal.device = dev;
    a.u.apply_internal.id = id;
    a.u.apply_internal.name = name;
    return a;
}

BlkTransactionAction txn_external(const char *dev, const char *file)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_SYNC };

    a.u.snapshot_sync.device = dev;
    a.u.snapshot_sync.snapshot_file = file;
    return a;
}

BlkTransactionAction txn_abort(void)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_ABORT };

    return a;
}

void txn_add_ok(BlkTransactionStates *t, BlkTransactionAction a)
{
    GError *err = NULL;

    ck_assert_msg(blk_transaction_add(t, &a, &err), "add %s: %s",
                  blk_action_kind_name(a.kind), err ? err->message : "");
}
