/* hubsnap.c: the worker hub's state copied for other threads (hubsnap.h). */
#include "hubsnap.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY "{\"workers\":[],\"opcodes\":[]}"

struct jq_hubsnap {
    pthread_mutex_t mu;      /* guards the rest; held for copies only */
    char *json;              /* NULL: nothing published yet */
    size_t len;
    jq_hubsnap_op_t *ops;
    size_t nops;
};

jq_hubsnap_t *jq_hubsnap_new(void)
{
    jq_hubsnap_t *s = calloc(1, sizeof *s);
    if (s)
        pthread_mutex_init(&s->mu, NULL);
    return s;
}

void jq_hubsnap_destroy(jq_hubsnap_t **sp)
{
    if (!sp || !*sp)
        return;
    jq_hubsnap_t *s = *sp;
    pthread_mutex_destroy(&s->mu);
    free(s->json);
    free(s->ops);
    free(s);
    *sp = NULL;
}

void jq_hubsnap_publish(jq_hubsnap_t *s, char *json, size_t len, jq_hubsnap_op_t *ops,
                        size_t n)
{
    pthread_mutex_lock(&s->mu);
    char *old_json = s->json;
    jq_hubsnap_op_t *old_ops = s->ops;
    s->json = json;
    s->len = len;
    s->ops = ops;
    s->nops = n;
    pthread_mutex_unlock(&s->mu);
    free(old_json);
    free(old_ops);
}

int jq_hubsnap_write_json(jq_hubsnap_t *s, FILE *out)
{
    pthread_mutex_lock(&s->mu);
    size_t len = s->json ? s->len : 0;
    char *copy = len ? malloc(len) : NULL;
    if (copy)
        memcpy(copy, s->json, len);
    pthread_mutex_unlock(&s->mu);
    if (len && !copy)
        return -1;
    int rc = copy ? (fwrite(copy, 1, len, out) == len ? 0 : -1)
                  : (fputs(EMPTY, out) < 0 ? -1 : 0);
    free(copy);
    return rc;
}

size_t jq_hubsnap_opcodes(jq_hubsnap_t *s, jq_hubsnap_op_t **out)
{
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    size_t n = s->nops;
    if (n && (*out = malloc(n * sizeof **out)))
        memcpy(*out, s->ops, n * sizeof **out);
    pthread_mutex_unlock(&s->mu);
    return n && !*out ? SIZE_MAX : n;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (!len || len > n || p[0] >= 0xf8)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    /* Overlong forms, surrogates and beyond U+10FFFF. */
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
        return 0;
    return len;
}

void jq_hubsnap_string(FILE *out, const char *s)
{
    fputc('"', out);
    size_t n = strlen(s);
    for (const unsigned char *p = (const unsigned char *)s, *end = p + n; p < end;) {
        if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p++);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\u%04x", *p++);
        } else if (*p < 0x80) {
            fputc(*p++, out);
        } else {
            /* A name is bytes to jobq; JSON must be UTF-8. */
            size_t len = utf8_len(p, (size_t)(end - p));
            if (len)
                fwrite(p, 1, len, out);
            else
                fputs("\\ufffd", out);
            p += len ? len : 1;
        }
    }
    fputc('"', out);
}
