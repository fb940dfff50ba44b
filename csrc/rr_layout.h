/* Layout: where a geometry puts each region of the file, and whether a
 * header read from a file is exactly what its own geometry implies.
 *
 * Errors as in reqrep.h. uses: rr_format.h */
#ifndef RR_LAYOUT_H
#define RR_LAYOUT_H

#include "rr_format.h"

/* Fails with `code` and its reason (printf-style) in err, if err is not
 * NULL (err->unready cleared): `return rr_fail(err, -EINVAL, "...")`. */
int rr_fail(rr_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The header a normalised geometry lays out (offsets, stride, total size):
 * 0, or -EFBIG beyond RR_MAX_TOTAL. A pure function. */
int rr_layout_compute(const rr_geometry *g, rr_hdr_geom *out);
/* 0 if h is a published header (magic, version) of variant `variant` (0:
 * either) whose every field is what its geometry implies and whose file is
 * `file_size` bytes; else -RR_EFORMAT with the reason in err. h must be the
 * caller's private copy. */
int rr_layout_validate(const rr_hdr_geom *h, uint64_t file_size, uint32_t variant,
                       rr_error *err);

#endif
