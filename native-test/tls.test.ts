// Proves ftvm's NBD TLS (STARTTLS; PSK and X.509; modes require/on; per-volume tlsIdentities) works with nbdinfo, nbdcopy, nbdsh, qemu-img/qemu-io and nbd-client, and refuses what it must.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'chai';
import { ArrayReader } from '../test/support/array-reader.js';
import { FTVM_BIN, freePort, freeUpBasePort, launch, makeTempDirectory, writeSingleNodeConfig, type FtvmNode, type VolumeSpec } from '../test/support/ftvm-process.js';
import { requireTools } from '../test/support/tools.js';
import { sha256Volume } from './lib/array.js';
import { shutDown } from './lib/node.js';
import { NBD_OPT, NBD_REP, OptionClient, SIMPLE_REPLY_MAGIC, goPayload, listedNames, type PskCredentials } from './lib/option-client.js';
import { NBDSH_ENV, run, runOk, sha256File, writeRandomFile, type RunResult } from './lib/run.js';
import {
  ALLOWED_IDENTITY,
  OTHER_IDENTITY,
  STRANGER_IDENTITY,
  TLS_TOOLS,
  makeTlsMaterial,
  qemuImageOpts,
  qemuPskObject,
  qemuX509Object,
  tlsUri,
  type TlsMaterial,
} from './lib/tls.js';

const MiB = 1 << 20;
/** Open to every authenticated client. */
const SHARED: VolumeSpec = { name: 'shared', sizeBytes: 32 * MiB, description: 'any TLS client' };
/** Only for ALLOWED_IDENTITY (PSK username or client certificate CN); hidden from everyone else. */
const RESTRICTED: VolumeSpec & { tlsIdentities: string[] } = { name: 'alice-only', sizeBytes: 16 * MiB, tlsIdentities: [ALLOWED_IDENTITY] };
const COPY_TIMEOUT_MS = 60_000;

type TlsMode = 'off' | 'on' | 'require';

interface TlsSettings {
  mode: TlsMode;
  psk?: boolean;
  certificates?: boolean;
  verifyPeer?: boolean;
}

/**
 * A single-node ftvm with SHARED and RESTRICTED and the given `tls` section. The server's material
 * is copied where `ftvm up` keeps it, <data>/tls/nbd.psk and <data>/tls/x509/, and named relative
 * to the config file as the storage members are.
 */
async function startTlsNode(material: TlsMaterial, settings: TlsSettings): Promise<FtvmNode> {
  const host = '127.0.0.1';
  const directory = await makeTempDirectory('ftvm-tls-');
  try {
    const port = await freePort(host);
    const configFile = await writeSingleNodeConfig(directory, [SHARED, RESTRICTED], { host, port });
    const tls: Record<string, unknown> = { mode: settings.mode };
    if (settings.psk) {
      const pskFile = path.join(directory, 'tls', 'nbd.psk');
      await fs.mkdir(path.dirname(pskFile), { recursive: true });
      await fs.copyFile(material.psk.file, pskFile);
      await fs.chmod(pskFile, 0o600);
      tls.pskFile = 'tls/nbd.psk';
    }
    if (settings.certificates) {
      await fs.cp(material.x509.serverDir, path.join(directory, 'tls', 'x509'), { recursive: true });
      tls.certificates = 'tls/x509';
      tls.verifyPeer = settings.verifyPeer ?? false;
    }
    const config = JSON.parse(await fs.readFile(configFile, 'utf8')) as { tls?: unknown; volumes: Array<{ name: string; tlsIdentities?: string[] }> };
    config.tls = tls;
    for (const volume of config.volumes) if (volume.name === RESTRICTED.name) volume.tlsIdentities = RESTRICTED.tlsIdentities;
    await fs.writeFile(configFile, JSON.stringify(config, null, 2));
    return await launch(configFile, 'a', { host, port, directory });
  } catch (error) {
    await fs.rm(directory, { recursive: true, force: true });
    throw error;
  }
}

interface NbdinfoJson {
  protocol: string;
  TLS: boolean;
  exports: Array<{ 'export-name': string; 'export-size': number }>;
}

async function nbdinfoJson(...args: string[]): Promise<NbdinfoJson> {
  const { stdout } = await runOk('nbdinfo', ['--json', ...args]);
  return JSON.parse(stdout) as NbdinfoJson;
}

async function listedExports(uri: string): Promise<string[]> {
  return (await nbdinfoJson('--list', uri)).exports.map((entry) => entry['export-name']).sort();
}

function expectFailure(result: RunResult, pattern: RegExp, what: string): void {
  expect(result.code, `${what} should fail:\n${result.stdout}${result.stderr}`).to.not.equal(0);
  expect(result.stdout + result.stderr, what).to.match(pattern);
}

/**
 * Runs a Python script in nbdsh on a fresh handle `h` (not connected: the script sets TLS up and
 * connects itself). attempt() turns an nbd.Error into a value; emit() prints one RESULT line.
 */
async function nbdsh(script: string): Promise<Record<string, unknown>> {
  const prelude = `
import json
def attempt(f):
    try:
        return {"ok": f()}
    except nbd.Error as e:
        return {"errno": e.errno, "message": e.string}
def emit(**fields):
    print("RESULT " + json.dumps(fields), flush=True)
`;
  const result = await run('nbdsh', ['-c', prelude, '-c', script], { env: NBDSH_ENV, timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`nbdsh exited with ${result.code ?? result.signal}:\n${result.stdout}\n${result.stderr}`);
  const line = result.stdout.split('\n').find((candidate) => candidate.startsWith('RESULT '));
  if (!line) throw new Error(`nbdsh printed no RESULT line:\n${result.stdout}\n${result.stderr}`);
  return JSON.parse(line.slice('RESULT '.length)) as Record<string, unknown>;
}

/** Python: connect `h` to the node's export and do a 64 KiB pwrite/pread round trip at 1 MiB. */
function nbdshRoundTrip(node: FtvmNode, exportName: string, tlsSetup: string): string {
  return `
${tlsSetup}
h.set_export_name(${JSON.stringify(exportName)})
connected = attempt(lambda: h.connect_tcp(${JSON.stringify(node.host)}, ${JSON.stringify(String(node.port))}))
if "errno" in connected:
    emit(connect=connected)
else:
    data = bytes((i * 13 + 7) & 0xff for i in range(65536))
    h.pwrite(data, 1048576)
    same = h.pread(65536, 1048576) == data
    emit(connect=connected, tls=h.get_tls_negotiated(), same=same, size=h.get_size())
    h.shutdown()
`;
}

/** The 64 KiB pattern nbdshRoundTrip() writes, as stored on the member files. */
async function expectRoundTripStored(node: FtvmNode, exportName: string): Promise<void> {
  const stored = await (await ArrayReader.fromConfig(node.configFile)).readVolume(exportName, MiB, 65536);
  const wrong = stored.findIndex((byte, i) => byte !== ((i * 13 + 7) & 0xff));
  expect(wrong, 'the pattern written over TLS is on the member files').to.equal(-1);
}

function hexKey(material: TlsMaterial, identity: string): PskCredentials {
  const key = material.psk.keys.get(identity);
  if (!key) throw new Error(`no PSK for ${identity}`);
  return { identity, hexKey: key };
}

describe('native: TLS with PSK (ftvm tls.pskFile)', function () {
  let scratch = '';
  let material: TlsMaterial;
  let node: FtvmNode | undefined;
  let optional: FtvmNode | undefined;

  const pskUri = (target: FtvmNode, exportName: string, username = ALLOWED_IDENTITY, pskFile = material.psk.file): string =>
    tlsUri(target, exportName, { pskFile, username });

  before(async function () {
    requireTools(this, ...TLS_TOOLS);
    scratch = await makeTempDirectory('ftvm-tls-psk-');
    material = await makeTlsMaterial(scratch);
    node = await startTlsNode(material, { mode: 'require', psk: true });
    optional = await startTlsNode(material, { mode: 'on', psk: true });
  });

  after(async function () {
    await shutDown(node);
    await shutDown(optional);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('nbdinfo connects with the identity as the URI user (nbds://alice@host:port/export?tls-psk-file=)', async function () {
    requireTools(this, 'nbdinfo');
    const info = await nbdinfoJson(pskUri(node!, SHARED.name));
    expect(info.TLS).to.equal(true);
    expect(info.protocol).to.equal('newstyle-fixed');
    expect(info.exports[0]?.['export-name']).to.equal(SHARED.name);
    expect(info.exports[0]?.['export-size']).to.equal(SHARED.sizeBytes);
  });

  it('nbdinfo --list shows the restricted export to its identity only', async function () {
    requireTools(this, 'nbdinfo');
    expect(await listedExports(pskUri(node!, '', ALLOWED_IDENTITY))).to.deep.equal([RESTRICTED.name, SHARED.name].sort());
    expect(await listedExports(pskUri(node!, '', OTHER_IDENTITY))).to.deep.equal([SHARED.name]);
    const allowed = await runOk('nbdinfo', ['--size', pskUri(node!, RESTRICTED.name, ALLOWED_IDENTITY)]);
    expect(Number(allowed.stdout.trim())).to.equal(RESTRICTED.sizeBytes);
    // To anyone else it does not exist: NBD_REP_ERR_UNKNOWN, which libnbd reports as an unknown export.
    const denied = await run('nbdinfo', ['--size', pskUri(node!, RESTRICTED.name, OTHER_IDENTITY)]);
    expectFailure(denied, /server replied with error|no export|not found|unknown/i, `${OTHER_IDENTITY} opening ${RESTRICTED.name}`);
    expect(denied.stdout).to.not.match(/^\d+$/m);
  });

  it('nbdcopy copies an image into a TLS export and back out, byte-identical', async function () {
    requireTools(this, 'nbdcopy');
    const image = path.join(scratch, 'psk-in.img');
    const back = path.join(scratch, 'psk-back.img');
    await writeRandomFile(image, SHARED.sizeBytes);
    await runOk('nbdcopy', [image, pskUri(node!, SHARED.name)], { timeoutMs: COPY_TIMEOUT_MS });
    await runOk('nbdcopy', [pskUri(node!, SHARED.name, OTHER_IDENTITY), back], { timeoutMs: COPY_TIMEOUT_MS });
    const expected = await sha256File(image);
    expect(await sha256File(back)).to.equal(expected);
    expect(await sha256Volume(await ArrayReader.fromConfig(node!.configFile), SHARED.name, scratch)).to.equal(expected);
  });

  it('nbdsh: set_tls(TLS_REQUIRE), set_tls_psk_file, set_tls_username; pwrite/pread round trip', async function () {
    requireTools(this, 'nbdsh');
    const result = await nbdsh(
      nbdshRoundTrip(node!, RESTRICTED.name, `
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(${JSON.stringify(material.psk.file)})
h.set_tls_username(${JSON.stringify(ALLOWED_IDENTITY)})`),
    );
    expect(result).to.deep.include({ tls: true, same: true, size: RESTRICTED.sizeBytes });
    await expectRoundTripStored(node!, RESTRICTED.name);
  });

  it('refuses a plain client under require with a TLS-required error (nbdsh, qemu-img, nbdinfo)', async function () {
    requireTools(this, 'nbdsh', 'qemu-img', 'nbdinfo');
    const result = await nbdsh(nbdshRoundTrip(node!, SHARED.name, 'h.set_tls(nbd.TLS_DISABLE)'));
    // libnbd turns NBD_REP_ERR_TLS_REQD into this message (ENOTSUP).
    expect(result.connect).to.deep.include({ errno: 'ENOTSUP' });
    expect((result.connect as { message: string }).message).to.include('server requires TLS encryption first');
    // QEMU names the option the server refused with NBD_REP_ERR_TLS_REQD.
    expectFailure(await run('qemu-img', ['info', node!.uri(SHARED.name)]), /TLS negotiation required before option/, 'plain qemu-img');
    expectFailure(await run('nbdinfo', ['--size', node!.uri(SHARED.name)]), /server replied with error|TLS/, 'plain nbdinfo');
  });

  it('before STARTTLS answers every option but ABORT with NBD_REP_ERR_TLS_REQD, and drops EXPORT_NAME', async function () {
    const client = await OptionClient.connect(node!.host, node!.port);
    try {
      await client.greet();
      for (const [name, option, data] of [
        ['LIST', NBD_OPT.LIST, undefined],
        ['STRUCTURED_REPLY', NBD_OPT.STRUCTURED_REPLY, undefined],
        ['INFO', NBD_OPT.INFO, goPayload(SHARED.name)],
        ['GO', NBD_OPT.GO, goPayload(SHARED.name)],
        ['an unknown option', 0x7fff, undefined],
      ] as const) {
        const replies = await client.option(option, data);
        expect(replies.map((reply) => reply.type), name).to.deep.equal([NBD_REP.ERR_TLS_REQD]);
      }
      expect((await client.option(NBD_OPT.ABORT)).map((reply) => reply.type)).to.deep.equal([NBD_REP.ACK]);
    } finally {
      client.close();
    }
    // EXPORT_NAME cannot be answered with an error: the server must end the session, sending nothing.
    const exporter = await OptionClient.connect(node!.host, node!.port);
    try {
      await exporter.greet();
      exporter.sendOption(NBD_OPT.EXPORT_NAME, Buffer.from(SHARED.name));
      const left = await exporter.waitClosed(5000);
      expect(left, 'the server closed the connection').to.not.equal(null);
      expect(left?.length, 'and sent nothing after EXPORT_NAME').to.equal(0);
    } finally {
      exporter.close();
    }
  });

  it('over TLS: a second STARTTLS is NBD_REP_ERR_INVALID, LIST and GO follow the identity', async function () {
    for (const identity of [ALLOWED_IDENTITY, OTHER_IDENTITY]) {
      const client = await OptionClient.connect(node!.host, node!.port);
      try {
        await client.greet();
        const data = await client.option(NBD_OPT.STARTTLS, Buffer.from('x'));
        expect(data.map((reply) => reply.type), 'STARTTLS with data').to.deep.equal([NBD_REP.ERR_INVALID]);
        expect((await client.startTls({ psk: hexKey(material, identity) })).type).to.equal(NBD_REP.ACK);
        expect((await client.option(NBD_OPT.STARTTLS)).map((reply) => reply.type), 'second STARTTLS').to.deep.equal([NBD_REP.ERR_INVALID]);
        const list = await client.option(NBD_OPT.LIST);
        expect(list[list.length - 1]?.type).to.equal(NBD_REP.ACK);
        const visible = identity === ALLOWED_IDENTITY ? [RESTRICTED.name, SHARED.name] : [SHARED.name];
        expect(listedNames(list).sort(), `LIST for ${identity}`).to.deep.equal(visible.sort());
        const info = await client.option(NBD_OPT.INFO, goPayload(RESTRICTED.name));
        expect(info[info.length - 1]?.type, `INFO ${RESTRICTED.name} for ${identity}`).to.equal(identity === ALLOWED_IDENTITY ? NBD_REP.ACK : NBD_REP.ERR_UNKNOWN);
        const go = await client.option(NBD_OPT.GO, goPayload(RESTRICTED.name));
        expect(go[go.length - 1]?.type, `GO ${RESTRICTED.name} for ${identity}`).to.equal(identity === ALLOWED_IDENTITY ? NBD_REP.ACK : NBD_REP.ERR_UNKNOWN);
      } finally {
        client.close();
      }
    }
  });

  it('refuses a wrong key and an unknown identity in the handshake, and keeps serving', async function () {
    requireTools(this, 'nbdinfo', 'nbdsh', 'qemu-img');
    expectFailure(await run('nbdinfo', ['--size', pskUri(node!, SHARED.name, ALLOWED_IDENTITY, material.psk.wrongFile)]), /gnutls|TLS/i, 'wrong key');
    expectFailure(await run('nbdinfo', ['--size', pskUri(node!, SHARED.name, STRANGER_IDENTITY, material.psk.strangerFile)]), /gnutls|TLS/i, 'unknown identity');
    const result = await nbdsh(
      nbdshRoundTrip(node!, SHARED.name, `
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(${JSON.stringify(material.psk.wrongFile)})
h.set_tls_username(${JSON.stringify(ALLOWED_IDENTITY)})`),
    );
    expect((result.connect as { message?: string }).message ?? '', 'nbdsh with the wrong key').to.match(/gnutls/);
    const qemu = await run('qemu-img', ['info', '--object', qemuPskObject('tls0', material.psk.wrongQemuDir, ALLOWED_IDENTITY), '--image-opts', qemuImageOpts(node!, SHARED.name, 'tls0')]);
    expectFailure(qemu, /TLS handshake failed/, 'qemu-img with the wrong key');
    const { stdout } = await runOk('nbdinfo', ['--size', pskUri(node!, SHARED.name)]);
    expect(Number(stdout.trim())).to.equal(SHARED.sizeBytes);
  });

  it('qemu-img info over tls-creds-psk', async function () {
    requireTools(this, 'qemu-img');
    const { stdout } = await runOk('qemu-img', [
      'info',
      '--output=json',
      '--object',
      qemuPskObject('tls0', material.psk.qemuDir, ALLOWED_IDENTITY),
      '--image-opts',
      qemuImageOpts(node!, RESTRICTED.name, 'tls0'),
    ]);
    const info = JSON.parse(stdout) as { 'virtual-size': number; format: string };
    expect(info['virtual-size']).to.equal(RESTRICTED.sizeBytes);
    expect(info.format).to.equal('raw');
  });

  it('qemu-io writes a pattern over tls-creds-psk and reads it back', async function () {
    requireTools(this, 'qemu-io');
    const offset = 5 * MiB + 4096;
    const length = 192 * 1024;
    const result = await run('qemu-io', [
      '--object',
      qemuPskObject('tls0', material.psk.qemuDir, OTHER_IDENTITY),
      '--image-opts',
      qemuImageOpts(node!, SHARED.name, 'tls0'),
      '-c',
      `write -P 0x5c ${offset} ${length}`,
      '-c',
      `read -P 0x5c ${offset} ${length}`,
    ]);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    expect(result.stdout).to.not.include('Pattern verification failed');
    expect(result.stdout).to.include(`read ${length}/${length} bytes at offset ${offset}`);
    const stored = await (await ArrayReader.fromConfig(node!.configFile)).readVolume(SHARED.name, offset, length);
    expect(stored.every((byte) => byte === 0x5c), 'the pattern is on the member files').to.equal(true);
  });

  it('under mode "on" serves plain clients too, but not the restricted export', async function () {
    requireTools(this, 'nbdinfo');
    const plain = await nbdinfoJson(optional!.uri(SHARED.name));
    expect(plain.TLS).to.equal(false);
    expect(plain.exports[0]?.['export-size']).to.equal(SHARED.sizeBytes);
    // A plain client has no identity: the restricted export is neither listed nor opened.
    expect(await listedExports(optional!.uri(''))).to.deep.equal([SHARED.name]);
    expectFailure(await run('nbdinfo', ['--size', optional!.uri(RESTRICTED.name)]), /server replied with error|TLS|no export|unknown/i, 'plain client opening the restricted export');
    const secure = await nbdinfoJson(pskUri(optional!, RESTRICTED.name));
    expect(secure.TLS).to.equal(true);
    expect(secure.exports[0]?.['export-size']).to.equal(RESTRICTED.sizeBytes);
  });

  it('under mode "on" forgets structured replies negotiated before STARTTLS', async function () {
    const client = await OptionClient.connect(optional!.host, optional!.port);
    try {
      await client.greet();
      expect((await client.option(NBD_OPT.STRUCTURED_REPLY)).map((reply) => reply.type)).to.deep.equal([NBD_REP.ACK]);
      expect((await client.startTls({ psk: hexKey(material, OTHER_IDENTITY) })).type).to.equal(NBD_REP.ACK);
      const go = await client.option(NBD_OPT.GO, goPayload(SHARED.name));
      expect(go[go.length - 1]?.type).to.equal(NBD_REP.ACK);
      const reply = await client.readCommand(0, 4096);
      expect(reply.magic, 'a simple reply: structured replies were not renegotiated over TLS').to.equal(SIMPLE_REPLY_MAGIC);
      expect(reply.error).to.equal(0);
    } finally {
      client.close();
    }
  });
});

describe('native: TLS with X.509 certificates (ftvm tls.certificates)', function () {
  let scratch = '';
  let material: TlsMaterial;
  /** verifyPeer false: any client that trusts the CA. */
  let anyClient: FtvmNode | undefined;
  /** verifyPeer true: clients must present a certificate from the CA. */
  let verified: FtvmNode | undefined;

  const certUri = (target: FtvmNode, exportName: string, directory: string, host = target.host): string =>
    tlsUri({ host, port: target.port }, exportName, { certificates: directory });

  before(async function () {
    requireTools(this, ...TLS_TOOLS);
    scratch = await makeTempDirectory('ftvm-tls-x509-');
    material = await makeTlsMaterial(scratch);
    anyClient = await startTlsNode(material, { mode: 'require', certificates: true, verifyPeer: false });
    verified = await startTlsNode(material, { mode: 'require', certificates: true, verifyPeer: true });
  });

  after(async function () {
    await shutDown(anyClient);
    await shutDown(verified);
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('nbdinfo verifies ftvm\'s certificate against the CA, by IP and by name', async function () {
    requireTools(this, 'nbdinfo');
    const info = await nbdinfoJson(certUri(anyClient!, SHARED.name, material.x509.trustOnlyDir));
    expect(info.TLS).to.equal(true);
    expect(info.exports[0]?.['export-size']).to.equal(SHARED.sizeBytes);
    const byName = await runOk('nbdinfo', ['--size', certUri(anyClient!, SHARED.name, material.x509.trustOnlyDir, 'localhost')]);
    expect(Number(byName.stdout.trim())).to.equal(SHARED.sizeBytes);
    // A client that trusts another CA must not accept ftvm's certificate.
    expectFailure(await run('nbdinfo', ['--size', certUri(anyClient!, SHARED.name, material.x509.wrongTrustDir)]), /certificate verification/, 'wrong CA');
  });

  it('nbdsh: set_tls_certificates with set_tls_verify_peer(True) / (False)', async function () {
    requireTools(this, 'nbdsh');
    const setup = (directory: string, verify: boolean): string => `
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(${JSON.stringify(directory)})
h.set_tls_verify_peer(${verify ? 'True' : 'False'})`;
    const trusted = await nbdsh(nbdshRoundTrip(anyClient!, SHARED.name, setup(material.x509.trustOnlyDir, true)));
    expect(trusted).to.deep.include({ tls: true, same: true, size: SHARED.sizeBytes });
    await expectRoundTripStored(anyClient!, SHARED.name);
    const unverified = await nbdsh(nbdshRoundTrip(anyClient!, SHARED.name, setup(material.x509.wrongTrustDir, false)));
    expect(unverified, 'verify_peer(False) accepts a server the CA file does not vouch for').to.deep.include({ tls: true, same: true });
    const refused = await nbdsh(nbdshRoundTrip(anyClient!, SHARED.name, setup(material.x509.wrongTrustDir, true)));
    expect((refused.connect as { message?: string }).message ?? '').to.match(/certificate verification/);
  });

  it('refuses a plain client under require', async function () {
    requireTools(this, 'nbdsh', 'qemu-img');
    const result = await nbdsh(nbdshRoundTrip(anyClient!, SHARED.name, 'h.set_tls(nbd.TLS_DISABLE)'));
    expect((result.connect as { message?: string }).message ?? '').to.include('server requires TLS encryption first');
    expectFailure(await run('qemu-img', ['info', anyClient!.uri(SHARED.name)]), /TLS negotiation required before option/, 'plain qemu-img');
  });

  it('verifyPeer: accepts the CA-signed client certificate (CN=alice), refuses no certificate and a foreign one', async function () {
    requireTools(this, 'nbdinfo', 'qemu-img');
    const info = await nbdinfoJson(certUri(verified!, SHARED.name, material.x509.allowedClientDir));
    expect(info.TLS).to.equal(true);
    expectFailure(await run('nbdinfo', ['--size', certUri(verified!, SHARED.name, material.x509.trustOnlyDir)]), /gnutls|TLS/i, 'no client certificate');
    // GnuTLS offers only a certificate whose issuer the server named, so this one is not even sent.
    expectFailure(await run('nbdinfo', ['--size', certUri(verified!, SHARED.name, material.x509.foreignClientDir)]), /gnutls|TLS/i, 'a certificate from another CA');
    const qemu = await run('qemu-img', ['info', '--object', qemuX509Object('tls0', material.x509.trustOnlyDir), '--image-opts', qemuImageOpts(verified!, SHARED.name, 'tls0')]);
    expectFailure(qemu, /TLS|Input\/output error/, 'qemu-img without a client certificate');
    // Still serving.
    expect((await nbdinfoJson(certUri(verified!, SHARED.name, material.x509.allowedClientDir))).TLS).to.equal(true);
  });

  it('verifyPeer: a certificate from another CA is refused even when the client sends it', async function () {
    // GnuTLS clients hold back a certificate the server's CA list does not name; OpenSSL (Node) sends
    // it anyway, so this is what proves the server verifies the chain and not just that one arrived.
    const read = (directory: string, file: string): Promise<string> => fs.readFile(path.join(directory, file), 'utf8');
    const attempt = async (directory: string): Promise<string[] | Error> => {
      const client = await OptionClient.connect(verified!.host, verified!.port);
      try {
        await client.greet();
        const reply = await client.startTls({
          ca: await read(directory, 'ca-cert.pem'),
          cert: await read(directory, 'client-cert.pem'),
          key: await read(directory, 'client-key.pem'),
        });
        if (reply.type !== NBD_REP.ACK) return new Error(`STARTTLS answered 0x${reply.type.toString(16)}`);
        // With TLS 1.3 the server judges the client certificate after the client's handshake is done:
        // a refusal shows as the connection closing on the next exchange.
        return listedNames(await client.option(NBD_OPT.LIST)).sort();
      } catch (error) {
        return error as Error;
      } finally {
        client.close();
      }
    };
    expect(await attempt(material.x509.allowedClientDir), 'CN=alice from the CA').to.deep.equal([RESTRICTED.name, SHARED.name].sort());
    expect(await attempt(material.x509.foreignClientDir), 'CN=alice from another CA').to.be.instanceOf(Error);
  });

  it('verifyPeer: the certificate CN is the identity for tlsIdentities', async function () {
    requireTools(this, 'nbdinfo');
    expect(await listedExports(certUri(verified!, '', material.x509.allowedClientDir))).to.deep.equal([RESTRICTED.name, SHARED.name].sort());
    expect(await listedExports(certUri(verified!, '', material.x509.otherClientDir))).to.deep.equal([SHARED.name]);
    const allowed = await runOk('nbdinfo', ['--size', certUri(verified!, RESTRICTED.name, material.x509.allowedClientDir)]);
    expect(Number(allowed.stdout.trim())).to.equal(RESTRICTED.sizeBytes);
    expectFailure(await run('nbdinfo', ['--size', certUri(verified!, RESTRICTED.name, material.x509.otherClientDir)]), /server replied with error|no export|not found|unknown/i, 'CN=bob opening the restricted export');
  });

  it('nbdcopy copies an image in and out with a client certificate, byte-identical', async function () {
    requireTools(this, 'nbdcopy');
    const image = path.join(scratch, 'x509-in.img');
    const back = path.join(scratch, 'x509-back.img');
    await writeRandomFile(image, RESTRICTED.sizeBytes);
    await runOk('nbdcopy', [image, certUri(verified!, RESTRICTED.name, material.x509.allowedClientDir)], { timeoutMs: COPY_TIMEOUT_MS });
    await runOk('nbdcopy', [certUri(verified!, RESTRICTED.name, material.x509.allowedClientDir), back], { timeoutMs: COPY_TIMEOUT_MS });
    const expected = await sha256File(image);
    expect(await sha256File(back)).to.equal(expected);
    expect(await sha256Volume(await ArrayReader.fromConfig(verified!.configFile), RESTRICTED.name, scratch)).to.equal(expected);
  });

  it('qemu-img info and qemu-io patterns over tls-creds-x509 (verify-peer on both sides)', async function () {
    requireTools(this, 'qemu-img', 'qemu-io');
    const creds = ['--object', qemuX509Object('tls0', material.x509.allowedClientDir, true)];
    const { stdout } = await runOk('qemu-img', ['info', '--output=json', ...creds, '--image-opts', qemuImageOpts(verified!, RESTRICTED.name, 'tls0')]);
    const info = JSON.parse(stdout) as { 'virtual-size': number; format: string };
    expect(info['virtual-size']).to.equal(RESTRICTED.sizeBytes);
    expect(info.format).to.equal('raw');
    const offset = 3 * MiB + 512;
    const length = 100_000;
    const result = await run('qemu-io', [
      ...creds,
      '--image-opts',
      qemuImageOpts(verified!, RESTRICTED.name, 'tls0'),
      '-c',
      `write -P 0x6d ${offset} ${length}`,
      '-c',
      `read -P 0x6d ${offset} ${length}`,
    ]);
    expect(result.code, result.stdout + result.stderr).to.equal(0);
    expect(result.stdout).to.not.include('Pattern verification failed');
    expect(result.stdout).to.include(`read ${length}/${length} bytes at offset ${offset}`);
    const stored = await (await ArrayReader.fromConfig(verified!.configFile)).readVolume(RESTRICTED.name, offset, length);
    expect(stored.every((byte) => byte === 0x6d), 'the pattern is on the member files').to.equal(true);
    // QEMU checks the name it dialled against the certificate; tls-hostname overrides it.
    const named = await run('qemu-img', ['info', '--object', qemuX509Object('tls1', material.x509.trustOnlyDir, true), '--image-opts', qemuImageOpts(anyClient!, SHARED.name, 'tls1', 'localhost')]);
    expect(named.code, named.stderr).to.equal(0);
    const misnamed = await run('qemu-img', ['info', '--object', qemuX509Object('tls1', material.x509.trustOnlyDir, true), '--image-opts', qemuImageOpts(anyClient!, SHARED.name, 'tls1', 'example.com')]);
    expectFailure(misnamed, /does not match the hostname example\.com/, 'qemu-img with tls-hostname=example.com');
  });

  it('nbd-client (the kernel client\'s userspace side) lists exports over TLS with a client certificate', async function () {
    requireTools(this, 'nbd-client');
    // nbd-client does TLS (GnuTLS, TLS 1.2) for X.509 only; -l needs no /dev/nbdX, so this runs without the nbd module.
    const client = material.x509.allowedClientDir;
    const listed = await run('nbd-client', [
      '-l', verified!.host, String(verified!.port),
      '-cacertfile', path.join(client, 'ca-cert.pem'),
      '-certfile', path.join(client, 'client-cert.pem'),
      '-keyfile', path.join(client, 'client-key.pem'),
    ], { timeoutMs: 30_000 });
    expect(listed.code, listed.stdout + listed.stderr).to.equal(0);
    expect(listed.stdout).to.match(new RegExp(`^${SHARED.name}\\b`, 'm'));
    expect(listed.stdout).to.match(new RegExp(`^${RESTRICTED.name}\\b`, 'm'));
    const plain = await run('nbd-client', ['-l', verified!.host, String(verified!.port)], { timeoutMs: 30_000 });
    expect(plain.code, 'nbd-client -l without TLS').to.not.equal(0);
  });
});

describe('native: TLS via ftvm up --tls require', function () {
  let scratch = '';
  let up: ChildProcess | undefined;
  let output = '';

  before(async function () {
    requireTools(this, 'nbdinfo');
    scratch = await makeTempDirectory('ftvm-tls-up-');
    const host = '127.0.0.1';
    const basePort = await freeUpBasePort(host);
    const child = spawn(process.execPath, [FTVM_BIN, 'up', '--data', path.join(scratch, 'data'), '--base-port', String(basePort), '--host', host, '--size', '64MiB', '--tls', 'require'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    up = child;
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`ftvm up printed no attach instructions:\n${output}\n${stderr}`)), 60_000);
      const poll = setInterval(() => {
        if (!output.includes('Stop with Ctrl-C')) return;
        clearTimeout(timer);
        clearInterval(poll);
        resolve();
      }, 100);
      child.once('exit', (code) => {
        clearTimeout(timer);
        clearInterval(poll);
        reject(new Error(`ftvm up exited with ${code}:\n${output}\n${stderr}`));
      });
    });
  });

  after(async function () {
    const child = up;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    if (scratch) await fs.rm(scratch, { recursive: true, force: true });
  });

  it('generates <data>/tls/nbd.psk with the identity "ftvm"', async function () {
    const psk = await fs.readFile(path.join(scratch, 'data', 'tls', 'nbd.psk'), 'utf8');
    expect(psk).to.match(/^ftvm:[0-9a-f]{32,}$/m);
  });

  it('prints nbds:// URIs that nbdinfo uses exactly as printed; plain clients are refused', async function () {
    const uris = [...output.matchAll(/nbds:\/\/[^\s'"]+/g)].map((match) => match[0]);
    expect(uris.length, output).to.be.greaterThan(0);
    const uri = uris.find((candidate) => /^nbds:\/\/[^/]*:\d+\/vol0\?/.test(candidate));
    expect(uri, `a TCP URI for vol0 in:\n${output}`).to.be.a('string');
    expect(uri).to.include('tls-psk-file=');
    // libnbd 1.14 ignores a tls-username= query parameter and calls getlogin_r() without a user part,
    // which fails with no terminal: the identity must be the URI's user (nbds://ftvm@host:port/...).
    const info = await nbdinfoJson(uri as string);
    expect(info.TLS).to.equal(true);
    expect(info.exports[0]?.['export-size']).to.equal(64 * MiB);
    const plain = await run('nbdinfo', ['--size', (uri as string).replace(/^nbds:\/\/(?:[^@/]*@)?/, 'nbd://').replace(/\?.*$/, '')]);
    expect(plain.code, 'a plain client of the same address is refused').to.not.equal(0);
  });
});
