// Reads and writes the node-state region through the storage stack (so it shares the cache and
// the RAID's redundancy and checksums). The cluster record alternates between its two copies by
// sequence, so a write torn by a crash leaves the previous record readable.
import { FormatError } from './crc.js';
import { CLUSTER_RECORD_COPY_BYTES, clusterRecordOffset, encodeClusterRecord, newestClusterRecord, type ClusterRecord } from './node-state.js';

/** Where the region is read and written: the storage stack, or the array through the node that holds it. */
/**
 * Whole 4 KiB blocks of the array, wherever it is reached from: the storage stack on the holder, or
 * the holder over the partner link elsewhere. The one interface every layer above storage reads and
 * writes the array through (the memory manager's page-in and destage, the node-state region).
 */
export interface BlockStore {
  readBlocks(offset: number, into: Buffer): Promise<void>;
  enqueueBlocks(offset: number, data: Buffer): void;
  flush(): Promise<void>;
  /**
   * Only the blocks of the range are on the array and synced (a write-through waits for its own
   * blocks, not for everything dirty). A store without it is asked for flush().
   */
  flushBlocks?(offset: number, length: number): Promise<void>;
  /**
   * Fills `into` and returns true when its bytes are known without I/O (blocks the array's
   * checksums say are zeroes: never written); otherwise false, `into` untouched, and the caller
   * reads. Synchronous, so a page-in of a never-written page costs no promise and no thread.
   */
  readKnown?(offset: number, into: Buffer): boolean;
}

export class NodeStateStore {
  private sequence = -1;

  constructor(private readonly stack: BlockStore) {}

  /** The newest valid cluster record, or null on a fresh array (both copies never written). */
  async readClusterRecord(): Promise<ClusterRecord | null> {
    const copies = Buffer.alloc(2 * CLUSTER_RECORD_COPY_BYTES);
    await this.stack.readBlocks(0, copies);
    try {
      const newest = newestClusterRecord(copies.subarray(0, CLUSTER_RECORD_COPY_BYTES), copies.subarray(CLUSTER_RECORD_COPY_BYTES));
      this.sequence = newest.sequence;
      return newest.record;
    } catch (error) {
      if (error instanceof FormatError && error.code === 'blank') return null;
      throw error;
    }
  }

  /** Writes the record into the older copy and waits until it is on the array and synced. */
  async writeClusterRecord(record: ClusterRecord): Promise<void> {
    const sequence = this.sequence + 1;
    this.stack.enqueueBlocks(clusterRecordOffset(sequence), encodeClusterRecord(record, sequence));
    await this.stack.flush();
    this.sequence = sequence;
  }
}
