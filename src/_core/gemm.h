/* Row-major GEMM for AVX-512, float32 (fastnn_gemm_f32) and float64 (fastnn_gemm_f64),
 * C = op(A) op(B) (alpha 1, beta 0), the three shapes of a dense layer's step:
 *   NN  C (m x n) = A (m x k)   B (k x n)      forward      Z  = X W
 *   TN  C (m x n) = A (k x m)^T B (k x n)      weights      dW = X^T dZ
 *   NT  C (m x n) = A (m x k)   B (n x k)^T    inputs       dX = dZ W^T
 * A register tile computes 6 rows x 4 vectors of C (6 x 64 floats, 6 x 32 doubles): each step
 * p broadcasts 6 elements of op(A)'s column p and multiplies them with 4 vectors of B's row
 * p (24 accumulators, 24 FMAs per 4 + 6 loads). Products with C under 2 MiB (2^19 floats;
 * fnn_gemm_b_rows has the exact rule) take k blocks of at most 128: per block and per strip
 * of 4 vectors, B's panel (128 rows, 32 KiB: L1) is packed once and swept down all rows of
 * C, the C tiles accumulating over the k blocks. Larger NN/TN products pack B up to 448
 * rows by 784 KiB at a time (L2) and sweep those strips with each row tile; larger NT
 * products take k blocks of up to 1024. NN reads A in place; TN packs A^T into 6-row
 * panels; NT packs its B^T panels with in-register transposes (16 x 16 floats, 8 x 8
 * doubles). gemm_impl.h holds the code, written once for both types; this file includes it
 * per type, after that type's register transpose.
 * Compared with OpenBLAS (bench/gemm_shapes.py), this wins most where one dimension is small,
 * as in training steps (float32 at batch 32: forward 0.55-0.65 of OpenBLAS's time, which
 * packs the whole weight matrix per call), and by 0-14% on large products.
 * Products of two strips of B or more skip exact zeros of op(A) (blank pixels, ReLU outputs;
 * the result is the dense product's, B finite). In the small blocking (gemm_impl.h,
 * fnn_gemm_small) the rows of op(A) go in pairs, each pair over only the steps where one of
 * its rows is nonzero, rows matched so that pairs share their nonzeros: a training step's
 * products on Fashion-MNIST (784-512-256, batch 128) take 0.76x the time of the previous
 * skipping's with rows sorted by their first zeros, and matching them took a `fit` epoch to
 * 0.973x the time of that sorting. In the large blocking a tile skips the steps p at which
 * its 6 rows of op(A) are all zero (gemm_impl.h, fnn_nonzero_steps). Measured (C harness, old and new code side by
 * side; a 784-512-256 network trained 3 epochs on Fashion-MNIST): predict's X W1 and H1 W2
 * at 1024 rows 1.08x and 1.31x faster than dense; the same products with dense A 0.975-1.007x.
 * TN products whose C is narrower than a vector (an output layer's weight gradient, 512 x 10)
 * are computed as C^T = B^T A, whose tiles use all their lanes: 1.14-1.79x faster (C harness,
 * 512 x 10 at k = 32-1024), the same bits.
 * An optional epilogue for the forward product, C = max(C + bias, 0) (relu) or C + bias, is
 * applied in registers as each tile of C is stored for the last time (NN and TN only); it can
 * also report whether the product holds NaN or infinity (a forward product does when its
 * input does: the model's check of X, done by the first layer's product).
 * fastnn_gemm_f32/_f64 return 0 when they did not compute C (nor the epilogue): call BLAS instead. */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

/* Where OpenBLAS is faster (bench/gemm_shapes.py): fewer than 4 rows (its GEMV-like paths). */
#define FNN_MIN_ROWS 4

#if defined(__AVX512F__)
#include <immintrin.h>

#define FNN_MR 6
#define FNN_NV 4
#define FNN_KC 128
/* k blocks of the small blocking's products whose rows are taken in pairs (gemm_impl.h,
 * fnn_gemm_small): their strip's panel (96 x 64 floats, 24 KiB) leaves room in L1 for the
 * pairs' values; the step's products of a 784-512-256 network on Fashion-MNIST (C harness,
 * adjacent pairs against the previous skipping): 0.80-0.85x its time with blocks of 64,
 * 0.79-0.81 with 96, 0.79-0.90 with 112, 0.95 with 128 (X^T dZ1 at k = 128 1.38x slower). */
#define FNN_KC_PAIRS 96
_Static_assert(FNN_KC_PAIRS <= 128, "fnn_match_rows holds a k block's steps in two 64-bit words");
/* Most bytes of B's k block that fnn_gemm_small packs at once (all its strips), read in B's row
 * order (fnn_pack_b_block), so that it stays in L2 beside the pairs' lists. A 784-512-256
 * network on Fashion-MNIST, X W1 and H1 W2 at batch 128 (W1's block 176 KiB), their weights
 * in L3 as in training, while another process streamed 64 MiB on the other core: 0.96x the
 * time of packing strip by strip (1500 calls of each on real batches, alternating call by
 * call). A `fit` epoch of that network, with FNN_PACK_AHEAD, on a quiet machine: 0.92 of the
 * time before (medians of 12 rounds, builds taking turns). */
#define FNN_B_BLOCK_BYTES (256 << 10)
/* Rows of B ahead that fnn_pack_b_block prefetches (the same products, the same conditions:
 * 0.985-0.990x the time without; 8 rows ahead gained less) */
#define FNN_PACK_AHEAD 4
/* fnn_gemm_rows's small blocking for products of the large blocking's size whose rows of A
 * pair up over zeros: the rows sampled, the least share of a pair's steps where both are zero
 * (in tenths: 0.33 for Fashion-MNIST's images, 0.56 for their first hidden layer's ReLU
 * outputs; at 0.25, 50% zeros independent of each other, the large blocking is as fast), C's
 * bytes per chunk of rows, the fewest rows per chunk */
#define FNN_PAIRED_ROWS_SAMPLE 128
#define FNN_PAIRED_ZERO_TENTHS 3
#define FNN_PAIRED_C_BYTES (512 << 10)
#define FNN_PAIRED_MIN_ROWS 128
#define FNN_KC_LARGE 1024
#define FNN_KC_BLOCKED 448
/* rows of B ahead that a tile reading its panel from L2 prefetches (2: 1-2% faster than 4-10
 * on the large products) */
#define FNN_PREFETCH_B 2
/* fewest all-zero steps of a tile of A worth skipping (gemm_impl.h, fnn_nonzero_steps) */
#define FNN_SKIP_MIN(kc) ((kc) / 8)

#define FNN_ALWAYS_INLINE static inline __attribute__((always_inline))

/* k split into equal blocks of at most `limit` */
static inline int fnn_k_block(int k, int limit)
{
    int blocks = (k + limit - 1) / limit;
    return (k + blocks - 1) / blocks;
}

/* 64-byte aligned heap memory of at least `bytes` (aligned_alloc wants a multiple of 64) */
static inline void *fnn_aligned_alloc(size_t bytes)
{
    return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

/* dst[0, q) = p + j for the q set bits j of `nonzero`, in order; writes `lanes` ints (16 or 8) */
static inline void fnn_store_steps(int *dst, __mmask16 nonzero, int p, int lanes)
{
    __m512i j = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << lanes) - 1u),
                             _mm512_maskz_compress_epi32(nonzero, _mm512_add_epi32(j, _mm512_set1_epi32(p))));
}

/* Places in its order that fnn_match_rows looks ahead of a row for its match: a multiple of 8,
 * at most 32 (fnn_match_keys). The fraction of a pair's steps kept (fnn_match_rows's table)
 * with 16, 24, 32 and all: the input's rows 0.547, 0.547, 0.546, 0.545; H1's 0.288, 0.284,
 * 0.282, 0.280; H1's columns 0.297, 0.293, 0.291, 0.287. The matching's time grows with it:
 * with 24, about 2 us per k block of 128 rows and 9 us of 512 (C microbenchmark, random
 * masks; its sort, scores and picks about a third each). */
#define FNN_MATCH_WINDOW 24

/* fnn_match_rows's search for each row's match: the keys below where the CPU counts bits in
 * vectors (VPOPCNTDQ: Zen 4, Ice Lake and later), else fnn_most_shared, the same pairs.
 * Building with -DFNN_NO_MATCH_KEYS takes the latter anywhere (CI tests it so). */
#if defined(__AVX512VPOPCNTDQ__) && defined(__AVX512BW__) && !defined(FNN_NO_MATCH_KEYS)
#define FNN_MATCH_KEYS 1
/* For each place t < m of fnn_match_rows's order (lo[t], hi[t]: the nonzero steps of its
 * row), keys[32 t + d] = (the steps it shares with place t + 1 + d) x 32 + 31 - d, for d <
 * FNN_MATCH_WINDOW and t + 1 + d < m: the largest key among some places is the first of
 * those sharing the most. Independent of one another, so computed before the matching.
 * two_words: the k block is longer than 64 steps (else every hi is zero: lo alone). */
static inline void fnn_match_keys(const uint64_t *lo, const uint64_t *hi, int m, int two_words, uint16_t *keys)
{
    for (int t = 0; t + 1 < m; t++) {
        __m512i wlo = _mm512_set1_epi64((long long)lo[t]), whi = _mm512_set1_epi64((long long)hi[t]);
        __m512i back = _mm512_setr_epi64(31, 30, 29, 28, 27, 26, 25, 24);
        for (int d = 0; d < FNN_MATCH_WINDOW; d += 8, back = _mm512_sub_epi64(back, _mm512_set1_epi64(8))) {
            int left = m - t - 1 - d;
            __mmask8 k = left >= 8 ? (__mmask8)0xFF : left > 0 ? (__mmask8)((1u << left) - 1u) : 0;
            __m512i both = _mm512_and_si512(_mm512_maskz_loadu_epi64(k, lo + t + 1 + d), wlo);
            __m512i shared = _mm512_popcnt_epi64(both);
            if (two_words) {
                both = _mm512_and_si512(_mm512_maskz_loadu_epi64(k, hi + t + 1 + d), whi);
                shared = _mm512_add_epi64(shared, _mm512_popcnt_epi64(both));
            }
            _mm_storeu_si128((__m128i *)(keys + 32 * t + d),
                             _mm512_cvtepi64_epi16(_mm512_or_si512(_mm512_slli_epi64(shared, 5), back)));
        }
    }
}

/* The d of the largest of the keys (fnn_match_keys's row) whose bit d is set in `open` (not 0) */
static inline int fnn_best_key(const uint16_t *keys, uint64_t open)
{
    __m512i row = _mm512_maskz_loadu_epi16((__mmask32)open, keys);
    __m256i half = _mm256_max_epu16(_mm512_castsi512_si256(row), _mm512_extracti64x4_epi64(row, 1));
    __m128i quarter = _mm_max_epu16(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
    /* the largest of 8: the smallest of their complements (phminposuw) */
    int top = ~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(quarter, _mm_set1_epi32(-1)))) & 0xFFFF;
    return 31 - (top & 31);
}
#else
#define FNN_MATCH_KEYS 0
/* Of the places d whose bit is set in `open`, lo[d], hi[d] (two words of nonzero steps each,
 * fnn_match_rows), the first that shares the most set bits with (row_lo, row_hi) */
static inline int fnn_most_shared(uint64_t row_lo, uint64_t row_hi, const uint64_t *lo, const uint64_t *hi,
                                  uint64_t open)
{
    int best = -1, at = 0;
    for (; open; open &= open - 1) {
        int d = __builtin_ctzll(open);
        int shared = __builtin_popcountll(lo[d] & row_lo) + __builtin_popcountll(hi[d] & row_hi);
        if (shared > best) {
            best = shared;
            at = d;
        }
    }
    return at;
}
#endif

/* Pads a list of q steps (gemm_impl.h, fnn_nonzero_steps) with FNN_PREFETCH_B copies of its
 * last (the tiles' prefetch reads them); returns q. */
static inline int fnn_pad_steps(int *steps, int q)
{
    for (int i = q; i < q + FNN_PREFETCH_B; i++)
        steps[i] = q ? steps[q - 1] : 0;
    return q;
}

/* Whether fastnn_gemm_f32/_f64 compute this product (else they return 0 and BLAS should). */
static int fastnn_gemm_applies(int trans_a, int trans_b, int m, int n, int k)
{
    (void)n; (void)k;
    return !(trans_a && trans_b) && m >= FNN_MIN_ROWS;
}

#define FNN_T float
#define FNN_VEC __m512
#define FNN_MASK __mmask16
#define FNN_LANES 16
#define FNN_SFX _ps
#define FNN_NAME(f) f##_f32
#define FNN_NC 64
#define FNN_LARGE_C (1 << 19)
#define FNN_NB_BLOCKED 448
/* dst[p * ldd + j] = src[j * lds + p] for j, p < 16, in registers */
static inline void fnn_transpose_block_f32(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds)
{
    __m512 r[16], t[16];
    for (int q = 0; q < 16; q++)
        r[q] = _mm512_loadu_ps(src + (ptrdiff_t)q * lds);
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
        _mm512_storeu_ps(dst + (ptrdiff_t)s * ldd, _mm512_shuffle_f32x4(a01, b01, 0x88));
        _mm512_storeu_ps(dst + (ptrdiff_t)(4 + s) * ldd, _mm512_shuffle_f32x4(a01, b01, 0xDD));
        _mm512_storeu_ps(dst + (ptrdiff_t)(8 + s) * ldd, _mm512_shuffle_f32x4(a23, b23, 0x88));
        _mm512_storeu_ps(dst + (ptrdiff_t)(12 + s) * ldd, _mm512_shuffle_f32x4(a23, b23, 0xDD));
    }
}

#include "gemm_impl.h"

#define FNN_T double
#define FNN_VEC __m512d
#define FNN_MASK __mmask8
#define FNN_LANES 8
#define FNN_SFX _pd
#define FNN_NAME(f) f##_f64
#define FNN_NC 32
#define FNN_LARGE_C (1 << 18)
#define FNN_NB_BLOCKED 224
/* dst[p * ldd + j] = src[j * lds + p] for j, p < 8, in registers */
static inline void fnn_transpose_block_f64(double *dst, ptrdiff_t ldd, const double *src, ptrdiff_t lds)
{
    __m512d r[8], t[8], u[8];
    for (int q = 0; q < 8; q++)
        r[q] = _mm512_loadu_pd(src + (ptrdiff_t)q * lds);
    /* t[q], t[q + 1]: 128-bit lane L holds (row q, row q + 1) of column 2L, resp. 2L + 1 */
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm512_unpacklo_pd(r[q], r[q + 1]);
        t[q + 1] = _mm512_unpackhi_pd(r[q], r[q + 1]);
    }
    /* u[4h + s]: columns s and s + 4 of rows 4h..4h+3, as 128-bit lanes (rows 4h, 4h+1 of
     * column s | of column s + 4 | rows 4h+2, 4h+3 of column s | of column s + 4) */
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 2; s++) {
            u[4 * h + s] = _mm512_shuffle_f64x2(t[4 * h + s], t[4 * h + 2 + s], 0x88);
            u[4 * h + 2 + s] = _mm512_shuffle_f64x2(t[4 * h + s], t[4 * h + 2 + s], 0xDD);
        }
    for (int s = 0; s < 4; s++) {
        _mm512_storeu_pd(dst + (ptrdiff_t)s * ldd, _mm512_shuffle_f64x2(u[s], u[4 + s], 0x88));
        _mm512_storeu_pd(dst + (ptrdiff_t)(s + 4) * ldd, _mm512_shuffle_f64x2(u[s], u[4 + s], 0xDD));
    }
}

#include "gemm_impl.h"
#else
static int fastnn_gemm_applies(int trans_a, int trans_b, int m, int n, int k)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k;
    return 0;
}

static int fastnn_gemm_f32(int trans_a, int trans_b, int m, int n, int k, const float *a, int lda,
                           const float *b, int ldb, float *c, int ldc, const float *bias, int relu,
                           int *nonfinite)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b;
    (void)ldb; (void)c; (void)ldc; (void)bias; (void)relu; (void)nonfinite;
    return 0;
}

static int fastnn_gemm_f64(int trans_a, int trans_b, int m, int n, int k, const double *a, int lda,
                           const double *b, int ldb, double *c, int ldc, const double *bias, int relu,
                           int *nonfinite)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b;
    (void)ldb; (void)c; (void)ldc; (void)bias; (void)relu; (void)nonfinite;
    return 0;
}
#define FNN_MATCH_KEYS 0
#endif
#endif
