// Paged split-K decode attention over a list of pages per task (attention/cpu.rs).
//
// A task is one sequence, one kv head and TG query heads (the whole GQA group for dense or
// shared selection, one head for per-head selection). Its page list (all pages, or the kept
// slots of a selection, last page last) is split into `nch` chunks; CTA (chunk, task) reads
// the K rows of its chunk once for all TG heads.
//
// α > 1 (entmax), four kernels:
//   attn_entmax_scores  K -> scores in shared memory -> chunk max, folded into a running
//                       per-head maximum (integer atomicMax on order-preserving keys) ->
//                       the chunk's candidates, z > z_running_max − 1 (a superset of the
//                       only tokens that can carry weight), written compactly.
//   attn_entmax_filter  every chunk keeps, in place, its candidates with d = z − z_max > −1
//                       against the final maximum and adds them to a per-head 256-bin count
//                       histogram of d (one warp per chunk, many CTAs, integer atomics).
//   attn_entmax_refilter only for the exact τ at α < 1.5 (β > 2), where the survivors (scores
//                       within 1/(α−1) of the maximum) can outnumber the tail's shared memory
//                       many times: every CTA computes each head's histogram bracket as the
//                       tail will, and each warp keeps, in place, its chunk's survivors with d
//                       above the bracket's lower end (the only ones the tail would keep when
//                       they do not fit, and the only ones that can carry weight).
//   attn_entmax_tail    one CTA per task: per head, the histogram gives a bracket [lo, hi] of
//                       the relative threshold t (count bounds of Σ(d−t)_+^β, one bin of slack
//                       each side); the survivors go to shared memory in chunk order (all of
//                       them when they fit, else those with d > lo, the only ones that can
//                       carry weight); the exact t: for β ∈ {1, 2, 3} from power sums (those
//                       above the bracket summed, the few inside it ranked by one warp and
//                       each candidate support solved in closed form: solve_closed), else
//                       safeguarded Halley on G = (Σ(d−t)_+^β)^{1/β} − 1 inside the bracket
//                       (tau/entmax.rs); V gathered for small supports. Streams
//                       from the chunk lists only if even the d > lo set does not fit. No
//                       cross-CTA handshake. Short lists (exact τ, α ∈ {2, 1.5, 4/3}, at
//                       most `tail_lean` survivors) skip the histogram bracket and closed
//                       form: lean_solve, Halley from t = −1 with one barrier a step, which
//                       stops once a pass's support is the root's (lean_closed: that
//                       support's root in closed form). attn_entmax_tail15 is the same
//                       kernel compiled for α = 1.5 and the exact τ (less cold code), and
//                       attn_entmax_tail15_lean that one with only the lean path, for plans
//                       whose every list fits shared memory (half its code).
//   attn_entmax_values  only for heads whose support was large: V for the support, split over
//                       chunks, plain-sum combine (τ is global), last CTA sums. Exits at once
//                       otherwise.
// α = 1 (softmax), one kernel:
//   attn_softmax        scores, chunk max, exp, V for every token; the last CTA merges the
//                       chunks by log-sum-exp.
// For f16 K/V with 2–4 query heads a task (GQA groups) the K pass of every kernel that scores
// rows (score_rows) and attn_softmax's V pass run on tensor cores (MMA_SCORES / MMA_VALUES in
// common.cuh); elsewhere by FMA.
// Every sum has a fixed order (no float atomics): results are deterministic.
// A score that is not finite is written as +inf (finite_or_inf), so its head's maximum is
// +inf: the tail skips that head (output and τ NaN) and raises the status word the host
// reads (GpuDecoder::check_finite); an output element that is not finite raises it too.

// Whether this compile defines the file's kernels: 0 where another family's kernels only use
// its device code (ctx.rs, Family); every kernel unless told otherwise.
#ifndef ATTN_KERNELS
#define ATTN_KERNELS 1
#endif

// Development switch (`ENTMAXKV_DEFINES="TAU_CLOSED_CODE=0"`): compiles the exact τ's ranked
// closed form (solve_closed) out of the tails, to time what its code costs where it does
// not run (session 16: code that never runs costs time after an L2 flush). The default
// keeps it; `ENTMAXKV_TAU_CLOSED=0` skips it at run time with the code still there.
#ifndef TAU_CLOSED_CODE
#define TAU_CLOSED_CODE 1
#endif

// Development switches of the K pass (attn_entmax_scores), off by default:
// SCORES_L2PF=<n> bulk L2 prefetches n batches ahead (FMA scorer); SCORES_PROF=1 global-timer
// stamps of every CTA's phases into prof[16 + 4·(task·nch + chunk) + k] (start, pages
// loaded, K summed, end; GpuDecoder::scores_profile, `ENTMAXKV_PROFILE_SCORES`).
#ifndef SCORES_L2PF
#define SCORES_L2PF 0
#endif
#ifndef SCORES_PROF
#define SCORES_PROF 0
#endif
#if SCORES_PROF
__device__ __forceinline__ unsigned long long scores_gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#define SCORES_STAMP(k) \
    if (p.prof && threadIdx.x == 0) p.prof[16 + ((size_t)task * p.nch + c) * 4 + (k)] = (long long)scores_gtimer();
#else
#define SCORES_STAMP(k)
#endif

struct AttnParams {
    const kv_t* k;
    const kv_t* v;
    const u32* block_tables;
    const int* seq_lens;
    const int* rows;         // [B] cache row of batch entry b
    const u32* lists;        // [tasks, list_stride] page slots; null = every page
    const int* list_counts;  // [tasks]
    const float* q;          // [B, H, D]
    const float* slopes;     // [H] or null
    float* cand_s;           // [tasks, nch, TG, caprows]
    u32* cand_pos;           // same: physical row, page id · page_size + row in page
    int* cand_cnt;           // [tasks, nch, TG]
    u32* gmax;               // [tasks, TG] running max score key (0 between steps)
    int* hist;               // [tasks, TG, HIST_BINS] survivor histogram of d (0 between steps)
    long long* prof;         // null, or [16]: tail phase clocks of task 0 head 0 (development)
    u32* counters;           // [tasks]
    u32* vcounters;          // [tasks]
    int* vflag;              // [B, H]: 1 = attn_entmax_values does this head's V
    float* part_o;           // [tasks, nch, TG, D]
    float* part_m;           // [tasks, nch, TG]
    float* part_l;           // [tasks, nch, TG]
    int* part_flag;          // [tasks, nch, TG]
    float* head_m;           // [B, H] max score (s-space)
    float* head_t;           // [B, H] τ relative to (α−1)·max
    float* head_inv;         // [B, H] 1 / Σ weights
    double* tau;             // [B, H] τ (z-space; softmax: log-sum-exp)
    int* support;            // [B, H]
    float* out;              // [B, H, D]
    // The `certified` strategy (cert.cu); null otherwise.
    float* cand_u;           // like cand_s: upper-end list of cert_bounds (rows in cand_pos)
    u32* cand_lpos;          // like cand_s: its logical positions (ALiBi only)
    double* tau_lb;          // [B, H] τ_lb, the entmax τ of the lower ends
    u32* gmag;               // [tasks, TG] score magnitude key (0 between steps)
    u32* gslack;             // [tasks, TG] key of −(smallest upper-list slack) (0 between steps)
    int* cert_cnt;           // [tasks, nch, TG] upper-end list length, then candidates scored
    int* cert_pages;         // [tasks, nch, TG] pages they lie on
    int* cert_flag;          // [B, H] 1 = the exclusion margins held (certified)
    const st_t* smin;        // page minima / maxima rows [num_pages, H_kv, D]
    const st_t* smax;
    const unsigned char* sketch;  // [num_pages, H_kv, page_size, row_bytes]
    const double* tau_hat;   // [B, H] τ̂ of the selection (fixed / corrected τ modes), or null
    u32* status;             // [2]: flags (1 a score, 2 an output not finite), ~(first b·H + h)
                             // (atomicMax); read and cleared by the host (GpuDecoder::check_finite)
    double a_d;              // α − 1
    double beta_d;           // 1 / (α − 1)
    float scale;
    float a;
    float beta;
    int alpha_code;          // 1 softmax, 2 sparsemax, 15 entmax15, 13 (α = 4/3), 0 generic
    int num_heads;
    int num_kv_heads;
    int group;
    int tasks_per_b;
    int page_size;
    int bt_stride;
    int list_stride;
    int nch;
    int ppc_max;
    int cap;                 // candidates the solver holds in shared memory
    int small_support;       // the solver CTA gathers V itself up to this support (above
                             // NCH_MAX / 2: its list follows the candidates in shared memory)
    int has_alibi;
    int sketch_bits;
    int sketch_row_bytes;
    int cert_phase;          // 1: the filter and tail solve τ_lb on the lower ends
    int tau_mode;            // 0 exact, 1 fixed (τ̂), 2 corrected (τ̂ + tau_iters Halley steps)
    int tau_iters;
    int wave_chunks;         // chunks per task that fill one resident wave of CTAs
    int tau_closed;          // 1: exact τ by power sums for β ∈ {1, 2, 3} (solve_closed)
    int tail_lean;           // longest list the lean path (lean_solve) takes; 0: none
    int lean_closed;         // 1: lean_solve ends with the closed-form root of its support (lean_closed)
    int pre_wait;            // 1: attn_entmax_scores follows a selection kernel and reads its
                             // row and length before griddepcontrol.wait (PDL_PRE)
    int chunk_major;         // 1: CTAs take (task, chunk) chunk-major (cta_task_chunk)
};
#ifdef EXPECT_ATTN_SIZE
static_assert(sizeof(AttnParams) == EXPECT_ATTN_SIZE, "AttnParams layout differs from Rust");
#endif

struct TaskInfo {
    int b, h0, kvh, row, len, npages, n;
};

// `PRE`: read before griddepcontrol.wait, by a kernel that is not the step's first: through
// L2 (ld.cg), since these words were written by launches that have completed (the previous
// launch waited for them) but not by the previous launch itself (see PDL_PRE in common.cuh).
// `with_n`: also the list count (not where the previous launch is the selection writing it;
// t.n is then the page count).
template <bool PRE> __device__ __forceinline__ int task_ld(const int* x) {
    if constexpr (PRE) return __ldcg(x);
    else return *x;
}
template <bool PRE = false>
__device__ __forceinline__ TaskInfo task_info(const AttnParams& p, int task, bool with_n = true) {
    TaskInfo t;
    t.b = task / p.tasks_per_b;
    const int j = task - t.b * p.tasks_per_b;
    t.h0 = j * TG;
    t.kvh = t.h0 / p.group;
    t.row = task_ld<PRE>(p.rows + t.b);
    t.len = task_ld<PRE>(p.seq_lens + t.row);
    t.npages = (t.len + p.page_size - 1) / p.page_size;
    t.n = p.lists && with_n ? task_ld<PRE>(p.list_counts + task) : t.npages;
    return t;
}

// The (task, chunk) of a CTA of a (nch, tasks) grid. The hardware dispatches CTAs in linear
// order (x fastest), and a selection's short lists leave a task's later chunks empty
// (chunk_range), so task-major order fills each resident wave mostly with empty CTAs of one
// task (session 20 run 1, Gaussian 1M: the kept-page K pass started in three generations,
// 15 µs apart). Chunk-major (`p.chunk_major`: the CTA of linear index L takes task L mod
// tasks, chunk L div tasks), the first wave holds every task's first chunks: 1–4% at B = 1
// after a selection (session 20 runs 2, 4). The plan asks for it with one head a task after
// a selection; modules of 2–4 heads a task do not compile it in, since its index arithmetic
// cost the GQA shape's tensor-core K pass registers and 27% (session 20 runs 4–5).
// `ENTMAXKV_DEFINES="CTA_CHUNK_MAJOR=0"` (development) leaves it out everywhere.
#ifndef CTA_CHUNK_MAJOR
#define CTA_CHUNK_MAJOR (TG == 1)
#endif
__device__ __forceinline__ void cta_task_chunk(const AttnParams& p, int& task, int& c) {
#if CTA_CHUNK_MAJOR
    if (p.chunk_major) {
        const int lin = blockIdx.y * gridDim.x + blockIdx.x;
        task = lin % gridDim.y;
        c = lin / gridDim.y;
        return;
    }
#endif
    task = blockIdx.y;
    c = blockIdx.x;
}

// Pages [pbeg, pend) of the task's list go to chunk c. A short list (a selection's kept
// pages) is spread over one resident wave of chunks, up to PPC_SPREAD pages each, rather than
// over all nch chunks: short CTAs that read a few pages each leave the bandwidth unused
// (dev log run 18: Gaussian 1M scores 62 → 54 µs). Chunks past the list's end stay empty.
// `ENTMAXKV_DEFINES="PPC_SPREAD=<n>"` (development) sets the cap.
#ifndef PPC_SPREAD
#define PPC_SPREAD 64
#endif
__device__ __forceinline__ void chunk_range(const AttnParams& p, int n, int c, int& pbeg, int& pend) {
    int ppc = (n + p.nch - 1) / p.nch;
    const int spread = min(PPC_SPREAD, (n + p.wave_chunks - 1) / p.wave_chunks);
    if (ppc < spread) ppc = spread;
    if (ppc < 1) ppc = 1;
    if (ppc > p.ppc_max) ppc = p.ppc_max;
    pbeg = c * ppc;
    pend = min(n, pbeg + ppc);
}

// Fixed τ mode: tokens with z = a·s > τ̂ carry weight even below the entmax range of the
// maximum, so candidates are also kept above this floor (+inf otherwise).
__device__ __forceinline__ float z_floor(const AttnParams& p, int bh) {
    if (p.tau_mode != 1 || !p.tau_hat) return pos_inf();
    const double t = p.tau_hat[bh];
    return isfinite(t) ? (float)t : pos_inf();
}

// x^β and the next two powers for β = B ∈ {1, 2, 3} known at compile time (no powf in the
// lean path's code).
template <int B> __device__ __forceinline__ void powers3_poly(float x, float& p0, float& p1, float& p2) {
    if (B == 1) {
        p0 = x; p1 = 1.f; p2 = 1.f / x;
    } else if (B == 2) {
        p0 = x * x; p1 = x; p2 = 1.f;
    } else {
        p1 = x * x; p0 = p1 * x; p2 = x;
    }
}

// x^β and the next two powers for the Halley sums (tau/entmax.rs `powers`).
__device__ __forceinline__ void powers3(float x, int code, float beta, float& p0, float& p1, float& p2) {
    if (code == 2) {
        powers3_poly<1>(x, p0, p1, p2);
    } else if (code == 15) {
        powers3_poly<2>(x, p0, p1, p2);
    } else if (code == 13) {
        powers3_poly<3>(x, p0, p1, p2);
    } else {
        p0 = powf(x, beta); p1 = p0 / x; p2 = p1 / x;
    }
}
__device__ __forceinline__ float weight_of(float x, int code, float beta) {
    if (code == 2) return x;
    if (code == 15) return x * x;
    if (code == 13) return x * x * x;
    return powf(x, beta);
}
__device__ __forceinline__ double pow_beta_d(double x, int code, double beta) {
    if (code == 2) return x;
    if (code == 15) return x * x;
    if (code == 13) return x * x * x;
    return pow(x, beta);
}

// One safeguarded Halley step on G = A0^{1/β} − 1 (tau/entmax.rs `g_halley_step`). B = 1, 2
// or 3: β = B, known at compile time (the lean tail); 0: any β.
template <int B> __device__ double g_halley_step_t(double t, double a0, double a1, double a2, double beta) {
    if (!(a0 > 0.0 && a1 > 0.0)) return __longlong_as_double(0x7ff8000000000000LL);
    double r;
    if (B == 1 || (B == 0 && beta == 1.0)) r = a0;
    else if (B == 2 || (B == 0 && beta == 2.0)) r = sqrt(a0);
    else if (B == 3) r = cbrt(a0);
    else r = pow(a0, 1.0 / beta);
    const double ia0 = 1.0 / a0;  // one division; the rest are products
    const double g = r - 1.0;
    const double g1 = -r * a1 * ia0;
    const double g2 = beta == 1.0 ? 0.0 : (beta - 1.0) * (r * ia0) * (a2 - a1 * a1 * ia0);
    const double ig1 = 1.0 / g1;
    const double newton = -g * ig1;
    const double corr = 0.5 * g * g2 * ig1 * ig1;
    const double step = (isfinite(corr) && fabs(corr) < 0.5) ? newton / (1.0 - corr) : newton;
    return t + step;
}
__device__ __forceinline__ double g_halley_step(double t, double a0, double a1, double a2, double beta) {
    return g_halley_step_t<0>(t, a0, a1, a2, beta);
}

__device__ __forceinline__ void load_q(const AttnParams& p, int b, int h0, int lane, float (&qr)[TG][COLS]) {
#pragma unroll
    for (int g = 0; g < TG; ++g) {
        const float* qh = p.q + ((size_t)b * p.num_heads + h0 + g) * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < CPL; ++i) {
            const int ch = lane + i * LANES;
#pragma unroll
            for (int j = 0; j < KV_VEC; ++j)
                qr[g][i * KV_VEC + j] = ch < CHUNKS ? qh[ch * KV_VEC + j] * p.scale : 0.f;
        }
    }
}

__device__ __forceinline__ const kv_t* kv_row(const kv_t* pool, const AttnParams& p, u32 page, int kvh, int tt) {
    return pool + ((size_t)page * p.num_kv_heads + kvh) * (size_t)p.page_size * HEAD_DIM + (size_t)tt * HEAD_DIM;
}

// Reduce-scatter of N per-lane partial sums over groups of L lanes: afterwards the lane
// holds the complete sums of rows held + i (i < RS_KEEP) in v[0..RS_KEEP). N − 1 shuffles
// per lane for N rows instead of N·log2(L). Returns `held`.
template <int N, int L> __device__ __forceinline__ int reduce_scatter(float (&v)[N], int lane) {
    int held = 0;
#pragma unroll
    for (int s = 0; (L >> (s + 1)) >= 1; ++s) {
        const int o = L >> (s + 1);
        const int c = N >> s;  // values still held before this step
        if (c > 1) {
            const int h = c >> 1;
            const bool up = (lane & o) != 0;
#pragma unroll
            for (int i = 0; i < h; ++i) {
                const float send = up ? v[i] : v[i + h];
                const float keep = up ? v[i + h] : v[i];
                v[i] = keep + __shfl_xor_sync(FULL_MASK, send, o);
            }
            if (up) held += h;
        } else {
            v[0] += __shfl_xor_sync(FULL_MASK, v[0], o);
        }
    }
    return held;
}
// Rows each lane ends with, and the lane bits over which copies are duplicated.
constexpr int RS_KEEP = UNROLL >= LANES ? UNROLL / LANES : 1;
constexpr int RS_DUP = UNROLL >= LANES ? 0 : (LANES / UNROLL - 1);

// Scores of the chunk's rows for the TG heads into sc[g * caprows + r] (−inf past the
// sequence end). s_page / s_slot hold the chunk's page ids and slots.
// By FMA: LANES lanes a row, UNROLL rows a lane in flight, one reduce-scatter of the partial
// sums. Left to the compiler to inline or not, as before the tensor-core path (forced
// inline, attn_softmax took 0.0883 → 0.1049 ms at 128K, B = 1, on an H200: session 18).
// Always compiled: where the tensor-core score_rows below serves the attention, the
// certificate still scores its open page here (FMA_SCORER), since its bounds rest on this
// f32 dot's error bound (γ_D·Σ|q_d||k_d|); the tensor-core scores have none as tight
// (q's f16 lo part is subnormal for small elements, and the tensor core's f32 accumulation
// order is the hardware's).
// A score that is not finite (q·k overflowed f32, or a NaN/Inf key or bias) becomes +inf:
// the head's maximum is then +inf, which the tail reports (status) instead of solving τ on
// it, as the CPU returns Error::NonFinite for it. Positions past the sequence end stay −inf.
// `ENTMAXKV_DEFINES="SCORE_FINITE_CHECK=0"` leaves scores as they are (development, timing).
#ifndef SCORE_FINITE_CHECK
#define SCORE_FINITE_CHECK 1
#endif
__device__ __forceinline__ float finite_or_inf(float s) {
#if SCORE_FINITE_CHECK
    return fabsf(s) < pos_inf() ? s : pos_inf();
#else
    return s;
#endif
}
// Raises `flag` in the step's status word and keeps the smallest head index that raised one.
// Out of line: it never runs on valid input, and the tails' code is cold after an L2 flush.
// (Plain arguments: a kernel parameter's address would copy the struct to local memory.)
__device__ __noinline__ void report_non_finite(u32* status, int bh, u32 flag) {
    if (!status) return;
    atomicOr(status, flag);
    atomicMax(status + 1, ~(u32)bh);
}

#if MMA_SCORES
#define FMA_SCORER score_rows_fma
#else
#define FMA_SCORER score_rows
#endif
__device__ void FMA_SCORER(const AttnParams& p, const TaskInfo& ti, int nrows, const u32* s_page,
                           const u32* s_slot, const float (&qr)[TG][COLS], float* sc, int caprows) {
    const int lane = threadIdx.x % LANES, rg = threadIdx.x / LANES;
    const int ps = p.page_size;
    const float qpos = (float)ti.len - 1.0f;
#if SCORES_L2PF
    // Development (`ENTMAXKV_DEFINES="SCORES_L2PF=<batches>"`): bulk L2 prefetches of the
    // pages SCORES_L2PF batches ahead (one instruction a page), so DRAM stays busy while a
    // batch is summed and its loads then meet L2.
    const u32 pg_bytes = (u32)(ps * HEAD_DIM * KV::BYTES);
    auto l2_prefetch = [&](int r0) {
        const int pg0 = r0 / ps, pg1 = min(nrows, r0 + ROWGROUPS * UNROLL + ps - 1) / ps;
        const int pi = pg0 + (int)threadIdx.x;
        if (r0 < nrows && pi < pg1) {
            const kv_t* at = kv_row(p.k, p, s_page[pi], ti.kvh, 0);
            asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(at), "r"(pg_bytes) : "memory");
        }
    };
    for (int a = 1; a <= SCORES_L2PF; ++a) l2_prefetch(a * ROWGROUPS * UNROLL);
#endif
    for (int base = 0; base < nrows; base += ROWGROUPS * UNROLL) {
#if SCORES_L2PF
        l2_prefetch(base + (SCORES_L2PF + 1) * ROWGROUPS * UNROLL);
#endif
        uint4 buf[UNROLL][CPL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int r = base + u * ROWGROUPS + rg;
            if (r < nrows) {
                const int pi = r / ps;
                const kv_t* rowp = kv_row(p.k, p, s_page[pi], ti.kvh, r - pi * ps);
#pragma unroll
                for (int i = 0; i < CPL; ++i) {
                    const int ch = lane + i * LANES;
                    buf[u][i] = ch < CHUNKS ? ld_stream16(rowp, ch) : zero4();
                }
            } else {
#pragma unroll
                for (int i = 0; i < CPL; ++i) buf[u][i] = zero4();
            }
        }
        float acc[TG][UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int g = 0; g < TG; ++g) acc[g][u] = 0.f;
#pragma unroll
            for (int i = 0; i < CPL; ++i) {
                float x[KV_VEC];
                KV::unpack(buf[u][i], x);
#pragma unroll
                for (int g = 0; g < TG; ++g)
#pragma unroll
                    for (int j = 0; j < KV_VEC; ++j) acc[g][u] = fmaf(qr[g][i * KV_VEC + j], x[j], acc[g][u]);
            }
        }
        int held = 0;
#pragma unroll
        for (int g = 0; g < TG; ++g) held = reduce_scatter<UNROLL, LANES>(acc[g], lane);
        // Lane `lane` now holds the full sums of rows (slots) held + i, i < RS_KEEP; lanes
        // that differ only in the low RS_DUP bits hold the same rows and only one writes.
        if ((lane & RS_DUP) == 0) {
#pragma unroll
            for (int i = 0; i < RS_KEEP; ++i) {
                const int r = base + (held + i) * ROWGROUPS + rg;
                if (r < nrows) {
                    const int pi = r / ps;
                    const int pos = (int)s_slot[pi] * ps + (r - pi * ps);
                    const bool valid = pos < ti.len;
#pragma unroll
                    for (int g = 0; g < TG; ++g) {
                        float s = acc[g][i];
                        if (p.has_alibi) s += p.slopes[ti.h0 + g] * ((float)pos - qpos);
                        sc[g * caprows + r] = valid ? finite_or_inf(s) : neg_inf();
                    }
                }
            }
        }
    }
}

#if MMA_SCORES || MMA_VALUES
// mma.m16n8k16 (f16 in, f32 accumulate; fragment layouts as in the PTX ISA).
__device__ __forceinline__ void mma16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// x as f16 hi (lo_part = false) or its f16 remainder x − hi (lo_part = true).
__device__ __forceinline__ u32 f16_part(float x, bool lo_part) {
    const u16 hi = f2h(x);
    return lo_part ? (u32)f2h(x - h2f(hi)) : (u32)hi;
}
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

#endif

#if MMA_SCORES
// Tensor-core scoring (mma.m16n8k16: f16 in, f32 accumulate), for f16 K and 2–4 heads a task,
// where the FMA loop above is bound by issue, not memory (session 18: the GQA shape issued
// 0.72 warp instructions a cycle per scheduler at 56% of DRAM throughput on an H200).
// A warp takes 16-row tiles; lane (g = lane/4, c = lane%4) reads rows g and g + 8, dims
// [32b + 8c, +8) of each 32-dim block b: one 16-byte load a row and block. A dot product sums
// its dims in any order, so those 8 dims serve as the fragment's k pairs (2c, 2c+1) and
// (2c+8, 2c+9) of k-steps 2b and 2b+1, and q's B fragment takes the same dims. q (scaled, f32)
// is split in f16 as hi + lo: column h holds hi of head h, column 4 + h its lo, so one mma
// gives both and the score is their sum. k is exact in f16 and the products are exact; q is
// normalised (a power of two) and kept to 2^-22 of each element down to 2^-27 of its largest,
// to 2^-38 of the largest below, and the sums are the tensor core's f32: scores to
// f32 rounding level in practice (session 18: worst output rel 9.6e-7 against the CPU), with
// no bound as tight as the FMA dot's (the certificate keeps FMA_SCORER).
// (qr, the FMA path's q, is unused here.)
__device__ __forceinline__ void score_rows(const AttnParams& p, const TaskInfo& ti, int nrows, const u32* s_page,
                                           const u32* s_slot, const float (&)[TG][COLS], float* sc, int caprows) {
    constexpr int NB = HEAD_DIM / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int ps = p.page_size;
    // B fragments of q: bq[b][0..1] for k-step 2b, bq[b][2..3] for 2b + 1.
    u32 bq[NB][4];
    float up;
    {
        const int h = g & 3;
        float x[NB][8];
        float mx = 0.f;
        const float* qh = p.q + ((size_t)ti.b * p.num_heads + ti.h0 + h) * HEAD_DIM;
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                x[b][j] = h < TG ? qh[32 * b + 8 * c + j] * p.scale : 0.f;
                mx = fmaxf(mx, fabsf(x[b][j]));
            }
        // 2^-shift brings max |q| into [2^13, 2^14): hi stays finite in f16, and elements
        // down to 2^-27 of the largest keep normal f16 lo parts (2^-22 relative), however
        // small q is.
        const u32 mb = __reduce_max_sync(FULL_MASK, __float_as_uint(mx));
        const int ex = (int)((mb >> 23) & 0xff) - 127;
        const int shift = max(-100, min(ex - 13, 120));
        const float down = __int_as_float((127 - shift) << 23);
        up = __int_as_float((127 + shift) << 23);
        const bool lo_part = g >= 4;
#pragma unroll
        for (int b = 0; b < NB; ++b)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                bq[b][j] = f16_part(x[b][2 * j] * down, lo_part) | (f16_part(x[b][2 * j + 1] * down, lo_part) << 16);
    }
    const float qpos = (float)ti.len - 1.0f;
    const int ntiles = (nrows + 15) >> 4;
    for (int t = warp; t < ntiles; t += BLOCK / 32) {
        const int r0 = t * 16 + g, r1 = r0 + 8;
        uint4 X[NB], Y[NB];
        {
            const int pi0 = r0 / ps, pi1 = r1 / ps;
            const kv_t* row0 = r0 < nrows ? kv_row(p.k, p, s_page[pi0], ti.kvh, r0 - pi0 * ps) : nullptr;
            const kv_t* row1 = r1 < nrows ? kv_row(p.k, p, s_page[pi1], ti.kvh, r1 - pi1 * ps) : nullptr;
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                X[b] = row0 ? ld_stream16(row0, 4 * b + c) : zero4();
                Y[b] = row1 ? ld_stream16(row1, 4 * b + c) : zero4();
            }
        }
        float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            mma16816(d, X[b].x, Y[b].x, X[b].y, Y[b].y, bq[b][0], bq[b][1]);
            mma16816(d, X[b].z, Y[b].z, X[b].w, Y[b].w, bq[b][2], bq[b][3]);
        }
        // d: rows (r0, r0, r1, r1) × columns (2c, 2c + 1): lanes c < 2 hold hi, c + 2 the lo.
        float o[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i] = __shfl_xor_sync(FULL_MASK, d[i], 2);
        if (c < 2) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int r = i < 2 ? r0 : r1;
                const int h = 2 * c + (i & 1);
                if (h < TG && r < nrows) {
                    const int pi = r / ps;
                    const int pos = (int)s_slot[pi] * ps + (r - pi * ps);
                    float s = (d[i] + o[i]) * up;
                    if (p.has_alibi) s += p.slopes[ti.h0 + h] * ((float)pos - qpos);
                    sc[h * caprows + r] = pos < ti.len ? finite_or_inf(s) : neg_inf();
                }
            }
        }
    }
}
#endif


// Loads the chunk's page ids and slots into shared memory.
__device__ __forceinline__ void load_chunk_pages(const AttnParams& p, int task, const TaskInfo& ti, int pbeg,
                                                 int npg, u32* s_page, u32* s_slot) {
    for (int i = threadIdx.x; i < npg; i += BLOCK) {
        const u32 slot = p.lists ? p.lists[(size_t)task * p.list_stride + pbeg + i] : (u32)(pbeg + i);
        s_slot[i] = slot;
        s_page[i] = p.block_tables[(size_t)ti.row * p.bt_stride + slot];
    }
}

// ---------------------------------------------------------------------------------------
// V gather for a (pos, w) list in shared memory: acc over the list, cross-row-group sum by
// shuffles in each warp and then in `red` (BLOCK / 32 * HEAD_DIM floats), result (times
// `mul`) to dst[0..D) by the first threads. Rows are assigned to thread groups by index and
// every sum has a fixed order: deterministic.
__device__ void gather_v(const AttnParams& p, const TaskInfo& ti, const u32* lpos, const float* lw, int nsup,
                         float* red, float mul, float* dst, int bh = -1) {
    const int lane = threadIdx.x % LANES, rg = threadIdx.x / LANES;
    const int ps = p.page_size;
    float acc[COLS];
#pragma unroll
    for (int j = 0; j < COLS; ++j) acc[j] = 0.f;
    for (int base = 0; base < nsup; base += ROWGROUPS * UNROLL) {
        uint4 buf[UNROLL][CPL];
        float w[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int r = base + u * ROWGROUPS + rg;
            w[u] = 0.f;
            if (r < nsup) {
                const u32 pos = lpos[r];  // physical row: no block-table lookup
                const u32 page = pos / (u32)ps;
                const kv_t* rowp = kv_row(p.v, p, page, ti.kvh, (int)(pos - page * ps));
                w[u] = lw[r];
#pragma unroll
                for (int i = 0; i < CPL; ++i) {
                    const int ch = lane + i * LANES;
                    buf[u][i] = ch < CHUNKS ? ld_nc16(rowp, ch) : zero4();
                }
            } else {
#pragma unroll
                for (int i = 0; i < CPL; ++i) buf[u][i] = zero4();
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int i = 0; i < CPL; ++i) {
                float x[KV_VEC];
                KV::unpack(buf[u][i], x);
#pragma unroll
                for (int j = 0; j < KV_VEC; ++j) acc[i * KV_VEC + j] = fmaf(w[u], x[j], acc[i * KV_VEC + j]);
            }
        }
    }
    // The row groups of a warp summed by shuffles (same column, lanes LANES apart), then
    // the BLOCK / 32 warp rows through `red`: a sum of 8 per column, not of ROWGROUPS.
#pragma unroll
    for (int off = LANES; off < 32; off <<= 1)
#pragma unroll
        for (int j = 0; j < COLS; ++j) acc[j] += __shfl_xor_sync(FULL_MASK, acc[j], off);
    __syncthreads();
    const int w = threadIdx.x >> 5;
    if ((threadIdx.x & 31) < LANES) {
#pragma unroll
        for (int i = 0; i < CPL; ++i) {
            const int ch = lane + i * LANES;
            if (ch < CHUNKS) {
#pragma unroll
                for (int j = 0; j < KV_VEC; ++j) red[w * HEAD_DIM + ch * KV_VEC + j] = acc[i * KV_VEC + j];
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < HEAD_DIM; c += BLOCK) {
        float s = 0.f;
#pragma unroll
        for (int r = 0; r < BLOCK / 32; ++r) s += red[r * HEAD_DIM + c];
        dst[c] = s * mul;
        // An output (bh ≥ 0) not finite: a NaN/Inf V row in the support (device appends
        // are not checked on the host).
        if (bh >= 0 && !isfinite(s * mul)) report_non_finite(p.status, bh, 2u);
    }
    __syncthreads();
}

// ---------------------------------------------------------------------------------------
// The τ solve.

constexpr int HIST_BINS = 256;

__device__ __forceinline__ float key_to_float(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ size_t slot_index(const AttnParams& p, int task, int ci, int g) {
    return ((size_t)task * p.nch + ci) * TG + g;
}

// Chunks per CTA of the filter, solve and values kernels (one warp per chunk).
constexpr int CPB = BLOCK / 32;

__device__ __forceinline__ int hist_bin(float d) {
    int bin = (int)((d + 1.0f) * (float)HIST_BINS);
    return bin < 0 ? 0 : (bin >= HIST_BINS ? HIST_BINS - 1 : bin);
}

// One warp keeps, in place and in order, the chunk's candidates k with d = (α−1)(s − M) > thr
// (or z above the fixed-τ floor zf) for which also(k) holds, and counts their d into
// `hist_smem` (unless null). Returns the count kept (in every lane).
template <class Also>
__device__ int warp_compact_if(const AttnParams& p, size_t idx, int caprows, float M, float thr, int* hist_smem,
                                bool move_pos, float zf, Also also) {
    const int lane = threadIdx.x & 31;
    const int cnt = p.cand_cnt[idx];
    float* cs = p.cand_s + idx * (size_t)caprows;
    u32* cp = p.cand_pos + idx * (size_t)caprows;
    int kept = 0;
    constexpr int WU = 4;
    for (int k0 = 0; k0 < cnt; k0 += 32 * WU) {
        float sv[WU];
        u32 pv[WU];
#pragma unroll
        for (int u = 0; u < WU; ++u) {
            const int k = k0 + u * 32 + lane;
            sv[u] = 0.f;
            pv[u] = 0u;
            if (k < cnt) {
                sv[u] = cs[k];
                if (move_pos) pv[u] = cp[k];
            }
        }
#pragma unroll
        for (int u = 0; u < WU; ++u) {
            const int k = k0 + u * 32 + lane;
            const float d = p.a * (sv[u] - M);
            const bool keep = k < cnt && (d > thr || p.a * sv[u] > zf) && also(k);
            if (keep && hist_smem) atomicAdd(&hist_smem[hist_bin(d)], 1);
            const u32 m = __ballot_sync(FULL_MASK, keep);
            if (keep) {
                const int at = kept + __popc(m & ((1u << lane) - 1u));
                cs[at] = sv[u];
                if (move_pos) cp[at] = pv[u];
            }
            kept += __popc(m);
        }
    }
    return kept;
}

__device__ __forceinline__ int warp_compact(const AttnParams& p, size_t idx, int caprows, float M, float thr,
                                            int* hist_smem, bool move_pos = true,
                                            float zf = __int_as_float(0x7f800000)) {
    return warp_compact_if(p, idx, caprows, M, thr, hist_smem, move_pos, zf, [](int) { return true; });
}

constexpr double CERT_REL_SLACK = 1e-5;
constexpr double CERT_BOUND_ERR = 1.0 / 4194304.0;  // 2^-22
constexpr double CERT_ABS_SLACK = 1e-6;
// Least slack (z-space) of the bound pass's upper-end filter beyond the −1 entmax range (it
// grows with the foreseeable margin): a head is certified when its margin fits in it.
constexpr float CERT_PREFILTER = 1.0f / 64.0f;


// The task's score magnitude M (z-space factor aside): the largest Σ|w_d|·max|k_d| of its
// pages plus the largest |ALiBi| bias.
__device__ __forceinline__ double cert_mag(const AttnParams& p, int task, const TaskInfo& ti, int g) {
    double m = (double)key_to_float(p.gmag[(size_t)task * TG + g]);
    if (p.has_alibi) m += fabs((double)p.slopes[ti.h0 + g]) * (double)(ti.len > 0 ? ti.len - 1 : 0);
    return m;
}

// The exclusion margin of a head (z-space) for a threshold tau.
__device__ __forceinline__ double cert_margin(const AttnParams& p, double mag, double tau) {
    return CERT_REL_SLACK * (p.a_d * mag + fabs(tau)) + CERT_ABS_SLACK;
}


struct SolveCtx {
    int task, g;
    float M;
    bool in_smem;
    int n;            // candidates gathered
    const float* d;   // shared: d = (α−1)(s − M), when in_smem
    const int* off;   // shared: chunk offsets of the candidates (nch + 1)
};

// Chunk of flattened candidate j: the largest ci with off[ci] <= j.
__device__ __forceinline__ int chunk_of(const int* off, int nch, int j) {
    int lo = 0, hi = nch - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (off[mid] <= j) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Calls f(d) for every candidate of the head, each thread for a fixed subset in a fixed
// order (deterministic sums). From shared memory, or else straight from the chunk lists
// (flattened over chunks, four loads in flight per thread).
template <class F> __device__ void for_each_cand(const AttnParams& p, const SolveCtx& sc, int caprows, F f) {
    if (sc.in_smem) {
        for (int i = threadIdx.x; i < sc.n; i += BLOCK) f(sc.d[i]);
        return;
    }
    constexpr int GU = 4;
    for (int j0 = 0; j0 < sc.n; j0 += BLOCK * GU) {
        float sv[GU];
#pragma unroll
        for (int u = 0; u < GU; ++u) {
            const int j = j0 + u * BLOCK + threadIdx.x;
            sv[u] = 0.f;
            if (j < sc.n) {
                const int ci = chunk_of(sc.off, p.nch, j);
                sv[u] = __ldcg(p.cand_s + slot_index(p, sc.task, ci, sc.g) * (size_t)caprows + (j - sc.off[ci]));
            }
        }
#pragma unroll
        for (int u = 0; u < GU; ++u)
            if (j0 + u * BLOCK + (int)threadIdx.x < sc.n) f(p.a * (sv[u] - sc.M));
    }
}

// Sums (Σx^β, Σx^{β−1}, Σx^{β−2}) over x = d − t > 0, and the support size.
__device__ void halley_sums(const AttnParams& p, const SolveCtx& sc, int caprows, double t, double& A0, double& A1,
                            double& A2, int* support) {
    const float tf = (float)t;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    int cnt = 0;
    const int code = p.alpha_code;
    const float beta = p.beta;
    for_each_cand(p, sc, caprows, [&](float dd) {
        const float x = dd - tf;
        if (x > 0.f) {
            float p0, p1, p2;
            powers3(x, code, beta, p0, p1, p2);
            s0 += p0;
            s1 += p1;
            s2 += p2;
            ++cnt;
        }
    });
    A0 = s0;
    A1 = s1;
    A2 = s2;
    block_sum3<BLOCK>(A0, A1, A2);
    if (support) *support = block_sum_int<BLOCK>(cnt);
}

// Sums of four doubles over the block, in a fixed order (deterministic).
template <int NT> __device__ void block_sum4(double (&v)[4]) {
    __shared__ double ws4[4][NT / 32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] += __shfl_xor_sync(FULL_MASK, v[k], off);
    if (lane == 0)
#pragma unroll
        for (int k = 0; k < 4; ++k) ws4[k][w] = v[k];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        v[k] = ws4[k][0];
        for (int i = 1; i < NT / 32; ++i) v[k] += ws4[k][i];
    }
    __syncthreads();
}

// Root t' < min x of Σ_k (x_k − t')^β = 1 (β ∈ {1, 2, 3}) from the power sums X_j = Σ x^j
// over k values; NaN when there is none (β = 2: a negative discriminant). β = 2 uses the
// form without cancellation; β = 3 Newton from the left, where the sum is convex and
// decreasing in t' (monotone, quadratic convergence).
__device__ double power_sum_root(int beta, double k, double X1, double X2, double X3, double left) {
    if (beta == 1) return (X1 - 1.0) / k;
    if (beta == 2) {
        const double disc = X1 * X1 - k * (X2 - 1.0);
        if (!(disc >= 0.0)) return __longlong_as_double(0x7ff8000000000000LL);
        const double r = sqrt(disc);
        return X1 > 0.0 ? (X2 - 1.0) / (X1 + r) : (X1 - r) / k;
    }
    double t = left;
    for (int it = 0; it < 60; ++it) {
        const double f = X3 - 3.0 * t * X2 + 3.0 * t * t * X1 - k * t * t * t - 1.0;
        const double df = -3.0 * (X2 - 2.0 * t * X1 + k * t * t);
        if (!(df < 0.0)) break;
        const double step = -f / df;
        t += step;
        if (fabs(step) <= 1e-15 * fmax(1.0, fabs(t))) break;
    }
    return t;
}

// The exact τ (relative t) for β ∈ {1, 2, 3} in two block reductions instead of one per
// Halley step. The bracket [lo, hi) holds the root, so survivors with d > hi are in the
// support and those with d <= lo are not; their power sums (in x = d − hi, small near the
// root: no cancellation) take one pass. The m <= 31 ambiguous ones in (lo, hi] are ranked
// in one warp (descending, ties by index), whose lane j solves on the support "sure ∪ the
// j + 1 largest"; the largest valid support (smallest member above its root) is the entmax
// support (the sort-based algorithm on the sorted values). Returns false (Halley then
// solves) when the survivors are not in shared memory, m > 31, or nothing is valid.
__device__ bool solve_closed(const AttnParams& p, const SolveCtx& sc, double lo, double hi, double& t_out) {
    __shared__ float s_amb[32];
    __shared__ float s_sorted[32];
    __shared__ double s_t;
    __shared__ int s_ok;
    const int beta = p.alpha_code == 2 ? 1 : (p.alpha_code == 15 ? 2 : 3);
    double v[4] = {0.0, 0.0, 0.0, 0.0};  // count, X1, X2, X3 of the sure ones
    int amb = 0;
    for (int i = threadIdx.x; i < sc.n; i += BLOCK) {
        const double d = (double)sc.d[i];
        if (d > hi) {
            const double x = d - hi, x2 = x * x;
            v[0] += 1.0;
            v[1] += x;
            v[2] += x2;
            v[3] += x2 * x;
        } else if (d > lo) {
            ++amb;
        }
    }
    int m;
    int o = block_excl_scan<BLOCK>(amb, &m);
    if (m > 31) return false;  // every thread sees the same m
    if (amb)
        for (int i = threadIdx.x; i < sc.n; i += BLOCK) {
            const double d = (double)sc.d[i];
            if (d <= hi && d > lo) s_amb[o++] = sc.d[i];
        }
    block_sum4<BLOCK>(v);  // its barriers publish s_amb
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        // Rank descending, ties by list index: a permutation.
        if (lane < m) {
            const float a = s_amb[lane];
            int r = 0;
            for (int i = 0; i < m; ++i) {
                const float b = s_amb[i];
                r += (b > a || (b == a && i < lane)) ? 1 : 0;
            }
            s_sorted[r] = a;
        }
        __syncwarp();
        const double xv = lane < m ? (double)s_sorted[lane] - hi : 0.0;
        double c1 = xv, c2 = xv * xv, c3 = xv * xv * xv;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const double y1 = __shfl_up_sync(FULL_MASK, c1, off);
            const double y2 = __shfl_up_sync(FULL_MASK, c2, off);
            const double y3 = __shfl_up_sync(FULL_MASK, c3, off);
            if (lane >= off) {
                c1 += y1;
                c2 += y2;
                c3 += y3;
            }
        }
        const double left = lo - hi - 1.0;  // the sum is >= 1 there for any support of >= 1
        // Lane j < m: the sure ones and the j + 1 largest ambiguous (smallest member xv).
        bool ok = false;
        double t = 0.0;
        if (lane < m) {
            t = power_sum_root(beta, v[0] + (double)(lane + 1), v[1] + c1, v[2] + c2, v[3] + c3, left);
            ok = t < xv;
        }
        const u32 valid = __ballot_sync(FULL_MASK, ok);
        if (valid) {
            const int best = 31 - __clz(valid);
            const double tb = __shfl_sync(FULL_MASK, t, best);
            if (lane == 0) {
                s_t = tb;
                s_ok = 1;
            }
        } else if (lane == 0) {
            // The sure ones alone (they are in the support, so this is it when no ambiguous
            // one is).
            const double t0 = v[0] > 0.0 ? power_sum_root(beta, v[0], v[1], v[2], v[3], left) : 0.0;
            s_ok = (v[0] > 0.0 && t0 == t0) ? 1 : 0;
            s_t = t0;
        }
    }
    __syncthreads();
    t_out = hi + s_t;
    return s_ok != 0;
}

// Solves the relative threshold t in the bracket [lo, hi]; returns it and the mass at it.
__device__ double solve_t(const AttnParams& p, const SolveCtx& sc, int caprows, double lo, double hi,
                          double& mass, int& support) {
    const double beta = p.beta_d;
    double t = lo;
    double A0, A1, A2;
    int sup;
    int it = 0;
    const bool poly = p.alpha_code == 2 || p.alpha_code == 15 || p.alpha_code == 13;
#if TAU_CLOSED_CODE
    if (p.tau_closed && poly && sc.in_smem && hi > lo) {
        double tc;
        if (solve_closed(p, sc, lo, hi, tc)) {
            // Guard: the mass at the root is 1 (float powers, f64 sums); else Halley.
            halley_sums(p, sc, caprows, tc, A0, A1, A2, &sup);
            if (fabs(A0 - 1.0) <= 1e-4 && sup > 0) {
                if (p.prof && blockIdx.x == 0 && threadIdx.x == 0 && sc.g == 0) p.prof[13] = -1;
                mass = A0;
                support = sup;
                return tc;
            }
        }
    }
#else
    (void)poly;
#endif
    if (hi > lo) {
        for (; it < 60; ++it) {
            halley_sums(p, sc, caprows, t, A0, A1, A2, nullptr);
            const double f = A0 - 1.0;
            if (f == 0.0) break;
            if (f > 0.0) lo = t;
            else hi = t;
            double next = g_halley_step(t, A0, A1, A2, beta);
            // A converged step (even one onto the end just set) ends the solve.
            if (fabs(next - t) <= 1e-7) {
                if (next > lo && next < hi) t = next;
                break;
            }
            if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
            const bool conv = fabs(next - t) <= 1e-7 || hi - lo <= 1e-7;
            t = next;
            if (conv) break;
        }
    }
    if (p.prof && blockIdx.x == 0 && threadIdx.x == 0 && sc.g == 0) p.prof[13] = it;
    halley_sums(p, sc, caprows, t, A0, A1, A2, &sup);
    mass = A0;
    support = sup;
    return t;
}

// Count bounds of F(t) = Σ(d−t)_+^β − 1 at the bin edges e_j = −1 + j/HIST_BINS give a
// bracket of the root, one bin of slack on each side. `pw[k]` = (k/HIST_BINS)^β. Warp 0
// finds the lower end, warp 1 the upper end (two binary searches side by side; measured
// faster than every thread evaluating its own edge); the results go to br[0], br[1].
__device__ void hist_bracket(const int* h, const double* pw, float* br) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (warp == 0) {
        // Largest j with F_lo(e_j) = Σ_{i>j} c_i ((i−j)/B)^β − 1 >= 0: the root is >= e_j.
        int lo = 0, hi = HIST_BINS - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            double f = 0.0;
            for (int i = mid + 1 + lane; i < HIST_BINS; i += 32) f += (double)h[i] * pw[i - mid];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(FULL_MASK, f, off);
            if (f >= 1.0) lo = mid;
            else hi = mid - 1;
        }
        if (lane == 0) br[0] = -1.0f + (float)(lo > 0 ? lo - 1 : 0) / HIST_BINS;
    } else if (warp == 1) {
        // Smallest j with F_hi(e_j) = Σ_{i>=j} c_i ((i+1−j)/B)^β − 1 < 0: the root is < e_j.
        int lo = 0, hi = HIST_BINS;
        while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            double f = 0.0;
            for (int i = mid + lane; i < HIST_BINS; i += 32) f += (double)h[i] * pw[i + 1 - mid];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(FULL_MASK, f, off);
            if (f < 1.0) hi = mid;
            else lo = mid + 1;
        }
        if (lane == 0) br[1] = fminf(0.0f, -1.0f + (float)(lo + 1) / HIST_BINS);
    }
}

// hist_bracket for β ∈ {1, 2, 3} (α = 2, 1.5, 4/3) in one pass: with suffix sums
// S_k(j) = Σ_{i>=j} c_i·i^k (k <= β, exact in 64-bit integers), thread j evaluates the same
// count bounds exactly, L(j) = Σ_{i>j} c_i (i−j)^β and U(j) = Σ_{i>=j} c_i (i+1−j)^β
// (against B^β), and block reductions pick the same ends as the two binary searches.
__device__ __forceinline__ long long poly_pow_sum(int beta, long long s0, long long s1, long long s2, long long s3,
                                                  long long m) {
    // Σ c_i (i − m)^β from the power sums.
    if (beta == 1) return s1 - m * s0;
    if (beta == 2) return s2 - 2 * m * s1 + m * m * s0;
    return s3 - 3 * m * s2 + 3 * m * m * s1 - m * m * m * s0;
}
__device__ void hist_bracket_poly(const int* h, int beta, float* br) {
    static_assert(BLOCK == HIST_BINS, "one thread per histogram bin");
    __shared__ long long ws[4][BLOCK / 32];
    __shared__ long long nxt[4][BLOCK];
    __shared__ int s_lo, s_hi;
    const int j = threadIdx.x, lane = j & 31, w = j >> 5;
    const long long c = h[j];
    long long v[4] = {c, c * j, c * j * j, c * j * j * j};
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const long long y = __shfl_down_sync(FULL_MASK, v[k], off);
            if (lane + off < 32) v[k] += y;
        }
    }
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < 4; ++k) ws[k][w] = v[k];
    }
    if (j == 0) {
        s_lo = 0;
        s_hi = HIST_BINS;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        for (int w2 = w + 1; w2 < BLOCK / 32; ++w2) v[k] += ws[k][w2];
        nxt[k][j] = v[k];  // S_k(j), inclusive
    }
    __syncthreads();
    const long long bb = beta == 1 ? 256LL : (beta == 2 ? 65536LL : 16777216LL);
    // L(j): the sums over i > j, i.e. S_k(j + 1).
    long long t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    if (j + 1 < HIST_BINS) {
        t0 = nxt[0][j + 1];
        t1 = nxt[1][j + 1];
        t2 = nxt[2][j + 1];
        t3 = nxt[3][j + 1];
    }
    const bool lo_ok = j > 0 && poly_pow_sum(beta, t0, t1, t2, t3, j) >= bb;
    const bool hi_ok = poly_pow_sum(beta, v[0], v[1], v[2], v[3], (long long)j - 1) < bb;
    if (lo_ok) atomicMax(&s_lo, j);
    if (hi_ok) atomicMin(&s_hi, j);
    __syncthreads();
    if (j == 0) {
        const int lo = s_lo, hi = s_hi;
        br[0] = -1.0f + (float)(lo > 0 ? lo - 1 : 0) / HIST_BINS;
        br[1] = fminf(0.0f, -1.0f + (float)(hi + 1) / HIST_BINS);
    }
}

// ---------------------------------------------------------------------------------------
// The lean exact-τ path of the tail, for survivor lists in shared memory at α ∈ {2, 1.5,
// 4/3} (β = B ∈ {1, 2, 3}). Profiles (dev log runs 12–15) put the one-CTA tail's ~20 µs on
// its chain of dependent, barrier-separated phases (histogram read and bracket, closed-form
// ranking, a guard pass, the support count and scan, the V reduction), not on arithmetic.
// Here: safeguarded Halley steps on G from t = −1 (the maximum has d = 0, so F(−1) >= 0;
// 3–4 steps on these lists), one barrier a step (double-buffered partials; every thread
// takes the same step from the same sums in the same order); each pass also gives the mass,
// the support size and every thread's offset in the support list, so a converged step ends
// the solve at the point just evaluated. No histogram read, no bracket, no closed-form
// ranking, no guard pass, no support scan; V as in the full path. (The same solve in one
// warp, without barriers, was slower: dense entmax 32K +4 µs, session 11 run 3.)

// Σx^β, Σx^{β−1}, Σx^{β−2} over x = d − t > 0 and their count, thread j over survivors j,
// j + BLOCK, … (halley_sums' order), block-reduced in warp order through `part`/`cpart` (one
// barrier; the results in every thread). `pre`: the count of the threads before this one
// (its offset in a support list in that order).
// `lo_in` / `hi_out`: the smallest survivor in the support at t (d − t > 0 in f32) and the
// largest outside it (+inf / −inf where there is none), for lean_closed.
template <int B>
__device__ __forceinline__ void lean_sums(const float* d, int n, double t, double (*part)[BLOCK / 32], int* cpart,
                                          float (*fpart)[BLOCK / 32], double& A0, double& A1, double& A2,
                                          int& cnt_all, float& lo_in, float& hi_out, int* pre = nullptr) {
    const float tf = (float)t;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    int cnt = 0;
    float din = pos_inf(), dout = neg_inf();
#pragma unroll 4
    for (int j = threadIdx.x; j < n; j += BLOCK) {
        const float dj = d[j];
        const float x = dj - tf;
        if (x > 0.f) {
            float p0, p1, p2;
            powers3_poly<B>(x, p0, p1, p2);
            s0 += p0;
            s1 += p1;
            s2 += p2;
            ++cnt;
            din = fminf(din, dj);
        } else {
            dout = fmaxf(dout, dj);
        }
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int inc = cnt;  // inclusive prefix of the counts over the warp's lanes
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, inc, off);
        if (lane >= off) inc += y;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        s0 += __shfl_xor_sync(FULL_MASK, s0, off);
        s1 += __shfl_xor_sync(FULL_MASK, s1, off);
        s2 += __shfl_xor_sync(FULL_MASK, s2, off);
        din = fminf(din, __shfl_xor_sync(FULL_MASK, din, off));
        dout = fmaxf(dout, __shfl_xor_sync(FULL_MASK, dout, off));
    }
    if (lane == 31) {
        part[0][w] = s0;
        part[1][w] = s1;
        part[2][w] = s2;
        cpart[w] = inc;
        fpart[0][w] = din;
        fpart[1][w] = dout;
    }
    __syncthreads();
    A0 = part[0][0];
    A1 = part[1][0];
    A2 = part[2][0];
    cnt_all = cpart[0];
    lo_in = fpart[0][0];
    hi_out = fpart[1][0];
    int before = 0;
#pragma unroll
    for (int i = 1; i < BLOCK / 32; ++i) {
        A0 += part[0][i];
        A1 += part[1][i];
        A2 += part[2][i];
        if (i <= w) before += cpart[i - 1];
        cnt_all += cpart[i];
        lo_in = fminf(lo_in, fpart[0][i]);
        hi_out = fmaxf(hi_out, fpart[1][i]);
    }
    if (pre) *pre = before + inc - cnt;
}

// The root of F restricted to the support S of a pass at tf (f32, as the pass): F_S(u) =
// Σ_S (x_i − δ)^B with x_i = d_i − tf and u = tf + δ is a polynomial in δ whose
// coefficients are the pass's power sums (powers3_poly: B = 1: A0 = Σx, A1 = |S|; B = 2: A0 =
// Σx², A1 = Σx, A2 = |S|; B = 3: A0 = Σx³, A1 = Σx², A2 = Σx). Its root δ* (closed form for
// B ≤ 2, Newton on the cubic for B = 3; F_S is convex and decreasing left of min x) is F's
// own root exactly when S is the support there: every d_i of S above tf + δ* and every other
// survivor at or below it, tested in f32 as the support list will be (d − (float)u > 0).
// Returns false otherwise (the pass's Halley step goes on). mass: F_S(δ*) (≈ 1).
template <int B>
__device__ __forceinline__ bool lean_closed(float tf, double A0, double A1, double A2, int cnt, float lo_in,
                                           float hi_out, double& u, double& mass) {
    if (cnt <= 0) return false;
    const double N = (double)cnt;
    double dl;
    if (B == 1) {
        dl = (A0 - 1.0) / N;
        mass = A0 - N * dl;
    } else if (B == 2) {
        const double disc = A1 * A1 - N * (A0 - 1.0);
        if (!(disc >= 0.0)) return false;
        dl = (A0 - 1.0) / (A1 + sqrt(disc));  // the smaller root, without cancellation
        mass = A0 - dl * (2.0 * A1 - dl * N);
    } else {
        // h(δ) = A0 − 3δ·A1 + 3δ²·A2 − δ³·N, h' = −3 Σ(x − δ)²: Newton from δ = 0.
        dl = 0.0;
        for (int k = 0; k < 40; ++k) {
            const double h = A0 - dl * (3.0 * A1 - dl * (3.0 * A2 - dl * N)) - 1.0;
            const double dh = -3.0 * (A1 - dl * (2.0 * A2 - dl * N));
            if (!(dh < 0.0)) return false;
            const double step = h / dh;
            dl -= step;
            if (fabs(step) <= 1e-15 * (1.0 + fabs(dl))) break;
        }
        mass = A0 - dl * (3.0 * A1 - dl * (3.0 * A2 - dl * N));
    }
    if (!isfinite(dl)) return false;
    u = (double)tf + dl;
    const float uf = (float)u;
    return lo_in - uf > 0.f && !(hi_out - uf > 0.f);
}

// The exact relative threshold t of the n > 0 survivors d[0..n) by the lean path (the root
// lies in [−1, hi]); the mass at t and the support size go to mass and support, the thread's
// offset in the strided support list (survivors tid, tid + BLOCK, …) to pre.
template <int B>
__device__ double lean_solve(const AttnParams& p, const float* d, int n, double hi, double& mass, int& support,
                             int& pre) {
    __shared__ double s_part[2][3][BLOCK / 32];
    __shared__ int s_cpart[2][BLOCK / 32];
    __shared__ float s_fpart[2][2][BLOCK / 32];
    constexpr double beta = (double)B;
    // Safeguarded Halley on G in [lo, hi] (solve_t's rule) from lo; hi = −n^{−(α−1)}.
    double lo = -1.0;
    double t = lo, A0, A1, A2;
    int sup, buf = 0, it = 0;
    float lo_in, hi_out;
    bool at_t = false;  // A0 and sup are those at t
    for (; it < 60; ++it) {
        lean_sums<B>(d, n, t, s_part[buf], s_cpart[buf], s_fpart[buf], A0, A1, A2, sup, lo_in, hi_out, &pre);
        buf ^= 1;
        at_t = true;
        const double f = A0 - 1.0;
        if (f == 0.0) break;
        // The support of this pass may already be the root's (lean_closed): then the root
        // in closed form ends the solve a pass early; this pass's support offsets hold.
        double u, m;
        if (p.lean_closed && lean_closed<B>((float)t, A0, A1, A2, sup, lo_in, hi_out, u, m)) {
            if (p.prof && blockIdx.x == 0 && threadIdx.x == 0) p.prof[13] = it + 100;
            mass = m;
            support = sup;
            return u;
        }
        if (f > 0.0) lo = t;
        else hi = t;
        const double next = g_halley_step_t<B>(t, A0, A1, A2, beta);
        // A step of at most 1e-7 ends the solve at the point just evaluated (its error is
        // of the order of the step; τ is compared to 1e-5 relative): no further pass.
        if (fabs(next - t) <= 1e-7) break;
        const double nb = (next > lo && next < hi) ? next : 0.5 * (lo + hi);
        const bool conv = fabs(nb - t) <= 1e-7 || hi - lo <= 1e-7;
        t = nb;
        at_t = false;
        if (conv) break;
    }
    if (p.prof && blockIdx.x == 0 && threadIdx.x == 0) p.prof[13] = it;
    if (!at_t) lean_sums<B>(d, n, t, s_part[buf], s_cpart[buf], s_fpart[buf], A0, A1, A2, sup, lo_in, hi_out, &pre);
    mass = A0;
    support = sup;
    return t;
}

// Per head of the task (after attn_entmax_filter): the survivors into shared memory (or,
// when they do not fit, streamed from the chunk lists), bracket from their histogram, τ,
// then V for small supports.
// Before griddepcontrol.wait (overlapping the filter, see PDL_PRE): the task, its heads'
// running maxima (final since the scores pass, two or more launches back) into s_m, and the
// (k/HIST_BINS)^β table of the general bracket (the integer one needs none) into s_pw.
__device__ __forceinline__ TaskInfo tail_pre(const AttnParams& p, int task, float* s_m, double* s_pw) {
    const TaskInfo ti = task_info<true>(p, task);
    if (threadIdx.x < TG) s_m[threadIdx.x] = key_to_float(__ldcg(p.gmax + (size_t)task * TG + threadIdx.x));
    const bool poly = p.alpha_code == 2 || p.alpha_code == 15 || p.alpha_code == 13;
    if (!poly)
        for (int k = threadIdx.x; k <= HIST_BINS; k += BLOCK)
            s_pw[k] = pow_beta_d((double)k * (1.0 / HIST_BINS), p.alpha_code, p.beta_d);
    return ti;
}

// A head whose maximum is not finite (a score was not: finite_or_inf): no τ. Reported in
// the status word; the head's output and τ are NaN; the histogram is reset as a solve would.
// Every thread calls it (one barrier). Out of line, as report_non_finite.
// The struct's fields by value (a kernel parameter's address would copy it to local memory).
struct NonFiniteHead {
    int* hist;      // the head's histogram
    float* out;     // the head's output row, or null (the certificate's τ_lb phase)
    u32* status;
    double* tau_lb; // the τ_lb phase: its τ_lb and certificate flag, else null
    int* cert_flag;
    float* head_m;  // the attention phase: the head's fields, else unused
    float* head_t;
    float* head_inv;
    double* tau;
    int* support;
    int* vflag;
};
__device__ __noinline__ void tail_non_finite(NonFiniteHead h, int bh, float M) {
    for (int i = threadIdx.x; i < HIST_BINS; i += BLOCK) h.hist[i] = 0;
    if (h.out)
        for (int c = threadIdx.x; c < HEAD_DIM; c += BLOCK) h.out[c] = __int_as_float(0x7fc00000);
    if (threadIdx.x == 0) {
        report_non_finite(h.status, bh, 1u);
        if (h.tau_lb) {
            h.tau_lb[bh] = -__longlong_as_double(0x7ff0000000000000LL);
            h.cert_flag[bh] = 0;
        } else {
            h.head_m[bh] = M;
            h.head_t[bh] = 0.f;
            h.head_inv[bh] = 0.f;
            h.tau[bh] = __longlong_as_double(0x7ff8000000000000LL);
            h.support[bh] = 0;
            h.vflag[bh] = 0;
        }
    }
    __syncthreads();
}

// LEAN: every list's candidates fit shared memory (the plan's v_in_tail), so the lean path
// takes every list, whatever its length; the other paths are not compiled in (less code,
// which is cold after an L2 flush; attn_entmax_tail15_lean).
template <bool LEAN = false>
__device__ __forceinline__ void tail_task(const AttnParams& p, int task, const TaskInfo& ti, const float* s_m, const double* s_pw,
                          unsigned char* dyn, int caprows) {
    __shared__ int s_off[NCH_MAX + 1];
    __shared__ int s_hist[HIST_BINS];
    __shared__ float s_br[2];
    __shared__ int s_small;
    float* d_buf = reinterpret_cast<float*>(dyn);
    u32* pos_buf = reinterpret_cast<u32*>(dyn) + p.cap;
    const bool poly = p.alpha_code == 2 || p.alpha_code == 15 || p.alpha_code == 13;
    const bool prof = p.prof && task == 0 && threadIdx.x == 0;
#define TAIL_STAMP(k) \
    if (prof && g == 0) p.prof[k] = clock64();
    for (int g = 0; g < TG; ++g) {
        TAIL_STAMP(0)
        const int bh = ti.b * p.num_heads + ti.h0 + g;
        const float M = s_m[g];
        if (!(M < pos_inf())) {
            const bool lb = p.cert_phase == 1;
            tail_non_finite({p.hist + ((size_t)task * TG + g) * HIST_BINS, lb ? nullptr : p.out + (size_t)bh * HEAD_DIM,
                             p.status, lb ? p.tau_lb : nullptr, p.cert_flag, p.head_m, p.head_t, p.head_inv, p.tau,
                             p.support, p.vflag},
                            bh, M);
            continue;
        }
        // Survivor counts per chunk (loaded in parallel), then their offsets.
        const int per = (p.nch + BLOCK - 1) / BLOCK;
        const int cb = threadIdx.x * per, ce = min(cb + per, p.nch);
        int local = 0;
        for (int ci = cb; ci < ce; ++ci) {
            const int v = p.cand_cnt[slot_index(p, task, ci, g)];
            s_off[ci] = v;
            local += v;
        }
        int n_c;
        int off = block_excl_scan<BLOCK>(local, &n_c);
        for (int ci = cb; ci < ce; ++ci) {
            const int v = s_off[ci];
            s_off[ci] = off;
            off += v;
        }
        if (threadIdx.x == 0) s_off[p.nch] = n_c;
        __syncthreads();
        // The chunk of every survivor slot j, into pos_buf[j] (the copy below reads it back
        // at the same j, in the same thread, before overwriting it): one shared load per
        // survivor instead of chunk_of's binary search, ~9 dependent loads (the copy took
        // 17.7K cycles for 5.6K survivors with it; session 11 run 1).
        if (n_c <= p.cap && p.cert_phase == 0)
            for (int ci = cb; ci < ce; ++ci)
                for (int k = s_off[ci], ke = s_off[ci + 1]; k < ke; ++k) pos_buf[k] = (u32)ci;
        TAIL_STAMP(1)
        // The lean path (lean_solve): exact τ, α ∈ {2, 1.5, 4/3}, every survivor in
        // shared memory. It needs no histogram bracket.
        const bool lean = LEAN || (poly && p.cert_phase == 0 && p.tau_mode == 0 && n_c > 0 &&
                                   n_c <= min(p.cap, p.tail_lean));
        // Bracket from the filter's histogram (reset for the next step once read).
        int* gh = p.hist + ((size_t)task * TG + g) * HIST_BINS;
        if (lean) {
            for (int i = threadIdx.x; i < HIST_BINS; i += BLOCK) gh[i] = 0;
            TAIL_STAMP(2)
            TAIL_STAMP(3)
        } else {
            for (int i = threadIdx.x; i < HIST_BINS; i += BLOCK) {
                s_hist[i] = gh[i];
                gh[i] = 0;
            }
            __syncthreads();
            TAIL_STAMP(2)
            if (poly)
                hist_bracket_poly(s_hist, p.alpha_code == 2 ? 1 : (p.alpha_code == 15 ? 2 : 3), s_br);
            else
                hist_bracket(s_hist, s_pw, s_br);
            __syncthreads();
            TAIL_STAMP(3)
        }
        if (p.cert_phase == 1) {
            // Any lower bound of the lower ends' τ serves as τ_lb: the bracket's lower end
            // is one (count bounds, one bin of slack), so no solve is needed.
            if (threadIdx.x == 0) {
                const double tl = p.a_d * (double)M + (double)s_br[0];
                const bool ok = n_c > 0 && isfinite(tl);
                const double margin = ok ? cert_margin(p, cert_mag(p, task, ti, g), tl) : 1.0;
                const double slack = -(double)key_to_float(p.gslack[(size_t)task * TG + g]);
                p.tau_lb[bh] = ok ? tl : -__longlong_as_double(0x7ff0000000000000LL);
                p.cert_flag[bh] = (ok && margin + CERT_ABS_SLACK <= slack) ? 1 : 0;
            }
            __syncthreads();
            continue;
        }
        // Survivors to shared memory: all of them if they fit, else those above the bracket
        // (ordered rounds).
        int n_s = 0;
        if (LEAN || n_c <= p.cap) {
            __syncthreads();  // the chunk map is complete
            // Flattened: survivor j of the task from the chunk the map names; CU loads in
            // flight per thread, consecutive threads on consecutive survivors.
            constexpr int CU = 8;
            for (int j0 = 0; j0 < n_c; j0 += BLOCK * CU) {
                float sv[CU];
                u32 pv[CU];
#pragma unroll
                for (int u = 0; u < CU; ++u) {
                    const int j = j0 + u * BLOCK + threadIdx.x;
                    if (j < n_c) {
                        const int ci = (int)pos_buf[j];
                        const size_t src = slot_index(p, task, ci, g) * (size_t)caprows + (size_t)(j - s_off[ci]);
                        sv[u] = p.cand_s[src];
                        pv[u] = p.cand_pos[src];
                    }
                }
#pragma unroll
                for (int u = 0; u < CU; ++u) {
                    const int j = j0 + u * BLOCK + threadIdx.x;
                    if (j < n_c) {
                        d_buf[j] = p.a * (sv[u] - M);
                        pos_buf[j] = pv[u];
                    }
                }
            }
            n_s = n_c;
        }
        // Fixed τ: every survivor (τ̂ may lie below the bracket).
        const float keep_above = p.tau_mode == 1 ? neg_inf() : s_br[0];
        constexpr int GU = 8;
        for (int j0 = 0; !LEAN && n_c > p.cap && j0 < n_c && n_s <= p.cap; j0 += BLOCK * GU) {
            size_t src[GU];
#pragma unroll
            for (int u = 0; u < GU; ++u) {
                const int j = j0 + threadIdx.x * GU + u;  // a thread's GU consecutive survivors
                src[u] = 0;
                if (j < n_c) {
                    const int ci = chunk_of(s_off, p.nch, j);
                    src[u] = slot_index(p, task, ci, g) * (size_t)caprows + (size_t)(j - s_off[ci]);
                }
            }
            float dv[GU];
            u32 pv[GU];
            int cnt = 0;
#pragma unroll
            for (int u = 0; u < GU; ++u) {
                dv[u] = neg_inf();  // below every keep_above (−inf keeps nothing invalid)
                if (j0 + (int)threadIdx.x * GU + u < n_c) {
                    dv[u] = p.a * (p.cand_s[src[u]] - M);
                    pv[u] = p.cand_pos[src[u]];
                }
                cnt += dv[u] > keep_above ? 1 : 0;
            }
            int round;
            int o = n_s + block_excl_scan<BLOCK>(cnt, &round);
#pragma unroll
            for (int u = 0; u < GU; ++u) {
                if (dv[u] > keep_above) {
                    if (o < p.cap) {
                        d_buf[o] = dv[u];
                        pos_buf[o] = pv[u];
                    }
                    ++o;
                }
            }
            n_s += round;
        }
        __syncthreads();
        SolveCtx sc;
        sc.task = task;
        sc.g = g;
        sc.M = M;
        sc.in_smem = LEAN || n_s <= p.cap;
        sc.n = sc.in_smem ? n_s : n_c;  // streamed: every survivor from the chunk lists
        sc.d = d_buf;
        sc.off = s_off;
        TAIL_STAMP(4)
        double mass;
        int sup;
        // t <= −k^{−(α−1)} for any k >= the support size: the survivor count bounds it.
        const double hi_n = -exp(-p.a_d * log((double)(n_c > 0 ? n_c : 1)));
        double t = 0.0;
        bool solved = false;
        if (!LEAN && p.tau_mode != 0 && p.cert_phase == 0 && p.tau_hat) {
            // attention/cpu.rs: τ̂ as is (fixed) or refined by tau_iters safeguarded Halley
            // steps in [−1, −n^{−(α−1)}] (n the tokens read); an empty support at the result
            // falls back to the exact τ.
            const double th = p.tau_hat[bh];
            if (isfinite(th)) {
                t = th - p.a_d * (double)M;
                if (p.tau_mode == 2) {
                    const int last_len = ti.len - (ti.npages - 1) * p.page_size;
                    const double n_read = (double)((ti.n - 1) * p.page_size + last_len);
                    double lo_t = -1.0, hi_t = -exp(-p.a_d * log(n_read));
                    bool lo_seen = false, hi_seen = false;
                    t = fmin(fmax(t, lo_t), hi_t);
                    for (int it = 0; it < p.tau_iters; ++it) {
                        if (hi_t <= lo_t) break;
                        double A0, A1, A2;
                        halley_sums(p, sc, caprows, t, A0, A1, A2, nullptr);
                        const double f = A0 - 1.0;
                        if (f == 0.0) break;
                        if (f > 0.0) {
                            lo_t = t;
                            lo_seen = true;
                        } else {
                            hi_t = t;
                            hi_seen = true;
                        }
                        const double raw = g_halley_step(t, A0, A1, A2, p.beta_d);
                        // tau/entmax.rs `halley_correct`: converged (step at noise) → stop
                        // at t; steps onto a bracket end up to CORRECT_SNAP land on it (the
                        // bracket is closed); outside it, or no move, bisect.
                        if (fabs(raw - t) <= 1e-12 * (1.0 + fabs(t))) {
                            t = fmin(fmax(raw, lo_t), hi_t);
                            break;
                        }
                        const double snap = 1e-6 * (1.0 + fabs(t));
                        double next = raw;
                        if (next < lo_t && next >= lo_t - snap) next = lo_t;
                        else if (next > hi_t && next <= hi_t + snap) next = hi_t;
                        // An end not yet evaluated may be the root; an evaluated one is not.
                        const bool inside = (next > lo_t || (!lo_seen && next == lo_t)) &&
                                            (next < hi_t || (!hi_seen && next == hi_t));
                        if (!inside || next == t) next = 0.5 * (lo_t + hi_t);
                        t = next;
                    }
                }
                double A1, A2;
                halley_sums(p, sc, caprows, t, mass, A1, A2, &sup);
                solved = sup > 0;
            }
        }
        int lean_pre = 0;
        if (lean) {
            if (p.alpha_code == 2) t = lean_solve<1>(p, d_buf, n_c, hi_n, mass, sup, lean_pre);
            else if (p.alpha_code == 15) t = lean_solve<2>(p, d_buf, n_c, hi_n, mass, sup, lean_pre);
            else t = lean_solve<3>(p, d_buf, n_c, hi_n, mass, sup, lean_pre);
            solved = true;
        }
        if (!LEAN && !solved) t = solve_t(p, sc, caprows, (double)s_br[0], fmin((double)s_br[1], hi_n), mass, sup);
        const float inv = (float)(1.0 / mass);
        TAIL_STAMP(5)
        if (prof && g == 0) {
            p.prof[10] = n_c;
            p.prof[11] = n_s;
            p.prof[12] = sup;
        }
        if (threadIdx.x == 0) {
            p.head_m[bh] = M;
            p.head_t[bh] = (float)t;
            p.head_inv[bh] = inv;
            p.tau[bh] = p.a_d * (double)M + t;
            p.support[bh] = sup;
            s_small = (sc.in_smem && sup <= p.small_support) ? 1 : 0;
            p.vflag[bh] = s_small ? 0 : 1;
        }
        __syncthreads();
        if (s_small) {
            // Support list (pos, w) in candidate order, into s_off's storage, or, where the
            // plan lets the tail take every support (longer than that storage), after the
            // candidates in dynamic shared memory.
            const bool big = p.small_support > NCH_MAX / 2;
            u32* lpos = big ? pos_buf + p.cap : reinterpret_cast<u32*>(s_off);
            float* lw = big ? reinterpret_cast<float*>(pos_buf + p.cap + p.small_support)
                            : reinterpret_cast<float*>(s_off + NCH_MAX / 2);
            const float tf = (float)t;
            int tot = sup, o;
            // Survivor i into the list at o if it is in the support.
            auto put = [&](int i) {
                const float x = d_buf[i] - tf;
                if (x > 0.f) {
                    lpos[o] = pos_buf[i];
                    lw[o] = weight_of(x, p.alpha_code, p.beta);
                    ++o;
                }
            };
            if (lean) {
                // Strided, at the offsets of lean_solve's last pass: no scan.
                o = lean_pre;
                for (int j = threadIdx.x; j < sc.n; j += BLOCK) put(j);
            } else {
                const int per2 = (sc.n + BLOCK - 1) / BLOCK;
                const int ib = threadIdx.x * per2, ie = min(ib + per2, sc.n);
                int cnt = 0;
                for (int i = ib; i < ie; ++i) cnt += (d_buf[i] - tf > 0.f) ? 1 : 0;
                o = block_excl_scan<BLOCK>(cnt, &tot);
                for (int i = ib; i < ie; ++i) put(i);
            }
            __syncthreads();
            gather_v(p, ti, lpos, lw, tot, d_buf, inv, p.out + (size_t)bh * HEAD_DIM, bh);
        }
        __syncthreads();
        TAIL_STAMP(6)
    }
#undef TAIL_STAMP
}

// grid (nch, tasks), block BLOCK, dynamic smem TG * caprows * 4 bytes.
#if ATTN_KERNELS
// `ENTMAXKV_DEFINES="SCORES_MIN_CTAS=5"` (development): a register bound for more resident
// CTAs (ncu, session 18 run 5: 64 registers, 4 CTAs an SM, 53% of DRAM throughput on the
// Gaussian step's kept pages at 1M).
#ifdef SCORES_MIN_CTAS
#define SCORES_BOUNDS __launch_bounds__(BLOCK, SCORES_MIN_CTAS)
#else
#define SCORES_BOUNDS __launch_bounds__(BLOCK)
#endif
extern "C" __global__ void SCORES_BOUNDS attn_entmax_scores(const AttnParams p) {
    extern __shared__ __align__(16) unsigned char dyn[];
    __shared__ u32 s_page[PPC_CAP];
    __shared__ u32 s_slot[PPC_CAP];
    __shared__ float s_run;
    float* sc = reinterpret_cast<float*>(dyn);
    int task, c;
    cta_task_chunk(p, task, c);
    // After a selection (pre_wait): the row and length before the wait (PDL_PRE), the list
    // count, which the selection writes, after it.
    // (The queries read there too made this kernel slower on long lists, e.g. top-k 512K
    // 0.113 → 0.125 ms: session 15 run 2.)
    TaskInfo ti;
    if (p.pre_wait) ti = task_info<true>(p, task, false);
    PDL_ENTRY();
    if (!p.pre_wait) ti = task_info(p, task);
    else if (p.lists) ti.n = p.list_counts[task];
    float qr[TG][COLS];
    load_q(p, ti.b, ti.h0, threadIdx.x % LANES, qr);
    const int caprows = p.ppc_max * p.page_size;
    int pbeg, pend;
    chunk_range(p, ti.n, c, pbeg, pend);
    if (pbeg < pend) {
        SCORES_STAMP(0)
        const int npg = pend - pbeg;
        const int nrows = npg * p.page_size;
        load_chunk_pages(p, task, ti, pbeg, npg, s_page, s_slot);
        __syncthreads();
        SCORES_STAMP(1)
        score_rows(p, ti, nrows, s_page, s_slot, qr, sc, caprows);
        __syncthreads();
        SCORES_STAMP(2)
        for (int g = 0; g < TG; ++g) {
            const float* sg = sc + g * caprows;
            float m = neg_inf();
            for (int r = threadIdx.x; r < nrows; r += BLOCK) m = fmaxf(m, sg[r]);
            m = block_max<BLOCK>(m);
            if (threadIdx.x == 0) {
                // Fold into the running max; candidates are taken against the larger value.
                const u32 mk = ordered_key(m);
                const u32 old = atomicMax(p.gmax + (size_t)task * TG + g, mk);
                s_run = old > mk ? key_to_float(old) : m;
            }
            __syncthreads();
            const float R = s_run;
            const float zf = z_floor(p, ti.b * p.num_heads + ti.h0 + g);
            const int per = (nrows + BLOCK - 1) / BLOCK;
            const int rb = threadIdx.x * per, re = min(rb + per, nrows);
            int cnt = 0;
            for (int r = rb; r < re; ++r) cnt += (p.a * (sg[r] - R) > -1.0f || p.a * sg[r] > zf) ? 1 : 0;
            int total;
            int o = block_excl_scan<BLOCK>(cnt, &total);
            const size_t idx = slot_index(p, task, c, g);
            float* cs = p.cand_s + idx * (size_t)caprows;
            u32* cp = p.cand_pos + idx * (size_t)caprows;
            for (int r = rb; r < re; ++r) {
                const float s = sg[r];
                if (p.a * (s - R) > -1.0f || p.a * s > zf) {
                    const int pi = r / p.page_size;
                    cs[o] = s;
                    cp[o] = s_page[pi] * (u32)p.page_size + (u32)(r - pi * p.page_size);
                    ++o;
                }
            }
            if (threadIdx.x == 0) p.cand_cnt[idx] = total;
        }
        SCORES_STAMP(3)
    } else if (threadIdx.x < TG) {
        p.cand_cnt[slot_index(p, task, c, threadIdx.x)] = 0;
    }
}
#endif  // ATTN_KERNELS

// grid (ceil(nch / CPB), tasks), block BLOCK: warp w filters chunk blockIdx.x·CPB + w
// against the final maximum, in place, and counts the survivors into the histogram.
#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) attn_entmax_filter(const AttnParams p) {
    PDL_ENTRY();
    __shared__ int s_hist[TG][HIST_BINS];
    const int task = blockIdx.y;
    const int caprows = p.ppc_max * p.page_size;
    const int c = blockIdx.x * CPB + (threadIdx.x >> 5);
    for (int i = threadIdx.x; i < TG * HIST_BINS; i += BLOCK) (&s_hist[0][0])[i] = 0;
    __syncthreads();
    if (c < p.nch) {
        for (int g = 0; g < TG; ++g) {
            const size_t idx = slot_index(p, task, c, g);
            const float M = key_to_float(p.gmax[(size_t)task * TG + g]);
            // cert_phase 1: the lower ends only (their candidate list has no positions).
            const int b = task / p.tasks_per_b;
            const int kept = warp_compact(p, idx, caprows, M, -1.0f, s_hist[g], p.cert_phase == 0,
                                          z_floor(p, b * p.num_heads + (task - b * p.tasks_per_b) * TG + g));
            if ((threadIdx.x & 31) == 0) p.cand_cnt[idx] = kept;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TG * HIST_BINS; i += BLOCK) {
        const int v = (&s_hist[0][0])[i];
        if (v) atomicAdd(p.hist + (size_t)task * TG * HIST_BINS + i, v);
    }
}
#endif  // ATTN_KERNELS

// grid (ceil(nch / CPB), tasks), block BLOCK: after attn_entmax_filter, warp w keeps chunk
// blockIdx.x·CPB + w's survivors above the bracket's lower end (see the header). The
// histogram is only read: the tail computes the same bracket from it.
#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) attn_entmax_refilter(const AttnParams p) {
    PDL_ENTRY();
    __shared__ int s_hist[HIST_BINS];
    __shared__ double s_pw[HIST_BINS + 1];
    __shared__ float s_br[2];
    const int task = blockIdx.y;
    const int caprows = p.ppc_max * p.page_size;
    const int c = blockIdx.x * CPB + (threadIdx.x >> 5);
    const bool poly = p.alpha_code == 2 || p.alpha_code == 15 || p.alpha_code == 13;
    if (!poly)
        for (int k = threadIdx.x; k <= HIST_BINS; k += BLOCK)
            s_pw[k] = pow_beta_d((double)k * (1.0 / HIST_BINS), p.alpha_code, p.beta_d);
    for (int g = 0; g < TG; ++g) {
        const int* gh = p.hist + ((size_t)task * TG + g) * HIST_BINS;
        for (int i = threadIdx.x; i < HIST_BINS; i += BLOCK) s_hist[i] = gh[i];
        __syncthreads();
        if (poly)
            hist_bracket_poly(s_hist, p.alpha_code == 2 ? 1 : (p.alpha_code == 15 ? 2 : 3), s_br);
        else
            hist_bracket(s_hist, s_pw, s_br);
        __syncthreads();
        if (c < p.nch) {
            const size_t idx = slot_index(p, task, c, g);
            const float M = key_to_float(p.gmax[(size_t)task * TG + g]);
            const int kept = warp_compact(p, idx, caprows, M, s_br[0], nullptr);
            if ((threadIdx.x & 31) == 0) p.cand_cnt[idx] = kept;
        }
        __syncthreads();
    }
}
#endif  // ATTN_KERNELS

// grid (tasks), block BLOCK, dynamic smem 2 * cap * 4. Runs after attn_entmax_filter (kernel
// boundaries make every chunk's survivors and the final maxima visible); resets the running
// maxima for the next step.
template <bool LEAN = false> __device__ __forceinline__ void tail_kernel(const AttnParams& p, unsigned char* dyn) {
    __shared__ float s_m[TG];
    __shared__ double s_pw[HIST_BINS + 1];
    const int task = blockIdx.x;
    const TaskInfo ti = tail_pre(p, task, s_m, s_pw);
    PDL_ENTRY();
    __syncthreads();
    tail_task<LEAN>(p, task, ti, s_m, s_pw, dyn, p.ppc_max * p.page_size);
    __syncthreads();
    if (threadIdx.x < TG) {
        p.gmax[(size_t)task * TG + threadIdx.x] = 0u;
        // The certified strategy's magnitudes are read up to the τ solve of the step.
        if (p.gmag && p.cert_phase == 0) {
            p.gmag[(size_t)task * TG + threadIdx.x] = 0u;
            p.gslack[(size_t)task * TG + threadIdx.x] = 0u;
        }
    }
}

#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) attn_entmax_tail(const AttnParams p) {
    extern __shared__ __align__(16) unsigned char dyn[];
    tail_kernel(p, dyn);
}
#endif  // ATTN_KERNELS

// The tail for the default α = 1.5 with the exact τ, outside the certificate's τ_lb phase:
// α's fields become compile-time constants, so the code of every other α, τ mode and the
// τ_lb phase drops out (SASS 286 → 128 KB at D = 64, f16, TG = 1). After the benchmark's L2
// flush a step's code is cold, and code that does not even run was measured to cost time
// (BENCHMARKS "GPU, session 12": the select compiled into a kernel, +7 µs; "GPU, session 6"
// run 22: the quadrature compiled into gauss_count, +5 µs; this kernel: 1–5 µs a step,
// "GPU, session 15"). The plan launches it where it applies (`ENTMAXKV_TAIL_SPEC=0`:
// never). One CTA per task, so no occupancy to keep: without the `1` ptxas held it to 80
// registers and spilled.
__device__ __forceinline__ void set_alpha15(AttnParams& c) {
    c.alpha_code = 15;
    c.a = 0.5f;
    c.beta = 2.0f;
    c.a_d = 0.5;
    c.beta_d = 2.0;
    c.tau_mode = 0;
    c.cert_phase = 0;
}

#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK, 1) attn_entmax_tail15(const AttnParams p) {
    AttnParams c = p;
    set_alpha15(c);
    extern __shared__ __align__(16) unsigned char dyn[];
    tail_kernel(c, dyn);
}
#endif  // ATTN_KERNELS

// attn_entmax_tail15 where every list's candidates fit shared memory (the plan's v_in_tail:
// a list holds at most p.cap tokens): the lean path takes every list, whatever its length,
// and the histogram bracket, the streamed and the bracketed solves are not compiled in
// (SASS 128 → 64 KB at D = 64, f16, TG = 1). Code that never runs still costs time after
// an L2 flush: a second, never-run copy of topk_select's body (+77 KB) made that kernel
// 6.4 µs slower (BENCHMARKS "GPU, session 16"). This kernel made top-k 1/8 at 32K 5.8 µs
// faster. The plan launches it in place of attn_entmax_tail15 there
// (`ENTMAXKV_TAIL_LEAN_KERNEL=0`: never).
#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK, 1) attn_entmax_tail15_lean(const AttnParams p) {
    AttnParams c = p;
    set_alpha15(c);
    extern __shared__ __align__(16) unsigned char dyn[];
    tail_kernel<true>(c, dyn);
}
#endif  // ATTN_KERNELS

// grid (ceil(nch / CPB), tasks), block BLOCK, dynamic smem (2 * caprows + ROWGROUPS *
// HEAD_DIM) * 4. CTA x handles chunks x·CPB .. x·CPB + CPB − 1.
#if ATTN_KERNELS
extern "C" __global__ void __launch_bounds__(BLOCK) attn_entmax_values(const AttnParams p) {
    PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char dyn[];
    const int task = blockIdx.y;
    const TaskInfo ti = task_info(p, task);
    int any = 0;
#pragma unroll
    for (int g = 0; g < TG; ++g) any |= p.vflag[ti.b * p.num_heads + ti.h0 + g];
    if (!any) return;
    const int caprows = p.ppc_max * p.page_size;
    u32* lpos = reinterpret_cast<u32*>(dyn);
    float* lw = reinterpret_cast<float*>(dyn) + caprows;
    float* red = reinterpret_cast<float*>(dyn) + 2 * caprows;
    for (int c = blockIdx.x * CPB; c < min(p.nch, (int)(blockIdx.x + 1) * CPB); ++c) {
        for (int g = 0; g < TG; ++g) {
            const int bh = ti.b * p.num_heads + ti.h0 + g;
            if (!p.vflag[bh]) continue;
            const size_t idx = slot_index(p, task, c, g);
            const int cnt = p.cand_cnt[idx];
            const float M = p.head_m[bh], tf = p.head_t[bh];
            const float* cs = p.cand_s + idx * (size_t)caprows;
            const u32* cp = p.cand_pos + idx * (size_t)caprows;
            const int per = (cnt + BLOCK - 1) / BLOCK;
            const int ib = threadIdx.x * per, ie = min(ib + per, cnt);
            int n = 0;
            for (int i = ib; i < ie; ++i) n += (p.a * (cs[i] - M) - tf > 0.f) ? 1 : 0;
            int tot;
            int o = block_excl_scan<BLOCK>(n, &tot);
            for (int i = ib; i < ie; ++i) {
                const float x = p.a * (cs[i] - M) - tf;
                if (x > 0.f) {
                    lpos[o] = cp[i];
                    lw[o] = weight_of(x, p.alpha_code, p.beta);
                    ++o;
                }
            }
            __syncthreads();
            if (tot > 0) gather_v(p, ti, lpos, lw, tot, red, 1.0f, p.part_o + idx * HEAD_DIM);
            if (threadIdx.x == 0) p.part_flag[idx] = tot > 0 ? 1 : 0;
            __syncthreads();
        }
    }
    if (!last_block_of(p.vcounters + task, gridDim.x)) return;
    for (int g = 0; g < TG; ++g) {
        const int bh = ti.b * p.num_heads + ti.h0 + g;
        if (!p.vflag[bh]) continue;
        const float inv = p.head_inv[bh];
        for (int col = threadIdx.x; col < HEAD_DIM; col += BLOCK) {
            float s = 0.f;
            for (int ci = 0; ci < p.nch; ++ci) {
                const size_t idx = slot_index(p, task, ci, g);
                if (__ldcg(p.part_flag + idx)) s += __ldcg(p.part_o + idx * HEAD_DIM + col);
            }
            p.out[(size_t)bh * HEAD_DIM + col] = s * inv;
            if (!isfinite(s * inv)) report_non_finite(p.status, bh, 2u);
        }
    }
    if (threadIdx.x == 0) p.vcounters[task] = 0;
}
#endif  // ATTN_KERNELS

// grid (nch, tasks), block BLOCK, dynamic smem (TG * caprows + ROWGROUPS * HEAD_DIM) * 4.
#if ATTN_KERNELS
#if MMA_VALUES
// attn_softmax's V pass by tensor cores: out^T[dims, heads] += V^T[dims, rows] · W^T[rows,
// heads] for each 16-row tile (a warp's), the weights w = exp(s − m) split in f16 as hi (column
// h) + lo (column 4 + h) as q is in the tensor-core score_rows. Lane (g, c) reads rows 4c..4c+3 of the
// tile at dims [8s, 8s + 8), s = g + 8σ: k pairs (2c, 2c+1) and (2c+8, 2c+9) are rows
// (4c, 4c+1) and (4c+2, 4c+3), and m = g, g + 8 of mma (σ, j) the dims 8s + 2j and 8s + 2j + 1,
// paired across two rows by byte permutes. The warps' partial sums are added in warp order.
__device__ __forceinline__ void softmax_values_mma(const AttnParams& p, const TaskInfo& ti, int task, int chunk,
                                                   int nrows, const u32* s_page, const u32* s_slot,
                                                   const float* sc, float* red, int caprows) {
    constexpr int NS = HEAD_DIM / 64;
    constexpr int NWARPS = BLOCK / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int h = g & 3;
    const bool lo_part = g >= 4;
    const int ps = p.page_size;
    float acc[NS][4][4];
#pragma unroll
    for (int s = 0; s < NS; ++s)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[s][j][i] = 0.f;
    const int ntiles = (nrows + 15) >> 4;
    for (int t = warp; t < ntiles; t += NWARPS) {
        uint4 xv[4][NS];
        float w[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = t * 16 + 4 * c + i;
            bool ok = false;
            int pi = 0;
            if (r < nrows) {
                pi = r / ps;
                ok = (int)s_slot[pi] * ps + (r - pi * ps) < ti.len;
            }
            // Rows past the sequence end are never read: their bytes may be anything.
            const kv_t* rowp = ok ? kv_row(p.v, p, s_page[pi], ti.kvh, r - pi * ps) : nullptr;
#pragma unroll
            for (int s = 0; s < NS; ++s) xv[i][s] = ok ? ld_stream16(rowp, g + 8 * s) : zero4();
            w[i] = ok && h < TG ? sc[h * caprows + r] : 0.f;
        }
        const u32 b0 = f16_part(w[0], lo_part) | (f16_part(w[1], lo_part) << 16);
        const u32 b1 = f16_part(w[2], lo_part) | (f16_part(w[3], lo_part) << 16);
#pragma unroll
        for (int s = 0; s < NS; ++s) {
            const u32 x0[4] = {xv[0][s].x, xv[0][s].y, xv[0][s].z, xv[0][s].w};
            const u32 x1[4] = {xv[1][s].x, xv[1][s].y, xv[1][s].z, xv[1][s].w};
            const u32 x2[4] = {xv[2][s].x, xv[2][s].y, xv[2][s].z, xv[2][s].w};
            const u32 x3[4] = {xv[3][s].x, xv[3][s].y, xv[3][s].z, xv[3][s].w};
#pragma unroll
            for (int j = 0; j < 4; ++j)
                mma16816(acc[s][j], prmt(x0[j], x1[j], 0x5410), prmt(x0[j], x1[j], 0x7632),
                         prmt(x2[j], x3[j], 0x5410), prmt(x2[j], x3[j], 0x7632), b0, b1);
        }
    }
    // acc[s][j]: (dim 8(g + 8s) + 2j, columns 2c, 2c + 1), then (that dim + 1, same columns);
    // lanes c < 2 hold hi columns, c + 2 the matching lo.
#pragma unroll
    for (int s = 0; s < NS; ++s)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[s][j][i] += __shfl_xor_sync(FULL_MASK, acc[s][j][i], 2);
    for (int hh = 0; hh < TG; ++hh) {
        if (c == (hh >> 1)) {
            const int col = hh & 1;
#pragma unroll
            for (int s = 0; s < NS; ++s)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int dim = 8 * (g + 8 * s) + 2 * j;
                    red[warp * HEAD_DIM + dim] = acc[s][j][col];
                    red[warp * HEAD_DIM + dim + 1] = acc[s][j][2 + col];
                }
        }
        __syncthreads();
        const size_t idx = slot_index(p, task, chunk, hh);
        for (int col = threadIdx.x; col < HEAD_DIM; col += BLOCK) {
            float s = 0.f;
            for (int w = 0; w < NWARPS; ++w) s += red[w * HEAD_DIM + col];
            p.part_o[idx * HEAD_DIM + col] = s;
        }
        __syncthreads();
    }
}
#endif

// With the tensor-core V pass, at most 80 registers: three CTAs an SM, as shared memory allows
// on the long-context shapes (95 unbounded: GQA 128K 1.0745 → 1.1729 ms, session 18).
// `SOFTMAX_MIN_CTAS` (development define) overrides.
#if MMA_VALUES && !defined(SOFTMAX_MIN_CTAS)
#define SOFTMAX_MIN_CTAS 3
#endif
#ifdef SOFTMAX_MIN_CTAS
#define SOFTMAX_BOUNDS __launch_bounds__(BLOCK, SOFTMAX_MIN_CTAS)
#else
#define SOFTMAX_BOUNDS __launch_bounds__(BLOCK)
#endif
extern "C" __global__ void SOFTMAX_BOUNDS attn_softmax(const AttnParams p) {
    PDL_ENTRY();
    extern __shared__ __align__(16) unsigned char dyn[];
    __shared__ u32 s_page[PPC_CAP];
    __shared__ u32 s_slot[PPC_CAP];
    const int caprows = p.ppc_max * p.page_size;
    float* sc = reinterpret_cast<float*>(dyn);
    float* red = sc + TG * caprows;
    int task, c;
    cta_task_chunk(p, task, c);
    const TaskInfo ti = task_info(p, task);
    int pbeg, pend;
    chunk_range(p, ti.n, c, pbeg, pend);
    if (pbeg < pend) {
        const int npg = pend - pbeg;
        const int nrows = npg * p.page_size;
        load_chunk_pages(p, task, ti, pbeg, npg, s_page, s_slot);
        {
            float qr[TG][COLS];
            load_q(p, ti.b, ti.h0, threadIdx.x % LANES, qr);
            __syncthreads();
            score_rows(p, ti, nrows, s_page, s_slot, qr, sc, caprows);
        }
        __syncthreads();
        for (int g = 0; g < TG; ++g) {
            float* sg = sc + g * caprows;
            float m = neg_inf();
            for (int r = threadIdx.x; r < nrows; r += BLOCK) m = fmaxf(m, sg[r]);
            m = block_max<BLOCK>(m);
            double l = 0.0, z1 = 0.0, z2 = 0.0;
            float lf = 0.f;
            for (int r = threadIdx.x; r < nrows; r += BLOCK) {
                const float w = __expf(sg[r] - m);  // −inf rows -> 0
                sg[r] = w;
                lf += w;
            }
            l = lf;
            block_sum3<BLOCK>(l, z1, z2);
            if (threadIdx.x == 0) {
                const size_t idx = slot_index(p, task, c, g);
                p.part_m[idx] = m;
                p.part_l[idx] = (float)l;
            }
        }
        __syncthreads();
#if MMA_VALUES
        softmax_values_mma(p, ti, task, c, nrows, s_page, s_slot, sc, red, caprows);
#else
        // V for every row, all TG heads at once.
        const int lane = threadIdx.x % LANES, rg = threadIdx.x / LANES;
        const int ps = p.page_size;
        float acc[TG][COLS];
#pragma unroll
        for (int g = 0; g < TG; ++g)
#pragma unroll
            for (int j = 0; j < COLS; ++j) acc[g][j] = 0.f;
        for (int base = 0; base < nrows; base += ROWGROUPS * UNROLL) {
            uint4 buf[UNROLL][CPL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int r = base + u * ROWGROUPS + rg;
                bool ok = false;
                int pi = 0;
                if (r < nrows) {
                    pi = r / ps;
                    ok = (int)s_slot[pi] * ps + (r - pi * ps) < ti.len;
                }
                if (ok) {
                    const kv_t* rowp = kv_row(p.v, p, s_page[pi], ti.kvh, r - pi * ps);
#pragma unroll
                    for (int i = 0; i < CPL; ++i) {
                        const int ch = lane + i * LANES;
                        buf[u][i] = ch < CHUNKS ? ld_stream16(rowp, ch) : zero4();
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < CPL; ++i) buf[u][i] = zero4();
                }
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const int r = base + u * ROWGROUPS + rg;
                if (r < nrows) {
                    float w[TG];
#pragma unroll
                    for (int g = 0; g < TG; ++g) w[g] = sc[g * caprows + r];
#pragma unroll
                    for (int i = 0; i < CPL; ++i) {
                        float x[KV_VEC];
                        KV::unpack(buf[u][i], x);
#pragma unroll
                        for (int g = 0; g < TG; ++g)
#pragma unroll
                            for (int j = 0; j < KV_VEC; ++j)
                                acc[g][i * KV_VEC + j] = fmaf(w[g], x[j], acc[g][i * KV_VEC + j]);
                    }
                }
            }
        }
#pragma unroll
        for (int g = 0; g < TG; ++g) {
#pragma unroll
            for (int i = 0; i < CPL; ++i) {
                const int ch = lane + i * LANES;
                if (ch < CHUNKS) {
#pragma unroll
                    for (int j = 0; j < KV_VEC; ++j) red[rg * HEAD_DIM + ch * KV_VEC + j] = acc[g][i * KV_VEC + j];
                }
            }
            __syncthreads();
            const size_t idx = slot_index(p, task, c, g);
            for (int col = threadIdx.x; col < HEAD_DIM; col += BLOCK) {
                float s = 0.f;
                for (int r = 0; r < ROWGROUPS; ++r) s += red[r * HEAD_DIM + col];
                p.part_o[idx * HEAD_DIM + col] = s;
            }
            __syncthreads();
        }
#endif
    } else if (threadIdx.x < TG) {
        const size_t idx = slot_index(p, task, c, threadIdx.x);
        p.part_m[idx] = neg_inf();
        p.part_l[idx] = 0.f;
    }
    if (!last_block_of(p.counters + task, p.nch)) return;
    // Log-sum-exp merge of the chunks, in chunk order.
    float* esc = sc;  // nch scale factors
    for (int g = 0; g < TG; ++g) {
        const int bh = ti.b * p.num_heads + ti.h0 + g;
        float M = neg_inf();
        for (int ci = threadIdx.x; ci < p.nch; ci += BLOCK) M = fmaxf(M, __ldcg(p.part_m + slot_index(p, task, ci, g)));
        M = block_max<BLOCK>(M);
        for (int ci = threadIdx.x; ci < p.nch; ci += BLOCK) {
            const size_t idx = slot_index(p, task, ci, g);
            const float l = __ldcg(p.part_l + idx);
            esc[ci] = l > 0.f ? __expf(__ldcg(p.part_m + idx) - M) : 0.f;
        }
        __syncthreads();
        double L = 0.0, z1 = 0.0, z2 = 0.0;
        for (int ci = threadIdx.x; ci < p.nch; ci += BLOCK) {
            const size_t idx = slot_index(p, task, ci, g);
            L += (double)__ldcg(p.part_l + idx) * (double)esc[ci];
        }
        block_sum3<BLOCK>(L, z1, z2);
        const float invL = (float)(1.0 / L);
        for (int col = threadIdx.x; col < HEAD_DIM; col += BLOCK) {
            float s = 0.f;
            for (int ci = 0; ci < p.nch; ++ci) {
                const float e = esc[ci];
                if (e > 0.f) s = fmaf(__ldcg(p.part_o + slot_index(p, task, ci, g) * HEAD_DIM + col), e, s);
            }
            p.out[(size_t)bh * HEAD_DIM + col] = s * invL;
            if (!isfinite(s * invL)) report_non_finite(p.status, bh, 2u);
        }
        if (threadIdx.x == 0) {
            if (!(M < pos_inf())) report_non_finite(p.status, bh, 1u);  // a score not finite
            p.tau[bh] = (double)M + log(L);
            p.head_m[bh] = M;
            p.head_t[bh] = 0.f;
            p.head_inv[bh] = invL;
            const int last_len = ti.len - (ti.npages - 1) * p.page_size;
            p.support[bh] = (ti.n - 1) * p.page_size + last_len;
            p.vflag[bh] = 0;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) p.counters[task] = 0;
}
#endif  // ATTN_KERNELS
