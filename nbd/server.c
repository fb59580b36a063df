/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD server's management side: the listening socket and its accept
 * thread, the list of exports with their life cycle (QEMU's: a user
 * reference while the export is "user owned", one per client; the export
 * is gone when the last is dropped), and each client's thread, which runs
 * the handshake and then the transmission phase.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd/server-int.h"
#include "blockdev/registry.h"
#include "block/log.h"

GMutex nbd_lock;

typedef struct NbdServer {
    int listen_fd;
    int wake[2];               /* a byte here ends the accept thread */
    char *unix_path;           /* unlinked at stop */
    uint32_t max_connections;
    NbdTlsCreds *tls;          /* NULL: no TLS */
    char *authz_identity;      /* tls-authz's; NULL: any certificate */
    GThread *thread;
} NbdServer;

static NbdServer *server;      /* under nbd_lock */
static GPtrArray *exports;     /* NbdExport *, oldest first; nbd_lock */
static GPtrArray *all_clients; /* every connected NbdClient; nbd_lock */
static GCond nbd_cond;         /* a client or an export went away */
static void (*deleted_hook)(const char *id);

static bool fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, msg);
    return false;
}

void nbd_set_export_deleted_hook(void (*fn)(const char *id))
{
    deleted_hook = fn;
}

/* ---- exports ---- */

static NbdExport *find_export_by_id(const char *id)
{
    for (guint i = 0; exports && i < exports->len; i++) {
        NbdExport *e = g_ptr_array_index(exports, i);
        if (!strcmp(e->id, id)) {
            return e;
        }
    }
    return NULL;
}

static NbdExport *find_export_by_name(const char *name)
{
    for (guint i = 0; exports && i < exports->len; i++) {
        NbdExport *e = g_ptr_array_index(exports, i);
        if (!strcmp(e->name, name)) {
            return e;
        }
    }
    return NULL;
}

/* Called with nbd_lock held; the export leaves the list at once, its
 * device and hook are the caller's to finish outside the lock. */
static bool export_unref_locked(NbdExport *e)
{
    g_assert(e->refcount > 0);
    if (--e->refcount > 0) {
        return false;
    }
    g_ptr_array_remove(exports, e);
    g_cond_broadcast(&nbd_cond);
    return true;
}

static void export_free(NbdExport *e)
{
    if (deleted_hook) {
        deleted_hook(e->id);
    }
    blk_unref(e->blk);
    g_ptr_array_unref(e->clients);
    g_free(e->id);
    g_free(e->name);
    g_free(e->description);
    g_free(e->node_name);
    g_free(e);
}

/*
 * The device the export does its I/O through: the device showing the
 * node, if any (so the export follows it onto an external snapshot's
 * overlay and is drained with it by a transaction); else a private device
 * on the node (a backing or file node: nothing switches under it).
 */
static BlockBackend *export_device(BlockDriverState *bs)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs) {
            blk_ref(blk);
            return blk;
        }
    }
    return blk_new(NULL, bs);
}

static uint16_t export_tflags(const NbdExport *e, uint32_t max_conn)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                 NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_DF;

    /* a flush on any connection flushes the device every connection
     * writes to: what multi-conn promises */
    if (max_conn != 1) {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    if (e->writable) {
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    } else {
        f |= NBD_FLAG_READ_ONLY;
    }
    return f;
}

/* QEMU's checks before the node is looked up. */
static bool check_export_id(const char *id, GError **errp)
{
    if (!blockdev_id_wellformed(id)) {
        return fail(errp, "Invalid block export id");
    }
    if (find_export_by_id(id)) {
        return fail(errp, "Block export id '%s' is already in use", id);
    }
    return true;
}

/* QEMU's checks of the NBD export driver, after the node's. */
static bool check_nbd_export(const char *name, const char *description,
                             GError **errp)
{
    if (!server) {
        return fail(errp, "NBD server not running");
    }
    if (strlen(name) > NBD_MAX_STRING_SIZE) {
        return fail(errp, "export name '%s' too long", name);
    }
    if (description && strlen(description) > NBD_MAX_STRING_SIZE) {
        return fail(errp, "description '%s' too long", description);
    }
    if (find_export_by_name(name)) {
        return fail(errp, "NBD server already has export named '%s'", name);
    }
    return true;
}

static bool export_add_locked(const NbdExportOptions *o, GError **errp)
{
    const char *name = o->name ? o->name : o->node_name;
    g_autoptr(BlockDriverState) bs = NULL;
    NbdExport *e;
    int64_t size;

    if (!check_export_id(o->id, errp)) {
        return false;
    }
    bs = blockdev_lookup_bs(NULL, o->node_name, errp);
    if (!bs) {
        return false;
    }
    if (bdrv_is_read_only(bs) && o->writable) {
        return fail(errp, "Cannot export read-only node as writable");
    }
    if (o->iothread) {
        /* strata has no iothreads: none can be found (QEMU's text) */
        return fail(errp, "iothread \"%s\" not found", o->iothread);
    }
    if (!check_nbd_export(name, o->description, errp)) {
        return false;
    }
    e = g_new0(NbdExport, 1);
    e->blk = export_device(bs);
    size = blk_getlength(e->blk);
    if (size < 0) {
        blk_unref(e->blk);
        g_free(e);
        return fail(errp, "Failed to determine the NBD export's length: %s",
                    g_strerror((int)-size));
    }
    e->size = size;
    e->refcount = 1;
    e->user_owned = true;
    e->id = g_strdup(o->id);
    e->name = g_strdup(name);
    e->description = g_strdup(o->description);
    e->node_name = g_strdup(bdrv_get_node_name(bs));
    e->writable = o->writable;
    e->writethrough = o->writethrough;
    e->tflags = export_tflags(e, server->max_connections);
    e->clients = g_ptr_array_new();
    g_ptr_array_add(exports, e);
    return true;
}

bool nbd_export_check_id(const char *id, GError **errp)
{
    bool ok;

    g_mutex_lock(&nbd_lock);
    ok = check_export_id(id, errp);
    g_mutex_unlock(&nbd_lock);
    return ok;
}

bool nbd_export_add(const NbdExportOptions *o, GError **errp)
{
    bool ok;

    g_mutex_lock(&nbd_lock);
    if (!exports) {
        exports = g_ptr_array_new();
    }
    ok = export_add_locked(o, errp);
    g_mutex_unlock(&nbd_lock);
    return ok;
}

/* Drops the user's reference and disconnects the clients; nbd_lock
 * held.  True if that was the last reference. */
static bool export_shutdown_locked(NbdExport *e)
{
    for (guint i = 0; i < e->clients->len; i++) {
        NbdClient *c = g_ptr_array_index(e->clients, i);
        /* the client's threads see EOF/EPIPE and end; requests in flight
         * complete first */
        shutdown(c->fd, SHUT_RDWR);
    }
    e->user_owned = false;
    return export_unref_locked(e);
}

bool nbd_export_del(const char *id, NbdExportDelMode mode, GError **errp)
{
    NbdExport *e;
    bool last;

    g_mutex_lock(&nbd_lock);
    e = find_export_by_id(id);
    if (!e) {
        g_mutex_unlock(&nbd_lock);
        return fail(errp, "Export '%s' is not found", id);
    }
    if (!e->user_owned) {
        g_mutex_unlock(&nbd_lock);
        return fail(errp, "Export '%s' is already shutting down", id);
    }
    if (mode == NBD_EXPORT_DEL_SAFE && e->refcount > 1) {
        g_mutex_unlock(&nbd_lock);
        /* QEMU's hint goes to the human monitor only */
        return fail(errp, "export '%s' still in use", id);
    }
    last = export_shutdown_locked(e);
    g_mutex_unlock(&nbd_lock);
    if (last) {
        export_free(e);
    }
    return true;
}

/* The node the export's device shows now (it moves with an external
 * snapshot, as QEMU's export moves with its node). */
static char *current_node_name(NbdExport *e)
{
    g_autoptr(BlockDriverState) bs = blk_get_root(e->blk);

    return g_strdup(bs ? bdrv_get_node_name(bs) : e->node_name);
}

bool nbd_node_in_use(BlockDriverState *bs)
{
    bool used = false;

    g_mutex_lock(&nbd_lock);
    for (guint i = 0; exports && i < exports->len && !used; i++) {
        NbdExport *e = g_ptr_array_index(exports, i);
        g_autoptr(BlockDriverState) root = blk_get_root(e->blk);

        used = root == bs;
    }
    g_mutex_unlock(&nbd_lock);
    return used;
}

GPtrArray *nbd_export_list(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(
        (GDestroyNotify)nbd_export_info_free);

    g_mutex_lock(&nbd_lock);
    for (guint i = exports ? exports->len : 0; i-- > 0;) {
        NbdExport *e = g_ptr_array_index(exports, i);
        NbdExportInfo *info = g_new0(NbdExportInfo, 1);

        info->id = g_strdup(e->id);
        info->node_name = current_node_name(e);
        info->shutting_down = !e->user_owned;
        g_ptr_array_add(out, info);
    }
    g_mutex_unlock(&nbd_lock);
    return out;
}

void nbd_export_info_free(NbdExportInfo *info)
{
    g_free(info->id);
    g_free(info->node_name);
    g_free(info);
}

NbdExport *nbd_export_attach(const char *name, NbdClient *c)
{
    NbdExport *e;

    g_mutex_lock(&nbd_lock);
    e = find_export_by_name(name);
    if (e && e->user_owned && server) {
        e->refcount++;
        g_ptr_array_add(e->clients, c);
    } else {
        e = NULL;
    }
    g_mutex_unlock(&nbd_lock);
    return e;
}

static void export_detach(NbdClient *c)
{
    NbdExport *e = c->exp;
    bool last;

    g_mutex_lock(&nbd_lock);
    g_ptr_array_remove(e->clients, c);
    last = export_unref_locked(e);
    g_mutex_unlock(&nbd_lock);
    c->exp = NULL;
    if (last) {
        export_free(e);
    }
}

bool nbd_export_exists(const char *name, int64_t *size, uint16_t *tflags,
                       char **description)
{
    NbdExport *e;

    g_mutex_lock(&nbd_lock);
    e = find_export_by_name(name);
    if (e && e->user_owned) {
        *size = e->size;
        *tflags = e->tflags;
        *description = g_strdup(e->description);
    } else {
        e = NULL;
    }
    g_mutex_unlock(&nbd_lock);
    return e != NULL;
}

GPtrArray *nbd_export_names(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

    g_mutex_lock(&nbd_lock);
    for (guint i = 0; exports && i < exports->len; i++) {
        NbdExport *e = g_ptr_array_index(exports, i);
        if (e->user_owned) {
            g_ptr_array_add(out, g_strdup(e->name));
            g_ptr_array_add(out, g_strdup(e->description ? e->description
                                                          : ""));
        }
    }
    g_mutex_unlock(&nbd_lock);
    return out;
}

NbdTlsCreds *nbd_server_tls_creds(void)
{
    NbdTlsCreds *t;

    g_mutex_lock(&nbd_lock);
    t = server ? server->tls : NULL;
    g_mutex_unlock(&nbd_lock);
    return t;
}

char *nbd_server_authz_identity(void)
{
    char *id;

    g_mutex_lock(&nbd_lock);
    id = server ? g_strdup(server->authz_identity) : NULL;
    g_mutex_unlock(&nbd_lock);
    return id;
}

uint32_t nbd_server_max_connections(void)
{
    uint32_t n;

    g_mutex_lock(&nbd_lock);
    n = server ? server->max_connections : 0;
    g_mutex_unlock(&nbd_lock);
    return n;
}

/* ---- clients ---- */

static void client_free(NbdClient *c)
{
    g_mutex_clear(&c->send_lock);
    g_mutex_clear(&c->lock);
    g_cond_clear(&c->cond);
    g_free(c);
}

static gpointer client_thread(gpointer opaque)
{
    NbdClient *c = opaque;

    if (nbd_handshake(c)) {
        nbd_transmission(c);
    }
    nbd_tls_end(c);
    if (c->exp) {
        export_detach(c);
    }
    g_mutex_lock(&nbd_lock);
    g_ptr_array_remove(all_clients, c);
    close(c->fd);
    g_cond_broadcast(&nbd_cond);
    g_mutex_unlock(&nbd_lock);
    client_free(c);
    return NULL;
}

static void accept_one(NbdServer *s)
{
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    NbdClient *c;
    int one = 1;

    if (fd < 0) {
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = g_new0(NbdClient, 1);
    c->fd = fd;
    g_mutex_init(&c->send_lock);
    g_mutex_init(&c->lock);
    g_cond_init(&c->cond);
    g_mutex_lock(&nbd_lock);
    g_ptr_array_add(all_clients, c);
    g_mutex_unlock(&nbd_lock);
    g_thread_unref(g_thread_new("nbd-client", client_thread, c));
}

/* At max-connections, QEMU stops accepting: a new client waits in the
 * listen backlog until another one leaves. */
static bool at_limit(NbdServer *s)
{
    bool full;

    g_mutex_lock(&nbd_lock);
    full = s->max_connections && all_clients->len >= s->max_connections;
    g_mutex_unlock(&nbd_lock);
    return full;
}

static gpointer accept_thread(gpointer opaque)
{
    NbdServer *s = opaque;
    struct pollfd p[2] = {
        { .fd = s->listen_fd, .events = POLLIN },
        { .fd = s->wake[0], .events = POLLIN },
    };

    for (;;) {
        bool full = at_limit(s);
        int n;

        /* when full, look again now and then for a slot */
        p[0].events = full ? 0 : POLLIN;
        n = poll(p, 2, full ? 50 : -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (p[1].revents) {
            break;
        }
        if (p[0].revents & POLLIN) {
            accept_one(s);
        }
    }
    return NULL;
}

/* ---- listening ---- */

static int listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        fail(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail(errp, "Failed to create socket: %s", g_strerror(errno));
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 64) < 0) {
        fail(errp, "Failed to bind socket to %s: %s", path,
             g_strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_inet(const char *host, const char *port, GError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res, *ai;
    int fd = -1, rc, saved = 0;

    /* loopback unless an address is given: exports are not offered to
     * the network by accident */
    if (!host || !*host) {
        host = "127.0.0.1";
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc) {
        fail(errp, "address resolution failed for %s:%s: %s", host, port,
             gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 64) == 0) {
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fail(errp, "Failed to bind socket: %s", g_strerror(saved));
    }
    return fd;
}

bool nbd_server_start(const NbdServerAddr *addr, uint32_t max_connections,
                      const char *tls_creds, const char *tls_authz,
                      GError **errp)
{
    NbdServer *s;
    int fd;

    g_mutex_lock(&nbd_lock);
    s = server;
    g_mutex_unlock(&nbd_lock);
    if (s) {
        return fail(errp, "NBD server already running");
    }
    if (tls_creds && !nbd_tls_creds_find(tls_creds)) {
        return fail(errp, "No TLS credentials with id '%s'", tls_creds);
    }
    if (tls_authz && !tls_creds) {
        return fail(errp, "tls-authz is not supported without tls-creds");
    }
    if (tls_authz && !nbd_authz_find(tls_authz)) {
        return fail(errp, "No authorization object with id '%s'",
                    tls_authz);
    }
    fd = addr->unix_path ? listen_unix(addr->unix_path, errp)
                         : listen_inet(addr->host, addr->port, errp);
    if (fd < 0) {
        return false;
    }
    s = g_new0(NbdServer, 1);
    s->listen_fd = fd;
    if (pipe2(s->wake, O_CLOEXEC) < 0) {
        close(fd);
        g_free(s);
        return fail(errp, "pipe: %s", g_strerror(errno));
    }
    s->unix_path = g_strdup(addr->unix_path);
    s->max_connections = max_connections;
    s->tls = tls_creds ? nbd_tls_creds_find(tls_creds) : NULL;
    s->authz_identity = g_strdup(tls_authz ? nbd_authz_find(tls_authz)
                                           : NULL);
    g_mutex_lock(&nbd_lock);
    if (!all_clients) {
        all_clients = g_ptr_array_new();
    }
    if (!exports) {
        exports = g_ptr_array_new();
    }
    server = s;
    g_mutex_unlock(&nbd_lock);
    s->thread = g_thread_new("nbd-accept", accept_thread, s);
    return true;
}

bool nbd_server_is_running(void)
{
    bool running;

    g_mutex_lock(&nbd_lock);
    running = server != NULL;
    g_mutex_unlock(&nbd_lock);
    return running;
}

/* Every export shut down (hard), every client gone. */
static void close_all(void)
{
    g_autoptr(GPtrArray) done = g_ptr_array_new();

    g_mutex_lock(&nbd_lock);
    for (guint i = exports ? exports->len : 0; i-- > 0;) {
        NbdExport *e = g_ptr_array_index(exports, i);
        if (e->user_owned && export_shutdown_locked(e)) {
            g_ptr_array_add(done, e);
        }
    }
    /* clients still in the handshake belong to no export yet */
    for (guint i = 0; all_clients && i < all_clients->len; i++) {
        shutdown(((NbdClient *)g_ptr_array_index(all_clients, i))->fd,
                 SHUT_RDWR);
    }
    g_mutex_unlock(&nbd_lock);
    for (guint i = 0; i < done->len; i++) {
        export_free(g_ptr_array_index(done, i));
    }
    g_mutex_lock(&nbd_lock);
    while ((exports && exports->len) || (all_clients && all_clients->len)) {
        g_cond_wait(&nbd_cond, &nbd_lock);
    }
    g_mutex_unlock(&nbd_lock);
}

bool nbd_server_stop(GError **errp)
{
    NbdServer *s;
    char b = 0;

    g_mutex_lock(&nbd_lock);
    s = server;
    server = NULL;             /* no new client attaches from now on */
    g_mutex_unlock(&nbd_lock);
    if (!s) {
        return fail(errp, "NBD server not running");
    }
    if (write(s->wake[1], &b, 1) != 1) {
        /* the pipe cannot be full; nothing else to do */
    }
    g_thread_join(s->thread);
    close(s->listen_fd);
    close(s->wake[0]);
    close(s->wake[1]);
    if (s->unix_path) {
        unlink(s->unix_path);
    }
    g_free(s->unix_path);
    g_free(s->authz_identity);
    g_free(s);
    close_all();
    return true;
}

void nbd_server_shutdown(void)
{
    if (nbd_server_is_running()) {
        nbd_server_stop(NULL);
    } else {
        close_all();
    }
}
