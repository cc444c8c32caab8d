/* The selective scan of scan_chunked.py's `_Scan` in plain C99 + OpenMP (CPU only; loaded by scan_cpu.py).
 *
 * h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t (h_{-1} = 0), y_t = C_t . h_t, per (batch, channel) pair.
 * Layouts (all contiguous): u, delta, y, dy (b, d, L); A (d, n); B, C and their gradients (b, L, n), so
 * that the inner loop over the state runs along memory; last (b, d, n); ckpt (b, d, ceil(L / T), n) the
 * state entering every T-step chunk, from which the backward pass recomputes one chunk's states at a time
 * (memory ~ L / T states, not L). Built without -ffast-math: NaN and inf propagate as in PyTorch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp for float that the compiler can vectorise (glibc's expf is a call per element: half the kernel's time).
 * exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln 2 / 2, exp(r) by Cephes' expf polynomial (~1 ulp);
 * 2^k as two factors so that k = 128 and gradual underflow need no special case. NaN passes through (the
 * comparisons are false), exp(-inf) = 0, exp(+inf) = inf. */
static inline float exp_vec(float x)
{
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer (no -ffast-math) */
    float kf = (xc * 1.44269504088896341f + shift) - shift;
    float r = (xc - kf * 0.693359375f) + kf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int k = (int)kf, k1 = k >> 1, k2 = k - k1;
    int b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    p = p * s1 * s2;
    return x > 88.72283935546875f ? INFINITY : (x < -103.972084f ? 0.0f : p);
}

/* On x86-64, an AVX2 + FMA copy of each entry point besides the baseline one, picked at load time by the CPU
 * (not by the build machine, unlike -march=native). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define CLONES
#endif

/* The sum of v[0..n), in a fixed order that vectorises without reassociation: 8 interleaved partial sums. */
#define DEFINE_SUM(real, sfx)                                                                                \
static inline real sum_##sfx(const real *v, long n)                                                          \
{                                                                                                            \
    real s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, total = 0;                                                         \
    long k = 0, j;                                                                                           \
    for (; k + 8 <= n; k += 8)                                                                               \
        for (j = 0; j < 8; j++) s[j] += v[k + j];                                                            \
    for (j = 0; k + j < n; j++) s[j] += v[k + j];                                                            \
    for (j = 0; j < 8; j++) total += s[j];                                                                   \
    return total;                                                                                            \
}
DEFINE_SUM(float, f32)
DEFINE_SUM(double, f64)

#define INLINE static inline __attribute__((always_inline))

/* One (batch, channel) pair forward: ut, dt, yt (L); a_row (n); Bt, Ct (L, n) of its batch element; h (n) the
 * state, left at the last step; ck (ceil(L / T), n). */
#define DEFINE_SCAN(real, sfx, EXP)                                                                          \
INLINE void fwd_pair_##sfx(long n, long L, long T, const real *ut, const real *dt, const real *a_row,         \
                           const real *Bt, const real *Ct, real *yt, real *h, real *ck)                      \
{                                                                                                            \
    real ch[n]; /* C_t h_t per state, summed into y_t */                                                     \
    long t, k;                                                                                               \
    for (k = 0; k < n; k++) h[k] = 0;                                                                        \
    for (t = 0; t < L; t++) {                                                                                \
        const real *Bk = Bt + t * n, *Ck = Ct + t * n;                                                       \
        real dl = dt[t], du = dl * ut[t];                                                                    \
        if (t % T == 0)                                                                                      \
            for (k = 0; k < n; k++) ck[(t / T) * n + k] = h[k];                                              \
        for (k = 0; k < n; k++) {                                                                            \
            h[k] = EXP(dl * a_row[k]) * h[k] + du * Bk[k];                                                   \
            ch[k] = Ck[k] * h[k];                                                                            \
        }                                                                                                    \
        yt[t] = sum_##sfx(ch, n);                                                                            \
    }                                                                                                        \
}                                                                                                            \
                                                                                                             \
CLONES void scan_fwd_##sfx(long b, long d, long n, long L, const real *u, const real *delta, const real *A,   \
                           const real *Bt, const real *Ct, real *y, real *last, real *ckpt, long T,          \
                           int nthreads)                                                                     \
{                                                                                                            \
    long nck = (L + T - 1) / T, pair;                                                                        \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                                      \
    for (pair = 0; pair < b * d; pair++) {                                                                   \
        long ib = pair / d, id = pair % d;                                                                   \
        const real *args_B = Bt + ib * L * n, *args_C = Ct + ib * L * n;                                     \
        if (n == 16) /* Mamba's d_state: loops of a constant length, unrolled into whole vectors */          \
            fwd_pair_##sfx(16, L, T, u + pair * L, delta + pair * L, A + id * n, args_B, args_C, y + pair * L, \
                           last + pair * n, ckpt + pair * nck * n);                                          \
        else                                                                                                 \
            fwd_pair_##sfx(n, L, T, u + pair * L, delta + pair * L, A + id * n, args_B, args_C, y + pair * L, \
                           last + pair * n, ckpt + pair * nck * n);                                          \
    }                                                                                                        \
}                                                                                                            \
                                                                                                             \
/* One (batch, channel) pair backward, from the end: ut, dt, dyt, dut, ddt (L); a_row, gh (in: dlast), gA (n); \
 * Bt, Ct, dBt, dCt (L, n) of its batch element (dBt, dCt accumulated); ck (ceil(L / T), n); hs ((T + 1) n),  \
 * decay (T n), t_du, t_da (n) scratch. */                                                                   \
INLINE void bwd_pair_##sfx(long n, long L, long T, const real *ut, const real *dt, const real *a_row,         \
                           const real *Bt, const real *Ct, const real *ck, const real *dyt, real *gh,        \
                           double *gA, real *dut, real *ddt, real *dBt, real *dCt, real *hs, real *decay,    \
                           real *t_du, real *t_da)                                                           \
{                                                                                                            \
    long nck = (L + T - 1) / T, c, j, k;                                                                     \
    for (c = nck - 1; c >= 0; c--) {                                                                         \
        long start = c * T, len = (L - start < T) ? L - start : T;                                           \
        /* hs[j] = the state before step start + j, decay[j] = exp(delta A) of that step */                  \
        for (k = 0; k < n; k++) hs[k] = ck[c * n + k];                                                       \
        for (j = 0; j < len; j++) {                                                                          \
            const real *Bk = Bt + (start + j) * n;                                                           \
            real dl = dt[start + j], dlu = dl * ut[start + j];                                               \
            for (k = 0; k < n; k++) {                                                                        \
                real a = EXP(dl * a_row[k]);                                                                 \
                decay[j * n + k] = a;                                                                        \
                hs[(j + 1) * n + k] = a * hs[j * n + k] + dlu * Bk[k];                                       \
            }                                                                                                \
        }                                                                                                    \
        for (j = len - 1; j >= 0; j--) {                                                                     \
            long t = start + j;                                                                              \
            const real *Bk = Bt + t * n, *Ck = Ct + t * n, *hprev = hs + j * n, *hnow = hs + (j + 1) * n;     \
            const real *ak = decay + j * n;                                                                  \
            real *dBk = dBt + t * n, *dCk = dCt + t * n;                                                     \
            real dl = dt[t], uu = ut[t], g = dyt[t];                                                         \
            for (k = 0; k < n; k++) {                                                                        \
                real ghk = gh[k] + g * Ck[k];          /* dL/dh_t */                                         \
                real g_a = ghk * hprev[k] * ak[k];     /* dL/d(delta_t A) */                                 \
                dCk[k] += g * hnow[k];                                                                       \
                dBk[k] += ghk * dl * uu;                                                                     \
                t_du[k] = ghk * Bk[k];                 /* sums to dL/d(delta_t u_t) */                       \
                t_da[k] = g_a * a_row[k];                                                                    \
                gA[k] += (double)(g_a * dl);                                                                 \
                gh[k] = ghk * ak[k];                   /* dL/dh_{t-1} through the decay */                   \
            }                                                                                                \
            real g_du = sum_##sfx(t_du, n);                                                                  \
            dut[t] = g_du * dl;                                                                              \
            ddt[t] = g_du * uu + sum_##sfx(t_da, n);                                                         \
        }                                                                                                    \
    }                                                                                                        \
}                                                                                                            \
                                                                                                             \
/* dy (b, d, L), dlast (b, d, n) -> du, ddelta (b, d, L); dA_b (b, d, n), dA summed over t per batch element  \
 * (the caller sums over b: fixed order, so results do not depend on the thread count); dBt, dCt (b, L, n)   \
 * summed over d. One thread per batch element: it alone writes dBt[ib], dCt[ib], dA_b[ib]. Returns 0, or -1 \
 * when out of memory. */                                                                                    \
CLONES int scan_bwd_##sfx(long b, long d, long n, long L, const real *u, const real *delta, const real *A,    \
                          const real *Bt, const real *Ct, const real *ckpt, long T, const real *dy,          \
                          const real *dlast, real *du, real *ddelta, real *dA_b, real *dBt, real *dCt,       \
                          int nthreads)                                                                      \
{                                                                                                            \
    long nck = (L + T - 1) / T, ib;                                                                          \
    int failed = 0;                                                                                          \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                                      \
    for (ib = 0; ib < b; ib++) {                                                                             \
        real *hs = malloc(sizeof(real) * (size_t)((2 * T + 4) * n));                                         \
        double *gA = malloc(sizeof(double) * (size_t)n);                                                     \
        long id, k;                                                                                          \
        if (!hs || !gA) {                                                                                    \
            _Pragma("omp atomic write")                                                                      \
            failed = 1;                                                                                      \
            free(hs); free(gA);                                                                              \
            continue;                                                                                        \
        }                                                                                                    \
        real *decay = hs + (T + 1) * n, *gh = decay + T * n, *t_du = gh + n, *t_da = t_du + n;               \
        real *dB = dBt + ib * L * n, *dC = dCt + ib * L * n;                                                 \
        const real *Bb = Bt + ib * L * n, *Cb = Ct + ib * L * n;                                             \
        for (k = 0; k < L * n; k++) dB[k] = dC[k] = 0;                                                       \
        for (id = 0; id < d; id++) {                                                                         \
            long pair = ib * d + id, o = pair * L;                                                           \
            for (k = 0; k < n; k++) { gh[k] = dlast[pair * n + k]; gA[k] = 0; }                              \
            if (n == 16)                                                                                     \
                bwd_pair_##sfx(16, L, T, u + o, delta + o, A + id * n, Bb, Cb, ckpt + pair * nck * n, dy + o,  \
                               gh, gA, du + o, ddelta + o, dB, dC, hs, decay, t_du, t_da);                   \
            else                                                                                             \
                bwd_pair_##sfx(n, L, T, u + o, delta + o, A + id * n, Bb, Cb, ckpt + pair * nck * n, dy + o,   \
                               gh, gA, du + o, ddelta + o, dB, dC, hs, decay, t_du, t_da);                   \
            for (k = 0; k < n; k++) dA_b[pair * n + k] = (real)gA[k];                                        \
        }                                                                                                    \
        free(hs); free(gA);                                                                                  \
    }                                                                                                        \
    return failed ? -1 : 0;                                                                                  \
}

DEFINE_SCAN(float, f32, exp_vec)
DEFINE_SCAN(double, f64, exp)
