/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A stand-alone driver for the qcow2 fuzz target, for builds without
 * libFuzzer: `make check` replays the corpus and past crash inputs with
 * it (gcc, ASan+UBSan), and AFL++ runs it.
 *
 *   fuzz-qcow2-replay FILE|DIR...   runs every file given, and every file
 *                                   in each directory given (sorted;
 *                                   dot files and *.md skipped)
 *   fuzz-qcow2-replay               reads one input from stdin (AFL++'s
 *                                   classic mode, @@-less); built with
 *                                   afl-clang-fast/lto it loops in
 *                                   persistent mode over shared memory
 *
 * STRATA_FUZZ_MAX_RSS_MB=N makes a replay fail when the process's peak
 * RSS went over N MiB (every input closes everything it opened; the
 * whole corpus must fit in what libFuzzer's -rss_limit_mb allows one).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib.h>

#include "fuzz-qcow2.h"

#define MAX_STDIN_INPUT (8 << 20)

static int run_file(const char *path)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        fprintf(stderr, "fuzz-qcow2-replay: %s\n", err->message);
        return 1;
    }
    fprintf(stderr, "replay %s (%zu bytes)\n", path, (size_t)len);
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    return 0;
}

static bool skipped_name(const char *name)
{
    return name[0] == '.' || g_str_has_suffix(name, ".md");
}

/* g_ptr_array_sort passes pointers to the elements */
static int compare_paths(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int *count)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GDir) d = g_dir_open(dir, 0, &err);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    int fails = 0;

    if (!d) {
        fprintf(stderr, "fuzz-qcow2-replay: %s\n", err->message);
        return 1;
    }
    while ((name = g_dir_read_name(d)) != NULL) {
        if (!skipped_name(name)) {
            g_ptr_array_add(names, g_build_filename(dir, name, NULL));
        }
    }
    g_ptr_array_sort(names, compare_paths);
    for (guint i = 0; i < names->len; i++) {
        const char *path = g_ptr_array_index(names, i);
        if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
            fails += run_file(path);
            (*count)++;
        }
    }
    return fails;
}

static bool rss_within_limit(void)
{
    const char *env = getenv("STRATA_FUZZ_MAX_RSS_MB");
    struct rusage ru;

    if (!env || getrusage(RUSAGE_SELF, &ru) < 0) {
        return true;
    }
    fprintf(stderr, "fuzz-qcow2-replay: peak RSS %ld MiB (limit %s MiB)\n",
            ru.ru_maxrss / 1024, env);
    return ru.ru_maxrss <= atol(env) * 1024L;
}

static int run_args(int argc, char **argv)
{
    int fails = 0, count = 0;

    for (int i = 1; i < argc; i++) {
        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            fails += run_dir(argv[i], &count);
        } else {
            fails += run_file(argv[i]);
            count++;
        }
    }
    fprintf(stderr, "fuzz-qcow2-replay: %d inputs, %d unreadable\n", count,
            fails);
    return fails || !rss_within_limit() ? 1 : 0;
}

#ifdef __AFL_FUZZ_TESTCASE_LEN
__AFL_FUZZ_INIT();

static int run_afl(void)
{
    const uint8_t *buf = __AFL_FUZZ_TESTCASE_BUF;

    while (__AFL_LOOP(10000)) {
        LLVMFuzzerTestOneInput(buf, __AFL_FUZZ_TESTCASE_LEN);
    }
    return 0;
}
#else
static int run_afl(void)
{
    g_autofree uint8_t *buf = g_malloc(MAX_STDIN_INPUT);
    size_t len = fread(buf, 1, MAX_STDIN_INPUT, stdin);

    LLVMFuzzerTestOneInput(buf, len);
    return 0;
}
#endif

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        return run_afl();
    }
    return run_args(argc, argv);
}
