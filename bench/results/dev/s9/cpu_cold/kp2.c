#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <sys/mman.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int NS, DIST;
static inline void slice(const unsigned short*k, size_t t0, const float*q, float*out){
  __m512 q0=_mm512_loadu_ps(q),q1=_mm512_loadu_ps(q+16),q2=_mm512_loadu_ps(q+32),q3=_mm512_loadu_ps(q+48);
  const char* pf=(const char*)(k+t0*64)+DIST;
  for(int t=0;t<16;t++){
   const unsigned short*r=k+(t0+t)*64;
   if(DIST){ _mm_prefetch(pf+t*128,_MM_HINT_T1); _mm_prefetch(pf+t*128+64,_MM_HINT_T1);}
   __m512 z=_mm512_mul_ps(q0,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)r)));
   z=_mm512_fmadd_ps(q1,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+16))),z);
   z=_mm512_fmadd_ps(q2,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+32))),z);
   z=_mm512_fmadd_ps(q3,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+48))),z);
   out[t0+t]=_mm512_reduce_add_ps(z);
  }
}
void pass(const unsigned short*k, size_t n, const float*q, float*out){
#pragma omp parallel
 { int nt=omp_get_num_threads(), id=omp_get_thread_num();
   size_t per=n/nt, a=id*per, e=a+per; size_t part=per/NS;
   for(size_t j=0;j<part;j+=16) for(int s=0;s<NS;s++) slice(k,a+s*part+j,q,out);
 }
}
int main(){
 size_t by=(size_t)128<<20; size_t n=by/128;
 size_t big=(size_t)1<<30; char*flush=aligned_alloc(1<<21,big); madvise(flush,big,MADV_HUGEPAGE); memset(flush,1,big);
 unsigned short*k=aligned_alloc(1<<21,by+(1<<20)); madvise(k,by,MADV_HUGEPAGE); for(size_t i=0;i<by/2+(1<<19);i++)k[i]=0x3c00;
 float*out=aligned_alloc(64,n*4); float q[64]; for(int i=0;i<64;i++)q[i]=1e-3f*i;
 int nss[]={1,2,4,1,2,4}; int ds[]={2048,2048,2048,0,0,0};
 for(int rep=0;rep<2;rep++) for(int v=0;v<6;v++){ NS=nss[v]; DIST=ds[v];
  double best=1e9; volatile long s=0;
  for(int r=0;r<5;r++){ for(size_t i=0;i<big;i+=64)s+=flush[i]; double t=now(); pass(k,n,q,out); double dt=now()-t; if(dt<best)best=dt;}
  printf("streams/thread %d prefetch %d: %.1f GB/s cold\n",NS,DIST,by/best/1e9);
 }
}
