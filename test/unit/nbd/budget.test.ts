// Proves the node-wide budget of bytes in flight: takes what fits, refuses what does not, lets the
// connections that wait go first in the order they came, and never lets a newcomer jump the line.
import { expect } from 'chai';
import { RequestBudget, type BudgetWaiter } from '../../../src/nbd/budget.js';

function waiter(): BudgetWaiter & { retries: number } {
  const self = { retries: 0, retry: () => self.retries++ };
  return self;
}

describe('RequestBudget', () => {
  it('takes what fits and refuses what does not', () => {
    const budget = new RequestBudget(100);
    const a = waiter();
    expect(budget.tryTake(60, a)).to.equal(true);
    expect(budget.tryTake(50, a)).to.equal(false);
    expect(budget.inFlightBytes).to.equal(60);
  });

  it('wakes the first waiter when bytes come back, and keeps its place ahead of newcomers', () => {
    const budget = new RequestBudget(100);
    const [a, b, c] = [waiter(), waiter(), waiter()];
    expect(budget.tryTake(100, a)).to.equal(true);
    expect(budget.tryTake(30, b)).to.equal(false);
    budget.give(40);
    expect(b.retries, 'b is told').to.equal(1);
    expect(budget.tryTake(10, c), 'c may not jump ahead of b').to.equal(false);
    expect(budget.tryTake(30, b)).to.equal(true);
    expect(c.retries, 'c is next, and told at once that there may be room').to.equal(1);
    expect(budget.tryTake(10, c)).to.equal(true);
    expect(budget.inFlightBytes).to.equal(100);
  });

  it('a connection that leaves the line passes its turn on', () => {
    const budget = new RequestBudget(10);
    const [a, b, c] = [waiter(), waiter(), waiter()];
    budget.tryTake(10, a);
    budget.tryTake(5, b);
    budget.tryTake(5, c);
    budget.leave(b);
    expect(c.retries).to.equal(1);
  });
});
