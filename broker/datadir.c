/* datadir.c: the data directory checks (see datadir.h). */
#include "datadir.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strnlen(path, sizeof buf);
    if (len == sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0750) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

/* A directory of ours that nobody else may write. */
static int check_dir(const char *path, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    if (S_ISLNK(st.st_mode)) {
        snprintf(err, errlen, "%s %s is a symbolic link; give the real path instead", what, path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s %s is not a directory", what, path);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s %s belongs to uid %u, not to the user jobqd runs as "
                              "(uid %u); chown it or run jobqd as its owner",
                 what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen, "%s %s is writable by %s (mode %04o); chmod 0750 %s", what, path,
                 st.st_mode & S_IWOTH ? "others" : "its group", (unsigned)(st.st_mode & 07777),
                 path);
        return -1;
    }
    return 0;
}

/* Whoever may write the parent may replace the directory itself. */
static int check_parent(const char *dir, char *err, size_t errlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    const char *parent = dirname(buf);
    struct stat st;
    if (stat(parent, &st) < 0) {
        snprintf(err, errlen, "parent of the data directory, %s: %s", parent, strerror(errno));
        return -1;
    }
    bool sticky = st.st_mode & S_ISVTX;
    if ((st.st_mode & S_IWOTH) && !sticky) {
        snprintf(err, errlen, "%s, the parent of the data directory, is writable by others "
                              "without the sticky bit (mode %04o): anyone could replace the "
                              "data directory; chmod o-w %s, or choose another place",
                 parent, (unsigned)(st.st_mode & 07777), parent);
        return -1;
    }
    if (st.st_uid != 0 && st.st_uid != geteuid() && !sticky) {
        snprintf(err, errlen, "%s, the parent of the data directory, belongs to uid %u: "
                              "its owner could replace the data directory; choose a place "
                              "owned by root or by the user jobqd runs as",
                 parent, (unsigned)st.st_uid);
        return -1;
    }
    return 0;
}

/* An entry jobq makes itself: when present, of that type, no symlink. */
static int check_entry(const char *dir, const char *name, mode_t type, char *err, size_t errlen)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    if (S_ISLNK(st.st_mode)) {
        snprintf(err, errlen, "%s is a symbolic link where jobqd keeps its own %s; remove it",
                 path, type == S_IFSOCK ? "socket" : "file");
        return -1;
    }
    if ((st.st_mode & S_IFMT) != type) {
        snprintf(err, errlen, "%s is not a %s; move it away", path,
                 type == S_IFSOCK ? "socket" : "regular file");
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s belongs to uid %u, not to the user jobqd runs as; remove it",
                 path, (unsigned)st.st_uid);
        return -1;
    }
    return 0;
}

int jq_datadir_prepare(const char *dir, char *err, size_t errlen)
{
    char store[4200];
    snprintf(store, sizeof store, "%s/store", dir);
    struct stat st;
    /* Created only when absent: an existing one is judged, never changed. */
    if (lstat(dir, &st) < 0 && (errno != ENOENT || mkdir_p(dir) < 0)) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (check_parent(dir, err, errlen) < 0 || check_dir(dir, "data directory", err, errlen) < 0)
        return -1;
    if (lstat(store, &st) < 0 && (errno != ENOENT || mkdir(store, 0750) < 0)) {
        snprintf(err, errlen, "cannot create %s: %s", store, strerror(errno));
        return -1;
    }
    if (check_dir(store, "store directory", err, errlen) < 0)
        return -1;
    static const struct {
        const char *name;
        mode_t type;
    } entries[] = {
        {"lock", S_IFREG}, {"jobq.sock", S_IFSOCK}, {"events.sock", S_IFSOCK},
        {"store/data.mdb", S_IFREG}, {"store/lock.mdb", S_IFREG}, {"store/store.id", S_IFREG},
    };
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
        if (check_entry(dir, entries[i].name, entries[i].type, err, errlen) < 0)
            return -1;
    return 0;
}

int jq_open_private(const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}
