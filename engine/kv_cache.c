/* The paged KV cache: per layer one K and one V pool of n_pages pages of
 * page_size token slots, (n_pages, page_size, n_kv, D) in F32, F16 or BF16
 * (kernels/ops.h: stores round to it, attention widens back) on the backend,
 * plus a free list of page ids shared by all layers (a page id names the same
 * page in every layer). Sequences own pages through their block tables; the
 * cache does not know which sequence holds which page.
 *
 * Pages are not cleared: the forward pass only reads entries it (or a prefix
 * adapter) wrote, and clearing a large pool would cost a full memory pass. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama.h"

ps_status kv_cache_init(kv_cache *kv, ps_backend *be, const llama_config *cfg, int page_size,
                        int n_pages, ps_dtype dtype, ps_err *err) {
    memset(kv, 0, sizeof *kv);
    if (page_size < 1 || n_pages < 1 || page_size > (1 << 16))
        return ps_errf(err, PS_EINVAL, "kv cache: page_size %d and n_pages %d must be positive "
                                       "(page_size at most 65536)", page_size, n_pages);
    if (dtype != PS_DT_F32 && dtype != PS_DT_F16 && dtype != PS_DT_BF16)
        return ps_errf(err, PS_EINVAL, "kv cache: dtype %s (F32, F16 or BF16)", ps_dtype_name(dtype));
    int64_t row = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    if ((int64_t)n_pages * page_size > INT32_MAX / 2 || row < 1)
        return ps_errf(err, PS_EINVAL, "kv cache: %d pages of %d slots exceed the int32 slot range",
                       n_pages, page_size);
    static _Atomic uint64_t next_uid = 1;
    kv->uid = atomic_fetch_add(&next_uid, 1);
    kv->be = be;
    kv->page_size = page_size;
    kv->n_pages = n_pages;
    kv->layers = calloc((size_t)cfg->n_layers, sizeof *kv->layers);
    kv->free_pages = malloc(sizeof(int32_t) * (size_t)n_pages);
    ps_status st = PS_OK;
    if (!kv->layers || !kv->free_pages) {
        st = ps_errf(err, PS_ENOMEM, "kv cache: cannot allocate the page tables");
        goto fail;
    }
    kv->n_layers = cfg->n_layers;
    size_t bytes = ps_dtype_size(dtype) * (size_t)n_pages * (size_t)page_size * (size_t)row;
    for (int l = 0; l < cfg->n_layers; l++) {
        ps_kv_layer *L = &kv->layers[l];
        L->page_size = page_size;
        if ((st = ps_buf_alloc(be, bytes, &L->k.data, err)) ||
            (st = ps_buf_alloc(be, bytes, &L->v.data, err))) {
            ps_err_wrap(err, "kv cache layer %d (%zu bytes per pool)", l, bytes);
            goto fail;
        }
        ps_tensor t = {dtype, 4, {n_pages, page_size, cfg->n_kv_heads, cfg->head_dim}, NULL,
                       be->dev};
        t.data = L->k.data;
        L->k = t;
        t.data = L->v.data;
        L->v = t;
    }
    /* popped from the end: pages are handed out 0, 1, 2, ... */
    for (int i = 0; i < n_pages; i++) kv->free_pages[i] = n_pages - 1 - i;
    kv->n_free = n_pages;
    return PS_OK;
fail:
    kv_cache_free(kv);
    return st;
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    if (kv->layers) {
        for (int l = 0; l < kv->n_layers; l++) {
            ps_buf_free(kv->be, kv->layers[l].k.data);
            ps_buf_free(kv->be, kv->layers[l].v.data);
        }
    }
    free(kv->layers);
    free(kv->free_pages);
    memset(kv, 0, sizeof *kv);
}

int32_t kv_cache_alloc_page(kv_cache *kv) {
    if (kv->n_free == 0) return -1;
    return kv->free_pages[--kv->n_free];
}

void kv_cache_release_page(kv_cache *kv, int32_t page) {
    /* the engine owns the page bookkeeping: a bad id here is a bug, not input */
    PS_ASSERT(page >= 0 && page < kv->n_pages && kv->n_free < kv->n_pages);
    kv->free_pages[kv->n_free++] = page;
}
