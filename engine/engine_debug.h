/* Test hooks into the engine thread (tests only; the server never calls
 * them). They make timing-dependent checks deterministic (pause the
 * scheduler between steps, look at the state, let it go on) and reach the
 * forward-step error paths.
 *
 *   engine_debug_step_budget(e, 1);   // run one more step, then wait
 *   engine_submit(...);                // admitted + prefilled + first token
 *   engine_debug_wait_paused(e);       // engine_get_info now shows it running
 *   engine_debug_step_budget(e, -1);  // no limit again
 */
#ifndef PS_ENGINE_DEBUG_H
#define PS_ENGINE_DEBUG_H

#include "engine.h"

/* The engine thread runs at most `steps` more forward steps, then waits
 * between steps (counters published) until the budget changes; < 0 = no limit
 * (the default). engine_free still stops a paused engine. */
void engine_debug_step_budget(engine *e, int steps);

/* Blocks until the engine thread waits on a spent budget. */
void engine_debug_wait_paused(engine *e);

/* The next forward step fails with `code` instead of running (PS_OK = no
 * fault): PS_EDEVICE exercises the sticky device error, any other code a
 * failed batch. */
void engine_debug_fail_next_step(engine *e, ps_status code);

#endif
