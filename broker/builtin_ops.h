/* builtin_ops.h: the opcodes jobqd runs by itself, so the daemon is useful
 * and testable with no worker attached: test.delay and test.log. */
#ifndef JOBQ_BUILTIN_OPS_H
#define JOBQ_BUILTIN_OPS_H

#include "opdef.h"

/* The set of built-in opcode definitions (static, lives forever). */
const jq_opset_t *jq_builtin_ops(void);

#endif
