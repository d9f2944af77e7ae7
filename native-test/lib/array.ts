// Where a test node's volumes live: allocations on a RAID array over the member files its config names.
import fs from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { ArrayReader } from '../../test/support/array-reader.js';
import { sha256File } from './run.js';

/** The node's RAID member files (disk0.img…), as absolute paths. */
export async function memberFiles(configFile: string): Promise<string[]> {
  return (await loadConfig(configFile)).storage.members;
}

/** Sizes of the member files, in member order: what must not change when a write is refused. */
export async function memberSizes(configFile: string): Promise<number[]> {
  return Promise.all((await memberFiles(configFile)).map(async (member) => (await fs.stat(member)).size));
}

/** SHA-256 of a whole volume as stored on the member files (exported to `scratch` first). */
export async function sha256Volume(reader: ArrayReader, volume: string, scratch: string): Promise<string> {
  const image = path.join(scratch, `stored-${volume}.img`);
  await reader.exportVolume(volume, image);
  try {
    return await sha256File(image);
  } finally {
    await fs.rm(image, { force: true });
  }
}
