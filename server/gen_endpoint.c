/* The request flow shared by /v1/completions and /v1/chat/completions:
 * read and parse the body, prepare the generation, then stream it or collect
 * it into one reply. The endpoints differ only in what gen_endpoint names
 * (parser, id prefix, chunk shapes, choice object). */
#include "generate.h"

#include "adapters_routes.h"
#include "reply.h"
#include "request.h"

static int reply_collected(gen_job *job, const gen_endpoint *ep) {
    api_error e = {0};
    if (!gen_collect(job, &e)) return reply_error(job->conn, &e);
    json_t *o = gen_envelope(job, ep->object, ep->choice(job));
    if (!o) return reply_errorf(job->conn, SRV_ERR_INTERNAL, NULL, "out of memory building the reply");
    json_object_set_new(o, "usage", gen_usage_json(job));
    int st = reply_json(job->conn, 200, o, NULL);
    json_decref(o);
    return st;
}

int gen_handle(http_req *rq, const gen_endpoint *ep) {
    server *srv = rq->srv;
    json_t *body = NULL;
    int st = request_json_or_reply(rq->conn, srv->opts.max_body, &body);
    if (st) return st;
    oai_ctx ctx = {srv->model_id, srv->vocab_size, adapters_find_for_model, srv};
    oai_gen_request req;
    api_error e = {0};
    if (!ep->parse(body, &ctx, &req, &e)) {
        st = reply_error(rq->conn, &e);
    } else {
        gen_job job;
        st = gen_prepare_or_reply(&job, rq, &req, ep->id_prefix);
        if (!st) st = req.stream ? gen_stream(&job, ep->shape) : reply_collected(&job, ep);
        gen_finish(&job);
    }
    oai_gen_request_free(&req);
    json_decref(body);
    return st;
}
