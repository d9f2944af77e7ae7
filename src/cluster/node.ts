// One node process: opens the volumes of the config and serves them over NBD on the node's
// addresses. Later the memory manager, partner link and failover hang off this same object.
import { findNode, type ClusterConfig } from '../config/index.js';
import { Exports, NbdServer } from '../nbd/index.js';
import type { Logger } from '../observe/index.js';
import { FileVolume, type Volume } from '../volume/index.js';

export class ClusterNode {
  private constructor(
    private readonly server: NbdServer,
    private readonly volumes: Volume[],
    private readonly logger: Logger,
  ) {}

  /** Opens every volume, then listens; on any failure, what was opened is closed again. */
  static async start(config: ClusterConfig, nodeName: string, logger: Logger): Promise<ClusterNode> {
    const node = findNode(config, nodeName);
    const volumes: Volume[] = [];
    const exports = new Exports();
    const server = new NbdServer(exports, logger);
    try {
      for (const volumeConfig of config.volumes) {
        const volume = await FileVolume.open(volumeConfig.file, volumeConfig.size, volumeConfig.readOnly);
        volumes.push(volume);
        exports.add({ name: volumeConfig.name, description: volumeConfig.description, volume, readOnly: volumeConfig.readOnly });
      }
      for (const address of node.listen) await server.listen(address);
    } catch (error) {
      await server.close();
      await Promise.allSettled(volumes.map((volume) => volume.close()));
      throw error;
    }
    return new ClusterNode(server, volumes, logger);
  }

  /** Drains clients, makes everything durable, closes the volumes. */
  async stop(): Promise<void> {
    await this.server.close();
    for (const volume of this.volumes) {
      await volume.flush().catch((error: Error) => this.logger.error(`final flush failed: ${error.message}`));
      await volume.close();
    }
  }
}
