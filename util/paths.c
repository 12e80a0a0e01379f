/* paths.c: the default data and run directories (see paths.h). */
#include "paths.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Is path inside dir (a whole path component, not a prefix of a name)? */
static bool inside(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return n > 0 && strncmp(path, dir, n) == 0 && path[n] == '/';
}

jq_default_dirs_t jq_default_dirs_for(const char *exe)
{
    bool tree = false;
    if (exe && exe[0] == '/') {
        /* The build directory as compiled in, and as it resolves now (a
         * symlink on the way to it: /proc/self/exe has none). */
        tree = inside(exe, JOBQ_BUILD_DIR);
        char *real = tree ? NULL : realpath(JOBQ_BUILD_DIR, NULL);
        if (real) {
            tree = inside(exe, real);
            free(real);
        }
    }
    if (tree)
        return (jq_default_dirs_t){JOBQ_DEFAULT_DATA_DIR, JOBQ_DEFAULT_DATA_DIR, true};
    return (jq_default_dirs_t){JOBQ_INSTALLED_DATA_DIR, JOBQ_INSTALLED_RUN_DIR, false};
}

jq_default_dirs_t jq_default_dirs(void)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    return jq_default_dirs_for(exe);
}
