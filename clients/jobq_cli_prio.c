/* jobq_cli_prio.c: priorities by name, as gnt-job has them.
 *
 * The daemon speaks numbers only (-20 most urgent .. 19); the three values
 * a job may be submitted with have names: high (-10), normal (0) and low
 * (10). The CLI accepts either form and shows a value by its name when it
 * has one (the job model's anti-starvation may leave other numbers, which
 * are shown as numbers); --json output keeps the numbers.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jobq_cli.h"

static const struct {
    const char *name;
    int value;
} prio_names[] = {
    {"high", -10},
    {"normal", 0},
    {"low", 10},
};

#define NPRIO (sizeof prio_names / sizeof *prio_names)

int cli_parse_priority(const char *s, long long *out)
{
    for (size_t i = 0; i < NPRIO; i++)
        if (strcasecmp(s, prio_names[i].name) == 0) {
            *out = prio_names[i].value;
            return 0;
        }
    long long v;
    if (cli_parse_int(s, &v) < 0 || v < -1000000 || v > 1000000)
        return -1;
    *out = v;
    return 0;
}

const char *cli_priority_name(long long p)
{
    for (size_t i = 0; i < NPRIO; i++)
        if (prio_names[i].value == p)
            return prio_names[i].name;
    return NULL;
}

json_t *cli_priority_names(const json_t *v)
{
    if (json_is_integer(v)) {
        const char *name = cli_priority_name(json_integer_value(v));
        return name ? json_string(name) : json_incref((json_t *)v);
    }
    if (!json_is_array(v))
        return json_incref((json_t *)v);
    json_t *out = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) json_array_append_new(out, cli_priority_names(item));
    return out;
}
