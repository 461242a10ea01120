/* Fuzz target: the JSON body parser and both OpenAI request validators
 * (completions, chat), exactly as the handlers run them but without a
 * connection. Beyond "no crash, no leak", it checks the validators'
 * contract: success leaves values in their documented ranges, failure
 * always carries an error kind and a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "oai_request.h"
#include "request.h"

static void check(bool ok, const oai_gen_request *r, const api_error *e) {
    if (!ok) {
        if (e->kind == SRV_ERR_NONE || !e->msg[0]) {
            fprintf(stderr, "validator failed without an error kind or message\n");
            abort();
        }
        return;
    }
    bool sane = r->max_tokens >= 0 && r->temperature >= 0 && r->temperature <= 2 && r->top_p > 0 &&
                r->top_p <= 1 && r->top_k >= 0 && r->n_stop >= 0 && r->n_stop <= OAI_MAX_STOP &&
                r->logprobs >= -1 && r->logprobs <= ENGINE_MAX_TOP_LOGPROBS && r->model;
    if (r->chat) sane = sane && r->n_msgs > 0 && r->msgs;
    else sane = sane && (r->prompt_text || (r->n_prompt_ids > 0 && r->prompt_ids));
    for (int i = 0; sane && i < r->n_msgs; i++) sane = r->msgs[i].role && r->msgs[i].content;
    for (int i = 0; sane && i < r->n_prompt_ids; i++) sane = r->prompt_ids[i] >= 0 && r->prompt_ids[i] < 259;
    if (!sane) {
        fprintf(stderr, "validator accepted a request outside its documented ranges\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *root = NULL;
    api_error e = {0};
    if (!request_parse_json((const char *)data, size, &root, &e)) {
        check(false, NULL, &e);
        return 0;
    }
    const oai_ctx ctx = {"demo", 259};
    oai_gen_request r;
    bool ok = oai_completions_parse(root, &ctx, &r, &e);
    check(ok, &r, &e);
    oai_gen_request_free(&r);
    e = (api_error){0};
    ok = oai_chat_parse(root, &ctx, &r, &e);
    check(ok, &r, &e);
    oai_gen_request_free(&r);
    json_decref(root);
    return 0;
}
