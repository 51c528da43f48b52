// Gaussian-aware page selection on the device (selection/gaussian, original criterion, no
// ALiBi): `gauss_moments` reads the mean and std rows of every closed page once per kv head
// and writes μ_p, σ_p of each query head of the group; `gauss_select` (one CTA per task)
// reduces the head moments μ_g, σ_g (two-pass variance), solves τ̂ of the single Gaussian,
// applies the margins and the τ clamp, and packs the kept pages (ascending, last page
// appended) into the slot-list format of the top-k path. No host round trip.

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
    double a;            // α − 1
    double zp_low;       // z of the page-max quantile when σ_g < 1.5
    double zp_high;      // ... when σ_g ≥ 1.5
    double z_clamp;      // z of the clamp quantile
    double excess_frac;  // threshold_excess_margin_fraction
    double clamp_scale;  // tau_clamp_sigma_scale
    double smz;          // safety_margin_z, < 0: automatic
    float scale;
    int kint;            // β = 1/(α−1) ∈ {1, 2, 3}
    int clamp_tau;
    int num_heads;
    int num_kv_heads;
    int group;           // H / H_kv
    int tg;              // query heads per task
    int page_size;
    int bt_stride;
    int list_stride;
    int ws_stride;
    int ppb;             // closed pages per moments CTA
};
#ifdef EXPECT_GAUSS_SIZE
static_assert(sizeof(GaussParams) == EXPECT_GAUSS_SIZE, "GaussParams layout differs from Rust");
#endif

// grid (ceil(max_pages / ppb), B * H_kv), block BLOCK. Dynamic smem: group * HEAD_DIM floats.
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_moments(const GaussParams p) {
    extern __shared__ __align__(16) float qs[];  // [group, HEAD_DIM], scaled
    const int b = blockIdx.y / p.num_kv_heads;
    const int kvh = blockIdx.y - b * p.num_kv_heads;
    const int row = p.rows[b];
    const int len = p.seq_lens[row];
    const int ps = p.page_size;
    const int closed = (len + ps - 1) / ps - 1;
    const int p0 = blockIdx.x * p.ppb;
    if (p0 >= closed) return;
    const int p1 = min(closed, p0 + p.ppb);
    const int G = p.group;
    const int h0 = kvh * G;
    for (int i = threadIdx.x; i < G * HEAD_DIM; i += BLOCK)
        qs[i] = p.q[((size_t)b * p.num_heads + h0) * HEAD_DIM + i] * p.scale;
    __shared__ u32 s_pages[256];
    for (int i = threadIdx.x; i < p1 - p0; i += BLOCK) s_pages[i] = p.block_tables[(size_t)row * p.bt_stride + p0 + i];
    __syncthreads();
    const int lane = threadIdx.x % ST_LANES;
    const int rg = threadIdx.x / ST_LANES;
    constexpr int PU = 4;  // pages in flight per row group
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
                }
            }
        }
    }
}

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

// τ̂ (kernel space) for N(mu, sigma²) over n tokens; Newton on the concave increasing
// g(t) = ln M_β(t) − c in t = (aμ − τ)/σ_Y: from the left of the root the iterates stay
// left and increase monotonically (concavity), so a start clamped into the bracket converges.
__device__ double gauss_tau_hat(double mu, double sigma, double n, double a, int k) {
    const double sy = fmax(a * fmax(sigma, 1e-6), 1e-10);
    const double c = -log(n) - (double)k * log(sy);
    const double TLO = -38.0;
    double t = 0.0;
    for (int it = 0; it < 200; ++it) {
        const double lm = gauss_ln_mk(k, t);
        const double g = lm - c;
        // d/dt ln M_k = k·M_{k−1}/M_k
        const double dg = (double)k * exp(gauss_ln_mk(k - 1, t) - lm);
        double tn = t - g / dg;
        if (!(tn >= TLO)) tn = TLO;  // also catches NaN
        const double step = fabs(tn - t);
        t = tn;
        if (step <= 1e-14 * fmax(1.0, fabs(t))) break;
    }
    return a * mu - sy * t;
}

// Block-wide f64 sum (SEL_THREADS threads); every thread gets the result.
__device__ double gauss_block_sum(double v, double* red) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double r = 0.0;
    for (int w = 0; w < SEL_THREADS / 32; ++w) r += red[w];  // fixed order: deterministic
    return r;
}

__device__ double gauss_block_max(double v, double* red) {
    for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_xor_sync(FULL_MASK, v, off));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double r = gauss_ninf();
    for (int w = 0; w < SEL_THREADS / 32; ++w) r = fmax(r, red[w]);
    return r;
}

// grid (tasks), block SEL_THREADS.
extern "C" __global__ void __launch_bounds__(SEL_THREADS) gauss_select(const GaussParams p) {
    __shared__ double red[SEL_THREADS / 32];
    __shared__ int wsum[SEL_THREADS / 32];
    __shared__ double s_floor[8], s_z[8];
    __shared__ double s_tau[8];
    __shared__ int s_bad;
    const int task = blockIdx.x;
    const int per_b = p.num_heads / p.tg;
    const int b = task / per_b;
    const int h0 = (task - b * per_b) * p.tg;
    const int row = p.rows[b];
    const int len = p.seq_lens[row];
    const int ps = p.page_size;
    const int npages = (len + ps - 1) / ps;
    const int closed = npages - 1;
    const int tid = threadIdx.x;
    u32* L = p.lists + (size_t)task * p.list_stride;
    double* tau_out = p.tau_hat + (size_t)b * p.num_heads + h0;
    if (closed == 0) {
        if (tid == 0) {
            L[0] = 0;
            p.list_counts[task] = 1;
        }
        if (tid < p.tg) tau_out[tid] = __longlong_as_double(0x7ff8000000000000LL);
        return;
    }
    // Head moments and thresholds.
    if (tid == 0) s_bad = 0;
    for (int hg = 0; hg < p.tg; ++hg) {
        const float* mu = p.mu + ((size_t)b * p.num_heads + h0 + hg) * p.ws_stride;
        const float* sd = p.sd + ((size_t)b * p.num_heads + h0 + hg) * p.ws_stride;
        double sm = 0.0, sv = 0.0, st = 0.0;
        for (int i = tid; i < closed; i += SEL_THREADS) {
            const double m = mu[i], v = sd[i];
            sm += m;
            sv += v;
            st += m + 1.5 * sqrt(v);
        }
        sm = gauss_block_sum(sm, red);
        sv = gauss_block_sum(sv, red);
        st = gauss_block_sum(st, red);
        const double n = (double)closed;
        const double mu_g = sm / n;
        double vm = 0.0;
        for (int i = tid; i < closed; i += SEL_THREADS) {
            const double dm = (double)mu[i] - mu_g;
            vm += dm * dm;
        }
        vm = gauss_block_sum(vm, red);
        if (tid == 0) {
            if (!isfinite(sm) || !isfinite(sv)) {
                s_bad = 1;
            } else {
                const double sigma_g = fmax(sqrt(sv / n + vm / n), 1e-6);
                const double th = gauss_tau_hat(mu_g, sigma_g, n * ps, p.a, p.kint);
                const bool low = sigma_g < 1.5;
                const double smz = p.smz >= 0.0 ? p.smz : (low ? 0.01 : 0.05) * sigma_g;
                const double d_sigma = smz * sigma_g;
                const double typical = st / n;
                const double d_tau = p.excess_frac * fmax(th / p.a - typical, 0.0);
                s_tau[hg] = th;
                s_floor[hg] = th - p.a * fmax(d_sigma, d_tau);
                s_z[hg] = low ? p.zp_low : p.zp_high;
            }
        }
    }
    __syncthreads();
    if (s_bad) {
        // Overflowed statistics: no model, every page.
        for (int i = tid; i < npages; i += SEL_THREADS) L[i] = (u32)i;
        if (tid == 0) p.list_counts[task] = npages;
        if (tid < p.tg) tau_out[tid] = __longlong_as_double(0x7ff8000000000000LL);
        return;
    }
    // Each thread owns a contiguous run of pages: count, scan, then write.
    const int per = (closed + SEL_THREADS - 1) / SEL_THREADS;
    const int beg = min(tid * per, closed), end = min(beg + per, closed);
    const float* mub = p.mu + ((size_t)b * p.num_heads + h0) * p.ws_stride;
    const float* sdb = p.sd + ((size_t)b * p.num_heads + h0) * p.ws_stride;
    const double zc = p.z_clamp * p.clamp_scale;
    double cap[8];
#pragma unroll
    for (int g = 0; g < 8; ++g) cap[g] = gauss_ninf();
    int cnt = 0;
    for (int i = beg; i < end; ++i) {
        bool keep = false;
        for (int g = 0; g < p.tg; ++g) {
            const double m = mub[(size_t)g * p.ws_stride + i], s = sqrt((double)sdb[(size_t)g * p.ws_stride + i]);
            keep |= p.a * (m + s_z[g] * s) > s_floor[g];
        }
        if (keep) {
            ++cnt;
            for (int g = 0; g < p.tg; ++g)
                cap[g] = fmax(cap[g], (double)mub[(size_t)g * p.ws_stride + i] + zc * sqrt((double)sdb[(size_t)g * p.ws_stride + i]));
        }
    }
    // Exclusive scan of the counts in thread order.
    const int lane = tid & 31, warp = tid >> 5;
    int x = cnt;
    for (int off = 1; off < 32; off <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, x, off);
        if (lane >= off) x += y;
    }
    if (lane == 31) wsum[warp] = x;
    __syncthreads();
    int wo = 0, total = 0;
    for (int w = 0; w < SEL_THREADS / 32; ++w) {
        if (w < warp) wo += wsum[w];
        total += wsum[w];
    }
    int o = wo + x - cnt;
    for (int i = beg; i < end; ++i) {
        bool keep = false;
        for (int g = 0; g < p.tg; ++g) {
            const double m = mub[(size_t)g * p.ws_stride + i], s = sqrt((double)sdb[(size_t)g * p.ws_stride + i]);
            keep |= p.a * (m + s_z[g] * s) > s_floor[g];
        }
        if (keep) L[o++] = (u32)i;
    }
    if (tid == 0) {
        L[total] = (u32)closed;
        p.list_counts[task] = total + 1;
    }
    // τ clamp over the kept closed pages (τ ∈ [τ_floor, τ̂]).
    for (int g = 0; g < p.tg; ++g) {
        const double c = gauss_block_max(cap[g], red);
        if (tid == 0) {
            double tau = s_tau[g];
            if (p.clamp_tau && c > gauss_ninf()) tau = fmin(tau, fmax(p.a * (double)c - 1e-4, (double)s_floor[g]));
            tau_out[g] = tau;
        }
    }
}
