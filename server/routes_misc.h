/* Small routes: GET /health, GET /metrics, GET /v1/models, GET /v1/models/{id}. */
#ifndef PS_SERVER_ROUTES_MISC_H
#define PS_SERVER_ROUTES_MISC_H

#include "http.h"

int routes_health(http_req *rq);
int routes_metrics(http_req *rq);
int routes_models(http_req *rq);
int routes_model_get(http_req *rq);

#endif
