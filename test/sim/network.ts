// The simulated network: socket pairs whose bytes travel only when the scheduler delivers them.
//
//   socket.write(bytes) ──> pipe (one per direction): [chunk, chunk, …, close?] ──> peer 'data' / 'close'
//
// Like TCP, a pipe delivers in order: only its oldest chunk is ever offered to the scheduler, so a
// message is delayed (other steps run first, or the pipe is stalled) but never overtaken. A write may
// arrive split into several chunks, so the framer sees frames cut at any point. A cut link loses what
// is in flight both ways and closes both ends at once; a crashed node hears nothing more, and its
// peer sees the bytes already sent and then the connection close.
//
// A SimSocket offers exactly what PartnerLink uses of net.Socket: on('data' | 'close' | 'error'),
// write, end, destroy and destroyed.
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { randomInt } from '../support/seeded-random.js';
import type { Action, ActionSource } from './scheduler.js';

type InFlight = Buffer | 'close';

interface Pipe {
  from: SimSocket;
  to: SimSocket;
  inFlight: InFlight[];
  /** Delivers nothing before this step (a "delay" fault: the route is slow, not broken). */
  stalledUntilStep: number;
}

export interface NetworkOptions {
  /** Chance that one write arrives in several chunks. */
  splitChance: number;
  deliverWeight: number;
}

export class SimSocket extends EventEmitter {
  destroyed = false;
  /** Its node crashed: it neither sends nor hears anything again, and says nothing about it. */
  dead = false;
  outgoing: Pipe | null = null;

  constructor(
    private readonly network: SimNetwork,
    readonly nodeId: number,
  ) {
    super();
  }

  write(data: Buffer): boolean {
    if (!this.destroyed && !this.dead) this.network.send(this, data);
    return true;
  }

  /** Writes already keep their order here; corking only matters to a kernel socket's writev. */
  cork(): void {}

  uncork(): void {}

  /** Half close: the peer gets what was written, then the close. */
  end(): void {
    if (this.destroyed || this.dead) return;
    this.network.end(this);
  }

  destroy(): void {
    if (this.destroyed || this.dead) return;
    this.network.reset(this);
  }

  asNetSocket(): net.Socket {
    return this as unknown as net.Socket;
  }
}

export class SimNetwork {
  private readonly pipes: Pipe[] = [];
  /** Counts what the simulation did not ask for (a reset): the simulation reports it as a failure. */
  resets = 0;

  constructor(
    private readonly random: () => number,
    private readonly options: NetworkOptions,
    private readonly currentStep: () => number,
  ) {}

  /** A connected pair: [end at node a, end at node b]. */
  connect(a: number, b: number): [SimSocket, SimSocket] {
    const left = new SimSocket(this, a);
    const right = new SimSocket(this, b);
    left.outgoing = { from: left, to: right, inFlight: [], stalledUntilStep: 0 };
    right.outgoing = { from: right, to: left, inFlight: [], stalledUntilStep: 0 };
    this.pipes.push(left.outgoing, right.outgoing);
    return [left, right];
  }

  readonly source: ActionSource = (ready: Action[]) => {
    const step = this.currentStep();
    for (const pipe of this.pipes) {
      if (pipe.inFlight.length === 0 || pipe.stalledUntilStep > step) continue;
      const head = pipe.inFlight[0] as InFlight;
      const what = head === 'close' ? 'close' : `${head.length} bytes`;
      ready.push({ label: `deliver ${pipe.from.nodeId}→${pipe.to.nodeId} ${what}`, weight: this.options.deliverWeight, run: () => this.deliver(pipe) });
    }
  };

  /** Bytes or closes still travelling anywhere. */
  get busy(): boolean {
    return this.pipes.some((pipe) => pipe.inFlight.length > 0);
  }

  /** The earliest step at which a stalled pipe with something in it moves again, or null. */
  nextUnstallStep(): number | null {
    let earliest: number | null = null;
    for (const pipe of this.pipes) {
      if (pipe.inFlight.length > 0 && (earliest === null || pipe.stalledUntilStep < earliest)) earliest = pipe.stalledUntilStep;
    }
    return earliest;
  }

  unstallAll(): void {
    for (const pipe of this.pipes) pipe.stalledUntilStep = 0;
  }

  stall(socket: SimSocket, steps: number): void {
    (socket.outgoing as Pipe).stalledUntilStep = this.currentStep() + steps;
  }

  send(from: SimSocket, data: Buffer): void {
    const pipe = from.outgoing as Pipe;
    if (data.length > 1 && this.random() < this.options.splitChance) {
      const pieces = 2 + randomInt(this.random, 3);
      const cuts = [...Array(pieces - 1)].map(() => 1 + randomInt(this.random, data.length - 1)).sort((x, y) => x - y);
      let at = 0;
      for (const cut of cuts) {
        if (cut > at) pipe.inFlight.push(data.subarray(at, cut));
        at = Math.max(at, cut);
      }
      pipe.inFlight.push(data.subarray(at));
    } else {
      pipe.inFlight.push(data);
    }
  }

  end(from: SimSocket): void {
    (from.outgoing as Pipe).inFlight.push('close');
    from.destroyed = true;
    queueMicrotask(() => from.emit('close', false));
  }

  /** A reset the simulation did not ask for (framing error, unexpected response): both ends close now. */
  reset(from: SimSocket): void {
    this.resets++;
    this.cut(from);
  }

  /** The link is gone: nothing in flight arrives, both ends close now. */
  cut(end: SimSocket): void {
    const pipe = end.outgoing as Pipe;
    const back = pipe.to.outgoing as Pipe;
    for (const direction of [pipe, back]) direction.inFlight = [];
    for (const socket of [pipe.from, pipe.to]) close(socket);
  }

  /** The node is gone: it hears nothing more; its peers get what it already sent, then a close. */
  crash(nodeId: number): void {
    for (const pipe of this.pipes) {
      if (pipe.to.nodeId === nodeId) {
        pipe.inFlight = [];
        pipe.to.dead = true;
      }
      if (pipe.from.nodeId === nodeId && !pipe.to.destroyed) pipe.inFlight.push('close');
    }
  }

  private deliver(pipe: Pipe): void {
    const item = pipe.inFlight.shift() as InFlight;
    if (pipe.to.destroyed || pipe.to.dead) return;
    if (item === 'close') close(pipe.to);
    else pipe.to.emit('data', item);
  }
}

function close(socket: SimSocket): void {
  if (socket.destroyed || socket.dead) return;
  socket.destroyed = true;
  socket.emit('close', false);
}
