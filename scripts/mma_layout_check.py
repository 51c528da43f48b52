#!/usr/bin/env python3
"""Checks the tensor-core index mapping of attn.cu (score_rows for MMA_SCORES, and
softmax_values_mma) without a GPU: every lane's registers are built exactly as the kernels
build them, mma.m16n8k16 is applied by the fragment layouts of the PTX ISA (A row-major
16x16, B column-major 16x8, C 16x8; groupID = lane / 4, threadID_in_group = lane % 4), and
the scores and V sums are compared with numpy. Run it after changing either mapping:

    python3 scripts/mma_layout_check.py    # max errors ~1e-7..1e-6 (f32-level), else a bug

q and the weights are split in f16 as hi + lo in the B fragment's columns h and 4 + h, as
the kernels do; the hardware's f32 accumulation order is not modelled (numpy sums in f64).
"""
import numpy as np
rng=np.random.default_rng(0)
def mma(d, A_regs, B_regs):
    # A_regs[lane] = 4 regs each (lo,hi) f16 pairs; B_regs[lane]=2 regs; d[lane]=4 floats
    A=np.zeros((16,16)); B=np.zeros((16,8))
    for lane in range(32):
        g,c=lane>>2,lane&3
        a=A_regs[lane]
        A[g,2*c:2*c+2]=a[0]; A[g+8,2*c:2*c+2]=a[1]; A[g,2*c+8:2*c+10]=a[2]; A[g+8,2*c+8:2*c+10]=a[3]
        b=B_regs[lane]
        B[2*c:2*c+2,g]=b[0]; B[2*c+8:2*c+10,g]=b[1]
    C=A@B
    for lane in range(32):
        g,c=lane>>2,lane&3
        d[lane][0]+=C[g,2*c]; d[lane][1]+=C[g,2*c+1]; d[lane][2]+=C[g+8,2*c]; d[lane][3]+=C[g+8,2*c+1]
def f16_part(x,lo):
    h=np.float16(x)
    return np.float16(np.float32(x)-np.float32(h)) if lo else h
def scores(K,q,TG,D):  # K [16,D], q [TG,D]
    NB=D//32
    bq={}
    for lane in range(32):
        g,c=lane>>2,lane&3; h=g&3
        x=[[q[h,32*b+8*c+j] if h<TG else 0.0 for j in range(8)] for b in range(NB)]
        bq[lane]=[[(f16_part(x[b][2*j],g>=4),f16_part(x[b][2*j+1],g>=4)) for j in range(4)] for b in range(NB)]
    d=[[0.0]*4 for _ in range(32)]
    X={};Y={}
    for lane in range(32):
        g,c=lane>>2,lane&3
        # uint4 of row g dims [32b+8c,+8): words j = (dim 2j, 2j+1)
        X[lane]=[[tuple(K[g,32*b+8*c+2*j:32*b+8*c+2*j+2]) for j in range(4)] for b in range(NB)]
        Y[lane]=[[tuple(K[g+8,32*b+8*c+2*j:32*b+8*c+2*j+2]) for j in range(4)] for b in range(NB)]
    for b in range(NB):
        mma(d,{l:[X[l][b][0],Y[l][b][0],X[l][b][1],Y[l][b][1]] for l in range(32)},{l:[bq[l][b][0],bq[l][b][1]] for l in range(32)})
        mma(d,{l:[X[l][b][2],Y[l][b][2],X[l][b][3],Y[l][b][3]] for l in range(32)},{l:[bq[l][b][2],bq[l][b][3]] for l in range(32)})
    S=np.full((TG,16),np.nan)
    for lane in range(32):
        g,c=lane>>2,lane&3
        o=[d[lane^2][i] for i in range(4)]
        if c<2:
            for i in range(4):
                r=g if i<2 else g+8; h=2*c+(i&1)
                if h<TG: S[h,r]=d[lane][i]+o[i]
    return S
def values(V,W,TG,D):  # V [16,D], W [TG,16]
    NS=D//64
    acc={l:[[[0.0]*4 for j in range(4)] for s in range(NS)] for l in range(32)}
    xv={};b={}
    for lane in range(32):
        g,c=lane>>2,lane&3;h=g&3
        xv[lane]=[[[tuple(V[4*c+i,8*(g+8*s)+2*j:8*(g+8*s)+2*j+2]) for j in range(4)] for s in range(NS)] for i in range(4)]
        w=[W[h,4*c+i] if h<TG else 0.0 for i in range(4)]
        b[lane]=[(f16_part(w[0],g>=4),f16_part(w[1],g>=4)),(f16_part(w[2],g>=4),f16_part(w[3],g>=4))]
    prmt_lo=lambda a,bb:(a[0],bb[0]); prmt_hi=lambda a,bb:(a[1],bb[1])
    for s in range(NS):
        for j in range(4):
            d={l:acc[l][s][j] for l in range(32)}
            A={}
            for l in range(32):
                x0,x1,x2,x3=[xv[l][i][s][j] for i in range(4)]
                A[l]=[prmt_lo(x0,x1),prmt_hi(x0,x1),prmt_lo(x2,x3),prmt_hi(x2,x3)]
            mma(d,A,b)
    out=np.full((TG,D),np.nan)
    for lane in range(32):
        g,c=lane>>2,lane&3
        tot=[[[acc[lane][s][j][i]+acc[lane^2][s][j][i] for i in range(4)] for j in range(4)] for s in range(NS)]
        for hh in range(TG):
            if c==hh>>1:
                col=hh&1
                for s in range(NS):
                    for j in range(4):
                        dim=8*(g+8*s)+2*j
                        out[hh,dim]=tot[s][j][col]; out[hh,dim+1]=tot[s][j][2+col]
    return out
for TG,D in [(4,128),(2,64),(3,128),(1,64),(4,64)]:
    K=rng.standard_normal((16,D)).astype(np.float16).astype(np.float64)
    q=rng.standard_normal((TG,D)).astype(np.float32)*0.125
    S=scores(K,q,TG,D); ref=q.astype(np.float64)@K.T
    V=rng.standard_normal((16,D)).astype(np.float16).astype(np.float64)
    W=rng.random((TG,16)).astype(np.float32)
    O=values(V,W,TG,D); refo=W.astype(np.float64)@V
    es,eo=np.abs(S-ref).max(),np.abs(O-refo).max()
    print(f"TG {TG} D {D}: scores max error {es:.2e}, values max error {eo:.2e}")
    # A wrong mapping gives O(1) errors (or NaN where a slot is never written).
    assert es < 1e-5 and eo < 1e-5, "mapping broken"
