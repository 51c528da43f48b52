#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <sys/mman.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
float readbuf(float*a,size_t n){float tot=0;
#pragma omp parallel reduction(+:tot)
{ __m256 s0=_mm256_setzero_ps(),s1=s0,s2=s0,s3=s0;
#pragma omp for schedule(static)
 for(size_t i=0;i<n;i+=32){s0=_mm256_add_ps(s0,_mm256_load_ps(a+i));s1=_mm256_add_ps(s1,_mm256_load_ps(a+i+8));s2=_mm256_add_ps(s2,_mm256_load_ps(a+i+16));s3=_mm256_add_ps(s3,_mm256_load_ps(a+i+24));}
 s0=_mm256_add_ps(_mm256_add_ps(s0,s1),_mm256_add_ps(s2,s3)); float t[8];_mm256_storeu_ps(t,s0); for(int j=0;j<8;j++)tot+=t[j];}
return tot;}
int main(int argc,char**argv){
 size_t big=(size_t)3<<30; float*flush=aligned_alloc(1<<21,big); madvise(flush,big,MADV_HUGEPAGE); memset(flush,1,big);
 size_t sizes[]={16,64,128,256,384,512,1024,2048};
 for(int k=0;k<8;k++){size_t by=sizes[k]<<20; float*a=aligned_alloc(1<<21,by); madvise(a,by,MADV_HUGEPAGE); memset(a,0,by);
  double bw=0,bc=0; float sink=0;
  for(int r=0;r<5;r++){double t=now(); sink+=readbuf(a,by/4); double dt=now()-t; if(by/dt>bw)bw=by/dt;}
  for(int r=0;r<3;r++){sink+=readbuf(flush,big/4); double t=now(); sink+=readbuf(a,by/4); double dt=now()-t; if(by/dt>bc)bc=by/dt;}
  printf("%5zu MiB warm %.1f GB/s  cold(after 3GB flush) %.1f GB/s  %g\n",sizes[k],bw/1e9,bc/1e9,sink);
  free(a);}
}
