/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD handshake, server side: fixed newstyle negotiation with the
 * options EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
 * LIST_META_CONTEXT and SET_META_CONTEXT (base:allocation); anything else
 * gets NBD_REP_ERR_UNSUP.  Every length is checked before it is used: a
 * malformed option gets NBD_REP_ERR_INVALID when the stream is still in
 * step, and a closed connection when it is not (bad magic, a length that
 * cannot be skipped, an unknown export with EXPORT_NAME).  The whole
 * handshake has a time limit, so a client that never finishes it cannot
 * hold a thread for ever.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "nbd/server-int.h"

/* QEMU's default handshake limit (seconds). */
#define HANDSHAKE_SECONDS 10
/* Known options carry a name or a few queries: anything this large is
 * refused (NBD_REP_ERR_TOO_BIG) after skipping it. */
#define MAX_OPTION_DATA (64 * 1024)

typedef struct Option {
    uint32_t code;
    uint32_t len;
    uint8_t *data;             /* len bytes (+1, NUL-terminated) */
} Option;

static bool send_reply(NbdClient *c, uint32_t opt, uint32_t type,
                       const void *data, uint32_t len)
{
    uint8_t hdr[20];

    nbd_put64(hdr, NBD_REP_MAGIC);
    nbd_put32(hdr + 8, opt);
    nbd_put32(hdr + 12, type);
    nbd_put32(hdr + 16, len);
    return nbd_write_full(c, hdr, sizeof(hdr)) &&
           (!len || nbd_write_full(c, data, len));
}

static bool send_ack(NbdClient *c, uint32_t opt)
{
    return send_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* An error reply; the message is for the client's user (UTF-8 text). */
static bool send_error(NbdClient *c, uint32_t opt, uint32_t type,
                       const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static bool send_error(NbdClient *c, uint32_t opt, uint32_t type,
                       const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return send_reply(c, opt, type, msg, (uint32_t)strlen(msg));
}

/* ---- option parsing: a cursor over the option's data ---- */

typedef struct Cursor {
    const uint8_t *p;
    uint32_t left;
    bool bad;                  /* ran past the end or a length too long */
} Cursor;

static uint32_t cur_u32(Cursor *k)
{
    uint32_t v;

    if (k->left < 4) {
        k->bad = true;
        return 0;
    }
    v = nbd_get32(k->p);
    k->p += 4;
    k->left -= 4;
    return v;
}

static uint16_t cur_u16(Cursor *k)
{
    uint16_t v;

    if (k->left < 2) {
        k->bad = true;
        return 0;
    }
    v = nbd_get16(k->p);
    k->p += 2;
    k->left -= 2;
    return v;
}

/* A string of len bytes (at most NBD_MAX_STRING_SIZE), NUL-terminated
 * copy; NULL (and bad) if it does not fit or holds a NUL. */
static char *cur_str(Cursor *k, uint32_t len)
{
    char *s;

    if (k->bad || len > k->left || len > NBD_MAX_STRING_SIZE ||
        memchr(k->p, 0, len)) {
        k->bad = true;
        return NULL;
    }
    s = g_strndup((const char *)k->p, len);
    k->p += len;
    k->left -= len;
    return s;
}

/* ---- the options ---- */

static bool send_info_export(NbdClient *c, uint32_t opt, int64_t size,
                             uint16_t tflags)
{
    uint8_t b[12];

    nbd_put16(b, NBD_INFO_EXPORT);
    nbd_put64(b + 2, (uint64_t)size);
    nbd_put16(b + 10, tflags);
    return send_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

static bool send_info_string(NbdClient *c, uint32_t opt, uint16_t type,
                             const char *s)
{
    size_t n = strlen(s);
    g_autofree uint8_t *b = g_malloc(2 + n);

    nbd_put16(b, type);
    memcpy(b + 2, s, n);
    return send_reply(c, opt, NBD_REP_INFO, b, (uint32_t)(2 + n));
}

static bool send_info_block_size(NbdClient *c, uint32_t opt)
{
    uint8_t b[14];

    nbd_put16(b, NBD_INFO_BLOCK_SIZE);
    /* any byte offset works (the block layer reads-modifies-writes), 4 KiB
     * is what the images like, 32 MiB the request limit */
    nbd_put32(b + 2, 1);
    nbd_put32(b + 6, 4096);
    nbd_put32(b + 10, NBD_MAX_BUFFER_SIZE);
    return send_reply(c, opt, NBD_REP_INFO, b, sizeof(b));
}

/* INFO and GO.  Returns false to close; *done when GO chose the export. */
static bool opt_info_go(NbdClient *c, const Option *o, char **meta_export,
                        bool *done)
{
    Cursor k = { o->data, o->len, false };
    g_autofree char *name = NULL;
    g_autofree char *description = NULL;
    bool want_name = false, want_desc = false;
    uint16_t n, tflags;
    int64_t size;

    name = cur_str(&k, cur_u32(&k));
    n = cur_u16(&k);
    if (k.bad || k.left != 2u * n) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "Malformed %s request",
                          o->code == NBD_OPT_GO ? "NBD_OPT_GO"
                                                : "NBD_OPT_INFO");
    }
    for (uint16_t i = 0; i < n; i++) {
        uint16_t t = cur_u16(&k);
        want_name |= t == NBD_INFO_NAME;
        want_desc |= t == NBD_INFO_DESCRIPTION;
    }
    if (!nbd_export_exists(name, &size, &tflags, &description)) {
        return send_error(c, o->code, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", name);
    }
    if ((want_name && !send_info_string(c, o->code, NBD_INFO_NAME, name)) ||
        (want_desc && description &&
         !send_info_string(c, o->code, NBD_INFO_DESCRIPTION, description)) ||
        !send_info_block_size(c, o->code) ||
        !send_info_export(c, o->code, size, tflags)) {
        return false;
    }
    if (o->code == NBD_OPT_INFO) {
        return send_ack(c, o->code);
    }
    c->exp = nbd_export_attach(name, c);
    if (!c->exp) {
        /* deleted between the two looks */
        return send_error(c, o->code, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", name);
    }
    /* meta contexts chosen for another export do not carry over */
    if (!*meta_export || strcmp(*meta_export, name)) {
        c->meta_base_allocation = false;
    }
    *done = true;
    return send_ack(c, o->code);
}

static bool opt_export_name(NbdClient *c, const Option *o)
{
    uint8_t b[8 + 2 + 124] = { 0 };
    g_autofree char *name = NULL;

    if (o->len > NBD_MAX_STRING_SIZE || memchr(o->data, 0, o->len)) {
        return false;
    }
    name = g_strndup((const char *)o->data, o->len);
    c->exp = nbd_export_attach(name, c);
    if (!c->exp) {
        return false;          /* the protocol has no error reply here */
    }
    c->meta_base_allocation = false;
    nbd_put64(b, (uint64_t)c->exp->size);
    nbd_put16(b + 8, c->exp->tflags);
    return nbd_write_full(c, b, c->no_zeroes ? 10 : sizeof(b));
}

static bool opt_list(NbdClient *c, const Option *o)
{
    g_autoptr(GPtrArray) names = NULL;

    if (o->len) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "NBD_OPT_LIST should not have length");
    }
    names = nbd_export_names();
    for (guint i = 0; i < names->len; i += 2) {
        const char *name = g_ptr_array_index(names, i);
        const char *desc = g_ptr_array_index(names, i + 1);
        size_t nl = strlen(name), dl = strlen(desc);
        g_autofree uint8_t *b = g_malloc(4 + nl + dl);

        nbd_put32(b, (uint32_t)nl);
        memcpy(b + 4, name, nl);
        memcpy(b + 4 + nl, desc, dl);
        if (!send_reply(c, o->code, NBD_REP_SERVER, b,
                        (uint32_t)(4 + nl + dl))) {
            return false;
        }
    }
    return send_ack(c, o->code);
}

static bool opt_structured(NbdClient *c, const Option *o)
{
    if (o->len) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "NBD_OPT_STRUCTURED_REPLY should not have length");
    }
    if (c->structured) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "structured reply already negotiated");
    }
    c->structured = true;
    return send_ack(c, o->code);
}

static bool send_meta_context(NbdClient *c, uint32_t opt)
{
    size_t n = strlen(NBD_META_BASE_ALLOCATION);
    uint8_t b[4 + 64];

    nbd_put32(b, NBD_META_ID_BASE_ALLOCATION);
    memcpy(b + 4, NBD_META_BASE_ALLOCATION, n);
    return send_reply(c, opt, NBD_REP_META_CONTEXT, b, (uint32_t)(4 + n));
}

/* LIST_META_CONTEXT and SET_META_CONTEXT: base:allocation is the one
 * context we have ("base:" lists it too). */
static bool opt_meta(NbdClient *c, const Option *o, char **meta_export)
{
    bool set = o->code == NBD_OPT_SET_META_CONTEXT;
    Cursor k = { o->data, o->len, false };
    g_autofree char *name = NULL;
    g_autofree char *desc = NULL;
    bool match = false;
    uint32_t nq;
    int64_t size;
    uint16_t tflags;

    if (!c->structured) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "request structured replies first");
    }
    name = cur_str(&k, cur_u32(&k));
    nq = cur_u32(&k);
    for (uint32_t i = 0; i < nq && !k.bad; i++) {
        g_autofree char *q = cur_str(&k, cur_u32(&k));

        if (q && (!strcmp(q, NBD_META_BASE_ALLOCATION) ||
                  (!set && !strcmp(q, "base:")))) {
            match = true;
        }
    }
    if (k.bad || k.left) {
        return send_error(c, o->code, NBD_REP_ERR_INVALID,
                          "Malformed %s request",
                          set ? "NBD_OPT_SET_META_CONTEXT"
                              : "NBD_OPT_LIST_META_CONTEXT");
    }
    if (!nbd_export_exists(name, &size, &tflags, &desc)) {
        return send_error(c, o->code, NBD_REP_ERR_UNKNOWN,
                          "export '%s' not present", name);
    }
    if (!set && nq == 0) {
        match = true;          /* an empty list asks for every context */
    }
    if (set) {
        c->meta_base_allocation = match;
        g_free(*meta_export);
        *meta_export = g_strdup(name);
    }
    if (match && !send_meta_context(c, o->code)) {
        return false;
    }
    return send_ack(c, o->code);
}

/* ---- the loop ---- */

static bool read_option(NbdClient *c, Option *o)
{
    uint8_t hdr[16];

    if (!nbd_read_full(c, hdr, sizeof(hdr)) ||
        nbd_get64(hdr) != NBD_OPTS_MAGIC) {
        return false;
    }
    o->code = nbd_get32(hdr + 8);
    o->len = nbd_get32(hdr + 12);
    if (o->len > NBD_MAX_BUFFER_SIZE) {
        return false;          /* QEMU gives up on such a length too */
    }
    if (o->len > MAX_OPTION_DATA) {
        o->data = NULL;
        return nbd_discard_input(c, o->len);
    }
    o->data = g_malloc(o->len + 1);
    o->data[o->len] = 0;
    return nbd_read_full(c, o->data, o->len);
}

/* Before TLS on a server that requires it: STARTTLS, ABORT, nothing
 * else.  false to close. */
static bool option_before_tls(NbdClient *c, const Option *o,
                              NbdTlsCreds *creds)
{
    switch (o->code) {
    case NBD_OPT_STARTTLS:
        if (o->len) {
            return send_error(c, o->code, NBD_REP_ERR_INVALID,
                              "NBD_OPT_STARTTLS should not have length");
        }
        /* the acknowledgement is the last byte in the clear */
        return send_ack(c, o->code) && nbd_tls_start(c, creds);
    case NBD_OPT_EXPORT_NAME:
        return false;          /* no error reply possible: just close */
    case NBD_OPT_ABORT:
        send_ack(c, o->code);
        return false;
    default:
        return send_error(c, o->code, NBD_REP_ERR_TLS_REQD,
                          "Option 0x%x not permitted before TLS", o->code);
    }
}

/* One option; false to close.  *done when transmission begins. */
static bool handle_option(NbdClient *c, const Option *o, bool fixed,
                          char **meta_export, bool *done)
{
    NbdTlsCreds *creds = nbd_server_tls_creds();

    if (creds && !c->tls && o->data) {
        return fixed && option_before_tls(c, o, creds);
    }
    if (!o->data) {
        return send_error(c, o->code, NBD_REP_ERR_TOO_BIG,
                          "option of %u bytes is too large", o->len);
    }
    switch (o->code) {
    case NBD_OPT_EXPORT_NAME:
        *done = opt_export_name(c, o);
        return *done;
    case NBD_OPT_ABORT:
        send_ack(c, o->code);
        return false;
    case NBD_OPT_LIST:
        return opt_list(c, o);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, o, meta_export, done);
    case NBD_OPT_STRUCTURED_REPLY:
        return opt_structured(c, o);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta(c, o, meta_export);
    case NBD_OPT_STARTTLS:
        if (c->tls) {
            return send_error(c, o->code, NBD_REP_ERR_INVALID,
                              "TLS already enabled");
        }
        return send_error(c, o->code, NBD_REP_ERR_POLICY,
                          "TLS not configured");
    default:
        /* an old-style client cannot read an error reply */
        return fixed && send_error(c, o->code, NBD_REP_ERR_UNSUP,
                                   "Unsupported option %u", o->code);
    }
}

static void set_recv_timeout(int fd, int seconds)
{
    struct timeval tv = { .tv_sec = seconds };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

bool nbd_handshake(NbdClient *c)
{
    int64_t deadline = g_get_monotonic_time() +
                       HANDSHAKE_SECONDS * G_USEC_PER_SEC;
    g_autofree char *meta_export = NULL;
    uint8_t hello[18];
    uint8_t cflags[4];
    bool fixed, done = false;
    uint32_t flags;

    set_recv_timeout(c->fd, HANDSHAKE_SECONDS);
    nbd_put64(hello, NBD_MAGIC);
    nbd_put64(hello + 8, NBD_OPTS_MAGIC);
    nbd_put16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (!nbd_write_full(c, hello, sizeof(hello)) ||
        !nbd_read_full(c, cflags, sizeof(cflags))) {
        return false;
    }
    flags = nbd_get32(cflags);
    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE |
                            NBD_FLAG_C_NO_ZEROES)) {
        return false;          /* flags we do not know: no common ground */
    }
    fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    while (!done) {
        Option o = { 0 };
        bool ok;

        if (g_get_monotonic_time() > deadline || !read_option(c, &o)) {
            g_free(o.data);
            return false;
        }
        ok = handle_option(c, &o, fixed, &meta_export, &done);
        g_free(o.data);
        if (!ok) {
            return false;
        }
    }
    set_recv_timeout(c->fd, 0);
    return true;
}
