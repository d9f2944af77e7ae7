export { NbdServer, Exports, describeAddress, type ListenAddress } from './server.js';
export type { ExportEntry, ExportCatalog } from './negotiation.js';
