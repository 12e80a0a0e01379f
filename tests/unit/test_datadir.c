/* test_datadir.c: the data directory checks of broker/datadir.c: a fresh
 * path made with store/ and safe modes, a good existing one accepted, and
 * each way a directory can be untrustworthy refused with a message naming
 * the path: writable modes, symlinks in place of the directory, of store/
 * files and of the lock, wrong entry types, an open or sticky parent,
 * another owner (as root only). Then jq_open_private: symlinks, FIFOs,
 * hard links and other owners refused, our own files opened and created.
 * Every test works in its own mkdtemp directory under /tmp, removed by the
 * teardown whether the test passed or not. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "datadir.h"

#define NOBODY 65534

typedef struct {
    char base[64];   /* the mkdtemp directory: the data directory's parent */
    char dir[256];   /* base/data */
    char err[1024];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    strcpy(f->base, "/tmp/jq_datadir.XXXXXX");
    if (!mkdtemp(f->base)) {
        free(f);
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "%s/data", f->base);
    *state = f;
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    if (remove(path) < 0)
        fprintf(stderr, "test_datadir: cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    /* A test may have left modes that keep us out (as non-root). */
    chmod(f->base, 0700);
    chmod(f->dir, 0700);
    int rc = nftw(f->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return rc;
}

/* ---- helpers ---- */

static void path_in(const fx_t *f, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", f->dir, name);
}

static void make_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0640);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
}

/* A socket file at path, as jobqd's ipc endpoints leave behind. */
static void make_socket(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof sa.sun_path);
    strcpy(sa.sun_path, path);
    int rc = bind(s, (struct sockaddr *)&sa, sizeof sa);
    close(s);
    assert_int_equal(rc, 0);
}

/* A data directory as a running jobqd leaves it. */
static void make_good_dir(fx_t *f)
{
    char p[512];
    assert_int_equal(mkdir(f->dir, 0750), 0);
    path_in(f, "store", p, sizeof p);
    assert_int_equal(mkdir(p, 0750), 0);
    path_in(f, "lock", p, sizeof p);
    make_file(p);
    path_in(f, "store/data.mdb", p, sizeof p);
    make_file(p);
    path_in(f, "store/lock.mdb", p, sizeof p);
    make_file(p);
    path_in(f, "jobq.sock", p, sizeof p);
    make_socket(p);
    path_in(f, "events.sock", p, sizeof p);
    make_socket(p);
}

static int prepare(fx_t *f)
{
    f->err[0] = '\0';
    return jq_datadir_prepare(f->dir, f->err, sizeof f->err);
}

/* Refused, with one line that names path and has said. */
static void assert_refused(fx_t *f, const char *path, const char *says)
{
    assert_int_equal(prepare(f), -1);
    if (!strstr(f->err, path) || !strstr(f->err, says) || strchr(f->err, '\n'))
        fail_msg("message \"%s\" should name %s and say \"%s\"", f->err, path, says);
}

static void assert_accepted(fx_t *f)
{
    if (prepare(f) != 0)
        fail_msg("refused: %s", f->err);
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode;
}

/* ---- jq_datadir_prepare ---- */

static void test_fresh_path_created(void **state)
{
    fx_t *f = *state;
    /* Two missing levels above the data directory, under umask 0 so the
     * modes are exactly what was asked for. */
    snprintf(f->dir, sizeof f->dir, "%s/a/b/data", f->base);
    mode_t old = umask(0);
    int rc = prepare(f);
    umask(old);
    if (rc != 0)
        fail_msg("refused: %s", f->err);
    char p[512];
    assert_true(S_ISDIR(mode_of(f->dir)));
    /* Only jobqd's user reaches the sockets (docs/security.md)... */
    assert_int_equal(mode_of(f->dir) & 07777, 0700);
    path_in(f, "store", p, sizeof p);
    assert_true(S_ISDIR(mode_of(p)));
    assert_int_equal(mode_of(p) & 07777, 0700);
    snprintf(p, sizeof p, "%s/a", f->base);
    assert_int_equal(mode_of(p) & 07777, 0750);
    /* Nothing else is made: the lock and the store are the daemon's. */
    path_in(f, "lock", p, sizeof p);
    assert_int_equal(access(p, F_OK), -1);
    /* Again, now that it exists; and with a trailing slash. */
    assert_accepted(f);
    strcat(f->dir, "/");
    assert_accepted(f);
}

/* ...unless a group shares them (--group): 0750. */
static void test_fresh_path_shared_with_group(void **state)
{
    fx_t *f = *state;
    mode_t old = umask(0);
    jq_datadir_share_with_group(true);
    int rc = prepare(f);
    jq_datadir_share_with_group(false);
    umask(old);
    if (rc != 0)
        fail_msg("refused: %s", f->err);
    assert_int_equal(mode_of(f->dir) & 07777, 0750);
}

static void test_fresh_path_under_umask(void **state)
{
    fx_t *f = *state;
    mode_t old = umask(077);
    int rc = prepare(f);
    umask(old);
    if (rc != 0)
        fail_msg("refused: %s", f->err);
    assert_int_equal(mode_of(f->dir) & 07777, 0700);
}

static void test_existing_good_dir_accepted(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "store/store.id", p, sizeof p);
    make_file(p);
    assert_accepted(f);
    /* A data directory others may read and enter is fine: only writing
     * matters. */
    assert_int_equal(chmod(f->dir, 0755), 0);
    assert_accepted(f);
}

static void test_dir_writable_by_others(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    assert_int_equal(chmod(f->dir, 0777), 0);
    assert_refused(f, f->dir, "writable by others (mode 0777)");
    assert_true(strstr(f->err, "chmod go-w"));
    /* Refused, not fixed behind the operator's back. */
    assert_int_equal(mode_of(f->dir) & 07777, 0777);
}

static void test_dir_writable_by_group(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    assert_int_equal(chmod(f->dir, 0770), 0);
    assert_refused(f, f->dir, "writable by its group (mode 0770)");
}

static void test_store_writable_by_others(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "store", p, sizeof p);
    assert_int_equal(chmod(p, 0777), 0);
    assert_refused(f, p, "writable by others");
}

static void test_dir_is_symlink(void **state)
{
    fx_t *f = *state;
    char real[128];
    snprintf(real, sizeof real, "%s/real", f->base);
    snprintf(f->dir, sizeof f->dir, "%s", real);
    make_good_dir(f); /* a good directory, reached through a link */
    snprintf(f->dir, sizeof f->dir, "%s/data", f->base);
    assert_int_equal(symlink(real, f->dir), 0);
    assert_refused(f, f->dir, "is a symlink");
}

static void test_store_is_symlink(void **state)
{
    fx_t *f = *state;
    assert_int_equal(mkdir(f->dir, 0750), 0);
    char real[128], p[512];
    snprintf(real, sizeof real, "%s/elsewhere", f->base);
    assert_int_equal(mkdir(real, 0750), 0);
    path_in(f, "store", p, sizeof p);
    assert_int_equal(symlink(real, p), 0);
    assert_refused(f, p, "is a symlink");
}

static void test_dir_is_a_file(void **state)
{
    fx_t *f = *state;
    make_file(f->dir);
    assert_refused(f, f->dir, "is a regular file, not a directory");
}

/* The hostile trial: store/lock.mdb planted as a link to a file of ours
 * elsewhere. It must be refused and the target left untouched. */
static void test_lock_mdb_symlink(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char victim[256], p[512];
    snprintf(victim, sizeof victim, "%s/victim", f->base);
    make_file(victim);
    path_in(f, "store/lock.mdb", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink(victim, p), 0);
    assert_refused(f, p, "is a symlink");
    struct stat st;
    assert_int_equal(stat(victim, &st), 0);
    assert_int_equal(st.st_size, 1);
}

static void test_lock_mdb_dangling_symlink(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "store/lock.mdb", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("/nonexistent/jq_datadir_target", p), 0);
    assert_refused(f, p, "is a symlink");
}

static void test_data_mdb_is_directory(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "store/data.mdb", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0750), 0);
    assert_refused(f, p, "is a directory where jobqd keeps its own regular file");
}

static void test_data_mdb_hard_link(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char other[256], p[512];
    snprintf(other, sizeof other, "%s/other", f->base);
    make_file(other);
    path_in(f, "store/data.mdb", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(link(other, p), 0);
    assert_refused(f, p, "has 2 hard links");
}

static void test_lock_is_symlink(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char victim[256], p[512];
    snprintf(victim, sizeof victim, "%s/victim", f->base);
    make_file(victim);
    path_in(f, "lock", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink(victim, p), 0);
    assert_refused(f, p, "is a symlink");
}

static void test_socket_is_regular_file(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "jobq.sock", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    make_file(p);
    assert_refused(f, p, "is a regular file where jobqd keeps its own socket");
}

static void test_events_socket_is_symlink(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    char p[512];
    path_in(f, "events.sock", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("/tmp", p), 0);
    assert_refused(f, p, "is a symlink");
}

static void test_parent_writable_by_others(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    assert_int_equal(chmod(f->base, 0777), 0);
    assert_refused(f, f->base, "writable by others without the sticky bit (mode 0777)");
    /* A missing data directory is not even made in such a parent. */
    snprintf(f->dir, sizeof f->dir, "%s/other", f->base);
    assert_refused(f, f->base, "without the sticky bit");
    assert_int_equal(access(f->dir, F_OK), -1);
}

static void test_parent_sticky_accepted(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    assert_int_equal(chmod(f->base, 01777), 0);
    assert_accepted(f);
}

static void test_parent_is_symlink(void **state)
{
    fx_t *f = *state;
    char real[128];
    snprintf(real, sizeof real, "%s/real", f->base);
    assert_int_equal(mkdir(real, 0750), 0);
    char link[128];
    snprintf(link, sizeof link, "%s/link", f->base);
    assert_int_equal(symlink(real, link), 0);
    snprintf(f->dir, sizeof f->dir, "%s/data", link);
    /* The path works, but the link hides the real parent's mode. */
    assert_refused(f, link, "is a symlink; give the data directory by its real path");
    assert_true(strstr(f->err, real));
}

static void test_dot_dot_refused(void **state)
{
    fx_t *f = *state;
    make_good_dir(f);
    snprintf(f->dir, sizeof f->dir, "%s/data/store/..", f->base);
    assert_refused(f, f->dir, "ends in '..'");
}

/* Another user's directory: only root can make one to test with. */
static void test_dir_owned_by_another_user(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0)
        skip();
    make_good_dir(f);
    assert_int_equal(chown(f->dir, NOBODY, (gid_t)-1), 0);
    assert_refused(f, f->dir, "is owned by uid 65534, not by uid 0");
}

static void test_store_owned_by_another_user(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0)
        skip();
    make_good_dir(f);
    char p[512];
    path_in(f, "store", p, sizeof p);
    assert_int_equal(chown(p, NOBODY, (gid_t)-1), 0);
    assert_refused(f, p, "is owned by uid 65534");
}

static void test_entry_owned_by_another_user(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0)
        skip();
    make_good_dir(f);
    char p[512];
    path_in(f, "store/lock.mdb", p, sizeof p);
    assert_int_equal(chown(p, NOBODY, (gid_t)-1), 0);
    assert_refused(f, p, "is owned by uid 65534");
}

static void test_parent_owned_by_another_user(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0)
        skip();
    make_good_dir(f);
    assert_int_equal(chown(f->base, NOBODY, (gid_t)-1), 0);
    assert_refused(f, f->base, "is owned by uid 65534 (neither root nor uid 0");
    /* Sticky, the owner check gives way, as for /tmp. */
    assert_int_equal(chmod(f->base, 01755), 0);
    assert_accepted(f);
}

/* ---- jq_open_private ---- */

static void test_open_private_symlink(void **state)
{
    fx_t *f = *state;
    char target[256], p[512];
    snprintf(target, sizeof target, "%s/target", f->base);
    make_file(target);
    snprintf(p, sizeof p, "%s/lock", f->base);
    assert_int_equal(symlink(target, p), 0);
    errno = 0;
    assert_int_equal(jq_open_private(p, O_RDWR | O_CREAT | O_TRUNC, 0640), -1);
    assert_int_equal(errno, ELOOP);
    errno = 0;
    assert_int_equal(jq_open_private(p, O_RDONLY, 0), -1);
    assert_int_equal(errno, ELOOP);
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_size, 1);
}

static void test_open_private_own_file(void **state)
{
    fx_t *f = *state;
    char p[512];
    snprintf(p, sizeof p, "%s/lock", f->base);
    make_file(p);
    int fd = jq_open_private(p, O_RDWR | O_CREAT, 0640);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
    char c;
    assert_int_equal(read(fd, &c, 1), 1);
    assert_int_equal(c, 'x');
    close(fd);
    /* O_TRUNC still truncates a file that passed. */
    fd = jq_open_private(p, O_WRONLY | O_TRUNC, 0);
    assert_true(fd >= 0);
    close(fd);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 0);
}

static void test_open_private_creates(void **state)
{
    fx_t *f = *state;
    char p[512];
    snprintf(p, sizeof p, "%s/new", f->base);
    mode_t old = umask(0);
    int fd = jq_open_private(p, O_RDWR | O_CREAT, 0640);
    umask(old);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "y", 1), 1);
    close(fd);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_uid, geteuid());
    assert_int_equal(st.st_size, 1);
}

static void test_open_private_not_regular(void **state)
{
    fx_t *f = *state;
    char p[512];
    /* A directory, and a FIFO (which must not block the open). */
    snprintf(p, sizeof p, "%s/dir", f->base);
    assert_int_equal(mkdir(p, 0750), 0);
    errno = 0;
    assert_int_equal(jq_open_private(p, O_RDONLY, 0), -1);
    assert_int_equal(errno, EPERM);
    snprintf(p, sizeof p, "%s/fifo", f->base);
    assert_int_equal(mkfifo(p, 0640), 0);
    errno = 0;
    assert_int_equal(jq_open_private(p, O_RDONLY, 0), -1);
    assert_int_equal(errno, EPERM);
}

static void test_open_private_hard_link(void **state)
{
    fx_t *f = *state;
    char other[256], p[512];
    snprintf(other, sizeof other, "%s/other", f->base);
    make_file(other);
    snprintf(p, sizeof p, "%s/lock", f->base);
    assert_int_equal(link(other, p), 0);
    errno = 0;
    assert_int_equal(jq_open_private(p, O_RDWR | O_TRUNC, 0), -1);
    assert_int_equal(errno, EPERM);
    struct stat st;
    assert_int_equal(stat(other, &st), 0);
    assert_int_equal(st.st_size, 1);
}

static void test_open_private_other_owner(void **state)
{
    fx_t *f = *state;
    if (geteuid() != 0)
        skip();
    char p[512];
    snprintf(p, sizeof p, "%s/lock", f->base);
    make_file(p);
    assert_int_equal(chown(p, NOBODY, (gid_t)-1), 0);
    errno = 0;
    /* Refused before O_TRUNC could touch it. */
    assert_int_equal(jq_open_private(p, O_RDWR | O_CREAT | O_TRUNC, 0640), -1);
    assert_int_equal(errno, EPERM);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 1);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_fresh_path_created),
        T(test_fresh_path_under_umask),
        T(test_fresh_path_shared_with_group),
        T(test_existing_good_dir_accepted),
        T(test_dir_writable_by_others),
        T(test_dir_writable_by_group),
        T(test_store_writable_by_others),
        T(test_dir_is_symlink),
        T(test_store_is_symlink),
        T(test_dir_is_a_file),
        T(test_lock_mdb_symlink),
        T(test_lock_mdb_dangling_symlink),
        T(test_data_mdb_is_directory),
        T(test_data_mdb_hard_link),
        T(test_lock_is_symlink),
        T(test_socket_is_regular_file),
        T(test_events_socket_is_symlink),
        T(test_parent_writable_by_others),
        T(test_parent_sticky_accepted),
        T(test_parent_is_symlink),
        T(test_dot_dot_refused),
        T(test_dir_owned_by_another_user),
        T(test_store_owned_by_another_user),
        T(test_entry_owned_by_another_user),
        T(test_parent_owned_by_another_user),
        T(test_open_private_symlink),
        T(test_open_private_own_file),
        T(test_open_private_creates),
        T(test_open_private_not_regular),
        T(test_open_private_hard_link),
        T(test_open_private_other_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
