// entmaxkv CUDA kernels: shared definitions.
//
// Compiled by NVRTC at first use with these defines (one module per configuration):
//   KV_T      K/V element type: 0 = f32, 1 = f16, 2 = bf16
//   ST_T      page-statistics element type (same codes)
//   HEAD_DIM  D
//   TG        query heads per attention task (1, or the GQA group size)
// No CUDA headers are included: f16/bf16 conversions are inline PTX, so NVRTC needs no
// include path.
//
// Every kernel takes one parameter struct by value (plain device pointers and scalars); the
// Rust side mirrors each struct with #[repr(C)] and the sizes are checked by static_assert
// against EXPECT_* defines computed from the Rust structs.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ float h2f(u16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
    return f;
}
__device__ __forceinline__ float bf2f(u16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ u16 f2bf(float f) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// One ulp up or down of a 16-bit sign-magnitude float (as `step_bits16` in dtype.rs).
__device__ __forceinline__ u16 step_bits16(u16 bits, bool up) {
    const bool neg = (bits & 0x8000) != 0;
    const u16 mag = bits & 0x7fff;
    if (mag == 0) return up ? (u16)0x0001 : (u16)0x8001;
    if (neg == up) return (u16)((bits & 0x8000) | (mag - 1));
    return (u16)((bits & 0x8000) | (mag + 1));
}

template <int T> struct Elem;
template <> struct Elem<0> {
    typedef float t;
    static constexpr int BYTES = 4;
    __device__ static __forceinline__ float to_f(float x) { return x; }
    __device__ static __forceinline__ float from_f(float x) { return x; }
    __device__ static __forceinline__ float from_f_down(float x) { return x; }
    __device__ static __forceinline__ float from_f_up(float x) { return x; }
    // 16 bytes -> 4 floats
    __device__ static __forceinline__ void unpack(const uint4& u, float* x) {
        x[0] = __uint_as_float(u.x);
        x[1] = __uint_as_float(u.y);
        x[2] = __uint_as_float(u.z);
        x[3] = __uint_as_float(u.w);
    }
};
template <> struct Elem<1> {
    typedef u16 t;
    static constexpr int BYTES = 2;
    __device__ static __forceinline__ float to_f(u16 x) { return h2f(x); }
    __device__ static __forceinline__ u16 from_f(float x) { return f2h(x); }
    __device__ static __forceinline__ u16 from_f_down(float x) {
        u16 r = f2h(x);
        return h2f(r) > x ? step_bits16(r, false) : r;
    }
    __device__ static __forceinline__ u16 from_f_up(float x) {
        u16 r = f2h(x);
        return h2f(r) < x ? step_bits16(r, true) : r;
    }
    __device__ static __forceinline__ void unpack(const uint4& u, float* x) {
        const u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            x[2 * i] = h2f((u16)(w[i] & 0xffffu));
            x[2 * i + 1] = h2f((u16)(w[i] >> 16));
        }
    }
};
template <> struct Elem<2> {
    typedef u16 t;
    static constexpr int BYTES = 2;
    __device__ static __forceinline__ float to_f(u16 x) { return bf2f(x); }
    __device__ static __forceinline__ u16 from_f(float x) { return f2bf(x); }
    __device__ static __forceinline__ u16 from_f_down(float x) {
        u16 r = f2bf(x);
        return bf2f(r) > x ? step_bits16(r, false) : r;
    }
    __device__ static __forceinline__ u16 from_f_up(float x) {
        u16 r = f2bf(x);
        return bf2f(r) < x ? step_bits16(r, true) : r;
    }
    __device__ static __forceinline__ void unpack(const uint4& u, float* x) {
        const u32 w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            x[2 * i] = __uint_as_float(w[i] << 16);
            x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
};

typedef Elem<KV_T> KV;
typedef KV::t kv_t;
typedef Elem<ST_T> ST;
typedef ST::t st_t;

__host__ __device__ constexpr int pow2_ceil(int x) {
    int p = 1;
    while (p < x) p <<= 1;
    return p;
}
__host__ __device__ constexpr int cmin(int a, int b) { return a < b ? a : b; }

// Threads per CTA of the attention and top-k scoring kernels.
constexpr int BLOCK = 256;

// A K/V row is HEAD_DIM elements, read as 16-byte chunks by LANES consecutive lanes.
constexpr int KV_VEC = 16 / KV::BYTES;
constexpr int CHUNKS = HEAD_DIM * KV::BYTES / 16;
constexpr int LANES = cmin(pow2_ceil(CHUNKS), 32);
constexpr int CPL = (CHUNKS + LANES - 1) / LANES;  // chunks per lane
constexpr int COLS = CPL * KV_VEC;                 // columns per lane
constexpr int ROWGROUPS = BLOCK / LANES;           // rows a CTA reads at once
#ifndef UNROLL_ROWS
#define UNROLL_ROWS 8
#endif
constexpr int UNROLL = UNROLL_ROWS;                // rows per thread in flight
static_assert(HEAD_DIM * KV::BYTES % 16 == 0, "HEAD_DIM * sizeof(kv) must be a multiple of 16");

// Tensor-core paths (attn.cu: score_rows_mma, the V pass of attn_softmax) for f16 K/V with
// 2–4 query heads a task and D a multiple of 64, on sm_80 and later; the FMA loops otherwise.
// `ENTMAXKV_DEFINES="MMA_SCORES=0"` / `"MMA_VALUES=0"` turn them off and `"MMA_MIN_TG=1"` on
// for one head a task (development, for timing).
#ifndef MMA_MIN_TG
#define MMA_MIN_TG 2
#endif
#ifndef MMA_SCORES
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define MMA_SCORES 0
#else
#define MMA_SCORES (KV_T == 1 && TG >= MMA_MIN_TG && TG <= 4 && HEAD_DIM % 64 == 0)
#endif
#endif
#ifndef MMA_VALUES
#define MMA_VALUES MMA_SCORES
#endif
static_assert(!MMA_SCORES || (KV_T == 1 && TG <= 4 && HEAD_DIM % 32 == 0), "MMA_SCORES: f16, TG <= 4, D % 32 == 0");
static_assert(!MMA_VALUES || (KV_T == 1 && TG <= 4 && HEAD_DIM % 64 == 0), "MMA_VALUES: f16, TG <= 4, D % 64 == 0");

// Statistics rows, same scheme.
constexpr int ST_VEC = 16 / ST::BYTES;
constexpr int ST_CHUNKS = HEAD_DIM * ST::BYTES / 16;
constexpr int ST_LANES = cmin(pow2_ceil(ST_CHUNKS), 32);
constexpr int ST_CPL = (ST_CHUNKS + ST_LANES - 1) / ST_LANES;
constexpr int ST_ROWGROUPS = BLOCK / ST_LANES;
static_assert(HEAD_DIM * ST::BYTES % 16 == 0, "HEAD_DIM * sizeof(stats) must be a multiple of 16");

// Largest pages per attention chunk and chunks per task the static shared arrays hold.
constexpr int PPC_CAP = 256;
constexpr int NCH_MAX = 2048;

__device__ __forceinline__ uint4 zero4() { return make_uint4(0u, 0u, 0u, 0u); }

__device__ __forceinline__ uint4 ld_stream16(const void* base, int chunk) {
    return __ldcs(reinterpret_cast<const uint4*>(base) + chunk);
}
__device__ __forceinline__ uint4 ld_nc16(const void* base, int chunk) {
    return __ldg(reinterpret_cast<const uint4*>(base) + chunk);
}

// Order-preserving map f32 -> u32 (the order of f32::total_cmp for non-NaN values).
__device__ __forceinline__ u32 ordered_key(float f) {
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Warp-wide sum and maximum (every lane gets the result).
__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    return v;
}

// ---------------------------------------------------------------------------------------
// Block-wide helpers (blockDim.x == NT, a multiple of 32). Every call is a barrier.

template <int NT> __device__ int block_excl_scan(int v, int* total) {
    __shared__ int ws[32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int x = v;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, x, off);
        if (lane >= off) x += y;
    }
    if (lane == 31) ws[w] = x;
    __syncthreads();
    if (w == 0) {
        int t = lane < NT / 32 ? ws[lane] : 0;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, t, off);
            if (lane >= off) t += y;
        }
        ws[lane] = t;
    }
    __syncthreads();
    const int pre = (w > 0 ? ws[w - 1] : 0) + x - v;
    *total = ws[NT / 32 - 1];
    __syncthreads();
    return pre;
}

template <int NT> __device__ float block_max(float v) {
    __shared__ float wm[32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    if (lane == 0) wm[w] = v;
    __syncthreads();
    float r = wm[0];
#pragma unroll
    for (int i = 1; i < NT / 32; ++i) r = fmaxf(r, wm[i]);
    __syncthreads();
    return r;
}

// Sums of three doubles over the block, in a fixed order (deterministic).
template <int NT> __device__ void block_sum3(double& a, double& b, double& c) {
    __shared__ double ws[3][32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        a += __shfl_xor_sync(FULL_MASK, a, off);
        b += __shfl_xor_sync(FULL_MASK, b, off);
        c += __shfl_xor_sync(FULL_MASK, c, off);
    }
    if (lane == 0) {
        ws[0][w] = a;
        ws[1][w] = b;
        ws[2][w] = c;
    }
    __syncthreads();
    a = ws[0][0];
    b = ws[1][0];
    c = ws[2][0];
#pragma unroll
    for (int i = 1; i < NT / 32; ++i) {
        a += ws[0][i];
        b += ws[1][i];
        c += ws[2][i];
    }
    __syncthreads();
}

template <int NT> __device__ int block_sum_int(int v) {
    int total;
    block_excl_scan<NT>(v, &total);
    return total;
}

// A page-statistics pass's CTA (gauss_moments, topk_score, topk_sketch_score): grid (page
// ranges, B · H_kv), or its transpose where `kv_fast` (CTAs dispatched in x order then read
// the kv heads of one page range side by side); its sequence's row, length and closed pages.
struct StatCta {
    int part, b, kvh, row, len, closed;
};
template <class P> __device__ __forceinline__ StatCta stat_cta(const P& p) {
    StatCta c;
    c.part = p.kv_fast ? blockIdx.y : blockIdx.x;
    const int by = p.kv_fast ? blockIdx.x : blockIdx.y;
    c.b = by / p.num_kv_heads;
    c.kvh = by - c.b * p.num_kv_heads;
    c.row = p.rows[c.b];
    c.len = p.seq_lens[c.row];
    c.closed = (c.len + p.page_size - 1) / p.page_size - 1;
    return c;
}

// The "last CTA" pattern: every CTA of a group bumps `counter` after its writes; the one
// that sees `expected - 1` reads everybody's results and resets the counter for the next
// launch. Returns true in that CTA.
__device__ bool last_block_of(u32* counter, int expected) {
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const u32 t = atomicAdd(counter, 1u);
        s_last = (t == (u32)(expected - 1)) ? 1 : 0;
    }
    __syncthreads();
    const bool last = s_last != 0;
    if (last) __threadfence();
    return last;
}

// Programmatic dependent launch (sm_90+). A step's kernels are launched so that the next one
// may be scheduled while this one drains: every step kernel first waits for its predecessor
// grid to finish and its writes to be visible (griddepcontrol.wait — before touching any
// global memory), then lets its own successor launch. Semantics are exactly those of plain
// stream order; what overlaps is launch latency and CTA ramp-up. Both instructions are no-ops
// for a kernel launched without the attribute.
//
// PDL_PRE: a kernel that is not the step's first may read, before its wait, what the previous
// launch does not write. Every step kernel waits before it triggers, and no CTA exits before
// waiting, so launch N starts only once every CTA of N − 1 passed its wait, that is once N − 2
// and everything before it completed. Such reads go through L2 (ld.cg): the words were
// written by grids that have completed, and this SM's L1 holds nothing of this launch yet
// that could be stale. They overlap the previous launch: its dependent global loads leave
// the critical path (row → length → list count are three in a row).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_ENTRY()                                              \
    do {                                                         \
        asm volatile("griddepcontrol.wait;" ::: "memory");       \
        asm volatile("griddepcontrol.launch_dependents;" :::);   \
    } while (0)
#else
#define PDL_ENTRY() \
    do {            \
    } while (0)
#endif
