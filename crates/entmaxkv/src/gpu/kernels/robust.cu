// The robust Gaussian criterion on the device (selection/gaussian/robust.rs), after
// gauss_moments, [gauss_mix,] gauss_count (robust = 1: only τ̂ and the task's "statistics
// not usable" flag are published, no counting):
//
//   rob_box     every (closed page, head) of a task: the key-range box bound (ALiBi maximum
//               of the page added) into box_hi;
//   rob_tok1    pass 1: a page is bounded per token iff it is a sink page (i < sinks) or some
//               head has a·box_hi > τ̂; its token intervals from the key sketch: lower ends
//               (f32, rounded down) into `lows`, per page and head the largest upper end
//               (best), the largest lower end (lmax) and Σ_t [a·u_t − τ̂]_+^β (mass, the trust
//               test's share); want[i] = 1 (else 0);
//   rob_cmax1, rob_ccnt1, rob_cpack1  (chunks of BLOCK pages) the τ_lb candidates of pass 1
//               compacted in page order into `cand`;
//   rob_solve1  per head: τ_lb = the exact entmax τ of the pass-1 lower ends; trust = Σ mass
//               ≥ 1; thr = trust ? max(τ̂, τ_lb) : τ_lb;
//   rob_tok2    pass 2: the pages not bounded yet whose box reaches thr for some head are
//               bounded as in pass 1 (want[i] = 2);
//   rob_cmax2, rob_ccnt2, rob_cpack2  the same over both passes;
//   rob_solve2  τ_lb over the pass-1 and pass-2 lower ends; T = trust ? max(τ̂, τ_lb) :
//               τ_lb, into thr and tau_hat (the selection's τ̂ output, as the CPU's);
//   rob_pcnt    per chunk of BLOCK pages: kept pages and pages bounded per token;
//   rob_pack    keep page i iff i < sinks or some head has a·min(box_hi, best) > T (best
//               only where bounded); the kept slots ascending, then the last page.
//
// The page and token bounds are the CPU's bit for bit (robust_bound.cuh: the same IEEE
// operations; here the same per-lane partial sums and the same order of combining them: the
// CPU's AVX2 kernels where HEAD_DIM is a multiple of 8 (page sums) or 16 (quantisation
// error), its portable loops otherwise), so the token sets of both passes and the kept pages
// are the CPU's except where τ_lb or the trust sum round differently (f64 sums in another
// order, pow from another libm, Newton/bisection instead of the CPU's sort-based solve: a few
// ulps). A unit is one (page, head): 8 lanes, lane j summing channels j, j + 8, ... as the
// CPU's eight SIMD lanes do. No atomics; every sum has a fixed order.
//
// Softmax mode (softmax = 1, α = 1: selection/gaussian/robust.rs `select_softmax`): no τ̂,
// so gauss_moments / gauss_count do not run; the same kernels with these changes:
//   rob_box     every (closed page, head), whatever task_bad holds (not written yet);
//   rob_bmax    (one CTA per task) per head the best box (largest box_hi) into thr, τ̂ =
//               NaN (the selection's output, as the CPU's), task_bad = some box_hi of the
//               task not finite (the CPU's "overflowed statistics": every page kept);
//   rob_tok1    a page is bounded iff i < sinks or some head has box_hi ≥ best − 2; no mass;
//   rob_cmax1   as above (M, the largest lower end of the pass-1 pages);
//   rob_cpack1  no list (rob_ccnt does not run): per chunk Σ exp(l − M) over the lower ends
//               of its pages into mass[bh, chunk];
//   rob_solve1  L = M + ln Σ (chunk sums) (a rigorous lower bound of the log-sum-exp; the
//               CPU's entmax_threshold_f32 at α = 1) into thr;
//   rob_tok2    pages not bounded yet with ps·exp(box_hi − L) > drop_mass / closed for some
//               head (want = 2);
//   rob_cmax2, rob_cpack2, rob_solve2  L over both passes into thr (τ̂ stays NaN);
//   rob_pcnt, rob_pack  keep i iff i < sinks or some head has ps·exp(u − L) > drop_mass /
//               closed, u = min(box_hi, best) (best only where bounded).
// L is an f64 sum in another order than the CPU's and exp/log come from the device's libm,
// so a page whose test is within a few ulps of the cut can fall on the other side.

struct RobustParams {
    const st_t* smin;
    const st_t* smax;
    const unsigned char* sketch;
    const u32* block_tables;
    const int* seq_lens;
    const int* rows;      // [B]
    const float* q;       // [B, H, D] unscaled
    const float* slopes;  // [H] ALiBi slopes, or null
    double* tau_hat;      // [B, H] τ̂ of gauss_count in, T out (rob_solve2)
    int* task_bad;        // [tasks] 1: statistics not usable (gauss_count; softmax mode: rob_bmax): every page kept
    double* box_hi;       // [B * H, ws_stride] box upper bound, ALiBi maximum of the page added
    double* best;         // [B * H, ws_stride] largest token upper end (bounded pages)
    float* lmax;          // [B * H, ws_stride] largest token lower end (bounded pages)
    double* mass;         // [B * H, ws_stride] pass-1 page's Σ_t [a·u_t − τ̂]_+^β
    float* lows;          // [B * H, ws_stride * page_size] token lower ends (bounded pages)
    float* cand;          // [B * H, ws_stride * page_size] τ_lb candidates (rob_solve scratch)
    int* want;            // [tasks, ws_stride] 0: box only, 1: bounded in pass 1, 2: in pass 2
    double* thr;          // [B * H] threshold after pass 1, then T
    int* trust;           // [B * H] 1 where τ̂ passed the mass test
    u32* lists;           // [tasks, list_stride] kept slots
    int* list_counts;     // [tasks]
    int* bounded;         // [tasks] pages bounded per token (bytes report)
    float* cmax;          // [B * H, nch_stride] per chunk of RB_CH pages: largest lower end (rob_cmax)
    int* ccnt;            // [B * H, nch_stride] per chunk: τ_lb candidates (rob_ccnt)
    int* pcnt;            // [tasks, 2, nch_stride] per chunk: kept pages, pages bounded (rob_pcnt)
    double a;             // α − 1
    double beta;          // 1/(α − 1)
    double gam;           // bounds.rs γ = n·u/(1 − n·u), n = D + 2
    double lv;            // sketch levels as f64 (1 without a sketch)
    double drop_mass;     // softmax mode: SOFTMAX_DROP_MASS (the mass a head may drop)
    float scale;
    float inv_levels;     // fl(1/levels) (1 without a sketch)
    float qmax;           // bounds.rs q_max(D, bits)
    float inv_qmax;       // fl(1/q_max)
    int kint;             // β ∈ {1, 2, 3}: integer powers; 0: pow
    int num_heads;
    int num_kv_heads;
    int group;            // H / H_kv
    int tg;               // query heads per task
    int page_size;
    int bt_stride;
    int list_stride;
    int ws_stride;
    int sketch_bits;
    int sketch_rb;
    int sinks;            // GaussianOpts::sink_pages (clamped)
    int has_alibi;
    int nch_stride;       // ⌈max_pages / RB_CH⌉: chunks of the rob_c* / rob_p* grids
    int softmax;          // 1: the softmax mode (α = 1, see above)
    int hist_start;       // 1: rob_solve starts one histogram bin below τ_lb (else at aM − 1)
    int fuse_box;         // 1: rob_tok1 forms the box bounds (tg = 1, α > 1); rob_box does not run
};
#ifdef EXPECT_ROBUST_SIZE
static_assert(sizeof(RobustParams) == EXPECT_ROBUST_SIZE, "RobustParams layout differs from Rust");
#endif

constexpr int RB_UNITS = BLOCK / 8;  // (page, head) units per CTA

struct RbTask {
    int b, h0, kvh, row, closed;
    double q_pos;
};

__device__ __forceinline__ RbTask rb_task(const RobustParams& p, int task) {
    RbTask t;
    const int per_b = p.num_heads / p.tg;
    t.b = task / per_b;
    t.h0 = (task - t.b * per_b) * p.tg;
    t.kvh = t.h0 / p.group;
    t.row = p.rows[t.b];
    const int len = p.seq_lens[t.row];
    t.closed = (len + p.page_size - 1) / p.page_size - 1;
    t.q_pos = (double)(len - 1);
    return t;
}

__device__ __forceinline__ double rb_slope(const RobustParams& p, int h) {
    return p.has_alibi ? (double)p.slopes[h] : 0.0;
}

// x^(β−1) for x > 0.
__device__ __forceinline__ double rb_pow_bm1(const RobustParams& p, double x) { return rb_pow_bm1_k(p.kint, p.beta, x); }

// One unit's page bound (8 lanes: `sub` = lane & 7, `gm` the lanes' mask): the lanes' sums
// combined in the CPU's order, so every lane of the unit returns the same bits; with
// `sketch`, the quantised weights into qw[0..HEAD_DIM).
__device__ __forceinline__ RbBound rb_page_bound(const RobustParams& p, size_t srow, const float* qh, int sub,
                                                 u32 gm, bool sketch, short* qw) {
    const auto ld = [&](int c, float& l, float& h, float& qc) {
        l = ST::to_f(p.smin[srow + c]);
        h = ST::to_f(p.smax[srow + c]);
        qc = qh[c];
    };
    RbLane s = rb_lane_sums(sub, HEAD_DIM, p.scale, p.inv_levels, ld);
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        const int off = rb_sum_off(HEAD_DIM, k);
        s.b = __fadd_rn(s.b, __shfl_xor_sync(gm, s.b, off));
        s.p = __fadd_rn(s.p, __shfl_xor_sync(gm, s.p, off));
        s.m = __fadd_rn(s.m, __shfl_xor_sync(gm, s.m, off));
        s.mg = __fadd_rn(s.mg, __shfl_xor_sync(gm, s.mg, off));
        const float o = __shfl_xor_sync(gm, s.mx, off);
        s.mx = s.mx > o ? s.mx : o;
        s.bad |= __shfl_xor_sync(gm, s.bad, off);
    }
    RbBound r = rb_bound_pre(s.bad == 0, sketch, s.b, s.p, s.m, s.mg, s.mx, p.gam, p.lv, p.qmax, p.inv_qmax);
    if (r.kind != 2) {
        if (qw)
            for (int c = sub; c < HEAD_DIM; c += 8) qw[c] = 0;
        return r;
    }
    float e = rb_lane_quant(sub, HEAD_DIM, p.scale, p.inv_levels, r.inv, r.sc, ld, qw);
    if (rb_e_tree(HEAD_DIM)) {
        e = __fadd_rn(e, __shfl_xor_sync(gm, e, 4));
        e = __fadd_rn(e, __shfl_xor_sync(gm, e, 2));
        e = __fadd_rn(e, __shfl_xor_sync(gm, e, 1));
    } else {
        const int base = threadIdx.x & 24;
        float t = __shfl_sync(gm, e, base);
        for (int j = 1; j < 8; ++j) t = __fadd_rn(t, __shfl_sync(gm, e, base + j));
        e = t;
    }
    rb_bound_finish(r, s.p, s.m, s.mg, (double)e, p.gam, p.lv);
    if (r.kind == 0)
        for (int c = sub; c < HEAD_DIM; c += 8) qw[c] = 0;
    return r;
}

// The box upper bound of page i for head h with the page's largest ALiBi bias added (as
// bounds.rs: slope·(start − q_pos), slope·(start + ps − 1 − q_pos), each rounded once).
__device__ __forceinline__ double rb_box_alibi(const RobustParams& p, const RbTask& t, int h, int i, double box_hi) {
    const double slope = rb_slope(p, h);
    const double start = (double)i * p.page_size;
    const double b0 = __dmul_rn(slope, start - t.q_pos);
    const double b1 = __dmul_rn(slope, (start + (double)(p.page_size - 1)) - t.q_pos);
    return __dadd_rn(box_hi, fmax(b0, b1));
}

// grid (ceil(max_pages · tg / RB_UNITS), tasks), block BLOCK.
extern "C" __global__ void __launch_bounds__(BLOCK) rob_box(const RobustParams p) {
    PDL_ENTRY();
    const int task = blockIdx.y;
    const RbTask t = rb_task(p, task);
    const int unit = blockIdx.x * RB_UNITS + (threadIdx.x >> 3);
    const int sub = threadIdx.x & 7;
    const u32 gm = 0xffu << (threadIdx.x & 24);
    const int i = unit / p.tg, g = unit - i * p.tg;
    // A unit's 8 lanes leave together (their shuffles name only them). Softmax mode: every
    // task (rob_bmax writes task_bad from these boxes).
    if (i >= t.closed || (!p.softmax && p.task_bad[task] != 0)) return;
    const int h = t.h0 + g;
    const u32 page = p.block_tables[(size_t)t.row * p.bt_stride + i];
    const size_t srow = ((size_t)page * p.num_kv_heads + t.kvh) * HEAD_DIM;
    const float* qh = p.q + ((size_t)t.b * p.num_heads + h) * HEAD_DIM;
    const RbBound r = rb_page_bound(p, srow, qh, sub, gm, false, nullptr);
    if (sub == 0) p.box_hi[((size_t)t.b * p.num_heads + h) * p.ws_stride + i] = rb_box_alibi(p, t, h, i, r.box_hi);
}

// Softmax mode only, after rob_box: per head of the task the best box (the largest box_hi,
// exact in any order) into thr, τ̂ = NaN; task_bad = 1 where some box_hi is not finite (the
// CPU checks box_hi and box_lo: both come from rb_bound_pre and are infinite together, the
// ALiBi terms are finite). grid (1, tasks), block BLOCK.
extern "C" __global__ void __launch_bounds__(BLOCK) rob_bmax(const RobustParams p) {
    PDL_ENTRY();
    __shared__ double s_m[BLOCK / 32];
    const int task = blockIdx.y;
    const RbTask t = rb_task(p, task);
    if (t.closed <= 0) return;  // rob_pack keeps the one page and writes τ̂ = NaN
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const size_t bh0 = (size_t)t.b * p.num_heads + t.h0;
    int bad = 0;
    for (int g = 0; g < p.tg; ++g) {
        const double* bx = p.box_hi + (bh0 + g) * p.ws_stride;
        double m = -rb_inf();
        for (int i = tid; i < t.closed; i += BLOCK) {
            const double v = bx[i];
            bad |= !isfinite(v);
            m = fmax(m, v);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) m = fmax(m, __shfl_xor_sync(FULL_MASK, m, off));
        if (lane == 0) s_m[w] = m;
        __syncthreads();
        if (tid == 0) {
            double r = s_m[0];
            for (int k = 1; k < BLOCK / 32; ++k) r = fmax(r, s_m[k]);
            p.thr[bh0 + g] = r;
            p.tau_hat[bh0 + g] = __longlong_as_double(0x7ff8000000000000LL);
        }
        __syncthreads();
    }
    bad = block_sum_int<BLOCK>(bad);
    if (tid == 0) p.task_bad[task] = bad != 0;
}

// 4-bit sketch words of a row, and the tokens a lane bounds with its row words held in
// registers (page size <= 16: tokens sub and sub + 8).
constexpr int RB_W = HEAD_DIM / 8 > 0 ? HEAD_DIM / 8 : 1;
constexpr int RB_TPL = 2;

// Token pass PASS (1 or 2), grid as rob_box. The loads are issued early so that their
// latencies overlap: the page id with the box bounds of the `want` test, the token rows of a
// 4-bit sketch before the page bound's arithmetic (one dependent DRAM round trip each
// instead of four in a row).
template <int PASS> __device__ __forceinline__ void rob_tok(const RobustParams& p) {
    __shared__ __align__(16) short s_qw[RB_UNITS][HEAD_DIM];
    // 4-bit sketch, HEAD_DIM a multiple of 8: the unit's weights packed for dp4a (rb_pack4).
    __shared__ __align__(16) unsigned s_pk[RB_UNITS][HEAD_DIM / 2 + 1];
    const int task = blockIdx.y;
    const RbTask t = rb_task(p, task);
    const int u = threadIdx.x >> 3;
    const int unit = blockIdx.x * RB_UNITS + u;
    const int sub = threadIdx.x & 7;
    const u32 gm = 0xffu << (threadIdx.x & 24);
    const int i = unit / p.tg, g = unit - i * p.tg;
    if (i >= t.closed || p.task_bad[task] != 0) return;
    const size_t bh0 = (size_t)t.b * p.num_heads + t.h0;
    int* wp = p.want + (size_t)task * p.ws_stride + i;
    const u32 page = p.block_tables[(size_t)t.row * p.bt_stride + i];
    // Whether the page is bounded in this pass: every unit of the page decides alike. Pass 2
    // writes only 0 → 2, so "not bounded in pass 1" reads the same before and after.
    // Softmax mode: thr holds the best box (pass 1), then L (pass 2).
    const int h = t.h0 + g;
    const size_t bh = bh0 + g;
    const size_t srow = ((size_t)page * p.num_kv_heads + t.kvh) * HEAD_DIM;
    const float* qh = p.q + bh * HEAD_DIM;
    bool want = false;
    if (PASS == 1 && p.fuse_box) {
        // One head per task: this unit's box bound (rob_box's, bit for bit) decides alone.
        const RbBound rbx = rb_page_bound(p, srow, qh, sub, gm, false, nullptr);
        const double bx = rb_box_alibi(p, t, h, i, rbx.box_hi);
        if (sub == 0) p.box_hi[bh * p.ws_stride + i] = bx;
        want = i < p.sinks || p.a * bx > p.tau_hat[bh];
        if (sub == 0) *wp = want ? 1 : 0;
    } else if (PASS == 1) {
        want = i < p.sinks;
        for (int g2 = 0; g2 < p.tg; ++g2) {
            const double bx = p.box_hi[(bh0 + g2) * p.ws_stride + i];
            want |= p.softmax ? rb_sm_near_best(bx, p.thr[bh0 + g2]) : p.a * bx > p.tau_hat[bh0 + g2];
        }
        if (g == 0 && sub == 0) *wp = want ? 1 : 0;
    } else if (*wp != 1) {
        const double per_page = p.drop_mass / (double)t.closed;
        for (int g2 = 0; g2 < p.tg; ++g2) {
            const double bx = p.box_hi[(bh0 + g2) * p.ws_stride + i];
            want |= p.softmax ? rb_sm_heavy(p.page_size, bx, p.thr[bh0 + g2], per_page) : p.a * bx > p.thr[bh0 + g2];
        }
    }
    if (!want) return;
    if (PASS == 2 && g == 0 && sub == 0) *wp = 2;
    short* qw = s_qw[u];
    const bool sketch = p.sketch_bits > 0;
    const int ps = p.page_size;
    const unsigned char* sk = p.sketch + ((size_t)page * p.num_kv_heads + t.kvh) * ps * (size_t)p.sketch_rb;
    // The lane's token rows, loaded now (4-bit sketch, page size <= 16).
    const bool held = sketch && p.sketch_bits == 4 && HEAD_DIM % 8 == 0 && ps <= 8 * RB_TPL;
    unsigned rw[RB_TPL][RB_W];
    if (held) {
        const bool vec = RB_W % 4 == 0 && (p.sketch_rb & 15) == 0;
#pragma unroll
        for (int k = 0; k < RB_TPL; ++k) {
            const int tk = sub + 8 * k;
            if (tk < ps) {
                const unsigned* rowp = reinterpret_cast<const unsigned*>(sk + (size_t)tk * p.sketch_rb);
                if (vec) {
#pragma unroll
                    for (int j = 0; j < RB_W / 4; ++j) {
                        const uint4 v = __ldg(reinterpret_cast<const uint4*>(rowp) + j);
                        rw[k][4 * j] = v.x;
                        rw[k][4 * j + 1] = v.y;
                        rw[k][4 * j + 2] = v.z;
                        rw[k][4 * j + 3] = v.w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < RB_W; ++j) rw[k][j] = __ldg(rowp + j);
                }
            }
        }
    }
    const RbBound r = rb_page_bound(p, srow, qh, sub, gm, sketch, qw);
    __syncwarp(gm);
    const bool dp4 = sketch && r.kind == 2 && p.sketch_bits == 4 && HEAD_DIM % 8 == 0;
    if (dp4) {
        for (int j = sub; j < HEAD_DIM / 8; j += 8) {
            unsigned w[4];
            rb_pack4(qw, j, w);
#pragma unroll
            for (int k = 0; k < 4; ++k) s_pk[u][4 * j + k] = w[k];
        }
        __syncwarp(gm);
    }
    const double slope = rb_slope(p, h);
    const double th = PASS == 1 ? p.tau_hat[bh] : 0.0;
    float umax = neg_inf(), lmx = neg_inf();
    double mass = 0.0;
    float* lo_out = p.lows + bh * (size_t)p.ws_stride * ps + (size_t)i * ps;
    const auto token = [&](int tk, int s) {
        float up;
        double lo;
        rb_token(r, s, slope, (double)(i * ps + tk) - t.q_pos, &up, &lo);
        const float lf = rb_f32_down(lo);
        lo_out[tk] = lf;
        umax = umax > up ? umax : up;
        lmx = lmx > lf ? lmx : lf;
        if (PASS == 1 && !p.softmax) {
            const double z = __dsub_rn(__dmul_rn(p.a, (double)up), th);  // the CPU's a·u − τ̂
            if (z > 0.0) mass += rb_pow_bm1(p, z) * z;
        }
    };
    if (held) {
#pragma unroll
        for (int k = 0; k < RB_TPL; ++k) {
            const int tk = sub + 8 * k;
            if (tk < ps) token(tk, dp4 ? rb_sketch_dot4_packed(rw[k], s_pk[u], RB_W) : 0);
        }
    } else {
        for (int tk = sub; tk < ps; tk += 8) {
            const unsigned char* row = sk + (size_t)tk * p.sketch_rb;
            const int s = dp4 ? rb_sketch_dot4_packed(reinterpret_cast<const unsigned*>(row), s_pk[u], HEAD_DIM / 8)
                              : ((sketch && r.kind == 2) ? rb_sketch_dot(row, p.sketch_bits, qw, HEAD_DIM) : 0);
            token(tk, s);
        }
    }
#pragma unroll
    for (int off = 1; off < 8; off <<= 1) {
        const float ou = __shfl_xor_sync(gm, umax, off), ol = __shfl_xor_sync(gm, lmx, off);
        umax = umax > ou ? umax : ou;
        lmx = lmx > ol ? lmx : ol;
        mass += __shfl_xor_sync(gm, mass, off);
    }
    if (sub == 0) {
        p.best[bh * p.ws_stride + i] = (double)umax;
        p.lmax[bh * p.ws_stride + i] = lmx;
        if (PASS == 1 && !p.softmax) p.mass[bh * p.ws_stride + i] = mass;
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) rob_tok1(const RobustParams p) {
    PDL_ENTRY();
    rob_tok<1>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_tok2(const RobustParams p) {
    PDL_ENTRY();
    rob_tok<2>(p);
}

// ---------------------------------------------------------------------------------------
// τ_lb (rob_cmax → rob_ccnt → rob_cpack → rob_solve, once per phase). The candidates are the
// lower ends l of the pages bounded so far (PHASE 1: pass 1; PHASE 2: both passes) with
// a·(l − M), M the largest of them, > −1, listed in page order and token order: rob_cmax
// takes each chunk's largest lower end, rob_ccnt counts each chunk's candidates, rob_cpack
// writes them at the chunk's offset (the counts of the chunks before it), and rob_solve
// (one CTA per head) solves on that list. A chunk is RB_CH = BLOCK closed pages (one per
// thread); grid (nch_stride, tasks, tg), head blockIdx.z of the task. The list is the one a
// single CTA's page-order walk builds, so τ_lb does not depend on the chunking.

constexpr int RB_CH = BLOCK;
constexpr int RB_SCAP = 8192;  // candidates rob_solve reads from shared memory (32 KB)
constexpr int RB_UNR = 8;      // rob_solve: strided loads issued ahead of their in-order sums

template <int PHASE> __device__ __forceinline__ bool rb_in(int w) { return PHASE == 1 ? w == 1 : w != 0; }

// The largest lower end M of head row bh from the chunk maxima of chunks [0, nused) (a max:
// the same value in any order; every thread gets it).
__device__ __forceinline__ float rb_chunks_max(const RobustParams& p, size_t bh, int nused) {
    float m = neg_inf();
    for (int c = threadIdx.x; c < nused; c += BLOCK) m = fmaxf(m, p.cmax[bh * p.nch_stride + c]);
    return block_max<BLOCK>(m);
}

// Σ v[0..n) (ints: exact in any order; every thread gets it).
__device__ __forceinline__ int rb_chunks_sum(const int* v, int n) {
    int s = 0;
    for (int c = threadIdx.x; c < n; c += BLOCK) s += v[c];
    return block_sum_int<BLOCK>(s);
}

// Head row, chunk and task of a rob_cmax / rob_ccnt / rob_cpack CTA; false: nothing to do
// (the whole CTA returns).
struct RbChunk {
    RbTask t;
    size_t bh;
    int task, c, nused;
};
__device__ __forceinline__ bool rb_chunk(const RobustParams& p, RbChunk& k) {
    k.task = blockIdx.y;
    k.c = blockIdx.x;
    k.t = rb_task(p, k.task);
    if (k.t.closed <= 0 || p.task_bad[k.task] != 0 || k.c * RB_CH >= k.t.closed) return false;
    k.bh = (size_t)k.t.b * p.num_heads + k.t.h0 + blockIdx.z;
    k.nused = (k.t.closed + RB_CH - 1) / RB_CH;
    return true;
}

// Whether page i may hold candidates: closed, bounded so far, and its largest lower end
// passes the test (otherwise its lows are not read).
template <int PHASE>
__device__ __forceinline__ bool rb_page_on(const RobustParams& p, const RbChunk& k, int i, double Md) {
    return i < k.t.closed && rb_in<PHASE>(p.want[(size_t)k.task * p.ws_stride + i]) &&
           p.a * ((double)p.lmax[k.bh * p.ws_stride + i] - Md) > -1.0;
}

template <int PHASE> __device__ __forceinline__ void rob_cmax(const RobustParams& p) {
    RbChunk k;
    if (!rb_chunk(p, k)) return;
    const int i = k.c * RB_CH + threadIdx.x;
    float m = neg_inf();
    if (i < k.t.closed && rb_in<PHASE>(p.want[(size_t)k.task * p.ws_stride + i]))
        m = fmaxf(m, p.lmax[k.bh * p.ws_stride + i]);
    m = block_max<BLOCK>(m);
    if (threadIdx.x == 0) p.cmax[k.bh * p.nch_stride + k.c] = m;
}

template <int PHASE> __device__ __forceinline__ void rob_ccnt(const RobustParams& p) {
    RbChunk k;
    if (!rb_chunk(p, k)) return;
    const float M = rb_chunks_max(p, k.bh, k.nused);
    const double Md = (double)M;
    const int ps = p.page_size;
    const int i = k.c * RB_CH + threadIdx.x;
    int cnt = 0;
    if (M > neg_inf() && rb_page_on<PHASE>(p, k, i, Md)) {
        const float* lows = p.lows + k.bh * (size_t)p.ws_stride * ps + (size_t)i * ps;
        for (int t = 0; t < ps; ++t) cnt += p.a * ((double)lows[t] - Md) > -1.0;
    }
    cnt = block_sum_int<BLOCK>(cnt);
    if (threadIdx.x == 0) p.ccnt[k.bh * p.nch_stride + k.c] = cnt;
}

template <int PHASE> __device__ __forceinline__ void rob_cpack(const RobustParams& p) {
    RbChunk k;
    if (!rb_chunk(p, k)) return;
    const float M = rb_chunks_max(p, k.bh, k.nused);
    if (p.softmax) {
        // Softmax mode: no list (rob_ccnt does not run); the chunk's Σ exp(l − M) over the
        // lower ends of its pages (token order within a page, then the block's fixed order)
        // into mass[bh, chunk] (mass is otherwise unused there), for rob_solve's L.
        if (!(M > neg_inf())) return;  // uniform: no lower ends anywhere (rob_solve: L = −∞)
        const double Md = (double)M;
        const int ps = p.page_size;
        const int i = k.c * RB_CH + threadIdx.x;
        double S = 0.0, z1 = 0.0, z2 = 0.0;
        if (rb_page_on<PHASE>(p, k, i, Md)) {
            const float* lows = p.lows + k.bh * (size_t)p.ws_stride * ps + (size_t)i * ps;
            for (int t = 0; t < ps; ++t) S += exp(__dsub_rn((double)lows[t], Md));
        }
        block_sum3<BLOCK>(S, z1, z2);
        if (threadIdx.x == 0) p.mass[k.bh * p.ws_stride + k.c] = S;
        return;
    }
    const int off = rb_chunks_sum(p.ccnt + k.bh * p.nch_stride, k.c);
    if (!(M > neg_inf())) return;  // uniform: no candidates anywhere
    const double Md = (double)M;
    const int ps = p.page_size;
    const int i = k.c * RB_CH + threadIdx.x;
    const bool on = rb_page_on<PHASE>(p, k, i, Md);
    const float* lows = p.lows + k.bh * (size_t)p.ws_stride * ps + (size_t)i * ps;
    int cnt = 0;
    if (on)
        for (int t = 0; t < ps; ++t) cnt += p.a * ((double)lows[t] - Md) > -1.0;
    int total;
    int at = off + block_excl_scan<BLOCK>(cnt, &total);
    if (on && cnt > 0) {
        float* cand = p.cand + k.bh * (size_t)p.ws_stride * ps;
        for (int t = 0; t < ps; ++t) {
            const float l = lows[t];
            if (p.a * ((double)l - Md) > -1.0) cand[at++] = l;
        }
    }
}

// τ_lb of head blockIdx.x of a task from the candidate list, the trust test (PHASE 1) and the
// threshold; softmax mode: L (the log-sum-exp of the candidates) into thr. grid (tg, tasks),
// block BLOCK.
template <int PHASE> __device__ __forceinline__ void rob_solve(const RobustParams& p) {
    __shared__ float s_c[RB_SCAP];
    const int task = blockIdx.y, g = blockIdx.x;
    const RbTask t = rb_task(p, task);
    if (t.closed <= 0 || p.task_bad[task] != 0) return;
    const int tid = threadIdx.x;
    const size_t bh = (size_t)t.b * p.num_heads + t.h0 + g;
    const int* want = p.want + (size_t)task * p.ws_stride;
    const int ps = p.page_size;
    const int nused = (t.closed + RB_CH - 1) / RB_CH;
    if (p.softmax) {
        // L = M + ln S, S = Σ exp(l − M) (tau/entmax.rs logsumexp, f64) from rob_cpack's chunk
        // partial sums: chunks tid, tid + BLOCK, ... in that order, then the block's order.
        const float M = rb_chunks_max(p, bh, nused);
        double S = 0.0, z1 = 0.0, z2 = 0.0;
        if (M > neg_inf())
            for (int c = tid; c < nused; c += BLOCK) S += p.mass[bh * p.ws_stride + c];
        block_sum3<BLOCK>(S, z1, z2);
        if (tid == 0) p.thr[bh] = M > neg_inf() ? rb_sm_lse((double)M, S) : gauss_ninf();
        return;
    }
    // The trust test's mass (pass 1): page-strided partial sums (pages tid, tid + BLOCK, ...
    // added in that order; the loads of RB_UNR of them issued first), then the block's fixed
    // order. mass is read for every page (a workspace, always allocated) and added only where
    // the page was bounded in pass 1.
    double ms = 0.0, z1 = 0.0, z2 = 0.0;
    if (PHASE == 1) {
        const double* mp = p.mass + bh * p.ws_stride;
        for (int i0 = tid; i0 < t.closed; i0 += RB_UNR * BLOCK) {
            int w[RB_UNR];
            double v[RB_UNR];
#pragma unroll
            for (int j = 0; j < RB_UNR; ++j) {
                const int i = i0 + j * BLOCK;
                w[j] = i < t.closed ? want[i] : 0;
                v[j] = i < t.closed ? mp[i] : 0.0;
            }
#pragma unroll
            for (int j = 0; j < RB_UNR; ++j)
                if (w[j] == 1) ms += v[j];
        }
        block_sum3<BLOCK>(ms, z1, z2);
    }
    const float M = rb_chunks_max(p, bh, nused);
    double tlb = gauss_ninf();
    if (M > neg_inf()) {
        const double Md = (double)M;
        const int n = rb_chunks_sum(p.ccnt + bh * p.nch_stride, nused);
        const float* cand = p.cand + bh * (size_t)p.ws_stride * ps;
        // The same values from shared memory where they fit (same order: same sums).
        const bool sh = n <= RB_SCAP;
        if (sh)
            for (int k = tid; k < n; k += BLOCK) s_c[k] = cand[k];
        __syncthreads();
        const float* src = sh ? s_c : cand;
        // Σ [z − τ]_+^β = 1 with z = a·l (robust_bound.cuh), fixed-order block sums.
        const auto ev = [&](double tau, double& f, double& df) {
            double z = 0.0;
            f = 0.0;
            df = 0.0;
            // Candidates tid, tid + BLOCK, ... in that order (RB_UNR loads issued first).
            for (int k0 = tid; k0 < n; k0 += RB_UNR * BLOCK) {
                float v[RB_UNR];
#pragma unroll
                for (int j = 0; j < RB_UNR; ++j) {
                    const int k = k0 + j * BLOCK;
                    v[j] = k < n ? src[k] : 0.f;
                }
#pragma unroll
                for (int j = 0; j < RB_UNR; ++j) {
                    if (k0 + j * BLOCK >= n) break;
                    const double x = p.a * (double)v[j] - tau;
                    if (x > 0.0) {
                        const double pw = rb_pow_bm1(p, x);
                        f += pw * x;
                        df += pw;
                    }
                }
            }
            block_sum3<BLOCK>(f, df, z);
        };
        // Start one histogram bin below τ (count bounds of the candidates' 256-bin histogram,
        // attn.cu `hist_bracket`): from aM − 1 Newton needs a step per halving of the
        // distance, from there two or three. The bracket stays [aM − 1, aM], so a start
        // above τ only costs steps.
        __shared__ int s_h[HIST_BINS];
        __shared__ double s_pwb[HIST_BINS + 1];
        __shared__ float s_brk[2];
        const double aMd = p.a * Md;
        double start = aMd - 1.0;
        if (p.hist_start) {
            for (int k = tid; k < HIST_BINS; k += BLOCK) s_h[k] = 0;
            if (p.kint == 0)
                for (int k = tid; k <= HIST_BINS; k += BLOCK) s_pwb[k] = pow((double)k * (1.0 / HIST_BINS), p.beta);
            __syncthreads();
            for (int k = tid; k < n; k += BLOCK) atomicAdd(&s_h[hist_bin((float)(p.a * (double)src[k] - aMd))], 1);
            __syncthreads();
            if (p.kint != 0)
                hist_bracket_poly(s_h, p.kint, s_brk);
            else
                hist_bracket(s_h, s_pwb, s_brk);
            __syncthreads();
            start = aMd + (double)s_brk[0];
        }
        tlb = rb_entmax_solve_from(aMd, p.beta, start, ev);
    }
    if (tid == 0) {
        const double th = p.tau_hat[bh];
        if (PHASE == 1) {
            const int tr = ms >= 1.0 ? 1 : 0;
            p.trust[bh] = tr;
            p.thr[bh] = tr ? fmax(tlb, th) : tlb;
        } else {
            const double T = p.trust[bh] ? fmax(tlb, th) : tlb;
            p.thr[bh] = T;
            p.tau_hat[bh] = T;
        }
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) rob_cmax1(const RobustParams p) {
    PDL_ENTRY();
    rob_cmax<1>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_ccnt1(const RobustParams p) {
    PDL_ENTRY();
    rob_ccnt<1>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_cpack1(const RobustParams p) {
    PDL_ENTRY();
    rob_cpack<1>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_solve1(const RobustParams p) {
    PDL_ENTRY();
    rob_solve<1>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_cmax2(const RobustParams p) {
    PDL_ENTRY();
    rob_cmax<2>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_ccnt2(const RobustParams p) {
    PDL_ENTRY();
    rob_ccnt<2>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_cpack2(const RobustParams p) {
    PDL_ENTRY();
    rob_cpack<2>(p);
}
extern "C" __global__ void __launch_bounds__(BLOCK) rob_solve2(const RobustParams p) {
    PDL_ENTRY();
    rob_solve<2>(p);
}

// ---------------------------------------------------------------------------------------
// The kept list: rob_pcnt counts each chunk's kept pages and pages bounded per token, rob_pack
// writes the chunk's kept slots at its offset (the kept counts of the chunks before it); the
// CTA of the last chunk appends the last page and the counts. grid (nch_stride, tasks), block
// BLOCK, chunks of RB_CH closed pages.

// Whether closed page i (< closed) is kept; *nb += 1 where it was bounded per token.
// `per_page`: the softmax mode's share drop_mass / closed (sT holds L there).
__device__ __forceinline__ int rb_keep(const RobustParams& p, size_t bh0, const int* want, const double* sT, bool bad,
                                       int i, double per_page, int* nb) {
    int keep = 0;
    if (bad || i < p.sinks) {
        keep = 1;
    } else {
        const bool bd = want[i] != 0;
        *nb += bd;
        for (int g = 0; g < p.tg; ++g) {
            const size_t at = (bh0 + g) * p.ws_stride + i;
            double mu = p.box_hi[at];
            if (bd) mu = fmin(p.best[at], mu);
            keep |= p.softmax ? rb_sm_heavy(p.page_size, mu, sT[g], per_page) : p.a * mu > sT[g];
        }
    }
    if (!bad && i < p.sinks) *nb += want[i] != 0;
    return keep;
}

extern "C" __global__ void __launch_bounds__(BLOCK) rob_pcnt(const RobustParams p) {
    PDL_ENTRY();
    __shared__ double s_T[8];
    const int task = blockIdx.y, c = blockIdx.x;
    const RbTask t = rb_task(p, task);
    if (t.closed <= 0 || c * RB_CH >= t.closed) return;
    const int tid = threadIdx.x;
    const size_t bh0 = (size_t)t.b * p.num_heads + t.h0;
    const bool bad = p.task_bad[task] != 0;
    if (tid < p.tg) s_T[tid] = p.thr[bh0 + tid];
    __syncthreads();
    const int* want = p.want + (size_t)task * p.ws_stride;
    const int i = c * RB_CH + tid;
    int keep = 0, nb = 0;
    if (i < t.closed) keep = rb_keep(p, bh0, want, s_T, bad, i, p.drop_mass / (double)t.closed, &nb);
    keep = block_sum_int<BLOCK>(keep);
    nb = block_sum_int<BLOCK>(nb);
    if (tid == 0) {
        int* pc = p.pcnt + (size_t)task * 2 * p.nch_stride;
        pc[c] = keep;
        pc[p.nch_stride + c] = nb;
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) rob_pack(const RobustParams p) {
    PDL_ENTRY();
    __shared__ double s_T[8];
    const int task = blockIdx.y, c = blockIdx.x;
    const RbTask t = rb_task(p, task);
    const int tid = threadIdx.x;
    u32* L = p.lists + (size_t)task * p.list_stride;
    const size_t bh0 = (size_t)t.b * p.num_heads + t.h0;
    if (t.closed <= 0) {
        if (c == 0) {
            if (tid == 0) {
                L[0] = 0;
                p.list_counts[task] = 1;
                p.bounded[task] = 0;
            }
            if (tid < p.tg) p.tau_hat[bh0 + tid] = __longlong_as_double(0x7ff8000000000000LL);
        }
        return;
    }
    if (c * RB_CH >= t.closed) return;
    const bool bad = p.task_bad[task] != 0;
    if (tid < p.tg) s_T[tid] = p.thr[bh0 + tid];
    __syncthreads();
    const int* want = p.want + (size_t)task * p.ws_stride;
    const int* pc = p.pcnt + (size_t)task * 2 * p.nch_stride;
    const int nused = (t.closed + RB_CH - 1) / RB_CH;
    const int off = rb_chunks_sum(pc, c);
    const int i = c * RB_CH + tid;
    int keep = 0, nb = 0;
    if (i < t.closed) keep = rb_keep(p, bh0, want, s_T, bad, i, p.drop_mass / (double)t.closed, &nb);
    int round;
    const int at = block_excl_scan<BLOCK>(keep, &round);
    if (keep) L[off + at] = (u32)i;
    if (c == nused - 1) {  // uniform: the CTA of the last chunk
        const int nbt = rb_chunks_sum(pc + p.nch_stride, nused);
        if (tid == 0) {
            const int o = off + round;
            L[o] = (u32)t.closed;
            p.list_counts[task] = o + 1;
            p.bounded[task] = bad ? 0 : nbt;
        }
    }
}
