/* Private to kernels/base/safetensors*.c: the st_set layout and the helpers the
 * reader, the model-folder loader and the writer share. Not for other modules. */
#ifndef PS_BASE_SAFETENSORS_IMPL_H
#define PS_BASE_SAFETENSORS_IMPL_H

#include "safetensors.h"

typedef struct {
    void *addr; /* munmap'd on close */
    size_t len;
} st_mapping;

typedef struct {
    char *key, *value;
} st_meta;

struct st_set {
    st_tensor *tensors; /* sorted by name; names owned (malloc'd) */
    int n;
    st_meta *meta;      /* sorted by key; strings owned */
    int n_meta;
    st_mapping *maps;   /* file mappings the data points into */
    int n_maps;
};

/* Sorts tensors by name; PS_EFORMAT naming the first repeated name. */
ps_status st_set_sort_names(st_set *s, ps_err *err);
void st_set_sort_meta(st_set *s);
/* Shape as "[2000, 128]" into buf (truncated to cap); returns buf. */
const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
/* numel * element size without overflow: 0 and sets *bytes, or -1 on overflow / negative dim. */
int st_nbytes_checked(st_dtype dt, int ndim, const int64_t *shape, uint64_t *bytes);

#endif
