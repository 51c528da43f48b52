// Gaussian-aware page selection on the device (selection/gaussian, original criterion), three
// launches (four with ALiBi), each spread over many CTAs per task:
//   gauss_moments  reads the mean and std rows of every closed page once per kv head, writes
//                  μ_p, σ_p² of each query head of the group, and per CTA the partial sums of
//                  the head moments (Σμ_p, Σσ_p², Σ(μ_p + 1.5σ_p), and Σ(μ_p − μ_cta)²);
//   gauss_count    every CTA merges the partials in a fixed order (Chan's formula for the
//                  variance of the page means: the CPU's two-pass value to rounding), solves
//                  τ̂ of the single Gaussian (one warp per head; every CTA gets the same
//                  bits; from the plan's t*(c) table where it has one, gauss_tau_hat), applies the margins, and counts the kept pages of its chunk and
//                  their clamp maxima; chunk 0 publishes τ̂ and the per-head floors;
//   gauss_mix      (ALiBi only, before gauss_count) τ̂ of the per-page mixture of a head with a
//                  nonzero slope, one CTA per head (selection/gaussian/model.rs: each page's
//                  scores N(μ_p + bias_p, σ_p² + spread), bias at the page centre); gauss_count
//                  takes it instead of the single-Gaussian τ̂;
//   gauss_pack     every CTA sums the counts of the chunks before it and writes its kept
//                  pages (ascending) into the slot-list format of the top-k path; chunk 0
//                  appends the last page and applies the τ clamp.
// No host round trip, no atomics: counts and maxima are combined in a fixed order.
// β = 1/(α−1) ∈ {1, 2, 3} uses the closed forms below; any other β > 0 (kint = 0) the
// quadrature of gauss_beta.cuh (concatenated before this file), in τ̂ and in the mixture.

// Whether this compile defines the file's kernels: 0 where another family's kernels only use
// its device code (ctx.rs, Family); every kernel unless told otherwise.
#ifndef GAUSS_KERNELS
#define GAUSS_KERNELS 1
#endif

struct GaussParams {
    const st_t* smean;
    const st_t* sstd;
    const u32* block_tables;
    const int* seq_lens;
    const int* rows;     // [B]
    const float* q;      // [B, H, D]
    float* mu;           // [B * H, ws_stride] μ_p
    float* sd;           // [B * H, ws_stride] σ_p² (the root is taken in f64, as the CPU)
    u32* lists;          // [tasks, list_stride] kept slots
    int* list_counts;    // [tasks]
    double* tau_hat;     // [B, H] τ̂ after the clamp (NaN: no model)
    double* part;        // [B * H, n_part, 4] moments partial sums per gauss_moments CTA
    int* chunk_cnt;      // [tasks, nsel] kept closed pages per selection chunk
    double* chunk_cap;   // [tasks, nsel, 8] clamp maximum over a chunk's kept pages
    double* head_floor;  // [B, H] selection floor (τ̂ minus the margins)
    double* head_z;      // [B, H] z of the page-max quantile
    int* task_bad;       // [tasks] 1: non-finite statistics, every page kept
    const float* slopes; // [H] ALiBi slopes, or null
    double* tau_mix;     // [B, H] τ̂ of the page mixture (ALiBi heads with a nonzero slope)
    const double* tstar; // [tstar_n, 3] nodes of t*(c) (tau::TstarTable), or null: Newton
    double a;            // α − 1
    double beta;         // β = 1/(α − 1) (= kint when kint > 0)
    double zp_low;       // z of the page-max quantile when σ_g < 1.5
    double zp_high;      // ... when σ_g ≥ 1.5
    double z_clamp;      // z of the clamp quantile
    double excess_frac;  // threshold_excess_margin_fraction
    double clamp_scale;  // tau_clamp_sigma_scale
    double smz;          // safety_margin_z, < 0: automatic
    double tstar_c0;     // c of node 0
    double tstar_inv_h;  // 1 / grid step
    float scale;
    int kint;            // β ∈ {1, 2, 3}: closed forms; 0: any β by quadrature (gauss_beta.cuh)
    int clamp_tau;
    int num_heads;
    int num_kv_heads;
    int group;           // H / H_kv
    int tg;              // query heads per task
    int page_size;
    int bt_stride;
    int list_stride;
    int ws_stride;
    int ppb;             // closed pages per moments CTA (≤ BLOCK)
    int n_part;          // moments CTAs per (sequence, kv head): the partials' stride
    int spc;             // closed pages per selection chunk
    int nsel;            // selection chunks per task
    int has_alibi;
    int within_page;     // GaussianOpts::alibi_within_page
    int kv_fast;         // gauss_moments grid is (B * H_kv, n_part): kv heads of a page range side by side
    int robust;          // robust criterion (robust.cu): chunk 0 publishes τ̂ and task_bad only
    int tstar_n;         // nodes of tstar
};

// ALiBi (SPEC §4.4): μ_p is kept unshifted in the workspace; each use adds the bias at the
// page centre, slope·(i·ps + (ps − 1)/2 − q_pos), in f64 as the CPU does.
__device__ __forceinline__ double head_slope(const GaussParams& p, int h) {
    return p.has_alibi ? (double)p.slopes[h] : 0.0;
}
__device__ __forceinline__ double page_bias(const GaussParams& p, double slope, int i, double q_pos) {
    return slope == 0.0 ? 0.0 : slope * ((double)i * p.page_size + 0.5 * (p.page_size - 1) - q_pos);
}
// Largest ALiBi offset inside a page from its centre: added to a page's likely maximum.
__device__ __forceinline__ double bias_half_width(const GaussParams& p, double slope) {
    return p.within_page ? fabs(slope) * 0.5 * (p.page_size - 1) : 0.0;
}
#ifdef EXPECT_GAUSS_SIZE
static_assert(sizeof(GaussParams) == EXPECT_GAUSS_SIZE, "GaussParams layout differs from Rust");
#endif

// μ_p, σ_p² of closed pages [p0, p1) (physical ids s_pages[i − p0]) for the G query heads
// h0 .. h0 + G − 1 of kv head kvh, from their scaled queries qs [G, HEAD_DIM]: into p.mu /
// p.sd and s_mv [G, 2, ppb]. One pass over the pages' mean and std rows.
// Pages in flight per row group (`ENTMAXKV_DEFINES="MOM_PU=8"`, development: session 18).
#ifndef MOM_PU
#define MOM_PU 4
#endif
__device__ void page_moments(const GaussParams& p, int b, int kvh, int h0, int G, const float* qs,
                             const u32* s_pages, int p0, int p1, float* s_mv, int ppb) {
    const int lane = threadIdx.x % ST_LANES;
    const int rg = threadIdx.x / ST_LANES;
    constexpr int PU = MOM_PU;  // pages in flight per row group
    for (int pi0 = p0; pi0 < p1; pi0 += PU * ST_ROWGROUPS) {
        uint4 mn[PU][ST_CPL], sv[PU][ST_CPL];
#pragma unroll
        for (int u = 0; u < PU; ++u) {
            const int pi = pi0 + u * ST_ROWGROUPS + rg;
            if (pi < p1) {
                const size_t base = ((size_t)s_pages[pi - p0] * p.num_kv_heads + kvh) * HEAD_DIM;
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    const int ch = lane + i * ST_LANES;
                    mn[u][i] = ch < ST_CHUNKS ? ld_nc16(p.smean + base, ch) : zero4();
                    sv[u][i] = ch < ST_CHUNKS ? ld_nc16(p.sstd + base, ch) : zero4();
                }
            } else {
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    mn[u][i] = zero4();
                    sv[u][i] = zero4();
                }
            }
        }
#pragma unroll
        for (int u = 0; u < PU; ++u) {
            const int pi = pi0 + u * ST_ROWGROUPS + rg;
            float m[ST_CPL][ST_VEC], s[ST_CPL][ST_VEC];
#pragma unroll
            for (int i = 0; i < ST_CPL; ++i) {
                ST::unpack(mn[u][i], m[i]);
                ST::unpack(sv[u][i], s[i]);
            }
            for (int g = 0; g < G; ++g) {
                const float* qg = qs + g * HEAD_DIM;
                float am = 0.f, av = 0.f;
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    const int ch = lane + i * ST_LANES;
                    if (ch < ST_CHUNKS) {
#pragma unroll
                        for (int j = 0; j < ST_VEC; ++j) {
                            const float qv = qg[ch * ST_VEC + j];
                            am = fmaf(qv, m[i][j], am);
                            const float x = qv * s[i][j];
                            av = fmaf(x, x, av);
                        }
                    }
                }
#pragma unroll
                for (int off = ST_LANES / 2; off > 0; off >>= 1) {
                    am += __shfl_xor_sync(FULL_MASK, am, off);
                    av += __shfl_xor_sync(FULL_MASK, av, off);
                }
                if (lane == 0 && pi < p1) {
                    const size_t o = ((size_t)b * p.num_heads + h0 + g) * p.ws_stride + pi;
                    p.mu[o] = am;
                    p.sd[o] = av;
                    s_mv[(2 * g) * ppb + (pi - p0)] = am;
                    s_mv[(2 * g + 1) * ppb + (pi - p0)] = av;
                }
            }
        }
    }
}

// Partial sums of page_moments' np pages (page p0 first, np ≤ BLOCK), per head (f64, fixed
// order): (Σμ_p, Σσ_p², Σ(μ_p + bias_p + 1.5σ_p), Σ(μ_p − μ_part)²) into dst + g·gstride.
// Every thread of the block takes part; s_mv must be complete (after a barrier).
__device__ void moments_partial(const GaussParams& p, int h0, int G, int p0, int np, double q_pos,
                                const float* s_mv, int ppb, double* dst, size_t gstride) {
    for (int g = 0; g < G; ++g) {
        const double slope = head_slope(p, h0 + g);
        double sm = 0.0, sv = 0.0, st = 0.0;
        if ((int)threadIdx.x < np) {
            const double m = s_mv[(2 * g) * ppb + threadIdx.x], v = s_mv[(2 * g + 1) * ppb + threadIdx.x];
            sm = m;
            sv = v;
            // The typical page maximum uses the shifted μ_p; μ_g and σ_g stay unshifted.
            st = m + page_bias(p, slope, p0 + (int)threadIdx.x, q_pos) + 1.5 * sqrt(v);
        }
        block_sum3<BLOCK>(sm, sv, st);
        const double lm = sm / (double)np;
        double m2 = 0.0, z1 = 0.0, z2 = 0.0;
        if ((int)threadIdx.x < np) {
            const double dm = (double)s_mv[(2 * g) * ppb + threadIdx.x] - lm;
            m2 = dm * dm;
        }
        block_sum3<BLOCK>(m2, z1, z2);
        if (threadIdx.x == 0) {
            double* o = dst + g * gstride;
            o[0] = sm;
            o[1] = sv;
            o[2] = st;
            o[3] = m2;
        }
    }
}

// grid (n_part, B * H_kv), block BLOCK. Dynamic smem: group * (HEAD_DIM + 2 * ppb) floats.
#if GAUSS_KERNELS
// A register bound for 4 resident CTAs an SM: unbounded, 78 registers held it to 3, short of
// loads in flight (ncu, session 18 run 5). With the bound: 64 registers, no spills (D 64
// and 128, 1–4 heads a task); 0.0195 → 0.0173 ms at 128K, 0.0536 → 0.0518 at 1M (H200,
// session 19 run 1). `ENTMAXKV_DEFINES="MOM_MIN_CTAS=0"` (development): no bound.
#ifndef MOM_MIN_CTAS
#define MOM_MIN_CTAS 4
#endif
#if MOM_MIN_CTAS > 0
#define MOM_BOUNDS __launch_bounds__(BLOCK, MOM_MIN_CTAS)
#else
#define MOM_BOUNDS __launch_bounds__(BLOCK)
#endif
extern "C" __global__ void MOM_BOUNDS gauss_moments(const GaussParams p) {
    PDL_ENTRY();
    extern __shared__ __align__(16) float qs[];  // [group, HEAD_DIM], scaled
    float* s_mv = qs + p.group * HEAD_DIM;       // [group, 2, ppb] this CTA's μ_p, σ_p²
    const StatCta sc = stat_cta(p);
    const int part = sc.part, b = sc.b, kvh = sc.kvh, row = sc.row, len = sc.len, closed = sc.closed;
    const int p0 = part * p.ppb;
    if (p0 >= closed) return;
    const int p1 = min(closed, p0 + p.ppb);
    const int G = p.group;
    const int h0 = kvh * G;
    for (int i = threadIdx.x; i < G * HEAD_DIM; i += BLOCK)
        qs[i] = p.q[((size_t)b * p.num_heads + h0) * HEAD_DIM + i] * p.scale;
    __shared__ u32 s_pages[256];
    for (int i = threadIdx.x; i < p1 - p0; i += BLOCK) s_pages[i] = p.block_tables[(size_t)row * p.bt_stride + p0 + i];
    __syncthreads();
    page_moments(p, b, kvh, h0, G, qs, s_pages, p0, p1, s_mv, p.ppb);
    __syncthreads();
    moments_partial(p, h0, G, p0, p1 - p0, (double)(len - 1), s_mv, p.ppb,
                    p.part + (((size_t)b * p.num_heads + h0) * p.n_part + part) * 4, (size_t)p.n_part * 4);
}
#endif  // GAUSS_KERNELS

__device__ __forceinline__ double gauss_ninf() { return __longlong_as_double((long long)0xfff0000000000000ULL); }

// ---- τ̂ of a single Gaussian: n·E[(aS − τ)_+^β] = 1, S ~ N(μ, σ²), β ∈ {1, 2, 3} ----

// ln M_k(t), M_k(t) = E[(t + Z)_+^k], k ∈ {0, 1, 2, 3}, Z ~ N(0, 1); finite for every t.
__device__ double gauss_ln_mk(int k, double t) {
    const double LN_PHI0 = -0.91893853320467274178;  // −ln √(2π)
    const double lnphi = LN_PHI0 - 0.5 * t * t;
    if (t < -20.0) {
        // M_k(t) = φ(t)·J_k(s), s = −t: J_k(s) = Σ_j (−1)^j (k+2j)! / (2^j j! s^{k+2j+1}).
        const double s = -t, is2 = 1.0 / (s * s);
        double fk = 1.0;
        for (int i = 2; i <= k; ++i) fk *= i;
        double term = fk / pow(s, (double)(k + 1)), sum = term;
        for (int j = 0; j < 12; ++j) {
            term *= -(double)(k + 2 * j + 1) * (k + 2 * j + 2) * is2 / (2.0 * (j + 1));
            sum += term;
        }
        return lnphi + log(sum);
    }
    const double t2 = t * t;
    double pa, pb;  // M_k = pa·Φ(t) + pb·φ(t)
    switch (k) {
        case 0: pa = 1.0; pb = 0.0; break;
        case 1: pa = t; pb = 1.0; break;
        case 2: pa = t2 + 1.0; pb = t; break;
        default: pa = t * (t2 + 3.0); pb = t2 + 2.0; break;
    }
    if (t >= 0.0) {
        const double cdf = normcdf(t);
        return log(pa * cdf + pb * exp(lnphi));
    }
    // t < 0: M_k = φ(t)·(pa·R + pb), R = Φ(t)/φ(t) = √(π/2)·erfcx(−t/√2).
    const double R = 1.25331413731550025121 * erfcx(-t * 0.70710678118654752440);
    return lnphi + log(pa * R + pb);
}

// M_k = pa·Φ(t) + pb·φ(t): the polynomial coefficients of k ∈ {0, 1, 2, 3}.
__device__ __forceinline__ void gauss_mk_coef(int k, double t, double& pa, double& pb) {
    const double t2 = t * t;
    switch (k) {
        case 0: pa = 1.0; pb = 0.0; break;
        case 1: pa = t; pb = 1.0; break;
        case 2: pa = t2 + 1.0; pb = t; break;
        default: pa = t * (t2 + 3.0); pb = t2 + 2.0; break;
    }
}

// ln M_k(t) and M_{k−1}(t)/M_k(t), sharing one Φ/φ (or erfcx) evaluation; the series of
// gauss_ln_mk below t = −20.
__device__ void gauss_mk_pair(int k, double t, double& ln_mk, double& ratio) {
    if (t < -20.0) {
        ln_mk = gauss_ln_mk(k, t);
        ratio = exp(gauss_ln_mk(k - 1, t) - ln_mk);
        return;
    }
    const double LN_PHI0 = -0.91893853320467274178;
    const double lnphi = LN_PHI0 - 0.5 * t * t;
    double a1, b1, a0, b0;
    gauss_mk_coef(k, t, a1, b1);
    gauss_mk_coef(k - 1, t, a0, b0);
    if (t >= 0.0) {
        const double cdf = normcdf(t), phi = exp(lnphi);
        const double m1 = a1 * cdf + b1 * phi;
        ln_mk = log(m1);
        ratio = (a0 * cdf + b0 * phi) / m1;
    } else {
        const double R = 1.25331413731550025121 * erfcx(-t * 0.70710678118654752440);
        const double u1 = a1 * R + b1;
        ln_mk = lnphi + log(u1);
        ratio = (a0 * R + b0) / u1;
    }
}

// Lane split of gauss_beta.cuh over a full warp: the butterfly leaves the same bits on every
// lane (each step adds the same two values, and IEEE addition is commutative).
struct GbWarp {
    static constexpr int L = 32;
    int ln;
    __device__ __forceinline__ int lane() const { return ln; }
    __device__ __forceinline__ double sum(double x) const {
        for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(FULL_MASK, x, off);
        return x;
    }
};

// ln M_β(t) and M_{β−1}/M_β: closed forms for k = β ∈ {1, 2, 3}, else the quadrature of
// gauss_beta.cuh split over `red`'s lanes (false where its ladder fails: the caller keeps
// every page).
template <class R>
__device__ __forceinline__ bool gauss_pair(int k, double beta, double t, double& ln_m, double& ratio, const R& red) {
    if (k > 0) {
        gauss_mk_pair(k, t, ln_m, ratio);
        return true;
    }
#if GAUSS_GENERIC
    return gb_moment_pair(beta, t, ln_m, ratio, red);
#else
    // Closed-form modules leave the quadrature out: it more than doubles gauss_count's and
    // gauss_mix's code, and their time at 32K is mostly cold instruction fetch (H100: 5 µs
    // more per step with it compiled in). The host never plans kint = 0 on such a module.
    (void)beta;
    (void)red;
    ln_m = ratio = __longlong_as_double(0x7ff8000000000000LL);
    return false;
#endif
}

// τ̂ (kernel space) for N(mu, sigma²) over n tokens (gauss_tau_newton), by a whole warp (every
// lane gets the same bits; the closed forms are evaluated redundantly by each lane); NaN when a
// generic-β moment fails.
//
// With the host's table of the standardised root t*(c) (tau::TstarTable: τ̂ depends on the
// moments only through c = −ln n − β ln σ_Y), τ̂ is one quintic Hermite interpolation,
// within ~1e-15 of the root, and the solve runs no special function. After the previous
// kernels the Newton path's code (erfcx, normcdf, log, exp in f64) is fetched cold, and it
// was the longest phase of the Gaussian step (session 13: 18–22 µs of `gauss_count`).
// Outside the table, Newton as before.
__device__ double gauss_tau_hat(double mu, double sigma, double n, const GaussParams& p, int lane) {
    if (p.tstar) {
        const double sy = fmax(p.a * fmax(sigma, 1e-6), 1e-10);
        const double c = -log(n) - p.beta * log(sy);
        const double x = (c - p.tstar_c0) * p.tstar_inv_h;
        if (x >= 0.0 && x < (double)(p.tstar_n - 1)) {
            const int j = (int)x;
            const double u = x - (double)j;
            const double* e = p.tstar + 3 * (size_t)j;
            const double p0 = e[0], v0 = e[1], a0 = e[2], p1 = e[3], v1 = e[4], a1 = e[5];
            // TstarTable::eval's arithmetic, term for term.
            const double u3 = u * u * u;
            const double d0 = p1 - p0 - v0 - 0.5 * a0;
            const double d1 = v1 - v0 - a0;
            const double d2 = a1 - a0;
            const double ca = 10.0 * d0 - 4.0 * d1 + 0.5 * d2;
            const double cb = -15.0 * d0 + 7.0 * d1 - d2;
            const double cc = 6.0 * d0 - 3.0 * d1 + 0.5 * d2;
            const double t = p0 + u * (v0 + u * (0.5 * a0)) + u3 * (ca + u * (cb + u * cc));
            return p.a * mu - sy * t;
        }
    }
    const int k = p.kint;
    const double beta = p.beta;
    const GbWarp red = {lane};
    // ln Γ(β + 1) of the starting point's tail bound
    const double lng = k == 3 ? 1.79175946922805500081
                              : (k == 2 ? 0.69314718055994530942 : (k == 1 ? 0.0 : lgamma(beta + 1.0)));
    return gauss_tau_newton(mu, sigma, n, p.a, beta, lng, [&](double t, double& lm, double& r) {
        return gauss_pair(k, beta, t, lm, r, red);
    });
}

__device__ double gauss_block_max(double v) {
    __shared__ double red[BLOCK / 32];
    for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_xor_sync(FULL_MASK, v, off));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double r = gauss_ninf();
    for (int w = 0; w < BLOCK / 32; ++w) r = fmax(r, red[w]);
    __syncthreads();
    return r;
}

struct GaussTask {
    int b, h0, closed, npages;
    double q_pos;
};

__device__ __forceinline__ GaussTask gauss_task(const GaussParams& p, int task) {
    GaussTask t;
    const int per_b = p.num_heads / p.tg;
    t.b = task / per_b;
    t.h0 = (task - t.b * per_b) * p.tg;
    const int len = p.seq_lens[p.rows[t.b]];
    t.npages = (len + p.page_size - 1) / p.page_size;
    t.closed = t.npages - 1;
    t.q_pos = (double)(len - 1);
    return t;
}

// The original criterion's test for head g of task t on closed page i, from its μ_p and
// σ_p² as loaded: the page's likely maximum (μ_p + bias + the bias's half width + z·σ_p)
// clears the head's floor. gauss_keep, gauss_count and the fused solver share it.
__device__ __forceinline__ bool page_keep_head(const GaussParams& p, const GaussTask& t, int g, int i, float mu,
                                               float var, double z, double floor_) {
    const double sl = head_slope(p, t.h0 + g);
    const double m = (double)mu + page_bias(p, sl, i, t.q_pos) + bias_half_width(p, sl);
    return p.a * (m + z * sqrt((double)var)) > floor_;
}

// The τ clamp's maximum for head g of task t on kept closed page i: μ_p + bias + zc·σ_p.
__device__ __forceinline__ double page_clamp_max(const GaussParams& p, const GaussTask& t, int g, int i, float mu,
                                                 float var, double zc) {
    return (double)mu + page_bias(p, head_slope(p, t.h0 + g), i, t.q_pos) + zc * sqrt((double)var);
}

// The τ̂ the selection reports after the clamp over its kept pages (τ ∈ [τ_floor, τ̂]);
// cmax: the largest page_clamp_max of the kept closed pages (−∞: none).
__device__ __forceinline__ double clamp_tau_hat(const GaussParams& p, double tau, double cmax, double floor_) {
    return (p.clamp_tau && cmax > gauss_ninf()) ? fmin(tau, fmax(p.a * cmax - 1e-4, floor_)) : tau;
}

// Keep test of closed page i: any head of the task clears its floor (always, when the
// statistics were not finite).
__device__ __forceinline__ bool gauss_keep(const GaussParams& p, const GaussTask& t, int i, const double* floor_,
                                           const double* z, bool bad) {
    if (bad) return true;
    bool keep = false;
    for (int g = 0; g < p.tg; ++g) {
        const size_t o = ((size_t)t.b * p.num_heads + t.h0 + g) * p.ws_stride + i;
        keep |= page_keep_head(p, t, g, i, p.mu[o], p.sd[o], z[g], floor_[g]);
    }
    return keep;
}

// ---- τ̂ of the page mixture (ALiBi) ----

// Running log-sum (max m, Σe^{w−m}, Σe^{w−m}·d) of the terms of F and F'/F.
struct LogSum {
    double m, s0, s1;
};
__device__ __forceinline__ void logsum_add(LogSum& a, double w, double d) {
    if (!(w > gauss_ninf())) return;
    if (w > a.m) {
        const double sc = exp(a.m - w);
        a.s0 *= sc;
        a.s1 *= sc;
        a.m = w;
    }
    const double e = exp(w - a.m);
    a.s0 += e;
    a.s1 += e * d;
}
__device__ __forceinline__ void logsum_merge(LogSum& a, const LogSum& b) {
    if (!(b.m > gauss_ninf())) return;
    if (!(a.m > gauss_ninf())) {
        a = b;
        return;
    }
    const double m = fmax(a.m, b.m);
    const double ea = exp(a.m - m), eb = exp(b.m - m);
    a.s0 = a.s0 * ea + b.s0 * eb;
    a.s1 = a.s1 * ea + b.s1 * eb;
    a.m = m;
}

// (ln F(τ), F'(τ)/F(τ)) of F(τ) = Σ_p ps·E[(aS_p − τ)_+^β], S_p ~ N(μ_p + bias_p, σ_p² +
// spread), over the head's closed pages: every thread its pages in a fixed order, then a
// fixed reduction tree (deterministic). Every thread gets the result.
__device__ void mix_eval(const GaussParams& p, const float* mu, const float* var, int closed, double slope,
                         double q_pos, double spread, double tau, double& h, double& h1) {
    __shared__ LogSum red[BLOCK / 32];
    const int k = p.kint;
    const double beta = p.beta;
    const double ln_c = log((double)p.page_size);
    const double lng = k > 0 ? 0.0 : lgamma(beta + 1.0);
    const double LN_PHI0 = -0.91893853320467274178;
    LogSum acc = {gauss_ninf(), 0.0, 0.0};
    bool fail = false;
    for (int j = threadIdx.x; j < closed; j += BLOCK) {
        // Quadrature: newest pages first (the largest ALiBi bias), so that the running maximum
        // is set early and the skip below drops the old pages deep in the tail.
        const int i = k > 0 ? j : closed - 1 - j;
        const double m = (double)mu[i] + page_bias(p, slope, i, q_pos);
        const double s = sqrt((double)var[i]);
        const double sig = sqrt(s * s + spread);
        const double sy = fmax(p.a * fmax(sig, 1e-6), 1e-10);  // tau/gaussian.rs Model::sigma_y
        const double t = (p.a * m - tau) / sy;
        const double base = ln_c + beta * log(sy);
        // Quadrature is costly: skip a page provably below e^{−60} of this thread's running
        // maximum (so of the sum), as the CPU's Model::add does, by J_β(s) ≤ Γ(β+1)/s^{β+1}.
        if (k == 0 && t < -2.0 &&
            base + LN_PHI0 - 0.5 * t * t + lng - (beta + 1.0) * log(-t) < acc.m - 60.0)
            continue;
        double ln_mk, ratio;
        fail |= !gauss_pair(k, beta, t, ln_mk, ratio, GbSerial());
        if (!fail) logsum_add(acc, base + ln_mk, -beta * ratio / sy);
    }
    for (int off = 16; off > 0; off >>= 1) {
        LogSum o;
        o.m = __shfl_xor_sync(FULL_MASK, acc.m, off);
        o.s0 = __shfl_xor_sync(FULL_MASK, acc.s0, off);
        o.s1 = __shfl_xor_sync(FULL_MASK, acc.s1, off);
        // Both lanes of a pair merge the same two values in the same order (lower lane
        // first): every lane ends with the same bits.
        if ((threadIdx.x & off) == 0) {
            logsum_merge(acc, o);
        } else {
            logsum_merge(o, acc);
            acc = o;
        }
    }
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    LogSum r = red[0];
    for (int w = 1; w < BLOCK / 32; ++w) logsum_merge(r, red[w]);
    // A failed generic-β moment makes F unusable: NaN, which ends the solve with no τ̂.
    if (__syncthreads_or(fail)) {
        h = h1 = __longlong_as_double(0x7ff8000000000000LL);
        return;
    }
    h = r.m + log(r.s0);
    h1 = r.s1 / r.s0;
}

// grid (B * H), block BLOCK; after gauss_moments. Heads without ALiBi or with slope 0 return.
// Root of h(τ) = ln F(τ) = 0 (F decreasing from ∞ to 0): bracket by expansion from the
// largest page centre a·max μ_p by r0 = σ_Y,max·(√(2 ln(n_tok + 1)) + 8) (the CPU's),
// regula falsi start, then Newton safeguarded by bisection inside the bracket, to a step of
// 1e-14 relative (the CPU stops at |Σp − 1| ≤ tau_tol: the same root to that tolerance).
#if GAUSS_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_mix(const GaussParams p) {
    PDL_ENTRY();
    __shared__ double s_red[2][BLOCK / 32];
    const int bh = blockIdx.x;
    const int b = bh / p.num_heads;
    const double slope = head_slope(p, bh - b * p.num_heads);
    if (slope == 0.0) return;
    const int len = p.seq_lens[p.rows[b]];
    const int closed = (len + p.page_size - 1) / p.page_size - 1;
    const double nan = __longlong_as_double(0x7ff8000000000000LL);
    if (closed <= 0) {
        if (threadIdx.x == 0) p.tau_mix[bh] = nan;
        return;
    }
    const float* mu = p.mu + (size_t)bh * p.ws_stride;
    const float* var = p.sd + (size_t)bh * p.ws_stride;
    const double q_pos = (double)(len - 1);
    const double L = (double)p.page_size;
    const double spread = p.within_page ? slope * slope * (L * L - 1.0) / 12.0 : 0.0;
    // Center and scale of the bracket.
    double cmax = gauss_ninf(), symax = 0.0;
    bool finite = true;
    for (int i = threadIdx.x; i < closed; i += BLOCK) {
        const double m = (double)mu[i] + page_bias(p, slope, i, q_pos);
        const double s = sqrt((double)var[i]);
        finite &= isfinite(m) && isfinite(s);
        cmax = fmax(cmax, p.a * m);
        symax = fmax(symax, fmax(p.a * fmax(sqrt(s * s + spread), 1e-6), 1e-10));
    }
    finite = __syncthreads_and(finite);
    for (int off = 16; off > 0; off >>= 1) {
        cmax = fmax(cmax, __shfl_xor_sync(FULL_MASK, cmax, off));
        symax = fmax(symax, __shfl_xor_sync(FULL_MASK, symax, off));
    }
    if ((threadIdx.x & 31) == 0) {
        s_red[0][threadIdx.x >> 5] = cmax;
        s_red[1][threadIdx.x >> 5] = symax;
    }
    __syncthreads();
    cmax = s_red[0][0];
    symax = s_red[1][0];
    for (int w = 1; w < BLOCK / 32; ++w) {
        cmax = fmax(cmax, s_red[0][w]);
        symax = fmax(symax, s_red[1][w]);
    }
    __syncthreads();
    if (!finite) {
        if (threadIdx.x == 0) p.tau_mix[bh] = nan;
        return;
    }
    const double total = (double)closed * L;
    const double r0 = symax * (sqrt(2.0 * log(total + 1.0)) + 8.0);
    double h, h1, step = r0;
    double lo = cmax - step, h_lo;
    mix_eval(p, mu, var, closed, slope, q_pos, spread, lo, h_lo, h1);
    // NaN ends the expansion (the CPU's solve errors on it at once).
    for (int tries = 0; !(h_lo >= 0.0) && !isnan(h_lo) && tries < 1100 && isfinite(lo); ++tries) {
        step = fmax(step, 4.0 * 2.220446049250313e-16 * fabs(lo));
        lo -= step;
        step *= 2.0;
        mix_eval(p, mu, var, closed, slope, q_pos, spread, lo, h_lo, h1);
    }
    step = r0;
    double hi = cmax + step, h_hi;
    mix_eval(p, mu, var, closed, slope, q_pos, spread, hi, h_hi, h1);
    for (int tries = 0; !(h_hi <= 0.0) && !isnan(h_hi) && tries < 1100 && isfinite(hi); ++tries) {
        step = fmax(step, 4.0 * 2.220446049250313e-16 * fabs(hi));
        hi += step;
        step *= 2.0;
        mix_eval(p, mu, var, closed, slope, q_pos, spread, hi, h_hi, h1);
    }
    double tau = nan;
    if (h_lo >= 0.0 && h_hi <= 0.0) {
        if (h_lo == 0.0) {
            tau = lo;
        } else if (h_hi == 0.0) {
            tau = hi;
        } else {
            tau = lo + (hi - lo) * h_lo / (h_lo - h_hi);
            if (!(tau > lo && tau < hi)) tau = 0.5 * (lo + hi);
            for (int it = 0; it < 200; ++it) {
                mix_eval(p, mu, var, closed, slope, q_pos, spread, tau, h, h1);
                if (h == 0.0 || !isfinite(h)) break;
                if (h > 0.0) lo = tau;
                else hi = tau;
                double next = tau - h / h1;
                // A step at rounding level is convergence (even onto the end just set).
                if (fabs(next - tau) <= 1e-14 * fmax(fabs(tau), 1.0)) {
                    if (next > lo && next < hi) tau = next;
                    break;
                }
                if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
                const bool done = fabs(next - tau) <= 1e-14 * fmax(fabs(tau), 1.0) ||
                                  hi - lo <= 4.0 * 2.220446049250313e-16 * fmax(fabs(lo), fabs(hi));
                tau = next;
                if (done) break;
            }
        }
    }
    if (threadIdx.x == 0) p.tau_mix[bh] = tau;
}
#endif  // GAUSS_KERNELS

// Head moment sums from np partials (4 doubles each, part i over nc(i) closed pages; parts
// with none are skipped) over n pages, in a fixed order: (Σμ_p, Σσ_p², Σ(μ_p + bias +
// 1.5σ_p), Σ(μ_p − μ_g)²), the last by Chan et al.'s merge, Σ_i [M2_i + nc_i (μ_i − μ_g)²]
// (the CPU's two-pass value to rounding). Every thread takes part; thread 0 writes out.
// The partials are read past L1 (__ldcg): the fused kernel reads them from other CTAs.
template <class NC>
__device__ void merge_moments(const double* part, int np, double n, NC nc, double* out) {
    const int tid = threadIdx.x;
    double sm = 0.0, sv = 0.0, st = 0.0;
    for (int i = tid; i < np; i += BLOCK) {
        sm += __ldcg(part + i * 4);
        sv += __ldcg(part + i * 4 + 1);
        st += __ldcg(part + i * 4 + 2);
    }
    block_sum3<BLOCK>(sm, sv, st);
    const double mu_g = sm / n;
    double vm = 0.0, z1 = 0.0, z2 = 0.0;
    for (int i = tid; i < np; i += BLOCK) {
        const int c = nc(i);
        if (c > 0) {
            const double dm = __ldcg(part + i * 4) / (double)c - mu_g;
            vm += __ldcg(part + i * 4 + 3) + (double)c * dm * dm;
        }
    }
    block_sum3<BLOCK>(vm, z1, z2);
    if (tid == 0) {
        out[0] = sm;
        out[1] = sv;
        out[2] = st;
        out[3] = vm;
    }
}

// Head hg of task t from its moment sums (Σμ_p, Σσ_p², Σ(μ_p + bias + 1.5σ_p), Σ(μ_p − μ_g)²)
// over n closed pages, by one warp (every lane computes the same bits): τ̂ of the single
// Gaussian (or the page mixture's, ALiBi), the selection floor (τ̂ minus the margins) and the
// page-max z. Lane 0 writes them to s_tau / s_floor / s_z[hg] and raises *s_bad for
// non-finite sums or τ̂.
__device__ void gauss_head(const GaussParams& p, const GaussTask& t, int hg, int lane, const double* sum, double n,
                           double* s_tau, double* s_floor, double* s_z, int* s_bad) {
    const double sm = sum[0], sv = sum[1], st = sum[2], vm = sum[3];
    if (!isfinite(sm) || !isfinite(sv)) {
        if (lane == 0) *s_bad = 1;
        return;
    }
    const double mu_g = sm / n;
    const double sigma_g = fmax(sqrt(sv / n + vm / n), 1e-6);
    // ALiBi heads with a slope: the page mixture's τ̂ (gauss_mix); NaN there (no bracket:
    // statistics beyond f64) keeps every page, as non-finite sums do.
    const bool mix = head_slope(p, t.h0 + hg) != 0.0;
    const double th = mix ? p.tau_mix[t.b * p.num_heads + t.h0 + hg] : gauss_tau_hat(mu_g, sigma_g, n * p.page_size, p, lane);
    const bool low = sigma_g < 1.5;
    const double smz = p.smz >= 0.0 ? p.smz : (low ? 0.01 : 0.05) * sigma_g;
    const double d_sigma = smz * sigma_g;
    const double typical = st / n;
    const double d_tau = p.excess_frac * fmax(th / p.a - typical, 0.0);
    if (lane == 0) {
        if (!isfinite(th)) *s_bad = 1;
        s_tau[hg] = th;
        s_floor[hg] = th - p.a * fmax(d_sigma, d_tau);
        s_z[hg] = low ? p.zp_low : p.zp_high;
    }
}

// grid (nsel, tasks), block BLOCK.
#if GAUSS_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_count(const GaussParams p) {
    PDL_ENTRY();
    __shared__ double s_sum[8][4];
    __shared__ double s_floor[8], s_z[8], s_tau[8];
    __shared__ int s_bad;
    const int task = blockIdx.y, c = blockIdx.x;
    const GaussTask t = gauss_task(p, task);
    const int tid = threadIdx.x;
    if (t.closed == 0) return;  // gauss_pack writes the lone last page
    const int beg = c * p.spc;
    if (beg >= t.closed) return;  // gauss_pack only reads chunks that hold pages
    if (p.robust && c != 0) return;  // the robust kernels need τ̂ once per task
    const int end = min(t.closed, beg + p.spc);
    // Head moments from the moments partials, in a fixed order.
    const int nm = (t.closed + p.ppb - 1) / p.ppb;
    const double n = (double)t.closed;
    for (int g = 0; g < p.tg; ++g)
        merge_moments(p.part + ((size_t)t.b * p.num_heads + t.h0 + g) * p.n_part * 4, nm, n,
                      [&](int i) { return min(t.closed, (i + 1) * p.ppb) - i * p.ppb; }, s_sum[g]);
    if (tid == 0) s_bad = 0;
    __syncthreads();
    // Warp g: head g (tg ≤ 8 = BLOCK/32 warps).
    const int hg = tid >> 5, lane = tid & 31;
    if (hg < p.tg) gauss_head(p, t, hg, lane, s_sum[hg], n, s_tau, s_floor, s_z, &s_bad);
    __syncthreads();
    const bool bad = s_bad != 0;
    if (c == 0 && tid < p.tg) {
        const int bh = t.b * p.num_heads + t.h0 + tid;
        p.tau_hat[bh] = bad ? __longlong_as_double(0x7ff8000000000000LL) : s_tau[tid];
        p.head_floor[bh] = s_floor[tid];
        p.head_z[bh] = s_z[tid];
        if (tid == 0) p.task_bad[task] = bad ? 1 : 0;
    }
    if (p.robust) return;  // no original-criterion counts (rob_* select)
    // Count this chunk's kept pages and their clamp maxima.
    const double zc = p.z_clamp * p.clamp_scale;
    double cap[8];
#pragma unroll
    for (int g = 0; g < 8; ++g) cap[g] = gauss_ninf();
    int cnt = 0;
    // GU pages a thread, head by head: the loads of a head are independent and in flight
    // together; the clamp maxima re-read the kept pages' moments (L1/L2-hot).
    constexpr int GU = 8;
    for (int i0 = beg; i0 < end; i0 += BLOCK * GU) {
        bool keep[GU];
#pragma unroll
        for (int u = 0; u < GU; ++u) keep[u] = bad;
        if (!bad) {
            for (int g = 0; g < p.tg; ++g) {
                const size_t hb = ((size_t)t.b * p.num_heads + t.h0 + g) * p.ws_stride;
                float m[GU], v[GU];
#pragma unroll
                for (int u = 0; u < GU; ++u) {
                    const int i = i0 + u * BLOCK + tid;
                    m[u] = i < end ? p.mu[hb + i] : 0.f;
                    v[u] = i < end ? p.sd[hb + i] : 0.f;
                }
#pragma unroll
                for (int u = 0; u < GU; ++u)
                    keep[u] |= page_keep_head(p, t, g, i0 + u * BLOCK + tid, m[u], v[u], s_z[g], s_floor[g]);
            }
        }
#pragma unroll
        for (int u = 0; u < GU; ++u) {
            const int i = i0 + u * BLOCK + tid;
            if (i < end && keep[u]) {
                ++cnt;
                for (int g = 0; g < p.tg; ++g) {
                    const size_t o = ((size_t)t.b * p.num_heads + t.h0 + g) * p.ws_stride + i;
                    cap[g] = fmax(cap[g], page_clamp_max(p, t, g, i, p.mu[o], p.sd[o], zc));
                }
            }
        }
    }
    const int total = block_sum_int<BLOCK>(cnt);
    if (tid == 0) p.chunk_cnt[(size_t)task * p.nsel + c] = total;
    for (int g = 0; g < p.tg; ++g) {
        const double m = gauss_block_max(cap[g]);
        if (tid == 0) p.chunk_cap[((size_t)task * p.nsel + c) * 8 + g] = m;
    }
}
#endif  // GAUSS_KERNELS

// grid (nsel, tasks), block BLOCK.
// PACK_BITS (default 1): the ordered write from per-thread keep bits of PACK_PPT pages;
// `ENTMAXKV_DEFINES="PACK_BITS=0"` (development): one block scan per BLOCK pages, as before
// session 21.
#ifndef PACK_BITS
#define PACK_BITS 1
#endif
#define PACK_PPT 8
#if GAUSS_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_pack(const GaussParams p) {
    PDL_ENTRY();
    __shared__ double s_floor[8], s_z[8];
    const int task = blockIdx.y, c = blockIdx.x;
    const GaussTask t = gauss_task(p, task);
    const int tid = threadIdx.x;
    u32* L = p.lists + (size_t)task * p.list_stride;
    if (t.closed == 0) {
        if (c == 0) {
            if (tid == 0) {
                L[0] = 0;
                p.list_counts[task] = 1;
            }
            if (tid < p.tg) p.tau_hat[t.b * p.num_heads + t.h0 + tid] = __longlong_as_double(0x7ff8000000000000LL);
        }
        return;
    }
    const int beg = c * p.spc;
    if (beg >= t.closed) return;
    const int end = min(t.closed, beg + p.spc);
    const int nchunks = (t.closed + p.spc - 1) / p.spc;
    // Kept pages of the chunks before this one, and of all chunks.
    int before = 0, all = 0;
    for (int j = tid; j < nchunks; j += BLOCK) {
        const int v = p.chunk_cnt[(size_t)task * p.nsel + j];
        all += v;
        if (j < c) before += v;
    }
    before = block_sum_int<BLOCK>(before);
    all = block_sum_int<BLOCK>(all);
    if (tid < p.tg) {
        const int bh = t.b * p.num_heads + t.h0 + tid;
        s_floor[tid] = p.head_floor[bh];
        s_z[tid] = p.head_z[bh];
    }
    __syncthreads();
    const bool bad = p.task_bad[task] != 0;
#if PACK_BITS
    // Ordered write from keep bits: thread tid takes pages beg + tid·PACK_PPT .. + PACK_PPT
    // (spc ≤ BLOCK · PACK_PPT, checked by the plan), all their moments loaded before any
    // test, so one L2 round trip a head and one block scan, where the loop below paid a
    // dependent load, test and scan for each BLOCK pages (8 rounds a chunk).
    {
        const int tb = beg + tid * PACK_PPT;
        u32 bits = 0;
        if (bad) {
#pragma unroll
            for (int u = 0; u < PACK_PPT; ++u) bits |= (tb + u < end ? 1u : 0u) << u;
        } else {
            for (int g = 0; g < p.tg; ++g) {
                const size_t hb = ((size_t)t.b * p.num_heads + t.h0 + g) * p.ws_stride;
                float m[PACK_PPT], v[PACK_PPT];
#pragma unroll
                for (int u = 0; u < PACK_PPT; ++u) {
                    const int i = tb + u;
                    m[u] = i < end ? p.mu[hb + i] : 0.f;
                    v[u] = i < end ? p.sd[hb + i] : 0.f;
                }
#pragma unroll
                for (int u = 0; u < PACK_PPT; ++u)
                    bits |= (tb + u < end && page_keep_head(p, t, g, tb + u, m[u], v[u], s_z[g], s_floor[g]) ? 1u : 0u)
                            << u;
            }
        }
        int round;
        int o = before + block_excl_scan<BLOCK>(__popc(bits), &round);
#pragma unroll
        for (int u = 0; u < PACK_PPT; ++u)
            if (bits >> u & 1u) L[o++] = (u32)(tb + u);
    }
#else
    // Ordered write: one block scan per BLOCK pages.
    int o = before;
    for (int i0 = beg; i0 < end; i0 += BLOCK) {
        const int i = i0 + tid;
        const int keep = (i < end && gauss_keep(p, t, i, s_floor, s_z, bad)) ? 1 : 0;
        int round;
        const int at = block_excl_scan<BLOCK>(keep, &round);
        if (keep) L[o + at] = (u32)i;
        o += round;
    }
#endif
    if (c != 0) return;
    if (tid == 0) {
        L[all] = (u32)t.closed;
        p.list_counts[task] = all + 1;
    }
    // τ clamp over the kept closed pages (τ ∈ [τ_floor, τ̂]).
    if (tid < p.tg && !bad) {
        double cmax = gauss_ninf();
        for (int j = 0; j < nchunks; ++j) cmax = fmax(cmax, p.chunk_cap[((size_t)task * p.nsel + j) * 8 + tid]);
        const int bh = t.b * p.num_heads + t.h0 + tid;
        p.tau_hat[bh] = clamp_tau_hat(p, p.tau_hat[bh], cmax, s_floor[tid]);
    }
}
#endif  // GAUSS_KERNELS
