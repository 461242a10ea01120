/* The engine's adapter calls (engine.h "adapters"): the registry made at
 * engine_init for the loaded base (its shape, its backend, --adapters-dir,
 * --adapter-budget-mb), and add / remove / get / list for the server, which
 * never sees adapters/ types: descriptions are copied into engine_adapter_info.
 *
 * Requests pin their adapter in engine_submit (sched_submit.c) and unpin it in
 * sched_req_free, so an adapter removed or replaced while requests use it
 * stays valid until the last of them ends.
 *
 * Threads: the registry is thread-safe; these calls run on the caller's
 * thread. Loading allocates and uploads through the backend there too: on
 * the CPU backend that is plain memory; a device backend must accept
 * allocation and upload from a second thread (CUDA's runtime API does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "engine_internal.h"

ps_status engine_open_adapters(engine *e, const engine_opts *o, ps_err *err) {
    const llama_config *c = e->cfg;
    if (o->adapter_budget_mb < 0)
        return ps_errf(err, PS_EINVAL, "adapter budget %d MB must be >= 0 (0 = unlimited)", o->adapter_budget_mb);
    ps_dtype lora_dt = PS_DT_F32;
    if (o->adapter_dtype && !strcmp(o->adapter_dtype, "f16")) lora_dt = PS_DT_F16;
    else if (o->adapter_dtype && !strcmp(o->adapter_dtype, "bf16")) lora_dt = PS_DT_BF16;
    else if (o->adapter_dtype && strcmp(o->adapter_dtype, "auto"))
        return ps_errf(err, PS_EINVAL, "adapter_dtype '%s' is not one of auto, f16, bf16", o->adapter_dtype);
    adapter_registry_opts ro = {
        .limits = {.lora_dtype = lora_dt}, /* other limits zero: the defaults */
        .dir = o->adapters_dir,
        .budget_bytes = (int64_t)o->adapter_budget_mb * 1000 * 1000,
        .base = {c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab},
        .be = e->be,
    };
    ps_status st = adapter_registry_init(&e->adapters, &ro, err);
    if (st) return ps_err_wrap(err, "adapters dir '%s'", o->adapters_dir ? o->adapters_dir : "");
    adapter_info *list = NULL;
    int n = adapter_registry_list(e->adapters, &list);
    PS_LOG_INFO("engine", "adapters: %d registered, dir=%s budget=%d MB lora_dtype=%s", n < 0 ? 0 : n,
                o->adapters_dir ? o->adapters_dir : "(memory only)", o->adapter_budget_mb,
                o->adapter_dtype ? o->adapter_dtype : "auto");
    free(list);
    return PS_OK;
}

static void to_engine_info(const adapter_info *a, engine_adapter_info *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", a->name);
    out->kind = adapter_kind_name(a->kind);
    out->rank = a->max_rank;
    for (int m = 0; m < ADAPTER_MOD_COUNT; m++)
        if (a->targets & (1u << m))
            snprintf(out->targets + strlen(out->targets), sizeof out->targets - strlen(out->targets), "%s%s",
                     out->targets[0] ? "," : "", adapter_module_name((adapter_module)m));
    out->rslora = a->rslora;
    out->num_virtual_tokens = a->kind == ADAPTER_PREFIX ? a->n_prefix : a->n_virtual;
    out->lm_head = a->has_lm_head;
    out->embed_tokens = a->has_embed_tokens;
    out->bytes = a->bytes;
    out->dtype = a->kind == ADAPTER_LORA ? engine_dtype_name(a->lora_dtype) : NULL;
    out->resident = a->resident;
    out->active_requests = a->refs;
    out->created = a->created;
}

ps_status engine_adapter_add(engine *e, const char *name, const void *config_json, size_t config_len,
                             const void *safetensors, size_t st_len, bool replace,
                             engine_adapter_info *info, ps_err *err) {
    adapter_info ai;
    ps_status st = adapter_registry_add(e->adapters, name, config_json, config_len, safetensors, st_len, replace,
                                        &ai, err);
    if (!st && info) to_engine_info(&ai, info);
    return st;
}

ps_status engine_adapter_remove(engine *e, const char *name, ps_err *err) {
    return adapter_registry_remove(e->adapters, name, err);
}

ps_status engine_adapter_get(engine *e, const char *name, engine_adapter_info *info, ps_err *err) {
    adapter_info ai;
    ps_status st = adapter_registry_get(e->adapters, name, &ai, err);
    if (!st) to_engine_info(&ai, info);
    return st;
}

int engine_adapter_list(engine *e, engine_adapter_info **out) {
    adapter_info *list = NULL;
    int n = adapter_registry_list(e->adapters, &list);
    *out = NULL;
    if (n < 0) return -1;
    *out = malloc(sizeof **out * (size_t)(n ? n : 1));
    if (!*out) n = -1;
    for (int i = 0; i < n; i++) to_engine_info(&list[i], &(*out)[i]);
    free(list);
    return n;
}
