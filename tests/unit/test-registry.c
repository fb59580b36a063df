/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of blockdev/registry.c: every lookup rule and every error text
 * (checked against QEMU 7.2's strings), the shared namespace of device
 * names and node-names, listing, thread safety of add/remove/lookup, and
 * the global drain order (two threads draining overlapping sets given in
 * opposite orders must never deadlock).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/registry.h"

static char *tmpdir;
static char *img_path;

static void setup(void)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *o = bdrv_opts_new();

    tmpdir = g_dir_make_tmp("strata-registry-XXXXXX", NULL);
    ck_assert(tmpdir);
    img_path = g_build_filename(tmpdir, "disk.raw", NULL);
    bdrv_opts_set(o, "size", "1048576");
    ck_assert_msg(bdrv_create("raw", img_path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
}

static void teardown(void)
{
    blockdev_remove_all_devices();
    /* Every node a test opened must be gone again. */
    g_autoptr(GPtrArray) left = blockdev_list_nodes();
    ck_assert_uint_eq(left->len, 0);
    unlink(img_path);
    rmdir(tmpdir);
    g_clear_pointer(&img_path, g_free);
    g_clear_pointer(&tmpdir, g_free);
}

/* Opens the test image as raw through the registry with extra options
 * ("node-name=a,file.node-name=b"); NULL and *err set on failure. */
static BlockDriverState *open_node(const char *extra, GError **err)
{
    BlockOpts *o = bdrv_opts_new();

    bdrv_opts_set(o, "driver", "raw");
    if (extra) {
        ck_assert(bdrv_opts_parse(o, extra, NULL, NULL));
    }
    return blockdev_open_node(img_path, o, BDRV_O_RDWR, err);
}

static BlockDriverState *open_node_ok(const char *extra)
{
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs = open_node(extra, &err);

    ck_assert_msg(bs, "open %s: %s", extra, err ? err->message : "");
    return bs;
}

static void assert_error(GError *err, int code, const char *want)
{
    ck_assert_msg(err, "expected error '%s', got success", want);
    ck_assert_msg(err->domain == BLOCKDEV_ERROR,
                  "'%s' is not a blockdev error", err->message);
    ck_assert_str_eq(err->message, want);
    ck_assert_int_eq(err->code, code);
}

static void open_refused(const char *extra, const char *want)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) before = blockdev_list_nodes();
    BlockDriverState *bs = open_node(extra, &err);
    g_autoptr(GPtrArray) after = NULL;

    ck_assert_msg(!bs, "open with %s succeeded", extra);
    assert_error(err, BLOCKDEV_ERROR_GENERIC, want);
    after = blockdev_list_nodes();
    ck_assert_uint_eq(after->len, before->len);
}

/* A named device on a new node (node-name given, or generated). */
static BlockBackend *add_device(const char *name, const char *node_opts)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BlockDriverState) bs = open_node_ok(node_opts);
    g_autoptr(BlockBackend) blk = blk_new(name, bs);

    ck_assert_msg(blockdev_add_device(blk, &err), "add %s: %s", name,
                  err ? err->message : "");
    return g_steal_pointer(&blk);   /* the registry holds another one */
}

/* ---- names ---- */

START_TEST(test_id_wellformed)
{
    static const char *const good[] = {
        "a", "Z", "disk0", "a-b", "a.b", "a_b", "x1-2.3_4", "aB9",
    };
    static const char *const bad[] = {
        "", "0disk", "-a", ".a", "_a", "#block001", "a b", "a,b", "a/b",
        "a:b", "d\xc3\xa9", "a+b",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(good); i++) {
        ck_assert_msg(blockdev_id_wellformed(good[i]), "%s refused", good[i]);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        ck_assert_msg(!blockdev_id_wellformed(bad[i]), "%s accepted", bad[i]);
    }
}
END_TEST

START_TEST(test_node_name_rules)
{
    g_autoptr(BlockDriverState) n1 = open_node_ok("node-name=n1");
    g_autoptr(BlockDriverState) max = NULL;
    g_autoptr(BlockBackend) dev = add_device("disk0", NULL);
    char name31[32], name32[33];

    memset(name31, 'a', 31);
    name31[31] = '\0';
    memset(name32, 'b', 32);
    name32[32] = '\0';

    open_refused("node-name=1abc", "Invalid node-name: '1abc'");
    open_refused("node-name=a+b", "Invalid node-name: 'a+b'");
    open_refused("node-name=#block001", "Invalid node-name: '#block001'");
    open_refused("node-name=disk0",
                 "node-name=disk0 is conflicting with a device id");
    open_refused("node-name=n1", "Duplicate nodes with node-name='n1'");
    g_autofree char *o32 = g_strdup_printf("node-name=%s", name32);
    open_refused(o32, "Node name too long");
    /* The rules hold for every node the options open, not only the top. */
    open_refused("node-name=top,file.node-name=9f",
                 "Invalid node-name: '9f'");
    open_refused("file.node-name=disk0",
                 "node-name=disk0 is conflicting with a device id");
    /* The top node's name is checked first. */
    open_refused("node-name=n1,file.node-name=disk0",
                 "Duplicate nodes with node-name='n1'");

    /* 31 bytes is the limit, inclusive. */
    g_autofree char *o31 = g_strdup_printf("node-name=%s", name31);
    max = open_node_ok(o31);
    ck_assert_str_eq(bdrv_get_node_name(max), name31);
}
END_TEST

START_TEST(test_check_node_name_direct)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BlockBackend) dev = add_device("vda", "node-name=vda-node");

    ck_assert(blockdev_check_node_name("free-name", NULL));
    ck_assert(!blockdev_check_node_name("vda", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "node-name=vda is conflicting with a device id");
    g_clear_error(&err);
    ck_assert(!blockdev_check_node_name("vda-node", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Duplicate nodes with node-name='vda-node'");
}
END_TEST

START_TEST(test_device_name_rules)
{
    g_autoptr(BlockDriverState) n1 = open_node_ok("node-name=n1");
    g_autoptr(BlockBackend) dev = add_device("disk0", NULL);
    static const struct {
        const char *name;
        const char *want;
    } cases[] = {
        { "0disk", "Invalid device name" },
        { "a b", "Invalid device name" },
        { "disk0", "Device with id 'disk0' already exists" },
        { "n1", "Device name 'n1' conflicts with an existing node name" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) err = NULL;
        g_autoptr(BlockBackend) blk = blk_new(cases[i].name, NULL);
        g_autoptr(GPtrArray) devs = NULL;

        ck_assert(!blockdev_add_device(blk, &err));
        assert_error(err, BLOCKDEV_ERROR_GENERIC, cases[i].want);
        devs = blockdev_list_devices();
        ck_assert_uint_eq(devs->len, 1);
    }
    /* A generated node-name is not a name a device can collide with,
     * because it is not well formed. */
    {
        g_autoptr(GError) err = NULL;
        g_autoptr(BlockDriverState) anon = open_node_ok(NULL);
        g_autoptr(BlockBackend) blk = blk_new(bdrv_get_node_name(anon), NULL);

        ck_assert(g_str_has_prefix(bdrv_get_node_name(anon), "#block"));
        ck_assert(!blockdev_add_device(blk, &err));
        assert_error(err, BLOCKDEV_ERROR_GENERIC, "Invalid device name");
    }
}
END_TEST

/* Anonymous devices (strata-daemon's, one per top-level node): listed,
 * never found by name, never in the way of a name. */
START_TEST(test_anonymous_device)
{
    g_autoptr(BlockDriverState) n1 = open_node_ok("node-name=n1");
    g_autoptr(BlockDriverState) n2 = open_node_ok("node-name=n2");
    g_autoptr(BlockBackend) a1 = blk_new(NULL, n1);
    g_autoptr(BlockBackend) a2 = blk_new(NULL, n2);
    g_autoptr(GPtrArray) devs = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(BlockDriverState) root = NULL;

    ck_assert(blockdev_add_device(a1, NULL));
    ck_assert(blockdev_add_device(a2, NULL));   /* two without a name */
    devs = blockdev_list_devices();
    ck_assert_uint_eq(devs->len, 2);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 0), a1);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 1), a2);
    ck_assert_ptr_null(blockdev_find_device(""));
    ck_assert(!blockdev_remove_device("", &err));
    assert_error(err, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                 "Device '' not found");
    g_clear_error(&err);
    /* lookups by "" do not reach a device's root */
    ck_assert_ptr_null(blockdev_lookup_bs("", NULL, &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='' nor node-name=''");
    /* the node is still found by its node-name, and is a root */
    root = blockdev_get_root_bs("n1", NULL);
    ck_assert_ptr_eq(root, n1);
    /* names stay free: a named device and a node-name */
    ck_assert(blockdev_check_node_name("disk9", NULL));
    {
        g_autoptr(BlockBackend) named = add_device("disk9", NULL);
        g_autoptr(GPtrArray) all = blockdev_list_devices();
        ck_assert_uint_eq(all->len, 3);
    }
    /* removal by pointer, once */
    ck_assert(blockdev_remove_device_blk(a1));
    ck_assert(!blockdev_remove_device_blk(a1));
    g_ptr_array_unref(g_steal_pointer(&devs));
    devs = blockdev_list_devices();
    ck_assert_uint_eq(devs->len, 2);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 0), a2);
}
END_TEST

/* ---- lookups ---- */

START_TEST(test_lookup_bs)
{
    g_autoptr(BlockBackend) dev = add_device("disk0", "node-name=root0");
    g_autoptr(BlockBackend) empty = blk_new("empty0", NULL);
    g_autoptr(GError) err = NULL;
    BlockDriverState *root = blk_bs(dev);
    BlockDriverState *bs;

    ck_assert(blockdev_add_device(empty, NULL));

    /* by device, by node-name, both given */
    bs = blockdev_lookup_bs("disk0", NULL, NULL);
    ck_assert_ptr_eq(bs, root);
    bdrv_unref(bs);
    bs = blockdev_lookup_bs(NULL, "root0", NULL);
    ck_assert_ptr_eq(bs, root);
    bdrv_unref(bs);
    bs = blockdev_lookup_bs("disk0", "root0", NULL);
    ck_assert_ptr_eq(bs, root);
    bdrv_unref(bs);
    /* an unknown device falls through to the node-name */
    bs = blockdev_lookup_bs("nodev", "root0", NULL);
    ck_assert_ptr_eq(bs, root);
    bdrv_unref(bs);
    /* a node-name is not a device name, and the reverse */
    ck_assert_ptr_null(blockdev_lookup_bs("root0", NULL, &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='root0' nor node-name=''");
    g_clear_error(&err);
    ck_assert_ptr_null(blockdev_lookup_bs(NULL, "disk0", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='' nor node-name='disk0'");
    g_clear_error(&err);
    ck_assert_ptr_null(blockdev_lookup_bs("x", "y", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='x' nor node-name='y'");
    g_clear_error(&err);
    ck_assert_ptr_null(blockdev_lookup_bs(NULL, NULL, &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='' nor node-name=''");
    g_clear_error(&err);
    /* a device without medium stops the lookup, even with a good node */
    ck_assert_ptr_null(blockdev_lookup_bs("empty0", "root0", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC, "Device 'empty0' has no medium");
    g_clear_error(&err);

    /* the returned reference keeps the node alive past its device */
    bs = blockdev_lookup_bs("disk0", NULL, NULL);
    ck_assert(blockdev_remove_device("disk0", NULL));
    g_clear_pointer(&dev, blk_unref);
    ck_assert_str_eq(bdrv_get_node_name(bs), "root0");
    bdrv_unref(bs);
    ck_assert_ptr_null(blockdev_find_node("root0"));
}
END_TEST

START_TEST(test_get_root_bs)
{
    g_autoptr(BlockBackend) dev =
        add_device("disk0", "node-name=top0,file.node-name=proto0");
    g_autoptr(BlockDriverState) loose = open_node_ok("node-name=loose");
    g_autoptr(BlockBackend) empty = blk_new("empty0", NULL);
    g_autoptr(GError) err = NULL;
    BlockDriverState *bs;

    ck_assert(blockdev_add_device(empty, NULL));
    bs = blockdev_get_root_bs("disk0", NULL);
    ck_assert_ptr_eq(bs, blk_bs(dev));
    bdrv_unref(bs);
    bs = blockdev_get_root_bs("top0", NULL);
    ck_assert_ptr_eq(bs, blk_bs(dev));
    bdrv_unref(bs);
    /* a node no device uses and nothing sits on is a root too */
    bs = blockdev_get_root_bs("loose", NULL);
    ck_assert_ptr_eq(bs, loose);
    bdrv_unref(bs);

    ck_assert_ptr_null(blockdev_get_root_bs("proto0", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC, "Need a root block node");
    g_clear_error(&err);
    ck_assert_ptr_null(blockdev_get_root_bs("nodev", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC,
                 "Cannot find device='nodev' nor node-name='nodev'");
    g_clear_error(&err);
    ck_assert_ptr_null(blockdev_get_root_bs("empty0", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC, "Device 'empty0' has no medium");
}
END_TEST

START_TEST(test_get_device_and_node)
{
    g_autoptr(BlockBackend) dev = add_device("disk0", "node-name=root0");
    g_autoptr(GError) err = NULL;
    BlockBackend *blk;
    BlockDriverState *bs;

    blk = blockdev_get_device("disk0", NULL);
    ck_assert_ptr_eq(blk, dev);
    blk_unref(blk);
    ck_assert_ptr_null(blockdev_get_device("root0", &err));
    assert_error(err, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                 "Device 'root0' not found");
    g_clear_error(&err);

    /* "node" arguments take either kind of name */
    bs = blockdev_get_node("root0", NULL);
    ck_assert_ptr_eq(bs, blk_bs(dev));
    bdrv_unref(bs);
    bs = blockdev_get_node("disk0", NULL);
    ck_assert_ptr_eq(bs, blk_bs(dev));
    bdrv_unref(bs);
    ck_assert_ptr_null(blockdev_get_node("nonode", &err));
    assert_error(err, BLOCKDEV_ERROR_GENERIC, "Node 'nonode' not found");
    g_clear_error(&err);

    ck_assert_ptr_null(blockdev_find_device("nodev"));
    ck_assert_ptr_null(blockdev_find_node("nonode"));
}
END_TEST

START_TEST(test_remove_device)
{
    g_autoptr(BlockBackend) dev = add_device("disk0", "node-name=root0");
    g_autoptr(GError) err = NULL;

    ck_assert(!blockdev_remove_device("nodev", &err));
    assert_error(err, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                 "Device 'nodev' not found");
    g_clear_error(&err);
    ck_assert(blockdev_remove_device("disk0", NULL));
    ck_assert_ptr_null(blockdev_find_device("disk0"));
    ck_assert(!blockdev_remove_device("disk0", &err));
    assert_error(err, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                 "Device 'disk0' not found");
    g_clear_error(&err);
    /* the name is free again, for a device or for a node */
    ck_assert(blockdev_check_node_name("disk0", NULL));
    ck_assert(blockdev_add_device(dev, NULL));
}
END_TEST

/* ---- listing ---- */

START_TEST(test_list_in_serial_order)
{
    g_autoptr(BlockBackend) a = blk_new("a", NULL);
    g_autoptr(BlockBackend) b = blk_new("b", NULL);
    g_autoptr(BlockBackend) c = blk_new("c", NULL);
    g_autoptr(GPtrArray) devs = NULL;
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(BlockDriverState) n1 = open_node_ok("node-name=first");
    g_autoptr(BlockDriverState) n2 = open_node_ok("node-name=second");

    ck_assert_uint_lt(blk_get_serial(a), blk_get_serial(b));
    ck_assert_uint_lt(blk_get_serial(b), blk_get_serial(c));
    /* added in another order than created */
    ck_assert(blockdev_add_device(c, NULL));
    ck_assert(blockdev_add_device(a, NULL));
    ck_assert(blockdev_add_device(b, NULL));
    devs = blockdev_list_devices();
    ck_assert_uint_eq(devs->len, 3);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 0), a);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 1), b);
    ck_assert_ptr_eq(g_ptr_array_index(devs, 2), c);

    /* nodes: oldest first (two raw nodes, each with its file child) */
    nodes = blockdev_list_nodes();
    ck_assert_uint_eq(nodes->len, 4);
    int i1 = -1, i2 = -1;
    for (guint i = 0; i < nodes->len; i++) {
        const char *nn = bdrv_get_node_name(g_ptr_array_index(nodes, i));
        if (!strcmp(nn, "first")) {
            i1 = (int)i;
        } else if (!strcmp(nn, "second")) {
            i2 = (int)i;
        }
    }
    ck_assert_int_ge(i1, 0);
    ck_assert_int_gt(i2, i1);
}
END_TEST

/* ---- thread safety of the table ---- */

#define CHURN_ROUNDS 2000

static gpointer churn_thread(gpointer opaque)
{
    int id = GPOINTER_TO_INT(opaque);

    for (int i = 0; i < CHURN_ROUNDS; i++) {
        g_autofree char *name = g_strdup_printf("t%d-%d", id, i % 7);
        g_autoptr(BlockBackend) blk = blk_new(name, NULL);
        g_autoptr(BlockBackend) found = NULL;
        g_autoptr(GPtrArray) all = NULL;

        ck_assert(blockdev_add_device(blk, NULL));
        found = blockdev_find_device(name);
        ck_assert_ptr_eq(found, blk);
        all = blockdev_list_devices();
        ck_assert_uint_ge(all->len, 1);
        ck_assert(blockdev_remove_device(name, NULL));
    }
    return NULL;
}

START_TEST(test_concurrent_add_remove)
{
    GThread *t[4];
    g_autoptr(GPtrArray) left = NULL;

    for (int i = 0; i < 4; i++) {
        t[i] = g_thread_new("churn", churn_thread, GINT_TO_POINTER(i));
    }
    for (int i = 0; i < 4; i++) {
        g_thread_join(t[i]);
    }
    left = blockdev_list_devices();
    ck_assert_uint_eq(left->len, 0);
}
END_TEST

/* Two threads want the same name: exactly one gets it each round. */
typedef struct Race {
    GMutex lock;
    int winners;
} Race;

static Race race;

static gpointer race_thread(gpointer opaque)
{
    for (int i = 0; i < 300; i++) {
        g_autofree char *name = g_strdup_printf("r%d", i);
        g_autoptr(BlockBackend) blk = blk_new(name, NULL);

        if (blockdev_add_device(blk, NULL)) {
            g_mutex_lock(&race.lock);
            race.winners++;
            g_mutex_unlock(&race.lock);
        }
    }
    return NULL;
}

START_TEST(test_same_name_race)
{
    GThread *t1, *t2;
    g_autoptr(GPtrArray) all = NULL;

    race.winners = 0;
    t1 = g_thread_new("race1", race_thread, NULL);
    t2 = g_thread_new("race2", race_thread, NULL);
    g_thread_join(t1);
    g_thread_join(t2);
    ck_assert_int_eq(race.winners, 300);
    all = blockdev_list_devices();
    ck_assert_uint_eq(all->len, 300);
}
END_TEST

/* ---- the global drain order ---- */

static gint probe_done;

/* Another thread's request on a held device must wait for the release. */
static gpointer probe_thread(gpointer opaque)
{
    uint8_t byte;

    ck_assert_int_eq(blk_pread(opaque, 0, 1, &byte), -ENOMEDIUM);
    g_atomic_int_set(&probe_done, 1);
    return NULL;
}

START_TEST(test_drain_set_order)
{
    g_autoptr(BlockBackend) a = blk_new(NULL, NULL);
    g_autoptr(BlockBackend) b = blk_new(NULL, NULL);
    g_autoptr(BlockBackend) c = blk_new(NULL, NULL);
    BlockBackend *list[] = { c, a, c, b, a };
    BlockdevDrainSet *set;
    BlockBackend *const *got;
    GThread *probe;
    size_t n;

    set = blockdev_drain_begin(list, G_N_ELEMENTS(list));
    got = blockdev_drain_set_devices(set, &n);
    ck_assert_uint_eq(n, 3);            /* repeats count once */
    ck_assert_ptr_eq(got[0], a);        /* increasing serial */
    ck_assert_ptr_eq(got[1], b);
    ck_assert_ptr_eq(got[2], c);

    g_atomic_int_set(&probe_done, 0);
    probe = g_thread_new("probe", probe_thread, b);
    g_usleep(100 * 1000);
    ck_assert_int_eq(g_atomic_int_get(&probe_done), 0);
    /* one end releases every device, however often it was listed */
    blockdev_drain_end(set);
    g_thread_join(probe);
    ck_assert_int_eq(g_atomic_int_get(&probe_done), 1);
}
END_TEST

#define DEVS 6
#define DRAIN_ROUNDS 3000

typedef struct DrainTest {
    BlockBackend *dev[DEVS];
    int holder[DEVS];            /* which thread holds it drained, or -1 */
    GMutex lock;
    gint stop_io;
    gint io_done;
} DrainTest;

static DrainTest dt;

static void claim(int who, BlockBackend *const *devs, size_t n, bool take)
{
    g_mutex_lock(&dt.lock);
    for (size_t i = 0; i < n; i++) {
        for (int d = 0; d < DEVS; d++) {
            if (dt.dev[d] != devs[i]) {
                continue;
            }
            if (take) {
                /* a drained device belongs to one thread at a time */
                ck_assert_int_eq(dt.holder[d], -1);
                dt.holder[d] = who;
            } else {
                ck_assert_int_eq(dt.holder[d], who);
                dt.holder[d] = -1;
            }
        }
    }
    g_mutex_unlock(&dt.lock);
}

/*
 * Thread 0 drains devices 0..3 listed upwards, thread 1 devices 2..5
 * listed downwards: drained in list order, they would deadlock on 2 and 3
 * within a few rounds.
 */
static gpointer drain_thread(gpointer opaque)
{
    int who = GPOINTER_TO_INT(opaque);
    BlockBackend *list[4];

    for (int i = 0; i < 4; i++) {
        list[i] = who == 0 ? dt.dev[i] : dt.dev[DEVS - 1 - i];
    }
    for (int r = 0; r < DRAIN_ROUNDS; r++) {
        BlockdevDrainSet *set = blockdev_drain_begin(list, 4);
        BlockBackend *const *held;
        size_t n;

        held = blockdev_drain_set_devices(set, &n);
        ck_assert_uint_eq(n, 4);
        claim(who, held, n, true);
        if (r % 64 == 0) {
            g_usleep(50);       /* let the other thread pile up behind */
        }
        claim(who, held, n, false);
        blockdev_drain_end(set);
    }
    return NULL;
}

/*
 * Writes keep arriving on every device meanwhile, each with a notifier
 * that takes a while: every drain has to wait for one, which widens the
 * window between draining one device and the next until a wrong order
 * deadlocks in a few rounds.  A drain must hold the writes, never fail
 * them.
 */
static void slow_notifier(BlockBackend *blk, int64_t offset, int64_t bytes,
                          void *opaque)
{
    g_usleep(100);
}

static gpointer io_thread(gpointer opaque)
{
    BlockBackend *blk = opaque;
    uint8_t buf[512] = { 0 };

    while (!g_atomic_int_get(&dt.stop_io)) {
        ck_assert_int_eq(blk_pwrite(blk, 0, sizeof(buf), buf), 0);
        g_atomic_int_inc(&dt.io_done);
    }
    return NULL;
}

START_TEST(test_drain_overlapping_sets)
{
    g_autoptr(BlockDriverState) bs = open_node_ok(NULL);
    GThread *t0, *t1, *io[DEVS];

    g_mutex_init(&dt.lock);
    dt.stop_io = 0;
    dt.io_done = 0;
    for (int d = 0; d < DEVS; d++) {
        dt.dev[d] = blk_new(NULL, bs);
        dt.holder[d] = -1;
        blk_add_write_notifier(dt.dev[d], slow_notifier, NULL);
        io[d] = g_thread_new("io", io_thread, dt.dev[d]);
    }
    t0 = g_thread_new("drain0", drain_thread, GINT_TO_POINTER(0));
    t1 = g_thread_new("drain1", drain_thread, GINT_TO_POINTER(1));
    g_thread_join(t0);
    g_thread_join(t1);
    g_atomic_int_set(&dt.stop_io, 1);
    for (int d = 0; d < DEVS; d++) {
        g_thread_join(io[d]);
    }
    ck_assert_int_gt(g_atomic_int_get(&dt.io_done), 0);
    for (int d = 0; d < DEVS; d++) {
        ck_assert_int_eq(dt.holder[d], -1);
        blk_unref(dt.dev[d]);
    }
    g_mutex_clear(&dt.lock);
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *names = tcase_create("names");
    TCase *lookups = tcase_create("lookups");
    TCase *threads = tcase_create("threads");

    tcase_add_checked_fixture(names, setup, teardown);
    tcase_add_test(names, test_id_wellformed);
    tcase_add_test(names, test_node_name_rules);
    tcase_add_test(names, test_check_node_name_direct);
    tcase_add_test(names, test_device_name_rules);
    tcase_add_test(names, test_anonymous_device);
    suite_add_tcase(s, names);

    tcase_add_checked_fixture(lookups, setup, teardown);
    tcase_add_test(lookups, test_lookup_bs);
    tcase_add_test(lookups, test_get_root_bs);
    tcase_add_test(lookups, test_get_device_and_node);
    tcase_add_test(lookups, test_remove_device);
    tcase_add_test(lookups, test_list_in_serial_order);
    suite_add_tcase(s, lookups);

    /* A deadlock shows as this timeout (the rounds take well under a
     * second when the order holds). */
    tcase_set_timeout(threads, 120);
    tcase_add_checked_fixture(threads, setup, teardown);
    tcase_add_test(threads, test_concurrent_add_remove);
    tcase_add_test(threads, test_same_name_race);
    tcase_add_test(threads, test_drain_set_order);
    tcase_add_test(threads, test_drain_overlapping_sets);
    suite_add_tcase(s, threads);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
