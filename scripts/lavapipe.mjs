// Mesa's lavapipe (a CPU Vulkan driver) for the shader-f16 tests: SwiftShader, the adapter the other
// webgpu tests use, has no shader-f16, and Debian 12's own lavapipe (Mesa 22) lacks a feature Dawn
// requires. Mesa 25 from bookworm-backports has both. Its .deb is fetched once (pinned by sha256) into
// the cache outside the clone, and only the driver is unpacked into .cache/lavapipe/ with an ICD
// manifest that names it; nothing is installed system-wide but its shared libraries' Debian deps.
// Node builtins only, so scripts/setup.mjs can import it before anything is installed.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEB = 'mesa-vulkan-drivers_25.0.7-2~bpo12+1_amd64.deb';
const URL = `http://deb.debian.org/debian/pool/main/m/mesa/${DEB}`;
const SHA256 = '3899f1800424c60a05df5d6913076a526ca8fdbabec43672cd397563d1ca3263';
// The driver's Debian dependencies (its .deb's Depends, less what every system has).
const DEPS = [
  'libvulkan1',
  'libllvm15',
  'libdrm-amdgpu1',
  'libdrm2',
  'libelf1',
  'libexpat1',
  'libwayland-client0',
  'libx11-xcb1',
  'libxcb-dri3-0',
  'libxcb-present0',
  'libxcb-randr0',
  'libxcb-shm0',
  'libxcb-sync1',
  'libxcb-xfixes0',
  'libxcb1',
  'libxshmfence1',
  'libzstd1',
];

/** The ICD manifest of the unpacked lavapipe (exists once `ensureLavapipe` succeeded). */
export const LAVAPIPE_ICD = join(root, '.cache', 'lavapipe', 'lvp_icd.json');

/**
 * Unpacks lavapipe into .cache/lavapipe (x86_64 Debian/Ubuntu only). Returns { ok } or
 * { ok: false, reason }; a failure only means the shader-f16 tests skip, saying this reason.
 */
export function ensureLavapipe({ log = (m) => console.error(m) } = {}) {
  const dir = dirname(LAVAPIPE_ICD);
  const lib = join(dir, 'libvulkan_lvp.so');
  const stampFile = join(dir, '.sha256');
  if (existsSync(LAVAPIPE_ICD) && readText(stampFile) === SHA256 && missingLibs(lib).length === 0) return { ok: true };
  if (process.platform !== 'linux' || process.arch !== 'x64')
    return {
      ok: false,
      reason: `lavapipe is fetched for x86_64 Linux only (this is ${process.platform} ${process.arch})`,
    };
  if (!which('dpkg-deb')) return { ok: false, reason: 'dpkg-deb is missing (not a Debian-like system)' };
  const cacheRoot =
    process.env.LATHE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lathe');
  const deb = join(cacheRoot, 'debs', DEB);
  if (!existsSync(deb) || sha256(deb) !== SHA256) {
    log(`lavapipe: fetching ${URL} (11 MB, once) for the shader-f16 tests`);
    mkdirSync(dirname(deb), { recursive: true });
    const tmp = `${deb}.tmp-${process.pid}`;
    const r = spawnSync('curl', ['-fsSL', '--retry', '2', '-o', tmp, URL], { encoding: 'utf8' });
    if (r.status !== 0 || sha256(tmp) !== SHA256) {
      rmSync(tmp, { force: true });
      return { ok: false, reason: `could not fetch ${URL} with the pinned sha256: ${(r.stderr ?? '').trim()}` };
    }
    renameSync(tmp, deb);
  }
  const unpacked = join(dir, `.unpack-${process.pid}`);
  rmSync(unpacked, { recursive: true, force: true });
  mkdirSync(unpacked, { recursive: true });
  const x = spawnSync('dpkg-deb', ['-x', deb, unpacked], { encoding: 'utf8' });
  if (x.status !== 0) return { ok: false, reason: `dpkg-deb -x ${deb} failed: ${x.stderr.trim()}` };
  renameSync(join(unpacked, 'usr/lib/x86_64-linux-gnu/libvulkan_lvp.so'), lib);
  rmSync(unpacked, { recursive: true, force: true });
  if (missingLibs(lib).length) {
    if (!which('apt-get')) return { ok: false, reason: `lavapipe needs ${missingLibs(lib).join(', ')} (no apt-get)` };
    log(`lavapipe: installing its Debian dependencies (apt-get) for ${missingLibs(lib).join(', ')}`);
    const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
    const apt = (args) =>
      spawnSync(sudo[0] ?? 'apt-get', [...(sudo.length ? ['apt-get'] : []), ...args], {
        stdio: 'inherit',
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    apt(['update', '-qq']);
    apt(['install', '-y', '-qq', '--no-install-recommends', ...DEPS]);
    const still = missingLibs(lib);
    if (still.length) return { ok: false, reason: `lavapipe still lacks ${still.join(', ')} after apt-get` };
  }
  const manifest = { file_format_version: '1.0.0', ICD: { library_path: lib, api_version: '1.4.305' } };
  writeFileSync(LAVAPIPE_ICD, `${JSON.stringify(manifest, null, 2)}\n`);
  writeFileSync(stampFile, SHA256);
  return { ok: true };
}

function missingLibs(lib) {
  if (!existsSync(lib)) return [lib];
  const r = spawnSync('ldd', [lib], { encoding: 'utf8' });
  return [...(r.stdout ?? '').matchAll(/^\s*(\S+) => not found/gm)].map((m) => m[1]);
}

function which(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function sha256(f) {
  return existsSync(f) ? createHash('sha256').update(readFileSync(f)).digest('hex') : '';
}

function readText(f) {
  return existsSync(f) ? readFileSync(f, 'utf8').trim() : '';
}
