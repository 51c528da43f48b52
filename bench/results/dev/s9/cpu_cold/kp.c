#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <sys/mman.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
// K: n rows of 64 f16 (128 B). scores out.
static int MODE, DIST;
void pass(const unsigned short*k, size_t n, const float*q, float*out){
#pragma omp parallel for schedule(static,8192)
 for(size_t t0=0;t0<n;t0+=16){ // one page-head of 16 rows = 2 KB
  const char* pf=(const char*)(k+(t0)*64)+DIST;
  if(MODE==1) for(int o=0;o<2048;o+=64) _mm_prefetch(pf+o,_MM_HINT_T1);
  __m512 q0=_mm512_loadu_ps(q),q1=_mm512_loadu_ps(q+16),q2=_mm512_loadu_ps(q+32),q3=_mm512_loadu_ps(q+48);
  for(int t=0;t<16;t++){
   const unsigned short*r=k+(t0+t)*64;
   if(MODE==2) { _mm_prefetch(pf+t*128,_MM_HINT_T1); _mm_prefetch(pf+t*128+64,_MM_HINT_T1);}
   if(MODE==3||MODE==5) { _mm_prefetch(pf+t*128,_MM_HINT_T0); _mm_prefetch(pf+t*128+64,_MM_HINT_T0);}
   __m512 z=_mm512_mul_ps(q0,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)r)));
   z=_mm512_fmadd_ps(q1,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+16))),z);
   z=_mm512_fmadd_ps(q2,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+32))),z);
   z=_mm512_fmadd_ps(q3,_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(r+48))),z);
   size_t oi = (MODE>=4) ? ((t0/16)%8)*(n/8) + (t0/128)*16 + t : t0+t;
   out[oi]=_mm512_reduce_add_ps(z);
  }
 }
}
int main(int argc,char**argv){
 size_t by=(size_t)128<<20; size_t n=by/128;
 size_t big=(size_t)1<<30; char*flush=aligned_alloc(1<<21,big); madvise(flush,big,MADV_HUGEPAGE); memset(flush,1,big);
 unsigned short*k=aligned_alloc(1<<21,by+(1<<20)); madvise(k,by,MADV_HUGEPAGE); for(size_t i=0;i<by/2+(1<<19);i++)k[i]=0x3c00;
 float*out=aligned_alloc(64,n*4); float q[64]; for(int i=0;i<64;i++)q[i]=1e-3f*i;
 int modes[]={0,3,4,5}; int dists[]={2048,2048,2048,2048};
 for(int mi=0;mi<4;mi++)for(int di=0;di<4;di++){ MODE=modes[mi]; DIST=dists[di]; if(di>0)continue;
  double best=1e9; volatile long s=0;
  for(int r=0;r<5;r++){ for(size_t i=0;i<big;i+=64)s+=flush[i]; double t=now(); pass(k,n,q,out); double dt=now()-t; if(dt<best)best=dt;}
  printf("mode %d dist %6d: %.1f GB/s cold\n",MODE,DIST,by/best/1e9);
 }
 double best=1e9; for(int r=0;r<5;r++){double t=now(); pass(k,n,q,out); double dt=now()-t; if(dt<best)best=dt;} printf("warm mode3: %.1f\n",by/best/1e9);
}
