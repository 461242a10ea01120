/* CUDA op_linear vs the CPU oracle (cpu_linear_ref, double accumulation):
 * NF4 weights (with and without double quantisation, quantised by
 * nf4_quantize from random floats) and dense F32 / F16 / BF16 weights, at odd
 * shapes, through each path of the backend: the fused GEMV, the 16-bit
 * cuBLAS GEMM, and the automatic choice. Also misaligned x and NF4 arrays
 * carved from one block at odd offsets (the generic kernels). The NF4 GEMV
 * runs in EVERY fast-kernel configuration (ps_cuda_gemv_count: auto, v1,
 * v2, v4, v5, v6 variants) when the shape takes the fast path (in % 64 == 0; otherwise all
 * configurations run the same generic kernel, checked once; likewise the
 * odd layouts, whose codes are not 16-byte aligned), at every T in
 * 1..8 and the odd shapes below, so one GPU run validates the whole sweep.
 * The split-K configurations (v4) also get K ranges split at 64-element
 * multiples that are not 1024-element ones, and test_nf4_repeat: every
 * configuration called again after another weight must give the same bits
 * (v4's per-row-group counters must be back at 0, its reduction order
 * fixed), and v4 must give a row of x the same bits alone as in a batch.
 * op_linear_n (several weights, one launch with v4 unsplit or v5) must give each weight
 * the bits of its own op_linear call.
 *
 * Tolerances (rel L2; every case prints its measured error):
 *  - GEMV, any weight: 1e-5. f32 accumulation in another order than the
 *    double oracle: ~sqrt(in) * 2^-24 (4e-6 at in = 4096), and the NF4 block
 *    scale multiplies 32-element partial sums (one rounding fewer).
 *  - GEMM with NF4 or BF16 weights: 1.5e-2 against the oracle, because x
 *    and W are rounded to bf16 (2^-9 relative each; expected ~2e-3).
 *    The same result must match, within 5e-5, a host emulation that rounds x
 *    and W to bf16 and accumulates in double: so the only error beyond the
 *    stated bf16 rounding is the f32 accumulation of the tensor cores.
 *  - GEMM with F16 weights: x rounded to f16 (2^-11): 4e-3 vs the oracle,
 *    5e-5 vs the emulation. F32 weights: cublasSgemm in plain fp32: 1e-5.
 *  - GEMV configurations in bf16 (ps_cuda_gemv_bf16: v6, tensor cores): x and
 *    the 16 code values rounded to bf16, block sums scaled in f32: 1.5e-2 vs
 *    the oracle (as the bf16 GEMM) and 5e-5 vs a host emulation of exactly
 *    that rounding (gemv_bf16_emul), which leaves only the f32 accumulation
 *    of the tensor cores. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#include "gpu_util.h"
#include "math/half.h"
#include "math/nf4.h"
#include "nf4_quant.h"

#define TOL_GEMV 1e-5
#define TOL_GEMM_BF16 1.5e-2
#define TOL_GEMM_F16 4e-3
#define TOL_GEMM_F32 1e-5
#define TOL_EMUL 5e-5
#define TOL_GEMV_BF16 TOL_GEMM_BF16

static const char *path_name(int p) {
    return p == PS_CUDA_LINEAR_GEMV ? "gemv" : p == PS_CUDA_LINEAR_GEMM ? "gemm" : "auto";
}

/* y = x W^T in double from float arrays (W dense (out, in) as floats). */
static void host_linear(float *y, const float *x, const float *w, int64_t T, int64_t out, int64_t in) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < out; n++) {
            double s = 0.0;
            for (int64_t k = 0; k < in; k++) s += (double)x[t * in + k] * w[n * in + k];
            y[t * out + n] = (float)s;
        }
}

/* What a bf16 GEMV configuration computes (file comment): y[t][r] = sum over
 * 64-blocks b of scale(r, b) * sum_{k in b} bf16(code value) * bf16(x[t][k]),
 * in double. */
static void gemv_bf16_emul(float *y, const ps_nf4 *w, const float *x, int64_t T) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < w->out; r++) {
            double acc = 0.0;
            for (int64_t b = 0; b < w->in / PS_NF4_BLOCK; b++) {
                double part = 0.0;
                for (int64_t k = b * PS_NF4_BLOCK; k < (b + 1) * PS_NF4_BLOCK; k++) {
                    float v = ps_bf16_to_f32(ps_f32_to_bf16(ps_nf4_code[ps_nf4_code_at(w->packed, r * w->in + k)]));
                    part += (double)v * ps_bf16_to_f32(ps_f32_to_bf16(x[t * w->in + k]));
                }
                acc += part * nf4_block_scale(w, (r * w->in) / PS_NF4_BLOCK + b);
            }
            y[t * w->out + r] = (float)acc;
        }
}

/* Runs the CUDA linear on device weight `gw` for one path and checks it
 * against the oracle `want` and, for the GEMM path, the 16-bit emulation
 * `emul`; a GEMV configuration in bf16 (bf16_gemv) against `emul` too. */
static void run_case_bf16(const char *tag, const ps_weight *gw, const float *x, int64_t T, int64_t out,
                          int64_t in, bool misalign_x, int path, const float *want, const float *emul,
                          double tol_gemm, bool bf16_gemv) {
    gu_set_paths(path, PS_CUDA_ATTN_AUTO);
    size_t off = misalign_x ? 4 : 0; /* 4 bytes: x rows no longer 16-byte aligned */
    gu_buf dx = gu_poisoned(sizeof(float) * T * in + off);
    GU_OK(ps_buf_upload(gu_gpu, (char *)dx.d + off, x, sizeof(float) * T * in, &gu_err), "upload x");
    gu_buf dy = gu_poisoned(sizeof(float) * T * out);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, in, (char *)dx.d + off, PS_DEV_CUDA);
    ps_tensor gy = ps_tensor_2d(PS_DT_F32, T, out, dy.d, PS_DEV_CUDA);
    GU_OK(op_linear(gu_gpu, &gy, &gx, gw, &gu_err), "cuda linear");
    float *got = malloc(sizeof(float) * (size_t)(T * out));
    gu_download(&dy, got);
    gu_guard_check(&dy, "linear y");
    ps_cuda_tuning tune;
    GU_OK(ps_cuda_get_tuning(gu_gpu, &tune, &gu_err), "tuning");
    bool gemm = path == PS_CUDA_LINEAR_GEMM || (path == PS_CUDA_LINEAR_AUTO && T > tune.gemv_max_t);
    char what[192];
    snprintf(what, sizeof what, "%s T=%lld out=%lld in=%lld %s%s", tag, (long long)T, (long long)out,
             (long long)in, path_name(path), misalign_x ? " x+4B" : "");
    gu_check(what, got, want, T * out, gemm ? tol_gemm : bf16_gemv ? TOL_GEMV_BF16 : TOL_GEMV);
    if ((gemm || bf16_gemv) && emul) {
        snprintf(what, sizeof what, "%s T=%lld out=%lld in=%lld %s vs 16-bit emulation", tag,
                 (long long)T, (long long)out, (long long)in, path_name(path));
        gu_check(what, got, emul, T * out, TOL_EMUL);
    }
    gu_free(&dx), gu_free(&dy);
    free(got);
}

static void run_case(const char *tag, const ps_weight *gw, const float *x, int64_t T, int64_t out,
                     int64_t in, bool misalign_x, int path, const float *want, const float *emul,
                     double tol_gemm) {
    run_case_bf16(tag, gw, x, T, out, in, misalign_x, path, want, emul, tol_gemm, false);
}

/* NF4 arrays carved from one device block; `odd` puts each at an offset
 * that breaks 16-byte alignment (the loader may pack weights like that). */
static ps_weight nf4_upload(const nf4_host *q, bool odd, gu_buf *block) {
    int64_t n = q->out * q->in, nb = nf4_n_blocks(n), nb2 = nf4_n_blocks2(n);
    size_t sp = (size_t)(n + 1) / 2, o0 = odd ? 8 : 0;
    size_t o1 = o0 + ((sp + 15) & ~(size_t)15) + (odd ? 1 : 0);
    size_t o2 = (o1 + (size_t)nb + 15) & ~(size_t)15, o3 = o2 + sizeof(float) * (size_t)nb2;
    *block = gu_poisoned(o3 + sizeof(float) * (size_t)nb);
    char *base = block->d;
    GU_OK(ps_buf_upload(gu_gpu, base + o0, q->packed, sp, &gu_err), "upload codes");
    ps_weight w = {PS_WEIGHT_NF4};
    w.nf4.out = q->out, w.nf4.in = q->in, w.nf4.dev = PS_DEV_CUDA, w.nf4.packed = (uint8_t *)(base + o0);
    if (q->absmax_q8) {
        GU_OK(ps_buf_upload(gu_gpu, base + o1, q->absmax_q8, (size_t)nb, &gu_err), "upload q8");
        GU_OK(ps_buf_upload(gu_gpu, base + o2, q->absmax2, sizeof(float) * (size_t)nb2, &gu_err), "upload absmax2");
        w.nf4.absmax_q8 = (uint8_t *)(base + o1), w.nf4.absmax2 = (float *)(base + o2);
        w.nf4.offset = q->offset;
    } else {
        GU_OK(ps_buf_upload(gu_gpu, base + o3, q->absmax, sizeof(float) * (size_t)nb, &gu_err), "upload absmax");
        w.nf4.absmax = (float *)(base + o3);
    }
    return w;
}

static void set_gemv(int k) {
    ps_cuda_tuning tune;
    GU_OK(ps_cuda_get_tuning(gu_gpu, &tune, &gu_err), "tuning");
    tune.gemv_kernel = k;
    GU_OK(ps_cuda_set_tuning(gu_gpu, &tune, &gu_err), "tuning gemv_kernel");
}

/* The GEMV path in every configuration (one when no fast kernel applies);
 * emul_bf16: gemv_bf16_emul's result, for the bf16 configurations. */
static void run_nf4_gemv_all(const char *tag, const ps_weight *gw, const float *x, int64_t T,
                             int64_t out, int64_t in, const float *want, const float *emul_bf16) {
    bool fast = in % PS_NF4_BLOCK == 0 && ((uintptr_t)gw->nf4.packed & 15) == 0;
    int n = fast ? ps_cuda_gemv_count() : 1;
    for (int k = 0; k < n; k++) {
        char t[96];
        snprintf(t, sizeof t, "%s %s", tag, ps_cuda_gemv_name(k));
        set_gemv(k);
        bool bf16 = fast && ps_cuda_gemv_bf16(k);
        run_case_bf16(t, gw, x, T, out, in, false, PS_CUDA_LINEAR_GEMV, want, bf16 ? emul_bf16 : NULL,
                      TOL_GEMM_BF16, bf16);
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
}

static void test_nf4(int64_t T, int64_t out, int64_t in, bool dq, bool odd_layout, uint64_t seed) {
    float *wf = gu_rand(out * in, seed, 0.05f), *x = gu_rand(T * in, seed + 1, 1.0f);
    for (int64_t i = 0; i < out * in; i += 97) wf[i] *= 8.0f; /* outliers: varied block scales */
    nf4_host q = {0};
    GU_OK(nf4_quantize(wf, out, in, dq, &q, &gu_err), "nf4_quantize");
    ps_weight cw = {PS_WEIGHT_NF4};
    cw.nf4 = nf4_host_view(&q);
    float *want = malloc(sizeof(float) * (size_t)(T * out)), *emul = malloc(sizeof(float) * (size_t)(T * out));
    float *emul_v = malloc(sizeof(float) * (size_t)(T * out));
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, in, x, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, T, out, want, PS_DEV_CPU);
    GU_OK(cpu_linear_ref(gu_cpu, &cy, &cx, &cw, &gu_err), "cpu_linear_ref");
    if (in % PS_NF4_BLOCK == 0) gemv_bf16_emul(emul_v, &cw.nf4, x, T);
    /* the GEMM path's exact function: bf16(W') . bf16(x) */
    float *wd = malloc(sizeof(float) * (size_t)(out * in)), *xb = malloc(sizeof(float) * (size_t)(T * in));
    nf4_dequantize(&cw.nf4, wd);
    gu_round_dtype(wd, out * in, PS_DT_BF16);
    memcpy(xb, x, sizeof(float) * (size_t)(T * in));
    gu_round_dtype(xb, T * in, PS_DT_BF16);
    host_linear(emul, xb, wd, T, out, in);

    gu_buf block;
    ps_weight gw = nf4_upload(&q, odd_layout, &block);
    char tag[48];
    snprintf(tag, sizeof tag, "nf4%s%s", dq ? "+dq" : "", odd_layout ? " odd-layout" : "");
    run_case(tag, &gw, x, T, out, in, false, PS_CUDA_LINEAR_AUTO, want, emul, TOL_GEMM_BF16);
    run_case(tag, &gw, x, T, out, in, false, PS_CUDA_LINEAR_GEMM, want, emul, TOL_GEMM_BF16);
    run_nf4_gemv_all(tag, &gw, x, T, out, in, want, emul_v);
    run_case(tag, &gw, x, T, out, in, true, PS_CUDA_LINEAR_GEMV, want, emul, TOL_GEMM_BF16);
    gu_free(&block);
    nf4_host_free(&q);
    free(wf), free(x), free(want), free(emul), free(emul_v), free(wd), free(xb);
}

/* y (T, out) of the GEMV path with the current configuration on device x. */
static void gemv_into(float *got, const ps_weight *gw, const gu_buf *dx, int64_t T, int64_t out, int64_t in) {
    gu_buf dy = gu_poisoned(sizeof(float) * T * out);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, in, dx->d, PS_DEV_CUDA);
    ps_tensor gy = ps_tensor_2d(PS_DT_F32, T, out, dy.d, PS_DEV_CUDA);
    GU_OK(op_linear(gu_gpu, &gy, &gx, gw, &gu_err), "cuda linear");
    gu_download(&dy, got);
    gu_guard_check(&dy, "linear y");
    gu_free(&dy);
}

/* Repeated launches, per configuration: weight A (T = 11: chunks of 8 and
 * 3), weight B (other shape, more row groups), A again. A's two results
 * must be bit-identical and both near the oracle. For v4 and v6 also: row t
 * of x alone (T = 1) gives the bits of row t in the batch (S does not depend on
 * T; the summation order does not depend on which block finishes last). */
static void test_nf4_repeat(void) {
    const int64_t TA = 11, outA = 45, inA = 3136, TB = 5, outB = 203, inB = 2112, t1 = 9;
    float *wa = gu_rand(outA * inA, 8001, 0.05f), *wb = gu_rand(outB * inB, 8002, 0.05f);
    float *xa = gu_rand(TA * inA, 8003, 1.0f), *xb = gu_rand(TB * inB, 8004, 1.0f);
    nf4_host qa = {0}, qb = {0};
    GU_OK(nf4_quantize(wa, outA, inA, true, &qa, &gu_err), "nf4_quantize");
    GU_OK(nf4_quantize(wb, outB, inB, false, &qb, &gu_err), "nf4_quantize");
    ps_weight ca = {PS_WEIGHT_NF4}, cb = {PS_WEIGHT_NF4};
    ca.nf4 = nf4_host_view(&qa), cb.nf4 = nf4_host_view(&qb);
    float *wantA = malloc(sizeof(float) * (size_t)(TA * outA)), *wantB = malloc(sizeof(float) * (size_t)(TB * outB));
    float *y1 = malloc(sizeof(float) * (size_t)(TA * outA)), *y2 = malloc(sizeof(float) * (size_t)(TA * outA));
    float *yb = malloc(sizeof(float) * (size_t)(TB * outB)), *yt = malloc(sizeof(float) * (size_t)outA);
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, TA, inA, xa, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, TA, outA, wantA, PS_DEV_CPU);
    GU_OK(cpu_linear_ref(gu_cpu, &cy, &cx, &ca, &gu_err), "cpu_linear_ref");
    cx = ps_tensor_2d(PS_DT_F32, TB, inB, xb, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, TB, outB, wantB, PS_DEV_CPU);
    GU_OK(cpu_linear_ref(gu_cpu, &cy, &cx, &cb, &gu_err), "cpu_linear_ref");
    gu_buf ba, bb;
    ps_weight ga = nf4_upload(&qa, false, &ba), gb = nf4_upload(&qb, false, &bb);
    gu_buf dxa = gu_upload(xa, sizeof(float) * TA * inA), dxb = gu_upload(xb, sizeof(float) * TB * inB);
    gu_buf dxt = gu_upload(xa + t1 * inA, sizeof(float) * inA);
    gu_set_paths(PS_CUDA_LINEAR_GEMV, PS_CUDA_ATTN_AUTO);
    for (int k = 0; k < ps_cuda_gemv_count(); k++) {
        const char *name = ps_cuda_gemv_name(k);
        char what[128];
        set_gemv(k);
        gemv_into(y1, &ga, &dxa, TA, outA, inA);
        gemv_into(yb, &gb, &dxb, TB, outB, inB);
        gemv_into(y2, &ga, &dxa, TA, outA, inA);
        snprintf(what, sizeof what, "repeat %s A T=%lld out=%lld in=%lld", name, (long long)TA, (long long)outA, (long long)inA);
        double tol = ps_cuda_gemv_bf16(k) ? TOL_GEMV_BF16 : TOL_GEMV;
        gu_check(what, y1, wantA, TA * outA, tol);
        snprintf(what, sizeof what, "repeat %s B T=%lld out=%lld in=%lld", name, (long long)TB, (long long)outB, (long long)inB);
        gu_check(what, yb, wantB, TB * outB, tol);
        snprintf(what, sizeof what, "repeat %s A again: same bits", name);
        gu_check(what, y2, y1, TA * outA, 0);
        if (strncmp(name, "v4", 2) == 0 || strncmp(name, "v6", 2) == 0) {
            gemv_into(yt, &ga, &dxt, 1, outA, inA);
            snprintf(what, sizeof what, "repeat %s A row %lld alone: same bits", name, (long long)t1);
            gu_check(what, yt, y1 + t1 * outA, outA, 0);
        }
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
    gu_free(&dxa), gu_free(&dxb), gu_free(&dxt), gu_free(&ba), gu_free(&bb);
    nf4_host_free(&qa), nf4_host_free(&qb);
    free(wa), free(wb), free(xa), free(xb), free(wantA), free(wantB), free(y1), free(y2), free(yb), free(yt);
}

/* op_linear_n (q, k, v in one launch with v4 unsplit or v5): three NF4 weights of one x
 * (row counts that leave partial row groups, with and without double
 * quantisation), T = 11 (GEMV chunks of 8 and 3) and T = 1 (the default
 * "auto" then runs v4s1r2u4, one launch), in every configuration: each
 * output must carry the bits of its own op_linear call, and with an odd
 * layout (no fast kernel) the separate calls it falls back to. */
static void test_nf4_linear_n(bool odd_layout, int64_t T) {
    const int64_t in = 2112, outs[3] = {45, 7, 203};
    float *x = gu_rand(T * in, 8101, 1.0f), *want[3], *one[3], *all[3];
    nf4_host q[3] = {{0}};
    gu_buf blk[3], dy[3];
    ps_weight gw[3];
    ps_tensor ty[3];
    ps_tensor *ys[3] = {&ty[0], &ty[1], &ty[2]};
    const ps_weight *ws[3] = {&gw[0], &gw[1], &gw[2]};
    gu_buf dx = gu_upload(x, sizeof(float) * T * in);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, in, dx.d, PS_DEV_CUDA);
    for (int i = 0; i < 3; i++) {
        float *wf = gu_rand(outs[i] * in, 8102 + i, 0.05f);
        GU_OK(nf4_quantize(wf, outs[i], in, i != 1, &q[i], &gu_err), "nf4_quantize");
        ps_weight cw = {PS_WEIGHT_NF4};
        cw.nf4 = nf4_host_view(&q[i]);
        want[i] = malloc(sizeof(float) * (size_t)(T * outs[i]));
        one[i] = malloc(sizeof(float) * (size_t)(T * outs[i]));
        all[i] = malloc(sizeof(float) * (size_t)(T * outs[i]));
        ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, in, x, PS_DEV_CPU);
        ps_tensor cy = ps_tensor_2d(PS_DT_F32, T, outs[i], want[i], PS_DEV_CPU);
        GU_OK(cpu_linear_ref(gu_cpu, &cy, &cx, &cw, &gu_err), "cpu_linear_ref");
        gw[i] = nf4_upload(&q[i], odd_layout, &blk[i]);
        free(wf);
    }
    gu_set_paths(PS_CUDA_LINEAR_GEMV, PS_CUDA_ATTN_AUTO);
    for (int k = 0; k < ps_cuda_gemv_count(); k++) {
        const char *name = ps_cuda_gemv_name(k);
        set_gemv(k);
        for (int n = 2; n <= 3; n++) {
            for (int i = 0; i < n; i++) {
                gemv_into(one[i], &gw[i], &dx, T, outs[i], in);
                dy[i] = gu_poisoned(sizeof(float) * T * outs[i]);
                ty[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], dy[i].d, PS_DEV_CUDA);
            }
            GU_OK(op_linear_n(gu_gpu, n, ys, &gx, ws, &gu_err), "cuda linear_n");
            for (int i = 0; i < n; i++) {
                char what[128];
                gu_download(&dy[i], all[i]);
                gu_guard_check(&dy[i], "linear_n y");
                gu_free(&dy[i]);
                snprintf(what, sizeof what, "linear_n%s %s T=%lld n=%d weight %d (out=%lld) vs oracle",
                         odd_layout ? " odd-layout" : "", name, (long long)T, n, i, (long long)outs[i]);
                gu_check(what, all[i], want[i], T * outs[i],
                         !odd_layout && ps_cuda_gemv_bf16(k) ? TOL_GEMV_BF16 : TOL_GEMV);
                snprintf(what, sizeof what, "linear_n%s %s T=%lld n=%d weight %d = op_linear, same bits",
                         odd_layout ? " odd-layout" : "", name, (long long)T, n, i);
                gu_check(what, all[i], one[i], T * outs[i], 0);
            }
        }
        if (odd_layout) break; /* no fast kernel: every configuration runs the same one */
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
    gu_free(&dx);
    for (int i = 0; i < 3; i++) {
        gu_free(&blk[i]);
        nf4_host_free(&q[i]);
        free(want[i]), free(one[i]), free(all[i]);
    }
    free(x);
}

/* A persistent-grid configuration (v6...p1: as many blocks as fit the chip,
 * each looping over tiles; 8 blocks in the emulator) gives the bits of its
 * one-tile-per-block twin: one weight alone, and op_linear_n over three
 * weights (one without double quantisation) whose tiles then share blocks,
 * at T = 11 (two mma column halves) and T = 3. */
static void test_nf4_persistent(void) {
    const int64_t in = 2112, outs[3] = {203, 7, 45}, Ts[2] = {11, 3};
    nf4_host q[3] = {{0}};
    gu_buf blk[3];
    ps_weight gw[3];
    const ps_weight *ws[3] = {&gw[0], &gw[1], &gw[2]};
    for (int i = 0; i < 3; i++) {
        float *wf = gu_rand(outs[i] * in, 8201 + i, 0.05f);
        GU_OK(nf4_quantize(wf, outs[i], in, i != 1, &q[i], &gu_err), "nf4_quantize");
        gw[i] = nf4_upload(&q[i], false, &blk[i]);
        free(wf);
    }
    gu_set_paths(PS_CUDA_LINEAR_GEMV, PS_CUDA_ATTN_AUTO);
    for (int k = 0; k < ps_cuda_gemv_count(); k++) {
        const char *name = ps_cuda_gemv_name(k);
        size_t len = strlen(name);
        if (strncmp(name, "v6", 2) != 0 || strcmp(name + len - 2, "p1") != 0) continue;
        char twin[32];
        snprintf(twin, sizeof twin, "%.*s", (int)(len - 2), name);
        int kt = ps_cuda_gemv_find(twin);
        TU_CHECK(kt >= 0, "persistent %s: its twin %s is a configuration", name, twin);
        if (kt < 0) continue;
        for (int ti = 0; ti < 2; ti++) {
            int64_t T = Ts[ti], total = T * outs[0]; /* [w0 alone | w0 | w1 | w2 of linear_n] */
            for (int i = 0; i < 3; i++) total += T * outs[i];
            float *x = gu_rand(T * in, 8210 + T, 1.0f);
            gu_buf dx = gu_upload(x, sizeof(float) * T * in);
            ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, in, dx.d, PS_DEV_CUDA);
            float *got[2] = {malloc(sizeof(float) * (size_t)total), malloc(sizeof(float) * (size_t)total)};
            for (int v = 0; v < 2; v++) { /* v = 0: the twin, 1: persistent */
                set_gemv(v ? k : kt);
                gemv_into(got[v], &gw[0], &dx, T, outs[0], in);
                gu_buf dy[3];
                ps_tensor ty[3];
                ps_tensor *ys[3] = {&ty[0], &ty[1], &ty[2]};
                for (int i = 0; i < 3; i++) {
                    dy[i] = gu_poisoned(sizeof(float) * T * outs[i]);
                    ty[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], dy[i].d, PS_DEV_CUDA);
                }
                GU_OK(op_linear_n(gu_gpu, 3, ys, &gx, ws, &gu_err), "cuda linear_n");
                float *at = got[v] + T * outs[0];
                for (int i = 0; i < 3; i++) {
                    gu_download(&dy[i], at);
                    gu_guard_check(&dy[i], "persistent linear_n y");
                    gu_free(&dy[i]);
                    at += T * outs[i];
                }
            }
            char what[128];
            snprintf(what, sizeof what, "persistent %s = %s, T=%lld, alone and linear_n: same bits", name, twin,
                     (long long)T);
            gu_check(what, got[1], got[0], total, 0);
            gu_free(&dx);
            free(x), free(got[0]), free(got[1]);
        }
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
    for (int i = 0; i < 3; i++) gu_free(&blk[i]), nf4_host_free(&q[i]);
}

/* Whether v6 (8 warps) runs the add + RMSNorm inside its launch for T rows
 * of in: x staged in at most 40 KB as bf16 rows of 2 in + 16 bytes, and in
 * within norm.cu's register path (nf4_gemv_common.cuh). */
static bool fused_norm_fits(int64_t T, int64_t in) {
    return T <= 8 && T * (2 * in + 16) <= 40 * 1024 && in <= 8192;
}

/* Device buffer got (n floats) bit-identical to want, its guard intact. */
static void same_bits(const char *what, const char *part, const gu_buf *got, const gu_buf *want, int64_t n) {
    float *g = malloc(sizeof(float) * (size_t)n), *w = malloc(sizeof(float) * (size_t)n);
    char line[224];
    gu_download(got, g), gu_download(want, w);
    snprintf(line, sizeof line, "%s: %s", what, part);
    gu_check(line, g, w, n, 0);
    gu_guard_check(got, line);
    free(g), free(w);
}

/* After a fused norm op: x (dx) still the host x, x_out (dxo) and h (dh2)
 * equal what add_rmsnorm left in its copy of x (dxs) and its output (dh1). */
static void check_norm_outputs(const char *what, const gu_buf *dx, const float *x, const gu_buf *dxs,
                               const gu_buf *dxo, const gu_buf *dh1, const gu_buf *dh2, int64_t n) {
    float *got = malloc(sizeof(float) * (size_t)n);
    char line[224];
    gu_download(dx, got);
    snprintf(line, sizeof line, "%s: x untouched", what);
    gu_check(line, got, x, n, 0);
    free(got);
    same_bits(what, "x_out = add_rmsnorm's x", dxo, dxs, n);
    same_bits(what, "h = add_rmsnorm's", dh2, dh1, n);
}

/* op_add_rmsnorm_linear_n on the device, in every configuration: h, x_out
 * and each projection carry the bits of the separate device ops
 * (add_rmsnorm on a copy of x, then linear_n), and x is left as it was. The
 * fused v6 launch (8 warps, x staged, in <= 8192, one double-quantisation
 * kind) must be counted exactly where it applies, so the comparison covers
 * the fused norm and not only the fallback. T rows of in; n weights, the
 * third one not double-quantised when mixed; a norm weight of dtype wdt. */
static void test_norm_linear_n(int64_t T, int64_t in, int n, bool mixed, ps_dtype wdt) {
    const int64_t outs[3] = {45, 7, 203};
    const float eps = 1e-6f;
    float *x = gu_rand(T * in, 8201 + in, 2.0f), *y = gu_rand(T * in, 8202, 1.0f), *w = gu_rand(in, 8203, 1.5f);
    void *wh = gu_to_dtype(w, in, wdt);
    nf4_host q[3] = {{0}};
    gu_buf blk[3];
    ps_weight gw[3];
    const ps_weight *ws[3] = {&gw[0], &gw[1], &gw[2]};
    for (int i = 0; i < n; i++) {
        float *wf = gu_rand(outs[i] * in, 8204 + i, 0.05f);
        GU_OK(nf4_quantize(wf, outs[i], in, !(mixed && i == 2), &q[i], &gu_err), "nf4_quantize");
        gw[i] = nf4_upload(&q[i], false, &blk[i]);
        free(wf);
    }
    const size_t xb = sizeof(float) * (size_t)(T * in);
    gu_buf dx = gu_upload(x, xb), dy = gu_upload(y, xb), dw = gu_upload(wh, ps_dtype_size(wdt) * (size_t)in);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, in, dx.d, PS_DEV_CUDA), ty = ps_tensor_2d(PS_DT_F32, T, in, dy.d, PS_DEV_CUDA);
    ps_tensor tw = ps_tensor_1d(wdt, in, dw.d, PS_DEV_CUDA);
    bool fits = fused_norm_fits(T, in) && !mixed;
    gu_set_paths(PS_CUDA_LINEAR_GEMV, PS_CUDA_ATTN_AUTO);
    for (int k = 0; k < ps_cuda_gemv_count(); k++) {
        const char *name = ps_cuda_gemv_name(k);
        char what[160];
        set_gemv(k);
        /* the separate ops, the sum in place on a copy of x */
        gu_buf dxs = gu_upload(x, xb), dh1 = gu_poisoned(xb), dxo = gu_poisoned(xb), dh2 = gu_poisoned(xb);
        gu_buf dy1[3], dy2[3];
        ps_tensor txs = ps_tensor_2d(PS_DT_F32, T, in, dxs.d, PS_DEV_CUDA), th1 = ps_tensor_2d(PS_DT_F32, T, in, dh1.d, PS_DEV_CUDA);
        ps_tensor txo = ps_tensor_2d(PS_DT_F32, T, in, dxo.d, PS_DEV_CUDA), th2 = ps_tensor_2d(PS_DT_F32, T, in, dh2.d, PS_DEV_CUDA);
        ps_tensor ty1[3], ty2[3], *ys1[3], *ys2[3];
        for (int i = 0; i < n; i++) {
            dy1[i] = gu_poisoned(sizeof(float) * (size_t)(T * outs[i]));
            dy2[i] = gu_poisoned(sizeof(float) * (size_t)(T * outs[i]));
            ty1[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], dy1[i].d, PS_DEV_CUDA), ys1[i] = &ty1[i];
            ty2[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], dy2[i].d, PS_DEV_CUDA), ys2[i] = &ty2[i];
        }
        GU_OK(op_add_rmsnorm(gu_gpu, &th1, &txs, &ty, &tw, eps, &gu_err), "cuda add_rmsnorm");
        GU_OK(op_linear_n(gu_gpu, n, ys1, &th1, ws, &gu_err), "cuda linear_n");
        ps_cuda_counters c0, c1;
        GU_OK(ps_cuda_get_counters(gu_gpu, &c0, &gu_err), "counters");
        GU_OK(op_add_rmsnorm_linear_n(gu_gpu, &th2, &txo, &tx, &ty, &tw, eps, n, ys2, ws, &gu_err),
              "cuda add_rmsnorm_linear_n");
        GU_OK(ps_cuda_get_counters(gu_gpu, &c1, &gu_err), "counters");
        long long fused = c1.fused_norm - c0.fused_norm;
        bool want_fused = fits && strncmp(name, "v6w8", 4) == 0;
        snprintf(what, sizeof what, "norm_linear_n %s T=%lld in=%lld n=%d%s w=%s", name, (long long)T,
                 (long long)in, n, mixed ? " mixed dq" : "", ps_dtype_name(wdt));
        TU_CHECK(fused == (want_fused ? 1 : 0), "%s: %lld fused launches, expected %d", what, fused,
                 want_fused ? 1 : 0);
        check_norm_outputs(what, &dx, x, &dxs, &dxo, &dh1, &dh2, T * in);
        for (int i = 0; i < n; i++) {
            char part[48];
            snprintf(part, sizeof part, "projection %d = linear_n's", i);
            same_bits(what, part, &dy2[i], &dy1[i], T * outs[i]);
            gu_free(&dy1[i]), gu_free(&dy2[i]);
        }
        gu_free(&dxs), gu_free(&dh1), gu_free(&dxo), gu_free(&dh2);
    }
    if (fits) { /* switched off: the same call, the norm kernel first */
        ps_cuda_tuning tune;
        GU_OK(ps_cuda_get_tuning(gu_gpu, &tune, &gu_err), "tuning");
        tune.gemv_kernel = ps_cuda_gemv_find("v6w8r1u4"), tune.fuse = false;
        GU_OK(ps_cuda_set_tuning(gu_gpu, &tune, &gu_err), "tuning fuse");
        gu_buf dxo = gu_poisoned(xb), dh = gu_poisoned(xb), dys[3];
        ps_tensor txo = ps_tensor_2d(PS_DT_F32, T, in, dxo.d, PS_DEV_CUDA), th = ps_tensor_2d(PS_DT_F32, T, in, dh.d, PS_DEV_CUDA);
        ps_tensor tys[3], *ys[3];
        for (int i = 0; i < n; i++) {
            dys[i] = gu_poisoned(sizeof(float) * (size_t)(T * outs[i]));
            tys[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], dys[i].d, PS_DEV_CUDA), ys[i] = &tys[i];
        }
        ps_cuda_counters c0, c1;
        GU_OK(ps_cuda_get_counters(gu_gpu, &c0, &gu_err), "counters");
        GU_OK(op_add_rmsnorm_linear_n(gu_gpu, &th, &txo, &tx, &ty, &tw, eps, n, ys, ws, &gu_err), "unfused");
        GU_OK(ps_cuda_get_counters(gu_gpu, &c1, &gu_err), "counters");
        TU_CHECK(c1.fused_norm == c0.fused_norm, "norm_linear_n with fuse off: %lld fused launches",
                 c1.fused_norm - c0.fused_norm);
        tune.fuse = true;
        GU_OK(ps_cuda_set_tuning(gu_gpu, &tune, &gu_err), "tuning fuse");
        for (int i = 0; i < n; i++) gu_free(&dys[i]);
        gu_free(&dxo), gu_free(&dh);
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
    for (int i = 0; i < n; i++) gu_free(&blk[i]), nf4_host_free(&q[i]);
    gu_free(&dx), gu_free(&dy), gu_free(&dw);
    free(x), free(y), free(w), free(wh);
}

/* op_add_rmsnorm_swiglu on the device, in every configuration: h, x_out and
 * a = silu(gate) * up carry the bits of the separate device ops
 * (add_rmsnorm on a copy of x, linear_n into g and u, silu_mul). With a v6
 * of 8 warps and T <= 8 the gate/up pair and the silu run as one launch
 * (counted; the norm inside it too when x fits the staging, else before
 * it); anything else runs the separate kernels. F gate/up rows (odd: a
 * partial tile) of in, a norm weight of dtype wdt. */
static void test_swiglu(int64_t T, int64_t in, int64_t F, ps_dtype wdt) {
    const float eps = 1e-6f;
    float *x = gu_rand(T * in, 8301 + in, 2.0f), *y = gu_rand(T * in, 8302, 1.0f), *w = gu_rand(in, 8303, 1.5f);
    void *wh = gu_to_dtype(w, in, wdt);
    nf4_host q[2] = {{0}};
    gu_buf blk[2];
    ps_weight gw[2];
    for (int i = 0; i < 2; i++) {
        float *wf = gu_rand(F * in, 8304 + i, 0.05f);
        GU_OK(nf4_quantize(wf, F, in, true, &q[i], &gu_err), "nf4_quantize");
        gw[i] = nf4_upload(&q[i], false, &blk[i]);
        free(wf);
    }
    const ps_weight *ws[2] = {&gw[0], &gw[1]};
    const size_t xb = sizeof(float) * (size_t)(T * in), fb = sizeof(float) * (size_t)(T * F);
    gu_buf dx = gu_upload(x, xb), dy = gu_upload(y, xb), dw = gu_upload(wh, ps_dtype_size(wdt) * (size_t)in);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, in, dx.d, PS_DEV_CUDA), ty = ps_tensor_2d(PS_DT_F32, T, in, dy.d, PS_DEV_CUDA);
    ps_tensor tw = ps_tensor_1d(wdt, in, dw.d, PS_DEV_CUDA);
    bool norm_fits = fused_norm_fits(T, in);
    gu_set_paths(PS_CUDA_LINEAR_GEMV, PS_CUDA_ATTN_AUTO);
    for (int k = 0; k < ps_cuda_gemv_count(); k++) {
        const char *name = ps_cuda_gemv_name(k);
        char what[160];
        set_gemv(k);
        gu_buf dxs = gu_upload(x, xb), dh1 = gu_poisoned(xb), dxo = gu_poisoned(xb), dh2 = gu_poisoned(xb);
        gu_buf dg1 = gu_poisoned(fb), du1 = gu_poisoned(fb), da1 = gu_poisoned(fb);
        gu_buf dg2 = gu_poisoned(fb), du2 = gu_poisoned(fb), da2 = gu_poisoned(fb);
        ps_tensor txs = ps_tensor_2d(PS_DT_F32, T, in, dxs.d, PS_DEV_CUDA), th1 = ps_tensor_2d(PS_DT_F32, T, in, dh1.d, PS_DEV_CUDA);
        ps_tensor txo = ps_tensor_2d(PS_DT_F32, T, in, dxo.d, PS_DEV_CUDA), th2 = ps_tensor_2d(PS_DT_F32, T, in, dh2.d, PS_DEV_CUDA);
        ps_tensor tg1 = ps_tensor_2d(PS_DT_F32, T, F, dg1.d, PS_DEV_CUDA), tu1 = ps_tensor_2d(PS_DT_F32, T, F, du1.d, PS_DEV_CUDA);
        ps_tensor ta1 = ps_tensor_2d(PS_DT_F32, T, F, da1.d, PS_DEV_CUDA), tg2 = ps_tensor_2d(PS_DT_F32, T, F, dg2.d, PS_DEV_CUDA);
        ps_tensor tu2 = ps_tensor_2d(PS_DT_F32, T, F, du2.d, PS_DEV_CUDA), ta2 = ps_tensor_2d(PS_DT_F32, T, F, da2.d, PS_DEV_CUDA);
        ps_tensor *gu1[2] = {&tg1, &tu1};
        GU_OK(op_add_rmsnorm(gu_gpu, &th1, &txs, &ty, &tw, eps, &gu_err), "cuda add_rmsnorm");
        GU_OK(op_linear_n(gu_gpu, 2, gu1, &th1, ws, &gu_err), "cuda linear_n");
        GU_OK(op_silu_mul(gu_gpu, &ta1, &tg1, &tu1, &gu_err), "cuda silu_mul");
        ps_cuda_counters c0, c1;
        GU_OK(ps_cuda_get_counters(gu_gpu, &c0, &gu_err), "counters");
        GU_OK(op_add_rmsnorm_swiglu(gu_gpu, &th2, &txo, &tx, &ty, &tw, eps, &gw[0], &gw[1], &tg2, &tu2, &ta2, &gu_err),
              "cuda add_rmsnorm_swiglu");
        GU_OK(ps_cuda_get_counters(gu_gpu, &c1, &gu_err), "counters");
        long long n = c1.fused_norm - c0.fused_norm, g = c1.fused_glu - c0.fused_glu;
        bool v6w8 = strncmp(name, "v6w8", 4) == 0 && T <= 8;
        snprintf(what, sizeof what, "swiglu %s T=%lld in=%lld F=%lld w=%s", name, (long long)T, (long long)in,
                 (long long)F, ps_dtype_name(wdt));
        TU_CHECK(g == (v6w8 ? 1 : 0) && n == (v6w8 && norm_fits ? 1 : 0),
                 "%s: %lld fused gate/up and %lld fused norm launches, expected %d and %d", what, g, n, v6w8 ? 1 : 0,
                 v6w8 && norm_fits ? 1 : 0);
        check_norm_outputs(what, &dx, x, &dxs, &dxo, &dh1, &dh2, T * in);
        same_bits(what, "a = silu_mul(linear_n)'s", &da2, &da1, T * F);
        gu_free(&dxs), gu_free(&dh1), gu_free(&dxo), gu_free(&dh2), gu_free(&dg1), gu_free(&du1), gu_free(&da1);
        gu_free(&dg2), gu_free(&du2), gu_free(&da2);
    }
    set_gemv(PS_CUDA_GEMV_DEFAULT);
    for (int i = 0; i < 2; i++) gu_free(&blk[i]), nf4_host_free(&q[i]);
    gu_free(&dx), gu_free(&dy), gu_free(&dw);
    free(x), free(y), free(w), free(wh);
}

static void test_dense(int64_t T, int64_t out, int64_t in, ps_dtype dt, uint64_t seed) {
    float *wf = gu_rand(out * in, seed, 0.1f), *x = gu_rand(T * in, seed + 1, 1.0f);
    void *wh = gu_to_dtype(wf, out * in, dt);
    gu_round_dtype(wf, out * in, dt); /* the weight values as stored */
    ps_weight cw = {PS_WEIGHT_DENSE};
    cw.dense = ps_tensor_2d(dt, out, in, wh, PS_DEV_CPU);
    float *want = malloc(sizeof(float) * (size_t)(T * out)), *emul = malloc(sizeof(float) * (size_t)(T * out));
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, in, x, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, T, out, want, PS_DEV_CPU);
    GU_OK(cpu_linear_ref(gu_cpu, &cy, &cx, &cw, &gu_err), "cpu_linear_ref");
    float *xr = malloc(sizeof(float) * (size_t)(T * in));
    memcpy(xr, x, sizeof(float) * (size_t)(T * in));
    gu_round_dtype(xr, T * in, dt); /* cuBLAS path: x in the weight's 16-bit type */
    host_linear(emul, xr, wf, T, out, in);

    gu_buf dw = gu_upload(wh, ps_dtype_size(dt) * out * in);
    ps_weight gw = {PS_WEIGHT_DENSE};
    gw.dense = ps_tensor_2d(dt, out, in, dw.d, PS_DEV_CUDA);
    double tol = dt == PS_DT_F32 ? TOL_GEMM_F32 : dt == PS_DT_F16 ? TOL_GEMM_F16 : TOL_GEMM_BF16;
    char tag[48];
    snprintf(tag, sizeof tag, "dense %s", ps_dtype_name(dt));
    for (int path = PS_CUDA_LINEAR_AUTO; path <= PS_CUDA_LINEAR_GEMM; path++)
        run_case(tag, &gw, x, T, out, in, false, path, want, dt == PS_DT_F32 ? NULL : emul, tol);
    run_case(tag, &gw, x, T, out, in, true, PS_CUDA_LINEAR_GEMV, want, NULL, tol);
    gu_free(&dw);
    free(wf), free(x), free(wh), free(want), free(emul), free(xr);
}

int main(void) {
    gu_init();
    /* (T, out, in): single rows and columns, odd sizes, in % 64 != 0 (generic
     * kernels), T above 8 (GEMV chunks) and above 32 (AUTO -> GEMM) */
    static const int64_t shapes[][3] = {
        {1, 1, 64},    {1, 3, 128},   {1, 17, 4096}, {1, 4097, 64}, {2, 127, 4097},
        {3, 33, 17},   {5, 256, 1024}, {8, 129, 4096}, {9, 100, 640}, {17, 127, 448},
        {33, 65, 4096}, {127, 3, 64},  {1, 1, 1},
        /* GEMV v2 edges: K not a multiple of its 1024-element x tile, rows
         * not a multiple of its 16 rows per block, every T up to 8 */
        {4, 65, 1088}, {6, 31, 2112}, {7, 16, 192},
        /* split-K (v4) edges: 49 NF4 blocks per row, so S = 2, 3, 4, 8 split
         * at 64-element multiples inside 1024-element tiles */
        {2, 45, 3136}, {8, 19, 3136},
    };
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < n; i++) {
        int64_t T = shapes[i][0], out = shapes[i][1], in = shapes[i][2];
        test_nf4(T, out, in, true, false, 1000 + i);
        test_nf4(T, out, in, i % 2 == 0, true, 2000 + i);
        test_dense(T, out, in, PS_DT_F32, 3000 + i);
        test_dense(T, out, in, PS_DT_F16, 4000 + i);
        test_dense(T, out, in, PS_DT_BF16, 5000 + i);
    }
    /* every T of one GEMV launch, K with a partial 1024-element x tile and
     * an odd chunk count per lane loop, rows not a multiple of any block */
    for (int64_t T = 1; T <= 8; T++) test_nf4(T, 37, 1088, T % 2 == 1, T % 3 == 0, 6000 + T);
    /* LLaMA-7B layer shapes at decode batch sizes (the benchmark's GEMV) */
    test_nf4(1, 11008, 4096, true, false, 7001);
    test_nf4(4, 4096, 11008, true, false, 7002);
    /* in > 131072: the automatic v4 split cannot fit its x slice in 64
     * splits and falls back to v2; fixed-S v4 raises S to 22 */
    test_nf4(2, 3, 131136, true, false, 7003);
    test_nf4_repeat();
    test_nf4_linear_n(false, 11);
    test_nf4_linear_n(false, 1);
    test_nf4_linear_n(true, 11);
    test_nf4_persistent();
    /* the fused norm: T = 1 and 4 rows of 4096 (x staged), 8 rows of 1088,
     * 2 rows of 8192 (the norm's 8 chunks per thread exactly); not fused: 5
     * rows of 4096 (x too large to stage), a mixed set */
    test_norm_linear_n(1, 4096, 3, false, PS_DT_F32);
    test_norm_linear_n(4, 4096, 2, false, PS_DT_BF16);
    test_norm_linear_n(8, 1088, 3, false, PS_DT_F16);
    test_norm_linear_n(2, 8192, 1, false, PS_DT_F32);
    test_norm_linear_n(5, 4096, 2, false, PS_DT_F16);
    test_norm_linear_n(3, 1088, 3, true, PS_DT_F32);
    /* gate/up + silu: with the norm inside (T = 1, 4 of 4096), the norm
     * before it (T = 6 of 4096: x too large to stage), odd F (partial tiles) */
    test_swiglu(1, 4096, 203, PS_DT_F32);
    test_swiglu(4, 4096, 45, PS_DT_BF16);
    test_swiglu(6, 4096, 37, PS_DT_F16);
    test_swiglu(3, 1088, 1, PS_DT_F32);
    return gu_finish("cuda linear");
}
