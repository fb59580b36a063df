/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img's --output=json printing (see img-json.h).
 */
#include <stdio.h>

#include "img-json.h"
#include "block/qcow2-intent.h"
#include "blockdev/intent-log.h"

void img_json_print(JsonNode *node)
{
    g_autofree char *s = json_writer_pretty(node);

    printf("%s\n", s);
}

/* ---- strata's pending-transaction report (issue 14) ---- */

static const char *intent_state_name(Qcow2IntentState st)
{
    switch (st) {
    case QCOW2_INTENT_PENDING:
        return "pending";
    case QCOW2_INTENT_ROLLED_FORWARD:
        return "rolled-forward";
    case QCOW2_INTENT_DISCARDED:
        return "discarded";
    default:
        return "none";
    }
}

bool img_json_add_intent(JsonBuilder *b, BlockDriverState *bs)
{
    Qcow2IntentInfo info;

    intent_log_install();   /* strata-img recovers at open */
    if (!qcow2_intent_query(bs, &info) || info.state == QCOW2_INTENT_NONE) {
        qcow2_intent_info_clear(&info);
        return false;
    }
    json_builder_set_member_name(b, IMG_JSON_INTENT_MEMBER);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "transaction");
    json_builder_add_string_value(b, info.txid);
    json_builder_set_member_name(b, "journal");
    json_builder_add_string_value(b, info.journal_dir);
    json_builder_set_member_name(b, "state");
    json_builder_add_string_value(b, intent_state_name(info.state));
    if (info.detail) {
        json_builder_set_member_name(b, "detail");
        json_builder_add_string_value(b, info.detail);
    }
    json_builder_end_object(b);
    qcow2_intent_info_clear(&info);
    return true;
}

char *img_intent_sentence(BlockDriverState *bs)
{
    Qcow2IntentInfo info;
    char *out = NULL;

    if (!qcow2_intent_query(bs, &info)) {
        return NULL;
    }
    switch (info.state) {
    case QCOW2_INTENT_PENDING:
        if (info.detail && (!strcmp(info.detail, "roll forward") ||
                            !strcmp(info.detail, "discard"))) {
            out = g_strdup_printf("Image is part of unfinished transaction "
                                  "%s (journal %s); recovery will %s "
                                  "(strata-img check -r all).", info.txid,
                                  info.journal_dir,
                                  !strcmp(info.detail, "discard") ?
                                  "discard it" : "roll it forward");
        } else {
            out = g_strdup_printf("Image is part of unfinished transaction "
                                  "%s (journal %s) that cannot be "
                                  "recovered: %s", info.txid,
                                  info.journal_dir,
                                  info.detail ? info.detail : "unknown");
        }
        break;
    case QCOW2_INTENT_ROLLED_FORWARD:
    case QCOW2_INTENT_DISCARDED:
        out = g_strdup_printf("Unfinished transaction %s (journal %s) was %s.",
                              info.txid, info.journal_dir,
                              info.state == QCOW2_INTENT_DISCARDED ?
                              "discarded" : "rolled forward");
        break;
    default:
        break;
    }
    qcow2_intent_info_clear(&info);
    return out;
}
