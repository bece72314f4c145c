// The browser tests' server root: a scratch folder with the repository's examples and build linked in,
// so test notebooks (uploaded by galata into per-test folders) resolve '../examples' and '../dist' as
// the gallery's do, and nothing the tests save lands in the repository.
import { existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
export const serverRoot = join(here, '.root');

rmSync(serverRoot, { recursive: true, force: true });
rmSync(join(here, '.rooms'), { recursive: true, force: true });
mkdirSync(serverRoot, { recursive: true });
for (const name of ['examples', 'dist', 'node_modules', 'package.json']) if (existsSync(join(repo, name))) symlinkSync(join(repo, name), join(serverRoot, name));
