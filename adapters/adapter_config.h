/* adapter_config.json (PEFT's config dataclasses, as save_pretrained writes
 * them) parsed into the fields a server needs; everything else is ignored, so
 * older and newer PEFT versions load alike. Features that change the math and
 * are not implemented here (DoRA, LoRA bias, fan_in_fan_out, layer
 * replication, ...) are refused with PS_ENOTSUP naming the key.
 *
 * Pattern keys (rank_pattern, alpha_pattern, a list target_modules) follow
 * PEFT's rule `re.match(rf"(.*\.)?({key})$", module_path)`: a key matches the
 * module path itself or any suffix that starts after a '.'; the first key in
 * file order wins. Keys are matched literally: a key that uses other regular
 * expression syntax is PS_ENOTSUP (no regex engine here). A string
 * target_modules (a regex in PEFT) is not evaluated, except "all-linear": the
 * tensors present decide which modules are adapted.
 *
 * Module paths are relative to the causal-LM model, as PEFT sees them:
 * "model.layers.3.self_attn.q_proj", "lm_head", "model.embed_tokens". */
#ifndef PS_ADAPTERS_ADAPTER_CONFIG_H
#define PS_ADAPTERS_ADAPTER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "adapter.h"

typedef struct {
    char *key;
    double value;
} adapter_pattern;

typedef struct {
    adapter_kind kind;
    /* LORA */
    int r;
    double lora_alpha;
    bool use_rslora;
    int n_targets;            /* list form of target_modules; 0 with target_all */
    char **targets;
    bool target_all;          /* a string target_modules: trust the tensors */
    int n_rank_pattern, n_alpha_pattern;
    adapter_pattern *rank_pattern, *alpha_pattern;
    /* PREFIX_TUNING / PROMPT_TUNING */
    int num_virtual_tokens, token_dim, num_layers, num_attention_heads;
    int encoder_hidden_size;
    bool prefix_projection;
    /* any kind */
    int n_modules_to_save;
    char **modules_to_save;
} adapter_config;

/* json: len bytes, need not be NUL-terminated. cfg is overwritten; on error it
 * is left freed. */
ps_status adapter_config_parse(const char *json, size_t len, adapter_config *cfg, ps_err *err);
void adapter_config_free(adapter_config *cfg); /* accepts zeroed */

/* The rank / alpha PEFT uses for module_path (pattern first, else r / lora_alpha). */
int adapter_config_rank(const adapter_config *cfg, const char *module_path);
double adapter_config_alpha(const adapter_config *cfg, const char *module_path);
/* Whether target_modules selects module_path (always true with target_all). */
bool adapter_config_targets(const adapter_config *cfg, const char *module_path);
/* PEFT's suffix rule: path == key or path ends with "." key. */
bool adapter_pattern_match(const char *key, const char *module_path);

#endif
