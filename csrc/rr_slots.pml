/* Promela model of the response-slot protocol of csrc/rr_slots.c (since format 4:
 * states FREE, ACQUIRED, WRITING, READY, READING, CANCELLED, PINNED; an owner
 * word; a worker record naming the taker or the writer of a request). Checked with
 * spin by csrc/tests/spin.sh. Step names ("S4 claim") follow the numbered
 * transitions of the protocol's description.
 *
 * Scope: one slot (every race is on one slot; acquire's scan of the others
 * repeats the same steps), one or two clients, one or two workers (two hand
 * ids to each other, so a request can have two repliers), one server process
 * that sweeps or clears, a stranger reading client 1's reply (READER), and a
 * final recovery pass. The request queue is the Str one: a taker records
 * itself under the queue lock, then pops; the lock of a dead holder is taken
 * over. Each client sweeps once when it finds no free slot
 * (acquire_or_sweep).
 *
 * Replies written in place (rr_str_reply_begin/commit/abort in rr_chan.c;
 * rr_slot_claim_keeping, rr_slot_claimed, rr_slot_publish, rr_slot_unclaim
 * in rr_slots.c): a claimant writes the slot, then commits (S5, S6) or gives
 * the claim back unpublished (S14: WRITING -> ACQUIRED, then the record from
 * "writing, me" back to what the claim replaced), after which the request
 * is pending again and that replier or another claims it again. Up to
 * MAXABORT aborts per run; the aborter then claims again itself. Every reply
 * attempt ends with a stray second commit (S15), which must be refused.
 *
 * Death: before every step on shared memory (DO) a process may be SIGKILLed,
 * at most MAXDEATH times per run. A dead process stops; dead[] is what the
 * liveness checks read. A process that is done stays alive (idle). A process
 * blocked in a wait is not killed while it sleeps (dying just before the wait
 * is the same to the others), which keeps spin's deadlock check meaningful:
 * a process blocked for good is an invalid end state.
 *
 * Not modelled: futex wake-ups (a wait is a guard on the shared words, i.e. a
 * perfect wake-up; the C code also polls), memory ordering (every CAS here is
 * one the C code makes acq_rel or pairs, and so are the record's CASes of a
 * claim (acquire) and of S14 (release): -DMUT_UNCLAIM_ORDER shows what others
 * could see with a relaxed one; the model is sequentially consistent), the
 * wrap of generations (they only grow here: a few rounds),
 * the record's generation modulo 2^23, a second look at a pinned id by the
 * owner (cancel, check, view find it collected by a load that changes
 * nothing), a pin by another process (refused: -EPERM; with two clients the
 * scope is 60M+ states), and a second reader beside pins (READER and PINS
 * are not combined).
 *
 * A second reader (READER=1; scope `reader`), S18 and S19: a stranger
 * (another process, or another thread of client 1, that holds client 1's id)
 * may view its reply at any moment: S8's CAS READY(g) -> READING(g), or S18
 * a second look (rr_slot_view's CAS fails on READING(g): shown all the
 * same); it reads, then releases (free_id from READING(g), else from
 * READY(g)) or unviews (READING(g) -> READY(g)), or dies (or stops for good:
 * the same to the others, who never judge it) before any step. The client's
 * view takes READING(g) as S18 too, and its release is rr_slot_release: one
 * that fails means the other reader's release won (stale; what was read is
 * void). The Int get (GETS) is rr_int_peek: READY(g) -> read, then
 * rr_resp_discard (CAS READY(g) -> FREE(g+1)); READING(g) (-EBUSY) -> the
 * view, S18. (a) is asserted where a reader's release or discard wins (a
 * second look's slot may be freed under it by the other's release).
 *
 * Pins (PINS=1; scope `pins`), S16 and S17: the client may collect its
 * READY(g) reply by rr_slot_pin (load the owner word: not ours -> -EPERM;
 * the model compares the process only, the C code the whole word with its
 * generation tag, which refuses more and so stays within what is checked;
 * CAS READY(g) -> PINNED(g); other failures go back to the wait), read it,
 * then rr_slot_unpin: free (free_id from PINNED(g): load owner, CAS to
 * FREE(g+1), release the owner) or keep (back_to_ready: CAS PINNED(g) ->
 * READY(g), then collect again, by pin, view or get; one give-back per
 * request). A PINNED slot reads as collected (stale) to the waits and
 * abandon_dead; cancel and clear leave it; the sweep judges it by its owner,
 * which is the pinner (only the owner pins): owner dead -> freed, as READY.
 * Death at every step, as elsewhere. (e) below is checked after every step.
 *
 * Where this model departs from the notes. As the notes have it, the owner
 * word loses slots (-DNOTES_OWNER, -DNOTES_SWEEP; the trails are in
 * csrc/tests/README.md). The default here is the protocol with four fixes,
 * which csrc/rr_slots.c must carry for this model to be its model (F3 and F4
 * came with S14: without them the checks fail):
 *  F1 The owner word holds the generation its owner acquires, OWN(identity,
 *     g+1), written before ctl goes FREE(g) -> ACQUIRED(g+1). On FREE(g) an
 *     acquirer may take a word that is 0 or of a generation older than g: the
 *     word of a freed generation whose freer died between its freeing CAS and
 *     its release of the owner (a word of g+1 is an acquire in progress; a
 *     later one means the FREE(g) it saw is old). It CASes that exact word to
 *     OWN(me, g+1), then ctl FREE(g) -> ACQUIRED(g+1) on that same g (no
 *     re-load); on failure it CASes its word back to 0. Releasing the owner
 *     (S12) is unchanged, and now only tidiness.
 *  F2 Sweep, owner judged dead: after loading ctl v it loads the owner word
 *     again and goes on only if it is still the word it judged (while ctl is
 *     not FREE the word is v's acquirer's, and stays so); the CANCELLED
 *     branch for a live owner releases the word loaded after v.
 *  F3 A freer that judged the worker record's process dead (sweep,
 *     abandon_dead) reads the record again after the verdict and frees only
 *     if it is unchanged (STILL, below). S14 makes WRITING(g) -> ACQUIRED(g)
 *     -> WRITING(g) possible: the ctl value it loaded may be another,
 *     live writer's claim by the time of its CAS.
 *  F4 rr_slot_claimed, which commit and abort ask first, also checks that
 *     ctl is still WRITING or CANCELLED of the id (CLAIMED, below): the
 *     record alone outlives the claim, and a second commit wrote a slot that
 *     had been published, freed, or taken by a newer request.
 *  F5 (the binding's Int collect, int_collect in src/reqrep/_reqrep/client.c;
 *     before it said stale, -DOLD_INT_DISCARD) a failed
 *     rr_resp_discard after a peek of READY(g) looks again: another reader
 *     may have viewed the reply between the peek and the discard, and then
 *     die (READING(g)) or give it back (READY(g)); stale, the client drops a
 *     reply nobody collects, and the slot stays out of the pool while the
 *     client lives (scope `reader`: (d)'s stale assert, then (b)).
 *  F6 (rr_slot_release, found by review, then here: -DOLD_RELEASE) a
 *     release frees from READING(g) or READY(g), whichever ctl holds, in one
 *     loop that decides again when the slot moved; two tries, from READING
 *     then from READY, both failed when another reader gave the reply back
 *     (unview) before the first and looked again (view) before the second:
 *     stale, with the reply still there (scope `reader`, the stranger
 *     looking twice: (b)).
 *
 * Properties:
 *  (a) a client copies out only data written for its own generation (assert
 *      in collect; READER: the stranger too, for client 1's), never the
 *      bytes of a reply given back (VOID); a writer
 *      never writes a slot that is at another generation or not claimed
 *      (assert in S5 write and before S14), a stray commit (S15) included;
 *  (b) once every process is done or dead, one recovery pass leaves the slot
 *      FREE and acquirable (assert in init);
 *  (c) every waiting client ends: reply, worker-died error or stale; spin's
 *      invalid-end-state check finds anybody blocked for good (a request
 *      given back, S14, is claimed again and answered; READER: a reply the
 *      stranger left READING, dead, is collected by S18). A client whose
 *      request only dead workers could take would wait for a new worker; in
 *      the model its deadline then ends the wait. So does one whose request
 *      was given back by a process that then died (L1, at the client's
 *      wait): a limit of the protocol, not of the model;
 *  (d) a cancel that returned True never sees a reply published for its
 *      generation; at most one reply is published per generation; a cancel
 *      that returned False because the reply is there is followed by a get
 *      that collects it (or finds it cleared), never "not ready". A live
 *      client that did not cancel finds its request stale only after a clear
 *      (READER: or while or after the stranger's view, released or not: if
 *      it is never released, (b) finds the slot).
 *  (e) (PINS) while a live client holds its pin, ctl stays PINNED(g) and the
 *      reply's bytes stay g's: no sweep, clear, cancel, writer or acquirer
 *      touches it (PIN_INV, asserted after every DO step); a live owner's pin
 *      is refused only for a slot its request left; a dead pinner's slot
 *      comes back by the final sweep ((b)).
 *
 * Switches (spin -DNAME):
 *  OLD_PUBLISH  publish is an unconditional exchange ctl := READY(g)
 *  OLD_RECORD   only the taker is recorded; abandon_dead and sweep free a
 *               WRITING(g) slot whose taker of gen g is dead
 *  OLD_CANCEL   cancel of WRITING(g) says "busy" and changes nothing; the
 *               binding's get then finds no reply and the client forgets it
 *  OLD_SWEEP    sweep loads ctl, then owner, and stores owner := 0 if ctl
 *               was FREE
 *  NOTES_OWNER  the owner word and the sweep exactly as the notes: no F1, F2
 *  NOTES_SWEEP  F1 but not F2: the sweep frees the slot of the owner word it
 *               loaded before ctl, which may be an earlier acquirer's
 *  NO_CLIENT_SWEEP  clients do not sweep when no slot is free
 *  OLD_WRITER_CHECK  no F3: a freer acts on the record it read before its
 *               verdict
 *  OLD_CLAIMED  no F4: commit and abort trust the record alone
 *  MUT_UNCLAIM_ORDER  S14 gives the record back before ctl (what others may
 *               see if the record's CAS were relaxed): a claim that sees the
 *               record given back finds WRITING, fails having recorded itself,
 *               and locks every replier out
 *  STRICT_WAIT  no L1: a client without a deadline must end even then
 *               (fails: the trail of L1)
 *  MUT_SWEEP_PINNED  the sweep frees a PINNED slot whose owner is alive
 *  MUT_CLEAR_PINNED  clear frees a PINNED slot as it does a READY one
 *  OLD_INT_READING  no S18 on the Int get: rr_int_peek says -EAGAIN for
 *               READING(g), as before cb3c5ac ("not there yet"): get after a
 *               cancel that said "there" returns None ((d)), and the wait,
 *               finding it there, loops on it until ctl moves or its
 *               deadline (blocked for good once the stranger is dead)
 *  OLD_INT_DISCARD  no F5: a failed discard after a peek is stale
 *  OLD_RELEASE  no F6: a release tries READING(g), then READY(g), once each
 *  MAXDEATH, ROUNDS1, ROUNDS2, NWORKER, C1FULL, C2FULL, SERVER_OPS, QCAP,
 *  MAXABORT, PINS (2: client 1 collects only by pin), READER: the scope
 *  (csrc/tests/spin.sh runs five).
 */

#ifndef MAXDEATH
#define MAXDEATH 2
#endif
#ifndef ROUNDS1
#define ROUNDS1 1   /* requests of client 1 */
#endif
#ifndef ROUNDS2
#define ROUNDS2 1   /* requests of client 2 (0: no client 2) */
#endif
#ifndef C1FULL
#define C1FULL 1    /* 0: client 1 waits without deadline, views, releases */
#endif
#ifndef C2FULL
#define C2FULL 1    /* 0: client 2 waits without deadline, views, releases */
#endif
#ifndef NWORKER
#define NWORKER 2   /* 1 or 2; two hand ids to each other */
#endif
#ifndef SERVER_OPS
#define SERVER_OPS 1 /* sweeps or clears of the server process */
#endif
#ifndef QCAP
#define QCAP 2
#endif
#ifndef MAXABORT
#define MAXABORT 1  /* replies given back (S14) per run */
#endif
#ifndef PINS
#define PINS 0      /* 1: clients may pin their reply (S16, S17); 2: client 1
                     * collects only so */
#endif
#ifndef READER
#define READER 0    /* 1: a stranger reads client 1's replies (S18, S19) */
#endif
#if PINS == 2
#define VIEWS me != C1 ->
#define GETS && me != C1 ->
#else
#define VIEWS
#define GETS ->
#endif

/* identities: 0 none (and the final pass), clients 1-2, workers 3-4, server 5,
 * the stranger 6 */
#define C1 1
#define C2 2
#define W1 3
#define W2 4
#define SRV 5
#define RDR 6
#if ROUNDS2 > 0
#define NCLIENT 2
#else
#define NCLIENT 1
#endif
#define NPROC (NCLIENT + NWORKER + 1 + READER)

#define FREE 0
#define ACQUIRED 1
#define WRITING 2
#define READY 3
#define READING 4
#define CANCELLED 5
#define PINNED 6

/* ctl = gen * 8 + state, so that a CAS is one comparison */
#define MK(g, s) ((g) * 8 + (s))
#define ST(v) ((v) % 8)
#define GN(v) ((v) / 8)

#define NG (2 * (ROUNDS1 + ROUNDS2) + 4)

byte ctl = 0;   /* FREE(0) */
byte owner = 0; /* OWN(identity, gen), 0 none */
/* the worker record (one 64-bit word in C): gen, writing bit, process */
byte wg = 0;
bit ww = 0;
byte wp = 0;
byte data = 0;  /* the generation the reply data was written for */
#define VOID(g) ((g) + 64) /* ...by a writer that then gave its claim back */

/* the request queue (Str): ids (= gens: one slot) and the lock word */
byte q[QCAP];
byte qh = 0;
byte qn = 0;
byte qlock = 0;

/* an id a taker handed to the other worker */
byte handoff = 0;
byte handto = 0;
byte aborts = 0; /* S14 so far */
byte gave_g = 0, gave_p = 0; /* ghosts: the last S14 (gen, process) not claimed again since */

bit dead[RDR + 1];
byte deaths = 0;
byte fin = 0;   /* processes done or dead */
byte cfin = 0;  /* clients done or dead */
byte wdead = 0; /* workers dead */

/* ghosts, per generation */
bit cancel_true[NG]; /* a cancel returned True */
bit reply_true[NG];  /* a reply was published: reply() returned True */
bit cleared[NG];     /* clear() moved this generation */
bit pending_after_cancel_false; /* (d) set where it must never be */
#if READER
/* ghosts: client 1's id as the stranger may hold it (its current generation,
 * 0 none); the stranger holds a view of it (READING, not yet released or
 * given back; stays set if it dies or stops there); its release won */
byte cur_g = 0;
bit sviewing = 0;
bit taken[NG];
#define HAND_ID(okv, g) if :: okv && me == C1 -> cur_g = (g) :: else fi
/* a client's stale: cleared, or another reader has it or had it */
#define STALE_OK(g) (cleared[g] || taken[g] || (sviewing && cur_g == (g)))
#else
#define HAND_ID(okv, g) skip
#define STALE_OK(g) cleared[g]
#endif
#if PINS
/* ghosts: the live client holding a pin (0 none) and the generation pinned */
byte pinner = 0;
byte pgen = 0;
/* (e) while a live client holds its pin, the slot stays PINNED at that
 * generation and its bytes stay the reply's: nobody frees, reuses or writes
 * it. Checked after every step on shared memory (DO). */
#define PIN_INV (pinner == 0 || (ctl == MK(pgen, PINNED) && data == pgen))
#define PIN_DIED if :: pinner == me -> pinner = 0; pgen = 0 :: else fi
#else
#define PIN_DIED skip
#endif

#define CANDIE (deaths < MAXDEATH && me != 0)
#define DIE \
    atomic { CANDIE -> deaths++; dead[me] = 1; fin++; \
             if :: me == C1 || me == C2 -> cfin++ \
                :: me == W1 || me == W2 -> wdead++ \
                :: else fi; \
             PIN_DIED }; \
    goto died
/* one step on shared memory, unless SIGKILL comes first. (The "true;":
 * an `else` in an `if` that opened an option would count DIE as one of its
 * alternatives.) */
#if PINS
#define DO(...) if :: DIE :: atomic { true; __VA_ARGS__; assert(PIN_INV) } fi
#else
#define DO(...) if :: DIE :: atomic { true; __VA_ARGS__ } fi
#endif
/* SIGKILL before a step that may block */
#define MAYDIE if :: DIE :: true fi

#define CAS(var, exp, new, okv) \
    if :: var == (exp) -> var = (new); okv = 1 :: else -> okv = 0 fi

#ifdef NOTES_OWNER
#define OWN(id, t) (id)
#define OTAG(w) 0
/* an owner word that lets an acquirer in on FREE value v */
#define ACQUIRABLE(w, v) ((w) == 0)
#else
#define OWN(id, t) ((t) * 8 + (id))
#define OTAG(w) ((w) / 8)
/* a word of generation GN(v) + 1 is an acquire in progress; one of a later
 * generation means v is out of date; one of an earlier generation was left
 * by a freer that died before clearing it */
#define ACQUIRABLE(w, v) ((w) == 0 || OTAG(w) < GN(v))
#endif
#define OID(w) ((w) % 8)

/* S12: release the owner word w (loaded after ctl showed the value the
 * freeing CAS expects): CAS w -> 0, never a blind store */
#define RELEASE_OWNER(w) DO(if :: owner == (w) -> owner = 0 :: else fi)

/* Frees the slot from the exact value v the caller has loaded: load owner,
 * CAS ctl v -> FREE(gen+1), release the owner word; ok: the CAS won. */
/* rr_slot_release: free from READING(g) or READY(g), whichever ctl holds,
 * deciding again when another reader moved it between the two (F6);
 * OLD_RELEASE: free_id from READING(g), then from READY(g), one try each */
inline release(g, v, o, ok) {
#ifdef OLD_RELEASE
    v = MK(g, READING);
    free_from(v, o, ok);
    if
    :: !ok -> v = MK(g, READY); free_from(v, o, ok)
    :: else
    fi
#else
    do
    :: DO(v = ctl);
       if
       :: v == MK(g, READING) || v == MK(g, READY) ->
          free_from(v, o, ok);
          if
          :: ok -> break
          :: else
          fi
       :: else -> ok = 0; break
       fi
    od
#endif
}

inline free_from(v, o, ok) {
    DO(o = owner);
    DO(CAS(ctl, v, MK(GN(v) + 1, FREE), ok));
    if
    :: ok -> RELEASE_OWNER(o)
    :: else
    fi
}

/* the record is a writing record of generation GN(v) whose writer is dead
 * (OLD_RECORD: any record of GN(v), i.e. the taker) */
#ifdef OLD_RECORD
#define WRITER_DEAD(v) (srg == GN(v) && srp != 0 && dead[srp])
#else
#define WRITER_DEAD(v) (srg == GN(v) && srw && srp != 0 && dead[srp])
#endif
/* a record with writing bit w counts for a client's look at state st: in
 * WRITING only a writer's (worker_for; OLD_RECORD: the taker's) */
#ifdef OLD_RECORD
#define COUNTS(st, w) 1
#else
#define COUNTS(st, w) ((st) == ACQUIRED || (w))
#endif

/* F3: a freer that judged a record's process dead reads the record again
 * (in C an RMW, which reads the latest value) and goes on only if it is
 * still the one judged. A writer that gave its claim back (S14) and died
 * may have let another process claim: ctl is WRITING(g) again, the same
 * value, now a live writer's. A record still the same after its process is
 * seen dead stays so, and the WRITING(g) is that dead writer's (a claim
 * records itself first, over no writing record). OLD_WRITER_CHECK: the
 * freer acts on the record it read before the verdict. */
#ifdef OLD_WRITER_CHECK
#define STILL(okv, g, w, p) okv = 1
#else
#define STILL(okv, g, w, p) DO(okv = (wg == (g) && ww == (w) && wp == (p)))
#endif

/* S13 sweep of the slot (any process). */
inline sweep() {
#ifdef OLD_SWEEP
    DO(sv = ctl);
#endif
    DO(so = owner);
    DO(sdead = (so != 0 && dead[OID(so)])); /* the verdict */
    if
    :: sdead ->
#ifndef OLD_SWEEP
        DO(sv = ctl); /* acquire, after the verdict */
#if !defined(NOTES_OWNER) && !defined(NOTES_SWEEP)
        /* F2: the word must still be so once ctl is loaded (while ctl is not
         * FREE the word is its acquirer's and stays so) */
        DO(sok = (owner == so));
        if
        :: !sok -> goto sweep_done
        :: else
        fi;
#endif
#endif
        if
#ifdef OLD_SWEEP
        :: ST(sv) == FREE -> DO(owner = 0)
#else
        :: ST(sv) == FREE -> RELEASE_OWNER(so) /* died in acquire or release */
#endif
        :: (ST(sv) == ACQUIRED || ST(sv) == READY || ST(sv) == READING
            || ST(sv) == PINNED) -> /* PINNED: the owner is the pinner (only it pins) */
            DO(CAS(ctl, sv, MK(GN(sv) + 1, FREE), sok));
            if :: sok -> RELEASE_OWNER(so) :: else fi
        :: ST(sv) == WRITING || ST(sv) == CANCELLED ->
            DO(srg = wg; srw = ww; srp = wp);
            DO(sdead = WRITER_DEAD(sv)); /* the verdict on the writer */
            if
            :: sdead ->
                STILL(sok, srg, srw, srp);
                if
                :: sok ->
                    DO(CAS(ctl, sv, MK(GN(sv) + 1, FREE), sok));
                    if :: sok -> RELEASE_OWNER(so) :: else fi
                :: else
                fi
            :: else
            fi
        fi
    :: else ->
        /* owner alive, or none: a CANCELLED slot whose writer died, which
         * nobody else would free */
#ifndef OLD_SWEEP
        DO(sv = ctl);
#endif
        if
#ifdef MUT_SWEEP_PINNED
        :: ST(sv) == PINNED -> /* as if a pin outlived its owner's verdict */
            DO(so = owner);
            DO(CAS(ctl, sv, MK(GN(sv) + 1, FREE), sok));
            if :: sok -> RELEASE_OWNER(so) :: else fi
#endif
        :: ST(sv) == CANCELLED ->
            DO(srg = wg; srw = ww; srp = wp);
            DO(sdead = WRITER_DEAD(sv));
            if
            :: sdead ->
                STILL(sdead, srg, srw, srp);
                if :: !sdead -> goto sweep_done :: else fi;
#if !defined(NOTES_OWNER) && !defined(NOTES_SWEEP)
                DO(so = owner); /* F2: the word of v's acquirer, loaded after v */
#endif
                DO(CAS(ctl, sv, MK(GN(sv) + 1, FREE), sok));
                if :: sok -> RELEASE_OWNER(so) :: else fi
            :: else
            fi
        :: else
        fi
    fi;
sweep_done:
    skip
}


/* S10 clear (server): ACQUIRED/READY -> FREE(g+1), WRITING -> CANCELLED(g);
 * READING and PINNED lose nothing (a reader has them) */
inline clear() {
    skip;
clear_again:
    DO(sv = ctl);
    if
    :: (ST(sv) == ACQUIRED || ST(sv) == READY
#ifdef MUT_CLEAR_PINNED
        || ST(sv) == PINNED
#endif
       ) ->
        DO(so = owner);
        DO(if
           :: ctl == sv -> ctl = MK(GN(sv) + 1, FREE); sok = 1; cleared[GN(sv)] = 1
           :: else -> sok = 0
           fi);
        if
        :: sok -> RELEASE_OWNER(so)
        :: else -> goto clear_again
        fi
    :: ST(sv) == WRITING ->
        DO(if
           :: ctl == sv -> ctl = MK(GN(sv), CANCELLED); sok = 1; cleared[GN(sv)] = 1
           :: else -> sok = 0
           fi);
        if
        :: sok
        :: else -> goto clear_again
        fi
    :: else
    fi
}

/* ------------------------------------------------------------------ client */

/* (a) on a read: a reader's own view holds the slot, so its bytes are its
 * generation's. READER: another reader's release may free the slot under a
 * second look, and a new request's writer write it: what was read is then
 * void (the reader's release fails), and (a) is asserted where the release
 * (or discard) wins. */
#if READER
#define SEEN(d, g) skip
#else
#define SEEN(d, g) assert((d) == (g))
#endif

proctype Client(byte me; byte rounds; bit rich)
{
    byte r = 0;
    byte g, v, o, d;
    byte sv, so, srg, srp;
    bit srw, sok, sdead, ok, swept;
    bit deadline; /* this request's wait has a deadline */
    bit unviewed; /* at most one unview per request */
#ifdef OLD_INT_READING
    bit nowait; /* this collect is get's after a cancel that said "there" */
#endif
    byte rg, rp;
    bit rw;

    do
    :: r < rounds -> r++;
        swept = 0;
        /* S1 acquire, and one sweep when no slot is free (acquire_or_sweep) */
acquire:
        g = 0;
        DO(v = ctl); /* a look */
        if
        :: ST(v) == FREE ->
            DO(o = owner);
            if
            :: ACQUIRABLE(o, v) ->
                DO(CAS(owner, o, OWN(me, GN(v) + 1), ok));
                if
                :: ok ->
#ifdef NOTES_OWNER
                    DO(v = ctl); /* re-load */
                    if
                    :: ST(v) != FREE -> DO(owner = 0)
                    :: else ->
                        DO(CAS(ctl, v, MK(GN(v) + 1, ACQUIRED), ok); HAND_ID(ok, GN(v) + 1));
                        if
                        :: ok -> g = GN(v) + 1
                        :: else -> RELEASE_OWNER(me)
                        fi
                    fi
#else
                    /* F1: on the generation the owner word names, no re-load */
                    DO(CAS(ctl, v, MK(GN(v) + 1, ACQUIRED), ok); HAND_ID(ok, GN(v) + 1));
                    if
                    :: ok -> g = GN(v) + 1
                    :: else -> RELEASE_OWNER(OWN(me, GN(v) + 1))
                    fi
#endif
                :: else
                fi
            :: else
            fi
        :: else
        fi;
        if
#ifndef NO_CLIENT_SWEEP
        :: g == 0 && !swept -> swept = 1; sweep(); goto acquire
#endif
        :: g == 0 && swept -> goto next /* send returns None */
#ifdef NO_CLIENT_SWEEP
        :: g == 0 -> goto next
#endif
        :: else
        fi;

        /* S2 push, only while the slot is still ours (push_if_ours) */
        DO(ok = (ctl == MK(g, ACQUIRED)));
        if
        :: !ok -> goto next /* cleared meanwhile (C: again, from a new slot) */
        :: else
        fi;
        MAYDIE;
        atomic {
            (qlock == 0 || dead[qlock]); /* a dead holder's lock is taken over */
            if
            :: qn < QCAP -> q[(qh + qn) % QCAP] = g; qn++; ok = 1
            :: else -> ok = 0
            fi
        };
        if
        :: !ok -> /* full: abandon, ACQUIRED(g) -> FREE(g+1) */
            v = MK(g, ACQUIRED);
            free_from(v, o, ok);
            goto next
        :: else
        fi;

        if
        :: deadline = 0
        :: rich -> deadline = 1
        fi;
        unviewed = 0;

        /* S9 wait: woken by a change of ctl (and the periodic worker check) */
wait:
#ifdef OLD_INT_READING
        nowait = 0;
#endif
        MAYDIE;
        if
        :: atomic { (GN(ctl) != g || ST(ctl) == FREE || ST(ctl) == CANCELLED
                     || ST(ctl) == READY || ST(ctl) == READING
                     || ST(ctl) == PINNED) -> v = ctl }; /* PINNED: collected */
            if
            :: GN(v) == g && (ST(v) == READY || ST(v) == READING) -> goto collect
            :: else -> goto stale
            fi
        :: (GN(ctl) == g && (ST(ctl) == ACQUIRED || ST(ctl) == WRITING)
            && COUNTS(ST(ctl), ww) && wg == g && wp != 0 && dead[wp]) -> goto abandon
        :: deadline -> goto timedout
        :: !deadline && GN(ctl) == g && ST(ctl) == ACQUIRED && wdead == NWORKER ->
            /* no live worker can take it: the client would wait for a new
             * one; here its deadline ends the wait */
            goto timedout
#ifndef STRICT_WAIT
        :: (!deadline && GN(ctl) == g && ST(ctl) == ACQUIRED && gave_g == g && gave_p != 0
            && dead[gave_p]) ->
            /* L1: given back (S14), and the process that gave it back died
             * before claiming again. The record names the taker again, alive,
             * whose own reply may have been refused (stale) while the claim
             * was held: nobody answers, and the client waits for its
             * deadline. -DSTRICT_WAIT shows the trail. */
            goto timedout
#endif
        fi;

        /* S11 abandon_dead, after the worker check found the worker dead */
abandon:
        DO(v = ctl); /* acquire */
        if
        :: GN(v) != g || ST(v) == FREE || ST(v) == CANCELLED || ST(v) == PINNED -> goto stale
        :: ST(v) == READY || ST(v) == READING -> goto collect /* busy: collect it */
        :: else
        fi;
        DO(rg = wg; rw = ww; rp = wp);
        /* the verdict; in WRITING only a writer's record counts (worker_for):
         * a taker's record there is a writer's that gave its claim back */
        DO(ok = (rg == g && COUNTS(ST(v), rw) && rp != 0 && dead[rp]));
        if
        :: ok ->
            STILL(ok, rg, rw, rp); /* F3 */
            if
            :: !ok -> goto abandon /* another claim since: decide again */
            :: else
            fi;
            free_from(v, o, ok);
            if
            :: ok -> goto next /* WorkerDiedError */
            :: else -> goto abandon
            fi
        :: else -> goto wait /* alive: wait on */
        fi;

timedout:
        /* S7 cancel, then (the binding) get if the reply is there */
        DO(v = ctl);
        if
        :: v == MK(g, ACQUIRED) ->
            DO(o = owner);
            DO(if
               :: ctl == v -> ctl = MK(g + 1, FREE); ok = 1; cancel_true[g] = 1
               :: else -> ok = 0
               fi);
            if
            :: ok -> RELEASE_OWNER(o); goto next
            :: else -> goto timedout
            fi
        :: v == MK(g, WRITING) ->
#ifdef OLD_CANCEL
            goto get_after_cancel /* "busy" */
#else
            DO(if
               :: ctl == v -> ctl = MK(g, CANCELLED); ok = 1; cancel_true[g] = 1
               :: else -> ok = 0
               fi);
            if
            :: ok -> goto next /* the writer frees it, or a sweep once it is dead */
            :: else -> goto timedout
            fi
#endif
        :: v == MK(g, READY) || v == MK(g, READING) ->
            assert(reply_true[g]); /* (d) the reply won the race */
            goto get_after_cancel
        :: else -> goto next /* stale */
        fi;

get_after_cancel:
        /* get, no wait: the reply is there, or the slot was cleared */
#ifdef OLD_INT_READING
        nowait = 1;
#endif
        DO(v = ctl);
        if
        :: GN(v) == g && (ST(v) == READY || ST(v) == READING) -> goto collect
        :: GN(v) != g || ST(v) == FREE || ST(v) == CANCELLED || ST(v) == PINNED -> goto next
        :: else -> /* (d) "cancel returned False, then get": still pending */
            pending_after_cancel_false = 1; assert(!pending_after_cancel_false)
        fi;

collect:
        if
        :: VIEWS goto view
        :: rich GETS /* S8 Int get: rr_int_peek loads ctl; READY(g): read, then
                      * rr_resp_discard, CAS READY(g) -> FREE(g+1), which failing
                      * looks again (F5); READING(g) (-EBUSY): the view, S18 */
            DO(v = ctl);
            if
            :: v == MK(g, READING) ->
#ifdef OLD_INT_READING
                /* -EAGAIN, as before S18: "not there yet". A get (no wait)
                 * returns None; the wait finds it there and loops on a
                 * look that says "not yet" until ctl moves or its deadline */
                if
                :: nowait -> pending_after_cancel_false = 1;
                             assert(!pending_after_cancel_false) /* (d) */
                :: else
                fi;
                if
                :: ctl != MK(g, READING) -> goto wait
                :: deadline -> goto timedout
                fi
#else
                goto view
#endif
            :: v != MK(g, READY) && v != MK(g, READING) -> goto wait
            :: v == MK(g, READY)
            fi;
            DO(d = data);
            SEEN(d, g);
            free_from(v, o, ok);
            if
            :: ok -> assert(d == g); goto next /* (a) */
#ifdef OLD_INT_DISCARD
            :: else -> goto stale /* "cleared under us": what was read is void */
#else
            :: else -> goto wait /* F5: what was read is void; look again */
#endif
            fi
#if PINS
        :: /* S16 pin (rr_slot_pin): the owner word names us (only the
            * owner pins, so that the sweep's verdict on the owner is one on
            * the pinner), then CAS READY(g) -> PINNED(g) */
            DO(o = owner;
               /* a live owner is refused only for a slot its request left */
               assert(OID(o) == me || GN(ctl) != g || ST(ctl) == FREE));
            if
            :: OID(o) != me -> goto wait /* -EPERM: (the binding views instead) */
            :: else
            fi;
            DO(CAS(ctl, MK(g, READY), MK(g, PINNED), ok);
               if :: ok -> pinner = me; pgen = g :: else fi);
            if
            :: !ok -> goto wait /* -EAGAIN, -ESTALE; the wait decides (-EBUSY is
                                  * READING: another thread's view, not here) */
            :: else
            fi;
            DO(d = data);
            assert(d == g); /* (a) our own reply; (e) holds while we keep it */
            if
            :: /* S17 unpin, free: free_id(PINNED(g)), as a release */
               v = MK(g, PINNED);
               DO(o = owner);
               DO(CAS(ctl, v, MK(g + 1, FREE), ok);
                  if :: ok -> pinner = 0; pgen = 0 :: else fi);
               assert(ok); /* nobody else moves a live owner's pin */
               RELEASE_OWNER(o);
               goto next
            :: !unviewed -> /* S17 unpin, keep: back_to_ready, PINNED(g) -> READY(g),
                             * then collect again (at most one give-back a request) */
               unviewed = 1;
               DO(CAS(ctl, MK(g, PINNED), MK(g, READY), ok);
                  if :: ok -> pinner = 0; pgen = 0 :: else fi);
               assert(ok);
               goto wait
            fi
#endif
        fi;

        /* S8 view (rr_slot_view): CAS READY(g) -> READING(g), or S18 a second
         * look at READING(g); copy out, then release or unview */
view:
        DO(if
           :: ctl == MK(g, READY) -> ctl = MK(g, READING); ok = 1
           :: else -> ok = (ctl == MK(g, READING)) /* S18 */
           fi);
        if
        :: !ok -> goto wait /* -EAGAIN, -ESTALE: the wait decides */
        :: else
        fi;
        DO(d = data);
        SEEN(d, g);
        if
        :: /* release (rr_slot_release, F6): from READING(g) or READY(g)
            * (another reader gave it back) */
           release(g, v, o, ok);
           if
           :: ok -> assert(d == g); goto next /* (a) our own reply */
           :: else -> goto stale /* the other reader's release won; what
                                   * was read is void */
           fi
        :: rich && !unviewed ->
           unviewed = 1;
           DO(CAS(ctl, MK(g, READING), MK(g, READY), ok));
           assert(ok || READER); /* READER: the other reader's release or
                                  * unview came first */
           goto wait
        fi;

stale:
        /* (d) stale without a cancel: only after a clear (READER: or while
         * or after another reader has it) */
        assert(STALE_OK(g));
next:
        skip;
        /* forget this round (fewer distinct states) */
        d_step { g = 0; v = 0; o = 0; d = 0; sv = 0; so = 0; srg = 0; srp = 0;
                 srw = 0; sok = 0; sdead = 0; ok = 0; deadline = 0; unviewed = 0;
                 rg = 0; rw = 0; rp = 0 }
    :: else -> break
    od;
    atomic { fin++; cfin++ };
    goto end;
died:
    skip;
end:
    skip
}

/* ------------------------------------------------------------------ worker */

/* rr_slot_claimed (rr_slots.c), the check commit and abort make first: the
 * record names this process as the writer of id, and ctl is still that
 * claim's (WRITING or CANCELLED of id: nobody else moves it from there while
 * we live). OLD_CLAIMED: the record alone, which outlives the claim. */
#ifdef OLD_CLAIMED
#define CLAIMED(id) (wg == (id) && ww && wp == me)
#else
#define CLAIMED(id) (wg == (id) && ww && wp == me && GN(ctl) == (id) \
                     && (ST(ctl) == WRITING || ST(ctl) == CANCELLED))
#endif

/* S5 write (the reply's bytes, in place) and S6 publish, by the claimant */
inline commit(id) {
    /* S5; (a) a stale writer never scribbles over a newer request */
    DO(assert(GN(ctl) == id && (ST(ctl) == WRITING || ST(ctl) == CANCELLED));
       data = id);
#ifdef OLD_PUBLISH
    DO(ctl = MK(id, READY); ok = 1;
       assert(!cancel_true[id]); assert(!reply_true[id]); reply_true[id] = 1);
#else
    DO(if
       :: ctl == MK(id, WRITING) ->
           ctl = MK(id, READY); ok = 1;
           assert(!cancel_true[id]); /* (d) */
           assert(!reply_true[id]);  /* one reply per request */
           reply_true[id] = 1
       :: else -> ok = 0
       fi);
    if
    :: !ok ->
        DO(v = ctl);
        if
        :: v == MK(id, CANCELLED) -> free_from(v, o, ok)
        :: else
        fi
    :: else
    fi
#endif
}

/* S14 abort (rr_slot_unclaim, for rr_str_reply_abort): the claimant gives its
 * claim back unpublished. CAS ctl WRITING(id) -> ACQUIRED(id) (release in C),
 * then CAS the record from "writing, me" back to the one the claim replaced
 * (the taker's, most often: rr_str_reply_begin's token) (release in C,
 * and the claim's CAS of the record is acquire: a claimant that sees the
 * record given back sees ACQUIRED). Between the two, a claim finds the
 * writing record and fails, and a client that finds the writer dead frees
 * the slot. A CAS of ctl that finds CANCELLED(id) frees the slot, as
 * publish does. MUT_UNCLAIM_ORDER: the record before ctl, which is what
 * others may see if the record's CAS is relaxed. */
inline unclaim(id) {
#ifdef MUT_UNCLAIM_ORDER
    DO(if :: wg == id && ww && wp == me -> wg = pg; ww = pw; wp = pp :: else fi);
#endif
    DO(CAS(ctl, MK(id, WRITING), MK(id, ACQUIRED), ok);
       if :: ok -> gave_g = id; gave_p = me :: else fi);
    if
    :: ok ->
#ifndef MUT_UNCLAIM_ORDER
        DO(if :: wg == id && ww && wp == me -> wg = pg; ww = pw; wp = pp :: else fi);
#endif
        /* pending again: claim again ourselves. The other worker may hold
         * the id too (the taker's handoff, taken up at any time): whichever
         * claims first replies. (Handing it over once more adds nothing: a
         * refused claim changes nothing, so a second try is a late first.) */
        again = 1
    :: else ->
        DO(v = ctl);
        if
        :: v == MK(id, CANCELLED) -> free_from(v, o, ok)
        :: else
        fi
    fi
}

/* S4 claim, then S5 write and S6 publish, or a write in place then S14 abort
 * (at most MAXABORT aborts per run) and a claim again: by any process
 * holding the id */
inline reply(id) {
    again = 1;
    do
    :: again ->
        again = 0;
#ifdef OLD_RECORD
        ok = 1;
#else
        DO(if /* the CAS loop on the record; keeps what it replaces */
           :: wg > id || (wg == id && ww) -> ok = 0 /* another replier, or newer */
           :: else -> pg = wg; pw = ww; pp = wp; wg = id; ww = 1; wp = me; ok = 1
           fi);
#endif
        if
        :: ok ->
            DO(CAS(ctl, MK(id, ACQUIRED), MK(id, WRITING), ok);
               if :: ok && gave_g == id -> gave_p = 0 :: else fi);
            if
            :: ok ->
                if
                :: atomic { aborts < MAXABORT -> aborts++ } ->
                    /* rr_str_reply_begin gave the slot; bytes written there
                     * are void once aborted: (a) finds them if delivered */
                    DO(assert(GN(ctl) == id && (ST(ctl) == WRITING || ST(ctl) == CANCELLED));
                       data = VOID(id));
                    unclaim(id)
                :: true -> commit(id)
                fi
            :: else
            fi
        :: else
        fi
    :: else -> break
    od
}

/* S15 a second commit of the id after every reply attempt, once its claim
 * ended or never was (a double reply, a contract breach: published, refused,
 * given back): rr_slot_claimed must refuse it before anything is written
 * (SPEC 5: double replies have no effect). The check is a load: no death
 * point of its own, and nothing changes when it refuses. */
inline stray(id) {
    atomic { ok = CLAIMED(id) };
    if
    :: ok -> commit(id)
    :: else
    fi
}

proctype Worker(byte me; byte other)
{
    byte id, v, o;
    bit ok, again;
    byte pg, pp; /* the record a claim replaced (pw: its writing bit) */
    bit pw;

serve:
    MAYDIE;
    if
    :: /* S3 take (Str): under the queue lock, record, then pop */
        atomic { (qlock == 0 || dead[qlock]) && qn > 0 -> qlock = me; id = q[qh] };
        DO(if
           :: wg > id || (wg == id && ww) -> skip
           :: else -> wg = id; ww = 0; wp = me
           fi);
        DO(qh = (qh + 1) % QCAP; qn--; qlock = 0);
        /* maybe hand the id to the other worker too; then reply ourselves */
        if
        :: handoff == 0 && other != 0 -> handoff = id; handto = other
        :: true
        fi;
        reply(id);
        stray(id)
    :: atomic { handoff != 0 && handto == me -> id = handoff; handoff = 0 };
        reply(id);
        stray(id)
    :: cfin == NCLIENT && qn == 0 && !(handoff != 0 && handto == me) -> goto done
    fi;
    d_step { id = 0; v = 0; o = 0; ok = 0; again = 0; pg = 0; pw = 0; pp = 0 };
    goto serve;
done:
    atomic { fin++ };
    goto end;
died:
    skip;
end:
    skip
}

/* ------------------------------------------------------------------ server */

proctype Server(byte me)
{
    byte n = 0;
    byte sv, so, srg, srp;
    bit srw, sok, sdead;

    do
    :: n < SERVER_OPS -> n++;
        if
        :: sweep()
        :: clear()
        fi
    :: else -> break
    od;
    atomic { fin++ };
    goto end;
died:
    skip;
end:
    skip
}

#if READER
/* -------------------------------------------------------------- stranger */

/* S19 (scope reader): another process, or another thread of client 1,
 * holding client 1's id (once it has one: cur_g): a look at any moment (a
 * wait for the reply is that look, later): rr_slot_view, i.e. S8's CAS
 * READY(g) -> READING(g) or S18 a second look at READING(g); the data read;
 * then rr_slot_release (F6: from READING(g) or READY(g), deciding again) or
 * rr_slot_unview (READING(g) -> READY(g)), after which it may look once more. Death (or a stop for good: the
 * same to the others, who never judge it) before every step: a reply it
 * leaves READING must be collected by client 1 by S18, or by the sweep once
 * client 1 is dead too. */
proctype Stranger(byte me)
{
    byte g, d, v, o;
    bit ok, looks;

    if
    :: atomic { cur_g != 0 -> g = cur_g }
    :: cfin == NCLIENT -> goto done /* client 1 sent nothing, or has ended */
    fi;
look:
    DO(if
       :: ctl == MK(g, READY) -> ctl = MK(g, READING); ok = 1; sviewing = 1
       :: ctl == MK(g, READING) -> ok = 1; sviewing = 1 /* S18 */
       :: else -> ok = 0 /* -EAGAIN, -ESTALE */
       fi);
    if
    :: !ok -> goto done
    :: else
    fi;
    DO(d = data); /* void unless its release wins */
    if
    :: /* release (rr_slot_release, F6) */
        release(g, v, o, ok);
        atomic { if :: ok -> taken[g] = 1 :: else fi; sviewing = 0 };
        if
        :: ok -> assert(d == g) /* (a) */
        :: else /* the client's release won */
        fi
    :: /* unview, then perhaps look again (S19: twice at most) */
        DO(CAS(ctl, MK(g, READING), MK(g, READY), ok); sviewing = 0);
        if
        :: looks == 0 -> looks = 1; goto look
        :: true
        fi
    fi;
done:
    atomic { fin++ };
    goto end;
died:
    skip;
end:
    skip
}
#endif

init {
    byte me = 0; /* the final recovery pass: never dies */
    byte sv, so, srg, srp;
    bit srw, sok, sdead;

    atomic {
        run Client(C1, ROUNDS1, C1FULL);
#if ROUNDS2 > 0
        run Client(C2, ROUNDS2, C2FULL);
#endif
#if NWORKER > 1
        run Worker(W1, W2);
        run Worker(W2, W1);
#else
        run Worker(W1, 0);
#endif
        run Server(SRV);
#if READER
        run Stranger(RDR);
#endif
    };
    fin == NPROC;
    /* (b) everybody done or dead: one recovery pass gives the slot back */
    sweep();
    assert(ST(ctl) == FREE && ACQUIRABLE(owner, ctl));
died:
    skip
}
