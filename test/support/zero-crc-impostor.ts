// A 4096-byte block that is not zeroes yet has the zero block's CRC32C: byte 0 is 1 and bytes
// 4092..4095 were solved for (CRC32C is affine in the message bits, so 32 free bits reach any
// value). With it a test shows the checksum table never takes such a block for never-written.
export function zeroCrcImpostor(): Buffer {
  const block = Buffer.alloc(4096);
  block[0] = 1;
  block.write('c474ae6b', 4092, 'hex');
  return block;
}
