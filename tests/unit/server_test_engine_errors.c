/* The server's answers when the engine fails, over real HTTP on loopback,
 * with the demo engine in-process and its fault hook (engine_debug.h):
 *   - a failed forward step while streaming: status 200 was sent, so the
 *     stream carries an OpenAI error event and then [DONE];
 *   - the same without streaming: an OpenAI error body with a 5xx status;
 *   - a sticky device error: /health turns 503 "unhealthy" and generation
 *     requests get 503 with the engine's reason, while /v1/models still works.
 * The node tests cannot reach these paths: they need the test hook. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine.h"
#include "engine_debug.h"
#include "http.h"
#include "server.h"
#include "testutil.h"

/* One request with Connection: close; returns the status (0 on a socket
 * error) and the whole response in out. */
static int http_do(int port, const char *method, const char *path, const char *body, char *out, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    out[0] = 0;
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0) close(fd);
        return 0;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    size_t got = 0;
    ssize_t k;
    while (got + 1 < cap && (k = read(fd, out + got, cap - 1 - got)) > 0) got += (size_t)k;
    out[got] = 0;
    close(fd);
    int status = 0;
    return sscanf(out, "HTTP/1.1 %d", &status) == 1 ? status : 0;
}

static const char *body_of(const char *resp) {
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

int main(void) {
    engine_opts eo = engine_opts_default();
    eo.device = "cpu";
    eo.threads = 1;
    engine *e = NULL;
    ps_err err = {0};
    if (engine_init(&e, &eo, &err) != PS_OK) {
        fprintf(stderr, "engine_init: %s\n", err.msg);
        return 1;
    }
    server_opts so = server_opts_default();
    so.port = 0;
    so.http_threads = 4;
    static server srv;
    server_init(&srv, e, &so);
    if (http_start(&srv, &err) != PS_OK) {
        fprintf(stderr, "http_start: %s\n", err.msg);
        engine_free(e);
        return 1;
    }
    int port = http_bound_port(&srv);
    static char resp[1 << 16];
    char body[512];

    /* a failed step while streaming: error event, then [DONE] */
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"hi\",\"max_tokens\":4,\"stream\":true}", srv.model_id);
    engine_debug_fail_next_step(e, PS_EIO);
    int st = http_do(port, "POST", "/v1/completions", body, resp, sizeof resp);
    TU_CHECK(st == 200, "stream with a failed step: status %d", st);
    const char *b = body_of(resp);
    TU_CHECK(strstr(b, "data: {\"error\":{") && strstr(b, "\"type\":\"server_error\""), "no error event: %.400s", b);
    TU_CHECK(strstr(b, "data: [DONE]"), "no [DONE] after the error event: %.400s", b);

    /* the same without streaming: a 5xx OpenAI error body */
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":\"hi\",\"max_tokens\":4}", srv.model_id);
    engine_debug_fail_next_step(e, PS_EIO);
    st = http_do(port, "POST", "/v1/completions", body, resp, sizeof resp);
    TU_CHECK(st >= 500 && strstr(body_of(resp), "{\"error\":{\"message\":"), "failed step: %d %.300s", st, resp);

    /* the engine still serves after a failed batch */
    st = http_do(port, "POST", "/v1/completions", body, resp, sizeof resp);
    TU_CHECK(st == 200 && strstr(body_of(resp), "\"text_completion\""), "after a failed batch: %d %.300s", st, resp);
    st = http_do(port, "GET", "/health", NULL, resp, sizeof resp);
    TU_CHECK(st == 200 && strstr(body_of(resp), "\"status\":\"ok\""), "health before the device error: %d", st);

    /* sticky device error: unhealthy, 503 for generations, models still listed */
    engine_debug_fail_next_step(e, PS_EDEVICE);
    http_do(port, "POST", "/v1/completions", body, resp, sizeof resp);
    st = http_do(port, "GET", "/health", NULL, resp, sizeof resp);
    TU_CHECK(st == 503 && strstr(body_of(resp), "\"status\":\"unhealthy\""), "health after EDEVICE: %d %.300s", st,
             resp);
    st = http_do(port, "POST", "/v1/completions", body, resp, sizeof resp);
    TU_CHECK(st == 503 && strstr(body_of(resp), "\"code\":\"service_unavailable\""), "generation when unhealthy: %d %.300s",
             st, resp);
    st = http_do(port, "GET", "/v1/models", NULL, resp, sizeof resp);
    TU_CHECK(st == 200, "models when unhealthy: %d", st);

    server_drain(&srv, 1);
    http_stop(&srv);
    engine_free(e);
    return tu_finish("server_test_engine_errors");
}
