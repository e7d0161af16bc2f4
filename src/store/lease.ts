import { randomBytes } from 'node:crypto';
import { LeaseLost } from '../errors';
import { isAlive, processId, sameHost, thisHost, type HostId, type ProcessId } from '../proc';
import { numbered } from './backend';
import type { Store } from './store';

/** What a lease document says: who holds it, until when, and which process it guards. */
export interface LeaseBody extends HostId {
  token: string;
  what: string;
  worker: ProcessId;
  child?: ProcessId;
  renewedAt: number;
  ttlMs: number;
  released?: boolean;
}

export interface Busy {
  busy: string;
  retryAfterMs: number;
}

const GEN_DIGITS = 10;
const genKey = (prefix: string, gen: number) => `${prefix}/${numbered(gen, GEN_DIGITS)}.json`;

/**
 * One holder at a time for `prefix` (e.g. the training of one run), across processes and hosts
 * that share only the store. Each takeover creates the next generation with create-if-absent, so
 * two contenders can never both win, and the generation is a fencing token: a holder that finds a
 * newer generation has lost the lease and must stop. A live holder renews; a holder on another
 * host is taken over only after its lease expired; on this host, a holder whose worker died is
 * taken over at once (its orphaned child stopped first), recognised by PID *and* start time.
 */
export class Lease {
  private constructor(
    private readonly store: Store,
    readonly prefix: string,
    readonly gen: number,
    private body: LeaseBody,
  ) {}

  get token(): string {
    return this.body.token;
  }

  get key(): string {
    return genKey(this.prefix, this.gen);
  }

  static newToken(label: string): string {
    return `${label}#${randomBytes(6).toString('hex')}`;
  }

  private static async top(store: Store, prefix: string): Promise<{ gen: number; body?: LeaseBody }> {
    const gens = (await store.listDocs(prefix)).map((k) => Number(/(\d+)\.json$/.exec(k)?.[1] ?? NaN)).filter(Number.isFinite);
    if (!gens.length) return { gen: 0 };
    const gen = Math.max(...gens);
    return { gen, body: await store.readDoc<LeaseBody>(genKey(prefix, gen)) };
  }

  /** Why `held` still counts as held, or undefined when it may be taken over. */
  static liveReason(held: LeaseBody, now = Date.now()): string | undefined {
    if (held.released) return undefined;
    const fresh = now < held.renewedAt + held.ttlMs;
    // On this host a dead worker is known at once: whatever it left running is an orphan.
    if (sameHost(held)) return fresh && isAlive(held.worker) ? `held by worker pid ${held.worker.pid} on this host (${held.what})` : undefined;
    return fresh ? `held by ${held.host} (pid ${held.worker.pid}) until its lease expires (${held.what})` : undefined;
  }

  /**
   * Takes the lease, or says who holds it and when to try again. `stopOrphan` is called with the
   * child a dead worker on this host left behind, before the takeover completes.
   */
  static async acquire(
    store: Store,
    prefix: string,
    opts: { token: string; what: string; ttlMs: number; stopOrphan?: (child: ProcessId) => Promise<void> },
  ): Promise<Lease | Busy> {
    for (let tries = 0; tries < 5; tries++) {
      const { gen, body: held } = await Lease.top(store, prefix);
      if (held && !held.released) {
        const reason = Lease.liveReason(held);
        if (reason) return { busy: reason, retryAfterMs: Math.max(1000, held.renewedAt + held.ttlMs - Date.now()) };
        if (sameHost(held) && held.child && isAlive(held.child)) await opts.stopOrphan?.(held.child);
      } else if (gen > 0 && !held) continue; // a generation being written right now: look again
      const body: LeaseBody = { ...thisHost(), token: opts.token, what: opts.what, worker: processId(), renewedAt: Date.now(), ttlMs: opts.ttlMs };
      if (await store.writeDoc(genKey(prefix, gen + 1), body, { ifAbsent: true })) return new Lease(store, prefix, gen + 1, body);
    }
    return { busy: `the lease ${prefix} is contended`, retryAfterMs: 2000 };
  }

  /** Throws LeaseLost when a newer generation exists (someone took over: this holder must stop). */
  async assertHeld(): Promise<void> {
    const { gen, body } = await Lease.top(this.store, this.prefix);
    if (gen !== this.gen || body?.token !== this.body.token) {
      throw new LeaseLost(`lost the lease ${this.prefix} (generation ${this.gen}) to ${body?.host ?? '?'} (generation ${gen})`);
    }
  }

  /** Extends the lease (and records the child it guards); throws LeaseLost when it was taken over. */
  async renew(child?: ProcessId): Promise<void> {
    await this.assertHeld();
    this.body = { ...this.body, ...(child ? { child } : {}), renewedAt: Date.now() };
    await this.store.writeDoc(this.key, this.body);
  }

  /** Gives the lease up, if it is still this holder's: never touches a newer generation. */
  async release(): Promise<void> {
    try {
      await this.assertHeld();
    } catch {
      return;
    }
    this.body = { ...this.body, released: true, renewedAt: Date.now() };
    await this.store.writeDoc(this.key, this.body);
  }
}
