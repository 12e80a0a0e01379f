/* jobq_cli_keygen.c: `jobq keygen NAME`: a CURVE keypair as czmq
 * certificates, with the key's name and role in their metadata (what
 * jobqd's zauth hands back with each message: docs/security.md). */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "jobq_cli.h"

static bool valid_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 64 || n[0] == '.' || n[0] == '-')
        return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-' || *p == '@'))
            return false;
    return true;
}

int cmd_keygen(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {{.name = "role", .has_arg = true}, {.name = "dir", .has_arg = true}, {0}};
    char **pos = NULL;
    int npos;
    bool done;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    rc = CLI_EXIT_USAGE;
    if (npos != 1) {
        rc = cli_usage(cli, npos ? "one NAME only" : "missing NAME");
        goto out;
    }
    const char *name = pos[0];
    const char *role = opts[0].value ? opts[0].value : "submit";
    const char *dir = opts[1].value ? opts[1].value : ".";
    if (!valid_name(name)) {
        rc = cli_usage(cli, "invalid NAME '%s': 1 to 64 of letters, digits, '.', '_', '-', '@' "
                            "(it names the owner of the key's jobs)", name);
        goto out;
    }
    if (strcmp(role, "read") && strcmp(role, "submit") && strcmp(role, "admin") &&
        strcmp(role, "worker")) {
        rc = cli_usage(cli, "invalid role '%s': read, submit, admin or worker", role);
        goto out;
    }
    char pub[4200], sec[4216];
    snprintf(pub, sizeof pub, "%s/%s.key", dir, name);
    snprintf(sec, sizeof sec, "%s_secret", pub);
    struct stat st;
    if (stat(pub, &st) == 0 || stat(sec, &st) == 0) {
        cli_error(cli, "%s exists already: choose another NAME, or remove the old key first",
                  stat(pub, &st) == 0 ? pub : sec);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    zsys_handler_set(NULL); /* czmq must not take jobq's signals */
    zcert_t *cert = zcert_new();
    if (!cert) {
        cli_error(cli, "cannot make a keypair (libzmq without CURVE?)");
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    zcert_set_meta(cert, "name", "%s", name);
    zcert_set_meta(cert, "role", "%s", role);
    /* Both files are made here first, exclusively and never through a
     * link, before czmq writes into them: in a shared directory a file or
     * link planted after the check above is refused, not written through. */
    const char *paths[2] = {sec, pub};
    for (int i = 0; i < 2; i++) {
        int fd = open(paths[i], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      i == 0 ? 0600 : 0644);
        if (fd < 0) {
            cli_error(cli, "cannot write %s: %s", pub, strerror(errno));
            if (i == 1)
                unlink(sec);
            zcert_destroy(&cert);
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        close(fd);
    }
    mode_t old = umask(0077); /* the secret file is born 0600 */
    int saved = zcert_save(cert, pub);
    int err = errno;
    umask(old);
    if (saved < 0 || chmod(sec, 0600) < 0) {
        cli_error(cli, "cannot write %s: %s", pub, strerror(err ? err : errno));
        zcert_destroy(&cert);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    chmod(pub, 0644); /* public: for the daemon's authorized keys */
    if (cli->json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "public", pub, "secret", sec,
                              "public_key", zcert_public_txt(cert), "name", name, "role", role);
        cli_print_json(o);
        json_decref(o);
    } else {
        printf("public key:  %s (copy it into jobqd's authorized-keys directory)\n", pub);
        printf("secret key:  %s (mode 0600; use it with --key)\n", sec);
        printf("%s\n", zcert_public_txt(cert));
    }
    zcert_destroy(&cert);
    rc = CLI_EXIT_OK;
out:
    cli_opts_free(opts);
    free(pos);
    return rc;
}
