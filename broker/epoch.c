/* epoch.c: the event epoch kept in the data directory (see epoch.h). */
#include "epoch.h"
#include "datadir.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The last run's epoch, 0 when there is none or it cannot be read (the
 * clock then decides, as before the file existed). */
static uint64_t read_last(const char *path)
{
    int fd = jq_open_private(path, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf || (*end && *end != '\n'))
        return 0;
    return (uint64_t)v;
}

int jq_epoch_next(const char *dir, uint64_t now_us, uint64_t *epoch, char *err, size_t errlen)
{
    char path[4200], tmp[4200];
    snprintf(path, sizeof path, "%s/epoch", dir);
    snprintf(tmp, sizeof tmp, "%s/epoch.new", dir);
    uint64_t last = read_last(path), next = now_us > last ? now_us : last + 1;
    char text[32];
    int len = snprintf(text, sizeof text, "%" PRIu64 "\n", next);
    int fd = jq_open_private(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    bool ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (ok && rename(tmp, path) < 0) {
        saved = errno;
        ok = false;
    }
    if (!ok) {
        unlink(tmp);
        snprintf(err, errlen, "cannot save the event epoch in %s: %s", path, strerror(saved));
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the rename itself must survive a crash */
        fsync(dfd);
        close(dfd);
    }
    *epoch = next;
    return 0;
}
