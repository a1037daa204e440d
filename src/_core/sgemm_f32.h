/* Row-major float32 GEMM for AVX-512, C = op(A) op(B) (alpha 1, beta 0), the three shapes of
 * a dense layer's step:
 *   NN  C (m x n) = A (m x k)   B (k x n)      forward      Z  = X W
 *   TN  C (m x n) = A (k x m)^T B (k x n)      weights      dW = X^T dZ
 *   NT  C (m x n) = A (m x k)   B (n x k)^T    inputs       dX = dZ W^T
 * A register tile computes 6 x 64 of C: each step p broadcasts 6 elements of op(A)'s
 * column p and multiplies them with 4 vectors of B's row p (24 accumulators, 24 FMAs per
 * 4 + 6 loads). Products with C under 2^19 elements take k blocks of at most 128: per
 * block and per 64-column strip, B's panel (128 x 64, 32 KiB: L1) is packed once and swept
 * down all rows of C, the C tiles accumulating over the k blocks. Larger NN/TN products pack
 * B 384 columns by 384 rows at a time (L2) and sweep those strips with each row tile; larger
 * NT products take k blocks of up to 1024. NN reads A in place; TN packs A^T into 6-row
 * panels; NT packs its B^T panels with 16 x 16 in-register transposes.
 * Compared with OpenBLAS (bench/gemm_shapes.py), this wins most where one dimension is small,
 * as in training steps (batch 32: forward 0.55-0.65 of OpenBLAS's time, which packs the
 * whole weight matrix per call), and by 0-12% on large products.
 * An optional epilogue for the forward product, C = max(C + bias, 0) (relu) or C + bias, is
 * applied in registers as each tile of C is stored for the last time (NN and TN only).
 * fastnn_sgemm returns 0 when it did not compute C (nor the epilogue): call BLAS instead. */
#ifndef FASTNN_SGEMM_F32_H
#define FASTNN_SGEMM_F32_H
#include <stddef.h>
#include <stdlib.h>
#if defined(__AVX512F__)
#include <immintrin.h>

#define FNN_MR 6
#define FNN_NV 4
#define FNN_NC (16 * FNN_NV)
#define FNN_KC 128
#define FNN_KC_LARGE 1024
#define FNN_KC_BLOCKED 384
#define FNN_NB_BLOCKED 384
/* Where OpenBLAS is faster (bench/gemm_shapes.py): fewer than 4 rows (its GEMV-like paths). */
#define FNN_MIN_ROWS 4

#define FNN_ALWAYS_INLINE static inline __attribute__((always_inline))

/* C[0:mr, 0:16 nv] (+)= sum_p A[r, p] B[p, :]; A[r, p] at a[r rs_a + p cs_a]; the last
 * vector of each row is masked by `last` (columns beyond n). bias (when not NULL) is added
 * and relu applied to the tile as it is stored. */
FNN_ALWAYS_INLINE void fnn_tile(const int mr, const int nv, int kc, const float *a,
                                ptrdiff_t rs_a, ptrdiff_t cs_a, const float *b, ptrdiff_t ldb,
                                float *c, ptrdiff_t ldc, __mmask16 last, int accumulate,
                                const float *bias, int relu)
{
    __m512 acc[FNN_MR][FNN_NV];
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 k = v == nv - 1 ? last : (__mmask16)0xFFFF;
            acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(k, c + r * ldc + 16 * v) : _mm512_setzero_ps();
        }
    }
    for (int p = 0; p < kc; p++) {
        __m512 bv[FNN_NV];
        const float *brow = b + p * ldb;
        const float *acol = a + p * cs_a;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = v == nv - 1 ? _mm512_maskz_loadu_ps(last, brow + 16 * v) : _mm512_loadu_ps(brow + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m512 av = _mm512_set1_ps(acol[r * rs_a]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 k = v == nv - 1 ? last : (__mmask16)0xFFFF;
            __m512 x = acc[r][v];
            if (bias)
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(k, bias + 16 * v));
            if (relu)   /* x > 0 ? x : 0, NaN included */
                x = _mm512_max_ps(x, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(c + r * ldc + 16 * v, k, x);
        }
    }
}

#define FNN_TILE_CASE(MR_, NV_)                                                                 \
    case (MR_) * 8 + (NV_):                                                                     \
        fnn_tile(MR_, NV_, kc, a, rs_a, cs_a, b, ldb, c, ldc, last, accumulate, bias, relu);    \
        break;
#define FNN_TILE_ROW(MR_) FNN_TILE_CASE(MR_, 1) FNN_TILE_CASE(MR_, 2) FNN_TILE_CASE(MR_, 3) FNN_TILE_CASE(MR_, 4)

static void fnn_tile_any(int mr, int nv, int kc, const float *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                         const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, __mmask16 last,
                         int accumulate, const float *bias, int relu)
{
    switch (mr * 8 + nv) {
        FNN_TILE_ROW(1) FNN_TILE_ROW(2) FNN_TILE_ROW(3) FNN_TILE_ROW(4) FNN_TILE_ROW(5) FNN_TILE_ROW(6)
    default:
        break;
    }
}

/* k split into equal blocks of at most `limit` */
static inline int fnn_k_block(int k, int limit)
{
    int blocks = (k + limit - 1) / limit;
    return (k + blocks - 1) / blocks;
}

/* The k block of C (m x n) = A B^T: blocks of 128 keep B^T's panel (128 x 64) in L1; when
 * C has 2^19 elements (2 MiB, L2) or more, every k block costs a pass over C from L3, so
 * blocks of up to 1024 (1024 x 2048 x 2048 NT: 136 -> 200 GFLOP/s); a bound of 2^12 cost
 * batch-32 products 12%. The NN/TN blocking of fnn_gemm_b_rows (B's block in L2) did not
 * speed these up (1024 x 2048 x 2048: 172-177 either way), so NT keeps this simpler one. */
static inline int fnn_kc_max(int m, int n, int k)
{
    return fnn_k_block(k, (ptrdiff_t)m * n >= (1 << 19) ? FNN_KC_LARGE : FNN_KC);
}

/* dst[t][p][r] = A[p, t + r] (op(A) = A^T, A row-major with leading dimension lda) for row
 * tiles t = 0, 6, 12, ...: one contiguous kc x 6 panel per tile, each of its rows one masked
 * 6-float copy (rows beyond `rows` in the last panel are left unset and never read) */
static void fnn_pack_a(float *dst, const float *a, ptrdiff_t lda, int rows, int kc)
{
    for (int t = 0; t < rows; t += FNN_MR) {
        int mr = rows - t < FNN_MR ? rows - t : FNN_MR;
        __mmask16 k = (__mmask16)((1u << mr) - 1u);
        float *d = dst + (ptrdiff_t)t * kc;
        const float *src = a + t;
        for (int p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(d + p * FNN_MR, k, _mm512_maskz_loadu_ps(k, src + p * lda));
    }
}

/* The columns of the (at most) 64-column strip starting at column j0 of n; *nv its vectors,
 * *last the mask of its last vector (columns beyond n off). */
static inline int fnn_strip(int n, int j0, int *nv, __mmask16 *last)
{
    int cols = n - j0 < FNN_NC ? n - j0 : FNN_NC;
    *nv = (cols + 15) / 16;
    *last = (__mmask16)(cols % 16 ? (1u << (cols % 16)) - 1u : 0xFFFFu);
    return cols;
}

/* C = op(A) B with op(A)[i, p] = a[i rs_a + p cs_a] and B (k x n) row-major. Per k block, B is
 * packed nb columns at a time (strips of kc x 64, contiguous) and each 6-row tile of op(A)
 * sweeps those strips; op(A) is packed into 6-row panels when it is read transposed and reused
 * by several strips (m x kc). Two blockings (bench/gemm_shapes.py, GFLOP/s measured side by
 * side in a C harness):
 *   C below 2^19 elements (2 MiB, L2): kc <= 128, nb = 64: the strip's panel (32 KiB) stays in
 *     L1 for every row of C, and C in L2 across the k blocks;
 *   larger C: kc <= 384, nb = 384: B's block (576 KiB) in L2, each tile's 6 x 384 of op(A) in
 *     L1, C passed over k / 384 times. Against the first blocking with k blocks of up to 1024
 *     (its rule for such C until now): 2048 x 1024 x 2048 TN 159 -> 174-179, 784 x 1024 x 2048
 *     TN 161 -> 178, 1024 x 2048 x 2048 NN 169-176 -> 177-178. From 2^18 elements it was mixed
 *     (1024 x 512 x 256 NN 178 -> 206, 784 x 128 x 512 TN 190 -> 177), below that it lost.
 * Both buffers are on the heap; returns 0 when one is unavailable. */
static int fnn_gemm_b_rows(int m, int n, int k, const float *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                           const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                           const float *bias, int relu)
{
    int large = (ptrdiff_t)m * n >= (1 << 19);
    int kc_max = fnn_k_block(k, large ? FNN_KC_BLOCKED : FNN_KC);
    int nb = large ? FNN_NB_BLOCKED : FNN_NC;
    int pack_a = rs_a == 1 && cs_a != 1 && n > FNN_NC;
    float *bpack = aligned_alloc(64, (size_t)kc_max * nb * sizeof(float));
    /* aligned_alloc wants a size that is a multiple of the alignment: round rows up to 16 */
    float *apack = pack_a ? aligned_alloc(64, (size_t)kc_max * ((m + FNN_MR + 15) / 16 * 16) * sizeof(float)) : NULL;
    if (!bpack || (pack_a && !apack)) {
        free(bpack);
        free(apack);
        return 0;
    }
    for (int p0 = 0; p0 < k; p0 += kc_max) {
        int kc = k - p0 < kc_max ? k - p0 : kc_max;
        int final = p0 + kc == k;
        if (pack_a)
            fnn_pack_a(apack, a + p0 * cs_a, cs_a, m, kc);
        for (int jb = 0; jb < n; jb += nb) {
            int jend = n - jb < nb ? n : jb + nb;
            for (int j0 = jb; j0 < jend; j0 += FNN_NC) {
                int nv;
                __mmask16 last;
                fnn_strip(n, j0, &nv, &last);
                float *strip = bpack + (ptrdiff_t)(j0 - jb) * kc;
                const float *bsrc = b + p0 * ldb + j0;
                for (int p = 0; p < kc; p++)
                    for (int v = 0; v < nv; v++)
                        _mm512_store_ps(strip + p * FNN_NC + 16 * v,
                                        _mm512_maskz_loadu_ps(v == nv - 1 ? last : 0xFFFF, bsrc + p * ldb + 16 * v));
            }
            for (int i0 = 0; i0 < m; i0 += FNN_MR) {
                int mr = m - i0 < FNN_MR ? m - i0 : FNN_MR;
                const float *a_tile = pack_a ? apack + (ptrdiff_t)i0 * kc : a + i0 * rs_a + p0 * cs_a;
                ptrdiff_t rs = pack_a ? 1 : rs_a, cs = pack_a ? FNN_MR : cs_a;
                for (int j0 = jb; j0 < jend; j0 += FNN_NC) {
                    int nv;
                    __mmask16 last;
                    fnn_strip(n, j0, &nv, &last);
                    fnn_tile_any(mr, nv, kc, a_tile, rs, cs, bpack + (ptrdiff_t)(j0 - jb) * kc, FNN_NC,
                                 c + i0 * ldc + j0, ldc, last, p0 > 0, final && bias ? bias + j0 : NULL,
                                 final && relu);
                }
            }
        }
    }
    free(apack);
    free(bpack);
    return 1;
}

/* dst[p * FNN_NC + j] = src[j * lds + p] for j < cols, p < kc: 16 x 16 blocks transposed in
 * registers, the edges element by element. */
static void fnn_pack_transposed(float *dst, const float *src, ptrdiff_t lds, int cols, int kc)
{
    int j = 0;
    for (; j + 16 <= cols; j += 16) {
        int p = 0;
        for (; p + 16 <= kc; p += 16) {
            __m512 r[16], t[16];
            for (int q = 0; q < 16; q++)
                r[q] = _mm512_loadu_ps(src + (ptrdiff_t)(j + q) * lds + p);
            for (int q = 0; q < 16; q += 2) {
                t[q] = _mm512_unpacklo_ps(r[q], r[q + 1]);
                t[q + 1] = _mm512_unpackhi_ps(r[q], r[q + 1]);
            }
            for (int q = 0; q < 16; q += 4) {
                r[q] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
                r[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
                r[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
                r[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
            }
            /* r[4g + s] holds, in each 128-bit lane L, column 4L + s of rows 4g..4g+3 */
            for (int s = 0; s < 4; s++) {
                __m512 a01 = _mm512_shuffle_f32x4(r[s], r[4 + s], 0x44);   /* lanes 0,1 of g0 | g1 */
                __m512 a23 = _mm512_shuffle_f32x4(r[s], r[4 + s], 0xEE);   /* lanes 2,3 of g0 | g1 */
                __m512 b01 = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0x44);
                __m512 b23 = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0xEE);
                /* column 4L + s: lane L of g0, g1, g2, g3 */
                _mm512_storeu_ps(dst + (ptrdiff_t)(p + s) * FNN_NC + j, _mm512_shuffle_f32x4(a01, b01, 0x88));
                _mm512_storeu_ps(dst + (ptrdiff_t)(p + 4 + s) * FNN_NC + j, _mm512_shuffle_f32x4(a01, b01, 0xDD));
                _mm512_storeu_ps(dst + (ptrdiff_t)(p + 8 + s) * FNN_NC + j, _mm512_shuffle_f32x4(a23, b23, 0x88));
                _mm512_storeu_ps(dst + (ptrdiff_t)(p + 12 + s) * FNN_NC + j, _mm512_shuffle_f32x4(a23, b23, 0xDD));
            }
        }
        for (; p < kc; p++)
            for (int q = 0; q < 16; q++)
                dst[(ptrdiff_t)p * FNN_NC + j + q] = src[(ptrdiff_t)(j + q) * lds + p];
    }
    for (; j < cols; j++)
        for (int p = 0; p < kc; p++)
            dst[(ptrdiff_t)p * FNN_NC + j] = src[(ptrdiff_t)j * lds + p];
}

/* C = A B^T, A (m x k), B (n x k): per 64-column strip and k block, B^T's panel (kc x 64)
 * packed on the heap and swept down all rows of C. Returns 0 when the buffer is unavailable. */
static int fnn_gemm_nt(int m, int n, int k, const float *a, ptrdiff_t lda, const float *b,
                       ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    int kc_max = fnn_kc_max(m, n, k);
    float *panel = aligned_alloc(64, (size_t)kc_max * FNN_NC * sizeof(float));
    if (!panel)
        return 0;
    for (int j0 = 0; j0 < n; j0 += FNN_NC) {
        int nv;
        __mmask16 last;
        int cols = fnn_strip(n, j0, &nv, &last);
        for (int p0 = 0; p0 < k; p0 += kc_max) {
            int kc = k - p0 < kc_max ? k - p0 : kc_max;
            fnn_pack_transposed(panel, b + (ptrdiff_t)j0 * ldb + p0, ldb, cols, kc);
            for (int i0 = 0; i0 < m; i0 += FNN_MR) {
                int mr = m - i0 < FNN_MR ? m - i0 : FNN_MR;
                fnn_tile_any(mr, nv, kc, a + i0 * lda + p0, lda, 1, panel, FNN_NC,
                             c + i0 * ldc + j0, ldc, last, p0 > 0, NULL, 0);
            }
        }
    }
    free(panel);
    return 1;
}

/* Whether fastnn_sgemm computes this product (else it returns 0 and BLAS should). */
static int fastnn_sgemm_applies(int trans_a, int trans_b, int m, int n, int k)
{
    return !(trans_a && trans_b) && m >= FNN_MIN_ROWS;
}

static int fastnn_sgemm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                        const float *b, int ldb, float *c, int ldc, const float *bias, int relu)
{
    if (!fastnn_sgemm_applies(trans_a, trans_b, m, n, k) || ((bias || relu) && (trans_b || k <= 0)))
        return 0;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(ptrdiff_t)i * ldc + j] = 0.0f;
        return 1;
    }
    if (trans_b)
        return fnn_gemm_nt(m, n, k, a, lda, b, ldb, c, ldc);
    if (trans_a)
        return fnn_gemm_b_rows(m, n, k, a, 1, lda, b, ldb, c, ldc, bias, relu);
    return fnn_gemm_b_rows(m, n, k, a, lda, 1, b, ldb, c, ldc, bias, relu);
}
#else
static int fastnn_sgemm_applies(int trans_a, int trans_b, int m, int n, int k)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k;
    return 0;
}

static int fastnn_sgemm(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                        const float *b, int ldb, float *c, int ldc, const float *bias, int relu)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b;
    (void)ldb; (void)c; (void)ldc; (void)bias; (void)relu;
    return 0;
}
#endif
#endif
