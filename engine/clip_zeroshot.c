/* See clip_zeroshot.h. */
#include "clip_zeroshot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ps_status clip_format_prompt(const char *tmpl, const char *label, char **out, ps_err *err) {
    size_t lt = strlen(tmpl), ll = strlen(label);
    char *s = malloc(lt + ll + 1), *o = s;
    int holes = 0;
    *out = NULL;
    if (!s) return ps_errf(err, PS_ENOMEM, "prompt: no memory");
    for (const char *p = tmpl; *p;) {
        if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
            *o++ = *p;
            p += 2;
        } else if (strncmp(p, "{}", 2) == 0 || strncmp(p, "{label}", 7) == 0) {
            memcpy(o, label, ll);
            o += ll;
            p += p[1] == '}' ? 2 : 7;
            holes++;
        } else if (*p == '{' || *p == '}') {
            free(s);
            return ps_errf(err, PS_EINVAL,
                           "template '%s': unexpected '%c' at offset %d (use {} for the label, {{ and }} for braces)",
                           tmpl, *p, (int)(p - tmpl));
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    if (holes != 1) {
        free(s);
        return ps_errf(err, PS_EINVAL, "template '%s' has %d label placeholders, expected exactly one {}",
                       tmpl, holes);
    }
    *out = s;
    return PS_OK;
}

void clip_normalize_rows(float *x, int n, int E) {
    for (int i = 0; i < n; i++) {
        float *r = x + (size_t)i * E;
        double ss = 0;
        for (int e = 0; e < E; e++) ss += (double)r[e] * r[e];
        if (ss == 0) continue;
        double inv = 1.0 / sqrt(ss);
        for (int e = 0; e < E; e++) r[e] = (float)(r[e] * inv);
    }
}

void clip_class_embeddings(const float *prompts, int n_labels, int n_templates, int E, float *classes) {
    double *acc = malloc(sizeof(double) * (size_t)E);
    if (!acc) return;
    for (int c = 0; c < n_labels; c++) {
        memset(acc, 0, sizeof(double) * (size_t)E);
        for (int t = 0; t < n_templates; t++) {
            const float *r = prompts + ((size_t)c * n_templates + t) * E;
            double ss = 0;
            for (int e = 0; e < E; e++) ss += (double)r[e] * r[e];
            double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
            for (int e = 0; e < E; e++) acc[e] += r[e] * inv;
        }
        double ss = 0;
        for (int e = 0; e < E; e++) ss += acc[e] * acc[e]; /* the mean's 1/T cancels here */
        double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        for (int e = 0; e < E; e++) classes[(size_t)c * E + e] = (float)(acc[e] * inv);
    }
    free(acc);
}

void clip_zeroshot_scores(const float *image, const float *classes, int n, int E, float scale,
                          float *logits, float *probs) {
    double m = -INFINITY, sum = 0;
    for (int c = 0; c < n; c++) {
        double d = 0;
        for (int e = 0; e < E; e++) d += (double)image[e] * classes[(size_t)c * E + e];
        logits[c] = (float)(scale * d);
        if (logits[c] > m) m = logits[c];
    }
    for (int c = 0; c < n; c++) sum += exp((double)logits[c] - m);
    for (int c = 0; c < n; c++) probs[c] = (float)(exp((double)logits[c] - m) / sum);
}
