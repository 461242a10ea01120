/* peftserve: parse flags, load the engine, serve HTTP until SIGINT/SIGTERM,
 * then refuse new generations, give running ones --shutdown-grace seconds,
 * stop the listener and free the engine. A signal while the model is still
 * loading, or a second one during shutdown, exits at once. */
#define _GNU_SOURCE /* pipe2 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "cli.h"
#include "engine.h"
#include "http.h"
#include "server.h"

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t serving;
static int wake_pipe[2] = {-1, -1};

/* Runs on whichever thread the kernel picks (CivetWeb's and the engine's
 * threads do not block these signals), so it wakes main through a pipe
 * rather than relying on main's own sigsuspend. Before the listener is up
 * (model loading) and on a second signal it exits at once. */
static void on_signal(int sig) {
    if (!serving || stop_signal) _exit(128 + sig);
    stop_signal = sig;
    char c = 1;
    ssize_t k = write(wake_pipe[1], &c, 1);
    (void)k;
}

static void install_signals(void) {
    if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) wake_pipe[0] = wake_pipe[1] = -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that left is seen as a failed write */
}

static void wait_for_signal(void) {
    struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
    /* the 1 s timeout also covers a failed pipe2: then the flag alone is polled */
    while (!stop_signal) poll(wake_pipe[0] >= 0 ? &p : NULL, wake_pipe[0] >= 0 ? 1 : 0, 1000);
}

static void log_model(const server *srv, engine *eng) {
    engine_info in;
    engine_get_info(eng, &in);
    PS_LOG_INFO("server", "model id=%s arch=%s device=%s quant=%s ctx=%d vocab=%d layers=%d hidden=%d weights=%.1fMiB "
                          "template=%s",
                srv->model_id, in.architecture ? in.architecture : "?", srv->device, srv->quant, srv->ctx_len,
                in.vocab_size, in.n_layers, in.hidden, (double)in.weight_bytes / (1 << 20),
                srv->chat_template[0] ? srv->chat_template : "-");
    if (in.demo)
        PS_LOG_WARN("server", "no --model given: serving the built-in demo model (random weights: its text is noise)");
    PS_LOG_INFO("server", "adapters: %d registered%s%s", in.adapters_total, srv->opts.adapters_dir ? ", dir " : "",
                srv->opts.adapters_dir ? srv->opts.adapters_dir : " (no --adapters-dir: uploads last until exit)");
}

int main(int argc, char **argv) {
    cli_opts o;
    char msg[300];
    switch (cli_parse(argc, argv, &o, msg, sizeof msg)) {
    case CLI_HELP: cli_usage(stdout); return 0;
    case CLI_ERROR:
        fprintf(stderr, "peftserve: %s\n\n", msg);
        cli_usage(stderr);
        return 2;
    case CLI_RUN: break;
    }
    ps_log_threshold = (ps_log_level)o.log_level;
    o.eng.adapters_dir = o.srv.adapters_dir; /* the engine owns the adapters; the server shows the dir */
    install_signals();

    engine *eng = NULL;
    ps_err err = {0};
    if (engine_init(&eng, &o.eng, &err) != PS_OK) {
        PS_LOG_ERROR("server", "cannot start the engine: %s", err.msg);
        return 1;
    }
    clip_service *clip = NULL;
    if (o.clip.dir && clip_service_init(&clip, &o.clip, &err) != PS_OK) {
        PS_LOG_ERROR("server", "cannot start the CLIP model: %s", err.msg);
        engine_free(eng);
        return 1;
    }
    static server srv;
    server_init(&srv, eng, &o.srv);
    srv.clip = clip;
    log_model(&srv, eng);
    if (http_start(&srv, &err) != PS_OK) {
        PS_LOG_ERROR("server", "%s", err.msg);
        clip_service_free(clip);
        engine_free(eng);
        return 1;
    }
    PS_LOG_INFO("server", "listening on http://%s:%d (%d http threads, %d concurrent generations%s)", srv.opts.host,
                http_bound_port(&srv), srv.opts.http_threads, srv.opts.max_streams,
                srv.opts.api_key ? ", API key required on /v1" : "");
    serving = 1;
    wait_for_signal();
    PS_LOG_INFO("server", "signal %d: stopping (in-flight generations get %d s to finish)", (int)stop_signal,
                srv.opts.shutdown_grace_s);
    server_drain(&srv, srv.opts.shutdown_grace_s);
    http_stop(&srv);
    clip_service_free(clip); /* no handler is inside it once http_stop returned */
    engine_free(eng);
    PS_LOG_INFO("server", "stopped");
    return 0;
}
