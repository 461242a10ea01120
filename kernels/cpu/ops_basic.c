/* Plain C element-wise ops: embed, norms, rope, activations, adds, gathers.
 * Straight loops in float32 (norm statistics in double where the reference
 * is sensitive); row-parallel through the pool when there are several rows. */
#include <math.h>
#include <string.h>

#include "cpu_backend.h"
#include "math/act.h"
#include "math/half.h"

float cpu_load_f(const ps_tensor *t, int64_t i) {
    switch (t->dtype) {
    case PS_DT_F32: return ((const float *)t->data)[i];
    case PS_DT_F16: return ps_f16_to_f32(((const uint16_t *)t->data)[i]);
    case PS_DT_BF16: return ps_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return 0.0f;
    }
}

static int64_t width(const ps_tensor *t) { return t->shape[t->ndim - 1]; }

ps_status cpu_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                    ps_err *err) {
    int64_t T = ps_tensor_numel(ids), C = table->shape[1], V = table->shape[0];
    const int32_t *id = ids->data;
    float *o = out->data;
    for (int64_t t = 0; t < T; t++) {
        if (id[t] < 0 || id[t] >= V)
            return ps_errf(err, PS_EINVAL, "embed: token id %d out of range [0, %lld)", id[t],
                           (long long)V);
        for (int64_t c = 0; c < C; c++) o[t * C + c] = cpu_load_f(table, id[t] * C + c);
    }
    return PS_OK;
}

ps_status cpu_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err) {
    int64_t N = width(y), R = ps_tensor_numel(y) / N;
    float *o = y->data;
    for (int64_t r = 0; r < R; r++)
        for (int64_t n = 0; n < N; n++) o[r * N + n] += cpu_load_f(bias, n);
    return PS_OK;
}

typedef struct {
    float *out;
    const float *x;
    const ps_tensor *w, *b;
    int64_t C;
    float eps;
    float *x_add;     /* add_rmsnorm: x_add = x_in + y first (x_add may be x_in) */
    const float *x_in, *y;
} norm_job;

static void rmsnorm_rows(void *ctx, int64_t r0, int64_t r1) {
    norm_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        if (j->y) /* the same float additions as cpu_add */
            for (int64_t c = 0; c < j->C; c++)
                j->x_add[r * j->C + c] = j->x_in[r * j->C + c] + j->y[r * j->C + c];
        const float *x = j->x + r * j->C;
        float *o = j->out + r * j->C;
        float ss = 0.0f;
        for (int64_t c = 0; c < j->C; c++) ss += x[c] * x[c];
        /* HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then weight * (that) */
        float inv = 1.0f / sqrtf(ss / (float)j->C + j->eps);
        for (int64_t c = 0; c < j->C; c++) o[c] = cpu_load_f(j->w, c) * (x[c] * inv);
    }
}

ps_status cpu_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                      float eps, ps_err *err) {
    norm_job j = {out->data, x->data, w, NULL, width(x), eps};
    cpu_parallel_for(be, ps_tensor_numel(x) / j.C, rmsnorm_rows, &j);
    return PS_OK;
}

ps_status cpu_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                          const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err) {
    norm_job j = {out->data, x_out->data, w, NULL, width(x), eps, x_out->data, x->data, y->data};
    cpu_parallel_for(be, ps_tensor_numel(x) / j.C, rmsnorm_rows, &j);
    return PS_OK;
}

static void layernorm_rows(void *ctx, int64_t r0, int64_t r1) {
    norm_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * j->C;
        float *o = j->out + r * j->C;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < j->C; c++) mean += x[c];
        mean /= (double)j->C;
        for (int64_t c = 0; c < j->C; c++) var += (x[c] - mean) * (x[c] - mean);
        var /= (double)j->C; /* biased variance, as torch.nn.LayerNorm */
        float inv = (float)(1.0 / sqrt(var + j->eps));
        for (int64_t c = 0; c < j->C; c++)
            o[c] = (float)(x[c] - mean) * inv * cpu_load_f(j->w, c) + cpu_load_f(j->b, c);
    }
}

ps_status cpu_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                        const ps_tensor *b, float eps, ps_err *err) {
    norm_job j = {out->data, x->data, w, b, width(x), eps};
    cpu_parallel_for(be, ps_tensor_numel(x) / j.C, layernorm_rows, &j);
    return PS_OK;
}

ps_status cpu_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err) {
    int64_t T = x->shape[0], H = x->shape[1], D = x->shape[2];
    const int32_t *p = pos->data;
    float *d = x->data;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < D / 2; i++) {
            float a = (float)p[t] * ps_rope_inv_freq(theta, (int)i, (int)D);
            float c = cosf(a), s = sinf(a);
            for (int64_t h = 0; h < H; h++) {
                float *v = d + (t * H + h) * D;
                ps_rope_rotate(&v[i], &v[i + D / 2], c, s);
            }
        }
    return PS_OK;
}

typedef struct {
    float *out;
    const float *g, *u;
} silu_job;

static void silu_range(void *ctx, int64_t i0, int64_t i1) {
    silu_job *j = ctx;
    for (int64_t i = i0; i < i1; i++) j->out[i] = ps_silu(j->g[i]) * j->u[i];
}

ps_status cpu_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                       ps_err *err) {
    silu_job j = {out->data, gate->data, up->data};
    int64_t n = ps_tensor_numel(out);
    /* split only when there is enough work to pay for waking the pool */
    if (n < (1 << 16)) silu_range(&j, 0, n);
    else cpu_parallel_for(be, n, silu_range, &j);
    return PS_OK;
}

ps_status cpu_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err) {
    int64_t n = ps_tensor_numel(x);
    float *d = x->data;
    for (int64_t i = 0; i < n; i++) {
        switch (act) {
        case PS_ACT_SILU: d[i] = ps_silu(d[i]); break;
        case PS_ACT_GELU: d[i] = ps_gelu(d[i]); break;
        case PS_ACT_QUICK_GELU: d[i] = ps_quick_gelu(d[i]); break;
        default: d[i] = ps_relu(d[i]); break;
        }
    }
    return PS_OK;
}

ps_status cpu_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err) {
    int64_t n = ps_tensor_numel(x);
    float *a = x->data;
    const float *b = y->data;
    for (int64_t i = 0; i < n; i++) a[i] += b[i];
    return PS_OK;
}

ps_status cpu_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                          const ps_tensor *rows, ps_err *err) {
    int64_t C = width(x), T = ps_tensor_numel(x) / C, R = ps_tensor_numel(rows);
    const int32_t *r = rows->data;
    for (int64_t i = 0; i < R; i++) {
        if (r[i] < 0 || r[i] >= T)
            return ps_errf(err, PS_EINVAL, "gather_rows: row %d out of range [0, %lld)", r[i],
                           (long long)T);
        memcpy((float *)out->data + i * C, (const float *)x->data + r[i] * C, C * sizeof(float));
    }
    return PS_OK;
}
