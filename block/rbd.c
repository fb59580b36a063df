/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "rbd" protocol driver: an image of a Ceph RBD pool through librbd.
 *
 * Options are QEMU 7.2's BlockdevOptionsRbd (pool, namespace, image,
 * snapshot, conf, user, key-secret, server.N.host/port,
 * auth-client-required.N) and its filename form
 * "rbd:pool/[namespace/]image[@snap][:key=value...]" ('\' escapes), where
 * the keys conf and id are options and any other key is a Ceph setting.
 *
 * Every request goes through librbd's asynchronous calls: the calling
 * thread submits and waits for its completion, so as many requests are in
 * flight as threads issue them (librbd orders nothing between them; the
 * generic layer does what ordering guests need).
 *
 * Internal snapshots live in block/rbd-snapshot.c.
 */
#include <errno.h>
#include <string.h>

#include "block/crypto.h"
#include "block/drivers.h"
#include "block/futex.h"
#include "block/log.h"
#include "block/rbd-int.h"

/* A cluster that does not answer fails the open after this long instead
 * of librados's 300 s; a conf file or a filename key may set another. */
#define RBD_DEFAULT_MOUNT_TIMEOUT "10"

/* ---- options and the filename form ---- */

/* The next unescaped delim in s, or NULL. */
static char *rbd_find(char *s, char delim)
{
    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
        } else if (*s == delim) {
            return s;
        }
    }
    return NULL;
}

/* Cuts s at its first unescaped delim: returns s, *rest after the delim
 * (NULL if there was none). */
static char *rbd_cut(char *s, char delim, char **rest)
{
    char *d = rbd_find(s, delim);

    *rest = d ? d + 1 : NULL;
    if (d) {
        *d = '\0';
    }
    return s;
}

static void rbd_unescape(char *s)
{
    char *out = s;

    for (; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
        }
        *out++ = *s;
    }
    *out = '\0';
}

/* Only sets key if the user's options do not already say it. */
static void opt_default(BlockOpts *opts, const char *key, const char *value)
{
    if (!bdrv_opts_get(opts, key)) {
        bdrv_opts_set(opts, key, value);
    }
}

/*
 * Turns "rbd:pool/[ns/]image[@snap][:k=v...]" into options; the Ceph
 * settings (keys other than conf and id) go to *settings as key, value
 * pairs in their order.  QEMU's texts.
 */
static bool rbd_parse_filename(const char *filename, BlockOpts *opts,
                               GPtrArray *settings, GError **errp)
{
    g_autofree char *buf = NULL;
    char *p, *tok, *image;

    if (!g_str_has_prefix(filename, "rbd:")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "File name must start with 'rbd:'");
        return false;
    }
    buf = g_strdup(filename + 4);
    tok = rbd_cut(buf, '/', &p);
    if (!p) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Pool name is required");
        return false;
    }
    rbd_unescape(tok);
    opt_default(opts, "pool", tok);
    if (rbd_find(p, '@')) {
        image = rbd_cut(p, '@', &p);
        tok = rbd_cut(p, ':', &p);
        rbd_unescape(tok);
        opt_default(opts, "snapshot", tok);
    } else {
        image = rbd_cut(p, ':', &p);
    }
    if (rbd_find(image, '/')) {
        char *ns = rbd_cut(image, '/', &image);
        rbd_unescape(ns);
        opt_default(opts, "namespace", ns);
    }
    rbd_unescape(image);
    opt_default(opts, "image", image);

    while (p) {
        char *key = rbd_cut(p, '=', &p), *value;
        if (!p) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "conf option %s has no value", key);
            return false;
        }
        rbd_unescape(key);
        value = rbd_cut(p, ':', &p);
        rbd_unescape(value);
        if (!strcmp(key, "conf")) {
            opt_default(opts, "conf", value);
        } else if (!strcmp(key, "id")) {
            opt_default(opts, "user", value);
        } else {
            g_ptr_array_add(settings, g_strdup(key));
            g_ptr_array_add(settings, g_strdup(value));
        }
    }
    return true;
}

/* What an open or a create needs to reach the image. */
typedef struct RBDLocation {
    char *pool, *namespace, *image, *snap, *conf, *user;
    char *key_secret;            /* the id of the secret holding the key */
    char *mon_host;              /* from server.N.*, or NULL */
    char *auth;                  /* from auth-client-required.N, or NULL */
    GPtrArray *settings;         /* Ceph settings: key, value, ... */
} RBDLocation;

static void rbd_location_clear(RBDLocation *loc)
{
    g_free(loc->pool);
    g_free(loc->namespace);
    g_free(loc->image);
    g_free(loc->snap);
    g_free(loc->conf);
    g_free(loc->user);
    g_free(loc->key_secret);
    g_free(loc->mon_host);
    g_free(loc->auth);
    if (loc->settings) {
        g_ptr_array_unref(loc->settings);
    }
    memset(loc, 0, sizeof(*loc));
}

/* server.N.host / server.N.port into Ceph's "mon_host" list. */
static bool take_servers(BlockOpts *opts, RBDLocation *loc, GError **errp)
{
    g_autoptr(GPtrArray) hosts = g_ptr_array_new_with_free_func(g_free);

    for (int i = 0;; i++) {
        g_autofree char *hk = g_strdup_printf("server.%d.host", i);
        g_autofree char *pk = g_strdup_printf("server.%d.port", i);
        g_autofree char *host = bdrv_opts_take(opts, hk);
        g_autofree char *port = bdrv_opts_take(opts, pk);

        if (!host && !port) {
            break;
        }
        if (!host || !port) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter '%s' is missing", host ? pk : hk);
            return false;
        }
        g_ptr_array_add(hosts, strchr(host, ':')
                        ? g_strdup_printf("[%s]:%s", host, port)
                        : g_strdup_printf("%s:%s", host, port));
    }
    if (hosts->len) {
        g_ptr_array_add(hosts, NULL);
        loc->mon_host = g_strjoinv(";", (char **)hosts->pdata);
    }
    return true;
}

/* auth-client-required.N (cephx, none) into Ceph's "a;b" setting. */
static bool take_auth(BlockOpts *opts, RBDLocation *loc, GError **errp)
{
    g_autoptr(GString) acc = g_string_new(NULL);

    for (int i = 0;; i++) {
        g_autofree char *k = g_strdup_printf("auth-client-required.%d", i);
        g_autofree char *v = bdrv_opts_take(opts, k);
        if (!v) {
            break;
        }
        if (strcmp(v, "cephx") && strcmp(v, "none")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter 'auth-client-required' does not accept "
                        "value '%s'", v);
            return false;
        }
        g_string_append_printf(acc, "%s%s", acc->len ? ";" : "", v);
    }
    if (acc->len) {
        loc->auth = g_strdup(acc->str);
    }
    return true;
}

/* Takes the rbd options out of opts (the filename form first fills the
 * ones not given). */
static bool rbd_take_location(const char *filename, BlockOpts *opts,
                              RBDLocation *loc, GError **errp)
{

    loc->settings = g_ptr_array_new_with_free_func(g_free);
    if (filename && *filename &&
        !rbd_parse_filename(filename, opts, loc->settings, errp)) {
        return false;
    }
    loc->pool = bdrv_opts_take(opts, "pool");
    loc->namespace = bdrv_opts_take(opts, "namespace");
    loc->image = bdrv_opts_take(opts, "image");
    loc->snap = bdrv_opts_take(opts, "snapshot");
    loc->conf = bdrv_opts_take(opts, "conf");
    loc->user = bdrv_opts_take(opts, "user");
    loc->key_secret = bdrv_opts_take(opts, "key-secret");
    if (!loc->pool || !loc->image) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' is missing", loc->pool ? "image" : "pool");
        return false;
    }
    if (bdrv_opts_get(opts, "encrypt.format")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "RBD library does not support image encryption");
        return false;
    }
    return take_servers(opts, loc, errp) && take_auth(opts, loc, errp);
}

/* ---- the connection ---- */

/* key-secret: the cephx key is the secret's bytes, which Ceph's "key"
 * setting takes base64 encoded (as QEMU passes it). */
static int set_key(rados_t cluster, const char *id, GError **errp)
{
    g_autoptr(GBytes) key = crypto_secret_lookup(id, errp);
    g_autofree char *b64 = NULL;
    gsize len;
    const void *data;
    int r;

    if (!key) {
        return -EIO;
    }
    data = g_bytes_get_data(key, &len);
    b64 = g_base64_encode(data, len);
    r = rados_conf_set(cluster, "key", b64);
    memset(b64, 0, strlen(b64));
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not set 'key': %s", g_strerror(-r));
    }
    return r;
}

static int rbd_connect(RBDLocation *loc, rados_t *cluster,
                       rados_ioctx_t *io, GError **errp)
{
    int r;

    *cluster = NULL;
    *io = NULL;
    /* the first connection loads the Ceph libraries (block/rbd-lib.h) */
    if (!rbd_lib_load(errp)) {
        return -ENOTSUP;
    }
    r = rados_create(cluster, loc->user);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "error initializing: %s", g_strerror(-r));
        return r;
    }
    /* before the conf file, so the file may say otherwise */
    rados_conf_set(*cluster, "client_mount_timeout",
                   RBD_DEFAULT_MOUNT_TIMEOUT);
    rados_conf_set(*cluster, "rados_mon_op_timeout", "30");
    r = rados_conf_read_file(*cluster, loc->conf);
    if (r < 0 && loc->conf) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "error reading conf file %s: %s", loc->conf,
                    g_strerror(-r));
        goto fail;
    }
    /* $CEPH_CONF, as librados's own tools read it */
    if (!loc->conf) {
        rados_conf_parse_env(*cluster, NULL);
    }
    for (guint i = 0; i + 1 < loc->settings->len; i += 2) {
        const char *k = loc->settings->pdata[i];
        r = rados_conf_set(*cluster, k, loc->settings->pdata[i + 1]);
        if (r < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "invalid conf option %s: %s", k, g_strerror(-r));
            goto fail;
        }
    }
    if (loc->mon_host &&
        (r = rados_conf_set(*cluster, "mon_host", loc->mon_host)) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not set 'mon_host': %s", g_strerror(-r));
        goto fail;
    }
    if (loc->key_secret && (r = set_key(*cluster, loc->key_secret, errp)) < 0) {
        goto fail;
    }
    if (loc->auth &&
        (r = rados_conf_set(*cluster, "auth_client_required",
                            loc->auth)) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not set 'auth_client_required': %s",
                    g_strerror(-r));
        goto fail;
    }
    r = rados_connect(*cluster);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "error connecting: %s",
                    g_strerror(-r));
        goto fail;
    }
    r = rados_ioctx_create(*cluster, loc->pool, io);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "error opening pool %s: %s", loc->pool, g_strerror(-r));
        goto fail;
    }
    if (loc->namespace && *loc->namespace) {
        bool exists = false;
        r = rbd_namespace_exists(*io, loc->namespace, &exists);
        if (r < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "error checking namespace: %s", g_strerror(-r));
            goto fail;
        }
        if (!exists) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "namespace '%s' does not exist", loc->namespace);
            r = -ENOENT;
            goto fail;
        }
        rados_ioctx_set_namespace(*io, loc->namespace);
    }
    return 0;

fail:
    if (*io) {
        rados_ioctx_destroy(*io);
        *io = NULL;
    }
    rados_shutdown(*cluster);
    *cluster = NULL;
    return r;
}

/* ---- open, close ---- */

static int rbd_open_node(BlockDriverState *bs, BlockOpts *options, int flags,
                         GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDLocation loc = { 0 };
    int r;

    if (!rbd_take_location(bs->filename, options, &loc, errp)) {
        rbd_location_clear(&loc);
        return -EINVAL;
    }
    /* QEMU's text; checked before anything reaches the cluster */
    if (loc.snap && (flags & BDRV_O_RDWR)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "rbd snapshots are read-only");
        rbd_location_clear(&loc);
        return -EACCES;
    }
    r = rbd_connect(&loc, &s->cluster, &s->io, errp);
    if (r < 0) {
        rbd_location_clear(&loc);
        return r;
    }
    r = (flags & BDRV_O_RDWR)
        ? rbd_open(s->io, loc.image, &s->image, NULL)
        : rbd_open_read_only(s->io, loc.image, &s->image, loc.snap);
    if (r == -ENOENT && loc.snap) {
        /* @name may be a strata transaction's group snapshot, listed
         * under the user's name (blockdev/rbd-group.c) */
        r = rbd_open_read_only(s->io, loc.image, &s->image, NULL);
        if (r == 0) {
            r = rbd_snap_set_group(s->image, loc.snap);
            if (r < 0) {
                rbd_close(s->image);
                s->image = NULL;
            }
        }
    }
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "error reading header from %s: %s", loc.image,
                    g_strerror(-r));
        rados_ioctx_destroy(s->io);
        rados_shutdown(s->cluster);
        s->io = NULL;
        s->cluster = NULL;
        rbd_location_clear(&loc);
        return r;
    }
    s->pool = g_steal_pointer(&loc.pool);
    s->namespace = g_steal_pointer(&loc.namespace);
    s->image_name = g_steal_pointer(&loc.image);
    s->snap = g_steal_pointer(&loc.snap);
    s->ro_handle = !(flags & BDRV_O_RDWR);
    rbd_location_clear(&loc);
    rbd_snapshot_state_init(s);
    bs->request_alignment = 1;
    return 0;
}

static void rbd_close_node(BlockDriverState *bs)
{
    BDRVRBDState *s = bs->opaque;

    if (s->image) {
        rbd_close(s->image);
    }
    if (s->io) {
        rados_ioctx_destroy(s->io);
    }
    if (s->cluster) {
        rados_shutdown(s->cluster);
    }
    rbd_snapshot_state_clear(s);
    g_free(s->pool);
    g_free(s->namespace);
    g_free(s->image_name);
    g_free(s->snap);
}

/*
 * Going read-only keeps the handle (nothing writes through it any more);
 * going read-write needs a writable handle, never on a snapshot (QEMU's
 * text).  The new handle is opened before the old one is closed, so a
 * failure leaves the node as it was.
 */
static int rbd_reopen_node(BlockDriverState *bs, bool read_only,
                           GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    rbd_image_t image;
    int r;

    if (read_only || !s->ro_handle) {
        return 0;
    }
    if (s->snap) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot change node '%s' to r/w when using RBD snapshot",
                    bdrv_get_node_name(bs));
        return -EACCES;
    }
    r = rbd_open(s->io, s->image_name, &image, NULL);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "error reading header from %s: %s", s->image_name,
                    g_strerror(-r));
        return r;
    }
    rbd_close(s->image);
    s->image = image;
    s->ro_handle = false;
    return 0;
}

/* ---- I/O: submit through librbd's aio calls, wait for our own ---- */

typedef enum { RBD_READ, RBD_WRITE, RBD_DISCARD, RBD_ZEROES, RBD_FLUSH }
    RBDCmd;

/*
 * One request's completion.  librbd's callback thread records the result
 * and wakes the submitter with a futex on `done`.  Waiting in
 * rbd_aio_wait_for_complete instead costs almost twice the futex calls
 * per request (librbd signals its waiter while holding the completion's
 * lock, so the woken thread blocks again on that lock), measured with
 * strace -c on strata-img bench: 10.8 futex calls per 4 KiB read against
 * QEMU's 6.2.
 */
typedef struct {
    atomic_uint done;
    ssize_t ret;
} RBDWait;

static void rbd_request_done(rbd_completion_t c, void *opaque)
{
    RBDWait *w = opaque;

    w->ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    atomic_store_explicit(&w->done, 1, memory_order_release);
    /* The submitter may already have seen done and returned: a stray
     * wake-up of a later request's wait on the same stack slot is
     * absorbed by its loop. */
    strata_futex_wake(&w->done);
}

static ssize_t rbd_wait(RBDWait *w)
{
    while (!atomic_load_explicit(&w->done, memory_order_acquire)) {
        strata_futex_wait(&w->done, 0);
    }
    return w->ret;
}

/* A read past the image's end (resized by another client) comes back
 * short: the rest reads as zeroes. */
static void rbd_zero_tail(void *buf, int64_t bytes, ssize_t got)
{
    if (got >= 0 && got < bytes) {
        memset((char *)buf + got, 0, bytes - got);
    }
}

static int rbd_submit(BDRVRBDState *s, RBDCmd cmd, int64_t offset,
                      int64_t bytes, void *buf, int zero_flags)
{
    RBDWait w = { .done = 0 };
    rbd_completion_t c;
    ssize_t ret;
    int r;

    r = rbd_aio_create_completion(&w, rbd_request_done, &c);
    if (r < 0) {
        return r;
    }
    switch (cmd) {
    case RBD_READ:
        r = rbd_aio_read(s->image, offset, bytes, buf, c);
        break;
    case RBD_WRITE:
        r = rbd_aio_write(s->image, offset, bytes, buf, c);
        break;
    case RBD_DISCARD:
        r = rbd_aio_discard(s->image, offset, bytes, c);
        break;
    case RBD_ZEROES:
        r = rbd_aio_write_zeroes(s->image, offset, bytes, c, zero_flags, 0);
        break;
    case RBD_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    default:
        g_assert_not_reached();
    }
    if (r < 0) {
        /* not queued: librbd will not call back */
        rbd_aio_release(c);
        return r;
    }
    ret = rbd_wait(&w);
    if (ret < 0) {
        return (int)ret;
    }
    if (cmd == RBD_READ) {
        rbd_zero_tail(buf, bytes, ret);
    }
    return 0;
}

/* bdrv_aio_submit's end: librbd's callback thread completes the request. */
static void rbd_aio_done(rbd_completion_t c, void *opaque)
{
    BdrvAio *aio = opaque;
    ssize_t ret = rbd_aio_get_return_value(c);

    rbd_aio_release(c);
    if (aio->op == BDRV_AIO_READ) {
        rbd_zero_tail(aio->buf, aio->bytes, ret);
    }
    aio->cb(aio, ret < 0 ? (int)ret : 0);
}

static int rbd_submit_aio(BlockDriverState *bs, BdrvAio *aio)
{
    BDRVRBDState *s = bs->opaque;
    rbd_completion_t c;
    int r = rbd_aio_create_completion(aio, rbd_aio_done, &c);

    if (r < 0) {
        return r;
    }
    if (aio->op == BDRV_AIO_READ) {
        r = rbd_aio_read(s->image, aio->offset, aio->bytes, aio->buf, c);
    } else {
        r = rbd_aio_write(s->image, aio->offset, aio->bytes, aio->buf, c);
    }
    if (r < 0) {
        rbd_aio_release(c);
    }
    return r;
}

static int rbd_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     void *buf)
{
    return rbd_submit(bs->opaque, RBD_READ, offset, bytes, buf, 0);
}

static int rbd_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      const void *buf)
{
    return rbd_submit(bs->opaque, RBD_WRITE, offset, bytes, (void *)buf, 0);
}

static int rbd_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return rbd_submit(bs->opaque, RBD_DISCARD, offset, bytes, NULL, 0);
}

static int rbd_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int flags)
{
    /* without MAY_UNMAP the range must stay allocated */
    int zf = (flags & BDRV_REQ_MAY_UNMAP)
             ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;

    return rbd_submit(bs->opaque, RBD_ZEROES, offset, bytes, NULL, zf);
}

static int rbd_flush_node(BlockDriverState *bs)
{
    return rbd_submit(bs->opaque, RBD_FLUSH, 0, 0, NULL, 0);
}

static int64_t rbd_getlength(BlockDriverState *bs)
{
    BDRVRBDState *s = bs->opaque;
    uint64_t size;
    int r = rbd_get_size(s->image, &size);

    return r < 0 ? r : (int64_t)size;
}

static int rbd_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    int r = rbd_resize(s->image, size);

    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to resize file: %s", g_strerror(-r));
    }
    return r;
}

static int64_t rbd_allocated_size(BlockDriverState *bs)
{
    /* unknown (QEMU shows none for rbd either) */
    return -ENOTSUP;
}

/* ---- block status from librbd's diff (fast with object-map) ---- */

typedef struct RBDExtent {
    uint64_t offset, bytes;
    bool found, exists;
} RBDExtent;

/* Called for each changed extent in ascending order: keeps the first one
 * (or the hole before it), then stops the walk. */
static int rbd_diff_cb(uint64_t offs, size_t len, int exists, void *opaque)
{
    RBDExtent *e = opaque;

    if (offs > e->offset) {
        /* a hole up to this extent */
        e->bytes = offs - e->offset;
        e->exists = false;
    } else {
        e->bytes = offs + len - e->offset;
        e->exists = exists;
    }
    e->found = true;
    return -ECANCELED;
}

static int rbd_block_status(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map,
                            BlockDriverState **file)
{
    BDRVRBDState *s = bs->opaque;
    const int data = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID |
                     BDRV_BLOCK_ALLOCATED;
    RBDExtent e = { .offset = offset };
    uint64_t features = 0, fl = 0;
    int r;

    *map = offset;
    *file = bs;
    *pnum = bytes;
    /* without a valid fast-diff the walk reads every object: say data */
    if (rbd_get_features(s->image, &features) < 0 ||
        !(features & RBD_FEATURE_FAST_DIFF) ||
        rbd_get_flags(s->image, &fl) < 0 || (fl & RBD_FLAG_FAST_DIFF_INVALID)) {
        return data;
    }
    r = rbd_diff_iterate2(s->image, NULL, offset, bytes, true, true,
                          rbd_diff_cb, &e);
    if (r < 0 && r != -ECANCELED) {
        return data;
    }
    if (!e.found) {
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID |
               BDRV_BLOCK_ALLOCATED;
    }
    *pnum = MIN((uint64_t)bytes, e.bytes);
    if (*pnum <= 0) {
        *pnum = bytes;
        return data;
    }
    return e.exists ? data
                    : BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID |
                      BDRV_BLOCK_ALLOCATED;
}

static int rbd_get_info_node(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    bdi->unallocated_reads_zero = true;
    return 0;
}

/* ---- create ---- */

static bool rbd_create_image(const char *filename, BlockOpts *opts,
                             GError **errp)
{
    g_autoptr(GHashTable) o = bdrv_opts_new();
    RBDLocation loc = { 0 };
    rados_t cluster;
    rados_ioctx_t io;
    uint64_t size, objsize;
    int order = 0, r;
    bool ok = false;

    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp) ||
        !bdrv_opts_get_size(opts, "cluster_size", 0, &objsize, errp)) {
        return false;
    }
    if (objsize) {
        if (objsize & (objsize - 1)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "obj size needs to be power of 2");
            return false;
        }
        if (objsize < 4096) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "obj size too small");
            return false;
        }
        order = __builtin_ctzll(objsize);
    }
    if (!rbd_take_location(filename, o, &loc, errp)) {
        goto out;
    }
    if (loc.snap) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Can't use snapshot name for image creation");
        goto out;
    }
    if (rbd_connect(&loc, &cluster, &io, errp) < 0) {
        goto out;
    }
    r = rbd_create(io, loc.image, size, &order);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "error rbd create: %s",
                    g_strerror(-r));
    }
    ok = r >= 0;
    rados_ioctx_destroy(io);
    rados_shutdown(cluster);
out:
    rbd_location_clear(&loc);
    return ok;
}

BlockDriver bdrv_rbd = {
    .format_name = "rbd",
    .instance_size = sizeof(BDRVRBDState),
    .is_protocol = true,
    .open = rbd_open_node,
    .close = rbd_close_node,
    .reopen = rbd_reopen_node,
    .create = rbd_create_image,
    .pread = rbd_pread,
    .pwrite = rbd_pwrite,
    .aio_submit = rbd_submit_aio,
    .pwrite_zeroes = rbd_pwrite_zeroes,
    .pdiscard = rbd_pdiscard,
    .flush = rbd_flush_node,
    .truncate = rbd_truncate,
    .getlength = rbd_getlength,
    .get_allocated_file_size = rbd_allocated_size,
    .block_status = rbd_block_status,
    .get_info = rbd_get_info_node,
    .snapshot_list = rbd_snap_list_node,
    .snapshot_create_check = rbd_snap_create_check,
    .snapshot_delete_check = rbd_snap_delete_check,
    .snapshot_goto_check = rbd_snap_goto_check,
    .snapshot_do = rbd_snap_do,
    .snapshot_invalidate = rbd_snap_invalidate,
    .snapshot_cancel = rbd_snap_cancel,
    .snapshot_clean = rbd_snap_clean,
};
