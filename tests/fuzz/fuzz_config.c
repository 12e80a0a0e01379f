/* fuzz_config.c: libFuzzer target for jobqd's options (broker/config.c):
 * the config file parser (one "name = value" per line) and the command
 * line parser with every option's value check, through jq_config_load
 * as jobqd's main() calls it, then jq_config_reload (SIGHUP's path) on
 * the same file and command line against a running default.
 *
 * The input is the config file's bytes up to the first NUL; after it,
 * NUL-separated command-line arguments follow `jobqd --config FILE`.
 * Arguments that would name another config file (-c..., --config...) are
 * left out: the target reads only its own file, never a path the input
 * chooses (/dev/stdin would block). */
#include "config.h"
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[512];
static int fd = -1;

static void remove_file(void) { unlink(path); }

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/jobq-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if ((fd = mkstemp(path)) < 0) {
        perror(path);
        abort();
    }
    atexit(remove_file);
    /* --help and --version print on stdout: not the fuzzer's business. */
    if (!freopen("/dev/null", "w", stdout))
        abort();
    jq_log_set_level(JQ_LOG_ERROR); /* a reload logs what it changed */
}

static bool names_config(const char *a)
{
    return !strncmp(a, "-c", 2) || !strncmp(a, "--config", 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        setup();
    const char *nul = memchr(data, '\0', size);
    size_t flen = nul ? (size_t)(nul - (const char *)data) : size;
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, flen, 0) != (ssize_t)flen)
        abort();
    /* The arguments, each NUL-terminated in a copy of the rest. */
    size_t rest = nul ? size - flen - 1 : 0;
    char *args = malloc(rest + 1);
    if (!args)
        return 0;
    memcpy(args, nul ? nul + 1 : "", rest);
    args[rest] = '\0';
    char *argv[FUZZ_MAX_ARGS + 4] = {"jobqd", "--config", path};
    int argc = 3;
    for (char *a = args; a < args + rest && argc < FUZZ_MAX_ARGS + 3; a += strlen(a) + 1)
        if (!names_config(a))
            argv[argc++] = a;
    argv[argc] = NULL;
    char err[512] = "";
    static jq_config_t cfg, cur;
    char **copy[2];
    /* getopt permutes argv: each parse gets its own copy. */
    for (int k = 0; k < 2; k++) {
        copy[k] = malloc(sizeof argv);
        if (!copy[k])
            abort();
        memcpy(copy[k], argv, sizeof argv);
    }
    int rc = jq_config_load(&cfg, argc, copy[0], err, sizeof err);
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "fuzz_config: refused without a message\n");
        abort();
    }
    char *plain[] = {"jobqd", NULL};
    if (jq_config_load(&cur, 1, plain, err, sizeof err) != 0)
        abort();
    snprintf(cur.config_path, sizeof cur.config_path, "%s", path);
    jq_config_reload(&cur, argc, copy[1], err, sizeof err);
    free(copy[0]);
    free(copy[1]);
    free(args);
    return 0;
}
