/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The strata intent header extension of qcow2 (format and rules in
 * include/block/qcow2-intent.h): encoding, finding and removing it in raw
 * header bytes, setting and clearing it on an open node, and the open
 * hook that hands a pending image to the intent log's recovery.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "byteorder.h"
#include "block/log.h"
#include "block/qcow2-intent.h"

#define INTENT_FIXED_LEN 36
/* A journal path longer than this does not fit beside a 512-byte header
 * cluster's other content anyway; refusing it keeps parsing simple. */
#define INTENT_MAX_DIR 4096

static Qcow2IntentRecoverFn recover_fn;

void qcow2_intent_set_recovery(Qcow2IntentRecoverFn fn)
{
    recover_fn = fn;
}

void qcow2_intent_free(Qcow2Intent *in)
{
    if (in) {
        g_free(in->journal_dir);
        g_free(in);
    }
}

void qcow2_intent_id_hex(const uint8_t *id, char *buf)
{
    for (int i = 0; i < QCOW2_INTENT_ID_LEN; i++) {
        g_snprintf(buf + 2 * i, 3, "%02x", id[i]);
    }
}

uint8_t *qcow2_intent_encode(const Qcow2Intent *in, uint32_t *len)
{
    size_t dlen = strlen(in->journal_dir);
    uint8_t *buf = g_malloc0(INTENT_FIXED_LEN + dlen);

    memcpy(buf, in->txid, QCOW2_INTENT_ID_LEN);
    memcpy(buf + 16, in->journal_id, QCOW2_INTENT_ID_LEN);
    be32_write(buf + 32, (uint32_t)dlen);
    memcpy(buf + INTENT_FIXED_LEN, in->journal_dir, dlen);
    *len = (uint32_t)(INTENT_FIXED_LEN + dlen);
    return buf;
}

static int decode(const uint8_t *p, uint32_t len, Qcow2Intent **out,
                  GError **errp)
{
    uint32_t dlen;
    Qcow2Intent *in;

    if (len < INTENT_FIXED_LEN || (dlen = be32_read(p + 32)) == 0 ||
        dlen > INTENT_MAX_DIR || dlen != len - INTENT_FIXED_LEN ||
        memchr(p + INTENT_FIXED_LEN, 0, dlen)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "strata intent header extension is malformed "
                    "(length %u)", len);
        return -EINVAL;
    }
    in = g_new0(Qcow2Intent, 1);
    memcpy(in->txid, p, QCOW2_INTENT_ID_LEN);
    memcpy(in->journal_id, p + 16, QCOW2_INTENT_ID_LEN);
    in->journal_dir = g_strndup((const char *)p + INTENT_FIXED_LEN, dlen);
    *out = in;
    return 0;
}

bool qcow2_intent_ext_area(const uint8_t *hdr, size_t len, uint32_t *start,
                           uint32_t *end)
{
    uint32_t version, cbits, hlen;
    uint64_t backing_off;

    if (len < 104 || be32_read(hdr) != QCOW_MAGIC) {
        return false;
    }
    version = be32_read(hdr + 4);
    cbits = be32_read(hdr + 20);
    if (version < 2 || version > 3 || cbits < QCOW2_MIN_CLUSTER_BITS ||
        cbits > QCOW2_MAX_CLUSTER_BITS) {
        return false;
    }
    hlen = version == 2 ? QCOW2_V2_HEADER_LENGTH : be32_read(hdr + 100);
    backing_off = be64_read(hdr + 8);
    *end = backing_off ? (uint32_t)MIN(backing_off, 1ULL << cbits)
                       : 1U << cbits;
    *end = (uint32_t)MIN((size_t)*end, len);
    *start = hlen;
    return hlen >= QCOW2_V2_HEADER_LENGTH && hlen <= *end;
}

/* Calls fn for each extension in the area; stops when fn returns false.
 * Returns false when the list runs past the area (open reports that). */
static bool walk(const uint8_t *hdr, uint32_t start, uint32_t end,
                 bool (*fn)(uint32_t magic, uint32_t off, uint32_t len,
                            void *opaque),
                 void *opaque)
{
    uint64_t off = start;

    while (off + 8 <= end) {
        uint32_t magic = be32_read(hdr + off), len = be32_read(hdr + off + 4);
        if (magic == QCOW2_EXT_END) {
            return true;
        }
        if (len > end - off - 8) {
            return false;
        }
        if (!fn(magic, (uint32_t)off, len, opaque)) {
            return true;
        }
        off += 8 + ((len + 7ULL) & ~7ULL);
    }
    return true;
}

typedef struct {
    uint32_t off, len;
    bool found;
} FindCtx;

static bool find_cb(uint32_t magic, uint32_t off, uint32_t len, void *opaque)
{
    FindCtx *c = opaque;

    if (magic != QCOW2_EXT_STRATA_INTENT) {
        return true;
    }
    c->off = off;
    c->len = len;
    c->found = true;
    return false;
}

int qcow2_intent_parse(const uint8_t *hdr, size_t len, Qcow2Intent **out,
                       GError **errp)
{
    uint32_t start, end;
    FindCtx c = { 0 };

    *out = NULL;
    if (!qcow2_intent_ext_area(hdr, len, &start, &end) ||
        !walk(hdr, start, end, find_cb, &c) || !c.found) {
        return 0;
    }
    return decode(hdr + c.off + 8, c.len, out, errp) < 0 ? -EINVAL : 1;
}

typedef struct {
    const uint8_t *src;
    uint8_t *dst;           /* a copy of the area, from its start */
    uint32_t start, pos;    /* pos: absolute offset of the next entry */
    bool removed;
} StripCtx;

static bool strip_cb(uint32_t magic, uint32_t off, uint32_t len, void *opaque)
{
    StripCtx *c = opaque;
    uint32_t whole = 8 + ((len + 7) & ~7U);

    if (magic == QCOW2_EXT_STRATA_INTENT) {
        c->removed = true;
        return true;
    }
    memcpy(c->dst + (c->pos - c->start), c->src + off, whole);
    c->pos += whole;
    return true;
}

bool qcow2_intent_strip(uint8_t *hdr, size_t len, bool set_dirty)
{
    uint32_t start, end;
    g_autofree uint8_t *area = NULL;
    StripCtx c = { .src = hdr };

    if (!qcow2_intent_ext_area(hdr, len, &start, &end)) {
        return false;
    }
    area = g_malloc0(end - start);
    c.dst = area;
    c.start = c.pos = start;
    if (!walk(hdr, start, end, strip_cb, &c) || !c.removed) {
        return false;
    }
    /* c.pos + 8 <= end: what was kept is smaller than what was there */
    memset(hdr + start, 0, end - start);
    memcpy(hdr + start, area, c.pos - start);   /* END: the zeroes after */
    if (be32_read(hdr + 4) >= 3) {
        be64_write(hdr + 88, be64_read(hdr + 88) &
                   ~QCOW2_AUTOCLEAR_STRATA_INTENT);
        if (set_dirty) {
            be64_write(hdr + 72, be64_read(hdr + 72) | QCOW2_INCOMPAT_DIRTY);
        }
    }
    return true;
}

/* ---- on an open node ---- */

static bool is_qcow2(BlockDriverState *bs)
{
    return bs && bs->drv && strcmp(bs->drv->format_name, "qcow2") == 0;
}

static bool has_ext(BDRVQcow2State *s)
{
    if (s->autoclear_features & QCOW2_AUTOCLEAR_STRATA_INTENT) {
        return true;
    }
    for (guint i = 0; s->unknown_exts && i < s->unknown_exts->len; i++) {
        Qcow2UnknownExt *e = g_ptr_array_index(s->unknown_exts, i);
        if (e->magic == QCOW2_EXT_STRATA_INTENT) {
            return true;
        }
    }
    return false;
}

static void remove_ext(BDRVQcow2State *s)
{
    s->autoclear_features &= ~QCOW2_AUTOCLEAR_STRATA_INTENT;
    for (guint i = s->unknown_exts ? s->unknown_exts->len : 0; i-- > 0;) {
        Qcow2UnknownExt *e = g_ptr_array_index(s->unknown_exts, i);
        if (e->magic == QCOW2_EXT_STRATA_INTENT) {
            g_ptr_array_remove_index(s->unknown_exts, i);
        }
    }
}

int qcow2_intent_set(BlockDriverState *bs, const Qcow2Intent *in,
                     GError **errp)
{
    BDRVQcow2State *s;
    Qcow2UnknownExt *e;
    int ret;

    if (!is_qcow2(bs)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Crash-atomic transactions need qcow2 images");
        return -ENOTSUP;
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is read-only", bs->node_name);
        return -EACCES;
    }
    s = bs->opaque;
    if (s->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Crash-atomic transactions need qcow2 version 3 images "
                    "(compat=1.1)");
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    remove_ext(s);
    s->autoclear_features |= QCOW2_AUTOCLEAR_STRATA_INTENT;
    e = g_new0(Qcow2UnknownExt, 1);
    e->magic = QCOW2_EXT_STRATA_INTENT;
    e->data = qcow2_intent_encode(in, &e->len);
    g_ptr_array_add(s->unknown_exts, e);
    ret = qcow2_write_header_nosync(bs, errp);
    if (ret < 0) {
        /* what is on disk is unknown; memory stays clean */
        remove_ext(s);
        s->autoclear_features &= ~QCOW2_AUTOCLEAR_STRATA_INTENT;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

void qcow2_intent_forget(BlockDriverState *bs)
{
    BDRVQcow2State *s;

    if (!is_qcow2(bs)) {
        return;
    }
    s = bs->opaque;
    g_mutex_lock(&s->lock);
    remove_ext(s);
    g_mutex_unlock(&s->lock);
}

int qcow2_intent_clear(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s;
    int ret;

    if (!is_qcow2(bs)) {
        return 0;
    }
    s = bs->opaque;
    g_mutex_lock(&s->lock);
    if (!has_ext(s)) {
        /* already cleared (a witness, blk_action_intent_witness): no
         * write, which a node reopened read-only could not take */
        g_mutex_unlock(&s->lock);
        return 0;
    }
    remove_ext(s);
    ret = qcow2_write_header_nosync(bs, errp);
    g_mutex_unlock(&s->lock);
    return ret;
}

void qcow2_intent_info_clear(Qcow2IntentInfo *info)
{
    g_clear_pointer(&info->journal_dir, g_free);
    g_clear_pointer(&info->detail, g_free);
    info->state = QCOW2_INTENT_NONE;
}

bool qcow2_intent_query(BlockDriverState *bs, Qcow2IntentInfo *info)
{
    BDRVQcow2State *s;

    memset(info, 0, sizeof(*info));
    if (!is_qcow2(bs)) {
        return false;
    }
    s = bs->opaque;
    if (s->intent) {
        info->state = s->intent->state;
        memcpy(info->txid, s->intent->txid, sizeof(info->txid));
        info->journal_dir = g_strdup(s->intent->journal_dir);
        info->detail = g_strdup(s->intent->detail);
        return true;
    }
    g_mutex_lock(&s->lock);
    for (guint i = 0; s->unknown_exts && i < s->unknown_exts->len; i++) {
        Qcow2UnknownExt *e = g_ptr_array_index(s->unknown_exts, i);
        g_autoptr(Qcow2Intent) in = NULL;
        if (e->magic == QCOW2_EXT_STRATA_INTENT &&
            decode(e->data, e->len, &in, NULL) == 0) {
            info->state = QCOW2_INTENT_PENDING;
            qcow2_intent_id_hex(in->txid, info->txid);
            info->journal_dir = g_strdup(in->journal_dir);
            info->detail = g_strdup("prepared by this process");
        }
    }
    g_mutex_unlock(&s->lock);
    return true;
}

/* ---- the open hook ---- */

static int read_cluster0(BlockDriverState *bs, uint8_t **out, size_t *len)
{
    uint8_t first[104];
    int64_t file_len = bdrv_getlength(bs->file);
    uint32_t cbits;
    int ret;

    *out = NULL;
    if (file_len < (int64_t)sizeof(first)) {
        return 0;
    }
    ret = bdrv_pread(bs->file, 0, sizeof(first), first);
    if (ret < 0) {
        return ret;
    }
    cbits = be32_read(first + 20);
    if (be32_read(first) != QCOW_MAGIC || cbits < QCOW2_MIN_CLUSTER_BITS ||
        cbits > QCOW2_MAX_CLUSTER_BITS) {
        return 0;   /* qcow2_read_header says what is wrong */
    }
    *len = (size_t)MIN((int64_t)1 << cbits, file_len);
    *out = g_malloc0(*len);
    ret = bdrv_pread(bs->file, 0, *len, *out);
    if (ret < 0) {
        g_clear_pointer(out, g_free);
    }
    return ret;
}

static const char *decision_name(IntentDecision d)
{
    return d == INTENT_DECIDE_ROLL_FORWARD ? "roll forward" : "discard";
}

int qcow2_intent_open(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *hdr = NULL;
    g_autoptr(Qcow2Intent) in = NULL;
    g_autoptr(GError) err = NULL;
    Qcow2IntentInfo *info;
    IntentDecision d = INTENT_DECIDE_DISCARD;
    bool rw = (flags & BDRV_O_RDWR) != 0;
    size_t len = 0;
    int ret = read_cluster0(bs, &hdr, &len);

    if (ret < 0 || !hdr) {
        return 0;   /* the header read reports I/O errors itself */
    }
    ret = qcow2_intent_parse(hdr, len, &in, errp);
    if (ret <= 0) {
        return ret;
    }
    info = g_new0(Qcow2IntentInfo, 1);
    info->state = QCOW2_INTENT_PENDING;
    qcow2_intent_id_hex(in->txid, info->txid);
    info->journal_dir = g_strdup(in->journal_dir);
    s->intent = info;

    if (!recover_fn) {
        ret = -ENOTSUP;
        g_set_error(&err, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "this program has no intent log to recover it with");
    } else {
        ret = recover_fn(bs->file->filename, in, rw, &d, &err);
    }
    if (ret == 0 && rw) {
        info->state = d == INTENT_DECIDE_ROLL_FORWARD ?
                      QCOW2_INTENT_ROLLED_FORWARD : QCOW2_INTENT_DISCARDED;
        info->detail = g_strdup(d == INTENT_DECIDE_ROLL_FORWARD ?
                                "rolled forward" : "discarded");
        strata_info("qcow2: '%s': unfinished transaction %s %s",
                    bs->filename, info->txid, info->detail);
        return 0;
    }
    if (ret == 0) {
        info->detail = g_strdup(decision_name(d));
        strata_warning("qcow2: '%s' is part of unfinished transaction %s "
                       "(recovery will %s); opened read-only as it is",
                       bs->filename, info->txid,
                       d == INTENT_DECIDE_ROLL_FORWARD ? "roll it forward"
                                                       : "discard it");
        return 0;
    }
    info->detail = g_strdup(err->message);
    /* A read-only open (a check without -r too) shows the image as it is.
     * A read-write one is refused even for a repair: reclaiming the
     * prepared clusters as leaks could lose a committed transaction. */
    if (!rw) {
        strata_warning("qcow2: '%s' is part of unfinished transaction %s "
                       "that cannot be recovered: %s", bs->filename,
                       info->txid, err->message);
        return 0;
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Image '%s' is part of unfinished transaction %s that "
                "cannot be recovered: %s (it can be opened read-only)",
                bs->filename, info->txid, err->message);
    return ret;
}

void qcow2_intent_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->intent) {
        qcow2_intent_info_clear(s->intent);
        g_clear_pointer(&s->intent, g_free);
    }
}
