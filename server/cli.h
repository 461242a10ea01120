/* Command-line flags of peftserve -> engine_opts + server_opts.
 * `--flag value` and `--flag=value` both work; a wrong value names the flag,
 * the rule and what was given. */
#ifndef PS_SERVER_CLI_H
#define PS_SERVER_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "engine.h"
#include "server.h"

typedef struct {
    engine_opts eng;
    server_opts srv;
    int log_level; /* ps_log_level */
} cli_opts;

typedef enum { CLI_RUN = 0, CLI_HELP, CLI_ERROR } cli_result;

/* Fills o from defaults, the environment (PEFTSERVE_API_KEY) and argv.
 * CLI_ERROR: msg says why (main prints usage and exits 2). */
cli_result cli_parse(int argc, char **argv, cli_opts *o, char *msg, size_t cap);

void cli_usage(FILE *f);

#endif
