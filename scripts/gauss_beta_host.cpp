// Host build of the device's generic-β moment code (crates/entmaxkv/src/gpu/kernels/
// gauss_beta.cuh), for scripts/gauss_beta_check.py: the same source text, compiled as plain
// C++ on doubles, so the check exercises the device algorithm itself, not a transcription.
//
// stdin, one query a line:
//   m BETA T               -> "OK LN_M RATIO RULE LEVEL" (one thread, GbSerial as the mixture;
//                             OK 0: the ladder failed; RULE 0 trapezoid, 1 tanh-sinh; LEVEL:
//                             halvings used)
//   m32 BETA T             -> "OK LN_M RATIO RULE LEVEL SAME": the 32-lane split of gauss_count's
//                             warp, emulated by 32 host threads whose reducer replays the
//                             warp's xor butterfly; SAME 1: every lane got the same bits
//   tau ALPHA MU SIGMA N   -> "TAU" (gauss_tau_newton with the one-thread moments)
//   tau32 ALPHA MU SIGMA N -> "TAU SAME" (with the 32-lane moments, as gauss_count)
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

using namespace std;

static thread_local int g_rule = -1, g_level = -1;
#define __device__
#define __forceinline__ inline
#define GB_TRACE(kind, level) (g_rule = (kind), g_level = (level))
#include "../crates/entmaxkv/src/gpu/kernels/gauss_beta.cuh"

struct WarpShared {
    double vals[32];
    barrier<> bar{32};
};

// gauss.cu's GbWarp on host threads: lane j ends with the butterfly value
// v_j ← v_j + v_{j^off}, off = 16 … 1, exactly as `x += __shfl_xor_sync(…, x, off)`.
struct HostWarp {
    static constexpr int L = 32;
    int ln;
    WarpShared* sh;
    int lane() const { return ln; }
    double sum(double x) const {
        sh->vals[ln] = x;
        sh->bar.arrive_and_wait();
        double v[32], nv[32];
        memcpy(v, sh->vals, sizeof v);
        for (int off = 16; off > 0; off >>= 1) {
            for (int j = 0; j < 32; ++j) nv[j] = v[j] + v[j ^ off];
            memcpy(v, nv, sizeof v);
        }
        sh->bar.arrive_and_wait();
        return v[ln];
    }
};

// Runs f(red, lane) on 32 threads; returns whether all lanes' doubles agree bitwise.
template <int N>
static bool run_warp(function<void(const HostWarp&, double (&)[N], int&, int&)> f, double (&out)[N], int& rule,
                     int& level) {
    WarpShared sh;
    double res[32][N];
    int rules[32], levels[32];
    vector<thread> th;
    for (int l = 0; l < 32; ++l)
        th.emplace_back([&, l] {
            const HostWarp red = {l, &sh};
            f(red, res[l], rules[l], levels[l]);
        });
    for (auto& t : th) t.join();
    bool same = true;
    for (int l = 1; l < 32; ++l) same &= memcmp(res[l], res[0], sizeof res[0]) == 0;
    memcpy(out, res[0], sizeof out);
    rule = rules[0];
    level = levels[0];
    return same;
}

int main() {
    char line[512], kind[16];
    while (fgets(line, sizeof line, stdin)) {
        double v[4];
        if (sscanf(line, "%15s", kind) != 1) continue;
        const bool warp = kind[strlen(kind) - 1] == '2';  // m32, tau32
        if ((!strcmp(kind, "m") || !strcmp(kind, "m32")) && sscanf(line, "%*s %lf %lf", &v[0], &v[1]) == 2) {
            double r[3];
            int rule, level;
            bool same = true;
            auto f = [&](const auto& red, double (&o)[3], int& ru, int& le) {
                g_rule = g_level = -1;
                double lm = NAN, ra = NAN;
                o[0] = gb_moment_pair(v[0], v[1], lm, ra, red) ? 1.0 : 0.0;
                o[1] = lm;
                o[2] = ra;
                ru = g_rule;
                le = g_level;
            };
            if (warp) {
                same = run_warp<3>(f, r, rule, level);
            } else {
                f(GbSerial(), r, rule, level);
            }
            printf("%d %.17g %.17g %d %d", (int)r[0], r[1], r[2], rule, level);
            if (warp) printf(" %d", same ? 1 : 0);
            printf("\n");
        } else if ((!strcmp(kind, "tau") || !strcmp(kind, "tau32")) &&
                   sscanf(line, "%*s %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3]) == 4) {
            const double a = v[0] - 1.0, beta = 1.0 / a;
            auto f = [&](const auto& red, double (&o)[1], int&, int&) {
                o[0] = gauss_tau_newton(v[1], v[2], v[3], a, beta, lgamma(beta + 1.0),
                                        [&](double t, double& lm, double& r) {
                                            return gb_moment_pair(beta, t, lm, r, red);
                                        });
            };
            double r[1];
            int ru, le;
            if (warp) {
                const bool same = run_warp<1>(f, r, ru, le);
                printf("%.17g %d\n", r[0], same ? 1 : 0);
            } else {
                f(GbSerial(), r, ru, le);
                printf("%.17g\n", r[0]);
            }
        } else {
            fprintf(stderr, "bad query: %s", line);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
