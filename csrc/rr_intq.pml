/* Promela model of the Int request queue of csrc/rr_intq.c (a bounded MPMC
 * ring after Vyukov's whose cells' turn words hold lap, state and who),
 * checked with spin by csrc/tests/spin.sh.
 *
 *   turn = lap << 32 | state << 30 | who      (here: lap * 32 + state * 8 + who)
 *   FREE(L) --claim--> CLAIMED(L, producer) --publish--> FULL(L)
 *   FULL(L) --take--> TAKEN(L, consumer) --release--> FREE(L + 1)
 *
 * Modelled as the C code does it: push_attempt (claim CAS, advance tail, store
 * the entry, publish CAS; a tail found behind is advanced by whoever finds
 * it), head_entry and pop_attempt (take CAS, read the entry, record the taker
 * in the request's slot, release the cell by a store, advance head), and the
 * repair of a cell whose claimer or taker is dead (claim_stalled, repair): a
 * dead producer's claim is skipped, a dead consumer's take is recorded as its
 * in the request's slot and the cell released.
 *
 * The stall check. claim_stalled() asks rr_process_alive() after the cell has
 * stayed the same for RR_CLAIM_STALL_NS. The time part does not matter to
 * safety, so "the stall timer expired" is a step that may happen at any
 * time, but only when the process named in the cell is dead: that is what
 * rr_process_alive() answers. A SIGSTOPped claimer or taker is alive (state 'T'
 * is not 'Z'/'X'), so it is never repaired: consumers get "somebody is inside
 * an operation at the head" (RR_AGAIN_SOON / -EINPROGRESS) until it resumes,
 * a stall of the whole queue while it is stopped, but nothing unsafe. With
 * -DMISJUDGE the check may also say "dead" for a live process (e.g. one in
 * another PID namespace: kill() says ESRCH); spin then shows that a live
 * claimer's late stores land in the cell's next lap (see csrc/tests/README.md).
 *
 * Death: before every step on shared memory (DO) a process may be SIGKILLed,
 * at most MAXDEATH times per run; dead[] is what the liveness check reads. A
 * process blocked in a wait is not killed while it sleeps. A wait ("full",
 * "empty", "somebody inside") blocks until a word it looked at changes, or
 * until the process named in the cell dies: the C code's polls and wake-ups
 * would only repeat the same look. Memory ordering is not modelled (the C code
 * pairs release/acquire on every turn change; the model is sequentially
 * consistent); laps and positions do not wrap.
 *
 * Requests are numbered 1..NREQ1+NREQ2 (the entry's value and id in one); the
 * slot's worker record of a request is rec[r].
 * Properties:
 *  - a request is delivered at most once, and only if it was published;
 *  - a published request is, at the end (after a final drain by a live
 *    consumer), delivered exactly once, or taken by a consumer that died and
 *    that is recorded as its taker (its client then learns it died);
 *  - a record names the consumer that really took the request;
 *  - no jam: nobody blocks for good (spin's invalid end states), and the
 *    final drain ends.
 *
 * Switches (spin -DNAME):
 *  C_REPAIR        repair() as in rr_intq.c today: reads the cell's id and
 *                  records the dead taker without checking that the cell still
 *                  holds that take (another consumer may have repaired it and
 *                  a producer refilled it): the record lands on another
 *                  request. The default re-checks the turn after the read.
 *  MUT_TAKE_STORE  take by a plain store instead of a CAS
 *  MUT_RECORD_LATE the taker records itself after releasing the cell
 *  MUT_NO_TAIL_HELP producers do not advance a tail left behind a claimed cell
 *  MISJUDGE        the liveness check may call a live process dead
 *  NCELL, NREQ1, NREQ2, MAXDEATH: the scope.
 */

#ifndef NCELL
#define NCELL 2
#endif
#ifndef NREQ1
#define NREQ1 2     /* requests of producer 1 */
#endif
#ifndef NREQ2
#define NREQ2 1     /* requests of producer 2 */
#endif
#ifndef MAXDEATH
#define MAXDEATH 2
#endif

#define NPROD 2
#define NCONS 2
#define P1 1
#define P2 2
#define K1 3
#define K2 4
#define DRAIN 5     /* the final drain (never dies) */
#define NR (NREQ1 + NREQ2 + 1)

#define TFREE 0
#define TCLAIMED 1
#define TFULL 2
#define TTAKEN 3

#define MKT(l, s, w) ((l) * 32 + (s) * 8 + (w))
#define LAP(t) ((t) / 32)
#define TST(t) (((t) / 8) % 4)
#define WHO(t) ((t) % 8)

short turn[NCELL];
byte val[NCELL];  /* the entry: value and id */
short head = 0;
short tail = 0;

bit dead[DRAIN + 1];
byte deaths = 0;
byte fin = 0;     /* processes done or dead */
byte pfin = 0;    /* producers done or dead */
byte kdead = 0;   /* consumers dead */

/* ghosts, per request */
bit published[NR];
byte delivered[NR];
byte takenby[NR];  /* the consumer whose take CAS got it */
byte rec[NR];      /* its slot's worker record */
bit ring_broken;   /* a cell found behind tail or head: not a valid ring */

#define CANDIE (deaths < MAXDEATH && me != DRAIN)
#define DIE \
    atomic { CANDIE -> deaths++; dead[me] = 1; fin++; \
             if :: me == P1 || me == P2 -> pfin++ \
                :: me == K1 || me == K2 -> kdead++ \
                :: else fi }; \
    goto died
/* one step on shared memory, unless SIGKILL comes first ("true;": an `else`
 * in an `if` opening an option would count DIE as an alternative) */
#define DO(...) if :: DIE :: atomic { true; __VA_ARGS__ } fi
#define MAYDIE if :: DIE :: true fi

#define CAS(var, exp, new, okv) \
    if :: var == (exp) -> var = (new); okv = 1 :: else -> okv = 0 fi

/* advance(): a position counter from p to p + 1 unless somebody did */
#define ADVANCE(ctr, p) DO(if :: ctr == (p) -> ctr = (p) + 1 :: else fi)

#ifdef MISJUDGE
#define STALLED(t) (dead[WHO(t)] || true)
#else
#define STALLED(t) (dead[WHO(t)])
#endif

/* ---------------------------------------------------------------- producer */

proctype Producer(byte me; byte first; byte nreq)
{
    byte k = 0;
    byte r;
    short pos, t, lap, ahead;
    bit ok;

    do
    :: k < nreq ->
        r = first + k;
        k++;
        /* push_attempt, repeated (the send in rr_chan.c waits and tries again) */
        DO(pos = tail);
look:
        DO(t = turn[pos % NCELL]);
        lap = pos / NCELL;
        ahead = LAP(t) - lap;
        if
        :: t == MKT(lap, TFREE, 0) ->
            /* the claim */
            DO(CAS(turn[pos % NCELL], t, MKT(lap, TCLAIMED, me), ok));
            if
            :: !ok -> goto look
            :: else
            fi;
            ADVANCE(tail, pos);
            DO(val[pos % NCELL] = r);
            /* publish: a CAS, a revoked claim is not overwritten */
            DO(if
               :: turn[pos % NCELL] == MKT(lap, TCLAIMED, me) ->
                   turn[pos % NCELL] = MKT(lap, TFULL, 0); published[r] = 1; ok = 1
               :: else -> ok = 0
               fi);
            if
            :: ok -> goto sent
            :: else -> DO(pos = tail); goto look /* revoked: go again */
            fi
        :: (ahead == 0 && TST(t) != TFREE) || ahead >= 1 ->
            /* taken at this lap, or done with: tail is behind */
#ifdef MUT_NO_TAIL_HELP
            MAYDIE;
            (tail != pos || turn[pos % NCELL] != t)
#else
            ADVANCE(tail, pos)
#endif
        :: ahead == -1 && TST(t) != TFREE ->
            /* full: wait for the cell or tail to move; or, every consumer
             * dead, the sender's deadline ends it (the request is not sent) */
            MAYDIE;
            if
            :: (tail != pos || turn[pos % NCELL] != t) -> skip
            :: kdead == NCONS -> goto sent
            fi
        :: else -> ring_broken = 1; assert(!ring_broken) /* a cell behind tail */
        fi;
        DO(pos = tail);
        goto look;
sent:
        skip;
        d_step { r = 0; pos = 0; t = 0; lap = 0; ahead = 0; ok = 0 }
    :: else -> break
    od;
    atomic { fin++; pfin++ };
    goto end;
died:
    skip;
end:
    skip
}

/* ---------------------------------------------------------------- consumer */

/* repair(): frees a cell whose claim or take t belongs to a dead process; a
 * dead consumer's take is recorded as its in the request's slot */
inline repair() {
    if
    :: TST(t) == TTAKEN ->
        DO(r = val[pos % NCELL]);
#ifndef C_REPAIR
        /* the fix: the id read is the take's only if the cell still holds it */
        DO(ok = (turn[pos % NCELL] == t));
#else
        ok = 1;
#endif
        if
        :: ok ->
            DO(assert(takenby[r] == WHO(t)); /* the record names the real taker */
               rec[r] = WHO(t))
        :: else
        fi
    :: else
    fi;
    DO(if
       :: turn[pos % NCELL] == t -> turn[pos % NCELL] = MKT(lap + 1, TFREE, 0)
       :: else
       fi)
}

/* Takes requests until the ring is empty and every producer is done or dead
 * (drain: once, at the end, by a live consumer). */
proctype Consumer(byte me)
{
    byte r;
    short pos, t, lap, ahead;
    bit ok;

top:
    /* head_entry */
    DO(pos = head);
look:
    DO(t = turn[pos % NCELL]);
    lap = pos / NCELL;
    ahead = LAP(t) - lap;
    if
    :: ahead == 0 && TST(t) == TFULL ->
        /* pop_attempt: the take */
#ifdef MUT_TAKE_STORE
        DO(turn[pos % NCELL] = MKT(lap, TTAKEN, me); takenby[val[pos % NCELL]] = me; ok = 1);
#else
        DO(if
           :: turn[pos % NCELL] == t ->
               turn[pos % NCELL] = MKT(lap, TTAKEN, me); takenby[val[pos % NCELL]] = me; ok = 1
           :: else -> ok = 0
           fi);
#endif
        if
        :: !ok -> goto top
        :: else
        fi;
        DO(r = val[pos % NCELL]);
#ifndef MUT_RECORD_LATE
        /* record ourselves before the request leaves the ring */
        DO(assert(takenby[r] == me); rec[r] = me);
#endif
        DO(turn[pos % NCELL] = MKT(lap + 1, TFREE, 0)); /* release: a store */
#ifdef MUT_RECORD_LATE
        DO(assert(takenby[r] == me); rec[r] = me);
#endif
        ADVANCE(head, pos);
        d_step {
            assert(published[r]);     /* never an entry that was not sent */
            assert(delivered[r] == 0); /* never twice */
            delivered[r]++
        };
        d_step { r = 0; pos = 0; t = 0; lap = 0; ahead = 0; ok = 0 };
        goto top
    :: ahead == 0 && TST(t) == TFREE ->
        /* empty */
        MAYDIE;
        if
        :: (head != pos || turn[pos % NCELL] != t) -> goto top
        :: pfin == NPROD -> goto done
        fi
    :: ahead == 0 && (TST(t) == TCLAIMED || TST(t) == TTAKEN) ->
        /* somebody inside an operation here: repair if it is dead, else
         * look again once something moved */
        MAYDIE;
        if
        :: STALLED(t) -> repair(); goto look
        :: (head != pos || turn[pos % NCELL] != t) -> goto top
        fi
    :: ahead >= 1 -> ADVANCE(head, pos); DO(pos = head); goto look
    :: ahead < 0 -> ring_broken = 1; assert(!ring_broken) /* a cell behind head */
    fi;
done:
    atomic { fin++ };
    goto end;
died:
    skip;
end:
    skip
}

init {
    byte i;

    atomic {
        run Producer(P1, 1, NREQ1);
        run Producer(P2, 1 + NREQ1, NREQ2);
        run Consumer(K1);
        run Consumer(K2)
    };
    fin == NPROD + NCONS;
    /* a live consumer drains what is left */
    run Consumer(DRAIN);
    fin == NPROD + NCONS + 1;
    i = 1;
    do
    :: i < NR ->
        assert(!published[i] || delivered[i] == 1
               || (takenby[i] != 0 && dead[takenby[i]] && rec[i] == takenby[i]));
        i++
    :: else -> break
    od
}
