// The cluster configuration file: schema, loading and validation. Every error names the file and
// the path inside it, so a typo is found without reading code.
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { parseSize } from './size.js';

/** Volumes are block devices: sizes in whole 4 KiB blocks keep every client's block size valid. */
export const VOLUME_SIZE_ALIGNMENT_BYTES = 4096;
export const CONFIG_VERSION = 1;

const sizeField = z.union([z.string(), z.number()]).transform((value, context) => {
  const bytes = parseSize(value);
  if (typeof bytes === 'string') {
    context.addIssue({ code: 'custom', message: bytes });
    return z.NEVER;
  }
  return bytes;
});

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'names use letters, digits, . _ - (at most 64)');

const listenSchema = z.union([
  z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) }),
  z.strictObject({ path: z.string().min(1) }),
]);

const nodeSchema = z.strictObject({
  name,
  listen: z.array(listenSchema).min(1, 'a node needs at least one NBD listen address'),
  /** Unix socket for `ftvm raid --control`; defaults to `<name>.control` beside the config. */
  control: z.string().min(1).optional(),
});

const volumeSchema = z.strictObject({
  name,
  size: sizeField.refine((bytes) => bytes > 0 && bytes % VOLUME_SIZE_ALIGNMENT_BYTES === 0, {
    message: `size must be a positive multiple of ${VOLUME_SIZE_ALIGNMENT_BYTES} bytes`,
  }),
  description: z.string().max(1024).default(''),
  readOnly: z.boolean().default(false),
});

/** The shared disks: one RAID array over member files every node can open. */
const storageSchema = z.strictObject({
  level: z.enum(['raid1', 'raid10', 'raid5']),
  members: z.array(z.string().min(1)).min(1, 'storage needs member files'),
  cache: sizeField.default(64 * 1024 * 1024),
  readAhead: sizeField.default(256 * 1024),
});

const configSchema = z
  .strictObject({
    version: z.literal(CONFIG_VERSION),
    cluster: name,
    nodes: z.array(nodeSchema).min(1),
    storage: storageSchema,
    volumes: z.array(volumeSchema).min(1),
  })
  .superRefine((config, context) => {
    for (const [label, names] of [
      ['node', config.nodes.map((node) => node.name)],
      ['volume', config.volumes.map((volume) => volume.name)],
    ] as const) {
      const seen = new Set<string>();
      for (const entry of names) {
        if (seen.has(entry)) context.addIssue({ code: 'custom', message: `${label} name '${entry}' appears twice` });
        seen.add(entry);
      }
    }
  });

export type ClusterConfig = z.output<typeof configSchema>;
export type NodeConfig = ClusterConfig['nodes'][number];
export type VolumeConfig = ClusterConfig['volumes'][number];
export type ListenConfig = NodeConfig['listen'][number];
export type StorageConfig = ClusterConfig['storage'];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Validates parsed JSON; relative file and socket paths are resolved against `baseDirectory`. */
export function parseConfig(raw: unknown, source: string, baseDirectory: string): ClusterConfig {
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `  ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
    throw new ConfigError(`invalid config ${source}:\n${lines.join('\n')}`);
  }
  const config = result.data;
  config.storage.members = config.storage.members.map((member) => path.resolve(baseDirectory, member));
  for (const node of config.nodes) {
    for (const address of node.listen) if ('path' in address) address.path = path.resolve(baseDirectory, address.path);
    node.control = path.resolve(baseDirectory, node.control ?? `${node.name}.control`);
  }
  return config;
}

export async function loadConfig(file: string): Promise<ClusterConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config ${file}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(error as Error).message}`);
  }
  return parseConfig(raw, file, path.dirname(path.resolve(file)));
}

export function findNode(config: ClusterConfig, nodeName: string): NodeConfig {
  const node = config.nodes.find((candidate) => candidate.name === nodeName);
  if (!node) {
    const known = config.nodes.map((candidate) => candidate.name).join(', ');
    throw new ConfigError(`node '${nodeName}' is not in the config (nodes: ${known})`);
  }
  return node;
}
