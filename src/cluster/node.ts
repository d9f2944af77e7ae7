// One node process: assembles the shared RAID array, reads the node-state region, places the
// configured volumes in it, and serves them over NBD on the node's addresses. Later the memory
// manager, partner link and failover hang off this same object.
import { findNode, type ClusterConfig } from '../config/index.js';
import { Exports, NbdServer } from '../nbd/index.js';
import type { Logger } from '../observe/index.js';
import { ControlServer } from './control.js';
import {
  assembleArray,
  NodeStateStore,
  placeAllocations,
  StorageStack,
  StorageVolume,
  stripeDataBytes,
  BLOCK_BYTES,
  DEFAULT_STACK_OPTIONS,
} from '../storage/index.js';

export class ClusterNode {
  private constructor(
    private readonly server: NbdServer,
    private readonly control: ControlServer,
    private readonly stack: StorageStack,
    private readonly logger: Logger,
  ) {}

  /** Brings the storage up, then listens; on any failure, what was opened is closed again. */
  static async start(config: ClusterConfig, nodeName: string, logger: Logger): Promise<ClusterNode> {
    const node = findNode(config, nodeName);
    const array = await assembleArray(config.storage.members, { logger, now: () => Date.now() });
    if (array.geometry.level !== config.storage.level) {
      await array.stop();
      throw new Error(`the member files hold a ${array.geometry.level} array, the config says ${config.storage.level}`);
    }
    const stack = new StorageStack(array, { ...DEFAULT_STACK_OPTIONS, capacityBytes: config.storage.cache, readAheadBytes: config.storage.readAhead });
    const exports = new Exports();
    const server = new NbdServer(exports, logger);
    const control = new ControlServer(array, logger);
    try {
      for (const volume of await ClusterNode.volumes(config, stack, logger)) {
        const settings = config.volumes.find((candidate) => candidate.name === volume.name);
        exports.add({ name: volume.name, description: settings?.description ?? '', volume, readOnly: settings?.readOnly ?? false });
      }
      for (const address of node.listen) await server.listen(address);
      await control.listen(node.control as string);
    } catch (error) {
      await server.close();
      await control.close();
      await stack.stop();
      throw error;
    }
    return new ClusterNode(server, control, stack, logger);
  }

  /** The configured volumes as allocations of the array, creating the ones it does not hold yet. */
  private static async volumes(config: ClusterConfig, stack: StorageStack, logger: Logger): Promise<StorageVolume[]> {
    const store = new NodeStateStore(stack);
    const found = await store.readClusterRecord();
    if (found && found.cluster !== config.cluster) {
      throw new Error(`the array belongs to cluster '${found.cluster}', the config names '${config.cluster}'`);
    }
    const current = found ?? { cluster: config.cluster, allocations: [], nodes: config.nodes.map((node) => node.name) };
    const requests = config.volumes.map((volume) => ({ name: volume.name, sizeBytes: volume.size, pageBytes: BLOCK_BYTES, owner: config.nodes[0]?.name ?? '' }));
    const { record, created } = placeAllocations(current, requests, stack.sizeBytes, stripeDataBytes(stack.array.geometry));
    if (created.length > 0 || !found) {
      await store.writeClusterRecord(record);
      for (const allocation of created) logger.info(`allocated volume ${allocation.name}: ${allocation.sizeBytes} bytes at array offset ${allocation.arrayOffset}`);
    }
    return config.volumes.map((volume) => {
      const allocation = record.allocations.find((candidate) => candidate.name === volume.name);
      if (!allocation) throw new Error(`volume ${volume.name} has no allocation`);
      return new StorageVolume(stack, volume.name, allocation.arrayOffset, allocation.sizeBytes);
    });
  }

  /** Drains clients, destages everything, stops the array cleanly. */
  async stop(): Promise<void> {
    await this.control.close();
    await this.server.close();
    await this.stack.stop().catch((error: Error) => this.logger.error(`storage stop failed: ${error.message}`));
  }
}
