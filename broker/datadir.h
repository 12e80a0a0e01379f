/* datadir.h: trusting the data directory before anything is opened in it,
 * as sshd's StrictModes trusts a home directory.
 *
 * Run as root in a directory another user can write, a daemon that opens
 * files by name follows whatever symlink was planted there (store/lock.mdb
 * → /etc/shadow). So the data directory and its store/ must belong to the
 * daemon's user and be writable by nobody else; once they are, nobody else
 * can plant anything in them later, and checking each of jobq's own entries
 * once (lstat: no symlinks, the right type) is enough.
 */
#ifndef JOBQ_DATADIR_H
#define JOBQ_DATADIR_H

#include <stddef.h>
#include <sys/types.h>

/* Create dir (and missing parents, 0750) and dir/store (0750) when absent,
 * then check: both real directories (not symlinks), owned by the effective
 * user, not writable by group or others; the parent not writable by others
 * unless sticky (like /tmp); jobq's own entries, where they exist, of the
 * expected type and not symlinks. -1 with one line naming the path, what is
 * wrong and how to fix it. */
int jq_datadir_prepare(const char *dir, char *err, size_t errlen);

/* open(2) for jobq's own files in the trusted directory: never follows a
 * symlink (ELOOP); an existing file must be a regular file owned by the
 * effective user (EPERM otherwise). The fd, or -1 with errno. */
int jq_open_private(const char *path, int flags, mode_t mode);

#endif
