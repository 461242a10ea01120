/* The adapter registry: name -> adapter, reference counted, persisted, with a
 * memory budget.
 *
 * - add: validates the two PEFT files against the base (adapter_load_mem),
 *   writes them to <dir>/<name>/ (through a temporary folder renamed into
 *   place), then registers. Registration is the last step: any failure leaves
 *   neither an entry nor files behind. With replace, an existing adapter is
 *   hot-swapped: new pins get the new version, pinned old versions live on
 *   until their last unpin.
 * - pin/unpin: a request pins its adapter for its whole lifetime. Pinning an
 *   evicted adapter reloads it from disk (other pinners of the same name wait
 *   for that one load).
 * - remove: the name disappears at once (new pins get PS_ENOTFOUND, the files
 *   are deleted); requests holding a pin finish normally and the memory is
 *   freed at the last unpin.
 * - budget: resident bytes (pinned versions included) stay within
 *   budget_bytes by evicting idle adapters, least recently used first; only
 *   persisted adapters can be evicted (they are reloaded on demand). When
 *   nothing can be evicted, add/pin fail with PS_ENOMEM.
 * - init reloads every <dir>/<name>/ (bad folders are logged and skipped) and
 *   removes leftovers of interrupted writes (.tmp-*, .trash-*).
 *
 * Threads: every function may be called from any thread. Loading, validation
 * and file writes run outside the registry lock.
 *
 * Usage:
 *   adapter_registry *r; adapter_registry_opts o = {.dir = "adapters", .base = base, .be = be};
 *   adapter_registry_init(&r, &o, &err);
 *   adapter_registry_add(r, "sql", cfg, cfg_len, st, st_len, false, &info, &err);
 *   adapter *a; adapter_registry_pin(r, "sql", &a, &err); ... adapter_registry_unpin(r, a);
 *   adapter_registry_free(r);   // after every pin is released
 */
#ifndef PS_ADAPTERS_ADAPTER_REGISTRY_H
#define PS_ADAPTERS_ADAPTER_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "adapter.h"

typedef struct adapter_registry adapter_registry;

typedef struct {
    const char *dir;          /* persistence folder (created when missing); NULL = memory only */
    int64_t budget_bytes;     /* resident adapter bytes; 0 = unlimited */
    adapter_base_shape base;
    adapter_limits limits;    /* max_bytes 0: the default limits; lora_dtype applies either way */
    ps_backend *be;
} adapter_registry_opts;

/* A description that stays valid after the call (copied). */
typedef struct {
    char name[ADAPTER_NAME_MAX + 1];
    adapter_kind kind;
    int max_rank;            /* LORA: largest r */
    unsigned targets;        /* LORA: bit m = module m adapted (adapter_module) */
    bool rslora;
    int n_prefix, n_virtual; /* PREFIX / PROMPT virtual tokens */
    bool has_lm_head, has_embed_tokens;
    int64_t bytes;           /* resident size when loaded */
    ps_dtype lora_dtype;     /* LORA: storage of A and B */
    bool resident;           /* false when evicted (reloaded on the next pin) */
    int refs;                /* pins on the current version */
    int64_t created;         /* unix seconds */
} adapter_info;

ps_status adapter_registry_init(adapter_registry **out, const adapter_registry_opts *o, ps_err *err);
/* Frees everything; pins still held are a caller bug (their adapters are freed too). */
void adapter_registry_free(adapter_registry *r);

/* Errors: those of adapter_load_mem, PS_EEXIST (name taken and !replace),
 * PS_ENOMEM (budget), PS_EIO (persisting). info may be NULL. */
ps_status adapter_registry_add(adapter_registry *r, const char *name, const char *config_json,
                               size_t config_len, const void *safetensors, size_t st_len,
                               bool replace, adapter_info *info, ps_err *err);

/* PS_ENOTFOUND for an unknown name (the message names it). */
ps_status adapter_registry_pin(adapter_registry *r, const char *name, adapter **out, ps_err *err);
void adapter_registry_unpin(adapter_registry *r, adapter *a); /* accepts NULL */

ps_status adapter_registry_remove(adapter_registry *r, const char *name, ps_err *err);
ps_status adapter_registry_get(adapter_registry *r, const char *name, adapter_info *info, ps_err *err);
/* A snapshot sorted by name; *out is malloc'd (free it). Returns the count, -1 on ENOMEM. */
int adapter_registry_list(adapter_registry *r, adapter_info **out);
/* Bytes of adapters currently resident (pinned retired versions included). */
int64_t adapter_registry_resident_bytes(adapter_registry *r);

#endif
