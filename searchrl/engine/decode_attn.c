/* One decode step of attention over a static KV cache, each row to its own length.
 *
 * Built on first use by searchrl/engine/kernels.py (cc -O3 -march=native
 * -fopenmp) and called through ctypes; see that module for why it exists.
 *
 * Shapes (float32, C-contiguous):
 *   q     [rows, kv, G, d]   the G query heads that share KV head h are q[r, h, :, :]
 *   kc,vc [cache_rows, kv, S, d]
 *   pos   [rows] int64       row r attends to cache positions 0..pos[r] (inclusive)
 *   out   [rows, kv, G, d]
 * Rows 0..rows-1 of q/pos/out are computed, on `threads` OpenMP threads.
 *
 * Per (row, kv head) it is the textbook softmax(scale * q.K^T) V over exactly
 * pos[r] + 1 keys: K and V are each read once for all G query heads, and the
 * masked tail of the cache is never touched.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp(x), written so the compiler can vectorise it: Cephes' expf (range reduction by ln 2,
 * degree-6 polynomial, about 1 ulp). Inputs are clamped to [-87.3, 88.3]: below, it returns
 * ~1e-38 instead of underflowing (attention's scores minus their max: negligible next to the max
 * term, which is exactly 1); NaN stays NaN (and comes out NaN, as in SDPA). */
static inline float exp_any(float x)
{
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    float nc = n >= -126.0f ? n : -126.0f; /* in [-126, 127] even for NaN: no UB below */
    nc = nc <= 127.0f ? nc : 127.0f;
    uint32_t bits = (uint32_t)((int32_t)nc + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* One (row, kv head): softmax(scale * Q K[:T]^T) V[:T] for the G query rows of Q.
 * Inlined with a constant d for the common head sizes, so the dot products are
 * unrolled and the output accumulator lives in registers. K and V of one head
 * (T * d floats each) stay in L2 between the G query heads. */
static inline __attribute__((always_inline)) void head(const float *restrict Q, const float *restrict K,
                                                       const float *restrict V, float *restrict O, int64_t T,
                                                       int64_t G, const int64_t d, float scale,
                                                       float *restrict w)
{
    for (int64_t g = 0; g < G; g++) {
        const float *qg = Q + g * d;
        /* scores w[t] = scale * <q_g, k_t>, and their max */
        float m = -3.4e38f;
        for (int64_t t = 0; t < T; t++) {
            const float *k = K + t * d;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < d; j++)
                s += qg[j] * k[j];
            s *= scale;
            w[t] = s;
            m = s > m ? s : m;
        }
        /* unnormalised softmax weights and their sum */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t t = 0; t < T; t++) {
            const float e = exp_any(w[t] - m);
            w[t] = e;
            sum += e;
        }
        /* out_g = (sum_t w[t] v_t) / sum */
        float acc[d];
        for (int64_t j = 0; j < d; j++)
            acc[j] = 0.0f;
        for (int64_t t = 0; t < T; t++) {
            const float p = w[t];
            const float *v = V + t * d;
#pragma omp simd
            for (int64_t j = 0; j < d; j++)
                acc[j] += p * v[j];
        }
        const float inv = 1.0f / sum;
        float *o = O + g * d;
        for (int64_t j = 0; j < d; j++)
            o[j] = acc[j] * inv;
    }
}

int decode_attn(const float *q, const float *kc, const float *vc, const int64_t *pos, float *out, int64_t rows,
                int64_t kv, int64_t G, int64_t S, int64_t d, float scale, int threads)
{
    /* (row, kv head) pairs are independent; their cost grows with pos[row], so they
     * are handed out dynamically. Built with -fopenmp this runs on the OpenMP runtime
     * torch has already loaded (same soname), i.e. on torch's own thread pool.
     * Returns 0, or 1 if a thread could not allocate its scratch (out is then invalid). */
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *work = (float *)malloc((size_t)S * sizeof(float));
        if (work == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < rows * kv; i++) {
            const int64_t r = i / kv, T = pos[r] + 1;
            const int64_t c = i * S * d, o = i * G * d;
            if (work == NULL)
                continue;
            switch (d) {
            case 32: head(q + o, kc + c, vc + c, out + o, T, G, 32, scale, work); break;
            case 64: head(q + o, kc + c, vc + c, out + o, T, G, 64, scale, work); break;
            case 128: head(q + o, kc + c, vc + c, out + o, T, G, 128, scale, work); break;
            default: head(q + o, kc + c, vc + c, out + o, T, G, d, scale, work);
            }
        }
        free(work);
    }
    return failed;
}

/* ------------------------------------------------------------------------------------------
 * The rest of a decode step's small operations, fused (one call each instead of several torch
 * ops, whose per-op dispatch and thread-pool start cost more than their arithmetic at these
 * sizes). Each matches the Hugging Face Llama op it replaces up to float32 rounding.
 * ------------------------------------------------------------------------------------------ */

/* LlamaRMSNorm over rows of x [n, h]: out = w * (x / sqrt(mean(x^2) + eps)).
 * With resid != NULL, first x += resid (the residual add of the block before), in place. */
void rms_norm(float *restrict x, const float *restrict resid, const float *restrict w, float *restrict out, int64_t n,
              int64_t h, float eps)
{
    for (int64_t r = 0; r < n; r++) {
        float *xr = x + r * h;
        if (resid != NULL) {
            const float *rr = resid + r * h;
#pragma omp simd
            for (int64_t j = 0; j < h; j++)
                xr[j] += rr[j];
        }
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < h; j++)
            ss += xr[j] * xr[j];
        const float inv = 1.0f / __builtin_sqrtf(ss / (float)h + eps);
        float *o = out + r * h;
#pragma omp simd
        for (int64_t j = 0; j < h; j++)
            o[j] = w[j] * (xr[j] * inv);
    }
}

/* out[r, j] = silu(gu[r, j]) * gu[r, m + j] for j < m (gate and up side by side, [n, 2m]). */
void silu_mul(const float *restrict gu, float *restrict out, int64_t n, int64_t m, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static) if (n * m >= 8192)
    for (int64_t r = 0; r < n; r++) {
        const float *g = gu + r * 2 * m, *u = g + m;
        float *o = out + r * m;
#pragma omp simd
        for (int64_t j = 0; j < m; j++)
            o[j] = g[j] / (1.0f + exp_any(-g[j])) * u[j];
    }
}

/* x[j] <- x[j] cos[j] + rotate_half(x)[j] sin[j], rotate_half(x) = (-x[d/2:], x[:d/2]). */
static inline void rope(float *restrict x, const float *restrict c, const float *restrict s, int64_t d)
{
    const int64_t half = d / 2;
    float tmp[1024];
    for (int64_t j = 0; j < half; j++) {
        tmp[j] = x[j] * c[j] - x[j + half] * s[j];
        tmp[j + half] = x[j + half] * c[j + half] + x[j] * s[j + half];
    }
    memcpy(x, tmp, (size_t)d * sizeof(float));
}

/* One decode step's attention block after the q/k/v projection, for rows 0..n-1:
 *   qkv  [n, nh + 2 nkv, d]   the fused projection's output (q heads, k heads, v heads); q and k
 *                             are rotated in place
 *   cos, sin [*, d]           rotary tables; row r uses position pos[r]
 *   kc, vc [rows, nkv, S, d]  the layer's cache; k and v of row r are written at pos[r]
 *   out  [n, nh, d]           softmax(scale q K^T) V over positions 0..pos[r], query head h reading
 *                             KV head h / G (Hugging Face's repeat_interleave order)
 * Returns 0, or 1 if a thread could not allocate its scratch (out is then invalid). */
int rope_attn(float *qkv, const float *cos, const float *sin, float *kc, float *vc, const int64_t *pos, float *out,
              int64_t n, int64_t nh, int64_t nkv, int64_t d, int64_t S, float scale, int threads)
{
    const int64_t G = nh / nkv, stride = (nh + 2 * nkv) * d;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n; r++) {
            float *row = qkv + r * stride;
            const float *c = cos + pos[r] * d, *s = sin + pos[r] * d;
            for (int64_t h = 0; h < nh + nkv; h++)
                rope(row + h * d, c, s, d);
            for (int64_t h = 0; h < nkv; h++) {
                const int64_t slot = ((r * nkv + h) * S + pos[r]) * d;
                memcpy(kc + slot, row + (nh + h) * d, (size_t)d * sizeof(float));
                memcpy(vc + slot, row + (nh + nkv + h) * d, (size_t)d * sizeof(float));
            }
        }
        /* implicit barrier: every row's new key and value is in the cache */
        float *work = (float *)malloc((size_t)S * sizeof(float));
        if (work == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t i = 0; i < n * nkv; i++) {
            const int64_t r = i / nkv, h = i % nkv, T = pos[r] + 1;
            const int64_t c = i * S * d;
            const float *q = qkv + r * stride + h * G * d;
            float *o = out + (r * nh + h * G) * d;
            if (work == NULL)
                continue;
            switch (d) {
            case 32: head(q, kc + c, vc + c, o, T, G, 32, scale, work); break;
            case 64: head(q, kc + c, vc + c, o, T, G, 64, scale, work); break;
            case 128: head(q, kc + c, vc + c, o, T, G, 128, scale, work); break;
            default: head(q, kc + c, vc + c, o, T, G, d, scale, work);
            }
        }
        free(work);
    }
    return failed;
}
