/* Contract header for the paged KV cache (owner: helper "llama"); the
 * declarations live with the model in models/llama.h. */
#ifndef PS_ENGINE_KV_CACHE_H
#define PS_ENGINE_KV_CACHE_H
#include "models/llama.h"
#endif
