// What all connections of a node together may have in flight: bytes of requests read and not yet
// answered on the wire (limits.nodeBytesInFlight). A connection that finds no room waits in line
// and is woken, in order, as others' replies are written; a connection waiting keeps its place, so
// one busy client cannot take every byte that frees up while another waits.
export interface BudgetWaiter {
  /** Called when there may be room again; the waiter tries again later, not from inside this call. */
  retry(): void;
}

export class RequestBudget {
  private usedBytes = 0;
  private readonly waiting: BudgetWaiter[] = [];

  constructor(readonly limitBytes: number) {}

  get inFlightBytes(): number {
    return this.usedBytes;
  }

  /** Takes `bytes` (at most the limit: a caller caps a request's cost) if there is room and nobody waits ahead. */
  tryTake(bytes: number, waiter: BudgetWaiter): boolean {
    const first = this.waiting[0];
    if ((first === undefined || first === waiter) && this.usedBytes + bytes <= this.limitBytes) {
      this.usedBytes += bytes;
      if (first === waiter) {
        this.waiting.shift();
        // There may be room left for the next in line too.
        this.waiting[0]?.retry();
      }
      return true;
    }
    if (!this.waiting.includes(waiter)) this.waiting.push(waiter);
    return false;
  }

  give(bytes: number): void {
    this.usedBytes -= bytes;
    if (bytes > 0) this.waiting[0]?.retry();
  }

  /** A closing connection leaves the line. */
  leave(waiter: BudgetWaiter): void {
    const at = this.waiting.indexOf(waiter);
    if (at < 0) return;
    this.waiting.splice(at, 1);
    if (at === 0) this.waiting[0]?.retry();
  }
}
