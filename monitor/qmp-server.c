/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The monitor's sockets: listeners (unix, tcp) and client connections on
 * the GLib main loop with GIO sockets.  A client gets the greeting, its
 * bytes go through a JSON stream (monitor/json-stream.c), each value is
 * dispatched (monitor/qmp-dispatch.c) and the reply queued as one CRLF-
 * ended line.  Output that the client does not read is buffered up to a
 * bound; a client past it is dropped, so a stuck client cannot grow the
 * daemon without limit.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <gio/gio.h>

#include "monitor/monitor-int.h"
#include "monitor/json-stream.h"
#include "monitor/qmp-events.h"
#include "blockdev/registry.h"
#include "block/log.h"
#include "monitor/qmp-cmd-test.h"

/* Replies a client has not read yet, at most. */
#define CLIENT_OUTPUT_MAX (64u << 20)

typedef struct Listener {
    GSocket *sock;
    GSource *src;
    char *unix_path;             /* unlinked at shutdown */
} Listener;

typedef struct Client {
    GSocket *sock;
    GSource *in_src;
    GSource *out_src;
    GString *out;
    JsonStream *stream;
    QmpSession session;
    bool dead;
} Client;

static GPtrArray *listeners;
static GPtrArray *clients;
static char *package;
static void (*quit_fn)(void *);
static void *quit_opaque;

void monitor_set_package(const char *p)
{
    g_free(package);
    package = g_strdup(p);
}

const char *monitor_get_package(void)
{
    return package ? package : "strata";
}

void monitor_set_quit_func(void (*fn)(void *opaque), void *opaque)
{
    quit_fn = fn;
    quit_opaque = opaque;
}

void monitor_request_quit(void)
{
    if (quit_fn) {
        quit_fn(quit_opaque);
    }
}

/* ---- clients ---- */

static void client_free(Client *c)
{
    if (c->in_src) {
        g_source_destroy(c->in_src);
        g_source_unref(c->in_src);
    }
    if (c->out_src) {
        g_source_destroy(c->out_src);
        g_source_unref(c->out_src);
    }
    g_socket_close(c->sock, NULL);
    g_object_unref(c->sock);
    g_string_free(c->out, TRUE);
    json_stream_free(c->stream);
    g_free(c);
}

static gboolean client_output_ready(GSocket *sock, GIOCondition cond,
                                    gpointer opaque);

/* Sends what it can now; the rest waits for the socket to be writable. */
static void client_flush(Client *c)
{
    while (c->out->len && !c->dead) {
        g_autoptr(GError) err = NULL;
        gssize n = g_socket_send(c->sock, c->out->str, c->out->len, NULL,
                                 &err);

        if (n < 0) {
            if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
                break;
            }
            c->dead = true;     /* the client went away; drop it later */
            return;
        }
        g_string_erase(c->out, 0, n);
    }
    if (c->out->len && !c->out_src && !c->dead) {
        c->out_src = g_socket_create_source(c->sock, G_IO_OUT, NULL);
        g_source_set_callback(c->out_src, G_SOURCE_FUNC(client_output_ready),
                              c, NULL);
        g_source_attach(c->out_src, NULL);
    }
}

static gboolean client_output_ready(GSocket *sock, GIOCondition cond,
                                    gpointer opaque)
{
    Client *c = opaque;

    g_source_unref(c->out_src);
    c->out_src = NULL;
    client_flush(c);
    return G_SOURCE_REMOVE;
}

static void client_send(Client *c, JsonNode *msg)
{
    g_autofree char *text = json_writer_line(msg);

    if (c->dead) {
        return;
    }
    if (c->out->len + strlen(text) + 2 > CLIENT_OUTPUT_MAX) {
        strata_warning("QMP client does not read its replies; dropped");
        c->dead = true;
        return;
    }
    g_string_append(c->out, text);
    g_string_append(c->out, "\r\n");
    client_flush(c);
}

static void client_got_value(JsonNode *value, GError *err, void *opaque)
{
    Client *c = opaque;
    g_autoptr(JsonNode) reply = qmp_dispatch(&c->session, value, err);

    if (value) {
        json_node_unref(value);
    }
    if (err) {
        g_error_free(err);
    }
    /* Events the command caused go out before its reply, as QEMU's. */
    qmp_events_flush();
    client_send(c, reply);
}

/* issue 13 (api): the embedding program's event handler */
static void (*event_sink)(JsonNode *msg, void *opaque);
static void *event_sink_opaque;

void monitor_set_event_sink(void (*fn)(JsonNode *msg, void *opaque),
                            void *opaque)
{
    event_sink = fn;
    event_sink_opaque = opaque;
}

/* Events go to the clients that have negotiated capabilities (QEMU
 * sends none before). */
void monitor_broadcast(JsonNode *msg)
{
    if (event_sink) {
        event_sink(msg, event_sink_opaque);
    }
    for (guint i = 0; clients && i < clients->len; i++) {
        Client *c = g_ptr_array_index(clients, i);

        if (c->session.negotiated) {
            client_send(c, msg);
        }
    }
}

static void client_drop(Client *c)
{
    g_ptr_array_remove(clients, c);     /* frees it */
}

static gboolean client_input_ready(GSocket *sock, GIOCondition cond,
                                   gpointer opaque)
{
    Client *c = opaque;
    char buf[4096];
    g_autoptr(GError) err = NULL;
    gssize n = g_socket_receive(sock, buf, sizeof(buf), NULL, &err);

    if (n < 0 && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
        return G_SOURCE_CONTINUE;
    }
    if (n > 0) {
        json_stream_feed(c->stream, buf, n);
    }
    if (n <= 0 || c->dead) {
        /* The source is destroyed with the client: detach it first so
         * the callback returning does not touch freed memory. */
        g_source_unref(c->in_src);
        c->in_src = NULL;
        client_drop(c);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static void client_new(GSocket *sock)
{
    Client *c = g_new0(Client, 1);
    g_autoptr(JsonNode) greeting = qmp_greeting();

    g_socket_set_blocking(sock, FALSE);
    c->sock = sock;
    c->out = g_string_new(NULL);
    c->stream = json_stream_new(client_got_value, c);
    c->in_src = g_socket_create_source(sock, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                       NULL);
    g_source_set_callback(c->in_src, G_SOURCE_FUNC(client_input_ready), c,
                          NULL);
    g_source_attach(c->in_src, NULL);
    if (!clients) {
        clients = g_ptr_array_new_with_free_func((GDestroyNotify)client_free);
    }
    g_ptr_array_add(clients, c);
    client_send(c, greeting);
}

/* ---- listeners ---- */

static gboolean listener_ready(GSocket *sock, GIOCondition cond,
                               gpointer opaque)
{
    g_autoptr(GError) err = NULL;
    GSocket *conn = g_socket_accept(sock, NULL, &err);

    if (!conn) {
        if (!g_error_matches(err, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
            strata_warning("QMP: accept failed: %s", err->message);
        }
        return G_SOURCE_CONTINUE;
    }
    client_new(conn);
    return G_SOURCE_CONTINUE;
}

static void listener_free(Listener *l)
{
    g_source_destroy(l->src);
    g_source_unref(l->src);
    g_socket_close(l->sock, NULL);
    g_object_unref(l->sock);
    if (l->unix_path) {
        unlink(l->unix_path);
        g_free(l->unix_path);
    }
    g_free(l);
}

static void listener_add(GSocket *sock, const char *unix_path)
{
    Listener *l = g_new0(Listener, 1);

    g_socket_set_blocking(sock, FALSE);
    l->sock = sock;
    l->unix_path = g_strdup(unix_path);
    l->src = g_socket_create_source(sock, G_IO_IN, NULL);
    g_source_set_callback(l->src, G_SOURCE_FUNC(listener_ready), l, NULL);
    g_source_attach(l->src, NULL);
    if (!listeners) {
        listeners = g_ptr_array_new_with_free_func(
            (GDestroyNotify)listener_free);
    }
    g_ptr_array_add(listeners, l);
}

static bool sys_error(GError **errp, const char *what, const char *path)
{
    int e = errno;

    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                "Failed to %s socket %s: %s", what, path, g_strerror(e));
    return false;
}

bool monitor_listen_unix(const char *path, GError **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    g_autofree char *tmp = g_strdup_printf("%s.%d.tmp", path, (int)getpid());
    GSocket *sock;
    mode_t old_mask;
    int fd, r;

    if (strlen(tmp) >= sizeof(sun.sun_path)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "UNIX socket path '%s' is too long", path);
        return false;
    }
    strcpy(sun.sun_path, tmp);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return sys_error(errp, "create", path);
    }
    /*
     * Mode 0600 from the start (no moment where others may connect), and
     * the socket appears under its name only once it listens (a client
     * that sees the file can connect): bound and listening under a
     * temporary name, then renamed over the path (which also replaces
     * a stale socket of an earlier run, as QEMU does).
     */
    unlink(tmp);
    old_mask = umask(0077);
    r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old_mask);
    if (r < 0) {
        close(fd);
        return sys_error(errp, "bind", path);
    }
    if (chmod(tmp, 0600) < 0 || listen(fd, 16) < 0 ||
        rename(tmp, path) < 0) {
        close(fd);
        unlink(tmp);
        return sys_error(errp, "listen on", path);
    }
    sock = g_socket_new_from_fd(fd, errp);
    if (!sock) {
        close(fd);
        unlink(path);
        return false;
    }
    listener_add(sock, path);
    return true;
}

bool monitor_listen_tcp(const char *host, const char *port, GError **errp)
{
    g_autoptr(GSocketAddressEnumerator) en = NULL;
    g_autoptr(GSocketConnectable) addr = NULL;
    g_autoptr(GSocketAddress) sa = NULL;
    g_autoptr(GError) err = NULL;
    GSocket *sock;
    char *end;
    long p = strtol(port, &end, 10);

    if (!*port || *end || p < 0 || p > 65535) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "address resolution failed for %s:%s: Servname not "
                    "supported for ai_socktype", host, port);
        return false;
    }
    /* Loopback unless the user names an address. */
    addr = g_network_address_new(host && *host ? host : "127.0.0.1", p);
    en = g_socket_connectable_enumerate(addr);
    sa = g_socket_address_enumerator_next(en, NULL, &err);
    if (!sa) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "address resolution failed for %s:%s: %s", host, port,
                    err ? err->message : "no address");
        return false;
    }
    sock = g_socket_new(g_socket_address_get_family(sa),
                        G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, errp);
    if (!sock) {
        return false;
    }
    if (!g_socket_bind(sock, sa, TRUE, errp) || !g_socket_listen(sock, errp)) {
        g_object_unref(sock);
        return false;
    }
    listener_add(sock, NULL);
    return true;
}

void monitor_shutdown(void)
{
    if (clients) {
        for (guint i = 0; i < clients->len; i++) {
            client_flush(g_ptr_array_index(clients, i));
        }
        g_clear_pointer(&clients, g_ptr_array_unref);
    }
    g_clear_pointer(&listeners, g_ptr_array_unref);
    g_clear_pointer(&package, g_free);
    /* test writers (monitor/qmp-cmd-test.c) end before the images close */
    qmp_test_shutdown();
}
