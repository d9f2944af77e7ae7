// The network of the cluster simulation, on simulated time: each node's PartnerTransport dials and
// listens here, and bytes travel as events of the TimedWorld.
//
//   socket.write(bytes) ──> one FIFO per direction ──> an event owned by the receiving process:
//                                                      its 'data' (not while it is paused; never
//                                                      once it is dead)
//
// Like TCP: in order, never overtaken (each chunk lands no earlier than the one before it); a cut
// between two hosts holds what is in flight until the cut heals (retransmission), and dials fail
// meanwhile; a process that dies is noticed by its peers a moment later (the kernel closes its
// sockets), a paused one is not noticed at all (only heartbeats tell). A write is copied: the
// sender may reuse its buffers at once, as the kernel lets it.
import { EventEmitter } from 'node:events';
import { DialError, type LinkListening, type LinkSocket, type PartnerTransport } from '../../src/partner/index.js';
import { copyOf } from './slabs.js';
import type { Actor, TimedWorld } from './timed-world.js';

export interface NetworkHooks {
  /** Until when the hosts of two nodes cannot reach each other (0: they can). */
  cutUntil(a: number, b: number): number;
  /** One-way latency of a chunk, in ms. */
  latencyMs(): number;
}

class TimedSocket extends EventEmitter implements LinkSocket {
  destroyed = false;
  peer: TimedSocket | null = null;
  /** When the last chunk towards the peer lands: the next lands no earlier (FIFO). */
  private lastLandingAt = 0;

  constructor(
    private readonly network: TimedNetwork,
    readonly owner: Actor,
    readonly remoteAddress: string,
    readonly remotePort: number,
  ) {
    super();
  }

  write(data: Buffer): boolean {
    if (this.destroyed || !this.peer) return true;
    this.sendToPeer(copyOf(data), 'data');
    return true;
  }

  cork(): void {}

  uncork(): void {}

  /** The peer gets what was written, then the close. */
  end(): void {
    if (this.destroyed) return;
    this.sendToPeer(null, 'close');
    this.closeHere();
  }

  destroySoon(): void {
    this.end();
  }

  destroy(): void {
    if (this.destroyed) return;
    // An abort: the peer hears of it after the latency, with nothing more (like a reset).
    this.sendToPeer(null, 'close');
    this.closeHere();
  }

  /** The process died: nothing more is sent; the kernel closes the connection a moment later. */
  die(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.sendToPeer(null, 'close', 1 + this.network.random() * 4);
  }

  private closeHere(): void {
    this.destroyed = true;
    this.network.world.schedule(0, this.owner, 'socket closed', () => this.emit('close'));
  }

  private sendToPeer(chunk: Buffer | null, what: 'data' | 'close', extraMs = 0): void {
    const peer = this.peer;
    if (!peer) return;
    const { world } = this.network;
    const at = Math.max(world.now + this.network.hooks.latencyMs() + extraMs, this.lastLandingAt);
    this.lastLandingAt = at;
    this.network.deliver(this.owner.node, peer, at - world.now, () => {
      if (peer.destroyed) return;
      if (what === 'data') peer.emit('data', chunk as Buffer);
      else {
        peer.destroyed = true;
        peer.emit('close');
      }
    });
  }
}

interface Listener {
  owner: Actor;
  accept: (socket: LinkSocket) => void;
  closed: boolean;
}

export class TimedNetwork {
  private readonly listeners = new Map<string, Listener>();
  private readonly sockets = new Map<Actor, Set<TimedSocket>>();

  constructor(
    readonly world: TimedWorld,
    readonly random: () => number,
    readonly hooks: NetworkHooks,
    /** The host a node's sockets come from (its partner address's host). */
    private readonly hostOf: (node: number) => string,
  ) {}

  /** The transport of one process. */
  transportFor(owner: Actor): PartnerTransport {
    return {
      dial: (address) => this.dial(owner, address),
      listen: (address, accept) => this.listen(owner, address, accept),
    };
  }

  /** A process died: its sockets close (its peers hear of it), its listeners vanish. */
  kill(owner: Actor): void {
    for (const socket of this.sockets.get(owner) ?? []) socket.die();
    this.sockets.delete(owner);
    for (const [key, listener] of this.listeners) if (listener.owner === owner) this.listeners.delete(key);
  }

  /** Schedules delivery from `fromNode` to `to` (owned by `to`'s process); held while the hosts are cut. */
  deliver(fromNode: number, to: TimedSocket, delayMs: number, work: () => void): void {
    const attempt = (): void => {
      const cut = this.hooks.cutUntil(fromNode, to.owner.node);
      if (cut > this.world.now) {
        this.world.schedule(cut - this.world.now + 0.01, null, 'held packet', attempt);
        return;
      }
      // Handled as it lands, unless its process is paused (then when it resumes) or dead.
      if (!to.owner.alive) return;
      if (this.world.paused(to.owner.node)) this.world.schedule(0, to.owner, 'packet', work);
      else work();
    };
    this.world.schedule(delayMs, null, 'packet in flight', attempt);
  }

  private async dial(owner: Actor, address: { host: string; port: number }): Promise<LinkSocket> {
    const key = `${address.host}:${address.port}`;
    return new Promise((resolve, reject) => {
      this.world.schedule(this.hooks.latencyMs(), null, `dial ${key}`, () => {
        const listener = this.listeners.get(key);
        const target = listener?.owner;
        if (!listener || listener.closed || !target || !target.alive || this.hooks.cutUntil(owner.node, target.node) > this.world.now) {
          this.world.schedule(this.hooks.latencyMs(), owner, `dial ${key} refused`, () => reject(new DialError(`connect ECONNREFUSED ${key}`)));
          return;
        }
        const near = new TimedSocket(this, owner, address.host, address.port);
        const far = new TimedSocket(this, target, this.hostOf(owner.node), 40_000 + Math.floor(this.random() * 20_000));
        near.peer = far;
        far.peer = near;
        this.track(owner, near);
        this.track(target, far);
        this.world.schedule(0, target, `accept from n${owner.node}`, () => {
          if (!listener.closed) listener.accept(far);
          else far.destroy();
        });
        this.world.schedule(this.hooks.latencyMs(), owner, `connected to ${key}`, () => resolve(near));
      });
    });
  }

  private async listen(owner: Actor, address: { host: string; port: number }, accept: (socket: LinkSocket) => void): Promise<LinkListening> {
    const key = `${address.host}:${address.port}`;
    const existing = this.listeners.get(key);
    if (existing && !existing.closed && existing.owner.alive) throw new Error(`listen EADDRINUSE ${key}`);
    const listener: Listener = { owner, accept, closed: false };
    this.listeners.set(key, listener);
    return {
      port: address.port,
      close: async () => {
        listener.closed = true;
        if (this.listeners.get(key) === listener) this.listeners.delete(key);
      },
    };
  }

  private track(owner: Actor, socket: TimedSocket): void {
    let set = this.sockets.get(owner);
    if (!set) this.sockets.set(owner, (set = new Set()));
    set.add(socket);
    socket.once('close', () => set?.delete(socket));
  }
}
