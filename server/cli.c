/* Flag table for peftserve. One row per flag: name, where the value goes,
 * its range, its help line; usage text and parsing both walk the table, so
 * they cannot disagree. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

typedef enum { F_STR, F_INT, F_SIZE, F_CHOICE, F_LEVEL } flag_kind;

typedef struct {
    const char *name, *arg;
    flag_kind kind;
    size_t off; /* offset in cli_opts */
    long long lo, hi;
    const char *choices; /* F_CHOICE: "a|b" */
    const char *help;
} flag;

#define E(field) offsetof(cli_opts, eng.field)
#define S(field) offsetof(cli_opts, srv.field)
#define C(field) offsetof(cli_opts, clip.field)

static const flag flags[] = {
    {"--model", "DIR", F_STR, E(model_dir), 0, 0, NULL, "Hugging Face LLaMA folder (default: the built-in demo model)"},
    {"--model-id", "ID", F_STR, E(model_id), 0, 0, NULL, "model id served in /v1/models (default: folder name)"},
    {"--quant", "nf4|none", F_CHOICE, E(quant), 0, 0, "nf4|none", "base weights: NF4 with double quant, or as stored"},
    {"--device", "cpu|cuda", F_CHOICE, E(device), 0, 0, "cpu|cuda", "compute device (default: cuda if present)"},
    {"--threads", "N", F_INT, E(threads), 0, 4096, NULL, "CPU compute threads (0 = all cores)"},
    {"--chat-template", "NAME", F_STR, E(chat_template), 0, 0, NULL, "chat template name (default: from the model)"},
    {"--ctx-len", "N", F_INT, E(ctx_len), 0, 1 << 24, NULL, "max tokens per sequence, prompt + output (0 = model max)"},
    {"--max-seqs", "N", F_INT, E(max_seqs), 1, 4096, NULL, "sequences decoded together"},
    {"--max-batch-tokens", "N", F_INT, E(max_batch_tokens), 1, 1 << 20, NULL, "tokens per forward step"},
    {"--kv-pages", "N", F_INT, E(kv_pages), 0, 1 << 24, NULL, "KV cache pages of 16 tokens (0 = max-seqs x ctx-len, capped at 4 GiB)"},
    {"--kv-dtype", "f32|f16|bf16", F_CHOICE, E(kv_dtype), 0, 0, "f32|f16|bf16", "KV cache entries (default f32; 16-bit halves its memory and the bytes attention reads)"},
    {"--max-queue", "N", F_INT, E(max_queue), 1, 1 << 20, NULL, "waiting requests before 503"},
    {"--host", "ADDR", F_STR, S(host), 0, 0, NULL, "listen address (127.0.0.1; 0.0.0.0 to expose)"},
    {"--port", "N", F_INT, S(port), 0, 65535, NULL, "listen port (0 = any free port)"},
    {"--api-key", "KEY", F_STR, S(api_key), 0, 0, NULL, "require 'Authorization: Bearer KEY' on /v1 (or PEFTSERVE_API_KEY)"},
    {"--http-threads", "N", F_INT, S(http_threads), 2, 4096, NULL, "HTTP worker threads"},
    {"--max-streams", "N", F_INT, S(max_streams), 0, 4096, NULL, "concurrent generations (0 = http-threads - 4)"},
    {"--max-body", "BYTES", F_SIZE, S(max_body), 1024, 1LL << 32, NULL, "request body limit"},
    {"--max-tokens-default", "N", F_INT, S(default_max_tokens), 1, 1 << 24, NULL, "max_tokens when a request omits it"},
    {"--shutdown-grace", "SECONDS", F_INT, S(shutdown_grace_s), 0, 3600, NULL, "on SIGTERM, time for running generations"},
    {"--adapters-dir", "DIR", F_STR, S(adapters_dir), 0, 0, NULL, "uploaded adapters persist here, reloaded at start"},
    {"--adapter-budget-mb", "MB", F_INT, E(adapter_budget_mb), 0, 1 << 30, NULL,
     "adapter memory before idle ones are evicted, LRU (0 = unlimited)"},
    {"--adapter-dtype", "auto|f16|bf16", F_CHOICE, E(adapter_dtype), 0, 0, "auto|f16|bf16",
     "LoRA weights as uploaded (16-bit kept, else f32), or rounded to f16 / bf16: half the memory and bytes"},
    {"--max-upload", "BYTES", F_SIZE, S(max_upload), 1024, 1LL << 40, NULL, "adapter upload body limit"},
    {"--clip", "DIR", F_STR, C(dir), 0, 0, NULL, "Hugging Face CLIPModel folder: /v1/classify and /v1/embeddings"},
    {"--clip-device", "cpu|cuda", F_CHOICE, C(device), 0, 0, "cpu|cuda", "CLIP compute device (default: cuda if usable)"},
    {"--clip-threads", "N", F_INT, C(threads), 0, 4096, NULL, "CLIP CPU threads (0 = all cores)"},
    {"--clip-cache", "N", F_INT, C(cache_capacity), 0, 1 << 24, NULL, "CLIP text embeddings cached (labels, prompts)"},
    {"--clip-max-labels", "N", F_INT, C(max_labels), 1, 1 << 20, NULL, "labels per /v1/classify request"},
    {"--clip-max-body", "BYTES", F_SIZE, S(clip_max_body), 1024, 1LL << 32, NULL, "body limit of /v1/classify and /v1/embeddings"},
    {"--log-level", "LEVEL", F_LEVEL, offsetof(cli_opts, log_level), 0, 0, NULL, "error|warn|info|debug"},
};
#define N_FLAGS ((int)(sizeof flags / sizeof flags[0]))

void cli_usage(FILE *f) {
    fprintf(f, "usage: peftserve [--model DIR] [--port N] [flags]\n"
               "Serves a LLaMA-family model over an OpenAI-compatible HTTP API.\n\nflags:\n");
    for (int i = 0; i < N_FLAGS; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s %s", flags[i].name, flags[i].arg);
        fprintf(f, "  %-28s %s\n", left, flags[i].help);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "this text");
}

static bool parse_ll(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

static bool set_value(const flag *f, const char *v, cli_opts *o, char *msg, size_t cap) {
    char *at = (char *)o + f->off;
    long long n;
    switch (f->kind) {
    case F_STR: *(const char **)at = v; return true;
    case F_CHOICE: {
        size_t len = strlen(v);
        const char *c = f->choices;
        while (*c) {
            size_t k = strcspn(c, "|");
            if (k == len && !strncmp(c, v, k)) {
                *(const char **)at = v;
                return true;
            }
            c += k + (c[k] == '|');
        }
        snprintf(msg, cap, "%s is '%s', must be one of %s", f->name, v, f->choices);
        return false;
    }
    case F_LEVEL:
        if ((*(int *)at = ps_log_parse_level(v)) >= 0) return true;
        snprintf(msg, cap, "%s is '%s', must be error, warn, info or debug", f->name, v);
        return false;
    case F_INT:
    case F_SIZE:
        if (!parse_ll(v, &n) || n < f->lo || n > f->hi) {
            snprintf(msg, cap, "%s is '%s', must be an integer in [%lld, %lld]", f->name, v, f->lo, f->hi);
            return false;
        }
        if (f->kind == F_INT) *(int *)at = (int)n;
        else *(size_t *)at = (size_t)n;
        return true;
    }
    return false;
}

cli_result cli_parse(int argc, char **argv, cli_opts *o, char *msg, size_t cap) {
    o->eng = engine_opts_default();
    o->srv = server_opts_default();
    o->log_level = PS_LOG_LEVEL_INFO;
    o->clip = clip_service_opts_default();
    const char *env_key = getenv("PEFTSERVE_API_KEY");
    if (env_key && *env_key) o->srv.api_key = env_key;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return CLI_HELP;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const flag *f = NULL;
        for (int k = 0; k < N_FLAGS && !f; k++)
            if (strlen(flags[k].name) == nlen && !strncmp(flags[k].name, a, nlen)) f = &flags[k];
        if (!f) {
            snprintf(msg, cap, "unknown %s '%s'", a[0] == '-' ? "flag" : "argument", a);
            return CLI_ERROR;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) {
            snprintf(msg, cap, "%s needs a value (%s)", f->name, f->arg);
            return CLI_ERROR;
        }
        if (!set_value(f, v, o, msg, cap)) return CLI_ERROR;
    }
    if (o->srv.api_key && !*o->srv.api_key) o->srv.api_key = NULL;
    return CLI_RUN;
}
