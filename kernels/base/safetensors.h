/* safetensors reader and writer (https://github.com/huggingface/safetensors, format
 * section of its README): 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the raw little-endian row-major data; offsets are relative to the data section.
 *
 * Files are mmap'd read-only and never copied: tensor data pointers point into the
 * mapping (or into the caller's buffer for st_open_buffer) and stay valid until
 * st_close. Every header rule is checked on open (see safetensors.c) and a violation
 * is PS_EFORMAT with a message naming the tensor and both values. Data pointers are
 * only as aligned as the file makes them; st_to_f32 reads unaligned data safely.
 *
 *   st_set *s; ps_err err;
 *   if (st_open_model_dir(dir, &s, &err) != PS_OK) { log err.msg; return; }
 *   const st_tensor *t = st_find(s, "model.norm.weight");
 *   if (t) st_to_f32(t, buf, st_numel(t), &err);
 *   st_close(s);
 *
 * A set is immutable once open: concurrent readers need no lock. As with any mmap,
 * truncating a file while it is open faults the reader (SIGBUS); replace files by
 * rename (st_write does) instead of rewriting them in place. */
#ifndef PS_BASE_SAFETENSORS_H
#define PS_BASE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define ST_MAX_DIMS 8
/* Larger headers are rejected as absurd (real checkpoints stay under a few MB). */
#define ST_MAX_HEADER_BYTES ((uint64_t)100 * 1000 * 1000)

typedef enum { ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;

typedef struct {
    const char *name;          /* owned by the set */
    st_dtype dtype;
    int ndim;                  /* 0..ST_MAX_DIMS; 0 = scalar (numel 1) */
    int64_t shape[ST_MAX_DIMS];
    const void *data;          /* into the mapping / buffer; not aligned beyond what the file gives */
    size_t nbytes;             /* == numel * st_dtype_size(dtype) */
} st_tensor;

typedef struct st_set st_set; /* one file, a buffer, or a sharded model; tensors sorted by name */

/* mmap a .safetensors file (read-only, no copy). Errors are prefixed with the path. */
ps_status st_open(const char *path, st_set **out, ps_err *err);
/* Parses an in-memory file without copying its data: buf must outlive the set. */
ps_status st_open_buffer(const void *buf, size_t n, st_set **out, ps_err *err);
/* A Hugging Face model folder: the shards named by model.safetensors.index.json
 * (weight_map; every entry must be in its shard; a name in two shards is an error),
 * else model.safetensors; PS_ENOTFOUND naming both when neither exists. */
ps_status st_open_model_dir(const char *dir, st_set **out, ps_err *err);
void st_close(st_set *s); /* accepts NULL */

int st_count(const st_set *s);
const st_tensor *st_at(const st_set *s, int i);               /* sorted by name; NULL if out of range */
const st_tensor *st_find(const st_set *s, const char *name);  /* binary search; NULL if absent */
/* __metadata__ value or NULL. For a sharded model: the union of the shards' metadata
 * (the first shard in name order wins a key present in several). */
const char *st_metadata(const st_set *s, const char *key);
int st_metadata_count(const st_set *s);
/* i-th metadata entry (sorted by key); returns the value and sets *key, NULL if out of range. */
const char *st_metadata_at(const st_set *s, int i, const char **key);

const char *st_dtype_name(st_dtype dt); /* "F16", ...; "?" when out of range */
size_t st_dtype_size(st_dtype dt);      /* bytes per element; BOOL = 1; 0 when out of range */
/* Parses a safetensors dtype name; returns 0 and sets *dt, or -1 when unknown. */
int st_dtype_parse(const char *name, st_dtype *dt);
int64_t st_numel(const st_tensor *t);   /* product of shape (1 for a scalar) */
/* 1 when t->data is aligned to its element size, so it may be read through a typed
 * pointer (always true for files from st_write or the Python writer; a file with an
 * odd header length or odd offsets is valid but gives unaligned data: use st_to_f32
 * or memcpy then). */
int st_is_aligned(const st_tensor *t);

/* Converts F32/F16/BF16/F64 to float32 (F64 rounds to nearest); checks numel == n.
 * Other dtypes, a wrong n and a NULL t are PS_EINVAL naming the tensor. */
ps_status st_to_f32(const st_tensor *t, float *out, int64_t n, ps_err *err);

/* Writer (adapters persistence, benchmark model generator). Tensors are laid out
 * contiguously, largest element size first then by name (as the Python writer does),
 * so each is aligned to its element size; the header is space-padded to a multiple
 * of 8. metadata_json (may be NULL) must be a JSON object of strings and becomes
 * __metadata__. Writes path.tmp, then renames it over path. */
typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* numel * dtype size bytes; may be NULL when that is 0 */
} st_write_item;
ps_status st_write(const char *path, const st_write_item *items, int n, const char *metadata_json,
                   ps_err *err);

#endif
