import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

function findPackageJson(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'lathe' && pkg.version) return pkg.version;
    } catch {
      // keep walking up: src/ and dist/src/ sit at different depths
    }
    dir = dirname(dir);
  }
  return '0.0.0';
}

/** The package version recorded in every recipe lock. */
export const VERSION: string = findPackageJson();
