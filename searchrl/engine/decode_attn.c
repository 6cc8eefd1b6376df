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

/* exp(x) for x <= 0 (scores minus their max), written so the compiler can vectorise
 * it: Cephes' expf (range reduction by ln 2, degree-6 polynomial, about 1 ulp).
 * Below -87.3 it returns ~1e-38 instead of underflowing (negligible next to the
 * max term, which is exactly 1). */
static inline float exp_nonpos(float x)
{
    x = x < -87.3f ? -87.3f : x; /* NaN stays NaN (and comes out NaN, as in SDPA) */
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
    const float nc = n >= -126.0f ? n : -126.0f; /* in [-126, 0] even for NaN: no UB below */
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
            const float e = exp_nonpos(w[t] - m);
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
