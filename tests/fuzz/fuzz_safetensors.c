/* Fuzz target for the safetensors reader: any bytes through st_open_buffer must
 * give PS_OK or a clean error, never a crash, leak or out-of-bounds read. On
 * success every tensor is looked up by name and float tensors are converted.
 * The input is copied to an exact-size allocation so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"

#define FUZZ_MAX_CONVERT ((int64_t)1 << 20) /* elements; data is bounded by the input anyway */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    st_set *s = NULL;
    ps_err err = {0};
    if (st_open_buffer(copy, size, &s, &err) == PS_OK) {
        float *out = malloc((size_t)FUZZ_MAX_CONVERT * sizeof *out);
        for (int i = 0; i < st_count(s); i++) {
            const st_tensor *t = st_at(s, i);
            if (st_find(s, t->name) != t) abort();
            const uint8_t *p = t->data;
            if (p < copy || p + t->nbytes > copy + size) abort();
            int64_t n = st_numel(t);
            if ((uint64_t)n * st_dtype_size(t->dtype) != t->nbytes) abort();
            if (out && n <= FUZZ_MAX_CONVERT) st_to_f32(t, out, n, &err);
        }
        for (int i = 0; i < st_metadata_count(s); i++) {
            const char *k = NULL, *v = st_metadata_at(s, i, &k);
            if (!v || st_metadata(s, k) != v) abort();
        }
        free(out);
    }
    st_close(s);
    free(copy);
    return 0;
}
