/* Sliced waits without the GIL (see wait.h). */
#include "wait.h"

#include <errno.h>

int wait_sliced(rr_chan *ch, const int *closing, int64_t deadline, wait_call call, void *arg)
{
    for (;;) {
        int64_t now = rr_now_ns();
        int64_t dl = deadline - now > WAIT_SLICE_NS ? now + WAIT_SLICE_NS : deadline;
        int rc;
        Py_BEGIN_ALLOW_THREADS rc = call(ch, dl, arg);
        Py_END_ALLOW_THREADS
        if (closing && *closing && rc == -ECANCELED)
            return RC_CLOSED;
        if (rc != -EINTR && !(rc == -EAGAIN && dl < deadline))
            return rc;
        if (PyErr_CheckSignals() < 0)
            return -EINTR;
        if (closing && *closing)
            return RC_CLOSED;
    }
}

int wait_spun(rr_chan *ch, const int *closing, gil_spin *gs, int64_t deadline, wait_hint hint,
              wait_call call, void *arg)
{
    if (gs && gs->skip) {
        gs->skip--;
    } else if (gs && deadline != RR_NOWAIT && rr_spin_advised(ch)) {
        /* within the spin budget and the deadline, as the core's spin */
        int64_t now = rr_now_ns(), budget = (int64_t)rr_get_spin(ch) * 1000;
        int64_t until = now + (budget < GIL_SPIN_NS ? budget : GIL_SPIN_NS);
        if (until > deadline)
            until = deadline;
        for (unsigned i = 1;; i++) {
            if (hint(ch, arg)) {
                int rc = call(ch, RR_TRY, arg);
                if (rc != -EAGAIN && rc != -EINPROGRESS && rc != -EINTR) {
                    gs->backoff = 0;
                    return rc == -ECANCELED && closing && *closing ? RC_CLOSED : rc;
                }
            }
            rr_cpu_relax();
            if ((i & 15) == 0 && rr_now_ns() >= until)
                break;
        }
        gs->backoff = gs->backoff ? gs->backoff * 2 : 1;
        if (gs->backoff > GIL_SPIN_MAX_SKIP)
            gs->backoff = GIL_SPIN_MAX_SKIP;
        gs->skip = gs->backoff;
    }
    return wait_sliced(ch, closing, deadline, call, arg);
}

static int lock_settle(rr_chan *ch, int64_t deadline, void *unused)
{
    return rr_lock_settle(ch, deadline);
}

int wait_lock_busy(rr_chan *ch, const int *closing, int64_t deadline, wait_call call, void *arg,
                   int gil_free)
{
    for (;;) {
        int64_t limit = deadline == RR_NOWAIT ? rr_now_ns() + LOCK_GRACE_NS : deadline;
        int rc = wait_sliced(ch, closing, limit, lock_settle, NULL);
        if (rc < 0)
            return rc == -EAGAIN ? -ETIMEDOUT : rc;
        if (gil_free) {
            Py_BEGIN_ALLOW_THREADS rc = call(ch, RR_TRY, arg);
            Py_END_ALLOW_THREADS
        } else {
            rc = call(ch, RR_TRY, arg);
        }
        if (rc != -EBUSY)
            return rc;
    }
}
