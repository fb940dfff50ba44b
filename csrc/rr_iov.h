/* Payloads in pieces (rr_iovec, reqrep.h): their total length, and their
 * gathering into one place by a single copy of each piece. Private memory in,
 * shared memory out: the caller owns what it writes to (a cell or the arena
 * under the Str lock, a slot it claimed).
 *
 * uses: reqrep.h */
#ifndef RR_IOV_H
#define RR_IOV_H

#include "reqrep.h"

#include <stdint.h>
#include <string.h>

/* The sum of the pieces' lengths, or SIZE_MAX if it overflows. */
static inline size_t rr_iov_len(const rr_iovec *iov, uint32_t n)
{
    size_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (iov[i].len > SIZE_MAX - sum)
            return SIZE_MAX;
        sum += iov[i].len;
    }
    return sum;
}

/* Copies the pieces one after the other to dst. */
static inline void rr_iov_gather(uint8_t *dst, const rr_iovec *iov, uint32_t n)
{
    if (n == 1 && iov->len) { /* the common case: one payload */
        memcpy(dst, iov->base, iov->len);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (iov[i].len) /* memcpy's pointers must be valid even for 0 bytes */
            memcpy(dst, iov[i].base, iov[i].len);
        dst += iov[i].len;
    }
}

#endif
