// Host build of the device's generic-β moment code (crates/entmaxkv/src/gpu/kernels/
// gauss_beta.cuh), for scripts/gauss_beta_check.py: the same source text, compiled as plain
// C++ on doubles, so the check exercises the device algorithm itself, not a transcription.
//
// stdin, one query a line:
//   m BETA T                      -> "OK LN_M RATIO RULE LEVEL" (OK 0: the ladder failed;
//                                    RULE 0 trapezoid, 1 tanh-sinh; LEVEL: halvings used)
//   tau ALPHA MU SIGMA N          -> "TAU" (gauss_tau_newton with the quadrature moments)
#include <cmath>
#include <cstdio>
#include <cstring>

using namespace std;

static int g_rule = -1, g_level = -1;
#define __device__
#define __forceinline__ inline
#define GB_TRACE(kind, level) (g_rule = (kind), g_level = (level))
#include "../crates/entmaxkv/src/gpu/kernels/gauss_beta.cuh"

int main() {
    char line[512], kind[16];
    while (fgets(line, sizeof line, stdin)) {
        double v[4];
        if (sscanf(line, "%15s", kind) != 1) continue;
        if (strcmp(kind, "m") == 0 && sscanf(line, "%*s %lf %lf", &v[0], &v[1]) == 2) {
            double lm = NAN, r = NAN;
            g_rule = g_level = -1;
            const bool ok = gb_moment_pair(v[0], v[1], lm, r);
            printf("%d %.17g %.17g %d %d\n", ok ? 1 : 0, lm, r, g_rule, g_level);
        } else if (strcmp(kind, "tau") == 0 && sscanf(line, "%*s %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3]) == 4) {
            const double a = v[0] - 1.0, beta = 1.0 / a;
            const double tau = gauss_tau_newton(v[1], v[2], v[3], a, beta, lgamma(beta + 1.0),
                                                [&](double t, double& lm, double& r) {
                                                    return gb_moment_pair(beta, t, lm, r);
                                                });
            printf("%.17g\n", tau);
        } else {
            fprintf(stderr, "bad query: %s", line);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
