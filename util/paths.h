/* paths.h: where jobqd keeps its data and sockets when not told, and so
 * where jobq looks for it.
 *
 * A binary run from the build tree (its /proc/self/exe lies under the
 * CMake binary directory) uses the checkout's var/jobq for both, so the
 * README's quick start works without options; any other binary — an
 * installed one — uses the system paths (CMake cache variables
 * JOBQ_INSTALLED_DATA_DIR and JOBQ_INSTALLED_RUN_DIR, by default
 * /var/lib/jobq and /run/jobq), never a path inside a build tree. */
#ifndef JOBQ_PATHS_H
#define JOBQ_PATHS_H

#include <stdbool.h>

typedef struct {
    const char *data_dir; /* jobqd's --data-dir default */
    const char *run_dir;  /* where jobq.sock and events.sock are */
    bool build_tree;      /* the build tree's defaults */
} jq_default_dirs_t;

/* The defaults for a binary at exe (an absolute path with no symlinks, as
 * /proc/self/exe gives it). Any thread. */
jq_default_dirs_t jq_default_dirs_for(const char *exe);

/* The defaults of the running binary. Any thread. */
jq_default_dirs_t jq_default_dirs(void);

#endif
