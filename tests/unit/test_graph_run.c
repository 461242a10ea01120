/* ps_graph_run (kernels/ops.c) against a scripted backend: which of
 * replay / record-then-launch / direct run happens, that the step body runs
 * exactly once in effect, and that errors reach the caller. The CUDA side
 * (real recordings, bit-identical replays) is test_llama_graphs. */
#include <stdio.h>
#include <string.h>

#include "ops.h"
#include "testutil.h"

typedef struct {
    bool has_graph, will_record, end_launches;
    ps_status body_st, end_st;
    int launches, begins, ends, end_ok, bodies;
} script;

static script sc;

static ps_status fake_launch(ps_backend *be, uint64_t key, bool *launched, ps_err *err) {
    (void)be, (void)key, (void)err;
    *launched = sc.has_graph;
    sc.launches += sc.has_graph;
    return PS_OK;
}
static ps_status fake_begin(ps_backend *be, uint64_t key, bool *recording, ps_err *err) {
    (void)be, (void)key, (void)err;
    sc.begins++;
    *recording = sc.will_record;
    return PS_OK;
}
static ps_status fake_end(ps_backend *be, bool ok, bool *launched, ps_err *err) {
    (void)be;
    sc.ends++;
    sc.end_ok += ok;
    *launched = ok && sc.end_launches && !sc.end_st;
    return sc.end_st ? ps_errf(err, sc.end_st, "end failed") : PS_OK;
}
static ps_status body(void *ctx, ps_err *err) {
    (void)ctx;
    sc.bodies++;
    return sc.body_st ? ps_errf(err, sc.body_st, "body failed") : PS_OK;
}

static ps_status run(ps_backend *be, script s) {
    ps_err err;
    sc = s;
    return ps_graph_run(be, 42, body, NULL, &err);
}

int main(void) {
    ps_backend plain = {.name = "plain"};
    ps_backend g = {.name = "graphs", .graph_launch = fake_launch, .graph_begin = fake_begin,
                    .graph_end = fake_end};
    /* no graph support: the body runs, nothing else */
    TU_CHECK(run(&plain, (script){0}) == PS_OK && sc.bodies == 1, "plain: %d bodies", sc.bodies);
    /* a recorded graph: replayed, the body does not run */
    TU_CHECK(run(&g, (script){.has_graph = true}) == PS_OK && sc.bodies == 0 && sc.launches == 1 &&
                 sc.begins == 0, "replay: %d bodies %d launches %d begins", sc.bodies, sc.launches, sc.begins);
    /* backend declines to record: direct run, no end */
    TU_CHECK(run(&g, (script){0}) == PS_OK && sc.bodies == 1 && sc.begins == 1 && sc.ends == 0,
             "declined: %d bodies %d ends", sc.bodies, sc.ends);
    /* recorded and launched by end: the body ran once (as the recording) */
    TU_CHECK(run(&g, (script){.will_record = true, .end_launches = true}) == PS_OK && sc.bodies == 1 &&
                 sc.ends == 1 && sc.end_ok == 1, "recorded: %d bodies %d ends", sc.bodies, sc.ends);
    /* recorded but the device refused it: the step must run directly */
    TU_CHECK(run(&g, (script){.will_record = true}) == PS_OK && sc.bodies == 2 && sc.ends == 1,
             "refused recording: %d bodies (want 2)", sc.bodies);
    /* the body fails while recording: end(ok = false), the body's error returned, no rerun */
    ps_err err;
    sc = (script){.will_record = true, .end_launches = true, .body_st = PS_EINVAL};
    ps_status st = ps_graph_run(&g, 42, body, NULL, &err);
    TU_CHECK(st == PS_EINVAL && strstr(err.msg, "body failed") && sc.bodies == 1 && sc.ends == 1 &&
                 sc.end_ok == 0, "failing body: st %d, %d bodies, end_ok %d (%s)", st, sc.bodies, sc.end_ok, err.msg);
    /* end itself fails: its error returned */
    sc = (script){.will_record = true, .end_st = PS_EDEVICE};
    st = ps_graph_run(&g, 42, body, NULL, &err);
    TU_CHECK(st == PS_EDEVICE && strstr(err.msg, "end failed") && sc.bodies == 1,
             "failing end: st %d, %d bodies (%s)", st, sc.bodies, err.msg);
    return tu_finish("test_graph_run");
}
