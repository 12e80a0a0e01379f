/* datadir.c: the data directory checks jobqd makes before it opens
 * anything there, and jq_open_private (see datadir.h).
 *
 * Why checking once is enough: every check here looks at the path itself
 * (lstat, never stat), so a link is seen as a link. Once the data directory
 * and store/ are real directories owned by the daemon's user and writable
 * by nobody else, only that user (and root) can create, rename or remove
 * entries in them, so nothing can be planted there after the check. The
 * data directory itself could still be renamed away and replaced by whoever
 * may write its parent, hence the parent's checks: not writable by others
 * unless sticky (there only an entry's owner, the directory's owner and
 * root may rename it), and owned by root or the daemon's user unless
 * sticky. That trusts the parent's group, and the owner of a sticky parent;
 * /tmp and a directory of the daemon's own user both pass. Entries that
 * were there before the directory was closed (or left by a daemon run as
 * another user) are what the per-entry checks catch. Directories further
 * up are not checked: a path through /tmp must work.
 */
#include "datadir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The longest path handled. */
#define DD_MAX PATH_MAX

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static const char *type_name(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFSOCK: return "socket";
    case S_IFIFO: return "FIFO";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    default: return "special file";
    }
}

/* mkdir with 0750, 0 when path already exists too (EEXIST, or EACCES or
 * EROFS for one in a directory we cannot write). An existing path is left
 * as it is: the caller judges it. */
/* The data, run and store directories themselves: 0700, so that only
 * jobqd's user reaches the sockets, or 0750 when a group shares them
 * (jq_datadir_share_with_group). */
static mode_t own_mode = 0700;

void jq_datadir_share_with_group(bool on)
{
    own_mode = on ? 0750 : 0700;
}

static int mkdir_mode(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    int e = errno;
    struct stat st;
    if (lstat(path, &st) == 0)
        return 0;
    errno = e;
    return -1;
}

static int mkdir_absent(const char *path)
{
    return mkdir_mode(path, 0750);
}

/* mkdir -p with 0750 for what is created. Existing components are left
 * as they are (judging them is not this function's job: only the data
 * directory and its parent are judged, by the caller). */
static int mkdir_p(char *path, char *err, size_t errlen)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        bool end = *p == '\0';
        if (p[-1] != '/') { /* skip the empty components of "a//b" */
            *p = '\0';
            if (mkdir_absent(path) < 0) {
                fail(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
                if (!end)
                    *p = '/';
                return -1;
            }
            if (!end)
                *p = '/';
        }
        if (end)
            return 0;
    }
}

/* DIR (or store/ in it): a real directory, ours, writable only by us. */
static int check_dir(const char *path, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return fail(err, errlen, "cannot examine %s %s: %s", what, path, strerror(errno));
    if (S_ISLNK(st.st_mode))
        return fail(err, errlen,
                    "%s %s is a symlink, which jobqd does not follow; use the directory it "
                    "points to instead, or remove the link",
                    what, path);
    if (!S_ISDIR(st.st_mode))
        return fail(err, errlen, "%s %s is a %s, not a directory; move it away", what, path,
                    type_name(st.st_mode));
    uid_t me = geteuid();
    if (st.st_uid != me)
        return fail(err, errlen,
                    "%s %s is owned by uid %u, not by uid %u that jobqd runs as; chown %u %s, "
                    "or run jobqd as its owner",
                    what, path, (unsigned)st.st_uid, (unsigned)me, (unsigned)me, path);
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return fail(err, errlen, "%s %s is writable by %s (mode %04o); chmod go-w %s", what, path,
                    st.st_mode & S_IWOTH ? "others" : "its group",
                    (unsigned)(st.st_mode & 07777), path);
    return 0;
}

/* Whoever may write the parent may rename the data directory away and put
 * another in its place. */
static int check_parent(const char *parent, const char *dir, const char *what, const char *base,
                        char *err, size_t errlen)
{
    struct stat st;
    if (lstat(parent, &st) < 0)
        return fail(err, errlen, "cannot examine %s, the parent of %s %s: %s", parent,
                    what, dir, strerror(errno));
    if (S_ISLNK(st.st_mode)) {
        /* The link's own mode says nothing about the directory it names;
         * judging that one would mean following the link. */
        char *real = realpath(parent, NULL);
        fail(err, errlen,
             "%s, the parent of %s %s, is a symlink; give the %s by "
             "its real path%s%s%s%s%s",
             parent, what, dir, what, real ? " (" : "", real ? real : "", real ? "/" : "",
             real ? base : "", real ? ")" : "");
        free(real);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return fail(err, errlen, "%s, the parent of %s %s, is a %s, not a directory",
                    parent, what, dir, type_name(st.st_mode));
    bool sticky = st.st_mode & S_ISVTX;
    if ((st.st_mode & S_IWOTH) && !sticky)
        return fail(err, errlen,
                    "%s, the parent of %s %s, is writable by others without the "
                    "sticky bit (mode %04o), so anyone could replace the %s; "
                    "chmod o-w %s",
                    parent, what, dir, (unsigned)(st.st_mode & 07777), what, parent);
    uid_t me = geteuid();
    if (st.st_uid != 0 && st.st_uid != me && !sticky)
        return fail(err, errlen,
                    "%s, the parent of %s %s, is owned by uid %u (neither root nor "
                    "uid %u that jobqd runs as), who could replace the %s; put the "
                    "%s in a directory owned by root or by uid %u",
                    parent, what, dir, (unsigned)st.st_uid, (unsigned)me, what, what,
                    (unsigned)me);
    return 0;
}

/* One of jobq's own entries, when it exists: of that type, never a link.
 * Regular files are also ours with a single name: a file another user left
 * there, or a hard link to a file elsewhere, would be written through. */
static int check_entry(const char *dir, const char *name, mode_t type, char *err,
                       size_t errlen)
{
    char path[DD_MAX + 64]; /* dir is under DD_MAX, name one of ours */
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return fail(err, errlen, "cannot examine %s: %s", path, strerror(errno));
    }
    const char *want = type == S_IFSOCK ? "socket" : "regular file";
    if (S_ISLNK(st.st_mode))
        return fail(err, errlen,
                    "%s is a symlink where jobqd keeps its own %s; jobqd never makes one and "
                    "will not follow it: remove it (rm %s)",
                    path, want, path);
    if ((st.st_mode & S_IFMT) != type)
        return fail(err, errlen,
                    "%s is a %s where jobqd keeps its own %s; move it out of the data directory",
                    path, type_name(st.st_mode), want);
    if (type != S_IFREG)
        return 0; /* a socket is only ever unlinked and bound anew */
    uid_t me = geteuid();
    if (st.st_uid != me)
        return fail(err, errlen,
                    "%s is owned by uid %u, not by uid %u that jobqd runs as; chown %u %s if it "
                    "is jobq's own file, else move it away",
                    path, (unsigned)st.st_uid, (unsigned)me, (unsigned)me, path);
    if (st.st_nlink != 1)
        return fail(err, errlen,
                    "%s has %ju hard links, so writing it would change another name too; "
                    "replace it with a copy (cp -p %s %s.new && mv %s.new %s)",
                    path, (uintmax_t)st.st_nlink, path, path, path, path);
    return 0;
}

/* DIR, created when absent (with missing parents), judged with its
 * parent; its normalized path (no trailing '/') into path. */
static int prepare_dir(const char *dir, const char *what, char *path, char *err, size_t errlen)
{
    if (!dir || !*dir)
        return fail(err, errlen, "no %s given", what);
    char parent[DD_MAX];
    size_t len = strlen(dir);
    if (len >= DD_MAX - 32) /* room for "/store/lock.mdb" and the like */
        return fail(err, errlen, "%s path too long (%zu bytes)", what, len);
    memcpy(path, dir, len + 1);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    /* The parent is found by name: "x/.." has no parent we could judge. */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!strcmp(base, ".") || !strcmp(base, "..")) {
        char *real = realpath(path, NULL);
        fail(err, errlen, "%s %s ends in '%s'; give its real path%s%s%s", what, path, base,
             real ? " (" : "", real ? real : "", real ? ")" : "");
        free(real);
        return -1;
    }

    memcpy(parent, path, len + 1);
    char *slash = strrchr(parent, '/');
    if (!slash) {
        strcpy(parent, ".");
    } else {
        while (slash > parent && slash[-1] == '/')
            slash--;
        slash[slash == parent] = '\0'; /* "/x" → "/" */
    }

    /* Created only when absent: an existing directory is judged as it is,
     * never changed (a bad mode is reported, not silently fixed). The
     * parent is judged before anything is made in it. */
    if (mkdir_p(parent, err, errlen) < 0 || check_parent(parent, path, what, base, err, errlen) < 0)
        return -1;
    if (mkdir_mode(path, own_mode) < 0)
        return fail(err, errlen, "cannot create %s %s: %s", what, path, strerror(errno));
    return check_dir(path, what, err, errlen);
}

typedef struct {
    const char *name;
    mode_t type;
} entry_t;

static int check_entries(const char *path, const entry_t *entries, size_t n, char *err,
                         size_t errlen)
{
    for (size_t i = 0; i < n; i++)
        if (check_entry(path, entries[i].name, entries[i].type, err, errlen) < 0)
            return -1;
    return 0;
}

int jq_datadir_prepare(const char *dir, char *err, size_t errlen)
{
    char path[DD_MAX], store[DD_MAX];
    if (prepare_dir(dir, "data directory", path, err, errlen) < 0)
        return -1;
    /* Only now that the data directory is trusted is anything made in it. */
    size_t len = strlen(path);
    memcpy(store, path, len);
    strcpy(store + len, "/store"); /* fits: len was checked above */
    if (mkdir_mode(store, own_mode) < 0)
        return fail(err, errlen, "cannot create store directory %s: %s", store, strerror(errno));
    if (check_dir(store, "store directory", err, errlen) < 0)
        return -1;

    static const entry_t entries[] = {
        {"lock", S_IFREG},           {"jobq.sock", S_IFSOCK},
        {"events.sock", S_IFSOCK},   {"store/data.mdb", S_IFREG},
        {"store/lock.mdb", S_IFREG}, {"store/store.id", S_IFREG},
        {"store/wal", S_IFREG},
        {"epoch", S_IFREG},          {"epoch.new", S_IFREG},
    };
    return check_entries(path, entries, sizeof entries / sizeof *entries, err, errlen);
}

int jq_rundir_prepare(const char *dir, char *err, size_t errlen)
{
    char path[DD_MAX];
    if (prepare_dir(dir, "run directory", path, err, errlen) < 0)
        return -1;
    static const entry_t entries[] = {
        {"lock", S_IFREG},
        {"jobq.sock", S_IFSOCK},
        {"events.sock", S_IFSOCK},
    };
    return check_entries(path, entries, sizeof entries / sizeof *entries, err, errlen);
}

int jq_open_private(const char *path, int flags, mode_t mode)
{
    /* O_TRUNC would act before the file is judged: it is applied after.
     * O_NONBLOCK keeps a FIFO planted there from blocking the open. */
    int fd = open(path, (flags & ~O_TRUNC) | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode);
    if (fd < 0)
        return -1; /* ELOOP for a symlink */
    struct stat st;
    int e = EPERM;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if (S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_nlink == 1) {
        e = 0;
        int fl = fcntl(fd, F_GETFL);
        if (!(flags & O_NONBLOCK) && (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0))
            e = errno;
        else if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && ftruncate(fd, 0) < 0)
            e = errno;
    }
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
