/* The GEMM of gemm.h for one float type; gemm.h includes this file once per type after
 * defining:
 *   FNN_T, FNN_VEC, FNN_MASK   float, __m512, __mmask16 or double, __m512d, __mmask8
 *   FNN_LANES, FNN_SFX         16, _ps or 8, _pd
 *   FNN_NAME(f)                f##_f32 or f##_f64
 *   FNN_NC                     columns of a register tile and of a packed strip (FNN_NV vectors)
 *   FNN_LARGE_C                elements of C (2 MiB) from which NN/TN products take the L2 blocking
 *   FNN_NB_BLOCKED             columns of B packed per L2 block (448 x 448 floats, 784 KiB)
 * and FNN_NAME(fnn_transpose_block) (a FNN_LANES x FNN_LANES transpose in registers). It
 * undefines them at its end. */
#define FNN_PASTE3(a, b, c) a##b##c
#define FNN_EXPAND3(a, b, c) FNN_PASTE3(a, b, c)
#define FNN_OP(op) FNN_EXPAND3(_mm512_, op, FNN_SFX)       /* FNN_OP(fmadd) = _mm512_fmadd_ps / _pd */
#define FNN_FULL ((FNN_MASK)~0u)
#define FNN_MASK_CMP FNN_EXPAND3(_mm512_mask_cmp, FNN_SFX, _mask)   /* _mm512_mask_cmp_ps_mask / _pd_ */

/* The mask of the first `count` lanes of a vector (all of them for count >= FNN_LANES) */
static inline FNN_MASK FNN_NAME(fnn_lanes)(int count)
{
    return count < FNN_LANES ? (FNN_MASK)((1u << count) - 1u) : FNN_FULL;
}

/* C[0:mr, 0:LANES nv] (+)= sum_p A[r, p] B[p, :]; A[r, p] at a[r rs_a + p cs_a]; the last
 * vector of each row is masked by `last` (columns beyond n). bias (when not NULL) is added
 * and relu applied to the tile as it is stored; nonfinite (when not NULL) is set to 1 if an
 * element of the tile is NaN or infinite before them (x - x is NaN exactly then). With
 * prefetch, each step p also prefetches B's row p + FNN_PREFETCH_B into L1: for panels that
 * are read from L2 (deeper than L1 holds). steps (when not NULL) lists the rows of B that step
 * p reads (fnn_nonzero_steps: the steps where op(A) is not all zero), padded with
 * FNN_PREFETCH_B more for the prefetch. */
FNN_ALWAYS_INLINE void FNN_NAME(fnn_tile)(const int mr, const int nv, int kc, const FNN_T *a,
                                          ptrdiff_t rs_a, ptrdiff_t cs_a, const FNN_T *b, ptrdiff_t ldb,
                                          FNN_T *c, ptrdiff_t ldc, FNN_MASK last, int accumulate,
                                          const FNN_T *bias, int relu, int *nonfinite, const int *steps,
                                          const int prefetch)
{
    FNN_VEC acc[FNN_MR][FNN_NV];
    FNN_MASK bad = 0;
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            FNN_MASK k = v == nv - 1 ? last : FNN_FULL;
            acc[r][v] = accumulate ? FNN_OP(maskz_loadu)(k, c + r * ldc + FNN_LANES * v) : FNN_OP(setzero)();
        }
    }
    for (int p = 0; p < kc; p++) {
        FNN_VEC bv[FNN_NV];
        const FNN_T *brow = b + (steps ? steps[p] : p) * ldb;
        const FNN_T *ahead = steps ? b + steps[p + FNN_PREFETCH_B] * ldb : brow + FNN_PREFETCH_B * ldb;
        const FNN_T *acol = a + p * cs_a;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] = v == nv - 1 ? FNN_OP(maskz_loadu)(last, brow + FNN_LANES * v) : FNN_OP(loadu)(brow + FNN_LANES * v);
        if (prefetch)
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                _mm_prefetch((const char *)(ahead + FNN_LANES * v), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            FNN_VEC av = FNN_OP(set1)(acol[r * rs_a]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++)
                acc[r][v] = FNN_OP(fmadd)(av, bv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            FNN_MASK k = v == nv - 1 ? last : FNN_FULL;
            FNN_VEC x = acc[r][v];
            if (nonfinite)
                bad |= FNN_MASK_CMP(k, FNN_OP(sub)(x, x), FNN_OP(setzero)(), _CMP_NEQ_UQ);
            if (bias)
                x = FNN_OP(add)(x, FNN_OP(maskz_loadu)(k, bias + FNN_LANES * v));
            if (relu)   /* x > 0 ? x : 0, NaN included */
                x = FNN_OP(max)(x, FNN_OP(setzero)());
            FNN_OP(mask_storeu)(c + r * ldc + FNN_LANES * v, k, x);
        }
    }
    if (bad)
        *nonfinite = 1;
}

#define FNN_TILE_CASE(MR_, NV_)                                                                      \
    case (MR_) * 8 + (NV_):                                                                          \
        FNN_NAME(fnn_tile)(MR_, NV_, kc, a, rs_a, cs_a, b, ldb, c, ldc, last, accumulate, bias, relu, \
                           nonfinite, NULL, 0);                                                      \
        break;
#define FNN_TILE_ROW(MR_) FNN_TILE_CASE(MR_, 1) FNN_TILE_CASE(MR_, 2) FNN_TILE_CASE(MR_, 3) FNN_TILE_CASE(MR_, 4)

/* fnn_tile for any mr <= FNN_MR, nv <= FNN_NV; prefetch applies to full tiles (the edges are
 * too few to matter). */
FNN_ALWAYS_INLINE void FNN_NAME(fnn_tile_sized)(int mr, int nv, int kc, const FNN_T *a, ptrdiff_t rs_a,
                                                ptrdiff_t cs_a, const FNN_T *b, ptrdiff_t ldb, FNN_T *c,
                                                ptrdiff_t ldc, FNN_MASK last, int accumulate, const FNN_T *bias,
                                                int relu, int *nonfinite, int prefetch)
{
    if (prefetch && mr == FNN_MR && nv == FNN_NV) {
        FNN_NAME(fnn_tile)(FNN_MR, FNN_NV, kc, a, rs_a, cs_a, b, ldb, c, ldc, last, accumulate, bias, relu,
                           nonfinite, NULL, 1);
        return;
    }
    switch (mr * 8 + nv) {
        FNN_TILE_ROW(1) FNN_TILE_ROW(2) FNN_TILE_ROW(3) FNN_TILE_ROW(4) FNN_TILE_ROW(5) FNN_TILE_ROW(6)
    default:
        break;
    }
}

/* fnn_tile_sized, compiled once with the non-finite check and once with nonfinite a constant
 * NULL, which leaves the check's code out (tested at run time inside the tiles, it cost the
 * small products 2-3%). */
static void FNN_NAME(fnn_tile_any)(int mr, int nv, int kc, const FNN_T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                                   const FNN_T *b, ptrdiff_t ldb, FNN_T *c, ptrdiff_t ldc, FNN_MASK last,
                                   int accumulate, const FNN_T *bias, int relu, int *nonfinite, int prefetch)
{
    if (nonfinite)
        FNN_NAME(fnn_tile_sized)(mr, nv, kc, a, rs_a, cs_a, b, ldb, c, ldc, last, accumulate, bias, relu,
                                 nonfinite, prefetch);
    else
        FNN_NAME(fnn_tile_sized)(mr, nv, kc, a, rs_a, cs_a, b, ldb, c, ldc, last, accumulate, bias, relu,
                                 NULL, prefetch);
}

#define FNN_STEPS_CASE(NV_)                                                                           \
    case NV_:                                                                                         \
        FNN_NAME(fnn_tile)(FNN_MR, NV_, kc, a, rs_a, cs_a, b, FNN_NC, c, ldc, last, accumulate, bias, relu, \
                           nonfinite, steps, 1);                                                      \
        break;

/* A full-height tile over the listed steps, nv vectors of a packed strip of B wide
 * (fnn_tile with steps, prefetching B's rows). */
FNN_ALWAYS_INLINE void FNN_NAME(fnn_tile_steps_sized)(int nv, int kc, const int *steps, const FNN_T *a,
                                                      ptrdiff_t rs_a, ptrdiff_t cs_a, const FNN_T *b, FNN_T *c,
                                                      ptrdiff_t ldc, FNN_MASK last, int accumulate,
                                                      const FNN_T *bias, int relu, int *nonfinite)
{
    switch (nv) {
        FNN_STEPS_CASE(1) FNN_STEPS_CASE(2) FNN_STEPS_CASE(3) FNN_STEPS_CASE(4)
    default:
        break;
    }
}

/* fnn_tile_steps_sized, compiled with and without the non-finite check as fnn_tile_any */
static void FNN_NAME(fnn_tile_steps)(int nv, int kc, const int *steps, const FNN_T *a, ptrdiff_t rs_a,
                                     ptrdiff_t cs_a, const FNN_T *b, FNN_T *c, ptrdiff_t ldc, FNN_MASK last,
                                     int accumulate, const FNN_T *bias, int relu, int *nonfinite)
{
    if (nonfinite)
        FNN_NAME(fnn_tile_steps_sized)(nv, kc, steps, a, rs_a, cs_a, b, c, ldc, last, accumulate, bias, relu,
                                       nonfinite);
    else
        FNN_NAME(fnn_tile_steps_sized)(nv, kc, steps, a, rs_a, cs_a, b, c, ldc, last, accumulate, bias, relu,
                                       NULL);
}

#define FNN_PAIR_CASE(NV_)                                                                            \
    case NV_:                                                                                         \
        FNN_NAME(fnn_tile)(2, NV_, kc, a, ldd, 1, b, FNN_NC, c, ldc, last, accumulate, bias, relu, nonfinite,  \
                           steps, 0);                                                                 \
        break;


/* Two rows of C, at c and c + ldc (any two rows: ldc is their distance), over a pair's kc
 * listed steps (fnn_pair_list), A's values at them in two rows ldd apart from a, nv vectors
 * of a packed strip of B wide (fnn_tile with steps; the strip is in L1). */
FNN_ALWAYS_INLINE void FNN_NAME(fnn_tile_pair_sized)(int nv, int kc, const int *steps, const FNN_T *a,
                                                     ptrdiff_t ldd, const FNN_T *b, FNN_T *c, ptrdiff_t ldc,
                                                     FNN_MASK last, int accumulate, const FNN_T *bias, int relu,
                                                     int *nonfinite)
{
    switch (nv) {
        FNN_PAIR_CASE(1) FNN_PAIR_CASE(2) FNN_PAIR_CASE(3) FNN_PAIR_CASE(4)
    default:
        break;
    }
}

/* fnn_tile_pair_sized, compiled with and without the non-finite check, as fnn_tile_any */
static void FNN_NAME(fnn_tile_pair)(int nv, int kc, const int *steps, const FNN_T *a, ptrdiff_t ldd, const FNN_T *panel,
                                    FNN_T *c, ptrdiff_t ldc, FNN_MASK last, int accumulate, const FNN_T *bias,
                                    int relu, int *nonfinite)
{
    if (nonfinite)
        FNN_NAME(fnn_tile_pair_sized)(nv, kc, steps, a, ldd, panel, c, ldc, last, accumulate, bias, relu, nonfinite);
    else
        FNN_NAME(fnn_tile_pair_sized)(nv, kc, steps, a, ldd, panel, c, ldc, last, accumulate, bias, relu, NULL);
}

/* The chunks of FNN_LANES steps in a k block of kc: ceil(kc / FNN_LANES); masks hold one each */
#define FNN_CHUNKS(kc) (((kc) + FNN_LANES - 1) / FNN_LANES)
/* The chunks of a row's masks in fnn_prepare_pairs (128 steps: two 64-bit words) */
#define FNN_ROW_CHUNKS (128 / FNN_LANES)

/* masks[c] = the lanes of the row's steps [c FNN_LANES, (c + 1) FNN_LANES) (p < kc) that are
 * nonzero (NaN and infinity count as nonzero) */
static inline void FNN_NAME(fnn_row_masks)(const FNN_T *row, int kc, FNN_MASK *masks)
{
    for (int p = 0; p < kc; p += FNN_LANES) {
        FNN_MASK k = FNN_NAME(fnn_lanes)(kc - p);
        masks[p / FNN_LANES] = FNN_MASK_CMP(k, FNN_OP(maskz_loadu)(k, row + p), FNN_OP(setzero)(), _CMP_NEQ_UQ);
    }
}

/* The nonzero steps of a row's FNN_ROW_CHUNKS masks */
static inline int FNN_NAME(fnn_row_nonzeros)(const FNN_MASK *masks)
{
    uint64_t w[2];
    memcpy(w, masks, sizeof w);
    return __builtin_popcountll(w[0]) + __builtin_popcountll(w[1]);
}

/* The steps p < kc where neither of two rows is nonzero (their fnn_row_masks m0, m1) */
static inline int FNN_NAME(fnn_pair_zeros)(const FNN_MASK *m0, const FNN_MASK *m1, int kc)
{
    int nonzero = 0;
    for (int c = 0; c < FNN_CHUNKS(kc); c++)
        nonzero += __builtin_popcount((unsigned)(m0[c] | m1[c]));
    return kc - nonzero;
}

/* A pair of rows of A (r0, r1, their fnn_row_masks m0, m1) over the steps p < kc where one of
 * them is nonzero: those steps listed in `steps` (padded as fnn_pad_steps does), the rows'
 * values at them in d0 and d1 (room for kc + FNN_LANES each); returns their count. */
static int FNN_NAME(fnn_pair_list)(const FNN_T *r0, const FNN_T *r1, const FNN_MASK *m0, const FNN_MASK *m1, int kc,
                                   FNN_T *d0, FNN_T *d1, int *steps)
{
    int q = 0;
    for (int p = 0; p < kc; p += FNN_LANES) {
        FNN_MASK k = FNN_NAME(fnn_lanes)(kc - p);
        FNN_MASK nonzero = m0[p / FNN_LANES] | m1[p / FNN_LANES];
        FNN_OP(storeu)(d0 + q, FNN_OP(maskz_compress)(nonzero, FNN_OP(maskz_loadu)(k, r0 + p)));
        FNN_OP(storeu)(d1 + q, FNN_OP(maskz_compress)(nonzero, FNN_OP(maskz_loadu)(k, r1 + p)));
        fnn_store_steps(steps + q, nonzero, p, FNN_LANES);
        q += __builtin_popcount(nonzero);
    }
    return fnn_pad_steps(steps, q);
}

/* order[0, m) = the rows 0..m-1 matched in pairs (order[2q], order[2q + 1]; an odd row last):
 * the rows in order of decreasing count of nonzero steps (their fnn_row_masks, kc <= 128
 * steps), each row not yet matched in that order matched with the one that shares the most of
 * its nonzero steps (the first such) among those not yet matched in the next FNN_MATCH_WINDOW
 * places (fnn_best_key, or fnn_most_shared without VPOPCNTDQ: the same pairs). A pair's tile
 * takes the steps where either row is nonzero; over all pairs they add up to the rows'
 * nonzeros less those shared, so the steps shared are what to maximize (the densest rows
 * first, while they have the most rows to choose from). Fashion-MNIST, a 784-512-256 network
 * trained 5 epochs, the fraction of a pair's steps kept (k blocks of 96; 64 for H1^T): the
 * input's rows 0.667 adjacent, 0.573 sorted by their first 16 steps (the previous pairing),
 * 0.547 matched (0.545 matching each with the best of all rows left; 0.496 one row alone);
 * H1's rows 0.313 sorted, 0.284 matched (0.280; 0.227); dZ2's 0.497, 0.466 (0.461; 0.399);
 * H1's columns 0.320, 0.293 (0.287; 0.227). masks: FNN_ROW_CHUNKS per row; work: kc + 2 + 2m
 * ints; words: 10m (the rows' words in the order sorted, then fnn_match_keys's keys). */
static void FNN_NAME(fnn_match_rows)(const FNN_MASK *masks, int kc, int m, int *order, int *work, uint64_t *words)
{
    int *count = work, *sorted = work + kc + 2, *key = work + kc + 2 + m;   /* key: kc - the row's nonzeros */
    uint64_t *lo = words, *hi = words + m;   /* the rows' masks, in the order sorted */
    for (int d = 0; d < kc + 2; d++)
        count[d] = 0;
    for (int i = 0; i < m; i++) {
        key[i] = kc - FNN_NAME(fnn_row_nonzeros)(masks + i * FNN_ROW_CHUNKS);
        count[key[i] + 1]++;
    }
    for (int d = 0; d < kc + 1; d++)   /* a counting sort, the most nonzeros first */
        count[d + 1] += count[d];
    for (int i = 0; i < m; i++) {
        int at = count[key[i]]++;
        sorted[at] = i;
        memcpy(lo + at, masks + i * FNN_ROW_CHUNKS, 8);
        memcpy(hi + at, masks + i * FNN_ROW_CHUNKS + FNN_ROW_CHUNKS / 2, 8);
    }
#if FNN_MATCH_KEYS
    uint16_t *keys = (uint16_t *)(words + 2 * m);
    fnn_match_keys(lo, hi, m, kc > 64, keys);
#endif
    /* t: the next place not matched; matched: bit j set where place t + j is */
    uint64_t matched = 0;
    for (int t = 0, q = 0; t < m; q++) {
        order[q] = sorted[t];
        int ahead = m - t - 1 < FNN_MATCH_WINDOW ? m - t - 1 : FNN_MATCH_WINDOW;
        uint64_t open = ~(matched >> 1) & ((1ull << ahead) - 1);
        if (open) {
#if FNN_MATCH_KEYS
            int d = fnn_best_key(keys + 32 * t, open);
#else
            int d = fnn_most_shared(lo[t], hi[t], lo + t + 1, hi + t + 1, open);
#endif
            matched |= 2ull << d;
            order[++q] = sorted[t + 1 + d];
        }
        int skip = __builtin_ctzll(~(matched | 1));   /* place t and those matched after it */
        matched = (matched | 1) >> skip;
        t += skip;
    }
}

/* Exact zeros of A skipped. A tile's step p adds a[r, p] B[p, :] to each row r of C; where the
 * tile's 6 elements of A's column p are all zero (blank pixels, ReLU outputs) that adds +-0
 * (B finite), which leaves the sums as they are: the tiles may take only the other steps, and
 * C is the dense product's (up to the sign of zeros, and the NaN of 0 x inf in B). NaN and
 * infinity count as nonzero. Worth it only where at least FNN_SKIP_MIN of a tile's steps
 * are zero: the step list costs the tile time.
 *
 * fnn_nonzero_steps: for a full tile of A read in place (a[r lda + p], p < kc), returns -1
 * when fewer than FNN_SKIP_MIN of its steps are all zero; else their count q, with their
 * indices in steps[0, q) (padded for the prefetch) and the tile's values at them in dst (row r
 * at dst + r ldd, ldd >= kc + FNN_LANES). */
static int FNN_NAME(fnn_nonzero_steps)(const FNN_T *a, ptrdiff_t lda, int kc, FNN_T *dst, ptrdiff_t ldd,
                                        int *steps)
{
    int zero = 0, kept = 0;
    for (int p = 0; p < kc; p += FNN_LANES) {   /* count first: one masked compare per row */
        FNN_MASK all_zero = FNN_NAME(fnn_lanes)(kc - p);
        for (int r = 0; r < FNN_MR; r++)
            all_zero = FNN_MASK_CMP(all_zero, FNN_OP(maskz_loadu)(all_zero, a + r * lda + p), FNN_OP(setzero)(),
                                    _CMP_EQ_OQ);
        zero += __builtin_popcount(all_zero);
    }
    if (zero < FNN_SKIP_MIN(kc))
        return -1;
    for (int p = 0; p < kc; p += FNN_LANES) {
        FNN_MASK k = FNN_NAME(fnn_lanes)(kc - p);
        FNN_MASK nonzero = 0;
        FNN_VEC row[FNN_MR];
        for (int r = 0; r < FNN_MR; r++) {
            row[r] = FNN_OP(maskz_loadu)(k, a + r * lda + p);
            nonzero |= FNN_MASK_CMP(k, row[r], FNN_OP(setzero)(), _CMP_NEQ_UQ);
        }
        for (int r = 0; r < FNN_MR; r++)
            FNN_OP(storeu)(dst + r * ldd + kept, FNN_OP(maskz_compress)(nonzero, row[r]));
        fnn_store_steps(steps + kept, nonzero, p, FNN_LANES);
        kept += __builtin_popcount(nonzero);
    }
    return fnn_pad_steps(steps, kept);
}

/* fnn_pack_a's panel (kc x 6, [p][r]) of a full tile with `zero` all-zero steps: -1 when they
 * are fewer than FNN_SKIP_MIN; else the panel compacted in place to its other steps, listed
 * in `steps`, and their count. */
static int FNN_NAME(fnn_compact_panel)(FNN_T *panel, int kc, int zero, int *steps)
{
    FNN_MASK six = FNN_NAME(fnn_lanes)(FNN_MR);
    int q = 0;
    if (zero < FNN_SKIP_MIN(kc))
        return -1;
    for (int p = 0; p < kc; p++) {   /* q <= p: each step moves down, or stays */
        FNN_VEC v = FNN_OP(maskz_loadu)(six, panel + p * FNN_MR);
        FNN_OP(mask_storeu)(panel + q * FNN_MR, six, v);
        steps[q] = p;
        q += FNN_MASK_CMP(six, v, FNN_OP(setzero)(), _CMP_NEQ_UQ) != 0;
    }
    return fnn_pad_steps(steps, q);
}

/* The room one tile's step list takes for k blocks of up to kc: the steps, the whole vector
 * fnn_store_steps writes past the last, and fnn_pad_steps' prefetch padding. */
static inline ptrdiff_t FNN_NAME(fnn_steps_ld)(int kc)
{
    return kc + FNN_LANES + FNN_PREFETCH_B;
}

/* dst[t][p][r] = A[p, t + r] (op(A) = A^T, A row-major with leading dimension lda) for row
 * tiles t = 0, 6, 12, ...: one contiguous kc x 6 panel per tile, each of its rows one masked
 * 6-element copy (rows beyond `rows` in the last panel are left unset and never read). Full
 * tiles with enough all-zero steps are compacted (fnn_compact_panel): kept[t / 6] is their
 * step count, with the steps at steps + (t / 6) lds; -1 for the others (dense panels). */
static void FNN_NAME(fnn_pack_a)(FNN_T *dst, const FNN_T *a, ptrdiff_t lda, int rows, int kc, int *steps,
                                 ptrdiff_t lds, int *kept)
{
    for (int t = 0; t < rows; t += FNN_MR) {
        int mr = rows - t < FNN_MR ? rows - t : FNN_MR, zero = 0;
        FNN_MASK k = FNN_NAME(fnn_lanes)(mr);
        FNN_T *d = dst + (ptrdiff_t)t * kc;
        const FNN_T *src = a + t;
        for (int p = 0; p < kc; p++) {
            FNN_VEC v = FNN_OP(maskz_loadu)(k, src + p * lda);
            FNN_OP(mask_storeu)(d + p * FNN_MR, k, v);
            zero += FNN_MASK_CMP(k, v, FNN_OP(setzero)(), _CMP_NEQ_UQ) == 0;
        }
        kept[t / FNN_MR] = mr == FNN_MR ? FNN_NAME(fnn_compact_panel)(d, kc, zero, steps + t / FNN_MR * lds) : -1;
    }
}

/* The columns of the (at most) FNN_NC-column strip starting at column j0 of n; *nv its
 * vectors, *last the mask of its last vector (columns beyond n off). */
static inline int FNN_NAME(fnn_strip)(int n, int j0, int *nv, FNN_MASK *last)
{
    int cols = n - j0 < FNN_NC ? n - j0 : FNN_NC;
    *nv = (cols + FNN_LANES - 1) / FNN_LANES;
    *last = FNN_NAME(fnn_lanes)(cols - FNN_LANES * (*nv - 1));
    return cols;
}

/* dst[s kc FNN_NC + p FNN_NC + j] = B[p, s FNN_NC + j] for p < kc, j < FNN_NC (zero beyond
 * n): each kc x FNN_NC strip of B's kc x n block at b (row-major, ldb) contiguous and aligned
 * (dst: 64 bytes), strip s at dst + s kc FNN_NC. B is read in its row order, one stream (a
 * strip packed alone reads FNN_NC elements of each row, then jumps ldb: B coming from L3,
 * that packing stalled), each row prefetched FNN_PACK_AHEAD rows before it is copied. A single
 * strip is the block of its columns. The large blocking's and the fused Adam product's blocks
 * of B take it too (their products within 1% of strip-by-strip packing: 1024 x 784 x 2048 and
 * 1024 x 2048 x 2048 NN, 784 x 512 at k = 256 with Adam; calls alternating, 40 each). */
static void FNN_NAME(fnn_pack_b_block)(FNN_T *dst, const FNN_T *b, ptrdiff_t ldb, int n, int kc)
{
    int nv_last, strips = (n + FNN_NC - 1) / FNN_NC;
    FNN_MASK last;
    FNN_NAME(fnn_strip)(n, (strips - 1) * FNN_NC, &nv_last, &last);
    for (int p = 0; p < kc; p++) {
        if (p + FNN_PACK_AHEAD < kc)
            for (int j = 0; j < n; j += 64 / (int)sizeof(FNN_T))
                _mm_prefetch((const char *)(b + (p + FNN_PACK_AHEAD) * ldb + j), _MM_HINT_T0);
        for (int s = 0; s < strips; s++) {
            int nv = s == strips - 1 ? nv_last : FNN_NV;
            FNN_T *row = dst + ((ptrdiff_t)s * kc + p) * FNN_NC;
            for (int v = 0; v < nv; v++)
                FNN_OP(store)(row + FNN_LANES * v, FNN_OP(maskz_loadu)(s == strips - 1 && v == nv - 1 ? last : FNN_FULL,
                                                                       b + p * ldb + s * FNN_NC + FNN_LANES * v));
        }
    }
}

/* dst[p ldd + j] = src[j lds + p] for j < cols, p < kc: FNN_LANES x FNN_LANES blocks
 * transposed in registers, the edges element by element. */
static void FNN_NAME(fnn_pack_transposed)(FNN_T *dst, ptrdiff_t ldd, const FNN_T *src, ptrdiff_t lds, int cols, int kc)
{
    int j = 0;
    for (; j + FNN_LANES <= cols; j += FNN_LANES) {
        int p = 0;
        for (; p + FNN_LANES <= kc; p += FNN_LANES)
            FNN_NAME(fnn_transpose_block)(dst + (ptrdiff_t)p * ldd + j, ldd, src + (ptrdiff_t)j * lds + p, lds);
        for (; p < kc; p++)
            for (int q = 0; q < FNN_LANES; q++)
                dst[(ptrdiff_t)p * ldd + j + q] = src[(ptrdiff_t)(j + q) * lds + p];
    }
    for (; j < cols; j++)
        for (int p = 0; p < kc; p++)
            dst[(ptrdiff_t)p * ldd + j] = src[(ptrdiff_t)j * lds + p];
}

/* Whether C = op(A) B (m x n, inner size k) takes fnn_gemm_b_rows's large blocking (B's
 * block in L2), else fnn_gemm_small's (B's strip in L1): for k > 128 (else both make one k
 * block, and the small one's panel stays in L1) when C has FNN_LARGE_C elements (2 MiB) or
 * more, or half that and k > 384 (four or more k blocks of the small blocking). Measured in
 * one process, medians of 21 alternating runs (session 7), against 384 x 384 blocks of 384
 * columns, no prefetch, and the large blocking from 2 MiB of C for any k: 1024 x 256 x 512 NN
 * 168 -> 188, 1024 x 512 x 784 NN 177 -> 186, the wide step's products 1-4% faster; 512 x
 * 512 x 256 TN and 784 x 512 x 32 TN lost 4-5% with the large blocking, so k <= 384 keeps the
 * small one below 2 MiB. */
static inline int FNN_NAME(fnn_large_blocking)(int m, int n, int k)
{
    ptrdiff_t elements = (ptrdiff_t)m * n;
    return k > FNN_KC && (elements >= FNN_LARGE_C || (elements >= FNN_LARGE_C / 2 && k > 3 * FNN_KC));
}

/* What fnn_gemm_small hands each strip of C once complete: the strip's rows at cstrip (row
 * stride ldc), its columns j0 .. j0 + cols of C; ctx is the caller's. */
typedef void (*FNN_NAME(fnn_strip_fn))(void *ctx, const FNN_T *cstrip, ptrdiff_t ldc, int j0, int cols);

/* One k block of kc steps of op(A) (m rows, a_block[i rs + p]) prepared for fnn_gemm_small's
 * pairs of rows: adjacent rows or, where those share more zero steps, fnn_match_rows's pairs
 * (order: m ints; masks: m x FNN_ROW_CHUNKS; work and words: fnn_match_rows's); each pair q's
 * steps, their count and its rows' values at them
 * (fnn_pair_list: steps + q lds, kept[q], vals + 2q ldd). Returns 0, the block to be
 * computed in whole tiles, where the pairs share fewer than FNN_SKIP_MIN(kc) zero steps each
 * on average. */
static int FNN_NAME(fnn_prepare_pairs)(int m, int kc, const FNN_T *a_block, ptrdiff_t rs, FNN_MASK *masks,
                                       int *order, int *work, uint64_t *words, FNN_T *vals, ptrdiff_t ldd,
                                       int *steps, ptrdiff_t lds, int *kept)
{
    int npairs = m / 2, adjacent = 0, matched = 0;
    for (int i = 0; i < m; i++) {   /* each row's masks, the chunks past kc zero */
        memset(masks + i * FNN_ROW_CHUNKS, 0, FNN_ROW_CHUNKS * sizeof(FNN_MASK));
        FNN_NAME(fnn_row_masks)(a_block + i * rs, kc, masks + i * FNN_ROW_CHUNKS);
    }
    FNN_NAME(fnn_match_rows)(masks, kc, m, order, work, words);
    for (int q = 0; q < npairs; q++) {
        adjacent += FNN_NAME(fnn_pair_zeros)(masks + 2 * q * FNN_ROW_CHUNKS, masks + (2 * q + 1) * FNN_ROW_CHUNKS,
                                             kc);
        matched += FNN_NAME(fnn_pair_zeros)(masks + order[2 * q] * FNN_ROW_CHUNKS,
                                            masks + order[2 * q + 1] * FNN_ROW_CHUNKS, kc);
    }
    for (int i = 0; i < m && adjacent >= matched; i++)
        order[i] = i;
    if ((adjacent > matched ? adjacent : matched) < npairs * FNN_SKIP_MIN(kc))
        return 0;
    for (int q = 0; q < npairs; q++) {
        int i0 = order[2 * q], i1 = order[2 * q + 1];
        kept[q] = FNN_NAME(fnn_pair_list)(a_block + i0 * rs, a_block + i1 * rs, masks + i0 * FNN_ROW_CHUNKS,
                                          masks + i1 * FNN_ROW_CHUNKS, kc, vals + 2 * q * ldd,
                                          vals + (2 * q + 1) * ldd, steps + q * lds);
    }
    return 1;
}

/* C = op(A) op(B) in the small blocking (bench/gemm_shapes.py; C harness, GFLOP/s side by
 * side): k blocks of at most 128 and, per k block and per strip of FNN_NC columns, op(B)'s
 * panel (kc x FNN_NC, 32 KiB: L1) packed once and swept down all rows of C, C staying in L2
 * across the k blocks (op(B) = B: its whole k block packed at once where it fits
 * FNN_B_BLOCK_BYTES, fnn_pack_b_block, the strips' panels then in L2).
 * op(A)[i, p] = a[i rs_a + p cs_a]; op(B) = B (k x n, row-major, ldb) or,
 * with trans_b, B^T (B n x k), its panels packed by register transposes. C = A B^T takes it
 * when C has fewer than FNN_LARGE_C elements; beyond, fnn_gemm_nt.
 * Where a strip's panel serves several strips (n > FNN_NC) and op(A)'s rows are contiguous
 * (A read in place, or A^T transposed into a buffer per k block), the k blocks are of at most
 * FNN_KC_PAIRS and the rows of op(A) are taken in pairs, each pair over only the steps where
 * one of its rows is nonzero (fnn_pair_list): pairs of adjacent rows, or fnn_match_rows's
 * where those share more zero steps; an odd row left over alone. Each
 * element of C is then the dense product's chain of FMAs, less its zero steps (the result is
 * the dense product's, B finite). Where the pairs share fewer than FNN_SKIP_MIN(kc) zero
 * steps each on average, the block is computed in whole 6-row tiles, and later blocks are not
 * looked at (dense A: the first only). Measured (C harness; a 784-512-256 network trained one
 * epoch on Fashion-MNIST, its step's products at batch 128; fastnn's previous skipping, of the
 * steps where all 6 rows of a tile are zero, adjacent pairs and sorted pairs side by side):
 * X W1 0.93 -> 0.75 -> 0.67 ms, H1 W2 0.27 -> 0.21 -> 0.19, X^T dZ1 0.81 -> 0.69 (adjacent
 * pixels: no sort), H1^T dZ2 0.34 -> 0.23 -> 0.21, dZ2 W2^T (never skipped before) 0.32 ->
 * 0.24 -> 0.22; the step's products with Adam 2.90 -> 2.31 -> 2.20 ms; dense products within
 * 1-2%. Pairs matched (fnn_match_rows) instead of sorted by their first 16 steps' zeros, the
 * same C harness after 5 epochs (31 rounds of 40 batches, medians of the ratios): X W1 0.977x
 * the time, X^T dZ1 0.959x (0.978x with Adam), H1 W2 1.004x, H1^T dZ2 1.019x (1.005x with
 * Adam); a `fit` epoch 0.973x (24 epochs of each build taking turns).
 * bias, relu and nonfinite: fnn_tile's epilogue, applied with the last k block.
 * strip_done (when not NULL): called with each strip of C once complete, C then a buffer of
 * one strip (c and ldc unused): every k block is prepared first (fnn_prepare_pairs; their
 * lists and values take about 12 bytes per element of op(A), so callers keep k to a block or
 * two), and each strip swept through them all, so a caller can consume C strip by strip while
 * it is in cache (gemm_adam.h: a weight gradient's Adam update; fnn_gemm_tn_swapped's
 * transposition); the same elements, bit for bit. Every product preparing all its k blocks
 * (strips swept through them all) made X W1 of the Fashion-MNIST network 3-5% slower.
 * Its buffers are on the heap; returns 0 when one is unavailable. */
static int FNN_NAME(fnn_gemm_small)(int m, int n, int k, const FNN_T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                                    const FNN_T *b, ptrdiff_t ldb, int trans_b, FNN_T *c, ptrdiff_t ldc,
                                    const FNN_T *bias, int relu, int *nonfinite, FNN_NAME(fnn_strip_fn) strip_done,
                                    void *ctx)
{
    int transpose_a = cs_a != 1 && n > FNN_NC;   /* op(A) = A^T, reused by several strips */
    int pairs = n > FNN_NC && (cs_a == 1 || transpose_a) && m >= 2, look = pairs;
    int kc_max = fnn_k_block(k, pairs ? FNN_KC_PAIRS : FNN_KC), npairs = m / 2;
    int blocks = (k + kc_max - 1) / kc_max, group = strip_done ? blocks : 1;   /* k blocks prepared at once */
    ptrdiff_t ldd = kc_max + FNN_LANES, lds = FNN_NAME(fnn_steps_ld)(kc_max);
    /* per k block of a group: A^T's block (arows), the pairs' values, steps and counts, the rows' order */
    ptrdiff_t a_size = transpose_a ? (ptrdiff_t)m * ldd : 0, v_size = (ptrdiff_t)npairs * 2 * ldd;
    ptrdiff_t s_size = (ptrdiff_t)npairs * lds;
    /* B's whole k block packed at once (fnn_pack_b_block) where it fits FNN_B_BLOCK_BYTES, else strip by strip */
    int strips = (n + FNN_NC - 1) / FNN_NC;
    int b_block = !trans_b && !strip_done && strips > 1 &&
                  (size_t)kc_max * strips * FNN_NC * sizeof(FNN_T) <= FNN_B_BLOCK_BYTES;
    FNN_T *bpack = fnn_aligned_alloc((size_t)kc_max * FNN_NC * (b_block ? strips : 1) * sizeof(FNN_T));
    FNN_T *cstrip = strip_done ? fnn_aligned_alloc((size_t)m * FNN_NC * sizeof(FNN_T)) : NULL;
    FNN_T *arows = transpose_a ? fnn_aligned_alloc((size_t)(group * a_size) * sizeof(FNN_T)) : NULL;
    FNN_T *vals = pairs ? fnn_aligned_alloc((size_t)(group * v_size) * sizeof(FNN_T)) : NULL;
    FNN_MASK *masks = pairs ? fnn_aligned_alloc((size_t)m * FNN_ROW_CHUNKS * sizeof(FNN_MASK)) : NULL;
    int *steps = pairs ? fnn_aligned_alloc((size_t)(group * s_size) * sizeof(int)) : NULL;
    int *kept = pairs ? fnn_aligned_alloc((size_t)group * npairs * sizeof(int)) : NULL;
    int *order = pairs ? fnn_aligned_alloc((size_t)group * m * sizeof(int)) : NULL;
    int *match_work = pairs ? fnn_aligned_alloc((size_t)(kc_max + 2 + 2 * m) * sizeof(int)) : NULL;
    uint64_t *match_words = pairs ? fnn_aligned_alloc((size_t)10 * m * sizeof(uint64_t)) : NULL;
    int *paired = fnn_aligned_alloc((size_t)group * sizeof(int));
    int done = bpack && paired && (cstrip || !strip_done) && (arows || !transpose_a) &&
               (!pairs || (vals && masks && steps && kept && order && match_work && match_words));
    if (strip_done)
        ldc = FNN_NC;
    for (int g0 = 0; done && g0 < blocks; g0 += group) {
        int in_group = blocks - g0 < group ? blocks - g0 : group;
        for (int t = 0; t < in_group; t++) {
            int p0 = (g0 + t) * kc_max, kc = k - p0 < kc_max ? k - p0 : kc_max;
            if (transpose_a)   /* arows[i ldd + p] = A[p0 + p, i] */
                FNN_NAME(fnn_pack_transposed)(arows + t * a_size, ldd, a + p0 * cs_a, cs_a, kc, m);
            paired[t] = look && FNN_NAME(fnn_prepare_pairs)(m, kc, transpose_a ? arows + t * a_size : a + p0 * cs_a,
                                                            transpose_a ? ldd : rs_a, masks, order + t * m,
                                                            match_work, match_words, vals + t * v_size, ldd,
                                                            steps + t * s_size, lds, kept + t * npairs);
            look = paired[t];
        }
        if (b_block)   /* group = 1: the block g0 */
            FNN_NAME(fnn_pack_b_block)(bpack, b + (ptrdiff_t)g0 * kc_max * ldb, ldb, n,
                                       k - g0 * kc_max < kc_max ? k - g0 * kc_max : kc_max);
        for (int j0 = 0; j0 < n; j0 += FNN_NC) {
            int nv;
            FNN_MASK last;
            int cols = FNN_NAME(fnn_strip)(n, j0, &nv, &last);
            FNN_T *c_strip = strip_done ? cstrip : c + j0;
            for (int t = 0; t < in_group; t++) {
                int p0 = (g0 + t) * kc_max, kc = k - p0 < kc_max ? k - p0 : kc_max, final = p0 + kc == k;
                const FNN_T *a_block = transpose_a ? arows + t * a_size : a + p0 * cs_a;
                ptrdiff_t rs = transpose_a ? ldd : rs_a, cs = transpose_a ? 1 : cs_a;
                const int *row = order ? order + t * m : NULL;
                const FNN_T *bias_tile = final && bias ? bias + j0 : NULL;
                int *bad = final ? nonfinite : NULL;
                const FNN_T *panel = b_block ? bpack + (ptrdiff_t)(j0 / FNN_NC) * kc * FNN_NC : bpack;
                if (trans_b)
                    FNN_NAME(fnn_pack_transposed)(bpack, FNN_NC, b + (ptrdiff_t)j0 * ldb + p0, ldb, cols, kc);
                else if (!b_block)
                    FNN_NAME(fnn_pack_b_block)(bpack, b + p0 * ldb + j0, ldb, cols, kc);
                for (int q = 0; q < npairs && paired[t]; q++)
                    FNN_NAME(fnn_tile_pair)(nv, kept[t * npairs + q], steps + t * s_size + q * lds,
                                            vals + t * v_size + 2 * q * ldd, ldd, panel, c_strip + row[2 * q] * ldc,
                                            (row[2 * q + 1] - row[2 * q]) * ldc, last, p0 > 0, bias_tile,
                                            final && relu, bad);
                if (paired[t] && m % 2)   /* the row left over */
                    FNN_NAME(fnn_tile_any)(1, nv, kc, a_block + row[m - 1] * rs, rs, cs, panel, FNN_NC,
                                           c_strip + row[m - 1] * ldc, ldc, last, p0 > 0, bias_tile, final && relu,
                                           bad, 0);
                for (int i0 = 0; i0 < m && !paired[t]; i0 += FNN_MR)
                    FNN_NAME(fnn_tile_any)(m - i0 < FNN_MR ? m - i0 : FNN_MR, nv, kc, a_block + i0 * rs, rs, cs,
                                           panel, FNN_NC, c_strip + i0 * ldc, ldc, last, p0 > 0, bias_tile,
                                           final && relu, bad, 0);
            }
            if (strip_done)
                strip_done(ctx, cstrip, FNN_NC, j0, cols);
        }
    }
    free(paired);
    free(match_words);
    free(match_work);
    free(order);
    free(kept);
    free(steps);
    free(masks);
    free(vals);
    free(arows);
    free(cstrip);
    free(bpack);
    return done;
}

/* C = op(A) B in the large blocking (fnn_large_blocking), op(A)[i, p] = a[i rs_a + p cs_a] and
 * B (k x n) row-major: k blocks of at most 448 and B's block (at most FNN_KC_BLOCKED x
 * FNN_NB_BLOCKED, 784 KiB, n split evenly into multiples of FNN_NC) in L2, packed in strips
 * of kc x FNN_NC, each 6-row tile of op(A) sweeping those strips with its 6 x kc in L1, C
 * passed over k / 448 times; the tiles prefetch their strip's rows, read from L2. op(A) is
 * packed into 6-row panels when it is read transposed (bench/gemm_shapes.py, GFLOP/s measured
 * side by side in a C harness, float32). Against the small blocking with k blocks of up to
 * 1024 (its rule for such C until then, 384 x 384 blocks): 2048 x 1024 x 2048 TN 159 ->
 * 174-179, 784 x 1024 x 2048 TN 161 -> 178, 1024 x 2048 x 2048 NN 169-176 -> 177-178. Blocks
 * of 448 x 448 (784 KiB) instead of 384 x 384: NN 2-3% faster, TN and NT within 1%; 512 x 512
 * made TN 3-12% slower (its packed 6-row panels of A outgrow L1).
 * Its buffers are on the heap; returns 0 when one is unavailable. */
static int FNN_NAME(fnn_gemm_b_rows)(int m, int n, int k, const FNN_T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                                     const FNN_T *b, ptrdiff_t ldb, FNN_T *c, ptrdiff_t ldc,
                                     const FNN_T *bias, int relu, int *nonfinite)
{
    int kc_max = fnn_k_block(k, FNN_KC_BLOCKED);
    /* B's block: at most FNN_KC_BLOCKED x FNN_NB_BLOCKED elements, n split evenly */
    int nb_max = FNN_KC_BLOCKED * FNN_NB_BLOCKED / kc_max / FNN_NC * FNN_NC;
    int blocks = (n + nb_max - 1) / nb_max;
    int nb = ((n + blocks - 1) / blocks + FNN_NC - 1) / FNN_NC * FNN_NC;
    /* zero steps (all 6 rows of a tile zero) are skipped where B's panels serve two strips or
     * more: in panels of A^T (packed), or in A read in place (NN) after each tile's first
     * strip of a block, which brings it to L1 (tested before it, the tile's A exposed the
     * memory's latency: dense products 3-4% slower), looked for in each k block after one
     * where a tile had enough (dense A: in the first only, which costs small products 1-2%,
     * against 2-4% for looking in every k block) */
    int pack_a = rs_a == 1 && cs_a != 1 && n > FNN_NC;
    int in_place = cs_a == 1 && n > FNN_NC, look = in_place;
    int tiles = (m + FNN_MR - 1) / FNN_MR;
    int listed = pack_a ? tiles : in_place;   /* tiles with a step list (in place: the current one) */
    ptrdiff_t ldd = kc_max + FNN_LANES, lds = FNN_NAME(fnn_steps_ld)(kc_max);
    FNN_T *bpack = fnn_aligned_alloc((size_t)kc_max * nb * sizeof(FNN_T));
    FNN_T *apack = pack_a ? fnn_aligned_alloc((size_t)kc_max * (m + FNN_MR) * sizeof(FNN_T)) : NULL;
    FNN_T *a_nonzero = in_place ? fnn_aligned_alloc((size_t)FNN_MR * ldd * sizeof(FNN_T)) : NULL;
    int *steps = listed ? fnn_aligned_alloc((size_t)listed * lds * sizeof(int)) : NULL;
    int *kept = listed ? fnn_aligned_alloc((size_t)listed * sizeof(int)) : NULL;
    int done = bpack && (apack || !pack_a) && (a_nonzero || !in_place) && (!listed || (steps && kept));
    for (int p0 = 0; done && p0 < k; p0 += kc_max) {
        int kc = k - p0 < kc_max ? k - p0 : kc_max;
        int final = p0 + kc == k;
        int found = 0;   /* a tile of A in place with enough zero steps, in this k block */
        if (pack_a)
            FNN_NAME(fnn_pack_a)(apack, a + p0 * cs_a, cs_a, m, kc, steps, lds, kept);
        for (int jb = 0; jb < n; jb += nb) {
            int jend = n - jb < nb ? n : jb + nb;
            FNN_NAME(fnn_pack_b_block)(bpack, b + p0 * ldb + jb, ldb, jend - jb, kc);
            for (int i0 = 0; i0 < m; i0 += FNN_MR) {
                int mr = m - i0 < FNN_MR ? m - i0 : FNN_MR;
                const FNN_T *a_tile = pack_a ? apack + (ptrdiff_t)i0 * kc : a + i0 * rs_a + p0 * cs_a;
                ptrdiff_t rs = pack_a ? 1 : rs_a, cs = pack_a ? FNN_MR : cs_a;
                int t = in_place ? 0 : i0 / FNN_MR;   /* its step list */
                int *t_steps = listed ? steps + t * lds : NULL;
                /* the tile's A at its listed steps: rows compacted by fnn_nonzero_steps (A in place) or
                 * the panel compacted by fnn_pack_a */
                const FNN_T *t_nonzero = in_place ? a_nonzero : a_tile;
                ptrdiff_t t_rs = in_place ? ldd : rs, t_cs = in_place ? 1 : cs;
                if (in_place)
                    kept[0] = -1;
                for (int j0 = jb; j0 < jend; j0 += FNN_NC) {
                    int nv;
                    FNN_MASK last;
                    FNN_NAME(fnn_strip)(n, j0, &nv, &last);
                    const FNN_T *panel = bpack + (ptrdiff_t)(j0 - jb) * kc;
                    FNN_T *c_tile = c + i0 * ldc + j0;
                    const FNN_T *bias_tile = final && bias ? bias + j0 : NULL;
                    if (listed && kept[t] >= 0)
                        FNN_NAME(fnn_tile_steps)(nv, kept[t], t_steps, t_nonzero, t_rs, t_cs, panel, c_tile, ldc,
                                                 last, p0 > 0, bias_tile, final && relu, final ? nonfinite : NULL);
                    else
                        FNN_NAME(fnn_tile_any)(mr, nv, kc, a_tile, rs, cs, panel, FNN_NC, c_tile, ldc, last, p0 > 0,
                                               bias_tile, final && relu, final ? nonfinite : NULL, 1);
                    if (look && j0 == jb && mr == FNN_MR) {   /* its tile brought A to L1 */
                        kept[t] = FNN_NAME(fnn_nonzero_steps)(a_tile, rs, kc, a_nonzero, ldd, t_steps);
                        found |= kept[t] >= 0;
                    }
                }
            }
        }
        look = look && found;
    }
    free(kept);
    free(steps);
    free(a_nonzero);
    free(apack);
    free(bpack);
    return done;
}

/* C = A B^T, A (m x k), B (n x k), for C of FNN_LARGE_C elements (2 MiB) or more (smaller C:
 * fnn_gemm_small): per FNN_NC-column strip and k block of up to 1024, B^T's panel (kc x
 * FNN_NC, in L2) packed on the heap and swept down all rows of C, the tiles prefetching its
 * rows. Deeper k blocks save passes over C from L3 (1024 x 2048 x 2048 NT: blocks of 128
 * 136 GFLOP/s, of 1024 200); the NN/TN blocking of fnn_gemm_b_rows (B's block in L2) did not
 * speed these up (172-177 either way), so NT keeps this simpler one. Returns 0 when the
 * buffer is unavailable. */
static int FNN_NAME(fnn_gemm_nt)(int m, int n, int k, const FNN_T *a, ptrdiff_t lda, const FNN_T *b,
                                 ptrdiff_t ldb, FNN_T *c, ptrdiff_t ldc)
{
    int kc_max = fnn_k_block(k, FNN_KC_LARGE);
    FNN_T *panel = fnn_aligned_alloc((size_t)kc_max * FNN_NC * sizeof(FNN_T));
    if (!panel)
        return 0;
    for (int j0 = 0; j0 < n; j0 += FNN_NC) {
        int nv;
        FNN_MASK last;
        int cols = FNN_NAME(fnn_strip)(n, j0, &nv, &last);
        for (int p0 = 0; p0 < k; p0 += kc_max) {
            int kc = k - p0 < kc_max ? k - p0 : kc_max;
            FNN_NAME(fnn_pack_transposed)(panel, FNN_NC, b + (ptrdiff_t)j0 * ldb + p0, ldb, cols, kc);
            for (int i0 = 0; i0 < m; i0 += FNN_MR) {
                int mr = m - i0 < FNN_MR ? m - i0 : FNN_MR;
                FNN_NAME(fnn_tile_any)(mr, nv, kc, a + i0 * lda + p0, lda, 1, panel, FNN_NC,
                                       c + i0 * ldc + j0, ldc, last, p0 > 0, NULL, 0, NULL, kc > FNN_KC);
            }
        }
    }
    free(panel);
    return 1;
}

/* Whether the first FNN_PAIRED_ROWS_SAMPLE rows of A (m x k, row-major, lda), in adjacent
 * pairs, have both rows of a pair zero at FNN_PAIRED_ZERO_TENTHS / 10 of their steps or more
 * (a fraction z of zeros independent of each other gives z^2): the pairs' fnn_pair_zeros over
 * k blocks of FNN_KC_PAIRS */
static int FNN_NAME(fnn_pairs_share_zeros)(const FNN_T *a, ptrdiff_t lda, int m, int k)
{
    int pairs = (m < FNN_PAIRED_ROWS_SAMPLE ? m : FNN_PAIRED_ROWS_SAMPLE) / 2;
    FNN_MASK m0[FNN_CHUNKS(FNN_KC_PAIRS)], m1[FNN_CHUNKS(FNN_KC_PAIRS)];
    ptrdiff_t both = 0;
    for (int q = 0; q < pairs; q++)
        for (int p0 = 0; p0 < k; p0 += FNN_KC_PAIRS) {
            int kc = k - p0 < FNN_KC_PAIRS ? k - p0 : FNN_KC_PAIRS;
            FNN_NAME(fnn_row_masks)(a + 2 * q * lda + p0, kc, m0);
            FNN_NAME(fnn_row_masks)(a + (2 * q + 1) * lda + p0, kc, m1);
            both += FNN_NAME(fnn_pair_zeros)(m0, m1, kc);
        }
    return pairs > 0 && 10 * both >= (ptrdiff_t)FNN_PAIRED_ZERO_TENTHS * pairs * k;
}

/* C = op(A) B (op(A)[i, p] = a[i rs_a + p cs_a], B k x n row-major) in the blocking that fits.
 * Where the large blocking's size rule holds but A, read in place, has rows that pair up over
 * zeros (fnn_pairs_share_zeros), C is computed by the small blocking's pairs of rows in chunks
 * of rows whose C fits FNN_PAIRED_C_BYTES (in L2 across the k blocks), where a chunk has at
 * least FNN_PAIRED_MIN_ROWS rows (B's packing shared by enough rows). Against the large
 * blocking (calls alternating, medians of 30-40, 1 thread): a 784-512-256 network trained two
 * epochs on Fashion-MNIST, 1024 test images: X W1 0.81-0.92, H1 W2 0.69-0.83 (the higher with
 * a dense product between the calls); 4096 images, X W1 0.81-0.89. Random rows with
 * independent zeros, 1024 x 784 x 512 and 4096 x 512 x 512: 0.84 and 0.91 at 58% zeros, 0.71
 * and 0.69 at 66%; at 50% (not taken) 1.00, dense 1.00-1.03 (the sample's cost, within the
 * noise). 2 threads: 0.93-0.95 on Fashion-MNIST, 0.80-0.88 at 66%. */
static int FNN_NAME(fnn_gemm_rows)(int m, int n, int k, const FNN_T *a, ptrdiff_t rs_a, ptrdiff_t cs_a,
                                   const FNN_T *b, ptrdiff_t ldb, FNN_T *c, ptrdiff_t ldc, const FNN_T *bias,
                                   int relu, int *nonfinite)
{
    int chunk = m;
    if (FNN_NAME(fnn_large_blocking)(m, n, k)) {
        chunk = (int)(FNN_PAIRED_C_BYTES / ((size_t)n * sizeof(FNN_T))) / 2 * 2;
        if (cs_a != 1 || n <= FNN_NC || chunk < FNN_PAIRED_MIN_ROWS || !FNN_NAME(fnn_pairs_share_zeros)(a, rs_a, m, k))
            return FNN_NAME(fnn_gemm_b_rows)(m, n, k, a, rs_a, cs_a, b, ldb, c, ldc, bias, relu, nonfinite);
    }
    for (int i0 = 0; i0 < m; i0 += chunk)
        if (!FNN_NAME(fnn_gemm_small)(m - i0 < chunk ? m - i0 : chunk, n, k, a + i0 * rs_a, rs_a, cs_a, b, ldb, 0,
                                      c + i0 * ldc, ldc, bias, relu, nonfinite, NULL, NULL))
            return 0;
    return 1;
}

/* The elements of A (rows x cols, row-major, lda) that are zero */
static ptrdiff_t FNN_NAME(fnn_count_zeros)(const FNN_T *a, ptrdiff_t lda, int rows, int cols)
{
    ptrdiff_t zero = 0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j += FNN_LANES) {
            FNN_MASK k = FNN_NAME(fnn_lanes)(cols - j);
            zero += __builtin_popcount(
                FNN_MASK_CMP(k, FNN_OP(maskz_loadu)(k, a + r * lda + j), FNN_OP(setzero)(), _CMP_EQ_OQ));
        }
    return zero;
}

/* Whether C = A^T B (A k x m, B k x n) is computed as its transpose, C^T = B^T A
 * (fnn_gemm_tn_swapped): where C is narrower than a vector (C^T is as wide as C is tall, so
 * its tiles use all their lanes; a one-vector tile of C uses n of them and waits on its FMAs'
 * latency: 1.14-1.79x faster, C harness, 512 x 10 at k = 32-1024), or where both take the
 * small blocking's pairs of rows (gemm_impl.h, fnn_gemm_small) and B has a larger share of
 * zeros than A by 1/8 or more: B^T's pairs of rows then skip more steps (a 784-512-256
 * network trained one epoch on Fashion-MNIST, its step's weight gradient X^T dZ1 at batch 128:
 * X has 50% zeros, dZ1 66%; 0.81 ms as X^T dZ1, 0.56 as dZ1^T X, 0.61 with the transpose). */
static int FNN_NAME(fnn_tn_swaps)(int m, int n, int k, const FNN_T *a, ptrdiff_t lda, const FNN_T *b, ptrdiff_t ldb,
                                  ptrdiff_t *a_zeros)
{
    if (n < FNN_LANES && m > FNN_NC)
        return 1;
    if (n <= FNN_NC || m <= FNN_NC || FNN_NAME(fnn_large_blocking)(m, n, k) || FNN_NAME(fnn_large_blocking)(n, m, k))
        return 0;
    ptrdiff_t za = FNN_NAME(fnn_count_zeros)(a, lda, k, m);
    if (a_zeros)   /* for a caller that also asks how sparse A is (gemm_adam.h) */
        *a_zeros = za;
    /* zeros(B) / (k n) - zeros(A) / (k m) >= 1/8 */
    return 8 * (FNN_NAME(fnn_count_zeros)(b, ldb, k, n) * m - za * n) >= (ptrdiff_t)k * m * n;
}

/* fnn_gemm_tn_swapped's strip_done: C^T's strip, C's rows j0 .. j0 + cols, transposed into C */
typedef struct {
    FNN_T *c;
    ptrdiff_t ldc;
    int n;
} FNN_NAME(fnn_transposed_c);

static void FNN_NAME(fnn_strip_transposed)(void *ctx, const FNN_T *cstrip, ptrdiff_t lds, int j0, int cols)
{
    const FNN_NAME(fnn_transposed_c) *t = ctx;
    FNN_NAME(fnn_pack_transposed)(t->c + (ptrdiff_t)j0 * t->ldc, t->ldc, cstrip, lds, t->n, cols);
}

/* C = A^T B (A k x m, B k x n) as C^T = B^T A (fnn_tn_swaps says where), transposed into C:
 * strip by strip as fnn_gemm_small completes them for k <= FNN_KC (one or two k blocks; a
 * 784-512-256 network's X^T dZ1 at batch 128 on Fashion-MNIST never has its 1.6 MiB of C^T in
 * memory), deeper through a heap buffer of all of C^T (all k blocks' lists would take
 * m x k x 12 bytes or more). Returns 0 when a buffer is unavailable. */
static int FNN_NAME(fnn_gemm_tn_swapped)(int m, int n, int k, const FNN_T *a, ptrdiff_t lda, const FNN_T *b,
                                         ptrdiff_t ldb, FNN_T *c, ptrdiff_t ldc)
{
    if (k <= FNN_KC) {
        FNN_NAME(fnn_transposed_c) t = {c, ldc, n};
        return FNN_NAME(fnn_gemm_small)(n, m, k, b, 1, ldb, a, lda, 0, NULL, 0, NULL, 0, NULL,
                                        FNN_NAME(fnn_strip_transposed), &t);
    }
    FNN_T *ct = fnn_aligned_alloc((size_t)n * m * sizeof(FNN_T));
    int done = ct && FNN_NAME(fnn_gemm_rows)(n, m, k, b, 1, ldb, a, lda, ct, m, NULL, 0, NULL);
    if (done)   /* c[i ldc + j] = ct[j m + i] */
        FNN_NAME(fnn_pack_transposed)(c, ldc, ct, m, n, m);
    free(ct);
    return done;
}

/* C = op(A) op(B), optionally finished as C + bias or max(C + bias, 0) (NN and TN only);
 * nonfinite (NN and TN only; when not NULL) is set to 1 if an element of op(A) op(B) is NaN
 * or infinite, else left as it is. Returns 0 when it did not compute C: call BLAS instead. */
static int FNN_NAME(fastnn_gemm)(int trans_a, int trans_b, int m, int n, int k, const FNN_T *a, int lda,
                                 const FNN_T *b, int ldb, FNN_T *c, int ldc, const FNN_T *bias, int relu,
                                 int *nonfinite)
{
    if (!fastnn_gemm_applies(trans_a, trans_b, m, n, k) || ((bias || relu || nonfinite) && (trans_b || k <= 0)))
        return 0;
    if (k <= 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(ptrdiff_t)i * ldc + j] = 0;
        return 1;
    }
    if (trans_b && (ptrdiff_t)m * n >= FNN_LARGE_C)
        return FNN_NAME(fnn_gemm_nt)(m, n, k, a, lda, b, ldb, c, ldc);
    if (trans_b)
        return FNN_NAME(fnn_gemm_small)(m, n, k, a, lda, 1, b, ldb, 1, c, ldc, NULL, 0, NULL, NULL, NULL);
    if (trans_a && !(bias || relu || nonfinite) && FNN_NAME(fnn_tn_swaps)(m, n, k, a, lda, b, ldb, NULL))
        return FNN_NAME(fnn_gemm_tn_swapped)(m, n, k, a, lda, b, ldb, c, ldc);
    if (trans_a)
        return FNN_NAME(fnn_gemm_rows)(m, n, k, a, 1, lda, b, ldb, c, ldc, bias, relu, nonfinite);
    return FNN_NAME(fnn_gemm_rows)(m, n, k, a, lda, 1, b, ldb, c, ldc, bias, relu, nonfinite);
}

#undef FNN_CHUNKS
#undef FNN_PAIR_CASE
#undef FNN_STEPS_CASE
#undef FNN_TILE_ROW
#undef FNN_TILE_CASE
#undef FNN_MASK_CMP
#undef FNN_FULL
#undef FNN_OP
#undef FNN_EXPAND3
#undef FNN_PASTE3
#undef FNN_T
#undef FNN_VEC
#undef FNN_MASK
#undef FNN_LANES
#undef FNN_SFX
#undef FNN_NAME
#undef FNN_NC
#undef FNN_LARGE_C
#undef FNN_NB_BLOCKED
