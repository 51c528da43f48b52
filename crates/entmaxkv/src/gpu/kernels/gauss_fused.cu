// Gaussian-aware selection (original criterion, exact τ) fused with the entmax K pass, for
// short caches (the plan's `fused_gauss`). There the criterion keeps most pages (~90% at 32K
// on the original's inputs), and the separate selection's three launches and their
// dependent phases cost more than the K rows they let the attention skip (session 11: at
// 32K the Gaussian step took 0.085 ms, dense entmax 0.040). Two launches replace
// gauss_moments, gauss_count, gauss_pack, attn_entmax_scores and attn_entmax_filter:
//   gauss_fused_scores  CTAs take their roles in the order they start (a ticket): per task,
//                       nch chunk CTAs, then one solver CTA. A chunk CTA computes μ_p, σ_p² of
//                       its closed pages and their partial moment sums, publishes them
//                       (fence, then a counter), then scores every K row of its pages (all of
//                       them written as candidates: which pages are kept is not known yet) and
//                       each page's largest score. The solver waits for its task's chunks (all
//                       started before it, so they progress), merges their partials in chunk
//                       order and solves τ̂ and the floors while the chunks stream K.
//   gauss_fused_filter  every CTA applies the keep test to all of its task's pages (the last
//                       page always kept), takes the largest score M over the kept ones,
//                       writes its chunks' share of the kept list, and keeps, in place, its
//                       chunks' candidates on kept pages with d = (α−1)(s − M) > −1, counted
//                       into the histogram: what attn_entmax_tail expects from
//                       attn_entmax_filter. CTA 0 of a task publishes M, the kept count and the
//                       τ clamp of τ̂ (reported), and resets the counters for the next step.
// The result is that of the selection followed by the attention over the kept pages: the
// same candidates in the same order against the same maximum. Deterministic: partials merged
// in a fixed order, the counters and histogram are integers.

struct FusedGaussParams {
    AttnParams a;
    GaussParams g;
    double* part;    // [B * H, nch, 4] moment partial sums per chunk
    float* pmax;     // [B * H, ws_stride] largest score of each page
    u32* published;  // [tasks] chunks that published their partials (0 between steps)
    u32* ticket;     // [1] CTAs started (0 between steps)
    unsigned long long* prof;  // null, or [16] global-timer stamps (development, see fstamp)
};
#ifdef EXPECT_FUSED_SIZE
static_assert(sizeof(FusedGaussParams) == EXPECT_FUSED_SIZE, "FusedGaussParams layout differs from Rust");
#endif

// Development stamps (ns of the global timer; `ENTMAXKV_PROFILE_TAIL`): [0] the first CTA's
// start, then the latest of [1] a chunk's publish, [2] a chunk's end, [3] a solver's wait
// done, [4] a solver's end, [5] a filter CTA's keep pass done, [6] a filter CTA's end, and
// [7] the longest solve (ns), [9] the longest merge. The timer only grows, so maxima kept over steps are the
// last step's.
__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ void fstamp(const FusedGaussParams& P, int k) {
    if (P.prof && threadIdx.x == 0) atomicMax(P.prof + k, gtimer());
}

// Pages the filter's keep bitmask holds (a multiple of BLOCK; the plan checks it).
constexpr int FUSED_MAX_PAGES = 16384;

// Closed pages of chunk c of a task with npages pages.
__device__ __forceinline__ int fused_chunk_closed(const AttnParams& p, int npages, int c) {
    int pb, pe;
    chunk_range(p, npages, c, pb, pe);
    return max(0, min(pe, npages - 1) - pb);
}

// The solver CTA of a task: waits for every chunk's partials, then τ̂, floors and z of each
// head as gauss_count computes them.
__device__ void fused_solve(const FusedGaussParams& P, int task, const TaskInfo& ti) {
    const AttnParams& p = P.a;
    const GaussParams& gp = P.g;
    __shared__ double s_sum[TG][4];
    __shared__ double s_floor[TG], s_z[TG], s_tau[TG];
    __shared__ int s_bad;
    const int tid = threadIdx.x;
    const GaussTask t = gauss_task(gp, task);
    const int bh0 = t.b * p.num_heads + t.h0;
    if (t.closed == 0) {
        // A lone last page: no model, nothing to drop.
        if (tid < TG) gp.tau_hat[bh0 + tid] = __longlong_as_double(0x7ff8000000000000LL);
        if (tid == 0) gp.task_bad[task] = 0;
        return;
    }
    // Warm the solve's code while the chunks publish: the same path on stand-in moments
    // (μ_g = 0, σ_g = 1 over the same pages). After the previous kernels its instructions
    // are cold, and fetching them dominated the solve (session 13 run 2: up to 22.6 µs).
    if (tid == 0) {
        const volatile u32* f = P.published + task;
        while (*f < (u32)p.nch) __nanosleep(64);
        __threadfence();
    }
    __syncthreads();
    const unsigned long long t_wait = P.prof ? gtimer() : 0ull;
    fstamp(P, 3);
    const double n = (double)t.closed;
    for (int g = 0; g < TG; ++g)
        merge_moments(P.part + (size_t)(bh0 + g) * p.nch * 4, p.nch, n,
                      [&](int c) { return fused_chunk_closed(p, ti.npages, c); }, s_sum[g]);
    if (tid == 0) s_bad = 0;
    __syncthreads();
    if (P.prof && tid == 0) atomicMax(P.prof + 9, gtimer() - t_wait);
    const int hg = tid >> 5, lane = tid & 31;
    if (hg < TG) gauss_head(gp, t, hg, lane, s_sum[hg], n, s_tau, s_floor, s_z, &s_bad);
    __syncthreads();
    const bool bad = s_bad != 0;
    if (tid < TG) {
        gp.tau_hat[bh0 + tid] = bad ? __longlong_as_double(0x7ff8000000000000LL) : s_tau[tid];
        gp.head_floor[bh0 + tid] = s_floor[tid];
        gp.head_z[bh0 + tid] = s_z[tid];
    }
    if (tid == 0) gp.task_bad[task] = bad ? 1 : 0;
    fstamp(P, 4);
    if (P.prof && tid == 0) atomicMax(P.prof + 7, gtimer() - t_wait);
}

// grid ((nch + 1) · tasks), block BLOCK, dynamic smem (TG · caprows + TG · HEAD_DIM +
// TG · 2 · ppc_max) · 4 bytes.
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_fused_scores(const FusedGaussParams P) {
    PDL_ENTRY();
    const AttnParams& p = P.a;
    const GaussParams& gp = P.g;
    extern __shared__ __align__(16) unsigned char dyn[];
    __shared__ u32 s_page[PPC_CAP];
    __shared__ u32 s_slot[PPC_CAP];
    __shared__ int s_role;
    // Modulo the grid: roles stay a permutation even if a launch was not followed by the
    // filter that resets the ticket.
    if (threadIdx.x == 0) s_role = (int)(atomicAdd(P.ticket, 1u) % gridDim.x);
    __syncthreads();
    if (P.prof && s_role == 0 && threadIdx.x == 0) {
        for (int i = 7; i < 10; ++i) P.prof[i] = 0ull;  // durations: this step's only
        P.prof[0] = gtimer();
    }
    const int task = s_role / (p.nch + 1), c = s_role - task * (p.nch + 1);
    const TaskInfo ti = task_info(p, task);
    if (c == p.nch) {
        fused_solve(P, task, ti);
        return;
    }
    const int caprows = p.ppc_max * p.page_size;
    float* sc = reinterpret_cast<float*>(dyn);  // [TG, caprows] scores
    float* qs = sc + TG * caprows;              // [TG, HEAD_DIM] scaled queries
    float* s_mv = qs + TG * HEAD_DIM;           // [TG, 2, ppc_max] μ_p, σ_p²
    int pbeg, pend;
    chunk_range(p, ti.npages, c, pbeg, pend);
    const int npg = max(0, pend - pbeg);
    const int ncl = fused_chunk_closed(p, ti.npages, c);
    if (npg > 0) load_chunk_pages(p, task, ti, pbeg, npg, s_page, s_slot);
    for (int i = threadIdx.x; i < TG * HEAD_DIM; i += BLOCK)
        qs[i] = p.q[((size_t)ti.b * p.num_heads + ti.h0) * HEAD_DIM + i] * gp.scale;
    __syncthreads();
    // Moments first: the solver waits for them.
    if (ncl > 0) page_moments(gp, ti.b, ti.kvh, ti.h0, TG, qs, s_page, pbeg, pbeg + ncl, s_mv, p.ppc_max);
    __syncthreads();
    moments_partial(gp, ti.h0, TG, pbeg, ncl, (double)(ti.len - 1), s_mv, p.ppc_max,
                    P.part + (((size_t)ti.b * p.num_heads + ti.h0) * p.nch + c) * 4, (size_t)p.nch * 4);
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(P.published + task, 1u);
    }
    fstamp(P, 1);
    if (npg == 0) {
        if (threadIdx.x < TG) p.cand_cnt[slot_index(p, task, c, threadIdx.x)] = 0;
        return;
    }
    float qr[TG][COLS];
    load_q(p, ti.b, ti.h0, threadIdx.x % LANES, qr);
    const int nrows = npg * p.page_size;
    score_rows(p, ti, nrows, s_page, s_slot, qr, sc, caprows);
    __syncthreads();
    for (int g = 0; g < TG; ++g) {
        const float* sg = sc + g * caprows;
        const size_t idx = slot_index(p, task, c, g);
        float* cs = p.cand_s + idx * (size_t)caprows;
        u32* cp = p.cand_pos + idx * (size_t)caprows;
        for (int r = threadIdx.x; r < nrows; r += BLOCK) {
            const int pi = r / p.page_size;
            cs[r] = sg[r];
            cp[r] = s_page[pi] * (u32)p.page_size + (u32)(r - pi * p.page_size);
        }
        float* pm = P.pmax + (size_t)(ti.b * p.num_heads + ti.h0 + g) * gp.ws_stride + pbeg;
        for (int i = threadIdx.x; i < npg; i += BLOCK) {
            float m = neg_inf();
            for (int r = i * p.page_size; r < (i + 1) * p.page_size; ++r) m = fmaxf(m, sg[r]);
            pm[i] = m;
        }
        if (threadIdx.x == 0) p.cand_cnt[idx] = nrows;
    }
    fstamp(P, 2);
}

// grid (ceil(nch / CPB), tasks), block BLOCK: CTA x filters chunks x·CPB .. x·CPB + CPB − 1
// (one warp each).
extern "C" __global__ void __launch_bounds__(BLOCK) gauss_fused_filter(const FusedGaussParams P) {
    PDL_ENTRY();
    const AttnParams& p = P.a;
    const GaussParams& gp = P.g;
    __shared__ int s_hist[TG][HIST_BINS];
    __shared__ u32 s_keep[FUSED_MAX_PAGES / 32];
    __shared__ double s_floor[TG], s_z[TG];
    __shared__ float s_M[TG];
    const int task = blockIdx.y, tid = threadIdx.x;
    const TaskInfo ti = task_info(p, task);
    const GaussTask t = gauss_task(gp, task);
    const int bh0 = t.b * p.num_heads + t.h0;
    const int caprows = p.ppc_max * p.page_size;
    const int c0 = blockIdx.x * CPB;
    for (int i = tid; i < TG * HIST_BINS; i += BLOCK) (&s_hist[0][0])[i] = 0;
    if (tid < TG) {
        s_floor[tid] = gp.head_floor[bh0 + tid];
        s_z[tid] = gp.head_z[bh0 + tid];
    }
    __syncthreads();
    const bool bad = t.closed > 0 && gp.task_bad[task] != 0;
    // Pages of this CTA's chunks: [first, end).
    int first, end, unused;
    chunk_range(p, ti.npages, c0, first, unused);
    chunk_range(p, ti.npages, min(c0 + CPB, p.nch) - 1, unused, end);
    first = min(first, ti.npages);
    end = max(end, first);
    // The keep test of every page of the task, the kept pages' largest score per head, the
    // kept pages before this CTA's and in all; CTA 0 also the clamp maxima.
    float mk[TG];
    double cap[TG];
#pragma unroll
    for (int g = 0; g < TG; ++g) {
        mk[g] = neg_inf();
        cap[g] = gauss_ninf();
    }
    const bool clamp = blockIdx.x == 0 && gp.clamp_tau && !bad;
    const double zc = gp.z_clamp * gp.clamp_scale;
    int before = 0, all = 0;
    // FU pages a thread per round, every load of a round issued before any is used (the
    // pages' moments and maxima come from L2; one round trip per round, not per page).
    constexpr int FU = TG == 1 ? 8 : (TG <= 4 ? 4 : 2);
    for (int i0 = 0; i0 < ti.npages; i0 += BLOCK * FU) {
        float mu[FU][TG], sd[FU][TG], pm[FU][TG];
#pragma unroll
        for (int u = 0; u < FU; ++u) {
            const int i = i0 + u * BLOCK + tid;
#pragma unroll
            for (int g = 0; g < TG; ++g) {
                const size_t o = (size_t)(bh0 + g) * gp.ws_stride + i;
                const bool in = i < ti.npages;
                mu[u][g] = in && i < t.closed ? gp.mu[o] : 0.f;
                sd[u][g] = in && i < t.closed ? gp.sd[o] : 0.f;
                pm[u][g] = in ? P.pmax[o] : neg_inf();
            }
        }
#pragma unroll
        for (int u = 0; u < FU; ++u) {
            const int i = i0 + u * BLOCK + tid;
            bool keep = false;
            if (i < ti.npages) {
                keep = i == t.closed || bad;
#pragma unroll
                for (int g = 0; g < TG; ++g) {
                    // gauss_keep's test, on the values loaded above.
                    const double sl = head_slope(gp, t.h0 + g);
                    const double mb = (double)mu[u][g] + page_bias(gp, sl, i, t.q_pos) + bias_half_width(gp, sl);
                    keep |= i < t.closed && gp.a * (mb + s_z[g] * sqrt((double)sd[u][g])) > s_floor[g];
                }
            }
            const u32 m = __ballot_sync(FULL_MASK, keep);
            if ((tid & 31) == 0) s_keep[(i0 + u * BLOCK + (tid & ~31)) >> 5] = m;
            if (keep) {
                ++all;
                before += i < first ? 1 : 0;
#pragma unroll
                for (int g = 0; g < TG; ++g) {
                    mk[g] = fmaxf(mk[g], pm[u][g]);
                    if (clamp && i < t.closed) {
                        const double mb = (double)mu[u][g] + page_bias(gp, head_slope(gp, t.h0 + g), i, t.q_pos);
                        cap[g] = fmax(cap[g], mb + zc * sqrt((double)sd[u][g]));
                    }
                }
            }
        }
    }
    fstamp(P, 5);
#pragma unroll
    for (int g = 0; g < TG; ++g) {
        const float m = block_max<BLOCK>(mk[g]);
        if (tid == 0) s_M[g] = m;
    }
    before = block_sum_int<BLOCK>(before);
    all = block_sum_int<BLOCK>(all);
    // This CTA's share of the kept list (ascending; the last page is the largest index).
    u32* L = gp.lists + (size_t)task * gp.list_stride;
    int o = before;
    for (int i0 = first; i0 < end; i0 += BLOCK) {
        const int i = i0 + tid;
        const int k = (i < end && ((s_keep[i >> 5] >> (i & 31)) & 1u)) ? 1 : 0;
        int round;
        const int at = block_excl_scan<BLOCK>(k, &round);
        if (k) L[o + at] = (u32)i;
        o += round;
    }
    if (blockIdx.x == 0) {
        if (tid == 0) {
            gp.list_counts[task] = all;
            P.published[task] = 0u;
            if (task == 0) *P.ticket = 0u;
        }
        if (tid < TG) p.gmax[(size_t)task * TG + tid] = ordered_key(s_M[tid]);
        // τ clamp over the kept closed pages (τ ∈ [τ_floor, τ̂]), as gauss_pack.
        for (int g = 0; g < TG; ++g) {
            const double cm = gauss_block_max(cap[g]);
            if (tid == 0 && clamp && cm > gauss_ninf())
                gp.tau_hat[bh0 + g] = fmin(gp.tau_hat[bh0 + g], fmax(gp.a * cm - 1e-4, s_floor[g]));
        }
    }
    // Candidates of kept pages against the kept maximum, in place, into the histogram.
    const int w = tid >> 5, c = c0 + w;
    if (c < p.nch) {
        int pbeg, pend;
        chunk_range(p, ti.npages, c, pbeg, pend);
        const int ps = p.page_size;
        for (int g = 0; g < TG; ++g) {
            const size_t idx = slot_index(p, task, c, g);
            const int kept = warp_compact_if(p, idx, caprows, s_M[g], -1.0f, s_hist[g], true, pos_inf(), [&](int k) {
                const int pg = pbeg + k / ps;
                return ((s_keep[pg >> 5] >> (pg & 31)) & 1u) != 0u;
            });
            if ((tid & 31) == 0) p.cand_cnt[idx] = kept;
        }
    }
    __syncthreads();
    for (int i = tid; i < TG * HIST_BINS; i += BLOCK) {
        const int v = (&s_hist[0][0])[i];
        if (v) atomicAdd(p.hist + (size_t)task * TG * HIST_BINS + i, v);
    }
    fstamp(P, 6);
}
