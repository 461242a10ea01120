/* Server pieces that need no socket and no engine: flag parsing, the Bearer
 * check, Content-Type and JSON body parsing (nesting cap, line/column), and
 * the OpenAI validators' exact verdicts (kind + param) on hand-picked bodies.
 * The HTTP tests cover the same rules end to end; these run without node. */
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "cli.h"
#include "oai_request.h"
#include "request.h"
#include "testutil.h"

static void test_cli(void) {
    cli_opts o;
    char msg[300];
    char *ok[] = {"peftserve", "--port=9000", "--host", "0.0.0.0", "--quant", "none", "--max-body", "2048",
                  "--api-key", "k", "--log-level", "debug", "--adapters-dir", "/tmp/a"};
    TU_CHECK(cli_parse(14, ok, &o, msg, sizeof msg) == CLI_RUN, "valid flags rejected: %s", msg);
    TU_CHECK(o.srv.port == 9000 && !strcmp(o.srv.host, "0.0.0.0") && !strcmp(o.eng.quant, "none"),
             "flag values not stored");
    TU_CHECK(o.srv.max_body == 2048 && !strcmp(o.srv.api_key, "k") && o.log_level == 3, "flag values not stored");
    char *unknown[] = {"peftserve", "--prot", "1"};
    TU_CHECK(cli_parse(3, unknown, &o, msg, sizeof msg) == CLI_ERROR && strstr(msg, "--prot"),
             "unknown flag: %s", msg);
    char *range[] = {"peftserve", "--port", "70000"};
    TU_CHECK(cli_parse(3, range, &o, msg, sizeof msg) == CLI_ERROR && strstr(msg, "70000") && strstr(msg, "65535"),
             "port range message: %s", msg);
    char *choice[] = {"peftserve", "--quant", "int8"};
    TU_CHECK(cli_parse(3, choice, &o, msg, sizeof msg) == CLI_ERROR && strstr(msg, "nf4|none"), "choice: %s", msg);
    char *missing[] = {"peftserve", "--model"};
    TU_CHECK(cli_parse(2, missing, &o, msg, sizeof msg) == CLI_ERROR, "missing value accepted");
    char *help[] = {"peftserve", "--port", "1", "-h"};
    TU_CHECK(cli_parse(4, help, &o, msg, sizeof msg) == CLI_HELP, "-h not seen");
    char *dflt[] = {"peftserve"};
    TU_CHECK(cli_parse(1, dflt, &o, msg, sizeof msg) == CLI_RUN && !strcmp(o.srv.host, "127.0.0.1") &&
                 o.srv.port == 8080 && o.eng.model_dir == NULL,
             "defaults: loopback, 8080, demo model");
}

static void test_auth(void) {
    bool missing;
    TU_CHECK(auth_bearer_ok(NULL, NULL, &missing), "no key configured must allow");
    TU_CHECK(auth_bearer_ok("Bearer abc", "abc", &missing), "right key refused");
    TU_CHECK(auth_bearer_ok("bearer abc", "abc", &missing), "scheme is case-insensitive");
    TU_CHECK(!auth_bearer_ok("Bearer abd", "abc", &missing) && !missing, "wrong key accepted");
    TU_CHECK(!auth_bearer_ok("Bearer ab", "abc", &missing), "prefix of the key accepted");
    TU_CHECK(!auth_bearer_ok("Bearer abcd", "abc", &missing), "key with a suffix accepted");
    TU_CHECK(!auth_bearer_ok(NULL, "abc", &missing) && missing, "missing header not flagged");
    TU_CHECK(!auth_bearer_ok("Basic abc", "abc", &missing) && missing, "Basic accepted");
}

static void test_body(void) {
    api_error e = {0};
    json_t *j = NULL;
    TU_CHECK(request_check_content_type("application/json; charset=utf-8", &e), "json rejected");
    TU_CHECK(request_check_content_type(NULL, &e), "no content type rejected");
    TU_CHECK(request_check_content_type("application/vnd.api+json", &e), "+json rejected");
    TU_CHECK(!request_check_content_type("multipart/form-data; boundary=x", &e) && e.kind == SRV_ERR_MEDIA_TYPE,
             "multipart accepted");
    const char *bad = "{\n \"a\": 1,\n \"b\": }";
    TU_CHECK(!request_parse_json(bad, strlen(bad), &j, &e) && strstr(e.msg, "line 3"), "line: %s", e.msg);
    char deep[400];
    int n = snprintf(deep, sizeof deep, "{\"a\":");
    for (int i = 0; i < 100; i++) deep[n++] = '[';
    for (int i = 0; i < 100; i++) deep[n++] = ']';
    deep[n++] = '}';
    TU_CHECK(!request_parse_json(deep, (size_t)n, &j, &e) && strstr(e.msg, "deeper"), "depth: %s", e.msg);
    const char *str_brackets = "{\"a\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"\"}";
    TU_CHECK(request_parse_json(str_brackets, strlen(str_brackets), &j, &e), "brackets in a string counted: %s", e.msg);
    json_decref(j);
    TU_CHECK(!request_parse_json("[]", 2, &j, &e) && strstr(e.msg, "array"), "array body: %s", e.msg);
}

/* body, expected kind, expected param ("" = none) */
static void expect(bool chat, const char *body, srv_err_kind kind, const char *param) {
    const oai_ctx ctx = {"m", 100};
    json_t *j = json_loads(body, 0, NULL);
    TU_CHECK(j != NULL, "test body is not JSON: %s", body);
    if (!j) return;
    oai_gen_request r;
    api_error e = {0};
    bool ok = chat ? oai_chat_parse(j, &ctx, &r, &e) : oai_completions_parse(j, &ctx, &r, &e);
    TU_CHECK(ok == (kind == SRV_ERR_NONE), "%s: ok=%d, want kind %d (%s)", body, ok, kind, e.msg);
    if (!ok) TU_CHECK(e.kind == kind && !strcmp(e.param, param), "%s: kind %d param '%s' (%s)", body, e.kind, e.param, e.msg);
    oai_gen_request_free(&r);
    json_decref(j);
}

static void test_validators(void) {
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\"}", SRV_ERR_NONE, "");
    expect(false, "{\"model\":\"m\",\"prompt\":[1,2,99]}", SRV_ERR_NONE, "");
    expect(false, "{\"model\":\"m\",\"prompt\":[1,2,100]}", SRV_ERR_INVALID_REQUEST, "prompt");
    expect(false, "{\"model\":\"x\",\"prompt\":\"hi\"}", SRV_ERR_MODEL_NOT_FOUND, "model");
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":0}", SRV_ERR_INVALID_REQUEST, "max_tokens");
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\",\"top_p\":0}", SRV_ERR_INVALID_REQUEST, "top_p");
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\",\"n\":2}", SRV_ERR_UNSUPPORTED, "n");
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", SRV_ERR_INVALID_REQUEST, "stop");
    expect(false, "{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":16.0,\"seed\":-5}", SRV_ERR_NONE, "");
    expect(true, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]}",
           SRV_ERR_NONE, "");
    expect(true, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"temperature\":2.5}",
           SRV_ERR_INVALID_REQUEST, "temperature");
    expect(true, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
           SRV_ERR_UNSUPPORTED, "messages");
    expect(true, "{\"model\":\"m\"}", SRV_ERR_INVALID_REQUEST, "messages");

    /* chat: parts joined with a newline, developer maps to system */
    const oai_ctx ctx = {"m", 100};
    json_t *j = json_loads("{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\","
                           "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],\"stop\":\"x\"}",
                           0, NULL);
    oai_gen_request r;
    api_error e = {0};
    TU_CHECK(oai_chat_parse(j, &ctx, &r, &e), "chat parse: %s", e.msg);
    TU_CHECK(r.n_msgs == 1 && !strcmp(r.msgs[0].role, "system") && !strcmp(r.msgs[0].content, "a\nb"),
             "parts or role mapping wrong");
    TU_CHECK(r.n_stop == 1 && !strcmp(r.stop[0], "x") && r.temperature == 1.0f && r.logprobs == -1, "defaults");
    oai_gen_request_free(&r);
    json_decref(j);
}

int main(void) {
    test_cli();
    test_auth();
    test_body();
    test_validators();
    return tu_finish("server_test_parse");
}
