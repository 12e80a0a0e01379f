/* datadir.h: checks, in the spirit of sshd's StrictModes, that jobqd makes
 * before it opens anything in its data and run directories, and the
 * open(2) wrapper for jobq's own files there. A daemon run as root in a
 * directory someone else can write to would otherwise follow a planted
 * link and overwrite whatever it points at. */
#ifndef JOBQ_DATADIR_H
#define JOBQ_DATADIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Make sure DIR is a directory the daemon can trust, creating it (and
 * missing parents, mode 0750; DIR itself 0700 or 0750, see
 * jq_datadir_share_with_group) when absent:
 * - it and its subdirectory `store` (created likewise when absent) are real
 *   directories, not symlinks (lstat), owned by the effective uid, and not
 *   writable by group or others;
 * - its parent directory is a real directory (not a symlink), not writable
 *   by others unless it has the sticky bit (like /tmp), and owned by root
 *   or by the effective uid, or has the sticky bit;
 * - every entry jobq itself creates there that already exists is of the
 *   expected type and not a symlink: `lock`, `epoch`, `epoch.new`,
 *   `store/data.mdb`, `store/lock.mdb` and `store/store.id` are regular
 *   files, owned by the effective uid, with one link only; `jobq.sock`
 *   and `events.sock` are sockets (a leftover regular file there is
 *   refused too).
 * Pre-existing directories are never modified: a bad mode is reported, not
 * fixed. 0, or -1 with a one-line message in err naming the offending path,
 * saying what is wrong and how to fix it. */
int jq_datadir_prepare(const char *dir, char *err, size_t errlen);

/* Directories jq_datadir_prepare and jq_rundir_prepare create (the data,
 * run and store directories, not their parents) are made 0700 — only
 * jobqd's user reaches the sockets in them — or 0750 when on (--group:
 * its members may connect; docs/security.md). Before the prepare calls. */
void jq_datadir_share_with_group(bool on);

/* The same for the run directory (--run-dir), where the sockets are when
 * it is not the data directory: DIR and its parent are judged as above
 * (DIR created 0700, or 0750, when absent), and its entries `lock` (a regular file)
 * and `jobq.sock`, `events.sock` (sockets), when they exist. */
int jq_rundir_prepare(const char *dir, char *err, size_t errlen);

/* open(2) for jobq's own files inside the trusted directory: O_NOFOLLOW and
 * O_CLOEXEC are always added, so a symlink is refused (errno ELOOP; EEXIST
 * with O_CREAT|O_EXCL, as for anything that exists). When the file exists it
 * must be a regular file owned by the effective uid with one link only
 * (-1, errno EPERM otherwise). O_TRUNC is applied only once those checks
 * pass, and opening a FIFO never blocks. Returns the fd, or -1 with errno
 * set. */
int jq_open_private(const char *path, int flags, mode_t mode);

#endif
