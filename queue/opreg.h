/* opreg.h: the worker opcodes jobqd knows — declared by workers' hellos,
 * by the config file, or remembered in the store from an earlier run
 * (docs/protocol.md, "Hello and opcodes").
 *
 * A definition never changes and is never freed before the registry: jobs
 * point at the definition they were accepted under. A declaration with
 * other arguments makes a new definition that later submits use. Lookups
 * take a read lock; declarations (rare) the write lock. Any thread. */
#ifndef JOBQ_OPREG_H
#define JOBQ_OPREG_H

#include "opdef.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#define JQ_OPREG_MAX 4096          /* worker opcodes one daemon knows */
#define JQ_OPREG_MAX_ARGS 64       /* declared arguments per opcode */
#define JQ_OPREG_MAX_TEXT 512      /* a description, in bytes */
#define JQ_OPREG_MAX_BYTES (16 << 20) /* declarations kept, replaced ones included */

typedef struct jq_opreg jq_opreg_t;

jq_opreg_t *jq_opreg_new(void);
void jq_opreg_destroy(jq_opreg_t **r);

/* The current definition named name, or NULL. */
const jq_opdef_t *jq_opreg_find(jq_opreg_t *r, const char *name, size_t len);

/* Declare one opcode from its declaration (a name, or a map {name,
 * description, args, timeout}: docs/protocol.md). builtins are the names
 * it may not take. 0 with *out (and *changed when the registry changed),
 * or -1 with a message and nothing changed. */
int jq_opreg_declare(jq_opreg_t *r, const jq_opset_t *builtins, const msgpack_object *decl,
                     const jq_opdef_t **out, bool *changed, char *err, size_t errlen);

/* Every current definition, in declaration order, for list_opcodes (fn
 * runs under the read lock: it must not call back in). */
void jq_opreg_each(jq_opreg_t *r, void (*fn)(void *ctx, const jq_opdef_t *def), void *ctx);
size_t jq_opreg_count(jq_opreg_t *r);

/* Every current declaration as one msgpack array (what the store keeps);
 * -1 out of memory. */
int jq_opreg_encode(jq_opreg_t *r, msgpack_sbuffer *sb);
/* Declare every entry of an array made by jq_opreg_encode (start-up). -1
 * with a message naming the first bad entry (the others are declared). */
int jq_opreg_load(jq_opreg_t *r, const jq_opset_t *builtins, const void *data, size_t len,
                  char *err, size_t errlen);

#endif
