/* A weight gradient's product fused with the Adam update of the weights (float32):
 *   G = A^T B (A k x m, B k x n, row-major: dW = X^T dZ), then W, m, v (and vmax), m x n with
 *   leading dimension ldp, updated from G by fastnn_adam_f32 (adam_f32.h, optim.pyx's Adam).
 * G never reaches memory: each 6-row tile of G is computed into a small buffer (gemm.h's
 * tiles, with its skipping of A's all-zero steps), and while the next row of tiles is
 * computed, the update runs over the previous one: in pieces, one after each tile, so that
 * its reads and writes of W, m and v stream while the FMAs of the product run, or, for
 * products deeper than FNN_ADAM_PIECES_MAX_K, in one pass after the row's last tile. Results are
 * the unfused product's followed by the update's, bit for bit (B finite): each element of G
 * is the same chain of FMAs over the steps p in order.
 * Measured in a C harness (784-512-512-10 at batch 32, the step's products with the three
 * weight gradients and Adam, PyTorch's defaults): 1.15-1.19 ms unfused, 0.99 fused; at batch
 * 256 5.43 -> 5.31 ms. Not kept: the update as each tile's epilogue, tiles in strip order
 * (1.07 ms) or row order (1.03), and software prefetch of the next tiles' W, m, v (no gain).
 * Adam takes ~11 cycles per 16 parameters in cache (its square root and division, each an
 * estimate refined by a Newton step), so fused, the product's FMAs and the update's
 * arithmetic add up; what fusing hides is the memory traffic.
 * For k up to FNN_ADAM_MAX_K: B is packed once, in blocks of columns of at most 1 MiB (L2);
 * returns 0 (nothing done) for deeper products, where the update is a small part of the time,
 * or when a buffer is unavailable. Sparse products (k <= FNN_KC) take the small blocking's
 * pairs of rows instead, the update following each strip of G (fnn_adam_paired_f32). */
#ifndef FASTNN_GEMM_ADAM_H
#define FASTNN_GEMM_ADAM_H
#include "gemm.h"
#include "adam_f32.h"

/* Adam's scalars for one step (optim.pyx, adam_step): m = b1 m + (1 - b1) g', ... */
typedef struct {
    float b1, b2, eps, step_size, inv_bc2_sqrt, shrink, scale, clip, wd;
} fnn_adam_scalars;

/* fastnn_adam_f32 over the n parameters at offset o of W (p, m, v, vmax) from g */
static inline void fnn_adam_at(float *p, float *mo, float *vo, float *vmax, ptrdiff_t o, const float *g,
                               ptrdiff_t n, const fnn_adam_scalars *h)
{
    fastnn_adam_f32(p + o, g, mo + o, vo + o, vmax ? vmax + o : NULL, n, h->b1, h->b2, h->eps, h->step_size,
                    h->inv_bc2_sqrt, h->shrink, h->scale, h->clip, h->wd);
}

/* Adam over rows [0, rows) x cols of W (p, m, v, vmax at offset i ldp + j) from G (ldg). */
static void fnn_adam_rows(float *p, float *mo, float *vo, float *vmax, ptrdiff_t ldp, const float *g,
                          ptrdiff_t ldg, int rows, int cols, const fnn_adam_scalars *h)
{
    fastnn_adam_rows_f32(p, g, mo, vo, vmax, rows, cols, ldp, ldg, h->b1, h->b2, h->eps, h->step_size,
                         h->inv_bc2_sqrt, h->shrink, h->scale, h->clip, h->wd);
}

#if defined(__AVX512F__)
#define FNN_ADAM_B_BYTES (1 << 20)
#define FNN_ADAM_NC 64      /* gemm.h's strip width (FNN_NC) for float32 */
/* Deepest product whose row of tiles is followed by the previous row's update in pieces, one
 * after each tile; deeper, the tiles take long enough that the update streams better as one
 * pass after the row (C harness, Zen 5, 784 x 512 at k = 256: 0.94 instead of 0.97 ms; 512 x
 * 512: 0.613 instead of 0.625; at k = 32 pieces are faster, 0.165 instead of 0.175; at k = 128
 * the two are even). */
#define FNN_ADAM_PIECES_MAX_K FNN_KC

/* Piece `s` of `pieces` of the update of a row of tiles (rows x cols of G at g, ld ldg; W at
 * offset 0): its rows x cols elements in row-major order, split evenly in multiples of 16;
 * one call where W's rows and G's are contiguous (W's block all of its columns). */
static void fnn_adam_piece(float *p, float *mo, float *vo, float *vmax, ptrdiff_t ldp, const float *g,
                           ptrdiff_t ldg, int rows, int cols, int s, int pieces, const fnn_adam_scalars *h)
{
    ptrdiff_t total = (ptrdiff_t)rows * cols;
    ptrdiff_t size = ((total + pieces - 1) / pieces + 15) / 16 * 16;
    ptrdiff_t lo = s * size, hi = lo + size < total ? lo + size : total;
    int rows_contiguous = ldp == cols && ldg == cols;
    while (lo < hi) {   /* the piece's part of each row it touches */
        int r = (int)(lo / cols), c = (int)(lo % cols);
        ptrdiff_t len = rows_contiguous || hi - lo < cols - c ? hi - lo : cols - c;
        fnn_adam_at(p, mo, vo, vmax, (ptrdiff_t)r * ldp + c, g + (ptrdiff_t)r * ldg + c, len, h);
        lo += len;
    }
}

/* The deepest product (rows of X and dZ, the batch) fastnn_gemm_tn_adam_f32 computes fused */
#define FNN_ADAM_MAX_K FNN_KC_BLOCKED

/* Whether 1/8 or more of A's k x m elements (row-major, lda) are zero; zeros: their count
 * where it is known already (fnn_tn_swaps_f32 counted them), else negative */
static int fnn_sparse_f32(const float *a, int lda, int k, int m, ptrdiff_t zeros)
{
    return 8 * (zeros >= 0 ? zeros : fnn_count_zeros_f32(a, lda, k, m)) >= (ptrdiff_t)k * m;
}

/* The update of W from the strips of G that fnn_gemm_small completes (its strip_done), G = A^T
 * B computed as it is (its strips: G's columns j0 .. j0 + cols of its `rows` rows) or as G^T =
 * B^T A (G^T's strips: G's rows j0 .., `rows` columns each; transposed 16 rows at a time into
 * g, which stays in L1). */
typedef struct {
    float *p, *mo, *vo, *vmax, *g;
    ptrdiff_t ldp;
    int rows;
    const fnn_adam_scalars *h;
} fnn_adam_strips;

static void fnn_adam_columns(void *ctx, const float *cstrip, ptrdiff_t lds, int j0, int cols)
{
    const fnn_adam_strips *s = ctx;
    fnn_adam_rows(s->p + j0, s->mo + j0, s->vo + j0, s->vmax ? s->vmax + j0 : NULL, s->ldp, cstrip, lds, s->rows,
                  cols, s->h);
}

static void fnn_adam_transposed(void *ctx, const float *cstrip, ptrdiff_t lds, int j0, int cols)
{
    const fnn_adam_strips *s = ctx;
    for (int r0 = 0; r0 < cols; r0 += 16) {
        int rows = cols - r0 < 16 ? cols - r0 : 16;
        ptrdiff_t w = (ptrdiff_t)(j0 + r0) * s->ldp;
        fnn_pack_transposed_f32(s->g, s->rows, cstrip + r0, lds, s->rows, rows);   /* g[r rows + u] = G[j0 + r0 + r, u] */
        fnn_adam_rows(s->p + w, s->mo + w, s->vo + w, s->vmax ? s->vmax + w : NULL, s->ldp, s->g, s->rows, rows,
                      s->rows, s->h);
    }
}

/* The fused product for sparse operands (k <= FNN_KC, B's strips several): the small
 * blocking's pairs of rows (gemm_impl.h, fnn_gemm_small), which skip more zero steps than
 * the 6-row tiles below, with the update as each strip of G completes, the strip still in
 * cache: G never reaches memory.
 * - Where B has the larger share of zeros by 1/8 (fnn_tn_swaps: dZ of a ReLU layer against
 *   dense or image inputs), G^T = B^T A, whose strips are rows of G, contiguous in W. Against
 *   the product into G (through G^T and its transposition) followed by the update in a pass
 *   of its own (a 784-512-256 network trained one epoch on Fashion-MNIST, 40 of its batches
 *   of 128; dense_backward with Adam, old and new builds taking turns, 15 rounds): X^T dZ1
 *   0.818 ms at best, 0.929 median (against 0.853, 1.151); against the dense tiles below for
 *   dense X (random, dZ 50% zeros, 784 x 512): 0.92x at k = 128, 0.95 at 64, 0.96 at 32.
 * - Else, for sparse A (fnn_sparse_f32) and k > FNN_KC / 2, G itself, whose strips are
 *   blocks of columns of W: H1^T dZ2 of that network 0.268 ms at best, 0.289 median
 *   (against 0.281, 0.357 unfused). At k <= 64 the update dominates, and streams faster
 *   through W's whole rows than through blocks of 64 columns (512 x 512 at k = 32, A half
 *   zeros: 1.04-1.09x the unfused time): returns 0, the product and the update apart.
 * Returns -1 where A and B are both dense (the tiles below take those), 0 where the product
 * and the update go apart (or a buffer is unavailable). */
static int fnn_adam_paired_f32(int m, int n, int k, const float *a, int lda, const float *b, int ldb, float *p,
                               float *mo, float *vo, float *vmax, int ldp, const fnn_adam_scalars *h)
{
    fnn_adam_strips s = {p, mo, vo, vmax, NULL, ldp, m, h};
    ptrdiff_t a_zeros = -1;
    if (fnn_tn_swaps_f32(m, n, k, a, lda, b, ldb, &a_zeros)) {
        s.rows = n;
        s.g = fnn_aligned_alloc((size_t)16 * n * sizeof(float));
        int done = s.g && fnn_gemm_small_f32(n, m, k, b, 1, ldb, a, lda, 0, NULL, 0, NULL, 0, NULL,
                                             fnn_adam_transposed, &s);
        free(s.g);
        return done;
    }
    if (!fnn_sparse_f32(a, lda, k, m, a_zeros))
        return -1;
    return 2 * k > FNN_KC &&
           fnn_gemm_small_f32(m, n, k, a, 1, lda, b, ldb, 0, NULL, 0, NULL, 0, NULL, fnn_adam_columns, &s);
}

static int fastnn_gemm_tn_adam_f32(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                                   float *p, float *mo, float *vo, float *vmax, int ldp,
                                   const fnn_adam_scalars *h)
{
    if (!fastnn_gemm_applies(1, 0, m, n, k) || k <= 0 || k > FNN_ADAM_MAX_K)
        return 0;
    if (k <= FNN_KC && n > FNN_ADAM_NC) {
        int paired = fnn_adam_paired_f32(m, n, k, a, lda, b, ldb, p, mo, vo, vmax, ldp, h);
        if (paired >= 0)
            return paired;
    }
    int nb = FNN_ADAM_B_BYTES / (int)sizeof(float) / k / FNN_ADAM_NC * FNN_ADAM_NC;
    nb = nb < FNN_ADAM_NC ? FNN_ADAM_NC : nb > n ? (n + FNN_ADAM_NC - 1) / FNN_ADAM_NC * FNN_ADAM_NC : nb;
    int tiles = (m + FNN_MR - 1) / FNN_MR;
    ptrdiff_t lds = fnn_steps_ld_f32(k);
    float *apack = fnn_aligned_alloc((size_t)k * (m + FNN_MR) * sizeof(float));
    float *bpack = fnn_aligned_alloc((size_t)k * nb * sizeof(float));
    float *grad = fnn_aligned_alloc((size_t)2 * FNN_MR * nb * sizeof(float));   /* two rows of tiles */
    int *steps = fnn_aligned_alloc((size_t)tiles * lds * sizeof(int));
    int *kept = fnn_aligned_alloc((size_t)tiles * sizeof(int));
    int done = apack && bpack && grad && steps && kept;
    if (done)
        fnn_pack_a_f32(apack, a, lda, m, k, steps, lds, kept);
    for (int jb = 0; done && jb < n; jb += nb) {
        int cols = n - jb < nb ? n - jb : nb, strips = (cols + FNN_ADAM_NC - 1) / FNN_ADAM_NC;
        ptrdiff_t ldg = cols;   /* G's rows contiguous */
        fnn_pack_b_block_f32(bpack, b + jb, ldb, cols, k);
        /* the previous row's update in one piece after each tile, or in one after the row's last */
        int per_piece = k > FNN_ADAM_PIECES_MAX_K ? strips : 1, pieces = strips / per_piece;
        /* row of tiles t is computed into grad's half t % 2 while the one before is updated */
        for (int i0 = 0; i0 < m + FNN_MR; i0 += FNN_MR) {
            int t = i0 / FNN_MR, mr = m - i0 < FNN_MR ? m - i0 : FNN_MR;
            int prev_rows = i0 == 0 ? 0 : m - (i0 - FNN_MR) < FNN_MR ? m - (i0 - FNN_MR) : FNN_MR;
            float *cur = grad + (ptrdiff_t)(t % 2) * FNN_MR * ldg, *prev = grad + (ptrdiff_t)((t + 1) % 2) * FNN_MR * ldg;
            ptrdiff_t w_prev = (ptrdiff_t)(i0 - FNN_MR) * ldp + jb;
            for (int s = 0, j0 = 0; s < strips; s++, j0 += FNN_ADAM_NC) {
                if (mr > 0) {
                    int nv;
                    __mmask16 last;
                    fnn_strip_f32(n, jb + j0, &nv, &last);
                    const float *panel = bpack + (ptrdiff_t)j0 * k;
                    if (kept[t] >= 0)
                        fnn_tile_steps_f32(nv, kept[t], steps + t * lds, apack + (ptrdiff_t)i0 * k, 1, FNN_MR,
                                           panel, cur + j0, ldg, last, 0, NULL, 0, NULL);
                    else
                        fnn_tile_any_f32(mr, nv, k, apack + (ptrdiff_t)i0 * k, 1, FNN_MR, panel, FNN_ADAM_NC, cur + j0,
                                         ldg, last, 0, NULL, 0, NULL, k > FNN_KC);
                }
                if (prev_rows && (s + 1) % per_piece == 0)
                    fnn_adam_piece(p + w_prev, mo + w_prev, vo + w_prev, vmax ? vmax + w_prev : NULL, ldp, prev,
                                   ldg, prev_rows, cols, s / per_piece, pieces, h);
            }
        }
    }
    free(kept);
    free(steps);
    free(grad);
    free(bpack);
    free(apack);
    return done;
}
#undef FNN_ADAM_B_BYTES
#undef FNN_ADAM_NC
#undef FNN_ADAM_PIECES_MAX_K
#else
#define FNN_ADAM_MAX_K 0
static int fastnn_gemm_tn_adam_f32(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                                   float *p, float *mo, float *vo, float *vmax, int ldp,
                                   const fnn_adam_scalars *h)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)p; (void)mo; (void)vo;
    (void)vmax; (void)ldp; (void)h;
    return 0;
}
#endif
#endif
