/* Writes the random model of llama_random.h as a Hugging Face folder:
 * config.json + F16 safetensors (model.safetensors, or shards
 * model-0000i-of-0000N.safetensors + model.safetensors.index.json when the
 * weights exceed max_shard_bytes), so loading it exercises the real loader
 * and gives the same weights as llama_init_random with the same seed.
 * Host memory: one shard's F16 data at a time. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"
#include "math/half.h"
#include "models/llama_internal.h"
#include "models/llama_random.h"

typedef struct {
    int kind, layer;
    int64_t rows, cols;
    int shard;
} wt_item;

static int list_tensors(const llama_config *c, wt_item *items) {
    int n = 0;
    items[n++] = (wt_item){LLAMA_RW_EMBED, 0, 0, 0, 0};
    for (int l = 0; l < c->n_layers; l++) {
        items[n++] = (wt_item){LLAMA_RW_ATTN_NORM, l, 0, 0, 0};
        items[n++] = (wt_item){LLAMA_RW_FFN_NORM, l, 0, 0, 0};
        for (int p = 0; p < LLAMA_N_PROJ; p++) items[n++] = (wt_item){LLAMA_RW_PROJ + p, l, 0, 0, 0};
    }
    items[n++] = (wt_item){LLAMA_RW_NORM, 0, 0, 0, 0};
    if (!c->tie_embeddings) items[n++] = (wt_item){LLAMA_RW_LM_HEAD, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) llama_random_shape(c, items[i].kind, &items[i].rows, &items[i].cols);
    return n;
}

static ps_status write_config(const llama_config *c, const char *dir, ps_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *j = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:n,s:b,s:i,s:i,s:s,s:s}",
                          "architectures", "LlamaForCausalLM", "model_type", "llama", "vocab_size",
                          c->vocab, "hidden_size", c->hidden, "intermediate_size", c->ffn,
                          "num_hidden_layers", c->n_layers, "num_attention_heads", c->n_heads,
                          "num_key_value_heads", c->n_kv_heads, "head_dim", c->head_dim,
                          "max_position_embeddings", c->max_pos, "rms_norm_eps", (double)c->rms_eps,
                          "rope_theta", (double)c->rope_theta, "rope_scaling", "tie_word_embeddings",
                          c->tie_embeddings, "bos_token_id", c->bos_id, "eos_token_id", c->eos_id,
                          "hidden_act", "silu", "torch_dtype", "float16");
    if (!j) return ps_errf(err, PS_ENOMEM, "config.json: cannot build the JSON");
    /* -1 = none: HF writes null */
    json_object_set_new(j, "bos_token_id", c->bos_id < 0 ? json_null() : json_integer(c->bos_id));
    json_object_set_new(j, "eos_token_id", c->eos_id < 0 ? json_null() : json_integer(c->eos_id));
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    return rc ? ps_errf(err, PS_EIO, "%s: cannot write", path) : PS_OK;
}

static void shard_name(char *b, size_t cap, int i, int n) {
    if (n == 1) snprintf(b, cap, "model.safetensors");
    else snprintf(b, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

#define WT_CHUNK_ROWS 16

static ps_status write_shard(const llama_config *c, uint64_t seed, const char *dir, wt_item *it,
                             int n_items, int shard, int n_shards, json_t *map, ps_err *err) {
    char file[64], path[4096];
    int n = 0;
    size_t bytes = 0;
    int64_t max_cols = 1;
    for (int i = 0; i < n_items; i++)
        if (it[i].shard == shard) {
            bytes += (size_t)(it[i].rows * it[i].cols) * 2;
            if (it[i].cols > max_cols) max_cols = it[i].cols;
        }
    st_write_item *w = calloc((size_t)n_items, sizeof *w);
    char(*names)[128] = calloc((size_t)n_items, sizeof *names);
    uint16_t *buf = malloc(bytes ? bytes : 1);
    float *rows = malloc(sizeof(float) * (size_t)(WT_CHUNK_ROWS * max_cols));
    ps_status st = PS_OK;
    if (!w || !names || !buf || !rows) {
        st = ps_errf(err, PS_ENOMEM, "random model: cannot allocate a %zu-byte shard", bytes);
        goto done;
    }
    shard_name(file, sizeof file, shard, n_shards);
    size_t off = 0;
    for (int i = 0; i < n_items; i++) {
        if (it[i].shard != shard) continue;
        llama_random_name(it[i].kind, it[i].layer, names[n], sizeof names[n]);
        uint16_t *dst = buf + off / 2;
        for (int64_t r = 0; r < it[i].rows; r += WT_CHUNK_ROWS) {
            int64_t k = it[i].rows - r < WT_CHUNK_ROWS ? it[i].rows - r : WT_CHUNK_ROWS;
            llama_random_rows(c, seed, it[i].layer, it[i].kind, r, k, rows);
            for (int64_t e = 0; e < k * it[i].cols; e++) dst[r * it[i].cols + e] = ps_f32_to_f16(rows[e]);
        }
        bool norm = it[i].kind == LLAMA_RW_NORM || it[i].kind == LLAMA_RW_ATTN_NORM ||
                    it[i].kind == LLAMA_RW_FFN_NORM;
        w[n] = (st_write_item){names[n], ST_F16, norm ? 1 : 2,
                               {norm ? it[i].cols : it[i].rows, it[i].cols}, dst};
        json_object_set_new(map, names[n], json_string(file));
        off += (size_t)(it[i].rows * it[i].cols) * 2;
        n++;
    }
    snprintf(path, sizeof path, "%s/%s", dir, file);
    st = st_write(path, w, n, "{\"format\": \"pt\"}", err);
done:
    free(w);
    free(names);
    free(buf);
    free(rows);
    return st;
}

ps_status llama_random_write_dir(const llama_config *c, uint64_t seed, const char *dir,
                                 int64_t max_shard_bytes, ps_err *err) {
    ps_status st = llama_config_check(c, err);
    if (st) return st;
    wt_item *it = malloc(sizeof *it * (size_t)(3 + LLAMA_N_PROJ * 2 * c->n_layers));
    if (!it) return ps_errf(err, PS_ENOMEM, "random model: cannot allocate the tensor list");
    int n = list_tensors(c, it), n_shards = 1;
    int64_t in_shard = 0, total = 0;
    for (int i = 0; i < n; i++) {
        int64_t b = it[i].rows * it[i].cols * 2;
        if (in_shard > 0 && in_shard + b > max_shard_bytes) {
            n_shards++;
            in_shard = 0;
        }
        it[i].shard = n_shards - 1;
        in_shard += b;
        total += b;
    }
    json_t *map = json_object();
    if ((st = write_config(c, dir, err))) goto done;
    for (int s = 0; s < n_shards; s++)
        if ((st = write_shard(c, seed, dir, it, n, s, n_shards, map, err))) goto done;
    if (n_shards > 1) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        json_t *idx = json_pack("{s:{s:I},s:O}", "metadata", "total_size", (json_int_t)total,
                                "weight_map", map);
        if (!idx || json_dump_file(idx, path, JSON_INDENT(2) | JSON_SORT_KEYS))
            st = ps_errf(err, PS_EIO, "%s: cannot write", path);
        json_decref(idx);
    }
done:
    json_decref(map);
    free(it);
    return st;
}
