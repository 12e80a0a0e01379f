/* service.c: what jobqd tells its service manager (sd_notify: ready,
 * reloading, stopping, a status line) and SIGHUP's reload of the config
 * file. Without $NOTIFY_SOCKET sd_notify does nothing, so a daemon run by
 * hand behaves the same. */
#include "daemon.h"
#include "log.h"

#include <stdio.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

static void status_line(jq_daemon_t *d, char *buf, size_t len)
{
    snprintf(buf, len, "serving on ipc://%s/jobq.sock", d->cfg.run_dir);
}

void jq_service_ready(jq_daemon_t *d)
{
    char status[4200];
    status_line(d, status, sizeof status);
    sd_notifyf(0, "READY=1\nMAINPID=%lu\nSTATUS=%s", (unsigned long)getpid(), status);
}

void jq_service_stopping(jq_daemon_t *d)
{
    if (d->told_stopping)
        return;
    d->told_stopping = true;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

int jq_service_reload(jq_daemon_t *d)
{
    /* MONOTONIC_USEC: what Type=notify-reload matches the reload by. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    int rc = -1;
    char err[512];
    if (!d->cfg.config_path[0]) {
        jq_log(JQ_LOG_NOTICE, "SIGHUP: jobqd was started without --config: nothing to reload");
    } else if (jq_config_reload(&d->cfg, d->argc, d->argv, err, sizeof err) < 0) {
        jq_log(JQ_LOG_ERROR, "SIGHUP: %s; the running settings stay", err);
    } else {
        jq_sched_set_max_running(d->sched, d->cfg.max_running);
        if (d->executors)
            jq_executors_set_max_log_entries(d->executors, (uint32_t)d->cfg.max_log_entries);
        jq_log_set_level((jq_log_level_t)d->cfg.log_level);
        rc = 0;
    }
    char status[4200];
    status_line(d, status, sizeof status);
    sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    return rc;
}
