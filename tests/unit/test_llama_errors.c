/* Bad input to the LLaMA model gives a precise error, never a crash or a leak
 * (the ASan run of the suite checks the leaks):
 *   - config.json: defaults, both RoPE spellings, eos lists, and every refusal
 *     (RoPE scaling, other architectures, biases, activations, sliding window,
 *     other quantisation methods, inconsistent dims, bad JSON);
 *   - model folders: a missing tensor, a wrong shape, a wrong dtype, a truncated
 *     file, lm_head missing while untied, a config naming more layers than the
 *     file has (the loader must free the half-built model);
 *   - bnb-4bit checkpoints modified from llama-tiny-bnb4: FP4, another block
 *     size, a custom quant_map, a wrong quant_state shape, a wrong absmax count,
 *     a missing nested_absmax;
 *   - llama_forward batches out of range (ids, sequences, pages, out_rows), after
 *     which the model still computes the same logits;
 *   - kv_cache_init arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/safetensors.h"
#include "math/nf4.h"
#include "models/llama.h"
#include "models/llama_random.h"
#include "testutil.h"

static ps_backend *be;
static ps_err err;

/* ---- config.json ---- */

#define BASE_CFG                                                                             \
    "\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 100, " \
    "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, "               \
    "\"num_attention_heads\": 4"

static void expect_cfg(const char *extra, ps_status want, const char *msg_part) {
    char json[2048];
    snprintf(json, sizeof json, "{" BASE_CFG "%s%s}", *extra ? ", " : "", extra);
    llama_config c;
    memset(&err, 0, sizeof err);
    ps_status st = llama_config_parse(json, strlen(json), &c, &err);
    TU_CHECK(st == want, "config {%s}: status %s, expected %s (%s)", extra, ps_status_name(st),
             ps_status_name(want), err.msg);
    if (msg_part)
        TU_CHECK(strstr(err.msg, msg_part) != NULL, "config {%s}: message '%s' lacks '%s'", extra,
                 err.msg, msg_part);
}

static void test_config(void) {
    llama_config c;
    const char *j = "{" BASE_CFG "}";
    TU_CHECK(llama_config_parse(j, strlen(j), &c, &err) == PS_OK, "base config: %s", err.msg);
    TU_CHECK(c.n_kv_heads == 4 && c.head_dim == 16 && c.rope_theta == 10000.0f && c.rms_eps == 1e-6f &&
                 c.max_pos == 2048 && !c.tie_embeddings && c.bos_id == 1 && c.eos_id == 2,
             "LlamaConfig defaults: kv %d head_dim %d theta %g eps %g max_pos %d tie %d bos %d eos %d",
             c.n_kv_heads, c.head_dim, c.rope_theta, c.rms_eps, c.max_pos, c.tie_embeddings, c.bos_id,
             c.eos_id);
    j = "{\"model_type\": \"llama\", \"vocab_size\": 128256, \"hidden_size\": 64, "
        "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
        "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0}, "
        "\"eos_token_id\": [128001, 128009], \"bos_token_id\": null}";
    TU_CHECK(llama_config_parse(j, strlen(j), &c, &err) == PS_OK && c.rope_theta == 500000.0f &&
                 c.eos_id == 128001 && c.bos_id == -1,
             "transformers-5 rope_parameters / eos list: %s theta %g eos %d bos %d", err.msg,
             c.rope_theta, c.eos_id, c.bos_id);
    expect_cfg("\"rope_scaling\": null, \"rope_theta\": 1e6", PS_OK, NULL);
    expect_cfg("\"rope_scaling\": {\"type\": \"default\"}", PS_OK, NULL);
    expect_cfg("\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}", PS_ENOTSUP, "linear");
    expect_cfg("\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}", PS_ENOTSUP, "llama3");
    expect_cfg("\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1e4}", PS_ENOTSUP, "yarn");
    expect_cfg("\"model_type\": \"gpt2\"", PS_EFORMAT, "duplicate"); /* JSON_REJECT_DUPLICATES */
    const char *gpt2 = "{\"model_type\": \"gpt2\", \"vocab_size\": 100, \"hidden_size\": 64, "
                       "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4}";
    TU_CHECK(llama_config_parse(gpt2, strlen(gpt2), &c, &err) == PS_ENOTSUP && strstr(err.msg, "gpt2"),
             "model_type gpt2: %s", err.msg);
    const char *cls = "{\"architectures\": [\"LlamaForSequenceClassification\"], \"vocab_size\": 100, "
                      "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, "
                      "\"num_attention_heads\": 4}";
    TU_CHECK(llama_config_parse(cls, strlen(cls), &c, &err) == PS_ENOTSUP &&
                 strstr(err.msg, "LlamaForSequenceClassification"),
             "architecture: %s", err.msg);
    const char *mistral = "{\"model_type\": \"mistral\", \"vocab_size\": 100, \"hidden_size\": 64, "
                          "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                          "\"max_position_embeddings\": 32768, \"sliding_window\": %s}";
    char buf[512];
    snprintf(buf, sizeof buf, mistral, "4096");
    TU_CHECK(llama_config_parse(buf, strlen(buf), &c, &err) == PS_ENOTSUP && strstr(err.msg, "sliding_window"),
             "mistral sliding window: %s", err.msg);
    snprintf(buf, sizeof buf, mistral, "null");
    TU_CHECK(llama_config_parse(buf, strlen(buf), &c, &err) == PS_OK, "mistral no window: %s", err.msg);
    expect_cfg("\"hidden_act\": \"gelu\"", PS_ENOTSUP, "gelu");
    expect_cfg("\"attention_bias\": true", PS_ENOTSUP, "bias");
    expect_cfg("\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}", PS_ENOTSUP, "gptq");
    expect_cfg("\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_8bit\": true}",
               PS_ENOTSUP, "8-bit");
    expect_cfg("\"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, "
               "\"bnb_4bit_quant_type\": \"fp4\"}", PS_ENOTSUP, "fp4");
    expect_cfg("\"num_key_value_heads\": 3", PS_EFORMAT, "multiple");
    expect_cfg("\"head_dim\": 15", PS_EFORMAT, "even");
    expect_cfg("\"num_key_value_heads\": 0", PS_EFORMAT, "num_key_value_heads");
    expect_cfg("\"max_position_embeddings\": -5", PS_EFORMAT, "max_position_embeddings");
    expect_cfg("\"rms_norm_eps\": \"small\"", PS_EFORMAT, "rms_norm_eps");
    expect_cfg("\"eos_token_id\": 100", PS_EFORMAT, "vocabulary");
    expect_cfg("\"head_dim\": 24", PS_OK, NULL); /* heads * head_dim != hidden is allowed */
    const char *nodims = "{\"model_type\": \"llama\", \"vocab_size\": 100}";
    TU_CHECK(llama_config_parse(nodims, strlen(nodims), &c, &err) == PS_EFORMAT &&
                 strstr(err.msg, "hidden_size"), "missing hidden_size: %s", err.msg);
    const char *nodiv = "{\"model_type\": \"llama\", \"vocab_size\": 100, \"hidden_size\": 66, "
                        "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4}";
    TU_CHECK(llama_config_parse(nodiv, strlen(nodiv), &c, &err) == PS_EFORMAT && strstr(err.msg, "head_dim"),
             "hidden not divisible: %s", err.msg);
    TU_CHECK(llama_config_parse("{\"a\": ", 6, &c, &err) == PS_EFORMAT, "truncated JSON: %s", err.msg);
    TU_CHECK(llama_config_parse("[1]", 3, &c, &err) == PS_EFORMAT, "non-object JSON: %s", err.msg);
    TU_CHECK(llama_config_load("/nonexistent/dir", &c, &err) == PS_ENOTFOUND && strstr(err.msg, "config.json"),
             "missing config.json: %s", err.msg);
}

/* ---- model folders ---- */

static const llama_config tiny = {100, 64, 96, 2, 4, 2, 16, 64, 1e-5f, 10000.0f, false, 1, 2};

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    if (a) fclose(a);
    if (b) fclose(b);
}

typedef struct {
    const char *drop;         /* tensor left out */
    const char *name;         /* tensor replaced by `item` */
    st_write_item item;
    st_write_item add;        /* extra tensor when add.name is set */
} edit;

/* Writes src's tensors with one edit into dir/model.safetensors (+ src's config.json). */
static void write_edited(const char *src, const char *dir, const edit *e, bool with_config) {
    char path[4096];
    st_set *s = NULL;
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    if (st_open(path, &s, &err)) {
        TU_CHECK(0, "open %s: %s", path, err.msg);
        return;
    }
    int n = st_count(s), k = 0;
    st_write_item *items = calloc((size_t)n + 1, sizeof *items);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(s, i);
        if (e->drop && !strcmp(t->name, e->drop)) continue;
        if (e->name && !strcmp(t->name, e->name)) {
            items[k] = e->item;
            items[k++].name = t->name;
            continue;
        }
        items[k] = (st_write_item){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(items[k++].shape, t->shape, sizeof t->shape);
    }
    if (e->add.name) items[k++] = e->add;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    TU_CHECK(st_write(path, items, k, NULL, &err) == PS_OK, "write: %s", err.msg);
    char from[4096];
    snprintf(from, sizeof from, "%s/config.json", src);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (with_config) copy_file(from, path);
    free(items);
    st_close(s);
}

static void expect_load(const char *what, const char *dir, llama_quant q, ps_status want,
                        const char *msg_part) {
    llama_model *m = (llama_model *)&err; /* must be reset to NULL on failure */
    memset(&err, 0, sizeof err);
    ps_status st = llama_load(dir, q, be, &m, &err);
    TU_CHECK(st == want, "%s (quant %d): status %s, expected %s (%s)", what, (int)q,
             ps_status_name(st), ps_status_name(want), err.msg);
    TU_CHECK(st == PS_OK || m == NULL, "%s: *out not NULL after an error", what);
    TU_CHECK(!msg_part || strstr(err.msg, msg_part), "%s: message '%s' lacks '%s'", what, err.msg,
             msg_part);
    if (st == PS_OK) llama_free(m);
    else printf("  %-28s -> %s\n", what, err.msg);
}

static void test_folders(void) {
    char src[] = "/tmp/ps_llama_src_XXXXXX", dir[] = "/tmp/ps_llama_bad_XXXXXX";
    if (!mkdtemp(src) || !mkdtemp(dir)) {
        TU_CHECK(0, "mkdtemp");
        return;
    }
    TU_CHECK(llama_random_write_dir(&tiny, 7, src, INT64_MAX, &err) == PS_OK, "write: %s", err.msg);
    static uint16_t zeros[64 * 64];
    struct {
        const char *what;
        edit e;
        const char *msg;
    } cases[] = {
        {"missing projection", {"model.layers.1.mlp.up_proj.weight", NULL, {0}},
         "tensor 'model.layers.1.mlp.up_proj.weight' is missing"},
        {"missing lm_head", {"lm_head.weight", NULL, {0}}, "'lm_head.weight' is missing"},
        {"missing norm", {"model.layers.0.post_attention_layernorm.weight", NULL, {0}}, "post_attention"},
        {"q_proj shape", {NULL, "model.layers.0.self_attn.q_proj.weight", {NULL, ST_F16, 2, {32, 64}, zeros}},
         "tensor 'model.layers.0.self_attn.q_proj.weight': shape [32, 64], expected [64, 64]"},
        {"embed shape", {NULL, "model.embed_tokens.weight", {NULL, ST_F16, 2, {64, 64}, zeros}},
         "shape [64, 64], expected [100, 64]"},
        {"norm dtype", {NULL, "model.norm.weight", {NULL, ST_I16, 1, {64}, zeros}},
         "tensor 'model.norm.weight': dtype I16, expected F16, BF16 or F32"},
        {"k_proj dtype", {NULL, "model.layers.1.self_attn.k_proj.weight", {NULL, ST_I16, 2, {32, 64}, zeros}},
         "dtype I16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_edited(src, dir, &cases[i].e, true);
        expect_load(cases[i].what, dir, LLAMA_QUANT_NF4, PS_EFORMAT, cases[i].msg);
        expect_load(cases[i].what, dir, LLAMA_QUANT_NONE, PS_EFORMAT, cases[i].msg);
    }
    /* a config naming more layers than the weights have: fails after layers 0-1 were uploaded */
    llama_config three = tiny;
    three.n_layers = 3;
    edit none = {0};
    TU_CHECK(llama_random_write_dir(&three, 7, dir, INT64_MAX, &err) == PS_OK, "write: %s", err.msg);
    write_edited(src, dir, &none, false); /* the 2-layer weights under the 3-layer config */
    expect_load("config with 3 layers", dir, LLAMA_QUANT_NF4, PS_EFORMAT,
                "tensor 'model.layers.2.input_layernorm.weight' is missing");
    /* truncated weights file */
    write_edited(src, dir, &none, true);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    stat(path, &sb);
    TU_CHECK(truncate(path, sb.st_size - 100) == 0, "truncate");
    expect_load("truncated file", dir, LLAMA_QUANT_NF4, PS_EFORMAT, NULL);
    unlink(path);
    expect_load("no weights file", dir, LLAMA_QUANT_NF4, PS_ENOTFOUND, NULL);
    expect_load("untouched copy loads", src, LLAMA_QUANT_NF4, PS_OK, NULL);
    tu_rm_dir(src);
    tu_rm_dir(dir);
}

/* ---- bitsandbytes checkpoints ---- */

#define KQS "model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__nf4"
#define KJSON(qt, bs, shape)                                                                    \
    "{\"quant_type\": \"" qt "\", \"blocksize\": " bs ", \"dtype\": \"float16\", \"shape\": " shape \
    ", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.2629890441894531}"

static st_write_item bytes_item(const char *s) {
    return (st_write_item){NULL, ST_U8, 1, {(int64_t)strlen(s)}, s};
}

static void test_bnb(void) {
    char src[4096], dir[] = "/tmp/ps_llama_bnb_XXXXXX";
    snprintf(src, sizeof src, "%s", tu_path("llama-tiny-bnb4"));
    if (!mkdtemp(dir)) {
        TU_CHECK(0, "mkdtemp");
        return;
    }
    static const char fp4[] = KJSON("fp4", "64", "[64, 128]"), bs128[] = KJSON("nf4", "128", "[64, 128]"),
                      shape[] = KJSON("nf4", "64", "[128, 64]"), good[] = KJSON("nf4", "64", "[64, 128]");
    float qmap[16];
    memcpy(qmap, ps_nf4_code, sizeof qmap);
    qmap[3] += 0.001f;
    static uint8_t absmax[255];
    struct {
        const char *what;
        edit e;
        ps_status want;
        const char *msg;
    } cases[] = {
        {"fp4 in quant_state", {NULL, KQS, bytes_item(fp4), {0}}, PS_ENOTSUP, "quant_type 'fp4'"},
        {"blocksize 128", {NULL, KQS, bytes_item(bs128), {0}}, PS_ENOTSUP, "blocksize 128"},
        {"quant_state shape", {NULL, KQS, bytes_item(shape), {0}}, PS_EFORMAT,
         "shape [128, 64], expected [64, 128]"},
        {"quant_state not JSON", {NULL, KQS, bytes_item("{not json"), {0}}, PS_EFORMAT, "quant_state"},
        {"fp4 state key",
         {KQS, NULL, {0}, {"model.layers.0.self_attn.k_proj.weight.quant_state.bitsandbytes__fp4", ST_U8, 1,
                           {(int64_t)strlen(good)}, good}},
         PS_ENOTSUP, "FP4"},
        {"8-bit weight", {KQS, NULL, {0}, {"model.layers.0.self_attn.k_proj.weight.SCB", ST_U8, 1, {4}, good}},
         PS_ENOTSUP, "8-bit"},
        {"custom quant_map",
         {NULL, "model.layers.1.mlp.up_proj.weight.quant_map", {NULL, ST_F32, 1, {16}, qmap}, {0}},
         PS_ENOTSUP, "quant_map': entry 3"},
        {"absmax count",
         {NULL, "model.layers.0.self_attn.q_proj.weight.absmax", {NULL, ST_U8, 1, {255}, absmax}, {0}},
         PS_EFORMAT, "255 elements, expected 256"},
        {"missing nested_absmax", {"model.layers.1.self_attn.v_proj.weight.nested_absmax", NULL, {0}, {0}},
         PS_EFORMAT, "'model.layers.1.self_attn.v_proj.weight.nested_absmax' is missing"},
        {"missing quant_state",
         {"model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4", NULL, {0}, {0}}, PS_EFORMAT,
         "quant_state.bitsandbytes__nf4' is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_edited(src, dir, &cases[i].e, true);
        expect_load(cases[i].what, dir, LLAMA_QUANT_NF4, cases[i].want, cases[i].msg);
    }
    edit none = {0};
    write_edited(src, dir, &none, true);
    expect_load("unedited bnb copy", dir, LLAMA_QUANT_NF4, PS_OK, NULL);
    tu_rm_dir(dir);
}

/* ---- batches and the KV cache ---- */

static void test_batches(void) {
    llama_model *m = NULL;
    kv_cache kv = {0};
    if (llama_init_random(&tiny, 3, LLAMA_QUANT_NF4, be, &m, &err) ||
        kv_cache_init(&kv, be, &tiny, 4, 4, PS_DT_F32, &err)) {
        TU_CHECK(0, "setup: %s", err.msg);
        llama_free(m);
        return;
    }
    int32_t ids[5] = {1, 5, 9, 13, 99}, pos[5] = {0, 1, 2, 3, 4}, seq[5] = {0}, rows[1] = {4};
    int32_t bt[2] = {kv_cache_alloc_page(&kv), kv_cache_alloc_page(&kv)};
    float ref[100], lg[100];
    llama_batch good = {5, ids, pos, seq, pos, 1, 2, bt, 1, rows};
    TU_CHECK(llama_forward(m, &kv, &good, ref, &err) == PS_OK, "good batch: %s", err.msg);

    int32_t bad_id[5] = {1, 5, 100, 13, 99}, bad_seq[5] = {0, 0, 1, 0, 0}, neg[5] = {0, 1, -1, 3, 4};
    int32_t far[5] = {0, 1, 2, 3, 8}, bad_bt[2] = {bt[0], 4}, bad_row[1] = {5};
    struct {
        const char *what;
        llama_batch b;
        const char *msg;
    } cases[] = {
        {"id outside vocab", {5, bad_id, pos, seq, pos, 1, 2, bt, 1, rows}, "id 100 outside the vocabulary"},
        {"sequence out of range", {5, ids, pos, bad_seq, pos, 1, 2, bt, 1, rows}, "seq 1 (of 1)"},
        {"negative kv_pos", {5, ids, pos, seq, neg, 1, 2, bt, 1, rows}, "kv_pos -1"},
        {"kv_pos past the block table", {5, ids, pos, seq, far, 1, 2, bt, 1, rows}, "kv_pos 8"},
        {"page outside the pool", {5, ids, pos, seq, pos, 1, 2, bad_bt, 1, rows}, "page 1 is 4"},
        {"out_rows out of range", {5, ids, pos, seq, pos, 1, 2, bt, 1, bad_row}, "out_rows[0] = 5"},
        {"no tokens", {0, ids, pos, seq, pos, 1, 2, bt, 0, rows}, "0 tokens"},
        {"more outputs than tokens", {1, ids, pos, seq, pos, 1, 2, bt, 2, rows}, "2 outputs"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0, sizeof err);
        ps_status st = llama_forward(m, &kv, &cases[i].b, lg, &err);
        TU_CHECK(st == PS_EINVAL && strstr(err.msg, cases[i].msg), "%s: %s '%s'", cases[i].what,
                 ps_status_name(st), err.msg);
        printf("  %-28s -> %s\n", cases[i].what, err.msg);
    }
    kv_cache other = {0};
    llama_config wide = tiny;
    wide.n_kv_heads = 4;
    TU_CHECK(kv_cache_init(&other, be, &wide, 4, 2, PS_DT_F32, &err) == PS_OK, "kv: %s", err.msg);
    TU_CHECK(llama_forward(m, &other, &good, lg, &err) == PS_EINVAL && strstr(err.msg, "KV cache"),
             "foreign KV cache: %s", err.msg);
    kv_cache_free(&other);
    /* nothing above changed the model: the same batch gives the same logits */
    TU_CHECK(llama_forward(m, &kv, &good, lg, &err) == PS_OK && !memcmp(lg, ref, sizeof ref),
             "logits changed after rejected batches: %s", err.msg);
    kv_cache_free(&kv);
    llama_free(m);
}

static void test_kv_cache(void) {
    kv_cache kv = {0};
    TU_CHECK(kv_cache_init(&kv, be, &tiny, 0, 4, PS_DT_F32, &err) == PS_EINVAL, "page_size 0: %s", err.msg);
    TU_CHECK(kv_cache_init(&kv, be, &tiny, 16, 0, PS_DT_F32, &err) == PS_EINVAL, "0 pages: %s", err.msg);
    TU_CHECK(kv_cache_init(&kv, be, &tiny, 16, 3, PS_DT_I32, &err) == PS_EINVAL && strstr(err.msg, "I32"),
             "an I32 cache: %s", err.msg);
    TU_CHECK(kv_cache_init(&kv, be, &tiny, 16, 3, PS_DT_F32, &err) == PS_OK, "kv: %s", err.msg);
    int32_t a = kv_cache_alloc_page(&kv), b = kv_cache_alloc_page(&kv), c = kv_cache_alloc_page(&kv);
    TU_CHECK(a == 0 && b == 1 && c == 2 && kv_cache_alloc_page(&kv) == -1, "pages %d %d %d", a, b, c);
    kv_cache_release_page(&kv, b);
    TU_CHECK(kv_cache_alloc_page(&kv) == b && kv.n_free == 0, "released page not reused");
    TU_CHECK(kv.layers[1].k.shape[0] == 3 && kv.layers[1].k.shape[1] == 16 && kv.layers[1].k.shape[2] == 2 &&
                 kv.layers[1].k.shape[3] == 16, "kv layer shape");
    kv_cache_free(&kv);
    kv_cache_free(&kv); /* a freed (zeroed) cache may be freed again */
}

int main(void) {
    be = tu_backend_create();
    test_config();
    test_folders();
    test_batches();
    test_kv_cache();
    /* the bnb part needs the fixtures; everything above runs without them */
    const char *fx = getenv("PEFTSERVE_FIXTURES");
    if (!fx || !*fx) fx = getenv("PS_FIXTURES_DEFAULT");
    char probe[4096];
    struct stat sb;
    snprintf(probe, sizeof probe, "%s/llama-tiny-bnb4/model.safetensors", fx ? fx : "../shared/fixtures");
    if (stat(probe, &sb) == 0) {
        tu_fixtures_or_skip("llama-tiny-bnb4");
        test_bnb();
    } else {
        printf("SKIP (part): bnb checks need %s\n", probe);
    }
    ps_backend_destroy(be);
    return tu_finish("llama errors");
}
