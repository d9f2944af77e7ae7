export { NbdServer, Exports, describeAddress, DEFAULT_SERVER_LIMITS, type ListenAddress, type ServerLimits, type ServerOptions } from './server.js';
export { loadNbdTls, parsePskFile, TlsConfigError, TLS_OFF, type NbdTls, type TlsCredentials, type TlsMode } from './tls.js';
export type { ExportEntry, ExportCatalog } from './negotiation.js';
export type { RequestObserver } from './connection.js';
