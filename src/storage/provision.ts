// Sizing and creating a new array for a set of volumes: what `ftvm up` and the tests do on first
// run. The array gets room for the node-state region and every volume, each on its own stripes.
import path from 'node:path';
import { dataChunksPerStripe, type RaidLevel } from './layout.js';
import { NODE_STATE_REGION_BYTES } from './node-state.js';
import { createArray, DEFAULT_CHUNK_BYTES } from './raid-assembly.js';
import type { RaidDependencies } from './raid-array.js';

export interface ProvisionOptions {
  level: RaidLevel;
  memberCount: number;
  volumeBytes: readonly number[];
  chunkBytes?: number;
}

/** Data bytes each member needs so that the node-state region and all volumes fit. */
export function memberDataBytesFor(options: ProvisionOptions): number {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const dataChunks = dataChunksPerStripe({ level: options.level, memberCount: options.memberCount, chunkBytes, memberDataBytes: chunkBytes });
  const stripeBytes = chunkBytes * dataChunks;
  const stripes = [NODE_STATE_REGION_BYTES, ...options.volumeBytes].reduce((sum, bytes) => sum + Math.ceil(bytes / stripeBytes), 0);
  return stripes * chunkBytes;
}

/** Creates member files `disk0.img`… in `directory` and stops the new array cleanly. */
export async function provisionArray(directory: string, options: ProvisionOptions, deps: RaidDependencies): Promise<string[]> {
  const members = [...Array(options.memberCount).keys()].map((index) => path.join(directory, `disk${index}.img`));
  const array = await createArray(
    { level: options.level, memberPaths: members, memberDataBytes: memberDataBytesFor(options), chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES },
    deps,
  );
  await array.stop();
  return members;
}
