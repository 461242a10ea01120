/* Element-wise CUDA ops: embed, add_bias, silu_mul, activate, add,
 * gather_rows, kv_store. Grid-stride loops over elements; the math is the
 * shared kernels/math/act.h and half.h, as in kernels/cpu/ops_basic.c and
 * ops_attention.c (kv_store), which these mirror. kv_store writes F32, F16 or
 * BF16 caches: f32 values rounded with half.h's ps_f32_to_f16 / _bf16.
 * Row ops (embed, kv_store) and the hot element-wise ones (silu_mul, add)
 * have a vector path for rows / lengths divisible by 4 with aligned
 * pointers: 16-byte loads and stores and, for rows, a 2-D grid (columns,
 * tokens) so no thread divides by the row length; same arithmetic per element,
 * so the results equal the scalar path bit for bit.
 * Index checks happen on the device: a bad id / row / slot is skipped (never
 * read or written out of bounds) and reported through the device flag. */
#include "cuda_common.cuh"
#include "math/act.h"

/* ---- embed: out (T, C) = table[ids[t]] ---- */

template <int DT>
__global__ void embed_kernel(float *out, const void *table, const int32_t *ids, int64_t T,
                             int64_t C, int64_t V, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int64_t n = T * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / C, c = i % C;
        int32_t id = ids[t];
        if (id < 0 || id >= V) {
            if (c == 0) cuda_raise(flag, CUDA_FLAG_EMBED_ID, id, (int)V, (int)t);
            out[i] = 0.0f;
            continue;
        }
        out[i] = cuda_ld<DT>(table, (int64_t)id * C + c);
    }
}

/* Grid over columns (float4) and rows; C4 = C / 4, table aligned (cuda_ld4_ok). */
static dim3 ew_row_grid(const cuda_impl *p, int64_t C4, int64_t T) {
    unsigned gx = cuda_ew_blocks(p, C4);
    int64_t gy = (int64_t)p->sm_count * 32 / gx; /* about as many blocks as cuda_ew_blocks allows */
    if (gy > T) gy = T;
    if (gy > 65535) gy = 65535;
    if (gy < 1) gy = 1;
    return dim3(gx, (unsigned)gy);
}

template <int DT>
__global__ void embed4_kernel(float4 *out, const void *table, const int32_t *ids, int64_t T, int64_t C4,
                              int64_t V, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        int32_t id = ids[t];
        bool bad = id < 0 || id >= V;
        if (bad && blockIdx.x == 0 && threadIdx.x == 0) cuda_raise(flag, CUDA_FLAG_EMBED_ID, id, (int)V, (int)t);
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C4; c += (int64_t)gridDim.x * blockDim.x)
            out[t * C4 + c] = bad ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : cuda_ld4<DT>(table, (int64_t)id * C4 + c);
    }
}

template <int DT>
static void embed_launch(cuda_impl *p, float *o, const void *table, const int32_t *id, int64_t T, int64_t C,
                         int64_t V) {
    if (C % 4 == 0 && cuda_aligned(o, 16) && cuda_ld4_ok(table, (ps_dtype)DT))
        cuda_launch(p, embed4_kernel<DT>, ew_row_grid(p, C / 4, T), CUDA_EW_THREADS, 0, (float4 *)o, table, id,
                    T, C / 4, V, p->d_flag);
    else
        cuda_launch(p, embed_kernel<DT>, cuda_ew_blocks(p, T * C), CUDA_EW_THREADS, 0, o, table, id, T, C, V,
                    p->d_flag);
}

ps_status cuda_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                     ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t T = ps_tensor_numel(ids), C = table->shape[1], V = table->shape[0];
    if (T * C == 0) return PS_OK;
    float *o = (float *)out->data;
    const int32_t *id = (const int32_t *)ids->data;
    switch (table->dtype) {
    case PS_DT_F32: embed_launch<PS_DT_F32>(p, o, table->data, id, T, C, V); break;
    case PS_DT_F16: embed_launch<PS_DT_F16>(p, o, table->data, id, T, C, V); break;
    default: embed_launch<PS_DT_BF16>(p, o, table->data, id, T, C, V); break;
    }
    return cuda_op_done(p, "embed", err);
}

/* ---- add_bias: y (R, N) += bias (N) ---- */

template <int DT>
__global__ void add_bias_kernel(float *y, const void *bias, int64_t n, int64_t N) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += cuda_ld<DT>(bias, i % N);
}

ps_status cuda_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t n = ps_tensor_numel(y), N = cuda_last_dim(y);
    if (n == 0) return PS_OK;
    unsigned g = cuda_ew_blocks(p, n);
    float *o = (float *)y->data;
    switch (bias->dtype) {
    case PS_DT_F32: cuda_launch(p, add_bias_kernel<PS_DT_F32>, g, CUDA_EW_THREADS, 0, o, bias->data, n, N); break;
    case PS_DT_F16: cuda_launch(p, add_bias_kernel<PS_DT_F16>, g, CUDA_EW_THREADS, 0, o, bias->data, n, N); break;
    default: cuda_launch(p, add_bias_kernel<PS_DT_BF16>, g, CUDA_EW_THREADS, 0, o, bias->data, n, N); break;
    }
    return cuda_op_done(p, "add_bias", err);
}

/* ---- silu_mul, activate, add ---- */

__global__ void silu_mul_kernel(float *out, const float *gate, const float *up, int64_t n) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = ps_silu(gate[i]) * up[i];
}

__global__ void silu_mul4_kernel(float4 *out, const float4 *gate, const float4 *up, int64_t n4) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 g = gate[i], u = up[i];
        out[i] = make_float4(ps_silu(g.x) * u.x, ps_silu(g.y) * u.y, ps_silu(g.z) * u.z, ps_silu(g.w) * u.w);
    }
}

/* n divisible by 4 and every pointer 16-byte aligned: the float4 kernels apply */
static bool ew_vec_ok(int64_t n, const void *a, const void *b, const void *c) {
    return n % 4 == 0 && cuda_aligned(a, 16) && cuda_aligned(b, 16) && cuda_aligned(c, 16);
}

ps_status cuda_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                        ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t n = ps_tensor_numel(out);
    if (n == 0) return PS_OK;
    if (ew_vec_ok(n, out->data, gate->data, up->data))
        cuda_launch(p, silu_mul4_kernel, cuda_ew_blocks(p, n / 4), CUDA_EW_THREADS, 0, (float4 *)out->data,
                    (const float4 *)gate->data, (const float4 *)up->data, n / 4);
    else
        cuda_launch(p, silu_mul_kernel, cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, (float *)out->data,
                    (const float *)gate->data, (const float *)up->data, n);
    return cuda_op_done(p, "silu_mul", err);
}

__global__ void activate_kernel(float *x, int64_t n, int act) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = x[i];
        switch (act) {
        case PS_ACT_SILU: v = ps_silu(v); break;
        case PS_ACT_GELU: v = ps_gelu(v); break;
        case PS_ACT_QUICK_GELU: v = ps_quick_gelu(v); break;
        default: v = ps_relu(v); break;
        }
        x[i] = v;
    }
}

ps_status cuda_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t n = ps_tensor_numel(x);
    if (n == 0) return PS_OK;
    cuda_launch(p, activate_kernel, cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, (float *)x->data, n, act);
    return cuda_op_done(p, "activate", err);
}

__global__ void add_kernel(float *x, const float *y, int64_t n) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

__global__ void add4_kernel(float4 *x, const float4 *y, int64_t n4) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 a = x[i], b = y[i];
        x[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    }
}

ps_status cuda_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t n = ps_tensor_numel(x);
    if (n == 0) return PS_OK;
    if (ew_vec_ok(n, x->data, y->data, x->data))
        cuda_launch(p, add4_kernel, cuda_ew_blocks(p, n / 4), CUDA_EW_THREADS, 0, (float4 *)x->data,
                    (const float4 *)y->data, n / 4);
    else
        cuda_launch(p, add_kernel, cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, (float *)x->data,
                    (const float *)y->data, n);
    return cuda_op_done(p, "add", err);
}

/* ---- gather_rows: out (R, C) = x[rows[r]] ---- */

__global__ void gather_rows_kernel(float *out, const float *x, const int32_t *rows, int64_t R,
                                   int64_t C, int64_t T, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int64_t n = R * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, c = i % C;
        int32_t src = rows[r];
        if (src < 0 || src >= T) {
            if (c == 0) cuda_raise(flag, CUDA_FLAG_GATHER_ROW, src, (int)T, (int)r);
            out[i] = 0.0f;
            continue;
        }
        out[i] = x[(int64_t)src * C + c];
    }
}

ps_status cuda_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                           const ps_tensor *rows, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t C = cuda_last_dim(x), T = cuda_rows(x), R = ps_tensor_numel(rows);
    if (R * C == 0) return PS_OK;
    cuda_launch(p, gather_rows_kernel, cuda_ew_blocks(p, R * C), CUDA_EW_THREADS, 0, (float *)out->data,
                (const float *)x->data, (const int32_t *)rows->data, R, C, T, p->d_flag);
    return cuda_op_done(p, "gather_rows", err);
}

/* ---- kv_store: k, v (T, n_kv, D) f32 -> cache slots (T), cache dtype DT ---- */

template <int DT>
__global__ void kv_store_kernel(void *kc, void *vc, const float *k, const float *v, const int32_t *slots,
                                int64_t T, int64_t row, int64_t n_slots, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int64_t n = T * row;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / row, e = i % row;
        int32_t s = slots[t];
        if (s < 0 || s >= n_slots) {
            if (e == 0) cuda_raise(flag, CUDA_FLAG_KV_SLOT, s, (int)n_slots, (int)t);
            continue;
        }
        cuda_st<DT>(kc, (int64_t)s * row + e, k[i]);
        cuda_st<DT>(vc, (int64_t)s * row + e, v[i]);
    }
}

/* row4 = row / 4 groups of 4 per token (16-byte loads, 16- or 8-byte
 * stores); grid (columns, tokens) */
template <int DT>
__global__ void kv_store4_kernel(void *kc, void *vc, const float4 *k, const float4 *v, const int32_t *slots,
                                 int64_t T, int64_t row4, int64_t n_slots, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        int32_t s = slots[t];
        if (s < 0 || s >= n_slots) {
            if (blockIdx.x == 0 && threadIdx.x == 0) cuda_raise(flag, CUDA_FLAG_KV_SLOT, s, (int)n_slots, (int)t);
            continue;
        }
        for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < row4;
             e += (int64_t)gridDim.x * blockDim.x) {
            float4 a = k[t * row4 + e], b = v[t * row4 + e];
            cuda_st4<DT>(kc, (int64_t)s * row4 + e, a);
            cuda_st4<DT>(vc, (int64_t)s * row4 + e, b);
        }
    }
}

template <int DT>
static void kv_store_launch(cuda_impl *p, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                            const ps_tensor *slots, int64_t T, int64_t row, int64_t n_slots) {
    if (row % 4 == 0 && cuda_ld4_ok(kv->k.data, kv->k.dtype) && cuda_ld4_ok(kv->v.data, kv->v.dtype) &&
        cuda_aligned(k->data, 16) && cuda_aligned(v->data, 16))
        cuda_launch(p, kv_store4_kernel<DT>, ew_row_grid(p, row / 4, T), CUDA_EW_THREADS, 0, kv->k.data,
                    kv->v.data, (const float4 *)k->data, (const float4 *)v->data, (const int32_t *)slots->data,
                    T, row / 4, n_slots, p->d_flag);
    else
        cuda_launch(p, kv_store_kernel<DT>, cuda_ew_blocks(p, T * row), CUDA_EW_THREADS, 0, kv->k.data,
                    kv->v.data, (const float *)k->data, (const float *)v->data, (const int32_t *)slots->data,
                    T, row, n_slots, p->d_flag);
}

ps_status cuda_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                        const ps_tensor *slots, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t row = kv->k.shape[2] * kv->k.shape[3], T = ps_tensor_numel(slots);
    int64_t n_slots = kv->k.shape[0] * kv->k.shape[1];
    if (T * row == 0) return PS_OK;
    switch (kv->k.dtype) { /* F32, F16 or BF16: op_kv_store's check_kv admits no other */
    case PS_DT_F32: kv_store_launch<PS_DT_F32>(p, kv, k, v, slots, T, row, n_slots); break;
    case PS_DT_F16: kv_store_launch<PS_DT_F16>(p, kv, k, v, slots, T, row, n_slots); break;
    default: kv_store_launch<PS_DT_BF16>(p, kv, k, v, slots, T, row, n_slots); break;
    }
    return cuda_op_done(p, "kv_store", err);
}

/* ---- F32 -> 16-bit for the cuBLAS paths ---- */

__global__ void f32_to_16_kernel(uint16_t *dst, const float *src, int64_t n, bool bf16) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = bf16 ? ps_f32_to_bf16(src[i]) : ps_f32_to_f16(src[i]);
}

ps_status cuda_f32_to_16(cuda_impl *p, uint16_t *dst, const float *src, int64_t n, bool bf16,
                         ps_err *err) {
    if (n == 0) return PS_OK;
    cuda_launch(p, f32_to_16_kernel, cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, dst, src, n, bf16);
    CU_LAUNCH_CHECK(p);
    return PS_OK;
}
