/* Adapter registry tests with the llama-tiny fixture adapters as uploads:
 * add/list/get/EEXIST, a bad upload leaves registry and folder unchanged,
 * delete while pinned (the pin stays valid, the memory goes at the last
 * unpin), hot-swap by replace, persistence across a restart (leftovers
 * cleaned, broken folders skipped), the byte budget with LRU eviction and
 * reload on demand, and a multi-threaded pin/unpin/replace/remove mix (run it
 * under -DPS_SANITIZE=thread for TSan, address for ASan). */
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter_registry.h"
#include "base/log.h"
#include "ops.h"
#include "testutil.h"

static adapter_base_shape base;
static ps_backend *be;
static char tmp[256];

typedef struct {
    char *cfg, *st;
    size_t cfg_n, st_n;
} upload;
static upload up_qv, up_rs, up_all, up_prompt, up_prefix;


static upload load_upload(const char *name) {
    upload u;
    char rel[256];
    snprintf(rel, sizeof rel, "llama-tiny/adapters/%s/adapter_config.json", name);
    u.cfg = tu_read_file(tu_path(rel), &u.cfg_n);
    snprintf(rel, sizeof rel, "llama-tiny/adapters/%s/adapter_model.safetensors", name);
    u.st = tu_read_file(tu_path(rel), &u.st_n);
    if (!u.cfg || !u.st) exit(1);
    return u;
}

static void free_upload(upload *u) { free(u->cfg), free(u->st); }

static ps_status add(adapter_registry *r, const char *name, const upload *u, bool replace, adapter_info *info,
                     ps_err *err) {
    return adapter_registry_add(r, name, u->cfg, u->cfg_n, u->st, u->st_n, replace, info, err);
}

/* Entries of a folder (excluding . and ..), as a sorted comma list. */
static void dir_listing(const char *dir, char *out, size_t cap) {
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, ".."))
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? "," : "", ents[i]->d_name);
        free(ents[i]);
    }
    if (n >= 0) free(ents);
}

static bool file_equals(const char *path, const char *data, size_t n) {
    size_t m;
    char *b = tu_read_file(path, &m);
    bool eq = b && m == n && !memcmp(b, data, n);
    free(b);
    return eq;
}

static void rm_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

static adapter_registry *open_reg(const char *dir, int64_t budget) {
    adapter_registry_opts o = {dir, budget, base, {0}, be};
    adapter_registry *r = NULL;
    ps_err err = {0};
    if (adapter_registry_init(&r, &o, &err)) {
        fprintf(stderr, "registry init: %s\n", err.msg);
        exit(1);
    }
    return r;
}

static void test_basic(const char *dir) {
    adapter_registry *r = open_reg(dir, 0);
    adapter_info info;
    ps_err err = {0};
    TU_CHECK(add(r, "qv", &up_qv, false, &info, &err) == PS_OK, "add qv: %s", err.msg);
    TU_CHECK(info.kind == ADAPTER_LORA && info.max_rank == 8 && info.resident && info.refs == 0, "qv info");
    TU_CHECK(add(r, "prompt", &up_prompt, false, &info, &err) == PS_OK && info.n_virtual == 6, "add prompt: %s", err.msg);
    ps_status s = add(r, "qv", &up_rs, false, &info, &err);
    TU_CHECK(s == PS_EEXIST && strstr(err.msg, "'qv'"), "duplicate: %d %s", s, err.msg);
    char p[600], listing[1000];
    snprintf(p, sizeof p, "%s/qv/adapter_model.safetensors", dir);
    TU_CHECK(file_equals(p, up_qv.st, up_qv.st_n), "stored safetensors differ from the upload");
    snprintf(p, sizeof p, "%s/qv/adapter_config.json", dir);
    TU_CHECK(file_equals(p, up_qv.cfg, up_qv.cfg_n), "stored config differs from the upload");

    /* a bad upload: NaN in a tensor; registry and folder unchanged */
    upload bad = up_rs;
    bad.st = malloc(up_rs.st_n);
    memcpy(bad.st, up_rs.st, up_rs.st_n);
    float nan = __builtin_nanf("");
    memcpy(bad.st + bad.st_n - 8, &nan, 4); /* inside the last tensor's data */
    s = add(r, "bad", &bad, false, &info, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "nan") && strstr(err.msg, "tensor '"), "nan upload: %d %s", s, err.msg);
    free(bad.st);
    dir_listing(dir, listing, sizeof listing);
    TU_CHECK(!strcmp(listing, "prompt,qv"), "folder after bad upload: %s", listing);
    adapter_info *list;
    int n = adapter_registry_list(r, &list);
    TU_CHECK(n == 2 && !strcmp(list[0].name, "prompt") && !strcmp(list[1].name, "qv"), "list: %d", n);
    free(list);

    adapter *a = NULL;
    s = adapter_registry_pin(r, "nope", &a, &err);
    TU_CHECK(s == PS_ENOTFOUND && !a && strstr(err.msg, "'nope'"), "unknown pin: %d %s", s, err.msg);
    s = adapter_registry_remove(r, "nope", &err);
    TU_CHECK(s == PS_ENOTFOUND, "unknown remove: %d", s);

    /* delete while pinned */
    TU_CHECK(adapter_registry_pin(r, "qv", &a, &err) == PS_OK && a && a->max_rank == 8, "pin qv: %s", err.msg);
    adapter_registry_get(r, "qv", &info, &err);
    TU_CHECK(info.refs == 1, "refs %d", info.refs);
    int64_t before = adapter_registry_resident_bytes(r), qv_bytes = (int64_t)adapter_bytes(a);
    TU_CHECK(adapter_registry_remove(r, "qv", &err) == PS_OK, "remove pinned: %s", err.msg);
    adapter *again = NULL;
    TU_CHECK(adapter_registry_pin(r, "qv", &again, &err) == PS_ENOTFOUND, "pin after remove");
    dir_listing(dir, listing, sizeof listing);
    TU_CHECK(!strcmp(listing, "prompt"), "folder after remove: %s", listing);
    TU_CHECK(adapter_registry_resident_bytes(r) == before, "memory freed while pinned");
    float sum = 0; /* the pinned version must still be readable (ASan would flag a free) */
    for (int i = 0; i < 8 * base.hidden; i++) sum += ((const float *)a->lora[ADAPTER_LORA_INDEX(a, 0, ADAPTER_MOD_Q)].A)[i];
    TU_CHECK(sum == sum, "pinned data");
    adapter_registry_unpin(r, a);
    TU_CHECK(adapter_registry_resident_bytes(r) == before - qv_bytes, "memory kept after the last unpin");

    /* re-upload, then hot-swap under a pin */
    TU_CHECK(add(r, "qv", &up_qv, false, &info, &err) == PS_OK, "re-add: %s", err.msg);
    adapter *old = NULL, *cur = NULL;
    adapter_registry_pin(r, "qv", &old, &err);
    TU_CHECK(add(r, "qv", &up_rs, true, &info, &err) == PS_OK && info.max_rank == 4, "replace: %s", err.msg);
    TU_CHECK(adapter_registry_pin(r, "qv", &cur, &err) == PS_OK && cur != old && cur->max_rank == 4 &&
                 old->max_rank == 8, "hot swap");
    snprintf(p, sizeof p, "%s/qv/adapter_model.safetensors", dir);
    TU_CHECK(file_equals(p, up_rs.st, up_rs.st_n), "replaced files");
    adapter_registry_unpin(r, old);
    adapter_registry_unpin(r, cur);
    TU_CHECK(adapter_registry_resident_bytes(r) ==
                 (int64_t)adapter_bytes(cur) + (int64_t)(adapter_registry_get(r, "prompt", &info, &err), info.bytes),
             "resident after swap");
    adapter_registry_free(r);
}

static void test_restart(const char *dir) {
    char p[600], listing[1000];
    snprintf(p, sizeof p, "%s/.tmp-junk-1-1", dir); /* an interrupted upload */
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/broken", dir); /* a folder that does not load */
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/broken/adapter_config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{not json", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/broken/adapter_model.safetensors", dir);
    f = fopen(p, "w");
    fclose(f);
    adapter_registry *r = open_reg(dir, 0);
    adapter_info *list;
    int n = adapter_registry_list(r, &list);
    TU_CHECK(n == 2 && !strcmp(list[0].name, "prompt") && !strcmp(list[1].name, "qv") && list[1].max_rank == 4,
             "after restart: %d entries", n);
    free(list);
    dir_listing(dir, listing, sizeof listing);
    TU_CHECK(!strcmp(listing, "broken,prompt,qv"), "leftovers: %s", listing);
    adapter *a = NULL;
    ps_err err;
    TU_CHECK(adapter_registry_pin(r, "prompt", &a, &err) == PS_OK && a->n_virtual == 6, "pin after restart");
    adapter_registry_unpin(r, a);
    adapter_registry_free(r);
}

/* --adapter-dtype bf16: an F32 upload is stored as BF16 (half its LoRA
 * bytes), persisted as uploaded, and stored as BF16 again after a restart. */
static void test_lora_dtype(const char *dir) {
    adapter_registry_opts o = {dir, 0, base, {.lora_dtype = PS_DT_BF16}, be};
    adapter_registry *r = NULL, *plain = open_reg(NULL, 0);
    ps_err err = {0};
    TU_CHECK(adapter_registry_init(&r, &o, &err) == PS_OK, "init: %s", err.msg);
    adapter_info info, info32;
    TU_CHECK(add(r, "qv", &up_qv, false, &info, &err) == PS_OK, "add: %s", err.msg);
    TU_CHECK(add(plain, "qv", &up_qv, false, &info32, &err) == PS_OK, "add: %s", err.msg);
    TU_CHECK(info.lora_dtype == PS_DT_BF16 && info32.lora_dtype == PS_DT_F32, "dtypes %s / %s",
             ps_dtype_name(info.lora_dtype), ps_dtype_name(info32.lora_dtype));
    TU_CHECK(info.bytes * 2 <= info32.bytes + 4096, "bf16 %lld bytes, f32 %lld", (long long)info.bytes,
             (long long)info32.bytes);
    char p[600];
    snprintf(p, sizeof p, "%s/qv/adapter_model.safetensors", dir);
    TU_CHECK(file_equals(p, up_qv.st, up_qv.st_n), "the upload is persisted as sent");
    adapter_registry_free(r);
    adapter_registry_free(plain);
    TU_CHECK(adapter_registry_init(&r, &o, &err) == PS_OK, "reopen: %s", err.msg);
    adapter *a = NULL;
    TU_CHECK(adapter_registry_pin(r, "qv", &a, &err) == PS_OK && a->lora_dtype == PS_DT_BF16, "after restart: %s",
             a ? ps_dtype_name(a->lora_dtype) : err.msg);
    adapter_registry_unpin(r, a);
    adapter_registry_free(r);
}

static int64_t bytes_of(const upload *u) {
    adapter_registry *r = open_reg(NULL, 0);
    adapter_info info = {0};
    ps_err err;
    add(r, "x", u, false, &info, &err);
    adapter_registry_free(r);
    return info.bytes;
}

static bool resident(adapter_registry *r, const char *name) {
    adapter_info info = {0};
    ps_err err;
    adapter_registry_get(r, name, &info, &err);
    return info.resident;
}

static void test_budget(const char *dir) {
    int64_t qv = bytes_of(&up_qv), rs = bytes_of(&up_rs), pr = bytes_of(&up_prompt);
    TU_CHECK(qv > 0 && rs > 0 && pr > 0 && pr <= rs && rs <= qv, "sizes qv %lld rs %lld prompt %lld", (long long)qv,
             (long long)rs, (long long)pr);
    adapter_registry *r = open_reg(dir, qv + rs + pr / 2); /* two fit, three do not */
    ps_err err = {0};
    adapter *a = NULL, *b = NULL, *c = NULL;
    add(r, "A", &up_qv, false, NULL, &err);
    add(r, "B", &up_rs, false, NULL, &err);
    adapter_registry_pin(r, "A", &a, &err); /* A becomes the most recently used */
    adapter_registry_unpin(r, a);
    TU_CHECK(add(r, "C", &up_prompt, false, NULL, &err) == PS_OK, "add C: %s", err.msg);
    TU_CHECK(resident(r, "A") && !resident(r, "B") && resident(r, "C"), "LRU evicted the wrong one");
    TU_CHECK(adapter_registry_resident_bytes(r) == qv + pr, "resident %lld", (long long)adapter_registry_resident_bytes(r));
    TU_CHECK(adapter_registry_pin(r, "B", &b, &err) == PS_OK && b->max_rank == 4, "reload B: %s", err.msg);
    TU_CHECK(!resident(r, "A") && resident(r, "B") && resident(r, "C"), "reload evicted the wrong one");
    TU_CHECK(adapter_registry_pin(r, "C", &c, &err) == PS_OK, "pin C");
    /* A cannot come back: B and C are pinned and A + B + C is over budget */
    ps_status s = adapter_registry_pin(r, "A", &a, &err);
    TU_CHECK(s == PS_ENOMEM && strstr(err.msg, "budget"), "pin A over budget: %d %s", s, err.msg);
    s = add(r, "D", &up_all, false, NULL, &err);
    TU_CHECK(s == PS_ENOMEM, "add D over budget: %d %s", s, err.msg);
    char listing[1000];
    dir_listing(dir, listing, sizeof listing);
    TU_CHECK(!strcmp(listing, "A,B,C"), "folder after refused add: %s", listing);
    adapter_registry_unpin(r, b);
    adapter_registry_unpin(r, c);
    TU_CHECK(adapter_registry_pin(r, "A", &a, &err) == PS_OK && a->max_rank == 8, "pin A after unpins: %s", err.msg);
    adapter_registry_unpin(r, a);
    TU_CHECK(adapter_registry_resident_bytes(r) <= qv + rs + pr / 2, "over budget");
    adapter_registry_free(r);

    /* memory only: nothing can be evicted */
    r = open_reg(NULL, qv + rs / 2);
    TU_CHECK(add(r, "A", &up_qv, false, NULL, &err) == PS_OK, "mem add A");
    TU_CHECK(add(r, "B", &up_rs, false, NULL, &err) == PS_ENOMEM, "mem add B over budget");
    adapter_registry_free(r);
}

/* ---- threads ---- */

typedef struct {
    adapter_registry *r;
    int id, iters, pins;
} worker;

static void *pinner(void *arg) {
    worker *w = arg;
    static const char *names[] = {"a", "b", "c"};
    unsigned seed = (unsigned)w->id * 7919u + 1;
    for (int i = 0; i < w->iters; i++) {
        seed = seed * 1103515245u + 12345u;
        adapter *a = NULL;
        ps_err err;
        if (adapter_registry_pin(w->r, names[(seed >> 16) % 3], &a, &err) != PS_OK) continue;
        w->pins++;
        /* touch the data: a freed or half-built adapter would show under ASan/TSan */
        volatile float acc = 0;
        if (a->kind == ADAPTER_LORA) {
            for (int l = 0; l < a->base.n_layers; l++)
                for (int m = 0; m < ADAPTER_MOD_COUNT; m++)
                    if (a->lora[ADAPTER_LORA_INDEX(a, l, m)].A) acc += *(const float *)a->lora[ADAPTER_LORA_INDEX(a, l, m)].A;
        } else if (a->prompt) {
            acc += a->prompt[a->n_virtual * a->base.hidden - 1];
        }
        adapter_registry_unpin(w->r, a);
    }
    return NULL;
}

static void *mutator(void *arg) {
    worker *w = arg;
    ps_err err;
    for (int i = 0; i < w->iters; i++) {
        add(w->r, "b", i % 2 ? &up_qv : &up_rs, true, NULL, &err);
        if (i % 3 == 0) adapter_registry_remove(w->r, "c", &err);
        else add(w->r, "c", &up_prompt, false, NULL, &err);
        adapter_info *list;
        int n = adapter_registry_list(w->r, &list);
        if (n >= 0) free(list);
    }
    return NULL;
}

static void test_threads(const char *dir) {
    int64_t budget = bytes_of(&up_qv) * 2; /* forces evictions and reloads */
    ps_log_threshold = PS_LOG_LEVEL_WARN;   /* hundreds of register/evict lines otherwise */
    adapter_registry *r = open_reg(dir, budget);
    ps_err err;
    add(r, "a", &up_qv, false, NULL, &err);
    add(r, "b", &up_rs, false, NULL, &err);
    add(r, "c", &up_prompt, false, NULL, &err);
    enum { NP = 3 };
    pthread_t th[NP + 1];
    worker w[NP + 1];
    for (int i = 0; i <= NP; i++) {
        w[i] = (worker){r, i, i < NP ? 300 : 60, 0};
        pthread_create(&th[i], NULL, i < NP ? pinner : mutator, &w[i]);
    }
    int pins = 0;
    for (int i = 0; i <= NP; i++) pthread_join(th[i], NULL), pins += w[i].pins;
    TU_CHECK(pins > 300, "only %d pins succeeded", pins);
    adapter_info *list;
    int n = adapter_registry_list(r, &list);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        TU_CHECK(list[i].refs == 0, "%s still has %d refs", list[i].name, list[i].refs);
        if (list[i].resident) sum += list[i].bytes;
    }
    free(list);
    TU_CHECK(sum == adapter_registry_resident_bytes(r) && sum <= budget, "resident %lld, entries %lld, budget %lld",
             (long long)adapter_registry_resident_bytes(r), (long long)sum, (long long)budget);
    adapter_registry_free(r);
    printf("  threads: %d pins\n", pins);
}

int main(void) {
    tu_fixtures_or_skip("llama-tiny/adapters");
    json_t *c = json_load_file(tu_path("llama-tiny/config.json"), 0, NULL);
    if (!c) return 1;
#define GI(k) (int)json_integer_value(json_object_get(c, k))
    base = (adapter_base_shape){GI("num_hidden_layers"), GI("hidden_size"), GI("intermediate_size"),
                                GI("num_attention_heads"), GI("num_key_value_heads"),
                                GI("hidden_size") / GI("num_attention_heads"), GI("vocab_size")};
#undef GI
    json_decref(c);
    ps_err err;
    if (ps_backend_cpu_create(1, &be, &err)) return 1;
    up_qv = load_upload("lora-qv"), up_rs = load_upload("lora-rs"), up_all = load_upload("lora-all");
    up_prompt = load_upload("prompt"), up_prefix = load_upload("prefix");
    snprintf(tmp, sizeof tmp, "%s/ps_registry_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) return 1;
    char d1[300], d2[300], d3[300], d4[300];
    snprintf(d1, sizeof d1, "%s/store", tmp);
    snprintf(d2, sizeof d2, "%s/budget/nested", tmp); /* created with parents */
    snprintf(d3, sizeof d3, "%s/threads", tmp);
    snprintf(d4, sizeof d4, "%s/bf16", tmp);
    test_basic(d1);
    test_restart(d1);
    test_budget(d2);
    test_threads(d3);
    test_lora_dtype(d4);
    rm_tree(tmp);
    free_upload(&up_qv), free_upload(&up_rs), free_upload(&up_all), free_upload(&up_prompt), free_upload(&up_prefix);
    ps_backend_destroy(be);
    return tu_finish("adapter registry");
}
