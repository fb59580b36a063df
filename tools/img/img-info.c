/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img info: collects what qemu-img reports about an image (or each
 * image of its backing chain) into one JSON object per image, then prints
 * it either as JSON or in qemu-img's human layout.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "block/crypto.h"
#include "block/dirty-bitmap.h"
#include "img-json.h"
#include "img-snapshot.h"

/* -U: every image of the chain is opened with force-share. */
static int info_open_flags;

static void add_string(JsonBuilder *b, const char *key, const char *value)
{
    json_builder_set_member_name(b, key);
    json_builder_add_string_value(b, value);
}

static void add_int(JsonBuilder *b, const char *key, int64_t value)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, value);
}

static void add_bool(JsonBuilder *b, const char *key, bool value)
{
    json_builder_set_member_name(b, key);
    json_builder_add_boolean_value(b, value);
}

/* "bitmaps": [{"flags": [...], "name": ..., "granularity": ...}], only
 * when the image has some (as QEMU). */
static void add_bitmaps(JsonBuilder *b, BlockDriverState *bs)
{
    g_autoptr(GPtrArray) list = bdrv_bitmap_list(bs, NULL);

    if (!list || list->len == 0) {
        return;
    }
    json_builder_set_member_name(b, "bitmaps");
    json_builder_begin_array(b);
    for (guint i = 0; i < list->len; i++) {
        BdrvBitmapInfo *bi = g_ptr_array_index(list, i);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "flags");
        json_builder_begin_array(b);
        if (bi->in_use) {
            json_builder_add_string_value(b, "in-use");
        }
        if (bi->auto_) {
            json_builder_add_string_value(b, "auto");
        }
        json_builder_end_array(b);
        add_string(b, "name", bi->name);
        add_int(b, "granularity", bi->granularity);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

/* QEMU's description of a LUKS header (QCryptoBlockInfoLUKS). */
static void add_luks_fields(JsonBuilder *b, const LuksInfo *l)
{
    add_string(b, "cipher-alg", l->cipher_alg);
    add_string(b, "cipher-mode", l->cipher_mode);
    add_string(b, "ivgen-alg", l->ivgen_alg);
    if (l->ivgen_hash_alg) {
        add_string(b, "ivgen-hash-alg", l->ivgen_hash_alg);
    }
    add_string(b, "hash-alg", l->hash_alg);
    add_int(b, "payload-offset", (int64_t)l->payload_offset);
    add_int(b, "master-key-iters", l->master_key_iters);
    add_string(b, "uuid", l->uuid);
    json_builder_set_member_name(b, "slots");
    json_builder_begin_array(b);
    for (int i = 0; i < 8; i++) {
        json_builder_begin_object(b);
        add_bool(b, "active", l->slots[i].active);
        if (l->slots[i].active) {
            add_int(b, "iters", l->slots[i].iters);
            add_int(b, "stripes", l->slots[i].stripes);
        }
        add_int(b, "key-offset", (int64_t)l->slots[i].key_offset);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

/* qcow2's "encrypt" member: the format, and for LUKS its header. */
static void add_encrypt(JsonBuilder *b, const BlockSpecificInfo *si)
{
    json_builder_set_member_name(b, "encrypt");
    json_builder_begin_object(b);
    add_string(b, "format", si->encrypt_format);
    if (si->luks) {
        add_luks_fields(b, si->luks);
    }
    json_builder_end_object(b);
}

/* The "format-specific" member: {"type": "qcow2", "data": {...}}. */
static void add_format_specific(JsonBuilder *b, BlockDriverState *bs)
{
    BlockSpecificInfo si;
    bool v2;

    bdrv_get_specific_info(bs, &si);
    if (!si.type) {
        return;
    }
    json_builder_set_member_name(b, "format-specific");
    json_builder_begin_object(b);
    add_string(b, "type", si.type);
    json_builder_set_member_name(b, "data");
    json_builder_begin_object(b);
    if (!strcmp(si.type, "qcow2")) {
        /* Version 2 images have no feature bits to report. */
        v2 = si.compat && !strcmp(si.compat, "0.10");
        add_string(b, "compat", si.compat ? si.compat : "1.1");
        if (si.data_file) {
            add_string(b, "data-file", si.data_file);
        }
        if (si.has_data_file_raw) {
            add_bool(b, "data-file-raw", si.data_file_raw);
        }
        if (!v2) {
            add_bool(b, "extended-l2", si.extended_l2);
            add_bool(b, "lazy-refcounts", si.lazy_refcounts);
            add_bool(b, "corrupt", si.corrupt);
        }
        add_bitmaps(b, bs);
        add_int(b, "refcount-bits", si.refcount_bits);
        if (si.encrypt_format) {
            add_encrypt(b, &si);
        }
        add_string(b, "compression-type",
                   si.compression_type ? si.compression_type : "zlib");
    } else if (!strcmp(si.type, "luks") && si.luks) {
        add_luks_fields(b, si.luks);
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
}

/*
 * qemu's ImageInfo for one node.  Returns NULL with *errmsg set when the
 * node cannot be described.
 */
static JsonNode *query_image_info(BlockDriverState *bs, char **errmsg)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(GPtrArray) snapshots = NULL;
    g_autoptr(GError) err = NULL;
    BlockDriverInfo bdi;
    BlockSpecificInfo si;
    g_autofree char *name = NULL;
    const char *backing;
    int64_t size, actual;
    int ret;

    size = bdrv_getlength(bs);
    if (size < 0) {
        *errmsg = g_strdup_printf("Can't get image size '%s': %s",
                                  bdrv_get_filename(bs), g_strerror(-size));
        return NULL;
    }

    bdrv_get_specific_info(bs, &si);
    name = bdrv_get_display_filename(bs);
    json_builder_begin_object(b);
    add_string(b, "filename", name);
    add_string(b, "format", bdrv_get_format_name(bs));
    add_int(b, "virtual-size", size);
    actual = bdrv_get_allocated_file_size(bs);
    if (actual >= 0) {
        add_int(b, "actual-size", actual);
    }
    if (si.encrypt_format) {
        add_bool(b, "encrypted", true);
    }
    if (bdrv_get_info(bs, &bdi) >= 0) {
        if (bdi.cluster_size) {
            add_int(b, "cluster-size", bdi.cluster_size);
        }
        add_bool(b, "dirty-flag", bdi.is_dirty);
    }

    backing = bdrv_get_backing_filename(bs);
    if (backing && backing[0]) {
        g_autofree char *full = bdrv_get_full_backing_filename(bs);
        const char *bfmt = bdrv_get_backing_format(bs);

        add_string(b, "backing-filename", backing);
        if (full) {
            add_string(b, "full-backing-filename", full);
        }
        if (bfmt && bfmt[0]) {
            add_string(b, "backing-filename-format", bfmt);
        }
    }

    ret = img_snapshot_list(bs, &snapshots, &err);
    if (ret < 0 && ret != -ENOTSUP && ret != -ENOMEDIUM) {
        *errmsg = g_strdup(err ? err->message : g_strerror(-ret));
        json_builder_end_object(b);
        return NULL;
    }
    if (ret == 0 && snapshots && snapshots->len) {
        json_builder_set_member_name(b, "snapshots");
        json_builder_begin_array(b);
        for (guint i = 0; i < snapshots->len; i++) {
            json_builder_add_value(b, img_snapshot_to_json(
                                          g_ptr_array_index(snapshots, i)));
        }
        json_builder_end_array(b);
    }

    add_format_specific(b, bs);
    img_json_add_intent(b, bs);   /* strata: issue 14 */
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

/*
 * Describes filename, then (chain) each backing file in turn, each opened
 * on its own without its backing chain, as qemu-img does: a missing
 * backing file does not stop `info` on the overlay.
 */
static GPtrArray *collect_image_info_list(bool image_opts,
                                          const char *filename,
                                          const char *fmt, bool chain)
{
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(
        (GDestroyNotify)json_node_unref);
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       NULL);
    g_autofree char *next_name = g_strdup(filename);
    g_autofree char *next_fmt = g_strdup(fmt);

    while (next_name) {
        g_autoptr(BlockDriverState) bs = NULL;
        g_autofree char *errmsg = NULL;
        JsonNode *info;
        JsonObject *obj;

        if (g_hash_table_contains(seen, next_name)) {
            img_error("Backing file '%s' creates an infinite loop.",
                      next_name);
            return NULL;
        }
        g_hash_table_add(seen, g_strdup(next_name));

        bs = img_open(image_opts, next_name, next_fmt,
                      BDRV_O_NO_BACKING | BDRV_O_NO_IO | info_open_flags,
                      false);
        if (!bs) {
            return NULL;
        }
        info = query_image_info(bs, &errmsg);
        if (!info) {
            img_error("%s", errmsg);
            return NULL;
        }
        obj = json_node_get_object(info);
        if (!*json_object_get_string_member(obj, "filename")) {
            /* named by its options alone: say them as they were given */
            json_object_set_string_member(obj, "filename", next_name);
        }
        g_ptr_array_add(list, info);

        /* Only the top image takes -f and --image-opts. */
        image_opts = false;
        g_clear_pointer(&next_name, g_free);
        g_clear_pointer(&next_fmt, g_free);
        if (!chain) {
            break;
        }
        obj = json_node_get_object(info);
        if (json_object_has_member(obj, "full-backing-filename")) {
            next_name = g_strdup(json_object_get_string_member(
                                     obj, "full-backing-filename"));
        } else if (json_object_has_member(obj, "backing-filename")) {
            img_error("Could not determine absolute backing filename, but "
                      "backing filename '%s' present",
                      json_object_get_string_member(obj, "backing-filename"));
            return NULL;
        }
        if (json_object_has_member(obj, "backing-filename-format")) {
            next_fmt = g_strdup(json_object_get_string_member(
                                    obj, "backing-filename-format"));
        }
    }
    return g_steal_pointer(&list);
}

static void dump_value(int indent, JsonNode *node);

/* qemu's human dump of a QAPI object: "key with spaces: value". */
static void dump_object(int indent, JsonObject *obj)
{
    g_autoptr(GPtrArray) names = json_writer_qdict_order(obj);

    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        JsonNode *v = json_object_get_member(obj, name);
        bool composite = !JSON_NODE_HOLDS_VALUE(v);
        g_autofree char *key = g_strdelimit(g_strdup(name), "-", ' ');

        printf("%*s%s:%s", indent * 4, "", key, composite ? "\n" : " ");
        dump_value(indent + 1, v);
        if (!composite) {
            printf("\n");
        }
    }
}

static void dump_value(int indent, JsonNode *node)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        dump_object(indent, json_node_get_object(node));
    } else if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *arr = json_node_get_array(node);
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            JsonNode *e = json_array_get_element(arr, i);
            bool composite = !JSON_NODE_HOLDS_VALUE(e);
            printf("%*s[%u]:%c", indent * 4, "", i, composite ? '\n' : ' ');
            dump_value(indent + 1, e);
            if (!composite) {
                printf("\n");
            }
        }
    } else if (JSON_NODE_HOLDS_VALUE(node)) {
        switch (json_node_get_value_type(node)) {
        case G_TYPE_BOOLEAN:
            printf("%s", json_node_get_boolean(node) ? "true" : "false");
            break;
        case G_TYPE_INT64:
            printf("%" G_GINT64_FORMAT, json_node_get_int(node));
            break;
        case G_TYPE_STRING:
            printf("%s", json_node_get_string(node));
            break;
        default:
            break;
        }
    }
}

static void dump_snapshot_list(JsonArray *arr)
{
    printf("Snapshot list:\n");
    img_snapshot_dump(NULL);
    printf("\n");
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonObject *o = json_array_get_object_element(arr, i);
        ImgSnapshotInfo sn = {
            .id = (char *)json_object_get_string_member(o, "id"),
            .name = (char *)json_object_get_string_member(o, "name"),
            .vm_state_size = json_object_get_int_member(o, "vm-state-size"),
            .date_sec = json_object_get_int_member(o, "date-sec"),
            .date_nsec = json_object_get_int_member(o, "date-nsec"),
            .vm_clock_nsec =
                json_object_get_int_member(o, "vm-clock-sec") * 1000000000LL +
                json_object_get_int_member(o, "vm-clock-nsec"),
            .icount = json_object_has_member(o, "icount")
                      ? (uint64_t)json_object_get_int_member(o, "icount")
                      : UINT64_MAX,
        };
        img_snapshot_dump(&sn);
        printf("\n");
    }
}

/* qemu-img's human layout of one ImageInfo. */
static void dump_human_image_info(JsonObject *info)
{
    int64_t vsize = json_object_get_int_member(info, "virtual-size");
    g_autofree char *size_buf = img_size_to_str(vsize);
    g_autofree char *dsize_buf = NULL;

    if (json_object_has_member(info, "actual-size")) {
        dsize_buf = img_size_to_str(
            json_object_get_int_member(info, "actual-size"));
    } else {
        dsize_buf = g_strdup("unavailable");
    }
    printf("image: %s\n"
           "file format: %s\n"
           "virtual size: %s (%" G_GINT64_FORMAT " bytes)\n"
           "disk size: %s\n",
           json_object_get_string_member(info, "filename"),
           json_object_get_string_member(info, "format"),
           size_buf, vsize, dsize_buf);

    if (json_object_has_member(info, "encrypted") &&
        json_object_get_boolean_member(info, "encrypted")) {
        printf("encrypted: yes\n");
    }
    if (json_object_has_member(info, "cluster-size")) {
        printf("cluster_size: %" G_GINT64_FORMAT "\n",
               json_object_get_int_member(info, "cluster-size"));
    }
    if (json_object_has_member(info, "dirty-flag") &&
        json_object_get_boolean_member(info, "dirty-flag")) {
        printf("cleanly shut down: no\n");
    }
    if (json_object_has_member(info, "backing-filename")) {
        const char *name = json_object_get_string_member(info,
                                                         "backing-filename");
        printf("backing file: %s", name);
        if (!json_object_has_member(info, "full-backing-filename")) {
            printf(" (cannot determine actual path)");
        } else {
            const char *full = json_object_get_string_member(
                info, "full-backing-filename");
            if (strcmp(name, full)) {
                printf(" (actual path: %s)", full);
            }
        }
        printf("\n");
    }
    if (json_object_has_member(info, "backing-filename-format")) {
        printf("backing file format: %s\n",
               json_object_get_string_member(info, "backing-filename-format"));
    }
    if (json_object_has_member(info, "snapshots")) {
        dump_snapshot_list(json_object_get_array_member(info, "snapshots"));
    }
    if (json_object_has_member(info, IMG_JSON_INTENT_MEMBER)) {
        /* strata: an unfinished crash-atomic transaction (issue 14) */
        JsonObject *in = json_object_get_object_member(info,
                                                       IMG_JSON_INTENT_MEMBER);
        printf("unfinished transaction: %s (journal %s, %s%s%s)\n",
               json_object_get_string_member(in, "transaction"),
               json_object_get_string_member(in, "journal"),
               json_object_get_string_member(in, "state"),
               json_object_has_member(in, "detail") ? ": " : "",
               json_object_has_member(in, "detail") ?
               json_object_get_string_member(in, "detail") : "");
    }
    if (json_object_has_member(info, "format-specific")) {
        JsonObject *fs = json_object_get_object_member(info, "format-specific");
        printf("Format specific information:\n");
        if (json_object_has_member(fs, "data")) {
            dump_value(1, json_object_get_member(fs, "data"));
        }
    }
}

int img_info(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    ImgOutputFormat output_format;
    bool chain = false;
    g_autoptr(GPtrArray) list = NULL;
    const char *filename;
    int c;

    while ((c = getopt_long(argc, argv, ":f:hU", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_BACKING_CHAIN:
            chain = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    filename = img_one_filename(argc, argv);
    if (!img_parse_output_format(o.output, &output_format) ||
        !img_common_check_format(&o)) {
        return 1;
    }
    /* Every image of the chain is opened with these flags (-U). */
    info_open_flags = o.flags;

    list = collect_image_info_list(o.image_opts, filename, o.fmt, chain);
    if (!list) {
        return 1;
    }

    if (output_format == OFORMAT_JSON) {
        if (chain) {
            g_autoptr(JsonNode) root = json_node_new(JSON_NODE_ARRAY);
            JsonArray *arr = json_array_new();
            for (guint i = 0; i < list->len; i++) {
                json_array_add_element(arr, json_node_ref(
                                                g_ptr_array_index(list, i)));
            }
            json_node_take_array(root, arr);
            img_json_print(root);
        } else {
            img_json_print(g_ptr_array_index(list, 0));
        }
    } else {
        for (guint i = 0; i < list->len; i++) {
            if (i) {
                printf("\n");
            }
            dump_human_image_info(json_node_get_object(
                                      g_ptr_array_index(list, i)));
        }
    }
    return 0;
}
