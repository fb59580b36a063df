/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the NBD server: the export and client structures shared by the
 * server and exports (nbd/server.c), the handshake
 * (nbd/server-handshake.c) and the transmission phase
 * (nbd/server-conn.c), and the socket helpers (nbd/server-io.c).
 *
 * Locking: nbd_lock protects the export list, every export's refcount,
 * user_owned flag and client list, and the server's client list.  A
 * client's own fields are its threads' (see NbdClient).
 */
#ifndef STRATA_NBD_SERVER_INT_H
#define STRATA_NBD_SERVER_INT_H

#include "nbd/server.h"
#include "nbd/nbd-proto.h"
#include "block/block-backend.h"

typedef struct NbdExport {
    int refcount;              /* the user's (while user_owned) + clients' */
    bool user_owned;           /* false once shutting down */
    char *id, *name, *description, *node_name;
    bool writable, writethrough;
    BlockBackend *blk;         /* a reference */
    int64_t size;              /* fixed when the export is made */
    uint16_t tflags;           /* transmission flags */
    GPtrArray *clients;        /* NbdClient *, attached to this export */
} NbdExport;

typedef struct NbdClient {
    int fd;
    void *tls;                 /* gnutls_session_t once STARTTLS is done */
    NbdExport *exp;            /* a reference, once the handshake chose it */
    /* negotiated; written by the reader thread before workers exist */
    bool structured;
    bool no_zeroes;
    bool meta_base_allocation;

    GMutex send_lock;          /* one reply on the socket at a time */
    GMutex lock;               /* protects what follows */
    GCond cond;
    int inflight;              /* requests handed to workers */
    bool dead;                 /* the socket failed; stop */
    GThreadPool *pool;
} NbdClient;

extern GMutex nbd_lock;

/* nbd/server.c */
/* The export called name that accepts clients, with a client reference
 * taken and c attached to it; NULL if none. */
NbdExport *nbd_export_attach(const char *name, NbdClient *c);
/* Whether an export called name accepts clients (for INFO and
 * SET_META_CONTEXT, which do not attach). */
bool nbd_export_exists(const char *name, int64_t *size, uint16_t *tflags,
                       char **description);
/* The names (and descriptions) of the exports for NBD_OPT_LIST. */
GPtrArray *nbd_export_names(void);
uint32_t nbd_server_max_connections(void);

/* nbd/server-handshake.c: true when the client chose an export (c->exp
 * set) and transmission begins; false: close the connection. */
bool nbd_handshake(NbdClient *c);

/* nbd/server-conn.c: the transmission phase until the client leaves. */
void nbd_transmission(NbdClient *c);

/* nbd/server-io.c: whole reads and writes on the client's blocking
 * socket, through its TLS session once there is one; false on EOF or
 * error.  Writes never raise SIGPIPE.  One thread may read while another
 * writes (GnuTLS allows that too). */
bool nbd_read_full(NbdClient *c, void *buf, size_t len);
bool nbd_write_full(NbdClient *c, const void *buf, size_t len);
bool nbd_discard_input(NbdClient *c, uint64_t len);
/* The n vectors, whole (iov is changed). */
struct iovec;
bool nbd_send_iov(NbdClient *c, struct iovec *iov, int n);

/* nbd/server-tls.c */
NbdTlsCreds *nbd_tls_creds_find(const char *id);
/* The server's credentials (NULL: no TLS). */
NbdTlsCreds *nbd_server_tls_creds(void);
/* After STARTTLS was acknowledged: the TLS handshake on c's socket, the
 * client's certificate checked if the credentials ask for it.  false:
 * close (the reason is logged). */
bool nbd_tls_start(NbdClient *c, NbdTlsCreds *creds);
/* The identity of an authz-simple object, or NULL. */
const char *nbd_authz_find(const char *id);
/* The identity the server's tls-authz requires (NULL: any), a copy. */
char *nbd_server_authz_identity(void);
void nbd_tls_end(NbdClient *c);
/* Host errno (positive) to the NBD error number. */
uint32_t nbd_errno_to_wire(int err);

static inline void nbd_put16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static inline void nbd_put32(uint8_t *p, uint32_t v)
{
    nbd_put16(p, v >> 16);
    nbd_put16(p + 2, v);
}

static inline void nbd_put64(uint8_t *p, uint64_t v)
{
    nbd_put32(p, v >> 32);
    nbd_put32(p + 4, v);
}

static inline uint16_t nbd_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t nbd_get32(const uint8_t *p)
{
    return (uint32_t)nbd_get16(p) << 16 | nbd_get16(p + 2);
}

static inline uint64_t nbd_get64(const uint8_t *p)
{
    return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}

#endif
