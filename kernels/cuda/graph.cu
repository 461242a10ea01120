/* Step graphs for the CUDA backend (ops.h ps_graph_run): the kernels of one
 * engine step are captured from the backend's stream into a CUDA graph and
 * later replayed with a single cudaGraphLaunch, so a decode step of a 32-layer
 * model costs one launch instead of ~450.
 *
 * Policy: on while ps_cuda_tuning.graphs (the default; PS_CUDA_GRAPHS=0 turns
 * it off: decode 1.04-1.13x faster with graphs on the H100). A key is
 * recorded on its SECOND sighting: the first run of a shape is direct, so
 * every lazy set-up (RoPE table, scratch growth, cudaFuncSetAttribute) has
 * happened before a capture, where allocation and synchronisation are illegal.
 * Capture is thread-local, so another backend's thread (the CLIP service)
 * may allocate meanwhile. At most CUDA_GRAPH_CACHE executables are kept,
 * least recently used evicted. Changing the tuning or regrowing a scratch
 * buffer drops them all (paths and addresses are baked into a recording);
 * while the per-op profiler is on, steps run op by op. A capture the driver
 * refuses is logged, graphs are switched off, and the caller runs the step
 * directly. */
#include "cuda_common.cuh"
#include "cuda_profile.cuh"

static cuda_graph_entry *graph_find(cuda_impl *p, uint64_t key) {
    for (int i = 0; i < CUDA_GRAPH_CACHE; i++)
        if (p->graphs[i].exec && p->graphs[i].key == key) return &p->graphs[i];
    return NULL;
}

void cuda_graphs_clear(cuda_impl *p) {
    for (int i = 0; i < CUDA_GRAPH_CACHE; i++) {
        if (p->graphs[i].exec && !p->dead) (void)cudaGraphExecDestroy(p->graphs[i].exec);
        p->graphs[i].exec = NULL;
    }
    p->graph_seen_n = 0;
}

ps_status cuda_graph_launch(ps_backend *be, uint64_t key, bool *launched, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    *launched = false;
    PS_TRY(cuda_enter(p, err));
    if (!p->tune.graphs || cuda_prof_on(p)) return PS_OK;
    cuda_graph_entry *g = graph_find(p, key);
    if (!g) return PS_OK;
    g->used = ++p->graph_clock;
    CU_TRY(p, cudaGraphLaunch(g->exec, p->stream));
    p->counts.graph_launches++;
    *launched = true;
    return PS_OK;
}

/* true when key was seen before; remembers it otherwise (a small ring) */
static bool graph_seen(cuda_impl *p, uint64_t key) {
    int n = p->graph_seen_n < CUDA_GRAPH_SEEN ? p->graph_seen_n : CUDA_GRAPH_SEEN;
    for (int i = 0; i < n; i++)
        if (p->graph_seen[i] == key) return true;
    p->graph_seen[p->graph_seen_n++ % CUDA_GRAPH_SEEN] = key;
    return false;
}

ps_status cuda_graph_begin(ps_backend *be, uint64_t key, bool *recording, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    *recording = false;
    PS_TRY(cuda_enter(p, err));
    /* sync_each_op waits inside ops: impossible while capturing */
    if (!p->tune.graphs || p->tune.sync_each_op || cuda_prof_on(p) || p->capturing ||
        !graph_seen(p, key))
        return PS_OK;
    CU_TRY(p, cudaStreamBeginCapture(p->stream, cudaStreamCaptureModeThreadLocal));
    p->capturing = true;
    p->capture_key = key;
    *recording = true;
    return PS_OK;
}

/* Stores exec under the capture key, evicting the least recently used entry. */
static cuda_graph_entry *graph_store(cuda_impl *p, cudaGraphExec_t exec) {
    cuda_graph_entry *slot = &p->graphs[0];
    for (int i = 0; i < CUDA_GRAPH_CACHE; i++) {
        if (!p->graphs[i].exec) {
            slot = &p->graphs[i];
            break;
        }
        if (p->graphs[i].used < slot->used) slot = &p->graphs[i];
    }
    if (slot->exec) (void)cudaGraphExecDestroy(slot->exec);
    slot->exec = exec;
    slot->key = p->capture_key;
    slot->used = ++p->graph_clock;
    return slot;
}

ps_status cuda_graph_end(ps_backend *be, bool ok, bool *launched, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    *launched = false;
    if (!p->capturing) return ps_errf(err, PS_EINVAL, "cuda: graph_end without graph_begin");
    p->capturing = false;
    if (p->dead) { /* an op failed for good while recording: end it, keep the first error */
        cudaGraph_t g = NULL;
        if (cudaStreamEndCapture(p->stream, &g) == cudaSuccess && g) (void)cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return cuda_enter(p, err);
    }
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaStreamEndCapture(p->stream, &graph);
    if (e == cudaSuccess && ok) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) (void)cudaGraphDestroy(graph);
    if (!ok) {
        if (exec) (void)cudaGraphExecDestroy(exec);
        (void)cudaGetLastError();
        return PS_OK;
    }
    if (e != cudaSuccess) { /* not a device fault: the driver refused this recording */
        (void)cudaGetLastError();
        PS_LOG_WARN("cuda", "step graph not recorded (%s: %s); graphs off, steps run op by op",
                    cudaGetErrorName(e), cudaGetErrorString(e));
        p->tune.graphs = false;
        cuda_graphs_clear(p);
        return PS_OK;
    }
    graph_store(p, exec);
    p->counts.graph_records++;
    CU_TRY(p, cudaGraphLaunch(exec, p->stream));
    p->counts.graph_launches++;
    *launched = true;
    return PS_OK;
}
