/* jobq_worker_cli.h: what the two halves of the jobq-worker program share:
 * jobq_worker_main.c (options, the handlers directory, the event loop)
 * and jobq_worker_proc.c (one handler process per assignment: its pipes,
 * its output turned into feedback, its end turned into done, its stop).
 *
 * Everything here runs on the program's one thread.
 */
#ifndef JOBQ_WORKER_CLI_H
#define JOBQ_WORKER_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "jobq.h"

/* A line of output longer than this is cut (the rest up to its newline is
 * dropped): a log entry holds at most JOBQ_MAX_LOG_MESSAGE bytes. */
#define WK_LINE_MAX JOBQ_MAX_LOG_MESSAGE
/* The stderr lines kept for the failure message, in bytes. */
#define WK_TAIL_MAX 1024
/* Entries waiting to be sent for one handler past which its pipes are no
 * longer read (the handler then blocks on write until the daemon caught
 * up, instead of the worker buffering without bound). */
#define WK_PENDING_MAX 4000
/* A feedback message carries at most this many bytes of messages. */
#define WK_BATCH_BYTES (1024 * 1024)
/* After a handler exits, how long its pipes may stay open (a process it
 * left behind holds them) before they are closed and its group killed. */
#define WK_DRAIN_MS 2000
/* Largest result file read: half the daemon's default message limit
 * (--max-request-bytes, 16 MiB), so that the done carrying it, encoded,
 * is not refused (the daemon's refusal would not name the lease, and the
 * opcode would stay running until its timeout). */
#define WK_RESULT_MAX (8 * 1024 * 1024)

/* One pipe from a handler (stdout or stderr) and its partial line. */
typedef struct {
    int fd;               /* -1 once closed */
    char line[WK_LINE_MAX];
    size_t len;           /* bytes of the current line kept */
    bool cut;             /* the current line is past WK_LINE_MAX: drop until newline */
} wk_pipe_t;

/* A feedback entry waiting to be sent. */
typedef struct {
    const char *type;     /* "message" or "stderr" (static strings) */
    char *message;
    size_t len;
} wk_entry_t;

/* One handler process, from fork to done. */
typedef struct wk_proc {
    struct wk_proc *next;
    jobq_lease_t lease;
    char opcode[JOBQ_MAX_OP_NAME + 1];
    pid_t pid;            /* the handler, leader of its process group */
    bool exited;          /* reaped: status is valid */
    int status;           /* waitpid status */
    wk_pipe_t out, err;
    wk_entry_t *pending;  /* feedback not sent yet, in order */
    size_t npending, pending_cap;
    char tail[WK_TAIL_MAX + 1]; /* the last stderr lines, newline-separated */
    size_t tail_len;
    char *result_path;    /* JOBQ_RESULT_FILE */
    char stop_why[64];    /* why SIGTERM was sent ("canceled", "revoked"...), or "" */
    bool revoked;         /* the lease is gone: send nothing more */
    int64_t kill_at;      /* when SIGKILL follows the SIGTERM (0: not armed) */
    bool killed;          /* SIGKILL sent */
    int64_t drain_until;  /* after exit: pipes are closed at this time */
    bool finished;        /* done was sent (or is not to be sent): free me */
} wk_proc_t;

/* The handlers directory and how handlers are run. */
typedef struct {
    const char *dir;      /* --handlers */
    const char *tmpdir;   /* private directory for args and result files */
    int64_t kill_grace_ms;/* --kill-grace */
    bool verbose;
} wk_config_t;

/* Monotonic milliseconds. */
int64_t wk_now_ms(void);

/* Starts DIR/OPCODE for an assignment (args_json: its arguments as JSON
 * text, args: the same as values for the JOBQ_ARG_ variables). Returns
 * the process, or NULL with a reason in err (the caller fails the lease
 * with it). */
wk_proc_t *wk_proc_start(const wk_config_t *cfg, const jobq_lease_t *lease, const char *opcode,
                         const json_t *args, const char *args_json, char *err, size_t errlen);

/* Reads what the handler wrote on fd (one of its pipes, ready); whole
 * lines become pending entries. */
void wk_proc_read(wk_proc_t *p, wk_pipe_t *pipe);

/* SIGTERM to the handler's group (once) and SIGKILL after the grace;
 * why is copied for the failure message. revoke: nothing more will be
 * sent for it. */
void wk_proc_stop(const wk_config_t *cfg, wk_proc_t *p, const char *why, bool revoke);

/* SIGKILL to the group now. */
void wk_proc_kill(wk_proc_t *p);

/* Timers: sends the SIGKILL that is due, closes the pipes of an exited
 * handler that stayed open too long. Returns the milliseconds until the
 * next timer of p (-1: none). */
int64_t wk_proc_timers(wk_proc_t *p, int64_t now);

/* Marks the handler reaped with its wait status. */
void wk_proc_exited(wk_proc_t *p, int status);

/* Sends what is pending for p: feedback batches, then done once the
 * handler exited and its pipes are closed. Returns 1 when everything
 * went out (or p is revoked), 0 when the socket is full (try again when
 * it is writable), after which p->finished says whether p is done. */
int wk_proc_flush(jobq_worker_t *w, const wk_config_t *cfg, wk_proc_t *p);

/* Frees p (its result file is removed). */
void wk_proc_free(wk_proc_t *p);

#endif
