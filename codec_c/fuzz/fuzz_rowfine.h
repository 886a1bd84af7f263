/* fuzz_rowfine.h - the fuzz targets' check of a ROWFINE value (FORMAT.md
 * §8.1), written from the format text, not from the decoder. */
#ifndef FC_FUZZ_ROWFINE_H
#define FC_FUZZ_ROWFINE_H

#include <stdint.h>
#include <string.h>

/* Whether `got` is a ROWFINE row's value of level l (uniform tensors only):
 * (|l| + (f - 8) / 16) * step for some f in 0 .. 15, with l's sign. */
static int rowfine_value_ok(int32_t l, float got, float step)
{
    int64_t a = l < 0 ? -(int64_t)l : (int64_t)l, f;
    for (f = 0; l && f < 16; f++) {
        float m = (float)((double)(a * 16 + f - 8) * (double)step * 0.0625);
        if (memcmp(l < 0 ? &(float){-m} : &m, &got, 4) == 0) return 1;
    }
    return 0;
}

#endif /* FC_FUZZ_ROWFINE_H */
