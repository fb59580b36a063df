/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * minivm: a tiny "hypervisor" embedding libstrata through its installed
 * API only (<strata/strata.h>, `pkg-config strata`).
 *
 *   minivm --qmp SOCKET [--record-size N] [--interval-us N] IMAGE...
 *
 * Each qcow2 IMAGE becomes a disk (node-names d0, d1, ...).  One "guest"
 * thread per disk writes sequenced records: record s (a single sequence
 * over all disks, each record written only after the one before it
 * completed) goes to disk s % ndisks at byte (s / ndisks) * N and holds
 * the text "strata-cut-record S C" (C = S * 2654435761 mod 2^64),
 * NUL-padded to N bytes, the format strata's consistent-cut tests read.
 * So any consistent snapshot of all disks holds records 1..M for some M.
 *
 * The QMP socket speaks QEMU's protocol; every line is forwarded to
 * libstrata (strata_qmp_session_handle()), events go to every client
 * that negotiated, except three commands minivm answers itself, as a
 * hypervisor has commands of its own:
 *   minivm-stop-writers  stops the guest threads; returns
 *                        {"writes": [per disk], "pauses": P, "resumes": R}
 *                        (P, R: calls of the transaction pause hook)
 *   quit                 stops the guest, closes the disks, exits 0
 * Savevm (HMP through human-monitor-command) stores a disk-only snapshot,
 * unless minivm is compiled with -DMINIVM_VMSTATE (needs a libstrata
 * that exports the VM-state callbacks of strata/vmstate.h): then savevm
 * stores a small fake VM state (the guest's record counter) and loadvm
 * reads it back.
 *
 * Build: cc minivm.c $(pkg-config --cflags --libs strata gio-2.0
 *                      json-glib-1.0) -o minivm
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib-unix.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include <strata/strata.h>

#define MAX_DISKS 16

typedef struct Vm {
    StrataDevice *disk[MAX_DISKS];
    int ndisks;
    size_t record_size;
    unsigned interval_us;
    GThread *guest[MAX_DISKS];
    GMutex lock;
    GCond turn;
    uint64_t next_seq;         /* the record to write next; under lock */
    uint64_t writes[MAX_DISKS];
    int write_errors;
    bool stop;                 /* under lock */
    int pauses, resumes;       /* the transaction hooks' calls */
    GMainLoop *loop;
    GPtrArray *clients;        /* Client * */
} Vm;

typedef struct Client {
    Vm *vm;
    GSocketConnection *conn;
    GDataInputStream *in;
    GOutputStream *out;
    StrataQmpSession *session;
} Client;

static Vm vm;

/* ---- the guest ---- */

static void make_record(uint64_t seq, uint8_t *buf, size_t size)
{
    memset(buf, 0, size);
    snprintf((char *)buf, size, "strata-cut-record %" G_GUINT64_FORMAT
             " %" G_GUINT64_FORMAT, seq, seq * 2654435761u);
}

/* Disk i's guest: waits for its turn in the one sequence, writes the
 * record, passes the turn on. */
static gpointer guest_thread(gpointer opaque)
{
    int i = GPOINTER_TO_INT(opaque);
    g_autofree uint8_t *buf = g_malloc(vm.record_size);

    for (;;) {
        uint64_t seq;
        int ret;

        g_mutex_lock(&vm.lock);
        while (!vm.stop && vm.next_seq % vm.ndisks != (uint64_t)i) {
            g_cond_wait(&vm.turn, &vm.lock);
        }
        if (vm.stop) {
            g_mutex_unlock(&vm.lock);
            return NULL;
        }
        seq = vm.next_seq;
        g_mutex_unlock(&vm.lock);

        /* A guest that has filled its disks goes idle; writing past the
         * end would be an I/O error the cut check has no use for. */
        if ((int64_t)(seq / vm.ndisks + 1) * (int64_t)vm.record_size >
            strata_device_get_length(vm.disk[i])) {
            g_mutex_lock(&vm.lock);
            vm.stop = true;
            g_cond_broadcast(&vm.turn);
            g_mutex_unlock(&vm.lock);
            return NULL;
        }
        make_record(seq, buf, vm.record_size);
        ret = strata_device_pwrite(vm.disk[i],
                                   (int64_t)(seq / vm.ndisks) *
                                   (int64_t)vm.record_size,
                                   vm.record_size, buf, 0);
        g_mutex_lock(&vm.lock);
        if (ret < 0) {
            /* a guest sees an I/O error: stop the whole guest so the
             * sequence never has a hole */
            fprintf(stderr, "minivm: disk %d: write of record %"
                    G_GUINT64_FORMAT " failed: %s\n", i, seq,
                    g_strerror(-ret));
            vm.write_errors++;
            vm.stop = true;
        } else {
            vm.writes[i]++;
            vm.next_seq++;
        }
        g_cond_broadcast(&vm.turn);
        g_mutex_unlock(&vm.lock);
        if (vm.interval_us) {
            g_usleep(vm.interval_us);
        }
    }
}

static void stop_guest(void)
{
    g_mutex_lock(&vm.lock);
    vm.stop = true;
    g_cond_broadcast(&vm.turn);
    g_mutex_unlock(&vm.lock);
    for (int i = 0; i < vm.ndisks; i++) {
        if (vm.guest[i]) {
            g_thread_join(vm.guest[i]);
            vm.guest[i] = NULL;
        }
    }
}

/* The transaction engine holds the disks: a hypervisor would stop its
 * vCPUs here; minivm counts. */
static void on_paused(const char *const *nodes, size_t count, void *opaque)
{
    g_atomic_int_inc(&vm.pauses);
}

static void on_resumed(const char *const *nodes, size_t count, void *opaque)
{
    g_atomic_int_inc(&vm.resumes);
}

#ifdef MINIVM_VMSTATE
/*
 * The fake VM state savevm stores: a magic line and the guest's
 * counters (the disks are paused while it runs, so they are the
 * counters of the cut).  loadvm reads it back and checks the magic.
 */
#define VMSTATE_MAGIC "minivm-vmstate-1\n"

static bool vm_save(StrataVmStateWriter *w, void *opaque, GError **errp)
{
    g_autofree char *text = NULL;

    g_mutex_lock(&vm.lock);
    text = g_strdup_printf(VMSTATE_MAGIC "next_seq %" G_GUINT64_FORMAT "\n",
                           vm.next_seq);
    g_mutex_unlock(&vm.lock);
    return strata_vmstate_write(w, text, strlen(text), errp);
}

static bool vm_load(StrataVmStateReader *r, uint64_t size, void *opaque,
                    GError **errp)
{
    g_autofree char *text = g_malloc0(size + 1);

    if (!strata_vmstate_read(r, text, size, errp)) {
        return false;
    }
    if (!g_str_has_prefix(text, VMSTATE_MAGIC)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "not a minivm VM state");
        return false;
    }
    printf("minivm: loaded VM state: %s", text + strlen(VMSTATE_MAGIC));
    fflush(stdout);
    return true;
}
#endif

/* ---- the QMP socket ---- */

static void client_send(Client *c, const char *line)
{
    g_autofree char *text = g_strdup_printf("%s\r\n", line);

    /* a client that does not read is dropped at its next input */
    g_output_stream_write_all(c->out, text, strlen(text), NULL, NULL, NULL);
}

static void on_event(const char *event, void *opaque)
{
    for (guint i = 0; i < vm.clients->len; i++) {
        Client *c = g_ptr_array_index(vm.clients, i);
        if (strata_qmp_session_negotiated(c->session)) {
            client_send(c, event);
        }
    }
}

static void client_free(Client *c)
{
    g_object_unref(c->in);
    g_object_unref(c->conn);
    strata_qmp_session_free(c->session);
    g_free(c);
}

/* The minivm-stop-writers reply. */
static char *stop_writers_reply(JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonGenerator) gen = json_generator_new();
    g_autoptr(JsonNode) root = NULL;

    stop_guest();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "return");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "writes");
    json_builder_begin_array(b);
    for (int i = 0; i < vm.ndisks; i++) {
        json_builder_add_int_value(b, (gint64)vm.writes[i]);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "errors");
    json_builder_add_int_value(b, vm.write_errors);
    json_builder_set_member_name(b, "pauses");
    json_builder_add_int_value(b, g_atomic_int_get(&vm.pauses));
    json_builder_set_member_name(b, "resumes");
    json_builder_add_int_value(b, g_atomic_int_get(&vm.resumes));
    json_builder_end_object(b);
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    return json_generator_to_data(gen, NULL);
}

/* minivm's own command of the line, or NULL: forwarded to libstrata. */
static const char *own_command(const char *line, JsonNode **id)
{
    g_autoptr(JsonParser) p = json_parser_new();
    JsonObject *o;
    const char *name;

    if (!json_parser_load_from_data(p, line, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        return NULL;
    }
    o = json_node_get_object(json_parser_get_root(p));
    name = json_object_has_member(o, "execute")
           ? json_object_get_string_member(o, "execute") : NULL;
    *id = json_object_has_member(o, "id")
          ? json_node_copy(json_object_get_member(o, "id")) : NULL;
    if (name && !strcmp(name, "minivm-stop-writers")) {
        return "minivm-stop-writers";
    }
    if (name && !strcmp(name, "quit")) {
        return "quit";
    }
    if (*id) {
        json_node_unref(*id);
        *id = NULL;
    }
    return NULL;
}

static void read_line(Client *c);

static void line_ready(GObject *src, GAsyncResult *res, gpointer opaque)
{
    Client *c = opaque;
    g_autofree char *line = g_data_input_stream_read_line_finish(
        c->in, res, NULL, NULL);
    g_autofree char *reply = NULL;
    JsonNode *id = NULL;
    const char *own;

    if (!line) {
        g_ptr_array_remove(vm.clients, c);
        return;
    }
    g_strchomp(line);
    if (!*line) {
        read_line(c);
        return;
    }
    own = strata_qmp_session_negotiated(c->session)
          ? own_command(line, &id) : NULL;
    if (own && !strcmp(own, "quit")) {
        client_send(c, "{\"return\": {}}");
        if (id) {
            json_node_unref(id);
        }
        g_main_loop_quit(vm.loop);
        return;
    }
    reply = own ? stop_writers_reply(id)
                : strata_qmp_session_handle(c->session, line);
    if (id) {
        json_node_unref(id);
    }
    client_send(c, reply);
    read_line(c);
}

static void read_line(Client *c)
{
    g_data_input_stream_read_line_async(c->in, G_PRIORITY_DEFAULT, NULL,
                                        line_ready, c);
}

static gboolean on_incoming(GSocketService *svc, GSocketConnection *conn,
                            GObject *src, gpointer opaque)
{
    Client *c = g_new0(Client, 1);
    g_autofree char *greeting = NULL;

    c->conn = g_object_ref(conn);
    c->in = g_data_input_stream_new(
        g_io_stream_get_input_stream(G_IO_STREAM(conn)));
    c->out = g_io_stream_get_output_stream(G_IO_STREAM(conn));
    c->session = strata_qmp_session_new();
    g_ptr_array_add(vm.clients, c);
    greeting = strata_qmp_session_greeting(c->session);
    client_send(c, greeting);
    read_line(c);
    return TRUE;
}

/* ---- main ---- */

static gboolean on_signal(gpointer opaque)
{
    g_main_loop_quit(vm.loop);
    return G_SOURCE_CONTINUE;
}

static int usage(void)
{
    fprintf(stderr, "usage: minivm --qmp SOCKET [--record-size N] "
            "[--interval-us N] IMAGE...\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *qmp = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(GSocketService) svc = NULL;
    g_autoptr(GSocketAddress) addr = NULL;
    int rc = 0;

    vm.record_size = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--qmp") && i + 1 < argc) {
            qmp = argv[++i];
        } else if (!strcmp(argv[i], "--record-size") && i + 1 < argc) {
            vm.record_size = strtoul(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--interval-us") && i + 1 < argc) {
            vm.interval_us = strtoul(argv[++i], NULL, 0);
        } else if (argv[i][0] == '-' || vm.ndisks == MAX_DISKS) {
            return usage();
        } else {
            g_autofree char *opts = g_strdup_printf(
                "driver=qcow2,node-name=d%d,file.driver=file,"
                "file.filename=%s", vm.ndisks, argv[i]);
            strata_log_set_sink(strata_log_to_stderr, NULL);
            vm.disk[vm.ndisks] = strata_device_open(opts, &err);
            if (!vm.disk[vm.ndisks]) {
                fprintf(stderr, "minivm: %s: %s\n", argv[i], err->message);
                return 1;
            }
            vm.ndisks++;
        }
    }
    if (!qmp || !vm.ndisks || vm.record_size < 64) {
        return usage();
    }
    printf("minivm on libstrata %s (headers %s), %d disks\n",
           strata_version(), STRATA_VERSION_STRING, vm.ndisks);

    vm.loop = g_main_loop_new(NULL, FALSE);
    vm.clients = g_ptr_array_new_with_free_func((GDestroyNotify)client_free);
    strata_monitor_set_event_handler(on_event, NULL);
    strata_transaction_set_hooks(on_paused, on_resumed, NULL);
#ifdef MINIVM_VMSTATE
    {
        static const StrataVmStateHandler handler = {
            .save = vm_save, .load = vm_load,
        };
        strata_vmstate_set_handler(&handler, NULL);
    }
#endif
    unlink(qmp);
    svc = g_socket_service_new();
    addr = g_unix_socket_address_new(qmp);
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(svc), addr,
                                       G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_DEFAULT, NULL,
                                       NULL, &err)) {
        fprintf(stderr, "minivm: %s: %s\n", qmp, err->message);
        return 1;
    }
    g_signal_connect(svc, "incoming", G_CALLBACK(on_incoming), NULL);
    g_unix_signal_add(SIGTERM, on_signal, NULL);
    g_unix_signal_add(SIGINT, on_signal, NULL);

    vm.next_seq = 1;
    for (int i = 0; i < vm.ndisks; i++) {
        vm.guest[i] = g_thread_new("guest", guest_thread,
                                   GINT_TO_POINTER(i));
    }
    printf("minivm: QMP on %s\n", qmp);
    fflush(stdout);
    g_main_loop_run(vm.loop);

    stop_guest();
    g_socket_service_stop(svc);
    g_socket_listener_close(G_SOCKET_LISTENER(svc));
    unlink(qmp);
    g_ptr_array_unref(vm.clients);
    strata_monitor_set_event_handler(NULL, NULL);
    strata_transaction_set_hooks(NULL, NULL, NULL);
    for (int i = 0; i < vm.ndisks; i++) {
        if (strata_device_flush(vm.disk[i]) < 0) {
            rc = 1;
        }
    }
    /* external snapshots made the opened nodes backing files: shutdown
     * closes every node whatever the graph looks like */
    strata_shutdown();
    for (int i = 0; i < vm.ndisks; i++) {
        strata_device_close(vm.disk[i], NULL);
    }
    g_main_loop_unref(vm.loop);
    return rc;
}
