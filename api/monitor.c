/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The monitor in-process: QMP requests as text through the same
 * dispatcher as strata-daemon's sockets (monitor/qmp-dispatch.c), HMP
 * lines through monitor/hmp.c, and the event queue handed to the
 * embedding program's handler.
 */
#include "api-int.h"
#include "monitor/monitor-int.h"
#include "monitor/qmp-events.h"
#include "monitor/json-stream.h"
#include "monitor/hmp.h"

struct StrataQmpSession {
    QmpSession s;
};

static StrataEventFunc *event_fn;
static void *event_opaque;

/* One request text on session s, as its reply text; the events the
 * command queued are delivered right after it, as a socket would see
 * them. */
static char *run_text(QmpSession *s, const char *text)
{
    g_autoptr(GError) parse_err = NULL;
    g_autoptr(JsonNode) request = json_stream_parse_text(text, &parse_err);
    g_autoptr(JsonNode) reply = NULL;
    char *out;

    api_monitor_lock();
    reply = qmp_dispatch(s, request, request ? NULL : parse_err);
    out = json_writer_line(reply);
    qmp_events_flush();
    api_monitor_unlock();
    return out;
}

char *strata_monitor_qmp(const char *request)
{
    QmpSession s = { .negotiated = true };

    return run_text(&s, request ? request : "");
}

char *strata_monitor_hmp(const char *line)
{
    char *out;

    api_monitor_lock();
    out = hmp_execute(line ? line : "");
    qmp_events_flush();
    api_monitor_unlock();
    return out;
}

static void sink(JsonNode *msg, void *opaque)
{
    g_autofree char *text = NULL;

    if (event_fn) {
        text = json_writer_line(msg);
        event_fn(text, event_opaque);
    }
}

void strata_monitor_set_event_handler(StrataEventFunc *fn, void *opaque)
{
    api_monitor_lock();
    event_fn = fn;
    event_opaque = opaque;
    monitor_set_event_sink(fn ? sink : NULL, NULL);
    api_monitor_unlock();
}

void strata_monitor_dispatch_events(void)
{
    api_monitor_lock();
    qmp_events_flush();
    api_monitor_unlock();
}

StrataQmpSession *strata_qmp_session_new(void)
{
    return g_new0(StrataQmpSession, 1);
}

void strata_qmp_session_free(StrataQmpSession *s)
{
    g_free(s);
}

char *strata_qmp_session_greeting(StrataQmpSession *s)
{
    g_autoptr(JsonNode) greeting = NULL;

    api_monitor_lock();
    greeting = qmp_greeting();
    api_monitor_unlock();
    return json_writer_line(greeting);
}

char *strata_qmp_session_handle(StrataQmpSession *s, const char *line)
{
    return run_text(&s->s, line ? line : "");
}

bool strata_qmp_session_negotiated(StrataQmpSession *s)
{
    return s->s.negotiated;
}
