/* jobq_cli_nodes.c: `jobq nodes list|add|remove|transfer`, a cluster's
 * nodes (jobqd --cluster; docs/cli.md, "Nodes"). The Python CLI's twin is
 * clients/python/jobq/cli/nodes.py: both print the same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq_cli.h"

/* The text of one cell of `nodes list`; malloc'ed. */
static char *cell(const json_t *node, const char *col)
{
    json_t *v = json_object_get(node, col);
    char *out = NULL;
    if (strcmp(col, "id") == 0) {
        if (asprintf(&out, "%lld%s", (long long)json_integer_value(v),
                     json_is_true(json_object_get(node, "self")) ? "*" : "") < 0)
            out = NULL;
        return out;
    }
    if (strcmp(col, "lag_entries") == 0 && !json_is_integer(v))
        return strdup("-");
    if (json_is_string(v))
        return strdup(*json_string_value(v) ? json_string_value(v) : "-");
    if (json_is_integer(v)) {
        if (asprintf(&out, "%lld", (long long)json_integer_value(v)) < 0)
            out = NULL;
        return out;
    }
    return strdup("-");
}

/* The table: a column per field, as wide as its widest cell, two spaces
 * between columns, the last one not padded. */
static void print_nodes(const json_t *nodes)
{
    static const char *const heads[] = {"ID", "NAME", "ROLE", "STATE", "APPLIED", "LAG",
                                        "ADDRESS"};
    static const char *const cols[] = {"id", "name", "role", "state", "applied",
                                       "lag_entries", "address"};
    enum { NCOLS = sizeof cols / sizeof *cols };
    size_t n = json_array_size(nodes);
    char **cells = calloc((n + 1) * NCOLS, sizeof *cells);
    if (!cells)
        return;
    int width[NCOLS];
    for (int c = 0; c < NCOLS; c++) {
        cells[c] = strdup(heads[c]);
        width[c] = (int)strlen(heads[c]);
    }
    for (size_t r = 0; r < n; r++)
        for (int c = 0; c < NCOLS; c++) {
            char *s = cell(json_array_get(nodes, r), cols[c]);
            cells[(r + 1) * NCOLS + c] = s;
            if (s && (int)strlen(s) > width[c])
                width[c] = (int)strlen(s);
        }
    for (size_t r = 0; r <= n; r++) {
        for (int c = 0; c < NCOLS; c++) {
            const char *s = cells[r * NCOLS + c] ? cells[r * NCOLS + c] : "-";
            if (c == NCOLS - 1)
                printf("%s\n", s);
            else
                printf("%-*s  ", width[c], s);
        }
    }
    for (size_t i = 0; i < (n + 1) * NCOLS; i++)
        free(cells[i]);
    free(cells);
}

static int nodes_list(cli_t *cli)
{
    json_t *r = jobq_query_nodes(cli->client, cli->timeout_ms);
    if (!r)
        return cli_call_failed(cli);
    if (cli->json)
        cli_print_json(r);
    else
        print_nodes(r);
    json_decref(r);
    return CLI_EXIT_OK;
}

/* A node id of the command line, or -1 (usage error printed). */
static int node_id(cli_t *cli, const char *word, uint64_t *id)
{
    if (cli_parse_job_id(word, id) < 0) {
        cli_usage(cli, "invalid node id '%s' (an integer >= 1)", word);
        return -1;
    }
    return 0;
}

int cmd_nodes(cli_t *cli, int argc, char **argv)
{
    cli_opt_t opts[] = {{.name = "standby"},
                        {.name = "name", .has_arg = true},
                        {.name = "endpoint-of-node", .has_arg = true},
                        {0}};
    enum { O_STANDBY, O_NAME, O_ENDPOINT };
    char **pos = NULL;
    int npos;
    bool done;
    json_t *eps = NULL;
    int rc = cli_parse(cli, argc, argv, opts, &pos, &npos, &done);
    if (done)
        goto out;
    if (npos == 0) {
        rc = cli_usage(cli, "missing argument (usage: jobq %s %s)", cli->cmd->name,
                       cli->cmd->synopsis);
        goto out;
    }
    const char *sub = pos[0];
    int nargs = strcmp(sub, "list") == 0       ? 0
                : strcmp(sub, "add") == 0      ? 2
                : strcmp(sub, "remove") == 0   ? 1
                : strcmp(sub, "transfer") == 0 ? -1
                                               : -2;
    if (nargs == -2) {
        rc = cli_usage(cli, "expected list, add, remove or transfer, not '%s'", sub);
        goto out;
    }
    int most = nargs == -1 ? 1 : nargs, least = nargs == -1 ? 0 : nargs;
    if (npos - 1 < least) {
        rc = cli_usage(cli, "missing argument (usage: jobq nodes %s)",
                       strcmp(sub, "add") == 0 ? "add ID ADDRESS [OPTIONS]" : "remove ID");
        goto out;
    }
    if (npos - 1 > most) {
        rc = cli_usage(cli, "unexpected argument '%s'", pos[most + 1]);
        goto out;
    }
    if (strcmp(sub, "add") != 0) {
        for (int i = 0; opts[i].name; i++)
            if (opts[i].count) {
                rc = cli_usage(cli, "--%s is an option of 'nodes add'", opts[i].name);
                goto out;
            }
    }
    uint64_t id = 0;
    if (npos > 1 && node_id(cli, pos[1], &id) < 0) {
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (!cli_client(cli)) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (strcmp(sub, "list") == 0) {
        rc = nodes_list(cli);
    } else if (strcmp(sub, "add") == 0) {
        bool standby = opts[O_STANDBY].count > 0;
        eps = json_array();
        for (int i = 0; eps && i < opts[O_ENDPOINT].count; i++)
            json_array_append_new(eps, json_string(opts[O_ENDPOINT].values[i]));
        json_t *r = jobq_add_node(cli->client, id, pos[2], standby, opts[O_NAME].value, eps,
                                  cli->timeout_ms);
        if (!r) {
            rc = cli_call_failed(cli);
            goto out;
        }
        if (cli->json)
            cli_print_json(r);
        else
            printf("Node %llu added (%s)\n", (unsigned long long)id,
                   standby ? "standby" : "voter");
        json_decref(r);
        rc = CLI_EXIT_OK;
    } else if (strcmp(sub, "remove") == 0) {
        if (jobq_remove_node(cli->client, id, cli->timeout_ms) < 0) {
            rc = cli_call_failed(cli);
            goto out;
        }
        if (cli->json)
            cli_print_json(json_null());
        else
            printf("Node %llu removed\n", (unsigned long long)id);
        rc = CLI_EXIT_OK;
    } else {
        uint64_t leader = 0;
        if (jobq_transfer_leader(cli->client, id, &leader, cli->timeout_ms) < 0) {
            rc = cli_call_failed(cli);
            goto out;
        }
        if (cli->json) {
            json_t *r = json_pack("{s:I}", "leader", (json_int_t)leader);
            cli_print_json(r);
            json_decref(r);
        } else {
            printf("Node %llu is the leader\n", (unsigned long long)leader);
        }
        rc = CLI_EXIT_OK;
    }
out:
    json_decref(eps);
    cli_opts_free(opts);
    free(pos);
    return rc;
}
