/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The readline-mode monitors, on the GLib main loop: the terminal
 * (--chardev stdio) and the clients of unix/tcp sockets.  Each prints a
 * banner and the "(strata) " prompt, reads a line, runs it
 * (monitor/hmp.c) and prints the result with CRLF line ends.
 *
 * On a terminal the line editing and history are libedit's (BSD
 * licence, readline's API; GNU readline is GPL and strata is LGPL), in
 * a reader thread; the commands still run on the main loop.
 * Elsewhere (a pipe, a socket) lines are read plainly and each line is
 * echoed after the prompt, which is what a transcript of QEMU's monitor
 * shows once its character-by-character redrawing is stripped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>

#ifdef HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include "monitor/hmp-int.h"
#include "monitor/monitor.h"
#include "blockdev/registry.h"

/* Longest line a socket client may send without a newline; past it the
 * client is dropped (a bound, so a client cannot grow the daemon). */
#define HMP_LINE_MAX (64 * 1024)

typedef struct HmpClient {
    GSocketConnection *conn;
    GSource *src;
    GString *line;
} HmpClient;

static GSource *stdio_src;
static GString *stdio_line;
static bool stdio_editing;
static bool tty_saved;
static struct termios tty_orig;
static GPtrArray *services;      /* GSocketService * */
static GPtrArray *unix_paths;    /* char *, unlinked at shutdown */
static GPtrArray *clients;       /* HmpClient * */

static char *banner(void)
{
    return g_strdup_printf("%s monitor - type 'help' for more "
                           "information\r\n", monitor_get_package());
}

/* The output of one line, CRLF-ended. */
static char *run_line(const char *line)
{
    g_autofree char *text = hmp_execute(line);

    return hmp_text_to_crlf(text);
}

/* ---- the terminal ---- */

static void stdout_write(const char *s)
{
    fputs(s, stdout);
    fflush(stdout);
}

static void stdio_stop(void)
{
    if (stdio_src) {
        g_source_destroy(stdio_src);
        g_source_unref(stdio_src);
        stdio_src = NULL;
    }
}

static void tty_restore(void)
{
    if (tty_saved) {
        tcsetattr(STDIN_FILENO, TCSANOW, &tty_orig);
    }
}

#ifdef HAVE_LIBEDIT
/*
 * With libedit the terminal is read by a thread of its own, blocked in
 * readline(): libedit then owns the terminal exactly while a line is
 * typed (raw mode, its echo and editing) and prints the prompt after the
 * previous output, as in any readline program.  Each line runs on the
 * main loop's thread, like every other command, and the reader waits
 * for its output.
 */
typedef struct LineJob {
    char *line;
    char *out;
    bool done;
} LineJob;

static GMutex job_lock;
static GCond job_cond;
static bool quit_seen;

static gboolean job_run(gpointer opaque)
{
    LineJob *job = opaque;
    char *out = run_line(job->line);

    g_mutex_lock(&job_lock);
    job->out = out;
    job->done = true;
    g_cond_signal(&job_cond);
    g_mutex_unlock(&job_lock);
    return G_SOURCE_REMOVE;
}

static bool is_quit(const char *line)
{
    g_autofree char *w = g_strstrip(g_strdup(line));

    return !strcmp(w, "quit") || !strcmp(w, "q");
}

static gpointer reader_main(gpointer opaque)
{
    char *line;

    while (!quit_seen && (line = readline(HMP_PROMPT))) {
        LineJob job = { .line = line };

        if (*line) {
            add_history(line);
        }
        /* the daemon ends after quit: no prompt after it */
        quit_seen = is_quit(line);
        g_main_context_invoke(NULL, job_run, &job);
        g_mutex_lock(&job_lock);
        while (!job.done) {
            g_cond_wait(&job_cond, &job_lock);
        }
        g_mutex_unlock(&job_lock);
        stdout_write(job.out);
        g_free(job.out);
        free(line);
    }
    return NULL;
}

static bool start_editing(GError **errp)
{
    GThread *t;

    if (tcgetattr(STDIN_FILENO, &tty_orig) == 0) {
        tty_saved = true;       /* given back at exit, whatever state */
    }
    using_history();
    t = g_thread_try_new("hmp-tty", reader_main, NULL, errp);
    if (!t) {
        return false;
    }
    /* Not joined: at exit it may be blocked reading the terminal. */
    g_thread_unref(t);
    stdio_editing = true;
    return true;
}
#endif

/* Plain lines (stdin is not a terminal): echo, run, prompt. */
static void plain_lines(void)
{
    char *nl;

    while ((nl = strchr(stdio_line->str, '\n'))) {
        g_autofree char *line = g_strndup(stdio_line->str,
                                          nl - stdio_line->str);
        g_autofree char *out = NULL;

        g_string_erase(stdio_line, 0, nl - stdio_line->str + 1);
        g_strchomp(line);
        stdout_write(line);
        stdout_write("\r\n");
        out = run_line(line);
        stdout_write(out);
        stdout_write(HMP_PROMPT);
    }
}

static gboolean stdin_ready(gint fd, GIOCondition cond, gpointer opaque)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        /* End of input: the monitor ends, the daemon goes on (it may
         * serve other monitors). */
        g_source_unref(stdio_src);
        stdio_src = NULL;
        return G_SOURCE_REMOVE;
    }
    g_string_append_len(stdio_line, buf, n);
    plain_lines();
    return G_SOURCE_CONTINUE;
}

bool hmp_monitor_stdio(GError **errp)
{
    g_autofree char *b = banner();

    if (stdio_src || stdio_editing) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "cannot use stdio by multiple character devices");
        return false;
    }
    stdio_line = g_string_new(NULL);
    stdout_write(b);
#ifdef HAVE_LIBEDIT
    if (isatty(STDIN_FILENO)) {
        return start_editing(errp);
    }
#endif
    stdout_write(HMP_PROMPT);
    stdio_src = g_unix_fd_source_new(STDIN_FILENO, G_IO_IN | G_IO_HUP);
    g_source_set_callback(stdio_src, G_SOURCE_FUNC(stdin_ready), NULL, NULL);
    g_source_attach(stdio_src, NULL);
    return true;
}

/* ---- socket clients ---- */

static void client_free(HmpClient *c)
{
    if (c->src) {
        g_source_destroy(c->src);
        g_source_unref(c->src);
    }
    g_io_stream_close(G_IO_STREAM(c->conn), NULL, NULL);
    g_object_unref(c->conn);
    g_string_free(c->line, TRUE);
    g_free(c);
}

/* Writes all of s; false if the client is gone. */
static bool client_write(HmpClient *c, const char *s)
{
    GOutputStream *os = g_io_stream_get_output_stream(G_IO_STREAM(c->conn));

    return g_output_stream_write_all(os, s, strlen(s), NULL, NULL, NULL);
}

static bool client_lines(HmpClient *c)
{
    char *nl;

    while ((nl = strchr(c->line->str, '\n'))) {
        g_autofree char *line = g_strndup(c->line->str, nl - c->line->str);
        g_autofree char *echo = NULL;
        g_autofree char *out = NULL;

        g_string_erase(c->line, 0, nl - c->line->str + 1);
        g_strchomp(line);
        echo = g_strconcat(line, "\r\n", NULL);
        out = run_line(line);
        if (!client_write(c, echo) || !client_write(c, out) ||
            !client_write(c, HMP_PROMPT)) {
            return false;
        }
    }
    return c->line->len <= HMP_LINE_MAX;
}

static gboolean client_ready(GSocket *sock, GIOCondition cond,
                             gpointer opaque)
{
    HmpClient *c = opaque;
    char buf[4096];
    gssize n = g_socket_receive(sock, buf, sizeof(buf), NULL, NULL);

    if (n > 0) {
        g_string_append_len(c->line, buf, n);
    }
    if (n <= 0 || !client_lines(c)) {
        g_source_unref(c->src);
        c->src = NULL;
        g_ptr_array_remove(clients, c);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static gboolean incoming(GSocketService *service, GSocketConnection *conn,
                         GObject *source, gpointer opaque)
{
    HmpClient *c = g_new0(HmpClient, 1);
    GSocket *sock = g_socket_connection_get_socket(conn);
    g_autofree char *b = banner();

    /* Blocking writes: a human monitor's output is small.  Reads happen
     * only when the socket is readable. */
    g_socket_set_blocking(sock, TRUE);
    c->conn = g_object_ref(conn);
    c->line = g_string_new(NULL);
    if (!clients) {
        clients = g_ptr_array_new_with_free_func(
            (GDestroyNotify)client_free);
    }
    g_ptr_array_add(clients, c);
    if (!client_write(c, b) || !client_write(c, HMP_PROMPT)) {
        g_ptr_array_remove(clients, c);
        return TRUE;
    }
    c->src = g_socket_create_source(sock, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                    NULL);
    g_source_set_callback(c->src, G_SOURCE_FUNC(client_ready), c, NULL);
    g_source_attach(c->src, NULL);
    return TRUE;
}

static bool listen_on(GSocketAddress *addr, GError **errp)
{
    GSocketService *svc = g_socket_service_new();

    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(svc), addr,
                                       G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_DEFAULT, NULL, NULL,
                                       errp)) {
        g_object_unref(svc);
        return false;
    }
    g_signal_connect(svc, "incoming", G_CALLBACK(incoming), NULL);
    g_socket_service_start(svc);
    if (!services) {
        services = g_ptr_array_new_with_free_func(g_object_unref);
    }
    g_ptr_array_add(services, svc);
    return true;
}

bool hmp_listen_unix(const char *path, GError **errp)
{
    g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
    mode_t old_mask;
    bool ok;

    unlink(path);               /* a stale socket of an earlier run */
    old_mask = umask(0177);     /* mode 0600 from the start */
    ok = listen_on(addr, errp);
    umask(old_mask);
    if (ok) {
        if (!unix_paths) {
            unix_paths = g_ptr_array_new_with_free_func(g_free);
        }
        g_ptr_array_add(unix_paths, g_strdup(path));
    }
    return ok;
}

bool hmp_listen_tcp(const char *host, const char *port, GError **errp)
{
    g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(
        host && *host ? host : "127.0.0.1");
    g_autoptr(GSocketAddress) addr = NULL;
    char *end;
    long p = strtol(port, &end, 10);

    if (!ia || !*port || *end || p < 0 || p > 65535) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "address resolution failed for %s:%s", host ? host : "",
                    port);
        return false;
    }
    addr = g_inet_socket_address_new(ia, p);
    return listen_on(addr, errp);
}

void hmp_shutdown(void)
{
    stdio_stop();
    tty_restore();
    if (stdio_line) {
        g_string_free(stdio_line, TRUE);
        stdio_line = NULL;
    }
    g_clear_pointer(&clients, g_ptr_array_unref);
    if (services) {
        for (guint i = 0; i < services->len; i++) {
            g_socket_service_stop(g_ptr_array_index(services, i));
            g_socket_listener_close(g_ptr_array_index(services, i));
        }
        g_clear_pointer(&services, g_ptr_array_unref);
    }
    if (unix_paths) {
        for (guint i = 0; i < unix_paths->len; i++) {
            unlink(g_ptr_array_index(unix_paths, i));
        }
        g_clear_pointer(&unix_paths, g_ptr_array_unref);
    }
}
