// Bandwidth probes for the bench: a read-only reduction and a copy, 16-byte accesses,
// grid-stride. Self-contained (no configuration defines).

typedef unsigned int u32;
typedef unsigned long long u64;

// grid-stride sum of every 32-bit word (as integers, so nothing can be skipped); one
// partial per CTA.
extern "C" __global__ void probe_read(const uint4* __restrict__ src, u64 n16, u32* __restrict__ partial) {
    u32 acc = 0;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 a = __ldcs(src + i);
        const uint4 b = __ldcs(src + i + stride);
        const uint4 c = __ldcs(src + i + 2 * stride);
        const uint4 d = __ldcs(src + i + 3 * stride);
        acc += a.x ^ a.y ^ a.z ^ a.w;
        acc += b.x ^ b.y ^ b.z ^ b.w;
        acc += c.x ^ c.y ^ c.z ^ c.w;
        acc += d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        const uint4 a = __ldcs(src + i);
        acc += a.x ^ a.y ^ a.z ^ a.w;
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    __shared__ u32 ws[32];
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        u32 s = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += ws[w];
        partial[blockIdx.x] = s;
    }
}

extern "C" __global__ void probe_copy(const uint4* __restrict__ src, uint4* __restrict__ dst, u64 n16) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += stride) dst[i] = __ldcs(src + i);
}

// Fills with a hash of the index (never zeros).
extern "C" __global__ void probe_fill(uint4* __restrict__ dst, u64 n16, u32 seed) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += stride) {
        u32 h = (u32)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13;
        dst[i] = make_uint4(h, h * 3u + 1u, h * 5u + 7u, h ^ 0x9e3779b9u);
    }
}
