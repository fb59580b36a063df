/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD client protocol driver (driver=nbd) on libnbd: an export of an
 * NBD server (qemu-nbd, nbdkit, strata-daemon, qemu-storage-daemon) as
 * the protocol layer under a format node, like a host file.
 *
 * Where the export is, in QEMU 7.2's spellings:
 *   options   server.type=unix,server.path=P | server.type=inet,
 *             server.host=H,server.port=N; export=NAME
 *   filename  nbd+unix:///NAME?socket=P, nbd://H[:N]/NAME (the NBD URI
 *             standard, parsed by libnbd), and the legacy
 *             nbd:unix:P[:exportname=NAME], nbd:H:N[:exportname=NAME]
 *
 * libnbd handles are thread-safe; requests from several threads on one
 * connection are serialised by libnbd, which is what a single NBD
 * connection gives anyway.  Requests larger than NBD servers accept
 * (32 MiB for data, QEMU's limit too) are split here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <libnbd.h>

#include "block/block_int.h"
#include "block/nbd-client-tls.h"
#include "block/drivers.h"

/* Largest data request sent at once (qemu-nbd and nbdkit accept it). */
#define NBD_MAX_DATA (32u << 20)
/* Largest zero or trim request: NBD lengths are 32 bits. */
#define NBD_MAX_RANGE (1u << 30)
#define NBD_DEFAULT_PORT "10809"

typedef struct BDRVNBDState {
    struct nbd_handle *nbd;
    int64_t size;
    bool can_flush, can_trim, can_zero, can_fast_zero, have_alloc;
} BDRVNBDState;

/* The errno of libnbd's last failure in this thread (EIO if none). */
static int nbd_err(void)
{
    int e = nbd_get_errno();

    return e > 0 ? -e : -EIO;
}

/* Where to connect, from options or a filename. */
typedef struct NBDTarget {
    char *uri;                 /* an NBD URI for libnbd, or NULL */
    char *path;                /* unix socket */
    char *host, *port;         /* inet */
    char *export;
    char *tls_creds;           /* id of --object tls-creds-*, or NULL */
} NBDTarget;

static void target_clear(NBDTarget *t)
{
    g_free(t->tls_creds);
    g_free(t->uri);
    g_free(t->path);
    g_free(t->host);
    g_free(t->port);
    g_free(t->export);
}

/* nbd:unix:PATH[:exportname=E] and nbd:HOST:PORT[:exportname=E] */
static bool parse_legacy(const char *name, NBDTarget *t, GError **errp)
{
    const char *rest = name + strlen("nbd:");
    const char *ex = strstr(rest, ":exportname=");
    g_autofree char *addr = ex ? g_strndup(rest, ex - rest) : g_strdup(rest);

    if (ex) {
        t->export = g_strdup(ex + strlen(":exportname="));
    }
    if (g_str_has_prefix(addr, "unix:")) {
        t->path = g_strdup(addr + strlen("unix:"));
        if (!*t->path) {
            goto bad;
        }
        return true;
    }
    {
        char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || !colon[1]) {
            goto bad;
        }
        t->host = g_strndup(addr, colon - addr);
        t->port = g_strdup(colon + 1);
        return true;
    }
bad:
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "No valid URL specified");
    return false;
}

/* libnbd's last error on this thread into errp; false. */
static bool libnbd_failed(GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "%s",
                nbd_get_error() ? nbd_get_error() : "NBD error");
    return false;
}

/* QEMU's older flat options: path=P (unix), or host=H[,port=N] (inet);
 * mixing them with server.* is refused as QEMU does. */
static bool parse_flat(BlockOpts *options, char **type, char **path,
                       char **host, char **port, GError **errp)
{
    g_autofree char *fpath = bdrv_opts_take(options, "path");
    g_autofree char *fhost = bdrv_opts_take(options, "host");
    g_autofree char *fport = bdrv_opts_take(options, "port");

    if (!fpath && !fhost) {
        if (fport) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter 'server.type' is missing");
            return false;
        }
        return true;
    }
    if (*path || *host || *port) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot use 'server' and path/host/port at the same "
                    "time");
        return false;
    }
    if (fpath && fhost) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "path and host may not be used at the same time");
        return false;
    }
    if (fpath && fport) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "port may not be used without host");
        return false;
    }
    *type = g_strdup(fpath ? "unix" : "inet");
    *path = g_steal_pointer(&fpath);
    *host = g_steal_pointer(&fhost);
    *port = g_steal_pointer(&fport);
    return true;
}

static bool parse_target(BlockDriverState *bs, BlockOpts *options,
                         NBDTarget *t, GError **errp)
{
    g_autofree char *type = bdrv_opts_take(options, "server.type");
    g_autofree char *path = bdrv_opts_take(options, "server.path");
    g_autofree char *host = bdrv_opts_take(options, "server.host");
    g_autofree char *port = bdrv_opts_take(options, "server.port");
    g_autofree char *export = bdrv_opts_take(options, "export");
    g_autofree char *fname = bdrv_opts_take(options, "filename");
    g_autofree char *tls_hostname = bdrv_opts_take(options, "tls-hostname");
    const char *name = fname ? fname : bs->filename;

    t->tls_creds = bdrv_opts_take(options, "tls-creds");
    if (tls_hostname) {
        /* libnbd checks the name it connected to (none on a unix
         * socket) and, before 1.22, cannot be given another */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "tls-hostname is not supported: the server's "
                    "certificate is checked against the host connected to");
        return false;
    }
    if (!type && !(name && *name) && !parse_flat(options, &type, &path,
                                                 &host, &port, errp)) {
        return false;
    }

    if (name && *name && !type) {
        if (g_str_has_prefix(name, "nbd://") ||
            g_str_has_prefix(name, "nbd+unix://") ||
            g_str_has_prefix(name, "nbd+tcp://")) {
            /* nbd+tcp is QEMU's name for what the URI standard calls
             * nbd */
            t->uri = g_str_has_prefix(name, "nbd+tcp://")
                     ? g_strconcat("nbd://", name + strlen("nbd+tcp://"),
                                   NULL)
                     : g_strdup(name);
            return true;
        }
        if (g_str_has_prefix(name, "nbd:")) {
            if (!parse_legacy(name, t, errp)) {
                return false;
            }
            if (export && !t->export) {
                t->export = g_steal_pointer(&export);
            }
            return true;
        }
    }
    t->export = g_steal_pointer(&export);
    if (!type) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'server.type' is missing");
        return false;
    }
    if (!strcmp(type, "unix")) {
        if (!path) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter 'server.path' is missing");
            return false;
        }
        t->path = g_steal_pointer(&path);
    } else if (!strcmp(type, "inet")) {
        if (!host) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter 'server.host' is missing");
            return false;
        }
        t->host = g_steal_pointer(&host);
        t->port = port ? g_steal_pointer(&port) : g_strdup(NBD_DEFAULT_PORT);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'server.type' does not accept value '%s'",
                    type);
        return false;
    }
    return true;
}

/* TLS with the credentials named (required then, as in QEMU: a server
 * without it is refused). */
static bool setup_tls(BDRVNBDState *s, const char *id, bool unix_socket,
                      GError **errp)
{
    const NbdClientCreds *c = nbd_client_creds_for_client(id, errp);
    g_autofree char *psk = NULL;

    if (!c) {
        return false;
    }
    if (!c->psk && c->verify_peer && unix_socket) {
        /* libnbd would check the chain but no name: refused, as QEMU
         * refuses it without tls-hostname */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "No hostname for certificate validation");
        return false;
    }
    if (nbd_set_tls(s->nbd, LIBNBD_TLS_REQUIRE) < 0) {
        goto fail;
    }
    if (c->psk) {
        psk = g_build_filename(c->dir, "keys.psk", NULL);
        if (nbd_set_tls_psk_file(s->nbd, psk) < 0 ||
            nbd_set_tls_username(s->nbd, c->username) < 0) {
            goto fail;
        }
    } else if (nbd_set_tls_certificates(s->nbd, c->dir) < 0 ||
               nbd_set_tls_verify_peer(s->nbd, c->verify_peer) < 0) {
        goto fail;
    }
    return true;
fail:
    return libnbd_failed(errp);
}

static bool connect_target(BDRVNBDState *s, const NBDTarget *t,
                           GError **errp)
{
    int r;

    /* allocation status for block_status (qemu-img map, convert) */
    if (nbd_add_meta_context(s->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0) {
        goto fail;
    }
    if (t->tls_creds &&
        !setup_tls(s, t->tls_creds,
                   t->path || (t->uri && g_str_has_prefix(t->uri,
                                                          "nbd+unix:")),
                   errp)) {
        return false;
    }
    if (t->uri) {
        /* only plain nbd and nbd+unix, no ssh tunnels; TLS only with
         * tls-creds, as QEMU (its URIs have no nbds) */
        if (nbd_set_uri_allow_transports(s->nbd,
                LIBNBD_ALLOW_TRANSPORT_TCP | LIBNBD_ALLOW_TRANSPORT_UNIX) < 0 ||
            nbd_set_uri_allow_tls(s->nbd, t->tls_creds ? LIBNBD_TLS_ALLOW
                                                       : LIBNBD_TLS_DISABLE)
            < 0) {
            goto fail;
        }
        r = nbd_connect_uri(s->nbd, t->uri);
    } else {
        if (nbd_set_export_name(s->nbd, t->export ? t->export : "") < 0) {
            goto fail;
        }
        r = t->path ? nbd_connect_unix(s->nbd, t->path)
                    : nbd_connect_tcp(s->nbd, t->host, t->port);
    }
    if (r < 0) {
        goto fail;
    }
    return true;
fail:
    return libnbd_failed(errp);
}

/* The name QEMU shows for a node opened from options: no "/EXPORT" when
 * the export has no name. */
static char *display_name(const NBDTarget *t)
{
    const char *ex = t->export ? t->export : "";
    const char *slash = *ex ? "/" : "";

    if (t->uri) {
        return g_strdup(t->uri);
    }
    if (t->path) {
        return g_strdup_printf("nbd+unix://%s%s?socket=%s", slash, ex,
                               t->path);
    }
    return g_strdup_printf("nbd://%s:%s%s%s", t->host, t->port, slash, ex);
}

static int nbd_open(BlockDriverState *bs, BlockOpts *options, int flags,
                    GError **errp)
{
    BDRVNBDState *s = bs->opaque;
    NBDTarget t = { 0 };
    bool ok;

    ok = parse_target(bs, options, &t, errp);
    if (ok) {
        s->nbd = nbd_create();
        if (!s->nbd) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "%s",
                        nbd_get_error());
            ok = false;
        }
    }
    ok = ok && connect_target(s, &t, errp);
    if (!ok) {
        target_clear(&t);
        nbd_close(s->nbd);
        s->nbd = NULL;
        return -EINVAL;
    }
    if ((flags & BDRV_O_RDWR) && nbd_is_read_only(s->nbd) == 1) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not open '%s': the NBD export is read-only",
                    bs->filename);
        target_clear(&t);
        nbd_close(s->nbd);
        s->nbd = NULL;
        return -EACCES;
    }
    s->size = nbd_get_size(s->nbd);
    s->can_flush = nbd_can_flush(s->nbd) == 1;
    s->can_trim = nbd_can_trim(s->nbd) == 1;
    s->can_zero = nbd_can_zero(s->nbd) == 1;
    s->can_fast_zero = nbd_can_fast_zero(s->nbd) == 1;
    s->have_alloc = nbd_can_meta_context(s->nbd,
                                         LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
    bs->request_alignment = 1;
    if (!*bs->filename) {
        /* opened from options: named by the URI QEMU would show */
        g_free(bs->filename);
        bs->filename = display_name(&t);
    }
    target_clear(&t);
    return s->size < 0 ? nbd_err() : 0;
}

static void nbd_close_bs(BlockDriverState *bs)
{
    BDRVNBDState *s = bs->opaque;

    if (s->nbd) {
        /* a clean NBD_CMD_DISC: the server sees an orderly goodbye */
        nbd_shutdown(s->nbd, 0);
        nbd_close(s->nbd);
        s->nbd = NULL;
    }
}

static int nbd_pread_bs(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        void *buf)
{
    BDRVNBDState *s = bs->opaque;

    while (bytes > 0) {
        int64_t n = MIN(bytes, NBD_MAX_DATA);
        if (nbd_pread(s->nbd, buf, n, offset, 0) < 0) {
            return nbd_err();
        }
        buf = (uint8_t *)buf + n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int nbd_pwrite_bs(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         const void *buf)
{
    BDRVNBDState *s = bs->opaque;

    while (bytes > 0) {
        int64_t n = MIN(bytes, NBD_MAX_DATA);
        if (nbd_pwrite(s->nbd, buf, n, offset, 0) < 0) {
            return nbd_err();
        }
        buf = (const uint8_t *)buf + n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int nbd_pwrite_zeroes_bs(BlockDriverState *bs, int64_t offset,
                                int64_t bytes, int flags)
{
    BDRVNBDState *s = bs->opaque;
    uint32_t f = 0;

    /* without zero support the generic layer writes a zeroed buffer */
    if (!s->can_zero) {
        return -ENOTSUP;
    }
    if (!(flags & BDRV_REQ_MAY_UNMAP)) {
        f |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        if (!s->can_fast_zero) {
            return -ENOTSUP;
        }
        f |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    while (bytes > 0) {
        int64_t n = MIN(bytes, NBD_MAX_RANGE);
        if (nbd_zero(s->nbd, n, offset, f) < 0) {
            return nbd_err();
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int nbd_pdiscard_bs(BlockDriverState *bs, int64_t offset,
                           int64_t bytes)
{
    BDRVNBDState *s = bs->opaque;

    if (!s->can_trim) {
        return -ENOTSUP;
    }
    while (bytes > 0) {
        int64_t n = MIN(bytes, NBD_MAX_RANGE);
        if (nbd_trim(s->nbd, n, offset, 0) < 0) {
            return nbd_err();
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int nbd_flush_bs(BlockDriverState *bs)
{
    BDRVNBDState *s = bs->opaque;

    /* a server without flush writes through */
    if (!s->can_flush) {
        return 0;
    }
    return nbd_flush(s->nbd, 0) < 0 ? nbd_err() : 0;
}

static int64_t nbd_getlength(BlockDriverState *bs)
{
    return ((BDRVNBDState *)bs->opaque)->size;
}

/* The first extent base:allocation reports for a request. */
typedef struct Extent {
    uint64_t length;
    uint32_t flags;
    bool seen;
} Extent;

static int extent_cb(void *opaque, const char *metacontext, uint64_t offset,
                     uint32_t *entries, size_t nr_entries, int *error)
{
    Extent *e = opaque;

    if (!e->seen && nr_entries >= 2 &&
        !strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION)) {
        e->length = entries[0];
        e->flags = entries[1];
        e->seen = true;
    }
    return 0;
}

static int nbd_block_status_bs(BlockDriverState *bs, int64_t offset,
                               int64_t bytes, int64_t *pnum, int64_t *map,
                               BlockDriverState **file)
{
    BDRVNBDState *s = bs->opaque;
    Extent e = { 0 };
    nbd_extent_callback cb = { .callback = extent_cb, .user_data = &e };
    int ret = BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;

    *map = offset;
    *file = bs;
    *pnum = bytes;
    if (!s->have_alloc) {
        return ret | BDRV_BLOCK_DATA;
    }
    bytes = MIN(bytes, NBD_MAX_RANGE);
    if (nbd_block_status(s->nbd, bytes, offset, cb,
                         LIBNBD_CMD_FLAG_REQ_ONE) < 0) {
        return nbd_err();
    }
    if (!e.seen || !e.length) {
        *pnum = bytes;
        return ret | BDRV_BLOCK_DATA;
    }
    *pnum = MIN((int64_t)e.length, bytes);
    if (e.flags & LIBNBD_STATE_ZERO) {
        ret |= BDRV_BLOCK_ZERO;
    }
    if (!(e.flags & LIBNBD_STATE_HOLE)) {
        ret |= BDRV_BLOCK_DATA;
    }
    return ret;
}

BlockDriver bdrv_nbd = {
    .format_name = "nbd",
    .instance_size = sizeof(BDRVNBDState),
    .is_protocol = true,
    .creates_in_place = true,
    .open = nbd_open,
    .close = nbd_close_bs,
    .pread = nbd_pread_bs,
    .pwrite = nbd_pwrite_bs,
    .pwrite_zeroes = nbd_pwrite_zeroes_bs,
    .pdiscard = nbd_pdiscard_bs,
    .flush = nbd_flush_bs,
    .getlength = nbd_getlength,
    .block_status = nbd_block_status_bs,
};
