/* Step graphs (ops.h ps_graph_run): decode steps replayed from a recorded
 * CUDA graph give bit-identical logits to the same steps run op by op, and
 * the graph path is really taken (recordings and replays counted by the
 * backend). Three sequences decode together (T = 3), then one alone (T = 1),
 * with 4-entry pages, a block-table row per sequence whether it takes part in
 * the step or not (as the engine passes one per slot) and a table width that
 * grows with the longest sequence (padded to a power of two, so the key
 * holds). Each run starts from the same prefill. Three times: on the base
 * alone, with two LoRA adapters on two of the three sequences (LoRA steps are
 * recorded too; their tables key on the adapters' load uids), and on the base
 * with the three-token steps on the dequantise + cuBLAS path (a GEMM inside a
 * recording must not allocate: the backend gives cuBLAS a fixed workspace).
 *
 * Needs a device backend with graphs: with PS_TEST_DEVICE=cuda (a GPU, or
 * the CPU emulation of tests/gpu/emu); on the CPU backend it exits 77. The
 * op-level fallbacks of ps_graph_run are tested by test_graph_run. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "models/llama.h"
#include "testutil.h"
#ifdef PS_HAVE_CUDA
#include "cuda/cuda_ext.h"

#define PAGE 4
#define N_SEQ 3
#define MAX_LEN 64
#define STEPS_3 10 /* decode steps with all three sequences */
#define STEPS_1 8  /* then with sequence 0 alone */

static ps_backend *be;
static ps_err err;
/* the LoRA pass: sequences 0 and 2 use the step's adapters 0 and 1, sequence
 * 1 none; when sequence 0 decodes alone, the step's list alternates between
 * (A, B) and (B, A) every two steps, so the same shapes meet different LoRA
 * tables (a key blind to the adapters would replay the wrong ones) */
static const adapter *ads[2], *ads_swapped[2];
static const adapter *const *step_ads;
static const int32_t seq_adapter[N_SEQ] = {0, -1, 1};
static bool use_adapters;

typedef struct {
    int32_t ids[MAX_LEN];
    int len, n_prompt;
    int32_t pages[MAX_LEN / PAGE + 1];
    int n_pages;
} seqstate;

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* One step over the sequences listed in `which`: the whole remaining prompt
 * of each when prefill, else its last token; logits of each one's last token.
 * The block table has a row for every sequence, as the engine passes one per
 * slot (so n_seqs is not the number of sequences in the step), and is as
 * wide as the longest sequence needs (so its width grows over the steps). */
static ps_status step(llama_model *m, kv_cache *kv, seqstate *s, const int *which, int n,
                      bool prefill, float *lg) {
    int32_t ids[256], pos[256], tseq[256], kvp[256], tad[256], rows[N_SEQ], bt[N_SEQ * (MAX_LEN / PAGE + 1)];
    int T = 0, max_pages = 1;
    for (int j = 0; j < n; j++) {
        seqstate *q = &s[which[j]];
        int from = prefill ? 0 : q->len - 1;
        while (q->n_pages * PAGE < q->len) q->pages[q->n_pages++] = kv_cache_alloc_page(kv);
        for (int p = from; p < q->len; p++) {
            ids[T] = q->ids[p];
            pos[T] = kvp[T] = p;
            tad[T] = seq_adapter[which[j]];
            tseq[T++] = which[j];
        }
        rows[j] = T - 1;
    }
    for (int i = 0; i < N_SEQ; i++)
        if (s[i].n_pages > max_pages) max_pages = s[i].n_pages;
    for (int i = 0; i < N_SEQ; i++)
        for (int p = 0; p < max_pages; p++) bt[i * max_pages + p] = p < s[i].n_pages ? s[i].pages[p] : -1;
    llama_batch b = {T, ids, pos, tseq, kvp, N_SEQ, max_pages, bt, n, rows};
    if (use_adapters) b.n_adapters = 2, b.adapters = step_ads, b.tok_adapter = tad;
    return llama_forward(m, kv, &b, lg, &err);
}

/* Prefills the prompts, then decodes greedily; logits of every decode step
 * (STEPS_3 * 3 + STEPS_1 rows of V) into out. */
static void run(llama_model *m, const seqstate *init, float *out) {
    int V = llama_get_config(m)->vocab;
    kv_cache kv;
    if (kv_cache_init(&kv, be, llama_get_config(m), PAGE, 64, PS_DT_F32, &err) != PS_OK) {
        TU_CHECK(0, "kv: %s", err.msg);
        return;
    }
    seqstate s[N_SEQ];
    memcpy(s, init, sizeof s);
    float *lg = malloc(sizeof(float) * N_SEQ * (size_t)V);
    int all[N_SEQ] = {0, 1, 2}, zero[1] = {0}, row = 0;
    step_ads = ads;
    for (int i = 0; i < N_SEQ; i++) {
        TU_CHECK(step(m, &kv, s, &all[i], 1, true, lg) == PS_OK, "prefill %d: %s", i, err.msg);
        s[i].ids[s[i].len++] = argmax(lg, V);
    }
    for (int k = 0; k < STEPS_3 + STEPS_1; k++) {
        int n = k < STEPS_3 ? N_SEQ : 1;
        step_ads = k >= STEPS_3 && (k - STEPS_3) / 2 % 2 ? ads_swapped : ads;
        const int *which = k < STEPS_3 ? all : zero;
        if (step(m, &kv, s, which, n, false, lg) != PS_OK) {
            TU_CHECK(0, "decode step %d: %s", k, err.msg);
            break;
        }
        for (int j = 0; j < n; j++) {
            memcpy(out + (size_t)row++ * V, lg + (size_t)j * V, sizeof(float) * (size_t)V);
            seqstate *q = &s[which[j]];
            q->ids[q->len++] = argmax(lg + (size_t)j * V, V);
        }
    }
    free(lg);
    kv_cache_free(&kv);
}

#endif

int main(void) {
    tu_fixtures_or_skip("llama-tiny");
#ifndef PS_HAVE_CUDA
    printf("SKIP: step graphs need the CUDA backend (this build has none)\n");
    return 77;
#else
    be = tu_backend_create();
    if (strcmp(tu_device_name(), "cuda") != 0) {
        printf("SKIP: step graphs need a device backend (PS_TEST_DEVICE=cuda); running on %s\n",
               tu_device_name());
        return 77;
    }
    seqstate init[N_SEQ];
    memset(init, 0, sizeof init);
    json_t *root = tu_load_json("llama-tiny/ref/cases.json");
    for (int i = 0; i < N_SEQ; i++) {
        json_t *p = json_array_get(json_object_get(root, "prompts"), (size_t)i);
        init[i].n_prompt = init[i].len = tu_json_ids(json_object_get(p, "input_ids"), init[i].ids, MAX_LEN - STEPS_3 - STEPS_1 - 1);
    }
    json_decref(root);
    llama_model *m = NULL;
    if (llama_load(tu_path("llama-tiny"), LLAMA_QUANT_NF4, be, &m, &err) != PS_OK) {
        TU_CHECK(0, "load: %s", err.msg);
        return tu_finish("test_llama_graphs");
    }
    int V = llama_get_config(m)->vocab, rows = STEPS_3 * N_SEQ + STEPS_1;
    const llama_config *c = llama_get_config(m);
    adapter_base_shape shape = {c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab};
    adapter *la = NULL, *lb = NULL;
    TU_CHECK(adapter_load_dir(tu_path("llama-tiny/adapters/lora-all"), "lora-all", &shape, NULL, be, &la, &err) == PS_OK &&
                 adapter_load_dir(tu_path("llama-tiny/adapters/lora-qv"), "lora-qv", &shape, NULL, be, &lb, &err) == PS_OK,
             "adapters: %s", err.msg);
    ads[0] = la, ads[1] = lb;
    ads_swapped[0] = lb, ads_swapped[1] = la;
    float *direct = calloc((size_t)rows * V, sizeof(float)), *graphed = calloc((size_t)rows * V, sizeof(float));
    ps_cuda_tuning t;
    ps_cuda_get_tuning(be, &t, &err);
    long long rec_before = 0, launch_before = 0;
    /* pass 0: the base alone; pass 1: LoRA on two of the three sequences;
     * pass 2: the base with the steps of three tokens on the dequantise +
     * cuBLAS path (gemv_max_t 2), so GEMMs are recorded too */
    static const char *pass_name[3] = {"base", "lora", "base, cublas"};
    for (int pass = 0; pass < 3 && la && lb; pass++) {
        use_adapters = pass == 1;
        if (pass == 2) t.linear_path = PS_CUDA_LINEAR_AUTO, t.gemv_max_t = 2;
        long long rec0, launch0, rec, launch;
        ps_cuda_counters cn;
        t.graphs = false;
        TU_CHECK(ps_cuda_set_tuning(be, &t, &err) == PS_OK, "tuning: %s", err.msg);
        run(m, init, direct);
        ps_cuda_get_counters(be, &cn, &err);
        rec0 = cn.graph_records, launch0 = cn.graph_launches;
        TU_CHECK(rec0 == rec_before && launch0 == launch_before, "graphs off, yet %lld recorded, %lld launched",
                 rec0 - rec_before, launch0 - launch_before);
        t.graphs = true;
        TU_CHECK(ps_cuda_set_tuning(be, &t, &err) == PS_OK, "tuning: %s", err.msg);
        run(m, init, graphed);
        ps_cuda_get_counters(be, &cn, &err);
        rec = cn.graph_records, launch = cn.graph_launches;
        rec -= rec0, launch -= launch0;
        /* each key: a direct first run, a recording, then replays */
        printf("%s: graphs %lld recorded, %lld launches over %d decode steps\n", pass_name[pass], rec,
               launch, STEPS_3 + STEPS_1);
        TU_CHECK(rec >= 2 && launch > rec, "%s: graph path not taken: %lld recorded, %lld launched",
                 pass_name[pass], rec, launch);
        int64_t differ = 0, first = -1;
        for (int64_t i = 0; i < (int64_t)rows * V; i++)
            if (memcmp(&direct[i], &graphed[i], sizeof(float)) != 0) {
                differ++;
                if (first < 0) first = i;
            }
        TU_CHECK(differ == 0, "%s: graph replay differs from direct runs in %lld logits (first at step row %lld)",
                 pass_name[pass], (long long)differ, (long long)(first / V));
        rec_before = rec + rec0, launch_before = launch + launch0;
    }
    adapter_free(la);
    adapter_free(lb);
    free(direct);
    free(graphed);
    llama_free(m);
    ps_backend_destroy(be);
    return tu_finish("test_llama_graphs");
#endif
}
